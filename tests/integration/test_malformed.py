"""Issue 2, test 6: malformed requests to mod_stubmail (bad JSON, unknown or
non-hex id, oversized body, too many pairs, missing or wrong token, wrong
method, unknown path, no Content-Length, wrong Content-Type) get the right
4xx and a JSON error body (docs/PROTOCOL.md, Errors); the database does not
change and Apache keeps serving. (test_hostile.py has the larger corpus.)"""

import json
import tempfile
import time

from support import SandboxTest, make_message, curl, wait_for, get_token, mint_token

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
POLL_OK = json.dumps({"pairs": [{"from": "alice@a.example", "to": "bob@b.example"}]})


class MalformedRequestTest(SandboxTest):
    # b.example serves its key (the milter encrypts to it) but does not poll:
    # this test polls as b.example, as often as it likes
    SERVICES = {"b.example": ("pg", "httpd")}
    HTTPD_EXTRA = (("StubmailMinPollInterval", "0"),)

    @classmethod
    def setUpWorld(cls):
        cls.token = get_token(cls.a, cls.b)
        # one real message waiting for bob (bob does not know mallory: it
        # stays), so that requests naming a real id have something to harm
        msg, tag = make_message("mallory@a.example", "bob@b.example", "waiting")
        r = cls.a.send("mallory@a.example", "bob@b.example", msg)
        assert r.ok, str(r)
        cls.mid = wait_for(lambda: cls.a.sql_value("SELECT id FROM message"), timeout=15,
                           what="the waiting message")

    def setUp(self):
        super().setUp()
        self.before = self.a.table_counts()
        self.snapshot = self.a.sql("SELECT message_id, recipient, retrieved_at FROM outbox "
                                   "ORDER BY 1, 2")
        self.httpd_pid = self.a.procs["httpd"].pid

    def tearDown(self):
        # nothing changed, and Apache (the same parent) still serves
        self.assertEqual(self.a.table_counts(), self.before)
        self.assertEqual(self.a.sql("SELECT message_id, recipient, retrieved_at FROM outbox "
                                    "ORDER BY 1, 2"), self.snapshot)
        self.assertTrue(self.a.procs["httpd"].alive())
        self.assertEqual(self.a.procs["httpd"].pid, self.httpd_pid)
        r = curl(self.a.outbox_url + "/v1/poll", "POST", bearer=self.token, data=POLL_OK)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["messages"], [])
        super().tearDown()

    def url(self, path):
        return self.a.outbox_url + path

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        ctype = r.header("content-type") or ""
        self.assertTrue(ctype.startswith("application/json"), r)
        body = r.json()
        self.assertEqual(body.get("error"), code, r)
        self.assertIsInstance(body.get("message"), str, r)
        self.assertTrue(body["message"], r)
        return body

    def poll(self, data, **kw):
        kw.setdefault("bearer", self.token)
        return curl(self.url("/v1/poll"), "POST", data=data, **kw)

    def forged(self, domain="b.example"):
        """A token for domain, MAC'd with a secret a.example does not have."""
        return mint_token(self.a, domain, int(time.time()) + 600, "k1", "78" * 32)

    # -- authentication -------------------------------------------------------
    def test_auth_missing(self):
        r = self.poll(POLL_OK, bearer=None)
        self.assertError(r, 401, "token_required")
        self.assertEqual(r.header("www-authenticate"), 'Bearer realm="stubmail"')
        r = curl(self.url("/v1/message/" + self.mid))
        self.assertError(r, 401, "token_required")
        # HTTP Basic is no credential at all: only a token is offered
        r = curl(self.url("/v1/message/" + self.mid), user="b.example:whatever-it-was")
        self.assertError(r, 401, "token_required")
        self.assertEqual(r.header("www-authenticate"), 'Bearer realm="stubmail"')

    def test_auth_forged_token(self):
        r = self.poll(POLL_OK, bearer=self.forged())
        self.assertError(r, 401, "bad_token")
        self.assertEqual(r.header("www-authenticate"), 'Bearer realm="stubmail"')
        # a prefix of the right token is wrong too
        r = self.poll(POLL_OK, bearer=self.token[:-1])
        self.assertError(r, 401, "bad_token")

    def test_auth_unknown_domain(self):
        self.assertError(self.poll(POLL_OK, bearer=self.forged("z.example")), 401, "bad_token")

    def test_auth_garbage_header(self):
        r = curl(self.url("/v1/message/" + self.mid),
                 headers=["Authorization: Basic !!!not-base64!!!"])
        self.assertEqual(r.status, 401, r)
        self.assertIn(r.json()["error"], ("bad_token", "token_required"))
        r = curl(self.url("/v1/message/" + self.mid), headers=["Authorization: Bearer abc"])
        self.assertEqual(r.status, 401, r)
        self.assertIn(r.json()["error"], ("bad_token", "token_required"))

    def test_auth_forged_token_cannot_ack(self):
        r = curl(self.url("/v1/message/%s/ack" % self.mid), "POST",
                 bearer=self.forged(), data=json.dumps({"to": "bob@b.example"}))
        self.assertError(r, 401, "bad_token")

    # -- bodies ---------------------------------------------------------------
    def test_bad_json(self):
        self.assertError(self.poll("{not json"), 400, "bad_json")
        self.assertError(self.poll(""), 400, "bad_json")
        self.assertError(self.poll("[1, 2]"), 400, "bad_json")
        self.assertError(self.poll('{"pairs": []} trailing'), 400, "bad_json")
        r = curl(self.url("/v1/message/%s/ack" % self.mid), "POST", bearer=self.token,
                 data='{"to": "bob@b.example"')
        self.assertError(r, 400, "bad_json")

    def test_bad_request(self):
        for body in ({}, {"pairs": []}, {"pairs": "x"}, {"pairs": [{}]},
                     {"pairs": [{"from": "alice@a.example"}]},
                     {"pairs": [{"from": 42, "to": "bob@b.example"}]},
                     {"pairs": [{"from": "alice@a.example", "to": "bob"}]},
                     {"pairs": [{"from": "al ice@a.example", "to": "bob@b.example"}]},
                     {"pairs": [{"from": "alice@a.example", "to": "<bob@b.example>"}]},
                     {"pairs": [{"from": "alice@@a.example", "to": "bob@b.example"}]}):
            with self.subTest(body=body):
                self.assertError(self.poll(json.dumps(body)), 400, "bad_request")
        for body in ({}, {"to": 1}, {"to": "not-an-address"}):
            with self.subTest(ack=body):
                r = curl(self.url("/v1/message/%s/ack" % self.mid), "POST", bearer=self.token,
                         data=json.dumps(body))
                self.assertError(r, 400, "bad_request")

    def test_foreign_recipient(self):
        r = self.poll(json.dumps({"pairs": [{"from": "*@a.example", "to": "carol@c.example"}]}))
        self.assertError(r, 403, "foreign_recipient")

    def test_oversized_body(self):
        big = json.dumps({"pairs": [{"from": "alice@a.example", "to": "bob@b.example"}],
                          "pad": "x" * (1024 * 1024 + 10)})
        with tempfile.NamedTemporaryFile(dir=self.a.rundir) as f:
            f.write(big.encode())
            f.flush()
            r = curl(self.url("/v1/poll"), "POST", bearer=self.token, data_file=f.name)
        self.assertError(r, 413, "too_large")

    def test_too_many_pairs(self):
        pairs = [{"from": "u%d@a.example" % i, "to": "bob@b.example"} for i in range(10001)]
        body = json.dumps({"pairs": pairs})
        self.assertLess(len(body), 1024 * 1024)
        with tempfile.NamedTemporaryFile(dir=self.a.rundir) as f:
            f.write(body.encode())
            f.flush()
            r = curl(self.url("/v1/poll"), "POST", bearer=self.token, data_file=f.name)
        self.assertError(r, 413, "too_many_pairs")

    def test_length_required(self):
        r = curl(self.url("/v1/poll"), "POST", bearer=self.token, data=POLL_OK,
                 headers=["Transfer-Encoding: chunked"])
        self.assertError(r, 411, "length_required")

    def test_unsupported_media_type(self):
        r = curl(self.url("/v1/poll"), "POST", bearer=self.token, data=POLL_OK,
                 content_type="text/plain")
        self.assertError(r, 415, "unsupported_media_type")

    # -- ids --------------------------------------------------------------------
    def test_unknown_id(self):
        self.assertError(curl(self.url("/v1/message/" + UNKNOWN_ID), bearer=self.token),
                         404, "not_found")
        r = curl(self.url("/v1/message/%s/ack" % UNKNOWN_ID), "POST", bearer=self.token,
                 data=json.dumps({"to": "bob@b.example"}))
        self.assertError(r, 404, "not_found")
        # a real message, but a recipient it does not have
        r = curl(self.url("/v1/message/%s/ack" % self.mid), "POST", bearer=self.token,
                 data=json.dumps({"to": "dave@b.example"}))
        self.assertError(r, 404, "not_found")

    def test_bad_id(self):
        # (ids Apache itself turns away or rewrites first, such as "%00" or
        # "%2e%2e", never reach the module)
        for bad in ("XYZ", self.mid.upper(), self.mid[:-1], self.mid + "0",
                    "g" * 32, "-" + self.mid[1:], self.mid[:31] + "%20"):
            with self.subTest(id=bad):
                r = curl(self.url("/v1/message/" + bad), bearer=self.token)
                self.assertError(r, 400, "bad_id")
                r = curl(self.url("/v1/message/%s/ack" % bad), "POST", bearer=self.token,
                         data=json.dumps({"to": "bob@b.example"}))
                self.assertError(r, 400, "bad_id")

    # -- methods and paths --------------------------------------------------------
    def test_wrong_method(self):
        for method, path, allow in (("DELETE", "/v1/poll", "POST"),
                                    ("PUT", "/v1/poll", "POST"),
                                    ("GET", "/v1/subscription", "POST"),
                                    ("DELETE", "/v1/message/" + self.mid, "GET"),
                                    ("POST", "/v1/message/" + self.mid, "GET"),
                                    ("GET", "/v1/message/%s/ack" % self.mid, "POST")):
            with self.subTest(method=method, path=path):
                r = curl(self.url(path), method, bearer=self.token)
                self.assertError(r, 405, "method_not_allowed")
                self.assertIn(allow, r.header("allow") or "", r)

    def test_unknown_path(self):
        for path in ("", "/", "/v1", "/v1/", "/v2/poll", "/v1/polls", "/v1/message",
                     "/v1/message/", "/v1/message/%s/nack" % self.mid,
                     "/v1/message/%s/ack/more" % self.mid, "/v1/poll/"):
            with self.subTest(path=path):
                r = curl(self.url(path), "GET", bearer=self.token, extra=["--path-as-is"])
                self.assertError(r, 404, "no_such_endpoint")


if __name__ == "__main__":
    import unittest
    unittest.main()
