"""Issue 3: the worked examples of docs/PROTOCOL.md are test vectors. Each
example block is taken from the document (by section and position) and
checked against what is built, so the document cannot drift from the code:

- the TXT record, served by the sandbox's dnsmasq, parses
  (tests/dns/dns_lookup_check, lib's sm_dns) into exactly its fields;
- the login statement is what a login the server accepts signs; the login,
  poll and ack requests, sent to the real server, get the documented answer;
  the response examples have exactly the members the server returns;
- a real token has the documented grammar and MAC; the Authorization
  example decodes by that grammar;
- the error body and the table of error codes match the module;
- the trace and Authentication-Results headers look like the examples in
  a message the real pollerd delivered."""

import calendar
import hashlib
import json
import os
import re
import subprocess
import time
import unittest

from support import (SandboxTest, TOP, make_message, curl, login, login_body, get_token,
                     mint_token, login_statement, header_lines, split_message, q,
                     b64url_decode, receipt_of)

PROTOCOL_MD = os.path.join(TOP, "docs", "PROTOCOL.md")
DNS_CHECK = os.path.join(TOP, "tests", "dns", "dns_lookup_check")
MODULE_DIR = os.path.join(TOP, "mod_stubmail")


def module_source():
    """mod_stubmail's C sources (mod_stubmail/*.[ch]) as one text."""
    text = []
    for name in sorted(os.listdir(MODULE_DIR)):
        if name.endswith((".c", ".h")):
            with open(os.path.join(MODULE_DIR, name), encoding="utf-8") as f:
                text.append(f.read())
    return "\n".join(text)


