/* sm_keyfpr — the primary fingerprint of an ASCII-armored OpenPGP public
 * key, read by librnp in memory, without gpg: for mod_stubmail's startup,
 * which reads its key files as root in Apache's parent, where a gpg run
 * would write a keyring as root. It reads the key, it does not judge it:
 * whether the key is usable is for whoever imports it. */
#ifndef SM_KEYFPR_H
#define SM_KEYFPR_H

#include <stddef.h>

#define SM_KEYFPR_MAX 64        /* hex digits; buffers are SM_KEYFPR_MAX + 1 */

/* The one primary key of the armored block in text (len octets): its
 * fingerprint, uppercase hex, in fpr. 0, or -1 with why (not armored, not
 * a key, none or more than one primary key). */
int sm_keyfpr_armored(const char *text, size_t len, char fpr[SM_KEYFPR_MAX + 1],
                      char *why, size_t whylen);

#endif
