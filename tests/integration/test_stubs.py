"""Issue 4: UDP stubs (docs/PROTOCOL.md "UDP stubs") and introductions.

b.example's pollerd polls only every 10 minutes here, and listens on
udp_listen (published as udp= in b.example's _stubmail record); a.example's
milter sends a stub after each outbox commit. So mail that arrives within
seconds came because of the stub. The tests also play a hostile sender of
stubs with a plain UDP socket: forged, flooding, malformed."""

import json
import os
import re
import socket
import subprocess
import time

import support
from sandbox import Sandbox, POLLERD_BIN, TOP
from support import SandboxTest, make_message, wait_for
from test_protocol_examples import sections, block

CTL_BIN = os.path.join(TOP, "admin", "stubmailctl")

POLL_RE = r" b\.example .*\"(?:POST|GET) /stubmail/v1/poll"


def doc_example():
    """The worked example of docs/PROTOCOL.md, "UDP stubs", as bytes."""
    return block(sections(), "UDP stubs", "stubmail-stub-v1").encode()


def stub(sender, *rcpts):
    return ("stubmail-stub-v1\nfrom:%s\n" % sender
            + "".join("to:%s\n" % r for r in rcpts)).encode()


class StubSandboxTest(SandboxTest):
    """SandboxTest with stubs on: Sandbox(stubs=True, pollerd_extra=...)."""

    POLL_INTERVAL = "10m"
    POLLERD_EXTRA = ("stub_interval 2s",)

    @classmethod
    def setUpClass(cls):
        cls.sb = Sandbox(cls.DOMAINS, services=cls.SERVICES, poll_interval=cls.POLL_INTERVAL,
                         httpd_extra=cls.HTTPD_EXTRA, stubs=True,
                         pollerd_extra=cls.POLLERD_EXTRA)
        cls.sb.start()
        support.ca_file = cls.sb.ca_file
        try:
            for isp in cls.sb:
                setattr(cls, isp.name, isp)
            cls.sb.log_mark()
            cls.setUpWorld()
            # pollerd's first (full) cycle at start; then it sleeps 10 minutes
            cls.wait_idle()
        except BaseException:
            cls.sb.stop()
            raise

    @classmethod
    def wait_idle(cls):
        def done():
            with open(cls.b.pollerd_log) as f:
                return re.search(r"listening for UDP stubs", f.read()) is not None
        wait_for(done, timeout=20, what="pollerd listening for stubs")
        time.sleep(2)

    def polls(self):
        return len(self.access_lines(self.a, POLL_RE))

    def a_lines(self):
        with open(self.a.access_log) as f:
            return f.readlines()

    def send_stubs(self, packets, isp=None, sock=None):
        """Send packets to isp's stub listener, from sock if given (to see
        whether anything comes back)."""
        isp = isp or self.b
        ip, port = isp.stub_address.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if sock is None else sock
        try:
            for p in packets:
                s.sendto(p, (ip, int(port)))
        finally:
            if sock is None:
                s.close()

    def pollerd_alive(self):
        return self.b.procs["pollerd"].alive()

    def deliver_fast(self, sender, limit=2.0, subject="fast"):
        """Send sender -> bob; it must be in bob's Maildir within limit
        seconds of the submission's end. Returns the elapsed time."""
        msg, tag = make_message(sender, "bob@b.example", subject)
        self.send_ok(self.a, sender, "bob@b.example", msg)
        t0 = time.monotonic()
        self.wait_maildir(self.b, "bob", tag, timeout=limit + 10)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, limit, "delivered after %.2fs, not within %.1fs: the stub "
                        "did not make pollerd poll" % (elapsed, limit))
        return elapsed


