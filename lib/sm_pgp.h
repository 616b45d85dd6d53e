/* sm_pgp — the OpenPGP domain key, a thin layer over gpgme.
 *
 * Every function names the GnuPG home directory it works in and makes its own
 * gpgme context there, so threads may call them at once (one context each).
 * Keep the home path short: gpg-agent's socket lives in it and a unix socket
 * path has a ~107-byte limit. The first call of a secret-key operation in a
 * home starts a gpg-agent for it; sm_pgp_stop_agent() stops it.
 *
 * Trust comes from DNS, not from GnuPG's web of trust: a peer's key is
 * imported only if its fingerprint is the one its _stubmail record names, and
 * signatures are accepted only from the primary key with that fingerprint.
 * Fingerprints are hex, 40 digits (v4) or 64 (v5), compared ignoring case.
 *
 * Return values (sm_seal's too): SM_PGP_OK; SM_PGP_REJECT when the input
 * (key, signature, sealed body, fingerprint) is not acceptable — a permanent
 * answer; or SM_PGP_ERROR when it could not be done here (gpg or its agent
 * would not run, our own secret key is missing, out of memory, an fd would
 * not read or write): a temporary failure, retry later. Either way why
 * (whylen bytes) says what happened, e.g. "gpgme_op_verify: Bad signature".
 *
 * gpgme sets SIGPIPE to SIG_IGN if it was SIG_DFL (it writes to gpg's pipes). */
#ifndef SM_PGP_H
#define SM_PGP_H

#include <stddef.h>

#define SM_PGP_FPR_MAX 64       /* hex digits; buffers are SM_PGP_FPR_MAX + 1 */
#define SM_PGP_WHY_MAX 256      /* a why buffer this big is never truncated in practice */
/* a public key blob larger than this is refused unread: a minimal export
 * of an ed25519/cv25519 key is ~600 bytes armored */
#define SM_PGP_KEY_MAX (256 * 1024)

enum { SM_PGP_OK = 0, SM_PGP_REJECT = -1, SM_PGP_ERROR = -2 };

/* gpgme_check_version and locale, once per process (pthread_once). Every
 * function below calls it, so calling it first is only needed to fail early.
 * Returns SM_PGP_OK, or SM_PGP_ERROR if gpgme or gpg is missing or too old. */
int sm_pgp_init(void);

/* 1 if fpr is 40 or 64 hex digits (either case), else 0. */
int sm_pgp_fpr_valid(const char *fpr);

/* The domain key of domain in home (created with mode 0700 if missing): the
 * existing secret key with user id "stubmail@DOMAIN" if there is one, else a
 * new one — algorithm "future-default" (ed25519 primary for signing and
 * certification, cv25519 subkey for encryption), no passphrase, no expiry.
 * Writes its primary fingerprint (uppercase) into fpr_out. Not atomic across
 * processes: run it from the setup tool, not from two daemons at once. */
int sm_pgp_create_domain_key(const char *home, const char *domain,
                             char fpr_out[SM_PGP_FPR_MAX + 1], char *why, size_t whylen);

/* A further key for domain in home, made as sm_pgp_create_domain_key makes
 * one, even when the domain has one already: the new key of a rotation
 * (stubmailctl key rotate). */
int sm_pgp_new_domain_key(const char *home, const char *domain,
                          char fpr_out[SM_PGP_FPR_MAX + 1], char *why, size_t whylen);

/* The usable domain keys of domain in home (secret, user id
 * "stubmail@DOMAIN", able to sign and encrypt), oldest first, at most max
 * (and SM_PGP_DOMAIN_KEYS_MAX) fingerprints in fprs, their number in *n.
 * SM_PGP_OK, or an error with why. */
#define SM_PGP_DOMAIN_KEYS_MAX 8
int sm_pgp_domain_keys(const char *home, const char *domain,
                       char fprs[][SM_PGP_FPR_MAX + 1], size_t max, size_t *n,
                       char *why, size_t whylen);

/* The ASCII-armored public key fpr (minimal: self-signatures only), as a
 * NUL-terminated malloc'd string in *out (free() it), length in *outlen. */
