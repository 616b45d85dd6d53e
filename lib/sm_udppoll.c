/* sm_udppoll — encode and check the datagrams of the UDP lightweight poll
 * (docs/PROTOCOL.md, "UDP poll"). HMAC-SHA256 and CRYPTO_memcmp from
 * libcrypto, base64url from sm_token. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "sm_addr.h"
#include "sm_udppoll.h"

#define PREFIX      SM_UDPPOLL_VERSION " poll "
#define PREFIX_LEN  (sizeof(PREFIX) - 1)
#define REPLY_MAC_PREFIX SM_UDPPOLL_VERSION " reply "
#define KEY_LABEL   "stubmail-udp-v1|"

/* HMAC-SHA256 with its algorithm looked up once: libcrypto's one-shot
 * HMAC() fetches "HMAC" and "SHA256" from the provider (locks, allocations)
 * on every call, most of the cost of a datagram for the UDP responder.
 * The template has the digest set and no key; each call works on a copy,
 * so threads share nothing but the read-only template. */
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static EVP_MAC_CTX *hmac_template;

static void hmac_init(void)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end()
    };
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);

    if (mac && (hmac_template = EVP_MAC_CTX_new(mac))
        && !EVP_MAC_CTX_set_params(hmac_template, params)) {
        EVP_MAC_CTX_free(hmac_template);
        hmac_template = NULL;
    }
    EVP_MAC_free(mac);          /* the context holds its own reference */
}

/* HMAC-SHA256 over a then b. */
static int hmac(const unsigned char *key, size_t keylen, const void *a, size_t alen,
                const void *b, size_t blen, unsigned char md[SM_UDPPOLL_KEY_LEN])
{
    EVP_MAC_CTX *ctx = NULL;
    size_t mdlen = 0;
    int ok;

    ok = pthread_once(&hmac_once, hmac_init) == 0 && hmac_template
         && (ctx = EVP_MAC_CTX_dup(hmac_template))
         && EVP_MAC_init(ctx, key, keylen, NULL)
         && EVP_MAC_update(ctx, a, alen)
         && (blen == 0 || EVP_MAC_update(ctx, b, blen))
         && EVP_MAC_final(ctx, md, &mdlen, SM_UDPPOLL_KEY_LEN)
         && mdlen == SM_UDPPOLL_KEY_LEN;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -1;
}

static int b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
           || c == '-' || c == '_';
}

static int key_id_char(unsigned char c)
{
    return b64url_char(c);
}

int sm_udppoll_cursor_valid(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > SM_UDPPOLL_CURSOR_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e)
            return 0;
    }
    return 1;
}

int sm_udppoll_session_of_token(const char *token, char *out, size_t outlen)
{
    const char *mid, *dot;
    size_t n;

    if (strncmp(token, "v1.", 3) != 0)
        return -1;
    mid = token + 3;
    if (!(dot = strchr(mid, '.')) || dot == mid)
        return -1;
    n = (size_t)(dot - mid);
    if (n > SM_UDPPOLL_SESSION_MAX || n + 1 > outlen)
        return -1;
    memcpy(out, mid, n);
    out[n] = '\0';
    return 0;
}

/* domain "|" expiry "|" key-id, as sm_token issues it: lowercase valid
 * domain, decimal expiry without leading zeros, a well-formed key id. */
