/* sm_seal — sign+encrypt and decrypt+verify in process with librnp, over
 * the keys and contexts of sm_seal_keys.c (sm_seal.h).
 *
 * A body opened here counts whoever sealed it (this code or a peer's gpg)
 * only if it has exactly one signature, by the expected primary key or a
 * signing subkey of it, usable now; integrity protection is required. Bodies
 * are sealed uncompressed (big ones are attachments, already compressed),
 * and opened only if uncompressed: a few kilobytes of compressed body can
 * inflate into gigabytes of spool file. librnp 0.16 decompresses without
 * telling (neither rnp_op_verify_get_protection_info nor any callback names
 * a compressed-data packet, which sits inside the encryption), so the open
 * refuses what only compression can do: plaintext longer than the body. */
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

#define RECIPIENTS_MAX 64

/* An fd as rnp input or output; err keeps the errno of a failed read or
 * write, so that local trouble is told from bad input. A writer with a cap
 * never writes more than the cap's reader has read: without compression
 * each plaintext octet costs at least one octet of body (CFB and AEAD keep
 * lengths, headers and signatures only add), so more out than in is a
 * compressed-data packet inflating. */
typedef struct fd_io {
    int fd;
    int err;
    unsigned long long moved;   /* octets read or written so far */
    const struct fd_io *cap;    /* writer: the reader whose count bounds it, or NULL */
    int capped;                 /* the writer stopped at the cap */
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
    io->moved += (unsigned long long)n;
    return true;
}