int sm_pgp_export_public(const char *home, const char *fpr, char **out, size_t *outlen,
                         char *why, size_t whylen);

/* Import a peer's public key (armored or binary) that must be expected_fpr:
 * sm_pgp_import_checked with the rule that the key is expected_fpr and, as
 * the keyring has it after the import, usable (not revoked, expired or
 * invalid) and able to sign. Re-importing a known key is fine (updates
 * merge). */
int sm_pgp_import_public(const char *home, const char *key, size_t len, const char *expected_fpr,
                         char *why, size_t whylen);

/* SM_PGP_OK if home holds a usable public key whose primary fingerprint is
 * fpr, SM_PGP_REJECT if not (absent, revoked, expired, or fpr malformed),
 * SM_PGP_ERROR if gpg could not be asked. Cheap: no network, no agent. */
int sm_pgp_have_key(const char *home, const char *fpr, char *why, size_t whylen);

/* A caller's rule for whose key counts, for sm_pgp_import_checked. key is
 * a gpgme_key_t (include <gpgme.h> to look inside); in_keyring is 0 for the
 * key as a blob lists it, before anything is imported, and 1 for the key as
 * the keyring has it (after an import: merged with what it already held).
 * 0 if the key will do, else -1 with why. */
struct _gpgme_key;
typedef int (*sm_pgp_key_rule)(struct _gpgme_key *key, int in_keyring, void *arg,
                               char *why, size_t whylen);

/* Import a public key blob (armored or binary, at most SM_PGP_KEY_MAX
 * bytes) that rule accepts. The blob is listed first and refused whole,
 * nothing imported, unless it holds exactly one key, with no secret parts,
 * that rule accepts as listed; after the import the key must pass rule
 * again as the keyring has it, or it is refused and, if this import added
 * it, deleted again. blob_name names the blob in reasons ("the answer":
 * "no OpenPGP key in the answer"). SM_PGP_OK with the key's primary
 * fingerprint (uppercase) in fpr_out, else an error with why. */
int sm_pgp_import_checked(const char *home, const void *blob, size_t len, const char *blob_name,
                          sm_pgp_key_rule rule, void *arg, char fpr_out[SM_PGP_FPR_MAX + 1],
                          char *why, size_t whylen);

/* Detached ASCII-armored signature over data by signer_fpr's secret key, as
 * a NUL-terminated malloc'd string in *sig (free() it), length in *siglen. */
int sm_pgp_sign_detached(const char *home, const char *signer_fpr, const void *data, size_t len,
                         char **sig, size_t *siglen, char *why, size_t whylen);

/* SM_PGP_OK only if sig (armored or binary) holds exactly one signature, it
 * is good, made with SHA-256, SHA-384 or SHA-512 (not MD5, SHA-1 or
 * another), by a key that is neither expired nor revoked, and that key
 * (or the primary key of the subkey that made it) has fingerprint
 * expected_fpr. The key must already be in home (sm_pgp_import_public). */
int sm_pgp_verify_detached(const char *home, const void *data, size_t len, const char *sig,
                           size_t siglen, const char *expected_fpr, char *why, size_t whylen);

/* Stop the gpg-agent (and any dirmngr) serving home: runs
 * `gpgconf --homedir HOME --kill all`. Returns SM_PGP_OK or SM_PGP_ERROR. */
int sm_pgp_stop_agent(const char *home, char *why, size_t whylen);

/* The two settings that name our own domain key, as stubmail-milter and
 * stubmail-pollerd take them (gnupg_home, domain_key): both present, fpr a
 * fingerprint, home an absolute directory short enough for gpg-agent's
 * socket (SM_PGP_HOME_MAX). 0, or -1 with a reason naming the setting. */
#define SM_PGP_HOME_MAX 80
int sm_pgp_own_key_settings(const char *home, const char *fpr, char *err, size_t errlen);

/* Make one throwaway signature with fpr (this starts the home's gpg-agent),
 * so that a daemon whose key lacks its secret half fails at start, not at
 * its first message. SM_PGP_OK or an error with why. */
int sm_pgp_probe_sign(const char *home, const char *fpr, char *why, size_t whylen);

#endif
