"""checks — the conformance checks: each runs examples and error cases of
docs/PROTOCOL.md against an outbox and names the requirement ids
([R-...]) it would catch broken. They run in the order written here (the
ack checks consume the message the fetch checks read; the poll limit goes
last). A check fails with Fail; it is skipped with Skip when the run lacks
what it needs (a waiting message, leave to ack, the poll burst)."""

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import time

from client import ScratchHome, Signer, gpg, rfc3339, statement

CHECKS = []


class Fail(Exception):
    pass


class Skip(Exception):
    pass


class Check:
    def __init__(self, name, reqs, run):
        self.name, self.reqs, self.run = name, reqs, run


def check(*reqs):
    def register(f):
        CHECKS.append(Check(f.__name__, reqs, f))
        return f
    return register


def expect(cond, what, answer=None):
    if not cond:
        raise Fail(what + ("" if answer is None else ": got %r" % (answer,)))


def body_json(a):
    try:
        return json.loads(a.body)
    except ValueError:
        raise Fail("the body is not JSON: %r" % a.body[:200])


def expect_error(a, status, code):
    """An error answer as "Errors" says: status, JSON type, error and message."""
    expect(a.status == status, "expected %d %s" % (status, code), a)
    ctype = (a.header("content-type") or "").split(";")[0].strip().lower()
    expect(ctype == "application/json", "an error's Content-Type is application/json", ctype)
    j = body_json(a)
    expect(isinstance(j, dict) and isinstance(j.get("error"), str)
           and isinstance(j.get("message"), str),
           "an error body has string members error and message", j)
    expect(j["error"] == code, "expected the code %s" % code, j["error"])
    if status == 401:
        expect(a.header("www-authenticate") == 'Bearer realm="stubmail"',
               "a 401 carries WWW-Authenticate: Bearer realm=\"stubmail\"",
               a.header("www-authenticate"))
    return j


def expect_ok_json(a, what):
    expect(a.status == 200, what + ": 200", a)
    ctype = (a.header("content-type") or "").split(";")[0].strip().lower()
    expect(ctype == "application/json", what + ": Content-Type application/json", ctype)
    return body_json(a)


def random_id():
    return os.urandom(16).hex()


# -- Requests and answers, Errors ----------------------------------------------------

@check("R-ERROR-BODY", "R-ENDPOINT-404")
def unknown_endpoint(c):
    expect_error(c.ob.request("GET", "/v1/no-such-endpoint", token=c.token()), 404,
                 "no_such_endpoint")
    expect_error(c.ob.request("GET", "/v2/poll", token=c.token()), 404, "no_such_endpoint")


@check("R-ALLOW-405", "R-HEAD")
def methods(c):
    for method, path, allow in (("POST", "/v1/key", {"GET", "HEAD"}),
                                ("GET", "/v1/login", {"POST"}),
                                ("PUT", "/v1/poll", {"GET", "HEAD", "POST"}),
                                ("DELETE", "/v1/message/%s" % random_id(), {"GET", "HEAD"}),
                                ("GET", "/v1/ack", {"POST"})):
        a = c.ob.request(method, path, token=c.token())
        expect_error(a, 405, "method_not_allowed")
        got = {m.strip() for m in (a.header("allow") or "").split(",") if m.strip()}
        expect(got == allow, "%s %s: Allow is %s" % (method, path, ", ".join(sorted(allow))),
               a.header("allow"))
    get, head = c.ob.request("GET", "/v1/key"), c.ob.request("HEAD", "/v1/key")
    expect(head.status == get.status == 200, "HEAD /v1/key is answered as GET", head)
    expect(head.body == b"", "HEAD has no body", head.body[:50])
    expect(head.header("content-type") == get.header("content-type"),
           "HEAD has GET's Content-Type", head.header("content-type"))


@check("R-JSON-CTYPE", "R-JSON-415")
def content_type(c):
    body = {"pairs": [{"from": "*@" + c.server, "to": "nobody@" + c.domain}]}
    for ctype in ("application/json; charset=utf-8", "Application/JSON",
                  "application/json;charset=UTF-8"):
        a = c.ob.request("POST", "/v1/poll", body, token=c.token(), content_type=ctype)
        expect_ok_json(a, "POST /v1/poll with Content-Type %s" % ctype)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        expect_error(c.ob.request("POST", "/v1/poll", body, token=c.token(),
                                  content_type=ctype), 415, "unsupported_media_type")


