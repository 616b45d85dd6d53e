/* smf_seal — the sealing policy of stubmail-milter: which keys a stored
 * message is encrypted to, getting them, and the signing and encrypting.
 *
 * A stored message is signed with our domain key and encrypted to the key
 * of every pulling recipient domain (which must be had: a domain whose key
 * cannot be fetched fails the message, 451 4.7.5), and to each pulling
 * recipient's own key where its domain publishes one by WKD on its outbox
 * origin (which never fails the message: the domain key alone still
 * delivers). The seal (lib/sm_seal.c, in process, no gpg per message)
 * turns a message in its buffer into a sealed body in memory, stored in
 * its row when it is at most inline_max octets (sql/010: no file, no
 * fsync but the commit's); a big one is sealed into its spool file while
 * it arrives (smf_stream.c runs smf_seal_stream in a thread of its own),
 * so memory stays flat whatever the size and no plaintext of it is
 * written to disk. It checks the keys from memory too, so a
 * message whose keys are all known runs no gpg at all. gpg runs when a key
 * is missing (sm_keyfetch, sm_wkd_fetch import it), and the seal is told to
 * forget what it held of a key that was imported again.
 *
 * Nothing here knows libmilter: the callbacks turn SMF_SEAL_FAIL into the
 * SMTP answer (smf_callbacks.c, the failure policy). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "sm_keyfetch.h"
#include "sm_log.h"
#include "sm_wkd.h"
#include "smf.h"

/* ---- the keys ------------------------------------------------------------ */

smf_seal_status smf_seal_domain_keys(const smf_settings *set, const smf_msg *msg,
                                     const smf_domain **bad, char *why, size_t whylen)
{
    const sm_https_opts opts = { set->ca_file, set->allow_http, set->key_timeout };
    const smf_domain *d;
    size_t i;
    int rc;

    for (i = 0; i < msg->ndomains; i++) {
        d = &msg->domains[i];
        if (!d->pulling || sm_seal_key_check(set->seal, d->fpr, NULL, why, whylen) == SM_PGP_OK)
            continue;
        rc = sm_keyfetch(set->gnupg_home, d->outbox, d->fpr, &opts, why, whylen);
        /* a domain in a key rotation that switched already serves its new
         * key at v1/key while the record we hold names the old one as fpr
         * (docs/PROTOCOL.md "Key rotation"): v1/key/{fpr} has that one */
        if (rc == -1 && d->fpr_alt[0])
            rc = sm_keyfetch_by_fpr(set->gnupg_home, d->outbox, d->fpr, &opts, why, whylen);
        if (rc == 0) {
            sm_seal_forget(set->seal, d->fpr);
            continue;
        }
        *bad = d;
        return SMF_SEAL_FAIL;
    }
    return SMF_SEAL_OK;
}

static long long smf_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The pulling domain of r, or NULL. */
static const smf_domain *smf_rcpt_domain(const smf_msg *msg, const smf_rcpt *r)
{
    size_t i;

    for (i = 0; i < msg->ndomains; i++)
        if (strcmp(msg->domains[i].name, sm_addr_domain(r->addr)) == 0)
            return msg->domains[i].pulling ? &msg->domains[i] : NULL;
    return NULL;
}

/* Ask the recipient domain's outbox origin by WKD for r's key, with opts
 * (its timeout: what is left of the message's budget), and cache the
 * answer (a key, none, refused, trouble). */
static void smf_rcpt_key_fetch(const smf_settings *set, const char *qid, const smf_domain *d,
                               smf_rcpt *r, const sm_https_opts *opts)
{
    char fpr[SM_PGP_FPR_MAX + 1], why[768], why2[512], url[SM_WKD_URL_MAX];
    int rc;

    rc = sm_wkd_fetch(set->gnupg_home, d->outbox, r->addr, opts, fpr, url, sizeof url, why,
                      sizeof why);
    switch (rc) {
    case SM_WKD_FOUND:
        sm_info("%s: to=%s: recipient key %s from %s", qid, r->addr, fpr, url);
        memcpy(r->keyfpr, fpr, sizeof r->keyfpr);
        sm_seal_forget(set->seal, fpr);     /* imported again: maybe changed */
        break;
    case SM_WKD_NONE:
        sm_info("%s: to=%s: no recipient key published: %s", qid, r->addr, why);
        break;
    case SM_WKD_REFUSED:
        sm_warn("%s: to=%s: recipient key refused, encrypted to the domain key only: %s", qid,
                r->addr, why);
        break;
    default:
        sm_warn("%s: to=%s: recipient key lookup failed, encrypted to the domain key "
                "only: %s", qid, r->addr, why);
        break;
    }
    if (smf_db_rcpt_key_put(r->addr, sm_wkd_status_name(rc), rc == SM_WKD_FOUND ? fpr : NULL,
                            rc == SM_WKD_FOUND ? url : why, why2, sizeof why2) != SMF_DB_OK)
        sm_warn("%s: to=%s: recipient key answer not cached: %s", qid, r->addr, why2);
}

