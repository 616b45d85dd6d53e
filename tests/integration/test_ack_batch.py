"""POST /v1/ack (docs/PROTOCOL.md "POST /v1/ack — many acks at once"):
many acks in one request, one answer each in order; a bad item refuses the
whole request and records nothing; a recipient at another domain is
refused; repeats answer the first ack; the bodies go once every recipient
has acked. Each ack carries its message's receipt (test_receipt.py has the
refusals). And pollerd uses it: a drain of many messages sends few acks."""

import json
import os
import re
import signal
import subprocess
import time

from support import (SandboxTest, make_message, curl, q, get_token, wait_for, stored_body,
                     receipt_of)


class AckBatchTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"c.example": ("key",)}

    @classmethod
    def setUpWorld(cls):
        cls.token_b = get_token(cls.a, cls.b)
        cls.token_c = get_token(cls.a, cls.c)

    def acks(self, items, token=None, raw=None):
        return curl(self.a.outbox_url + "/v1/ack", "POST",
                    data=raw if raw is not None else json.dumps({"acks": items}),
                    bearer=token or self.token_b)

    def stored(self, to, subject, sender="carol@a.example"):
        # carol is in nobody's address book: b.example's pollerd leaves
        # these alone, the test acks them by hand
        msg, _ = make_message(sender, to, subject)
        return self.send_stored(self.a, sender, to, msg)[0][0]

    def receipt(self, mid):
        return receipt_of(self.b, self.a, mid)

    def retrieved(self, mid):
        return self.a.sql("SELECT recipient, retrieved_at IS NOT NULL, "
                          "coalesce(rejected_reason, '') FROM outbox WHERE message_id = %s "
                          "ORDER BY recipient" % q(mid))

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.json()["error"], code, r)

    def test_inline_body_fetched_in_ranges_and_dropped_by_the_ack(self):
        """A small body is kept in its message row (sql/010): the fetch serves
        it with the headers of a spool file's (Content-Length the stored
        size, ETag, Accept-Ranges), httpd answers a Range and an If-Range
        from it, and the last ack sets it NULL with body_deleted_at."""
        a = self.a
        mid = self.stored("bob@b.example", "inline ranges")
        spool_name, size = a.sql("SELECT spool_name, octet_length(body) FROM message "
                                 "WHERE id = %s" % q(mid))[0]
        self.assertEqual(spool_name, "", "a small body went to a spool file")
        stored, size = stored_body(a, mid), int(size)
        url = a.outbox_url + "/v1/message/" + mid
        r = curl(url, bearer=self.token_b)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, stored)
        self.assertEqual(int(r.headers["content-length"]), size)
        self.assertEqual(r.headers["etag"], '"%s"' % mid)
        self.assertEqual(r.headers["accept-ranges"], "bytes")
        r = curl(url, bearer=self.token_b, headers=["Range: bytes=10-99"])
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.headers["content-range"], "bytes 10-99/%d" % size)
        self.assertEqual(r.body, stored[10:100])
        r = curl(url, bearer=self.token_b,
                 headers=["Range: bytes=%d-" % (size - 7), 'If-Range: "%s"' % mid])
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, stored[-7:])
        r = self.acks([{"id": mid, "to": "bob@b.example", "receipt": self.receipt(mid)}])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(a.sql("SELECT body IS NULL, body_deleted_at IS NOT NULL, "
                               "spool_name IS NULL FROM message WHERE id = %s" % q(mid)),
                         [["t", "t", "t"]])
        self.assertEqual(curl(url, bearer=self.token_b).status, 404)

    def test_batch_answers_in_order(self):
        a = self.a
        one = self.stored("bob@b.example", "batch one")
        two = self.stored("dave@b.example", "batch two")
        r1, r2 = self.receipt(one), self.receipt(two)
        r = self.acks([{"id": one, "to": "bob@b.example", "receipt": r1},
                       {"id": two, "to": "dave@b.example", "status": "rejected",
                        "reason": "bad signature", "receipt": r2},
                       {"id": one, "to": "erin@b.example", "receipt": r1}])
        self.assertEqual(r.status, 200, r)
        got = r.json()["acks"]
        self.assertEqual([(x["id"], x["to"]) for x in got],
                         [(one, "bob@b.example"), (two, "dave@b.example"),
                          (one, "erin@b.example")])
        self.assertEqual(got[0]["status"], "delivered")
        self.assertEqual(got[1]["status"], "rejected")
        self.assertEqual(got[2], {"id": one, "to": "erin@b.example", "error": "not_found"})
        self.assertEqual(self.retrieved(one), [["bob@b.example", "t", ""]])
        self.assertEqual(self.retrieved(two), [["dave@b.example", "t", "bad signature"]])
        # every recipient acked: the bodies are gone, from the rows (small
        # ones, sql/010) or the spool
        for mid in (one, two):
            row = a.sql("SELECT body_deleted_at IS NOT NULL, body IS NULL, spool_name "
                        "FROM message WHERE id = %s" % q(mid))[0]
            self.assertEqual(row[:2], ["t", "t"])
            if row[2]:
                self.assertFalse(os.path.exists(os.path.join(a.spool_dir, row[2])))
        a.expect_log(r"\[stubmail:warn\] .*id=%s: ack: dave@b\.example rejected" % two)
        # a repeat answers the first ack, and changes nothing
        again = self.acks([{"id": one, "to": "bob@b.example", "receipt": r1},
                           {"id": two, "to": "dave@b.example", "receipt": r2}])
        self.assertEqual(again.status, 200, again)
        self.assertEqual(again.json()["acks"][0]["retrieved"], got[0]["retrieved"])
        self.assertEqual(again.json()["acks"][1]["status"], "rejected")
        self.assertEqual(self.retrieved(two), [["dave@b.example", "t", "bad signature"]])

    def test_body_stays_while_a_recipient_waits(self):
        a = self.a
        msg, _ = make_message("carol@a.example", "bob@b.example", "to two")
        mid = self.send_stored(a, "carol@a.example", ["bob@b.example", "dave@b.example"],
                               msg)[0][0]
        rc = self.receipt(mid)
        r = self.acks([{"id": mid, "to": "bob@b.example", "receipt": rc}])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(a.sql("SELECT body_deleted_at IS NULL FROM message WHERE id = %s"
                               % q(mid)), [["t"]])
        r = self.acks([{"id": mid, "to": "dave@b.example", "receipt": rc},
                       {"id": mid, "to": "dave@b.example", "receipt": rc}])
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["status"] for x in r.json()["acks"]], ["delivered", "delivered"])
        self.assertEqual(a.sql("SELECT body_deleted_at IS NULL FROM message WHERE id = %s"
                               % q(mid)), [["f"]])

    def test_bad_item_refuses_all(self):
        a = self.a
        mid = self.stored("bob@b.example", "refused batch")
        before = self.retrieved(mid)
        cases = [
            ([{"id": mid, "to": "bob@b.example"}, {"id": "XYZ", "to": "bob@b.example"}],
             400, "bad_request"),
            ([{"id": mid, "to": "bob@b.example"}, {"id": mid}], 400, "bad_request"),
            ([{"id": mid, "to": "bob@b.example"}, {"id": mid, "to": "carol@c.example"}],
             403, "foreign_recipient"),
            ([{"id": mid, "to": "bob@b.example", "status": "lost"}], 400, "bad_request"),
            ([{"id": mid, "to": "bob@b.example", "reason": "x"}], 400, "bad_request"),
            ([], 400, "bad_request"),
            ([{"id": mid, "to": "bob@b.example"}] * 1001, 413, "too_many_acks"),
        ]
        for items, status, code in cases:
            with self.subTest(code=code, n=len(items)):
                self.assertError(self.acks(items), status, code)
        self.assertError(self.acks(None, raw='{"acks": {"id": 1}}'), 400, "bad_request")
        self.assertError(self.acks(None, raw='{"acks": [ '), 400, "bad_json")
        self.assertEqual(self.retrieved(mid), before)
        # c.example can ack nothing of b.example's
        self.assertError(self.acks([{"id": mid, "to": "bob@b.example"}], self.token_c),
                         403, "foreign_recipient")
        r = self.acks([{"id": mid, "to": "carol@c.example"}], self.token_c)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["acks"][0]["error"], "not_found")
        self.assertEqual(self.retrieved(mid), before)
        # GET is not how
        r = curl(a.outbox_url + "/v1/ack", bearer=self.token_b)
        self.assertError(r, 405, "method_not_allowed")