@check("R-LENGTH")
def length_required(c):
    expect_error(c.ob.request("POST", "/v1/poll", b"", token=c.token(), length=False),
                 411, "length_required")


@check("R-JSON-UNKNOWN")
def unknown_members(c):
    body = c.signer.login_body(c.server)
    body["x-later-member"] = {"any": ["thing"]}
    a = c.ob.request("POST", "/v1/login", body)
    expect_ok_json(a, "a login with an unknown member")
    body = {"pairs": [{"from": "*@" + c.server, "to": "nobody@" + c.domain, "x-note": 1}],
            "x-later": True}
    expect_ok_json(c.ob.request("POST", "/v1/poll", body, token=c.token()),
                   "a poll with unknown members")
    j = body_json(c.ob.request("POST", "/v1/message/%s/ack" % random_id(),
                               {"to": "nobody@" + c.domain, "x-receipt": "later"},
                               token=c.token()))
    expect(j.get("error") == "not_found", "an ack with an unknown member is read", j)


# -- Authentication ------------------------------------------------------------------

@check("R-TOKEN-REQUIRED", "R-401-CHALLENGE")
def token_required(c):
    expect_error(c.ob.request("GET", "/v1/poll?version=0"), 401, "token_required")
    expect_error(c.ob.request("POST", "/v1/poll", {"pairs": []}), 401, "token_required")
    expect_error(c.ob.request("GET", "/v1/message/" + random_id(),
                              headers=[("Authorization", "Basic Yjpj")]), 401, "token_required")


@check("R-TOKEN-BAD", "R-401-CHALLENGE")
def bad_token(c):
    t = c.token()
    flipped = t[:-1] + ("A" if t[-1] != "A" else "B")
    for bad in (flipped, "v1.Yi5leGFtcGxl.AAAA", "v9." + t[3:], "garbage"):
        expect_error(c.ob.request("GET", "/v1/poll?version=0", token=bad), 401, "bad_token")


@check("R-FOREIGN", "R-SCOPE")
def foreign_recipient(c):
    other = "someone@" + ("other-" + c.domain)
    expect_error(c.ob.request("POST", "/v1/poll",
                              {"pairs": [{"from": "*@" + c.server, "to": other}]},
                              token=c.token()), 403, "foreign_recipient")
    expect_error(c.ob.request("POST", "/v1/message/%s/ack" % random_id(), {"to": other},
                              token=c.token()), 403, "foreign_recipient")
    expect_error(c.ob.request("POST", "/v1/subscription",
                              {"reset": True, "add": [{"from": "*@" + c.server, "to": other}]},
                              token=c.token()), 403, "foreign_recipient")


# -- GET /v1/key, POST /v1/login, Token ---------------------------------------------

