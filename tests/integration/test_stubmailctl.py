"""stubmailctl against the real sandbox: every subcommand's human and JSON
answers and exit statuses, site-wide contacts pulled by pollerd for a user
who never wrote to them, and `check` against a good domain and broken ones
(a wrong fpr, an outbox that is down)."""
import itertools
import json
import os
import shutil
import subprocess
import tempfile

from support import SandboxTest, make_message, wait_for, TOP, login, login_body

CTL_BIN = os.path.join(TOP, "admin", "stubmailctl")


class CtlTest(SandboxTest):
    UDP_POLL = True
    confs = itertools.count()

    def conf(self, isp, **override):
        """A stubmailctl.conf for isp (written in its run directory)."""
        keys = dict(database=isp.conninfo, domain=isp.domain, gnupg_home=isp.gnupg_home,
                    domain_key=isp.fpr, resolver=isp.resolver, ca_file=isp.ca_file)
        keys.update(override)
        path = isp.path("stubmailctl-%d.conf" % next(self.confs))
        with open(path, "w") as f:
            for k, v in keys.items():
                if v is not None:
                    f.write("%s %s\n" % (k, v))
        return path

    def ctl(self, isp, *args, conf=None, as_json=False, timeout=60):
        """(exit status, stdout, stderr) of stubmailctl run for isp; with
        as_json, stdout parsed."""
        argv = [CTL_BIN, "-c", conf or self.conf(isp)] + list(args)
        if as_json:
            argv.append("--json")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        out = r.stdout
        if as_json and r.returncode in (0, 1) and out.strip():
            out = json.loads(out)
        return r.returncode, out, r.stderr

    def ok(self, isp, *args, **kw):
        rc, out, err = self.ctl(isp, *args, **kw)
        self.assertEqual(rc, 0, "stubmailctl %s: %s%s" % (" ".join(args), err, out))
        return out


class PeerDnsBookTest(CtlTest):
    def setUp(self):
        super().setUp()
        for isp in (self.a, self.b):
            isp.sql("DELETE FROM peer WHERE domain = 'x.example'")
            isp.sql("DELETE FROM address_book WHERE owner = 'dave@b.example'")
            isp.sql("DELETE FROM address_block WHERE owner = 'dave@b.example'")

    def test_peer_pin_optout_remove(self):
        a = self.a
        fpr = "ab" * 20
        out = self.ok(a, "peer", "pin", "X.Example", "https://127.0.0.9:1/stubmail", fpr)
        self.assertIn("pinned x.example", out)
        rows = self.ok(a, "peer", "list", as_json=True)
        self.assertIn({"domain": "x.example", "pulling": True,
                       "outbox_url": "https://127.0.0.9:1/stubmail", "fpr": fpr.upper()}, rows)
        self.assertIn("x.example", self.ok(a, "peer", "list"))
        answer = self.ok(a, "peer", "optout", "x.example", as_json=True)
        self.assertEqual((answer["ok"], answer["domain"]), (True, "x.example"))
        self.assertEqual(a.sql("SELECT pulling FROM peer WHERE domain = 'x.example'"), [["f"]])
        self.ok(a, "peer", "remove", "x.example")
        rc, _, err = self.ctl(a, "peer", "remove", "x.example")
        self.assertEqual(rc, 1)
        self.assertIn("no peer row for x.example", err)

    def test_bad_arguments_name_what_was_wrong(self):
        a = self.a
        rc, _, err = self.ctl(a, "peer", "pin", "x.example", "https://127.0.0.9/s", "12345")
        self.assertEqual(rc, 64)
        self.assertIn('fingerprint "12345"', err)
        rc, _, err = self.ctl(a, "peer", "pin", "x.example", "ftp://127.0.0.9/s", "ab" * 20)
        self.assertEqual(rc, 64)
        self.assertIn("ftp://127.0.0.9/s", err)
        rc, _, err = self.ctl(a, "book", "add", "dave@b.example", "not an address")
        self.assertEqual(rc, 64)
        self.assertIn('contact "not an address"', err)
        rc, _, err = self.ctl(a, "frobnicate")
        self.assertEqual(rc, 64)
        self.assertIn('no subcommand "frobnicate"', err)
        rc, _, err = self.ctl(a, "peer", "list", conf=a.path("no-such.conf"))
        self.assertEqual(rc, 78)
        self.assertIn("no-such.conf", err)
        rc, _, err = self.ctl(a, "peer", "list",
                              conf=self.conf(a, database="host=127.0.0.1 port=1"))
        self.assertEqual(rc, 75)
        self.assertIn("cannot connect", err)
        self.assertEqual(a.count("peer", "domain = 'x.example'"), 0)

    def test_dns_list_and_flush(self):
        a = self.a
        a.sql("INSERT INTO dns_cache (domain, status, why, expires_at)"
              " VALUES ('x.example', 'none', 'NXDOMAIN', now() + interval '1 hour')")
        rows = self.ok(a, "dns", "list", as_json=True)
        self.assertIn("x.example", [r["domain"] for r in rows])
        self.assertIn("NXDOMAIN", self.ok(a, "dns", "list"))
        answer = self.ok(a, "dns", "flush", "x.example", as_json=True)
        self.assertEqual(answer["flushed"], "1")
        self.assertEqual(a.count("dns_cache", "domain = 'x.example'"), 0)
        self.assertIn("flushed 0 cached answers for x.example",
                      self.ok(a, "dns", "flush", "x.example"))

    def test_book_add_block_unblock_remove(self):
        b = self.b
        self.ok(b, "book", "add", "Dave@B.Example", "*@A.example")
        self.ok(b, "book", "add", "dave@b.example", "carol@a.example")
        rows = self.ok(b, "book", "list", "dave@b.example", as_json=True)
        self.assertEqual([(r["contact"], r["kind"], r["source"]) for r in rows
                          if r["kind"] != "site"],
                         [("*@a.example", "book", "admin"), ("carol@a.example", "book", "admin")])
        out = self.ok(b, "book", "block", "dave@b.example", "carol@a.example")
        self.assertIn("removed it from the address book", out)
        self.assertEqual(b.sql("SELECT contact, source FROM address_block"
                               " WHERE owner = 'dave@b.example'"), [["carol@a.example", "admin"]])
        self.assertIn("blocked", self.ok(b, "book", "list", "dave@b.example"))
        self.ok(b, "book", "unblock", "dave@b.example", "carol@a.example")
        rc, _, err = self.ctl(b, "book", "unblock", "dave@b.example", "carol@a.example")
        self.assertEqual(rc, 1)
        self.assertIn("not blocked", err)
        self.ok(b, "book", "remove", "dave@b.example", "*@a.example")
        self.assertEqual(b.count("address_book", "owner = 'dave@b.example'"), 0)
        rc, _, err = self.ctl(b, "book", "add", "dave@a.example", "carol@a.example")
        self.assertEqual(rc, 64)
        self.assertIn("not at our domain b.example", err)


