/* pd_dispatch.c — the work of one cycle for one remote domain: a small
 * state machine with one request of its own to the outbox at a time, and
 * in the ITEMS state up to `parallel` lanes working on listed messages.
 *
 * First, in pd_dispatch_begin: the advisory lock, then where the outbox is
 * and which key signs its mail (pd_domain_discover: peer row, else DNS),
 * then a bearer token (pd_login.c) unless the one kept from an earlier
 * cycle is still good. Then step() goes through the states:
 *
 *   OLD_ACKS  ack what an earlier run delivered (or quarantined) but could
 *             not ack (pd_ack.c: queued, sent in batches)
 *   SUBSCRIBE bring the outbox's subscription in step with the address
 *             book (pd_subscription.c)
 *   POLL      ask what is waiting (pd_poll.c): UDP first, then GET
 *             /v1/poll; POST /v1/poll for an outbox without subscriptions
 *   ITEMS     the listed messages, handed out to the lanes a message (all
 *             its recipients) at a time: fetch → verify → deliver →
 *             record → queue the ack (pd_message.c); a full batch of acks
 *             goes out while the lanes work (pd_ack.c), the rest once all
 *             is finished; then poll the same chunk again if the answer
 *             said "more" and something was acked, else go on with the
 *             next chunk
 *   DONE
 *
 * The dispatcher owns the transfers: pd_dispatch_done() hands a finished
 * one to the step that started it, frees it, then does what the step
 * answered (pd_next). The steps never call back into this file. The lanes
 * run beside the domain's own request (an ack batch, a login); when a token
 * must be renewed (or a lane's fetch says it is bad), no lane takes a new
 * message until the lanes are idle and the login is done.
 *
 * Around any request: 429 waits for Retry-After and sends it again (a long
 * wait moves the domain to a later cycle); a 401 that says the token is bad
 * or expired logs in again once and sends it again.
 *
 * A transport error, another 401 or a 5xx from the outbox ends the domain's
 * work for this cycle (retried next cycle); a problem with one message
 * skips that message. On a stop (SIGTERM) deliveries under way run to
 * their end and are recorded; what is queued to be acked is acked at the
 * next start. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <string.h>

#include "sm_log.h"
#include "pd.h"

#define PD_WAIT_MAX 60          /* seconds of Retry-After waited within a cycle */
#define PD_WAITS_MAX 20         /* 429s of one domain in one cycle */

/* ---- the end of a domain's cycle -------------------------------------- */

/* The domain's cycle ends (done, failed, or a stop): what runs is cut
 * short, but a delivery under way runs to its end and is recorded (one cut
 * off after the MTA took it would be delivered again): until the last one
 * is over, the domain is `ending` and starts nothing new. */
static void finish(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    int i;

    if (d->state == PD_D_DONE)
        return;
    pd_xfer_free(d->x);
    d->x = NULL;
    d->wake_ms = 0;
    for (i = 0; i < PD_LANES_MAX; i++) {
        pd_lane *l = &d->lanes[i];
        if (!l->x || l->x->kind == PD_X_DELIVER)
            continue;
        if (ctx->stopping)
            pd_message_interrupted(l);
        pd_xfer_free(l->x);
        l->x = NULL;
    }
    if (pd_domain_lanes_busy(d)) {
        d->ending = 1;
        return;
    }
    pd_ack_drop_queue(d, ctx->stopping ? "ack at next start" : "ack next cycle");
    pd_domain_free_items(d);
    /* A change cut off after some chunks were applied (or while one was
     * under way) leaves the outbox with neither the old set nor the new:
     * diffing against the old one next cycle could skip a pair it lacks
     * (removed here, back in the address book since). Reset instead. */
    if (d->sess && (d->sub.add_idx || d->sub.remove_idx || d->sub.sent_add
                    || d->sub.sent_remove))
        pd_session_forget(d->sess);
    pd_subscription_plan_free(&d->sub);
    if (d->locked)
        pd_db_unlock(ctx, d->name);
    d->locked = 0;
    if (d->state != PD_D_QUEUED)
        ctx->active--;
    d->state = PD_D_DONE;
    if (d->failed)
        ctx->n_failed_domains++;
    if (d->found)
        pd_stub_found(ctx, d->name);
    sm_debug("%s: done%s", d->name, d->failed ? " (with failures)" : "");
}

