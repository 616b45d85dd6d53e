/* Unit tests: tokens name exactly the domain they were issued to, until they
 * expire, and nothing in them can be changed without the MAC noticing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_addr.h"
#include "sm_token.h"
#include "tap.h"

#define NOW ((time_t)1700000000)

static const char *check(const sm_token_keyring *kr, const char *tok, time_t now, char *dom)
{
    const char *why = NULL;
    time_t exp;

    dom[0] = '\0';
    if (sm_token_check(kr, tok, now, dom, SM_DOMAIN_MAX + 1, &exp, &why) == 0)
        return "valid";
    return why ? why : "(no why)";
}

/* middle part of a token: between the first and the second dot */
static void split(const char *tok, char *mid, char *mac)
{
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');

    memcpy(mid, d1 + 1, (size_t)(d2 - d1 - 1));
    mid[d2 - d1 - 1] = '\0';
    strcpy(mac, d2 + 1);
}

int main(void)
{
    unsigned char s1[32], s2[48], s3[32], raw[64], back[64];
    char tok[SM_TOKEN_MAX + 1], tok2[SM_TOKEN_MAX + 1], forged[3 * SM_TOKEN_MAX];
    char mid[SM_TOKEN_MAX], mac[SM_TOKEN_MAX], mid2[SM_TOKEN_MAX], mac2[SM_TOKEN_MAX];
    char dom[SM_DOMAIN_MAX + 1], enc[128], hex[65], longdom[SM_DOMAIN_MAX + 1], big[1200];
    sm_token_keyring kr, other;
    const char *why = NULL;
    time_t exp = 0;
    long n;
    size_t i;

    for (i = 0; i < sizeof s1; i++) {
        s1[i] = (unsigned char)i;
        s3[i] = (unsigned char)(i * 7 + 1);
    }
    for (i = 0; i < sizeof s2; i++)
        s2[i] = (unsigned char)(255 - i);

    /* base64url: RFC 4648 test vectors, url alphabet, strictness */
    n = sm_b64url_encode((const unsigned char *)"foob", 4, enc, sizeof enc);
    is_str(enc, "Zm9vYg", "b64url of foob has no padding");
    ok(n == 6, "b64url length 6");
    sm_b64url_encode((const unsigned char *)"\xfb\xff\xbf", 3, enc, sizeof enc);
    is_str(enc, "-_-_", "b64url uses - and _");
    ok(sm_b64url_encode((const unsigned char *)"foob", 4, enc, 8) == -1, "encode refuses a short buffer");
    for (i = 0; i < sizeof raw; i++)
        raw[i] = (unsigned char)(i * 37 + 11);
    for (i = 0; i <= sizeof raw; i++) {
        n = sm_b64url_encode(raw, i, enc, sizeof enc);
        if (n < 0 || sm_b64url_decode(enc, (size_t)n, back, sizeof back) != (long)i
            || memcmp(raw, back, i) != 0)
            break;
    }
    ok(i == sizeof raw + 1, "b64url round trip for 0..64 bytes");
    ok(sm_b64url_decode("Zm9vYg==", 8, back, sizeof back) == -1, "padding refused");
    ok(sm_b64url_decode("Zm9vYh", 6, back, sizeof back) == -1, "non-canonical trailing bits refused");
    ok(sm_b64url_decode("Zm9vY", 5, back, sizeof back) == -1, "impossible length refused");
    ok(sm_b64url_decode("Zm9+Yg", 6, back, sizeof back) == -1, "standard alphabet refused");
    ok(sm_b64url_decode("Zm9 Yg", 6, back, sizeof back) == -1, "blank refused");
    ok(sm_b64url_decode("Zm9vYg", 6, back, 3) == -1, "decode refuses a short buffer");

    ok(sm_random_hex(hex, sizeof hex, 32) == 0 && strlen(hex) == 64, "random hex: 64 digits");
    strcpy(enc, hex);
    ok(sm_random_hex(hex, sizeof hex, 32) == 0 && strcmp(enc, hex) != 0, "random hex differs");
    ok(sm_random_hex(hex, 64, 32) == -1, "random hex refuses a short buffer");

    /* keyring */
    sm_token_keyring_init(&kr);
    n = sm_token_keyring_add(&kr, "k1", s1, 16, &why);
    ok(n == -1, "16-byte secret refused: %s", why);
    ok(sm_token_keyring_add(&kr, "k|1", s1, 32, &why) == -1, "key id with | refused");
    ok(sm_token_keyring_add(&kr, "", s1, 32, &why) == -1, "empty key id refused");
    ok(sm_token_keyring_add(&kr, "k1", s1, sizeof s1, &why) == 0, "key k1 added");
    ok(sm_token_keyring_add(&kr, "k1", s2, sizeof s2, &why) == -1, "duplicate id refused");
    ok(sm_token_keyring_add_hex(&kr, "k2", "00ff", &why) == -1, "short hex secret refused");
    ok(sm_token_keyring_add_hex(&kr, "k2",
                                "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                                &why) == -1, "non-hex secret refused");

    /* round trip */
    ok(sm_token_issue(&kr, "k1", "B.Example", 300, NOW, tok, sizeof tok) == 0, "issue: %s", tok);
    ok(strncmp(tok, "v1.", 3) == 0, "token starts with v1.");
    ok(sm_token_check(&kr, tok, NOW, dom, sizeof dom, &exp, &why) == 0, "token checks");
    is_str(dom, "b.example", "domain comes back lowercased");
    ok(exp == NOW + 300, "expiry is now + lifetime");
    is_str(check(&kr, tok, NOW + 299, dom), "valid", "valid one second before expiry");
    is_str(check(&kr, tok, NOW + 300, dom), "expired", "expired at expiry");
    is_str(check(&kr, tok, NOW + 100000, dom), "expired", "expired long after");
    n = sm_token_check(&kr, tok, NOW, dom, 5, &exp, &why);
    ok(n == -1, "small domain buffer refused: %s", why);

    ok(sm_token_issue(&kr, "k1", "not a domain", 300, NOW, tok2, sizeof tok2) == -1, "bad domain not issued");
    ok(sm_token_issue(&kr, "k1", "b.example", 0, NOW, tok2, sizeof tok2) == -1, "zero lifetime not issued");
    ok(sm_token_issue(&kr, "nope", "b.example", 60, NOW, tok2, sizeof tok2) == -1, "unknown key not issued");
    ok(sm_token_issue(&kr, "k1", "b.example", 60, NOW, tok2, 20) == -1, "short out buffer refused");

    /* tampering: payload, mac, prefix */
    split(tok, mid, mac);
    {
        char payload[SM_TOKEN_MAX], m2[SM_TOKEN_MAX];
        long pl = sm_b64url_decode(mid, strlen(mid), (unsigned char *)payload, sizeof payload - 1);

        payload[pl] = '\0';
        is_str(payload, "b.example|1700000300|k1", "payload is domain|expiry|key id");

        /* later expiry, same mac */
        sm_b64url_encode((const unsigned char *)"b.example|1800000300|k1", 23, m2, sizeof m2);
        snprintf(forged, sizeof forged, "v1.%s.%s", m2, mac);
        is_str(check(&kr, forged, NOW, dom), "bad mac", "extended expiry: bad mac");

        /* another domain's token turned into this one's */
        sm_b64url_encode((const unsigned char *)"a.example|1700000300|k1", 23, m2, sizeof m2);
        snprintf(forged, sizeof forged, "v1.%s.%s", m2, mac);
        is_str(check(&kr, forged, NOW, dom), "bad mac", "domain swapped: bad mac");
    }
    sm_token_issue(&kr, "k1", "c.example", 300, NOW, tok2, sizeof tok2);
    split(tok2, mid2, mac2);
    snprintf(forged, sizeof forged, "v1.%s.%s", mid, mac2);
    is_str(check(&kr, forged, NOW, dom), "bad mac", "b.example payload with c.example's mac: bad mac");
    snprintf(forged, sizeof forged, "v1.%s.%s", mid2, mac);
    is_str(check(&kr, forged, NOW, dom), "bad mac", "c.example payload with b.example's mac: bad mac");
    is_str(check(&kr, tok2, NOW, dom), "valid", "c.example's own token is valid ...");
    is_str(dom, "c.example", "... and names c.example only");

    strcpy(forged, tok);
    forged[strlen(forged) - 2] = forged[strlen(forged) - 2] == 'A' ? 'B' : 'A';
    is_str(check(&kr, forged, NOW, dom), "bad mac", "one mac character changed: bad mac");
    strcpy(forged, tok);
    forged[5] = forged[5] == 'A' ? 'B' : 'A';
    ok(strcmp(check(&kr, forged, NOW, dom), "valid") != 0, "one payload character changed: refused (%s)",
       check(&kr, forged, NOW, dom));
    strcpy(forged, tok);
    forged[1] = '2';
    is_str(check(&kr, forged, NOW, dom), "malformed token", "v2 prefix: malformed");

    /* wrong key: a ring with the same id but another secret */
    sm_token_keyring_init(&other);
    sm_token_keyring_add(&other, "k1", s3, sizeof s3, &why);
    is_str(check(&other, tok, NOW, dom), "bad mac", "same key id, other secret: bad mac");
    sm_token_keyring_clear(&other);
    sm_token_keyring_add(&other, "k9", s3, sizeof s3, &why);
    is_str(check(&other, tok, NOW, dom), "unknown key id", "key id not in ring: unknown key id");
    sm_token_keyring_clear(&other);
    ok(other.n == 0, "clear empties the ring");

    /* rotation: k2 issues (NULL = newest), k1's tokens still verify */
    ok(sm_token_keyring_add_hex(&kr, "k2",
                                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fff",
                                &why) == 0, "key k2 added from hex");
    ok(sm_token_issue(&kr, NULL, "b.example", 300, NOW, tok2, sizeof tok2) == 0, "issue with newest key");
    split(tok2, mid2, mac2);
    {
        char payload[SM_TOKEN_MAX];
        long pl = sm_b64url_decode(mid2, strlen(mid2), (unsigned char *)payload, sizeof payload - 1);

        payload[pl] = '\0';
        ok(pl > 3 && strcmp(payload + pl - 3, "|k2") == 0, "newest key is k2: %s", payload);
    }
    is_str(check(&kr, tok2, NOW, dom), "valid", "k2 token valid");
    is_str(check(&kr, tok, NOW, dom), "valid", "old k1 token still valid after rotation");
    sm_token_keyring_init(&other);
    sm_token_keyring_add_hex(&other, "k2",
                             "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fff", &why);
    is_str(check(&other, tok, NOW, dom), "unknown key id", "k1 retired: its token is refused");
    is_str(check(&other, tok2, NOW, dom), "valid", "k2 token valid on a ring without k1");
    ok(sm_token_keyring_add(&kr, "k3", s2, sizeof s2, &why) == 0
       && sm_token_keyring_add(&kr, "k4", s3, sizeof s3, &why) == 0, "k3, k4 added");
    n = sm_token_keyring_add(&kr, "k5", s3, sizeof s3, &why);
    ok(n == -1, "fifth key refused: %s", why);

    /* garbage, truncation, oversize */
    is_str(check(&kr, "", NOW, dom), "malformed token", "empty");
    is_str(check(&kr, "v1.", NOW, dom), "malformed token", "prefix only");
    is_str(check(&kr, "v1..", NOW, dom), "malformed token", "empty parts");
    is_str(check(&kr, "garbage", NOW, dom), "malformed token", "garbage");
    is_str(check(&kr, "v1.Zm9v.Zm9v.Zm9v", NOW, dom), "malformed token", "three dots");
    strcpy(forged, tok);
    forged[strlen(forged) - 5] = '\0';
    is_str(check(&kr, forged, NOW, dom), "malformed token", "truncated mac");
    strcpy(forged, tok);
    forged[10] = '\0';
    is_str(check(&kr, forged, NOW, dom), "malformed token", "truncated to 10 characters");
    snprintf(forged, sizeof forged, "%s=", tok);
    is_str(check(&kr, forged, NOW, dom), "malformed token", "trailing =");
    snprintf(forged, sizeof forged, " %s", tok);
    is_str(check(&kr, forged, NOW, dom), "malformed token", "leading blank");
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "v1.", 3);
    big[400] = '.';
    is_str(check(&kr, big, NOW, dom), "malformed token", "1200-byte token");
    big[SM_TOKEN_MAX + 1] = '\0';
    is_str(check(&kr, big, NOW, dom), "malformed token", "513-byte token");
    /* well-formed payloads that must still be refused before any MAC */
    {
        static const char *const bad[] = {
            "b.example|1700000300", "b.example|1700000300|k1|x", "|1700000300|k1",
            "b.example|01700000300|k1", "b.example|-1|k1", "b.example||k1", "b.example|17e8|k1",
            "B.EXAMPLE|1700000300|k1", "b.example|1700000300|", "b.example|1700000300|k 1",
            "b.example|1700000300|toolongkeyid12345",
        };
        char m2[SM_TOKEN_MAX];

        for (i = 0; i < sizeof bad / sizeof *bad; i++) {
            sm_b64url_encode((const unsigned char *)bad[i], strlen(bad[i]), m2, sizeof m2);
            snprintf(forged, sizeof forged, "v1.%s.%s", m2, mac);
            is_str(check(&kr, forged, NOW, dom), "malformed token", "payload '%s' malformed", bad[i]);
        }
        sm_b64url_encode((const unsigned char *)"b.example\0|1700000300|k1", 24, m2, sizeof m2);
        snprintf(forged, sizeof forged, "v1.%s.%s", m2, mac);
        is_str(check(&kr, forged, NOW, dom), "malformed token", "NUL in payload malformed");
    }

    /* the longest domain still fits under the size limit */
    memset(longdom, 'a', sizeof longdom - 1);
    longdom[sizeof longdom - 1] = '\0';
    for (i = 63; i < SM_DOMAIN_MAX; i += 64)
        longdom[i] = '.';
    ok(sm_domain_valid(longdom), "253-character domain is valid");
    n = sm_token_issue(&kr, "k1", longdom, 60, NOW, tok2, sizeof tok2);
    ok(n == 0 && strlen(tok2) <= SM_TOKEN_MAX, "253-character domain: token of %zu bytes", strlen(tok2));
    is_str(check(&kr, tok2, NOW, dom), "valid", "and it checks");
    is_str(dom, longdom, "long domain comes back");

    sm_token_keyring_clear(&kr);
    sm_token_keyring_clear(&other);
    return tap_done();
}
