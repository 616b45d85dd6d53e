"""Issue 3: a corpus of hostile requests against mod_stubmail over HTTPS,
sent with curl. Each case is its own test (one ok/not ok line): the answer
has the expected 4xx status and a JSON error body {"error": CODE,
"message": text} with the expected CODE; the rows of message, outbox,
received and login_nonce are unchanged; the same Apache still serves a
good request afterwards; its error log has no unexpected [warn] or worse.

a.example runs everything and holds one message from mallory to bob;
b.example runs PostgreSQL and Apache (it serves its key, and issues a token
of its own that a.example must refuse); c.example only publishes a key and
a record. The test logs in as b.example and c.example by hand (gpg)."""

import json
import os
import time
import unittest

from support import (SandboxTest, make_message, wait_for, curl, login, login_body,
                     get_token, mint_token, login_statement, gpg_sign, rfc3339, raw_https)

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
POLL_BOB = {"pairs": [{"from": "*@a.example", "to": "bob@b.example"}]}
COUNTED = ("message", "outbox", "received", "login_nonce")


def pairs(*addrs):
    return json.dumps({"pairs": [{"from": f, "to": t} for f, t in addrs]})


class HostileTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"b.example": ("pg", "httpd"), "c.example": ("key",)}
    # every case may poll: no minimum interval between polls here
    # (test_limits.py checks the 429)
    HTTPD_EXTRA = (("StubmailMinPollInterval", "0"),)

    @classmethod
    def setUpWorld(cls):
        a, b, c = cls.a, cls.b, cls.c
        # one message for bob waits (nobody polls): requests naming it have
        # something to harm
        msg, _ = make_message("mallory@a.example", "bob@b.example", "waiting")
        r = a.send("mallory@a.example", "bob@b.example", msg)
        assert r.ok, str(r)
        cls.mid = wait_for(lambda: a.sql_value("SELECT id FROM message"), timeout=15,
                           what="the waiting message")
        # the one good login of the corpus, replayed below
        cls.good_login = login_body(b.key, a.domain)
        r = login(a, cls.good_login)
        assert r.status == 200, r
        cls.token_b = r.json()["token"]
        cls.token_c = get_token(a, c)
        cls.token_c_from_b = get_token(b, c)    # issued by b.example's server
        with open(b.key.public) as f:
            cls.key_b = f.read()
        with open(c.key.public) as f:
            cls.key_c = f.read()
        big = os.path.join(a.rundir, "pairs-10mb.json")
        n = 10 * 1024 * 1024 // 50
        with open(big, "w") as f:
            f.write(pairs(*[("u%07d@a.example" % i, "bob@b.example") for i in range(n)]))
        cls.big_pairs = big

    def setUp(self):
        super().setUp()
        self.before = self.counts()
        self.httpd_pid = self.a.procs["httpd"].pid

    def tearDown(self):
        self.assertEqual(self.counts(), self.before, "the database changed")
        self.assertTrue(self.a.procs["httpd"].alive())
        self.assertEqual(self.a.procs["httpd"].pid, self.httpd_pid)
        r = self.req("GET", "/v1/message/" + self.mid, token=self.token_b)
        self.assertEqual(r.status, 200, "Apache no longer serves a good request: %r" % r)
        super().tearDown()

    def counts(self):
        return self.a.sql("SELECT " + ", ".join("(SELECT count(*) FROM %s)" % t
                                                for t in COUNTED))[0]

    # -- request builders used by the table ------------------------------------
    def req(self, method, path, token=None, data=None, **kw):
        return curl(self.a.outbox_url + path, method, data=data, bearer=token, **kw)

    def poll(self, data, token="b", **kw):
        tok = {"b": self.token_b, "c": self.token_c}.get(token, token)
        return self.req("POST", "/v1/poll", token=tok, data=data, **kw)

    def login_with(self, **over):
        """A login by b.example at a.example, members overridden."""
        return login(self.a, login_body(self.b.key, self.a.domain, **over))

    def login_raw(self, data, **kw):
        return self.req("POST", "/v1/login", data=data, **kw)

    def login_edit(self, **members):
        """b.example's good login with members replaced after signing."""
        body = login_body(self.b.key, self.a.domain)
        body.update(members)
        return login(self.a, body)

    def login_missing(self, member):
        body = login_body(self.b.key, self.a.domain)
        del body[member]
        return login(self.a, body)

    def login_signed_by(self, key, domain, key_text):
        """A login for domain whose signature is by key, key member key_text."""
        body = login_body(key, self.a.domain, domain=domain, key_text=key_text)
        return login(self.a, body)

    def login_forged(self):
        """b.example's key, and a good signature by it, but over another
        statement (another nonce) than the one sent."""
        when = rfc3339()
        body = login_body(self.b.key, self.a.domain, when=when)
        body["signature"] = gpg_sign(self.b.key.home, self.b.key.fpr, login_statement(
            self.a.domain, "b.example", when, os.urandom(16).hex()))
        return login(self.a, body)

    def tampered(self, token, where):
        head, payload, mac = token.split(".")
        if where == "mac":
            mac = ("A" if mac[0] != "A" else "B") + mac[1:]
        else:       # the payload of another domain with this token's MAC
            other = mint_token(self.a, "c.example", int(time.time()) + 600)
            payload = other.split(".")[1]
        return "%s.%s.%s" % (head, payload, mac)

    def test_oversize_header_field(self):
        """A header field above httpd's LimitRequestFieldSize never reaches
        the module: httpd answers 400 itself (with its own HTML body)."""
        r = self.poll(json.dumps(POLL_BOB), headers=["X-Padding: " + "p" * 20000])
        self.assertEqual(r.status, 400, r)

    # -- methods and framing, as written on the wire (issue 12) ---------------
    def raw(self, request):
        """request (text, CRLFs and all) to a.example; (status, headers, body)."""
        return raw_https(self.a.ip, self.a.https_port, request.encode())

    def test_trace_is_refused_and_echoes_no_token(self):
        """TRACE would echo Authorization to a page that made a browser send
        it: the module refuses it (405, its JSON), on both of its handlers'
        locations, and the answer holds no trace of the token."""
        for path in ("/stubmail/v1/poll", "/mail/"):
            status, hdrs, body = self.raw(
                "TRACE %s HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer %s\r\n"
                "Connection: close\r\n\r\n" % (path, self.token_b))
            self.assertEqual(status, 405, (path, body))
            self.assertEqual(json.loads(body)["error"], "method_not_allowed", body)
            self.assertTrue(hdrs.get("allow"), hdrs)
            self.assertNotIn(self.token_b.encode(), body)
            self.assertNotIn(self.token_b, " ".join(hdrs.values()))

    def test_trace_is_off_outside_the_module(self):
        """TraceEnable off (the sandbox, as the sample configuration): core
        refuses TRACE on any other path too."""
        status, _, body = self.raw(
            "TRACE / HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer %s\r\n"
            "Connection: close\r\n\r\n" % self.token_b)
        self.assertEqual(status, 405, body)
        self.assertNotIn(self.token_b.encode(), body)

    def test_get_announcing_a_body_is_refused(self):
        """A GET carries no body (PROTOCOL.md, "GET /v1/key"): chunked with
        Content-Length 0, the smuggler's framing, or a Content-Length above
        0, is a 400 and the connection is closed."""
        for framing in ("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
                        "Content-Length: 5\r\n\r\nhello"):
            status, hdrs, body = self.raw("GET /stubmail/v1/key HTTP/1.1\r\nHost: a.example\r\n"
                                          + framing)
            self.assertEqual(status, 400, (framing, body))
            self.assertEqual(json.loads(body)["error"], "bad_request", body)
            self.assertEqual(hdrs.get("connection"), "close", hdrs)
        status, _, body = self.raw("GET /stubmail/v1/key HTTP/1.1\r\nHost: a.example\r\n"
                                   "Content-Length: 0\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 200, "an empty body is no body: %r" % body[:200])

    def test_folded_authorization_is_unfolded_with_a_space(self):
        """obs-fold in Authorization is accepted as the field with the fold
        made a space (PROTOCOL.md, "Authentication"): a fold before the
        token is the token; a fold inside it breaks it."""
        fetch = ("GET /stubmail/v1/message/%s HTTP/1.1\r\nHost: a.example\r\n"
                 "Authorization: %s\r\nConnection: close\r\n\r\n")
        status, _, body = self.raw(fetch % (self.mid, "Bearer\r\n " + self.token_b))
        self.assertEqual(status, 200, body[:300])
        half = len(self.token_b) // 2
        status, _, body = self.raw(fetch % (self.mid, "Bearer " + self.token_b[:half]
                                            + "\r\n\t" + self.token_b[half:]))
        self.assertEqual(status, 401, body)
        self.assertEqual(json.loads(body)["error"], "bad_token", body)

    # -- the assertion ------------------------------------------------------
    def check(self, r, status, code):
        self.assertEqual(r.status, status, r)
        ctype = r.header("content-type") or ""
        self.assertTrue(ctype.startswith("application/json"), r)
        try:
            body = r.json()
        except ValueError:
            self.fail("error body is not JSON: %r" % r)
        self.assertEqual(sorted(body), ["error", "message"], r)
        self.assertEqual(body["error"], code, r)
        self.assertIsInstance(body["message"], str, r)
        self.assertTrue(body["message"].strip(), r)
        if status == 401 and code not in LOGIN_CODES:
            self.assertEqual(r.header("www-authenticate"), 'Bearer realm="stubmail"', r)


LOGIN_CODES = ("login_failed", "stale_login", "unknown_domain", "wrong_key", "bad_signature",
               "replayed_login")
NUL = "\u0000"

# (name, request: f(test) -> Http, status, code)
CASES = [
    # -- login ------------------------------------------------------------------
    ("login_malformed_json", lambda t: t.login_raw("{not json"), 400, "bad_json"),
    ("login_empty_body", lambda t: t.login_raw(""), 400, "bad_json"),
    ("login_array", lambda t: t.login_raw("[]"), 400, "bad_json"),
    ("login_invalid_utf8", lambda t: t.login_raw(
        b'{"domain": "b.example\xff", "server": "a.example"}'), 400, "bad_json"),
    ("login_missing_signature", lambda t: t.login_missing("signature"), 400, "bad_request"),
    ("login_missing_nonce", lambda t: t.login_missing("nonce"), 400, "bad_request"),
    ("login_domain_not_a_string", lambda t: t.login_edit(domain=42), 400, "bad_request"),
    ("login_nonce_not_hex", lambda t: t.login_edit(nonce="../../etc/passwd" + "0" * 16),
     400, "bad_request"),
    ("login_nonce_uppercase", lambda t: t.login_edit(nonce="ABCDEF" * 5 + "01"), 400,
     "bad_request"),
    ("login_time_not_rfc3339", lambda t: t.login_edit(time="yesterday"), 400, "bad_request"),
    ("login_domain_sql", lambda t: t.login_edit(
        domain="b.example'; DELETE FROM login_nonce; --"), 400, "bad_request"),
    # a string with \u0000 is refused by the parser (PROTOCOL.md, Errors), so
    # that no C string ever holds a truncated "b.example\0c.example"
    ("login_domain_nul", lambda t: t.login_edit(domain="b.example" + NUL + "c.example"), 400,
     "bad_json"),
    ("login_for_another_server", lambda t: login(t.a, login_body(t.b.key, "c.example")),
     401, "login_failed"),
    ("login_stale_time", lambda t: t.login_with(when=rfc3339(time.time() - 3600)), 401,
     "stale_login"),
    ("login_future_time", lambda t: t.login_with(when=rfc3339(time.time() + 3600)), 401,
     "stale_login"),
    ("login_unknown_domain", lambda t: t.login_signed_by(t.c.key, "z.example", t.key_c), 401,
     "unknown_domain"),
    ("login_wrong_key_fingerprint", lambda t: t.login_signed_by(t.c.key, "b.example", t.key_c),
     401, "wrong_key"),
    ("login_key_garbage", lambda t: t.login_edit(key="-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
                                                 "\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"),
     401, "wrong_key"),
    ("login_two_keys", lambda t: t.login_edit(key=t.key_b + t.key_c), 401, "wrong_key"),
    ("login_forged_signature", lambda t: t.login_forged(), 401, "bad_signature"),
    ("login_signature_by_other_key", lambda t: t.login_signed_by(t.c.key, "b.example", t.key_b),
     401, "bad_signature"),
    ("login_signature_garbage", lambda t: t.login_edit(
        signature="-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"),
     401, "bad_signature"),
    ("login_replayed", lambda t: login(t.a, t.good_login), 401, "replayed_login"),
    # a login's members fit in 128 KiB (PROTOCOL.md, "POST /v1/login"): a
    # good login padded with an unknown member is refused, however good
    ("login_bulk_unknown_member", lambda t: t.login_edit(padding="x" * 900 * 1024), 413,
     "too_large"),
    ("login_wrong_method", lambda t: t.req("GET", "/v1/login"), 405, "method_not_allowed"),
    ("login_wrong_content_type", lambda t: t.req("POST", "/v1/login", data="{}",
                                                 content_type="text/plain"),
     415, "unsupported_media_type"),
    # -- tokens -------------------------------------------------------------------
    ("poll_without_token", lambda t: t.poll(json.dumps(POLL_BOB), token=None), 401,
     "token_required"),
    ("poll_basic_credentials_refused", lambda t: t.req(
        "POST", "/v1/poll", data=json.dumps(POLL_BOB), user="b.example:secret"), 401,
     "token_required"),
    ("poll_garbage_token", lambda t: t.poll(json.dumps(POLL_BOB), token="abc"), 401,
     "bad_token"),
    ("poll_garbage_authorization", lambda t: t.req(
        "POST", "/v1/poll", data=json.dumps(POLL_BOB),
        headers=["Authorization: Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnag"]), 401,
     "token_required"),
    ("poll_token_mac_altered", lambda t: t.poll(json.dumps(POLL_BOB),
                                                token=t.tampered(t.token_b, "mac")),
     401, "bad_token"),
    ("poll_token_payload_swapped", lambda t: t.poll(json.dumps(POLL_BOB),
                                                    token=t.tampered(t.token_b, "payload")),
     401, "bad_token"),
    ("poll_token_expired", lambda t: t.poll(json.dumps(POLL_BOB), token=mint_token(
        t.a, "b.example", int(time.time()) - 5)), 401, "token_expired"),
    ("poll_token_unknown_key_id", lambda t: t.poll(json.dumps(POLL_BOB), token=mint_token(
        t.a, "b.example", int(time.time()) + 600, "k9", "11" * 32)), 401, "bad_token"),
    ("poll_token_wrong_mac_key", lambda t: t.poll(json.dumps(POLL_BOB), token=mint_token(
        t.a, "b.example", int(time.time()) + 600, "k1", "22" * 32)), 401, "bad_token"),
    ("poll_token_from_another_server", lambda t: t.req(
        "POST", "/v1/poll", token=t.token_c_from_b,
        data=pairs(("*@a.example", "carol@c.example"))), 401, "bad_token"),
    ("poll_token_oversize", lambda t: t.poll(json.dumps(POLL_BOB), token="v1." + "A" * 7000
                                             + ".x"), 401, "bad_token"),
    ("poll_other_domains_token", lambda t: t.poll(json.dumps(POLL_BOB), token="c"), 403,
     "foreign_recipient"),
    ("fetch_other_domains_token", lambda t: t.req("GET", "/v1/message/" + t.mid,
                                                  token=t.token_c), 404, "not_found"),
    ("fetch_range_other_domains_token", lambda t: t.req(
        "GET", "/v1/message/" + t.mid, token=t.token_c, headers=["Range: bytes=0-99"]),
     404, "not_found"),
    ("ack_other_domains_token", lambda t: t.req(
        "POST", "/v1/message/%s/ack" % t.mid, token=t.token_c,
        data=json.dumps({"to": "bob@b.example"})), 403, "foreign_recipient"),
    ("ack_other_domains_token_own_recipient", lambda t: t.req(
        "POST", "/v1/message/%s/ack" % t.mid, token=t.token_c,
        data=json.dumps({"to": "carol@c.example"})), 404, "not_found"),
    # -- poll bodies ----------------------------------------------------------------
    ("poll_malformed_json", lambda t: t.poll('{"pairs": [{"from": '), 400, "bad_json"),
    ("poll_trailing_garbage", lambda t: t.poll(json.dumps(POLL_BOB) + " x"), 400, "bad_json"),
    ("poll_invalid_utf8", lambda t: t.poll(
        b'{"pairs": [{"from": "\xff\xfe@a.example", "to": "bob@b.example"}]}'), 400, "bad_json"),
    ("poll_overlong_utf8", lambda t: t.poll(
        b'{"pairs": [{"from": "alice\xc0\xae@a.example", "to": "bob@b.example"}]}'), 400,
     "bad_json"),
    ("poll_raw_nul", lambda t: t.poll(
        b'{"pairs": [{"from": "alice\x00@a.example", "to": "bob@b.example"}]}'), 400,
     "bad_json"),
    ("poll_deep_nesting", lambda t: t.poll('{"pairs": ' + "[" * 100000 + "]" * 100000 + "}"),
     400, "bad_json"),
    ("poll_empty_pairs", lambda t: t.poll('{"pairs": []}'), 400, "bad_request"),
    ("poll_pairs_not_array", lambda t: t.poll('{"pairs": {"from": "alice@a.example"}}'), 400,
     "bad_request"),
    ("poll_sql_in_from", lambda t: t.poll(pairs(("alice@a.example' OR '1'='1",
                                                 "bob@b.example"))), 400, "bad_request"),
    ("poll_sql_in_to", lambda t: t.poll(pairs(("*@a.example",
                                               "bob@b.example'; DELETE FROM outbox; --"))),
     400, "bad_request"),
    ("poll_sql_comment_domain", lambda t: t.poll(pairs(("*@a.example;--", "bob@b.example"))),
     400, "bad_request"),
    ("poll_nul_in_address", lambda t: t.poll(pairs(("alice" + NUL + "@a.example",
                                                    "bob@b.example"))), 400, "bad_json"),
    ("poll_nul_after_address", lambda t: t.poll(pairs(("*@a.example",
                                                       "bob@b.example" + NUL + "' OR 1=1"))),
     400, "bad_json"),
    ("poll_duplicate_member", lambda t: t.poll(
        '{"pairs": [{"from": "*@a.example", "to": "carol@c.example"}], '
        '"pairs": [{"from": "*@a.example", "to": "bob@b.example"}]}'), 400, "bad_json"),
    ("poll_wildcard_recipient", lambda t: t.poll(pairs(("*@a.example", "*@b.example"))), 400,
     "bad_request"),
    ("poll_address_too_long", lambda t: t.poll(pairs(("a" * 400 + "@a.example",
                                                      "bob@b.example"))), 400, "bad_request"),
    ("poll_10mb_pair_list", lambda t: t.req("POST", "/v1/poll", token=t.token_b,
                                            data_file=t.big_pairs), 413, "too_large"),
    ("poll_too_many_pairs", lambda t: t.poll(pairs(*[("u%d@a.example" % i, "bob@b.example")
                                                     for i in range(10001)])),
     413, "too_many_pairs"),
    ("poll_chunked", lambda t: t.poll(json.dumps(POLL_BOB),
                                      headers=["Transfer-Encoding: chunked"]),
     411, "length_required"),
    ("poll_wrong_content_type", lambda t: t.poll(json.dumps(POLL_BOB),
                                                 content_type="application/x-www-form-urlencoded"),
     415, "unsupported_media_type"),
    # -- ids and paths --------------------------------------------------------------
    ("fetch_unknown_id", lambda t: t.req("GET", "/v1/message/" + UNKNOWN_ID, token=t.token_b),
     404, "not_found"),
    ("fetch_id_uppercase", lambda t: t.req("GET", "/v1/message/" + t.mid.upper(),
                                           token=t.token_b), 400, "bad_id"),
    ("fetch_id_not_hex", lambda t: t.req("GET", "/v1/message/" + "g" * 32, token=t.token_b),
     400, "bad_id"),
    ("fetch_id_short", lambda t: t.req("GET", "/v1/message/" + t.mid[:-1], token=t.token_b),
     400, "bad_id"),
    ("fetch_id_sql", lambda t: t.req("GET", "/v1/message/x'%20OR%20'1'='1", token=t.token_b),
     400, "bad_id"),
    ("fetch_id_traversal_backslash", lambda t: t.req(
        "GET", "/v1/message/..%5c..%5c..%5cetc%5cpasswd", token=t.token_b), 400, "bad_id"),
    ("fetch_id_traversal_dots", lambda t: t.req(
        "GET", "/v1/message/" + t.mid[:30] + "..", token=t.token_b), 400, "bad_id"),
    ("fetch_path_traversal", lambda t: t.req(
        "GET", "/v1/message/....//....//etc/passwd", token=t.token_b,
        extra=["--path-as-is"]), 404, "no_such_endpoint"),
    ("ack_id_not_hex", lambda t: t.req("POST", "/v1/message/%s/ack" % ("z" * 32),
                                       token=t.token_b,
                                       data=json.dumps({"to": "bob@b.example"})),
     400, "bad_id"),
    ("ack_recipient_sql", lambda t: t.req("POST", "/v1/message/%s/ack" % t.mid,
                                          token=t.token_b,
                                          data=json.dumps({"to": "x' OR '1'='1"})),
     400, "bad_request"),
    ("ack_bad_status", lambda t: t.req("POST", "/v1/message/%s/ack" % t.mid, token=t.token_b,
                                       data=json.dumps({"to": "bob@b.example",
                                                        "status": "deleted"})),
     400, "bad_request"),
    ("unknown_endpoint", lambda t: t.req("GET", "/v1/admin", token=t.token_b), 404,
     "no_such_endpoint"),
    # -- methods and headers ----------------------------------------------------------
    ("poll_wrong_method", lambda t: t.req("PUT", "/v1/poll", token=t.token_b), 405,
     "method_not_allowed"),
    ("fetch_wrong_method", lambda t: t.req("DELETE", "/v1/message/" + t.mid, token=t.token_b),
     405, "method_not_allowed"),
    ("ack_wrong_method", lambda t: t.req("GET", "/v1/message/%s/ack" % t.mid, token=t.token_b),
     405, "method_not_allowed"),
    ("key_wrong_method", lambda t: t.req("POST", "/v1/key", data="{}"), 405,
     "method_not_allowed"),
    ("oversize_authorization_header", lambda t: t.req(
        "POST", "/v1/poll", data=json.dumps(POLL_BOB),
        headers=["Authorization: Bearer v1." + "B" * 8000]), 401, "bad_token"),
]


def _make(status, code, request):
    def test(self):
        self.check(request(self), status, code)
    return test


for _name, _request, _status, _code in CASES:
    assert not hasattr(HostileTest, "test_" + _name), _name     # one test per name
    setattr(HostileTest, "test_" + _name, _make(_status, _code, _request))

assert len(CASES) >= 50


if __name__ == "__main__":
    unittest.main()
