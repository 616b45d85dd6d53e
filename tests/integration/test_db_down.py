"""Issue 2, test 4: a.example's PostgreSQL is down while alice submits: the
client sees a 4xx (the milter answers tempfail), nothing is lost and nothing
is accepted; once the database is back and the message is sent again it is
delivered exactly once. Also: b.example's logins and polls meanwhile get 503
and b.example carries on when a.example recovers."""


from support import SandboxTest, make_message, wait_for


class DatabaseDownTest(SandboxTest):

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def tearDown(self):
        if not self.a.db_running():
            self.a.start_db()
        super().tearDown()

    def test_tempfail_then_delivered_once(self):
        a, b = self.a, self.b
        # Apache's polls from b.example fail while the database is gone
        a.expect_log(r"\[(dbd|stubmail):(warn|error)\]")
        msg, tag = make_message("alice@a.example", "bob@b.example", "while the db is down")
        a.stop_db()
        r = a.send("alice@a.example", "bob@b.example", msg)
        self.assertFalse(r.ok, "swaks should not succeed:\n%s" % r)
        self.assertTrue(r.saw(r"4\d\d"), "expected a 4xx reply:\n%s" % r)
        self.assertFalse(r.saw(r"5\d\d"), "no 5xx expected:\n%s" % r)
        self.assertFalse(r.saw(r"250 2\.0\.0"), "the message must not be accepted:\n%s" % r)
        self.assertEqual(a.postqueue(), [], "nothing should be queued by Postfix")

        # b.example's poll of a.example (or its login, if it holds no token
        # yet) now gets 503 unavailable
        wait_for(lambda: self.access_lines(
            a, r"(POST|GET) /stubmail/v1/(poll|login|subscription)\S* .*\" 503 "),
                 timeout=15, what="a 503 answer to b.example's poll or login")

        a.start_db()
        r = self.send_ok(a, "alice@a.example", "bob@b.example", msg)
        got = self.wait_maildir(b, "bob", tag, timeout=40)
        self.assertEqual(len(got), 1)
        self.assertEqual(a.count("outbox"), 1, "stored once")
        # a few polls later still once
        answered = r"(POST|GET) /stubmail/v1/poll\S* .*\" (200|304) "
        n = len(self.access_lines(a, answered))
        wait_for(lambda: len(self.access_lines(a, answered)) >= n + 2,
                 timeout=20, what="two more polls")
        self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1)
        self.assertEqual(a.count("outbox", "retrieved_at IS NULL"), 0)


if __name__ == "__main__":
    import unittest
    unittest.main()
