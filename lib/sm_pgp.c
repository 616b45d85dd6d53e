/* sm_pgp — domain keys through gpgme. Each call opens its own context in the
 * home it is given and releases everything it made on every path; the
 * decisions stubmail adds on top of gpgme are all about whose key counts:
 * only the one whose fingerprint DNS publishes (see sm_pgp.h), or for a
 * recipient's own key one that a caller's rule accepts (sm_wkd). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gpgme.h>

#include "sm_log.h"
#include "sm_addr.h"
#include "sm_pgp.h"

extern char **environ;

/* gpgme_op_keylist_from_data_start (list a blob without importing it) */
#define GPGME_MIN_VERSION "1.14.0"
#define RECIPIENTS_MAX 64

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc = SM_PGP_ERROR;
static char init_why[128];

static void init_gpgme(void)
{
    const char *loc;

    if (!gpgme_check_version(GPGME_MIN_VERSION)) {
        snprintf(init_why, sizeof init_why, "gpgme %s or later needed, have %s",
                 GPGME_MIN_VERSION, gpgme_check_version(NULL));
        return;
    }
    /* gpg's messages and its idea of the terminal follow the process locale */
    if ((loc = setlocale(LC_CTYPE, NULL)) != NULL)
        gpgme_set_locale(NULL, LC_CTYPE, loc);
    if ((loc = setlocale(LC_MESSAGES, NULL)) != NULL)
        gpgme_set_locale(NULL, LC_MESSAGES, loc);
    if (gpgme_engine_check_version(GPGME_PROTOCOL_OpenPGP) != 0) {
        snprintf(init_why, sizeof init_why, "gpg (the OpenPGP engine) is missing or too old");
        return;
    }
    init_rc = SM_PGP_OK;
}

int sm_pgp_init(void)
{
    if (pthread_once(&init_once, init_gpgme) != 0)
        return SM_PGP_ERROR;
    return init_rc;
}

/* why is empty after a success. */
static void clear(char *why, size_t whylen)
{
    if (why && whylen > 0)
        why[0] = '\0';
}

/* gpgme_get_key says "End of file" for a key that is not there. */
static const char *key_strerror(gpgme_error_t err)
{
    return gpg_err_code(err) == GPG_ERR_EOF ? "not in the keyring" : gpgme_strerror(err);
}

/* Trouble on this machine (retry later) rather than an answer about the
 * input: errno-style errors (I/O, memory), no agent, no usable gpg. */
static int is_local(gpgme_error_t err)
{
    gpg_err_code_t code = gpg_err_code(err);

    if (gpgme_err_code_to_errno(code) != 0)
        return code != GPG_ERR_EPIPE;   /* gpg stopped reading: it refused the input */
    switch (code) {
    case GPG_ERR_NO_AGENT:
    case GPG_ERR_AGENT:
    case GPG_ERR_INV_ENGINE:
    case GPG_ERR_ENGINE_TOO_OLD:
    case GPG_ERR_NOT_OPERATIONAL:
        return 1;
    default:
        return 0;
    }
}

static int fail(char *why, size_t whylen, const char *what, gpgme_error_t err)
{
    sm_why(why, whylen, "%s: %s", what, gpgme_strerror(err));
    return is_local(err) ? SM_PGP_ERROR : SM_PGP_REJECT;
}

int sm_pgp_fpr_valid(const char *fpr)
{
    size_t n = 0;

    if (!fpr)
        return 0;
    for (; fpr[n]; n++)
        if (!isxdigit((unsigned char)fpr[n]) || n >= SM_PGP_FPR_MAX)
            return 0;
    return n == 40 || n == 64;
}

/* Uppercase copy of a valid fingerprint (gpgme's own spelling). */
static int fpr_norm(const char *in, char out[SM_PGP_FPR_MAX + 1])
{
    size_t i;

    if (!sm_pgp_fpr_valid(in))
        return -1;
    for (i = 0; in[i]; i++)
        out[i] = (char)toupper((unsigned char)in[i]);
    out[i] = '\0';
    return 0;
}

static int fpr_eq(const char *a, const char *b)
{
    return sm_pgp_fpr_valid(a) && sm_pgp_fpr_valid(b) && strcasecmp(a, b) == 0;
}

static int key_usable(gpgme_key_t key)
{
    return key && key->fpr && !key->revoked && !key->expired && !key->disabled && !key->invalid;
}

/* A context in home: OpenPGP, armor as asked, and loopback pinentry so a key
 * that wants a passphrase fails at once instead of waiting for a pinentry
 * nobody will ever see (daemons have no terminal). */
