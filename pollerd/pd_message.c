/* pd_message.c — one listed message, for one recipient, on a lane:
 *
 *   already in table received → queue the ack only (pd_ack.c), with the
 *   receipt kept there
 *   else fetch (GET /v1/message/<id>, streamed into its partial file,
 *   resumed with Range from what an earlier try left there) → verify (decrypt, check the sender domain's signature) →
 *   deliver to the local MTA by SMTP → INSERT received → queue the ack;
 *   or, when it does not verify (or the MTA refuses it for good),
 *   quarantine → INSERT received (quarantined) → queue the ack as
 *   rejected.
 *
 * Several lanes of one domain run at once (pd_dispatch.c hands out the
 * items), each with its own fetch or SMTP delivery: the MTA and the outbox
 * see `parallel` connections at most. Each delivery is recorded the moment
 * the MTA accepted it, before anything else happens on that lane, so that
 * a crash never makes it deliver again.
 *
 * The recipients of one message are listed one after the other and go to
 * one lane: the body is fetched and verified once, then delivered to each.
 * Every ack carries the receipt sealed in the body (docs/PROTOCOL.md
 * "Receipts"), a rejection too: so a message refused because its recipient
 * unsubscribed is fetched and opened all the same, for its receipt, and
 * never delivered.
 *
 * One log line per message outcome (pd_domain_outcome). A problem with one
 * message skips that message (retried next cycle); one that says the whole
 * outbox is in trouble ends the domain's cycle. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sm_log.h"
#include "pd.h"

/* A failed message: counted (by reason, for metrics_file), the domain marked. */
static void failed(pd_lane *l, pd_fail_reason reason)
{
    pd_metrics_failure(reason, 1);
    l->d->ctx->n_failed++;
    l->d->failed = 1;
    l->msg_failed = 1;
}

/* ---- starting transfers ----------------------------------------------- */

/* Start the fetch of the lane's item into its partial file, for the rest
 * of it when part of it is there already (Range, If-Range with the ETag
 * of the answer it came from): 0 started, 1 the whole body is there
 * already (l->fd), -1 failed (outcome logged). */
static int fetch(pd_lane *l)
{
    pd_domain *d = l->d;
    const char *spool = d->ctx->conf.spool_dir;
    sm_listing *it = pd_lane_item(l);
    char url[4096], hdr[PD_ETAG_MAX + 32];
    pd_partial p;
    pd_xfer *x;

    pd_lane_drop_file(l);
    if (pd_partial_open(spool, d->name, it->id, it->size, &p) != 0) {
        pd_domain_outcome(d, it, LOG_ERR, "failed: cannot open or create %s: %s; retry "
                          "next cycle", p.path[0] ? p.path : spool, strerror(errno));
        return -1;
    }
    l->fd = p.fd;
    if (p.restart_why)
        pd_domain_outcome(d, it, LOG_INFO, "fetching it whole: %lld octets of it were in "
                          "%s, but %s", p.had, p.path, p.restart_why);
    if (p.from > 0 && p.from == it->size) {
        sm_debug("%s %s: the whole body is in %s already", d->name, it->id, p.path);
        l->fd_resumed = 1;
        return 1;
    }
    snprintf(url, sizeof(url), "%s/v1/message/%s", d->url, it->id);
    if ((x = pd_xfer_new(d->ctx, d, l, PD_X_FETCH))) {
        x->fd = l->fd;
        x->expect = it->size;
        x->got = x->range_from = p.from;
    }
    if (!x || pd_xfer_http(x, url, NULL, PD_SMALL_BODY_MAX) != 0) {
        pd_xfer_free(x);
        goto fail;
    }
    if (p.from > 0) {
        snprintf(hdr, sizeof(hdr), "Range: bytes=%lld-", p.from);
        if (pd_xfer_header(x, hdr) != 0)
            goto fail_x;
        snprintf(hdr, sizeof(hdr), "If-Range: %s", p.etag);
        if (pd_xfer_header(x, hdr) != 0)
            goto fail_x;
        pd_domain_outcome(d, it, LOG_INFO, "resuming the fetch at octet %lld of %lld",
                          p.from, it->size);
        l->fd_resumed = 1;
    }
    if (pd_domain_start(d, x) != 0)
        goto fail;
    return 0;
fail_x:
    pd_xfer_free(x);
fail:
    pd_domain_outcome(d, it, LOG_ERR, "failed: cannot start the fetch; retry next cycle");
    pd_lane_drop_file(l);
    return -1;
}