@check("R-KEY")
def key(c):
    a = c.ob.request("GET", "/v1/key")
    expect(a.status == 200, "GET /v1/key is 200", a)
    ctype = (a.header("content-type") or "").split(";")[0].strip()
    expect(ctype == "application/pgp-keys", "Content-Type application/pgp-keys", ctype)
    expect(a.body.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"), "an armored key",
           a.body[:40])
    home = ScratchHome()
    try:
        out = gpg(home.home, "--with-colons", "--show-keys", data=a.body).decode()
    finally:
        home.close()
    primaries = [l for l in out.splitlines() if l.startswith("pub:")]
    expect(len(primaries) == 1, "exactly one primary key", len(primaries))
    fpr = [l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:")][0]
    if c.server_fpr:
        expect(fpr.upper() == c.server_fpr.upper(), "the key is the published one (%s)"
               % c.server_fpr, fpr)


@check("R-KEY-BY-FPR")
def key_by_fpr(c):
    """GET /v1/key/{fpr} ("Key rotation"): the key of GET /v1/key by its
    fingerprint, in either case; 404 not_found for another fingerprint or
    a malformed one. An outbox without the endpoint (404 no_such_endpoint)
    does not implement the section: skipped."""
    whole = c.ob.request("GET", "/v1/key")
    expect(whole.status == 200, "GET /v1/key is 200", whole)
    home = ScratchHome()
    try:
        out = gpg(home.home, "--with-colons", "--show-keys", data=whole.body).decode()
    finally:
        home.close()
    fpr = [l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:")][0]
    a = c.ob.request("GET", "/v1/key/" + fpr.upper())
    if a.status == 404 and a.body and b"no_such_endpoint" in a.body:
        raise Skip("the outbox has no GET /v1/key/{fpr} (no key rotation)")
    for form in (fpr.upper(), fpr.lower()):
        a = c.ob.request("GET", "/v1/key/" + form)
        expect(a.status == 200, "GET /v1/key/%s is 200" % form, a)
        ctype = (a.header("content-type") or "").split(";")[0].strip()
        expect(ctype == "application/pgp-keys", "Content-Type application/pgp-keys", ctype)
        expect(a.body == whole.body, "the key of GET /v1/key", a.body[:60])
    other = "0" * 40 if fpr.upper() != "0" * 40 else "1" * 40
    for path in ("/v1/key/" + other, "/v1/key/" + "0" * 64, "/v1/key/not-a-fingerprint"):
        expect_error(c.ob.request("GET", path), 404, "not_found")


@check("R-TOKEN-FORM", "R-LOGIN-CHECKS")
def login(c):
    a = c.ob.request("POST", "/v1/login", c.signer.login_body(c.server))
    j = expect_ok_json(a, "a good login")
    expect(set(j) >= {"token", "expires"}, "the answer has token and expires", j)
    expect(isinstance(j["token"], str) and len(j["token"]) <= 512
           and c.grammar.matches("bearer-token", j["token"]),
           "the token is a bearer-token of at most 512 octets", j["token"])
    expect(c.grammar.matches("date-time", j["expires"]), "expires is a date-time",
           j["expires"])


@check("R-LOGIN-TIME")
def login_time_form(c):
    now = rfc3339()
    for when in (now.replace("Z", "+00:00"), now.replace("Z", ".000Z"),
                 now.replace("T", "t"), now.replace("Z", "")):
        expect(not c.grammar.matches("date-time", when), "%s is no date-time" % when)
        expect_error(c.ob.request("POST", "/v1/login", c.signer.login_body(c.server, when=when)),
                     400, "bad_request")


@check("R-LOGIN-CHECKS", "R-401-CHALLENGE")
def login_refusals(c):
    s = c.signer
    expect_error(c.ob.request("POST", "/v1/login", s.login_body("other." + c.server)), 401,
                 "login_failed")
    expect_error(c.ob.request("POST", "/v1/login", s.login_body(c.server, when=rfc3339(
        c.now() - 3 * 86400))), 401, "stale_login")
    expect_error(c.ob.request("POST", "/v1/login", s.login_body(c.server, when=rfc3339(
        c.now() + 3 * 86400))), 401, "stale_login")
    when, nonce = rfc3339(), os.urandom(16).hex()
    other = statement(c.server, c.domain, when, os.urandom(16).hex())
    expect_error(c.ob.request("POST", "/v1/login", s.login_body(
        c.server, when=when, nonce=nonce, signed=other)), 401, "bad_signature")
    expect_error(c.ob.request("POST", "/v1/login", "not json"), 400, "bad_json")
    body = s.login_body(c.server)
    del body["nonce"]
    expect_error(c.ob.request("POST", "/v1/login", body), 400, "bad_request")


@check("R-LOGIN-WRONG-KEY", "R-LOGIN-CHECKS")
def login_wrong_key(c):
    home = ScratchHome()
    try:
        stranger = home.new_key("stranger@" + c.domain)
        gpg(home.home, "--import", data=c.signer.public_key().encode())
        alone = gpg(home.home, "--armor", "--export", stranger).decode()
        both = gpg(home.home, "--armor", "--export", c.signer.fpr, stranger).decode()
    finally:
        home.close()
    for key_text, what in ((alone, "another key"), (both, "the domain key and another")):
        a = c.ob.request("POST", "/v1/login", c.signer.login_body(c.server, key=key_text))
        try:
            expect_error(a, 401, "wrong_key")
        except Fail as e:
            raise Fail("key holding %s: %s" % (what, e))


@check("R-LOGIN-ORDER")
def login_order(c):
    s = c.signer
    # every check fails at once: the first row of the table answers
    stale = rfc3339(c.now() - 3 * 86400)
    junk = s.sign(b"something else")
    expect_error(c.ob.request("POST", "/v1/login", s.login_body(
        "other." + c.server, when=stale, signature=junk)), 401, "login_failed")
    expect_error(c.ob.request("POST", "/v1/login", s.login_body(
        c.server, when=stale, signature=junk)), 401, "stale_login")
    expect_error(c.ob.request("POST", "/v1/login", s.login_body(
        c.server, signature=junk, domain="no-stubmail." + c.domain)), 401, "unknown_domain")


@check("R-LOGIN-DIGEST")
def login_digest(c):
    for digest in ("SHA1", "SHA224"):
        a = c.ob.request("POST", "/v1/login", c.signer.login_body(c.server, digest=digest))
        try:
            expect_error(a, 401, "bad_signature")
        except Fail as e:
            raise Fail("a %s signature: %s" % (digest, e))
    for digest in ("SHA256", "SHA384", "SHA512"):
        expect_ok_json(c.ob.request("POST", "/v1/login", c.signer.login_body(
            c.server, digest=digest)), "a %s signature" % digest)


@check("R-LOGIN-SUBKEY")
def login_subkey(c):
    home = ScratchHome(copy_of=c.signer.home)
    try:
        sub = home.add_signing_subkey(c.signer.fpr)
        copy = Signer(home.home, c.domain, c.signer.fpr)
        body = copy.login_body(c.server, signer=sub + "!")
    finally:
        home.close()
    expect_ok_json(c.ob.request("POST", "/v1/login", body),
                   "a login signed by a signing subkey (%s)" % sub)


@check("R-LOGIN-REPLAY")
def login_replay(c):
    body = c.signer.login_body(c.server)
    expect_ok_json(c.ob.request("POST", "/v1/login", body), "the first login")
    expect_error(c.ob.request("POST", "/v1/login", body), 401, "replayed_login")


# -- POST /v1/poll ------------------------------------------------------------------

@check("R-POLL-PAIRS")
def poll_bad_bodies(c):
    own = "nobody@" + c.domain
    for body in ({}, {"pairs": []}, {"pairs": {}}, {"pairs": [{"from": "*@" + c.server}]},
                 {"pairs": [{"from": "not an address", "to": own}]},
                 {"pairs": [{"from": "*@" + c.server, "to": 7}]}):
        expect_error(c.ob.request("POST", "/v1/poll", body, token=c.token()), 400,
                     "bad_request")
    expect_error(c.ob.request("POST", "/v1/poll", '{"pairs": [', token=c.token()), 400,
                 "bad_json")


@check("R-POLL-ANSWER")
def poll_answer(c):
    j = c.poll()
    expect(set(j) == {"messages", "more"}, "members messages and more", sorted(j))
    expect(isinstance(j["more"], bool) and isinstance(j["messages"], list),
           "messages an array, more a boolean", j)
    for m in j["messages"]:
        expect(set(m) == {"id", "from", "to", "size", "time"}, "an entry's members", m)
        expect(c.grammar.matches("message-id", m["id"]), "id is a message-id", m["id"])
        expect(c.grammar.matches("address", m["from"]), "from is an address", m["from"])
        expect(m["to"].endswith("@" + c.domain), "to is at our domain", m["to"])
        expect(isinstance(m["size"], int) and m["size"] >= 0, "size an integer", m["size"])
        expect(c.grammar.matches("date-time", m["time"]), "time is a date-time", m["time"])


# -- POST /v1/subscription, GET /v1/poll ---------------------------------------------

@check("R-SUB-FORM", "R-SUB-409", "R-SUB-VERSION")
def subscription(c):
    def sub(body):
        return c.ob.request("POST", "/v1/subscription", body, token=c.token())
    pair = {"from": "nobody@" + c.server, "to": "nobody@" + c.domain}
    v0 = expect_ok_json(sub({"reset": True}), "a reset")["version"]
    expect(isinstance(v0, int), "version is an integer", v0)
    expect_error(sub({"add": [pair]}), 400, "bad_request")
    expect_error(sub({"reset": True, "remove": [pair]}), 400, "bad_request")
    v1 = expect_ok_json(sub({"base": v0, "add": [pair]}), "a change")["version"]
    expect(v1 > v0, "a change makes a greater version", (v0, v1))
    v2 = expect_ok_json(sub({"base": v1, "remove": [pair]}), "a removal")["version"]
    expect(v2 > v1, "a removal makes a greater version", (v1, v2))
    j = expect_error(sub({"base": v1, "add": [pair]}), 409, "subscription_changed")
    expect(j.get("version") == v2, "the 409 names the current version %d" % v2, j)
    v3 = expect_ok_json(sub({"reset": True}), "a reset")["version"]
    expect(v3 > v2, "a reset makes a greater version", (v2, v3))


@check("R-GET-VERSION", "R-GET-409", "R-GET-ETAG", "R-GET-304", "R-GET-ETAG-CHANGES",
       "R-HEAD")
def conditional_poll(c):
    for q in ("", "?version=", "?version=x1", "?version=-1", "?version=1234567890123456"):
        expect_error(c.ob.request("GET", "/v1/poll" + q, token=c.token()), 400, "bad_request")
    v = c.subscribe([])
    j = expect_error(c.ob.request("GET", "/v1/poll?version=%d" % (v + 1), token=c.token()),
                     409, "subscription_changed")
    expect(j.get("version") == v, "the 409 names the current version", j)
    a = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token())
    j = expect_ok_json(a, "GET /v1/poll")
    expect(set(j) == {"messages", "more", "version"} and j["version"] == v
           and j["more"] is False, "messages, more false, version", j)
    tag = a.header("etag")
    expect(tag is not None and c.grammar.matches("poll-etag", tag),
           "a poll-etag on an answer with more false", tag)
    for inm in (tag, "*", '"x", ' + tag, "W/" + tag):
        r = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token(),
                         headers=[("If-None-Match", inm)])
        expect(r.status == 304 and r.body == b"" and r.header("etag") == tag,
               "If-None-Match: %s is 304 with the ETag" % inm, r)
    r = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token(),
                     headers=[("If-None-Match", '"not-the-tag"')])
    expect(r.status == 200, "another tag gets 200", r)
    h = c.ob.request("HEAD", "/v1/poll?version=%d" % v, token=c.token())
    expect(h.status == 200 and h.body == b"", "HEAD /v1/poll is 200 without a body", h)
    v2 = c.subscribe([{"from": "nobody@" + c.server, "to": "nobody@" + c.domain}], base=v)
    a2 = c.ob.request("GET", "/v1/poll?version=%d" % v2, token=c.token())
    expect_ok_json(a2, "GET /v1/poll after a change")
    expect(a2.header("etag") != tag, "a new version, a new ETag", (tag, a2.header("etag")))
    c.subscribe([])


