/* pd_poll.c — asking an outbox what is waiting for us (docs/PROTOCOL.md
 * "Poll").
 *
 * The main path: GET /v1/poll?version=V for everything the subscription
 * holds (pd_subscription.c made it match the address book), with
 * If-None-Match when the last answer listed nothing, so that an idle
 * outbox answers 304 and the domain is done. Before that HTTP poll, when
 * the outbox has a UDP responder and we know its ETag, one datagram asks
 * whether anything changed at all (pd_udp.c): "idle" saves the HTTP poll,
 * anything else (or no answer within udp_timeout) leads to it.
 *
 * The fallback, for an outbox without subscriptions: POST /v1/poll with the
 * pairs themselves, chunks of at most batch_max, each polled again while
 * the answer says "more" and something listed could be acked. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "pd.h"

#define PD_POLL_BODY_MAX (64u * 1024 * 1024)   /* a poll answer */
#define PD_MAX_POLLS 1000       /* polls of one chunk per cycle ("more": true) */

/* ---- UDP first --------------------------------------------------------- */

/* Before the HTTP poll: 0 if a UDP poll was sent and the domain now waits
 * for its answer (pd_poll_udp_answer, or this poll again when the time is
 * up); -1 if not (no responder, no ETag, tried already): poll by HTTP. */
static int udp_first(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    pd_session *s = d->sess;

    if (d->udp_state == PD_UDP_WAITING && ctx->udp) {
        /* the time is up (pd_dispatch_wake): poll by HTTP */
        pd_udp_unanswered(ctx);
        sm_debug("%s: no UDP poll answer within %lds: polling by HTTP", d->name,
                 ctx->conf.udp_timeout);
    }
    /* a cycle that UDP stubs asked for (ctx->only) knows there is news:
     * asking would only add the wait, or race the outbox's notification */
    if (d->udp_state != PD_UDP_UNTRIED || !ctx->udp || !s->udp_ok || !s->etag[0] || s->legacy
        || ctx->stopping || ctx->only) {
        d->udp_state = PD_UDP_DONE;
        return -1;
    }
    d->udp_state = PD_UDP_DONE;
    if (pd_udp_ask(ctx, s, d->udp_mac) != 0)
        return -1;
    d->udp_state = PD_UDP_WAITING;
    pd_domain_wait(d, PD_X_POLL, pd_now_ms() + ctx->conf.udp_timeout * 1000LL);
    sm_debug("%s: UDP poll since %s", d->name, s->etag);
    return 0;
}

int pd_poll_udp_answer(pd_domain *d, const unsigned char *pkt, size_t len)
{
    sm_udppoll_status status;
    const char *why;

    if (d->udp_state != PD_UDP_WAITING || d->state == PD_D_DONE
        || sm_udppoll_reply_parse(d->sess->udp_key, d->udp_mac, pkt, len, &status, &why) != 0)
        return -1;
    d->udp_state = PD_UDP_DONE;
    if (status == SM_UDPPOLL_IDLE) {
        d->wake_ms = 0;
    } else {
        sm_debug("%s: UDP poll says there is news: polling by HTTP", d->name);
        pd_domain_wait(d, d->redo, pd_now_ms());   /* due now: pd_dispatch_wake starts it */
    }
    return (int)status;
}

/* ---- HTTP -------------------------------------------------------------- */

/* GET /v1/poll?version=V for everything subscribed, conditional when the
 * last answer listed nothing. */
static int start_get(pd_domain *d)
{
    pd_session *s = d->sess;
    char url[4096], inm[PD_ETAG_MAX + 32];
    pd_xfer *x;

    d->chunk = 0;
    d->chunk_len = d->npairs;
    snprintf(url, sizeof(url), "%s/v1/poll?version=%lld", d->url, s->sub_version);
    snprintf(inm, sizeof(inm), "If-None-Match: %s", s->etag);
    if (!(x = pd_xfer_new(d->ctx, d, NULL, PD_X_POLL))
        || pd_xfer_http(x, url, NULL, PD_POLL_BODY_MAX) != 0
        || (s->etag[0] && pd_xfer_header(x, inm) != 0)) {
        sm_err("%s: cannot start the poll (out of memory?)", d->name);
        pd_xfer_free(x);
        return -1;
    }
    if (pd_domain_start(d, x) != 0)
        return -1;
    d->polls++;
    sm_debug("%s: polling subscription version %lld%s%s", d->name, s->sub_version,
             s->etag[0] ? ", if not " : "", s->etag);
    return 0;
}

