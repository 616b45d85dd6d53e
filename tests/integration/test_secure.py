"""Issue 3, end to end with DNS, domain keys and login (secure sandbox):

- alice@a.example -> bob@b.example is stored signed and encrypted (the
  spool file holds no plaintext, message.format = 'openpgp') and arrives
  verified (Authentication-Results: ... stubmail=pass);
- a tampered stored body is not delivered: b.example quarantines it and
  a.example's outbox shows the rejection;
- a body sealed as gpg seals by default (compressed inside) is not
  delivered either: rejected with the reason "compressed";
- a forged "Authentication-Results: b.example; stubmail=pass" in the
  message is removed before delivery;
- a poller whose key is not the one its domain is known by is refused
  (401 wrong_key), by hand and for the real pollerd (a.example's admin
  pins another fingerprint in its peer table);
- a replayed login fails (401 replayed_login);
- mail to a domain without a _stubmail record (c.example, plain Postfix)
  goes out by SMTP;
- with the DNS server down, the milter answers 451 at RCPT for a domain it
  cannot look up, and nothing is stored or pushed."""

import glob
import os
import signal
import subprocess

from support import (SandboxTest, make_message, split_message, header_lines, wait_for, q,
                     login, login_body, DomainKey, stored_body, replace_body, b64url)


class SecureTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"c.example": ("postfix",)}      # no stubmail, no record

    def logins(self, status):
        return self.access_lines(self.a, r"POST /stubmail/v1/login HTTP/1\.1\" %d " % status)

    def test_signed_encrypted_verified(self):
        a, b = self.a, self.b
        # bob does not know alice yet: the message waits, so we can look at it
        msg, tag = make_message("alice@a.example", "bob@b.example", "sealed")
        rows = self.send_stored(a, "alice@a.example", "bob@b.example", msg)
        self.assertEqual([r[2] for r in rows], ["bob@b.example"])
        mid = rows[0][0]
        self.assertEqual(a.sql_value("SELECT format FROM message WHERE id = %s" % q(mid)),
                         "openpgp")
        stored = stored_body(a, mid)
        for plain in (b"Subject:", tag.encode(), b"alice@a.example", b"Hello"):
            self.assertNotIn(plain, stored, "plaintext in the stored body")
        self.assertEqual(int(a.sql_value("SELECT size FROM message WHERE id = %s" % q(mid))),
                         len(stored))

        b.add_contact("bob@b.example", "alice@a.example")
        got = self.wait_maildir(b, "bob", tag, timeout=40)
        self.assertEqual(len(got), 1)
        head, body = split_message(got[0][1])
        self.assertEqual(body, split_message(msg)[1], "body changed on the way")
        self.assertTrue(head.endswith(split_message(msg)[0]), "original headers not intact")
        results = [h for h in header_lines(head) if h.startswith("Authentication-Results:")]
        self.assertEqual(len(results), 1, header_lines(head))
        self.assertRegex(results[0], r"^Authentication-Results: b\.example; stubmail=pass\s+"
                         r"smtp\.mailfrom=alice@a\.example\s+header\.d=a\.example\b")
        self.assertIn(a.fpr[-4:], results[0].replace(" ", ""))
        wait_for(lambda: a.sql_value("SELECT retrieved_at FROM outbox WHERE message_id = %s"
                                     % q(mid)), timeout=15, what="retrieved_at on a.example")
        self.assertEqual(a.sql_value("SELECT rejected_reason FROM outbox WHERE message_id = %s"
                                     % q(mid)), "")
        self.assertEqual(b.sql("SELECT status FROM received WHERE message_id = %s" % q(mid)),
                         [["delivered"]])
        # found by DNS alone: nobody configured a peer
        self.assertEqual(a.count("peer") + b.count("peer"), 0)
        self.assertTrue(self.logins(200), "b.example never logged in at a.example")

    def test_tampered_body_quarantined(self):
        """A body altered in storage does not open: b.example quarantines it
        and never delivers it. It yields no receipt (a small body fails its
        integrity check before its literal data comes out), so its rejection
        is refused (docs/PROTOCOL.md "Receipts") and given up, and a.example
        keeps the message until it expires (the sender is then told):
        nothing is lost, nothing is delivered, nothing loops."""
        a, b = self.a, self.b
        delivered_before = len(b.maildir_messages("dave"))
        msg, tag = make_message("alice@a.example", "dave@b.example", "tampered")
        rows = self.send_stored(a, "alice@a.example", "dave@b.example", msg)
        mid = rows[0][0]
        data = bytearray(stored_body(a, mid))
        middle = len(data) // 2
        for i in range(middle, min(middle + 8, len(data))):
            data[i] ^= 0x55
        replace_body(a, mid, bytes(data))

        # the sender's Apache tells its admin
        a.expect_log(r"\[stubmail:warn\] .*domain=b\.example id=%s: ack of dave@b\.example "
                     r"refused, the message stays: no receipt" % mid)
        b.add_contact("dave@b.example", "alice@a.example")
        wait_for(lambda: b.sql_value("SELECT acked_at IS NOT NULL FROM received "
                                     "WHERE message_id = %s" % q(mid)) == "t",
                 timeout=40, what="b.example to give up the rejection")
        self.assertEqual(b.sql("SELECT status, reason, receipt IS NULL FROM received "
                               "WHERE message_id = %s" % q(mid)),
                         [["quarantined", "cannot decrypt", "t"]])
        quarantined = glob.glob(os.path.join(b.quarantine_dir, "*" + mid + "*"))
        self.assertTrue(quarantined, "nothing for %s in %s: %s" % (
            mid, b.quarantine_dir, os.listdir(b.quarantine_dir)))
        with open(b.pollerd_log) as f:
            lines = [l for l in f if mid in l]
        self.assertTrue([l for l in lines if "quarantin" in l],
                        "pollerd does not log the quarantine of %s" % mid)
        self.assertTrue([l for l in lines if "refuses the ack for its receipt (none found in "
                         "the body): given up" in l],
                        "pollerd does not log that the rejection was refused")
        # a few polls later: never delivered, still waiting at a.example,
        # and the rejection was not sent again
        self._wait_polls(2)
        self.assertEqual(len(b.maildir_messages("dave")), delivered_before)
        self.assertEqual(self.in_maildir(b, "dave", tag), [])
        self.assertEqual(a.sql("SELECT retrieved_at IS NULL, rejected_reason IS NULL, "
                               "body_deleted_at IS NULL FROM outbox o JOIN message m "
                               "ON m.id = o.message_id WHERE o.message_id = %s" % q(mid)),
                         [["t", "t", "t"]])
        with open(a.error_log) as f:
            refusals = [l for l in f if "id=%s: ack of" % mid in l]
        self.assertEqual(len(refusals), 1, refusals)

    def test_compressed_body_rejected(self):
        """The stored body replaced by gpg's default sign+encrypt of the same
        message (a.example's key, to b.example's, compressed inside), with a
        receipt of its own as gpg seals one (--set-filename, its hash in the
        rows: docs/PROTOCOL.md "Receipts"): b.example refuses it as
        compressed, quarantines it, and a.example's outbox shows the reason
        (the rejection carries the receipt)."""
        a, b = self.a, self.b
        # long enough that compression shrinks it well below its size: the
        # only compression pollerd can see (docs/PROTOCOL.md)
        minutes = "".join("Item %d: the committee agreed to meet again.\r\n" % i
                          for i in range(200))
        msg, tag = make_message("frank@a.example", "carol@b.example", "compressed",
                                body=minutes)
        rows = self.send_stored(a, "frank@a.example", "carol@b.example", msg)
        mid = rows[0][0]
        gpg = ["gpg", "--homedir", a.gnupg_home, "--batch", "--quiet", "--yes"]
        subprocess.run(gpg + ["--import", b.key.public], check=True, capture_output=True,
                       timeout=30)
        receipt = b64url(os.urandom(32))
        sealed = subprocess.run(gpg + ["--trust-model", "always", "-u", a.fpr, "-r", b.fpr,
                                       "--set-filename", "stubmail-receipt." + receipt,
                                       "--sign", "--encrypt", "-o", "-"],
                                input=msg, check=True, capture_output=True,
                                timeout=30).stdout
        replace_body(a, mid, sealed)
        a.sql("UPDATE outbox SET receipt_hash = sha256(convert_to(%s, 'UTF8')) "
              "WHERE message_id = %s" % (q(receipt), q(mid)))

        a.expect_log(r"\[stubmail:warn\] .*id=%s: ack: carol@b\.example rejected the message "
                     r"at \S+: compressed$" % mid)
        b.add_contact("carol@b.example", "frank@a.example")
        reason = wait_for(lambda: a.sql_value("SELECT rejected_reason FROM outbox "
                                              "WHERE message_id = %s" % q(mid)),
                          timeout=40, what="a.example's outbox to show the rejection")
        self.assertEqual(reason, "compressed")
        status = b.sql("SELECT status, reason FROM received WHERE message_id = %s" % q(mid))
        self.assertEqual([tuple(r) for r in status], [("quarantined", "compressed")])
        with open(b.pollerd_log) as f:
            self.assertTrue([l for l in f if mid in l and "compressed" in l],
                            "pollerd does not log why it refused %s" % mid)
        self.assertEqual(self.in_maildir(b, "carol", tag), [])

    def test_replayed_login(self):
        a, b = self.a, self.b
        body = login_body(b.key, a.domain)
        r = login(a, body)
        self.assertEqual(r.status, 200, r)
        nonces = a.count("login_nonce")
        r = login(a, body)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["error"], "replayed_login", r)
        self.assertEqual(a.count("login_nonce"), nonces)

    def test_wrong_key_by_hand(self):
        """b.example's name, signed with another key (which is then sent
        along): refused, whatever the signature."""
        a, b = self.a, self.b
        other = DomainKey(b.path("x"), "b.example", b.path("x.asc"), b.outbox_url)
        r = login(a, login_body(other, a.domain))
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["error"], "wrong_key", r)

    def test_pinned_fingerprint_refuses_pollerd(self):
        """a.example's admin pins a fingerprint for b.example that is not
        b.example's key: b.example's pollerd cannot log in and gets nothing;
        unpinned, the mail arrives."""
        a, b = self.a, self.b
        msg, tag = make_message("alice@a.example", "erin@b.example", "pinned")
        self.send_stored(a, "alice@a.example", "erin@b.example", msg)
        other = DomainKey(a.path("x"), "b.example", a.path("x.asc"), b.outbox_url)
        a.add_peer(b, fpr=other.fpr, both=False)
        wrong_keys = len(self.logins(401))
        b.add_contact("erin@b.example", "alice@a.example")
        # a token b.example already holds stays good until it expires: a
        # pollerd started now has none and must log in
        b.kill_pollerd(signal.SIGTERM)
        b.start_pollerd()
        wait_for(lambda: len(self.logins(401)) > wrong_keys, timeout=30,
                 what="b.example's login refused at a.example")
        with open(a.error_log) as f:
            self.assertTrue([l for l in f if "401 wrong_key" in l and "domain=b.example" in l])
        self._wait_polls_of_b_failing(2)
        self.assertEqual(self.in_maildir(b, "erin", tag), [])
        a.sql("DELETE FROM peer WHERE domain = 'b.example'")
        b.poll_now()
        self.wait_maildir(b, "erin", tag, timeout=60)

    def test_push_to_domain_without_record(self):
        a, c = self.a, self.c
        before = a.count("outbox")
        msg, tag = make_message("alice@a.example", "carol@c.example", "pushed")
        self.send_ok(a, "alice@a.example", "carol@c.example", msg)
        got = self.wait_maildir(c, "carol", tag)
        self.assertEqual(split_message(got[0][1])[1], split_message(msg)[1])
        self.assertEqual(a.count("outbox"), before)
        self.assertEqual(a.sql_value("SELECT status FROM dns_cache WHERE domain = 'c.example'"),
                         "none")

    def test_dns_down_tempfails_at_rcpt(self):
        a = self.a
        before = a.table_counts()
        # down first: a cached answer would spare the milter the lookup,
        # and the pollers keep refilling the cache while DNS is up
        self.sb.dns_down()
        self.sb.forget_dns()
        try:
            msg, tag = make_message("alice@a.example", "frank@b.example", "no dns")
            r = a.send("alice@a.example", "frank@b.example", msg)
        finally:
            self.sb.dns_up()
        self.assertFalse(r.ok, "swaks should not succeed:\n%s" % r)
        rcpt = [l for l in r.replies() if "4.4.3" in l]
        self.assertTrue(rcpt and rcpt[0].lstrip(" <-~*").startswith("451"),
                        "expected 451 4.4.3 at RCPT:\n%s" % r)
        self.assertFalse(r.saw(r"250 2\.0\.0"), "accepted:\n%s" % r)
        self.assertEqual(a.table_counts(), before)
        self.assertEqual(a.postqueue(), [])
        self.assertEqual(self.in_maildir(self.b, "frank", tag), [])

    def test_forged_authentication_results_removed(self):
        """A sender cannot forge the pass: Authentication-Results naming
        b.example in the stored message are removed before delivery (those
        of other authserv-ids stay)."""
        a, b = self.a, self.b
        b.add_contact("carol@b.example", "mallory@a.example")
        forged = ["Authentication-Results: b.example; stubmail=pass "
                  "smtp.mailfrom=ceo@bank.example",
                  "Authentication-Results: mx.elsewhere.example; spf=pass"]
        msg, tag = make_message("mallory@a.example", "carol@b.example", "trust me",
                                extra_headers=forged)
        self.send_ok(a, "mallory@a.example", "carol@b.example", msg)
        got = self.wait_maildir(b, "carol", tag, timeout=40)[0][1]
        results = [h for h in header_lines(split_message(got)[0])
                   if h.startswith("Authentication-Results:")]
        self.assertEqual(len(results), 2, results)
        self.assertRegex(results[0], r"^Authentication-Results: b\.example; stubmail=pass\s+"
                         r"smtp\.mailfrom=mallory@a\.example\s")
        self.assertEqual(results[1], forged[1])
        self.assertNotIn(b"ceo@bank.example", got)

    def test_refused_recipient_rejected_to_the_sender(self):
        """b.example's MTA refuses one recipient permanently (no such user):
        that recipient's copy is rejected back to a.example with the MTA's
        reason, the other recipient of the same message gets it once."""
        a, b = self.a, self.b
        for user in ("dave@b.example", "ghost@b.example"):
            b.add_contact(user, "erin@a.example")
        delivered_before = len(b.maildir_messages("dave"))
        msg, tag = make_message("erin@a.example", "dave@b.example", "two of us")
        self.send_ok(a, "erin@a.example", ["dave@b.example", "ghost@b.example"], msg)
        mid = a.sql_value("SELECT o.message_id FROM outbox o JOIN message m ON m.id = "
                          "o.message_id WHERE m.sender = 'erin@a.example' "
                          "AND o.recipient = 'ghost@b.example'")
        a.expect_log(r"\[stubmail:warn\] .*id=%s: ack: ghost@b\.example rejected the message"
                     % mid)
        reason = wait_for(lambda: a.sql_value("SELECT rejected_reason FROM outbox WHERE "
                                              "message_id = %s AND recipient = "
                                              "'ghost@b.example'" % q(mid)),
                          timeout=40, what="a.example's outbox to show ghost's refusal")
        self.assertRegex(reason, r"^refused by b\.example: 5\d\d ")
        self.wait_maildir(b, "dave", tag, timeout=40)
        self.assertFalse(a.sql_value("SELECT rejected_reason FROM outbox WHERE message_id = "
                                     "%s AND recipient = 'dave@b.example'" % q(mid)),
                         "dave's copy was delivered, not rejected")
        self._wait_polls(2)
        self.assertEqual(len(self.in_maildir(b, "dave", tag)), 1, "dave got it exactly once")
        self.assertEqual(len(b.maildir_messages("dave")), delivered_before + 1)
        status = b.sql("SELECT recipient, status FROM received WHERE message_id = %s "
                       "ORDER BY recipient" % q(mid))
        self.assertEqual([tuple(r) for r in status],
                         [("dave@b.example", "delivered"), ("ghost@b.example", "quarantined")])

    def _wait_polls_of_b_failing(self, n):
        """b.example's pollerd tries to log in n more times (refused)."""
        start = len(self.logins(401))
        wait_for(lambda: len(self.logins(401)) >= start + n, timeout=60,
                 what="%d more refused logins of b.example" % n)

    def _wait_polls(self, n):
        start = len(self.access_lines(self.a, r"(POST|GET) /stubmail/v1/poll\S* "))
        wait_for(lambda: len(self.access_lines(self.a, r"(POST|GET) /stubmail/v1/poll\S* ")) >= start + n,
                 timeout=30, what="%d more polls from b.example" % n)


if __name__ == "__main__":
    import unittest
    unittest.main()
