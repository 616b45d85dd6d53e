"""Metrics (issue 13), read with a real Prometheus parser (Debian's
python3-prometheus-client): mod_stubmail's stubmail-metrics handler
(requests by endpoint and status, octets served, 429s, the outbox by
state: what the milter stored) and pollerd's, both ways: its metrics_file
and its metrics_listen port, scraped by curl (polls, fetched, delivered,
failures, per remote domain the last good poll and the lag). One message
from alice@a.example to bob@b.example moves each count it should by
exactly what it should. pollerd's port: 404 and 405 besides GET /metrics,
clients that connect and say nothing do not keep pollerd from delivering,
a bad metrics_listen fails -n naming the key, a port in use fails the
start, [::1] works, and after a SIGHUP (a re-exec) the port answers again,
with text made at each request."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from support import SandboxTest, curl, get_token, make_message, wait_for
from sandbox.common import POLLERD_BIN, POLLERD_METRICS

# the sandbox's Apache lets a domain poll 5 times in a row (StubmailPollBurst)
BURST = 5
# pollerd's metrics_listen: connections at once (pollerd/pd_metrics_http.c)
CONNECTION_LIMIT = 8
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EX_CONFIG, EX_OSERR = 78, 71


def parse(text):
    """{(sample name, frozenset of labels): value} of a scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class MetricsTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"c.example": ("key",)}      # c: a poller played by hand

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def scrape_module(self, isp):
        r = curl(isp.metrics_url)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type").startswith("text/plain; version=0.0.4"), r)
        return parse(r.body.decode())

    def scrape_pollerd(self, isp, url=None):
        """GET pollerd's metrics_listen, parsed."""
        r = curl(url or isp.pollerd_metrics_url, timeout=10)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), PROMETHEUS_TYPE, r)
        return parse(r.body.decode())

    def pollerd_listens(self, isp):
        """A scrape of pollerd's port that answered, or None."""
        try:
            return self.scrape_pollerd(isp)
        except AssertionError:
            return None

    def pollerd_file(self, isp):
        try:
            with open(isp.pollerd_metrics_file) as f:
                return parse(f.read())
        except FileNotFoundError:
            return None

    def test_one_message_moves_the_counts(self):
        a, b = self.a, self.b
        wait_for(lambda: self.pollerd_file(b), timeout=20, what="b.example's metrics_file")
        m0 = self.scrape_module(a)
        p0 = self.pollerd_file(b)
        h0 = wait_for(lambda: self.pollerd_listens(b), timeout=20,
                      what="b.example's pollerd answering at metrics_listen")
        msg, tag = make_message("alice@a.example", "bob@b.example", "counted")
        rows = self.send_stored(a, "alice@a.example", "bob@b.example", msg)
        mid = rows[0][0]
        self.wait_maildir(b, "bob", tag)
        wait_for(lambda: a.sql_value("SELECT body_deleted_at FROM message WHERE id = '%s'"
                                     % mid), timeout=20, what="the body dropped after the ack")
        size = int(a.sql_value("SELECT size FROM message WHERE id = '%s'" % mid))
        # pollerd writes its file at the end of the cycle that delivered it
        wait_for(lambda: get(self.pollerd_file(b), "stubmail_pollerd_delivered_total")
                 >= get(p0, "stubmail_pollerd_delivered_total") + 1,
                 timeout=20, what="pollerd's file counting the delivery")
        m1 = self.scrape_module(a)
        p1 = self.pollerd_file(b)
        h1 = self.scrape_pollerd(b)

        def moved(before, after, name, **labels):
            return get(after, name, **labels) - get(before, name, **labels)

        # the module: one fetch, one ack, at least one poll that listed it
        self.assertEqual(moved(m0, m1, "stubmail_requests_total", endpoint="fetch",
                               code="200"), 1)
        self.assertEqual(moved(m0, m1, "stubmail_requests_total", endpoint="ack", code="200"), 1)
        self.assertGreaterEqual(moved(m0, m1, "stubmail_requests_total", endpoint="poll",
                                      code="200"), 1)
        self.assertGreaterEqual(moved(m0, m1, "stubmail_response_bytes_total",
                                      endpoint="fetch"), size)
        # the outbox: what the milter stored, now retrieved
        self.assertEqual(moved(m0, m1, "stubmail_outbox_messages", state="done"), 1)
        self.assertEqual(moved(m0, m1, "stubmail_outbox_recipients", state="delivered"), 1)
        self.assertEqual(get(m1, "stubmail_outbox_recipients", state="waiting"), 0)
        self.assertEqual(get(m1, "stubmail_outbox_bytes", state="waiting"), 0)
        # pollerd: one fetched, of that size, one delivered, nothing failed
        self.assertEqual(moved(p0, p1, "stubmail_pollerd_fetched_total"), 1)
        self.assertEqual(moved(p0, p1, "stubmail_pollerd_fetched_bytes_total"), size)
        self.assertEqual(moved(p0, p1, "stubmail_pollerd_delivered_total"), 1)
        self.assertEqual(moved(p0, p1, "stubmail_pollerd_rejected_total"), 0)
        self.assertGreaterEqual(moved(p0, p1, "stubmail_pollerd_polls_total", result="listed"), 1)
        for reason in ("fetch", "verify", "delivery", "deferred", "database", "ack"):
            self.assertEqual(moved(p0, p1, "stubmail_pollerd_failures_total", reason=reason), 0,
                             reason)
        self.assertIn(("stubmail_pollerd_lag_seconds", frozenset({("domain", "a.example")})), p1)
        self.assertGreaterEqual(get(p1, "stubmail_pollerd_lag_seconds", domain="a.example"), 0)
        last = get(p1, "stubmail_pollerd_last_poll_success_seconds", domain="a.example")
        self.assertIn(("stubmail_pollerd_last_poll_success_seconds",
                       frozenset({("domain", "a.example")})), p1)
        self.assertLess(last, 60)
        # the port: the same counts, moved the same
        self.assertEqual(moved(h0, h1, "stubmail_pollerd_delivered_total"), 1)
        self.assertEqual(moved(h0, h1, "stubmail_pollerd_fetched_total"), 1)
        self.assertEqual(moved(h0, h1, "stubmail_pollerd_fetched_bytes_total"), size)
        self.assertEqual(moved(h0, h1, "stubmail_pollerd_rejected_total"), 0)
        self.assertEqual(get(h1, "stubmail_pollerd_delivered_total"),
                         get(p1, "stubmail_pollerd_delivered_total"))
        self.assertIn(("stubmail_pollerd_lag_seconds", frozenset({("domain", "a.example")})), h1)

    def test_stored_message_waits_in_the_gauges(self):
        """A message that nobody polls for (erin@b.example has no
        dave@a.example in her address book) shows as waiting, with its
        octets."""
        a = self.a
        m0 = self.scrape_module(a)
        msg, _ = make_message("dave@a.example", "erin@b.example", "waiting")
        rows = self.send_stored(a, "dave@a.example", "erin@b.example", msg)
        size = int(a.sql_value("SELECT size FROM message WHERE id = '%s'" % rows[0][0]))
        m1 = self.scrape_module(a)
        self.assertEqual(get(m1, "stubmail_outbox_recipients", state="waiting")
                         - get(m0, "stubmail_outbox_recipients", state="waiting"), 1)
        self.assertEqual(get(m1, "stubmail_outbox_messages", state="waiting")
                         - get(m0, "stubmail_outbox_messages", state="waiting"), 1)
        self.assertEqual(get(m1, "stubmail_outbox_bytes", state="waiting")
                         - get(m0, "stubmail_outbox_bytes", state="waiting"), size)

    def test_rate_limited_polls_counted(self):
        a = self.a
        token = get_token(a, self.c)
        m0 = self.scrape_module(a)
        body = json.dumps({"pairs": [{"from": "*@a.example", "to": "carol@c.example"}]})
        statuses = [curl(a.outbox_url + "/v1/poll", "POST", data=body, bearer=token).status
                    for _ in range(BURST + 2)]
        refused = statuses.count(429)
        self.assertGreaterEqual(refused, 1, statuses)
        m1 = self.scrape_module(a)
        self.assertEqual(get(m1, "stubmail_rate_limited_total", endpoint="poll")
                         - get(m0, "stubmail_rate_limited_total", endpoint="poll"), refused)
        self.assertEqual(get(m1, "stubmail_requests_total", endpoint="poll", code="429")
                         - get(m0, "stubmail_requests_total", endpoint="poll", code="429"),
                         refused)

    def test_metrics_only_for_get(self):
        r = curl(self.a.metrics_url, "POST", data="x")
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.header("allow"), "GET, HEAD", r)

    # -- pollerd's metrics_listen -------------------------------------------
    def test_pollerd_port_other_paths_and_methods(self):
        b = self.b
        wait_for(lambda: self.pollerd_listens(b), timeout=20, what="pollerd's metrics port")
        base = "http://%s" % b.pollerd_metrics_address
        for path in ("/", "/metric", "/metrics/", "/metrics/x", "/stubmail-metrics"):
            r = curl(base + path, timeout=10)
            self.assertEqual(r.status, 404, (path, r))
        for method in ("POST", "PUT", "DELETE"):
            r = curl(b.pollerd_metrics_url, method, data="x", timeout=10)
            self.assertEqual(r.status, 405, (method, r))
            self.assertEqual(r.header("allow"), "GET, HEAD", r)
        # a query string is no other path
        self.assertEqual(curl(b.pollerd_metrics_url + "?x=1", timeout=10).status, 200)
        # HEAD: the headers of GET, no body
        conn = http.client.HTTPConnection(b.ip, b.port(POLLERD_METRICS), timeout=10)
        try:
            conn.request("HEAD", "/metrics")
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("content-type"), PROMETHEUS_TYPE)
            self.assertEqual(r.read(), b"")
        finally:
            conn.close()

    def test_pollerd_silent_clients_do_not_stop_delivery(self):
        """Clients that connect and send nothing, or half a request line,
        as many as the connection limit allows and one more (closed at
        once): pollerd goes on pulling mail, closes them when they stay
        silent, and answers a scrape once they are gone."""
        a, b = self.a, self.b
        wait_for(lambda: self.pollerd_listens(b), timeout=20, what="pollerd's metrics port")
        addr = (b.ip, b.port(POLLERD_METRICS))
        hostile = []
        try:
            for i in range(CONNECTION_LIMIT + 1):
                hostile.append(socket.create_connection(addr, timeout=10))
            hostile[0].sendall(b"GET /metr")
            msg, tag = make_message("alice@a.example", "bob@b.example", "past silent clients")
            self.send_stored(a, "alice@a.example", "bob@b.example", msg)
            b.poll_now()
            self.wait_maildir(b, "bob", tag)
            # the one beyond the limit: closed at once
            hostile[-1].settimeout(20)
            try:
                self.assertEqual(hostile[-1].recv(1), b"")
            except ConnectionResetError:
                pass
            # pollerd's timeout for a silent connection closes it (the
            # server's end: recv sees the end of the stream, or a reset)
            hostile[1].settimeout(60)
            try:
                self.assertEqual(hostile[1].recv(1), b"")
            except ConnectionResetError:
                pass
        finally:
            for s in hostile:
                s.close()
        wait_for(lambda: self.pollerd_listens(b), timeout=20,
                 what="pollerd's metrics port answering once the silent clients left")
        self.assertTrue(b.procs["pollerd"].alive())

    def conf_with_metrics_listen(self, name, value):
        """b's configuration for another instance (no udp_listen), with
        metrics_listen value; its path."""
        b = self.b
        b._setup_pollerd(name)
        path = b.path(name + ".conf")
        with open(path, "a") as f:
            f.write("metrics_listen %s\n" % value)
        return path

    def test_pollerd_bad_metrics_listen_fails_the_check(self):
        port = self.b.port(POLLERD_METRICS)
        for bad in ("localhost:%d" % port, "127.0.0.1", "127.0.0.1:70000", "::1:%d" % port,
                    "[::1]%d" % port, "0.0.0.0:%d" % port, "127.0.0.1:http"):
            conf = self.conf_with_metrics_listen("pollerd-bad", bad)
            r = subprocess.run([POLLERD_BIN, "-n", "-c", conf], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(r.returncode, EX_CONFIG, (bad, r.stdout, r.stderr))
            self.assertIn('metrics_listen: "%s": ' % bad, r.stderr, bad)
        conf = self.conf_with_metrics_listen("pollerd-bad", "[::1]:%d" % port)
        r = subprocess.run([POLLERD_BIN, "-n", "-c", conf], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, (r.stdout, r.stderr))

    def test_pollerd_port_in_use_fails_the_start_and_ipv6_serves(self):
        b = self.b
        wait_for(lambda: self.pollerd_listens(b), timeout=20, what="pollerd's metrics port")
        conf = self.conf_with_metrics_listen("pollerd2", b.pollerd_metrics_address)
        r = subprocess.run([POLLERD_BIN, "-f", "-c", conf], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, EX_OSERR, (r.stdout, r.stderr))
        self.assertRegex(r.stderr, r"metrics_listen %s: cannot listen: .*Address already in use"
                         % re.escape(b.pollerd_metrics_address))
        self.assertTrue(b.procs["pollerd"].alive())
        # the same port on [::1]: another address, free
        v6 = "[::1]:%d" % b.port(POLLERD_METRICS)
        self.conf_with_metrics_listen("pollerd2", v6)
        try:
            b.start_pollerd("pollerd2")
            got = wait_for(lambda: self.pollerd_listens_at("http://%s/metrics" % v6),
                           timeout=20, what="the second pollerd answering on " + v6)
            self.assertIn(("stubmail_pollerd_delivered_total", frozenset()), got)
        finally:
            b.kill_pollerd(sig=signal.SIGTERM, name="pollerd2")

    def pollerd_listens_at(self, url):
        try:
            return self.scrape_pollerd(None, url)
        except AssertionError:
            return None

    def test_pollerd_reload_serves_again_with_current_text(self):
        """SIGHUP re-execs pollerd: the new image listens on the port
        again, the same pid. With cycles 10 minutes apart (the new file's
        interval), each scrape still has text made at its request."""
        b = self.b
        proc = b.procs["pollerd"]
        wait_for(lambda: self.pollerd_listens(b), timeout=20, what="pollerd's metrics port")

        def started():
            with open(b.pollerd_log) as f:
                return f.read().count("serving metrics on http://%s/metrics"
                                      % b.pollerd_metrics_address)
        before = started()
        b.pollerd_extra = ["interval 10m"]
        b._setup_pollerd()
        try:
            proc.signal(signal.SIGHUP)
            wait_for(lambda: started() > before, timeout=60,
                     what="pollerd listening again after the reload")
            self.assertTrue(proc.alive(), "pollerd (the same process) should still run")
            wait_for(lambda: self.pollerd_file(b), timeout=20, what="the first cycle's file")
            with open(b.pollerd_metrics_file) as f:
                in_file = parse(f.read())
            t0 = int(time.time())
            h0 = self.scrape_pollerd(b)
            time.sleep(1.5)
            h1 = self.scrape_pollerd(b)
            made = "stubmail_pollerd_metrics_written_timestamp_seconds"
            self.assertGreaterEqual(get(h0, made), t0)
            self.assertGreater(get(h1, made), get(h0, made))
            self.assertLess(get(in_file, made), get(h1, made))
        finally:
            b.pollerd_extra = []
            b._setup_pollerd()
            before = started()
            proc.signal(signal.SIGHUP)
            wait_for(lambda: started() > before, timeout=60,
                     what="pollerd back on the sandbox's file")
