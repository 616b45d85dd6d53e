/* pd_subscription.c — bringing the outbox's subscription in step with our
 * address book (docs/PROTOCOL.md "Subscriptions"), before a domain is
 * polled.
 *
 * The outbox keeps the pairs (sender or *@domain, recipient) we subscribed
 * under a version; the session keeps what it last confirmed. Planning
 * diffs the address book against that: what the outbox lacks is added,
 * what it has too much is removed, and a cycle where nothing changed sends
 * nothing. When we know nothing (after a start, a failed change, a 409 or
 * another outbox) the change is a reset to the whole address book. The
 * change goes out as POST /v1/subscription in chunks of at most batch_max
 * pairs, removals first; each answer gives the new version. An outbox
 * without subscriptions (404 no_such_endpoint) is polled with pairs
 * instead (pd_poll.c). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "pd.h"

/* ---- planning ---------------------------------------------------------- */

void pd_subscription_plan_free(pd_subchange *plan)
{
    free(plan->add);
    free(plan->remove);
    memset(plan, 0, sizeof(*plan));
}

int pd_subscription_plan(pd_subchange *plan, const sm_pair *book, size_t nbook,
                         const pd_session *s)
{
    size_t i, j, nadd = 0, nremove = 0;
    int c, pass;

    pd_subscription_plan_free(plan);
    plan->reset = !s->sub_known;
    if (plan->reset) {
        if (nbook && !(plan->add = malloc(nbook * sizeof(*plan->add))))
            goto nomem;
        if (nbook)
            memcpy(plan->add, book, nbook * sizeof(*plan->add));
        plan->nadd = nbook;
        return 0;
    }
    /* Both lists are sorted, so one merge walk finds the differences.
     * Pass 0 counts, pass 1 copies: a pair is some 640 octets, and most
     * cycles change nothing, so nothing is allocated for them. */
    for (pass = 0; pass < 2; pass++) {
        for (i = j = 0; i < nbook || j < s->sub_npairs;) {
            c = i >= nbook ? 1 : j >= s->sub_npairs ? -1
                : pd_pair_cmp(&book[i], &s->sub_pairs[j]);
            if (c < 0) {
                if (pass)
                    plan->add[plan->nadd++] = book[i];
                else
                    nadd++;
                i++;
            } else if (c > 0) {
                if (pass)
                    plan->remove[plan->nremove++] = s->sub_pairs[j];
                else
                    nremove++;
                j++;
            } else {
                i++;
                j++;
            }
        }
        if (pass || (!nadd && !nremove))
            break;
        if ((nadd && !(plan->add = malloc(nadd * sizeof(*plan->add))))
            || (nremove && !(plan->remove = malloc(nremove * sizeof(*plan->remove)))))
            goto nomem;
    }
    return 0;
nomem:
    sm_err("%s: out of memory for the subscription change", s->domain);
    pd_subscription_plan_free(plan);
    return -1;
}

static int plan_domain(pd_domain *d)
{
    return pd_subscription_plan(&d->sub, d->pairs, d->npairs, d->sess);
}

int pd_subscription_begin(pd_domain *d)
{
    if (!d->npairs || d->sess->legacy)
        return 0;
    return plan_domain(d);
}

int pd_subscription_pending(const pd_domain *d)
{
    return d->npairs && !d->sess->legacy
           && (d->sub.reset || d->sub.add_idx < d->sub.nadd
               || d->sub.remove_idx < d->sub.nremove);
}

/* ---- the change, chunk by chunk ---------------------------------------- */

int pd_subscription_start(pd_domain *d)
{
    pd_session *s = d->sess;
    pd_subchange *sub = &d->sub;
    size_t room = (size_t)d->ctx->conf.batch_max, nrem, nadd;
    char url[4096];
    char *body = NULL;
    pd_xfer *x = NULL;
    int rc = -1;

    if (pd_login_due(d))
        return pd_login_start(d, PD_X_SUBSCRIBE);
    nrem = sub->nremove - sub->remove_idx;
    if (nrem > room)
        nrem = room;
    nadd = sub->nadd - sub->add_idx;
    if (nadd > room - nrem)
        nadd = room - nrem;
    snprintf(url, sizeof(url), "%s/v1/subscription", d->url);
    if (!(body = sm_subscription_request_encode(sub->reset, s->sub_version,
                                                sub->add + sub->add_idx, nadd,
                                                sub->remove + sub->remove_idx, nrem))
        || !(x = pd_xfer_new(d->ctx, d, NULL, PD_X_SUBSCRIBE))
        || pd_xfer_http(x, url, body, PD_SMALL_BODY_MAX) != 0) {
        sm_err("%s: cannot start the subscription change (out of memory?)", d->name);
        pd_xfer_free(x);
        goto leave;
    }
    if (pd_domain_start(d, x) != 0)
        goto leave;             /* logged by pd_xfer_start */
    sub->sent_add = nadd;
    sub->sent_remove = nrem;
    if (sub->reset)
        sm_debug("%s: subscription reset, %zu pairs (%zu..%zu of %zu)", d->name, nadd,
                 sub->add_idx + 1, sub->add_idx + nadd, sub->nadd);
    else
        sm_debug("%s: subscription change from version %lld: %zu added, %zu removed",
                 d->name, s->sub_version, nadd, nrem);
    rc = 0;
leave:
    free(body);
    return rc;
}