/* The headers pollerd puts above the message: for a verified one the
 * Authentication-Results of docs/PROTOCOL.md (folded: addresses are up to
 * 320 octets), our one-click unsubscribe link (pd_unsub.c), then the
 * Received trace header. Any Authentication-Results in the message that
 * claims to be ours is left out, verified or not. */
static int start_deliver(pd_lane *l)
{
    pd_domain *d = l->d;
    sm_listing *it = pd_lane_item(l);
    const char *us = d->ctx->conf.domain;
    char prefix[4096], date[64], why[256];
    struct tm tm;
    time_t now = time(NULL);
    pd_xfer *x = NULL;
    sm_range *skips = NULL;
    size_t nskips = 0;
    int n = 0;

    if (pd_forged_results(l->fd, us, &skips, &nskips, why, sizeof(why)) != 0) {
        pd_domain_outcome(d, it, LOG_ERR, "failed: %s; retry next cycle", why);
        return -1;
    }
    if (nskips)
        pd_domain_outcome(d, it, LOG_WARNING, "%zu Authentication-Results header%s claiming "
                          "to be ours removed", nskips, nskips == 1 ? "" : "s");

    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    if (l->fd_verified)
        n = snprintf(prefix, sizeof(prefix),
                     "Authentication-Results: %s; stubmail=pass\r\n"
                     "\tsmtp.mailfrom=%s header.d=%s\r\n"
                     "\t(key %s)\r\n", us, it->from, d->name, l->fd_signer);
    if (pd_unsub_headers(&d->ctx->conf, it->to, it->from, prefix + n, sizeof(prefix) - (size_t)n,
                         why, sizeof(why)) != 0)
        pd_domain_outcome(d, it, LOG_WARNING, "%s", why);
    n += (int)strlen(prefix + n);
    snprintf(prefix + n, sizeof(prefix) - (size_t)n,
             "Received: from %s (stubmail outbox) by %s (stubmail-pollerd)\r\n"
             "\twith HTTP id %s for <%s>;\r\n"
             "\t%s\r\n", d->name, us, it->id, it->to, date);
    if (!(x = pd_xfer_new(d->ctx, d, l, PD_X_DELIVER))) {
        free(skips);
        goto fail;
    }
    /* from here on x owns skips */
    if (pd_xfer_smtp(x, it->from, it->to, prefix, l->fd, l->fd_size, skips, nskips) != 0) {
        pd_xfer_free(x);
        goto fail;
    }
    if (pd_domain_start(d, x) != 0)
        goto fail;
    return 0;
fail:
    pd_domain_outcome(d, it, LOG_ERR, "failed: cannot start the delivery; retry next cycle");
    return -1;
}

/* start_deliver, counting a failure to start as a failed message. */
static int deliver(pd_lane *l)
{
    if (start_deliver(l) == 0)
        return 0;
    failed(l, PD_FAIL_DELIVERY);
    return -1;
}

/* ---- rejecting -------------------------------------------------------- */

/* Queue the ack of the lane's item with the body's receipt; what says
 * what happened to it. */
static void queue_ack(pd_lane *l, const char *receipt, const char *what, int earlier)
{
    sm_listing *it = pd_lane_item(l);

    if (pd_ack_queue(l->d, it->id, it->to, it->from, l->item_reason, receipt, what, earlier)
        != 0)
        l->d->failed = 1;
}