class SiteWideTest(CtlTest):
    """A notification sender no user ever wrote to, entered once for the
    whole site: pollerd pulls its mail for every local user."""

    @classmethod
    def setUpWorld(cls):
        # bob has an address book (he wrote to alice), but never to notify@
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def test_site_wide_sender_pulled_for_a_user_who_never_wrote_to_it(self):
        a, b = self.a, self.b
        out = self.ok(b, "book", "site", "add", "notify@A.Example")
        self.assertIn("every local user pulls its mail", out)
        self.assertEqual(self.ok(b, "book", "site", "list", as_json=True)[0]["contact"],
                         "notify@a.example")
        self.assertIn("site", [r["kind"] for r in
                               self.ok(b, "book", "list", "bob@b.example", as_json=True)])
        msg, tag = make_message("notify@a.example", "bob@b.example", "your flight")
        self.send_ok(a, "notify@a.example", "bob@b.example", msg)
        self.wait_maildir(b, "bob", tag, timeout=30)
        self.assertEqual(b.count("address_book", "contact = 'notify@a.example'"), 0,
                         "pulled through the site-wide entry, not an address-book entry")

    def test_site_remove_and_unknown(self):
        b = self.b
        self.ok(b, "book", "site", "add", "*@c.example")
        self.ok(b, "book", "site", "remove", "*@c.example")
        rc, _, err = self.ctl(b, "book", "site", "remove", "*@c.example")
        self.assertEqual(rc, 1)
        self.assertIn("not a site-wide contact", err)
        rc, _, err = self.ctl(b, "book", "site", "add", "*@b.example")
        self.assertEqual(rc, 64)
        self.assertIn("our own domain", err)


class OutboxTest(CtlTest):
    """The sender's view: b.example pulls nothing from erin (not in an
    address book there), so her message waits."""

    def test_waiting_stuck_and_quota(self):
        a = self.a
        msg, _ = make_message("erin@a.example", "bob@b.example", "waits")
        self.send_stored(a, "erin@a.example", "bob@b.example", msg)
        rows = self.ok(a, "outbox", "--domain", "b.example", "--stuck", "0s", as_json=True)
        self.assertEqual(len(rows), 1)
        self.assertEqual((rows[0]["domain"], rows[0]["stuck"]), ("b.example", rows[0]["waiting"]))
        self.assertGreaterEqual(rows[0]["waiting"], 1)
        self.assertIsNotNone(rows[0]["oldest"])
        row = self.ok(a, "outbox", "erin@a.example", as_json=True)[0]
        self.assertEqual((row["sender"], row["waiting"], row["stuck"], row["quota_messages"]),
                         ("erin@a.example", 1, 0, 1))
        self.assertGreater(row["quota_bytes"], 0)
        human = self.ok(a, "outbox")
        self.assertIn("b.example", human)
        self.assertIn("waiting", human.splitlines()[0])
        rc, _, err = self.ctl(a, "outbox", "--stuck", "soon")
        self.assertEqual(rc, 64)
        self.assertIn('--stuck "soon"', err)


