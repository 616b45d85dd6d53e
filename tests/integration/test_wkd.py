"""Recipients' own keys (WKD on the outbox origin), end to end:

- bob@b.example publishes his key with gpg-wks-client --install-key in
  b.example's WKD directory: alice's message to him is stored in
  a.example's spool encrypted to both b.example's domain key and bob's key
  (the pubkey-encrypted packets of the spool file name both encryption
  subkeys), and bob still gets it verified (stubmail=pass);
- carol publishes nothing: the stored body is encrypted to the domain key
  only, and the negative answer is cached: a second message causes no
  second request to b.example (its access log) until the cache row expires;
- a key whose user id is another address, an expired key, a revoked key, a
  blob with a secret key, two keys, junk and an oversized answer are
  refused (logged by the milter, cached as refused, none of them in
  a.example's keyring); the mail is encrypted to the domain key alone and
  delivered all the same;
- a cached key is reused without a new request;
- with recipient_keys = no, nothing is looked up;
- the example URL of docs/PROTOCOL.md ("Recipient keys") is what
  gpg-wks-client computes for the draft's test vector, on the outbox origin."""

import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse

from support import SandboxTest, make_message, split_message, header_lines, q, stored_body
from sandbox import WKS_CLIENT
from test_protocol_examples import sections, block


