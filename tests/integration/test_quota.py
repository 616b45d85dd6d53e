"""Issue 10, quotas: a sender's outbox quota through a.example's real
Postfix, spoken to by a real SMTP client (Python's smtplib) on the
submission port. Each test gives its own sender an override in
sender_quota (sql/011), as an administrator would.

Checked: a client that announces SIZE= is refused at MAIL FROM with 552
5.2.2 naming the quota and the use, exactly when that size would take the
sender over (one octet less is accepted); without SIZE= the message is
refused at the end of DATA, also when it spilled into a spool file; a
refused message leaves no trace (no row, no spool file, nothing in
Postfix's queue); mail retrieved by its every recipient (b.example's
pollerd pulls and acks) stops counting at once, and the sender can send
again. Nobody at b.example has the senders in an address book until a test
says so: until then their mail waits in a.example's outbox."""

import os
import re
import smtplib
import subprocess

from support import SandboxTest, make_message, q, wait_for

QUOTA_BYTES = 102400


def big_body():
    """About 200 KB that compresses poorly: its sealed body is larger than
    the milter's inline_max (96k), so it is written to a spool file."""
    text = os.urandom(100000).hex()
    return "".join(text[i:i + 76] + "\r\n" for i in range(0, len(text), 76))


class QuotaTest(SandboxTest):
    DOMAINS = ("a.example", "b.example")

    # -- helpers ------------------------------------------------------------
    def set_quota(self, sender, max_messages="NULL", max_bytes="NULL"):
        self.a.sql("INSERT INTO sender_quota (address, max_messages, max_bytes) "
                   "VALUES (%s, %s, %s) ON CONFLICT (address) DO UPDATE SET "
                   "max_messages = EXCLUDED.max_messages, max_bytes = EXCLUDED.max_bytes"
                   % (q(sender), max_messages, max_bytes))

    def transaction(self, sender, to, data, size=None, quit_after_mail=False):
        """One SMTP transaction on a.example's submission port from its own
        address, SIZE= only when size is given (smtplib's sendmail would
        always send it). Returns (step, code, text) of the first reply that
        is not a success, or of DATA's end: step is "mail", "rcpt" or
        "data"."""
        a = self.a
        with smtplib.SMTP(a.ip, a.submission_port, local_hostname="client." + a.domain,
                          source_address=(a.ip, 0), timeout=60) as s:
            code, _ = s.ehlo()
            self.assertEqual(code, 250)
            self.assertTrue(s.has_extn("size"), "Postfix announces SIZE")
            code, text = s.mail(sender, ["SIZE=%d" % size] if size is not None else [])
            if code != 250 or quit_after_mail:
                return "mail", code, text.decode()
            code, text = s.rcpt(to)
            if code != 250:
                return "rcpt", code, text.decode()
            code, text = s.data(data)
            return "data", code, text.decode()

    def send_stored(self, sender, to, data):
        step, code, text = self.transaction(sender, to, data)
        self.assertEqual((step, code), ("data", 250), text)
        # the milter diverted it: discarded by Postfix, stored in the outbox
        self.assertGreater(self.a.count("message", "sender = %s" % q(sender)), 0)

    def spool_files(self):
        """Every file below a.example's spool directory (tmp/ too)."""
        out = set()
        for d, _, files in os.walk(self.a.spool_dir):
            out |= {os.path.relpath(os.path.join(d, f), self.a.spool_dir) for f in files}
        return out

    def use(self, sender):
        """(messages, bytes) of sender in sender_usage."""
        row = self.a.sql("SELECT messages, bytes FROM sender_usage WHERE sender = %s"
                         % q(sender))
        return (int(row[0][0]), int(row[0][1])) if row else (0, 0)

    def assertNoTrace(self, sender, rows_before, spool_before):
        a = self.a
        self.assertEqual(a.count("message", "sender = %s" % q(sender)), rows_before,
                         "the refused message has no row")
        self.assertEqual(self.spool_files(), spool_before, "no spool file is left")
        self.assertEqual([m for m in a.postqueue() if m.get("sender") == sender], [],
                         "nothing in a.example's Postfix queue")

    # -- tests --------------------------------------------------------------
    def test_size_over_quota_refused_at_mail_from(self):
        sender = "sam@a.example"
        self.set_quota(sender, max_bytes=QUOTA_BYTES)
        msg, _ = make_message(sender, "bob@b.example", "first")
        self.send_stored(sender, "bob@b.example", msg)
        messages, used = self.use(sender)
        self.assertEqual(messages, 1)
        spool_before = self.spool_files()

        # exactly what is left of the quota: MAIL FROM is accepted
        step, code, text = self.transaction(sender, "bob@b.example", b"",
                                            size=QUOTA_BYTES - used, quit_after_mail=True)
        self.assertEqual((step, code), ("mail", 250), text)
        # one octet more: refused before the body is sent
        step, code, text = self.transaction(sender, "bob@b.example", b"",
                                            size=QUOTA_BYTES - used + 1)
        self.assertEqual((step, code), ("mail", 552), text)
        self.assertRegex(text, r"^5\.2\.2 ")
        self.assertIn("%s has 1 message, " % sender, text)
        self.assertRegex(text, r"waiting to be retrieved; the quota is 1000 messages, "
                         r"100 KiB; this message is ")
        self.assertNoTrace(sender, 1, spool_before)
        with open(self.a.milter_log) as f:
            self.assertRegex(f.read(), r"from=<%s>: over quota at MAIL FROM \(SIZE=\): "
                             r"size=%d waiting=1 messages, %d bytes; quota=1000 messages, "
                             r"%d bytes; answered 552 5\.2\.2"
                             % (re.escape(sender), QUOTA_BYTES - used + 1, used, QUOTA_BYTES))

    def test_over_quota_without_size_refused_at_end_of_data(self):
        sender = "nell@a.example"
        self.set_quota(sender, max_messages=1)
        msg, _ = make_message(sender, "bob@b.example", "first")
        self.send_stored(sender, "bob@b.example", msg)
        spool_before = self.spool_files()

        msg, _ = make_message(sender, "bob@b.example", "too many", body=big_body())
        step, code, text = self.transaction(sender, "bob@b.example", msg)
        self.assertEqual((step, code), ("data", 552), text)
        self.assertRegex(text, r"^5\.2\.2 ")
        m = re.search(r"%s has 1 message, [0-9.]+ (bytes|KiB) waiting to be retrieved; "
                      r"the quota is 1 message, 100 MiB; this message is ([0-9.]+) KiB"
                      % re.escape(sender), text)
        self.assertTrue(m, text)
        # sealed, it was larger than inline_max: it had a spool file to leave
        self.assertGreater(float(m.group(2)), 96, text)
        self.assertNoTrace(sender, 1, spool_before)
        self.assertEqual(self.use(sender)[0], 1)

    def test_retrieved_mail_stops_counting(self):
        a, b = self.a, self.b
        sender = "paula@a.example"
        self.set_quota(sender, max_messages=1)
        msg, tag = make_message(sender, "carol@b.example", "waits for carol")
        self.send_stored(sender, "carol@b.example", msg)
        mid = a.sql_value("SELECT id FROM message WHERE sender = %s" % q(sender))
        msg2, _ = make_message(sender, "carol@b.example", "one too many")
        step, code, text = self.transaction(sender, "carol@b.example", msg2)
        self.assertEqual((step, code), ("data", 552), text)

        # carol's pollerd subscribes to paula, pulls and acks
        b.add_contact("carol@b.example", sender)
        b.poll_now()
        self.wait_maildir(b, "carol", tag)
        wait_for(lambda: a.sql_value("SELECT retrieved_at FROM outbox WHERE message_id = %s"
                                     % q(mid)), timeout=30, what="carol's ack")
        # at once: no janitor, no wait for the body to be deleted
        self.assertEqual(self.use(sender), (0, 0))
        step, code, text = self.transaction(sender, "carol@b.example", msg2)
        self.assertEqual((step, code), ("data", 250), text)
        self.assertEqual(self.use(sender)[0], 1)


    def test_last_two_acks_in_two_sessions_count_the_message_out_once(self):
        """sql/018: two sessions ack a message's last two recipients at once
        (two receiving ISPs); the one that waits for the other's message
        lock sees its commit, so the message leaves the count, once."""
        a = self.a
        sender = "frank@a.example"
        mid = "f" * 32
        a.sql("SELECT outbox_store(%s, %s, 500, %s, 'openpgp', ARRAY['bob@b.example', "
              "'carol@c.example'], ARRAY['b.example', 'c.example'], ARRAY[]::text[], "
              "ARRAY[]::text[], NULL)" % (q(mid), q(sender), q(mid)))
        use = lambda: a.sql_value("SELECT messages || '/' || bytes FROM sender_use "
                                  "WHERE sender = %s" % q(sender))
        self.assertEqual(use(), "1/500")

        def session():
            return subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                                     a.conninfo], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def run(p, sql, marker):
            p.stdin.write(sql + "\n\\echo " + marker + "\n")
            p.stdin.flush()

        def wait_marker(p, marker):
            for line in p.stdout:
                if line.strip() == marker:
                    return
                self.fail("psql: " + line)

        one, two = session(), session()
        try:
            run(one, "BEGIN; UPDATE outbox SET retrieved_at = now() WHERE message_id = %s "
                     "AND recipient = 'bob@b.example';" % q(mid), "one-acked")
            wait_marker(one, "one-acked")
            # two acks carol while one holds the message lock: it must wait
            run(two, "BEGIN; UPDATE outbox SET retrieved_at = now() WHERE message_id = %s "
                     "AND recipient = 'carol@c.example'; COMMIT;" % q(mid), "two-done")
            wait_for(lambda: a.sql_value("SELECT count(*) FROM pg_stat_activity WHERE "
                                         "wait_event_type = 'Lock'") == "1", timeout=10,
                     what="the second ack waiting for the message's lock")
            self.assertEqual(use(), "1/500", "counted out before anyone committed")
            run(one, "COMMIT;", "one-done")
            wait_marker(one, "one-done")
            wait_marker(two, "two-done")
        finally:
            for p in (one, two):
                p.stdin.close()
                p.wait(timeout=10)
        self.assertEqual(use(), "0/0", "the message still counted (or counted out twice)")
        self.assertEqual(a.sql_value("SELECT counted FROM message WHERE id = %s" % q(mid)), "f")


if __name__ == "__main__":
    import unittest
    unittest.main()
