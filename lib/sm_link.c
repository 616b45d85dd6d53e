/* sm_link — the MAC of a signed link or form field (sm_link.h).
 * libcrypto does the HMAC and the constant-time comparison. */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sm_addr.h"
#include "sm_link.h"

#define MD_LEN 32
#define LABEL_MAX 32

/* Each purpose its own label: a MAC made for one is worth nothing for
 * another. */
static const char *const labels[] = {
    [SM_LINK_UNSUBSCRIBE] = "stubmail-unsubscribe-v1",
    [SM_LINK_FORM] = "stubmail-form-v1",
    [SM_LINK_FEED] = "stubmail-feed-v1",
    [SM_LINK_INTRO] = "stubmail-introduction-v1",
};

/* The raw MAC of the normalized pair under k. */
static int pair_mac(sm_link_purpose purpose, const sm_token_key *k, const char *user,
                    const char *sender, unsigned char *md)
{
    unsigned char text[LABEL_MAX + 1 + 2 * (SM_ADDR_MAX + 1)];
    const char *label = labels[purpose];
    size_t lu = strlen(user), ls = strlen(sender), n = strlen(label) + 1;
    unsigned int mdlen = 0;

    /* NUL after each part: no two pairs give the same text */
    memcpy(text, label, n);
    memcpy(text + n, user, lu + 1);
    n += lu + 1;
    memcpy(text + n, sender, ls);
    n += ls;
    if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, text, n, md, &mdlen)
        || mdlen != MD_LEN)
        return -1;
    return 0;
}

/* Normalize both addresses into u and s (SM_ADDR_MAX + 1 each); an empty
 * sender stays empty. */
static int normalize_pair(const char *user, const char *sender, char *u, char *s,
                          const char **why)
{
    const char *ignored;

    if (sm_addr_normalize(user, u, SM_ADDR_MAX + 1, &ignored) != 0) {
        *why = "bad user address";
        return -1;
    }
    if (*sender == '\0')
        *s = '\0';
    else if (sm_addr_normalize(sender, s, SM_ADDR_MAX + 1, &ignored) != 0) {
        *why = "bad sender address";
        return -1;
    }
    return 0;
}

int sm_link_mac(sm_link_purpose purpose, const sm_token_keyring *kr, const char *key_id,
                const char *user, const char *sender, char *mac, size_t maclen,
                const char **used_id, const char **why)
{
    char u[SM_ADDR_MAX + 1], s[SM_ADDR_MAX + 1], b64[48];
    unsigned char md[MD_LEN];
    const sm_token_key *k;
    int rc = -1;

    if (normalize_pair(user, sender, u, s, why) != 0)
        goto leave;
    k = key_id ? sm_token_key_find(kr, key_id, strlen(key_id))
               : kr->n > 0 ? &kr->key[kr->n - 1] : NULL;
    if (k == NULL) {
        *why = key_id ? "unknown key id" : "no key";
        goto leave;
    }
    if (pair_mac(purpose, k, u, s, md) != 0) {
        *why = "libcrypto failed";
        goto leave;
    }
    if (sm_b64url_encode(md, sizeof(md), b64, sizeof(b64)) != SM_LINK_MAC_LEN
        || maclen < SM_LINK_MAC_LEN + 1) {
        *why = "MAC buffer too small";
        goto leave;
    }
    memcpy(mac, b64, SM_LINK_MAC_LEN + 1);
    if (used_id)
        *used_id = k->id;
    rc = 0;
leave:
    OPENSSL_cleanse(md, sizeof(md));
    return rc;
}

int sm_link_check(sm_link_purpose purpose, const sm_token_keyring *kr, const char *key_id,
                  const char *user, const char *sender, const char *mac, char *user_out,
                  char *sender_out, size_t outlen, const char **why)
{
    char u[SM_ADDR_MAX + 1], s[SM_ADDR_MAX + 1];
    unsigned char want[MD_LEN], got[MD_LEN + 3];
    const sm_token_key *k;
    int rc = -1;

    if (normalize_pair(user, sender, u, s, why) != 0)
        goto leave;
    if ((k = sm_token_key_find(kr, key_id, strlen(key_id))) == NULL) {
        *why = "unknown key id";
        goto leave;
    }
    if (strlen(mac) != SM_LINK_MAC_LEN
        || sm_b64url_decode(mac, SM_LINK_MAC_LEN, got, sizeof(got)) != MD_LEN
        || pair_mac(purpose, k, u, s, want) != 0 || CRYPTO_memcmp(got, want, MD_LEN) != 0) {
        *why = "bad mac";
        goto leave;
    }
    if (strlen(u) >= outlen || strlen(s) >= outlen) {
        *why = "bad user address";
        goto leave;
    }
    memcpy(user_out, u, strlen(u) + 1);
    memcpy(sender_out, s, strlen(s) + 1);
    rc = 0;
leave:
    OPENSSL_cleanse(want, sizeof(want));
    return rc;
}