/* The recipient_key cache first; a cached key is rechecked in the keyring
 * before each use. Returns 1 when the cache decided (r->keyfpr set or left
 * empty), 0 when r must be looked up. */
static int smf_rcpt_key_cached(const smf_settings *set, const char *qid, const smf_msg *msg,
                               smf_rcpt *r)
{
    char status[16], fpr[SM_PGP_FPR_MAX + 1], why[768];

    if (smf_db_rcpt_key_get(r->addr, status, sizeof status, fpr, sizeof fpr, why,
                            sizeof why) != SMF_DB_OK) {
        sm_warn("%s: from=<%s> to=%s: recipient key cache unreadable, encrypted to the "
                "domain key only: %s", qid, msg->sender, r->addr, why);
        return 1;
    }
    if (strcmp(status, "found") == 0) {
        if (sm_seal_key_check(set->seal, fpr, r->addr, why, sizeof why) == SM_PGP_OK) {
            memcpy(r->keyfpr, fpr, sizeof r->keyfpr);
            return 1;
        }
        sm_info("%s: to=%s: cached recipient key %s no longer usable (%s); looking again",
                qid, r->addr, fpr, why);
        return 0;
    }
    return status[0] != '\0';           /* cached: none, refused or error */
}

void smf_seal_rcpt_keys(const smf_settings *set, const char *qid, smf_msg *msg)
{
    sm_https_opts opts = { set->ca_file, set->allow_http, set->recipient_key_timeout };
    long long deadline = smf_now_ms() + set->recipient_key_timeout * 1000LL, left;
    const smf_domain *d;
    smf_rcpt *r;
    size_t i, j, late = 0;

    for (i = 0; i < msg->nrcpts; i++)
        msg->rcpts[i].keyfpr[0] = '\0';
    if (!set->recipient_keys)
        return;
    for (i = 0; i < msg->nrcpts; i++) {
        r = &msg->rcpts[i];
        if (!r->pulling || r->addr == NULL)
            continue;
        /* a recipient named twice is looked up once */
        for (j = 0; j < i; j++)
            if (msg->rcpts[j].addr && strcmp(msg->rcpts[j].addr, r->addr) == 0)
                break;
        if (j < i) {
            memcpy(r->keyfpr, msg->rcpts[j].keyfpr, sizeof r->keyfpr);
            continue;
        }
        if (smf_rcpt_key_cached(set, qid, msg, r) || (d = smf_rcpt_domain(msg, r)) == NULL)
            continue;
        /* One budget for the whole message, not one per recipient: the MTA
         * waits for DATA only so long (Postfix: milter_command_timeout,
         * 30s), and many recipients at an origin that never answers would
         * otherwise hold the message past it. What is left out is not
         * cached, so a later message looks it up. */
        if ((left = (deadline - smf_now_ms()) / 1000) < 1) {
            late++;
            continue;
        }
        opts.timeout = left;
        smf_rcpt_key_fetch(set, qid, d, r, &opts);
    }
    if (late)
        sm_warn("%s: from=<%s>: %zu recipient key lookup%s left out, encrypted to the domain "
                "key only: the lookups of this message took recipient_key_timeout (%lds) "
                "already", qid, msg->sender, late, late == 1 ? "" : "s",
                set->recipient_key_timeout);
}

size_t smf_seal_keylist(const smf_msg *msg, const char **fprs, size_t max_keys, size_t *ndomain,
                        size_t *skipped)
{
    size_t i, j, n = 0;

    *skipped = 0;
    for (i = 0; i < msg->ndomains; i++) {
        if (!msg->domains[i].pulling)
            continue;
        /* domains that share a key (hosted alike) name it once */
        for (j = 0; j < n && strcasecmp(fprs[j], msg->domains[i].fpr) != 0; j++)
            ;
        if (j == n)
            fprs[n++] = msg->domains[i].fpr;
    }
    *ndomain = n;
    for (i = 0; i < msg->nrcpts; i++) {
        if (msg->rcpts[i].keyfpr[0] == '\0')
            continue;
        for (j = 0; j < n && strcasecmp(fprs[j], msg->rcpts[i].keyfpr) != 0; j++)
            ;
        if (j < n)
            continue;
        if (n < max_keys)
            fprs[n++] = msg->rcpts[i].keyfpr;
        else
            (*skipped)++;
    }
    return n;
}

