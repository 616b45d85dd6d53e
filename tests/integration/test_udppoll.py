"""The UDP lightweight poll (docs/PROTOCOL.md, "UDP poll"), with the real
servers:

- a login answer names the responder, with the token's payload as the
  session and the secret derived from the token key;
- a raw UDP client (this file, computing the HMACs itself from what a real
  login gave it) gets "idle" after an idle HTTP poll and "poll" once new
  mail is pending; every reply is authenticated, bound to its request and
  never longer than it;
- a corpus of hostile datagrams gets no reply at all, and a good one is
  answered after it; a flood from one source is cut to its rate;
- the responder is Apache's helper process: killed, Apache starts a new one;
  a graceful restart replaces it; a stop leaves nothing holding the port;
- stubmail-pollerd end to end: with the responder up an idle cycle makes no
  HTTP poll (a.example's access log), new mail still arrives at once; with
  the UDP answers lost (the login names a port nobody serves) it polls by
  HTTP and mail still arrives."""

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import time

from support import (SandboxTest, make_message, wait_for, login, login_body, curl, b64url,
                     b64url_decode, receipt_of)
from test_protocol_examples import sections, section


def mac(key, data):
    return b64url(hmac.new(key, data, hashlib.sha256).digest())


def udp_key(secret_hex, session):
    """K of a session as the responder derives it (from the token key)."""
    return hmac.new(bytes.fromhex(secret_hex), b"stubmail-udp-v1|" + session.encode(),
                    hashlib.sha256).digest()


def request(key, session, cursor, t=None):
    """(datagram, its MAC) of a UDP poll request."""
    signed = ("stubmail1 poll %s %s %d" % (session, cursor, int(time.time()) if t is None else t))
    m = mac(key, signed.encode())
    return (signed + " " + m).encode(), m


def reply_status(key, req_mac, data):
    """"idle"/"poll" if data is the authentic reply to the request whose MAC
    is req_mac, else None."""
    for status in ("idle", "poll"):
        want = "stubmail1 %s %s" % (status, mac(key, ("stubmail1 reply %s %s"
                                                      % (status, req_mac)).encode()))
        if data == want.encode():
            return status
    return None


def responder_pids(isp):
    """PIDs of the processes holding isp's UDP poll socket."""
    ip, port = isp.udp_poll_address.rsplit(":", 1)
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(ip), "little"), int(port))
    inodes = set()
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want:
                inodes.add("socket:[%s]" % fields[9])
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir("/proc/%s/fd" % pid):
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) in inodes:
                    pids.add(int(pid))
        except OSError:
            continue
    return pids


