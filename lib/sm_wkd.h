/* sm_wkd — a recipient's own OpenPGP key, found the Web Key Directory way
 * (draft-koch-openpgp-webkey-service, "advanced" method) on the origin of
 * the recipient domain's outbox:
 *
 *   {scheme}://{host}[:{port}]/.well-known/openpgpkey/{domain}/hu/{hash}?l={local}
 *
 * where hash is the z-base-32 encoded SHA-1 of the local part mapped to
 * lowercase (ASCII), domain is the lowercased domain, and local is the
 * local part as given, percent-encoded. The outbox origin is vouched for by
 * the _stubmail record (or the admin's peer row) and TLS, like the domain
 * key at {outbox}/v1/key (sm_keyfetch); the same transport rules apply.
 *
 * A fetched key is accepted only if the answer holds exactly one OpenPGP
 * public key (no secret parts) that is neither revoked nor expired, has an
 * encryption subkey that is usable, and a user id (not revoked) whose mail
 * address is exactly the recipient. Only then is it imported into the GnuPG
 * home; nothing else ever gets there (a key that fails the same checks once
 * imported is deleted again if the import added it). */
#ifndef SM_WKD_H
#define SM_WKD_H

#include <stddef.h>

#include "sm_keyfetch.h"
#include "sm_pgp.h"

#define SM_WKD_HASH_LEN 32              /* z-base-32 of 160 bits */
#define SM_WKD_URL_MAX  2048
#define SM_WKD_KEY_MAX  SM_PGP_KEY_MAX  /* a larger answer is refused unread */

/* Outcomes of a lookup. NONE and REFUSED are answers about the recipient
 * (cache them); ERROR is trouble that may pass (network, 5xx, local gpg). */
enum { SM_WKD_FOUND = 0, SM_WKD_NONE = 1, SM_WKD_REFUSED = -1, SM_WKD_ERROR = -2 };

/* "found", "none", "refused", "error": also the cache's status words. */
const char *sm_wkd_status_name(int status);

/* The WKD hash of a local part (len bytes): SHA-1 of it with A-Z mapped to
 * a-z, z-base-32 encoded, into out (SM_WKD_HASH_LEN + 1 bytes). 0, or -1 if
 * the local part is empty. */
int sm_wkd_hash(const char *local, size_t len, char out[SM_WKD_HASH_LEN + 1]);

/* The lookup URL for address addr ("local@domain") on the origin of
 * outbox_url (its path, query and fragment are dropped). 0 with the URL in
 * out, or -1 with why (bad address, URL not allowed under opts, too long). */
int sm_wkd_url(const char *outbox_url, const char *addr, const sm_https_opts *opts,
               char *out, size_t outlen, char *why, size_t whylen);

/* Check a key blob (binary or armored) for addr by the rules above and
 * import it into home. FOUND with the key's primary fingerprint in
 * fpr_out, REFUSED with why, or ERROR (gpg could not run) with why. */
int sm_wkd_import(const char *home, const char *addr, const void *blob, size_t len,
                  char fpr_out[SM_PGP_FPR_MAX + 1], char *why, size_t whylen);

/* GET the URL of sm_wkd_url (no redirects, SM_WKD_KEY_MAX, opts->timeout)
 * and sm_wkd_import the answer. NONE for 404 or 410 (nothing published),
 * REFUSED for other 3xx/4xx answers and for keys that break a rule, ERROR
 * for network trouble, 5xx and 429. url_out (may be NULL) gets the URL. */
int sm_wkd_fetch(const char *home, const char *outbox_url, const char *addr,
                 const sm_https_opts *opts, char fpr_out[SM_PGP_FPR_MAX + 1],
                 char *url_out, size_t url_outlen, char *why, size_t whylen);

#endif
