"""Issue 3, limits (docs/PROTOCOL.md, Limits) set in httpd.conf: at most
StubmailMaxPairs pairs (413 too_many_pairs), StubmailMaxRequestBody octets
(413 too_large), a poll per domain every StubmailMinPollInterval seconds
after a burst of StubmailPollBurst (429 too_soon with Retry-After; other
domains unaffected; after Retry-After one poll passes, not a burst; an
ack that records a retrieval gives one poll back, a repeated ack does not),
and tokens that expire after StubmailTokenLifetime seconds (401 token_expired,
then a new login works)."""

import calendar
import json
import os
import time

from support import SandboxTest, curl, get_token, login, login_body, q

INTERVAL = 4
BURST = 3
LIFETIME = 3


class LimitsTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"a.example": ("pg", "httpd"), "b.example": ("key",), "c.example": ("key",)}
    HTTPD_EXTRA = (("StubmailMaxPairs", "5"), ("StubmailMaxRequestBody", "2000"),
                   ("StubmailMinPollInterval", str(INTERVAL)),
                   ("StubmailPollBurst", str(BURST)),
                   ("StubmailTokenLifetime", str(LIFETIME)))

    def poll(self, token, n=1, pad=0):
        body = {"pairs": [{"from": "u%d@a.example" % i, "to": "bob@b.example"}
                          for i in range(n)]}
        if pad:
            body["pad"] = "x" * pad
        return curl(self.a.outbox_url + "/v1/poll", "POST", data=json.dumps(body), bearer=token)

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.json()["error"], code, r)

    def test_max_pairs_and_body(self):
        token = get_token(self.a, self.c)
        c_poll = lambda n, pad=0: curl(   # noqa: E731
            self.a.outbox_url + "/v1/poll", "POST", bearer=token, data=json.dumps(
                {"pairs": [{"from": "u%d@a.example" % i, "to": "carol@c.example"}
                           for i in range(n)], "pad": "x" * pad}))
        self.assertError(c_poll(6), 413, "too_many_pairs")
        self.assertError(c_poll(1, pad=2000), 413, "too_large")
        r = curl(self.a.outbox_url + "/v1/login", "POST", data="x" * 2001)
        self.assertError(r, 413, "too_large")

    def test_min_poll_interval_per_domain(self):
        token_b = get_token(self.a, self.b)
        token_c = get_token(self.a, self.c)
        # a poller paging through "more": true, or sending its pairs in
        # chunks, gets BURST polls in a row
        for i in range(BURST):
            self.assertEqual(self.poll(token_b).status, 200, "poll %d of the burst" % (i + 1))
        r = self.poll(token_b)
        self.assertError(r, 429, "too_soon")
        retry = int(r.header("retry-after"))
        self.assertTrue(1 <= retry <= INTERVAL, r)
        # a refused poll does not restart the clock, and other domains poll
        r = curl(self.a.outbox_url + "/v1/poll", "POST", bearer=token_c, data=json.dumps(
            {"pairs": [{"from": "*@a.example", "to": "carol@c.example"}]}))
        self.assertEqual(r.status, 200, r)
        r = self.poll(token_b)
        self.assertError(r, 429, "too_soon")
        self.assertLessEqual(int(r.header("retry-after")), retry)
        # Retry-After is enough for one poll, and the bucket refills one
        # poll per interval: a hammering poller gets no new burst (tokens
        # live LIFETIME seconds: log in again after each wait)
        time.sleep(int(r.header("retry-after")) + 0.2)
        token_b = get_token(self.a, self.b)
        self.assertEqual(self.poll(token_b).status, 200)
        self.assertError(self.poll(token_b), 429, "too_soon")
        # an idle domain has its whole burst again after BURST intervals
        time.sleep(BURST * INTERVAL + 0.2)
        token_b = get_token(self.a, self.b)
        for i in range(BURST):
            self.assertEqual(self.poll(token_b).status, 200, "poll %d after the pause" % (i + 1))
        self.assertError(self.poll(token_b), 429, "too_soon")

    def test_token_lifetime(self):
        r = login(self.a, login_body(self.b.key, self.a.domain))
        self.assertEqual(r.status, 200, r)
        expires = calendar.timegm(time.strptime(r.json()["expires"], "%Y-%m-%dT%H:%M:%SZ"))
        self.assertLessEqual(abs(expires - (time.time() + LIFETIME)), 2, r.json())
        token = r.json()["token"]
        time.sleep(max(0, expires - time.time()) + 1.1)
        r = curl(self.a.outbox_url + "/v1/message/0123456789abcdef0123456789abcdef",
                 bearer=token)
        self.assertError(r, 401, "token_expired")
        fresh = get_token(self.a, self.b)
        r = curl(self.a.outbox_url + "/v1/message/0123456789abcdef0123456789abcdef",
                 bearer=fresh)
        self.assertError(r, 404, "not_found")


if __name__ == "__main__":
    import unittest
    unittest.main()


class AckGivesPollBackTest(SandboxTest):
    """An ack that records a retrieval gives the polling domain one poll
    back (docs/PROTOCOL.md, Limits): a poller draining its mail is never
    held up; a repeated ack gives nothing."""

    DOMAINS = ("a.example", "b.example")
    SERVICES = {"a.example": ("pg", "httpd"), "b.example": ("key",)}
    HTTPD_EXTRA = (("StubmailMinPollInterval", str(INTERVAL)),
                   ("StubmailPollBurst", str(BURST)))

    def put_outbox(self, to):
        """A message for `to` straight into the outbox, as the milter
        would store it; its id."""
        mid = os.urandom(16).hex()
        with open(os.path.join(self.a.spool_dir, mid), "wb") as f:
            f.write(b"0123456789")
        self.a.sql("INSERT INTO message (id, sender, size, spool_name) VALUES (%s, "
                   "'alice@a.example', 10, %s);" % (q(mid), q(mid)) +
                   "INSERT INTO outbox (message_id, recipient, recipient_domain) VALUES "
                   "(%s, %s, %s)" % (q(mid), q(to), q(to.split("@")[1])))
        return mid

    def test_an_ack_gives_a_poll_back(self):
        one, two = self.put_outbox("bob@b.example"), self.put_outbox("bob@b.example")
        token = get_token(self.a, self.b)
        poll = lambda: curl(self.a.outbox_url + "/v1/poll", "POST", bearer=token,  # noqa: E731
                            data=json.dumps({"pairs": [{"from": "*@a.example",
                                                        "to": "bob@b.example"}]}))
        ack = lambda body, path="/v1/ack": curl(  # noqa: E731
            self.a.outbox_url + path, "POST", data=json.dumps(body), bearer=token)
        for i in range(BURST):
            self.assertEqual(poll().status, 200, "poll %d of the burst" % (i + 1))
        self.assertEqual(poll().status, 429)
        # a batch that records a retrieval: one poll back, one only
        r = ack({"acks": [{"id": one, "to": "bob@b.example"}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(poll().status, 200)
        self.assertEqual(poll().status, 429)
        # the same ack again records nothing: no poll back
        self.assertEqual(ack({"acks": [{"id": one, "to": "bob@b.example"}]}).status, 200)
        self.assertEqual(poll().status, 429)
        # a single ack gives one back as well
        r = ack({"to": "bob@b.example"}, "/v1/message/%s/ack" % two)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(poll().status, 200)
        self.assertEqual(poll().status, 429)