class StubTest(StubSandboxTest):

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def test_stub_delivers_within_2s(self):
        self.deliver_fast("alice@a.example")
        # a second message, once the per-domain interval has passed
        time.sleep(2.2)
        self.deliver_fast("alice@a.example", subject="again")

    def test_forged_stub_one_poll_nothing_else(self):
        time.sleep(2.2)                     # stub_interval since earlier polls
        before = len(self.a_lines())
        polls = self.polls()
        # the document's example, forged by the test: alice is bob's contact
        self.send_stubs([doc_example()])
        wait_for(lambda: self.polls() > polls, timeout=5, what="a poll of a.example")
        time.sleep(2)
        self.assertEqual(self.polls(), polls + 1)
        new = self.a_lines()[before:]
        others = [l for l in new if not re.search(r'"(?:POST|GET) /stubmail/v1/(?:poll|login)', l)]
        self.assertEqual(others, [], "a forged stub caused more than a poll")
        self.assertEqual(self.b.count("received"), self.b.count("received", "true"))

    def test_flood_bounded_polls(self):
        time.sleep(2.2)
        polls = self.polls()
        self.send_stubs([stub("alice@a.example", "bob@b.example")] * 2000)
        # stub_interval 2s: one poll at once, one more for what came during it
        time.sleep(7)
        got = self.polls() - polls
        self.assertGreaterEqual(got, 1)
        self.assertLessEqual(got, 3, "2000 stubs made %d polls" % got)
        self.assertTrue(self.pollerd_alive())
        time.sleep(2.2)
        self.deliver_fast("alice@a.example", subject="after the flood")

    def test_malformed_dropped(self):
        time.sleep(2.2)
        polls = self.polls()
        with open(self.b.pollerd_log) as f:
            log_before = len(f.readlines())
        corpus = [
            b"",
            b"\x00" * 64,
            os.urandom(200),
            stub("alice@a.example", "bob@b.example").replace(b"\n", b"\r\n"),
            stub("alice@a.example", "bob@b.example").replace(b"-v1", b"-v2"),
            stub("Alice@a.example", "bob@b.example"),
            stub("<alice@a.example>", "bob@b.example"),
            stub("*@a.example", "bob@b.example"),
            stub("alice@a.example"),
            stub("alice@a.example", "bob@b.example", "bob@b.example"),
            stub("alice@a.example", "bob@b.example", "x@c.example"),
            stub("alice@a.example", "bob@b.example")[:-1],
            stub("alice@a.example", "bob@b.example") + b"\n",
            stub("alice@a.example", "bob@b.example") + b"x",
            stub("alice@a.example", "bob@b.example").replace(b"from:", b"from: "),
            b"stubmail-stub-v1\nto:bob@b.example\nfrom:alice@a.example\n",
            stub("alice@a.example", *["u%d@b.example" % i for i in range(40)]),
            stub("alice@a.example", "bob@b.example") + b"#" * 600,
            stub("alice@a.example", "dave@c.example"),      # not our domain
            stub("bob@b.example", "bob@b.example"),          # our own domain
        ]
        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        back.bind((self.b.ip, 0))
        self.send_stubs(corpus * 50, sock=back)
        time.sleep(4)
        self.assertEqual(self.polls(), polls, "a malformed stub made pollerd poll")
        self.assertTrue(self.pollerd_alive())
        with open(self.b.pollerd_log) as f:
            added = f.readlines()[log_before:]
        self.assertLess(len(added), 5, "a log line per malformed stub:\n" + "".join(added[:10]))
        # a good stub from the same socket, then mail: pollerd has read both
        # stubs by the time the mail is in, and answered neither (PROTOCOL.md
        # R-STUB-NO-ANSWER)
        self.send_stubs([stub("alice@a.example", "bob@b.example")], sock=back)
        time.sleep(2.2)     # its poll's stub_interval, before deliver_fast's stub
        self.deliver_fast("alice@a.example", subject="after the junk")
        back.setblocking(False)
        with self.assertRaises(BlockingIOError, msg="pollerd answered a stub"):
            back.recvfrom(2048)
        back.close()

    def test_unknown_sender_no_trace(self):
        time.sleep(2.2)
        polls = self.polls()
        mail, tag = make_message("mallory@a.example", "bob@b.example", "stranger")
        self.send_stored(self.a, "mallory@a.example", "bob@b.example", mail)
        self.send_stubs([stub("mallory@a.example", "bob@b.example"),
                         stub("eve@evil.example", "bob@b.example")] * 10)
        time.sleep(3)
        self.assertEqual(self.polls(), polls, "an unknown sender's stub made pollerd poll")
        self.assertEqual(self.b.count("introduction"), 0)
        self.assertEqual(self.in_maildir(self.b, "bob", tag), [])
        # and pollerd was listening all along: a known sender's stub polls
        # at once (without this the test passes with stubs ignored)
        self.send_stubs([stub("alice@a.example", "bob@b.example")])
        wait_for(lambda: self.polls() > polls, timeout=5, what="the poll for alice's stub")

    def test_udp_blocked_next_http_poll(self):
        """udp= names a port pollerd does not listen on (the test's own
        socket): the milter's stub there is exactly the document's example;
        the mail waits for the next HTTP poll (SIGUSR1 here) and arrives
        then."""
        a, b = self.a, self.b
        good = b.key.record
        bad = good.replace("udp=%s" % b.stub_address, "udp=%s:%d" % (b.ip, b.port(91)))
        self.assertNotEqual(good, bad)
        trap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        trap.bind((b.ip, b.port(91)))
        trap.settimeout(10)
        self.sb.set_txt("b.example", bad)
        try:
            time.sleep(2.2)
            to = ["bob@b.example", "carol@b.example"]
            b.add_contact("carol@b.example", "alice@a.example")
            mail, tag = make_message("alice@a.example", to, "no udp")
            self.send_ok(a, "alice@a.example", to, mail)
            got, _ = trap.recvfrom(2048)
            self.assertEqual(got, doc_example())
            time.sleep(3)
            self.assertEqual(self.in_maildir(b, "bob", tag), [],
                             "delivered without a stub or a poll")
            b.poll_now()
            self.wait_maildir(b, "bob", tag, timeout=15)
            self.wait_maildir(b, "carol", tag, timeout=15)
        finally:
            trap.close()
            self.sb.set_txt("b.example", good)