def alive(pid):
    """Running (not a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Client:
    """The poller's side by hand: one UDP socket, a login's session."""

    def __init__(self, test, server, answer):
        self.test = test
        udp = answer["udp"]
        ip, port = udp["address"].rsplit(":", 1)
        self.addr = (ip, int(port))
        self.session = udp["session"]
        self.key = b64url_decode(udp["secret"])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((test.b.ip, 0))
        self.replies = []           # (request length, reply) of every reply seen

    def close(self):
        self.sock.close()

    def send_raw(self, data, wait=0.4):
        """Send data; the reply, or None if none came within wait seconds."""
        self.sock.sendto(data, self.addr)
        self.sock.settimeout(wait)
        try:
            got, _ = self.sock.recvfrom(65536)
        except socket.timeout:
            return None
        self.replies.append((len(data), got))
        return got

    def ask(self, cursor, t=None, wait=1.0):
        pkt, m = request(self.key, self.session, cursor, t)
        got = self.send_raw(pkt, wait)
        if got is None:
            return None
        status = reply_status(self.key, m, got)
        self.test.assertIsNotNone(status, "reply not authentic: %r" % got)
        return status


class ResponderTest(SandboxTest):
    """a.example runs everything; b.example serves only its key (a.example's
    milter encrypts to it): this test is its poller."""
    SERVICES = {"b.example": ("pg", "httpd")}
    UDP_POLL = True

    @classmethod
    def setUpWorld(cls):
        cls.pair = {"from": "alice@a.example", "to": "bob@b.example"}

    def login(self):
        r = login(self.a, login_body(self.b.key, self.a.domain))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def get_poll(self, version, token, headers=()):
        """GET /v1/poll?version=, waiting out StubmailMinPollInterval."""
        while True:
            r = curl(self.a.outbox_url + "/v1/poll?version=%d" % version, bearer=token,
                     headers=list(headers))
            if r.status != 429:
                return r
            time.sleep(float(r.header("retry-after") or 1))

    def subscribe_and_poll(self, token):
        """Subscribe b's one pair, poll it empty; the ETag of that poll."""
        r = curl(self.a.outbox_url + "/v1/subscription", "POST", bearer=token,
                 data=json.dumps({"reset": True, "add": [self.pair]}))
        self.assertEqual(r.status, 200, r)
        version = r.json()["version"]
        while True:
            r = self.get_poll(version, token)
            self.assertEqual(r.status, 200, r)
            if not r.json()["messages"]:
                break
            for m in r.json()["messages"]:      # leftovers of an earlier test
                a = curl(self.a.outbox_url + "/v1/message/%s/ack" % m["id"], "POST",
                         bearer=token, data=json.dumps(
                             {"to": m["to"], "receipt": receipt_of(self.b, self.a, m["id"])}))
                self.assertEqual(a.status, 200, a)
        etag = r.header("etag")
        self.assertTrue(etag, r)
        r2 = self.get_poll(version, token, ["If-None-Match: " + etag])
        self.assertEqual(r2.status, 304, r2)
        return etag, version

    def client(self):
        c = Client(self, self.a, self.login())
        self.addCleanup(c.close)
        return c

    def test_protocol_example(self):
        """The worked example of PROTOCOL.md "UDP poll", recomputed here
        independently of lib/sm_udppoll.c (whose unit test checks it too)."""
        sec = section(sections(), "UDP poll")
        blocks = sec["fenced"]
        values = [b for b in blocks if b.startswith("token secret k1")][0]
        v = dict(re.split(r"\s{2,}", l.strip(), 1) for l in values.strip().split("\n"))
        session = b64url(v["payload"].encode())
        self.assertEqual(v["session"], session)
        key = udp_key(v["token secret k1"], session)
        self.assertEqual(v["secret"], b64url(key))
        req, m = request(key, session, v["cursor"], int(v["time"]))
        self.assertIn(req.decode() + "\n", blocks)
        for status in ("idle", "poll"):
            rep = [b.strip() for b in blocks if b.startswith("stubmail1 %s " % status)
                   and len(b.strip()) == 58]
            self.assertEqual(len(rep), 1, status)
            self.assertEqual(reply_status(key, m, rep[0].encode()), status)
        login_example = json.loads([b for b in blocks if b.startswith('{"token"')][0]
                                   .replace("\u2026", ""))
        self.assertEqual(login_example["udp"]["session"], session)
        self.assertEqual(login_example["udp"]["secret"], v["secret"])
        self.assertEqual(login_example["token"].split(".")[1], session)

    def test_login_names_the_responder(self):
        ans = self.login()
        udp = ans["udp"]
        self.assertEqual(udp["address"], self.a.udp_poll_address)
        token = ans["token"]
        self.assertEqual(udp["session"], token.split(".")[1])
        key_id, secret_hex = self.a.token_keys[-1]
        self.assertEqual(b64url_decode(udp["secret"]), udp_key(secret_hex, udp["session"]))
        self.assertEqual(len(udp["secret"]), 43)
        self.assertNotIn(token.split(".")[2], json.dumps(udp), "the token's MAC leaked")

    def test_idle_then_poll(self):
        c = self.client()
        token = self.login()["token"]
        etag, version = self.subscribe_and_poll(token)
        self.assertEqual(c.ask(etag), "idle")
        self.assertEqual(c.ask('"0.0.0.0000000000000000"'), "poll", "stale cursor")

        msg, tag = make_message("alice@a.example", "bob@b.example", "udp poll")
        self.send_stored(self.a, "alice@a.example", "bob@b.example", msg)
        # the notification reaches the responder's cache at once
        self.assertEqual(wait_for(lambda: c.ask(etag) == "poll", timeout=5,
                                  what="UDP answer poll"), True)
        r = self.get_poll(version, token, ["If-None-Match: " + etag])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json()["messages"]), 1)
        new_etag = r.header("etag")
        self.assertNotEqual(new_etag, etag)
        self.assertEqual(c.ask(new_etag), "idle", "the cursor of the poll that listed it")
        # the ack ends the match: its notification, too, reaches the cache
        # (cached since the "idle" just above, for up to 10 s without one)
        m = r.json()["messages"][0]
        a = curl(self.a.outbox_url + "/v1/message/%s/ack" % m["id"], "POST", bearer=token,
                 data=json.dumps({"to": m["to"],
                                  "receipt": receipt_of(self.b, self.a, m["id"])}))
        self.assertEqual(a.status, 200, a)
        r = self.get_poll(version, token, ["If-None-Match: " + new_etag])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["messages"], [])
        acked_etag = r.header("etag")
        self.assertNotEqual(acked_etag, new_etag)
        self.assertEqual(wait_for(lambda: c.ask(acked_etag) == "idle" or None, timeout=2,
                                  what="UDP answer idle after the ack"), True)
        # so does a new version of the subscription (nothing pending changes)
        r = curl(self.a.outbox_url + "/v1/subscription", "POST", bearer=token,
                 data=json.dumps({"base": version, "add": [{"from": "nobody@a.example",
                                                            "to": "bob@b.example"}]}))
        self.assertEqual(r.status, 200, r)
        version = r.json()["version"]
        r = self.get_poll(version, token)
        self.assertEqual((r.status, r.json()["messages"]), (200, []), r)
        versioned_etag = r.header("etag")
        self.assertNotEqual(versioned_etag, acked_etag)
        self.assertEqual(wait_for(lambda: c.ask(versioned_etag) == "idle" or None, timeout=2,
                                  what="UDP answer idle after the subscription change"), True)
        for n, got in c.replies:
            self.assertLessEqual(len(got), n, "reply longer than its request")

    def test_hostile_datagrams_get_no_reply(self):
        a = self.a
        c = self.client()
        token = self.login()["token"]
        etag, _ = self.subscribe_and_poll(token)
        key_id, secret_hex = a.token_keys[-1]
        now = int(time.time())
        good, good_mac = request(c.key, c.session, etag, now)

        def session_of(domain, expiry, kid=key_id):
            return b64url(("%s|%d|%s" % (domain, expiry, kid)).encode())

        # another domain's session, MAC'd with b's key; the right key for an
        # expired session of b; an unknown key id, MAC'd with the key the
        # current token secret would give it (what a responder that fell
        # back to another key than the one named would accept)
        other = session_of("c.example", now + 3600)
        expired = session_of("b.example", now - 10)
        unknown = session_of("b.example", now + 3600, "zz")
        corpus = {
            "truncated": good[:-10],
            "one octet more": good + b"A",
            "oversized": good + b"x" * 2000,
            "bad mac": good[:-1] + (b"A" if good[-1:] != b"A" else b"B"),
            "other domain's session": request(c.key, other, etag, now)[0],
            "expired session": request(udp_key(secret_hex, expired), expired, etag, now)[0],
            "unknown key id": request(udp_key(secret_hex, unknown), unknown, etag, now)[0],
            "old time": request(c.key, c.session, etag, now - 120)[0],
            "future time": request(c.key, c.session, etag, now + 120)[0],
            # just outside the documented 30 s either way (the corpus takes
            # some 10 s to send: the old one only gets older, the future one
            # stays over 30 s ahead)
            "40 s old": request(c.key, c.session, etag, now - 40)[0],
            "45 s ahead": request(c.key, c.session, etag, now + 45)[0],
            "huge time": request(c.key, c.session, etag, 999999999999)[0],
            "13-digit time": request(c.key, c.session, etag, 1000000000000)[0],
            "leading zero": good.replace(b" %d " % now, b" 0%d " % now),
            "binary junk": os.urandom(200),
            "NULs": b"\0" * 120,
            "NUL in cursor": request(c.key, c.session, etag[:3] + "\0" + etag[3:], now)[0],
            "empty": b"",
            "wrong version": b"stubmail2" + good[9:],
            "upper-case version": b"STUBMAIL1" + good[9:],
            "wrong verb": b"stubmail1 ping" + good[14:],
            "a reply": b"stubmail1 idle " + good_mac.encode(),
            "tabs": good.replace(b" ", b"\t"),
            "double space": good.replace(b" poll ", b" poll  "),
            "trailing newline": good + b"\n",
            "CRLF": good + b"\r\n",
            "8-bit cursor": good.replace(etag.encode(), etag.encode() + b"\xc3\xa9"),
            "not base64 session": request(c.key, "!!!!" + c.session, etag, now)[0],
            "129-octet cursor": request(c.key, c.session, "x" * 129, now)[0],
        }
        self.assertGreaterEqual(len(corpus), 20)
        log_at = os.path.getsize(a.error_log)
        for name, data in corpus.items():
            self.assertIsNone(c.send_raw(data, wait=0.3), "answered: %s" % name)
        # dropped silently: anyone can send these, a line each would let
        # them fill the error log (the responder sums them up, at debug)
        with open(a.error_log, errors="replace") as f:
            f.seek(log_at)
            added = f.readlines()
        self.assertLess(len(added), 5, "a log line per hostile datagram:\n" + "".join(added[:10]))
        # (sent slower than the rate limit refills: the good one is not
        # refused for the flood of bad ones)
        self.assertEqual(c.ask(etag), "idle", "a good request after the corpus")
        for n, got in c.replies:
            self.assertLessEqual(len(got), n)

    def test_older_time_than_accepted_is_refused(self):
        c = self.client()
        token = self.login()["token"]
        etag, _ = self.subscribe_and_poll(token)
        now = int(time.time())
        self.assertEqual(c.ask(etag, t=now), "idle")
        self.assertIsNone(c.ask(etag, t=now - 5, wait=0.4), "an older time was answered")
        self.assertEqual(c.ask(etag, t=now), "idle", "the same second again is fine")

    def test_flood_is_cut_to_the_rate(self):
        c = self.client()
        token = self.login()["token"]
        etag, _ = self.subscribe_and_poll(token)
        time.sleep(2.5)             # the bucket is full again: 40 (2 x 20/s)
        pkt, _ = request(c.key, c.session, etag)
        c.sock.settimeout(0)
        t0 = time.monotonic()
        for _ in range(300):
            c.sock.sendto(pkt, c.addr)
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        got = 0
        while True:
            try:
                c.sock.recvfrom(65536)
                got += 1
            except (BlockingIOError, socket.timeout):
                break
        self.assertGreater(got, 0)
        self.assertLessEqual(got, 40 + int(20 * elapsed) + 2, "the rate limit let %d through"
                             % got)
        time.sleep(1.0)
        self.assertEqual(c.ask(etag), "idle", "answered again once the bucket refilled")

    def test_port_is_not_shared(self):
        """The responder binds without SO_REUSEADDR: on Linux that option
        lets a second UDP socket (another user's, another Apache) bind the
        same address and take a share of the datagrams."""
        c = self.client()
        token = self.login()["token"]
        etag, _ = self.subscribe_and_poll(token)
        host, port = self.a.udp_poll_address.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with self.assertRaises(OSError, msg="a second socket bound the responder's port"):
            s.bind((host, int(port)))
        self.assertEqual(c.ask(etag), "idle")

    def test_killed_responder_is_restarted(self):
        a = self.a
        a.expect_log(r"udp responder died \(signal 9\); restarting it")
        c = self.client()
        token = self.login()["token"]
        etag, _ = self.subscribe_and_poll(token)
        (old,) = responder_pids(a)
        os.kill(old, signal.SIGKILL)
        new = wait_for(lambda: (responder_pids(a) - {old}) or None, timeout=10,
                       what="a new responder process")
        self.assertEqual(len(new), 1)
        self.assertEqual(wait_for(lambda: c.ask(etag) == "idle" or None, timeout=10,
                                  what="the new responder's answer"), True)

    def test_graceful_restart_replaces_it(self):
        a = self.a
        c = self.client()
        token = self.login()["token"]
        etag, _ = self.subscribe_and_poll(token)
        (old,) = responder_pids(a)
        a.procs["httpd"].signal(signal.SIGUSR1)     # apachectl graceful
        new = wait_for(lambda: (responder_pids(a) - {old}) or None, timeout=15,
                       what="the responder of the new generation")
        self.assertEqual(len(new), 1)
        self.assertFalse(alive(old), "the old responder outlived the graceful restart")
        self.assertEqual(wait_for(lambda: c.ask(etag) == "idle" or None, timeout=10,
                                  what="the new responder's answer"), True)

    def test_database_down_no_reply(self):
        a = self.a
        a.expect_log(r"stubmail: udp responder: (database connection lost|cannot connect)")
        c = self.client()
        token = self.login()["token"]
        etag, _ = self.subscribe_and_poll(token)
        self.assertEqual(c.ask(etag), "idle")
        a.stop_db()
        try:
            time.sleep(0.5)
            for _ in range(3):
                self.assertIsNone(c.ask(etag, wait=0.5), "answered without its database")
        finally:
            a.start_db()
        self.assertEqual(wait_for(lambda: c.ask(etag) == "idle" or None, timeout=15,
                                  what="an answer once the database is back"), True)

    def test_stop_leaves_no_orphan(self):
        a = self.a
        (pid,) = responder_pids(a)
        p = a.procs["httpd"]
        p.begin_stop()
        p.popen.wait(20)            # Apache's parent is gone ...
        try:
            # ... and took the responder with it, before the sandbox's
            # process-group kill could hide an orphan
            self.assertFalse(alive(pid), "the responder outlived Apache")
            self.assertEqual(responder_pids(a), set(), "something still holds the port")
        finally:
            p.finish_stop()
            del a.procs["httpd"]
            a.start_httpd()
        wait_for(lambda: responder_pids(a) or None, timeout=10, what="a responder again")