/* Never deliver it to this recipient: keep the body in quarantine_dir,
 * record it, then queue its ack as rejected so that the sender's ISP and
 * the sender see it. The item is finished either way (outcome logged). */
static void reject_recipient(pd_lane *l, const char *reason, const char *detail)
{
    pd_domain *d = l->d;
    pd_ctx *ctx = d->ctx;
    sm_listing *it = pd_lane_item(l);
    char why[512], what[SM_ACK_REASON_MAX + 40];

    snprintf(l->item_reason, sizeof(l->item_reason), "%s", reason);
    if (pd_quarantine(ctx, d->name, it->id, l->fd, why, sizeof(why)) != 0) {
        pd_domain_outcome(d, it, LOG_ERR, "failed: not delivered (%s: %s) and cannot be "
                          "quarantined: %s; retry next cycle", reason, detail, why);
        failed(l, PD_FAIL_QUARANTINE);
        return;
    }
    if (pd_db_record(ctx, d->name, it->id, it->to, it->from, 0, reason, l->fd_receipt) != 0) {
        pd_domain_outcome(d, it, LOG_ERR, "failed: quarantined (%s: %s) but not recorded in "
                          "the database; retry next cycle", reason, detail);
        failed(l, PD_FAIL_DATABASE);
        return;
    }
    ctx->n_quarantined++;
    pd_metrics_rejected();
    pd_domain_outcome(d, it, LOG_WARNING, "quarantined as %s/%s-%s, not delivered: %s (%s)",
                      ctx->conf.quarantine_dir, d->name, it->id, reason, detail);
    snprintf(what, sizeof(what), "quarantined (%s), rejected", reason);
    queue_ack(l, l->fd_receipt, what, 0);
}

/* The body itself is bad (it does not verify): every recipient of it is
 * rejected for the same reason. */
static void reject(pd_lane *l, const char *reason, const char *detail)
{
    if (reason != l->fd_reject)
        snprintf(l->fd_reject, sizeof(l->fd_reject), "%s", reason);
    reject_recipient(l, reason, detail);
}

/* ---- one listed message ----------------------------------------------- */

static pd_next fetched(pd_lane *l, int openpgp);

/* Was (from, to) asked for in the current chunk? The outbox may list only
 * what we polled for: the exact address (1) or a sender pattern "*@domain"
 * (2); 0 if neither. */
static int pair_polled(pd_domain *d, const sm_listing *it)
{
    sm_pair key;
    const sm_pair *base = d->pairs + d->chunk;

    snprintf(key.to, sizeof(key.to), "%s", it->to);
    snprintf(key.from, sizeof(key.from), "%s", it->from);
    if (bsearch(&key, base, d->chunk_len, sizeof(*base), pd_pair_cmp))
        return 1;
    snprintf(key.from, sizeof(key.from), "*@%s", sm_addr_domain(it->from));
    return bsearch(&key, base, d->chunk_len, sizeof(*base), pd_pair_cmp) ? 2 : 0;
}

/* The refusal of a sender the recipient unsubscribed from: the ack
 * rejects it with the body's receipt, which the body had to be opened for. */
static void refuse_opened(pd_lane *l)
{
    snprintf(l->item_reason, sizeof(l->item_reason), "unsubscribed");
    queue_ack(l, l->fd_receipt, "refused undelivered: the recipient unsubscribed from this "
              "sender, rejected", 0);
}

/* A sender the recipient unsubscribed from, still covered by a *@domain
 * entry of theirs: never delivered, and the sender's ISP is told so. An
 * exact entry was taken out of the address book by the unsubscribe, so
 * only a pattern can bring such a pair here. The refusal needs the body's
 * receipt: refused at once when the lane holds the opened body, else
 * l->blocked and the body is fetched and opened first. 1 refused, 0 go on,
 * -1 the database did not say (retry next cycle). */