# -- GET /v1/message/{id} -----------------------------------------------------------

@check("R-FETCH-404")
def fetch_errors(c):
    expect_error(c.ob.request("GET", "/v1/message/" + random_id(), token=c.token()), 404,
                 "not_found")
    for bad in ("6F1C0A9E2B7D4C3F8A5E1D2C3B4A5968", "6f1c0a9e", "x" * 32):
        expect_error(c.ob.request("GET", "/v1/message/" + bad, token=c.token()), 400, "bad_id")


@check("R-FETCH-HEADERS", "R-POLL-SIZE", "R-FETCH-AGAIN", "R-FETCH-ETAG")
def fetch(c):
    m = c.message()
    a = c.ob.request("GET", "/v1/message/" + m["id"], token=c.token())
    expect(a.status == 200, "the fetch of a listed message is 200", a)
    expect(a.header("content-type") == "application/pgp-encrypted",
           "Content-Type application/pgp-encrypted", a.header("content-type"))
    expect(a.header("stubmail-format") == "openpgp", "Stubmail-Format: openpgp",
           a.header("stubmail-format"))
    expect(a.header("stubmail-from") == m["from"], "Stubmail-From is the listed sender",
           a.header("stubmail-from"))
    expect(len(a.body) == m["size"] == int(a.header("content-length") or -1),
           "the body, Content-Length and the listed size agree",
           (len(a.body), a.header("content-length"), m["size"]))
    again = c.ob.request("GET", "/v1/message/" + m["id"], token=c.token())
    expect(again.status == 200 and again.body == a.body, "a second fetch, the same octets",
           again)
    tag = a.header("etag")
    if (a.header("accept-ranges") or "").strip() == "bytes":
        expect(tag is not None and not tag.startswith("W/"), "a strong ETag", tag)
    c.fetched = a