/* POST /v1/poll with the next chunk of at most batch_max pairs. */
static int start_post(pd_domain *d)
{
    char url[4096];
    char *body = NULL;
    pd_xfer *x = NULL;
    int rc = -1;

    d->chunk_len = d->npairs - d->chunk;
    if (d->chunk_len > (size_t)d->ctx->conf.batch_max)
        d->chunk_len = (size_t)d->ctx->conf.batch_max;
    if (!(body = sm_poll_request_encode(d->pairs + d->chunk, d->chunk_len))) {
        sm_err("%s: cannot encode the poll request", d->name);
        goto leave;
    }
    snprintf(url, sizeof(url), "%s/v1/poll", d->url);
    if (!(x = pd_xfer_new(d->ctx, d, NULL, PD_X_POLL))
        || pd_xfer_http(x, url, body, PD_POLL_BODY_MAX) != 0) {
        sm_err("%s: cannot start the poll (out of memory?)", d->name);
        pd_xfer_free(x);
        goto leave;
    }
    if (pd_domain_start(d, x) != 0)
        goto leave;
    d->polls++;
    sm_debug("%s: polling %zu pairs (%zu..%zu of %zu)", d->name, d->chunk_len, d->chunk + 1,
             d->chunk + d->chunk_len, d->npairs);
    rc = 0;
leave:
    free(body);
    return rc;
}

int pd_poll_start(pd_domain *d)
{
    if (pd_login_due(d))
        return pd_login_start(d, PD_X_POLL);
    /* a UDP "idle" saves the HTTP poll; any other outcome comes back here */
    if (udp_first(d) == 0)
        return 0;
    return d->sess->legacy ? start_post(d) : start_get(d);
}

/* A GET answer must be for the version we polled: 0, or -1 with why.
 * Only an answer that listed nothing makes the next poll conditional. */
static int check_get_answer(pd_domain *d, const pd_xfer *x, char *why, size_t whylen)
{
    sm_parse_error perr;
    long long version;

    memset(&perr, 0, sizeof(perr));
    if (sm_version_parse(x->body.data, x->body.len, &version, &perr) != 0)
        snprintf(why, whylen, "%s", perr.message[0] ? perr.message : "no version");
    else if (version != d->sess->sub_version)
        snprintf(why, whylen, "it is for version %lld", version);
    else
        why[0] = '\0';
    if (why[0])
        return -1;
    /* What is listed now leaves the pending set when it is acked (a new
     * ETag), and what could not be finished must be listed again even if
     * nothing changed. */
    if (d->nitems == 0 && !d->more)
        snprintf(d->sess->etag, sizeof(d->sess->etag), "%s", x->etag);
    else
        d->sess->etag[0] = '\0';
    return 0;
}

pd_next pd_poll_done(pd_domain *d, const pd_xfer *x)
{
    sm_parse_error perr;
    char why[512];
    int get = !d->sess->legacy;

    if (get && x->result == CURLE_OK && x->status == 304) {
        pd_metrics_poll(d->name, PD_POLL_IDLE);
        sm_debug("%s: nothing new (%s)", d->name, d->sess->etag);
        return PD_NEXT_FINISH;
    }
    if (get && x->result == CURLE_OK && x->status == 409
        && !strcmp(pd_xfer_error_code(x), "subscription_changed"))
        return pd_subscription_restart(d, "poll refused (409)");
    if (x->result != CURLE_OK || x->status != 200) {
        pd_xfer_describe(x, why, sizeof(why));
        pd_metrics_poll(d->name, PD_POLL_FAILED);
        sm_err("%s: poll %s/v1/poll failed: %s; retry next cycle", d->name, d->url, why);
        return PD_NEXT_GIVE_UP;
    }
    memset(&perr, 0, sizeof(perr));
    pd_domain_free_items(d);
    if (sm_poll_response_parse(x->body.data ? x->body.data : "", x->body.len, &d->items,
                               &d->nitems, &d->more, &perr) != 0) {
        pd_metrics_poll(d->name, PD_POLL_FAILED);
        sm_err("%s: poll answer refused: %s: %s; retry next cycle", d->name,
               perr.code ? perr.code : "?", perr.message);
        return PD_NEXT_GIVE_UP;
    }
    if (get && check_get_answer(d, x, why, sizeof(why)) != 0) {
        pd_metrics_poll(d->name, PD_POLL_FAILED);
        sm_err("%s: poll answer refused: not for subscription version %lld (%s); retry "
               "next cycle", d->name, d->sess->sub_version, why);
        pd_session_forget(d->sess);
        return PD_NEXT_GIVE_UP;
    }
    pd_metrics_poll(d->name, d->nitems ? PD_POLL_LISTED : PD_POLL_IDLE);
    sm_debug("%s: %zu listed%s", d->name, d->nitems, d->more ? ", more" : "");
    d->state = PD_D_ITEMS;
    d->found |= d->nitems > 0;
    d->untaken = 0;
    d->progress = 0;
    return PD_NEXT_STEP;
}

void pd_poll_items_done(pd_domain *d)
{
    pd_domain_free_items(d);
    d->state = PD_D_POLL;
    if (d->more && d->progress > 0 && d->polls < PD_MAX_POLLS)
        return;                 /* same chunk again: the rest */
    if (d->more && d->progress > 0)
        sm_warn("%s: still more after %u polls: the rest waits for the next cycle", d->name,
                d->polls);
    else if (d->more)
        sm_warn("%s: the outbox has more, but nothing listed could be acked: the rest "
                "waits for the next cycle", d->name);
    d->chunk += d->chunk_len;
    d->polls = 0;
}
