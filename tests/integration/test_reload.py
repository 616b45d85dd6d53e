"""SIGHUP to stubmail-pollerd (issue 13): the configuration is read again
without dropping what is in flight. A SIGHUP that arrives while a big
message is being fetched waits for the cycle: the fetch runs to its end
(one GET of the body, no resume), the message is delivered once, and only
then does pollerd start again with the new file (here: a new metrics_file
path), under the same pid. A file that does not check is refused with its
error, and pollerd goes on with the old one."""

import os
import re
import signal
import time

from bigmail import MIB, raise_size_limits, send_file, wait_maildir_file, write_message
from support import SandboxTest, make_message, wait_for

SIZE = 40 * MIB


class PollerdReloadTest(SandboxTest):

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")
        for isp in (cls.a, cls.b):
            raise_size_limits(isp, SIZE + MIB)

    def pollerd_log(self):
        with open(self.b.pollerd_log) as f:
            return f.read()

    def set_pollerd_conf(self, extra):
        """b's pollerd.conf as the sandbox wrote it, plus extra lines."""
        self.b.pollerd_extra = list(extra)
        self.b._setup_pollerd()

    def test_sighup_waits_for_the_fetch_then_takes_the_new_file(self):
        a, b = self.a, self.b
        proc = b.procs["pollerd"]
        new_metrics = b.path("reloaded.prom")
        path = os.path.join(self.sb.rundir, "big-reload")
        tag = write_message(path, SIZE, "alice@a.example", "bob@b.example")
        try:
            send_file(a, "alice@a.example", "bob@b.example", path, timeout=300)
        finally:
            os.unlink(path)
        mid = a.sql_value("SELECT id FROM message WHERE sender = 'alice@a.example' "
                          "ORDER BY created_at DESC LIMIT 1")
        self.set_pollerd_conf(["metrics_file " + new_metrics])
        spool = b.path("pollerd-spool")
        b.poll_now()
        # the fetch has begun: its partial file is there
        wait_for(lambda: any(f.endswith(".partial") for f in os.listdir(spool)),
                 timeout=60, interval=0.01, what="pollerd fetching the big message")
        proc.signal(signal.SIGHUP)
        got = wait_maildir_file(b, "bob", tag, 120)
        self.assertEqual(len(got), 1)
        wait_for(lambda: os.path.exists(new_metrics), timeout=30,
                 what="the new metrics_file, written after a reload")
        log = self.pollerd_log()
        self.assertIn("SIGHUP: reloading %s once the cycle in progress is done" % b.pollerd_conf,
                      log)
        self.assertIn("reloading: starting again", log)
        # the fetch was not cut: one GET of the body, without Range
        fetches = self.access_lines(a, r"GET /stubmail/v1/message/%s " % mid)
        self.assertEqual(len(fetches), 1, fetches)
        # delivered and acked before the reload
        done = "a.example %s: from=<alice@a.example> to=<bob@b.example>: delivered" % mid
        self.assertIn(done, log)
        self.assertLess(log.index(done), log.index("reloading: starting again"))
        self.assertTrue(proc.alive(), "pollerd (the same process) should still run")
        wait_for(lambda: a.sql_value("SELECT retrieved_at FROM outbox WHERE message_id = '%s'"
                                     % mid), timeout=30, what="the ack")
        time.sleep(3)
        self.assertEqual(len(wait_maildir_file(b, "bob", tag, 5)), 1)

    def test_bad_file_is_refused_and_pollerd_goes_on(self):
        b = self.b
        proc = b.procs["pollerd"]
        self.set_pollerd_conf(["interval fast"])
        try:
            proc.signal(signal.SIGHUP)
            wait_for(lambda: re.search(r"SIGHUP: \S+ not reloaded, going on as before: .*interval",
                                       self.pollerd_log()),
                     timeout=30, what="the refusal in pollerd's log")
            self.assertTrue(proc.alive())
        finally:
            self.set_pollerd_conf([])
        # still pulling with the old configuration
        msg, tag = make_message("alice@a.example", "bob@b.example", "after a bad reload")
        self.send_stored(self.a, "alice@a.example", "bob@b.example", msg)
        b.poll_now()
        self.wait_maildir(b, "bob", tag)
