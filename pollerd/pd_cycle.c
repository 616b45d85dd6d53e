/* pd_cycle.c — one poll cycle of stubmail-pollerd: read the address books
 * and the unacked deliveries into one pd_domain per remote domain (a full
 * cycle: every domain; a stub cycle: only those UDP stubs asked for), start
 * up to `concurrency` of them at once (pd_dispatch.c does the work of each),
 * and sum up when the last one is done. A cycle that cannot read the
 * database is skipped and tried again at the next interval. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "pd.h"

/* ---- reading the domains ---------------------------------------------- */

/* Rows of one domain come together: the last domain saves a search. */
typedef struct loading {
    pd_ctx *ctx;
    pd_domain *last;
} loading;

static pd_domain *loaded_domain(loading *l, const char *name)
{
    if (!l->last || strcmp(l->last->name, name) != 0)
        l->last = pd_domain_get(l->ctx, name);
    return l->last;
}

static int load_pair(void *arg, const char *domain, const char *contact, const char *owner)
{
    pd_domain *d = loaded_domain(arg, domain);

    if (!d)
        return -1;
    return pd_domain_add_pair(d, contact, owner) == 0;
}

static int load_unacked(void *arg, const char *domain, const char *id, const char *to,
                        const char *from, const char *reason, const char *receipt)
{
    pd_domain *d = loaded_domain(arg, domain);

    if (!d)
        return -1;
    return pd_domain_add_old(d, id, to, from, reason, receipt) == 0;
}

void pd_cycle_free(pd_ctx *ctx)
{
    pd_domain *d, *n;

    for (d = ctx->domains; d; d = n) {
        n = d->next;
        pd_domain_free(d);
    }
    ctx->domains = ctx->queue = NULL;
}

void pd_cycle_start(pd_ctx *ctx, char *only)
{
    loading l = { ctx, NULL };
    pd_db_loader load = { &l, load_pair, load_unacked };
    pd_domain *d;

    ctx->only = only;
    if (!only)
        pd_stub_cycle_all(ctx);
    ctx->cycle_running = 1;
    ctx->mta_down = 0;
    ctx->n_domains = ctx->n_failed_domains = 0;
    ctx->n_delivered = ctx->n_acked = ctx->n_failed = ctx->n_quarantined = 0;
    ctx->cycle_t0 = pd_now_ms();
    ctx->cycle_db_failed = 0;

    if (pd_db_connect(ctx) != 0) {
        sm_err("cycle skipped: database unavailable; retry in %lds", ctx->conf.interval);
        ctx->cycle_db_failed = 1;
        return;
    }
    if (ctx->unrecorded && pd_db_flush_unrecorded(ctx) != 0)
        sm_warn("deliveries still not recorded in the database; remembered in memory");
    if (pd_db_load(ctx, &load) != 0) {
        sm_err("cycle skipped: cannot read the address books; retry in %lds",
               ctx->conf.interval);
        ctx->cycle_db_failed = 1;
        pd_cycle_free(ctx);
        return;
    }
    for (d = ctx->domains; d; d = d->next)
        ctx->n_domains++;
    ctx->queue = ctx->domains;
    sm_debug("%s: %u domains", ctx->only ? "stub cycle" : "cycle", ctx->n_domains);
}

/* ---- running it ------------------------------------------------------- */

void pd_cycle_pump(pd_ctx *ctx)
{
    pd_domain *d;

    while (!ctx->stopping && ctx->queue && ctx->active < ctx->conf.concurrency) {
        d = ctx->queue;
        ctx->queue = d->next;
        pd_dispatch_begin(d);
    }
}

long long pd_cycle_wake(pd_ctx *ctx)
{
    long long now = pd_now_ms(), next = 0, t;
    pd_domain *d;

    for (d = ctx->domains; d; d = d->next)
        if ((t = pd_dispatch_wake(d, now)) && (!next || t < next))
            next = t;
    return next;
}

void pd_cycle_stop(pd_ctx *ctx)
{
    pd_domain *d;

    for (d = ctx->domains; d; d = d->next)
        pd_dispatch_stop(d);
}

void pd_cycle_abort(pd_ctx *ctx)
{
    pd_domain *d;

    for (d = ctx->domains; d; d = d->next)
        pd_dispatch_abort(d);
}

int pd_cycle_over(const pd_ctx *ctx)
{
    return ctx->cycle_running && ctx->active == 0 && (!ctx->queue || ctx->stopping);
}

int pd_cycle_end(pd_ctx *ctx)
{
    double secs = (double)(pd_now_ms() - ctx->cycle_t0) / 1000.0;
    int failed = ctx->cycle_db_failed || ctx->n_failed_domains > 0 || ctx->stopping;
    int prio = (ctx->n_delivered || ctx->n_acked || ctx->n_failed || ctx->n_failed_domains
                || ctx->n_quarantined) ? LOG_INFO : LOG_DEBUG;

    if (!ctx->cycle_db_failed)
        sm_log(prio, "%s%s: %u domains (%u failed), %u delivered, %u quarantined, "
               "%u acked, %u failed, %.1fs", ctx->only ? "stub cycle" : "cycle",
               ctx->stopping ? " stopped" : "", ctx->n_domains,
               ctx->n_failed_domains, ctx->n_delivered, ctx->n_quarantined, ctx->n_acked,
               ctx->n_failed, secs);
    pd_udp_cycle_end(ctx);
    pd_metrics_write(ctx->conf.metrics_file);
    pd_cycle_free(ctx);
    free(ctx->only);
    ctx->only = NULL;
    if (ctx->unrecorded && ctx->db && pd_db_flush_unrecorded(ctx) != 0)
        sm_warn("deliveries still not recorded in the database; remembered in memory");
    ctx->cycle_running = 0;
    return failed;
}
