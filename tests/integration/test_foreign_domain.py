"""Issue 2, test 5: c.example's poller, with its own valid secret on
a.example, can neither list, fetch nor ack mail addressed to b.example
(curl, 403/404), and its attempts change nothing: bob still gets the mail."""

import json

from support import SandboxTest, SECRET_AB, SECRET_AC, make_message, curl, q


class ForeignDomainTest(SandboxTest):
    # c.example needs no servers: it only holds credentials on a.example
    DOMAINS = ("a.example", "b.example")

    @classmethod
    def setUpWorld(cls):
        cls.a.add_peer(cls.b, SECRET_AB)
        cls.a.sql("INSERT INTO peer (domain, outbox_url, secret, pulling) VALUES "
                  "('c.example', 'http://127.0.0.4:%d/stubmail', %s, true)"
                  % (cls.a.http_port, q(SECRET_AC)))

    def c_curl(self, path, method="GET", body=None):
        data = json.dumps(body) if body is not None else None
        return curl(self.a.outbox_url + path, method=method, data=data,
                    user="c.example:" + SECRET_AC)

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.header("content-type").startswith("application/json"), r)
        self.assertEqual(r.json()["error"], code, r)
        self.assertIsInstance(r.json().get("message"), str)

    def test_5_c_cannot_touch_bobs_mail(self):
        a, b = self.a, self.b
        # bob has not got alice in his book yet: the message waits
        msg, tag = make_message("alice@a.example", "bob@b.example", "for bob only")
        mid = self.send_stored(a, "alice@a.example", "bob@b.example", msg)[0][0]
        before = a.table_counts()

        # c's credentials are good: its own poll works, and lists nothing
        r = self.c_curl("/v1/poll", "POST",
                        {"pairs": [{"from": "*@a.example", "to": "carol@c.example"}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["messages"], [])

        # list bob's mail
        r = self.c_curl("/v1/poll", "POST",
                        {"pairs": [{"from": "alice@a.example", "to": "bob@b.example"}]})
        self.assertError(r, 403, "foreign_recipient")
        r = self.c_curl("/v1/poll", "POST",
                        {"pairs": [{"from": "*@a.example", "to": "carol@c.example"},
                                   {"from": "*@a.example", "to": "bob@b.example"}]})
        self.assertError(r, 403, "foreign_recipient")
        # fetch it, whole or in part
        r = self.c_curl("/v1/message/" + mid)
        self.assertError(r, 404, "not_found")
        self.assertNotIn(tag.encode(), r.body)
        r = curl(a.outbox_url + "/v1/message/" + mid, user="c.example:" + SECRET_AC,
                 headers=["Range: bytes=0-99"])
        self.assertError(r, 404, "not_found")
        # ack it, for bob or for its own user
        r = self.c_curl("/v1/message/%s/ack" % mid, "POST", {"to": "bob@b.example"})
        self.assertError(r, 403, "foreign_recipient")
        r = self.c_curl("/v1/message/%s/ack" % mid, "POST", {"to": "carol@c.example"})
        self.assertError(r, 404, "not_found")
        # c's secret under b's name
        r = curl(a.outbox_url + "/v1/message/" + mid, user="b.example:" + SECRET_AC)
        self.assertError(r, 401, "auth_failed")

        self.assertEqual(a.table_counts(), before)
        self.assertEqual(a.sql("SELECT retrieved_at FROM outbox WHERE message_id = %s"
                               % q(mid)), [[""]])
        self.assertEqual(self.access_lines(a, r"^\S+ b\.example .*" + mid), [])

        # bob's mail is intact and reaches him once he knows alice
        b.add_contact("bob@b.example", "alice@a.example")
        got = self.wait_maildir(b, "bob", tag)
        self.assertEqual(len(got), 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