/* The outbox is unreachable or refuses us: nothing more for this domain in
 * this cycle. */
static void give_up(pd_domain *d)
{
    d->failed = 1;
    finish(d);
}

/* ---- the state machine ------------------------------------------------ */

/* ---- the lanes -------------------------------------------------------- */

/* Give lane l the next listed message, with all its recipients: 1, or 0
 * when every listed message is taken. */
static int claim(pd_domain *d, pd_lane *l)
{
    size_t i = d->untaken;

    if (i >= d->nitems)
        return 0;
    l->idx = i;
    while (++i < d->nitems && !strcmp(d->items[i].id, d->items[l->idx].id))
        ;
    l->end = d->untaken = i;
    l->msg_failed = 0;
    pd_lane_keep_file_for_item(l);
    return 1;
}

/* Lane l is finished with its current item: on to the next. */
static void next_item(pd_lane *l)
{
    if (l->idx + 1 == l->end)
        pd_message_done(l);
    l->idx++;
    pd_lane_keep_file_for_item(l);
}

/* Keep lane l busy: begin its next item until one starts a transfer, or
 * nothing is left for it (or a login must come first). */
static void lane_run(pd_domain *d, pd_lane *l)
{
    while (!l->x && !d->want_login) {
        if (l->idx >= l->end && (pd_login_due(d) || !claim(d, l)))
            return;
        if (pd_message_begin(l) == 0)
            return;
        next_item(l);
    }
}

/* Every listed message is finished (taken, and no lane holds one). */
static int items_finished(const pd_domain *d)
{
    int i;

    if (d->untaken < d->nitems)
        return 0;
    for (i = 0; i < PD_LANES_MAX; i++)
        if (d->lanes[i].x || d->lanes[i].idx < d->lanes[i].end)
            return 0;
    return 1;
}

/* Send what is queued to be acked (all of it, or only full batches):
 * 1 when an ack (or the login before it) started, 0 when nothing went. */
static int send_acks(pd_domain *d, int all)
{
    if (d->x || !pd_ack_due(d, all))
        return 0;
    if (pd_ack_start(d) == 0)
        return 1;
    d->failed = 1;
    pd_ack_drop_queue(d, "ack next cycle");
    return 0;
}

/* PD_D_ITEMS: 1 when the state machine goes on (every listed message is
 * finished and acked), 0 when it waits for transfers. */
static int items(pd_domain *d)
{
    int i;

    if (!d->x && (d->want_login || pd_login_due(d)) && !pd_domain_lanes_busy(d)) {
        if (d->want_login)
            d->relogged = 1;    /* once: another 401 ends the cycle */
        d->want_login = 0;
        if (pd_login_start(d, PD_X_NONE) != 0)
            give_up(d);
        return 0;
    }
    for (i = 0; i < d->ctx->conf.parallel; i++)
        lane_run(d, &d->lanes[i]);
    if (!items_finished(d)) {
        send_acks(d, 0);
        return 0;
    }
    if (send_acks(d, 1) || d->x)
        return 0;
    pd_poll_items_done(d);
    return 1;
}

static void step(pd_domain *d)
{
    for (;;) {
        if (d->ctx->stopping || d->ending) {
            finish(d);
            return;
        }
        switch (d->state) {
        case PD_D_OLD_ACKS:
            if (send_acks(d, 1) || d->x)
                return;
            d->state = PD_D_SUBSCRIBE;
            d->chunk = 0;
            d->polls = 0;
            if (pd_subscription_begin(d) != 0) {
                give_up(d);
                return;
            }
            continue;
        case PD_D_SUBSCRIBE:
            if (pd_subscription_pending(d)) {
                if (pd_subscription_start(d) == 0)
                    return;
                pd_session_forget(d->sess);
                give_up(d);
                return;
            }
            pd_subscription_plan_free(&d->sub);
            d->state = PD_D_POLL;
            continue;
        case PD_D_POLL:
            if (d->chunk >= d->npairs) {
                finish(d);
                return;
            }
            if (pd_poll_start(d) == 0)
                return;
            give_up(d);
            return;
        case PD_D_ITEMS:
            if (items(d))
                continue;
            return;
        case PD_D_QUEUED:
        case PD_D_DONE:
            return;
        }
    }
}

