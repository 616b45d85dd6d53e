/* sm_wkd — recipients' own keys from a Web Key Directory on the outbox
 * origin (see sm_wkd.h).
 *
 * Unlike a domain key, a user key comes with no fingerprint from DNS: what
 * makes it this recipient's is that the recipient's own domain serves it
 * (the origin its _stubmail record names, over verified TLS) and that it
 * says so itself (a user id with the address). So the blob is looked at
 * before anything is imported, and refused whole unless it is one public key
 * fit for encrypting to that address; the keyring it goes into is the
 * milter's, which also holds the domain keys our stored mail relies on. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <gpgme.h>
#include <openssl/evp.h>

#include "sm_addr.h"
#include "sm_log.h"
#include "sm_wkd.h"

#define DEFAULT_TIMEOUT 10L

const char *sm_wkd_status_name(int status)
{
    switch (status) {
    case SM_WKD_FOUND:   return "found";
    case SM_WKD_NONE:    return "none";
    case SM_WKD_REFUSED: return "refused";
    default:             return "error";
    }
}

int sm_wkd_hash(const char *local, size_t len, char out[SM_WKD_HASH_LEN + 1])
{
    static const char zb32[] = "ybndrfg8ejkmcpqxot1uwisza345h769";
    unsigned char md[EVP_MAX_MD_SIZE], *low = NULL;
    unsigned int mdlen = 0, bits = 0, acc = 0;
    size_t i, n = 0;
    int rc = -1;

    out[0] = '\0';
    if (!local || len == 0 || (low = malloc(len)) == NULL)
        goto leave;
    /* the draft maps only A-Z: other octets (UTF-8) are hashed as they are */
    for (i = 0; i < len; i++)
        low[i] = (unsigned char)(local[i] >= 'A' && local[i] <= 'Z' ? local[i] - 'A' + 'a'
                                                                    : local[i]);
    if (!EVP_Digest(low, len, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        goto leave;
    for (i = 0; i < mdlen; i++) {
        acc = (acc << 8) | md[i];
        bits += 8;
        while (bits >= 5) {
            out[n++] = zb32[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    out[n] = '\0';              /* 160 bits: 32 characters, nothing left over */
    rc = n == SM_WKD_HASH_LEN ? 0 : -1;
leave:
    free(low);
    return rc;
}

/* RFC 3986 unreserved characters stay, everything else is %XX. */
static int pct_encode(const char *in, size_t len, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i, o = 0;
    unsigned char c;

    for (i = 0; i < len; i++) {
        c = (unsigned char)in[i];
        if (isascii(c) && (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')) {
            if (o + 1 >= outlen)
                return -1;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= outlen)
                return -1;
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return 0;
}

int sm_wkd_url(const char *outbox_url, const char *addr, const sm_https_opts *opts,
               char *out, size_t outlen, char *why, size_t whylen)
{
    char hash[SM_WKD_HASH_LEN + 1], domain[SM_DOMAIN_MAX + 1], local_enc[3 * SM_ADDR_MAX + 1];
    const char *at;
    CURLU *u = NULL;
    char *scheme = NULL, *host = NULL, *port = NULL;
    size_t i, dlen;
    int rc = -1, n;

    if (why && whylen)
        why[0] = '\0';
    if (outlen)
        out[0] = '\0';
    at = addr ? strrchr(addr, '@') : NULL;
    if (!at || at == addr || strlen(addr) > SM_ADDR_MAX || (dlen = strlen(at + 1)) == 0
        || dlen > SM_DOMAIN_MAX) {
        sm_why(why, whylen, "not an address: %.200s", addr ? addr : "(null)");
        goto leave;
    }
    for (i = 0; i <= dlen; i++)
        domain[i] = (char)tolower((unsigned char)at[1 + i]);
    if (!sm_domain_valid(domain)) {
        sm_why(why, whylen, "not a domain: %.200s", domain);
        goto leave;
    }
    if (sm_wkd_hash(addr, (size_t)(at - addr), hash) != 0
        || pct_encode(addr, (size_t)(at - addr), local_enc, sizeof local_enc) != 0) {
        sm_why(why, whylen, "cannot hash the local part of %.200s", addr);
        goto leave;
    }
    if (sm_url_allowed(outbox_url, opts, why, whylen) != 0)
        goto leave;
    /* the outbox URL's scheme, host and port; its own path and query go */
    if ((u = curl_url()) == NULL
        || curl_url_set(u, CURLUPART_URL, outbox_url, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        sm_why(why, whylen, "cannot take the origin of %.200s", outbox_url);
        goto leave;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;                    /* none given: the scheme's default */
    n = snprintf(out, outlen, "%s://%s%s%s/.well-known/openpgpkey/%s/hu/%s?l=%s", scheme, host,
                 port ? ":" : "", port ? port : "", domain, hash, local_enc);
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen)
            out[0] = '\0';
        sm_why(why, whylen, "WKD URL too long");
        goto leave;
    }
    rc = 0;
leave:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

/* ---- the key ---------------------------------------------------------- */

/* The rules a user key must meet, for a listed blob and for the key as the
 * keyring has it after the import (sm_pgp_import_checked, which also sees
 * to one key, public only). arg is the normalised address. */
static int key_ok(gpgme_key_t k, int in_keyring, void *arg, char *why, size_t whylen)
{
    char norm[SM_ADDR_MAX + 1];
    const char *want = arg, *bad;
    gpgme_subkey_t sk;
    gpgme_user_id_t uid;
    int enc = 0, named = 0;

    (void)in_keyring;
    if (k->revoked || k->expired || k->disabled || k->invalid) {
        sm_why(why, whylen, "key %s is %s", k->fpr, k->revoked ? "revoked"
               : k->expired ? "expired" : k->disabled ? "disabled" : "invalid");
        return -1;
    }
    for (sk = k->subkeys; sk; sk = sk->next)
        if (sk->can_encrypt && !sk->revoked && !sk->expired && !sk->disabled && !sk->invalid)
            enc = 1;
    if (!enc || !k->can_encrypt) {
        sm_why(why, whylen, "key %s has no usable encryption subkey", k->fpr);
        return -1;
    }
    for (uid = k->uids; uid && !named; uid = uid->next)
        named = !uid->revoked && !uid->invalid && uid->address
                && sm_addr_normalize(uid->address, norm, sizeof norm, &bad) == 0
                && strcmp(norm, want) == 0;
    if (!named) {
        sm_why(why, whylen, "key %s has no user id with the address %s", k->fpr, want);
        return -1;
    }
    return 0;
}

int sm_wkd_import(const char *home, const char *addr, const void *blob, size_t len,
                  char fpr_out[SM_PGP_FPR_MAX + 1], char *why, size_t whylen)
{
    char want[SM_ADDR_MAX + 1];
    const char *bad;

    if (why && whylen)
        why[0] = '\0';
    fpr_out[0] = '\0';
    if (!addr || sm_addr_normalize(addr, want, sizeof want, &bad) != 0) {
        sm_why(why, whylen, "not an address: %.200s", addr ? addr : "(null)");
        return SM_WKD_REFUSED;
    }
    switch (sm_pgp_import_checked(home, blob, len, "the answer", key_ok, want, fpr_out, why,
                                  whylen)) {
    case SM_PGP_OK:     return SM_WKD_FOUND;
    case SM_PGP_REJECT: return SM_WKD_REFUSED;
    default:            return SM_WKD_ERROR;
    }
}

/* ---- the fetch -------------------------------------------------------- */

int sm_wkd_fetch(const char *home, const char *outbox_url, const char *addr,
                 const sm_https_opts *opts, char fpr_out[SM_PGP_FPR_MAX + 1],
                 char *url_out, size_t url_outlen, char *why, size_t whylen)
{
    char url[SM_WKD_URL_MAX], sub[SM_PGP_WHY_MAX];
    char *body = NULL;
    size_t blen = 0;
    long status = 0;
    sm_https_opts o = { NULL, 0, DEFAULT_TIMEOUT };
    int rc = SM_WKD_REFUSED;

    fpr_out[0] = '\0';
    if (url_out && url_outlen)
        url_out[0] = '\0';
    if (sm_wkd_url(outbox_url, addr, opts, url, sizeof url, why, whylen) != 0)
        goto leave;
    if (url_out && url_outlen)
        snprintf(url_out, url_outlen, "%s", url);
    if (opts)
        o = *opts;
    if (o.timeout <= 0)
        o.timeout = DEFAULT_TIMEOUT;
    switch (sm_https_get(url, &o, SM_WKD_KEY_MAX, "stubmail-wkd", &body, &blen, &status, why,
                         whylen)) {
    case 0:
        break;
    case -1:
        rc = SM_WKD_REFUSED;        /* too big */
        goto leave;
    default:
        rc = SM_WKD_ERROR;
        goto leave;
    }
    if (status == 404 || status == 410) {
        sm_why(why, whylen, "GET %s: HTTP %ld (no key published)", url, status);
        rc = SM_WKD_NONE;
        goto leave;
    }
    if (status != 200) {
        sm_why(why, whylen, "GET %s: HTTP %ld", url, status);
        rc = status >= 500 || status == 429 ? SM_WKD_ERROR : SM_WKD_REFUSED;
        goto leave;
    }
    rc = sm_wkd_import(home, addr, body, blen, fpr_out, sub, sizeof sub);
    if (rc != SM_WKD_FOUND)
        sm_why(why, whylen, "key from %s: %s", url, sub);
leave:
    free(body);
    return rc;
}
