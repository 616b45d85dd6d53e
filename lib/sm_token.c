/* sm_token — HMAC-SHA256 bearer tokens bound to a domain, with rotating keys.
 * libcrypto does the cryptography (HMAC, CRYPTO_memcmp, RAND_bytes) and the
 * base64 (EVP_EncodeBlock/EVP_DecodeBlock); this file only adds the url-safe
 * alphabet and the strictness a token needs. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "sm_addr.h"
#include "sm_token.h"

#define MAC_LEN 32                       /* SHA-256 */
#define PREFIX "v1."
#define PREFIX_LEN 3

/* base64url ------------------------------------------------------------ */

static int b64url_char(unsigned char c)
{
    return (isascii(c) && isalnum(c)) || c == '-' || c == '_';
}

long sm_b64url_encode(const unsigned char *in, size_t len, char *out, size_t outlen)
{
    /* chunks that are a multiple of 3 bytes encode without padding, so the
     * pieces join up; it also keeps EVP_EncodeBlock's int length small */
    const size_t chunk = 3 * 1024;
    size_t done = 0, pos = 0, n, i;
    int got;

    if (len > (size_t)LONG_MAX / 4 * 3 - 3 || outlen < (len + 2) / 3 * 4 + 1)
        return -1;
    while (done < len) {
        n = len - done < chunk ? len - done : chunk;
        got = EVP_EncodeBlock((unsigned char *)out + pos, in + done, (int)n);
        pos += (size_t)got;
        done += n;
    }
    while (pos > 0 && out[pos - 1] == '=')
        pos--;
    out[pos] = '\0';
    for (i = 0; i < pos; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    return (long)pos;
}

long sm_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t outlen)
{
    unsigned char quad[4], tri[3], canon[5];
    size_t i, j, take, pos = 0;

    if (inlen % 4 == 1 || inlen > (size_t)LONG_MAX)
        return -1;
    for (i = 0; i < inlen; i++)
        if (!b64url_char((unsigned char)in[i]))
            return -1;
    for (i = 0; i < inlen; i += 4) {
        take = inlen - i >= 4 ? 3 : inlen - i - 1;   /* 2 chars → 1 byte, 3 → 2 */
        for (j = 0; j < 4; j++) {
            if (i + j >= inlen)
                quad[j] = '=';
            else if (in[i + j] == '-')
                quad[j] = '+';
            else if (in[i + j] == '_')
                quad[j] = '/';
            else
                quad[j] = (unsigned char)in[i + j];
        }
        if (EVP_DecodeBlock(tri, quad, 4) != 3 || pos + take > outlen)
            return -1;
        if (take < 3) {
            /* the unused low bits of the last character must be zero, or
             * several spellings would decode to the same bytes */
            EVP_EncodeBlock(canon, tri, (int)take);
            if (memcmp(canon, quad, take + 1) != 0)
                return -1;
        }
        memcpy(out + pos, tri, take);
        pos += take;
    }
    return (long)pos;
}

