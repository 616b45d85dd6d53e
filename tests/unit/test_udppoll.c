/* Unit tests of the UDP poll datagrams: the worked example of
 * docs/PROTOCOL.md ("UDP poll") octet for octet, and that a request or
 * reply cannot be altered, replayed elsewhere or stretched without the
 * check noticing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_token.h"
#include "sm_udppoll.h"
#include "tap.h"

/* docs/PROTOCOL.md, "UDP poll", worked example */
#define EX_SESSION "Yi5leGFtcGxlfDE4MDAwMDAwMDB8azE"
#define EX_SECRET  "IsLWDXbUYCb9Y1WO8i853BVVqnmjKZ1U6VJNHOWjQ9k"
#define EX_CURSOR  "\"7.3.1041.9e107d9d372bb682\""
#define EX_TIME    1799990000LL
#define EX_MAC     "BouJcvFR09mIflcxA6KgGFWXqjgeOp27e1OZ6G5iMEI"
#define EX_REQUEST "stubmail1 poll " EX_SESSION " " EX_CURSOR " 1799990000 " EX_MAC
#define EX_IDLE    "stubmail1 idle AevqP5FxeZevyn_0Dnx32Xnr2NtuNuqWaTFgczepIzg"
#define EX_POLL    "stubmail1 poll -XD46FZYO4Wl67tDfq-Y6FFkLQbEs3fIkxDOEvm3wfo"

static const char *verify(const sm_token_keyring *kr, const char *pkt, size_t len, time_t now)
{
    sm_udppoll_request req;
    sm_udppoll_session info;
    unsigned char key[SM_UDPPOLL_KEY_LEN];
    const char *why = NULL;

    if (sm_udppoll_request_verify(kr, (const unsigned char *)pkt, len, now, &req, &info, key,
                                  &why) == 0)
        return "valid";
    return why ? why : "(no why)";
}