static int session_parse(const char *session, size_t len, sm_udppoll_session *info)
{
    unsigned char raw[SM_UDPPOLL_SESSION_MAX];
    const char *p, *bar1, *bar2, *end;
    long n;
    size_t i, domn, idn, en;
    long long expiry = 0;

    if (len == 0 || len > SM_UDPPOLL_SESSION_MAX)
        return -1;
    if ((n = sm_b64url_decode(session, len, raw, sizeof raw)) <= 0)
        return -1;
    p = (const char *)raw;
    end = p + n;
    if (!(bar1 = memchr(p, '|', (size_t)n)) || !(bar2 = memchr(bar1 + 1, '|', (size_t)(end - bar1 - 1)))
        || memchr(bar2 + 1, '|', (size_t)(end - bar2 - 1)))
        return -1;
    domn = (size_t)(bar1 - p);
    en = (size_t)(bar2 - bar1 - 1);
    idn = (size_t)(end - bar2 - 1);
    if (domn == 0 || domn > SM_DOMAIN_MAX || en == 0 || en > 18 || (en > 1 && bar1[1] == '0')
        || idn == 0 || idn > SM_TOKEN_KEY_ID_MAX)
        return -1;
    for (i = 0; i < domn; i++)
        if (p[i] == '\0' || (p[i] >= 'A' && p[i] <= 'Z'))
            return -1;
    for (i = 0; i < en; i++) {
        if (bar1[1 + i] < '0' || bar1[1 + i] > '9')
            return -1;
        expiry = expiry * 10 + (bar1[1 + i] - '0');
    }
    for (i = 0; i < idn; i++)
        if (!key_id_char((unsigned char)bar2[1 + i]))
            return -1;
    memcpy(info->domain, p, domn);
    info->domain[domn] = '\0';
    if (!sm_domain_valid(info->domain))
        return -1;
    memcpy(info->key_id, bar2 + 1, idn);
    info->key_id[idn] = '\0';
    info->expiry = (time_t)expiry;
    return 0;
}

int sm_udppoll_key(const sm_token_keyring *kr, const char *session, size_t len,
                   unsigned char key[SM_UDPPOLL_KEY_LEN], sm_udppoll_session *info,
                   const char **why)
{
    const sm_token_key *k = NULL;
    int i;

    if (session_parse(session, len, info) != 0) {
        *why = "malformed session";
        return -1;
    }
    for (i = 0; i < kr->n && !k; i++)
        if (strcmp(kr->key[i].id, info->key_id) == 0)
            k = &kr->key[i];
    if (!k) {
        *why = "unknown key id";
        return -1;
    }
    if (hmac(k->secret, k->secret_len, KEY_LABEL, sizeof(KEY_LABEL) - 1, session, len, key) != 0) {
        *why = "crypto failure";
        return -1;
    }
    return 0;
}

int sm_udppoll_secret(const sm_token_keyring *kr, const char *session, char *out,
                      size_t outlen, const char **why)
{
    unsigned char key[SM_UDPPOLL_KEY_LEN];
    char enc[SM_UDPPOLL_B64_LEN + 2];
    sm_udppoll_session info;
    int rc = -1;

    if (sm_udppoll_key(kr, session, strlen(session), key, &info, why) != 0)
        goto leave;
    if (outlen < SM_UDPPOLL_B64_LEN + 1 || sm_b64url_encode(key, sizeof key, enc, sizeof enc)
                                             != SM_UDPPOLL_B64_LEN) {
        *why = "buffer too small";
        goto leave;
    }
    memcpy(out, enc, SM_UDPPOLL_B64_LEN + 1);
    rc = 0;
leave:
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(enc, sizeof enc);
    return rc;
}

