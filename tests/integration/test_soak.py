"""The soak (issue 12): mail among 20 senders at a.example and 20
recipients at b.example, submitted by clients that retry every 4xx, while
at random moments pollerd is SIGKILLed and restarted, the milter is
SIGKILLed (at any moment, and right after its outbox commit, through
tests/faults/kill_at_statement.c), a.example's PostgreSQL and Apache
restart, and b.example's Postfix stops for 20 s. At the end, by
Message-ID: every accepted message delivered to each of its recipients
once (lost 0, delivered twice 0), a.example's outbox drained and no
message stored twice in it; the counts are printed. A second copy that
SMTP's hand-off window explains (pollerd killed after its MTA took the
message and before pollerd recorded that: at least once, which no client
of SMTP can avoid) is counted and printed, not failed; any other is a
failure.

Short by default (120 messages over about 50 s, each fault at least once);
with --slow (STUBMAIL_SLOW=1, `make check-slow`) 1,000 messages over about
8 minutes with some 35 faults. STUBMAIL_SOAK_SEED repeats a run's draw
(the seed is printed); STUBMAIL_SOAK_MESSAGES sets the count."""

import os
import random
import sys
import time

from support import SandboxTest, wait_for
from soak import Faults, Workload, delivered, smtp_window, trace

SENDERS = ["s%02d" % i for i in range(1, 21)]
RECIPIENTS = ["r%02d" % i for i in range(1, 21)]
SLOW = bool(os.environ.get("STUBMAIL_SLOW"))


def say(text):
    sys.stdout.write("# soak: %s\n" % text)
    sys.stdout.flush()


class SoakTest(SandboxTest):

    USERS = SENDERS + RECIPIENTS

    @classmethod
    def setUpWorld(cls):
        # every recipient has every sender in the address book: one statement
        cls.b.sql("INSERT INTO address_book (owner, contact, contact_domain, source) "
                  "SELECT r || '@b.example', s || '@a.example', 'a.example', 'admin' "
                  "FROM unnest(ARRAY['%s']) r, unnest(ARRAY['%s']) s"
                  % ("','".join(RECIPIENTS), "','".join(SENDERS)))
        cls.a.use_kill_after_commit()

    def tearDown(self):
        # whatever a failed run left stopped comes back for the log check
        self.a.disarm_kill_after_commit()
        for isp, name, start in ((self.a, "pg", self.a.start_db),
                                 (self.a, "httpd", self.a.start_httpd),
                                 (self.a, "milter", self.a.start_milter),
                                 (self.b, "postfix", self.b.start_postfix),
                                 (self.b, "pollerd", self.b.start_pollerd)):
            p = isp.procs.get(name)
            if p is None or not p.alive():
                if p is not None:
                    isp.procs.pop(name).stop(timeout=10)
                start()
        super().tearDown()

    def test_nothing_lost_or_doubled_under_faults(self):
        a, b = self.a, self.b
        seed = int(os.environ.get("STUBMAIL_SOAK_SEED") or random.randrange(1 << 32))
        count = int(os.environ.get("STUBMAIL_SOAK_MESSAGES") or (1000 if SLOW else 120))
        duration = count * (0.5 if SLOW else 0.4)
        scale = max(1, count // 200)
        plan = {"pollerd_kill": 2 * scale if SLOW else 1,
                "milter_kill": 2 * scale if SLOW else 1,
                "milter_kill_after_commit": scale if SLOW else 1,
                "pg_restart": scale if SLOW else 1,
                "httpd_restart": scale if SLOW else 1,
                "postfix_stop": max(1, scale // 2) if SLOW else 1}
        say("seed %d (STUBMAIL_SOAK_SEED=%d repeats it), %d messages over %.0f s, faults %s"
            % (seed, seed, count, duration,
               ", ".join("%s %d" % kv for kv in sorted(plan.items()))))
        # Apache's polls and fetches while its database restarts
        a.expect_log(r"\[(dbd|stubmail):(warn|error)\]")
        rng = random.Random(seed)
        work = Workload(rng, a, ["%s@a.example" % s for s in SENDERS],
                        ["%s@b.example" % r for r in RECIPIENTS], count, duration)
        faults = Faults(rng, a, b, plan, duration)
        t0 = time.monotonic()
        work.start()
        faults.run()
        work.join()
        submitted = time.monotonic() - t0

        pairs = work.pairs()
        want = {(r.split("@")[0], m) for r, m in pairs}

        def drained():
            b.poll_now()
            got = delivered(b, RECIPIENTS)
            return want <= set(got) and a.count("outbox", "retrieved_at IS NULL") == 0
        try:
            wait_for(drained, timeout=600 if SLOW else 120, interval=1,
                     what="every message delivered and the outbox drained")
        except AssertionError:
            pass                        # the tally below says what is missing
        # two more answered polls: what would come twice has come
        answered = r"(POST|GET) /stubmail/v1/poll\S* .*\" (200|304) "
        n = len(self.access_lines(a, answered))
        wait_for(lambda: len(self.access_lines(a, answered)) >= n + 2, timeout=30,
                 what="two more polls by b.example")

        got = delivered(b, RECIPIENTS)
        lost = sorted(want - set(got))
        twice = sorted(k for k in want if got[k] > 1)
        # what SMTP's hand-off window explains is counted, not failed
        window = [k for k in twice if smtp_window(b, k[0], k[1], faults.pollerd_kills)]
        twice = [k for k in twice if k not in window]
        strays = sorted(k for k in got if k not in want)
        left = a.count("outbox", "retrieved_at IS NULL")
        rows = a.count("message")
        stored_twice = rows - len(work.accepted)
        with open(a.milter_log, errors="replace") as f:
            recognised = sum(1 for l in f if ": retry of stored id=" in l)
        pushed = len(a.postqueue())
        say("%d messages accepted (%d pairs) in %.0f s, %d refused; %d client attempts "
            "answered 4xx or cut and sent again; the milter recognised %d retries"
            % (len(work.accepted), len(pairs), submitted, len(work.refused),
               work.attempts_failed, recognised))
        say("faults done: %s%s" % (", ".join("%s %d" % (k, faults.done[k])
                                             for k in Faults.KINDS),
                                   "; armed without a commit: %d" % sum(faults.missed.values())
                                   if faults.missed else ""))
        say("lost %d, delivered twice %d, delivered unasked %d, left in the outbox %d, "
            "stored twice %d (%d message rows), queued at a.example %d"
            % (len(lost), len(twice), len(strays), left, stored_twice, rows, pushed))
        say("delivered twice because pollerd was killed between its MTA's 250 and its "
            "record (SMTP's hand-off window, at least once): %d%s"
            % (len(window), "".join(" %s/%s" % k for k in window)))

        self.assertEqual(faults.errors, [], "faults that could not be done")
        self.assertEqual(work.refused, {}, "messages never accepted")
        for kind in Faults.KINDS:
            self.assertGreaterEqual(faults.done[kind], 1, "fault %s never done" % kind)
        self.assertEqual(lost, [], "lost (recipient, Message-ID)")
        self.assertEqual(twice, [], "delivered twice:\n" + "\n".join(
            l for _, m in twice for l in ["-- %s" % m] + trace(b, m))
            + "\n-- the faults (UTC):\n" + "\n".join(faults.log))
        self.assertEqual(strays, [], "delivered but never sent")
        self.assertEqual(left, 0, "outbox rows left unretrieved")
        self.assertEqual(stored_twice, 0, "messages stored twice in the outbox")
        self.assertEqual(pushed, 0, "messages queued (pushed) at a.example")


if __name__ == "__main__":
    import unittest
    unittest.main()