def ack_requests(isp):
    """(batches, single acks) in isp's access log."""
    with open(isp.access_log) as f:
        lines = f.read().splitlines()
    return (sum(1 for l in lines if "POST /stubmail/v1/ack " in l),
            sum(1 for l in lines if re.search(r"POST /stubmail/v1/message/\w+/ack ", l)))


class PollerdAcksTest(SandboxTest):
    """b.example's pollerd drains 40 messages, four lanes at once, and acks
    them in batches: a handful of requests, none per message."""

    N = 40

    def postconf(self, isp, setting):
        subprocess.run(["postconf", "-c", isp.postfix_etc, "-e", setting], check=True)
        isp.procs["postfix"].signal(signal.SIGHUP)
        time.sleep(0.5)

    def fill(self, subject):
        """N messages alice -> bob waiting in the outbox, pollerd stopped;
        their tags."""
        a, b = self.a, self.b
        b.add_contact("bob@b.example", "alice@a.example")
        b.kill_pollerd()            # the messages wait, then come in one cycle
        tags = []
        for i in range(self.N):
            msg, tag = make_message("alice@a.example", "bob@b.example", "%s %d" % (subject, i))
            self.send_ok(a, "alice@a.example", "bob@b.example", msg)
            tags.append(tag)
        wait_for(lambda: int(a.sql("SELECT count(*) FROM outbox WHERE retrieved_at IS NULL")
                             [0][0]) >= self.N, timeout=30, what="the messages in the outbox")
        return tags

    def drain(self, subject):
        a, b = self.a, self.b
        tags = self.fill(subject)
        before = ack_requests(a)
        b.start_pollerd()
        b.poll_now()
        for tag in tags:
            self.assertEqual(len(self.wait_maildir(b, "bob", tag)), 1)
        wait_for(lambda: a.sql("SELECT count(*) FROM outbox WHERE retrieved_at IS NULL")
                 == [["0"]], timeout=30, what="every message acked")
        wait_for(lambda: b.sql("SELECT count(*) FROM received WHERE acked_at IS NULL")
                 == [["0"]], timeout=30, what="acked_at recorded")
        after = ack_requests(a)
        return after[0] - before[0], after[1] - before[1]

    def test_drain_acks_in_batches(self):
        batches, singles = self.drain("batched")
        self.assertEqual(singles, 0)
        self.assertGreaterEqual(batches, 1)
        self.assertLessEqual(batches, self.N // 4)


    def test_stop_mid_drain(self):
        """SIGTERM while four lanes deliver: what the MTA took is recorded
        before pollerd exits; the rest, and the acks, come after a restart,
        each message exactly once."""
        b = self.b
        tags = self.fill("stopped")
        # b.example's MTA takes a second per message, so that the stop
        # finds deliveries under way. Set while no pollerd is connected, and
        # set back only once pollerd is gone again: a Postfix reload while
        # a client is in a "sleep" restriction can leave that session hung.
        self.postconf(b, "smtpd_recipient_restrictions=sleep 1")
        try:
            self.stop_mid_drain(tags)
        finally:
            b.kill_pollerd(signal.SIGTERM)
            self.postconf(b, "smtpd_recipient_restrictions=")
            b.start_pollerd()

    def stop_mid_drain(self, tags):
        a, b = self.a, self.b

        def arrived():
            return [t for t in tags if self.in_maildir(b, "bob", t)]
        b.start_pollerd()
        b.poll_now()
        wait_for(lambda: len(arrived()) >= 5, timeout=60, what="the first deliveries")
        b.kill_pollerd(signal.SIGTERM)
        # every delivery the MTA took is in table received, acked or not
        got = arrived()
        recorded = int(b.sql("SELECT count(*) FROM received WHERE remote_domain = 'a.example' "
                             "AND status = 'delivered'")[0][0])
        self.assertGreaterEqual(recorded, len(got))
        self.assertLess(len(got), self.N, "the stop came too late to test anything")
        b.start_pollerd()
        b.poll_now()
        missing = lambda: [t for t in tags if not self.in_maildir(b, "bob", t)]  # noqa: E731
        try:
            wait_for(lambda: not missing(), timeout=60, what="every message in bob's Maildir")
        except AssertionError:
            # what a loss would need to be understood
            self.fail("%d of %d never arrived (%s); b.example's queue: %r; received: %r; "
                      "a.example's outbox, unretrieved: %r"
                      % (len(missing()), self.N, " ".join(missing()), b.postqueue(),
                         b.sql("SELECT status, acked_at IS NOT NULL, count(*) FROM received "
                               "GROUP BY 1, 2"),
                         a.sql("SELECT count(*) FROM outbox WHERE retrieved_at IS NULL")))
        wait_for(lambda: a.sql("SELECT count(*) FROM outbox WHERE retrieved_at IS NULL")
                 == [["0"]], timeout=30, what="every message acked")
        for tag in tags:
            self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1, "%s twice" % tag)


class PollerdAcksOldOutboxTest(PollerdAcksTest):
    """An outbox without POST /v1/ack (404): one ack per message, nothing
    lost."""

    HTTPD_EXTRA = (("Redirect", "404 /stubmail/v1/ack"),)
    test_stop_mid_drain = None

    def test_drain_acks_in_batches(self):
        batches, singles = self.drain("one by one")
        self.assertEqual(singles, self.N)
        self.assertEqual(batches, 1)        # the one that found it missing
