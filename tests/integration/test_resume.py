"""Issue 10: a fetch cut halfway resumes with Range from where it stopped
and the message is delivered once and intact: after the connection drops
mid-body (a TCP proxy on loopback cuts it), and after pollerd is killed
with SIGKILL mid-body and started again (the partial file survives under
a name made of the domain and the id). a.example's access log shows the
Range request answered 206. And after a fetch that stalls (no byte for
pollerd's timeout) the same.

The outbox answers Range and If-Range as docs/PROTOCOL.md says (206 with
the Content-Range of the rest, 200 on another validator, 416 past the end).

And a partial file that does not belong to the body listed starts over
cleanly, the message again delivered once and intact: one that names
another answer (its If-Range validator does not match: the outbox answers
200 with the whole body), one that names a body of another size (not
resumed at all), and one whose bytes are not the body's (the resumed body
does not verify: it is fetched whole before it is judged, never
quarantined)."""

import os
import re
import signal

from bigmail import (MIB, CutProxy, body_digest, maildir_files, raise_size_limits,
                     send_file, wait_maildir_file, write_message)
from sandbox import wait_for
from support import SandboxTest, curl, get_token

PROXY = 450                     # port offset of the proxy, on a.example's address
SIZE = 24 * MIB


class ResumeTest(SandboxTest):

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")
        for isp in (cls.a, cls.b):
            raise_size_limits(isp, SIZE)
        # b.example reaches a.example's outbox through the proxy
        cls.proxy_url = "https://%s:%d/stubmail" % (cls.a.ip, cls.a.port(PROXY))
        cls.b.add_peer(cls.a, both=False, outbox_url=cls.proxy_url)

    def setUp(self):
        super().setUp()
        self.proxy = None

    def tearDown(self):
        if self.proxy:
            self.proxy.stop()
        if "pollerd" not in self.b.procs:       # a test failed with it down
            self.b.start_pollerd()
        super().tearDown()

    def start_proxy(self, mode, after=SIZE // 2):
        a = self.a
        self.proxy = CutProxy(a.ip, a.port(PROXY), (a.ip, a.https_port), after, mode)

    def stored(self, path):
        before = {r[0] for r in self.a.sql("SELECT id FROM message")}
        send_file(self.a, "alice@a.example", "bob@b.example", path)
        rows = wait_for(lambda: [r for r in self.a.sql("SELECT id, size FROM message")
                                 if r[0] not in before], timeout=60, what="the stored message")
        return rows[0][0], int(rows[0][1])

    def fetches(self, mid):
        """(status, Range) of each fetch of mid in a.example's access log."""
        out = []
        for l in self.access_lines(self.a, r"GET /stubmail/v1/message/%s " % mid):
            m = re.search(r'" (\d{3}) \S+ "([^"]*)"$', l.rstrip("\n"))
            out.append((int(m.group(1)), m.group(2)))
        return out

    def check_delivered(self, mid, path, tag):
        """The message is in bob's Maildir once, intact, acked, nothing
        quarantined and no partial file left. Returns its fetches."""
        b = self.b
        got = wait_maildir_file(b, "bob", tag, 60)
        self.assertEqual(body_digest(got[0]), body_digest(path), "body changed")
        wait_for(lambda: self.a.sql_value("SELECT retrieved_at FROM outbox WHERE "
                                          "message_id = '%s'" % mid), timeout=20,
                 what="the ack")
        b.poll_now()
        self.assertEqual(len(maildir_files(b, "bob", tag)), 1)
        self.assertEqual([f for f in os.listdir(b.path("pollerd-spool"))
                          if f.endswith(".partial")], [])
        self.assertEqual([f for f in os.listdir(b.quarantine_dir) if mid in f], [])
        os.unlink(got[0])
        return self.fetches(mid)

    def check_resumed(self, mid, size, path, tag):
        fetches = self.check_delivered(mid, path, tag)
        resumed = [(s, r) for s, r in fetches if r.startswith("bytes=")]
        self.assertTrue(resumed, "no Range request in %s" % fetches)
        self.assertEqual(resumed[-1][0], 206, fetches)
        start = int(re.match(r"bytes=(\d+)-$", resumed[-1][1]).group(1))
        self.assertTrue(0 < start < size, "resumed at %d of %d" % (start, size))

    def test_connection_cut_mid_body_resumes_with_range(self):
        path = os.path.join(self.sb.rundir, "cut")
        tag = write_message(path, SIZE, "alice@a.example", "bob@b.example")
        self.start_proxy("cut")
        mid, size = self.stored(path)
        self.b.poll_now()
        self.assertTrue(self.proxy.tripped.wait(60), "the fetch never got halfway")
        self.check_resumed(mid, size, path, tag)
        os.unlink(path)

    def test_pollerd_killed_mid_body_resumes_after_restart(self):
        b = self.b
        path = os.path.join(self.sb.rundir, "kill")
        tag = write_message(path, SIZE, "alice@a.example", "bob@b.example")
        self.start_proxy("stall")
        mid, size = self.stored(path)
        b.poll_now()
        self.assertTrue(self.proxy.tripped.wait(60), "the fetch never got halfway")
        part = os.path.join(b.path("pollerd-spool"), "a.example_%s.partial" % mid)
        wait_for(lambda: os.path.exists(part) and os.path.getsize(part) >= SIZE // 4,
                 timeout=20, what="a quarter of the body in %s" % part)
        b.kill_pollerd(signal.SIGKILL)
        self.assertTrue(os.path.getsize(part) < size, "the whole body came before the kill")
        self.proxy.release()
        b.start_pollerd()
        b.poll_now()
        self.check_resumed(mid, size, path, tag)
        os.unlink(path)

    def test_stalled_fetch_times_out_and_resumes_with_range(self):
        # no byte for pollerd's timeout (20s in the sandbox): it gives up on
        # the transfer, keeps what came, and the next cycle asks for the rest
        path = os.path.join(self.sb.rundir, "stall")
        tag = write_message(path, SIZE, "alice@a.example", "bob@b.example")
        self.start_proxy("stall")
        mid, size = self.stored(path)
        self.b.poll_now()
        self.assertTrue(self.proxy.tripped.wait(60), "the fetch never got halfway")
        self.check_resumed(mid, size, path, tag)
        os.unlink(path)

    def test_outbox_answers_range_and_if_range_as_the_protocol_says(self):
        a, b = self.a, self.b
        self.start_proxy("cut", after=1 << 62)          # for pollerd, at the end
        path = os.path.join(self.sb.rundir, "ranges")
        tag = write_message(path, 256 << 10, "alice@a.example", "bob@b.example")
        b.kill_pollerd(signal.SIGTERM)
        mid, size = self.stored(path)
        url = "%s/v1/message/%s" % (a.outbox_url, mid)
        token = get_token(a, b)
        whole = curl(url, bearer=token)
        self.assertEqual(whole.status, 200, whole)
        self.assertEqual(len(whole.body), size)
        self.assertEqual(whole.header("accept-ranges"), "bytes")
        etag = whole.header("etag")
        self.assertEqual(etag, '"%s"' % mid)
        rest = curl(url, bearer=token, headers=["Range: bytes=1000-", "If-Range: " + etag])
        self.assertEqual(rest.status, 206, rest)
        self.assertEqual(rest.header("content-range"), "bytes 1000-%d/%d" % (size - 1, size))
        self.assertEqual(int(rest.header("content-length")), size - 1000)
        self.assertEqual(rest.body, whole.body[1000:])
        other = curl(url, bearer=token, headers=["Range: bytes=1000-", 'If-Range: "other"'])
        self.assertEqual(other.status, 200, other)
        self.assertEqual(other.body, whole.body)
        past = curl(url, bearer=token, headers=["Range: bytes=%d-" % size,
                                                "If-Range: " + etag])
        self.assertEqual(past.status, 416, past)    # Apache sends no Content-Range with it
        b.start_pollerd()
        b.poll_now()
        self.check_delivered(mid, path, tag)
        os.unlink(path)

    # -- a partial file left by a pollerd that is gone, not of this body ----------

    def with_stale_partial(self, name, size_of, etag_of):
        """Send a message while pollerd is down, leave a partial file for it
        (half its size of random bytes, marked as part of a body of
        size_of(size) octets with the ETag etag_of(mid)), start pollerd.
        Returns what check_delivered does."""
        b = self.b
        self.start_proxy("cut", after=1 << 62)          # passes everything
        path = os.path.join(self.sb.rundir, name)
        tag = write_message(path, SIZE, "alice@a.example", "bob@b.example")
        b.kill_pollerd(signal.SIGTERM)
        mid, size = self.stored(path)
        part = os.path.join(b.path("pollerd-spool"), "a.example_%s.partial" % mid)
        with open(part, "wb") as f:
            f.write(os.urandom(size // 2))
        os.setxattr(part, "user.stubmail.fetch",
                    ('%d "%s"' % (size_of(size), etag_of(mid))).encode())
        b.start_pollerd()
        b.poll_now()
        fetches = self.check_delivered(mid, path, tag)
        os.unlink(path)
        return fetches

    def test_partial_of_another_answer_starts_over_on_if_range(self):
        # the validator is not this message's: the outbox sends it all (200)
        fetches = self.with_stale_partial(
            "other-etag", lambda size: size, lambda mid: "not-" + mid)
        self.assertTrue(fetches, fetches)
        self.assertTrue(fetches[0][1].startswith("bytes="), "not resumed: %s" % fetches)
        self.assertEqual([s for s, _ in fetches], [200], fetches)

    def test_partial_of_another_size_is_fetched_whole(self):
        fetches = self.with_stale_partial(
            "other-size", lambda size: size + 1, lambda mid: mid)
        self.assertEqual(fetches, [(200, "-")], fetches)

    def test_resumed_body_that_does_not_verify_is_fetched_whole(self):
        # the right validator, the wrong bytes: the 206 completes a body
        # that does not verify, which is fetched again whole and delivered
        fetches = self.with_stale_partial(
            "wrong-bytes", lambda size: size, lambda mid: mid)
        self.assertEqual([s for s, _ in fetches], [206, 200], fetches)
        self.assertTrue(fetches[0][1].startswith("bytes="), fetches)
        self.assertEqual(fetches[1][1], "-", fetches)


if __name__ == "__main__":
    import unittest
    unittest.main()
