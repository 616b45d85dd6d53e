"""Issue 2, test 1: alice@a.example -> bob@b.example arrives in bob's Maildir
by pull; body byte-identical, headers intact plus the stubmail trace header.
bob's address book is learned the real way: bob writes to alice first.
b.example is found by its DNS record; nobody configures a peer."""

import base64
import os
import subprocess

from support import (SandboxTest, make_message, split_message, header_lines, wait_for, q)


class PullTest(SandboxTest):

    def test_learned_address_book_then_pull(self):
        a, b = self.a, self.b
        # bob writes to alice: b.example's milter learns alice into bob's
        # book (and, a.example being a pulling peer, keeps the mail in
        # b.example's outbox: alice has not got bob in her book).
        first, _ = make_message("bob@b.example", "alice@a.example", "hello alice")
        rows = self.send_stored(b, "bob@b.example", "alice@a.example", first)
        self.assertEqual([r[2] for r in rows], ["alice@a.example"])
        wait_for(lambda: b.sql(
            "SELECT source FROM address_book WHERE owner = 'bob@b.example' "
            "AND contact = 'alice@a.example'"), timeout=10,
            what="alice@a.example learned into bob's address book")

        # alice answers
        msg, tag = make_message("alice@a.example", "bob@b.example", "re: hello alice")
        rows = self.send_stored(a, "alice@a.example", "bob@b.example", msg)
        self.assertEqual(len(rows), 1, rows)
        mid, sender, rcpt = rows[0][:3]
        self.assertRegex(mid, r"^[0-9a-f]{32}$")
        self.assertEqual((sender, rcpt), ("alice@a.example", "bob@b.example"))

        got = self.wait_maildir(b, "bob", tag)
        self.assertEqual(len(got), 1)
        delivered = got[0][1]

        # body byte-identical; the original header block intact, below the
        # headers added on the way (Postfix's own and the trace header)
        sent_head, sent_body = split_message(msg)
        got_head, got_body = split_message(delivered)
        self.assertEqual(got_body, sent_body, "body changed on the way")
        self.assertTrue(got_head.endswith(sent_head),
                        "original headers not intact at the end of the header block:\n%s"
                        % got_head.decode("utf-8", "replace"))
        added = header_lines(got_head[:len(got_head) - len(sent_head)])
        trace = [h for h in added if h.startswith("Received:") and "stubmail-pollerd" in h]
        self.assertEqual(len(trace), 1, "one stubmail trace header expected in %s" % added)
        self.assertRegex(trace[0], r"(?s)^Received: from a\.example \(stubmail outbox\) "
                         r"by b\.example \(stubmail-pollerd\)\s+with HTTP id " + mid +
                         r" for <bob@b\.example>;\s+\S")

        # pulled, not pushed: a.example's Postfix never sent it to b.example
        with open(a.maillog) as f:
            pushed = [l for l in f if "relay=127.0.0.3" in l and "to=<bob@b.example>" in l]
        self.assertEqual(pushed, [], "a.example pushed mail to bob by SMTP")

        # acked: retrieved as a.example sees it, recorded by b.example,
        # body removed from the spool once its only recipient has it
        wait_for(lambda: a.sql_value("SELECT retrieved_at FROM outbox WHERE message_id = %s"
                                     % q(mid)), timeout=15, what="retrieved_at on a.example")
        wait_for(lambda: b.sql_value("SELECT acked_at FROM received WHERE message_id = %s "
                                     "AND recipient = 'bob@b.example'" % q(mid)),
                 timeout=15, what="acked_at in b.example's received table")
        # a small body is kept in its row (sql/010): the ack drops it there
        self.assertEqual(rows[0][5], "", "a small body went to a spool file")
        wait_for(lambda: a.sql_value("SELECT body IS NULL AND body_deleted_at IS NOT NULL "
                                     "FROM message WHERE id = %s" % q(mid)) == "t",
                 timeout=10, what="the body to leave a.example's message row")

        # exactly once, also after a few more poll cycles
        self.wait_polls(a, 2)
        self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1)

    def test_local_submission_pulled(self):
        """Mail handed to sendmail(1) on a.example (a script, webmail on the
        mail host) is outbound too: pickup's cleanup marks it ORIGINATING
        (the admin guide's master.cf), so the milter diverts it and bob
        pulls it, though 127.0.0.1 is not in a.example's trusted_networks."""
        a, b = self.a, self.b
        b.add_contact("bob@b.example", "script@a.example")
        wait_for(lambda: a.count("subscription", "domain = 'b.example' AND "
                                 "sender = 'script@a.example'"), timeout=30,
                 what="bob's pair for script@a.example subscribed at a.example")
        msg, tag = make_message("script@a.example", "bob@b.example", "from the command line")
        before = {r[0] for r in a.sql("SELECT id FROM message")}
        r = subprocess.run(["/usr/sbin/sendmail", "-C", a.postfix_etc, "-f",
                            "script@a.example", "bob@b.example"], input=msg,
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = wait_for(lambda: [x for x in self.outbox_rows(a) if x[0] not in before],
                        timeout=30, what="the sendmail(1) message in a.example's outbox")
        self.assertEqual([x[1:3] for x in rows], [["script@a.example", "bob@b.example"]])
        self.wait_maildir(b, "bob", tag)
        with open(a.maillog) as f:
            pushed = [l for l in f if "relay=127.0.0.3" in l and "to=<bob@b.example>" in l]
        self.assertEqual(pushed, [], "a.example pushed the sendmail(1) mail by SMTP")
        with open(a.milter_log) as f:
            self.assertNotIn("which is how Postfix presents mail submitted without SMTP",
                             f.read())

    def test_large_message_streams_through(self):
        """A 3 MB body with long base64 lines arrives byte-identical. (dave
        learns alice only after the stored size was compared with the
        stored body, which the pull removes.)"""
        a, b = self.a, self.b
        chunk = os.urandom(3 * 1024 * 1024)
        b64 = base64.encodebytes(chunk).replace(b"\n", b"\r\n").decode()
        msg, tag = make_message("alice@a.example", "dave@b.example", "big one", body=b64)
        rows = self.send_stored(a, "alice@a.example", "dave@b.example", msg)
        self.assertEqual(int(a.sql_value("SELECT size FROM message WHERE id = %s"
                                         % q(rows[0][0]))),
                         os.path.getsize(os.path.join(a.spool_dir, rows[0][5])))
        b.add_contact("dave@b.example", "alice@a.example")
        got = self.wait_maildir(b, "dave", tag, timeout=60)
        self.assertEqual(split_message(got[0][1])[1], split_message(msg)[1])


if __name__ == "__main__":
    import unittest
    unittest.main()
