"""Sendmail as well as Postfix (issue 13): a.example runs a real Sendmail
(Debian's, unpacked by scripts/fetch-sendmail; tests/sandbox/sendmail.py)
with stubmail-milter as its INPUT_MAIL_FILTER, configured as the admin
guide's Sendmail section says. Mail submitted on the port named
ORIGINATING is outbound: a recipient at a pulling domain (b.example) is
stored in the outbox and taken off Sendmail's envelope (the message is
discarded when none is left) and b.example pulls it; one at a pushing
domain (c.example, a plain Postfix) is passed on by SMTP. Mail on the
inbound port (Name=MTA) from a client outside trusted_networks is not
outbound: pushed, nothing stored. Skipped, with the reason, where Debian's
Sendmail packages cannot be had."""

import unittest

from support import SandboxTest, make_message, split_message, wait_for
from sandbox.sendmail import sendmail_missing

MISSING = sendmail_missing()


@unittest.skipIf(MISSING, "no Sendmail: %s" % MISSING)
class SendmailTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"a.example": ("pg", "httpd", "milter", "sendmail"),
                "c.example": ("postfix",)}      # receives only; no stubmail

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")
        # Outbound by Sendmail's {daemon_name} alone: the test client's own
        # address is no longer trusted.
        cls.a.restart_milter(["trusted_networks 192.0.2.1/32"])

    def wait_queue_empty(self):
        wait_for(lambda: self.a.sendmail_queue() == [], timeout=30,
                 what="a.example's Sendmail queue empty")

    def test_pulling_recipient_diverted_and_pulled(self):
        a, b = self.a, self.b
        msg, tag = make_message("alice@a.example", "bob@b.example", "by sendmail")
        rows = self.send_stored(a, "alice@a.example", "bob@b.example", msg)
        self.assertEqual([r[2] for r in rows], ["bob@b.example"])
        with open(a.milter_log) as f:
            log = f.read()
        self.assertIn("diverted id=%s" % rows[0][0], log)
        self.assertIn("discarded from the push path", log)
        got = self.wait_maildir(b, "bob", tag)
        self.assertEqual(split_message(got[0][1])[1], split_message(msg)[1])
        self.assertIn(b"with HTTP id " + rows[0][0].encode(), got[0][1])
        # discarded, not queued: Sendmail never pushed a copy to b.example
        self.wait_queue_empty()
        self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1)

    def test_pushing_recipient_passed_on(self):
        a, c = self.a, self.c
        before = a.sql_value("SELECT count(*) FROM message")
        msg, tag = make_message("alice@a.example", "carol@c.example", "pushed by sendmail")
        self.send_ok(a, "alice@a.example", "carol@c.example", msg)
        got = self.wait_maildir(c, "carol", tag)
        self.assertEqual(split_message(got[0][1])[1], split_message(msg)[1])
        self.assertEqual(a.sql_value("SELECT count(*) FROM message"), before)
        # what it learned: alice now knows carol (push-only mail teaches too)
        self.assertEqual(a.sql_value("SELECT count(*) FROM address_book WHERE "
                                     "owner = 'alice@a.example' AND contact = 'carol@c.example'"),
                         "1")

    def test_both_recipients_one_pulled_one_pushed(self):
        a, b, c = self.a, self.b, self.c
        to = ["bob@b.example", "carol@c.example"]
        msg, tag = make_message("alice@a.example", to, "to both by sendmail")
        rows = self.send_stored(a, "alice@a.example", to, msg)
        self.assertEqual([r[2] for r in rows], ["bob@b.example"])
        got = self.wait_maildir(b, "bob", tag)
        self.assertIn(b"with HTTP id " + rows[0][0].encode(), got[0][1])
        self.wait_maildir(c, "carol", tag)
        # bob was taken off Sendmail's envelope: no pushed copy for him
        self.wait_queue_empty()
        self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1)
        self.assertEqual(len(self.in_maildir(c, "carol", tag)), 1)

    def test_inbound_port_not_outbound(self):
        """On the MTA port ({daemon_name} MTA), from an untrusted client:
        not diverted, pushed to b.example's inbound listener."""
        a, b = self.a, self.b
        before = a.sql_value("SELECT count(*) FROM message")
        msg, tag = make_message("alice@a.example", "bob@b.example", "inbound port")
        r = a.send("alice@a.example", "bob@b.example", msg, port=a.smtp_port)
        self.assertTrue(r.ok, "swaks should succeed:\n%s" % r)
        got = self.wait_maildir(b, "bob", tag)
        self.assertNotIn(b"with HTTP id", got[0][1])
        self.assertEqual(a.sql_value("SELECT count(*) FROM message"), before)

    def test_milter_down_tempfails_reinjection_port_unfiltered(self):
        """F=T: with the milter down, submission is refused for now (4xx),
        nothing goes out unfiltered; the REINJECT daemon (InputMailFilters=
        empty, pollerd's way back in) has no filter and takes mail."""
        a, b = self.a, self.b
        a.stop_milter()
        try:
            msg, tag = make_message("alice@a.example", "bob@b.example", "milter down")
            r = a.send("alice@a.example", "bob@b.example", msg)
            self.assertFalse(r.ok, "submission should fail while the milter is down:\n%s" % r)
            self.assertTrue(r.saw(r"4\d\d"), "a temporary failure:\n%s" % r)
            r = a.send("alice@a.example", "bob@b.example", msg, port=a.reinject_port)
            self.assertTrue(r.ok, "the reinjection port has no filter:\n%s" % r)
            got = self.wait_maildir(b, "bob", tag)
            self.assertNotIn(b"with HTTP id", got[0][1])
        finally:
            a.start_milter()
