"""Issue 11: one-click unsubscribe (RFC 8058) in every pulled message.

b.example's pollerd puts List-Unsubscribe and List-Unsubscribe-Post above
each message it delivers, pointing at b.example's own Apache; a GET shows a
page and changes nothing, the POST of RFC 8058 stops that sender for that
user only, links cannot be turned into another pair's, and the user writing
to the sender (not an auto-reply) starts the sender's mail again."""

import email
import email.policy
import re
import subprocess
import urllib.parse

from support import SandboxTest, make_message, wait_for, curl, q
import support


class UnsubscribeTest(SandboxTest):

    def _pull(self, sender, rcpts, subject, extra_headers=()):
        """alice (or another a.example sender) writes; wait for every
        recipient's copy; return {recipient: parsed message}."""
        a, b = self.a, self.b
        msg, tag = make_message(sender, rcpts, subject, extra_headers=extra_headers)
        self.send_stored(a, sender, rcpts, msg)
        got = {}
        for r in rcpts:
            data = self.wait_maildir(b, r.split("@")[0], tag)[0][1]
            got[r] = email.message_from_bytes(data, policy=email.policy.default)
        return got, tag

    def _link(self, m):
        """The https URL of our List-Unsubscribe header (the first one)."""
        values = m.get_all("List-Unsubscribe")
        self.assertTrue(values, "no List-Unsubscribe in\n%s" % m)
        urls = re.findall(r"<([^>]*)>", str(values[0]))
        self.assertEqual(len(urls), 1, values[0])
        return urls[0]

    def _book(self, owner):
        return [r[0] for r in self.b.sql("SELECT contact FROM address_book WHERE owner = %s "
                                         "ORDER BY contact" % q(owner))]

    def _blocks(self, owner):
        return [r[0] for r in self.b.sql("SELECT contact FROM address_block WHERE owner = %s "
                                         "ORDER BY contact" % q(owner))]

    def _post(self, url, body="List-Unsubscribe=One-Click",
              ctype="application/x-www-form-urlencoded"):
        return curl(url, method="POST", data=body, content_type=ctype)

    def test_one_click_stops_that_sender_for_that_user(self):
        a, b = self.a, self.b
        b.add_contact("bob@b.example", "alice@a.example")
        b.add_contact("carol@b.example", "alice@a.example")
        theirs = "<https://lists.a.example/u/123>, <mailto:leave@a.example>"
        got, _ = self._pull("alice@a.example", ["bob@b.example", "carol@b.example"], "news",
                            extra_headers=["List-Unsubscribe: " + theirs])
        m = got["bob@b.example"]

        # ours first, the sender's own kept as it was; the One-Click marker
        values = [str(v) for v in m.get_all("List-Unsubscribe")]
        self.assertEqual(len(values), 2, values)
        self.assertEqual(values[1], theirs)
        self.assertEqual(str(m["List-Unsubscribe-Post"]), "List-Unsubscribe=One-Click")
        url = self._link(m)
        self.assertTrue(url.startswith(b.unsubscribe_url + "?"), url)
        fields = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        self.assertEqual(fields["u"], ["bob@b.example"])
        self.assertEqual(fields["s"], ["alice@a.example"])
        self.assertNotEqual(url, self._link(got["carol@b.example"]),
                            "two users got the same link")

        # GET: a page with the button, nothing changed (link scanners)
        r = curl(url)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type").startswith("text/html"), r)
        self.assertIn(b'name="List-Unsubscribe" value="One-Click"', r.body)
        self.assertIn(b"alice@a.example", r.body)
        self.assertEqual(r.header("cache-control"), "no-store")
        self.assertIn("alice@a.example", self._book("bob@b.example"))
        self.assertEqual(self._blocks("bob@b.example"), [])

        # the POST of RFC 8058
        r = self._post(url)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("alice@a.example", self._book("bob@b.example"))
        self.assertEqual(self._blocks("bob@b.example"), ["alice@a.example"])
        self.assertIn("alice@a.example", self._book("carol@b.example"), "carol's book changed")
        self.assertEqual(self._blocks("carol@b.example"), [])
        self.assertEqual(self._post(url).status, 200, "a second POST is harmless")

        # the next message reaches carol, not bob
        msg, tag = make_message("alice@a.example", ["bob@b.example", "carol@b.example"],
                                "more news")
        rows = self.send_stored(a, "alice@a.example", ["bob@b.example", "carol@b.example"], msg)
        self.wait_maildir(b, "carol", tag)
        mid = rows[0][0]
        wait_for(lambda: a.sql_value("SELECT retrieved_at FROM outbox WHERE message_id = %s "
                                     "AND recipient = 'carol@b.example'" % q(mid)),
                 timeout=15, what="carol's ack")
        self.wait_polls(a, 2)
        self.assertEqual(self.in_maildir(b, "bob", tag), [], "bob still gets alice's mail")
        self.assertEqual(a.sql_value("SELECT retrieved_at IS NULL FROM outbox WHERE "
                                     "message_id = %s AND recipient = 'bob@b.example'"
                                     % q(mid)), "t")

    def test_forged_and_incomplete_requests_change_nothing(self):
        b = self.b
        b.add_contact("erin@b.example", "alice@a.example")
        b.add_contact("frank@b.example", "alice@a.example")
        got, _ = self._pull("alice@a.example", ["erin@b.example"], "hello erin")
        url = self._link(got["erin@b.example"])
        parts = urllib.parse.urlsplit(url)
        fields = dict(urllib.parse.parse_qsl(parts.query))

        def variant(**change):
            f = dict(fields, **change)
            return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(f)))

        mac = fields["m"]
        forged = [
            variant(u="frank@b.example"),                  # erin's link, frank's name
            variant(s="mallory@a.example"),                # another sender
            variant(u="alice@a.example", s="erin@b.example"),  # swapped
            variant(k="u2"),                               # no such key
            variant(m=mac[:-1] + ("A" if mac[-1] != "A" else "B")),
            variant(m=""),
            urllib.parse.urlunsplit(parts._replace(query="u=erin%40b.example")),
        ]
        for bad in forged:
            for method in ("GET", "POST"):
                r = (curl(bad) if method == "GET" else self._post(bad))
                self.assertEqual(r.status, 400, "%s %s: %r" % (method, bad, r))
                self.assertIn(b"does not work", r.body)
        # the real link, but not RFC 8058's body: refused
        for body, ctype in (("", "application/x-www-form-urlencoded"),
                            ("List-Unsubscribe=Yes", "application/x-www-form-urlencoded"),
                            ("List-Unsubscribe=One-Click", "text/plain")):
            r = self._post(url, body=body, ctype=ctype)
            self.assertEqual(r.status, 400, "%r: %r" % (body, r))
        self.assertEqual(self._book("erin@b.example"), ["alice@a.example"])
        self.assertEqual(self._book("frank@b.example"), ["alice@a.example"])
        self.assertEqual(self._blocks("erin@b.example") + self._blocks("frank@b.example"), [])

        # multipart/form-data, the encoding RFC 8058 prefers, works
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            "--cacert", support.ca_file, "-F", "List-Unsubscribe=One-Click",
                            url], capture_output=True, timeout=30)
        self.assertEqual(r.stdout, b"200", r)
        self.assertEqual(self._blocks("erin@b.example"), ["alice@a.example"])
        self.assertEqual(self._book("frank@b.example"), ["alice@a.example"])

    def test_wildcard_entry_refuses_the_blocked_sender_undelivered(self):
        a, b = self.a, self.b
        b.add_contact("mallory@b.example", "*@a.example")
        got, _ = self._pull("news@a.example", ["mallory@b.example"], "offers")
        self.assertEqual(self._post(self._link(got["mallory@b.example"])).status, 200)
        self.assertEqual(self._book("mallory@b.example"), ["*@a.example"],
                         "the *@domain entry stays")
        self.assertEqual(self._blocks("mallory@b.example"), ["news@a.example"])

        # news@ is refused, never delivered (fetched and opened only for the
        # receipt its rejection must carry); another a.example sender still arrives
        msg, tag = make_message("news@a.example", "mallory@b.example", "more offers")
        rows = self.send_stored(a, "news@a.example", "mallory@b.example", msg)
        mid = rows[0][0]
        wait_for(lambda: a.sql_value("SELECT rejected_reason FROM outbox WHERE message_id = %s"
                                     % q(mid)), timeout=20, what="the refusal's ack")
        self.assertEqual(a.sql_value("SELECT rejected_reason FROM outbox WHERE message_id = %s"
                                     % q(mid)), "unsubscribed")
        self.assertEqual(self.in_maildir(b, "mallory", tag), [])
        self.assertEqual(b.sql_value("SELECT count(*) FROM received WHERE message_id = %s"
                                     % q(mid)), "0", "the refused message was recorded")
        self._pull("hr@a.example", ["mallory@b.example"], "payslip")

    def test_writing_again_lifts_the_block_an_auto_reply_does_not(self):
        a, b = self.a, self.b
        b.add_contact("dave@b.example", "alice@a.example")
        got, _ = self._pull("alice@a.example", ["dave@b.example"], "hi dave")
        self.assertEqual(self._post(self._link(got["dave@b.example"])).status, 200)
        self.assertEqual(self._blocks("dave@b.example"), ["alice@a.example"])

        # an auto-reply from dave (diverted to a.example's pull) learns nothing
        auto, _ = make_message("dave@b.example", "alice@a.example", "Out of office",
                               extra_headers=["Auto-Submitted: auto-replied"])
        self.send_stored(b, "dave@b.example", "alice@a.example", auto)
        self.assertEqual(self._blocks("dave@b.example"), ["alice@a.example"])
        self.assertEqual(self._book("dave@b.example"), [])

        # dave writes himself: alice is back, the block gone
        own, _ = make_message("dave@b.example", "alice@a.example", "sorry, wrong button",
                              extra_headers=["Auto-Submitted: no"])
        self.send_stored(b, "dave@b.example", "alice@a.example", own)
        self.assertEqual(self._blocks("dave@b.example"), [])
        self.assertEqual(self._book("dave@b.example"), ["alice@a.example"])
        self._pull("alice@a.example", ["dave@b.example"], "welcome back")


if __name__ == "__main__":
    import unittest
    unittest.main()