@check("R-RANGE")
def fetch_range(c):
    m = c.message()
    whole = getattr(c, "fetched", None)
    if whole is None or (whole.header("accept-ranges") or "").strip() != "bytes":
        raise Skip("the outbox does not announce Accept-Ranges: bytes")
    tag, size, url = whole.header("etag"), m["size"], "/v1/message/" + m["id"]
    start = size // 2
    for headers in ([("Range", "bytes=%d-" % start)],
                    [("Range", "bytes=%d-" % start), ("If-Range", tag)]):
        a = c.ob.request("GET", url, token=c.token(), headers=headers)
        expect(a.status == 206, "%s: 206" % headers, a)
        expect(a.header("content-range") == "bytes %d-%d/%d" % (start, size - 1, size),
               "Content-Range", a.header("content-range"))
        expect(a.body == whole.body[start:] and int(a.header("content-length")) == size - start,
               "the rest of the body", len(a.body))
    a = c.ob.request("GET", url, token=c.token(),
                     headers=[("Range", "bytes=%d-" % start), ("If-Range", '"another"')])
    expect(a.status == 200 and a.body == whole.body, "If-Range with another validator: 200",
           a)
    a = c.ob.request("GET", url, token=c.token(), headers=[("Range", "bytes=%d-" % size)])
    expect(a.status == 416, "FROM at the size: 416", a)