static bool fd_writer(void *app_ctx, const void *buf, size_t len)
{
    fd_io *io = app_ctx;
    const char *p = buf;

    if (io->cap && io->moved + len > io->cap->moved) {
        io->capped = 1;
        return false;
    }
    io->moved += len;
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

/* The seal of in (an fd through in_io, or memory: in_io NULL) into out (an
 * fd through out_io, or memory: out_io NULL), in a slot of the pool or, own,
 * in a context of its own (seal_slot_own). Every SM_PGP_REJECT comes before
 * the execution: nothing was read from in, nothing written to out. */
static int encrypt_sign(sm_seal *s, const char *const *recipient_fprs,
                        const char *literal_name, rnp_input_t in, const fd_io *in_io,
                        rnp_output_t out, const fd_io *out_io, int own, char *why,
                        size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    rnp_op_encrypt_t op = NULL;
    rnp_key_handle_t key = NULL;
    rnp_result_t r;
    bool primary = false;
    slot *sl = NULL;
    int rc = SM_PGP_REJECT, n = 0, i;

    pgp_clear(why, whylen);
    while (recipient_fprs && recipient_fprs[n] && n <= RECIPIENTS_MAX)
        n++;
    if (n == 0 || n > RECIPIENTS_MAX) {
        sm_why(why, whylen, "1 to %d recipients needed", RECIPIENTS_MAX);
        goto leave;
    }
    if (literal_name && strlen(literal_name) > 255) {
        sm_why(why, whylen, "literal data file name longer than 255 octets");
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((sl = own ? seal_slot_own(s, why, whylen) : seal_slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((r = rnp_op_encrypt_create(&op, sl->ffi, in, out)) != RNP_SUCCESS
        || (r = rnp_op_encrypt_set_armor(op, false)) != RNP_SUCCESS
        || (r = rnp_op_encrypt_set_cipher(op, "AES256")) != RNP_SUCCESS
        || (r = rnp_op_encrypt_set_aead(op, "None")) != RNP_SUCCESS
        || (r = rnp_op_encrypt_set_compression(op, "Uncompressed", 0)) != RNP_SUCCESS
        || (literal_name
            && (r = rnp_op_encrypt_set_file_name(op, literal_name)) != RNP_SUCCESS)) {
        rc = seal_rnp_fail(why, whylen, "rnp encryption set-up", r);
        goto leave;
    }
    for (i = 0; i < n; i++) {
        if (pgp_fpr_norm(recipient_fprs[i], want) != 0) {
            sm_why(why, whylen, "recipient is not a fingerprint: %s", recipient_fprs[i]);
            rc = SM_PGP_REJECT;
            goto leave;
        }
        if ((rc = seal_slot_key(s, sl, want, 0, &key, why, whylen)) != SM_PGP_OK) {
            if (rc == SM_PGP_REJECT)
                sm_why(why, whylen, "recipient key %s: not in the keyring", want);
            goto leave;
        }
        if (rnp_key_is_primary(key, &primary) != RNP_SUCCESS || !primary) {
            sm_why(why, whylen, "recipient %s is a subkey, not a primary key", want);
            rc = SM_PGP_REJECT;
            goto leave;
        }
        if (!seal_key_valid(key) || rnp_op_encrypt_add_recipient(op, key) != RNP_SUCCESS) {
            sm_why(why, whylen, "recipient key %s cannot encrypt", want);
            rc = SM_PGP_REJECT;
            goto leave;
        }
        rnp_key_handle_destroy(key);
        key = NULL;
    }
    if ((rc = seal_slot_key(s, sl, s->own, 1, &key, why, whylen)) != SM_PGP_OK) {
        rc = SM_PGP_ERROR;      /* our own key gone: the admin's problem, not the mail's */
        goto leave;
    }
    rc = SM_PGP_ERROR;
    if ((r = rnp_op_encrypt_add_signature(op, key, NULL)) != RNP_SUCCESS) {
        rc = seal_rnp_fail(why, whylen, "signing with our key", r);
        goto leave;
    }
    r = rnp_op_encrypt_execute(op);
    /* before r: librnp writes its last buffer after the encryption is done
     * and says success even when that write failed */
    if ((in_io && in_io->err) || (out_io && out_io->err)) {
        sm_why(why, whylen, "%s the body: %s", in_io && in_io->err ? "reading" : "writing",
               strerror(in_io && in_io->err ? in_io->err : out_io->err));
        goto leave;
    }
    if (r != RNP_SUCCESS) {
        seal_rnp_fail(why, whylen, "rnp_op_encrypt_execute", r);
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    rnp_key_handle_destroy(key);
    rnp_op_encrypt_destroy(op);
    if (sl)
        seal_slot_give(s, sl);
    return rc;
}

/* The seal of in into out_fd (own: as encrypt_sign). */
static int encrypt_sign_to_fd(sm_seal *s, const char *const *recipient_fprs,
                              const char *literal_name, rnp_input_t in, const fd_io *in_io,
                              int out_fd, int own, char *why, size_t whylen)
{
    fd_io out_io = { .fd = out_fd };
    rnp_output_t out = NULL;
    rnp_result_t r;
    int rc;

    if ((r = rnp_output_to_callback(&out, fd_writer, NULL, &out_io)) != RNP_SUCCESS)
        return seal_rnp_fail(why, whylen, "rnp output", r);
    rc = encrypt_sign(s, recipient_fprs, literal_name, in, in_io, out, &out_io, own, why,
                      whylen);
    rnp_output_destroy(out);
    return rc;
}

/* The seal of in_fd into out_fd (own: as encrypt_sign). */
static int encrypt_sign_fd(sm_seal *s, const char *const *recipient_fprs,
                           const char *literal_name, int in_fd, int out_fd, int own, char *why,
                           size_t whylen)
{
    fd_io in_io = { .fd = in_fd };
    rnp_input_t in = NULL;
    rnp_result_t r;
    int rc;

    if ((r = rnp_input_from_callback(&in, fd_reader, NULL, &in_io)) != RNP_SUCCESS)
        return seal_rnp_fail(why, whylen, "rnp input", r);
    rc = encrypt_sign_to_fd(s, recipient_fprs, literal_name, in, &in_io, out_fd, own, why,
                            whylen);
    rnp_input_destroy(in);
    return rc;
}

int sm_seal_encrypt_sign_fd(sm_seal *s, const char *const *recipient_fprs,
                            const char *literal_name, int in_fd, int out_fd, char *why,
                            size_t whylen)
{
    return encrypt_sign_fd(s, recipient_fprs, literal_name, in_fd, out_fd, 0, why, whylen);
}

int sm_seal_encrypt_sign_stream(sm_seal *s, const char *const *recipient_fprs,
                                const char *literal_name, int in_fd, int out_fd, char *why,
                                size_t whylen)
{
    return encrypt_sign_fd(s, recipient_fprs, literal_name, in_fd, out_fd, 1, why, whylen);
}

int sm_seal_encrypt_sign_mem(sm_seal *s, const char *const *recipient_fprs,
                             const char *literal_name, const void *buf, size_t len, int out_fd,
                             char *why, size_t whylen)
{
    rnp_input_t in = NULL;
    rnp_result_t r;
    int rc;

    /* not copied: buf outlives the input */
    if ((r = rnp_input_from_memory(&in, buf, len, false)) != RNP_SUCCESS)
        return seal_rnp_fail(why, whylen, "rnp input", r);
    rc = encrypt_sign_to_fd(s, recipient_fprs, literal_name, in, NULL, out_fd, 0, why, whylen);
    rnp_input_destroy(in);
    return rc;
}

int sm_seal_encrypt_sign_mem_mem(sm_seal *s, const char *const *recipient_fprs,
                                 const char *literal_name, const void *buf, size_t len,
                                 unsigned char **sealed,
                                 size_t *sealed_len, char *why, size_t whylen)
{
    rnp_input_t in = NULL;
    rnp_output_t out = NULL;
    uint8_t *got = NULL;
    size_t gotlen = 0;
    rnp_result_t r;
    int rc;

    *sealed = NULL;
    *sealed_len = 0;
    /* not copied: buf outlives the input */
    if ((r = rnp_input_from_memory(&in, buf, len, false)) != RNP_SUCCESS)
        return seal_rnp_fail(why, whylen, "rnp input", r);
    if ((r = rnp_output_to_memory(&out, 0)) != RNP_SUCCESS) {
        rc = seal_rnp_fail(why, whylen, "rnp output", r);
        goto leave;
    }
    if ((rc = encrypt_sign(s, recipient_fprs, literal_name, in, NULL, out, NULL, 0, why,
                           whylen)) != SM_PGP_OK)
        goto leave;
    /* librnp's own buffer, freed with the output: copied once, below */
    if ((r = rnp_output_memory_get_buf(out, &got, &gotlen, false)) != RNP_SUCCESS) {
        rc = seal_rnp_fail(why, whylen, "rnp output buffer", r);
        goto leave;
    }
    if ((*sealed = malloc(gotlen ? gotlen : 1)) == NULL) {
        sm_why(why, whylen, "out of memory for a sealed body of %zu octets", gotlen);
        rc = SM_PGP_ERROR;
        goto leave;
    }
    memcpy(*sealed, got, gotlen);
    *sealed_len = gotlen;
leave:
    rnp_output_destroy(out);
    rnp_input_destroy(in);
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

/* The literal data's file name into res (a receipt travels there). */
static void read_literal_name(rnp_op_verify_t op, sm_pgp_result *res)
{
    char *name = NULL;

    if (rnp_op_verify_get_file_info(op, &name, NULL) == RNP_SUCCESS && name)
        snprintf(res->literal_name, sizeof res->literal_name, "%s", name);
    rnp_buffer_destroy(name);
}

/* The rule for the one signature inside (as sm_pgp_verify_detached's for a
 * login signature). */
static int check_signature(sm_seal *s, slot *sl, rnp_op_verify_t op, const char *want,
                           sm_pgp_result *res, char *why, size_t whylen)
{
    rnp_op_verify_signature_t sig = NULL;
    rnp_signature_handle_t handle = NULL;
    rnp_key_handle_t key = NULL, primary = NULL;
    char *fpr = NULL, *keyid = NULL;
    size_t count = 0;
    bool is_primary = false, can_sign = false;
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
    /* the key that signed must be usable now and for signing, not only
     * valid when it signed (librnp's judgement): a signing subkey that has
     * expired or been revoked since no longer speaks for the domain */
    if (!is_primary && (!seal_key_valid(key) || rnp_key_allows_usage(key, "sign", &can_sign)
                                               != RNP_SUCCESS || !can_sign)) {
        sm_why(why, whylen, "signing subkey of %s is expired, revoked or not for signing", fpr);
        goto leave;
    }
    if (rnp_locate_key(sl->ffi, "fingerprint", fpr, &primary) != RNP_SUCCESS || primary == NULL
        || !seal_key_valid(primary)) {
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

/* Our other keys' secrets into the slot (sm_seal_decrypt_also): rnp
 * tries every secret key it holds on the body's session key packets. A
 * key gone from the home (SM_PGP_REJECT: the rotation's finish deleted it)
 * is dropped from the list and no longer decrypts: asked again, it would
 * cost a gpg export per message. */
static int load_also(sm_seal *s, slot *sl, char *why, size_t whylen)
{
    rnp_key_handle_t key = NULL;
    char fpr[SM_PGP_FPR_MAX + 1];
    size_t i = 0;
    int rc = SM_PGP_OK, have;

    while (rc == SM_PGP_OK) {
        pthread_mutex_lock(&s->lock);
        if ((have = i < s->nalso))
            memcpy(fpr, s->also[i], sizeof fpr);
        pthread_mutex_unlock(&s->lock);
        if (!have)
            break;
        rc = seal_slot_key(s, sl, fpr, 1, &key, why, whylen);
        rnp_key_handle_destroy(key);
        key = NULL;
        if (rc != SM_PGP_REJECT) {
            i++;
            continue;
        }
        sm_warn("our domain key %s is gone from %s (%s): it decrypts no more", fpr, s->home,
                why);
        pthread_mutex_lock(&s->lock);
        if (i < s->nalso && !strcmp(s->also[i], fpr)) {
            memmove(s->also[i], s->also[i + 1], (s->nalso - i - 1) * sizeof s->also[0]);
            s->nalso--;
        }
        pthread_mutex_unlock(&s->lock);
        pgp_clear(why, whylen);
        rc = SM_PGP_OK;
    }
    return rc;
}

int sm_seal_decrypt_verify_fd(sm_seal *s, int in_fd, int out_fd,
                              const char *expected_signer_fpr, sm_pgp_result *res,
                              char *why, size_t whylen)
{
    char want[SM_PGP_FPR_MAX + 1];
    fd_io in_io = { .fd = in_fd }, out_io = { .fd = out_fd, .cap = &in_io };
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
    if ((sl = seal_slot_take(s, why, whylen)) == NULL)
        goto leave;
    if ((rc = seal_slot_key(s, sl, s->own, 1, &key, why, whylen)) != SM_PGP_OK) {
        rc = SM_PGP_ERROR;
        goto leave;
    }
    rnp_key_handle_destroy(key);
    key = NULL;
    if ((rc = load_also(s, sl, why, whylen)) != SM_PGP_OK)
        goto leave;
    /* the signer's key, if the home has it; else the signature is NO_KEY */
    if ((rc = seal_slot_key(s, sl, want, 0, &key, why, whylen)) == SM_PGP_ERROR)
        goto leave;
    pgp_clear(why, whylen);
    rc = SM_PGP_ERROR;
    if ((r = rnp_input_from_callback(&in, fd_reader, NULL, &in_io)) != RNP_SUCCESS
        || (r = rnp_output_to_callback(&out, fd_writer, NULL, &out_io)) != RNP_SUCCESS
        || (r = rnp_op_verify_create(&op, sl->ffi, in, out)) != RNP_SUCCESS
        || (r = rnp_op_verify_set_flags(op, RNP_VERIFY_IGNORE_SIGS_ON_DECRYPT)) != RNP_SUCCESS) {
        rc = seal_rnp_fail(why, whylen, "rnp decryption set-up", r);
        goto leave;
    }
    r = rnp_op_verify_execute(op);
    /* whatever the literal data header said, also when the body then fails
     * (unauthenticated then, but only the session key reveals it) */
    read_literal_name(op, res);
    if (out_io.capped) {
        res->compressed = 1;
        sm_why(why, whylen, "compressed: the plaintext outgrew the body at %llu octets read",
               in_io.moved);
        rc = SM_PGP_REJECT;
        goto leave;
    }
    if (in_io.err || out_io.err) {
        sm_why(why, whylen, "%s the body: %s", in_io.err ? "reading" : "writing",
               strerror(in_io.err ? in_io.err : out_io.err));
        goto leave;
    }
    if (r == RNP_ERROR_OUT_OF_MEMORY || r == RNP_ERROR_BAD_STATE) {
        seal_rnp_fail(why, whylen, "rnp_op_verify_execute", r);
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
        seal_slot_give(s, sl);
    return rc;
}