int sm_random_hex(char *out, size_t outlen, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    size_t done = 0, n, i;

    if (nbytes > (SIZE_MAX - 1) / 2 || outlen < 2 * nbytes + 1)
        return -1;
    while (done < nbytes) {
        n = nbytes - done < sizeof raw ? nbytes - done : sizeof raw;
        if (RAND_bytes(raw, (int)n) != 1)
            return -1;
        for (i = 0; i < n; i++) {
            out[2 * (done + i)] = hex[raw[i] >> 4];
            out[2 * (done + i) + 1] = hex[raw[i] & 15];
        }
        done += n;
    }
    out[2 * nbytes] = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

/* keyring --------------------------------------------------------------- */

static int key_id_valid(const char *id, size_t len)
{
    size_t i;

    if (len == 0 || len > SM_TOKEN_KEY_ID_MAX)
        return 0;
    for (i = 0; i < len; i++)
        if (!b64url_char((unsigned char)id[i]))
            return 0;
    return 1;
}

const sm_token_key *sm_token_key_find(const sm_token_keyring *kr, const char *id, size_t len)
{
    int i;

    for (i = 0; i < kr->n; i++)
        if (strlen(kr->key[i].id) == len && memcmp(kr->key[i].id, id, len) == 0)
            return &kr->key[i];
    return NULL;
}

void sm_token_keyring_init(sm_token_keyring *kr)
{
    memset(kr, 0, sizeof *kr);
}

void sm_token_keyring_clear(sm_token_keyring *kr)
{
    OPENSSL_cleanse(kr, sizeof *kr);
    kr->n = 0;
}

int sm_token_keyring_add(sm_token_keyring *kr, const char *id, const unsigned char *secret,
                         size_t len, const char **why)
{
    sm_token_key *k;
    size_t idlen = strlen(id);

    if (!key_id_valid(id, idlen)) {
        *why = "key id must be 1-16 of [A-Za-z0-9_-]";
        return -1;
    }
    if (sm_token_key_find(kr, id, idlen)) {
        *why = "duplicate key id";
        return -1;
    }
    if (len < SM_TOKEN_SECRET_MIN || len > SM_TOKEN_SECRET_MAX) {
        *why = "token secret must be 32 to 64 bytes";
        return -1;
    }
    if (kr->n >= SM_TOKEN_KEYS_MAX) {
        *why = "too many token keys";
        return -1;
    }
    k = &kr->key[kr->n++];
    memcpy(k->id, id, idlen + 1);
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    return 0;
}

int sm_token_keyring_add_hex(sm_token_keyring *kr, const char *id, const char *hex,
                             const char **why)
{
    unsigned char secret[SM_TOKEN_SECRET_MAX];
    size_t len = strlen(hex), i;
    int rc = -1, hi, lo;

    if (len % 2 != 0 || len / 2 > sizeof secret) {
        *why = "token secret must be 64 to 128 hex digits";
        goto leave;
    }
    for (i = 0; i < len / 2; i++) {
        hi = OPENSSL_hexchar2int((unsigned char)hex[2 * i]);
        lo = OPENSSL_hexchar2int((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            *why = "token secret is not hex";
            goto leave;
        }
        secret[i] = (unsigned char)(hi << 4 | lo);
    }
    rc = sm_token_keyring_add(kr, id, secret, len / 2, why);
leave:
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

/* tokens ---------------------------------------------------------------- */

static int mac(const sm_token_key *k, const char *text, size_t len, unsigned char *md)
{
    unsigned int mdlen = 0;

    if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)text, len,
              md, &mdlen) || mdlen != MAC_LEN)
        return -1;
    return 0;
}

int sm_token_issue(const sm_token_keyring *kr, const char *key_id, const char *domain,
                   long lifetime, time_t now, char *out, size_t outlen)
{
    char dom[SM_DOMAIN_MAX + 1], payload[SM_DOMAIN_MAX + 48];
    char text[SM_TOKEN_MAX + 1];
    unsigned char md[MAC_LEN];
    const sm_token_key *k;
    long long expiry;
    long n, m;
    size_t i, len;
    int plen, rc = -1;

    if (!sm_domain_valid(domain) || lifetime <= 0 || now < 0
        || (long long)now > LLONG_MAX - lifetime) {
        errno = EINVAL;
        goto leave;
    }
    k = key_id ? sm_token_key_find(kr, key_id, strlen(key_id))
               : kr->n > 0 ? &kr->key[kr->n - 1] : NULL;
    if (!k) {
        errno = ENOENT;
        goto leave;
    }
    for (i = 0; domain[i]; i++)
        dom[i] = (char)tolower((unsigned char)domain[i]);
    dom[i] = '\0';
    expiry = (long long)now + lifetime;
    plen = snprintf(payload, sizeof payload, "%s|%lld|%s", dom, expiry, k->id);
    memcpy(text, PREFIX, PREFIX_LEN);
    n = sm_b64url_encode((const unsigned char *)payload, (size_t)plen, text + PREFIX_LEN,
                         sizeof text - PREFIX_LEN);
    /* the longest domain, expiry and key id still fit in SM_TOKEN_MAX */
    if (n < 0) {
        errno = EINVAL;
        goto leave;
    }
    len = PREFIX_LEN + (size_t)n;
    if (mac(k, text, len, md) != 0) {
        errno = EIO;
        goto leave;
    }
    text[len++] = '.';
    m = sm_b64url_encode(md, sizeof md, text + len, sizeof text - len);
    if (m < 0) {
        errno = EINVAL;
        goto leave;
    }
    len += (size_t)m;
    if (len + 1 > outlen) {
        errno = ENOSPC;
        goto leave;
    }
    memcpy(out, text, len + 1);
    rc = 0;
leave:
    OPENSSL_cleanse(md, sizeof md);
    return rc;
}

