/* pd_ack.c — telling the outbox we have its messages (docs/PROTOCOL.md
 * "Ack"): delivered, or rejected with the reason it was quarantined.
 *
 * A message's ack is queued once its delivery (or quarantine) is recorded
 * in table received, and the queue goes out in batches: POST /v1/ack with
 * up to PD_ACK_BATCH acks, one request and one commit on the outbox for
 * them all; an outbox without batches (404 no_such_endpoint) gets POST
 * /v1/message/<id>/ack, one at a time. Because the record comes first, a
 * crash or a failed ack loses no ack: table received still has them
 * unacked, and the next cycle queues them first thing (d->old). An ack
 * that succeeds (or finds the message gone: not_found) sets acked_at,
 * for the whole batch in one statement.
 *
 * Each ack carries the receipt found in the body (docs/PROTOCOL.md
 * "Receipts"), kept in table received with the delivery. An ack the outbox
 * refuses for its receipt (bad_receipt: none, for a body we could not
 * open, or not the message's) can never succeed: it is given up like a
 * not_found one, and the message stays at the sender's until it expires. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "pd.h"

/* Acks per POST /v1/ack: the outbox commits them at once, and a cycle of
 * many messages sends few requests. */
#define PD_ACK_BATCH 100

int pd_ack_queue(pd_domain *d, const char *id, const char *to, const char *from,
                 const char *reason, const char *receipt, const char *what, int earlier)
{
    pd_ack *a;

    if (d->nacks == d->acks_cap) {
        size_t cap = d->acks_cap ? d->acks_cap * 2 : 64;
        if (!(a = realloc(d->acks, cap * sizeof(*a)))) {
            sm_err("%s %s: from=<%s> to=<%s>: %s, but out of memory for its ack: acked "
                   "next cycle", d->name, id, from, to, what);
            return -1;
        }
        d->acks = a;
        d->acks_cap = cap;
    }
    a = &d->acks[d->nacks++];
    memset(a, 0, sizeof(*a));
    snprintf(a->item.id, sizeof(a->item.id), "%s", id);
    snprintf(a->item.ack.to, sizeof(a->item.ack.to), "%s", to);
    snprintf(a->item.ack.receipt, sizeof(a->item.ack.receipt), "%s", receipt);
    if (reason && reason[0]) {
        a->item.ack.rejected = 1;
        snprintf(a->item.ack.reason, sizeof(a->item.ack.reason), "%s", reason);
    }
    snprintf(a->from, sizeof(a->from), "%s", from);
    snprintf(a->what, sizeof(a->what), "%s", what);
    a->earlier = earlier;
    return 0;
}

void pd_ack_queue_old(pd_domain *d)
{
    char what[SM_ACK_REASON_MAX + 40];
    size_t i;

    for (i = 0; i < d->nold; i++) {
        const pd_old *o = &d->old[i];
        snprintf(what, sizeof(what), "%s earlier%s%s%s",
                 o->reason[0] ? "quarantined" : "delivered", o->reason[0] ? " (" : "",
                 o->reason, o->reason[0] ? ")" : "");
        if (pd_ack_queue(d, o->id, o->to, o->from, o->reason, o->receipt, what, 1) != 0) {
            d->failed = 1;
            return;
        }
    }
}

int pd_ack_due(const pd_domain *d, int all)
{
    return d->nacks >= (all ? 1 : (d->sess && d->sess->single_acks ? 1 : PD_ACK_BATCH));
}

/* The first n queued acks are done with (sent, or given up). */
static void unqueue(pd_domain *d, size_t n)
{
    memmove(d->acks, d->acks + n, (d->nacks - n) * sizeof(*d->acks));
    d->nacks -= n;
}

/* The body of POST /v1/ack for the first n queued acks; NULL on ENOMEM. */
static char *encode_batch(const pd_domain *d, size_t n)
{
    sm_ack_item *items = malloc(n * sizeof(*items));
    char *body;
    size_t i;

    if (!items)
        return NULL;
    for (i = 0; i < n; i++)
        items[i] = d->acks[i].item;
    body = sm_acks_request_encode(items, n);
    free(items);
    return body;
}

int pd_ack_start(pd_domain *d)
{
    const sm_ack_item *first = &d->acks[0].item;
    size_t n = d->nacks < PD_ACK_BATCH ? d->nacks : PD_ACK_BATCH;
    char url[4096];
    char *body = NULL;
    pd_xfer *x = NULL;
    int rc = -1;

    if (pd_login_due(d))
        return pd_login_start(d, PD_X_ACK);
    /* what is acked must be recorded first (if the database refuses, it
     * stays in memory: acked all the same, so it is not listed again) */
    if (d->ctx->unrecorded && !d->ctx->unrecorded->late)
        pd_db_flush_unrecorded(d->ctx);
    if (d->sess->single_acks) {
        n = 1;
        snprintf(url, sizeof(url), "%s/v1/message/%s/ack", d->url, first->id);
        body = sm_ack_request_encode(first->ack.to,
                                     first->ack.rejected ? first->ack.reason : NULL,
                                     first->ack.receipt);
    } else {
        snprintf(url, sizeof(url), "%s/v1/ack", d->url);
        body = encode_batch(d, n);
    }
    if (!body || !(x = pd_xfer_new(d->ctx, d, NULL, PD_X_ACK))
        || pd_xfer_http(x, url, body, PD_SMALL_BODY_MAX) != 0) {
        sm_err("%s: cannot start the ack of %zu message%s (out of memory?)", d->name, n,
               n == 1 ? "" : "s");
        pd_xfer_free(x);
        goto leave;
    }
    x->nacks = n;
    rc = pd_domain_start(d, x);
leave:
    free(body);
    return rc;
}