def gpg(home, *args, data=None):
    r = subprocess.run(["gpg", "--homedir", home, "--batch", "--quiet", "--pinentry-mode",
                        "loopback", "--passphrase", ""] + list(args),
                       input=data, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("gpg %s: %s" % (" ".join(args), r.stderr.decode()))
    return r.stdout


def fpr_of(home, address):
    out = gpg(home, "--with-colons", "--list-keys", "<%s>" % address).decode()
    return re.search(r"^fpr:+([0-9A-F]+):", out, re.M).group(1)


def enc_subkey_ids(home, fpr):
    """Key ids of the encryption subkeys of key fpr in home."""
    out = gpg(home, "--with-colons", "--list-keys", fpr).decode()
    return {f[4] for f in (l.split(":") for l in out.splitlines())
            if f[0] == "sub" and "e" in f[11]}


def packet_keyids(body):
    """Key ids of the pubkey-encrypted session key packets of an OpenPGP
    message (bytes), as gpg --list-packets names them (without any secret
    key)."""
    with tempfile.TemporaryDirectory(prefix="lp", dir="/tmp") as home:
        os.chmod(home, 0o700)
        r = subprocess.run(["gpg", "--homedir", home, "--batch", "--list-packets"],
                           input=body, capture_output=True, timeout=60)
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
    return set(re.findall(rb":pubkey enc packet: .*keyid ([0-9A-F]{16})", r.stdout))


class WkdTest(SandboxTest):
    DOMAINS = ("a.example", "b.example")

    @classmethod
    def setUpWorld(cls):
        b = cls.b
        # the users' own keys, made in a home of their own (b.example's users)
        cls.uhome = os.path.join(cls.sb.rundir, "u")
        os.makedirs(cls.uhome, mode=0o700)

        def gen(uid, *extra):
            gpg(cls.uhome, *extra, "--quick-gen-key", uid, "future-default", "default",
                "1d" if extra else "never")

        gen("Bob <bob@b.example>")
        gen("Mallory <mallory@b.example>")
        gen("Erin <erin@b.example>", "--faked-system-time", "20200101T000000")
        gen("Frank <frank@b.example>")
        gen("Alice B <alice@b.example>")
        cls.bob_fpr = fpr_of(cls.uhome, "bob@b.example")
        frank = fpr_of(cls.uhome, "frank@b.example")
        rev = open(os.path.join(cls.uhome, "openpgp-revocs.d", frank + ".rev"), "rb").read()
        gpg(cls.uhome, "--import", data=rev.replace(b"\n:-----", b"\n-----"))

        # what b.example's admin publishes
        b.wkd_install(cls.uhome, cls.bob_fpr, "bob@b.example")
        export = lambda a: gpg(cls.uhome, "--export", "<%s>" % a)     # noqa: E731
        cls.bad = {
            "dave@b.example": (export("mallory@b.example"), "no user id with the address"),
            "erin@b.example": (export("erin@b.example"), "is expired"),
            "frank@b.example": (export("frank@b.example"), "is revoked"),
            "mallory@b.example": (gpg(cls.uhome, "--export-secret-keys", "<mallory@b.example>"),
                                  "secret key material"),
            "alice@b.example": (export("alice@b.example") + export("bob@b.example"),
                                "more than one key"),
        }
        for addr, (blob, _) in cls.bad.items():
            b.wkd_publish(addr, blob)

    @classmethod
    def tearDownClass(cls):
        if cls.sb is not None and getattr(cls, "uhome", None):
            subprocess.run(["gpgconf", "--homedir", cls.uhome, "--kill", "all"],
                           capture_output=True)
        super().tearDownClass()

    # -- helpers -------------------------------------------------------------
    def wkd_requests(self, address):
        local, domain = address.split("@")
        h = os.path.basename(self.b.wkd_path(address))
        return self.access_lines(self.b, r'"GET /\.well-known/openpgpkey/%s/hu/%s\?l=%s HTTP'
                                 % (re.escape(domain), h, re.escape(local)))

    def stored(self, to, subject):
        """Send alice -> to (a list) and return (message, tag, message id,
        key ids of the stored body's encrypted-key packets). Nobody at
        b.example knows alice (any more), so the body waits in a.example's
        spool."""
        msg, tag = make_message("alice@a.example", to, subject)
        self.b.sql("DELETE FROM address_book WHERE contact = 'alice@a.example'")
        rows = self.send_stored(self.a, "alice@a.example", to, msg)
        mid = rows[0][0]
        return msg, tag, mid, packet_keyids(stored_body(self.a, mid))

    def milter_lines(self, regex):
        with open(self.a.milter_log, errors="replace") as f:
            return [l for l in f if re.search(regex, l)]

    def deliver_verified(self, user, msg, tag):
        self.b.add_contact("%s@b.example" % user, "alice@a.example")
        got = self.wait_maildir(self.b, user, tag, timeout=40)
        head, body = split_message(got[0][1])
        self.assertEqual(body, split_message(msg)[1], "body changed on the way")
        results = [h for h in header_lines(head) if h.startswith("Authentication-Results:")]
        self.assertEqual(len(results), 1, header_lines(head))
        self.assertRegex(results[0], r"^Authentication-Results: b\.example; stubmail=pass\b")

    @property
    def domain_ids(self):
        return {k.encode() for k in enc_subkey_ids(self.b.gnupg_home, self.b.fpr)}

    # -- tests ---------------------------------------------------------------
    def test_protocol_example(self):
        doc = sections()
        example = block(doc, "Recipient keys", "GET ").strip()
        text = [v for k, v in doc.items() if k.startswith("Recipient keys")][0]["text"]
        outbox = re.search(r"whose outbox is\s+`(https://[^`]+)`", text)
        self.assertTrue(outbox, "PROTOCOL.md names no outbox URL for the example")
        std = subprocess.run([WKS_CLIENT, "--print-wkd-url", "Joe.Doe@Example.ORG"],
                             capture_output=True, text=True, check=True).stdout.strip()
        o, w = urllib.parse.urlsplit(outbox.group(1)), urllib.parse.urlsplit(std)
        self.assertEqual(example, "GET %s://%s%s?%s" % (o.scheme, o.netloc, w.path, w.query))
        self.assertIn("/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=joe.doe", example)

    def test_encrypted_to_user_and_domain_key(self):
        bob_ids = {k.encode() for k in enc_subkey_ids(self.uhome, self.bob_fpr)}
        self.a.sql("DELETE FROM recipient_key WHERE address = 'bob@b.example'")
        before = len(self.wkd_requests("bob@b.example"))    # other tests' lookups
        msg, tag, mid, ids = self.stored(["bob@b.example"], "to bob's own key")
        self.assertEqual(ids, self.domain_ids | bob_ids,
                         "stored body not encrypted to exactly b.example's and bob's keys")
        self.assertEqual(len(self.wkd_requests("bob@b.example")), before + 1)
        self.assertEqual(self.a.sql("SELECT status, fpr FROM recipient_key WHERE address = "
                                    "'bob@b.example'"), [["found", self.bob_fpr]])
        self.assertTrue(self.milter_lines(r"to=bob@b\.example: recipient key %s from https://"
                                          r"127\.0\.0\.3:\d+/\.well-known/openpgpkey/b\.example/hu/"
                                          % self.bob_fpr))
        self.deliver_verified("bob", msg, tag)

        # the cached key serves the next message without a request
        msg, tag, mid, ids = self.stored(["bob@b.example"], "to bob again")
        self.assertEqual(ids, self.domain_ids | bob_ids)
        self.assertEqual(len(self.wkd_requests("bob@b.example")), before + 1,
                         "bob's key fetched twice")
        self.deliver_verified("bob", msg, tag)

    def test_no_key_negative_cache(self):
        self.a.sql("DELETE FROM recipient_key WHERE address = 'carol@b.example'")
        before = len(self.wkd_requests("carol@b.example"))  # other tests' lookups
        msg, tag, mid, ids = self.stored(["carol@b.example"], "carol has no key")
        self.assertEqual(ids, self.domain_ids)
        self.assertEqual(len(self.wkd_requests("carol@b.example")), before + 1)
        self.assertEqual(self.a.sql("SELECT status FROM recipient_key WHERE address = "
                                    "'carol@b.example'"), [["none"]])
        msg2, tag2, mid2, ids2 = self.stored(["carol@b.example"], "carol still has no key")
        self.assertEqual(ids2, self.domain_ids)
        self.assertEqual(len(self.wkd_requests("carol@b.example")), before + 1,
                         "negative answer not cached")
        # the TTL is over: looked up again
        self.a.sql("UPDATE recipient_key SET expires_at = now() - interval '1 second' "
                   "WHERE address = 'carol@b.example'")
        msg3, tag3, mid3, ids3 = self.stored(["carol@b.example"], "carol, later")
        self.assertEqual(len(self.wkd_requests("carol@b.example")), before + 2)
        self.deliver_verified("carol", msg, tag)
        self.wait_maildir(self.b, "carol", tag3, timeout=40)

    def test_bad_keys_refused_mail_delivered(self):
        users = sorted(self.bad)
        # looked up now, not answered from what another test cached
        self.a.sql("DELETE FROM recipient_key WHERE address IN (%s)"
                   % ", ".join(q(u) for u in users))
        msg, tag, mid, ids = self.stored(users, "bad keys")
        self.assertEqual(ids, self.domain_ids, "encrypted to a refused key")
        rows = dict(self.a.sql("SELECT address, status FROM recipient_key WHERE address IN (%s)"
                               % ", ".join(q(u) for u in users)))
        self.assertEqual(rows, {u: "refused" for u in users})
        for addr, (_, reason) in self.bad.items():
            self.assertTrue(self.milter_lines(r"to=%s: recipient key refused, encrypted to the "
                                              r"domain key only: .*%s" % (re.escape(addr), reason)),
                            "no log line saying why %s's key was refused" % addr)
        keyring = gpg(self.a.gnupg_home, "--with-colons", "--list-keys").decode()
        for addr in ("mallory@b.example", "erin@b.example", "frank@b.example",
                     "alice@b.example"):
            self.assertNotIn(fpr_of(self.uhome, addr), keyring,
                             "%s's refused key got into a.example's keyring" % addr)
        for addr in users:
            self.deliver_verified(addr.split("@")[0], msg, tag)

    def test_junk_and_oversized(self):
        b = self.b
        b.wkd_publish("dave@b.example", os.urandom(3000))
        b.wkd_publish("erin@b.example", b"\x99" + os.urandom(300 * 1024))
        try:
            self.a.sql("DELETE FROM recipient_key WHERE address IN ('dave@b.example', "
                       "'erin@b.example')")
            msg, tag, mid, ids = self.stored(["dave@b.example", "erin@b.example"], "junk keys")
            self.assertEqual(ids, self.domain_ids)
            self.assertTrue(self.milter_lines(r"to=dave@b\.example: recipient key refused.*"
                                              r"no OpenPGP key in the answer"))
            self.assertTrue(self.milter_lines(r"to=erin@b\.example: recipient key refused.*"
                                              r"larger than 262144 bytes"))
            self.deliver_verified("dave", msg, tag)
            self.deliver_verified("erin", msg, tag)
        finally:        # what setUpWorld published, for the other tests
            for addr in ("dave@b.example", "erin@b.example"):
                b.wkd_publish(addr, self.bad[addr][0])

    def test_unreachable_is_no_failure(self):
        """An outbox origin that does not answer (b.example's admin-known
        outbox moved to a closed port; the domain key is in the keyring
        already): the lookup fails, is logged and cached for a short while,
        and the mail is stored and delivered all the same."""
        a, b = self.a, self.b
        closed = b.https_port + 1       # nothing listens there
        # the domain key is in the keyring already (as after any earlier
        # message, whichever test sent it): only the recipient key is asked
        # of the closed port
        gpg(a.gnupg_home, "--import", data=gpg(b.gnupg_home, "--export", b.fpr))
        a.add_peer(b, both=False, fpr=b.fpr,
                   outbox_url="https://%s:%d/stubmail" % (b.ip, closed))
        try:
            a.sql("DELETE FROM recipient_key WHERE address = 'carol@b.example'")
            msg, tag, mid, ids = self.stored(["carol@b.example"], "outbox unreachable")
            self.assertEqual(ids, self.domain_ids)
            self.assertTrue(self.milter_lines(r"to=carol@b\.example: recipient key lookup failed"
                                              r", encrypted to the domain key only: GET https://"
                                              r"127\.0\.0\.3:%d/\.well-known/" % closed))
            row = a.sql("SELECT status, expires_at - fetched_at <= interval '5 minutes' "
                        "FROM recipient_key WHERE address = 'carol@b.example'")
            self.assertEqual(row, [["error", "t"]])
        finally:
            a.sql("DELETE FROM peer WHERE domain = 'b.example'")
        self.deliver_verified("carol", msg, tag)

    def test_silent_origin_one_budget_per_message(self):
        """An outbox origin that accepts the connection and then says
        nothing: the lookups of one message share one recipient_key_timeout,
        so four fresh recipients cost one timeout, not four (which would
        keep DATA past Postfix's milter_command_timeout). The first lookup
        runs out and is cached as an error; the other three are left out,
        not cached, and the message is stored all the same."""
        a, b = self.a, self.b
        silent = socket.socket()
        silent.bind((b.ip, 0))
        silent.listen(16)           # the kernel completes handshakes; nobody answers
        # the domain key is in the keyring already (as after any earlier
        # message): only the recipient keys are asked of the silent origin
        gpg(a.gnupg_home, "--import", data=gpg(b.gnupg_home, "--export", b.fpr))
        a.stop_milter()
        with open(a.milter_conf, "a") as f:
            f.write("recipient_key_timeout 2s\n")
        a.add_peer(b, both=False, fpr=b.fpr,
                   outbox_url="https://%s:%d/stubmail" % (b.ip, silent.getsockname()[1]))
        rcpts = ["quiet%d@b.example" % i for i in range(4)]
        try:
            a.start_milter()
            a.sql("DELETE FROM recipient_key")
            t0 = time.monotonic()
            msg, tag, mid, ids = self.stored(rcpts, "silent origin")
            took = time.monotonic() - t0
            self.assertEqual(ids, self.domain_ids)
            self.assertEqual(len(self.milter_lines(r"to=quiet\d@b\.example: recipient key "
                                                   r"lookup failed")), 1)
            self.assertTrue(self.milter_lines(r"3 recipient key lookups left out, encrypted "
                                              r"to the domain key only"))
            self.assertEqual(a.sql("SELECT status FROM recipient_key"), [["error"]])
            self.assertLess(took, 4 * 2, "the lookups took one timeout each")
        finally:
            silent.close()
            a.sql("DELETE FROM peer WHERE domain = 'b.example'")
            a.stop_milter()
            a._setup_milter()
            a.start_milter()

    def test_switched_off(self):
        a = self.a
        a.stop_milter()
        with open(a.milter_conf, "a") as f:
            f.write("recipient_keys no\n")
        try:
            a.start_milter()
            a.sql("DELETE FROM recipient_key")
            before = len(self.wkd_requests("bob@b.example"))
            msg, tag, mid, ids = self.stored(["bob@b.example"], "no recipient keys")
            self.assertEqual(ids, self.domain_ids)
            self.assertEqual(len(self.wkd_requests("bob@b.example")), before)
            self.assertEqual(a.count("recipient_key"), 0)
            self.deliver_verified("bob", msg, tag)
        finally:
            a.stop_milter()
            a._setup_milter()
            a.start_milter()
