"""A message stored once however often the client sends it (sql/021,
milter/smf_ident.c): the milter is killed right after its outbox commit
(tests/faults/kill_at_statement.c, LD_PRELOAD), Postfix answers the client
4xx, the client sends the message again once the milter is back, and it is
stored once and delivered once. A message without a Message-ID has no
identity: two identical sends are two messages."""

from support import SandboxTest, make_message, wait_for


class RetryStoredTest(SandboxTest):

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")
        cls.a.use_kill_after_commit()

    def setUp(self):
        super().setUp()
        self.a.disarm_kill_after_commit()
        self.a.reap_milter()
        if not self.a.milter_alive():
            self.a.start_milter()

    def message_ids(self):
        return {r[0] for r in self.a.sql("SELECT id FROM message")}

    def milter_log(self):
        with open(self.a.milter_log, errors="replace") as f:
            return f.read()

    def settle(self):
        """Two more answered polls of b.example: whatever was to be pulled twice is."""
        answered = r"(POST|GET) /stubmail/v1/poll\S* .*\" (200|304) "
        n = len(self.access_lines(self.a, answered))
        wait_for(lambda: len(self.access_lines(self.a, answered)) >= n + 2,
                 timeout=30, what="two more polls by b.example")

    def test_killed_after_commit_then_retried_is_stored_and_delivered_once(self):
        a, b = self.a, self.b
        msg, tag = make_message("alice@a.example", "bob@b.example", "killed after commit")
        before = self.message_ids()
        a.arm_kill_after_commit()
        r = a.send("alice@a.example", "bob@b.example", msg)
        self.assertFalse(r.ok, "the milter died before its reply:\n%s" % r)
        self.assertTrue(r.saw(r"4\d\d"), "expected a 4xx reply:\n%s" % r)
        wait_for(lambda: not a.milter_alive(), timeout=10, what="the milter killed by the shim")
        first = self.message_ids() - before
        self.assertEqual(len(first), 1, "the first attempt committed")

        a.reap_milter()
        a.start_milter()
        self.send_ok(a, "alice@a.example", "bob@b.example", msg)   # the client's retry
        self.assertEqual(self.message_ids() - before, first, "the retry stored nothing")
        self.assertRegex(self.milter_log(), r"retry of stored id=%s \(this attempt's id=\w+ "
                         r"dropped" % list(first)[0])
        self.assertEqual(a.postqueue(), [], "nothing pushed or queued by Postfix")

        self.wait_maildir(b, "bob", tag, timeout=40)
        self.settle()
        self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1, "delivered once")
        self.assertEqual(a.count("outbox", "retrieved_at IS NULL"), 0, "outbox drained")

    def test_without_message_id_two_sends_are_two_messages(self):
        a, b = self.a, self.b
        msg, tag = make_message("alice@a.example", "bob@b.example", "no message id")
        msg = b"".join(l for l in msg.splitlines(keepends=True)
                       if not l.startswith(b"Message-ID:"))
        before = self.message_ids()
        self.send_ok(a, "alice@a.example", "bob@b.example", msg)
        self.send_ok(a, "alice@a.example", "bob@b.example", msg)
        self.assertEqual(len(self.message_ids() - before), 2, "stored twice")
        self.wait_maildir(b, "bob", tag, timeout=40, count=2)


if __name__ == "__main__":
    import unittest
    unittest.main()
