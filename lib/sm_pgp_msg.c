/* sm_pgp_msg — login signatures: sign a statement (detached) with our
 * domain key, verify one, which counts only if it is the expected signer's.
 * Bodies are sealed and opened in process (sm_seal). */
#include <string.h>

#include <gpgme.h>

#include "sm_log.h"
#include "sm_pgp.h"
#include "sm_pgp_impl.h"

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

/* The rule for a detached signature: exactly one, good, made with SHA-256,
 * SHA-384 or SHA-512, by a live key whose primary fingerprint is want
 * (sm_seal holds bodies to the same, but for the digest). */
static int check_signatures(gpgme_ctx_t ctx, gpgme_verify_result_t vr, const char *want,
                            char *why, size_t whylen)
{
    gpgme_signature_t s = vr ? vr->signatures : NULL;
    gpgme_key_t key = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_REJECT, n = 0;
    gpgme_signature_t t;

    if (!s) {
        sm_why(why, whylen, "no signature");
        goto leave;
    }
    for (t = s; t; t = t->next)
        n++;
    if (n > 1) {
        sm_why(why, whylen, "%d signatures, exactly one expected", n);
        goto leave;
    }
    switch (gpg_err_code(s->status)) {
    case GPG_ERR_NO_ERROR:
        break;
    case GPG_ERR_NO_PUBKEY:
        sm_why(why, whylen, "gpgme_op_verify: signed by unknown key %s", s->fpr ? s->fpr : "?");
        goto leave;
    default:   /* bad signature, expired or revoked key, expired signature, unsupported... */
        sm_why(why, whylen, "gpgme_op_verify: %s", gpgme_strerror(s->status));
        goto leave;
    }
    /* a digest open to collisions could let one signature cover other
     * octets than the statement (PROTOCOL.md, POST /v1/login) */
    if (s->hash_algo != GPGME_MD_SHA256 && s->hash_algo != GPGME_MD_SHA384
        && s->hash_algo != GPGME_MD_SHA512) {
        sm_why(why, whylen, "signature made with digest %s; SHA-256, SHA-384 or SHA-512 "
               "required", gpgme_hash_algo_name(s->hash_algo)
                           ? gpgme_hash_algo_name(s->hash_algo) : "unknown");
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
    if (!key->fpr || !pgp_key_usable(key)) {
        sm_why(why, whylen, "signer key %s is not usable", s->fpr);
        goto leave;
    }
    if (!pgp_fpr_eq(key->fpr, want)) {
        sm_why(why, whylen, "signed by %s, expected %s", key->fpr, want);
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    if (key)
        gpgme_key_unref(key);
    return rc;
}

int sm_pgp_verify_detached(const char *home, const void *data, size_t len, const char *sig,
                           size_t siglen, const char *expected_fpr, char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    gpgme_ctx_t ctx = NULL;
    gpgme_data_t sigd = NULL, text = NULL;
    gpgme_error_t err;
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
    rc = check_signatures(ctx, gpgme_op_verify_result(ctx), want, why, whylen);
leave:
    if (sigd)
        gpgme_data_release(sigd);
    if (text)
        gpgme_data_release(text);
    if (ctx)
        gpgme_release(ctx);
    return rc;
}
