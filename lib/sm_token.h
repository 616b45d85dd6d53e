/* sm_token — short-lived bearer tokens that name the domain a poller proved
 * with its OpenPGP login (docs/PROTOCOL.md, "Token").
 *
 *   v1.<base64url(domain "|" expiry "|" key_id)>.<base64url(HMAC-SHA256)>
 *
 * The MAC is taken with the secret named by key_id over the text
 * "v1.<middle part>" exactly as sent. expiry is Unix seconds in decimal; the
 * token is good while now < expiry. base64url is without padding and only in
 * its canonical form, so one token has exactly one spelling.
 *
 * A keyring holds a few secrets so they can rotate: issue with the new one,
 * keep the old one until the last token it made has expired. Every front end
 * that checks tokens needs the same keyring. */
#ifndef SM_TOKEN_H
#define SM_TOKEN_H

#include <stddef.h>
#include <time.h>

#define SM_TOKEN_MAX        512  /* longest token accepted, without the NUL */
#define SM_TOKEN_KEYS_MAX   4
#define SM_TOKEN_KEY_ID_MAX 16   /* [A-Za-z0-9_-], at least one */
#define SM_TOKEN_SECRET_MIN 32   /* bytes: HMAC-SHA256 gains nothing from more than 64 */
#define SM_TOKEN_SECRET_MAX 64

typedef struct sm_token_key {
    char id[SM_TOKEN_KEY_ID_MAX + 1];
    unsigned char secret[SM_TOKEN_SECRET_MAX];
    size_t secret_len;
} sm_token_key;

typedef struct sm_token_keyring {
    sm_token_key key[SM_TOKEN_KEYS_MAX];
    int n;
} sm_token_keyring;

/* Start empty. */
void sm_token_keyring_init(sm_token_keyring *kr);
/* Add (id, secret). -1 with *why (static string) if the id is malformed or
 * already present, the secret is shorter than SM_TOKEN_SECRET_MIN or longer
 * than SM_TOKEN_SECRET_MAX, or the ring is full. */
int sm_token_keyring_add(sm_token_keyring *kr, const char *id, const unsigned char *secret,
                         size_t len, const char **why);
/* Same with the secret as hex digits (how a config file carries it). */
int sm_token_keyring_add_hex(sm_token_keyring *kr, const char *id, const char *hex,
                             const char **why);
/* The key named by the len octets at id, or NULL. */
const sm_token_key *sm_token_key_find(const sm_token_keyring *kr, const char *id, size_t len);
/* Wipe the secrets (OPENSSL_cleanse) and empty the ring. */
void sm_token_keyring_clear(sm_token_keyring *kr);

/* Issue a token for domain (sm_domain_valid; lowercased into the token),
 * valid for lifetime seconds from now, MAC'd with key_id (NULL: the key
 * added last, the current one). Writes the NUL-terminated token into out.
 * Returns 0, or -1 with errno: EINVAL bad domain, lifetime <= 0 or overflow;
 * ENOENT no such key; ENOSPC out too small; EIO libcrypto failed. */
int sm_token_issue(const sm_token_keyring *kr, const char *key_id, const char *domain,
                   long lifetime, time_t now, char *out, size_t outlen);

/* Check a token as received. Returns 0 and fills domain_out (the domain it
 * was issued to, lowercase; domlen bytes with the NUL, SM_DOMAIN_MAX + 1 is
 * always enough) and *expiry_out (may be NULL). Else -1 with *why one of
 * "malformed token", "unknown key id", "bad mac", "expired", "domain buffer
 * too small". Only the MAC makes the payload believable: apart from the key
 * id that picks the secret, nothing in it is used before the MAC matched, and
 * the comparison is constant-time (CRYPTO_memcmp). */
int sm_token_check(const sm_token_keyring *kr, const char *token, time_t now,
                   char *domain_out, size_t domlen, time_t *expiry_out, const char **why);

/* base64url without padding (RFC 4648 section 5). encode writes the NUL;
 * outlen must be at least 4 * ceil(len / 3) + 1. Returns the length written
 * (without NUL), or -1 if out is too small. */
long sm_b64url_encode(const unsigned char *in, size_t len, char *out, size_t outlen);
/* Decode inlen characters. Refuses padding, characters outside the alphabet,
 * impossible lengths and non-canonical trailing bits. Returns the number of
 * bytes written, or -1 (also if more than outlen bytes would come out). */
long sm_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t outlen);

/* nbytes from OpenSSL's CSPRNG as 2 * nbytes lowercase hex digits plus NUL in
 * out (outlen >= 2 * nbytes + 1). For login nonces. Returns 0, or -1. */
int sm_random_hex(char *out, size_t outlen, size_t nbytes);

#endif
