"""Issue 4: subscriptions, pending_match, GET /v1/poll with ETag/304.

a.example runs everything and is the outbox under test. b.example runs
everything: its stubmail-pollerd keeps a.example's subscription in step
with bob's address book and polls with GET /v1/poll (If-None-Match once an
answer listed nothing). c.example only publishes a key and a record: the
test plays its poller by hand (a real login, curl) and puts rows into
a.example's outbox with SQL, so what pending_match must hold is known
exactly.

Checked: an idle pollerd gets 304s and never falls back to POST /v1/poll;
an address-book change sends only that change; a forgotten subscription
(409) is reset and mail still flows; hostile subscription bodies and poll
queries get the right 4xx and change nothing; pending_match equals "every
unacked outbox row a subscribed pair matches" across acks, removal and
re-adding of pairs, and concurrent inserts racing subscription changes; a
304 counts against StubmailMinPollInterval; an answer cut short (more:
true) carries no ETag."""

import json
import os
import re
import subprocess
import threading
import time

from support import SandboxTest, make_message, wait_for, curl, get_token, q

MAX_PAIRS = 50          # StubmailMaxPairs of a.example
POLL_LIMIT = 4          # StubmailPollLimit of a.example

# every unacked outbox row of c.example that a subscribed pair matches,
# computed from scratch: what pending_match must equal
EXPECTED_SQL = (
    "SELECT o.message_id || ' ' || o.recipient FROM outbox o JOIN message m"
    " ON m.id = o.message_id WHERE o.recipient_domain = 'c.example'"
    " AND o.retrieved_at IS NULL AND EXISTS (SELECT 1 FROM subscription s"
    " WHERE s.domain = 'c.example' AND s.recipient = o.recipient"
    " AND (s.sender = m.sender OR s.sender = '*@' || split_part(m.sender, '@', 2)))"
    " ORDER BY 1")
PENDING_SQL = ("SELECT message_id || ' ' || recipient FROM pending_match"
               " WHERE domain = 'c.example' ORDER BY 1")


def pair(frm, to):
    return {"from": frm, "to": to}


class SubscriptionTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"c.example": ("key",)}
    HTTPD_EXTRA = (("StubmailMaxPairs", str(MAX_PAIRS)),
                   ("StubmailPollLimit", str(POLL_LIMIT)),
                   # one poll a second, no burst: test_a_304_counts_as_a_poll needs
                   # the second 429
                   ("StubmailPollBurst", "1"))

    @classmethod
    def setUpWorld(cls):
        cls.token_c = get_token(cls.a, cls.c)

    # -- c.example's poller, by hand ------------------------------------------
    def c_req(self, method, path, body=None, raw=None, headers=(), token=None, **kw):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return curl(self.a.outbox_url + path, method, data=data,
                    bearer=self.token_c if token is None else token, headers=headers, **kw)

    def c_subscribe(self, body, status=200):
        r = self.c_req("POST", "/v1/subscription", body)
        self.assertEqual(r.status, status, r)
        return r

    def c_reset(self, *pairs):
        return self.c_subscribe({"reset": True, "add": list(pairs)}).json()["version"]

    def c_poll(self, version, etag=None):
        """GET /v1/poll as c.example; a 429 waits for Retry-After (the
        minimum interval is a.example's default, 1 s) and asks again."""
        headers = ["If-None-Match: " + etag] if etag else []
        for _ in range(10):
            r = self.c_req("GET", "/v1/poll?version=%d" % version, headers=headers)
            if r.status != 429:
                return r
            time.sleep(float(r.header("retry-after")))
        self.fail("still 429 after 10 tries")

    def put_outbox(self, sender, *recipients):
        """A message from sender to recipients (at c.example) straight into
        a.example's outbox, as the milter would store it; its id."""
        mid = os.urandom(16).hex()
        # the body is never fetched, but the last ack removes it
        with open(os.path.join(self.a.spool_dir, mid), "wb") as f:
            f.write(b"0123456789")
        self.a.sql("INSERT INTO message (id, sender, size, spool_name) VALUES (%s, %s, 10, %s);"
                   % (q(mid), q(sender), q(mid)) +
                   "INSERT INTO outbox (message_id, recipient, recipient_domain) VALUES " +
                   ", ".join("(%s, %s, 'c.example')" % (q(mid), q(r)) for r in recipients))
        return mid

    def pending(self):
        return [r[0] for r in self.a.sql(PENDING_SQL) if r[0]]

    def expected(self):
        return [r[0] for r in self.a.sql(EXPECTED_SQL) if r[0]]

    def c_state(self):
        """Everything of c.example's subscription on a.example."""
        return self.a.sql(
            "SELECT (SELECT string_agg(recipient || '<' || sender, ',' ORDER BY 1)"
            "        FROM subscription WHERE domain = 'c.example'),"
            " (SELECT version FROM subscription_state WHERE domain = 'c.example'),"
            " (SELECT string_agg(seq || ':' || message_id || ':' || recipient, ','"
            "         ORDER BY seq) FROM pending_match WHERE domain = 'c.example')")[0]

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertTrue((r.header("content-type") or "").startswith("application/json"), r)
        self.assertEqual(r.json()["error"], code, r)
        self.assertIsInstance(r.json().get("message"), str)

    def b_polls(self, a):
        """a.example's access log lines of b.example's polls."""
        return self.access_lines(a, r"^\S+ b\.example .*/v1/poll")

    def error_log_since(self, isp, offset):
        with open(isp.error_log, errors="replace") as f:
            f.seek(offset)
            return f.read()

    # -- b.example's pollerd ---------------------------------------------------
    def test_pollerd_idle_polls_get_304(self):
        a, b = self.a, self.b
        b.add_contact("bob@b.example", "alice@a.example")
        msg, tag = make_message("alice@a.example", "bob@b.example", "subscribed")
        self.send_stored(a, "alice@a.example", "bob@b.example", msg)
        self.assertEqual(len(self.wait_maildir(b, "bob", tag, timeout=40)), 1)
        delivered = len(self.b_polls(a))    # earlier tests' 304s do not count
        self.assertIn(["bob@b.example", "alice@a.example"],
                      a.sql("SELECT recipient, sender FROM subscription "
                            "WHERE domain = 'b.example'"))
        wait_for(lambda: any('" 304 ' in l for l in self.b_polls(a)[delivered:]), timeout=30,
                 what="a 304 answer to b.example's poll")
        seen = len(self.b_polls(a))
        wait_for(lambda: len(self.b_polls(a)) >= seen + 2, timeout=30,
                 what="two more polls by b.example")
        idle = self.b_polls(a)[seen:]
        self.assertTrue(all(re.search(r'"GET /stubmail/v1/poll\?version=\d+ HTTP/1\.1" 304 0 "-"$',
                                      l.rstrip()) for l in idle), idle)
        # nothing new: nothing pending for b.example
        self.assertEqual(a.count("pending_match", "domain = 'b.example'"), 0)
        # the stateless poll is never used against an outbox that has
        # subscriptions
        self.assertEqual(self.access_lines(a, r'^\S+ b\.example .*"POST /stubmail/v1/poll '),
                         [])
        self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1)

    def test_address_book_change_sends_only_the_change(self):
        a, b = self.a, self.b
        b.add_contact("bob@b.example", "alice@a.example")
        for i in range(20):
            b.add_contact("bob@b.example", "friend%02d@a.example" % i)
        wait_for(lambda: a.count("subscription", "domain = 'b.example'") >= 21, timeout=30,
                 what="b.example's 21 pairs subscribed at a.example")
        version = int(a.sql_value("SELECT version FROM subscription_state "
                                  "WHERE domain = 'b.example'"))
        offset = os.path.getsize(a.error_log)

        # one transaction: pollerd sees both or neither
        b.sql("INSERT INTO address_book (owner, contact, contact_domain) VALUES "
              "('bob@b.example', 'newcomer@a.example', 'a.example'); "
              "DELETE FROM address_book WHERE contact = 'friend07@a.example'")
        want = ({"friend%02d@a.example" % i for i in range(20)} - {"friend07@a.example"}
                | {"alice@a.example", "newcomer@a.example"})
        wait_for(lambda: {r[0] for r in a.sql("SELECT sender FROM subscription "
                                              "WHERE domain = 'b.example'")} >= want
                 and a.count("subscription", "domain = 'b.example' AND "
                             "sender = 'friend07@a.example'") == 0,
                 timeout=30, what="the address-book change at a.example")
        self.assertEqual({r[0] for r in a.sql("SELECT sender FROM subscription "
                                             "WHERE domain = 'b.example'")}, want)
        # one change of one added and one removed pair, not a reset or the
        # whole book again
        changes = re.findall(r"domain=b\.example id=-: subscription: (.*)",
                             self.error_log_since(a, offset))
        now = int(a.sql_value("SELECT version FROM subscription_state "
                              "WHERE domain = 'b.example'"))
        self.assertEqual(changes, ["1 added, 1 removed, now version %d" % now], changes)
        self.assertGreater(now, version)

        # mail from the newcomer flows, none from the friend removed
        msg, tag = make_message("newcomer@a.example", "bob@b.example", "new friend")
        self.send_stored(a, "newcomer@a.example", "bob@b.example", msg)
        self.wait_maildir(b, "bob", tag, timeout=40)

    def test_forgotten_subscription_409_then_reset(self):
        a, b = self.a, self.b
        b.add_contact("bob@b.example", "alice@a.example")
        wait_for(lambda: a.count("subscription", "domain = 'b.example'") > 0, timeout=30,
                 what="b.example's subscription at a.example")
        offset = os.path.getsize(a.access_log)
        # the outbox loses its subscription state (restored from a backup,
        # an admin's cleanup): b.example's version is no longer the one
        a.sql("DELETE FROM subscription_state WHERE domain = 'b.example'")
        msg, tag = make_message("alice@a.example", "bob@b.example", "after the 409")
        self.send_stored(a, "alice@a.example", "bob@b.example", msg)
        self.wait_maildir(b, "bob", tag, timeout=40)
        with open(a.access_log) as f:
            f.seek(offset)
            lines = [l for l in f if re.match(r"^\S+ b\.example ", l)]
        conflict = [i for i, l in enumerate(lines)
                    if re.search(r'"GET /stubmail/v1/poll\?version=\d+ HTTP/1\.1" 409 ', l)]
        self.assertTrue(conflict, lines)
        self.assertRegex(lines[conflict[0] + 1], r'"POST /stubmail/v1/subscription HTTP/1\.1" 200 ')
        now = a.sql_value("SELECT version FROM subscription_state WHERE domain = 'b.example'")
        self.assertRegex(lines[conflict[0] + 2],
                         r'"GET /stubmail/v1/poll\?version=%s HTTP/1\.1" 200 ' % now)
        # a version never comes back: not the one b.example held before
        self.assertNotIn("version=%s " % now, "".join(lines[:conflict[0] + 1]))

    # -- c.example by hand -------------------------------------------------------
    def test_hostile_subscription_bodies(self):
        v = self.c_reset(pair("alice@a.example", "kate@c.example"))
        self.put_outbox("alice@a.example", "kate@c.example")
        before = self.c_state()
        many = [pair("u%02d@a.example" % i, "kate@c.example") for i in range(MAX_PAIRS + 1)]
        cases = [
            ("stale base", {"base": v + 5, "add": [pair("x@a.example", "kate@c.example")]},
             409, "subscription_changed"),
            ("base behind", {"base": v - 1, "remove": [pair("alice@a.example",
                                                            "kate@c.example")]},
             409, "subscription_changed"),
            ("foreign recipient in add", {"base": v, "add": [pair("*@a.example",
                                                                  "bob@b.example")]},
             403, "foreign_recipient"),
            ("foreign recipient in remove",
             {"base": v, "remove": [pair("alice@a.example", "bob@b.example")]},
             403, "foreign_recipient"),
            ("foreign after a good pair", {"base": v, "add": [
                pair("x@a.example", "kate@c.example"), pair("x@a.example", "bob@B.example")]},
             403, "foreign_recipient"),
            ("foreign in a reset", {"reset": True, "add": [pair("*@a.example",
                                                                "dave@b.example")]},
             403, "foreign_recipient"),
            ("too many pairs", {"base": v, "add": many}, 413, "too_many_pairs"),
            ("too many in add and remove", {"base": v, "add": many[:30],
                                            "remove": many[30:]}, 413, "too_many_pairs"),
            ("too many in a reset", {"reset": True, "add": many}, 413, "too_many_pairs"),
            ("no base", {"add": [pair("x@a.example", "kate@c.example")]}, 400, "bad_request"),
            ("base a string", {"base": str(v)}, 400, "bad_request"),
            ("base negative", {"base": -1}, 400, "bad_request"),
            ("base a fraction", {"base": v + 0.5}, 400, "bad_request"),
            ("base above 2^53", {"base": 2 ** 53}, 400, "bad_request"),
            ("base beyond 64 bits", {"base": 2 ** 64}, 400, "bad_json"),
            ("reset not boolean", {"reset": "yes", "add": []}, 400, "bad_request"),
            ("reset with remove", {"reset": True, "remove": [
                pair("alice@a.example", "kate@c.example")]}, 400, "bad_request"),
            ("add not an array", {"base": v, "add": pair("x@a.example", "kate@c.example")},
             400, "bad_request"),
            ("pair not an object", {"base": v, "add": ["x@a.example"]}, 400, "bad_request"),
            ("pair without to", {"base": v, "add": [{"from": "x@a.example"}]}, 400,
             "bad_request"),
            ("bad sender", {"base": v, "add": [pair("no-at-sign", "kate@c.example")]}, 400,
             "bad_request"),
            ("bracketed recipient", {"base": v, "add": [pair("x@a.example",
                                                             "<kate@c.example>")]},
             400, "bad_request"),
            ("wildcard recipient", {"base": v, "add": [pair("x@a.example",
                                                            "*@c.example")]},
             400, "bad_request"),
        ]
        for name, body, status, code in cases:
            with self.subTest(case=name):
                r = self.c_req("POST", "/v1/subscription", body)
                self.assertError(r, status, code)
                if code == "subscription_changed":
                    self.assertEqual(r.json()["version"], v, r)
                self.assertEqual(self.c_state(), before, "changed by " + name)
        raw_cases = [
            ("not json", "{base: 1}", {}, 400, "bad_json"),
            ("an array", "[]", {}, 400, "bad_json"),
            ("duplicate member", '{"base": %d, "base": %d}' % (v, v), {}, 400, "bad_json"),
            ("NUL in a string", '{"base": %d, "add": [{"from": "x\\u0000@a.example", '
                                '"to": "kate@c.example"}]}' % v, {}, 400, "bad_json"),
            ("wrong content type", json.dumps({"base": v}), {"content_type": "text/plain"},
             415, "unsupported_media_type"),
            ("no token", json.dumps({"base": v}), {"token": ""}, 401, "token_required"),
        ]
        for name, raw, kw, status, code in raw_cases:
            with self.subTest(case=name):
                token = kw.pop("token", None)
                if token == "":
                    r = curl(self.a.outbox_url + "/v1/subscription", "POST", data=raw)
                else:
                    r = self.c_req("POST", "/v1/subscription", raw=raw, **kw)
                self.assertError(r, status, code)
                self.assertEqual(self.c_state(), before, "changed by " + name)

        # the poll's version: required, decimal, current
        for query, status, code in (("", 400, "bad_request"),
                                    ("?version=", 400, "bad_request"),
                                    ("?version=abc", 400, "bad_request"),
                                    ("?version=-1", 400, "bad_request"),
                                    ("?version=1234567890123456", 400, "bad_request"),
                                    ("?version=%d&version=%d" % (v, v), 400, "bad_request"),
                                    ("?version=%d" % (v + 1), 409, "subscription_changed")):
            with self.subTest(query=query):
                r = self.c_req("GET", "/v1/poll" + query)
                self.assertError(r, status, code)
                if status == 409:
                    self.assertEqual(r.json()["version"], v)
                self.assertEqual(self.c_state(), before)
        # and the good request still works
        r = self.c_subscribe({"base": v, "add": [pair("x@a.example", "kate@c.example")]})
        self.assertEqual(list(r.json()), ["version"])
        self.assertGreater(r.json()["version"], v)

    def test_pending_match_follows_acks_and_pairs(self):
        v = self.c_reset(pair("*@a.example", "carol@c.example"),
                         pair("alice@a.example", "dave@c.example"))
        m1 = self.put_outbox("alice@a.example", "carol@c.example")
        m2 = self.put_outbox("mallory@a.example", "dave@c.example")      # not subscribed
        m3 = self.put_outbox("alice@a.example", "dave@c.example")
        m4 = self.put_outbox("zed@a.example", "carol@c.example", "dave@c.example")
        self.put_outbox("alice@a.example", "erin@c.example")              # not subscribed
        want = sorted(["%s carol@c.example" % m1, "%s dave@c.example" % m3,
                       "%s carol@c.example" % m4])
        self.assertEqual(self.pending(), want)
        self.assertEqual(self.expected(), want)

        r = self.c_poll(v)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted("%s %s" % (m["id"], m["to"]) for m in r.json()["messages"]),
                         want)
        self.assertEqual(r.json()["version"], v)
        self.assertFalse(r.json()["more"])
        self.assertNotIn(m2, r.body.decode())
        etag = r.header("etag")
        self.assertRegex(etag, r'^"[!#-~]+"$')
        self.assertEqual(etag, self.a.sql_value("SELECT poll_etag('c.example')"))
        # nothing changed: 304, no body, the ETag again
        r = self.c_poll(v, etag)
        self.assertEqual((r.status, r.body, r.header("etag")), (304, b"", etag), r)

        # an ack ends the match, and the ETag changes
        r = self.c_req("POST", "/v1/message/%s/ack" % m1, {"to": "carol@c.example"})
        self.assertEqual(r.status, 200, r)
        want.remove("%s carol@c.example" % m1)
        self.assertEqual(self.pending(), want)
        r = self.c_poll(v, etag)
        self.assertEqual(r.status, 200, r)
        self.assertNotEqual(r.header("etag"), etag)
        self.assertEqual(len(r.json()["messages"]), 2)

        # removing a pair drops its matches; re-adding backfills what is
        # still unacked (m4, not the acked m1)
        v = self.c_subscribe({"base": v, "remove": [pair("*@a.example",
                                                         "carol@c.example")]}).json()["version"]
        self.assertEqual(self.pending(), ["%s dave@c.example" % m3])
        v = self.c_subscribe({"base": v, "add": [pair("zed@a.example",
                                                      "carol@c.example")]}).json()["version"]
        self.assertEqual(self.pending(), sorted(["%s dave@c.example" % m3,
                                                 "%s carol@c.example" % m4]))
        # a pair covered twice (address and wildcard) stays matched when one goes
        old = v
        v = self.c_subscribe({"base": v, "add": [pair("*@a.example",
                                                      "carol@c.example")]}).json()["version"]
        v = self.c_subscribe({"base": v, "remove": [pair("zed@a.example",
                                                         "carol@c.example")]}).json()["version"]
        self.assertEqual(self.pending(), sorted(["%s dave@c.example" % m3,
                                                 "%s carol@c.example" % m4]))
        self.assertEqual(self.pending(), self.expected())
        # a changed subscription is a new version: the old one gets 409
        r = self.c_poll(old)
        self.assertError(r, 409, "subscription_changed")
        r = self.c_poll(v)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["version"], v)

    def test_concurrent_inserts_and_changes(self):
        """The milter stores while the subscription changes: whatever the
        interleaving, pending_match ends equal to what the pairs match.
        Each pair is added (or removed) once while messages from its sender
        are being stored, and never again, so a match lost to the race (or
        a stale one left) would stay; the insert transactions stay open a
        little after the outbox row, as the milter's do (it also learns the
        address book before its COMMIT). Without sql/004's advisory locks
        this loses matches."""
        a = self.a
        n_pairs = 15
        v = self.c_reset(*[pair("r%d@a.example" % j, "gina@c.example")
                           for j in range(n_pairs)])
        done = threading.Event()
        errors = []

        def insert(n):
            try:
                i = 0
                while not done.is_set() or i < 20:
                    i += 1
                    mid = "%02x%030x" % (n, i)
                    sender = "%s%d@a.example" % ("rs"[i % 2], (i // 2) % n_pairs)
                    subprocess.run(
                        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", a.conninfo, "-c",
                         "INSERT INTO message (id, sender, size, spool_name) VALUES "
                         "('%s', '%s', 1, '%s'); INSERT INTO outbox (message_id, "
                         "recipient, recipient_domain) VALUES ('%s', 'gina@c.example', "
                         "'c.example'); SELECT pg_sleep(0.02)"
                         % (mid, sender, mid, mid)], check=True, capture_output=True)
            except Exception as e:      # noqa: BLE001 - reported below
                errors.append(e)

        def change():
            version = v
            try:
                time.sleep(0.2)
                for j in range(n_pairs):
                    for body in ({"add": [pair("s%d@a.example" % j, "gina@c.example")]},
                                 {"remove": [pair("r%d@a.example" % j, "gina@c.example")]}):
                        body["base"] = version
                        r = self.c_req("POST", "/v1/subscription", body)
                        if r.status != 200:
                            raise AssertionError(r)
                        version = r.json()["version"]
            except Exception as e:      # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                done.set()

        threads = [threading.Thread(target=insert, args=(n,)) for n in range(6)]
        changer = threading.Thread(target=change)
        for t in threads + [changer]:
            t.start()
        for t in threads + [changer]:
            t.join()
        self.assertEqual(errors, [])
        self.assertGreaterEqual(a.count("outbox", "recipient = 'gina@c.example'"), 6 * 20)
        self.assertTrue(self.expected(), "nothing matched: the test tested nothing")
        self.assertEqual(self.pending(), self.expected())

        # acks race the changes too: every ack ends its match for good
        ids = [r[0] for r in a.sql("SELECT message_id FROM pending_match "
                                   "WHERE recipient = 'gina@c.example' LIMIT 10")]
        for mid in ids:     # the last ack removes the body
            with open(os.path.join(a.spool_dir, mid), "wb") as f:
                f.write(b"0")
        version = int(a.sql_value("SELECT version FROM subscription_state "
                                  "WHERE domain = 'c.example'"))
        acker = threading.Thread(target=lambda: [self.c_req(
            "POST", "/v1/message/%s/ack" % mid, {"to": "gina@c.example"}) for mid in ids])
        acker.start()
        self.c_subscribe({"base": version, "add": [pair("*@a.example", "gina@c.example")]})
        acker.join()
        self.assertEqual(a.count("outbox", "retrieved_at IS NOT NULL AND message_id IN (%s)"
                                 % ", ".join(q(i) for i in ids)), len(ids))
        self.assertEqual(self.pending(), self.expected())
        self.assertEqual(a.count("pending_match", "recipient = 'gina@c.example'"),
                         a.count("outbox", "recipient = 'gina@c.example' "
                                 "AND retrieved_at IS NULL"))

    def test_a_304_counts_as_a_poll(self):
        v = self.c_reset(pair("nobody@a.example", "hank@c.example"))
        r = self.c_poll(v)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["messages"], [])
        etag = r.header("etag")
        time.sleep(1.2)
        r = self.c_req("GET", "/v1/poll?version=%d" % v, headers=["If-None-Match: " + etag])
        self.assertEqual(r.status, 304, r)
        r = self.c_req("GET", "/v1/poll?version=%d" % v, headers=["If-None-Match: " + etag])
        self.assertError(r, 429, "too_soon")
        self.assertTrue(r.header("retry-after"), r)

    def test_an_answer_cut_short_has_no_etag(self):
        v = self.c_reset(pair("*@a.example", "ivy@c.example"))
        mids = [self.put_outbox("alice@a.example", "ivy@c.example")
                for _ in range(POLL_LIMIT + 2)]
        r = self.c_poll(v)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["more"])
        self.assertEqual([m["id"] for m in r.json()["messages"]], mids[:POLL_LIMIT])
        self.assertIsNone(r.header("etag"), r.headers)
        for mid in mids[:POLL_LIMIT]:
            self.assertEqual(self.c_req("POST", "/v1/message/%s/ack" % mid,
                                        {"to": "ivy@c.example"}).status, 200)
        r = self.c_poll(v)
        self.assertEqual(r.status, 200, r)
        self.assertFalse(r.json()["more"])
        self.assertEqual([m["id"] for m in r.json()["messages"]], mids[POLL_LIMIT:])
        self.assertTrue(r.header("etag"))


if __name__ == "__main__":
    import unittest
    unittest.main()