class IntroductionTest(StubSandboxTest):
    POLLERD_EXTRA = ("stub_interval 2s", "introductions yes", "introductions_max 20")

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def setUp(self):
        super().setUp()
        # each test starts with no introductions, whatever ran before it
        self.b.sql("DELETE FROM introduction")

    def intro(self, *args):
        """stubmailctl intro ARGS for b.example, told where pollerd listens."""
        conf = self.b.path("stubmailctl.conf")
        with open(conf, "w") as f:
            f.write("database %s\ndomain b.example\npollerd_udp %s\n"
                    % (self.b.conninfo, self.b.stub_address))
        r = subprocess.run([CTL_BIN, "-c", conf, "intro"] + list(args),
                           capture_output=True, text=True, timeout=30)
        return r.returncode, r.stdout, r.stderr

    def test_listed_then_accepted_and_delivered(self):
        a, b = self.a, self.b
        mail, tag = make_message("mallory@a.example", "bob@b.example", "first contact")
        self.send_ok(a, "mallory@a.example", "bob@b.example", mail)
        wait_for(lambda: b.count("introduction") > 0, timeout=10, what="an introduction")
        rc, out, err = self.intro("list", "--json")
        self.assertEqual(rc, 0, err)
        rows = json.loads(out)
        self.assertEqual([(r["recipient"], r["sender"], r["stubs"]) for r in rows],
                         [("bob@b.example", "mallory@a.example", 1)])
        time.sleep(3)
        self.assertEqual(self.in_maildir(b, "bob", tag), [], "fetched on a stub's say-so")

        rc, out, err = self.intro("accept", "bob@b.example", "mallory@a.example")
        self.assertEqual(rc, 0, err)
        t0 = time.monotonic()
        self.wait_maildir(b, "bob", tag, timeout=15)
        self.assertLess(time.monotonic() - t0, 5, "accepting did not pull the mail now")
        self.assertEqual(b.sql("SELECT source FROM address_book WHERE owner = 'bob@b.example'"
                               " AND contact = 'mallory@a.example'"), [["user"]])
        self.assertEqual(b.count("introduction"), 0)
        rc, out, err = self.intro("accept", "bob@b.example", "mallory@a.example")
        self.assertEqual(rc, 1)
        self.assertIn("no introduction", err)

    def test_bounded_per_recipient_and_real_recipients_only(self):
        b = self.b
        self.send_stubs([stub("s%d@x%d.example" % (i, i), "bob@b.example") for i in range(100)]
                        + [stub("s1@x1.example", "ghost@b.example")] * 5)
        time.sleep(3)
        self.assertEqual(b.count("introduction", "recipient = 'bob@b.example'"), 20)
        self.assertEqual(b.count("introduction", "recipient = 'ghost@b.example'"), 0)
        # the same sender again: counted, not added
        self.send_stubs([stub("s0@x0.example", "bob@b.example")] * 3)
        wait_for(lambda: b.sql_value("SELECT stubs FROM introduction WHERE sender = "
                                     "'s0@x0.example'") == "4", timeout=5, what="count 4")
        rc, out, err = self.intro("drop", "bob@b.example", "s0@x0.example")
        self.assertEqual(rc, 0, err)
        self.assertEqual(b.count("introduction", "sender = 's0@x0.example'"), 0)

    def test_config_checked(self):
        """-n refuses what pollerd could not listen on or would misuse."""
        with open(self.b.pollerd_conf) as f:
            conf = [l for l in f if not l.startswith(("udp_listen", "stub_", "introductions"))]
        for extra, word in (("udp_listen 0.0.0.0:25090", "udp_listen"),
                            ("udp_listen b.example:25090", "udp_listen"),
                            ("udp_listen 127.0.0.3", "udp_listen"),
                            ("stub_rate 0", "stub_rate"),
                            ("stub_interval 0", "stub_interval"),
                            ("introductions_max 0", "introductions_max"),
                            ("introductions maybe", "introductions")):
            path = self.b.path("pollerd-bad.conf")
            with open(path, "w") as f:
                f.writelines(conf + [extra + "\n"])
            r = subprocess.run([POLLERD_BIN, "-c", path, "-n"], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 78, "%s: %s" % (extra, r.stderr))
            self.assertIn(word, r.stderr)
        rc, out, err = self.intro("accept", "bob@c.example", "x@y.example")
        self.assertEqual(rc, 64)
        self.assertIn("not at our domain b.example", err)
        rc, out, err = self.intro("frobnicate")
        self.assertEqual(rc, 64)


if __name__ == "__main__":
    import unittest
    unittest.main()
