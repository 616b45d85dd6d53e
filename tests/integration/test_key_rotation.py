"""A whole key rotation (docs/PROTOCOL.md "Key rotation") on real servers,
with mail waiting in an outbox across each step, both ways round:

- the sender a.example rotates while its mail to b.example waits: signed
  by the old key O before the switch, by the new key N after it. b.example
  holds a's start record (fpr=O; fpr-alt=N) and neither key, while a's GET
  /v1/key serves N already: its pollerd fetches both from GET
  /v1/key/{fpr} and takes both messages;
- the receiver b.example rotates while a's outbox holds mail encrypted to
  b's old key, one message sealed after b's switch by a milter that still
  holds b's start record but not the old key (fetched from GET
  /v1/key/{fpr}): b's pollerd, switched to its new key, still decrypts
  them with the old one, and a's next message is encrypted to the new key.

Each message is delivered exactly once and none is refused. Plus GET
/v1/key/{fpr} itself: either key by fingerprint in either case, 404
not_found for anything else; and a second StubmailPublicKey file that is
no key, or the first key again, stops Apache's start."""
import json
import os
import shutil
import signal
import subprocess

from support import SandboxTest, make_message, message_ids_in_maildirs, curl, TOP

CTL_BIN = os.path.join(TOP, "admin", "stubmailctl")
NO_SUCH_KEY = "0" * 40


