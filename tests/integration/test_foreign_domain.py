"""Issue 2, test 5 (issue 3: with tokens): c.example's poller, logged in
at a.example with its own domain key, can neither list, fetch nor ack mail
addressed to b.example (curl, 403/404), nor pass its token off as
b.example's; its attempts change nothing: bob still gets the mail."""

import json

from support import SandboxTest, make_message, curl, q, get_token, b64url, b64url_decode


class ForeignDomainTest(SandboxTest):
    # c.example runs no servers: it publishes a key and a record, and this
    # test logs in with its key
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"c.example": ("key",)}

    @classmethod
    def setUpWorld(cls):
        cls.token_c = get_token(cls.a, cls.c)

    def c_curl(self, path, method="GET", body=None):
        data = json.dumps(body) if body is not None else None
        return curl(self.a.outbox_url + path, method=method, data=data, bearer=self.token_c)

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.header("content-type").startswith("application/json"), r)
        self.assertEqual(r.json()["error"], code, r)
        self.assertIsInstance(r.json().get("message"), str)

    def test_c_cannot_touch_bobs_mail(self):
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
        r = curl(a.outbox_url + "/v1/message/" + mid, bearer=self.token_c,
                 headers=["Range: bytes=0-99"])
        self.assertError(r, 404, "not_found")
        # ack it, for bob or for its own user
        r = self.c_curl("/v1/message/%s/ack" % mid, "POST", {"to": "bob@b.example"})
        self.assertError(r, 403, "foreign_recipient")
        r = self.c_curl("/v1/message/%s/ack" % mid, "POST", {"to": "carol@c.example"})
        self.assertError(r, 404, "not_found")
        # c's token with b's name in it
        head, payload, mac = self.token_c.split(".")
        payload_b = b64url(b64url_decode(payload).replace(b"c.example|", b"b.example|"))
        r = curl(a.outbox_url + "/v1/message/" + mid, bearer="%s.%s.%s" % (head, payload_b, mac))
        self.assertError(r, 401, "bad_token")

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
