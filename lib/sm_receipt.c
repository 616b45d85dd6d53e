/* sm_receipt — receipts: made, carried in a file name, checked (sm_receipt.h). */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "sm_token.h"
#include "sm_receipt.h"

#define RECEIPT_SECRET_LEN 32

int sm_receipt_new(char *receipt, unsigned char *hash)
{
    unsigned char secret[RECEIPT_SECRET_LEN];
    char text[(RECEIPT_SECRET_LEN + 2) / 3 * 4 + 1];    /* the encoder's room, padding too */
    int rc = -1;

    if (RAND_bytes(secret, sizeof secret) != 1)
        goto leave;
    if (sm_b64url_encode(secret, sizeof secret, text, sizeof text) != SM_RECEIPT_LEN)
        goto leave;
    memcpy(receipt, text, SM_RECEIPT_LEN + 1);
    SHA256((const unsigned char *)receipt, SM_RECEIPT_LEN, hash);
    rc = 0;
leave:
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(text, sizeof text);
    return rc;
}

int sm_receipt_valid(const char *s)
{
    size_t i;

    for (i = 0; i < SM_RECEIPT_LEN; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '-' || c == '_'))
            return 0;
    }
    return s[SM_RECEIPT_LEN] == '\0';
}

void sm_receipt_name(const char *receipt, char *name, size_t namelen)
{
    size_t plen = strlen(SM_RECEIPT_NAME_PREFIX);

    if (namelen == 0)
        return;
    name[0] = '\0';
    if (namelen > plen + SM_RECEIPT_LEN) {
        memcpy(name, SM_RECEIPT_NAME_PREFIX, plen);
        memcpy(name + plen, receipt, SM_RECEIPT_LEN);
        name[plen + SM_RECEIPT_LEN] = '\0';
    }
}

int sm_receipt_from_name(const char *name, char *receipt)
{
    size_t plen = strlen(SM_RECEIPT_NAME_PREFIX);

    receipt[0] = '\0';
    if (name == NULL || strncmp(name, SM_RECEIPT_NAME_PREFIX, plen) != 0
        || !sm_receipt_valid(name + plen))
        return -1;
    memcpy(receipt, name + plen, SM_RECEIPT_LEN + 1);
    return 0;
}

int sm_receipt_matches(const char *receipt, const unsigned char *hash, size_t hashlen)
{
    unsigned char got[SM_RECEIPT_HASH_LEN];

    if (receipt == NULL || hashlen != SM_RECEIPT_HASH_LEN || !sm_receipt_valid(receipt))
        return 0;
    SHA256((const unsigned char *)receipt, SM_RECEIPT_LEN, got);
    return CRYPTO_memcmp(got, hash, SM_RECEIPT_HASH_LEN) == 0;
}