int main(void)
{
    unsigned char secret[32], key[SM_UDPPOLL_KEY_LEN], key2[SM_UDPPOLL_KEY_LEN];
    char b64[64], pkt[SM_UDPPOLL_REQUEST_MAX + 64], mac[SM_UDPPOLL_B64_LEN + 1];
    char reply[SM_UDPPOLL_REPLY_LEN + 1], bad[SM_UDPPOLL_REQUEST_MAX + 64];
    char token[SM_TOKEN_MAX + 1], session[SM_UDPPOLL_SESSION_MAX + 1], longcur[200];
    sm_token_keyring kr, other;
    sm_udppoll_request req;
    sm_udppoll_session info;
    sm_udppoll_status st = 0;
    const char *why = NULL;
    long n;
    size_t i, len;
    time_t now = (time_t)EX_TIME + 5;

    for (i = 0; i < sizeof secret; i++)
        secret[i] = (unsigned char)i;
    sm_token_keyring_init(&kr);
    ok(sm_token_keyring_add(&kr, "k1", secret, sizeof secret, &why) == 0, "keyring k1");
    sm_token_keyring_init(&other);
    secret[0] = 0xff;
    ok(sm_token_keyring_add(&other, "k1", secret, sizeof secret, &why) == 0, "other keyring k1");

    /* the worked example */
    ok(sm_udppoll_secret(&kr, EX_SESSION, b64, sizeof b64, &why) == 0, "secret of the example");
    is_str(b64, EX_SECRET, "example secret");
    ok(sm_udppoll_secret_decode(EX_SECRET, key) == 0, "secret decodes to 32 octets");
    n = sm_udppoll_request_encode(key, EX_SESSION, EX_CURSOR, EX_TIME, pkt, sizeof pkt, mac);
    ok(n == (long)strlen(EX_REQUEST), "example request length %ld", n);
    is_str(pkt, EX_REQUEST, "example request");
    is_str(mac, EX_MAC, "example request mac");
    is_str(verify(&kr, EX_REQUEST, strlen(EX_REQUEST), now), "valid", "example request verifies");
    ok(sm_udppoll_request_verify(&kr, (const unsigned char *)EX_REQUEST, strlen(EX_REQUEST), now,
                                 &req, &info, key2, &why) == 0
       && !strcmp(info.domain, "b.example") && info.expiry == 1800000000
       && !strcmp(info.key_id, "k1") && !strcmp(req.cursor, EX_CURSOR)
       && !memcmp(key, key2, sizeof key), "example names b.example, k1, its cursor and K");
    n = sm_udppoll_reply_encode(key, SM_UDPPOLL_IDLE, EX_MAC, reply, sizeof reply);
    ok(n == SM_UDPPOLL_REPLY_LEN, "reply length %ld", n);
    is_str(reply, EX_IDLE, "example idle reply");
    sm_udppoll_reply_encode(key, SM_UDPPOLL_POLL, EX_MAC, reply, sizeof reply);
    is_str(reply, EX_POLL, "example poll reply");
    ok(sm_udppoll_reply_parse(key, EX_MAC, (const unsigned char *)EX_IDLE, strlen(EX_IDLE), &st,
                              &why) == 0 && st == SM_UDPPOLL_IDLE, "idle reply checks");
    ok(sm_udppoll_reply_parse(key, EX_MAC, (const unsigned char *)EX_POLL, strlen(EX_POLL), &st,
                              &why) == 0 && st == SM_UDPPOLL_POLL, "poll reply checks");
    ok(SM_UDPPOLL_REPLY_LEN < SM_UDPPOLL_REQUEST_MIN, "every reply is shorter than any request");

    /* the session is the token's payload */
    ok(sm_token_issue(&kr, "k1", "B.Example", 3600, (time_t)1799996400, token, sizeof token) == 0,
       "issue a token");
    ok(sm_udppoll_session_of_token(token, session, sizeof session) == 0, "session of token");
    is_str(session, EX_SESSION, "the session is the token's middle part");
    ok(sm_udppoll_session_of_token("v2.abc.def", session, sizeof session) == -1, "not a v1 token");
    ok(sm_udppoll_session_of_token("v1..def", session, sizeof session) == -1, "empty payload");

    /* time and expiry, checked after the MAC */
    is_str(verify(&kr, EX_REQUEST, strlen(EX_REQUEST), (time_t)EX_TIME + 31), "stale time",
           "31 s old is stale");
    is_str(verify(&kr, EX_REQUEST, strlen(EX_REQUEST), (time_t)EX_TIME + 30), "valid",
           "30 s old is fine");
    is_str(verify(&kr, EX_REQUEST, strlen(EX_REQUEST), (time_t)EX_TIME - 31), "future time",
           "31 s ahead is refused");
    is_str(verify(&kr, EX_REQUEST, strlen(EX_REQUEST), (time_t)1800000000), "session expired",
           "expired session");
    is_str(verify(&other, EX_REQUEST, strlen(EX_REQUEST), now), "bad mac",
           "another server's secret does not verify");
    sm_token_keyring_init(&other);
    ok(sm_token_keyring_add(&other, "k2", secret, sizeof secret, &why) == 0, "keyring k2");
    is_str(verify(&other, EX_REQUEST, strlen(EX_REQUEST), now), "unknown key id",
           "unknown key id");

    /* every single-octet change is refused */
    len = strlen(EX_REQUEST);
    for (i = 0; i < len; i++) {
        memcpy(bad, EX_REQUEST, len);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        if (strcmp(verify(&kr, bad, len, now), "valid") == 0)
            break;
    }
    ok(i == len, "no altered octet verifies (first at %zu)", i);

    /* grammar */
    snprintf(bad, sizeof bad, "%s ", EX_REQUEST);
    ok(strcmp(verify(&kr, bad, strlen(bad), now), "valid") != 0, "trailing space refused");
    snprintf(bad, sizeof bad, "%s\n", EX_REQUEST);
    ok(strcmp(verify(&kr, bad, strlen(bad), now), "valid") != 0, "trailing newline refused");
    memcpy(bad, EX_REQUEST, len);
    bad[len] = '\0';
    ok(strcmp(verify(&kr, bad, len + 1, now), "valid") != 0, "trailing NUL refused");
    snprintf(bad, sizeof bad, "stubmail2%s", EX_REQUEST + 9);
    is_str(verify(&kr, bad, strlen(bad), now), "unknown version", "other version");
    snprintf(bad, sizeof bad, "stubmail1 ping%s", EX_REQUEST + 14);
    is_str(verify(&kr, bad, strlen(bad), now), "unknown request", "other request");
    snprintf(bad, sizeof bad, "stubmail1 poll %s  %s 1799990000 %s", EX_SESSION, EX_CURSOR, EX_MAC);
    is_str(verify(&kr, bad, strlen(bad), now), "malformed request", "double space");
    snprintf(bad, sizeof bad, "stubmail1 poll %s %s 01799990000 %s", EX_SESSION, EX_CURSOR, EX_MAC);
    is_str(verify(&kr, bad, strlen(bad), now), "malformed request", "leading zero in time");
    snprintf(bad, sizeof bad, "stubmail1 poll %s %s 9999999999999 %s", EX_SESSION, EX_CURSOR, EX_MAC);
    is_str(verify(&kr, bad, strlen(bad), now), "malformed request", "13-digit time");
    snprintf(bad, sizeof bad, "stubmail1 poll %s \"x\x7f\" 1799990000 %s", EX_SESSION, EX_MAC);
    is_str(verify(&kr, bad, strlen(bad), now), "malformed request", "DEL in cursor");
    snprintf(bad, sizeof bad, "stubmail1 poll %s \"\xc3\xa9\" 1799990000 %s", EX_SESSION, EX_MAC);
    is_str(verify(&kr, bad, strlen(bad), now), "malformed request", "8-bit octets in cursor");
    snprintf(bad, sizeof bad, "stubmail1 poll %s %s 1799990000 %sA", EX_SESSION, EX_CURSOR, EX_MAC);
    is_str(verify(&kr, bad, strlen(bad), now), "malformed request", "44-char mac");
    snprintf(bad, sizeof bad, "stubmail1 poll a%s %s 1799990000 %s", EX_SESSION, EX_CURSOR, EX_MAC);
    is_str(verify(&kr, bad, strlen(bad), now), "malformed session", "undecodable session");
    memset(longcur, 'c', SM_UDPPOLL_CURSOR_MAX + 1);
    longcur[SM_UDPPOLL_CURSOR_MAX + 1] = '\0';
    ok(sm_udppoll_request_encode(key, EX_SESSION, longcur, EX_TIME, pkt, sizeof pkt, mac) == -1,
       "encode refuses a 129-octet cursor");
    longcur[SM_UDPPOLL_CURSOR_MAX] = '\0';
    n = sm_udppoll_request_encode(key, EX_SESSION, longcur, EX_TIME, pkt, sizeof pkt, mac);
    ok(n > 0 && strcmp(verify(&kr, pkt, (size_t)n, now), "valid") == 0, "128-octet cursor fine");
    ok(sm_udppoll_request_encode(key, EX_SESSION, "a b", EX_TIME, pkt, sizeof pkt, mac) == -1,
       "encode refuses a blank in the cursor");
    ok(sm_udppoll_request_encode(key, EX_SESSION, EX_CURSOR, EX_TIME, pkt, 60, mac) == -1,
       "encode refuses a short buffer");
    memset(bad, 'x', sizeof bad);
    ok(sm_udppoll_request_parse((const unsigned char *)bad, SM_UDPPOLL_REQUEST_MAX + 1, &req,
                                &why) == -1, "oversized datagram refused");
    ok(sm_udppoll_request_parse((const unsigned char *)"stubmail1 poll", 14, &req, &why) == -1,
       "truncated datagram refused");

    /* replies: bound to the request, exact */
    ok(sm_udppoll_reply_parse(key, "CouJcvFR09mIflcxA6KgGFWXqjgeOp27e1OZ6G5iMEI",
                              (const unsigned char *)EX_IDLE, strlen(EX_IDLE), &st, &why) == -1,
       "a reply to another request is refused");
    memcpy(reply, EX_IDLE, sizeof reply);
    memcpy(reply + 10, "poll", 4);
    ok(sm_udppoll_reply_parse(key, EX_MAC, (const unsigned char *)reply, strlen(reply), &st,
                              &why) == -1, "idle turned into poll is refused");
    ok(sm_udppoll_reply_parse(key, EX_MAC, (const unsigned char *)EX_IDLE, strlen(EX_IDLE) - 1,
                              &st, &why) == -1, "truncated reply refused");
    ok(sm_udppoll_reply_parse(key2, EX_MAC, (const unsigned char *)"stubmail1 busy "
                              "AevqP5FxeZevyn_0Dnx32Xnr2NtuNuqWaTFgczepIzg", 58, &st, &why) == -1,
       "unknown status refused");
    ok(sm_udppoll_secret_decode("IsLWDXbUYCb9Y1WO8i853BVVqnmjKZ1U6VJNHOWjQ9", key2) == -1,
       "short secret refused");
    sm_token_keyring_clear(&kr);
    sm_token_keyring_clear(&other);
    return tap_done();
}
