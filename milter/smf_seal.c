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
 * fsync but the commit's); it streams a big one from the plaintext spool
 * file it spilled into to a second spool file, so memory stays flat
 * whatever the size. It checks the keys from memory too, so a
 * message whose keys are all known runs no gpg at all. gpg runs when a key
 * is missing (sm_keyfetch, sm_wkd_fetch import it), and the seal is told to
 * forget what it held of a key that was imported again.
 *
 * Nothing here knows libmilter: the callbacks turn SMF_SEAL_FAIL into the
 * SMTP answer (smf_callbacks.c, the failure policy). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

    for (i = 0; i < msg->ndomains; i++) {
        d = &msg->domains[i];
        if (!d->pulling || sm_seal_key_check(set->seal, d->fpr, NULL, why, whylen) == SM_PGP_OK)
            continue;
        if (sm_keyfetch(set->gnupg_home, d->outbox, d->fpr, &opts, why, whylen) == 0) {
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

/* The seal of the message (from in_fd when it spilled into a file, -1 when
 * it is in msg->buf) into msg->sealed, or, to_mem, into msg->inline_body
 * (msg->size its length). The receipt rides in the literal data's file
 * name: inside the encryption, outside the message text, so the stored
 * message is the message as received and plain gpg shows the receipt
 * (--list-packets, or "original file name" with --verbose). */
static int smf_seal_once(const smf_settings *set, smf_msg *msg, const char **fprs, int in_fd,
                         int to_mem, char *pgpwhy, size_t pgpwhylen)
{
    char name[sizeof SM_RECEIPT_NAME_PREFIX + SM_RECEIPT_LEN];
    size_t len = 0;
    int rc;

    sm_receipt_name(msg->receipt, name, sizeof name);
    if (to_mem) {
        rc = sm_seal_encrypt_sign_mem_mem(set->seal, fprs, name, msg->buf, msg->buflen,
                                          &msg->inline_body, &len, pgpwhy, pgpwhylen);
        msg->size = (long long)len;
        return rc;
    }
    if (in_fd < 0)
        return sm_seal_encrypt_sign_mem(set->seal, fprs, name, msg->buf, msg->buflen,
                                        msg->sealed.fd, pgpwhy, pgpwhylen);
    return sm_seal_encrypt_sign_fd(set->seal, fprs, name, in_fd, msg->sealed.fd, pgpwhy,
                                   pgpwhylen);
}

/* The seal as smf_seal_once, to the n keys of fprs (ndom of them domain
 * keys). A recipient key that went bad since smf_seal_rcpt_keys checked it
 * gets a second try with the domain keys alone: they still deliver, so the
 * mail is not held back. */
static smf_seal_status smf_seal_encrypt(const smf_settings *set, const char *qid, smf_msg *msg,
                                        const char **fprs, size_t n, size_t ndom, int in_fd,
                                        int to_mem, char *why, size_t whylen)
{
    char pgpwhy[SM_PGP_WHY_MAX];
    int pgp;

    pgp = smf_seal_once(set, msg, fprs, in_fd, to_mem, pgpwhy, sizeof pgpwhy);
    if (pgp == SM_PGP_REJECT && n > ndom) {
        sm_warn("%s: from=<%s>: cannot encrypt id %s to the recipient keys (%s); encrypted "
                "to the domain key%s only", qid, msg->sender, msg->id, pgpwhy,
                ndom == 1 ? "" : "s");
        fprs[ndom] = NULL;
        n = ndom;
        /* a seal into memory that failed left nothing behind */
        if (!to_mem && ((in_fd >= 0 && lseek(in_fd, 0, SEEK_SET) != 0)
                        || lseek(msg->sealed.fd, 0, SEEK_SET) != 0
                        || ftruncate(msg->sealed.fd, 0) != 0)) {
            snprintf(why, whylen, "cannot rewind spool files of message id %s: %s", msg->id,
                     strerror(errno));
            return SMF_SEAL_FAIL;
        }
        pgp = smf_seal_once(set, msg, fprs, in_fd, to_mem, pgpwhy, sizeof pgpwhy);
    }
    if (pgp != SM_PGP_OK) {
        snprintf(why, whylen, "cannot sign and encrypt message id %s (%zu key%s): %s",
                 msg->id, n, n == 1 ? "" : "s", pgpwhy);
        return SMF_SEAL_FAIL;
    }
    if (n > ndom)
        sm_info("%s: id=%s encrypted to %zu domain key%s and %zu recipient key%s", qid,
                msg->id, ndom, ndom == 1 ? "" : "s", n - ndom, n - ndom == 1 ? "" : "s");
    return SMF_SEAL_OK;
}

/* A body sealed into memory that came out larger than inline_max (many
 * recipient keys): into its spool file after all. */
static int smf_seal_spill(const smf_settings *set, smf_msg *msg, char *why, size_t whylen)
{
    msg->sealed_open = 1;               /* from here smf_msg_free removes it */
    if (sm_spool_create(&msg->sealed, set->spool_dir, msg->id) != 0
        || sm_spool_write(&msg->sealed, msg->inline_body, (size_t)msg->size) != 0) {
        snprintf(why, whylen, "cannot write spool file in %s for message id %s: %s",
                 set->spool_dir, msg->id, strerror(errno));
        return -1;
    }
    free(msg->inline_body);
    msg->inline_body = NULL;
    return 0;
}

/* The sealed body's spool file, durable (its size set). */
static int smf_seal_commit_file(const smf_settings *set, smf_msg *msg, char *why,
                                size_t whylen)
{
    struct stat st;

    /* the seal wrote to the descriptor, not through sm_spool_write */
    if (fstat(msg->sealed.fd, &st) != 0) {
        snprintf(why, whylen, "cannot stat spool file %s: %s", msg->sealed.tmp_path,
                 strerror(errno));
        return -1;
    }
    msg->size = msg->sealed.size = (long long)st.st_size;
    if (sm_spool_commit(&msg->sealed) != 0) {
        snprintf(why, whylen, "cannot commit spool file %s/%s: %s", set->spool_dir, msg->id,
                 strerror(errno));
        return -1;
    }
    return 0;
}

smf_seal_status smf_seal_body(const smf_settings *set, const char *qid, smf_msg *msg,
                              char *why, size_t whylen)
{
    const char **fprs;
    size_t n, ndom, skipped;
    int in_fd = -1, to_mem;
    smf_seal_status rc = SMF_SEAL_FAIL;

    if ((fprs = calloc(msg->ndomains + msg->nrcpts + 1, sizeof *fprs)) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto leave;
    }
    n = smf_seal_keylist(msg, fprs, SMF_SEAL_KEYS_MAX, &ndom, &skipped);
    if (skipped)
        sm_warn("%s: from=<%s>: %zu recipient keys left out: at most %d keys per message",
                qid, msg->sender, skipped, SMF_SEAL_KEYS_MAX);
    if (msg->spool_open && (in_fd = open(msg->spool.tmp_path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(why, whylen, "cannot read spool file %s back: %s", msg->spool.tmp_path,
                 strerror(errno));
        goto leave;
    }
    if (sm_id_new(msg->id) != 0) {
        snprintf(why, whylen, "no random message id: %s", strerror(errno));
        goto leave;
    }
    /* one receipt for the message, whatever domains it goes to: every
     * reader of the body can read it (docs/PROTOCOL.md "Receipts") */
    if (sm_receipt_new(msg->receipt, msg->receipt_hash) != 0) {
        snprintf(why, whylen, "no random receipt for message id %s", msg->id);
        goto leave;
    }
    /* A message in its buffer is sealed into memory for its row: no file
     * made, fsync'd, renamed, no directory fsync'd (the commit's WAL flush
     * makes it durable). A spilled one streams into its spool file. */
    to_mem = !msg->spool_open && set->inline_max > 0;
    if (!to_mem) {
        msg->sealed_open = 1;           /* from here smf_msg_free removes it */
        if (sm_spool_create(&msg->sealed, set->spool_dir, msg->id) != 0) {
            snprintf(why, whylen, "cannot create spool file in %s: %s", set->spool_dir,
                     strerror(errno));
            goto leave;
        }
    }
    if (smf_seal_encrypt(set, qid, msg, fprs, n, ndom, in_fd, to_mem, why, whylen)
        != SMF_SEAL_OK)
        goto leave;
    if (to_mem && msg->size > set->inline_max && smf_seal_spill(set, msg, why, whylen) != 0)
        goto leave;
    if (msg->inline_body == NULL && smf_seal_commit_file(set, msg, why, whylen) != 0)
        goto leave;
    if (msg->spool_open)
        sm_spool_abort(&msg->spool);    /* the plaintext is not kept */
    msg->spool_open = 0;
    rc = SMF_SEAL_OK;
leave:
    if (in_fd >= 0)
        close(in_fd);
    free(fprs);
    return rc;
}
