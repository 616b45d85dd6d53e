/* sm_keyfpr — the primary fingerprint of an armored public key, in
 * process through librnp (sm_keyfpr.h): the key is loaded into a keyring
 * in memory, so nothing is written and no gpg runs. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <rnp/rnp.h>
#include <rnp/rnp_err.h>

#include "sm_keyfpr.h"
#include "sm_log.h"

#define ARMOR_BEGIN "-----BEGIN PGP PUBLIC KEY BLOCK-----"

int sm_keyfpr_armored(const char *text, size_t len, char fpr[SM_KEYFPR_MAX + 1],
                      char *why, size_t whylen)
{
    rnp_ffi_t ffi = NULL;
    rnp_input_t in = NULL;
    rnp_identifier_iterator_t it = NULL;
    rnp_key_handle_t key = NULL;
    const char *id = NULL;
    char *got = NULL;
    size_t primaries = 0;
    bool primary = false;
    rnp_result_t r;
    int rc = -1;

    fpr[0] = '\0';
    if (len < sizeof ARMOR_BEGIN - 1 || strncmp(text, ARMOR_BEGIN, sizeof ARMOR_BEGIN - 1) != 0) {
        sm_why(why, whylen, "does not start with %s", ARMOR_BEGIN);
        goto leave;
    }
    if ((r = rnp_ffi_create(&ffi, "GPG", "GPG")) != RNP_SUCCESS
        || (r = rnp_input_from_memory(&in, (const uint8_t *)text, len, false)) != RNP_SUCCESS) {
        sm_why(why, whylen, "librnp: %s", rnp_result_to_string(r));
        goto leave;
    }
    if ((r = rnp_load_keys(ffi, "GPG", in, RNP_LOAD_SAVE_PUBLIC_KEYS)) != RNP_SUCCESS) {
        sm_why(why, whylen, "not an OpenPGP public key: %s", rnp_result_to_string(r));
        goto leave;
    }
    if ((r = rnp_identifier_iterator_create(ffi, &it, "fingerprint")) != RNP_SUCCESS) {
        sm_why(why, whylen, "librnp: %s", rnp_result_to_string(r));
        goto leave;
    }
    /* the primary keys among the keys and subkeys loaded: exactly one */
    while (rnp_identifier_iterator_next(it, &id) == RNP_SUCCESS && id) {
        if (rnp_locate_key(ffi, "fingerprint", id, &key) != RNP_SUCCESS || !key
            || rnp_key_is_primary(key, &primary) != RNP_SUCCESS) {
            sm_why(why, whylen, "librnp cannot read key %s", id);
            goto leave;
        }
        if (primary && primaries++ == 0 && rnp_key_get_fprint(key, &got) != RNP_SUCCESS) {
            sm_why(why, whylen, "librnp cannot give key %s's fingerprint", id);
            goto leave;
        }
        rnp_key_handle_destroy(key);
        key = NULL;
    }
    if (primaries != 1 || !got || strlen(got) > SM_KEYFPR_MAX) {
        sm_why(why, whylen, primaries == 0 ? "no public key in the block"
                            : "%zu keys in the block: one is wanted", primaries);
        goto leave;
    }
    strcpy(fpr, got);
    rc = 0;
leave:
    rnp_buffer_destroy(got);
    rnp_key_handle_destroy(key);
    rnp_identifier_iterator_destroy(it);
    rnp_input_destroy(in);
    rnp_ffi_destroy(ffi);
    return rc;
}