# -- acks ---------------------------------------------------------------------------

@check("R-ACK-FORM", "R-ACK-ANSWER")
def ack_errors(c):
    own = "nobody@" + c.domain
    path = "/v1/message/%s/ack" % random_id()
    for body in ({}, {"to": own, "status": "lost"}, {"to": own, "status": "rejected"},
                 {"to": own, "status": "rejected", "reason": ""},
                 {"to": own, "status": "rejected", "reason": "x" * 201},
                 {"to": own, "status": "rejected", "reason": "two\nlines"},
                 {"to": own, "reason": "why"}, {"to": own, "status": "delivered",
                                                "reason": "why"}):
        expect_error(c.ob.request("POST", path, body, token=c.token()), 400, "bad_request")
    for body in ({"to": own}, {"to": own, "status": "delivered"},
                 {"to": own, "status": "rejected", "reason": "x" * 200}):
        expect_error(c.ob.request("POST", path, body, token=c.token()), 404, "not_found")
    expect_error(c.ob.request("POST", "/v1/message/XYZ/ack", {"to": own}, token=c.token()),
                 400, "bad_id")


@check("R-ACKS-MAX", "R-ACKS-ANSWER", "R-ACKS-WHOLE")
def acks_batch_errors(c):
    own = "nobody@" + c.domain
    items = [{"id": random_id(), "to": own} for _ in range(1001)]
    expect_error(c.ob.request("POST", "/v1/ack", {"acks": items}, token=c.token()), 413,
                 "too_many_acks")
    two = items[:2]
    j = expect_ok_json(c.ob.request("POST", "/v1/ack", {"acks": two}, token=c.token()),
                       "a batch of two unknown ids")
    expect(list(j) == ["acks"] or set(j) >= {"acks"}, "a member acks", j)
    expect([(x.get("id"), x.get("to"), x.get("error")) for x in j["acks"]]
           == [(i["id"], own, "not_found") for i in two], "one answer per item, in order", j)
    expect_error(c.ob.request("POST", "/v1/ack", {"acks": two + [{"id": "bad", "to": own}]},
                              token=c.token()), 400, "bad_request")
    expect_error(c.ob.request("POST", "/v1/ack", {"acks": two + [
        {"id": random_id(), "to": "x@other-" + c.domain}]}, token=c.token()), 403,
        "foreign_recipient")
    expect_error(c.ob.request("POST", "/v1/ack", {"acks": []}, token=c.token()), 400,
                 "bad_request")