class KeyRotationTest(SandboxTest):
    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")
        cls.a.add_contact("alice@a.example", "bob@b.example")

    # -- helpers ------------------------------------------------------------
    def ctl_json(self, isp, *args):
        """stubmailctl --json for isp, over its own keyring and domain_key."""
        conf = isp.path("stubmailctl-rotation.conf")
        with open(conf, "w") as f:
            f.write("database %s\ndomain %s\ngnupg_home %s\ndomain_key %s\nresolver %s\n"
                    "ca_file %s\n" % (isp.conninfo, isp.domain, isp.gnupg_home, isp.fpr,
                                      isp.resolver, isp.ca_file))
        r = subprocess.run([CTL_BIN, "-c", conf] + list(args) + ["--json"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "stubmailctl %s: %s%s" % (" ".join(args), r.stderr,
                                                                    r.stdout))
        return json.loads(r.stdout)

    def put_back(self, isp, record):
        """isp as the sandbox made it: its key everywhere, its record."""
        isp.httpd_extra = [kv for kv in isp.httpd_extra if kv[0] != "StubmailPublicKey"]
        isp.restart_httpd()
        isp.restart_milter([])
        isp.restart_pollerd([])
        self.sb.set_txt(isp.domain, record)

    def switch(self, isp, new, new_file, old_file):
        """Step 2 at isp, as `key rotate switch` says: domain_key the new
        key for the milter and pollerd, mod_stubmail serving both keys."""
        isp.restart_milter(["domain_key " + new])
        isp.httpd_extra.append(("StubmailPublicKey", '"%s" "%s"' % (new_file, old_file)))
        isp.restart_httpd()

    def holds(self, isp, fpr):
        return subprocess.run(["gpg", "--homedir", isp.gnupg_home, "--batch", "--list-keys",
                               fpr], capture_output=True, timeout=30).returncode == 0

    def stored(self, isp, subject):
        """Send a message from alice to bob; wait until it waits in isp's
        outbox; return its tag."""
        msg, tag = make_message("alice@a.example", "bob@b.example", subject)
        self.send_stored(isp, "alice@a.example", "bob@b.example", msg)
        return tag

    def delivered_once(self, tags):
        """Each tag in bob's Maildir once, every Message-ID once, nothing
        refused at a, nothing quarantined at b."""
        for tag in tags:
            self.assertEqual(len(self.in_maildir(self.b, "bob", tag)), 1, tag)
        twice = {m: n for m, n in message_ids_in_maildirs(self.b).items() if n != 1}
        self.assertEqual(twice, {}, "delivered more than once")
        self.assertEqual(self.a.sql("SELECT count(*) FROM outbox WHERE rejected_reason "
                                    "IS NOT NULL"), [["0"]])
        quarantined = os.listdir(self.b.quarantine_dir) if os.path.isdir(
            self.b.quarantine_dir) else []
        self.assertEqual(quarantined, [])

    def signed_by(self, tag, fpr):
        (_, data), = self.in_maildir(self.b, "bob", tag)
        self.assertIn(b"stubmail=pass", data)
        self.assertIn(("(key %s)" % fpr).encode(), data)

    # -- the tests ----------------------------------------------------------
    def test_sender_rotates_with_mail_waiting(self):
        a, b, old = self.a, self.b, self.a.fpr
        self.addCleanup(self.put_back, a, self.sb.dns.records["_stubmail.a.example"])
        self.addCleanup(lambda: "pollerd" in b.procs or b.start_pollerd())
        # b has never pulled from a: it holds neither key, and GET v1/key
        # will serve N while b's record names O as fpr
        b.kill_pollerd(sig=signal.SIGTERM)
        subprocess.run(["gpg", "--homedir", b.gnupg_home, "--batch", "--yes",
                        "--delete-keys", old], capture_output=True, timeout=30)
        self.assertFalse(self.holds(b, old))

        start = self.ctl_json(a, "key", "rotate", "start")
        new = start["fpr_alt"]
        self.sb.set_txt("a.example", start["record"])      # fpr=O; fpr-alt=N
        tag1 = self.stored(a, "signed by the old key")

        new_file, old_file = a.path("key-new.asc"), a.path("key-old.asc")
        switch = self.ctl_json(a, "key", "rotate", "switch", "-o", new_file,
                               "--old-key-file", old_file)
        self.switch(a, new, new_file, old_file)
        a.restart_pollerd(["domain_key " + new])
        tag2 = self.stored(a, "signed by the new key")
        self.assertFalse(self.holds(b, new), "b must not hold the new key beforehand")

        # b still holds the start record: fpr O, fpr-alt N
        b.start_pollerd()
        self.wait_maildir(b, "bob", tag1)
        self.wait_maildir(b, "bob", tag2)
        self.signed_by(tag1, old)
        self.signed_by(tag2, new)
        for fpr in (old, new):
            self.assertTrue(self.access_lines(a, r'"GET /stubmail/v1/key/%s HTTP/1.1" 200'
                                              % fpr), "b fetched %s at GET /v1/key/{fpr}" % fpr)

        # the switch record reaches b: fpr=N; fpr-alt=O
        self.sb.set_txt("a.example", switch["record"])
        tag3 = self.stored(a, "signed by the new key, record switched")
        self.wait_maildir(b, "bob", tag3)
        self.signed_by(tag3, new)
        self.delivered_once([tag1, tag2, tag3])

    def test_receiver_rotates_with_mail_encrypted_to_its_old_key(self):
        a, b, old = self.a, self.b, self.b.fpr
        self.addCleanup(self.put_back, b, self.sb.dns.records["_stubmail.b.example"])
        self.addCleanup(lambda: a.restart_milter([]))
        b.kill_pollerd(sig=signal.SIGTERM)
        tag1 = self.stored(a, "encrypted to the old key before the rotation")
        start = self.ctl_json(b, "key", "rotate", "start")
        new = start["fpr_alt"]
        self.sb.set_txt("b.example", start["record"])      # fpr=O; fpr-alt=N

        new_file, old_file = b.path("key-new.asc"), b.path("key-old.asc")
        switch = self.ctl_json(b, "key", "rotate", "switch", "-o", new_file,
                               "--old-key-file", old_file)
        self.assertTrue(any("StubmailPublicKey %s %s" % (new_file, old_file) in t
                            for t in switch["todo"]), switch["todo"])
        self.switch(b, new, new_file, old_file)
        # a's milter still holds the start record but has lost O (a new
        # machine, say), and b's GET v1/key serves N: O comes from
        # GET v1/key/{fpr}, and the mail is encrypted to O all the same
        subprocess.run(["gpg", "--homedir", a.gnupg_home, "--batch", "--yes",
                        "--delete-keys", old], capture_output=True, timeout=30)
        self.assertFalse(self.holds(a, old))
        a.restart_milter()
        tag2 = self.stored(a, "encrypted to the old key after b switched")
        self.assertTrue(self.access_lines(b, r'"GET /stubmail/v1/key/%s HTTP/1.1" 200' % old),
                        "a's milter fetched O at GET /v1/key/{fpr}")

        self.sb.set_txt("b.example", switch["record"])     # fpr=N; fpr-alt=O
        b.restart_pollerd(["domain_key " + new])
        self.wait_maildir(b, "bob", tag1)
        self.wait_maildir(b, "bob", tag2)
        with open(b.pollerd_log, errors="replace") as f:
            self.assertIn("our other domain key(s) of a rotation: " + old, f.read())

        # a reads the switched record: its next message goes to N
        self.assertFalse(self.holds(a, new))
        tag3 = self.stored(a, "encrypted to the new key")
        self.wait_maildir(b, "bob", tag3)
        self.assertTrue(self.holds(a, new), "a's milter fetched N to encrypt to it")
        self.delivered_once([tag1, tag2, tag3])

    def test_key_by_fpr(self):
        a, b = self.a, self.b
        self.addCleanup(self.put_back, a, self.sb.dns.records["_stubmail.a.example"])
        with open(a.key.public, "rb") as f:
            ours = f.read()
        with open(b.key.public, "rb") as f:
            other = f.read()
        base = a.outbox_url + "/v1/key/"
        r = curl(base + b.fpr)
        self.assertEqual((r.status, r.json()["error"]), (404, "not_found"), r)

        # b's key stands in for the other key of a rotation: any key will do
        a.httpd_extra.append(("StubmailPublicKey", '"%s" "%s"' % (a.key.public, b.key.public)))
        a.restart_httpd()
        for fpr, key in ((a.fpr, ours), (a.fpr.lower(), ours), (b.fpr, other),
                         (b.fpr.lower(), other)):
            r = curl(base + fpr)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("content-type"), "application/pgp-keys")
            self.assertEqual(r.body, key, fpr)
        self.assertEqual(curl(a.outbox_url + "/v1/key").body, ours)
        r = curl(base + a.fpr, method="HEAD", extra=("-I",))
        self.assertEqual((r.status, r.body), (200, b""))
        for bad in (NO_SUCH_KEY, "0" * 64, a.fpr[:39], "not-a-fingerprint"):
            r = curl(base + bad)
            self.assertEqual((r.status, r.json()["error"]), (404, "not_found"), bad)
        r = curl(base + a.fpr, method="POST", data="{}")
        self.assertEqual((r.status, r.header("allow")), (405, "GET, HEAD"), r)

    def test_a_bad_key_file_stops_the_start(self):
        """A second StubmailPublicKey file that holds no key, or the same
        key as the first: Apache does not start, the log naming the file."""
        a = self.a
        self.addCleanup(self.put_back, a, self.sb.dns.records["_stubmail.a.example"])
        a.expect_log(r"\[stubmail:crit\] .* stubmail: StubmailPublicKey ")
        bad, same = a.path("not-a-key.asc"), a.path("same-key.asc")
        with open(bad, "w") as f:
            f.write("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n"
                    "-----END PGP PUBLIC KEY BLOCK-----\n")
        shutil.copy(a.key.public, same)
        for other, why in ((bad, "StubmailPublicKey %s: no OpenPGP public key in it" % bad),
                           (same, "StubmailPublicKey %s and %s hold the same key %s"
                            % (a.key.public, same, a.fpr))):
            a.httpd_extra = [kv for kv in a.httpd_extra if kv[0] != "StubmailPublicKey"]
            a.httpd_extra.append(("StubmailPublicKey", '"%s" "%s"' % (a.key.public, other)))
            with self.assertRaises(Exception) as refused:
                a.restart_httpd()
            self.assertIn(why, str(refused.exception))