class CheckTest(CtlTest):
    def setUp(self):
        super().setUp()
        self.good = self.sb.dns.records["_stubmail.b.example"]

    def tearDown(self):
        if self.sb.dns.records.get("_stubmail.b.example") != self.good:
            self.sb.set_txt("b.example", self.good)
        super().tearDown()

    def steps(self, answer):
        return {s["step"]: s["result"] for s in answer["steps"]}

    def test_good_domain_passes_every_step(self):
        rc, answer, err = self.ctl(self.a, "check", "b.example", as_json=True)
        self.assertEqual(rc, 0, "%s %s" % (err, answer))
        self.assertEqual(self.steps(answer), {"record": "pass", "https": "pass", "key": "pass",
                                              "login": "pass", "udp": "pass"})
        rc, out, _ = self.ctl(self.a, "check", "b.example")
        self.assertEqual(rc, 0)
        self.assertIn("b.example: set up right", out)

    def test_wrong_fpr_fails_the_key_step(self):
        wrong = self.good.replace(self.b.fpr, self.a.fpr)
        self.assertNotEqual(wrong, self.good)
        self.sb.set_txt("b.example", wrong)
        rc, answer, _ = self.ctl(self.a, "check", "b.example", as_json=True)
        self.assertEqual(rc, 1)
        self.assertEqual(self.steps(answer)["key"], "fail")
        self.assertFalse(answer["ok"])
        rc, out, _ = self.ctl(self.a, "check", "b.example")
        self.assertEqual(rc, 1)
        self.assertIn("FAIL  key", out)
        self.assertIn("not the record's key " + self.a.fpr, out)

    def test_outbox_down_fails_https_and_skips_the_rest(self):
        b = self.b
        b.stop_httpd()
        try:
            rc, answer, _ = self.ctl(self.a, "check", "b.example", as_json=True)
        finally:
            b.start_httpd()
        self.assertEqual(rc, 1)
        self.assertEqual(self.steps(answer), {"record": "pass", "https": "fail", "key": "skip",
                                              "login": "skip", "udp": "skip"})
        detail = [s["detail"] for s in answer["steps"] if s["step"] == "https"][0]
        self.assertIn(b.outbox_url, detail)

    def test_no_record(self):
        rc, out, _ = self.ctl(self.a, "check", "nowhere.example")
        self.assertEqual(rc, 1)
        self.assertIn("FAIL  record", out)
        self.assertIn("skip  https", out)


