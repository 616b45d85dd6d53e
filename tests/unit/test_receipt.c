/* test_receipt.c — receipts (sm_receipt.h): made fresh, carried in the
 * literal data's file name, matched against their hash; and the ack's
 * "receipt" member on the wire (sm_proto.h). */
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "tap.h"
#include "sm_proto.h"
#include "sm_receipt.h"

#define ID1 "0123456789abcdef0123456789abcdef"

static void made_and_matched(void)
{
    char r1[SM_RECEIPT_LEN + 1], r2[SM_RECEIPT_LEN + 1], bad[SM_RECEIPT_LEN + 1];
    unsigned char h1[SM_RECEIPT_HASH_LEN], h2[SM_RECEIPT_HASH_LEN], want[SHA256_DIGEST_LENGTH];

    ok(sm_receipt_new(r1, h1) == 0 && sm_receipt_new(r2, h2) == 0, "two receipts made");
    ok(strlen(r1) == SM_RECEIPT_LEN && sm_receipt_valid(r1), "43 base64url characters");
    ok(strcmp(r1, r2) != 0, "each one fresh");
    SHA256((const unsigned char *)r1, SM_RECEIPT_LEN, want);
    ok(memcmp(h1, want, sizeof want) == 0, "the hash is SHA-256 over the 43 characters");
    ok(sm_receipt_matches(r1, h1, sizeof h1), "a receipt matches its hash");
    ok(!sm_receipt_matches(r2, h1, sizeof h1), "another message's receipt does not");
    memcpy(bad, r1, sizeof bad);
    bad[10] = bad[10] == 'A' ? 'B' : 'A';
    ok(!sm_receipt_matches(bad, h1, sizeof h1), "one character changed does not");
    ok(!sm_receipt_matches(r1, h1, sizeof h1 - 1), "a hash of another length never matches");
    ok(!sm_receipt_matches(NULL, h1, sizeof h1) && !sm_receipt_matches("", h1, sizeof h1),
       "no receipt does not");
    ok(!sm_receipt_valid("short"), "too short is malformed");
    memcpy(bad, r1, sizeof bad);
    bad[0] = '+';
    ok(!sm_receipt_valid(bad), "base64, not base64url, is malformed");
}

static void carried_in_a_name(void)
{
    char r[SM_RECEIPT_LEN + 1], got[SM_RECEIPT_LEN + 1], name[80];
    unsigned char h[SM_RECEIPT_HASH_LEN];

    sm_receipt_new(r, h);
    sm_receipt_name(r, name, sizeof name);
    ok(strncmp(name, "stubmail-receipt.", 17) == 0 && strcmp(name + 17, r) == 0,
       "the file name is stubmail-receipt. and the receipt");
    ok(sm_receipt_from_name(name, got) == 0 && strcmp(got, r) == 0, "and reads back");
    ok(sm_receipt_from_name("", got) == -1 && got[0] == '\0', "an empty name carries none");
    ok(sm_receipt_from_name("message.eml", got) == -1, "another name carries none");
    ok(sm_receipt_from_name("stubmail-receipt.short", got) == -1, "a short one is refused");
    ok(sm_receipt_from_name(NULL, got) == -1, "no name carries none");
}

static int parse(const char *body, sm_ack_request *ack, sm_parse_error *err)
{
    return sm_ack_request_parse_status(body, strlen(body), "b.example", ack, err);
}

static void on_the_wire(void)
{
    const char *r = "Yj7kQ2mP0vXc9sLw4HnT8rAe1uZo6dFg3bKi5yNq2Wc";
    char body[256], *text;
    sm_ack_request ack;
    sm_ack_item *items = NULL, sent;
    sm_parse_error err;
    size_t n = 0;
    int acked[1] = { 7 };

    snprintf(body, sizeof body, "{\"to\":\"bob@b.example\",\"receipt\":\"%s\"}", r);
    ok(parse(body, &ack, &err) == 0 && strcmp(ack.receipt, r) == 0, "an ack's receipt parses");
    ok(parse("{\"to\":\"bob@b.example\"}", &ack, &err) == 0 && ack.receipt[0] == '\0',
       "an ack without one parses, receipt empty");
    memset(&err, 0, sizeof err);
    ok(parse("{\"to\":\"bob@b.example\",\"receipt\":\"x\"}", &ack, &err) != 0
       && strcmp(err.code, "bad_request") == 0, "a malformed receipt is a bad request");
    ok(parse("{\"to\":\"bob@b.example\",\"receipt\":7}", &ack, &err) != 0,
       "a receipt that is no string too");
    text = sm_ack_request_encode("bob@b.example", "bad signature", r);
    snprintf(body, sizeof body, "{\"to\":\"bob@b.example\",\"status\":\"rejected\","
             "\"reason\":\"bad signature\",\"receipt\":\"%s\"}", r);
    is_str(text, body, "a rejection encoded with its receipt");
    free(text);
    snprintf(body, sizeof body, "{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\","
             "\"receipt\":\"%s\"}]}", r);
    ok(sm_acks_request_parse(body, strlen(body), "b.example", &items, &n, &err) == 0 && n == 1
       && strcmp(items[0].ack.receipt, r) == 0, "a batch item's receipt parses");
    text = n == 1 ? sm_acks_request_encode(items, n) : NULL;
    is_str(text, body, "and encodes back");
    free(text);
    if (n == 1)
        sent = items[0];
    free(items);
    snprintf(body, sizeof body, "{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\","
             "\"error\":\"bad_receipt\"}]}");
    ok(n == 1 && sm_acks_response_parse(body, strlen(body), &sent, 1, acked, &err) == 0
       && acked[0] == -1, "an answer bad_receipt reads as refused (-1)");
}

int main(void)
{
    made_and_matched();
    carried_in_a_name();
    on_the_wire();
    return tap_done();
}
