/* sm_keyfetch — get a peer domain's public key into a GnuPG home: if a key
 * with that fingerprint is not there yet, GET {outbox}/v1/key (libcurl,
 * certificate verified against ca_file or the system store; http:// only if
 * allow_http and the host is loopback) and import it only if it is exactly
 * the key with fingerprint fpr (sm_pgp_import_public). Blocking, bounded by
 * timeout seconds: called rarely, the imported key stays in the keyring. */
#ifndef SM_KEYFETCH_H
#define SM_KEYFETCH_H

#include <stddef.h>

#include "sm_https.h"

/* 0 when the key is in home; -1 rejected (wrong key, bad URL, 4xx) or -2
 * temporary (network, 5xx, gpg trouble), with why. */
int sm_keyfetch(const char *home, const char *outbox_url, const char *fpr,
                const sm_https_opts *opts, char *why, size_t whylen);

/* The same from {outbox}/v1/key/{fpr}: the other key of a domain's
 * rotation, its record's fpr-alt (docs/PROTOCOL.md "Key rotation"). An
 * outbox without that endpoint (404) is -1 like any 4xx. */
int sm_keyfetch_by_fpr(const char *home, const char *outbox_url, const char *fpr,
                       const sm_https_opts *opts, char *why, size_t whylen);

#endif
