"""The poll cache (StubmailPollCache, docs/mod_stubmail.md): an idle GET
/v1/poll is answered 304 from shared memory, and never once something
changed.

a.example is the outbox, with the UDP poll responder (which keeps the
cache) and two child processes of four threads each, so that the many polls
of every check, six at a time on fresh connections, are answered by both.
c.example only publishes a key: the test plays its poller by hand and puts
rows into a.example's outbox with SQL, as the milter would.

Checked: idle polls are 304s from the cache, in both children; after a new
message, an ack, an expiry (the message deleted), a subscription change (by
the poller, or by SQL behind Apache's back), the responder killed while
mail arrives, and PostgreSQL restarted, every poll with the old ETag lists
what changed: none is a 304; and an entry filled from a SELECT that a
change raced (poll_etag() made slow) is not trusted."""

import json
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor

from support import SandboxTest, wait_for, curl, get_token, q
from test_udppoll import responder_pids

POLLS = 24              # polls per check
AT_ONCE = 6             # in flight at a time: more than one child's threads
RECIPIENT = "carol@c.example"


class PollCacheWorld(SandboxTest):
    """What both classes share: the ISPs, the poller, the checks."""
    DOMAINS = ("a.example", "c.example")
    SERVICES = {"a.example": ("pg", "httpd"), "c.example": ("key",)}
    UDP_POLL = True
    HTTPD_EXTRA = (("StubmailMinPollInterval", "0"),
                   # two children of four threads, both kept: AT_ONCE polls
                   # need both
                   ("StartServers", "2"),
                   ("ThreadsPerChild", "4"),
                   ("MaxRequestWorkers", "8"),
                   ("MinSpareThreads", "1"),
                   ("MaxSpareThreads", "8"),
                   # the debug line of a 304 says whether the cache answered
                   ("LogLevel", "info ssl:warn stubmail:debug"))

    @classmethod
    def setUpWorld(cls):
        cls.token = get_token(cls.a, cls.c)

    def setUp(self):
        super().setUp()
        self.a.sql("DELETE FROM message WHERE id IN (SELECT message_id FROM outbox"
                   " WHERE recipient_domain = 'c.example')")
        self.version = self.subscribe({"reset": True,
                                       "add": [{"from": "*@a.example", "to": RECIPIENT}]})
        r = self.poll(self.version)
        self.assertEqual((r.status, r.json()["messages"]), (200, []), r)
        self.etag = r.header("etag")

    # -- c.example's poller, by hand ------------------------------------------
    def req(self, method, path, body=None, headers=()):
        return curl(self.a.outbox_url + path, method,
                    data=json.dumps(body) if body is not None else None,
                    bearer=self.token, headers=headers)

    def subscribe(self, body):
        r = self.req("POST", "/v1/subscription", body)
        self.assertEqual(r.status, 200, r)
        return r.json()["version"]

    def poll(self, version, etag=None):
        return self.req("GET", "/v1/poll?version=%d" % version,
                        headers=["If-None-Match: " + etag] if etag else [])

    def polls(self, version, etag):
        """POLLS conditional polls, AT_ONCE at a time: their answers."""
        with ThreadPoolExecutor(AT_ONCE) as ex:
            return list(ex.map(lambda _: self.poll(version, etag), range(POLLS)))

    def put_outbox(self, sender="alice@a.example"):
        """A message to RECIPIENT straight into a.example's outbox; its id."""
        mid = os.urandom(16).hex()
        with open(os.path.join(self.a.spool_dir, mid), "wb") as f:
            f.write(b"0123456789")
        self.a.sql("INSERT INTO message (id, sender, size, spool_name) VALUES (%s, %s, 10, %s);"
                   "INSERT INTO outbox (message_id, recipient, recipient_domain)"
                   " VALUES (%s, %s, 'c.example')" % (q(mid), q(sender), q(mid), q(mid),
                                                      q(RECIPIENT)))
        return mid

    def log_offset(self):
        return os.path.getsize(self.a.error_log)

    def cached_304_pids(self, offset):
        """PIDs of the children that answered a 304 from the cache since
        offset of a.example's error log."""
        with open(self.a.error_log, errors="replace") as f:
            f.seek(offset)
            return {int(m.group(1)) for m in re.finditer(
                r"\[pid (\d+)[^\]]*\].*poll: not modified, .*\(poll cache\)", f.read())}

    # -- checks -----------------------------------------------------------------
    def assert_idle(self, version, etag):
        """Every poll a 304, some from the cache."""
        offset = self.log_offset()
        statuses = [r.status for r in self.polls(version, etag)]
        self.assertEqual(statuses, [304] * POLLS)
        self.assertTrue(self.cached_304_pids(offset), "no 304 came from the poll cache")

    def assert_lists(self, version, etag, ids):
        """Every poll with the old ETag a 200 listing exactly ids: the
        cache never answers for what changed."""
        for r in self.polls(version, etag):
            self.assertEqual(r.status, 200, "a poll after the change: %r" % r)
            self.assertEqual(sorted(m["id"] for m in r.json()["messages"]), sorted(ids), r)
            self.assertNotEqual(r.header("etag"), etag, r)

    def cache_back(self, version, etag):
        """Wait until a 304 comes from the cache again (the responder is
        listening again)."""
        def cached():
            offset = self.log_offset()
            r = self.poll(version, etag)
            self.assertEqual(r.status, 304, r)
            return self.cached_304_pids(offset) or None
        wait_for(cached, timeout=20, interval=0.5, what="a 304 from the poll cache again")



