/* sm_seal — the per-message OpenPGP work in process (librnp): seal a body
 * (sign with our domain key, encrypt to the recipients' keys) in the milter,
 * open one (decrypt, check the signature) in pollerd.
 *
 * gpgme runs a gpg process per operation and more to look keys up: ~10 ms a
 * message and 20 forks. Here the keys come out of the GnuPG home once
 * (gpgme's export; rnp 0.16 cannot read the extended key format gpg 2.2
 * keeps in private-keys-v1.d, but reads an exported transferable key), and
 * stay in memory; an operation is then the crypto itself. The GnuPG home
 * stays the one place keys are managed (generation, import, WKD and
 * domain-key checks are sm_pgp); the stored format stays standard OpenPGP
 * (SEIPD with MDC, no compression, binary), which gpg 2.2 reads.
 *
 * Thread-safe: an rnp context (ffi) is not, so a seal keeps a few of them
 * (slots) and an operation takes a free one for its whole run; a big body
 * holds one slot, not the others. A seal fed as a client sends
 * (sm_seal_encrypt_sign_stream) makes a context of its own instead. Key material is exported once and shared
 * by the slots. A key cached longer than SM_SEAL_KEY_TTL seconds, or one
 * named to sm_seal_forget(), is exported again before its next use, so a
 * revocation or new subkey in the keyring reaches the seal.
 *
 * librnp writes a line to stderr for input it refuses (there is no switch
 * for it in 0.16); the verdict and why come back here as well.
 *
 * Results and why as in sm_pgp.h: SM_PGP_OK, SM_PGP_REJECT (the input or a
 * key is not acceptable: permanent), SM_PGP_ERROR (local trouble: retry).
 * A seal (sm_seal_encrypt_sign_*) is SM_PGP_REJECT only for its recipients,
 * before it reads or writes anything: the caller may try other keys on
 * the same input and output. */
#ifndef SM_SEAL_H
#define SM_SEAL_H

#include <stddef.h>

#include "sm_pgp.h"

#define SM_SEAL_KEY_TTL    600   /* seconds a key stays without a fresh export */
#define SM_SEAL_SLOTS_MAX  64

/* What the signature check of an opened body found. */
typedef enum sm_pgp_sig {
    SM_PGP_SIG_NONE = 0,        /* not checked: decryption failed first */
    SM_PGP_SIG_VALID,           /* one good signature by the expected primary key */
    SM_PGP_SIG_BAD,             /* the signature does not match the data */
    SM_PGP_SIG_MISSING,         /* not signed at all */
    SM_PGP_SIG_WRONG_SIGNER,    /* good signature, but by another key than expected */
    SM_PGP_SIG_NO_KEY,          /* signed by a key this home does not have */
    SM_PGP_SIG_INVALID          /* expired or revoked key, several signatures, wrong key usage */
} sm_pgp_sig;

typedef struct sm_pgp_result {
    int decrypted;              /* 1: the whole plaintext came out and passed the integrity check */
    int compressed;             /* 1: refused as compressed (decrypted stays 0) */
    sm_pgp_sig sig;
    char signer_fpr[SM_PGP_FPR_MAX + 1];  /* primary key fpr of the signer; for NO_KEY the key id
                                           * the signature names; empty if unknown */
    char literal_name[256];     /* the literal data's file name, "" if none; also when the
                                 * body then failed (decrypted 0): unauthenticated then, but
                                 * only a key that opened the session key reveals it */
} sm_pgp_result;

typedef struct sm_seal sm_seal;

/* A seal over home, our domain key own_fpr (its secret half must be in
 * home, without a passphrase), with slots rnp contexts (1 to
 * SM_SEAL_SLOTS_MAX; the number of operations that may run at once).
 * Exports and loads our key now, so a missing secret key fails here. */
int sm_seal_new(const char *home, const char *own_fpr, unsigned slots, sm_seal **out,
                char *why, size_t whylen);
void sm_seal_free(sm_seal *s);

/* Decrypt with our key fpr too (its secret half in home): the other
 * domain key of a rotation (docs/PROTOCOL.md "Key rotation"), which peers
 * that still hold the old record encrypt to. Signing stays own_fpr's. At
 * most SM_SEAL_DECRYPT_MAX; call it after sm_seal_new, before the seal is
 * used. Loads the key now: SM_PGP_REJECT if the home lacks its secret or
 * it has no usable encryption subkey, SM_PGP_ERROR for local trouble. A
 * key deleted from the home later no longer decrypts (the rotation's
 * finish), without failing the rest. */