static int refuse_blocked(pd_lane *l)
{
    pd_domain *d = l->d;
    sm_listing *it = pd_lane_item(l);
    int r = pd_db_blocked(d->ctx, d->name, it->id, it->to, it->from);

    if (r <= 0)
        return r;
    if (l->fd >= 0 && !strcmp(l->fd_id, it->id) && l->fd_verified) {
        refuse_opened(l);
        return 1;
    }
    l->blocked = 1;
    return 0;
}

int pd_message_begin(pd_lane *l)
{
    pd_domain *d = l->d;
    pd_ctx *ctx = d->ctx;
    sm_listing *it = pd_lane_item(l);
    char receipt[SM_RECEIPT_LEN + 1];
    int r, polled;

    l->delivered_reply[0] = '\0';
    l->item_reason[0] = '\0';
    l->blocked = 0;
    if (!(polled = pair_polled(d, it))) {
        pd_domain_outcome(d, it, LOG_ERR, "refused: the outbox listed a pair we did not poll "
                          "for");
        failed(l, PD_FAIL_PROTOCOL);
        return -1;
    }
    r = pd_db_received(ctx, d->name, it->id, it->to, l->item_reason, receipt);
    if (r < 0) {
        pd_domain_outcome(d, it, LOG_WARNING, "failed: cannot check table received; retry "
                          "next cycle");
        failed(l, PD_FAIL_DATABASE);
        return -1;
    }
    if (r > 0) {
        char what[SM_ACK_REASON_MAX + 40];

        /* delivered or quarantined before: never again, only (re-)ack; but
         * a rejection without a receipt was refused for good (given up in
         * pd_ack.c): the outbox lists it until it expires */
        if (r == 2 && l->item_reason[0] && !receipt[0]) {
            sm_debug("%s %s: to=<%s>: quarantined earlier (%s), no receipt to reject it "
                     "with: left to expire at the sender", d->name, it->id, it->to,
                     l->item_reason);
            return -1;
        }
        if (l->item_reason[0])
            snprintf(what, sizeof(what), "quarantined earlier (%s), rejected",
                     l->item_reason);
        else
            snprintf(what, sizeof(what), "delivered earlier");
        queue_ack(l, receipt, what, 0);
        return -1;
    }
    if (polled == 2 && (r = refuse_blocked(l)) != 0) {
        if (r < 0) {
            pd_domain_outcome(d, it, LOG_WARNING, "failed: cannot check table address_block; "
                              "retry next cycle");
            failed(l, PD_FAIL_DATABASE);
        }
        return -1;
    }
    if (l->fd >= 0 && !strcmp(l->fd_id, it->id) && l->fd_reject[0]) {
        reject(l, l->fd_reject, "as for the recipient before");
        return -1;
    }
    if (ctx->mta_down) {
        pd_domain_outcome(d, it, LOG_WARNING, "failed: the MTA is unreachable this cycle; "
                          "retry next cycle");
        failed(l, PD_FAIL_DELIVERY);
        return -1;
    }
    if (l->fd >= 0 && !strcmp(l->fd_id, it->id))
        return deliver(l);            /* same message, another recipient */
    switch (fetch(l)) {
    case 0:
        return 0;
    case 1:                             /* fetched before: go on from there */
        return fetched(l, 1) == PD_NEXT_WAIT ? 0 : -1;
    default:
        failed(l, PD_FAIL_FETCH);
        return -1;
    }
}


/* The sender domain's key in the seal: checked from memory, else fetched
 * into the keyring (and the seal told to load it again). While the sender
 * rotates (its record names an fpr-alt) and has switched already, GET
 * v1/key serves the other key than the record we hold names: then GET
 * v1/key/{fpr}. 0, or -1 with why. */
static int pd_message_signer_key(pd_ctx *ctx, pd_domain *d, char *why, size_t whylen)
{
    int rc;

    if (sm_seal_key_check(ctx->seal, d->fpr, NULL, why, whylen) == SM_PGP_OK)
        return 0;
    rc = sm_keyfetch(ctx->conf.gnupg_home, d->url, d->fpr, &ctx->conf.https, why, whylen);
    if (rc == -1 && d->fpr_alt[0])
        rc = sm_keyfetch_by_fpr(ctx->conf.gnupg_home, d->url, d->fpr, &ctx->conf.https, why,
                                whylen);
    if (rc != 0)
        return -1;
    sm_seal_forget(ctx->seal, d->fpr);
    return 0;
}

