/* sm_keyfpr — the primary fingerprint of an armored public key, without gpg
 * (sm_keyfpr.h).
 *
 * Only the first packet matters: a transferable public key starts with its
 * primary key packet (tag 6), and the fingerprint hashes that packet's body
 * behind a fixed prefix. The armor's checksum line is skipped: a damaged
 * block shows as a fingerprint nobody expects, and gpg checks the rest when
 * the key is imported. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "sm_keyfpr.h"
#include "sm_log.h"

#define ARMOR_BEGIN "-----BEGIN PGP PUBLIC KEY BLOCK-----"
#define PKT_PUBLIC_KEY 6

/* The base64 body of the armor (header lines and checksum left out),
 * decoded into *bin (malloc'd), *binlen octets. 0 or -1 with why. */
static int dearmor(const char *text, size_t len, unsigned char **bin, size_t *binlen,
                   char *why, size_t whylen)
{
    const char *p = text, *end = text + len, *nl;
    EVP_ENCODE_CTX *ctx = NULL;
    unsigned char *out = NULL;
    int n, total = 0, rc = -1, in_body = 0;

    *bin = NULL;
    *binlen = 0;
    if (len < sizeof ARMOR_BEGIN - 1 || strncmp(text, ARMOR_BEGIN, sizeof ARMOR_BEGIN - 1) != 0) {
        sm_why(why, whylen, "does not start with %s", ARMOR_BEGIN);
        goto leave;
    }
    if ((out = malloc(len / 4 * 3 + 3)) == NULL || (ctx = EVP_ENCODE_CTX_new()) == NULL) {
        sm_why(why, whylen, "out of memory");
        goto leave;
    }
    EVP_DecodeInit(ctx);
    for (; p < end; p = nl + 1) {
        size_t linelen;

        if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
            nl = end;
        linelen = (size_t)(nl - p);
        if (linelen > 0 && p[linelen - 1] == '\r')
            linelen--;
        if (p == text)
            continue;                   /* the BEGIN line */
        if (!in_body) {
            in_body = linelen == 0;     /* armor headers end at a blank line */
            continue;
        }
        if (linelen == 0)
            continue;
        if (p[0] == '=' || p[0] == '-')
            break;                      /* the checksum, or the END line */
        if (EVP_DecodeUpdate(ctx, out + total, &n, (const unsigned char *)p, (int)linelen) < 0) {
            sm_why(why, whylen, "bad base64 in the armor");
            goto leave;
        }
        total += n;
    }
    if (EVP_DecodeFinal(ctx, out + total, &n) < 0) {
        sm_why(why, whylen, "bad base64 at the end of the armor");
        goto leave;
    }
    total += n;
    *bin = out;
    *binlen = (size_t)total;
    out = NULL;
    rc = 0;
leave:
    EVP_ENCODE_CTX_free(ctx);
    free(out);
    return rc;
}

/* The first packet's tag and body (RFC 9580 section 4.2, both header
 * formats; a partial length is not allowed for key packets). 0 or -1. */
static int first_packet(const unsigned char *b, size_t n, int *tag, const unsigned char **body,
                        size_t *bodylen)
{
    size_t hdr, blen, i;

    if (n < 2 || !(b[0] & 0x80))
        return -1;
    if (b[0] & 0x40) {                  /* new format */
        *tag = b[0] & 0x3f;
        if (b[1] < 192) {
            hdr = 2;
            blen = b[1];
        } else if (b[1] < 224) {
            if (n < 3)
                return -1;
            hdr = 3;
            blen = ((size_t)(b[1] - 192) << 8) + b[2] + 192;
        } else if (b[1] == 255) {
            if (n < 6)
                return -1;
            hdr = 6;
            blen = (size_t)b[2] << 24 | (size_t)b[3] << 16 | (size_t)b[4] << 8 | b[5];
        } else {
            return -1;
        }
    } else {                            /* old format */
        int lt = b[0] & 3;

        *tag = (b[0] >> 2) & 0x0f;
        if (lt == 3)
            return -1;
        hdr = 1 + ((size_t)1 << lt);
        if (n < hdr)
            return -1;
        for (i = 1, blen = 0; i < hdr; i++)
            blen = blen << 8 | b[i];
    }
    if (blen == 0 || blen > n - hdr)
        return -1;
    *body = b + hdr;
    *bodylen = blen;
    return 0;
}

int sm_keyfpr_armored(const char *text, size_t len, char fpr[SM_KEYFPR_MAX + 1],
                      char *why, size_t whylen)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char *bin = NULL, prefix[5], md[EVP_MAX_MD_SIZE];
    const unsigned char *body;
    size_t binlen, bodylen, plen, i;
    unsigned mdlen = 0;
    const EVP_MD *alg;
    EVP_MD_CTX *ctx = NULL;
    int tag, rc = -1;

    fpr[0] = '\0';
    if (dearmor(text, len, &bin, &binlen, why, whylen) != 0)
        goto leave;
    if (first_packet(bin, binlen, &tag, &body, &bodylen) != 0 || tag != PKT_PUBLIC_KEY) {
        sm_why(why, whylen, "the block does not start with a public key packet");
        goto leave;
    }
    if (body[0] == 4) {                 /* 0x99, two-octet length */
        alg = EVP_sha1();
        prefix[0] = 0x99;
        prefix[1] = (unsigned char)(bodylen >> 8);
        prefix[2] = (unsigned char)bodylen;
        plen = 3;
    } else if (body[0] == 5 || body[0] == 6) {  /* 0x9A or 0x9B, four octets */
        alg = EVP_sha256();
        prefix[0] = body[0] == 5 ? 0x9a : 0x9b;
        prefix[1] = (unsigned char)(bodylen >> 24);
        prefix[2] = (unsigned char)(bodylen >> 16);
        prefix[3] = (unsigned char)(bodylen >> 8);
        prefix[4] = (unsigned char)bodylen;
        plen = 5;
    } else {
        sm_why(why, whylen, "public key packet version %u is not 4, 5 or 6", body[0]);
        goto leave;
    }
    if ((ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(ctx, alg, NULL) != 1
        || EVP_DigestUpdate(ctx, prefix, plen) != 1 || EVP_DigestUpdate(ctx, body, bodylen) != 1
        || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1) {
        sm_why(why, whylen, "hashing the key packet failed");
        goto leave;
    }
    for (i = 0; i < mdlen && 2 * i + 1 < SM_KEYFPR_MAX + 1; i++) {
        fpr[2 * i] = hex[md[i] >> 4];
        fpr[2 * i + 1] = hex[md[i] & 15];
    }
    fpr[2 * i] = '\0';
    rc = 0;
leave:
    EVP_MD_CTX_free(ctx);
    free(bin);
    return rc;
}
