/* sm_seal — sign+encrypt and decrypt+verify in process with librnp, over
 * keys exported once from the GnuPG home through gpgme (sm_seal.h).
 *
 * The rules are sm_pgp_msg.c's, so that a body sealed here and one sealed by
 * gpg are judged alike: exactly one signature, by the expected primary key,
 * usable; integrity protection required; no compression (big bodies are
 * attachments, already compressed). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
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

#define RECIPIENTS_MAX 64

typedef struct key_blob {
    char fpr[SM_PGP_FPR_MAX + 1];
    int secret;                 /* the transferable secret key, else public */
    unsigned char *data;
    size_t len;
    time_t fetched;
} key_blob;

typedef struct slot {
    rnp_ffi_t ffi;              /* NULL until first use or after a refresh */
    int busy;
    unsigned gen;               /* s->gen when the ffi was made */
    time_t born;
} slot;

struct sm_seal {
    char *home;
    char own[SM_PGP_FPR_MAX + 1];
    pthread_mutex_t lock;       /* guards everything below but a busy slot's ffi */
    pthread_cond_t idle;
    unsigned gen;               /* bumped when a key must be exported again */
    unsigned nslots;
    slot slots[SM_SEAL_SLOTS_MAX];
    key_blob *keys;
    size_t nkeys, capkeys;
};

/* An fd as rnp input or output; err keeps the errno of a failed read or
 * write, so that local trouble is told from bad input. */
typedef struct fd_io {
    int fd;
    int err;
} fd_io;

static bool fd_reader(void *app_ctx, void *buf, size_t len, size_t *got)
{
    fd_io *io = app_ctx;
    ssize_t n;

    do
        n = read(io->fd, buf, len);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        io->err = errno;
        return false;
    }
    *got = (size_t)n;
    return true;
}

