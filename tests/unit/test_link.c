/* Unit tests: a link's MAC names exactly one (user, sender) pair for one
 * purpose under one key, agrees with an independent HMAC (Python's, below),
 * and nothing in the link can be changed without the check noticing. */
#include <stdio.h>
#include <string.h>

#include "sm_addr.h"
#include "sm_link.h"
#include "tap.h"

/* base64url(HMAC-SHA256(bytes 0..31, "stubmail-unsubscribe-v1\0bob@b.example
 * \0alice@a.example")), by Python's hmac module */
#define VECTOR "Oo3X4X8Rjs76jiqblbzhkU9qvffYpQaxgDhA2dAHR4M"
/* the same for "stubmail-form-v1\0bob@b.example\0" */
#define FORM_VECTOR "ACtlEJd_HrycDOl_JP_Tf9eOV_ycpKORolhsLR-gqhc"
/* the same for "stubmail-introduction-v1\0bob@b.example\0mallory@a.example" */
#define INTRO_VECTOR "GR574cRZrJ7TkwstaCJ5j-Fv46t7gYIjldujnf1AzQE"

/* The unsubscribe purpose, which most checks are about. */
static int umac(const sm_token_keyring *kr, const char *kid, const char *user,
                const char *sender, char *mac, size_t maclen, const char **used,
                const char **why)
{
    return sm_link_mac(SM_LINK_UNSUBSCRIBE, kr, kid, user, sender, mac, maclen, used, why);
}

static int ucheck(const sm_token_keyring *kr, const char *kid, const char *user,
                  const char *sender, const char *mac, char *u, char *s, size_t len,
                  const char **why)
{
    return sm_link_check(SM_LINK_UNSUBSCRIBE, kr, kid, user, sender, mac, u, s, len, why);
}

static const char *check(const sm_token_keyring *kr, const char *kid, const char *user,
                         const char *sender, const char *mac)
{
    char u[SM_ADDR_MAX + 1], s[SM_ADDR_MAX + 1];
    const char *why = "(no why)";

    return ucheck(kr, kid, user, sender, mac, u, s, sizeof(u), &why) == 0 ? "valid" : why;
}

