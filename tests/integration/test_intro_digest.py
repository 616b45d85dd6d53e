"""Issue 11: introductions reach the user.

b.example's pollerd records introductions (introductions yes) and, with
intro_digest set (2s here), mails bob a digest naming each new one once,
with an accept and a decline link to b.example's Apache (/introduction,
signed like the one-click unsubscribe links). pollerd polls only every 10
minutes here, so mallory's mail arriving within seconds of the accept came
because the accept poked pollerd with a stub."""

import email
import email.policy
import os
import re
import subprocess
import time
import urllib.parse

import test_stubs
from sandbox import POLLERD_BIN
from support import curl, make_message, q, wait_for

DIGEST = "2s"
QUIET = 6           # seconds: three digest intervals


class IntroDigestTest(test_stubs.StubSandboxTest):
    POLLERD_EXTRA = ("stub_interval 2s", "introductions yes", "intro_digest " + DIGEST)

    @classmethod
    def setUpWorld(cls):
        # an address book each: only such users get introductions
        cls.b.add_contact("bob@b.example", "alice@a.example")
        cls.b.add_contact("carol@b.example", "alice@a.example")

    # -- helpers ------------------------------------------------------------
    def digests(self, user="bob"):
        """[parsed message] of the introductions digests in user's Maildir."""
        out = []
        for _, data in self.b.maildir_messages(user):
            m = email.message_from_bytes(data, policy=email.policy.default)
            if "intro-digest." in str(m.get("Message-ID", "")):
                out.append(m)
        return out

    def naming(self, sender, user="bob"):
        return [m for m in self.digests(user) if sender in m.get_content()]

    def wait_digest(self, sender, user="bob"):
        return wait_for(lambda: self.naming(sender, user), timeout=20,
                        what="a digest naming %s in %s's Maildir" % (sender, user))[0]

    def links(self, m, sender):
        """{"accept": url, "decline": url} of sender in digest m."""
        text = m.get_content()
        block = text[text.index(sender):]
        got = dict((k.lower(), v) for k, v in
                   re.findall(r"^  (Accept|Decline): +(\S+)$", block, re.M)[:2])
        self.assertEqual(sorted(got), ["accept", "decline"], text)
        return got

    def post(self, url, what):
        return curl(url, method="POST", data="do=" + what,
                    content_type="application/x-www-form-urlencoded")

    def altered(self, url, **fields):
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        query.update(fields)
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def intro_row(self, sender, user="bob@b.example"):
        return self.b.sql("SELECT stubs, announced_at IS NOT NULL FROM introduction "
                          "WHERE recipient = %s AND sender = %s" % (q(user), q(sender)))

    def book(self, owner):
        return self.b.sql("SELECT contact, source FROM address_book WHERE owner = %s "
                          "ORDER BY contact" % q(owner))

    def blocks(self, owner):
        return self.b.sql("SELECT contact, source FROM address_block WHERE owner = %s "
                          "ORDER BY contact" % q(owner))

    def write_conf(self, drop=(), add=()):
        with open(self.b.pollerd_conf) as f:
            lines = [l for l in f if not l.startswith(tuple(drop))]
        path = self.b.path("pollerd-digest.conf")
        with open(path, "w") as f:
            f.writelines(lines + [a + "\n" for a in add])
        return path

    # -- tests --------------------------------------------------------------
    def test_accept_pulls_the_waiting_mail(self):
        a, b = self.a, self.b
        mail, tag = make_message("mallory@a.example", "bob@b.example", "first contact")
        self.send_ok(a, "mallory@a.example", "bob@b.example", mail)
        m = self.wait_digest("mallory@a.example")

        # an RFC 5322 mail of ours, Auto-Submitted, naming mallory with two links
        self.assertEqual(str(m["Subject"]), "1 person wants to write to you")
        self.assertEqual(m["From"].addresses[0].addr_spec, "postmaster@b.example")
        self.assertEqual(m["To"].addresses[0].addr_spec, "bob@b.example")
        self.assertEqual(str(m["Auto-Submitted"]), "auto-generated")
        self.assertEqual(m.get_content_type(), "text/plain")
        self.assertEqual(m.get_content_charset(), "utf-8")
        self.assertFalse(m.defects, m.defects)
        self.assertIsNotNone(m["Date"].datetime)
        urls = self.links(m, "mallory@a.example")
        for what, url in urls.items():
            self.assertTrue(url.startswith(b.intro_url + "?"), url)
            fields = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
            self.assertEqual(fields["u"], ["bob@b.example"])
            self.assertEqual(fields["s"], ["mallory@a.example"])
            self.assertEqual(fields["do"], [what])
        self.assertEqual(self.intro_row("mallory@a.example"), [["1", "t"]], "not announced")

        # announced once: more stubs from mallory count, they announce nothing
        self.send_stubs([test_stubs.stub("mallory@a.example", "bob@b.example")])
        wait_for(lambda: self.intro_row("mallory@a.example") == [["2", "t"]], timeout=10,
                 what="the second stub counted")
        time.sleep(QUIET)
        self.assertEqual(len(self.naming("mallory@a.example")), 1, "announced twice")

        # GET (a link scanner, a preview): a page with both buttons, nothing changed
        r = curl(urls["accept"])
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type").startswith("text/html"), r)
        self.assertIn(b"mallory@a.example", r.body)
        self.assertIn(b'name="do" value="accept"', r.body)
        self.assertIn(b'name="do" value="decline"', r.body)
        self.assertEqual(self.intro_row("mallory@a.example"), [["2", "t"]])
        self.assertNotIn("mallory@a.example", [c for c, _ in self.book("bob@b.example")])

        # the link turned to another sender or another user: refused, no change
        for url in (self.altered(urls["accept"], s="alice@a.example"),
                    self.altered(urls["accept"], s="eve@a.example"),
                    self.altered(urls["accept"], u="carol@b.example")):
            self.assertEqual(curl(url).status, 400, url)
            r = self.post(url, "accept")
            self.assertEqual(r.status, 400, r)
            self.assertIn(b"does not work", r.body)
        r = self.post(self.altered(urls["accept"], s="eve@a.example"), "decline")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.intro_row("mallory@a.example"), [["2", "t"]])
        self.assertEqual(self.book("carol@b.example"), [["alice@a.example", "admin"]])
        self.assertEqual(self.blocks("bob@b.example") + self.blocks("carol@b.example"), [])
        self.assertEqual(self.in_maildir(b, "bob", tag), [], "fetched before the accept")

        # a POST that says neither: nothing
        self.assertEqual(self.post(urls["accept"], "maybe").status, 400)
        self.assertEqual(self.intro_row("mallory@a.example"), [["2", "t"]])

        # the POST accepts; the waiting mail comes now, not in 10 minutes
        r = self.post(urls["accept"], "accept")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b"Accepted", r.body)
        self.wait_maildir(b, "bob", tag, timeout=15)
        self.assertIn(["mallory@a.example", "user"], self.book("bob@b.example"))
        self.assertEqual(self.intro_row("mallory@a.example"), [])
        time.sleep(QUIET)
        self.assertEqual(len(self.naming("mallory@a.example")), 1, "a digest again")

    def test_decline_blocks_and_hostile_sender_stays_in_the_body(self):
        b = self.b
        # what an address may hold that means something in a header, a URL
        # or quoted-printable
        hostile = "x=?utf-8?q?bcc=_eve?=&s=carol%40b.example'+/@evil.example"
        self.send_stubs([test_stubs.stub(hostile, "bob@b.example")])
        wait_for(lambda: self.intro_row(hostile), timeout=10, what="the introduction")
        m = self.wait_digest(hostile)
        # our headers, and what the MTA adds on delivery: nothing of the sender's
        mta = ("return-path", "delivered-to", "x-original-to", "received")
        self.assertEqual(sorted(k.lower() for k in m.keys() if k.lower() not in mta),
                         ["auto-submitted", "content-transfer-encoding", "content-type",
                          "date", "from", "message-id", "mime-version", "subject", "to"])
        self.assertEqual(str(m["Subject"]), "1 person wants to write to you")
        self.assertEqual([a.addr_spec for a in m["To"].addresses], ["bob@b.example"])
        self.assertFalse(m.defects, m.defects)
        urls = self.links(m, hostile)
        fields = urllib.parse.parse_qs(urllib.parse.urlsplit(urls["decline"]).query)
        self.assertEqual(fields["u"], ["bob@b.example"])
        self.assertEqual(fields["s"], [hostile])

        r = curl(urls["decline"])
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(hostile.encode(), r.body, "not escaped in the page")
        self.assertEqual(self.blocks("bob@b.example"), [])
        r = self.post(urls["decline"], "decline")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b"Declined", r.body)
        self.assertEqual(self.blocks("bob@b.example"), [[hostile, "user"]])
        self.assertEqual(self.intro_row(hostile), [])
        self.assertNotIn(hostile, [c for c, _ in self.book("bob@b.example")])
        # blocked: its stubs introduce it no more, so no digest names it again
        self.send_stubs([test_stubs.stub(hostile, "bob@b.example")])
        time.sleep(QUIET)
        self.assertEqual(self.intro_row(hostile), [])
        self.assertEqual(len(self.naming(hostile)), 1)

    def test_off_sends_nothing(self):
        """Without intro_digest (the default) introductions are recorded
        and nobody is mailed."""
        b = self.b
        conf = b.pollerd_conf
        b.pollerd_conf = self.write_conf(drop=("intro_digest",))
        b.kill_pollerd(sig=15)
        try:
            b.restart_pollerd()
            self.wait_idle()
            before = len(self.digests())
            self.send_stubs([test_stubs.stub("quiet@a.example", "bob@b.example")])
            wait_for(lambda: self.intro_row("quiet@a.example"), timeout=10,
                     what="the introduction")
            time.sleep(QUIET)
            self.assertEqual(len(self.digests()), before, "a digest with intro_digest off")
            self.assertEqual(self.intro_row("quiet@a.example"), [["1", "f"]])
        finally:
            b.kill_pollerd(sig=15)
            b.pollerd_conf = conf
            b.restart_pollerd()
            self.wait_idle()
        # the control: on again, the same introduction is mailed now
        self.wait_digest("quiet@a.example")

    def test_one_digest_between_two_pollers(self):
        """Two pollerds on one database take turns under an advisory lock:
        while another holds it (here a psql session, as a pollerd in the
        middle of its digests would) no digest goes out; released, the one
        introduction is mailed once, not once by each pollerd."""
        b = self.b
        holder = subprocess.Popen(["psql", "-X", "-q", "-t", "-A", "-d", b.conninfo], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        try:
            holder.stdin.write("SELECT 'held' FROM pg_advisory_lock(7239032, "
                               "hashtext('(intro digest)'));\n")
            holder.stdin.flush()
            self.assertEqual(holder.stdout.readline().strip(), "held")
            b.start_pollerd("pollerd2")
            self.send_stubs([test_stubs.stub("twice@a.example", "bob@b.example")])
            wait_for(lambda: self.intro_row("twice@a.example"), timeout=10,
                     what="the introduction")
            time.sleep(QUIET)
            self.assertEqual(self.naming("twice@a.example"), [],
                             "a digest went out while another pollerd held the lock")
            holder.stdin.close()
            holder.wait(timeout=10)
            self.wait_digest("twice@a.example")
            time.sleep(QUIET)
            self.assertEqual(len(self.naming("twice@a.example")), 1,
                             "mailed by each pollerd")
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
            b.kill_pollerd(sig=15, name="pollerd2")

    def test_config_checked(self):
        for drop, add, word in ((("introductions",), ("introductions no",), "intro_digest"),
                                (("intro_url",), (), "intro_url"),
                                (("intro_url",), ("intro_url http://x.example/i",),
                                 "intro_url"),
                                (("intro_digest",), ("intro_digest soon",), "intro_digest")):
            path = self.write_conf(drop=drop, add=add)
            r = subprocess.run([POLLERD_BIN, "-c", path, "-n"], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 78, "%s: %s" % (add, r.stderr))
            self.assertIn(word, r.stderr)
        os.unlink(path)