def sections(path=PROTOCOL_MD):
    """{heading: [code block text, ...]} of the '## ' sections: fenced blocks
    in order, then indented ones (four blanks), each without its fence or
    indentation."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {}
    for part in re.split(r"(?m)^## ", text)[1:]:
        heading, _, body = part.partition("\n")
        fenced = re.findall(r"(?ms)^```[\w-]*\n(.*?)^```", body)
        rest = re.sub(r"(?ms)^```.*?^```", "", body)
        indented = ["\n".join(l[4:] for l in m.group(0).rstrip("\n").split("\n"))
                    for m in re.finditer(r"(?m)(?:^    .*\n)+", rest)]
        out[heading.strip()] = {"fenced": fenced, "indented": indented, "text": body}
    return out


def section(doc, prefix):
    found = [v for k, v in doc.items() if k.startswith(prefix)]
    if len(found) != 1:
        raise AssertionError("PROTOCOL.md: %d sections starting %r" % (len(found), prefix))
    return found[0]


def block(doc, prefix, starts):
    """The one fenced block of the section that starts with starts."""
    found = [b for b in section(doc, prefix)["fenced"] if b.startswith(starts)]
    if len(found) != 1:
        raise AssertionError("PROTOCOL.md, section %r: %d blocks starting %r"
                             % (prefix, len(found), starts))
    return found[0]


def example_json(doc, prefix, index):
    """The section's index-th fenced block that is JSON (a '{' first)."""
    blocks = [b for b in section(doc, prefix)["fenced"] if b.startswith("{")]
    if index >= len(blocks):
        raise AssertionError("PROTOCOL.md, section %r: no JSON block #%d (has %d)"
                             % (prefix, index + 1, len(blocks)))
    try:
        return json.loads(blocks[index])
    except ValueError as e:
        raise AssertionError("PROTOCOL.md, section %r, JSON block #%d does not parse "
                             "(%s):\n%s" % (prefix, index + 1, e, blocks[index]))


TOKEN_RE = re.compile(r"^v1\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")
PAYLOAD_RE = re.compile(r"^([a-z0-9.-]+)\|([0-9]+)\|([A-Za-z0-9_-]{1,16})$")
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class ProtocolExamplesTest(SandboxTest):
    # b.example runs everything: its pollerd delivers the message whose
    # headers are compared; the test polls as b.example by hand as well
    HTTPD_EXTRA = (("StubmailMinPollInterval", "0"),)

    @classmethod
    def setUpWorld(cls):
        cls.doc = sections()

    def token(self):
        return get_token(self.a, self.b)

    def api(self, method, path, body=None, token=None):
        data = json.dumps(body) if body is not None else None
        return curl(self.a.outbox_url + path, method, data=data,
                    bearer=token if token is not None else self.token())

    # -- Errors ---------------------------------------------------------------
    def test_errors_body_and_codes(self):
        example = example_json(self.doc, "Errors", 0)
        r = curl(self.a.outbox_url + "/v1/no-such-thing", bearer=self.token())
        self.assertEqual(r.status, 404, r)
        self.assertEqual(sorted(r.json()), sorted(example))
        self.assertEqual(r.header("content-type").split(";")[0], "application/json")
        table = section(self.doc, "Errors")["text"]
        codes = set()
        for status, cell in re.findall(r"(?m)^\| (\d{3}) \| (.*?) \|", table):
            codes |= set(re.findall(r"`([a-z_]+)`", cell))
        module = module_source()
        missing = sorted(c for c in codes if '"%s"' % c not in module)
        self.assertEqual(missing, [], "codes in PROTOCOL.md's table that mod_stubmail's "
                         "sources never name")

    def test_limits_table(self):
        """Each limit names a directive mod_stubmail has and an answer of the
        Errors table. (test_limits.py sets each directive and checks it.)"""
        limits = re.findall(r"(?m)^\| [^|]+ \| `(Stubmail\w+)` \| [^|]+ \| `(\d{3}) ([a-z_]+)`",
                            section(self.doc, "Limits")["text"])
        self.assertEqual(len(limits), 5, section(self.doc, "Limits")["text"])
        errors = section(self.doc, "Errors")["text"]
        module = module_source()
        for directive, status, code in limits:
            self.assertIn('"%s"' % directive, module)
            self.assertRegex(errors, r"(?m)^\| %s \| `%s` \|" % (status, code))

    # -- Discovery --------------------------------------------------------------
    def test_txt_record(self):
        line = block(self.doc, "Discovery", "_stubmail.").strip()
        m = re.match(r'^(_stubmail\.[a-z0-9.-]+)\. (\d+) IN TXT "(.*)"$', line)
        self.assertTrue(m, "not a TXT record line: %r" % line)
        text = m.group(3)
        if not os.access(DNS_CHECK, os.X_OK):
            self.fail("%s is not built (make -C tests check)" % DNS_CHECK)
        # served under a name of its own, so the sandbox's records stay
        self.sb.set_txt("vector.example", text)
        try:
            out = subprocess.run([DNS_CHECK, self.sb.dns.address, "vector.example"],
                                 capture_output=True, text=True, timeout=30).stdout
        finally:
            self.sb.set_txt("vector.example", None)
        got = dict(l.partition("=")[::2] for l in out.splitlines())
        tags = dict(t.strip().partition("=")[::2] for t in text.split(";"))
        self.assertEqual(got.get("status"), "found", out)
        self.assertEqual(got["record"], text, "the example is not in canonical form")
        for tag in ("outbox", "udp", "fpr", "policy"):
            self.assertEqual(got[tag], tags[tag], tag)
        self.assertEqual(tags["v"], "stubmail1")

    # -- Login ----------------------------------------------------------------------
    def test_login_examples(self):
        a, b = self.a, self.b
        request = example_json(self.doc, "POST /v1/login", 0)
        statement = block(self.doc, "POST /v1/login", "stubmail-login-v1\n")
        response = example_json(self.doc, "POST /v1/login", 1)
        # the statement is what a login the server accepts signs
        self.assertEqual(statement.encode(), login_statement(
            request["server"], request["domain"], request["time"], request["nonce"]))
        self.assertRegex(request["time"], RFC3339_RE)
        self.assertRegex(request["nonce"], r"^[0-9a-f]{32}$")
        self.assertTrue(request["key"].startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----"))
        self.assertTrue(request["signature"].startswith("-----BEGIN PGP SIGNATURE-----"))
        # the example, made current and signed for real, is accepted
        self.assertEqual((request["server"], request["domain"]), (a.domain, b.domain))
        real = login_body(b.key, request["server"], domain=request["domain"])
        self.assertEqual(sorted(real), sorted(request))
        r = login(a, real)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type").split(";")[0], "application/json")
        self.assertEqual(sorted(r.json()), sorted(response))
        self.assertRegex(response["expires"], RFC3339_RE)
        self.assertRegex(r.json()["expires"], RFC3339_RE)
        self.assertRegex(response["token"].split("\u2026")[0], r"^v1\.[A-Za-z0-9_-]+\.")

    # -- Token ------------------------------------------------------------------------
    def test_token_grammar(self):
        a, b = self.a, self.b
        grammar = block(self.doc, "Token", "token ")
        for rule in ('token   = "v1." payload "." mac',
                     'payload = base64url( domain "|" expiry "|" key-id )',
                     'mac     = base64url( HMAC-SHA256( secret[key-id], "v1." payload ) )'):
            self.assertIn(rule, grammar)
        r = login(a, login_body(b.key, a.domain))
        token, expires = r.json()["token"], r.json()["expires"]
        m = TOKEN_RE.match(token)
        self.assertTrue(m, token)
        self.assertLessEqual(len(token), 512)
        payload = PAYLOAD_RE.match(b64url_decode(m.group(1)).decode())
        self.assertTrue(payload, b64url_decode(m.group(1)))
        domain, expiry, key_id = payload.groups()
        self.assertEqual(domain, "b.example")
        self.assertEqual(int(expiry),
                         calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ")))
        self.assertEqual(key_id, a.token_keys[-1][0])
        # the MAC as the grammar says, with a.example's secret
        self.assertEqual(mint_token(a, domain, int(expiry)), token)
        # the examples of the document decode by the same grammar
        auth = [l for l in section(self.doc, "Authentication")["indented"]
                if l.startswith("Authorization: Bearer ")]
        self.assertEqual(len(auth), 1, section(self.doc, "Authentication")["indented"])
        example = auth[0].split()[2]
        example_login = example_json(self.doc, "POST /v1/login", 1)["token"]
        for ex in (example, example_login):
            head, pay, _ = ex.split(".", 2)
            self.assertEqual(head, "v1")
            self.assertRegex(b64url_decode(pay).decode(), PAYLOAD_RE)

    # -- Key ---------------------------------------------------------------------------
    def test_key(self):
        a = self.a
        r = curl(a.outbox_url + "/v1/key")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type").split(";")[0], "application/pgp-keys")
        home = a.path("x-show")
        os.makedirs(home, mode=0o700, exist_ok=True)
        out = subprocess.run(["gpg", "--homedir", home, "--batch", "--with-colons",
                              "--show-keys"], input=r.body, capture_output=True,
                             timeout=30).stdout.decode()
        fprs = [l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:")]
        uids = [l.split(":")[9] for l in out.splitlines() if l.startswith("uid:")]
        self.assertEqual(fprs[0], a.fpr)
        self.assertEqual(uids, ["stubmail@a.example"])

    # -- Poll, fetch, ack ----------------------------------------------------------------
    def test_poll_fetch_ack(self):
        a = self.a
        request = example_json(self.doc, "POST /v1/poll", 0)
        response = example_json(self.doc, "POST /v1/poll", 1)
        ack_request = example_json(self.doc, "POST /v1/message/{id}/ack", 0)
        ack_response = example_json(self.doc, "POST /v1/message/{id}/ack", 1)
        rejection = example_json(self.doc, "Stored messages", 0)
        # mail matching each pair of the example: alice -> bob, and
        # someone at a.example -> dave (neither is pulled by b.example's
        # pollerd: bob and dave know nobody)
        msg, _ = make_message("alice@a.example", "bob@b.example", "poll example")
        first = self.send_stored(a, "alice@a.example", "bob@b.example", msg)[0][0]
        msg, _ = make_message("mallory@a.example", "dave@b.example", "poll example 2")
        second = self.send_stored(a, "mallory@a.example", "dave@b.example", msg)[0][0]
        msg, _ = make_message("alice@a.example", "bob@b.example", "to be rejected")
        third = self.send_stored(a, "alice@a.example", "bob@b.example", msg)[0][0]
        token = self.token()

        r = self.api("POST", "/v1/poll", request, token)
        self.assertEqual(r.status, 200, r)
        got = r.json()
        self.assertEqual(sorted(got), sorted(response))
        self.assertEqual({(m["id"], m["to"]) for m in got["messages"]},
                         {(first, "bob@b.example"), (second, "dave@b.example"),
                          (third, "bob@b.example")})
        for entry in got["messages"]:
            self.assertEqual(sorted(entry), sorted(response["messages"][0]))
            self.assertRegex(entry["time"], RFC3339_RE)
        self.assertEqual(type(got["more"]), type(response["more"]))

        # fetch as documented for a stored (signed, encrypted) message
        entry = [m for m in got["messages"] if m["id"] == first][0]
        r = curl(a.outbox_url + "/v1/message/" + first, bearer=token)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), "application/pgp-encrypted")
        self.assertEqual(r.header("stubmail-format"), "openpgp")
        self.assertEqual(r.header("stubmail-from"), "alice@a.example")
        self.assertEqual(len(r.body), entry["size"])
        self.assertEqual(int(r.header("content-length")), entry["size"])

        # the ack example (with this message's receipt in place of the
        # example's), and its idempotence
        self.assertEqual(sorted(ack_request), ["receipt", "to"])
        self.assertEqual(ack_request["to"], "bob@b.example")
        self.assertRegex(ack_request["receipt"], r"^[A-Za-z0-9_-]{43}$")
        ack_request["receipt"] = receipt_of(self.b, a, first)
        r = self.api("POST", "/v1/message/%s/ack" % first, ack_request, token)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(r.json()), sorted(ack_response))
        self.assertEqual((r.json()["id"], r.json()["to"], r.json()["status"]),
                         (first, "bob@b.example", ack_response["status"]))
        self.assertRegex(r.json()["retrieved"], RFC3339_RE)
        again = self.api("POST", "/v1/message/%s/ack" % first, ack_request, token)
        self.assertEqual(again.status, 200, again)
        self.assertEqual(again.json(), r.json())

        # the rejection example, recorded with its reason (and logged)
        a.expect_log(r"\[stubmail:warn\] .*id=%s: ack: bob@b\.example rejected the message"
                     % third)
        self.assertEqual(rejection["to"], "bob@b.example")
        self.assertRegex(rejection["receipt"], r"^[A-Za-z0-9_-]{43}$")
        rejection["receipt"] = receipt_of(self.b, a, third)
        r = self.api("POST", "/v1/message/%s/ack" % third, rejection, token)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(r.json()), sorted(ack_response))
        self.assertEqual(r.json()["status"], "rejected")
        self.assertEqual(a.sql("SELECT rejected_reason, retrieved_at IS NOT NULL FROM outbox "
                               "WHERE message_id = %s" % q(third)),
                         [[rejection["reason"], "t"]])

    # -- Subscriptions and conditional polls ----------------------------------------------
    # (named to run before test_delivered_headers: until then b.example's
    # pollerd has no pairs, so it leaves b.example's subscription alone)
    def test_conditional_poll_examples(self):
        a = self.a
        change = example_json(self.doc, "POST /v1/subscription", 0)
        reset = example_json(self.doc, "POST /v1/subscription", 1)
        conflict = example_json(self.doc, "POST /v1/subscription", 2)
        answer = example_json(self.doc, "POST /v1/subscription", 3)
        listing = example_json(self.doc, "GET /v1/poll", 0)
        get = [b for b in section(self.doc, "GET /v1/poll")["fenced"] if b.startswith("GET ")]
        not_modified = block(self.doc, "GET /v1/poll", "HTTP/1.1 304")
        self.assertEqual(len(get), 1)
        token = self.token()
        msg, _ = make_message("alice@a.example", "bob@b.example", "subscribed example")
        mid = self.send_stored(a, "alice@a.example", "bob@b.example", msg)[0][0]

        # the reset, then the change based on the version it answered
        r = self.api("POST", "/v1/subscription", reset, token)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(r.json()), sorted(answer))
        version = r.json()["version"]
        self.assertIsInstance(version, int)
        self.assertEqual(a.sql("SELECT recipient, sender FROM subscription WHERE domain = "
                               "'b.example' ORDER BY 1, 2"),
                         sorted([p["to"], p["from"]] for p in reset["add"]))
        r = self.api("POST", "/v1/subscription", dict(change, base=version), token)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(list(r.json()), ["version"])
        self.assertGreater(r.json()["version"], version)
        self.assertGreater(answer["version"], change["base"])
        before, version = version, r.json()["version"]
        self.assertEqual(a.sql("SELECT recipient, sender FROM subscription WHERE domain = "
                               "'b.example' ORDER BY 1, 2"),
                         [["bob@b.example", "alice@a.example"],
                          ["bob@b.example", "carol@a.example"]])
        # the same change again, now on a stale base: the documented 409
        r = self.api("POST", "/v1/subscription", dict(change, base=before), token)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(sorted(r.json()), sorted(conflict))
        self.assertEqual((r.json()["error"], r.json()["version"]),
                         ("subscription_changed", version))
        self.assertGreater(conflict["version"], change["base"])

        # the GET of the example, its answer, then the 304
        self.assertRegex(get[0], r"^GET /stubmail/v1/poll\?version=%d HTTP/1\.1\n"
                         % listing["version"])
        etag_example = re.search(r'(?m)^If-None-Match: (".*")$', get[0]).group(1)
        self.assertIn("ETag: " + etag_example, not_modified)
        r = self.api("GET", "/v1/poll?version=%d" % version, token=token)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(r.json()), sorted(listing))
        self.assertEqual(r.json()["version"], version)
        self.assertIn(mid, [m["id"] for m in r.json()["messages"]])
        for entry in r.json()["messages"]:
            self.assertEqual(sorted(entry), sorted(listing["messages"][0]))
        etag = r.header("etag")
        # the documented make-up of mod_stubmail's tag, for the example and
        # for the real one
        seqs = [int(x[0]) for x in a.sql("SELECT seq FROM pending_match WHERE domain = "
                                         "'b.example' ORDER BY seq")]
        for tag, v, nums in ((etag, version, seqs), (etag_example, listing["version"], [41])):
            self.assertEqual(tag, '"%d.%d.%d.%s"' % (
                v, len(nums), max(nums), hashlib.md5(",".join(map(str, nums)).encode())
                .hexdigest()[:16]))
        r = curl(a.outbox_url + "/v1/poll?version=%d" % version, bearer=token,
                 headers=["If-None-Match: " + etag])
        self.assertEqual((r.status, r.body, r.header("etag")), (304, b"", etag), r)
        # leave the later tests an empty outbox and b.example's pollerd a
        # subscription of its own making
        self.assertEqual(self.api("POST", "/v1/message/%s/ack" % mid,
                                  {"to": "bob@b.example",
                                   "receipt": receipt_of(self.b, a, mid)}, token).status, 200)
        self.assertEqual(self.api("POST", "/v1/subscription", {"reset": True}, token).status,
                         200)

    # -- Delivery -------------------------------------------------------------------------
    def test_delivered_headers(self):
        a, b = self.a, self.b
        trace_example = block(self.doc, "Delivery", "Received: ")
        results_example = block(self.doc, "Stored messages", "Authentication-Results: ")

        b.add_contact("erin@b.example", "alice@a.example")
        msg, tag = make_message("alice@a.example", "erin@b.example", "headers")
        mid = self.send_stored(a, "alice@a.example", "erin@b.example", msg)[0][0]
        got = self.wait_maildir(b, "erin", tag, timeout=40)[0][1]
        fields = header_lines(split_message(got)[0])

        def shape(example, **values):
            """A regex from an example: its own values replaced by ours,
            dates and key ids by wildcards."""
            rx = re.escape(re.sub(r"\s+", " ", example.strip()))
            for old, new in values.items():
                rx = rx.replace(re.escape(old), re.escape(new))
            rx = re.sub(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun),\\ .*?\\\+0000",
                        lambda _: r"\w{3}, \d{1,2} \w{3} \d{4} [\d:]{8} \+0000", rx)
            rx = re.sub(r"\\\(key\\ .*?\\\)", lambda _: r"\(key [0-9A-F\u2026]+\)", rx)
            return "^" + rx + "$"

        trace = [re.sub(r"\s+", " ", f) for f in fields if "stubmail-pollerd" in f]
        self.assertEqual(len(trace), 1, fields)
        self.assertRegex(trace[0], shape(trace_example, **{
            "6f1c0a9e2b7d4c3f8a5e1d2c3b4a5968": mid, "bob@b.example": "erin@b.example"}))
        results = [re.sub(r"\s+", " ", f) for f in fields
                   if f.startswith("Authentication-Results:")]
        self.assertEqual(len(results), 1, fields)
        self.assertRegex(results[0], shape(results_example))
        self.assertIn("(key %s)" % a.fpr, results[0])
        # above the trace header, as documented
        names = [f.split(":")[0] for f in fields]
        self.assertLess(names.index("Authentication-Results"),
                        [i for i, f in enumerate(fields) if "stubmail-pollerd" in f][0])


if __name__ == "__main__":
    unittest.main()
