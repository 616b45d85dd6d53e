"""Database failover at the sender: a.example's PostgreSQL has a
synchronous streaming-replication standby (pg_basebackup,
synchronous_standby_names), and every program's conninfo names both
servers with target_session_attrs=read-write. While local users submit
mail without pause, the primary is killed with SIGKILL and, a moment later,
the standby is promoted (pg_ctl promote): the milter, Apache (mod_dbd and
the UDP poll responder's own connection, which LISTENs for the poll cache)
and pollerd find the new primary by themselves, and every message that got a
250 reaches its recipient once. The test prints how long mail was refused
(tempfailed) around the switch."""

import threading
import time

from support import (SandboxTest, make_message, message_ids_in_maildirs, submit,
                     wait_for)

SENDERS = ("alice", "carol")
DETECT = 1.0            # seconds between the crash and the promotion (a failover
                        # manager's detection time)
LOAD_BEFORE = 3.0       # seconds of load before the crash
LOAD_AFTER = 6.0        # seconds of load after the promotion


class FailoverTest(SandboxTest):
    DOMAINS = ("a.example", "b.example")
    ISP_OPTIONS = {"a.example": {"standby": True}}
    UDP_POLL = True     # the UDP responder's own connection (LISTEN) fails over too

    @classmethod
    def setUpWorld(cls):
        for s in SENDERS:
            cls.b.add_contact("bob@b.example", "%s@a.example" % s)
        cls.a.add_contact("alice@a.example", "bob@b.example")

    def load(self, stop, results):
        """Submit to a.example until stop is set; results gets (time the
        answer came, reply code, Message-ID) of each submission."""
        def one(sender):
            i = 0
            while not stop.is_set():
                msg, tag = make_message(sender, "bob@b.example", "failover %d" % i)
                code = submit(self.a, sender, "bob@b.example", msg, timeout=30)
                results.append((time.monotonic(), code, "%s@a.example" % tag))
                i += 1
                # a client's pause before the next (a refused one: its retry)
                time.sleep(0.01 if code == 250 else 0.05)
        threads = [threading.Thread(target=one, args=("%s@a.example" % s,))
                   for s in SENDERS]
        for t in threads:
            t.start()
        return threads

    def test_primary_killed_standby_promoted_nothing_lost(self):
        a, b = self.a, self.b
        # the crash: Apache's requests fail until the new primary answers
        a.expect_log(r"\[(dbd|stubmail):(warn|error)\]")
        self.assertEqual(a.sync_state(), "sync",
                         "the standby is synchronous")
        stop, results = threading.Event(), []
        threads = self.load(stop, results)
        time.sleep(LOAD_BEFORE)
        t_kill = time.monotonic()
        a.kill_db()
        time.sleep(DETECT)
        a.promote_standby()
        t_promoted = time.monotonic()
        time.sleep(LOAD_AFTER)
        stop.set()
        for t in threads:
            t.join()

        accepted = [mid for _, code, mid in results if code == 250]
        refused = [(t, code) for t, code, _ in results if code != 250]
        self.assertTrue(all(400 <= code < 500 for _, code in refused),
                        "refusals are temporary (4xx), none permanent or a broken "
                        "connection: %s" % sorted({c for _, c in refused}))
        after = [t for t, code, _ in results if code == 250 and t > t_promoted]
        self.assertGreater(len(after), 0, "mail accepted again after the promotion")
        first_ok = min(after)
        last_refused = max((t for t, _ in refused), default=None)
        print("# failover: %d accepted, %d refused (tempfail); killed at 0.0 s, promoted "
              "at %.1f s, first 250 after it at %.1f s, last refusal at %s; refused for "
              "%.1f s" % (len(accepted), len(refused), t_promoted - t_kill,
                          first_ok - t_kill,
                          "%.1f s" % (last_refused - t_kill) if last_refused else "-",
                          (max(last_refused, first_ok) if last_refused else first_ok)
                          - min([t for t, _ in refused] or [first_ok])))

        # every 250 reaches bob once: pulled through a.example's Apache,
        # whose pooled connections died with the primary
        def delivered():
            seen = message_ids_in_maildirs(b)
            return all(m in seen for m in accepted)
        wait_for(delivered, timeout=120, interval=0.5,
                 what="all %d accepted messages in bob's Maildir" % len(accepted))
        seen = message_ids_in_maildirs(b)
        self.assertEqual({m: n for m, n in seen.items() if n > 1}, {},
                         "no message delivered twice")
        wait_for(lambda: a.count("outbox", "retrieved_at IS NULL") == 0, timeout=60,
                 what="a.example's outbox drained on the new primary")
        refused_delivered = len([m for _, code, m in results if code != 250 and m in seen])
        print("# failover: lost 0 of %d accepted; %d refused message(s) delivered all "
              "the same (stored, then the answer lost with the connection)"
              % (len(accepted), refused_delivered))

        # a.example's pollerd reconnected too: it pulls from b.example
        msg, tag = make_message("bob@b.example", "alice@a.example", "after the failover")
        self.send_ok(b, "bob@b.example", "alice@a.example", msg)
        self.wait_maildir(a, "alice", tag, timeout=60)


if __name__ == "__main__":
    import unittest
    unittest.main()
