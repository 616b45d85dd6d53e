/* sm_seal_keys — the seal's keys and contexts: keys exported from the GnuPG
 * home once through gpgme and cached (shared by the slots, exported again
 * after SM_SEAL_KEY_TTL or a forget), the slots (one rnp context each), and
 * the checks of a key from memory. The per-message operations are
 * sm_seal.c. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gpgme.h>
#include <rnp/rnp.h>
#include <rnp/rnp_err.h>

#include "sm_addr.h"
#include "sm_log.h"
#include "sm_pgp.h"
#include "sm_pgp_impl.h"
#include "sm_seal.h"
#include "sm_seal_impl.h"

int seal_rnp_fail(char *why, size_t whylen, const char *what, rnp_result_t r)
{
    sm_why(why, whylen, "%s: %s", what, rnp_result_to_string(r));
    return SM_PGP_ERROR;
}

/* ---- keys: exported from the home once, shared by the slots ----------- */

/* gpgme's export of fpr (the transferable secret key if secret). */
static int export_key(const char *home, const char *fpr, int secret, unsigned char **data,
                      size_t *len, char *why, size_t whylen)
{
    gpgme_ctx_t ctx = NULL;
    gpgme_data_t d = NULL;
    gpgme_error_t err;
    char *mem = NULL;
    int rc;

    *data = NULL;
    *len = 0;
    if ((rc = pgp_ctx_open(home, 0, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new(&d)) != 0
        || (err = gpgme_op_export(ctx, fpr, secret ? GPGME_EXPORT_MODE_SECRET : 0, d)) != 0) {
        rc = pgp_fail(why, whylen, secret ? "exporting our secret key" : "exporting a key", err);
        goto leave;
    }
    rc = pgp_take_mem(&d, &mem, len, why, whylen);
    if (rc == SM_PGP_REJECT)
        sm_why(why, whylen, "%skey %s: not in the keyring %s", secret ? "secret " : "", fpr, home);
    *data = (unsigned char *)mem;
leave:
    if (d)
        gpgme_data_release(d);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

/* Remove cached key i, under s->lock; a secret key's octets are wiped. */
static void blob_drop(sm_seal *s, size_t i)
{
    key_blob *b = &s->keys[i];

    if (b->secret)
        rnp_buffer_clear(b->data, b->len);
    free(b->data);
    s->keys[i] = s->keys[--s->nkeys];
}

/* The cached export of fpr, under s->lock; NULL if none or too old (then
 * dropped, and every slot made again before its next use). */
static key_blob *blob_find(sm_seal *s, const char *fpr, int secret, time_t now)
{
    size_t i;

    for (i = 0; i < s->nkeys; i++) {
        key_blob *b = &s->keys[i];
        if (b->secret != secret || strcmp(b->fpr, fpr) != 0)
            continue;
        if (now - b->fetched < SM_SEAL_KEY_TTL)
            return b;
        blob_drop(s, i);
        s->gen++;
        return NULL;
    }
    return NULL;
}

/* Store an export under s->lock (taking data); the cached one if another
 * thread stored it first. */
static key_blob *blob_add(sm_seal *s, const char *fpr, int secret, unsigned char *data,
                          size_t len, time_t now)
{
    key_blob *b = blob_find(s, fpr, secret, now);

    if (b) {
        free(data);
        return b;
    }
    if (s->nkeys == s->capkeys) {
        size_t cap = s->capkeys ? s->capkeys * 2 : 16;
        key_blob *k = realloc(s->keys, cap * sizeof *k);
        if (k == NULL) {
            free(data);
            return NULL;
        }
        s->keys = k;
        s->capkeys = cap;
    }
    b = &s->keys[s->nkeys++];
    snprintf(b->fpr, sizeof b->fpr, "%s", fpr);
    b->secret = secret;
    b->data = data;
    b->len = len;
    b->fetched = now;
    return b;
}

static int import_blob(rnp_ffi_t ffi, const key_blob *b, char *why, size_t whylen)
{
    rnp_input_t in = NULL;
    rnp_result_t r;
    int rc = SM_PGP_OK;

    r = rnp_input_from_memory(&in, b->data, b->len, false);
    if (r == RNP_SUCCESS)
        r = rnp_import_keys(ffi, in, RNP_LOAD_SAVE_PUBLIC_KEYS
                            | (b->secret ? RNP_LOAD_SAVE_SECRET_KEYS : 0), NULL);
    if (r != RNP_SUCCESS) {
        sm_why(why, whylen, "loading key %s: %s", b->fpr, rnp_result_to_string(r));
        rc = SM_PGP_ERROR;
    }
    rnp_input_destroy(in);
    return rc;
}

/* fpr's key in the slot's context (*key, to destroy), loading it on first
 * use: SM_PGP_OK; SM_PGP_REJECT if the home does not have it. */
int seal_slot_key(sm_seal *s, slot *sl, const char *fpr, int secret, rnp_key_handle_t *key,
                    char *why, size_t whylen)
{
    unsigned char *data;
    size_t len;
    key_blob *b;
    bool have = !secret;
    int rc;

    *key = NULL;
    if (rnp_locate_key(sl->ffi, "fingerprint", fpr, key) == RNP_SUCCESS && *key
        && (!secret || (rnp_key_have_secret(*key, &have) == RNP_SUCCESS && have)))
        return SM_PGP_OK;
    rnp_key_handle_destroy(*key);
    *key = NULL;

    pthread_mutex_lock(&s->lock);
    if ((b = blob_find(s, fpr, secret, time(NULL))) == NULL) {
        unsigned gen = s->gen;

        /* a gpg process: outside the lock, so other slots go on */
        pthread_mutex_unlock(&s->lock);
        if ((rc = export_key(s->home, fpr, secret, &data, &len, why, whylen)) != SM_PGP_OK)
            return rc;
        pthread_mutex_lock(&s->lock);
        if (s->gen != gen) {
            /* a forget came while gpg ran: this export may be the old
             * key, so this operation uses it and nobody keeps it */
            key_blob once = { "", secret, data, len, time(NULL) };

            snprintf(once.fpr, sizeof once.fpr, "%s", fpr);
            pthread_mutex_unlock(&s->lock);
            rc = import_blob(sl->ffi, &once, why, whylen);
            if (secret)
                rnp_buffer_clear(data, len);
            free(data);
            goto loaded;        /* the slot's gen is behind: made again next time */
        }
        if ((b = blob_add(s, fpr, secret, data, len, time(NULL))) == NULL) {
            pthread_mutex_unlock(&s->lock);
            sm_why(why, whylen, "out of memory");
            return SM_PGP_ERROR;
        }
    }
    /* b lives while the lock is held */
    rc = import_blob(sl->ffi, b, why, whylen);
    if (rc == SM_PGP_OK && (sl->oldest == 0 || b->fetched < sl->oldest))
        sl->oldest = b->fetched;
    pthread_mutex_unlock(&s->lock);
loaded:
    if (rc != SM_PGP_OK)
        return rc;
    if (rnp_locate_key(sl->ffi, "fingerprint", fpr, key) != RNP_SUCCESS || *key == NULL) {
        /* the export held another key than the one asked for */
        sm_why(why, whylen, "key %s: the keyring's export does not contain it", fpr);
        return SM_PGP_REJECT;
    }
    return SM_PGP_OK;
}

/* A primary key that may be used now: neither revoked nor expired. */
int seal_key_valid(rnp_key_handle_t key)
{
    bool valid = false, revoked = true, expired = true;

    return rnp_key_is_valid(key, &valid) == RNP_SUCCESS && valid
        && rnp_key_is_revoked(key, &revoked) == RNP_SUCCESS && !revoked
        && rnp_key_is_expired(key, &expired) == RNP_SUCCESS && !expired;
}

/* A subkey that may encrypt now, and with secret, whose secret part is here
 * (so that we can decrypt). */
static int encryption_subkey(rnp_key_handle_t key, int secret)
{
    bool usable = false, have = !secret;
    size_t i, n = 0;
    int found = 0;

    if (rnp_key_get_subkey_count(key, &n) != RNP_SUCCESS)
        return 0;
    for (i = 0; i < n && !found; i++) {
        rnp_key_handle_t sub = NULL;
        found = rnp_key_get_subkey_at(key, i, &sub) == RNP_SUCCESS && sub
                && rnp_key_allows_usage(sub, "encrypt", &usable) == RNP_SUCCESS && usable
                && (!secret || (rnp_key_have_secret(sub, &have) == RNP_SUCCESS && have))
                && seal_key_valid(sub);
        rnp_key_handle_destroy(sub);
    }
    return found;
}

/* A valid user id whose address ("Name <addr>" or a bare addr) is want. */
static int has_address(rnp_key_handle_t key, const char *want)
{
    char norm[SM_ADDR_MAX + 1], addr[SM_ADDR_MAX + 1];
    const char *bad, *lt, *gt;
    size_t i, n = 0;
    int found = 0;

    if (rnp_key_get_uid_count(key, &n) != RNP_SUCCESS)
        return 0;
    for (i = 0; i < n && !found; i++) {
        rnp_uid_handle_t uid = NULL;
        bool valid = false, revoked = true;
        char *text = NULL;

        if (rnp_key_get_uid_handle_at(key, i, &uid) == RNP_SUCCESS && uid
            && rnp_uid_is_valid(uid, &valid) == RNP_SUCCESS && valid
            && rnp_uid_is_revoked(uid, &revoked) == RNP_SUCCESS && !revoked
            && rnp_key_get_uid_at(key, i, &text) == RNP_SUCCESS && text) {
            lt = strrchr(text, '<');
            gt = lt ? strchr(lt, '>') : NULL;
            if (lt && gt && (size_t)(gt - lt - 1) < sizeof addr)
                snprintf(addr, sizeof addr, "%.*s", (int)(gt - lt - 1), lt + 1);
            else
                snprintf(addr, sizeof addr, "%s", text);
            found = sm_addr_normalize(addr, norm, sizeof norm, &bad) == 0
                    && strcmp(norm, want) == 0;
        }
        rnp_buffer_destroy(text);
        rnp_uid_handle_destroy(uid);
    }
    return found;
}

/* ---- slots ------------------------------------------------------------ */

static bool no_password(rnp_ffi_t ffi, void *app_ctx, rnp_key_handle_t key, const char *pgp_context,
                        char buf[], size_t buf_len)
{
    return false;   /* domain keys have none; never ask a terminal */
}

static int slot_open(slot *sl, unsigned gen, char *why, size_t whylen)
{
    rnp_result_t r;

    if ((r = rnp_ffi_create(&sl->ffi, "GPG", "GPG")) != RNP_SUCCESS) {
        sl->ffi = NULL;
        return seal_rnp_fail(why, whylen, "rnp_ffi_create", r);
    }
    rnp_ffi_set_pass_provider(sl->ffi, no_password, NULL);
    sl->gen = gen;
    sl->oldest = 0;
    return SM_PGP_OK;
}

/* A free slot, its context current: waits while all are busy. */
slot *seal_slot_take(sm_seal *s, char *why, size_t whylen)
{
    slot *sl = NULL;
    unsigned i, gen;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        for (i = 0; i < s->nslots && !sl; i++)
            if (!s->slots[i].busy)
                sl = &s->slots[i];
        if (sl)
            break;
        pthread_cond_wait(&s->idle, &s->lock);
    }
    sl->busy = 1;
    gen = s->gen;
    pthread_mutex_unlock(&s->lock);
    /* a slot holds no key longer than the cache would */
    if (sl->ffi && (sl->gen != gen
                    || (sl->oldest && time(NULL) - sl->oldest >= SM_SEAL_KEY_TTL))) {
        rnp_ffi_destroy(sl->ffi);
        sl->ffi = NULL;
    }
    if (sl->ffi == NULL && slot_open(sl, gen, why, whylen) != SM_PGP_OK) {
        pthread_mutex_lock(&s->lock);
        sl->busy = 0;
        pthread_cond_signal(&s->idle);
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    return sl;
}

slot *seal_slot_own(sm_seal *s, char *why, size_t whylen)
{
    slot *sl = calloc(1, sizeof *sl);
    unsigned gen;

    if (sl == NULL) {
        sm_why(why, whylen, "out of memory");
        goto leave;
    }
    pthread_mutex_lock(&s->lock);
    gen = s->gen;
    pthread_mutex_unlock(&s->lock);
    sl->own = 1;
    sl->busy = 1;
    if (slot_open(sl, gen, why, whylen) != SM_PGP_OK) {
        free(sl);
        sl = NULL;
    }
leave:
    return sl;
}

void seal_slot_give(sm_seal *s, slot *sl)
{
    if (sl->own) {
        rnp_ffi_destroy(sl->ffi);
        free(sl);
    } else {
        pthread_mutex_lock(&s->lock);
        sl->busy = 0;
        pthread_cond_signal(&s->idle);
        pthread_mutex_unlock(&s->lock);
    }
}

/* ---- the seal --------------------------------------------------------- */

int sm_seal_new(const char *home, const char *own_fpr, unsigned slots, sm_seal **out,
                char *why, size_t whylen)
{
    sm_seal *s = NULL;
    slot *sl = NULL;
    rnp_key_handle_t key = NULL;
    int rc = SM_PGP_ERROR;

    *out = NULL;
    pgp_clear(why, whylen);
    if (slots < 1 || slots > SM_SEAL_SLOTS_MAX) {
        sm_why(why, whylen, "1 to %d slots", SM_SEAL_SLOTS_MAX);
        goto leave;
    }
    if (pgp_fpr_norm(own_fpr, (char[SM_PGP_FPR_MAX + 1]){ 0 }) != 0 || !home || !*home) {
        sm_why(why, whylen, "a GnuPG home and our key's fingerprint are needed");
        goto leave;
    }
    if ((s = calloc(1, sizeof *s)) == NULL || (s->home = strdup(home)) == NULL) {
        sm_why(why, whylen, "out of memory");
        goto leave;
    }
    pgp_fpr_norm(own_fpr, s->own);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->nslots = slots;
    /* our key now: a daemon without its secret key fails at start */
    if ((sl = seal_slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((rc = seal_slot_key(s, sl, s->own, 1, &key, why, whylen)) != SM_PGP_OK) {
        rc = SM_PGP_ERROR;
        goto leave;
    }
    /* without it every body would look undecryptable, a permanent refusal */
    if (!encryption_subkey(key, 1)) {
        sm_why(why, whylen, "key %s has no usable encryption subkey with its secret part",
               s->own);
        rc = SM_PGP_ERROR;
        goto leave;
    }
    *out = s;
    s = NULL;
    rc = SM_PGP_OK;
leave:
    rnp_key_handle_destroy(key);
    if (sl)
        seal_slot_give(*out ? *out : s, sl);
    sm_seal_free(s);
    return rc;
}

int sm_seal_decrypt_also(sm_seal *s, const char *fpr, char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    rnp_key_handle_t key = NULL;
    slot *sl = NULL;
    int rc = SM_PGP_REJECT;

    pgp_clear(why, whylen);
    if (pgp_fpr_norm(fpr, want) != 0) {
        sm_why(why, whylen, "not a fingerprint: %.80s", fpr ? fpr : "(null)");
        goto leave;
    }
    if (s->nalso >= SM_SEAL_DECRYPT_MAX) {
        sm_why(why, whylen, "at most %d further keys decrypt", SM_SEAL_DECRYPT_MAX);
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((sl = seal_slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((rc = seal_slot_key(s, sl, want, 1, &key, why, whylen)) != SM_PGP_OK)
        goto leave;
    rc = SM_PGP_REJECT;
    if (!encryption_subkey(key, 1)) {
        sm_why(why, whylen, "key %s has no usable encryption subkey with its secret part",
               want);
        goto leave;
    }
    pthread_mutex_lock(&s->lock);
    memcpy(s->also[s->nalso++], want, sizeof want);
    pthread_mutex_unlock(&s->lock);
    rc = SM_PGP_OK;
leave:
    rnp_key_handle_destroy(key);
    if (sl)
        seal_slot_give(s, sl);
    return rc;
}

void sm_seal_free(sm_seal *s)
{
    unsigned i;

    if (s == NULL)
        return;
    for (i = 0; i < s->nslots; i++)
        if (s->slots[i].ffi)
            rnp_ffi_destroy(s->slots[i].ffi);
    while (s->nkeys > 0)
        blob_drop(s, s->nkeys - 1);
    free(s->keys);
    free(s->home);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s);
}

void sm_seal_forget(sm_seal *s, const char *fpr)
{
    char want[SM_PGP_FPR_MAX + 1];
    size_t i;

    if (fpr && pgp_fpr_norm(fpr, want) != 0)
        return;
    pthread_mutex_lock(&s->lock);
    for (i = 0; i < s->nkeys;) {
        if (fpr == NULL || strcmp(s->keys[i].fpr, want) == 0) {
            blob_drop(s, i);
        } else {
            i++;
        }
    }
    s->gen++;
    pthread_mutex_unlock(&s->lock);
}

int sm_seal_key_check(sm_seal *s, const char *fpr, const char *addr, char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1], want_addr[SM_ADDR_MAX + 1];
    rnp_key_handle_t key = NULL;
    const char *bad;
    slot *sl = NULL;
    bool primary = false;
    int rc = SM_PGP_REJECT;

    pgp_clear(why, whylen);
    if (pgp_fpr_norm(fpr, want) != 0) {
        sm_why(why, whylen, "not a fingerprint: %.80s", fpr ? fpr : "(null)");
        goto leave;
    }
    if (addr && sm_addr_normalize(addr, want_addr, sizeof want_addr, &bad) != 0) {
        sm_why(why, whylen, "not an address: %.200s", addr);
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((sl = seal_slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((rc = seal_slot_key(s, sl, want, 0, &key, why, whylen)) != SM_PGP_OK) {
        if (rc == SM_PGP_REJECT)
            sm_why(why, whylen, "public key %s: not in the keyring", want);
        goto leave;
    }
    rc = SM_PGP_REJECT;
    if (rnp_key_is_primary(key, &primary) != RNP_SUCCESS || !primary) {
        sm_why(why, whylen, "key %s is a subkey, not a primary key", want);
        goto leave;
    }
    if (!seal_key_valid(key)) {
        sm_why(why, whylen, "key %s is revoked, expired or invalid", want);
        goto leave;
    }
    if (!encryption_subkey(key, 0)) {
        sm_why(why, whylen, "key %s has no usable encryption subkey", want);
        goto leave;
    }
    if (addr && !has_address(key, want_addr)) {
        sm_why(why, whylen, "key %s has no user id with the address %s", want, want_addr);
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    rnp_key_handle_destroy(key);
    if (sl)
        seal_slot_give(s, sl);
    return rc;
}
