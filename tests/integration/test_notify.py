"""Success and failure notices the sender asked for (RFC 3461 NOTIFY at
RCPT TO), end to end with the real servers: a.example's milter keeps
NOTIFY, ORCPT and ENVID with the outbox rows (sql/016), b.example's pollerd
pulls, delivers and acks, and a.example's stubmail-janitor hands alice an
RFC 3464 notice through a.example's Postfix.

Checked: NOTIFY=SUCCESS gives one multipart/report with Action delivered,
Status 2.0.0, the ORCPT as Original-Recipient, the ENVID as
Original-Envelope-Id and the retrieval time, and a second pass (and two
janitors at once) send nothing more; a recipient of the same message
without NOTIFY gets no success notice, nor does a message without NOTIFY;
a recipient b.example's MTA refuses (no such user) gives Action failed
with its reason and status code when the sender gave no NOTIFY or
NOTIFY=FAILURE, and nothing with NOTIFY=NEVER or NOTIFY=SUCCESS alone."""

import re
import smtplib

from support import SandboxTest, make_message, q, wait_for
from test_expiry import notices, report_fields

ORCPT_SENT = "rfc822;Bob+2BTag@b.example"       # xtext of Bob+Tag@b.example
ORCPT = "rfc822;Bob+Tag@b.example"