/* The sender's other key of a rotation, its record's fpr-alt, in the seal:
 * checked from memory, else fetched from GET v1/key/{fpr} (the sender
 * switched keys before we ever held the old one, or we never held the new
 * one). Blocking like pd_message_signer_key, and as rare: once per key.
 * 0; -1 with why if the outbox does not give it (one without the endpoint
 * answers 404: then we verify with what we hold); -2 with why for trouble
 * worth a retry (network, 5xx, gpg). */
static int pd_message_alt_key(pd_ctx *ctx, pd_domain *d, char *why, size_t whylen)
{
    int rc;

    if (sm_seal_key_check(ctx->seal, d->fpr_alt, NULL, why, whylen) == SM_PGP_OK)
        return 0;
    if ((rc = sm_keyfetch_by_fpr(ctx->conf.gnupg_home, d->url, d->fpr_alt, &ctx->conf.https,
                                 why, whylen)) != 0)
        return rc;
    sm_seal_forget(ctx->seal, d->fpr_alt);
    sm_info("domain %s: fetched its other key %s (fpr-alt) from GET v1/key/{fpr}", d->name,
            d->fpr_alt);
    return 0;
}

/* The body of the lane's item is complete in l->fd: verify it where it
 * must be, then deliver or quarantine it. */
static pd_next fetched(pd_lane *l, int openpgp)
{
    pd_domain *d = l->d;
    pd_ctx *ctx = d->ctx;
    sm_listing *it = pd_lane_item(l);
    char reason[SM_ACK_REASON_MAX + 1], detail[512], alt_why[SM_PGP_WHY_MAX];
    int r;

    snprintf(l->fd_id, sizeof(l->fd_id), "%s", it->id);
    l->fd_size = it->size;
    if (!openpgp) {
        reject(l, "unsigned", "a plain message, but we take only signed and encrypted ones");
        return PD_NEXT_ITEM;
    }
    /* the key stays in the keyring and in the seal: a fetch only the first
     * time, and a gpg process only when the seal lacks the key */
    if (!d->key_ok && pd_message_signer_key(ctx, d, detail, sizeof(detail)) != 0) {
        pd_domain_outcome(d, it, LOG_ERR, "failed: no domain key %s of %s to verify with: "
                          "%s; retry next cycle", d->fpr, d->name, detail);
        failed(l, PD_FAIL_VERIFY);
        pd_lane_drop_file(l);
        return PD_NEXT_GIVE_UP;
    }
    d->key_ok = 1;
    r = pd_verify(ctx, d->fpr, &l->fd, &l->fd_size, reason, l->fd_receipt, detail,
                  sizeof(detail));
    l->fd_signer = d->fpr;
    /* The sender rotates its key (docs/PROTOCOL.md "Key rotation"): what it
     * signed with the other one may still wait. */
    if (r == SM_PGP_REJECT && !strcmp(reason, "wrong signer") && d->fpr_alt[0]) {
        int alt = pd_message_alt_key(ctx, d, alt_why, sizeof(alt_why));

        if (alt == -2) {
            pd_domain_outcome(d, it, LOG_ERR, "failed: not signed by %s, and its fpr-alt key "
                              "%s cannot be fetched now: %s; retry next cycle", d->fpr,
                              d->fpr_alt, alt_why);
            failed(l, PD_FAIL_VERIFY);
            pd_lane_drop_file(l);
            return PD_NEXT_ITEM;
        }
        if (alt == 0) {
            r = pd_verify(ctx, d->fpr_alt, &l->fd, &l->fd_size, reason, l->fd_receipt, detail,
                          sizeof(detail));
            l->fd_signer = d->fpr_alt;
        } else {
            pd_domain_outcome(d, it, LOG_INFO, "not signed by %s, and the outbox does not "
                              "give its fpr-alt key %s (%s)", d->fpr, d->fpr_alt, alt_why);
        }
    }
    if (r == SM_PGP_OK) {
        l->fd_verified = 1;
        if (l->blocked) {
            refuse_opened(l);
            return PD_NEXT_ITEM;
        }
        return deliver(l) == 0 ? PD_NEXT_WAIT : PD_NEXT_ITEM;
    }
    if (r == SM_PGP_REJECT && l->fd_resumed) {
        /* its pieces may not belong together (a crash of this machine can
         * leave a partial file with holes): judge only a body fetched whole */
        pd_domain_outcome(d, it, LOG_WARNING, "failed: the body put together from more than "
                          "one fetch does not verify (%s: %s); fetching it whole next cycle",
                          reason, detail);
        pd_partial_remove(ctx->conf.spool_dir, d->name, it->id);
        failed(l, PD_FAIL_FETCH);
        pd_lane_drop_file(l);
        return PD_NEXT_ITEM;
    }
    if (r == SM_PGP_REJECT) {
        reject(l, reason, detail);
        return PD_NEXT_ITEM;
    }
    pd_domain_outcome(d, it, LOG_ERR, "failed: cannot verify it here: %s; retry next cycle",
                      detail);
    failed(l, PD_FAIL_VERIFY);
    pd_lane_drop_file(l);
    return PD_NEXT_ITEM;
}