int sm_udppoll_secret_decode(const char *b64, unsigned char key[SM_UDPPOLL_KEY_LEN])
{
    unsigned char raw[SM_UDPPOLL_KEY_LEN + 3];
    size_t len = strnlen(b64, SM_UDPPOLL_B64_LEN + 1);

    if (len != SM_UDPPOLL_B64_LEN
        || sm_b64url_decode(b64, len, raw, sizeof raw) != SM_UDPPOLL_KEY_LEN)
        return -1;
    memcpy(key, raw, SM_UDPPOLL_KEY_LEN);
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

static int mac_b64(const unsigned char key[SM_UDPPOLL_KEY_LEN], const void *a, size_t alen,
                   const void *b, size_t blen, char out[SM_UDPPOLL_B64_LEN + 1])
{
    unsigned char md[SM_UDPPOLL_KEY_LEN];
    char enc[SM_UDPPOLL_B64_LEN + 2];   /* the encoder wants room for padding */
    long n;

    if (hmac(key, SM_UDPPOLL_KEY_LEN, a, alen, b, blen, md) != 0)
        return -1;
    n = sm_b64url_encode(md, sizeof md, enc, sizeof enc);
    if (n != SM_UDPPOLL_B64_LEN)
        return -1;
    memcpy(out, enc, SM_UDPPOLL_B64_LEN + 1);
    return 0;
}

long sm_udppoll_request_encode(const unsigned char key[SM_UDPPOLL_KEY_LEN],
                               const char *session, const char *cursor, long long t,
                               char *out, size_t outlen, char *mac_out)
{
    size_t slen = strlen(session), clen = strlen(cursor), i;
    int n;

    if (slen == 0 || slen > SM_UDPPOLL_SESSION_MAX || !sm_udppoll_cursor_valid(cursor, clen)
        || t < 0 || t > 999999999999LL)
        return -1;
    for (i = 0; i < slen; i++)
        if (!b64url_char((unsigned char)session[i]))
            return -1;
    n = snprintf(out, outlen, PREFIX "%s %s %lld ", session, cursor, t);
    if (n < 0 || (size_t)n + SM_UDPPOLL_B64_LEN + 1 > outlen)
        return -1;
    if (mac_b64(key, out, (size_t)n - 1, NULL, 0, mac_out) != 0)
        return -1;
    memcpy(out + n, mac_out, SM_UDPPOLL_B64_LEN + 1);
    return (long)n + SM_UDPPOLL_B64_LEN;
}

/* The next field of pkt from *pos up to the next space (or the end when
 * last): 1..max octets, each accepted by ok(). Returns its length, or 0. */
static size_t field(const unsigned char *pkt, size_t len, size_t *pos, size_t max, int last,
                    int (*ok)(unsigned char))
{
    size_t start = *pos, i = start;

    while (i < len && pkt[i] != ' ') {
        if (!ok(pkt[i]) || i - start >= max)
            return 0;
        i++;
    }
    if (i == start || (last ? i != len : (i == len)))
        return 0;
    *pos = last ? i : i + 1;
    return i - start;
}

static int cursor_char(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e;
}

static int digit_char(unsigned char c)
{
    return c >= '0' && c <= '9';
}

int sm_udppoll_request_parse(const unsigned char *pkt, size_t len, sm_udppoll_request *req,
                             const char **why)
{
    size_t pos = PREFIX_LEN, n, start, i;
    long long t = 0;

    *why = "malformed request";
    if (len < SM_UDPPOLL_REQUEST_MIN || len > SM_UDPPOLL_REQUEST_MAX) {
        *why = "request length out of range";
        return -1;
    }
    if (memcmp(pkt, SM_UDPPOLL_VERSION " ", sizeof(SM_UDPPOLL_VERSION)) != 0) {
        *why = "unknown version";
        return -1;
    }
    if (memcmp(pkt, PREFIX, PREFIX_LEN) != 0) {
        *why = "unknown request";
        return -1;
    }
    start = pos;
    if (!(n = field(pkt, len, &pos, SM_UDPPOLL_SESSION_MAX, 0, b64url_char)))
        return -1;
    memcpy(req->session, pkt + start, n);
    req->session[n] = '\0';
    start = pos;
    if (!(n = field(pkt, len, &pos, SM_UDPPOLL_CURSOR_MAX, 0, cursor_char)))
        return -1;
    memcpy(req->cursor, pkt + start, n);
    req->cursor[n] = '\0';
    start = pos;
    if (!(n = field(pkt, len, &pos, SM_UDPPOLL_TIME_DIGITS, 0, digit_char))
        || (n > 1 && pkt[start] == '0'))
        return -1;
    for (i = 0; i < n; i++)
        t = t * 10 + (pkt[start + i] - '0');
    req->time = t;
    req->signed_len = pos - 1;
    start = pos;
    if ((n = field(pkt, len, &pos, SM_UDPPOLL_B64_LEN, 1, b64url_char)) != SM_UDPPOLL_B64_LEN)
        return -1;
    memcpy(req->mac, pkt + start, n);
    req->mac[n] = '\0';
    *why = NULL;
    return 0;
}

int sm_udppoll_request_mac_ok(const unsigned char *pkt, const sm_udppoll_request *req,
                              const unsigned char key[SM_UDPPOLL_KEY_LEN])
{
    char want[SM_UDPPOLL_B64_LEN + 1];
    int ok;

    if (mac_b64(key, pkt, req->signed_len, NULL, 0, want) != 0)
        return 0;
    ok = CRYPTO_memcmp(want, req->mac, SM_UDPPOLL_B64_LEN) == 0;
    OPENSSL_cleanse(want, sizeof want);
    return ok;
}

int sm_udppoll_request_verify(const sm_token_keyring *kr, const unsigned char *pkt,
                              size_t len, time_t now, sm_udppoll_request *req,
                              sm_udppoll_session *info, unsigned char key[SM_UDPPOLL_KEY_LEN],
                              const char **why)
{
    if (sm_udppoll_request_parse(pkt, len, req, why) != 0
        || sm_udppoll_key(kr, req->session, strlen(req->session), key, info, why) != 0)
        return -1;
    if (!sm_udppoll_request_mac_ok(pkt, req, key)) {
        *why = "bad mac";
        return -1;
    }
    if ((long long)now >= (long long)info->expiry) {
        *why = "session expired";
        return -1;
    }
    if (req->time < (long long)now - SM_UDPPOLL_SKEW) {
        *why = "stale time";
        return -1;
    }
    if (req->time > (long long)now + SM_UDPPOLL_SKEW) {
        *why = "future time";
        return -1;
    }
    *why = NULL;
    return 0;
}

static const char *status_name(sm_udppoll_status status)
{
    return status == SM_UDPPOLL_IDLE ? "idle" : status == SM_UDPPOLL_POLL ? "poll" : NULL;
}

long sm_udppoll_reply_encode(const unsigned char key[SM_UDPPOLL_KEY_LEN], sm_udppoll_status status,
                             const char *req_mac, char *out, size_t outlen)
{
    const char *name = status_name(status);
    char signed_part[64], mac[SM_UDPPOLL_B64_LEN + 1];
    int n;

    if (!name || strlen(req_mac) != SM_UDPPOLL_B64_LEN || outlen < SM_UDPPOLL_REPLY_LEN + 1)
        return -1;
    n = snprintf(signed_part, sizeof signed_part, "%s %s ", name, req_mac);
    if (n < 0 || (size_t)n >= sizeof signed_part
        || mac_b64(key, REPLY_MAC_PREFIX, sizeof(REPLY_MAC_PREFIX) - 1, signed_part,
                   (size_t)n - 1, mac) != 0)
        return -1;
    n = snprintf(out, outlen, SM_UDPPOLL_VERSION " %s %s", name, mac);
    return n == SM_UDPPOLL_REPLY_LEN ? n : -1;
}

int sm_udppoll_reply_parse(const unsigned char key[SM_UDPPOLL_KEY_LEN], const char *req_mac,
                           const unsigned char *pkt, size_t len, sm_udppoll_status *status,
                           const char **why)
{
    sm_udppoll_status st;
    char want[SM_UDPPOLL_REPLY_LEN + 1];
    size_t i;

    *why = "malformed reply";
    if (len != SM_UDPPOLL_REPLY_LEN || memcmp(pkt, SM_UDPPOLL_VERSION " ", 10) != 0)
        return -1;
    if (memcmp(pkt + 10, "idle ", 5) == 0)
        st = SM_UDPPOLL_IDLE;
    else if (memcmp(pkt + 10, "poll ", 5) == 0)
        st = SM_UDPPOLL_POLL;
    else
        return -1;
    for (i = 15; i < len; i++)
        if (!b64url_char(pkt[i]))
            return -1;
    if (sm_udppoll_reply_encode(key, st, req_mac, want, sizeof want) != SM_UDPPOLL_REPLY_LEN) {
        *why = "bad request mac";
        return -1;
    }
    if (CRYPTO_memcmp(want, pkt, SM_UDPPOLL_REPLY_LEN) != 0) {
        *why = "bad mac";
        return -1;
    }
    *status = st;
    *why = NULL;
    return 0;
}