/* ---- sign and encrypt ------------------------------------------------------ */

size_t smf_seal_keys(const char *qid, const smf_msg *msg, const char **fprs, size_t *ndomain)
{
    size_t n, skipped;

    n = smf_seal_keylist(msg, fprs, SMF_SEAL_KEYS_MAX, ndomain, &skipped);
    if (skipped)
        sm_warn("%s: from=<%s>: %zu recipient keys left out: at most %d keys per message",
                qid, msg->sender, skipped, SMF_SEAL_KEYS_MAX);
    return n;
}

/* What one seal reads and writes: the message in memory (buf, len), or
 * arriving on in_fd (a stream's socket; -1: none); into out_fd, or, when
 * it is -1, into memory (sealed, sealed_len). The receipt rides in the
 * literal data's file name (literal_name): inside the encryption, outside
 * the message text, so the stored message is the message as received and
 * plain gpg shows the receipt (--list-packets, or "original file name"
 * with --verbose). */
typedef struct smf_seal_io {
    const char *literal_name;
    const void *buf;
    size_t len;
    int in_fd, out_fd;
    unsigned char *sealed;
    size_t sealed_len;
} smf_seal_io;

static int smf_seal_once(sm_seal *seal, const char **fprs, smf_seal_io *io, char *pgpwhy,
                         size_t pgpwhylen)
{
    int rc;

    if (io->in_fd >= 0)
        rc = sm_seal_encrypt_sign_stream(seal, fprs, io->literal_name, io->in_fd, io->out_fd,
                                         pgpwhy, pgpwhylen);
    else if (io->out_fd >= 0)
        rc = sm_seal_encrypt_sign_mem(seal, fprs, io->literal_name, io->buf, io->len,
                                      io->out_fd, pgpwhy, pgpwhylen);
    else
        rc = sm_seal_encrypt_sign_mem_mem(seal, fprs, io->literal_name, io->buf, io->len,
                                          &io->sealed, &io->sealed_len, pgpwhy, pgpwhylen);
    return rc;
}

/* The seal as smf_seal_once, to the n keys of fprs (ndom of them domain
 * keys). A recipient key that went bad since smf_seal_rcpt_keys checked it
 * gets a second try with the domain keys alone: they still deliver, so the
 * mail is not held back. */
static smf_seal_status smf_seal_encrypt(sm_seal *seal, const char *qid, const char *id,
                                        const char *sender, const char **fprs, size_t n,
                                        size_t ndom, smf_seal_io *io, char *why,
                                        size_t whylen)
{
    char pgpwhy[SM_PGP_WHY_MAX];
    smf_seal_status rc = SMF_SEAL_FAIL;
    int pgp;

    pgp = smf_seal_once(seal, fprs, io, pgpwhy, sizeof pgpwhy);
    if (pgp == SM_PGP_REJECT && n > ndom) {
        sm_warn("%s: from=<%s>: cannot encrypt id %s to the recipient keys (%s); encrypted "
                "to the domain key%s only", qid, sender, id, pgpwhy, ndom == 1 ? "" : "s");
        fprs[ndom] = NULL;
        n = ndom;
        /* a refused seal read and wrote nothing (sm_seal.h): the same input
         * and output again, a stream's socket too */
        pgp = smf_seal_once(seal, fprs, io, pgpwhy, sizeof pgpwhy);
    }
    if (pgp != SM_PGP_OK) {
        snprintf(why, whylen, "cannot sign and encrypt message id %s (%zu key%s): %s", id, n,
                 n == 1 ? "" : "s", pgpwhy);
        goto leave;
    }
    if (n > ndom)
        sm_info("%s: id=%s encrypted to %zu domain key%s and %zu recipient key%s", qid, id,
                ndom, ndom == 1 ? "" : "s", n - ndom, n - ndom == 1 ? "" : "s");
    rc = SMF_SEAL_OK;
leave:
    return rc;
}