class PollerdUdpTest(SandboxTest):
    """Both ISPs complete; b.example's pollerd asks a.example by UDP."""
    UDP_POLL = True
    POLL_INTERVAL = "2s"

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def polls(self):
        return len(self.access_lines(self.a, r'"(GET|POST) /stubmail/v1/poll'))

    def deliver(self, subject):
        msg, tag = make_message("alice@a.example", "bob@b.example", subject)
        self.send_ok(self.a, "alice@a.example", "bob@b.example", msg)
        self.wait_maildir(self.b, "bob", tag, timeout=30)

    def test_idle_cycles_make_no_http_poll(self):
        self.deliver("first, by HTTP")
        # the next cycle's HTTP poll lists nothing: from then on its ETag is
        # known and the UDP answers for it
        before = self.polls()
        wait_for(lambda: self.polls() > before or None, timeout=10,
                 what="the poll after the delivery")
        time.sleep(1)
        before = self.polls()
        time.sleep(7)               # three cycles or more
        self.assertEqual(self.polls(), before, "idle cycles polled by HTTP")
        # and new mail still comes: the answer is "poll"
        self.deliver("second, after idle UDP polls")
        self.assertGreater(self.polls(), before)

    def test_lost_udp_falls_back_to_http(self):
        a, b = self.a, self.b
        ip, port = a.udp_poll_address.rsplit(":", 1)
        # the login now names a port nobody serves: every UDP poll goes unanswered
        a.httpd_extra.append(("StubmailUDPResponder", "%s %s:%d" % (a.udp_poll_address, ip,
                                                                   int(port) + 1)))
        try:
            a.restart_httpd()
            b.kill_pollerd(signal.SIGTERM)      # log in again: a new session
            b.start_pollerd()
            self.deliver("third, UDP lost")
            time.sleep(2)
            before = self.polls()
            time.sleep(6)
            self.assertGreater(self.polls(), before, "no HTTP poll without UDP answers")
            self.deliver("fourth, UDP still lost")
        finally:
            a.httpd_extra.pop()
            a.restart_httpd()