static int ctx_open(const char *home, int armor, gpgme_ctx_t *out, char *why, size_t whylen)
{
    gpgme_ctx_t ctx = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_ERROR;

    *out = NULL;
    if (sm_pgp_init() != SM_PGP_OK) {
        sm_why(why, whylen, "%s", init_why[0] ? init_why : "gpgme initialisation failed");
        goto leave;
    }
    if (!home || !*home) {
        sm_why(why, whylen, "no GnuPG home directory given");
        goto leave;
    }
    if ((err = gpgme_new(&ctx)) != 0) {
        sm_why(why, whylen, "gpgme_new: %s", gpgme_strerror(err));
        goto leave;
    }
    if ((err = gpgme_set_protocol(ctx, GPGME_PROTOCOL_OpenPGP)) != 0
        || (err = gpgme_ctx_set_engine_info(ctx, GPGME_PROTOCOL_OpenPGP, NULL, home)) != 0
        || (err = gpgme_set_pinentry_mode(ctx, GPGME_PINENTRY_MODE_LOOPBACK)) != 0) {
        sm_why(why, whylen, "gpgme context for %s: %s", home, gpgme_strerror(err));
        goto leave;
    }
    gpgme_set_armor(ctx, armor);
    *out = ctx;
    ctx = NULL;
    rc = SM_PGP_OK;
leave:
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

/* Copy a gpgme memory data object into a NUL-terminated malloc'd string and
 * release it. */
static int take_mem(gpgme_data_t *data, char **out, size_t *outlen, char *why, size_t whylen)
{
    size_t n = 0;
    char *mem = gpgme_data_release_and_get_mem(*data, &n);

    *data = NULL;
    *out = NULL;
    *outlen = 0;
    if (!mem || n == 0) {
        gpgme_free(mem);
        return SM_PGP_REJECT;
    }
    if ((*out = malloc(n + 1)) == NULL) {
        gpgme_free(mem);
        sm_why(why, whylen, "out of memory");
        return SM_PGP_ERROR;
    }
    memcpy(*out, mem, n);
    (*out)[n] = '\0';
    *outlen = n;
    gpgme_free(mem);
    return SM_PGP_OK;
}

int sm_pgp_create_domain_key(const char *home, const char *domain,
                             char fpr_out[SM_PGP_FPR_MAX + 1], char *why, size_t whylen)
{
    char uid[SM_DOMAIN_MAX + 16], pattern[SM_DOMAIN_MAX + 17];
    gpgme_ctx_t ctx = NULL;
    gpgme_key_t key = NULL;
    gpgme_genkey_result_t gr;
    gpgme_error_t err;
    int rc = SM_PGP_ERROR, listing = 0, i, n;

    clear(why, whylen);
    fpr_out[0] = '\0';
    if (!domain || !sm_domain_valid(domain)) {
        sm_why(why, whylen, "not a domain name: %s", domain ? domain : "(null)");
        rc = SM_PGP_REJECT;
        goto leave;
    }
    n = snprintf(uid, sizeof uid, "stubmail@%s", domain);
    for (i = 0; i < n; i++)
        uid[i] = (char)tolower((unsigned char)uid[i]);
    snprintf(pattern, sizeof pattern, "=%s", uid);      /* exact user id match */
    if (home && *home && mkdir(home, 0700) != 0 && errno != EEXIST) {
        sm_why(why, whylen, "mkdir %s: %s", home, strerror(errno));
        goto leave;
    }
    if ((rc = ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;

    /* idempotent: a usable key we already hold for this uid is the answer */
    if ((err = gpgme_op_keylist_start(ctx, pattern, 1)) != 0) {
        rc = fail(why, whylen, "gpgme_op_keylist_start", err);
        goto leave;
    }
    listing = 1;
    while ((err = gpgme_op_keylist_next(ctx, &key)) == 0) {
        if (key_usable(key) && key->can_sign && key->can_encrypt && fpr_norm(key->fpr, fpr_out) == 0)
            break;
        gpgme_key_unref(key);
        key = NULL;
    }
    if (key) {
        rc = SM_PGP_OK;
        goto leave;
    }
    listing = 0;
    if (gpg_err_code(err) != GPG_ERR_EOF) {
        rc = fail(why, whylen, "gpgme_op_keylist_next", err);
        goto leave;
    }

    /* "future-default" with no usage flags: ed25519 sign/certify primary plus
     * a cv25519 encryption subkey; the secret stays in this home's agent */
    err = gpgme_op_createkey(ctx, uid, "future-default", 0, 0, NULL,
                             GPGME_CREATE_NOPASSWD | GPGME_CREATE_NOEXPIRE);
    if (err != 0) {
        rc = fail(why, whylen, "gpgme_op_createkey", err);
        if (rc == SM_PGP_REJECT)
            rc = SM_PGP_ERROR;   /* nothing hostile here: gpg could not do it */
        goto leave;
    }
    gr = gpgme_op_genkey_result(ctx);
    if (!gr || !gr->fpr || fpr_norm(gr->fpr, fpr_out) != 0) {
        sm_why(why, whylen, "gpgme_op_createkey: no fingerprint in the result");
        rc = SM_PGP_ERROR;
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    if (key)
        gpgme_key_unref(key);
    if (listing)
        gpgme_op_keylist_end(ctx);
    if (ctx)
        gpgme_release(ctx);
    if (rc != SM_PGP_OK)
        fpr_out[0] = '\0';
    return rc;
}

int sm_pgp_export_public(const char *home, const char *fpr, char **out, size_t *outlen,
                         char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_ctx_t ctx = NULL;
    gpgme_data_t data = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT;

    clear(why, whylen);
    *out = NULL;
    *outlen = 0;
    /* a fingerprint only: a free pattern could export the whole keyring */
    if (fpr_norm(fpr, want) != 0) {
        sm_why(why, whylen, "not a fingerprint: %s", fpr ? fpr : "(null)");
        goto leave;
    }
    if ((rc = ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new(&data)) != 0) {
        rc = fail(why, whylen, "gpgme_data_new", err);
        goto leave;
    }
    if ((err = gpgme_op_export(ctx, want, GPGME_EXPORT_MODE_MINIMAL, data)) != 0) {
        rc = fail(why, whylen, "gpgme_op_export", err);
        goto leave;
    }
    if ((rc = take_mem(&data, out, outlen, why, whylen)) == SM_PGP_REJECT)
        sm_why(why, whylen, "gpgme_op_export: no public key %s in %s", want, home);
leave:
    if (data)
        gpgme_data_release(data);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

int sm_pgp_import_checked(const char *home, const void *blob, size_t len, const char *blob_name,
                          sm_pgp_key_rule rule, void *arg, char fpr_out[SM_PGP_FPR_MAX + 1],
                          char *why, size_t whylen)
{
    char fpr[SM_PGP_FPR_MAX + 1] = "";
    gpgme_ctx_t ctx = NULL;
    gpgme_data_t data = NULL;
    gpgme_key_t k = NULL;
    gpgme_import_result_t ir;
    gpgme_import_status_t st;
    gpgme_error_t err, import_err = 0;
    int rc = SM_PGP_REJECT, listing = 0, count = 0, imported = 0, added = 0;

    clear(why, whylen);
    fpr_out[0] = '\0';
    if (!blob || len == 0 || len > SM_PGP_KEY_MAX) {
        sm_why(why, whylen, "key data empty or larger than %d bytes", SM_PGP_KEY_MAX);
        goto leave;
    }
    if ((rc = ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new_from_mem(&data, blob, len, 0)) != 0) {
        rc = fail(why, whylen, "gpgme_data_new_from_mem", err);
        goto leave;
    }

    /* Look before importing: whoever vouches for the key (DNS, the
     * recipient's domain) vouches for one key, so a blob that carries
     * anything else is refused whole and leaves nothing behind. */
    if ((err = gpgme_op_keylist_from_data_start(ctx, data, 0)) != 0) {
        rc = fail(why, whylen, "gpgme_op_keylist_from_data_start", err);
        goto leave;
    }
    listing = 1;
    rc = SM_PGP_REJECT;
    while ((err = gpgme_op_keylist_next(ctx, &k)) == 0) {
        if (++count > 1) {
            sm_why(why, whylen, "%s holds more than one key (%s and %s)", blob_name, fpr,
                   k->fpr ? k->fpr : "?");
            goto leave;
        }
        if (k->secret) {
            sm_why(why, whylen, "%s holds secret key material", blob_name);
            goto leave;
        }
        if (fpr_norm(k->fpr, fpr) != 0) {
            sm_why(why, whylen, "%s holds a key without a usable fingerprint", blob_name);
            goto leave;
        }
        if (rule(k, 0, arg, why, whylen) != 0)
            goto leave;
        gpgme_key_unref(k);
        k = NULL;
    }
    gpgme_op_keylist_end(ctx);
    listing = 0;
    if (gpg_err_code(err) != GPG_ERR_EOF) {
        rc = fail(why, whylen, "gpgme_op_keylist_next", err);
        goto leave;
    }
    if (count == 0) {
        sm_why(why, whylen, "no OpenPGP key in %s", blob_name);
        goto leave;
    }

    if (gpgme_data_seek(data, 0, SEEK_SET) != 0) {
        sm_why(why, whylen, "gpgme_data_seek: %s", strerror(errno));
        rc = SM_PGP_ERROR;
        goto leave;
    }
    if ((err = gpgme_op_import(ctx, data)) != 0) {
        rc = fail(why, whylen, "gpgme_op_import", err);
        goto leave;
    }
    ir = gpgme_op_import_result(ctx);
    if (ir && (ir->secret_read || ir->secret_imported)) {
        /* cannot happen after the listing above; refuse loudly if it does */
        sm_why(why, whylen, "gpgme_op_import: secret key material read");
        goto leave;
    }
    for (st = ir ? ir->imports : NULL; st; st = st->next) {
        if (!fpr_eq(st->fpr, fpr)) {
            /* cannot happen after the listing above; refuse if it does */
            sm_why(why, whylen, "gpgme_op_import: unexpected key %s", st->fpr ? st->fpr : "?");
            goto leave;
        }
        if (st->result == 0) {
            imported = 1;
            added |= (st->status & GPGME_IMPORT_NEW) != 0;
        } else {
            import_err = st->result;
        }
    }
    if (!imported) {
        /* gpg drops a key without a valid self-signature */
        if (import_err)
            sm_why(why, whylen, "gpgme_op_import: %s", gpgme_strerror(import_err));
        else
            sm_why(why, whylen, "gpgme_op_import: key %s not imported", fpr);
        goto leave;
    }
    /* the keyring's view, after merging with what it had: still good? */
    if ((err = gpgme_get_key(ctx, fpr, &k, 0)) != 0) {
        rc = fail(why, whylen, "gpgme_get_key", err);
        goto leave;
    }
    if (!fpr_eq(k->fpr, fpr)) {
        /* k is another key, one the keyring had: leave it be */
        sm_why(why, whylen, "key %s is a subkey of %s", fpr, k->fpr ? k->fpr : "?");
        goto leave;
    }
    if (rule(k, 1, arg, why, whylen) != 0) {
        if (added && (err = gpgme_op_delete_ext(ctx, k, GPGME_DELETE_FORCE)) != 0) {
            size_t n = why ? strlen(why) : 0;

            if (why && n + 1 < whylen)
                sm_why(why + n, whylen - n, "; and it stays in %s: gpgme_op_delete_ext: %s",
                       home, gpgme_strerror(err));
        }
        goto leave;
    }
    snprintf(fpr_out, SM_PGP_FPR_MAX + 1, "%s", fpr);
    rc = SM_PGP_OK;
leave:
    if (k)
        gpgme_key_unref(k);
    if (listing)
        gpgme_op_keylist_end(ctx);
    if (data)
        gpgme_data_release(data);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

/* A domain key must be the one DNS names, whose signatures we will check.
 * Its usability is judged on the keyring's view only: an update of a key we
 * hold may look expired on its own and be fine merged. */
static int domain_key_rule(gpgme_key_t k, int in_keyring, void *arg, char *why, size_t whylen)
{
    const char *want = arg;

    if (!fpr_eq(k->fpr, want)) {
        sm_why(why, whylen, "the key data holds key %s, expected only %s", k->fpr ? k->fpr : "?",
               want);
        return -1;
    }
    if (in_keyring && (!key_usable(k) || !k->can_sign)) {
        sm_why(why, whylen, "key %s is %s", want,
            k->revoked ? "revoked" : k->expired ? "expired" : k->disabled ? "disabled"
            : k->invalid ? "invalid" : "not usable for signing");
        return -1;
    }
    return 0;
}

int sm_pgp_import_public(const char *home, const char *key, size_t len, const char *expected_fpr,
                         char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1], got[SM_PGP_FPR_MAX + 1];

    clear(why, whylen);
    if (fpr_norm(expected_fpr, want) != 0) {
        sm_why(why, whylen, "expected fingerprint is not 40 or 64 hex digits");
        return SM_PGP_REJECT;
    }
    return sm_pgp_import_checked(home, key, len, "the key data", domain_key_rule, want, got,
                                 why, whylen);
}

int sm_pgp_check_key(const char *home, const char *fpr, sm_pgp_key_rule rule, void *arg,
                     char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_ctx_t ctx = NULL;
    gpgme_key_t key = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT;

    clear(why, whylen);
    if (fpr_norm(fpr, want) != 0) {
        sm_why(why, whylen, "not a fingerprint: %s", fpr ? fpr : "(null)");
        goto leave;
    }
    if ((rc = ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    rc = SM_PGP_REJECT;
    if ((err = gpgme_get_key(ctx, want, &key, 0)) != 0) {
        sm_why(why, whylen, "public key %s: %s", want, key_strerror(err));
        rc = is_local(err) ? SM_PGP_ERROR : SM_PGP_REJECT;
        goto leave;
    }
    /* a fingerprint pattern also matches a subkey: DNS names the primary */
    if (!fpr_eq(key->fpr, want)) {
        sm_why(why, whylen, "public key %s is a subkey of %s", want, key->fpr ? key->fpr : "?");
        goto leave;
    }
    if (rule(key, 1, arg, why, whylen) != 0)
        goto leave;
    rc = SM_PGP_OK;
leave:
    if (key)
        gpgme_key_unref(key);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

static int usable_rule(gpgme_key_t k, int in_keyring, void *arg, char *why, size_t whylen)
{
    (void)in_keyring;
    (void)arg;
    if (!key_usable(k)) {
        sm_why(why, whylen, "public key %s is not usable", k->fpr);
        return -1;
    }
    return 0;
}

int sm_pgp_have_key(const char *home, const char *fpr, char *why, size_t whylen)
{
    return sm_pgp_check_key(home, fpr, usable_rule, NULL, why, whylen);
}

/* A secret key we sign with: its primary fingerprint must be fpr. Our own
 * key missing or unusable is local trouble (configuration, or no gpg-agent:
 * without one gpg sees no secret keys at all), never an answer about input. */
static int signer_add(gpgme_ctx_t ctx, const char *fpr, char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_key_t key = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT;

    if (fpr_norm(fpr, want) != 0) {
        sm_why(why, whylen, "signer is not a fingerprint: %s", fpr ? fpr : "(null)");
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((err = gpgme_get_key(ctx, want, &key, 1)) != 0) {
        sm_why(why, whylen, "secret key %s: %s", want, key_strerror(err));
        goto leave;
    }
    if (!fpr_eq(key->fpr, want) || !key_usable(key) || !key->can_sign) {
        sm_why(why, whylen, "secret key %s cannot sign", want);
        goto leave;
    }
    if ((err = gpgme_signers_add(ctx, key)) != 0) {
        sm_why(why, whylen, "gpgme_signers_add: %s", gpgme_strerror(err));
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    if (key)
        gpgme_key_unref(key);
    return rc;
}

/* 1 if home shows at least one usable secret key. gpg learns about secret
 * keys from gpg-agent, so none at all in a domain's home means the agent is
 * not there (or the home is wrong), not that a message was not for us. */
static int any_secret_key(gpgme_ctx_t ctx)
{
    gpgme_key_t key = NULL;
    int found = 0;

    if (gpgme_op_keylist_start(ctx, NULL, 1) != 0)
        return 0;
    while (!found && gpgme_op_keylist_next(ctx, &key) == 0) {
        found = key_usable(key);
        gpgme_key_unref(key);
        key = NULL;
    }
    gpgme_op_keylist_end(ctx);
    return found;
}

int sm_pgp_sign_detached(const char *home, const char *signer_fpr, const void *data, size_t len,
                         char **sig, size_t *siglen, char *why, size_t whylen)
{
    gpgme_ctx_t ctx = NULL;
    gpgme_data_t in = NULL, out = NULL;
    gpgme_sign_result_t sr;
    gpgme_error_t err;
    int rc;

    clear(why, whylen);
    *sig = NULL;
    *siglen = 0;
    if ((rc = ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((rc = signer_add(ctx, signer_fpr, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new_from_mem(&in, data, len, 0)) != 0
        || (err = gpgme_data_new(&out)) != 0) {
        rc = fail(why, whylen, "gpgme_data_new", err);
        goto leave;
    }
    if ((err = gpgme_op_sign(ctx, in, out, GPGME_SIG_MODE_DETACH)) != 0) {
        rc = fail(why, whylen, "gpgme_op_sign", err);
        goto leave;
    }
    sr = gpgme_op_sign_result(ctx);
    if (!sr || sr->invalid_signers || !sr->signatures) {
        sm_why(why, whylen, "gpgme_op_sign: %s",
            sr && sr->invalid_signers ? gpgme_strerror(sr->invalid_signers->reason) : "no signature made");
        rc = SM_PGP_ERROR;
        goto leave;
    }
    if ((rc = take_mem(&out, sig, siglen, why, whylen)) == SM_PGP_REJECT) {
        sm_why(why, whylen, "gpgme_op_sign: empty signature");
        rc = SM_PGP_ERROR;
    }
leave:
    if (in)
        gpgme_data_release(in);
    if (out)
        gpgme_data_release(out);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

/* The one rule for signatures, for detached ones and those inside a
 * message: exactly one, good, by a live key whose primary fingerprint is
 * want. Fills *status and signer (primary fpr, or the key id gpg named). */
static int check_signatures(gpgme_ctx_t ctx, gpgme_verify_result_t vr, const char *want,
                            sm_pgp_sig *status, char signer[SM_PGP_FPR_MAX + 1],
                            char *why, size_t whylen)
{
    gpgme_signature_t s = vr ? vr->signatures : NULL;
    gpgme_key_t key = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT, n = 0;
    gpgme_signature_t t;

    signer[0] = '\0';
    *status = SM_PGP_SIG_INVALID;
    if (!s) {
        *status = SM_PGP_SIG_MISSING;
        sm_why(why, whylen, "no signature");
        goto leave;
    }
    for (t = s; t; t = t->next)
        n++;
    if (n > 1) {
        sm_why(why, whylen, "%d signatures, exactly one expected", n);
        goto leave;
    }
    if (s->fpr && strlen(s->fpr) <= SM_PGP_FPR_MAX)
        strcpy(signer, s->fpr);
    switch (gpg_err_code(s->status)) {
    case GPG_ERR_NO_ERROR:
        break;
    case GPG_ERR_BAD_SIGNATURE:
        *status = SM_PGP_SIG_BAD;
        sm_why(why, whylen, "gpgme_op_verify: %s", gpgme_strerror(s->status));
        goto leave;
    case GPG_ERR_NO_PUBKEY:
        *status = SM_PGP_SIG_NO_KEY;
        sm_why(why, whylen, "gpgme_op_verify: signed by unknown key %s", s->fpr ? s->fpr : "?");
        goto leave;
    default:   /* expired or revoked key, expired signature, unsupported... */
        sm_why(why, whylen, "gpgme_op_verify: %s", gpgme_strerror(s->status));
        goto leave;
    }
    if (s->wrong_key_usage
        || (s->summary & (GPGME_SIGSUM_RED | GPGME_SIGSUM_KEY_REVOKED | GPGME_SIGSUM_KEY_EXPIRED
                          | GPGME_SIGSUM_SIG_EXPIRED | GPGME_SIGSUM_KEY_MISSING))) {
        sm_why(why, whylen, "gpgme_op_verify: signature by an unusable key (summary 0x%x)",
            (unsigned)s->summary);
        goto leave;
    }
    /* s->fpr is the key that signed, maybe a subkey; DNS names the primary */
    if ((err = gpgme_get_key(ctx, s->fpr, &key, 0)) != 0) {
        rc = fail(why, whylen, "gpgme_get_key (signer)", err);
        goto leave;
    }
    if (!key->fpr || strlen(key->fpr) > SM_PGP_FPR_MAX || !key_usable(key)) {
        sm_why(why, whylen, "signer key %s is not usable", s->fpr);
        goto leave;
    }
    strcpy(signer, key->fpr);
    if (!fpr_eq(key->fpr, want)) {
        *status = SM_PGP_SIG_WRONG_SIGNER;
        sm_why(why, whylen, "signed by %s, expected %s", key->fpr, want);
        goto leave;
    }
    *status = SM_PGP_SIG_VALID;
    rc = SM_PGP_OK;
leave:
    if (key)
        gpgme_key_unref(key);
    return rc;
}

int sm_pgp_verify_detached(const char *home, const void *data, size_t len, const char *sig,
                           size_t siglen, const char *expected_fpr, char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1], signer[SM_PGP_FPR_MAX + 1];
    gpgme_ctx_t ctx = NULL;
    gpgme_data_t sigd = NULL, text = NULL;
    gpgme_error_t err;
    sm_pgp_sig status;
    int rc = SM_PGP_REJECT;

    clear(why, whylen);
    if (fpr_norm(expected_fpr, want) != 0) {
        sm_why(why, whylen, "expected fingerprint is not 40 or 64 hex digits");
        goto leave;
    }
    if (!sig || siglen == 0) {
        sm_why(why, whylen, "no signature");
        goto leave;
    }
    if ((rc = ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new_from_mem(&sigd, sig, siglen, 0)) != 0
        || (err = gpgme_data_new_from_mem(&text, data, len, 0)) != 0) {
        rc = fail(why, whylen, "gpgme_data_new_from_mem", err);
        goto leave;
    }
    if ((err = gpgme_op_verify(ctx, sigd, text, NULL)) != 0) {
        rc = fail(why, whylen, "gpgme_op_verify", err);
        goto leave;
    }
    rc = check_signatures(ctx, gpgme_op_verify_result(ctx), want, &status, signer, why, whylen);
leave:
    if (sigd)
        gpgme_data_release(sigd);
    if (text)
        gpgme_data_release(text);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

int sm_pgp_encrypt_sign_fd(const char *home, const char *signer_fpr,
                           const char *const *recipient_fprs, int in_fd, int out_fd,
                           char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_ctx_t ctx = NULL;
    gpgme_key_t *keys = NULL;
    gpgme_data_t in = NULL, out = NULL;
    gpgme_encrypt_result_t er;
    gpgme_sign_result_t sr;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT, n = 0, i;

    clear(why, whylen);
    while (recipient_fprs && recipient_fprs[n] && n <= RECIPIENTS_MAX)
        n++;
    if (n == 0 || n > RECIPIENTS_MAX) {
        sm_why(why, whylen, "1 to %d recipients needed", RECIPIENTS_MAX);
        goto leave;
    }
    if ((rc = ctx_open(home, 0, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((rc = signer_add(ctx, signer_fpr, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((keys = calloc((size_t)n + 1, sizeof *keys)) == NULL) {
        sm_why(why, whylen, "out of memory");
        rc = SM_PGP_ERROR;
        goto leave;
    }
    rc = SM_PGP_REJECT;
    for (i = 0; i < n; i++) {
        if (fpr_norm(recipient_fprs[i], want) != 0) {
            sm_why(why, whylen, "recipient is not a fingerprint: %s", recipient_fprs[i]);
            goto leave;
        }
        if ((err = gpgme_get_key(ctx, want, &keys[i], 0)) != 0) {
            sm_why(why, whylen, "recipient key %s: %s", want, key_strerror(err));
            rc = is_local(err) ? SM_PGP_ERROR : SM_PGP_REJECT;
            goto leave;
        }
        if (!fpr_eq(keys[i]->fpr, want) || !key_usable(keys[i]) || !keys[i]->can_encrypt) {
            sm_why(why, whylen, "recipient key %s cannot encrypt", want);
            goto leave;
        }
    }
    if ((err = gpgme_data_new_from_fd(&in, in_fd)) != 0
        || (err = gpgme_data_new_from_fd(&out, out_fd)) != 0) {
        rc = fail(why, whylen, "gpgme_data_new_from_fd", err);
        goto leave;
    }
    /* always-trust: these keys are trusted because their fingerprints are
     * the ones DNS published, not through GnuPG's web of trust.
     * no-compress: big bodies are attachments, already compressed and then
     * base64'd; zlib saved ~24% on those here but made encryption ~10x
     * slower (200 MB: 8.7 s against 0.9 s), too slow for a 2 GB message. */
    if ((err = gpgme_op_encrypt_sign(ctx, keys, GPGME_ENCRYPT_ALWAYS_TRUST | GPGME_ENCRYPT_NO_COMPRESS,
                                     in, out)) != 0) {
        rc = fail(why, whylen, "gpgme_op_encrypt_sign", err);
        goto leave;
    }
    er = gpgme_op_encrypt_result(ctx);
    sr = gpgme_op_sign_result(ctx);
    if (er && er->invalid_recipients) {
        sm_why(why, whylen, "gpgme_op_encrypt_sign: recipient %s: %s",
            er->invalid_recipients->fpr ? er->invalid_recipients->fpr : "?",
            gpgme_strerror(er->invalid_recipients->reason));
        rc = SM_PGP_REJECT;
        goto leave;
    }
    if (!sr || sr->invalid_signers || !sr->signatures) {
        sm_why(why, whylen, "gpgme_op_encrypt_sign: not signed");
        rc = SM_PGP_ERROR;
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    if (keys) {
        for (i = 0; i < n; i++)
            if (keys[i])
                gpgme_key_unref(keys[i]);
        free(keys);
    }
    if (in)
        gpgme_data_release(in);
    if (out)
        gpgme_data_release(out);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

int sm_pgp_decrypt_verify_fd(const char *home, int in_fd, int out_fd,
                             const char *expected_signer_fpr, sm_pgp_result *res,
                             char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_ctx_t ctx = NULL;
    gpgme_data_t in = NULL, out = NULL;
    gpgme_decrypt_result_t dr;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT;

    clear(why, whylen);
    memset(res, 0, sizeof *res);
    if (fpr_norm(expected_signer_fpr, want) != 0) {
        sm_why(why, whylen, "expected signer is not 40 or 64 hex digits");
        goto leave;
    }
    if ((rc = ctx_open(home, 0, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new_from_fd(&in, in_fd)) != 0
        || (err = gpgme_data_new_from_fd(&out, out_fd)) != 0) {
        rc = fail(why, whylen, "gpgme_data_new_from_fd", err);
        goto leave;
    }
    err = gpgme_op_decrypt_verify(ctx, in, out);
    dr = gpgme_op_decrypt_result(ctx);
    if (err != 0) {
        /* tampered (integrity check failed), not for our key, not
         * encrypted at all, or garbage — unless it was our own trouble */
        rc = fail(why, whylen, "gpgme_op_decrypt_verify", err);
        if (gpg_err_code(err) == GPG_ERR_NO_SECKEY && !any_secret_key(ctx)) {
            sm_why(why, whylen, "gpgme_op_decrypt_verify: no secret key usable in %s"
                " (gpg-agent not running? home path too long?)", home);
            rc = SM_PGP_ERROR;
        }
        goto leave;
    }
    if (!dr || dr->unsupported_algorithm || dr->legacy_cipher_nomdc) {
        sm_why(why, whylen, "gpgme_op_decrypt_verify: %s",
            !dr ? "no result" : dr->unsupported_algorithm ? "unsupported algorithm"
            : "no integrity protection");
        rc = SM_PGP_REJECT;
        goto leave;
    }
    res->decrypted = 1;
    rc = check_signatures(ctx, gpgme_op_verify_result(ctx), want, &res->sig, res->signer_fpr,
                          why, whylen);
leave:
    if (in)
        gpgme_data_release(in);
    if (out)
        gpgme_data_release(out);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

int sm_pgp_stop_agent(const char *home, char *why, size_t whylen)
{
    posix_spawn_file_actions_t fa;
    gpgme_engine_info_t info = NULL;
    const char *gpgconf = NULL;
    char *argv[] = { "gpgconf", "--homedir", (char *)home, "--kill", "all", NULL };
    int rc = SM_PGP_ERROR, fa_ok = 0, status, e;
    pid_t pid;

    clear(why, whylen);
    if (sm_pgp_init() != SM_PGP_OK) {
        sm_why(why, whylen, "%s", init_why[0] ? init_why : "gpgme initialisation failed");
        goto leave;
    }
    if (!home || !*home) {
        sm_why(why, whylen, "no GnuPG home directory given");
        goto leave;
    }
    if (gpgme_get_engine_info(&info) == 0)
        for (; info; info = info->next)
            if (info->protocol == GPGME_PROTOCOL_GPGCONF)
                gpgconf = info->file_name;
    if (!gpgconf) {
        sm_why(why, whylen, "gpgconf not found");
        goto leave;
    }
    if ((e = posix_spawn_file_actions_init(&fa)) == 0) {
        fa_ok = 1;
        if ((e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) == 0
            && (e = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0)) == 0
            && (e = posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0)) == 0)
            e = posix_spawn(&pid, gpgconf, &fa, NULL, argv, environ);
    }
    if (e != 0) {
        sm_why(why, whylen, "spawning %s: %s", gpgconf, strerror(e));
        goto leave;
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            sm_why(why, whylen, "waitpid gpgconf: %s", strerror(errno));
            goto leave;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        sm_why(why, whylen, "gpgconf --kill all failed for %s", home);
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    return rc;
}

int sm_pgp_own_key_settings(const char *home, const char *fpr, char *err, size_t errlen)
{
    struct stat st;

    if (!home || !fpr) {
        sm_why(err, errlen, "gnupg_home and domain_key are required (missing: %s): the GnuPG "
               "home and fingerprint of our domain key, see stubmail-keygen",
               !home && !fpr ? "both" : !home ? "gnupg_home" : "domain_key");
        return -1;
    }
    if (!sm_pgp_fpr_valid(fpr)) {
        sm_why(err, errlen, "domain_key: \"%s\" is not a fingerprint (40 or 64 hex digits)",
               fpr);
        return -1;
    }
    if (home[0] != '/' || strlen(home) > SM_PGP_HOME_MAX) {
        sm_why(err, errlen, "gnupg_home: \"%s\" is not an absolute path of at most %d "
               "characters (gpg-agent's socket lives in it)", home, SM_PGP_HOME_MAX);
        return -1;
    }
    if (stat(home, &st) != 0) {
        sm_why(err, errlen, "gnupg_home: %s: %s", home, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        sm_why(err, errlen, "gnupg_home: %s: not a directory", home);
        return -1;
    }
    return 0;
}

int sm_pgp_probe_sign(const char *home, const char *fpr, char *why, size_t whylen)
{
    static const char probe[] = "stubmail start\n";
    char *sig = NULL;
    size_t siglen;
    int rc = sm_pgp_sign_detached(home, fpr, probe, sizeof probe - 1, &sig, &siglen, why,
                                  whylen);

    free(sig);
    return rc;
}
