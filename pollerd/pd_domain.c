/* pd_domain.c — the record of one remote domain for one cycle (pd_domain)
 * and what every step does with it: the list the address books make
 * (pairs, earlier deliveries not yet acked), where its outbox is
 * (discovery), the lanes that work on listed messages and their spool
 * files, the one log line per message outcome, and starting a transfer.
 *
 * The state machine that drives it is pd_dispatch.c's. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sm_discover_pq.h"
#include "sm_log.h"
#include "pd.h"

/* ---- building the domain list ---------------------------------------- */

pd_domain *pd_domain_get(pd_ctx *ctx, const char *name)
{
    pd_domain *d, **pp;
    size_t i;

    for (pp = &ctx->domains; (d = *pp); pp = &d->next)
        if (!strcmp(d->name, name))
            return d;
    if (!(d = calloc(1, sizeof(*d))))
        goto nomem;
    d->ctx = ctx;
    for (i = 0; i < PD_LANES_MAX; i++) {
        d->lanes[i].d = d;
        d->lanes[i].fd = -1;
    }
    d->state = PD_D_QUEUED;
    if (!(d->name = strdup(name))) {
        pd_domain_free(d);
        goto nomem;
    }
    *pp = d;
    return d;
nomem:
    sm_err("out of memory for domain %s", name);
    return NULL;
}

int pd_domain_add_pair(pd_domain *d, const char *contact, const char *owner)
{
    sm_pair p;
    const char *why = "";
    sm_pair *n;

    if (sm_pattern_normalize(contact, p.from, sizeof(p.from), &why) != 0) {
        sm_warn("%s: address book of <%s>: contact \"%s\" skipped: %s", d->name, owner,
                contact, why);
        return -1;
    }
    if (sm_addr_normalize(owner, p.to, sizeof(p.to), &why) != 0) {
        sm_warn("%s: address book owner \"%s\" skipped: %s", d->name, owner, why);
        return -1;
    }
    if (strcmp(sm_addr_domain(p.to), d->ctx->conf.domain) != 0
        || strcmp(sm_addr_domain(p.from), d->name) != 0) {
        sm_warn("%s: address book pair <%s> → <%s> skipped: not from %s to %s", d->name,
                p.from, p.to, d->name, d->ctx->conf.domain);
        return -1;
    }
    if (d->npairs == d->pairs_cap) {
        size_t cap = d->pairs_cap ? d->pairs_cap * 2 : 16;
        if (!(n = realloc(d->pairs, cap * sizeof(*n)))) {
            sm_err("%s: out of memory for pairs", d->name);
            return -1;
        }
        d->pairs = n;
        d->pairs_cap = cap;
    }
    d->pairs[d->npairs++] = p;
    return 0;
}

int pd_domain_add_old(pd_domain *d, const char *id, const char *to, const char *from,
                      const char *reason, const char *receipt)
{
    pd_old *n;

    if (!sm_id_valid(id) || strlen(to) > SM_ADDR_MAX || strlen(from) > SM_ADDR_MAX
        || strlen(reason) > SM_ACK_REASON_MAX || (receipt[0] && !sm_receipt_valid(receipt))) {
        sm_warn("%s: received row (%s, %s) is malformed, skipped", d->name, id, to);
        return -1;
    }
    if (d->nold == d->old_cap) {
        size_t cap = d->old_cap ? d->old_cap * 2 : 8;
        if (!(n = realloc(d->old, cap * sizeof(*n)))) {
            sm_err("%s: out of memory for unacked deliveries", d->name);
            return -1;
        }
        d->old = n;
        d->old_cap = cap;
    }
    n = &d->old[d->nold++];
    snprintf(n->id, sizeof(n->id), "%s", id);
    snprintf(n->to, sizeof(n->to), "%s", to);
    snprintf(n->from, sizeof(n->from), "%s", from);
    snprintf(n->reason, sizeof(n->reason), "%s", reason);
    snprintf(n->receipt, sizeof(n->receipt), "%s", receipt);
    return 0;
}

int pd_pair_cmp(const void *a, const void *b)
{
    const sm_pair *x = a, *y = b;
    int c = strcmp(x->to, y->to);

    return c ? c : strcmp(x->from, y->from);
}

void pd_domain_sort_pairs(pd_domain *d)
{
    size_t i, n = 1;

    if (!d->npairs)
        return;
    qsort(d->pairs, d->npairs, sizeof(*d->pairs), pd_pair_cmp);
    /* two address book rows can normalise to one pair */
    for (i = 1; i < d->npairs; i++)
        if (pd_pair_cmp(&d->pairs[i], &d->pairs[n - 1]) != 0)
            d->pairs[n++] = d->pairs[i];
    d->npairs = n;
}

