/* sm_keyfpr — the primary fingerprint of an ASCII-armored OpenPGP public
 * key, computed from its first packet (RFC 9580 section 5.5.4: v4 SHA-1,
 * v5 and v6 SHA-256) without gpg: for mod_stubmail's startup, which reads
 * its key files as root in Apache's parent, where a gpg run would write a
 * keyring as root. It reads the key, it does not judge it: whether the key
 * is usable is for whoever imports it. */
#ifndef SM_KEYFPR_H
#define SM_KEYFPR_H

#include <stddef.h>

#define SM_KEYFPR_MAX 64        /* hex digits; buffers are SM_KEYFPR_MAX + 1 */

/* The first public key packet of the armored block in text (len octets):
 * its primary fingerprint, uppercase hex, in fpr. 0, or -1 with why (not
 * armored, bad base64, no public key packet first, unknown version). */
int sm_keyfpr_armored(const char *text, size_t len, char fpr[SM_KEYFPR_MAX + 1],
                      char *why, size_t whylen);

#endif