/* Start the request `kind` again (after a login or a wait). */
static void resume(pd_domain *d, pd_xkind kind)
{
    int rc = 0;

    switch (kind) {
    case PD_X_NONE:
        step(d);
        return;
    case PD_X_LOGIN:
        rc = pd_login_start(d, d->after_login);
        break;
    case PD_X_POLL:
        if (d->polls > 0)
            d->polls--;         /* the same poll once more, not another one */
        rc = pd_poll_start(d);
        break;
    case PD_X_SUBSCRIBE:
        rc = pd_subscription_start(d);
        break;
    case PD_X_ACK:
        rc = pd_ack_start(d);
        break;
    case PD_X_FETCH:
    case PD_X_DELIVER:
        break;                  /* a lane's: never waited for nor repeated here */
    case PD_X_DIGEST:
        break;                  /* no domain's (pd_digest.c) */
    }
    if (rc != 0)
        give_up(d);
}

/* Do what a step answered. */
static void act(pd_domain *d, pd_next next)
{
    switch (next) {
    case PD_NEXT_WAIT:
        break;
    case PD_NEXT_STEP:
        step(d);
        break;
    case PD_NEXT_ITEM:          /* a lane's answer, never the domain's */
        step(d);
        break;
    case PD_NEXT_RESUME:
        resume(d, d->after_login);
        break;
    case PD_NEXT_FINISH:
        finish(d);
        break;
    case PD_NEXT_GIVE_UP:
        give_up(d);
        break;
    }
}

void pd_dispatch_begin(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    int r;

    ctx->active++;
    d->state = PD_D_OLD_ACKS;
    pd_ack_queue_old(d);
    if (!(d->sess = pd_session_get(ctx, d->name))) {
        give_up(d);
        return;
    }
    if (d->sess->not_before_ms > pd_now_ms()) {
        sm_info("%s: the outbox asked us to wait another %llds: skipped", d->name,
                (d->sess->not_before_ms - pd_now_ms() + 999) / 1000);
        finish(d);
        return;
    }
    if ((r = pd_db_lock(ctx, d->name)) <= 0) {
        if (r == 0)
            sm_info("%s: another stubmail-pollerd is working on it, skipped", d->name);
        else
            d->failed = 1;
        finish(d);
        return;
    }
    d->locked = 1;
    if (pd_domain_discover(d) != 0) {
        finish(d);
        return;
    }
    pd_domain_sort_pairs(d);
    sm_debug("%s: %zu pairs, %zu unacked deliveries, outbox %s%s%s", d->name, d->npairs,
             d->nold, d->url, d->fpr[0] ? ", key " : "", d->fpr);
    if (pd_login_due(d)) {
        if (pd_login_start(d, PD_X_NONE) != 0)
            give_up(d);
        return;
    }
    step(d);
}

/* ---- finished transfers ----------------------------------------------- */

/* 429: wait as long as Retry-After says and send it again; a long wait (or
 * too many) ends the domain's cycle, and the next cycle does not poll it
 * before the time has come. Not a failure. */
static pd_next too_soon(pd_domain *d, const pd_xfer *x)
{
    curl_off_t wait = 0;

    curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &wait);
    if (wait < 1)
        wait = 1;
    d->sess->not_before_ms = pd_now_ms() + (long long)wait * 1000;
    if (wait > PD_WAIT_MAX || ++d->waits > PD_WAITS_MAX) {
        sm_info("%s: the outbox says too soon (Retry-After %llds, %u times this cycle): "
                "next cycle", d->name, (long long)wait, d->waits);
        return PD_NEXT_FINISH;
    }
    sm_debug("%s: too soon, sending it again in %llds", d->name, (long long)wait);
    pd_domain_wait(d, x->kind, d->sess->not_before_ms);
    return PD_NEXT_WAIT;
}

/* A 401 that a new token may cure: log in again, once per request. */
static int relogin_wanted(pd_domain *d, const pd_xfer *x)
{
    const char *code;

    if (x->kind == PD_X_LOGIN || x->status != 401 || d->relogged)
        return 0;
    code = pd_xfer_error_code(x);
    return !strcmp(code, "bad_token") || !strcmp(code, "token_expired")
           || !strcmp(code, "token_required");
}