@check("R-ERROR-NOCHANGE", "R-ACKS-WHOLE", "R-ACK-DELIVERED", "R-ACK-ANSWER",
       "R-ACK-FIRST", "R-GET-ETAG-CHANGES", "R-ACKS-ANSWER", "R-GET-NO-HIDE", "R-ACK-RECEIPT")
def ack(c):
    m = c.message()
    if not c.may_ack:
        raise Skip("acking consumes the message: pass --may-ack")
    receipt = c.receipt()
    v = c.subscribe([{"from": m["from"], "to": m["to"]}])
    before = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token())
    expect([e["id"] for e in expect_ok_json(before, "GET /v1/poll")["messages"]].count(m["id"])
           == 1, "the subscription lists the message", before)
    # the tag of that answer covers the message it listed: a 304 with it
    # hides nothing the poller has not seen
    again = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token(),
                         headers=[("If-None-Match", before.header("etag") or '"x"')])
    expect(again.status == 304, "the tag of the answer that listed the message gets 304",
           again)
    # a batch refused for one item records none of them
    expect_error(c.ob.request("POST", "/v1/ack", {"acks": [
        {"id": m["id"], "to": m["to"], "receipt": receipt},
        {"id": m["id"], "to": "x@other-" + c.domain, "receipt": receipt}]},
        token=c.token()), 403, "foreign_recipient")
    expect(any(e["id"] == m["id"] for e in c.poll()["messages"]),
           "after a refused batch the message is still listed")
    # the token alone acks nothing: without the receipt, or with another
    path = "/v1/message/%s/ack" % m["id"]
    wrong = ("A" if receipt[0] != "A" else "B") + receipt[1:]
    for body in ({"to": m["to"]}, {"to": m["to"], "receipt": wrong},
                 {"to": m["to"], "status": "rejected", "reason": "x", "receipt": wrong}):
        expect_error(c.ob.request("POST", path, body, token=c.token()), 403, "bad_receipt")
    expect(any(e["id"] == m["id"] for e in c.poll()["messages"]),
           "after acks without the receipt the message is still listed")
    j = expect_ok_json(c.ob.request("POST", path, {"to": m["to"], "status": "delivered",
                                                   "receipt": receipt},
                                    token=c.token()), "an explicit delivered ack")
    expect(set(j) >= {"id", "to", "retrieved", "status"} and j["id"] == m["id"]
           and j["to"] == m["to"] and j["status"] == "delivered"
           and c.grammar.matches("date-time", j["retrieved"]),
           "id, to, retrieved, status delivered", j)
    again = expect_ok_json(c.ob.request("POST", path, {"to": m["to"], "status": "rejected",
                                                       "reason": "changed my mind",
                                                       "receipt": receipt},
                                        token=c.token()), "a later rejection")
    expect((again["retrieved"], again["status"]) == (j["retrieved"], "delivered"),
           "a later ack answers the first's time and status", again)
    batch = expect_ok_json(c.ob.request("POST", "/v1/ack", {"acks": [
        {"id": m["id"], "to": m["to"], "status": "rejected", "reason": "again",
         "receipt": receipt}]},
        token=c.token()), "the same in a batch")
    expect([(x["id"], x["to"], x["retrieved"], x["status"]) for x in batch["acks"]]
           == [(m["id"], m["to"], j["retrieved"], "delivered")], "the first ack wins", batch)
    after = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token())
    expect_ok_json(after, "GET /v1/poll after the ack")
    expect(after.header("etag") != before.header("etag"),
           "the ETag changes when the entry leaves the pending set",
           (before.header("etag"), after.header("etag")))
    expect_error(c.ob.request("GET", "/v1/message/" + m["id"], token=c.token()), 404,
                 "not_found")
    c.subscribe([])