class NotifyTest(SandboxTest):
    DOMAINS = ("a.example", "b.example")

    @classmethod
    def setUpWorld(cls):
        for user in ("bob", "carol", "ghost"):
            cls.b.add_contact(user + "@b.example", "alice@a.example")

    def submit(self, subject, rcpts, envid=None):
        """alice's message to rcpts [(address, [RCPT options])] through
        a.example's submission port (smtplib: options per recipient);
        returns its outbox id once stored."""
        a = self.a
        msg, _ = make_message("alice@a.example", ", ".join(r for r, _ in rcpts), subject)
        before = {r[0] for r in a.sql("SELECT id FROM message")}
        with smtplib.SMTP(a.ip, a.submission_port, local_hostname="client.a.example",
                          source_address=(a.ip, 0), timeout=60) as s:
            s.ehlo()
            self.assertTrue(s.has_extn("dsn"), "a.example's Postfix does not offer DSN")
            code, reply = s.mail("alice@a.example", ["ENVID=" + envid] if envid else [])
            self.assertEqual(code, 250, reply)
            for addr, options in rcpts:
                code, reply = s.rcpt(addr, options)
                self.assertEqual(code, 250, reply)
            code, reply = s.data(msg)
            self.assertEqual(code, 250, reply)
        return wait_for(lambda: [r[0] for r in a.sql("SELECT id FROM message")
                                 if r[0] not in before] or None,
                        timeout=15, what="alice's message in a.example's outbox")[0]

    def acked(self, mid, count):
        """Wait until b.example's pollerd acked count recipients of mid."""
        wait_for(lambda: int(self.a.sql_value(
            "SELECT count(*) FROM outbox WHERE message_id = %s AND retrieved_at IS NOT NULL"
            % q(mid))) >= count or None, timeout=60, what="b.example's acks of %s" % mid)

    def janitor(self):
        rc, log = self.a.run_janitor()
        self.assertEqual(rc, 0, log)
        return log

    def one_notice(self, mid):
        (notice,) = wait_for(lambda: notices(self.a, "alice", mid), timeout=30,
                             what="the notice about %s in alice's Maildir" % mid)
        self.assertEqual(notice.get_content_type(), "multipart/report")
        self.assertEqual(notice.get_param("report-type"), "delivery-status")
        self.assertEqual(notice["Return-Path"], "<>", "not sent with MAIL FROM:<>")
        return notice

    def test_success_notice_once_and_only_where_asked(self):
        a = self.a
        before = len(a.maildir_messages("alice"))
        mid = self.submit("tell me", [("bob@b.example", ["NOTIFY=SUCCESS", "ORCPT=" + ORCPT_SENT]),
                                      ("carol@b.example", [])], envid="QQ+2B314")
        self.assertEqual(a.sql("SELECT recipient, coalesce(dsn_notify::text, ''), "
                               "coalesce(dsn_orcpt, '') FROM outbox WHERE message_id = %s "
                               "ORDER BY recipient" % q(mid)),
                         [["bob@b.example", "{success}", ORCPT],
                          ["carol@b.example", "", ""]])
        self.assertEqual(a.sql_value("SELECT dsn_envid FROM message WHERE id = %s" % q(mid)),
                         "QQ+314")
        self.acked(mid, 2)
        log = self.janitor()
        self.assertRegex(log, r"%s: success notice to alice@a\.example handed to the MTA "
                         r"\(retrieved by bob@b\.example\)" % mid)
        self.assertIn("pass done: 1 ack notices", log)
        notice = self.one_notice(mid)
        self.assertEqual(notice["Subject"], "Successful Mail Delivery Report")
        per_message, per_recipient = report_fields(notice)
        self.assertEqual(per_message["Original-Envelope-Id"], "QQ+314")
        self.assertEqual(per_message["Reporting-MTA"], "dns; mail.a.example")
        self.assertEqual(len(per_recipient), 1, "carol asked for nothing: %s" % per_recipient)
        (bob,) = per_recipient
        self.assertEqual(bob["Final-Recipient"], "rfc822; bob@b.example")
        self.assertEqual(bob["Original-Recipient"], ORCPT)
        self.assertEqual(bob["Action"], "delivered")
        self.assertEqual(bob["Status"], "2.0.0")
        retrieved = a.sql_value("SELECT to_char(retrieved_at AT TIME ZONE 'UTC', "
                                "'Dy, DD Mon YYYY HH24:MI:SS +0000') FROM outbox "
                                "WHERE message_id = %s AND recipient = 'bob@b.example'" % q(mid))
        self.assertEqual(bob["Last-Attempt-Date"], retrieved, "not the retrieval time")
        self.assertIsNotNone(a.sql_value("SELECT notified_at FROM outbox WHERE message_id = %s "
                                         "AND recipient = 'bob@b.example'" % q(mid)))

        # once: the next pass sends nothing
        log = self.janitor()
        self.assertIn("pass done: 0 ack notices", log)
        wait_for(lambda: not a.postqueue() or None, timeout=30, what="an empty mail queue")
        self.assertEqual(len(notices(a, "alice", mid)), 1)
        # and nothing else: Postfix, which diverted recipients left, sends
        # no notice of its own about them
        self.assertEqual(len(a.maildir_messages("alice")), before + 1,
                         [d[:300] for _, d in a.maildir_messages("alice")])

    def test_no_notify_no_success_notice(self):
        a = self.a
        mid = self.submit("quiet", [("bob@b.example", [])])
        self.acked(mid, 1)
        log = self.janitor()
        self.assertIn("pass done: 0 ack notices", log)
        self.assertNotIn(mid, log)
        wait_for(lambda: not a.postqueue() or None, timeout=30, what="an empty mail queue")
        self.assertEqual(notices(a, "alice", mid), [])

    def test_two_janitors_at_once_send_one_notice(self):
        a = self.a
        mids = [self.submit("race %d" % i, [("bob@b.example", ["NOTIFY=SUCCESS"])])
                for i in range(4)]
        for mid in mids:
            self.acked(mid, 1)
        first, second = a.start_janitor(), a.start_janitor()
        logs = [p.communicate(timeout=120)[0] for p in (first, second)]
        self.assertEqual([first.returncode, second.returncode], [0, 0], logs)
        handed = re.findall(r"([0-9a-f]{32}): success notice to .* handed to the MTA",
                            "\n".join(logs))
        self.assertEqual(sorted(handed), sorted(mids), logs)
        wait_for(lambda: all(notices(a, "alice", m) for m in mids) or None, timeout=60,
                 what="a notice for each message in alice's Maildir")
        wait_for(lambda: not a.postqueue() or None, timeout=30, what="an empty mail queue")
        self.assertEqual({m: len(notices(a, "alice", m)) for m in mids}, {m: 1 for m in mids})

    def test_rejection_failure_notice_unless_never(self):
        """ghost@b.example does not exist: b.example's MTA refuses it, its
        pollerd acks the rejection with the MTA's reason."""
        a = self.a
        asked = {"default": [], "failure": ["NOTIFY=FAILURE"], "never": ["NOTIFY=NEVER"],
                 "success": ["NOTIFY=SUCCESS"]}
        mids = {k: self.submit("ghost " + k, [("ghost@b.example", v)]) for k, v in asked.items()}
        for mid in mids.values():
            a.expect_log(r"\[stubmail:warn\] .*id=%s: ack: ghost@b\.example rejected the message"
                         % mid)
            self.acked(mid, 1)
        reason = a.sql_value("SELECT rejected_reason FROM outbox WHERE message_id = %s"
                             % q(mids["default"]))
        self.assertRegex(reason, r"^refused by b\.example: 550 5\.1\.1 ")
        log = self.janitor()
        for k in ("default", "failure"):
            self.assertRegex(log, r"%s: failure notice to alice@a\.example handed to the MTA "
                             r"\(rejected by ghost@b\.example\)" % mids[k])
            notice = self.one_notice(mids[k])
            self.assertEqual(notice["Subject"], "Undelivered Mail Returned to Sender")
            _, (ghost,) = report_fields(notice)
            self.assertEqual(ghost["Final-Recipient"], "rfc822; ghost@b.example")
            self.assertEqual(ghost["Action"], "failed")
            self.assertEqual(ghost["Status"], "5.1.1")
            self.assertEqual(ghost["Diagnostic-Code"], "X-Stubmail; " + reason)
            self.assertNotIn("Original-Recipient", ghost)
        for k in ("never", "success"):
            self.assertNotIn(mids[k], log, "NOTIFY=%s: a failure notice" % k.upper())
        self.assertIn("pass done: 2 ack notices", log)
        wait_for(lambda: not a.postqueue() or None, timeout=30, what="an empty mail queue")
        for k in ("never", "success"):
            self.assertEqual(notices(a, "alice", mids[k]), [])
