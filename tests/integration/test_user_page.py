"""Issue 11: the user's own page (SetHandler stubmail-user).

Each ISP's Apache serves /mail behind mod_auth_basic with mod_authn_file
(tests/sandbox/templates/httpd-stubmail.conf); the page trusts REMOTE_USER.
A real browser (headless Chromium through chromedriver) signs in, blocks a
sender, accepts an introduction and reads the sent view; curl shows the
same pages work without JavaScript, that forms from elsewhere are refused,
and that one user cannot reach another's address book."""

import base64
import json
import os
import re
import shutil
import tempfile
import time
import urllib.parse

import support
from support import make_message, wait_for, curl
from test_stubs import StubSandboxTest

import feedparser

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import WebDriverException
except ImportError:         # scripts/check runs the suite with Debian's python3
    webdriver = None


class UserPageTest(StubSandboxTest):
    POLLERD_EXTRA = ("stub_interval 2s", "introductions yes")

    @classmethod
    def setUpWorld(cls):
        cls.b.add_contact("bob@b.example", "alice@a.example")
        cls.shots = os.path.join(cls.sb.rundir, "screenshots")
        os.makedirs(cls.shots, exist_ok=True)

    # -- helpers ------------------------------------------------------------
    def page_url(self, isp, path="/"):
        return "https://%s:%d/mail%s" % (isp.ip, isp.https_port, path)

    def get(self, isp, user, path="/", json_=False):
        return curl(self.page_url(isp, path), user="%s:%s" % (user, isp.user_password(user)),
                    headers=("Accept: application/json",) if json_ else ())

    def post(self, isp, user, fields, headers=()):
        return curl(self.page_url(isp, "/"), method="POST",
                    user="%s:%s" % (user, isp.user_password(user)),
                    data=urllib.parse.urlencode(fields),
                    content_type="application/x-www-form-urlencoded", headers=headers)

    def form_of(self, isp, user):
        r = self.get(isp, user, json_=True)
        self.assertEqual(r.status, 200, r)
        return json.loads(r.body)["form"]

    def book(self, isp, owner):
        return [r[0] for r in isp.sql("SELECT contact FROM address_book WHERE owner = %s "
                                      "ORDER BY contact" % support.q(owner))]

    def blocks(self, isp, owner):
        return [r[0] for r in isp.sql("SELECT contact FROM address_block WHERE owner = %s "
                                      "ORDER BY contact" % support.q(owner))]

    def browser(self, isp, user):
        if webdriver is None:
            self.fail("python3-selenium is missing: scripts/install-deps installs it, and "
                      "scripts/check runs this suite with Debian's /usr/bin/python3")
        profile = tempfile.mkdtemp(prefix="chromium-", dir=self.sb.rundir)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--ignore-certificate-errors",
                    "--window-size=420,900", "--user-data-dir=" + profile):
            opts.add_argument(arg)
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.addCleanup(shutil.rmtree, profile, True)
        self.addCleanup(d.quit)
        # Basic authentication the way a browser that signed in sends it
        cred = base64.b64encode(("%s:%s" % (user, isp.user_password(user))).encode()).decode()
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                          {"headers": {"Authorization": "Basic " + cred}})
        return d

    def body_text(self, d):
        """The page's text, or "" while the browser is between two pages."""
        try:
            return d.find_element(By.TAG_NAME, "body").text
        except WebDriverException:
            return ""

    def shot(self, d, name):
        d.save_screenshot(os.path.join(self.shots, name + ".png"))

    def row_with(self, d, table, text):
        rows = [tr for tr in d.find_elements(By.CSS_SELECTOR, "table#%s tr" % table)
                if text in tr.text]
        self.assertEqual(len(rows), 1, "%s in table %s: %r" % (
            text, table, [tr.text for tr in d.find_elements(By.CSS_SELECTOR,
                                                            "table#%s tr" % table)]))
        return rows[0]

    # -- tests ----------------------------------------------------------------
    def test_browser_block_accept_and_sent(self):
        a, b = self.a, self.b
        # an introduction: mallory is in nobody's book at b.example
        intro, intro_tag = make_message("mallory@a.example", "bob@b.example", "hello bob")
        self.send_ok(a, "mallory@a.example", "bob@b.example", intro)
        wait_for(lambda: b.count("introduction", "recipient = 'bob@b.example'") > 0,
                 timeout=15, what="mallory's introduction")

        d = self.browser(b, "bob")
        d.get(self.page_url(b))
        self.shot(d, "address-book")
        self.assertEqual(d.find_element(By.TAG_NAME, "h1").text, "Your address book")
        self.row_with(d, "book", "alice@a.example")
        self.row_with(d, "introductions", "mallory@a.example")

        # block alice with her row's button
        self.row_with(d, "book", "alice@a.example").find_element(
            By.XPATH, ".//button[text()='Block']").click()
        wait_for(lambda: "no longer fetched" in self.body_text(d),
                 timeout=10, what="the page saying alice is blocked")
        self.shot(d, "blocked")
        self.row_with(d, "blocked", "alice@a.example")
        self.assertEqual(self.blocks(b, "bob@b.example"), ["alice@a.example"])
        self.assertNotIn("alice@a.example", self.book(b, "bob@b.example"))

        # accept mallory: the waiting mail arrives now
        self.row_with(d, "introductions", "mallory@a.example").find_element(
            By.XPATH, ".//button[text()='Accept']").click()
        t0 = time.monotonic()
        self.wait_maildir(b, "bob", intro_tag, timeout=20)
        self.assertLess(time.monotonic() - t0, 10, "accepting did not pull the mail now")
        self.assertIn("mallory@a.example", self.book(b, "bob@b.example"))
        self.assertEqual(b.count("introduction", "recipient = 'bob@b.example'"), 0)
        d.get(self.page_url(b))
        self.row_with(d, "book", "mallory@a.example")
        self.assertEqual(d.find_elements(By.CSS_SELECTOR, "table#introductions"), [])

        # unblock alice again
        self.row_with(d, "blocked", "alice@a.example").find_element(
            By.XPATH, ".//button[text()='Unblock']").click()
        wait_for(lambda: "fetched for you again" in self.body_text(d),
                 timeout=10, what="the page saying alice is unblocked")
        self.assertEqual(self.blocks(b, "bob@b.example"), [])
        self.assertIn("alice@a.example", self.book(b, "bob@b.example"))

        # mallory's sent view at a.example: bob's ISP fetched it
        s = self.browser(a, "mallory")
        s.get(self.page_url(a, "/sent"))
        self.shot(s, "sent")
        row = self.row_with(s, "sent", "bob@b.example")
        self.assertIn("fetched", row.text)

        # mallory recalls what erin's ISP has not fetched yet
        oops, _ = make_message("mallory@a.example", "erin@b.example", "not for you")
        mid = self.send_stored(a, "mallory@a.example", "erin@b.example", oops)[0][0]
        s.get(self.page_url(a, "/sent"))
        row = s.find_element(By.CSS_SELECTOR, "table#sent tr[data-id='%s']" % mid)
        self.assertIn("not fetched yet", row.text)
        row.find_element(By.XPATH, ".//button[text()='Recall']").click()
        wait_for(lambda: "is recalled" in self.body_text(s), timeout=10,
                 what="the page saying the message is recalled")
        self.shot(s, "recalled")
        notice = s.find_element(By.CSS_SELECTOR, "p.done").text
        self.assertRegex(notice, r"^Your message of \d{4}-\d\d-\d\d \d\d:\d\d UTC is recalled")
        row = s.find_element(By.CSS_SELECTOR, "table#sent tr[data-id='%s']" % mid)
        self.assertIn("recalled", row.text)
        self.assertEqual(row.find_elements(By.XPATH, ".//button"), [], "Recall twice?")
        self.assertEqual(a.sql_value("SELECT recalled_at IS NOT NULL FROM outbox WHERE "
                                     "message_id = %s" % support.q(mid)), "t")

    def test_pages_work_without_javascript(self):
        b = self.b
        r = self.get(b, "carol")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b"<form", r.body)
        self.assertNotIn(b"<script", r.body)
        self.assertEqual(r.header("cache-control"), "no-store")
        self.assertIn("default-src 'none'", r.header("content-security-policy"))
        form = re.search(rb'name="form" value="([^"]+)"', r.body).group(1).decode()

        # add a whole domain as it is typed
        r = self.post(b, "carol", {"form": form, "do": "add", "contact": "Airline.Example"})
        self.assertEqual(r.status, 303, r)
        self.assertTrue(r.header("location").startswith("/mail/?done=added"), r)
        self.assertEqual(self.book(b, "carol@b.example"), ["*@airline.example"])
        page = self.get(b, "carol", r.header("location")[len("/mail"):])
        self.assertIn(b"*@airline.example</strong> is fetched", page.body)

        # JSON at the same URL
        j = json.loads(self.get(b, "carol", json_=True).body)
        self.assertEqual(j["user"], "carol@b.example")
        self.assertEqual([e["contact"] for e in j["address_book"]], ["*@airline.example"])
        self.assertEqual(j["address_book"][0]["source"], "user")

        r = self.post(b, "carol", {"form": form, "do": "remove", "contact": "*@airline.example"})
        self.assertEqual(r.status, 303, r)
        self.assertEqual(self.book(b, "carol@b.example"), [])

    def test_forged_forms_are_refused(self):
        b = self.b
        b.add_contact("dave@b.example", "alice@a.example")
        dave_form = self.form_of(b, "dave")
        erin_form = self.form_of(b, "erin")
        self.assertNotEqual(dave_form, erin_form)
        change = {"do": "block", "contact": "alice@a.example"}
        for fields, headers, what in (
                (change, (), "no form MAC"),
                (dict(change, form=erin_form), (), "erin's form MAC as dave"),
                (dict(change, form=dave_form[:-2] + "AA"), (), "a changed MAC"),
                (dict(change, form=dave_form),
                 ("Origin: https://evil.example",), "another site's Origin"),
                (dict(change, form=dave_form),
                 ("Sec-Fetch-Site: cross-site",), "a cross-site fetch")):
            r = self.post(b, "dave", fields, headers)
            self.assertEqual(r.status, 403, "%s: %r" % (what, r))
        self.assertEqual(self.blocks(b, "dave@b.example"), [])
        self.assertEqual(self.book(b, "dave@b.example"), ["alice@a.example"])
        # the same change with dave's own MAC, from the page's own origin
        r = self.post(b, "dave", dict(change, form=dave_form),
                      ("Origin: https://%s:%d" % (b.ip, b.https_port),
                       "Sec-Fetch-Site: same-origin"))
        self.assertEqual(r.status, 303, r)
        self.assertEqual(self.blocks(b, "dave@b.example"), ["alice@a.example"])

    def test_one_user_cannot_see_or_change_anothers(self):
        b = self.b
        b.add_contact("frank@b.example", "secret-friend@a.example")
        r = self.get(b, "erin")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(b"secret-friend", r.body)
        # erin's form can only ever change erin's book: the user is REMOTE_USER
        r = self.post(b, "erin", {"form": self.form_of(b, "erin"), "do": "remove",
                                  "contact": "secret-friend@a.example"})
        self.assertEqual(r.status, 303, r)
        self.assertEqual(self.book(b, "frank@b.example"), ["secret-friend@a.example"])
        # no sign-in: Apache asks for one, the page is not reached
        r = curl(self.page_url(b))
        self.assertEqual(r.status, 401, r)
        # a wrong password likewise
        b.expect_log(r"\[auth_basic:error\] .*AH01617: user frank: authentication failure")
        r = curl(self.page_url(b), user="frank:wrong")
        self.assertEqual(r.status, 401, r)

    def test_what_senders_control_is_escaped(self):
        a, b = self.a, self.b
        b.add_contact("bob@b.example", "erin@a.example")
        msg, tag = make_message("erin@a.example", "bob@b.example", "<b>bold</b>")
        rows = self.send_stored(a, "erin@a.example", "bob@b.example", msg)
        self.wait_maildir(b, "bob", tag)
        hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
        a.sql("UPDATE outbox SET rejected_reason = %s WHERE message_id = %s"
              % (support.q(hostile), support.q(rows[0][0])))
        r = self.get(a, "erin", "/sent")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(b"<script>alert", r.body)
        self.assertNotIn(b"<img src=x", r.body)
        self.assertIn(b"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img", r.body)
        # a typed contact that is no address comes back escaped, changing nothing
        r = self.post(b, "bob", {"form": self.form_of(b, "bob"), "do": "add",
                                 "contact": "<i>x</i>@a.example"})
        self.assertEqual(r.status, 400, r)
        self.assertIn(b"&lt;i&gt;x&lt;/i&gt;", r.body)
        self.assertNotIn(b"<i>x</i>", r.body)

    def test_sent_view_says_waiting_then_expired(self):
        a = self.a
        # nobody at b.example has frank@a.example in their book: it waits
        msg, _ = make_message("frank@a.example", "carol@b.example", "are you there?")
        mid = self.send_stored(a, "frank@a.example", "carol@b.example", msg)[0][0]
        sent = json.loads(self.get(a, "frank", "/sent", json_=True).body)
        rcpt = [m for m in sent["messages"] if m["id"] == mid][0]["recipients"]
        self.assertEqual([(r["to"], r["status"]) for r in rcpt],
                         [("carol@b.example", "waiting")])
        self.assertRegex(rcpt[0]["expires"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertIn(b"not fetched yet (kept until", self.get(a, "frank", "/sent").body)
        # its time is up (sql/012): expired, before the janitor takes it away
        a.sql("UPDATE message SET expires_at = now() - interval '1 second' WHERE id = %s"
              % support.q(mid))
        sent = json.loads(self.get(a, "frank", "/sent", json_=True).body)
        rcpt = [m for m in sent["messages"] if m["id"] == mid][0]["recipients"]
        self.assertEqual(rcpt[0]["status"], "expired")
        self.assertIn(b"expired unfetched", self.get(a, "frank", "/sent").body)

    def test_recall_before_and_after_retrieval(self):
        a, b = self.a, self.b
        # bob pulls alice's mail (his book has her); dave's book does not
        msg, tag = make_message("alice@a.example", ["bob@b.example", "dave@b.example"],
                                "the wrong attachment")
        mid = self.send_stored(a, "alice@a.example", ["bob@b.example", "dave@b.example"],
                               msg)[0][0]
        # dave's receipt, while the body is there (the recall drops it)
        receipt = support.receipt_of(b, a, mid)
        self.wait_maildir(b, "bob", tag)
        wait_for(lambda: a.sql_value("SELECT retrieved_at IS NOT NULL FROM outbox WHERE "
                                     "message_id = %s AND recipient = 'bob@b.example'"
                                     % support.q(mid)) == "t", timeout=15, what="bob's ack")
        token = support.mint_token(a, "b.example", int(time.time()) + 600)
        fetch = "https://%s:%d/stubmail/v1/message/%s" % (a.ip, a.https_port, mid)
        self.assertEqual(curl(fetch, bearer=token).status, 200, "dave's copy waits")

        page = self.get(a, "alice", "/sent")
        self.assertIn(('name="id" value="%s"' % mid).encode(), page.body, "no Recall button")
        r = curl(self.page_url(a, "/sent"), method="POST",
                 user="alice:" + a.user_password("alice"),
                 data=urllib.parse.urlencode({"form": self.form_of(a, "alice"), "do": "recall",
                                              "id": mid}),
                 content_type="application/x-www-form-urlencoded")
        self.assertEqual(r.status, 303, r)
        self.assertIn(b"is recalled", self.get(a, "alice", r.header("location")[5:]).body)

        sent = json.loads(self.get(a, "alice", "/sent", json_=True).body)
        rcpt = {x["to"]: x for m in sent["messages"] if m["id"] == mid for x in m["recipients"]}
        self.assertEqual(rcpt["bob@b.example"]["status"], "retrieved")
        self.assertEqual(rcpt["dave@b.example"]["status"], "recalled")
        # dave's ISP: gone from its poll, refused at the fetch, nothing to ack
        self.assertEqual(curl(fetch, bearer=token).status, 404)
        self.assertEqual(a.count("pending_match", "message_id = %s" % support.q(mid)), 0)
        # an ISP that fetched just before the recall and acks after it is believed
        r = curl(fetch + "/ack", method="POST", bearer=token,
                 data=json.dumps({"to": "dave@b.example", "receipt": receipt}))
        self.assertEqual(r.status, 200, r)
        sent = json.loads(self.get(a, "alice", "/sent", json_=True).body)
        rcpt = {x["to"]: x for m in sent["messages"] if m["id"] == mid for x in m["recipients"]}
        self.assertEqual(rcpt["dave@b.example"]["status"], "retrieved")
        # another sender cannot recall alice's mail
        r = curl(self.page_url(a, "/sent"), method="POST",
                 user="erin:" + a.user_password("erin"),
                 data=urllib.parse.urlencode({"form": self.form_of(a, "erin"), "do": "recall",
                                              "id": mid}),
                 content_type="application/x-www-form-urlencoded")
        self.assertEqual(r.status, 404, r)

    def test_sent_mail_as_a_feed(self):
        a, b = self.a, self.b
        page = self.get(a, "erin", "/sent")
        url = re.search(rb'id="feed" href="([^"]+)"', page.body).group(1).decode()
        url = url.replace("&amp;", "&")
        self.assertTrue(url.startswith(a.outbox_url + "/feed?"), url)
        # a feed reader: no login, the address is the key
        r = curl(url)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type").startswith("application/atom+xml"), r)
        before = feedparser.parse(r.body)
        self.assertFalse(before.bozo, before.get("bozo_exception"))
        etag, modified = r.header("etag"), r.header("last-modified")
        self.assertEqual(curl(url, headers=("If-None-Match: " + etag,)).status, 304)
        self.assertEqual(curl(url, headers=("If-Modified-Since: " + modified,)).status, 304)

        # erin writes to bob, bob's ISP fetches it: a new entry, a new ETag
        b.add_contact("bob@b.example", "erin@a.example")
        msg, tag = make_message("erin@a.example", "bob@b.example", "feed me")
        self.send_stored(a, "erin@a.example", "bob@b.example", msg)
        self.wait_maildir(b, "bob", tag)
        def fetched():
            r = curl(url, headers=("If-None-Match: " + etag,))
            if r.status != 200:
                return None
            f = feedparser.parse(r.body)
            hits = [e for e in f.entries if e.title.startswith("bob@b.example fetched")]
            return f if hits else None
        feed = wait_for(fetched, timeout=15, what="bob's fetch in erin's feed")
        self.assertFalse(feed.bozo, feed.get("bozo_exception"))
        self.assertEqual(feed.feed.title, "Sent mail of erin@a.example")
        entry = [e for e in feed.entries if e.title.startswith("bob@b.example fetched")][0]
        self.assertTrue(entry.id.startswith("tag:a.example,2026:stubmail/sent/"), entry.id)
        self.assertIsNotNone(entry.updated_parsed)

        # another user's name with erin's MAC, or a changed MAC: no feed
        parts = urllib.parse.urlsplit(url)
        fields = dict(urllib.parse.parse_qsl(parts.query))
        for bad in (dict(fields, u="frank@a.example"), dict(fields, m=fields["m"][:-1] + "A"
                                                              if fields["m"][-1] != "A"
                                                              else fields["m"][:-1] + "B")):
            r = curl(urllib.parse.urlunsplit(parts._replace(
                query=urllib.parse.urlencode(bad))))
            self.assertEqual(r.status, 404, r)


if __name__ == "__main__":
    import unittest
    unittest.main()
