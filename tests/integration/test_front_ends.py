"""Two Apache front ends of one outbox (issue 12): a.example runs two
Apaches on its one database and one spool (Sandbox(front_ends=2): the
second on other ports of a.example's address, with the same token keys,
as a second machine behind a load balancer would be), each with its own
UDP poll responder and poll cache. b.example only publishes a key: the
test is its poller, alternating between the front ends, and puts messages
into a.example's outbox with SQL, as the milter would.

Checked: a token issued by either front end works at the other; a
subscription changed at one is polled at the other under the same ETag;
idle polls are 304s from both poll caches; a fetch at one is acked at the
other (and the shared spool file goes); after that ack, or a new message,
neither cache answers 304 for the old ETag any more (the other front end
hears of the change through PostgreSQL's notification); both UDP
responders answer a cursor alike, before and after changes made through
the other front end."""

import json
import os
import re

from support import SandboxTest, curl, login_body, q, wait_for
from test_udppoll import Client

RECIPIENT = "bob@b.example"
PAIR = {"from": "*@a.example", "to": RECIPIENT}


class FrontEndsTest(SandboxTest):
    SERVICES = {"a.example": ("pg", "httpd"), "b.example": ("key",)}
    UDP_POLL = True
    FRONT_ENDS = 2
    HTTPD_EXTRA = (("StubmailMinPollInterval", "0"),
                   # the debug line of a 304 says whether the cache answered
                   ("LogLevel", "info ssl:warn stubmail:debug"))

    def setUp(self):
        super().setUp()
        self.a.sql("DELETE FROM message")
        self.fe = self.a.front_ends
        self.answers = [self.login(fe) for fe in self.fe]
        self.token = self.answers[0]["token"]
        r = self.req(self.fe[1], "POST", "/v1/subscription", {"reset": True, "add": [PAIR]})
        self.assertEqual(r.status, 200, r)
        self.version = r.json()["version"]

    # -- b.example's poller, by hand, at either front end ---------------------
    def login(self, fe):
        r = curl(fe.outbox_url + "/v1/login", "POST",
                 data=json.dumps(login_body(self.b.key, self.a.domain)))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def req(self, fe, method, path, body=None, headers=(), token=None):
        return curl(fe.outbox_url + path, method, bearer=token or self.token,
                    data=json.dumps(body) if body is not None else None, headers=headers)

    def poll(self, fe, etag=None):
        return self.req(fe, "GET", "/v1/poll?version=%d" % self.version,
                        headers=["If-None-Match: " + etag] if etag else [])

    def put_outbox(self):
        """A message to RECIPIENT straight into a.example's outbox (its body
        in the shared spool); its id."""
        mid = os.urandom(16).hex()
        with open(os.path.join(self.a.spool_dir, mid), "wb") as f:
            f.write(mid.encode())
        self.a.sql("INSERT INTO message (id, sender, size, spool_name)"
                   " VALUES (%s, 'alice@a.example', 32, %s);"
                   "INSERT INTO outbox (message_id, recipient, recipient_domain)"
                   " VALUES (%s, %s, 'b.example')" % (q(mid), q(mid), q(mid), q(RECIPIENT)))
        return mid

    def listed(self, r):
        self.assertEqual(r.status, 200, r)
        return sorted(m["id"] for m in r.json()["messages"])

    def cached_304s(self, fe, offset):
        with open(fe.error_log, errors="replace") as f:
            f.seek(offset)
            return len(re.findall(r"poll: not modified, .*\(poll cache\)", f.read()))

    def idle_from_both_caches(self, etag):
        """Polls with etag at both front ends are 304s, until each has
        answered one from its poll cache (its entry for b.example holds
        etag)."""
        for fe in self.fe:
            def cached():
                offset = os.path.getsize(fe.error_log)
                r = self.poll(fe, etag)
                self.assertEqual(r.status, 304, (fe, r))
                return self.cached_304s(fe, offset) or None
            wait_for(cached, timeout=20, interval=0.3,
                     what="a 304 from the poll cache of %r" % fe)

    def no_304_for(self, etag, ids):
        """Both front ends list exactly ids for the old etag: as soon as the
        other front end's notification arrived, no cache answers 304 for it;
        the new ETag, the same at both."""
        etags = []
        for fe in self.fe:
            r = wait_for(lambda: (lambda r: r if r.status == 200 else None)(
                self.poll(fe, etag)), timeout=5, interval=0.1,
                what="%r to see the change" % fe)
            self.assertEqual(self.listed(r), sorted(ids), (fe, r))
            etags.append(r.header("etag"))
        self.assertEqual(etags[0], etags[1], "the front ends disagree on the ETag")
        self.assertNotEqual(etags[0], etag)
        return etags[0]

    # -- the tests ----------------------------------------------------------------
    def test_tokens_of_either_front_end_work_at_the_other(self):
        for token, fe in ((self.answers[0]["token"], self.fe[1]),
                          (self.answers[1]["token"], self.fe[0])):
            r = self.req(fe, "GET", "/v1/poll?version=%d" % self.version, token=token)
            self.assertEqual(r.status, 200, (fe, r))

    def test_alternating_poller_sees_one_outbox(self):
        first, second = self.put_outbox(), self.put_outbox()
        r = self.poll(self.fe[1])
        self.assertEqual(self.listed(r), sorted([first, second]))
        etag = r.header("etag")
        self.idle_from_both_caches(etag)

        # fetched at one, acked at the other; the spool is shared
        r = self.req(self.fe[0], "GET", "/v1/message/" + first)
        self.assertEqual((r.status, r.body), (200, first.encode()), r)
        r = self.req(self.fe[1], "POST", "/v1/message/%s/ack" % first, {"to": RECIPIENT})
        self.assertEqual(r.status, 200, r)
        self.assertFalse(os.path.exists(os.path.join(self.a.spool_dir, first)))
        r = self.req(self.fe[0], "GET", "/v1/message/" + first)
        self.assertEqual(r.status, 404, r)
        etag = self.no_304_for(etag, [second])
        self.idle_from_both_caches(etag)

        # a new message: neither cache answers for the ETag before it
        third = self.put_outbox()
        etag = self.no_304_for(etag, [second, third])
        self.idle_from_both_caches(etag)

        # the acks of the rest in one batch, the other way round
        r = self.req(self.fe[0], "POST", "/v1/ack",
                     {"acks": [{"id": m, "to": RECIPIENT} for m in (second, third)]})
        self.assertEqual(r.status, 200, r)
        self.no_304_for(etag, [])

    def test_udp_responders_answer_alike(self):
        clients = [Client(self, self.a, answer) for answer in self.answers]
        for c in clients:
            self.addCleanup(c.close)
        self.assertEqual([c.addr for c in clients],
                         [(fe.ip, int(fe.udp_poll_address.rsplit(":", 1)[1]))
                          for fe in self.fe], "each login names its own front end's responder")
        # one session, both responders: the token key is the same
        clients[1].session, clients[1].key = clients[0].session, clients[0].key

        def both(cursor, want):
            wait_for(lambda: [c.ask(cursor) for c in clients] == [want, want] or None,
                     timeout=5, interval=0.1, what="both responders to say %s" % want)

        r = self.poll(self.fe[0])
        self.assertEqual(self.listed(r), [])
        idle = r.header("etag")
        both(idle, "idle")
        mid = self.put_outbox()
        both(idle, "poll")
        r = self.poll(self.fe[1], idle)
        self.assertEqual(self.listed(r), [mid])
        pending = r.header("etag")
        both(pending, "idle")
        r = self.req(self.fe[0], "POST", "/v1/message/%s/ack" % mid, {"to": RECIPIENT})
        self.assertEqual(r.status, 200, r)
        both(pending, "poll")