/* The rest of a body the outbox would not give as a range (416): the
 * partial file goes, and the whole body is asked for at once. */
static pd_next fetch_whole(pd_lane *l, const pd_xfer *x)
{
    pd_domain *d = l->d;
    sm_listing *it = pd_lane_item(l);

    pd_domain_outcome(d, it, LOG_INFO, "the outbox answers 416 to octets %lld-: fetching it "
                      "whole", x->range_from);
    pd_lane_drop_file(l);
    pd_partial_remove(d->ctx->conf.spool_dir, d->name, it->id);
    if (fetch(l) == 0)
        return PD_NEXT_WAIT;
    failed(l, PD_FAIL_FETCH);
    return PD_NEXT_ITEM;
}

pd_next pd_message_fetch_done(pd_lane *l, pd_xfer *x)
{
    pd_domain *d = l->d;
    const char *spool = d->ctx->conf.spool_dir;
    sm_listing *it = pd_lane_item(l);
    curl_off_t cl = -1;
    char why[512];

    if (x->result == CURLE_OK && (x->status == 200 || (x->status == 206 && x->range_from))) {
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        if (cl == (curl_off_t)(it->size - x->range_from) && x->got == it->size) {
            if (x->restarted)
                pd_domain_outcome(d, it, LOG_INFO, "the outbox sent the whole body instead "
                                  "of the rest: fetched whole");
            l->fd_resumed = x->range_from > 0;
            pd_metrics_fetched(it->size);
            return fetched(l, x->openpgp);
        }
        /* for pd_xfer_describe, and not a domain-wide failure */
        x->content_length = (long long)cl;
        x->length_mismatch = 1;
    }
    if (x->result == CURLE_OK && x->status == 416 && x->range_from)
        return fetch_whole(l, x);
    pd_xfer_describe(x, why, sizeof(why));
    if (x->length_mismatch || (x->result == CURLE_OK && x->status == 404)) {
        /* not the body listed, or no body any more: nothing to resume */
        pd_partial_remove(spool, d->name, it->id);
        pd_domain_outcome(d, it, LOG_WARNING, "failed: fetch: %s; retry next cycle", why);
    } else if (x->got > 0) {
        pd_domain_outcome(d, it, LOG_WARNING, "failed: fetch: %s; %lld of %lld octets kept, "
                          "retry next cycle from there", why, x->got, it->size);
    } else {
        pd_domain_outcome(d, it, LOG_WARNING, "failed: fetch: %s; retry next cycle", why);
    }
    failed(l, PD_FAIL_FETCH);
    pd_lane_drop_file(l);
    return pd_xfer_domain_wide(x) ? PD_NEXT_GIVE_UP : PD_NEXT_ITEM;
}

