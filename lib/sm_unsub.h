/* sm_unsub — the MAC of a one-click unsubscribe link (RFC 8058): pollerd
 * puts into each message it delivers a List-Unsubscribe URL for the pair
 * (user, sender), and mod_stubmail's unsubscribe endpoint believes the pair
 * because of the MAC alone (no database row per link):
 *
 *   mac = base64url(HMAC-SHA256(secret[key id],
 *                   "stubmail-unsubscribe-v1" NUL user NUL sender))
 *
 * user and sender are taken as sm_addr_normalize writes them, so one pair
 * has one MAC. The secrets are a keyring as for tokens (sm_token.h): the
 * key id travels in the link, so a new key can sign while the old one still
 * checks the links already delivered. Only pollerd and the receiving ISP's
 * Apache need the secret; the sender's ISP never sees it. */
#ifndef SM_UNSUB_H
#define SM_UNSUB_H

#include <stddef.h>

#include "sm_token.h"

#define SM_UNSUB_MAC_LEN 43     /* base64url of 32 octets, no padding */

/* The MAC of (user, sender) under the key named key_id (NULL: the key added
 * last), as base64url into mac (at least SM_UNSUB_MAC_LEN + 1 octets), and
 * the key's id in *used_id (may be NULL). 0, or -1 with *why: "bad user
 * address", "bad sender address", "unknown key id", "no key", "libcrypto
 * failed". */
int sm_unsub_mac(const sm_token_keyring *kr, const char *key_id, const char *user,
                 const char *sender, char *mac, size_t maclen, const char **used_id,
                 const char **why);

/* Check a link's fields as received (already percent-decoded): 0 if mac is
 * the MAC of (user, sender) under key_id, with the normalized addresses in
 * user_out and sender_out (each outlen octets; SM_ADDR_MAX + 1 is enough).
 * Else -1 with *why: "bad user address", "bad sender address", "unknown key
 * id", "bad mac". The comparison is constant-time. */
int sm_unsub_check(const sm_token_keyring *kr, const char *key_id, const char *user,
                   const char *sender, const char *mac, char *user_out,
                   char *sender_out, size_t outlen, const char **why);

#endif
