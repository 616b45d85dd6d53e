/* pd_ack.c — telling the outbox we have a message (POST
 * /v1/message/<id>/ack, docs/PROTOCOL.md "Ack"): delivered, or rejected
 * with the reason it was quarantined. An ack comes only after the delivery
 * (or quarantine) is recorded in table received, so a crash in between
 * acks at the next cycle and never delivers twice; what an earlier run
 * could not ack (d->old) is acked first thing in a cycle. An ack that
 * succeeds (or finds the message gone: 404 not_found) sets acked_at. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "pd.h"

int pd_ack_start(pd_domain *d)
{
    const char *id, *to, *reason;
    char url[4096];
    char *body = NULL;
    pd_xfer *x = NULL;
    int rc = -1;

    if (pd_login_due(d))
        return pd_login_start(d, PD_X_ACK);
    if (d->state == PD_D_OLD_ACKS) {
        id = d->old[d->old_idx].id;
        to = d->old[d->old_idx].to;
        reason = d->old[d->old_idx].reason;
    } else {
        id = pd_domain_item(d)->id;
        to = pd_domain_item(d)->to;
        reason = d->item_reason;
    }
    snprintf(url, sizeof(url), "%s/v1/message/%s/ack", d->url, id);
    if (!(body = sm_ack_request_encode(to, reason[0] ? reason : NULL))
        || !(x = pd_xfer_new(d->ctx, d, PD_X_ACK))
        || pd_xfer_http(x, url, body, PD_SMALL_BODY_MAX) != 0) {
        sm_err("%s %s: to=<%s>: cannot start the ack (out of memory?)", d->name, id, to);
        pd_xfer_free(x);
        goto leave;
    }
    snprintf(x->ack_id, sizeof(x->ack_id), "%s", id);
    snprintf(x->ack_to, sizeof(x->ack_to), "%s", to);
    rc = pd_domain_start(d, x);
leave:
    free(body);
    return rc;
}

/* What happened to the acked message before, for the outcome line: from,
 * to and "delivered (250 ...)", "quarantined (reason), rejected", ... */
static void acked_what(pd_domain *d, const char **from, const char **to, char *what,
                       size_t whatlen)
{
    const char *reason;

    if (d->state == PD_D_OLD_ACKS) {
        pd_old *o = &d->old[d->old_idx];
        *from = o->from;
        *to = o->to;
        reason = o->reason;
        snprintf(what, whatlen, "%s earlier%s%s%s", reason[0] ? "quarantined" : "delivered",
                 reason[0] ? " (" : "", reason, reason[0] ? ")" : "");
    } else {
        int earlier = !strcmp(d->delivered_reply, "earlier");
        *from = pd_domain_item(d)->from;
        *to = pd_domain_item(d)->to;
        reason = d->item_reason;
        if (reason[0])
            snprintf(what, whatlen, "quarantined%s (%s), rejected", earlier ? " earlier" : "",
                     reason);
        else if (earlier)
            snprintf(what, whatlen, "delivered earlier");
        else
            snprintf(what, whatlen, "delivered (%s)", d->delivered_reply);
    }
}

pd_next pd_ack_done(pd_domain *d, const pd_xfer *x)
{
    pd_ctx *ctx = d->ctx;
    int ok = x->result == CURLE_OK && x->status == 200;
    int gone = x->result == CURLE_OK && x->status == 404
               && !strcmp(pd_xfer_error_code(x), "not_found");
    int wide = !ok && !gone && pd_xfer_domain_wide(x);
    char why[512] = "", what[SM_ACK_REASON_MAX + 300];
    const char *from, *to;

    if (!ok)
        pd_xfer_describe(x, why, sizeof(why));
    if (ok || gone) {
        /* not_found: the outbox no longer has that recipient (expired or
         * purged); there is nothing left to ack, ever */
        if (pd_db_acked(ctx, d->name, x->ack_id, x->ack_to) != 0)
            sm_warn("%s %s: to=<%s>: acked, but the database did not take it: "
                    "acked again next cycle", d->name, x->ack_id, x->ack_to);
    }
    acked_what(d, &from, &to, what, sizeof(what));
    if (ok) {
        ctx->n_acked++;
        sm_info("%s %s: from=<%s> to=<%s>: %s, acked", d->name, x->ack_id, from, to, what);
    } else if (gone) {
        sm_warn("%s %s: from=<%s> to=<%s>: %s, but the ack says %s: given up", d->name,
                x->ack_id, from, to, what, why);
    } else {
        ctx->n_failed++;
        d->failed = 1;
        sm_warn("%s %s: from=<%s> to=<%s>: %s, ack failed: %s; ack next cycle", d->name,
                x->ack_id, from, to, what, why);
    }
    if (d->state == PD_D_OLD_ACKS)
        d->old_idx++;
    else if (ok || gone)
        d->progress++;
    if (wide)
        return PD_NEXT_GIVE_UP;
    return d->state == PD_D_OLD_ACKS ? PD_NEXT_STEP : PD_NEXT_ITEM;
}