static bool fd_writer(void *app_ctx, const void *buf, size_t len)
{
    fd_io *io = app_ctx;
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(io->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            io->err = n < 0 ? errno : EIO;
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static int rnp_fail(char *why, size_t whylen, const char *what, rnp_result_t r)
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
        free(b->data);
        s->keys[i] = s->keys[--s->nkeys];
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
static int slot_key(sm_seal *s, slot *sl, const char *fpr, int secret, rnp_key_handle_t *key,
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
    b = blob_find(s, fpr, secret, time(NULL));
    while (b == NULL) {
        /* a gpg process: outside the lock, so other slots go on */
        pthread_mutex_unlock(&s->lock);
        if ((rc = export_key(s->home, fpr, secret, &data, &len, why, whylen)) != SM_PGP_OK)
            return rc;
        pthread_mutex_lock(&s->lock);
        if ((b = blob_add(s, fpr, secret, data, len, time(NULL))) == NULL) {
            pthread_mutex_unlock(&s->lock);
            sm_why(why, whylen, "out of memory");
            return SM_PGP_ERROR;
        }
    }
    /* b lives while the lock is held */
    rc = import_blob(sl->ffi, b, why, whylen);
    pthread_mutex_unlock(&s->lock);
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
static int key_valid(rnp_key_handle_t key)
{
    bool valid = false, revoked = true, expired = true;

    return rnp_key_is_valid(key, &valid) == RNP_SUCCESS && valid
        && rnp_key_is_revoked(key, &revoked) == RNP_SUCCESS && !revoked
        && rnp_key_is_expired(key, &expired) == RNP_SUCCESS && !expired;
}

/* A subkey that may encrypt now. */
static int can_encrypt(rnp_key_handle_t key)
{
    bool usable = false;
    size_t i, n = 0;
    int found = 0;

    if (rnp_key_get_subkey_count(key, &n) != RNP_SUCCESS)
        return 0;
    for (i = 0; i < n && !found; i++) {
        rnp_key_handle_t sub = NULL;
        found = rnp_key_get_subkey_at(key, i, &sub) == RNP_SUCCESS && sub
                && rnp_key_allows_usage(sub, "encrypt", &usable) == RNP_SUCCESS && usable
                && key_valid(sub);
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
        return rnp_fail(why, whylen, "rnp_ffi_create", r);
    }
    rnp_ffi_set_pass_provider(sl->ffi, no_password, NULL);
    sl->gen = gen;
    sl->born = time(NULL);
    return SM_PGP_OK;
}

/* A free slot, its context current: waits while all are busy. */
static slot *slot_take(sm_seal *s, char *why, size_t whylen)
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
    if (sl->ffi && (sl->gen != gen || time(NULL) - sl->born >= SM_SEAL_KEY_TTL)) {
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

static void slot_give(sm_seal *s, slot *sl)
{
    pthread_mutex_lock(&s->lock);
    sl->busy = 0;
    pthread_cond_signal(&s->idle);
    pthread_mutex_unlock(&s->lock);
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
    if ((sl = slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((rc = slot_key(s, sl, s->own, 1, &key, why, whylen)) != SM_PGP_OK) {
        rc = SM_PGP_ERROR;
        goto leave;
    }
    *out = s;
    s = NULL;
    rc = SM_PGP_OK;
leave:
    rnp_key_handle_destroy(key);
    if (sl)
        slot_give(*out ? *out : s, sl);
    sm_seal_free(s);
    return rc;
}

void sm_seal_free(sm_seal *s)
{
    unsigned i;
    size_t k;

    if (s == NULL)
        return;
    for (i = 0; i < s->nslots; i++)
        if (s->slots[i].ffi)
            rnp_ffi_destroy(s->slots[i].ffi);
    for (k = 0; k < s->nkeys; k++) {
        if (s->keys[k].secret)
            rnp_buffer_clear(s->keys[k].data, s->keys[k].len);
        free(s->keys[k].data);
    }
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
            free(s->keys[i].data);
            s->keys[i] = s->keys[--s->nkeys];
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
    if ((sl = slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((rc = slot_key(s, sl, want, 0, &key, why, whylen)) != SM_PGP_OK) {
        if (rc == SM_PGP_REJECT)
            sm_why(why, whylen, "public key %s: not in the keyring", want);
        goto leave;
    }
    rc = SM_PGP_REJECT;
    if (rnp_key_is_primary(key, &primary) != RNP_SUCCESS || !primary) {
        sm_why(why, whylen, "key %s is a subkey, not a primary key", want);
        goto leave;
    }
    if (!key_valid(key)) {
        sm_why(why, whylen, "key %s is revoked, expired or invalid", want);
        goto leave;
    }
    if (!can_encrypt(key)) {
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
        slot_give(s, sl);
    return rc;
}

int sm_seal_encrypt_sign_fd(sm_seal *s, const char *const *recipient_fprs, int in_fd,
                            int out_fd, char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    fd_io in_io = { in_fd, 0 }, out_io = { out_fd, 0 };
    rnp_input_t in = NULL;
    rnp_output_t out = NULL;
    rnp_op_encrypt_t op = NULL;
    rnp_key_handle_t key = NULL;
    rnp_result_t r;
    slot *sl = NULL;
    int rc = SM_PGP_REJECT, n = 0, i;

    pgp_clear(why, whylen);
    while (recipient_fprs && recipient_fprs[n] && n <= RECIPIENTS_MAX)
        n++;
    if (n == 0 || n > RECIPIENTS_MAX) {
        sm_why(why, whylen, "1 to %d recipients needed", RECIPIENTS_MAX);
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((sl = slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((r = rnp_input_from_callback(&in, fd_reader, NULL, &in_io)) != RNP_SUCCESS
        || (r = rnp_output_to_callback(&out, fd_writer, NULL, &out_io)) != RNP_SUCCESS
        || (r = rnp_op_encrypt_create(&op, sl->ffi, in, out)) != RNP_SUCCESS
        || (r = rnp_op_encrypt_set_armor(op, false)) != RNP_SUCCESS
        || (r = rnp_op_encrypt_set_cipher(op, "AES256")) != RNP_SUCCESS
        || (r = rnp_op_encrypt_set_aead(op, "None")) != RNP_SUCCESS
        || (r = rnp_op_encrypt_set_compression(op, "Uncompressed", 0)) != RNP_SUCCESS) {
        rc = rnp_fail(why, whylen, "rnp encryption set-up", r);
        goto leave;
    }
    for (i = 0; i < n; i++) {
        if (pgp_fpr_norm(recipient_fprs[i], want) != 0) {
            sm_why(why, whylen, "recipient is not a fingerprint: %s", recipient_fprs[i]);
            rc = SM_PGP_REJECT;
            goto leave;
        }
        if ((rc = slot_key(s, sl, want, 0, &key, why, whylen)) != SM_PGP_OK) {
            if (rc == SM_PGP_REJECT)
                sm_why(why, whylen, "recipient key %s: not in the keyring", want);
            goto leave;
        }
        if (!key_valid(key) || rnp_op_encrypt_add_recipient(op, key) != RNP_SUCCESS) {
            sm_why(why, whylen, "recipient key %s cannot encrypt", want);
            rc = SM_PGP_REJECT;
            goto leave;
        }
        rnp_key_handle_destroy(key);
        key = NULL;
    }
    if ((rc = slot_key(s, sl, s->own, 1, &key, why, whylen)) != SM_PGP_OK) {
        rc = SM_PGP_ERROR;      /* our own key gone: the admin's problem, not the mail's */
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((r = rnp_op_encrypt_add_signature(op, key, NULL)) != RNP_SUCCESS) {
        rc = rnp_fail(why, whylen, "signing with our key", r);
        goto leave;
    }
    if ((r = rnp_op_encrypt_execute(op)) != RNP_SUCCESS) {
        if (in_io.err || out_io.err)
            sm_why(why, whylen, "%s the body: %s", in_io.err ? "reading" : "writing",
                   strerror(in_io.err ? in_io.err : out_io.err));
        else
            rnp_fail(why, whylen, "rnp_op_encrypt_execute", r);
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    rnp_key_handle_destroy(key);
    rnp_op_encrypt_destroy(op);
    rnp_input_destroy(in);
    rnp_output_destroy(out);
    if (sl)
        slot_give(s, sl);
    return rc;
}

/* Integrity protected (MDC or AEAD) and checked. */
static int protected_ok(rnp_op_verify_t op)
{
    char *mode = NULL;
    bool valid = false;
    int ok;

    ok = rnp_op_verify_get_protection_info(op, &mode, NULL, &valid) == RNP_SUCCESS && valid
        && mode && strcmp(mode, "none") != 0 && strcmp(mode, "cfb") != 0;
    rnp_buffer_destroy(mode);
    return ok;
}

/* sm_pgp_msg.c's rule for the one signature inside. */
static int check_signature(sm_seal *s, slot *sl, rnp_op_verify_t op, const char *want,
                           sm_pgp_result *res, char *why, size_t whylen)
{
    rnp_op_verify_signature_t sig = NULL;
    rnp_signature_handle_t handle = NULL;
    rnp_key_handle_t key = NULL, primary = NULL;
    char *fpr = NULL, *keyid = NULL;
    size_t count = 0;
    bool is_primary = false;
    rnp_result_t st;
    int rc = SM_PGP_REJECT;

    res->sig = SM_PGP_SIG_INVALID;
    if (rnp_op_verify_get_signature_count(op, &count) != RNP_SUCCESS || count == 0) {
        res->sig = SM_PGP_SIG_MISSING;
        sm_why(why, whylen, "no signature");
        goto leave;
    }
    if (count > 1) {
        sm_why(why, whylen, "%zu signatures, exactly one expected", count);
        goto leave;
    }
    if (rnp_op_verify_get_signature_at(op, 0, &sig) != RNP_SUCCESS)
        goto leave;
    st = rnp_op_verify_signature_get_status(sig);
    if (st == RNP_ERROR_KEY_NOT_FOUND) {
        res->sig = SM_PGP_SIG_NO_KEY;
        if (rnp_op_verify_signature_get_handle(sig, &handle) == RNP_SUCCESS
            && rnp_signature_get_keyid(handle, &keyid) == RNP_SUCCESS && keyid)
            snprintf(res->signer_fpr, sizeof res->signer_fpr, "%s", keyid);
        sm_why(why, whylen, "signed by unknown key %s", keyid ? keyid : "?");
        goto leave;
    }
    if (st == RNP_ERROR_SIGNATURE_INVALID) {
        res->sig = SM_PGP_SIG_BAD;
        sm_why(why, whylen, "bad signature");
        goto leave;
    }
    if (st != RNP_SUCCESS) {   /* expired signature, unknown format... */
        sm_why(why, whylen, "signature: %s", rnp_result_to_string(st));
        goto leave;
    }
    /* the key that signed, maybe a subkey; DNS names the primary */
    if (rnp_op_verify_signature_get_key(sig, &key) != RNP_SUCCESS || key == NULL
        || rnp_key_is_primary(key, &is_primary) != RNP_SUCCESS
        || (is_primary ? rnp_key_get_fprint(key, &fpr) : rnp_key_get_primary_fprint(key, &fpr))
               != RNP_SUCCESS
        || fpr == NULL || strlen(fpr) > SM_PGP_FPR_MAX) {
        sm_why(why, whylen, "signer key unknown after a good signature");
        rc = SM_PGP_ERROR;
        goto leave;
    }
    snprintf(res->signer_fpr, sizeof res->signer_fpr, "%s", fpr);
    if (rnp_locate_key(sl->ffi, "fingerprint", fpr, &primary) != RNP_SUCCESS || primary == NULL
        || !key_valid(primary)) {
        sm_why(why, whylen, "signer key %s is not usable", fpr);
        goto leave;
    }
    if (!pgp_fpr_eq(fpr, want)) {
        res->sig = SM_PGP_SIG_WRONG_SIGNER;
        sm_why(why, whylen, "signed by %s, expected %s", fpr, want);
        goto leave;
    }
    res->sig = SM_PGP_SIG_VALID;
    rc = SM_PGP_OK;
leave:
    rnp_buffer_destroy(fpr);
    rnp_buffer_destroy(keyid);
    rnp_signature_handle_destroy(handle);
    rnp_key_handle_destroy(key);
    rnp_key_handle_destroy(primary);
    return rc;
}

int sm_seal_decrypt_verify_fd(sm_seal *s, int in_fd, int out_fd,
                              const char *expected_signer_fpr, sm_pgp_result *res,
                              char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    fd_io in_io = { in_fd, 0 }, out_io = { out_fd, 0 };
    rnp_input_t in = NULL;
    rnp_output_t out = NULL;
    rnp_op_verify_t op = NULL;
    rnp_key_handle_t key = NULL;
    rnp_result_t r;
    slot *sl = NULL;
    int rc = SM_PGP_REJECT;

    memset(res, 0, sizeof *res);
    pgp_clear(why, whylen);
    if (pgp_fpr_norm(expected_signer_fpr, want) != 0) {
        sm_why(why, whylen, "expected signer is not a fingerprint");
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((sl = slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((rc = slot_key(s, sl, s->own, 1, &key, why, whylen)) != SM_PGP_OK) {
        rc = SM_PGP_ERROR;
        goto leave;
    }
    rnp_key_handle_destroy(key);
    key = NULL;
    /* the signer's key, if the home has it; else the signature is NO_KEY */
    if ((rc = slot_key(s, sl, want, 0, &key, why, whylen)) == SM_PGP_ERROR)
        goto leave;
    pgp_clear(why, whylen);
    rc = SM_PGP_ERROR;
    if ((r = rnp_input_from_callback(&in, fd_reader, NULL, &in_io)) != RNP_SUCCESS
        || (r = rnp_output_to_callback(&out, fd_writer, NULL, &out_io)) != RNP_SUCCESS
        || (r = rnp_op_verify_create(&op, sl->ffi, in, out)) != RNP_SUCCESS
        || (r = rnp_op_verify_set_flags(op, RNP_VERIFY_IGNORE_SIGS_ON_DECRYPT)) != RNP_SUCCESS) {
        rc = rnp_fail(why, whylen, "rnp decryption set-up", r);
        goto leave;
    }
    r = rnp_op_verify_execute(op);
    if (in_io.err || out_io.err) {
        sm_why(why, whylen, "%s the body: %s", in_io.err ? "reading" : "writing",
               strerror(in_io.err ? in_io.err : out_io.err));
        goto leave;
    }
    rc = SM_PGP_REJECT;
    if (r != RNP_SUCCESS) {
        sm_why(why, whylen, "cannot decrypt: %s", rnp_result_to_string(r));
        goto leave;
    }
    if (!protected_ok(op)) {
        sm_why(why, whylen, "not encrypted with integrity protection");
        goto leave;
    }
    res->decrypted = 1;
    rc = check_signature(s, sl, op, want, res, why, whylen);
leave:
    rnp_key_handle_destroy(key);
    rnp_op_verify_destroy(op);
    rnp_input_destroy(in);
    rnp_output_destroy(out);
    if (sl)
        slot_give(s, sl);
    return rc;
}
