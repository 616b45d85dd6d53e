"""Expiry of unretrieved mail (sql/012) and stubmail-janitor, on the
sender's side with the real servers.

a.example is the sender's ISP: PostgreSQL, Apache with the UDP poll
responder (which keeps the poll cache), Postfix and the milter, whose
expire_after is shortened to EXPIRE seconds and whose inline_max 0 puts
every body in a spool file. b.example runs no pollerd, only the outbox that
serves the key the milter seals to: the test is its poller, by hand.

Checked: an expired recipient leaves every poll at the instant it expires,
with no janitor run (the GET poll and its ETag although the poll cache
held a 304 for it, the POST poll, the UDP responder's answer, the fetch);
the janitor removes expired rows and bodies and hands alice an RFC 3464
failure notice naming only the recipient that never retrieved; a delay
warning, when configured, comes once; the janitor removes spool files no
live row names once they are older than the grace, and keeps the others;
two janitors at once remove each message once and send one notice each."""

import email
import email.policy
import json
import os
import re
import time

from support import (SandboxTest, make_message, curl, get_token, login, login_body, q, wait_for,
                     receipt_of)
from test_udppoll import Client

EXPIRE = 10             # seconds: the milter's expire_after here
HOUR = 3600


def notices(isp, user, mid):
    """The notices about outbox message mid in user's Maildir, parsed."""
    return [email.message_from_bytes(data, policy=email.policy.compat32)
            for _, data in isp.maildir_messages(user)
            if ("X-Stubmail-Outbox-Id: " + mid).encode() in data]


def report_fields(notice):
    """(per-message fields, [per-recipient fields]) of a notice's
    message/delivery-status part, as dicts."""
    parts = notice.get_payload()
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1, [p.get_content_type() for p in parts]
    blocks = [dict(b.items()) for b in status[0].get_payload()]
    return blocks[0], blocks[1:]