#define SM_SEAL_DECRYPT_MAX 2
int sm_seal_decrypt_also(sm_seal *s, const char *fpr, char *why, size_t whylen);

/* Sign in_fd with our key and encrypt it to every fingerprint in
 * recipient_fprs (NULL-terminated, 1 to 64; primary keys, trusted because
 * DNS or a WKD answer vouched for them when they were imported), into out_fd
 * as binary OpenPGP, streaming (memory stays flat for any size),
 * uncompressed; neither fd is closed. A recipient key must be in home and
 * able to encrypt. Name our own key among the recipients if this side must
 * be able to read the stored body again. literal_name (NULL: none; at most
 * 255 octets) goes into the literal data packet's file name, inside the
 * encryption: how a receipt (sm_receipt.h) travels. */
int sm_seal_encrypt_sign_fd(sm_seal *s, const char *const *recipient_fprs,
                            const char *literal_name, int in_fd, int out_fd, char *why,
                            size_t whylen);
/* The same for input that arrives at another party's pace (a socket the
 * milter writes a message into as its client sends it): the operation
 * runs in an rnp context of its own instead of a slot, so that a slow
 * client keeps no slot from the seals that wait for one. A refusal of its
 * keys leaves the socket unread (above): the same input serves a second
 * try. */
int sm_seal_encrypt_sign_stream(sm_seal *s, const char *const *recipient_fprs,
                                const char *literal_name, int in_fd, int out_fd, char *why,
                                size_t whylen);
/* The same for a body held in memory (len octets at buf): a small message
 * needs no plaintext file to be written and read back. */
int sm_seal_encrypt_sign_mem(sm_seal *s, const char *const *recipient_fprs,
                             const char *literal_name, const void *buf, size_t len, int out_fd,
                             char *why, size_t whylen);
/* The same into memory: *sealed (malloc'd, *sealed_len octets; free it)
 * holds the sealed body, for the milter to store in the message row
 * without a spool file. NULL and 0 unless SM_PGP_OK. */
int sm_seal_encrypt_sign_mem_mem(sm_seal *s, const char *const *recipient_fprs,
                                 const char *literal_name, const void *buf, size_t len,
                                 unsigned char **sealed,
                                 size_t *sealed_len, char *why, size_t whylen);

/* Decrypt in_fd with our key (or one sm_seal_decrypt_also added) into
 * out_fd (streaming) and check that the
 * body was integrity protected and that exactly one good signature is
 * inside, by expected_signer_fpr's primary key or a signing subkey of it
 * usable now; *res says what was found (with the literal data's file name
 * whenever its header came out). SM_PGP_OK needs decrypted and
 * SM_PGP_SIG_VALID. A tampered, truncated or undecryptable body is
 * SM_PGP_REJECT with decrypted 0; a bad, missing, unknown or wrong signature
 * SM_PGP_REJECT with decrypted 1 and the sig status: either is a reason to
 * quarantine. A compressed body is SM_PGP_REJECT with compressed 1, as soon
 * as its plaintext would outgrow it: out_fd never gets more octets than
 * in_fd gave (no uncompressed body can make more), so a decompression bomb
 * costs no more spool than its own size. A compressed body whose plaintext
 * stays shorter than the body is not seen (librnp 0.16 does not report the
 * packet) and opens as any other. A signature by a key other than
 * expected_signer_fpr's is SM_PGP_SIG_WRONG_SIGNER when this seal happens to
 * hold that key, else SM_PGP_SIG_NO_KEY (only the expected key is loaded for
 * the purpose), with its fingerprint or key id in res->signer_fpr.
 * SM_PGP_ERROR: local trouble, retry.
 * CAUTION: plaintext is written before integrity and signature are known:
 * use out_fd only after SM_PGP_OK. */
int sm_seal_decrypt_verify_fd(sm_seal *s, int in_fd, int out_fd,
                              const char *expected_signer_fpr, sm_pgp_result *res,
                              char *why, size_t whylen);

/* SM_PGP_OK if home holds the primary key fpr and it may be encrypted to
 * now: valid, not revoked or expired, with a usable encryption subkey and,
 * when addr is not NULL, a valid user id whose address is addr (normalised;
 * sm_wkd's rule for a recipient's own key). SM_PGP_REJECT with why if not;
 * SM_PGP_ERROR for local trouble. From memory after the first export: the
 * per-message check that used to run gpg. */
int sm_seal_key_check(sm_seal *s, const char *fpr, const char *addr, char *why, size_t whylen);

/* The keyring's copy of fpr changed (imported again, revoked): export it
 * again before its next use. NULL: every key. */
void sm_seal_forget(sm_seal *s, const char *fpr);

#endif