pd_next pd_subscription_restart(pd_domain *d, const char *what)
{
    pd_session_forget(d->sess);
    if (++d->sub_resets > 1) {
        sm_err("%s: %s: the subscription changed under us again; retry next cycle",
               d->name, what);
        return PD_NEXT_GIVE_UP;
    }
    sm_info("%s: %s: the outbox's subscription is not the one we know: resetting it",
            d->name, what);
    d->state = PD_D_SUBSCRIBE;
    return plan_domain(d) == 0 ? PD_NEXT_STEP : PD_NEXT_GIVE_UP;
}

/* All of the change is confirmed: the outbox now has exactly the address
 * book, at version. */
static pd_next confirmed(pd_domain *d, long long version)
{
    pd_session *s = d->sess;
    sm_pair *n = NULL;

    if (d->npairs && !(n = malloc(d->npairs * sizeof(*n)))) {
        sm_err("%s: out of memory for the subscription", d->name);
        pd_session_forget(s);
        return PD_NEXT_GIVE_UP;
    }
    free(s->sub_pairs);
    s->sub_pairs = n;
    if (d->npairs)
        memcpy(s->sub_pairs, d->pairs, d->npairs * sizeof(*n));
    s->sub_npairs = d->npairs;
    s->sub_known = 1;
    sm_info("%s: subscription at version %lld, %zu pairs", d->name, version, d->npairs);
    pd_subscription_plan_free(&d->sub);
    return PD_NEXT_STEP;
}

pd_next pd_subscription_done(pd_domain *d, const pd_xfer *x)
{
    pd_session *s = d->sess;
    pd_subchange *sub = &d->sub;
    sm_parse_error perr;
    long long version;
    char why[512];

    if (x->result == CURLE_OK && x->status == 404
        && !strcmp(pd_xfer_error_code(x), "no_such_endpoint")) {
        sm_info("%s: the outbox has no subscriptions: polling with pairs", d->name);
        s->legacy = 1;
        pd_session_forget(s);
        pd_subscription_plan_free(sub);
        d->state = PD_D_POLL;
        d->chunk = 0;
        d->polls = 0;
        return PD_NEXT_STEP;
    }
    if (x->result == CURLE_OK && x->status == 409
        && !strcmp(pd_xfer_error_code(x), "subscription_changed"))
        return pd_subscription_restart(d, "subscription change refused (409)");
    if (x->result != CURLE_OK || x->status != 200) {
        pd_xfer_describe(x, why, sizeof(why));
        sm_err("%s: subscription change at %s/v1/subscription failed: %s; retry next "
               "cycle%s", d->name, d->url, why,
               x->status == 413 ? " (is batch_max above the outbox's StubmailMaxPairs?)" : "");
        /* it may or may not have been applied: start over next time */
        pd_session_forget(s);
        return PD_NEXT_GIVE_UP;
    }
    memset(&perr, 0, sizeof(perr));
    if (sm_version_parse(x->body.data ? x->body.data : "", x->body.len, &version,
                         &perr) != 0) {
        sm_err("%s: subscription answer refused: %s; retry next cycle", d->name,
               perr.message);
        pd_session_forget(s);
        return PD_NEXT_GIVE_UP;
    }
    s->sub_version = version;
    s->etag[0] = '\0';
    sub->reset = 0;             /* the next chunks change what this one set */
    sub->add_idx += sub->sent_add;
    sub->remove_idx += sub->sent_remove;
    sub->sent_add = sub->sent_remove = 0;
    if (sub->add_idx < sub->nadd || sub->remove_idx < sub->nremove)
        return PD_NEXT_STEP;
    return confirmed(d, version);
}