int main(void)
{
    unsigned char s1[32], s2[32];
    char mac[SM_LINK_MAC_LEN + 1], mac2[SM_LINK_MAC_LEN + 1], bad[SM_LINK_MAC_LEN + 1];
    char u[SM_ADDR_MAX + 1], s[SM_ADDR_MAX + 1];
    sm_token_keyring kr;
    const char *why = NULL, *kid = NULL;
    size_t i;

    for (i = 0; i < sizeof(s1); i++) {
        s1[i] = (unsigned char)i;
        s2[i] = (unsigned char)(i * 7 + 3);
    }
    sm_token_keyring_init(&kr);
    ok(umac(&kr, NULL, "bob@b.example", "alice@a.example", mac, sizeof(mac), &kid,
            &why) == -1 && !strcmp(why, "no key"), "no key, no MAC");
    sm_token_keyring_add(&kr, "k1", s1, sizeof(s1), &why);

    ok(umac(&kr, NULL, "bob@b.example", "alice@a.example", mac, sizeof(mac), &kid,
            &why) == 0, "MAC made");
    is_str(mac, VECTOR, "the MAC agrees with an independent HMAC-SHA256");
    is_str(kid, "k1", "made with the current key");
    ok(umac(&kr, NULL, "<Bob@B.Example>", "ALICE@a.example", mac2, sizeof(mac2),
            NULL, &why) == 0 && !strcmp(mac2, VECTOR),
       "the pair is normalized first: one pair, one MAC");
    ok(umac(&kr, NULL, "not an address", "alice@a.example", mac2, sizeof(mac2),
            NULL, &why) == -1 && !strcmp(why, "bad user address"), "bad user refused");
    ok(umac(&kr, NULL, "bob@b.example", "alice@", mac2, sizeof(mac2), NULL, &why) == -1
       && !strcmp(why, "bad sender address"), "bad sender refused");
    ok(umac(&kr, NULL, "bob@b.example", "alice@a.example", mac2, 10, NULL, &why) == -1,
       "a short buffer is refused");

    is_str(check(&kr, "k1", "bob@b.example", "alice@a.example", mac), "valid", "link checks");
    ok(ucheck(&kr, "k1", "Bob@B.EXAMPLE", "alice@A.example", mac, u, s, sizeof(u),
              &why) == 0 && !strcmp(u, "bob@b.example")
       && !strcmp(s, "alice@a.example"), "check gives the normalized pair");
    is_str(check(&kr, "k1", "carol@b.example", "alice@a.example", mac), "bad mac",
           "another user with the same MAC is refused");
    is_str(check(&kr, "k1", "bob@b.example", "mallory@a.example", mac), "bad mac",
           "another sender with the same MAC is refused");
    is_str(check(&kr, "k1", "alice@a.example", "bob@b.example", mac), "bad mac",
           "user and sender swapped are refused");
    is_str(check(&kr, "k2", "bob@b.example", "alice@a.example", mac), "unknown key id",
           "an unknown key id is refused");
    memcpy(bad, mac, sizeof(bad));
    bad[5] = bad[5] == 'A' ? 'B' : 'A';
    is_str(check(&kr, "k1", "bob@b.example", "alice@a.example", bad), "bad mac",
           "one changed character is refused");
    is_str(check(&kr, "k1", "bob@b.example", "alice@a.example", "Oo3X4X8R"), "bad mac",
           "a cut MAC is refused");
    is_str(check(&kr, "k1", "bob@b.example", "alice@a.example", VECTOR "A"), "bad mac",
           "a longer MAC is refused");
    is_str(check(&kr, "k1", "bob", "alice@a.example", mac), "bad user address",
           "a malformed user is refused before any MAC");

    /* rotation: k2 signs from now on, k1's links still check */
    sm_token_keyring_add(&kr, "k2", s2, sizeof(s2), &why);
    ok(umac(&kr, NULL, "bob@b.example", "alice@a.example", mac2, sizeof(mac2), &kid,
            &why) == 0 && !strcmp(kid, "k2") && strcmp(mac2, mac) != 0,
       "after rotation the new key signs");
    is_str(check(&kr, "k1", "bob@b.example", "alice@a.example", mac), "valid",
           "an old link still checks under its key");
    is_str(check(&kr, "k2", "bob@b.example", "alice@a.example", mac2), "valid",
           "a new link checks");
    is_str(check(&kr, "k2", "bob@b.example", "alice@a.example", mac), "bad mac",
           "an old MAC under the new key id is refused");
    ok(umac(&kr, "k1", "bob@b.example", "alice@a.example", mac2, sizeof(mac2), &kid,
            &why) == 0 && !strcmp(mac2, VECTOR) && !strcmp(kid, "k1"),
       "a named key signs");

    /* purposes: a form field is per user, and worth nothing as a link */
    ok(sm_link_mac(SM_LINK_FORM, &kr, "k1", "Bob@b.example", "", mac2, sizeof(mac2), NULL,
                   &why) == 0, "a form MAC made, no second address");
    is_str(mac2, FORM_VECTOR, "the form MAC agrees with an independent HMAC-SHA256");
    ok(sm_link_check(SM_LINK_FORM, &kr, "k1", "bob@b.example", "", mac2, u, s, sizeof(u),
                     &why) == 0 && !strcmp(u, "bob@b.example") && !strcmp(s, ""),
       "the form MAC checks");
    ok(sm_link_check(SM_LINK_FORM, &kr, "k1", "carol@b.example", "", mac2, u, s, sizeof(u),
                     &why) == -1 && !strcmp(why, "bad mac"), "another user's form MAC is refused");
    ok(sm_link_check(SM_LINK_FEED, &kr, "k1", "bob@b.example", "", mac2, u, s, sizeof(u),
                     &why) == -1, "a form MAC is no feed MAC");
    ok(ucheck(&kr, "k1", "bob@b.example", "alice@a.example", mac2,
              u, s, sizeof(u), &why) == -1, "nor an unsubscribe link");
    ok(sm_link_check(SM_LINK_FORM, &kr, "k1", "bob@b.example", "", VECTOR, u, s, sizeof(u),
                     &why) == -1, "an unsubscribe MAC is no form MAC");

    /* introductions: the digest's accept / decline links, per pair */
    ok(sm_link_mac(SM_LINK_INTRO, &kr, "k1", "bob@b.example", "Mallory@A.example", mac2,
                   sizeof(mac2), NULL, &why) == 0, "an introduction MAC made");
    is_str(mac2, INTRO_VECTOR, "the introduction MAC agrees with an independent HMAC-SHA256");
    ok(sm_link_check(SM_LINK_INTRO, &kr, "k1", "bob@b.example", "mallory@a.example", mac2, u,
                     s, sizeof(u), &why) == 0 && !strcmp(s, "mallory@a.example"),
       "the introduction MAC checks");
    ok(sm_link_check(SM_LINK_INTRO, &kr, "k1", "bob@b.example", "eve@a.example", mac2, u, s,
                     sizeof(u), &why) == -1 && !strcmp(why, "bad mac"),
       "another sender's introduction link is refused");
    ok(sm_link_check(SM_LINK_INTRO, &kr, "k1", "carol@b.example", "mallory@a.example", mac2,
                     u, s, sizeof(u), &why) == -1 && !strcmp(why, "bad mac"),
       "another user's introduction link is refused");
    ok(ucheck(&kr, "k1", "bob@b.example", "mallory@a.example", mac2, u, s, sizeof(u),
              &why) == -1, "an introduction MAC is no unsubscribe link");
    ok(umac(&kr, "k1", "bob@b.example", "mallory@a.example", mac, sizeof(mac), NULL,
            &why) == 0
       && sm_link_check(SM_LINK_INTRO, &kr, "k1", "bob@b.example", "mallory@a.example", mac,
                        u, s, sizeof(u), &why) == -1,
       "nor is an unsubscribe MAC an introduction link");
    sm_token_keyring_clear(&kr);
    return tap_done();
}
