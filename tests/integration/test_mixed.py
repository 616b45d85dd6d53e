"""Issue 2, test 2: one message to bob@b.example (a pulling domain: it
publishes a _stubmail record) and carol@c.example (a plain Postfix, no
record): bob gets it by pull, carol by push, each exactly once. Also: mail
that arrives from outside (c.example -> b.example) is not diverted by
b.example's milter."""

from support import SandboxTest, make_message, split_message, wait_for


class MixedRecipientsTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"c.example": ("postfix",)}      # receives only; no stubmail

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def test_bob_pulled_carol_pushed_once_each(self):
        a, b, c = self.a, self.b, self.c
        msg, tag = make_message("alice@a.example", ["bob@b.example", "carol@c.example"],
                                "to both")
        rows = self.send_stored(a, "alice@a.example", ["bob@b.example", "carol@c.example"], msg)

        # only bob is in the outbox
        self.assertEqual([r[2] for r in rows], ["bob@b.example"])
        mid = rows[0][0]

        got_bob = self.wait_maildir(b, "bob", tag)
        got_carol = self.wait_maildir(c, "carol", tag)
        for got in (got_bob, got_carol):
            self.assertEqual(split_message(got[0][1])[1], split_message(msg)[1])
        self.assertIn(b"with HTTP id " + mid.encode(), got_bob[0][1])
        self.assertNotIn(b"stubmail-pollerd", got_carol[0][1])

        # a.example pushed to c.example only, once
        with open(a.maillog) as f:
            log = f.read()
        self.assertEqual(log.count("to=<carol@c.example>, relay=127.0.0.4"), 1, log)
        self.assertNotIn("relay=127.0.0.3", log)

        # nobody twice, also after more poll cycles and queue runs
        wait_for(lambda: a.sql_value("SELECT retrieved_at FROM outbox WHERE message_id = '%s'"
                                     % mid), timeout=15, what="retrieved_at")
        polls = len(self.access_lines(a, r"/v1/poll\S* .* (200|304) "))
        wait_for(lambda: len(self.access_lines(a, r"/v1/poll\S* .* (200|304) ")) >= polls + 2,
                 timeout=20, what="two more polls")
        self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1)
        self.assertEqual(len(self.in_maildir(c, "carol", tag)), 1)
        self.assertEqual(self.in_maildir(c, "bob", tag), [])
        self.assertEqual(a.postqueue(), [], "a.example's queue should be empty")

    def test_inbound_mail_is_not_diverted(self):
        """carol@c.example -> bob@b.example arrives at b.example's inbound
        listener (with the milter) from outside: delivered by push, nothing
        stored in b.example's outbox, nothing learned."""
        b, c = self.b, self.c
        before = b.table_counts()
        msg, tag = make_message("carol@c.example", "bob@b.example", "from outside")
        self.send_ok(c, "carol@c.example", "bob@b.example", msg)
        got = self.wait_maildir(b, "bob", tag)
        self.assertEqual(split_message(got[0][1])[1], split_message(msg)[1])
        self.assertEqual(b.table_counts(), before)

    def test_reply_from_b_to_a_member_of_a_non_pulling_domain(self):
        """bob@b.example -> carol@c.example: c.example does not pull, so
        the message goes by push; bob's book learns carol all the same."""
        b, c = self.b, self.c
        stored = b.count("message")
        msg, tag = make_message("bob@b.example", "carol@c.example", "hi carol")
        self.send_ok(b, "bob@b.example", "carol@c.example", msg)
        self.wait_maildir(c, "carol", tag)
        self.assertEqual(b.count("message"), stored)
        wait_for(lambda: b.sql("SELECT 1 FROM address_book WHERE owner = 'bob@b.example' "
                               "AND contact = 'carol@c.example'"), timeout=5,
                 what="carol learned into bob's book")


if __name__ == "__main__":
    import unittest
    unittest.main()