smf_seal_status smf_seal_stream(sm_seal *seal, const char *qid, const char *id,
                                const char *sender, const char **fprs, size_t n, size_t ndom,
                                const char *literal_name, int in_fd, int out_fd, char *why,
                                size_t whylen)
{
    smf_seal_io io = { .literal_name = literal_name, .in_fd = in_fd, .out_fd = out_fd };

    return smf_seal_encrypt(seal, qid, id, sender, fprs, n, ndom, &io, why, whylen);
}

/* A body sealed into memory that came out larger than inline_max (many
 * recipient keys): into its spool file after all. */
static int smf_seal_spill(const smf_settings *set, smf_msg *msg, char *why, size_t whylen)
{
    int rc = -1;

    msg->sealed_open = 1;               /* from here smf_msg_free removes it */
    if (sm_spool_create(&msg->sealed, set->spool_dir, msg->id) != 0
        || sm_spool_write(&msg->sealed, msg->inline_body, (size_t)msg->size) != 0) {
        snprintf(why, whylen, "cannot write spool file in %s for message id %s: %s",
                 set->spool_dir, msg->id, strerror(errno));
        goto leave;
    }
    free(msg->inline_body);
    msg->inline_body = NULL;
    rc = 0;
leave:
    return rc;
}

int smf_seal_commit(const smf_settings *set, smf_msg *msg, char *why, size_t whylen)
{
    struct stat st;
    int rc = -1;

    /* the seal wrote to the descriptor, not through sm_spool_write */
    if (fstat(msg->sealed.fd, &st) != 0) {
        snprintf(why, whylen, "cannot stat spool file %s: %s", msg->sealed.tmp_path,
                 strerror(errno));
        goto leave;
    }
    msg->size = msg->sealed.size = (long long)st.st_size;
    if (sm_spool_commit(&msg->sealed) != 0) {
        snprintf(why, whylen, "cannot commit spool file %s/%s: %s", set->spool_dir, msg->id,
                 strerror(errno));
        goto leave;
    }
    rc = 0;
leave:
    return rc;
}

int smf_seal_receipt(smf_msg *msg, char *name, size_t namelen, char *why, size_t whylen)
{
    if (sm_receipt_new(msg->receipt, msg->receipt_hash) != 0) {
        snprintf(why, whylen, "no random receipt for message id %s", msg->id);
        return -1;
    }
    sm_receipt_name(msg->receipt, name, namelen);
    return 0;
}

smf_seal_status smf_seal_body(const smf_settings *set, const char *qid, smf_msg *msg,
                              char *why, size_t whylen)
{
    smf_seal_io io = { .buf = msg->buf, .len = msg->buflen, .in_fd = -1, .out_fd = -1 };
    char name[SMF_RECEIPT_NAME_MAX];
    const char **fprs;
    size_t n, ndom;
    smf_seal_status rc = SMF_SEAL_FAIL;

    if ((fprs = calloc(msg->ndomains + msg->nrcpts + 1, sizeof *fprs)) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto leave;
    }
    n = smf_seal_keys(qid, msg, fprs, &ndom);
    if (sm_id_new(msg->id) != 0) {
        snprintf(why, whylen, "no random message id: %s", strerror(errno));
        goto leave;
    }
    /* one receipt for the message, whatever domains it goes to: every
     * reader of the body can read it (docs/PROTOCOL.md "Receipts") */
    if (smf_seal_receipt(msg, name, sizeof name, why, whylen) != 0)
        goto leave;
    io.literal_name = name;
    /* Sealed into memory for its row: no file made, fsync'd, renamed, no
     * directory fsync'd (the commit's WAL flush makes it durable). With
     * inline_max 0, into its spool file. */
    if (set->inline_max == 0) {
        msg->sealed_open = 1;           /* from here smf_msg_free removes it */
        if (sm_spool_create(&msg->sealed, set->spool_dir, msg->id) != 0) {
            snprintf(why, whylen, "cannot create spool file in %s: %s", set->spool_dir,
                     strerror(errno));
            goto leave;
        }
        io.out_fd = msg->sealed.fd;
    }
    if (smf_seal_encrypt(set->seal, qid, msg->id, msg->sender, fprs, n, ndom, &io, why,
                         whylen) != SMF_SEAL_OK)
        goto leave;
    msg->inline_body = io.sealed;
    msg->size = (long long)io.sealed_len;
    if (msg->inline_body && msg->size > set->inline_max
        && smf_seal_spill(set, msg, why, whylen) != 0)
        goto leave;
    if (msg->inline_body == NULL && smf_seal_commit(set, msg, why, whylen) != 0)
        goto leave;
    rc = SMF_SEAL_OK;
leave:
    free(fprs);
    return rc;
}
