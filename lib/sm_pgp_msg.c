/* sm_pgp_msg — the per-message work: sign (detached, for logins), verify a
 * detached signature, encrypt and sign a body, decrypt and verify one; each
 * signature counts only if it is the expected signer's. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gpgme.h>

#include "sm_log.h"
#include "sm_addr.h"
#include "sm_pgp.h"
#include "sm_pgp_impl.h"

#define RECIPIENTS_MAX 64

static int signer_add(gpgme_ctx_t ctx, const char *fpr, char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_key_t key = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT;

    if (pgp_fpr_norm(fpr, want) != 0) {
        sm_why(why, whylen, "signer is not a fingerprint: %s", fpr ? fpr : "(null)");
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((err = gpgme_get_key(ctx, want, &key, 1)) != 0) {
        sm_why(why, whylen, "secret key %s: %s", want, pgp_key_strerror(err));
        goto leave;
    }
    if (!pgp_fpr_eq(key->fpr, want) || !pgp_key_usable(key) || !key->can_sign) {
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
        found = pgp_key_usable(key);
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

    pgp_clear(why, whylen);
    *sig = NULL;
    *siglen = 0;
    if ((rc = pgp_ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((rc = signer_add(ctx, signer_fpr, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new_from_mem(&in, data, len, 0)) != 0
        || (err = gpgme_data_new(&out)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_data_new", err);
        goto leave;
    }
    if ((err = gpgme_op_sign(ctx, in, out, GPGME_SIG_MODE_DETACH)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_op_sign", err);
        goto leave;
    }
    sr = gpgme_op_sign_result(ctx);
    if (!sr || sr->invalid_signers || !sr->signatures) {
        sm_why(why, whylen, "gpgme_op_sign: %s",
            sr && sr->invalid_signers ? gpgme_strerror(sr->invalid_signers->reason) : "no signature made");
        rc = SM_PGP_ERROR;
        goto leave;
    }
    if ((rc = pgp_take_mem(&out, sig, siglen, why, whylen)) == SM_PGP_REJECT) {
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
        rc = pgp_fail(why, whylen, "gpgme_get_key (signer)", err);
        goto leave;
    }
    if (!key->fpr || strlen(key->fpr) > SM_PGP_FPR_MAX || !pgp_key_usable(key)) {
        sm_why(why, whylen, "signer key %s is not usable", s->fpr);
        goto leave;
    }
    strcpy(signer, key->fpr);
    if (!pgp_fpr_eq(key->fpr, want)) {
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

    pgp_clear(why, whylen);
    if (pgp_fpr_norm(expected_fpr, want) != 0) {
        sm_why(why, whylen, "expected fingerprint is not 40 or 64 hex digits");
        goto leave;
    }
    if (!sig || siglen == 0) {
        sm_why(why, whylen, "no signature");
        goto leave;
    }
    if ((rc = pgp_ctx_open(home, 1, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new_from_mem(&sigd, sig, siglen, 0)) != 0
        || (err = gpgme_data_new_from_mem(&text, data, len, 0)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_data_new_from_mem", err);
        goto leave;
    }
    if ((err = gpgme_op_verify(ctx, sigd, text, NULL)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_op_verify", err);
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

    pgp_clear(why, whylen);
    while (recipient_fprs && recipient_fprs[n] && n <= RECIPIENTS_MAX)
        n++;
    if (n == 0 || n > RECIPIENTS_MAX) {
        sm_why(why, whylen, "1 to %d recipients needed", RECIPIENTS_MAX);
        goto leave;
    }
    if ((rc = pgp_ctx_open(home, 0, &ctx, why, whylen)) != SM_PGP_OK)
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
        if (pgp_fpr_norm(recipient_fprs[i], want) != 0) {
            sm_why(why, whylen, "recipient is not a fingerprint: %s", recipient_fprs[i]);
            goto leave;
        }
        if ((err = gpgme_get_key(ctx, want, &keys[i], 0)) != 0) {
            sm_why(why, whylen, "recipient key %s: %s", want, pgp_key_strerror(err));
            rc = pgp_is_local(err) ? SM_PGP_ERROR : SM_PGP_REJECT;
            goto leave;
        }
        if (!pgp_fpr_eq(keys[i]->fpr, want) || !pgp_key_usable(keys[i]) || !keys[i]->can_encrypt) {
            sm_why(why, whylen, "recipient key %s cannot encrypt", want);
            goto leave;
        }
    }
    if ((err = gpgme_data_new_from_fd(&in, in_fd)) != 0
        || (err = gpgme_data_new_from_fd(&out, out_fd)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_data_new_from_fd", err);
        goto leave;
    }
    /* always-trust: these keys are trusted because their fingerprints are
     * the ones DNS published, not through GnuPG's web of trust.
     * no-compress: big bodies are attachments, already compressed and then
     * base64'd; zlib saved ~24% on those here but made encryption ~10x
     * slower (200 MB: 8.7 s against 0.9 s), too slow for a 2 GB message. */
    if ((err = gpgme_op_encrypt_sign(ctx, keys, GPGME_ENCRYPT_ALWAYS_TRUST | GPGME_ENCRYPT_NO_COMPRESS,
                                     in, out)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_op_encrypt_sign", err);
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

    pgp_clear(why, whylen);
    memset(res, 0, sizeof *res);
    if (pgp_fpr_norm(expected_signer_fpr, want) != 0) {
        sm_why(why, whylen, "expected signer is not 40 or 64 hex digits");
        goto leave;
    }
    if ((rc = pgp_ctx_open(home, 0, &ctx, why, whylen)) != SM_PGP_OK)
        goto leave;
    if ((err = gpgme_data_new_from_fd(&in, in_fd)) != 0
        || (err = gpgme_data_new_from_fd(&out, out_fd)) != 0) {
        rc = pgp_fail(why, whylen, "gpgme_data_new_from_fd", err);
        goto leave;
    }
    err = gpgme_op_decrypt_verify(ctx, in, out);
    dr = gpgme_op_decrypt_result(ctx);
    if (err != 0) {
        /* tampered (integrity check failed), not for our key, not
         * encrypted at all, or garbage — unless it was our own trouble */
        rc = pgp_fail(why, whylen, "gpgme_op_decrypt_verify", err);
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