class ExpiryTest(SandboxTest):
    DOMAINS = ("a.example", "b.example")
    SERVICES = {"a.example": ("pg", "httpd", "postfix", "milter"),
                "b.example": ("pg", "httpd")}
    UDP_POLL = True
    HTTPD_EXTRA = (("StubmailMinPollInterval", "0"),
                   # the debug line of a 304 says whether the cache answered
                   ("LogLevel", "info ssl:warn stubmail:debug"))
    MILTER = ["expire_after %ds" % EXPIRE, "inline_max 0"]

    @classmethod
    def setUpWorld(cls):
        cls.a.restart_milter(cls.MILTER)
        cls.token = get_token(cls.a, cls.b)

    def setUp(self):
        super().setUp()
        a = self.a
        a.sql("DELETE FROM message")
        for d in (a.spool_dir, os.path.join(a.spool_dir, "tmp")):
            for name in os.listdir(d) if os.path.isdir(d) else ():
                if re.fullmatch(r"[0-9a-f]{32}", name):
                    os.unlink(os.path.join(d, name))

    # -- b.example's poller, by hand ---------------------------------------
    def req(self, method, path, body=None, headers=()):
        return curl(self.a.outbox_url + path, method,
                    data=json.dumps(body) if body is not None else None,
                    bearer=self.token, headers=list(headers))

    def subscribe(self):
        r = self.req("POST", "/v1/subscription",
                     {"reset": True, "add": [{"from": "alice@a.example", "to": "bob@b.example"},
                                             {"from": "alice@a.example",
                                              "to": "carol@b.example"}]})
        self.assertEqual(r.status, 200, r)
        return r.json()["version"]

    def listed(self, r):
        self.assertEqual(r.status, 200, r)
        return sorted((m["id"], m["to"]) for m in r.json()["messages"])

    def post_poll(self):
        return self.listed(self.req("POST", "/v1/poll", {"pairs": [
            {"from": "alice@a.example", "to": "bob@b.example"},
            {"from": "alice@a.example", "to": "carol@b.example"}]}))

    def stored(self, subject, to=("bob@b.example",)):
        msg, _ = make_message("alice@a.example", ", ".join(to), subject)
        return self.send_stored(self.a, "alice@a.example", list(to), msg)[0][0]

    def spool_path(self, mid):
        (name,) = self.a.sql("SELECT spool_name FROM message WHERE id = %s" % q(mid))[0]
        self.assertTrue(name, "the body is not in a spool file")
        return os.path.join(self.a.spool_dir, name)

    def expired(self, mid):
        return self.a.sql_value("SELECT expires_at <= now() FROM message WHERE id = %s"
                                % q(mid)) == "t"

    def janitor(self, extra=()):
        rc, log = self.a.run_janitor(extra)
        self.assertEqual(rc, 0, log)
        return log

    # -- the polls ----------------------------------------------------------
    def test_expired_recipient_vanishes_from_every_poll_at_once(self):
        a = self.a
        mid = self.stored("vanishes")
        self.assertEqual(a.sql_value(
            "SELECT round(extract(epoch FROM expires_at - created_at)) FROM message "
            "WHERE id = %s" % q(mid)), str(EXPIRE), "expire_after not applied")
        version = self.subscribe()
        r = self.req("GET", "/v1/poll?version=%d" % version)
        self.assertEqual(self.listed(r), [(mid, "bob@b.example")])
        etag = r.header("etag")
        self.assertEqual(self.post_poll(), [(mid, "bob@b.example")])
        udp = Client(self, a, login(a, login_body(self.b.key, a.domain)).json())
        self.addCleanup(udp.close)
        self.assertEqual(udp.ask(etag), "idle")

        # conditional polls up to the instant it expires, so that the poll
        # cache and the responder hold the ETag then; the first poll sent
        # after it (by the database's clock) must list nothing
        offset = os.path.getsize(a.error_log)
        while True:
            before = self.expired(mid)
            r = self.req("GET", "/v1/poll?version=%d" % version,
                         headers=["If-None-Match: " + etag])
            answer = udp.ask(etag)
            if before:
                break
            self.assertIn(r.status, (200, 304), r)
            time.sleep(0.1)
        with open(a.error_log, errors="replace") as f:
            f.seek(offset)
            self.assertRegex(f.read(), r"poll: not modified, .*\(poll cache\)",
                             "no 304 came from the poll cache before the expiry")
        self.assertEqual(self.listed(r), [])
        self.assertNotEqual(r.header("etag"), etag)
        self.assertEqual(answer, "poll", "the UDP responder still says idle")
        self.assertEqual(self.post_poll(), [])
        r = self.req("GET", "/v1/message/" + mid)
        self.assertEqual(r.status, 404, r)
        # and nobody removed anything: the rows say it expired
        self.assertEqual(a.sql_value("SELECT count(*) FROM outbox WHERE message_id = %s"
                                     % q(mid)), "1")
        r = self.req("GET", "/v1/poll?version=%d" % version,
                     headers=["If-None-Match: " + etag])
        self.assertEqual(self.listed(r), [])

    # -- the janitor --------------------------------------------------------
    def test_janitor_bounces_expired_mail_and_removes_it(self):
        a = self.a
        mid = self.stored("bounced", to=("bob@b.example", "carol@b.example"))
        body = self.spool_path(mid)
        self.assertTrue(os.path.exists(body))
        r = self.req("POST", "/v1/message/%s/ack" % mid,
                     {"to": "carol@b.example", "receipt": receipt_of(self.b, a, mid)})
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.expired(mid) or None, timeout=EXPIRE + 20, interval=0.5,
                 what="the message to expire")

        log = self.janitor()
        self.assertRegex(log, r"%s: failure notice to alice@a\.example handed to the MTA "
                         r"\(not retrieved by bob@b\.example\)" % mid)
        self.assertRegex(log, r"%s: expired \(from alice@a\.example, 1 unretrieved\), removed"
                         % mid)
        for table, col in (("message", "id"), ("outbox", "message_id"),
                           ("pending_match", "message_id")):
            self.assertEqual(a.sql_value("SELECT count(*) FROM %s WHERE %s = %s"
                                         % (table, col, q(mid))), "0", table)
        self.assertFalse(os.path.exists(body), "the spool file survived")

        (notice,) = wait_for(lambda: notices(a, "alice", mid), timeout=30,
                             what="the failure notice in alice's Maildir")
        self.assertEqual(notice.get_content_type(), "multipart/report")
        self.assertEqual(notice.get_param("report-type"), "delivery-status")
        self.assertEqual(notice["Return-Path"], "<>", "not sent with MAIL FROM:<>")
        self.assertIn("MAILER-DAEMON@", notice["From"])
        self.assertEqual([p.get_content_type() for p in notice.get_payload()],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        per_message, per_recipient = report_fields(notice)
        self.assertEqual(per_message["Reporting-MTA"], "dns; mail.a.example")
        self.assertEqual(len(per_recipient), 1, per_recipient)
        self.assertEqual(per_recipient[0]["Final-Recipient"], "rfc822; bob@b.example")
        self.assertEqual(per_recipient[0]["Action"], "failed")
        self.assertEqual(per_recipient[0]["Status"], "5.4.7")
        self.assertIn("Diagnostic-Code", per_recipient[0])

        # once: the next pass finds nothing
        log = self.janitor()
        self.assertIn("0 expired (0 failure notices)", log)
        self.assertEqual(len(notices(a, "alice", mid)), 1)

    def test_expiry_honours_notify_and_sends_ack_notices_first(self):
        """sql/016: bob asked for no notices (NOTIFY=NEVER, as the milter
        stores it), carol for a success notice and her ISP acked, dave gave
        no NOTIFY. The pass sends carol's success notice first (the removal
        would take her row), then the failure naming dave alone."""
        a = self.a
        mid = self.stored("asked", to=("bob@b.example", "carol@b.example", "dave@b.example"))
        for rcpt, notify in (("bob@b.example", "{never}"), ("carol@b.example", "{success}")):
            a.sql("UPDATE outbox SET dsn_notify = %s WHERE message_id = %s AND recipient = %s"
                  % (q(notify), q(mid), q(rcpt)))
        r = self.req("POST", "/v1/message/%s/ack" % mid,
                     {"to": "carol@b.example", "receipt": receipt_of(self.b, a, mid)})
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.expired(mid) or None, timeout=EXPIRE + 20, interval=0.5,
                 what="the message to expire")
        log = self.janitor()
        success = re.search(r"%s: success notice to alice@a\.example handed to the MTA "
                            r"\(retrieved by carol@b\.example\)" % mid, log)
        failure = re.search(r"%s: failure notice to alice@a\.example handed to the MTA "
                            r"\(not retrieved by dave@b\.example\)" % mid, log)
        self.assertTrue(success and failure, log)
        self.assertLess(success.start(), failure.start(), "the removal came first")
        self.assertRegex(log, r"%s: expired \(from alice@a\.example, 2 unretrieved\), removed"
                         % mid)
        got = wait_for(lambda: len(notices(a, "alice", mid)) == 2 and notices(a, "alice", mid),
                       timeout=30, what="two notices in alice's Maildir")
        blocks = sorted((b["Final-Recipient"], b["Action"])
                        for n in got for b in report_fields(n)[1])
        self.assertEqual(blocks, [("rfc822; carol@b.example", "delivered"),
                                  ("rfc822; dave@b.example", "failed")])

    def test_delay_warning_comes_once(self):
        a = self.a
        a.restart_milter(["expire_after 1h", "inline_max 0"])
        self.addCleanup(a.restart_milter, self.MILTER)
        mid = self.stored("delayed")
        wait_for(lambda: a.sql_value("SELECT created_at <= now() - interval '2 s' FROM "
                                     "message WHERE id = %s" % q(mid)) == "t" or None,
                 timeout=10, interval=0.2, what="the message two seconds old")
        log = self.janitor()
        self.assertIn("0 delay warnings", log, "a warning without delay_warning")
        log = self.janitor(["delay_warning 1s"])
        self.assertRegex(log, r"%s: delay notice to alice@a\.example handed to the MTA" % mid)
        (notice,) = wait_for(lambda: notices(a, "alice", mid), timeout=30,
                             what="the delay warning in alice's Maildir")
        self.assertEqual(notice.get_content_type(), "multipart/report")
        self.assertEqual(notice["Return-Path"], "<>")
        _, per_recipient = report_fields(notice)
        self.assertEqual([(b["Final-Recipient"], b["Action"], b["Status"])
                          for b in per_recipient],
                         [("rfc822; bob@b.example", "delayed", "4.4.7")])
        self.assertIn("Will-Retry-Until", per_recipient[0])
        self.assertIn("1 delay warnings", log)
        # still waiting for bob, and warned once only
        self.assertEqual(a.sql_value("SELECT count(*) FROM outbox WHERE message_id = %s"
                                     % q(mid)), "1")
        log = self.janitor(["delay_warning 1s"])
        self.assertIn("0 delay warnings", log)
        self.assertEqual(len(notices(a, "alice", mid)), 1)

    def put_expired(self, n):
        """n expired messages from alice to bob straight into the outbox, each
        with a spool file, as the milter would have stored them long ago."""
        ids = [os.urandom(16).hex() for _ in range(n)]
        for mid in ids:
            with open(os.path.join(self.a.spool_dir, mid), "wb") as f:
                f.write(b"sealed")
        self.a.sql(";".join(
            "INSERT INTO message (id, sender, size, spool_name, created_at, expires_at)"
            " VALUES (%s, 'alice@a.example', 6, %s, now() - interval '2 d',"
            " now() - interval '1 d');"
            "INSERT INTO outbox (message_id, recipient, recipient_domain)"
            " VALUES (%s, 'bob@b.example', 'b.example')" % (q(m), q(m), q(m)) for m in ids))
        return ids

    def test_expired_mail_everyone_retrieved_goes_without_a_notice(self):
        # acked by bob long ago: the last ack removed the body's file
        mid = os.urandom(16).hex()
        self.a.sql("INSERT INTO message (id, sender, size, spool_name, created_at, expires_at,"
                   " body_deleted_at) VALUES (%s, 'alice@a.example', 6, %s,"
                   " now() - interval '2 d', now() - interval '1 d', now() - interval '2 d');"
                   "INSERT INTO outbox (message_id, recipient, recipient_domain, retrieved_at)"
                   " VALUES (%s, 'bob@b.example', 'b.example', now() - interval '2 d')"
                   % (q(mid), q(mid), q(mid)))
        log = self.janitor()
        self.assertRegex(log, r"%s: expired \(from alice@a\.example, 0 unretrieved\), removed"
                         % mid)
        self.assertIn("1 expired (0 failure notices)", log)
        self.assertNotIn("error:", log)
        self.assertEqual(self.a.sql_value("SELECT count(*) FROM message WHERE id = %s"
                                          % q(mid)), "0")

    def spool_file(self, name, age, sub=""):
        path = os.path.join(self.a.spool_dir, sub, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x")
        os.utime(path, (time.time() - age, time.time() - age))
        return path

    def test_janitor_removes_old_orphans_and_keeps_named_files(self):
        a = self.a
        orphan = self.spool_file(os.urandom(16).hex(), 2 * HOUR)
        young = self.spool_file(os.urandom(16).hex(), 60)
        unfinished = self.spool_file(os.urandom(16).hex(), 2 * HOUR, "tmp")
        not_ours = self.spool_file("README", 2 * HOUR)
        live, acked = os.urandom(16).hex(), os.urandom(16).hex()
        live_file = self.spool_file(live, 2 * HOUR)
        acked_file = self.spool_file(acked, 2 * HOUR)
        a.sql("INSERT INTO message (id, sender, size, spool_name) VALUES"
              " (%s, 'alice@a.example', 1, %s);"
              "INSERT INTO message (id, sender, size, spool_name, body_deleted_at) VALUES"
              " (%s, 'alice@a.example', 1, %s, now())" % (q(live), q(live), q(acked), q(acked)))
        log = self.janitor()
        self.assertFalse(os.path.exists(orphan), log)
        self.assertFalse(os.path.exists(unfinished), log)
        self.assertFalse(os.path.exists(acked_file), log)
        self.assertTrue(os.path.exists(live_file), "a file its row names was removed")
        self.assertTrue(os.path.exists(young), "a file younger than the grace was removed")
        self.assertTrue(os.path.exists(not_ours), "a file of another name was removed")
        self.assertRegex(log, r"removed the spool file .*%s \(no message names it\)"
                         % os.path.basename(orphan))
        self.assertRegex(log, r"removed the spool file .*%s \(every recipient acked it"
                         % acked)
        self.assertIn("3 spool files removed", log)
        os.unlink(not_ours)
        # a shorter grace takes the young one too, never the live one
        log = self.janitor(["orphan_grace 10s"])
        self.assertFalse(os.path.exists(young), log)
        self.assertTrue(os.path.exists(live_file))

    def test_two_janitors_at_once_do_each_thing_once(self):
        a = self.a
        ids = self.put_expired(24)
        orphans = [os.path.basename(self.spool_file(os.urandom(16).hex(), 2 * HOUR))
                   for _ in range(10)]
        first, second = a.start_janitor(), a.start_janitor()
        logs = [p.communicate(timeout=120)[0] for p in (first, second)]
        self.assertEqual([first.returncode, second.returncode], [0, 0], logs)
        both = "\n".join(logs)
        expired = re.findall(r"([0-9a-f]{32}): expired \(", both)
        self.assertEqual(sorted(expired), sorted(ids), both)
        handed = re.findall(r"([0-9a-f]{32}): failure notice to .* handed to the MTA", both)
        self.assertEqual(sorted(handed), sorted(ids), both)
        removed = re.findall(r"([0-9a-f]{32}): removed the spool file", both)
        self.assertEqual(sorted(removed), sorted(orphans), both)
        self.assertEqual(a.sql_value("SELECT count(*) FROM message"), "0")
        self.assertEqual(sorted(f for f in os.listdir(a.spool_dir)
                                if re.fullmatch(r"[0-9a-f]{32}", f)), [])
        wait_for(lambda: all(notices(a, "alice", m) for m in ids) or None, timeout=60,
                 what="a notice for each message in alice's Maildir")
        wait_for(lambda: not a.postqueue() or None, timeout=30, what="an empty mail queue")
        self.assertEqual({m: len(notices(a, "alice", m)) for m in ids},
                         {m: 1 for m in ids})