/* What the finished transfer x means, as its step sees it. */
static pd_next route(pd_domain *d, pd_xfer *x)
{
    if (x->kind != PD_X_DELIVER && x->result == CURLE_OK) {
        if (x->status == 429)
            return too_soon(d, x);
        if (relogin_wanted(d, x)) {
            sm_info("%s: the outbox says %s: logging in again", d->name,
                    pd_xfer_error_code(x));
            d->relogged = 1;
            return pd_login_start(d, x->kind) == 0 ? PD_NEXT_WAIT : PD_NEXT_GIVE_UP;
        }
        if (x->kind != PD_X_LOGIN && x->status >= 200 && x->status < 300)
            d->relogged = 0;
    }
    switch (x->kind) {
    case PD_X_LOGIN:     return pd_login_done(d, x);
    case PD_X_SUBSCRIBE: return pd_subscription_done(d, x);
    case PD_X_POLL:      return pd_poll_done(d, x);
    case PD_X_ACK:       return pd_ack_done(d, x);
    case PD_X_FETCH:
    case PD_X_DELIVER:
    case PD_X_DIGEST:
    case PD_X_NONE:      break;
    }
    return PD_NEXT_WAIT;
}

/* What the finished transfer x of lane l means. */
static pd_next route_lane(pd_domain *d, pd_lane *l, pd_xfer *x)
{
    if (x->kind == PD_X_DELIVER)
        return pd_message_deliver_done(l, x);
    if (x->result == CURLE_OK && relogin_wanted(d, x)) {
        sm_info("%s: the outbox says %s: logging in again", d->name, pd_xfer_error_code(x));
        d->want_login = 1;      /* l keeps its item and begins it anew */
        pd_lane_drop_file(l);
        return PD_NEXT_WAIT;
    }
    if (x->result == CURLE_OK && x->status >= 200 && x->status < 300)
        d->relogged = 0;
    return pd_message_fetch_done(l, x);
}

/* Do what a lane's step answered. */
static void lane_act(pd_domain *d, pd_lane *l, pd_next next)
{
    switch (next) {
    case PD_NEXT_ITEM:
        next_item(l);
        break;
    case PD_NEXT_GIVE_UP:
        give_up(d);
        return;
    case PD_NEXT_FINISH:
        finish(d);
        return;
    default:
        break;                  /* its next transfer runs */
    }
    step(d);
}

void pd_dispatch_done(pd_xfer *x, CURLcode result)
{
    pd_domain *d = x->dom;
    pd_lane *l = x->lane;
    pd_next next;

    x->result = result;
    if (l)
        l->x = NULL;
    else
        d->x = NULL;
    x->in_multi = 0;
    curl_multi_remove_handle(x->ctx->multi, x->easy);
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    next = l ? route_lane(d, l, x) : route(d, x);
    pd_xfer_free(x);
    if (l)
        lane_act(d, l, next);
    else
        act(d, next);
}

long long pd_dispatch_wake(pd_domain *d, long long now_ms)
{
    if (!d->wake_ms || d->state == PD_D_DONE || d->state == PD_D_QUEUED)
        return 0;
    if (now_ms < d->wake_ms)
        return d->wake_ms;
    d->wake_ms = 0;
    resume(d, d->redo);
    return 0;
}

int pd_dispatch_udp_answer(pd_ctx *ctx, const unsigned char *pkt, size_t len)
{
    pd_domain *d;
    int status;

    for (d = ctx->domains; d; d = d->next) {
        if ((status = pd_poll_udp_answer(d, pkt, len)) < 0)
            continue;
        if (status == SM_UDPPOLL_IDLE) {
            sm_debug("%s: UDP poll says nothing new since %s: no HTTP poll this cycle",
                     d->name, d->sess->etag);
            finish(d);
        }
        return status;
    }
    return -1;
}

/* ---- stopping --------------------------------------------------------- */

void pd_dispatch_stop(pd_domain *d)
{
    if (d->state == PD_D_DONE || d->state == PD_D_QUEUED)
        return;
    finish(d);
}

void pd_dispatch_abort(pd_domain *d)
{
    int i;

    if (d->state == PD_D_DONE || d->state == PD_D_QUEUED)
        return;
    for (i = 0; i < PD_LANES_MAX; i++)
        if (d->lanes[i].x && d->lanes[i].x->kind == PD_X_DELIVER)
            d->lanes[i].x->cancel = 1;  /* ends in pd_message_deliver_done, without the "." */
    finish(d);
}
