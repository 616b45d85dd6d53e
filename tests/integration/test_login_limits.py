"""Login rate limits (docs/PROTOCOL.md, Limits): StubmailLoginRate per
claimed domain and StubmailLoginAddressRate per client address, kept in
PostgreSQL (sql/007_rate_limit.sql) so that every Apache child shares them.

Checked: N quick logins pass and the next gets 429 too_soon with a
Retry-After, before any GnuPG work (a login with a broken signature is
answered 429, not 401 bad_signature, and the error log says the key was
not checked); failed logins count too; one address or domain at its limit
does not hold up others; waiting Retry-After lets one login through, and a
whole window later the full allowance is back; a real pollerd whose domain
is at its limit waits out the 429 and then delivers; concurrent logins
(several Apache threads and children at once) get exactly N through."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

from support import SandboxTest, curl, login_body, make_message

DOMAIN_N, ADDR_N, SECS = 3, 5, 6


def login_from(isp, body, source):
    """POST /v1/login from the loopback address source."""
    return curl(isp.outbox_url + "/v1/login", "POST", data=json.dumps(body),
                extra=("--interface", source))


class LoginLimitsTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"c.example": ("key",)}
    HTTPD_EXTRA = (("StubmailLoginRate", "%d/%d" % (DOMAIN_N, SECS)),
                   ("StubmailLoginAddressRate", "%d/%d" % (ADDR_N, SECS)))

    def setUp(self):
        super().setUp()
        # every test starts with full buckets, whatever ran before it: the
        # buckets are rows of rate_limit (no row: full)
        self.a.sql("DELETE FROM rate_limit")

    def assertTooSoon(self, r, secs=SECS):
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.json()["error"], "too_soon", r)
        retry = int(r.header("retry-after"))
        self.assertTrue(1 <= retry <= secs, r)
        return retry

    def error_log_since_mark(self):
        with open(self.a.error_log, errors="replace") as f:
            return f.read()

    def test_domain_limit_before_any_key_check(self):
        a, c = self.a, self.c
        src = "127.0.0.21"
        for i in range(DOMAIN_N):
            r = login_from(a, login_body(c.key, a.domain), src)
            self.assertEqual(r.status, 200, "login %d: %r" % (i + 1, r))
        # a signature that GnuPG would refuse: 429, so GnuPG never saw it
        bad = login_body(c.key, a.domain)
        lines = bad["signature"].split("\n")
        i = max(range(len(lines)), key=lambda k: len(lines[k]))     # base64 of the packet
        j = len(lines[i]) // 2
        lines[i] = lines[i][:j] + ("A" if lines[i][j] != "A" else "B") + lines[i][j + 1:]
        bad["signature"] = "\n".join(lines)
        retry = self.assertTooSoon(login_from(a, bad, src))
        log = self.error_log_since_mark()
        self.assertRegex(log, r"StubmailLoginRate %d/%d reached by login_domain c\.example,"
                         r" login refused before any key check" % (DOMAIN_N, SECS))
        self.assertNotIn("bad_signature", log)
        # the limit is c.example's: b.example logs in from the same address
        self.assertEqual(login_from(a, login_body(self.b.key, a.domain), src).status, 200)
        # Retry-After is honest: after it, one login passes, the next does not
        time.sleep(retry + 0.2)
        self.assertEqual(login_from(a, login_body(c.key, a.domain), src).status, 200)
        self.assertTooSoon(login_from(a, login_body(c.key, a.domain), src))
        # a whole window later the full allowance is back
        time.sleep(SECS + 0.2)
        for i in range(DOMAIN_N):
            r = login_from(a, login_body(c.key, a.domain), "127.0.0.22")
            self.assertEqual(r.status, 200, "login %d after the window: %r" % (i + 1, r))
        self.assertTooSoon(login_from(a, login_body(c.key, a.domain), "127.0.0.22"))

    def test_address_limit_counts_failed_logins(self):
        a = self.a
        src = "127.0.0.23"
        # unknown domains: each fails after the limit check (401), and counts
        for i in range(ADDR_N):
            body = login_body(self.c.key, a.domain, domain="nope%d.example" % i)
            r = login_from(a, body, src)
            self.assertEqual(r.status, 401, "login %d: %r" % (i + 1, r))
            self.assertEqual(r.json()["error"], "unknown_domain", r)
        r = login_from(a, login_body(self.c.key, a.domain, domain="nope9.example"), src)
        self.assertTooSoon(r)
        self.assertRegex(self.error_log_since_mark(),
                         r"StubmailLoginAddressRate %d/%d reached by login_address "
                         r"127\.0\.0\.23," % (ADDR_N, SECS))
        # a domain it never named is not charged: another address gets on
        r = login_from(a, login_body(self.c.key, a.domain, domain="nope9.example"),
                       "127.0.0.24")
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["error"], "unknown_domain", r)
        # the state is in PostgreSQL, shared by every child
        self.assertEqual(a.count("rate_limit", "kind = 'login_address' "
                                 "AND key = '127.0.0.23'"), 1)

    def test_pollerd_waits_out_its_domain_limit(self):
        a, b = self.a, self.b
        b.kill_pollerd()
        for _ in range(DOMAIN_N):        # b.example's allowance, spent by hand
            self.assertEqual(login_from(a, login_body(b.key, a.domain), "127.0.0.25").status,
                             200)
        b.add_contact("bob@b.example", "alice@a.example")
        msg, tag = make_message("alice@a.example", "bob@b.example", "limited")
        self.send_stored(a, "alice@a.example", "bob@b.example", msg)
        b.start_pollerd()     # no token yet: it must log in, gets 429 first
        self.wait_maildir(b, "bob", tag, timeout=SECS + 30)
        # pollerd comes from 127.0.0.1; the logins by hand from elsewhere
        lines = self.access_lines(a, r"^127\.0\.0\.1 .*POST /stubmail/v1/login HTTP/1\.1\" 429 ")
        self.assertTrue(lines, "b.example's pollerd was never refused a login")
        # it waited as long as Retry-After said (rounded up by the outbox, so
        # enough) before asking again: refused once; a pollerd that asks
        # again sooner is refused again
        self.assertEqual(len(lines), 1, "pollerd did not wait out Retry-After: %d logins "
                         "refused:\n%s" % (len(lines), "".join(lines)))

    def test_concurrent_logins_share_one_bucket(self):
        a, c = self.a, self.c
        bodies = [login_body(c.key, a.domain) for _ in range(DOMAIN_N + 5)]
        with ThreadPoolExecutor(len(bodies)) as pool:
            got = list(pool.map(lambda b: login_from(a, b, "127.0.0.26").status, bodies))
        self.assertEqual(sorted(got), [200] * DOMAIN_N + [429] * 5, got)


if __name__ == "__main__":
    import unittest
    unittest.main()
