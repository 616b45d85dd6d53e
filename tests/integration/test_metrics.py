"""Metrics (issue 13), read with a real Prometheus parser (Debian's
python3-prometheus-client): mod_stubmail's stubmail-metrics handler
(requests by endpoint and status, octets served, 429s, the outbox by
state: what the milter stored) and pollerd's metrics_file (polls,
fetched, delivered, failures, per remote domain the last good poll and
the lag). One message from alice@a.example to bob@b.example moves each
count it should by exactly what it should."""

import json

from prometheus_client.parser import text_string_to_metric_families

from support import SandboxTest, curl, get_token, make_message, wait_for

# the sandbox's Apache lets a domain poll 5 times in a row (StubmailPollBurst)
BURST = 5


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
