"""Two stubmail-milters (each behind its own submission listener of
a.example's Postfix) store into one outbox and one spool at once: every
message submitted concurrently through either is stored once (one message
row, one outbox row per recipient, one spool file for a large one), pulled
once by b.example, and the outbox and spool are empty afterwards."""

import os
import re
import threading

from support import (SandboxTest, make_message, message_ids_in_maildirs, submit,
                     wait_for)

SENDERS = ("alice", "carol", "dave", "erin")
RECIPIENTS = ("bob", "frank")
PER_THREAD = 15
BIG = 150 * 1024        # above the milter's inline_max (96k): a spool file


class TwoMiltersTest(SandboxTest):
    DOMAINS = ("a.example", "b.example")
    ISP_OPTIONS = {"a.example": {"milters": 2}}

    @classmethod
    def setUpWorld(cls):
        for r in RECIPIENTS:
            for s in SENDERS:
                cls.b.add_contact("%s@b.example" % r, "%s@a.example" % s)

    def test_concurrent_submissions_stored_once_pulled_once(self):
        a, b = self.a, self.b
        before = a.count("message")
        ids, codes, lock = [], [], threading.Lock()

        def submitter(n, port):
            sender = "%s@a.example" % SENDERS[n]
            for i in range(PER_THREAD):
                to = "%s@b.example" % RECIPIENTS[i % len(RECIPIENTS)]
                body = None
                if i % 5 == 0:
                    body = "".join("line %06d of a large message\r\n" % k
                                   for k in range(BIG // 30))
                msg, tag = make_message(sender, to, "two milters %d/%d" % (n, i), body)
                code = submit(a, sender, to, msg, port=port)
                with lock:
                    codes.append(code)
                    ids.append("%s@a.example" % tag)

        # two submitters per listener, all four at once
        threads = [threading.Thread(target=submitter,
                                    args=(n, a.submission_port if n % 2 else
                                          a.submission2_port))
                   for n in range(len(SENDERS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = PER_THREAD * len(SENDERS)
        self.assertEqual(codes, [250] * total, "every submission accepted")

        # each milter stored its share, and each message is one row
        for log in (a.milter_log, a.milter2_log):
            with open(log) as f:
                n = len(re.findall(r": diverted id=", f.read()))
            self.assertGreater(n, 0, "%s diverted some messages" % os.path.basename(log))
        self.assertEqual(a.count("message") - before, total, "one message row each")
        self.assertEqual(int(a.sql_value(
            "SELECT count(*) FROM (SELECT message_id, recipient FROM outbox "
            "GROUP BY 1, 2 HAVING count(*) > 1) d")), 0, "no outbox row twice")

        def pulled():
            seen = message_ids_in_maildirs(b)
            return (all(i in seen for i in ids)
                    and a.count("outbox", "retrieved_at IS NULL") == 0)
        wait_for(pulled, timeout=120, interval=0.5,
                 what="all %d messages at b.example and a.example's outbox drained" % total)
        seen = message_ids_in_maildirs(b)
        self.assertEqual({i: n for i, n in seen.items() if i in ids and n != 1}, {},
                         "each message delivered once")
        # the spool: every large body's file removed after its ack, no
        # temporary file left behind in tmp/
        def spool_files():
            return [os.path.join(d, f) for d, _, fs in os.walk(a.spool_dir) for f in fs]
        wait_for(lambda: not spool_files(), timeout=20, what="a.example's spool empty")


if __name__ == "__main__":
    import unittest
    unittest.main()