class PollCacheTest(PollCacheWorld):
    def test_idle_polls_are_304s_from_the_cache_of_both_children(self):
        offset = self.log_offset()
        for _ in range(3):
            self.assert_idle(self.version, self.etag)
        pids = self.cached_304_pids(offset)
        self.assertGreaterEqual(len(pids), 2, "cached 304s came from one child only: %s"
                                % pids)

    def test_new_message_is_listed_by_the_very_next_polls(self):
        self.assert_idle(self.version, self.etag)
        mid = self.put_outbox()
        self.assert_lists(self.version, self.etag, [mid])

    def test_ack_by_the_poller_is_seen_by_the_very_next_polls(self):
        """The child that took the ack makes the entry invalid itself; the
        notification may come later. (One message stays pending: with
        none, the ETag after the ack would be the one before the first.)"""
        mid = self.put_outbox()
        keep = self.put_outbox()
        r = self.poll(self.version)
        self.assertEqual(sorted(m["id"] for m in r.json()["messages"]), sorted([mid, keep]), r)
        etag = r.header("etag")
        self.assert_idle(self.version, etag)
        r = self.req("POST", "/v1/message/%s/ack" % mid, {"to": RECIPIENT})
        self.assertEqual(r.status, 200, r)
        self.assert_lists(self.version, etag, [keep])

    def test_ack_behind_apaches_back_is_seen_by_the_very_next_polls(self):
        """Only the notification tells the cache: the row acked in SQL."""
        mid = self.put_outbox()
        keep = self.put_outbox()
        r = self.poll(self.version, self.etag)
        etag = r.header("etag")
        self.assert_idle(self.version, etag)
        self.a.sql("UPDATE outbox SET retrieved_at = now() WHERE message_id = %s" % q(mid))
        self.assert_lists(self.version, etag, [keep])

    def test_expiry_is_seen_by_the_very_next_polls(self):
        mid = self.put_outbox()
        r = self.poll(self.version, self.etag)
        etag = r.header("etag")
        self.assert_idle(self.version, etag)
        self.a.sql("DELETE FROM message WHERE id = %s" % q(mid))
        self.assert_lists(self.version, etag, [])

    def test_subscription_change_by_the_poller_is_seen_by_the_very_next_polls(self):
        self.assert_idle(self.version, self.etag)
        version = self.subscribe({"base": self.version,
                                  "add": [{"from": "bob@a.example", "to": RECIPIENT}]})
        self.assertNotEqual(version, self.version)
        self.assert_lists(version, self.etag, [])
        for r in self.polls(self.version, self.etag):
            self.assertEqual(r.status, 409, r)

    def test_subscription_change_behind_apaches_back_is_seen_by_the_very_next_polls(self):
        self.assert_idle(self.version, self.etag)
        self.a.sql("SELECT subscription_change('c.example', false, %d, "
                   "'[{\"sender\": \"bob@a.example\", \"recipient\": \"%s\"}]', '[]')"
                   % (self.version, RECIPIENT))
        for r in self.polls(self.version, self.etag):
            self.assertEqual(r.status, 409, r)
            self.assertNotEqual(r.json()["version"], self.version, r)

    def test_fill_that_raced_a_change_is_not_trusted(self):
        """A child reads the state, a change commits and is notified while
        its SELECT runs, then it stores what it read: the entry must not
        count. poll_etag_until() (what the poll reads, sql/012) is made to
        sleep (its snapshot is the statement's, taken before), and the
        message goes in once the SELECT is seen running."""
        a = self.a
        original = a.sql_value(
            "SELECT pg_get_functiondef('poll_etag_until(text)'::regprocedure)")
        a.sql(original.replace("public.poll_etag_until(", "public.poll_etag_until_now(", 1))
        restored = []

        def restore():
            if not restored:
                a.sql(original + ";\nDROP FUNCTION poll_etag_until_now(text)")
                restored.append(True)
        self.addCleanup(restore)
        a.sql("CREATE OR REPLACE FUNCTION poll_etag_until(p_domain text, OUT etag text,"
              " OUT valid_until_ms bigint) LANGUAGE plpgsql STABLE AS $$"
              " BEGIN PERFORM pg_sleep(2);"
              " SELECT n.etag, n.valid_until_ms INTO etag, valid_until_ms"
              " FROM poll_etag_until_now(p_domain) n; END $$")
        first = self.put_outbox()               # the entry of setUp is invalid
        with ThreadPoolExecutor(1) as ex:
            slow = ex.submit(self.poll, self.version, self.etag)
            wait_for(lambda: a.sql_value(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
                != "0" or None,
                timeout=10, interval=0.05, what="the poll's SELECT running")
            second = self.put_outbox()
            r = slow.result()
        self.assertEqual(r.status, 200, r)
        raced = r.header("etag")                # read before the second message
        restore()
        self.assert_lists(self.version, raced, [first, second])

    def test_responder_killed_while_mail_arrives(self):
        a = self.a
        a.expect_log(r"udp responder died \(signal 9\); restarting it")
        self.assert_idle(self.version, self.etag)
        (old,) = responder_pids(a)
        os.kill(old, signal.SIGKILL)
        first = self.put_outbox()
        self.assert_lists(self.version, self.etag, [first])
        wait_for(lambda: (responder_pids(a) - {old}) or None, timeout=10,
                 what="a new responder process")
        etag = self.poll(self.version).header("etag")
        self.cache_back(self.version, etag)
        second = self.put_outbox()
        self.assert_lists(self.version, etag, [first, second])

    def test_postgresql_restarted(self):
        a = self.a
        a.expect_log(r"stubmail: udp responder: (database connection lost|cannot connect)")
        a.expect_log(r"\[(dbd|stubmail):(warn|error)\]")
        self.assert_idle(self.version, self.etag)
        a.stop_db()
        try:
            a.start_db()
        finally:
            if not a.db_running():
                a.start_db()
        first = self.put_outbox()
        self.assert_lists(self.version, self.etag, [first])
        etag = self.poll(self.version).header("etag")
        self.cache_back(self.version, etag)
        second = self.put_outbox()
        self.assert_lists(self.version, etag, [first, second])


class PollCacheOffTest(PollCacheWorld):
    """StubmailPollCache off (here inherited by the TLS virtual host): the
    responder runs, but every poll asks the database."""
    HTTPD_EXTRA = PollCacheWorld.HTTPD_EXTRA + (("StubmailPollCache", "off"),)

    def test_no_304_from_the_cache(self):
        offset = self.log_offset()
        statuses = [r.status for r in self.polls(self.version, self.etag)]
        self.assertEqual(statuses, [304] * POLLS)
        self.assertEqual(self.cached_304_pids(offset), set())
        mid = self.put_outbox()
        self.assert_lists(self.version, self.etag, [mid])