/* ---- where the outbox is ---------------------------------------------- */

int pd_domain_discover(pd_domain *d)
{
    const pd_conf *c = &d->ctx->conf;
    sm_peer_info peer;
    char why[512];
    size_t l;

    if (sm_discover(d->ctx->db, &c->dns, d->name, &peer, why, sizeof(why)) != 0
        || peer.status == SM_DNS_TEMPFAIL) {
        sm_warn("%s: discovery failed: %s; skipped this cycle", d->name, why);
        d->failed = 1;
        return -1;
    }
    if (!peer.outbox[0]) {
        /* most contact domains take no part: worth a warning only when
         * the admin named it, its record is broken, or it is not validated
         * where the admin requires that */
        sm_log(peer.from_peer_table || peer.status == SM_DNS_INVALID || peer.dnssec_refused
               ? LOG_WARNING
               : LOG_DEBUG, "%s: nowhere to poll: no outbox in table peer or DNS "
               "(%s%s%s); skipped", d->name, sm_dns_status_name(peer.status),
               why[0] ? ": " : "", why);
        return -1;
    }
    if (!peer.fpr[0]) {
        sm_warn("%s: no domain key fingerprint in table peer or DNS: its mail "
                "cannot be verified; skipped", d->name);
        return -1;
    }
    if (sm_url_allowed(peer.outbox, &c->https, why, sizeof(why)) != 0) {
        sm_warn("%s: outbox refused: %s; skipped", d->name, why);
        return -1;
    }
    snprintf(d->fpr, sizeof(d->fpr), "%s", peer.fpr);
    snprintf(d->fpr_alt, sizeof(d->fpr_alt), "%s", peer.fpr_alt);
    free(d->url);
    if (!(d->url = strdup(peer.outbox))) {
        sm_err("%s: out of memory", d->name);
        d->failed = 1;
        return -1;
    }
    l = strlen(d->url);
    while (l > 0 && d->url[l - 1] == '/')
        d->url[--l] = '\0';
    return 0;
}

/* ---- the messages at hand -------------------------------------------- */

sm_listing *pd_lane_item(const pd_lane *l)
{
    return &l->d->items[l->idx];
}

void pd_domain_outcome(pd_domain *d, const sm_listing *it, int prio, const char *fmt, ...)
{
    char what[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    sm_log(prio, "%s %s: from=<%s> to=<%s> size=%lld: %s", d->name, it->id, it->from,
           it->to, it->size, what);
}

void pd_lane_drop_file(pd_lane *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    l->fd_id[0] = '\0';
    l->fd_size = 0;
    l->fd_verified = 0;
    l->fd_resumed = 0;
    l->fd_reject[0] = '\0';
    l->fd_receipt[0] = '\0';
}

/* The next recipients of one message are listed together: their body is
 * fetched (and verified) once. */
void pd_lane_keep_file_for_item(pd_lane *l)
{
    if (l->idx < l->end && l->fd >= 0 && strcmp(l->fd_id, pd_lane_item(l)->id) != 0)
        pd_lane_drop_file(l);
}

int pd_domain_lanes_busy(const pd_domain *d)
{
    int i;

    for (i = 0; i < PD_LANES_MAX; i++)
        if (d->lanes[i].x)
            return 1;
    return 0;
}

void pd_domain_free_items(pd_domain *d)
{
    int i;

    for (i = 0; i < PD_LANES_MAX; i++) {
        pd_lane_drop_file(&d->lanes[i]);
        d->lanes[i].idx = d->lanes[i].end = 0;
        d->lanes[i].again = 0;
    }
    free(d->items);
    d->items = NULL;
    d->nitems = d->untaken = 0;
}

/* ---- transfers and timers --------------------------------------------- */

int pd_domain_start(pd_domain *d, pd_xfer *x)
{
    if (pd_xfer_start(x) != 0) {
        pd_xfer_free(x);
        return -1;
    }
    if (x->lane)
        x->lane->x = x;
    else
        d->x = x;
    return 0;
}

void pd_domain_wait(pd_domain *d, pd_xkind kind, long long until_ms)
{
    d->redo = kind;
    d->wake_ms = until_ms;
}

void pd_domain_free(pd_domain *d)
{
    size_t i;

    if (!d)
        return;
    pd_xfer_free(d->x);         /* NULL unless a cycle was cut off */
    for (i = 0; i < PD_LANES_MAX; i++) {
        pd_xfer_free(d->lanes[i].x);
        pd_lane_drop_file(&d->lanes[i]);
    }
    free(d->acks);
    free(d->sub.add);
    free(d->sub.remove);
    free(d->items);
    free(d->pairs);
    free(d->old);
    free(d->name);
    free(d->url);
    free(d);
}