/* Decimal Unix time without sign or leading zeros. */
static int parse_expiry(const char *s, size_t len, long long *out)
{
    long long v = 0;
    size_t i;

    if (len == 0 || len > 18 || (len > 1 && s[0] == '0'))
        return -1;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int sm_token_check(const sm_token_keyring *kr, const char *token, time_t now,
                   char *domain_out, size_t domlen, time_t *expiry_out, const char **why)
{
    unsigned char payload[SM_TOKEN_MAX], got[MAC_LEN + 3], want[MAC_LEN];
    const char *mid, *dot, *bar1, *bar2, *end;
    const sm_token_key *k;
    size_t len, domn, i;
    long plen, mlen;
    long long expiry;
    int rc = -1;

    *why = "malformed token";
    len = strnlen(token, SM_TOKEN_MAX + 1);
    if (len > SM_TOKEN_MAX || len < PREFIX_LEN || memcmp(token, PREFIX, PREFIX_LEN) != 0)
        goto leave;
    mid = token + PREFIX_LEN;
    if ((dot = memchr(mid, '.', len - PREFIX_LEN)) == NULL)
        goto leave;
    plen = sm_b64url_decode(mid, (size_t)(dot - mid), payload, sizeof payload);
    mlen = sm_b64url_decode(dot + 1, len - (size_t)(dot + 1 - token), got, sizeof got);
    if (plen <= 0 || mlen != MAC_LEN)
        goto leave;

    /* payload: domain "|" expiry "|" key_id, plain printable text */
    end = (const char *)payload + plen;
    bar1 = memchr(payload, '|', (size_t)plen);
    bar2 = bar1 ? memchr(bar1 + 1, '|', (size_t)(end - bar1 - 1)) : NULL;
    if (!bar2 || memchr(bar2 + 1, '|', (size_t)(end - bar2 - 1)))
        goto leave;
    domn = (size_t)(bar1 - (const char *)payload);
    if (domn == 0 || domn > SM_DOMAIN_MAX)
        goto leave;
    for (i = 0; i < domn; i++)
        if (isupper(payload[i]) || payload[i] == '\0')
            goto leave;
    if (parse_expiry(bar1 + 1, (size_t)(bar2 - bar1 - 1), &expiry) != 0)
        goto leave;
    if (!key_id_valid(bar2 + 1, (size_t)(end - bar2 - 1)))
        goto leave;

    if ((k = sm_token_key_find(kr, bar2 + 1, (size_t)(end - bar2 - 1))) == NULL) {
        *why = "unknown key id";
        goto leave;
    }
    if (mac(k, token, (size_t)(dot - token), want) != 0 || CRYPTO_memcmp(want, got, MAC_LEN) != 0) {
        *why = "bad mac";
        goto leave;
    }

    /* from here on the payload is ours */
    payload[domn] = '\0';
    if (!sm_domain_valid((const char *)payload))
        goto leave;
    if ((long long)now >= expiry) {
        *why = "expired";
        goto leave;
    }
    if (domn + 1 > domlen) {
        *why = "domain buffer too small";
        goto leave;
    }
    memcpy(domain_out, payload, domn + 1);
    if (expiry_out)
        *expiry_out = (time_t)expiry;
    *why = NULL;
    rc = 0;
leave:
    OPENSSL_cleanse(want, sizeof want);
    return rc;
}