/* Delivered: record it at once, then queue its ack. */
static pd_next delivered(pd_lane *l, const pd_xfer *x)
{
    pd_domain *d = l->d;
    pd_ctx *ctx = d->ctx;
    sm_listing *it = pd_lane_item(l);
    char what[300];

    snprintf(l->delivered_reply, sizeof(l->delivered_reply), "%s",
             x->reply[0] ? x->reply : "250");
    ctx->n_delivered++;
    pd_metrics_delivered(d->name, it->time);
    /* recorded (with the others that finished in this turn of the event
     * loop, one commit) before its ack goes out: after a crash it is acked,
     * never delivered again */
    if (pd_unrecorded_add(ctx, d->name, it->id, it->to, it->from, l->fd_receipt) != 0
        && pd_db_record(ctx, d->name, it->id, it->to, it->from, 0, NULL, l->fd_receipt) != 0)
        sm_err("%s %s: to=<%s>: delivered but neither recorded nor remembered; "
               "acking now", d->name, it->id, it->to);
    snprintf(what, sizeof(what), "delivered (%s)", l->delivered_reply);
    queue_ack(l, l->fd_receipt, what, 0);
    return PD_NEXT_ITEM;
}

pd_next pd_message_deliver_done(pd_lane *l, const pd_xfer *x)
{
    pd_domain *d = l->d;
    pd_ctx *ctx = d->ctx;
    sm_listing *it = pd_lane_item(l);
    char why[512];

    if (x->result == CURLE_OK)
        return delivered(l, x);
    pd_xfer_describe(x, why, sizeof(why));
    if (x->status >= 500 && x->status < 600) {
        /* Retrying cannot change a permanent refusal: tell the sender's ISP
         * as for a message that does not verify, for this recipient only. */
        char reason[SM_ACK_REASON_MAX + 1];

        /* a long reply is cut to what the ack can carry */
        if (snprintf(reason, sizeof(reason), "refused by %s: %s", ctx->conf.domain,
                     x->reply) < 0)
            snprintf(reason, sizeof(reason), "refused by %s", ctx->conf.domain);
        reject_recipient(l, reason, why);
        return PD_NEXT_ITEM;
    }
    failed(l, x->status >= 400 && x->status < 500 ? PD_FAIL_DEFERRED : PD_FAIL_DELIVERY);
    if (x->status >= 400 && x->status < 500) {
        pd_domain_outcome(d, it, LOG_WARNING, "deferred: %s; retry next cycle", why);
    } else {
        pd_domain_outcome(d, it, LOG_WARNING, "failed: delivery: %s; retry next cycle", why);
        if (x->result == CURLE_COULDNT_CONNECT || x->result == CURLE_COULDNT_RESOLVE_HOST
            || x->result == CURLE_OPERATION_TIMEDOUT) {
            if (!ctx->mta_down)
                sm_err("MTA %s unreachable: no more deliveries this cycle",
                       ctx->conf.deliver_to);
            ctx->mta_down = 1;
        }
    }
    return PD_NEXT_ITEM;
}

void pd_message_interrupted(pd_lane *l)
{
    if (l->x && l->x->kind == PD_X_FETCH && l->idx < l->end)
        pd_domain_outcome(l->d, pd_lane_item(l), LOG_INFO, "fetch interrupted by the stop "
                          "at octet %lld; resumed from there at next start", l->x->got);
}

void pd_message_done(pd_lane *l)
{
    pd_domain *d = l->d;

    /* a failed recipient is retried next cycle from what was fetched */
    if (!l->msg_failed)
        pd_partial_remove(d->ctx->conf.spool_dir, d->name, pd_lane_item(l)->id);
    l->msg_failed = 0;
}
