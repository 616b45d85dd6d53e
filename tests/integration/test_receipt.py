"""Proof-of-receipt acks (docs/PROTOCOL.md "Receipts"): a captured bearer
token of b.example cannot make a.example drop b.example's mail. An ack, or a
rejection, without the message's receipt, with a wrong one or with another
message's is refused (bad_receipt), single or in a batch, and records
nothing; the real pollerd then pulls the mail and acks it with the receipt
it found in the body. A row stored before receipts (no hash) is acked as
before."""

import json
import re

from support import SandboxTest, make_message, curl, q, get_token, receipt_of, wait_for

# a receipt's form, but no message's
FORGED = "A" * 43


class ReceiptTest(SandboxTest):
    @classmethod
    def setUpWorld(cls):
        # what a thief took from a log or a proxy: a good token of b.example
        cls.stolen = get_token(cls.a, cls.b)

    def setUp(self):
        super().setUp()
        self.a.expect_log(r"\[stubmail:warn\] .* refused, the message stays")

    def stored(self, sender, to, subject):
        """A message b.example's pollerd leaves alone: sender is in nobody's
        address book (yet)."""
        msg, tag = make_message(sender, to, subject)
        return self.send_stored(self.a, sender, to, msg)[0][0], tag

    def pending(self, mid):
        return self.a.sql("SELECT recipient, retrieved_at IS NULL, rejected_reason IS NULL, "
                          "body_deleted_at IS NULL FROM outbox o JOIN message m "
                          "ON m.id = o.message_id WHERE o.message_id = %s" % q(mid))

    def logged(self, pattern):
        with open(self.a.error_log, encoding="utf-8", errors="replace") as f:
            return any(re.search(pattern, line) for line in f)

    def ack(self, mid, body):
        return curl(self.a.outbox_url + "/v1/message/%s/ack" % mid, "POST",
                    data=json.dumps(body), bearer=self.stolen)

    def acks(self, items):
        return curl(self.a.outbox_url + "/v1/ack", "POST", data=json.dumps({"acks": items}),
                    bearer=self.stolen)

    def test_stolen_token_cannot_ack_mail_away(self):
        a, b = self.a, self.b
        mid, tag = self.stored("carol@a.example", "bob@b.example", "not yours")
        other, _ = self.stored("carol@a.example", "dave@b.example", "someone else's")
        self.assertEqual(a.sql_value("SELECT octet_length(receipt_hash) FROM outbox "
                                     "WHERE message_id = %s" % q(mid)), "32")
        before = self.pending(mid)
        self.assertEqual(before, [["bob@b.example", "t", "t", "t"]])
        # the thief can fetch the body, but not read it: no receipt
        self.assertEqual(curl(a.outbox_url + "/v1/message/" + mid, bearer=self.stolen).status,
                         200)
        other_receipt = receipt_of(b, a, other)
        own_receipt = receipt_of(b, a, mid)
        self.assertNotEqual(own_receipt, other_receipt)
        cases = [
            ("no receipt", {"to": "bob@b.example"}),
            ("a wrong receipt", {"to": "bob@b.example", "receipt": FORGED}),
            ("another message's receipt", {"to": "bob@b.example", "receipt": other_receipt}),
            ("a rejection without receipt", {"to": "bob@b.example", "status": "rejected",
                                             "reason": "cannot decrypt"}),
            ("a rejection with another message's receipt",
             {"to": "bob@b.example", "status": "rejected", "reason": "unsubscribed",
              "receipt": other_receipt}),
        ]
        for what, body in cases:
            with self.subTest(what=what):
                r = self.ack(mid, body)
                self.assertEqual(r.status, 403, r)
                self.assertEqual(r.json()["error"], "bad_receipt", r)
                item = dict(body, id=mid)
                r = self.acks([item])
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["acks"],
                                 [{"id": mid, "to": "bob@b.example", "error": "bad_receipt"}])
        self.assertEqual(self.pending(mid), before, "a refused ack changed the outbox")
        self.assertTrue(self.logged(r"\[stubmail:warn\] .*domain=b\.example id=%s: ack of "
                                    r"bob@b\.example refused, the message stays: no receipt"
                                    % mid))
        self.assertTrue(self.logged(r"id=%s: ack of bob@b\.example refused, the message "
                                    r"stays: the receipt is not this message's" % mid))

        # the real pollerd reads the body, delivers it and acks it with its receipt
        b.add_contact("bob@b.example", "carol@a.example")
        self.wait_maildir(b, "bob", tag)
        self.assertEqual(b.sql("SELECT receipt FROM received WHERE message_id = %s" % q(mid)),
                         [[own_receipt]])
        wait_for(lambda: a.sql_value("SELECT retrieved_at IS NOT NULL FROM outbox "
                                     "WHERE message_id = %s" % q(mid)) == "t",
                 timeout=30, what="b.example's ack with the receipt")
        self.assertEqual(a.sql_value("SELECT rejected_reason IS NULL FROM outbox "
                                     "WHERE message_id = %s" % q(mid)), "t")
        self.assertEqual(len(self.in_maildir(b, "bob", tag)), 1)

    def test_batch_takes_one_receipt_per_id(self):
        a, b = self.a, self.b
        one, _ = self.stored("erin@a.example", "frank@b.example", "batch one")
        two, _ = self.stored("erin@a.example", "frank@b.example", "batch two")
        r_one = receipt_of(b, a, one)
        r = self.acks([{"id": one, "to": "frank@b.example", "receipt": r_one},
                       {"id": two, "to": "frank@b.example", "receipt": r_one}])
        self.assertEqual(r.status, 200, r)
        got = r.json()["acks"]
        self.assertEqual(got[0]["status"], "delivered", got)
        self.assertEqual(got[1], {"id": two, "to": "frank@b.example", "error": "bad_receipt"})
        self.assertEqual(self.pending(two), [["frank@b.example", "t", "t", "t"]])
        self.assertEqual(a.sql_value("SELECT retrieved_at IS NOT NULL FROM outbox "
                                     "WHERE message_id = %s" % q(one)), "t")
        # a repeat needs the receipt too
        r = self.ack(one, {"to": "frank@b.example"})
        self.assertEqual(r.status, 403, r)
        r = self.ack(one, {"to": "frank@b.example", "receipt": r_one})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "delivered")

    def test_malformed_receipt_is_a_bad_request(self):
        mid, _ = self.stored("gina@a.example", "hank@b.example", "malformed")
        for bad in ("short", FORGED + "A", 43 * "+", 7):
            with self.subTest(receipt=bad):
                r = self.ack(mid, {"to": "hank@b.example", "receipt": bad})
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.json()["error"], "bad_request", r)
        self.assertEqual(self.pending(mid), [["hank@b.example", "t", "t", "t"]])

    def test_row_stored_before_receipts_acks_without_one(self):
        """The transition: a row without a hash (stored before sql/020, or
        by an older milter) is acked as before."""
        a = self.a
        mid, _ = self.stored("ivan@a.example", "judy@b.example", "old row")
        a.sql("UPDATE outbox SET receipt_hash = NULL WHERE message_id = %s" % q(mid))
        r = self.ack(mid, {"to": "judy@b.example"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "delivered")
