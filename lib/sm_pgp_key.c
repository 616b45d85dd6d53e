/* sm_pgp_key — keys: make our domain key, export it, import a peer's or a
 * recipient's key only if it is exactly the key a rule accepts, and check
 * keys already in a keyring. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gpgme.h>

#include "sm_log.h"
#include "sm_addr.h"
#include "sm_pgp.h"
#include "sm_pgp_impl.h"

/* The user id "stubmail@domain" in lowercase and its exact-match keylist
 * pattern; -1 if domain is not a domain name. */
static int domain_uid(const char *domain, char *uid, size_t uidlen, char *pattern,
                      size_t patlen)
{
    int i, n;

    if (!domain || !sm_domain_valid(domain))
        return -1;
    n = snprintf(uid, uidlen, "stubmail@%s", domain);
    for (i = 0; i < n; i++)
        uid[i] = (char)tolower((unsigned char)uid[i]);
    snprintf(pattern, patlen, "=%s", uid);      /* exact user id match */
    return 0;
}

int sm_pgp_domain_keys(const char *home, const char *domain,
                       char fprs[][SM_PGP_FPR_MAX + 1], size_t max, size_t *n,
                       char *why, size_t whylen)
{
    char uid[SM_DOMAIN_MAX + 16], pattern[SM_DOMAIN_MAX + 17];
    gpgme_ctx_t ctx = NULL;
    gpgme_key_t key = NULL;
    gpgme_error_t err;
    long made[SM_PGP_DOMAIN_KEYS_MAX];
    size_t i;
    int rc = SM_PGP_ERROR, listing = 0;

    pgp_clear(why, whylen);
    *n = 0;
    if (max > SM_PGP_DOMAIN_KEYS_MAX)
        max = SM_PGP_DOMAIN_KEYS_MAX;
    if (domain_uid(domain, uid, sizeof uid, pattern, sizeof pattern) != 0) {
        sm_why(why, whylen, "not a domain name: %s", domain ? domain : "(null)");
        rc = SM_PGP_REJECT;
        goto leave;
    }
    if ((rc = pgp_ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_op_keylist_start(ctx, pattern, 1)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_op_keylist_start", err);
        goto leave;
    }
    listing = 1;
    while ((err = gpgme_op_keylist_next(ctx, &key)) == 0) {
        if (pgp_key_usable(key) && key->can_sign && key->can_encrypt && *n < max
            && key->subkeys && pgp_fpr_norm(key->fpr, fprs[*n]) == 0) {
            /* oldest first: insertion into what is sorted already */
            for (i = *n; i > 0 && made[i - 1] > key->subkeys->timestamp; i--) {
                memcpy(fprs[i], fprs[i - 1], sizeof fprs[i]);
                made[i] = made[i - 1];
            }
            if (i != *n)
                pgp_fpr_norm(key->fpr, fprs[i]);
            made[i] = key->subkeys->timestamp;
            (*n)++;
        }
        gpgme_key_unref(key);
        key = NULL;
    }
    listing = 0;
    if (gpg_err_code(err) != GPG_ERR_EOF) {
        rc = pgp_fail(why, whylen, "gpgme_op_keylist_next", err);
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    if (listing)
        gpgme_op_keylist_end(ctx);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

static int domain_key(const char *home, const char *domain, int always_new,
                      char fpr_out[SM_PGP_FPR_MAX + 1], char *why, size_t whylen)
{
    char uid[SM_DOMAIN_MAX + 16], pattern[SM_DOMAIN_MAX + 17];
    gpgme_ctx_t ctx = NULL;
    gpgme_key_t key = NULL;
    gpgme_genkey_result_t gr;
    gpgme_error_t err;
    int rc = SM_PGP_ERROR, listing = 0;

    pgp_clear(why, whylen);
    fpr_out[0] = '\0';
    if (domain_uid(domain, uid, sizeof uid, pattern, sizeof pattern) != 0) {
        sm_why(why, whylen, "not a domain name: %s", domain ? domain : "(null)");
        rc = SM_PGP_REJECT;
        goto leave;
    }
    if (home && *home && mkdir(home, 0700) != 0 && errno != EEXIST) {
        sm_why(why, whylen, "mkdir %s: %s", home, strerror(errno));
        goto leave;
    }
    if ((rc = pgp_ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;

    /* idempotent: a usable key we already hold for this uid is the answer
     * (unless a rotation asks for a new one) */
    if (always_new)
        goto create;
    if ((err = gpgme_op_keylist_start(ctx, pattern, 1)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_op_keylist_start", err);
        goto leave;
    }
    listing = 1;
    while ((err = gpgme_op_keylist_next(ctx, &key)) == 0) {
        if (pgp_key_usable(key) && key->can_sign && key->can_encrypt && pgp_fpr_norm(key->fpr, fpr_out) == 0)
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
        rc = pgp_fail(why, whylen, "gpgme_op_keylist_next", err);
        goto leave;
    }

create:
    /* "future-default" with no usage flags: ed25519 sign/certify primary plus
     * a cv25519 encryption subkey; the secret stays in this home's agent */
    err = gpgme_op_createkey(ctx, uid, "future-default", 0, 0, NULL,
                             GPGME_CREATE_NOPASSWD | GPGME_CREATE_NOEXPIRE
                             | (always_new ? GPGME_CREATE_FORCE : 0));
    if (err != 0) {
        rc = pgp_fail(why, whylen, "gpgme_op_createkey", err);
        if (rc == SM_PGP_REJECT)
            rc = SM_PGP_ERROR;   /* nothing hostile here: gpg could not do it */
        goto leave;
    }
    gr = gpgme_op_genkey_result(ctx);
    if (!gr || !gr->fpr || pgp_fpr_norm(gr->fpr, fpr_out) != 0) {
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

int sm_pgp_create_domain_key(const char *home, const char *domain,
                             char fpr_out[SM_PGP_FPR_MAX + 1], char *why, size_t whylen)
{
    return domain_key(home, domain, 0, fpr_out, why, whylen);
}

int sm_pgp_new_domain_key(const char *home, const char *domain,
                          char fpr_out[SM_PGP_FPR_MAX + 1], char *why, size_t whylen)
{
    return domain_key(home, domain, 1, fpr_out, why, whylen);
}

int sm_pgp_export_public(const char *home, const char *fpr, char **out, size_t *outlen,
                         char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_ctx_t ctx = NULL;
    gpgme_data_t data = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT;

    pgp_clear(why, whylen);
    *out = NULL;
    *outlen = 0;
    /* a fingerprint only: a free pattern could export the whole keyring */
    if (pgp_fpr_norm(fpr, want) != 0) {
        sm_why(why, whylen, "not a fingerprint: %s", fpr ? fpr : "(null)");
        goto leave;
    }
    if ((rc = pgp_ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new(&data)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_data_new", err);
        goto leave;
    }
    if ((err = gpgme_op_export(ctx, want, GPGME_EXPORT_MODE_MINIMAL, data)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_op_export", err);
        goto leave;
    }
    if ((rc = pgp_take_mem(&data, out, outlen, why, whylen)) == SM_PGP_REJECT)
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

    pgp_clear(why, whylen);
    fpr_out[0] = '\0';
    if (!blob || len == 0 || len > SM_PGP_KEY_MAX) {
        sm_why(why, whylen, "key data empty or larger than %d bytes", SM_PGP_KEY_MAX);
        goto leave;
    }
    if ((rc = pgp_ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new_from_mem(&data, blob, len, 0)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_data_new_from_mem", err);
        goto leave;
    }

    /* Look before importing: whoever vouches for the key (DNS, the
     * recipient's domain) vouches for one key, so a blob that carries
     * anything else is refused whole and leaves nothing behind. */
    if ((err = gpgme_op_keylist_from_data_start(ctx, data, 0)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_op_keylist_from_data_start", err);
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
        if (pgp_fpr_norm(k->fpr, fpr) != 0) {
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
        rc = pgp_fail(why, whylen, "gpgme_op_keylist_next", err);
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
        rc = pgp_fail(why, whylen, "gpgme_op_import", err);
        goto leave;
    }
    ir = gpgme_op_import_result(ctx);
    if (ir && (ir->secret_read || ir->secret_imported)) {
        /* cannot happen after the listing above; refuse loudly if it does */
        sm_why(why, whylen, "gpgme_op_import: secret key material read");
        goto leave;
    }
    for (st = ir ? ir->imports : NULL; st; st = st->next) {
        if (!pgp_fpr_eq(st->fpr, fpr)) {
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
        rc = pgp_fail(why, whylen, "gpgme_get_key", err);
        goto leave;
    }
    if (!pgp_fpr_eq(k->fpr, fpr)) {
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

    if (!pgp_fpr_eq(k->fpr, want)) {
        sm_why(why, whylen, "the key data holds key %s, expected only %s", k->fpr ? k->fpr : "?",
               want);
        return -1;
    }
    if (in_keyring && (!pgp_key_usable(k) || !k->can_sign)) {
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

    pgp_clear(why, whylen);
    if (pgp_fpr_norm(expected_fpr, want) != 0) {
        sm_why(why, whylen, "expected fingerprint is not 40 or 64 hex digits");
        return SM_PGP_REJECT;
    }
    return sm_pgp_import_checked(home, key, len, "the key data", domain_key_rule, want, got,
                                 why, whylen);
}

/* SM_PGP_OK if home holds a public key whose primary fingerprint is fpr
 * (not merely a subkey's) and rule accepts it (in_keyring 1); SM_PGP_REJECT
 * if not, or fpr is malformed; SM_PGP_ERROR if gpg could not be asked. */
static int check_key(const char *home, const char *fpr, sm_pgp_key_rule rule, void *arg,
                     char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_ctx_t ctx = NULL;
    gpgme_key_t key = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT;

    pgp_clear(why, whylen);
    if (pgp_fpr_norm(fpr, want) != 0) {
        sm_why(why, whylen, "not a fingerprint: %s", fpr ? fpr : "(null)");
        goto leave;
    }
    if ((rc = pgp_ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    rc = SM_PGP_REJECT;
    if ((err = gpgme_get_key(ctx, want, &key, 0)) != 0) {
        sm_why(why, whylen, "public key %s: %s", want, pgp_key_strerror(err));
        rc = pgp_is_local(err) ? SM_PGP_ERROR : SM_PGP_REJECT;
        goto leave;
    }
    /* a fingerprint pattern also matches a subkey: DNS names the primary */
    if (!pgp_fpr_eq(key->fpr, want)) {
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
    if (!pgp_key_usable(k)) {
        sm_why(why, whylen, "public key %s is not usable", k->fpr);
        return -1;
    }
    return 0;
}

int sm_pgp_have_key(const char *home, const char *fpr, char *why, size_t whylen)
{
    return check_key(home, fpr, usable_rule, NULL, why, whylen);
}

/* A secret key we sign with: its primary fingerprint must be fpr. Our own
 * key missing or unusable is local trouble (configuration, or no gpg-agent:
 * without one gpg sees no secret keys at all), never an answer about input. */