/* The answer says, for each of the n acks sent, whether it is acked (1),
 * the outbox no longer has it (0) or refuses it for its receipt (-1). 0,
 * or -1 with why. */
static int answers(pd_domain *d, const pd_xfer *x, int *acked, char *why, size_t whylen)
{
    sm_parse_error perr;
    sm_ack_item *items;
    size_t i;
    int rc;

    if (d->sess->single_acks) {
        acked[0] = x->status == 200 ? 1 : x->status == 403 ? -1 : 0;
        return 0;
    }
    if (!(items = malloc(x->nacks * sizeof(*items)))) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    for (i = 0; i < x->nacks; i++)
        items[i] = d->acks[i].item;
    memset(&perr, 0, sizeof(perr));
    rc = sm_acks_response_parse(x->body.data ? x->body.data : "", x->body.len, items,
                                x->nacks, acked, &perr);
    free(items);
    if (rc != 0)
        snprintf(why, whylen, "answer refused: %s", perr.message);
    return rc;
}

pd_next pd_ack_done(pd_domain *d, const pd_xfer *x)
{
    pd_ctx *ctx = d->ctx;
    size_t i, n = x->nacks;
    int ok = x->result == CURLE_OK && x->status == 200;
    /* not_found: the outbox no longer has that recipient (expired or
     * purged); bad_receipt: it will never take this ack. Either way there
     * is nothing left to send, ever. */
    int gone = x->result == CURLE_OK
               && ((x->status == 404 && !strcmp(pd_xfer_error_code(x), "not_found"))
                   || (x->status == 403 && !strcmp(pd_xfer_error_code(x), "bad_receipt")));
    int *acked = NULL;
    char why[512] = "";

    /* POST /v1/ack answers 404 only where it does not exist (an older
     * outbox, or a front end that does not pass it on) */
    if (x->result == CURLE_OK && x->status == 404 && !d->sess->single_acks) {
        sm_info("%s: the outbox takes no acks in batches: one request per ack", d->name);
        d->sess->single_acks = 1;
        return PD_NEXT_STEP;    /* the same acks again, one by one */
    }
    if (!(acked = calloc(n, sizeof(*acked)))) {
        ok = gone = 0;
        snprintf(why, sizeof(why), "out of memory");
    } else if (!ok && !gone) {
        pd_xfer_describe(x, why, sizeof(why));
    } else if (answers(d, x, acked, why, sizeof(why)) != 0) {
        ok = gone = 0;
    }
    if (ok || gone) {
        if (pd_db_acked(ctx, d->name, d->acks, n) != 0)
            sm_warn("%s: %zu ack%s sent, but the database did not take them: acked "
                    "again next cycle", d->name, n, n == 1 ? "" : "s");
        for (i = 0; i < n; i++) {
            const pd_ack *a = &d->acks[i];
            if (acked[i] > 0) {
                ctx->n_acked++;
                if (!a->earlier)
                    d->progress++;
                sm_info("%s %s: from=<%s> to=<%s>: %s, acked", d->name, a->item.id, a->from,
                        a->item.ack.to, a->what);
            } else if (acked[i] < 0) {
                if (!a->earlier)
                    d->progress++;
                sm_warn("%s %s: from=<%s> to=<%s>: %s, but the outbox refuses the ack for "
                        "its receipt (%s): given up, the message stays there until it "
                        "expires", d->name, a->item.id, a->from, a->item.ack.to, a->what,
                        a->item.ack.receipt[0] ? "not this message's" : "none found in the "
                        "body");
            } else {
                if (!a->earlier)
                    d->progress++;
                sm_warn("%s %s: from=<%s> to=<%s>: %s, but the ack says HTTP 404 not_found: "
                        "given up", d->name, a->item.id, a->from, a->item.ack.to, a->what);
            }
        }
    } else {
        ctx->n_failed += (unsigned)n;
        pd_metrics_failure(PD_FAIL_ACK, (unsigned)n);
        d->failed = 1;
        for (i = 0; i < n; i++)
            sm_warn("%s %s: from=<%s> to=<%s>: %s, ack failed: %s; ack next cycle", d->name,
                    d->acks[i].item.id, d->acks[i].from, d->acks[i].item.ack.to,
                    d->acks[i].what, why);
    }
    free(acked);
    unqueue(d, n);
    if (!ok && !gone && pd_xfer_domain_wide(x))
        return PD_NEXT_GIVE_UP;
    return PD_NEXT_STEP;
}

void pd_ack_drop_queue(pd_domain *d, const char *why)
{
    size_t i;

    for (i = 0; i < d->nacks; i++)
        sm_info("%s %s: from=<%s> to=<%s>: %s, %s", d->name, d->acks[i].item.id,
                d->acks[i].from, d->acks[i].item.ack.to, d->acks[i].what, why);
    d->nacks = 0;
}