# -- UDP poll ------------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def udp_ask(address, request, wait):
    """Send one datagram from a socket of our own; the answer or None."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(request, (host, int(port)))
        try:
            return s.recvfrom(2048)[0]
        except socket.timeout:
            return None


@check("R-UDP-NO-AMPLIFY", "R-UDP-SILENT")
def udp_poll(c):
    a = c.ob.request("POST", "/v1/login", c.signer.login_body(c.server))
    udp = expect_ok_json(a, "a login").get("udp")
    if udp is None:
        raise Skip("the login answer names no UDP responder")
    expect(c.grammar.matches("udp-value", udp.get("address", "")) and
           c.grammar.matches("udp-session", udp.get("session", "")) and
           re.fullmatch(r"[A-Za-z0-9_-]{43}", udp.get("secret", "")) is not None,
           "udp has an address, a session and a 43-character secret", udp)
    key = base64.urlsafe_b64decode(udp["secret"] + "=")
    token = a.json()["token"]
    v = c.subscribe([])
    cursor = c.ob.request("GET", "/v1/poll?version=%d" % v, token=token).header("etag")
    asked = [0]

    def request(cur, mac_ok=True):
        asked[0] = max(asked[0], int(time.time()))
        head = "stubmail1 poll %s %s %d" % (udp["session"], cur, asked[0])
        mac = b64url(hmac.new(key, head.encode(), hashlib.sha256).digest())
        if not mac_ok:
            mac = mac[:-1] + ("A" if mac[-1] != "A" else "B")
        return (head + " " + mac).encode(), mac

    for cur, want in ((cursor, "idle"), ('"not-the-tag"', "poll")):
        req, mac = request(cur)
        expect(c.grammar.matches("udp-request", req.decode()), "our request is a udp-request")
        rep = udp_ask(udp["address"], req, 5)
        expect(rep is not None, "an answer to a good request (%s)" % want)
        expect(len(rep) <= len(req), "the reply is no longer than the request",
               (len(rep), len(req)))
        expect(c.grammar.matches("udp-reply", rep.decode("latin-1")), "a udp-reply", rep)
        status = rep.decode().split(" ")[1]
        good = b64url(hmac.new(key, ("stubmail1 reply %s %s" % (status, mac)).encode(),
                               hashlib.sha256).digest())
        expect(rep.decode() == "stubmail1 %s %s" % (status, good), "the reply's MAC", rep)
        expect(status == want, "the cursor %s is answered %s" % (cur, want), status)
    req, _ = request(cursor, mac_ok=False)
    for bad in (req, req + b" ", req.replace(b" poll ", b" Poll "), b"stubmail1 poll"):
        expect(udp_ask(udp["address"], bad, 2) is None, "no answer to a bad request", bad)


# -- Limits ---------------------------------------------------------------------------

@check("R-POLL-COUNT", "R-RETRY-AFTER", "R-GET-COUNTS")
def poll_limit(c):
    """Needs a domain whose poll bucket is full and the server's burst
    (--poll-burst), with an interval long enough that nothing comes back
    during the check."""
    if not c.poll_burst:
        raise Skip("pass --poll-burst N (the server's burst) for a domain that has not "
                   "polled, with a long interval")
    v = c.subscribe([])
    # refused before the limit: none of these counts
    for _ in range(3):
        expect_error(c.ob.request("POST", "/v1/poll", {"pairs": []}, token=c.token()), 400,
                     "bad_request")
    expect_error(c.ob.request("POST", "/v1/poll", {"pairs": []}), 401, "token_required")
    expect_error(c.ob.request("GET", "/v1/poll", token=c.token()), 400, "bad_request")
    expect_error(c.ob.request("GET", "/v1/poll?version=%d" % (v + 1), token=c.token()), 409,
                 "subscription_changed")
    for i in range(c.poll_burst - 2):
        a = c.ob.request("POST", "/v1/poll", {"pairs": [
            {"from": "*@" + c.server, "to": "nobody@" + c.domain}]}, token=c.token())
        expect(a.status == 200, "poll %d of a burst of %d passes (refused polls did not "
               "count)" % (i + 1, c.poll_burst), a)
    a = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token())
    expect(a.status == 200, "the last but one poll of the burst passes", a)
    r = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token(),
                     headers=[("If-None-Match", a.header("etag") or '"x"')])
    expect(r.status == 304, "the last poll of the burst, a 304", r)
    for _ in range(2):
        r = c.ob.request("GET", "/v1/poll?version=%d" % v, token=c.token())
        expect_error(r, 429, "too_soon")
        ra = r.header("retry-after") or ""
        expect(ra.isdigit() and int(ra) >= 1, "Retry-After in whole seconds, at least 1", ra)
