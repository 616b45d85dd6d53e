/* sm_pgp_impl — what sm_pgp.c, sm_pgp_key.c, sm_pgp_msg.c and the seal's
 * key export (sm_seal_keys.c) share: the context, fingerprint and error
 * helpers. Internal to lib's OpenPGP part; callers use sm_pgp.h. */
#ifndef SM_PGP_IMPL_H
#define SM_PGP_IMPL_H

#include <stddef.h>

#include <gpgme.h>

#include "sm_pgp.h"

/* why is empty after a success. */
void pgp_clear(char *why, size_t whylen);

/* gpgme_strerror, except "not in the keyring" for a key that is not there. */
const char *pgp_key_strerror(gpgme_error_t err);

/* 1 for trouble on this machine (retry later) rather than an answer about
 * the input: errno-style errors (I/O, memory), no agent, no usable gpg. */
int pgp_is_local(gpgme_error_t err);

/* why = "what: gpgme's reason"; SM_PGP_ERROR if local, else SM_PGP_REJECT. */
int pgp_fail(char *why, size_t whylen, const char *what, gpgme_error_t err);

/* Uppercase copy of a valid fingerprint (gpgme's own spelling); -1 if not
 * valid. */
int pgp_fpr_norm(const char *in, char out[SM_PGP_FPR_MAX + 1]);

/* Both valid and equal in any case. */
int pgp_fpr_eq(const char *a, const char *b);

/* Not revoked, expired, disabled or invalid. */
int pgp_key_usable(gpgme_key_t key);

/* A context in home: OpenPGP, armor as asked, loopback pinentry. */
int pgp_ctx_open(const char *home, int armor, gpgme_ctx_t *out, char *why, size_t whylen);

/* Copy a gpgme memory data object into a NUL-terminated malloc'd string and
 * release it: SM_PGP_OK, SM_PGP_REJECT if empty, SM_PGP_ERROR. */
int pgp_take_mem(gpgme_data_t *data, char **out, size_t *outlen, char *why, size_t whylen);

#endif
