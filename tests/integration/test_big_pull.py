"""Issue 10: a message of any size goes from alice@a.example through the
milter, the outbox, the fetch and pollerd into bob's Maildir byte for byte,
and the peak memory of the milter, the Apache child serving the fetch and
pollerd does not grow with the size (less than 16 MiB from 1 MiB to the
biggest). While it is sent and stored, no file in the milter's spool
directory (tmp/ too) holds its plaintext: it is sealed as it arrives.
1 MiB and 100 MiB always; 2 GiB only with --slow (STUBMAIL_SLOW=1):
docs/HACKING.md. Never timed."""

import os
import unittest

from bigmail import (MIB, Peaks, PlaintextWatch, body_digest, raise_size_limits, send_file,
                     wait_maildir_file, write_message)
from support import SandboxTest

GROWTH_MAX_KIB = 16 * 1024


class BigPullTest(SandboxTest):

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")
        top = (2048 if os.environ.get("STUBMAIL_SLOW") else 100) * MIB
        for isp in (cls.a, cls.b):
            raise_size_limits(isp, top)

    def pull(self, size, timeout):
        """Send a message of size octets, wait until it is in bob's Maildir
        and acked; the body must be the one sent. Returns the peaks (KiB)."""
        a, b = self.a, self.b
        path = os.path.join(self.sb.rundir, "big-%d" % size)
        tag = write_message(path, size, "alice@a.example", "bob@b.example")
        peaks = Peaks(a, b)
        watch = PlaintextWatch(a.spool_dir, tag)
        try:
            peaks.reset()
            watch.start()
            try:
                send_file(a, "alice@a.example", "bob@b.example", path, timeout=timeout)
            finally:
                plaintext = watch.stop()
            self.assertEqual(plaintext, set(), "the %d-octet message's plaintext in the "
                             "milter's spool directory" % size)
            self.assertTrue(watch.seen, "the watch saw no file in %s" % a.spool_dir)
            b.poll_now()
            got = wait_maildir_file(b, "bob", tag, timeout)
            self.assertEqual(len(got), 1, got)
            self.assertEqual(body_digest(got[0]), body_digest(path),
                             "the body of the %d-octet message changed on the way" % size)
            seen = peaks.read()
        finally:
            os.unlink(path)
        # delivered once, the copy in pollerd's spool gone
        self.assertEqual(len(wait_maildir_file(b, "bob", tag, 5)), 1)
        self.assertEqual([f for f in os.listdir(b.path("pollerd-spool"))
                          if f.endswith(".partial")], [])
        os.unlink(got[0])
        return seen

    def check_flat(self, small, big, what):
        for k in ("milter", "apache", "pollerd"):
            self.assertLess(big[k] - small[k], GROWTH_MAX_KIB,
                            "%s's peak RSS grew from %d KiB (1 MiB) to %d KiB (%s)"
                            % (k, small[k], big[k], what))

    def test_one_mib_and_hundred_mib_arrive_intact_in_flat_memory(self):
        small = self.pull(1 * MIB, 60)
        big = self.pull(100 * MIB, 120)
        print("# peak RSS KiB at 1 MiB %s, at 100 MiB %s" % (small, big), flush=True)
        self.check_flat(small, big, "100 MiB")

    @unittest.skipUnless(os.environ.get("STUBMAIL_SLOW"), "2 GiB: only with --slow")
    def test_two_gib_arrive_intact_in_flat_memory(self):
        small = self.pull(1 * MIB, 60)
        big = self.pull(2048 * MIB, 1800)
        print("# 2 GiB: peak RSS KiB at 1 MiB %s, at 2 GiB %s" % (small, big), flush=True)
        self.check_flat(small, big, "2 GiB")


if __name__ == "__main__":
    unittest.main()