class KeyTest(CtlTest):
    """Rotation in a copy of a.example's GnuPG home (the milter and pollerd
    go on with the original)."""

    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="smk", dir="/tmp")
        for part in ("pubring.kbx", "private-keys-v1.d", "trustdb.gpg"):
            src = os.path.join(self.a.gnupg_home, part)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(self.home, part))
            elif os.path.exists(src):
                shutil.copy2(src, os.path.join(self.home, part))
        self.good = self.sb.dns.records["_stubmail.a.example"]

    def tearDown(self):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"],
                       capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)
        if self.sb.dns.records.get("_stubmail.a.example") != self.good:
            self.sb.set_txt("a.example", self.good)
        super().tearDown()

    def test_show_is_the_published_record(self):
        answer = self.ok(self.a, "key", "show", conf=self.conf(self.a, gnupg_home=self.home),
                         as_json=True)
        self.assertEqual(answer["fpr"], self.a.fpr)
        self.assertIsNone(answer["fpr_alt"])
        self.assertTrue(answer["published"], answer)
        self.assertEqual(answer["record"].replace(" ", ""), self.good.replace(" ", ""))

    def test_rotation_both_keys_valid_during_the_switch(self):
        a, old = self.a, self.a.fpr
        conf = self.conf(a, gnupg_home=self.home)
        start = self.ok(a, "key", "rotate", "start", conf=conf, as_json=True)
        new = start["fpr_alt"]
        self.assertNotEqual(new, old)
        self.assertEqual(start["fpr"], old)
        self.assertIn("fpr=%s; fpr-alt=%s;" % (old, new), start["record"])
        self.assertFalse(start["published"])
        rc, _, err = self.ctl(a, "key", "rotate", "start", conf=conf)
        self.assertEqual(rc, 1)
        self.assertIn("under way already", err)
        rc, _, err = self.ctl(a, "key", "rotate", "finish", conf=conf)
        self.assertEqual(rc, 1)
        self.assertIn("switch first", err)
        # published: the old key stays the record's, both are valid
        self.sb.set_txt("a.example", start["record"])
        self.assertTrue(self.ok(a, "key", "show", conf=conf, as_json=True)["published"])
        rc, answer, err = self.ctl(self.b, "check", "a.example", as_json=True)
        self.assertEqual(self.steps_of(answer)["key"], "pass", answer)

        public = os.path.join(self.home, "new.asc")
        switch = self.ok(a, "key", "rotate", "switch", "-o", public, conf=conf, as_json=True)
        self.assertIn("fpr=%s; fpr-alt=%s;" % (new, old), switch["record"])
        self.assertTrue(any(new in t for t in switch["todo"]))
        with open(public) as f:
            self.assertIn("BEGIN PGP PUBLIC KEY BLOCK", f.read())

        conf = self.conf(a, gnupg_home=self.home, domain_key=new)
        shown = self.ok(a, "key", "show", conf=conf)
        self.assertIn("fpr=%s; fpr-alt=%s;" % (new, old), shown)
        self.assertIn("switched (new key in use)", shown)
        finish = self.ok(a, "key", "rotate", "finish", conf=conf, as_json=True)
        self.assertIn("fpr=%s; policy=" % new, finish["record"])
        self.assertNotIn("fpr-alt", finish["record"])
        self.assertTrue(any("--delete-secret-and-public-keys " + old in t
                            for t in finish["todo"]))

    def test_login_by_the_fpr_alt_key(self):
        """b.example in the middle of a rotation: its record names another
        key as fpr and the key it logs in with as fpr-alt. a.example's
        outbox takes the login; without the fpr-alt it refuses it."""
        a, b = self.a, self.b
        good = self.sb.dns.records["_stubmail.b.example"]
        other = a.fpr
        try:
            self.sb.set_txt("b.example", good.replace("fpr=" + b.fpr, "fpr=%s; fpr-alt=%s"
                                                      % (other, b.fpr)))
            r = login(a, login_body(b.key, "a.example"))
            self.assertEqual(r.status, 200, r)
            self.assertIn("(from the record's fpr-alt) verified", self.error_log_since(a))
            self.sb.set_txt("b.example", good.replace("fpr=" + b.fpr, "fpr=" + other))
            a.expect_log(r"key refused, expected %s" % other)
            r = login(a, login_body(b.key, "a.example"))
            self.assertEqual((r.status, r.json()["error"]), (401, "wrong_key"), r)
        finally:
            self.sb.set_txt("b.example", good)

    def error_log_since(self, isp):
        with open(isp.error_log, errors="replace") as f:
            return f.read()

    def test_key_commands_need_the_key_settings(self):
        rc, _, err = self.ctl(self.a, "key", "show", conf=self.conf(self.a, domain_key=None))
        self.assertEqual(rc, 78)
        self.assertIn("domain_key is not set", err)

    @staticmethod
    def steps_of(answer):
        return {s["step"]: s["result"] for s in answer["steps"]}


class RotationPullTest(CtlTest):
    """a.example rotates: its record names the old key as fpr and the new
    one as fpr-alt, and its milter already signs with the new key. b.example's
    pollerd, which holds the new key, delivers that mail as verified by it."""

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")

    def test_mail_signed_by_the_fpr_alt_key_is_pulled(self):
        a, b, old = self.a, self.b, self.a.fpr
        start = self.ok(a, "key", "rotate", "start", as_json=True)
        new = start["fpr_alt"]
        exported = subprocess.run(["gpg", "--homedir", a.gnupg_home, "--export", "--armor", new],
                                  capture_output=True, check=True, timeout=30).stdout
        subprocess.run(["gpg", "--homedir", b.gnupg_home, "--batch", "--import"],
                       input=exported, capture_output=True, check=True, timeout=30)
        self.sb.set_txt("a.example", start["record"])
        a.restart_milter(["domain_key " + new])
        msg, tag = make_message("alice@a.example", "bob@b.example", "signed by the new key")
        self.send_ok(a, "alice@a.example", "bob@b.example", msg)
        (_, data), = self.wait_maildir(b, "bob", tag, timeout=30)
        self.assertIn(b"stubmail=pass", data)
        self.assertIn(("(key %s)" % new).encode(), data)
        self.assertNotIn(old.encode(), data)
