"""DNSSEC in discovery (docs/admin-guide.md, DNSSEC), with a real validating
resolver: every ISP asks a local unbound (tests/sandbox/dnssec.py) that
validates b.example's zone, signed with ldns-signzone, and forwards the
rest of .example to dnsmasq unsigned (a.example, c.example).

- b.example's record is validated: used, and cached as validated;
- a record changed after signing is bogus: the resolver answers SERVFAIL,
  and the milter tempfails that recipient (451 4.4.3) whether or not
  validation is required; nothing is stored or cached;
- c.example's unsigned record is used when validation is not required for
  it, and refused when it is: the milter pushes the mail by SMTP, pollerd
  does not poll a.example, mod_stubmail refuses c.example's login."""

import os
import subprocess

from support import SandboxTest, make_message, login, login_body, q, wait_for, TOP

LOOKUP = os.path.join(TOP, "tests", "dns", "dns_lookup_check")


class DnssecTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    # c.example: an unsigned record, its key served by its outbox, and a
    # Postfix for the mail pushed to it by SMTP
    SERVICES = {"c.example": ("pg", "httpd", "postfix")}
    DNSSEC = ("b.example",)

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def lookup(self, domain):
        """dns_lookup_check through the sandbox's validating resolver."""
        if not os.path.exists(LOOKUP):
            self.fail("%s is not built (make -C tests dns/dns_lookup_check)" % LOOKUP)
        out = subprocess.run([LOOKUP, self.sb.dnssec.address, domain], capture_output=True,
                             text=True, check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines())

    def require(self, spec):
        """a.example's milter with dnssec_require spec, nothing cached."""
        self.a.restart_milter(["dnssec_require %s" % spec])
        self.sb.forget_dns()

    def cached_validated(self, isp, domain):
        return isp.sql_value("SELECT status || ' ' || validated FROM dns_cache WHERE domain = %s"
                             % q(domain))

    def milter_log(self):
        with open(self.a.milter_log, errors="replace") as f:
            return f.read()

    def test_the_resolver_validates_the_signed_zone_only(self):
        b = self.lookup("b.example")
        self.assertEqual((b["status"], b["validated"]), ("found", "1"), b)
        c = self.lookup("c.example")
        self.assertEqual((c["status"], c["validated"]), ("found", "0"), c)
        self.assertIn("did not set the AD bit", c["why"])

    def test_validated_record_used_and_cached_as_validated(self):
        self.require("b.example")
        try:
            msg, tag = make_message("alice@a.example", "bob@b.example", "validated")
            rows = self.send_stored(self.a, "alice@a.example", "bob@b.example", msg)
            self.assertEqual([r[2] for r in rows], ["bob@b.example"])
            self.assertEqual(self.cached_validated(self.a, "b.example"), "found true")
            # and b.example pulls it (a.example's record is unsigned, which
            # b.example's pollerd does not mind)
            self.wait_maildir(self.b, "bob", tag, timeout=40)
        finally:
            self.require("none")

    def test_bogus_record_is_a_temporary_failure(self):
        record = self.b.key.record
        forged = record.replace(self.b.fpr, self.c.fpr)
        self.assertNotEqual(forged, record)
        self.assertEqual(self.lookup("b.example")["validated"], "1")
        self.sb.forge_txt("b.example", forged)
        # b.example's pollerd cannot log in meanwhile: a.example cannot
        # look its key up either
        self.a.expect_log(r"503 unavailable: b\.example: DNS temporary failure")
        try:
            self.assertEqual(self.lookup("b.example")["status"], "tempfail")
            for spec in ("none", "b.example"):
                self.require(spec)
                before = self.a.count("message")
                msg, tag = make_message("alice@a.example", "bob@b.example", "bogus " + spec)
                r = self.a.send("alice@a.example", "bob@b.example", msg)
                self.assertFalse(r.ok, "a bogus record must not be used:\n%s" % r)
                self.assertTrue(r.saw(r"451 4\.4\.3"), "451 4.4.3 at RCPT:\n%s" % r)
                self.assertEqual(self.a.count("message"), before, "stored with a bogus record")
                self.assertIsNone(self.cached_validated(self.a, "b.example"),
                                  "a temporary failure is not cached")
            self.assertIn("cannot tell whether b.example pulls its mail", self.milter_log())
        finally:
            self.sb.set_txt("b.example", record)
            self.require("none")
        self.assertEqual(self.lookup("b.example")["validated"], "1")

    def test_unsigned_record_used_when_not_required(self):
        self.require("b.example")
        try:
            msg, tag = make_message("alice@a.example", "carol@c.example", "unsigned ok")
            rows = self.send_stored(self.a, "alice@a.example", "carol@c.example", msg)
            self.assertEqual([r[2] for r in rows], ["carol@c.example"])
            self.assertEqual(self.cached_validated(self.a, "c.example"), "found false")
        finally:
            self.require("none")

    def test_unsigned_record_refused_when_required(self):
        self.require("all")
        try:
            before = self.a.count("outbox", "recipient = 'carol@c.example'")
            msg, tag = make_message("alice@a.example", "carol@c.example", "unsigned refused")
            self.send_ok(self.a, "alice@a.example", "carol@c.example", msg)
            # pushed: c.example's own Postfix delivers it
            self.wait_maildir(self.c, "carol", tag, timeout=40)
            self.assertEqual(self.a.count("outbox", "recipient = 'carol@c.example'"), before)
            # cached as it came, refused as it is read
            self.assertEqual(self.cached_validated(self.a, "c.example"), "found false")
            self.assertRegex(self.milter_log(),
                             r"to=<carol@c\.example>: c\.example's _stubmail record is not "
                             r"used \(_stubmail\.c\.example: not DNSSEC-validated .*validation "
                             r"is required for c\.example: record not used\); pushed by SMTP")
        finally:
            self.require("none")

    def test_pollerd_does_not_poll_an_unvalidated_domain_when_required(self):
        b = self.b
        mark = os.path.getsize(b.pollerd_log)
        b.restart_pollerd(["dnssec_require a.example"])
        try:
            self.sb.forget_dns()
            b.poll_now()

            def refused():
                with open(b.pollerd_log, errors="replace") as f:
                    f.seek(mark)
                    return [l for l in f if "a.example: nowhere to poll" in l
                            and "validation is required for a.example" in l]
            lines = wait_for(refused, timeout=20, what="pollerd refusing a.example")
            self.assertIn("not DNSSEC-validated", lines[0])
        finally:
            b.restart_pollerd([])

    def test_login_of_an_unvalidated_domain_refused_when_required(self):
        a = self.a
        extra = a.httpd_extra
        a.httpd_extra = extra + [("StubmailDNSSECRequire", "all")]
        a.restart_httpd()
        try:
            self.sb.forget_dns()
            r = login(a, login_body(self.c.key, "a.example"))
            self.assertEqual(r.status, 401, r)
            self.assertEqual(r.json()["error"], "unknown_domain", r)
            r = login(a, login_body(self.b.key, "a.example"))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(self.cached_validated(a, "b.example"), "found true")
        finally:
            a.httpd_extra = extra
            a.restart_httpd()
