"""Issue 2, test 3: a sender who is not in bob's address book is never
fetched: the message stays in a.example's outbox."""

from support import SandboxTest, make_message, wait_for, q, stored_body


class UnknownSenderTest(SandboxTest):

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def polls(self):
        return len(self.access_lines(self.a, r" b\.example .*(POST|GET) /stubmail/v1/poll\S* "))

    def test_stranger_stays_in_outbox(self):
        a, b = self.a, self.b
        spam, spam_tag = make_message("mallory@a.example", "bob@b.example", "buy now")
        rows = self.send_stored(a, "mallory@a.example", "bob@b.example", spam)
        self.assertEqual(len(rows), 1)
        spam_id = rows[0][0]

        # a known sender's message, sent after, arrives: the poller works
        ok, ok_tag = make_message("alice@a.example", "bob@b.example", "hello")
        self.send_ok(a, "alice@a.example", "bob@b.example", ok)
        self.wait_maildir(b, "bob", ok_tag)

        # and several further polls later, mallory's is still untouched
        start = self.polls()
        wait_for(lambda: self.polls() >= start + 3, timeout=30, what="three more polls")
        self.assertEqual(self.in_maildir(b, "bob", spam_tag), [])
        self.assertEqual(a.sql("SELECT retrieved_at FROM outbox WHERE message_id = %s"
                               % q(spam_id)), [[""]])
        self.assertEqual(self.access_lines(a, spam_id), [],
                         "b.example asked a.example about mallory's message")
        self.assertEqual(b.count("received", "message_id = %s" % q(spam_id)), 0)
        # the body is still there for a later pull
        self.assertEqual(len(self.outbox_rows(a, message_id=spam_id)), 1)
        self.assertTrue(stored_body(a, spam_id), "mallory's body is gone")

    def test_wildcard_contact_pulls_stranger_later(self):
        """Once bob accepts *@a.example, mallory's waiting mail is pulled."""
        a, b = self.a, self.b
        spam, tag = make_message("mallory@a.example", "bob@b.example", "second try")
        self.send_stored(a, "mallory@a.example", "bob@b.example", spam)
        b.add_contact("bob@b.example", "*@a.example")
        self.wait_maildir(b, "bob", tag)


if __name__ == "__main__":
    import unittest
    unittest.main()
