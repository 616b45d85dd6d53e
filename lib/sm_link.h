/* sm_link — the MAC that makes a link or a form field good for one user and
 * one purpose, with no database row per link:
 *
 *   mac = base64url(HMAC-SHA256(secret[key id],
 *                   "stubmail-" PURPOSE "-v1" NUL user NUL other))
 *
 * Purposes:
 *   SM_LINK_UNSUBSCRIBE  other = the sender: the one-click unsubscribe link
 *                        (RFC 8058) pollerd puts in each message it delivers,
 *                        checked by mod_stubmail's /unsubscribe;
 *   SM_LINK_FORM         other = "": the anti-forgery field of the user's
 *                        own page's forms (a cross-site POST cannot know it);
 *   SM_LINK_FEED         other = "": the secret address of the user's feed;
 *   SM_LINK_INTRO        other = the sender: the accept / decline links of
 *                        the introductions digest pollerd mails the user
 *                        (pollerd/pd_digest.c), checked by mod_stubmail's
 *                        /introduction.
 *
 * user and a non-empty other are taken as sm_addr_normalize writes them, so
 * one pair has one MAC. The secrets are a keyring as for tokens
 * (sm_token.h): the key id travels with the MAC, so a new key can sign while
 * the old one still checks what is out there. Only the receiving ISP's
 * pollerd and Apache hold the secret; no other ISP ever sees it. */
#ifndef SM_LINK_H
#define SM_LINK_H

#include <stddef.h>

#include "sm_token.h"

#define SM_LINK_MAC_LEN 43      /* base64url of 32 octets, no padding */

typedef enum sm_link_purpose {
    SM_LINK_UNSUBSCRIBE,
    SM_LINK_FORM,
    SM_LINK_FEED,
    SM_LINK_INTRO
} sm_link_purpose;

/* The MAC of (user, other) for purpose under the key named key_id (NULL:
 * the key added last), as base64url into mac (at least SM_LINK_MAC_LEN + 1
 * octets), and the key's id in *used_id (may be NULL). 0, or -1 with *why:
 * "bad user address", "bad sender address", "unknown key id", "no key",
 * "libcrypto failed". */
int sm_link_mac(sm_link_purpose purpose, const sm_token_keyring *kr, const char *key_id,
                const char *user, const char *other, char *mac, size_t maclen,
                const char **used_id, const char **why);

/* Check a MAC as received (already percent-decoded): 0 if mac is the MAC of
 * (user, other) for purpose under key_id, with the normalized addresses in
 * user_out and other_out (each outlen octets; SM_ADDR_MAX + 1 is enough).
 * Else -1 with *why: "bad user address", "bad sender address", "unknown
 * key id", "bad mac". The comparison is constant-time. */
int sm_link_check(sm_link_purpose purpose, const sm_token_keyring *kr, const char *key_id,
                  const char *user, const char *other, const char *mac, char *user_out,
                  char *other_out, size_t outlen, const char **why);

#endif
