/* pd_domain.c — the work of one cycle for one remote domain.
 *
 * A small state machine, one transfer at a time, driven by step():
 *
 *   OLD_ACKS  ack what an earlier run delivered but could not ack
 *   POLL      POST /v1/poll with the next chunk of at most batch_max pairs
 *   ITEMS     for each listed (id, from, to):
 *               already in table received → ack only
 *               else fetch → deliver → INSERT received → ack → UPDATE acked_at
 *             then poll the same chunk again if the answer said "more" and
 *             something was acked, else go on with the next chunk
 *   DONE
 *
 * One log line per message outcome. A transport error, 401 or 5xx from the
 * outbox ends the domain's work for this cycle (retried next cycle); a
 * problem with one message skips that message. */
#define _GNU_SOURCE 1   /* O_TMPFILE, mkostemp */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "sm_log.h"
#include "pd.h"

#define PD_POLL_BODY_MAX (64u * 1024 * 1024)   /* a poll answer */
#define PD_SMALL_BODY_MAX (64u * 1024)          /* ack answers, error bodies */
#define PD_MAX_POLLS 1000       /* polls of one chunk per cycle ("more": true) */

static void step(pd_domain *d);

/* ---- building the domain list ---------------------------------------- */

pd_domain *pd_domain_get(pd_ctx *ctx, const char *name, const char *url,
                         const char *secret)
{
    pd_domain *d, **pp;
    size_t l;

    for (pp = &ctx->domains; (d = *pp); pp = &d->next)
        if (!strcmp(d->name, name))
            return d;
    if (!(d = calloc(1, sizeof(*d))))
        goto nomem;
    d->ctx = ctx;
    d->fd = -1;
    d->state = PD_D_QUEUED;
    if (!(d->name = strdup(name)) || !(d->url = strdup(url)) || !(d->secret = strdup(secret))) {
        pd_domain_free(d);
        goto nomem;
    }
    l = strlen(d->url);
    while (l > 0 && d->url[l - 1] == '/')
        d->url[--l] = '\0';
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

int pd_domain_add_old(pd_domain *d, const char *id, const char *to, const char *from)
{
    pd_old *n;

    if (!sm_id_valid(id) || strlen(to) > SM_ADDR_MAX || strlen(from) > SM_ADDR_MAX) {
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
    return 0;
}

static int pair_cmp(const void *a, const void *b)
{
    const sm_pair *x = a, *y = b;
    int c = strcmp(x->to, y->to);

    return c ? c : strcmp(x->from, y->from);
}

/* ---- small helpers ---------------------------------------------------- */

static sm_listing *cur(pd_domain *d)
{
    return &d->items[d->idx];
}

static void outcome(pd_domain *d, const sm_listing *it, int prio, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The one line per message outcome. */
static void outcome(pd_domain *d, const sm_listing *it, int prio, const char *fmt, ...)
{
    char what[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    sm_log(prio, "%s %s: from=<%s> to=<%s> size=%lld: %s", d->name, it->id, it->from,
           it->to, it->size, what);
}

static void drop_file(pd_domain *d)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
    d->fd_id[0] = '\0';
}

static void free_items(pd_domain *d)
{
    free(d->items);
    d->items = NULL;
    d->nitems = d->idx = 0;
}

static void finish(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;

    if (d->state == PD_D_DONE)
        return;
    if (d->x) {
        pd_xfer_free(d->x);
        d->x = NULL;
    }
    drop_file(d);
    free_items(d);
    if (d->locked)
        pd_db_unlock(ctx, d->name);
    d->locked = 0;
    if (d->state != PD_D_QUEUED)
        ctx->active--;
    d->state = PD_D_DONE;
    if (d->failed)
        ctx->n_failed_domains++;
    sm_debug("%s: done%s", d->name, d->failed ? " (with failures)" : "");
}

/* The outbox is unreachable or refuses us: nothing more for this domain in
 * this cycle. */
static void give_up(pd_domain *d)
{
    d->failed = 1;
    finish(d);
}

/* Whether a failed HTTP transfer says something about the whole domain
 * (unreachable, wrong secret, server trouble) rather than one message. */
static int domain_wide(const pd_xfer *x)
{
    if (x->result != CURLE_OK)
        return !(x->kind == PD_X_FETCH && (x->length_mismatch || x->write_errno));
    return x->status == 401 || x->status >= 500 || x->status < 200;
}

/* A fresh, already unlinked file in spool_dir for one fetched body: a
 * crash or a kill leaves nothing behind. */
static int open_spool_file(const char *dir)
{
    char path[4096];
    int fd;

#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
#endif
    if (snprintf(path, sizeof(path), "%s/fetch-XXXXXX", dir) >= (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
        return -1;
    unlink(path);
    return fd;
}

static int start(pd_domain *d, pd_xfer *x)
{
    if (pd_xfer_start(x) != 0) {
        pd_xfer_free(x);
        return -1;
    }
    d->x = x;
    return 0;
}

/* ---- starting transfers ----------------------------------------------- */

static int start_poll(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    char url[4096];
    char *body;
    pd_xfer *x;
    int rc = -1;

    d->chunk_len = d->npairs - d->chunk;
    if (d->chunk_len > (size_t)ctx->conf.batch_max)
        d->chunk_len = (size_t)ctx->conf.batch_max;
    if (!(body = sm_poll_request_encode(d->pairs + d->chunk, d->chunk_len))) {
        sm_err("%s: cannot encode the poll request", d->name);
        return -1;
    }
    snprintf(url, sizeof(url), "%s/v1/poll", d->url);
    if (!(x = pd_xfer_new(ctx, d, PD_X_POLL)))
        goto leave;
    if (pd_xfer_http(x, url, body, PD_POLL_BODY_MAX) != 0) {
        pd_xfer_free(x);
        goto leave;
    }
    if (start(d, x) != 0)
        goto leave;
    d->polls++;
    sm_debug("%s: polling %zu pairs (%zu..%zu of %zu)", d->name, d->chunk_len, d->chunk + 1,
             d->chunk + d->chunk_len, d->npairs);
    rc = 0;
leave:
    if (rc != 0)
        sm_err("%s: cannot start the poll (out of memory?)", d->name);
    free(body);
    return rc;
}

static int start_ack(pd_domain *d, const char *id, const char *to)
{
    char url[4096];
    char *body = NULL;
    json_t *j;
    pd_xfer *x = NULL;
    int rc = -1;

    if (!(j = json_pack("{s:s}", "to", to)))
        goto leave;
    body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!body)
        goto leave;
    snprintf(url, sizeof(url), "%s/v1/message/%s/ack", d->url, id);
    if (!(x = pd_xfer_new(d->ctx, d, PD_X_ACK)))
        goto leave;
    snprintf(x->ack_id, sizeof(x->ack_id), "%s", id);
    snprintf(x->ack_to, sizeof(x->ack_to), "%s", to);
    if (pd_xfer_http(x, url, body, PD_SMALL_BODY_MAX) != 0) {
        pd_xfer_free(x);
        goto leave;
    }
    rc = start(d, x);
leave:
    if (rc != 0)
        sm_err("%s %s: to=<%s>: cannot start the ack (out of memory?)", d->name, id, to);
    free(body);
    return rc;
}

static int start_fetch(pd_domain *d)
{
    sm_listing *it = cur(d);
    char url[4096];
    pd_xfer *x;

    drop_file(d);
    if ((d->fd = open_spool_file(d->ctx->conf.spool_dir)) < 0) {
        outcome(d, it, LOG_ERR, "failed: cannot create a file in %s: %s; retry next cycle",
                d->ctx->conf.spool_dir, strerror(errno));
        return -1;
    }
    snprintf(url, sizeof(url), "%s/v1/message/%s", d->url, it->id);
    if (!(x = pd_xfer_new(d->ctx, d, PD_X_FETCH)))
        goto nomem;
    x->fd = d->fd;
    x->expect = it->size;
    if (pd_xfer_http(x, url, NULL, PD_SMALL_BODY_MAX) != 0) {
        pd_xfer_free(x);
        goto nomem;
    }
    if (start(d, x) != 0)
        goto nomem;
    return 0;
nomem:
    outcome(d, it, LOG_ERR, "failed: cannot start the fetch; retry next cycle");
    drop_file(d);
    return -1;
}

static int start_deliver(pd_domain *d)
{
    sm_listing *it = cur(d);
    char prefix[1024], date[64];
    struct tm tm;
    time_t now = time(NULL);
    pd_xfer *x;

    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    snprintf(prefix, sizeof(prefix),
             "Received: from %s (stubmail outbox) by %s (stubmail-pollerd)\r\n"
             "\twith HTTP id %s for <%s>;\r\n"
             "\t%s\r\n", d->name, d->ctx->conf.domain, it->id, it->to, date);
    if (!(x = pd_xfer_new(d->ctx, d, PD_X_DELIVER))
        || pd_xfer_smtp(x, it->from, it->to, prefix, d->fd, it->size) != 0) {
        pd_xfer_free(x);
        goto fail;
    }
    if (start(d, x) != 0)
        goto fail;
    return 0;
fail:
    outcome(d, it, LOG_ERR, "failed: cannot start the delivery; retry next cycle");
    return -1;
}

/* ---- one listed message ----------------------------------------------- */

/* Was (from, to) asked for in the current chunk? The outbox may list only
 * what we polled for: a sender pattern "*@domain" or the exact address. */
static int pair_polled(pd_domain *d, const sm_listing *it)
{
    sm_pair key;
    const sm_pair *base = d->pairs + d->chunk;

    snprintf(key.to, sizeof(key.to), "%s", it->to);
    snprintf(key.from, sizeof(key.from), "%s", it->from);
    if (bsearch(&key, base, d->chunk_len, sizeof(*base), pair_cmp))
        return 1;
    snprintf(key.from, sizeof(key.from), "*@%s", sm_addr_domain(it->from));
    return bsearch(&key, base, d->chunk_len, sizeof(*base), pair_cmp) != NULL;
}

/* Start the work on the current item; -1 if it is finished already (the
 * outcome is logged). */
static int item_begin(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    sm_listing *it = cur(d);
    int r;

    d->recorded = 0;
    d->delivered_reply[0] = '\0';
    if (!pair_polled(d, it)) {
        outcome(d, it, LOG_ERR, "refused: the outbox listed a pair we did not poll for");
        ctx->n_failed++;
        d->failed = 1;
        return -1;
    }
    r = pd_db_received(ctx, d->name, it->id, it->to);
    if (r < 0) {
        outcome(d, it, LOG_WARNING, "failed: cannot check table received; retry next cycle");
        ctx->n_failed++;
        d->failed = 1;
        return -1;
    }
    if (r > 0) {
        /* delivered before: never again, only (re-)ack */
        d->recorded = 1;
        snprintf(d->delivered_reply, sizeof(d->delivered_reply), "earlier");
        return start_ack(d, it->id, it->to);
    }
    if (ctx->mta_down) {
        outcome(d, it, LOG_WARNING, "failed: the MTA is unreachable this cycle; retry next cycle");
        ctx->n_failed++;
        d->failed = 1;
        return -1;
    }
    if (d->fd >= 0 && !strcmp(d->fd_id, it->id))
        return start_deliver(d);      /* same message, another recipient */
    if (start_fetch(d) != 0) {
        ctx->n_failed++;
        d->failed = 1;
        return -1;
    }
    return 0;
}

static void item_next(pd_domain *d)
{
    d->idx++;
    if (d->idx < d->nitems && d->fd >= 0 && strcmp(d->fd_id, cur(d)->id) != 0)
        drop_file(d);
    step(d);
}

static void fetch_done(pd_domain *d, pd_xfer *x)
{
    sm_listing *it = cur(d);
    curl_off_t cl = -1;
    char why[512];

    if (x->result == CURLE_OK && x->status == 200) {
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        x->content_length = (long long)cl;
        if (cl != (curl_off_t)it->size || x->got != it->size)
            x->length_mismatch = 1;
        else {
            snprintf(d->fd_id, sizeof(d->fd_id), "%s", it->id);
            pd_xfer_free(x);
            if (start_deliver(d) != 0) {
                d->ctx->n_failed++;
                d->failed = 1;
                item_next(d);
            }
            return;
        }
    }
    pd_xfer_describe(x, why, sizeof(why));
    outcome(d, it, LOG_WARNING, "failed: fetch: %s; retry next cycle", why);
    d->ctx->n_failed++;
    d->failed = 1;
    drop_file(d);
    if (domain_wide(x)) {
        pd_xfer_free(x);
        give_up(d);
        return;
    }
    pd_xfer_free(x);
    item_next(d);
}

static void deliver_done(pd_domain *d, pd_xfer *x)
{
    pd_ctx *ctx = d->ctx;
    sm_listing *it = cur(d);
    char why[512];

    if (x->result == CURLE_OK) {
        snprintf(d->delivered_reply, sizeof(d->delivered_reply), "%s",
                 x->reply[0] ? x->reply : "250");
        pd_xfer_free(x);
        ctx->n_delivered++;
        /* record before the ack: a crash after this point acks, never
         * delivers again */
        if (pd_db_record(ctx, d->name, it->id, it->to, it->from, 0) == 0) {
            d->recorded = 1;
        } else if (pd_unrecorded_add(ctx, d->name, it->id, it->to, it->from) == 0) {
            sm_err("%s %s: to=<%s>: delivered but not recorded in the database; kept in "
                   "memory and acked now so it is not listed again", d->name, it->id, it->to);
        } else {
            sm_err("%s %s: to=<%s>: delivered but neither recorded nor remembered; "
                   "acking now", d->name, it->id, it->to);
        }
        if (ctx->stopping) {
            outcome(d, it, LOG_INFO, "delivered (%s), ack at next start", d->delivered_reply);
            finish(d);
            return;
        }
        if (start_ack(d, it->id, it->to) != 0) {
            outcome(d, it, LOG_WARNING, "delivered (%s), ack next cycle", d->delivered_reply);
            item_next(d);
        }
        return;
    }

    pd_xfer_describe(x, why, sizeof(why));
    ctx->n_failed++;
    d->failed = 1;
    if (x->status >= 500 && x->status < 600) {
        outcome(d, it, LOG_ERR, "failed permanently: delivery refused: %s; left unacked "
                "at the outbox (tried again each cycle)", why);
    } else if (x->status >= 400 && x->status < 500) {
        outcome(d, it, LOG_WARNING, "deferred: %s; retry next cycle", why);
    } else {
        outcome(d, it, LOG_WARNING, "failed: delivery: %s; retry next cycle", why);
        if (x->result == CURLE_COULDNT_CONNECT || x->result == CURLE_COULDNT_RESOLVE_HOST
            || x->result == CURLE_OPERATION_TIMEDOUT) {
            if (!ctx->mta_down)
                sm_err("MTA %s unreachable: no more deliveries this cycle",
                       ctx->conf.deliver_to);
            ctx->mta_down = 1;
        }
    }
    pd_xfer_free(x);
    if (ctx->stopping) {
        finish(d);
        return;
    }
    item_next(d);
}

static void ack_done(pd_domain *d, pd_xfer *x)
{
    pd_ctx *ctx = d->ctx;
    int ok = x->result == CURLE_OK && x->status == 200;
    int gone = x->result == CURLE_OK && x->status == 404
               && !strcmp(pd_xfer_error_code(x), "not_found");
    int wide = !ok && !gone && domain_wide(x);
    char why[512];

    if (!ok)
        pd_xfer_describe(x, why, sizeof(why));
    if (ok || gone) {
        /* not_found: the outbox no longer has that recipient (expired or
         * purged); there is nothing left to ack, ever */
        if (pd_db_acked(ctx, d->name, x->ack_id, x->ack_to) != 0)
            sm_warn("%s %s: to=<%s>: acked, but the database did not take it: "
                    "acked again next cycle", d->name, x->ack_id, x->ack_to);
    }

    if (d->state == PD_D_OLD_ACKS) {
        pd_old *o = &d->old[d->old_idx];
        if (ok) {
            ctx->n_acked++;
            sm_info("%s %s: from=<%s> to=<%s>: acked (delivered earlier)", d->name, o->id,
                    o->from, o->to);
        } else if (gone) {
            sm_warn("%s %s: from=<%s> to=<%s>: delivered earlier; the outbox no longer "
                    "knows it (%s): not acked, given up", d->name, o->id, o->from, o->to, why);
        } else {
            ctx->n_failed++;
            d->failed = 1;
            sm_warn("%s %s: from=<%s> to=<%s>: delivered earlier, ack failed: %s; retry "
                    "next cycle", d->name, o->id, o->from, o->to, why);
        }
        pd_xfer_free(x);
        d->old_idx++;
        if (wide)
            give_up(d);
        else
            step(d);
        return;
    }

    /* PD_D_ITEMS */
    {
        sm_listing *it = cur(d);
        int earlier = !strcmp(d->delivered_reply, "earlier");

        if (ok) {
            ctx->n_acked++;
            d->progress++;
            if (earlier)
                outcome(d, it, LOG_INFO, "delivered earlier, acked");
            else
                outcome(d, it, LOG_INFO, "delivered (%s), acked", d->delivered_reply);
        } else if (gone) {
            d->progress++;
            outcome(d, it, LOG_WARNING, "delivered%s%s%s, but the ack says %s: given up",
                    earlier ? " earlier" : " (", earlier ? "" : d->delivered_reply,
                    earlier ? "" : ")", why);
        } else {
            ctx->n_failed++;
            d->failed = 1;
            outcome(d, it, LOG_WARNING, "delivered%s%s%s, ack failed: %s; ack next cycle",
                    earlier ? " earlier" : " (", earlier ? "" : d->delivered_reply,
                    earlier ? "" : ")", why);
        }
        pd_xfer_free(x);
        if (wide)
            give_up(d);
        else
            item_next(d);
    }
}

static void poll_done(pd_domain *d, pd_xfer *x)
{
    sm_parse_error perr;
    char why[512];

    if (x->result != CURLE_OK || x->status != 200) {
        pd_xfer_describe(x, why, sizeof(why));
        sm_err("%s: poll %s/v1/poll failed: %s; retry next cycle", d->name, d->url, why);
        pd_xfer_free(x);
        give_up(d);
        return;
    }
    memset(&perr, 0, sizeof(perr));
    free_items(d);
    if (sm_poll_response_parse(x->body.data ? x->body.data : "", x->body.len, &d->items,
                               &d->nitems, &d->more, &perr) != 0) {
        sm_err("%s: poll answer refused: %s: %s; retry next cycle", d->name,
               perr.code ? perr.code : "?", perr.message);
        pd_xfer_free(x);
        give_up(d);
        return;
    }
    pd_xfer_free(x);
    sm_debug("%s: %zu listed%s", d->name, d->nitems, d->more ? ", more" : "");
    d->state = PD_D_ITEMS;
    d->idx = 0;
    d->progress = 0;
    if (d->nitems && d->fd >= 0 && strcmp(d->fd_id, cur(d)->id) != 0)
        drop_file(d);
    step(d);
}

/* ---- the state machine ------------------------------------------------ */

static void step(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;

    for (;;) {
        if (ctx->stopping) {
            finish(d);
            return;
        }
        switch (d->state) {
        case PD_D_OLD_ACKS:
            if (d->old_idx < d->nold) {
                if (start_ack(d, d->old[d->old_idx].id, d->old[d->old_idx].to) == 0)
                    return;
                d->failed = 1;
                d->old_idx++;
                continue;
            }
            d->state = PD_D_POLL;
            d->chunk = 0;
            d->polls = 0;
            continue;
        case PD_D_POLL:
            if (d->chunk >= d->npairs) {
                finish(d);
                return;
            }
            if (start_poll(d) == 0)
                return;
            give_up(d);
            return;
        case PD_D_ITEMS:
            if (d->idx >= d->nitems) {
                free_items(d);
                d->state = PD_D_POLL;
                if (d->more && d->progress > 0 && d->polls < PD_MAX_POLLS)
                    continue;           /* same chunk again: the rest */
                if (d->more && d->progress > 0)
                    sm_warn("%s: still more after %u polls: the rest waits for the "
                            "next cycle", d->name, d->polls);
                else if (d->more)
                    sm_warn("%s: the outbox has more, but nothing listed could be "
                            "acked: the rest waits for the next cycle", d->name);
                d->chunk += d->chunk_len;
                d->polls = 0;
                continue;
            }
            if (item_begin(d) == 0)
                return;
            d->idx++;
            if (d->idx < d->nitems && d->fd >= 0 && strcmp(d->fd_id, cur(d)->id) != 0)
                drop_file(d);
            continue;
        case PD_D_QUEUED:
        case PD_D_DONE:
            return;
        }
    }
}

void pd_domain_begin(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    int r;

    ctx->active++;
    d->state = PD_D_OLD_ACKS;
    r = pd_db_lock(ctx, d->name);
    if (r <= 0) {
        if (r == 0)
            sm_info("%s: another stubmail-pollerd is working on it, skipped", d->name);
        else
            d->failed = 1;
        finish(d);
        return;
    }
    d->locked = 1;
    if (d->npairs)
        qsort(d->pairs, d->npairs, sizeof(*d->pairs), pair_cmp);
    sm_debug("%s: %zu pairs, %zu unacked deliveries, outbox %s", d->name, d->npairs,
             d->nold, d->url);
    step(d);
}

void pd_domain_xfer_done(pd_xfer *x, CURLcode result)
{
    pd_domain *d = x->dom;

    x->result = result;

    d->x = NULL;
    x->in_multi = 0;
    curl_multi_remove_handle(x->ctx->multi, x->easy);
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    switch (x->kind) {
    case PD_X_POLL:    poll_done(d, x); break;
    case PD_X_FETCH:   fetch_done(d, x); break;
    case PD_X_DELIVER: deliver_done(d, x); break;
    case PD_X_ACK:     ack_done(d, x); break;
    }
}

/* The outcome line of a message whose transfer a stop cuts short. */
static void interrupted(pd_domain *d)
{
    pd_xfer *x = d->x;
    const char *earlier;

    if (!x || x->kind == PD_X_POLL)
        return;
    if (d->state == PD_D_OLD_ACKS) {
        pd_old *o = &d->old[d->old_idx];
        sm_info("%s %s: from=<%s> to=<%s>: delivered earlier, ack interrupted by the stop; "
                "acked at next start", d->name, o->id, o->from, o->to);
        return;
    }
    if (d->state != PD_D_ITEMS || d->idx >= d->nitems)
        return;
    earlier = !strcmp(d->delivered_reply, "earlier") ? "earlier" : NULL;
    switch (x->kind) {
    case PD_X_FETCH:
        outcome(d, cur(d), LOG_INFO, "fetch interrupted by the stop; retry at next start");
        break;
    case PD_X_ACK:
        outcome(d, cur(d), LOG_INFO, "delivered %s%s%s, ack interrupted by the stop; "
                "acked at next start", earlier ? earlier : "(",
                earlier ? "" : d->delivered_reply, earlier ? "" : ")");
        break;
    default:
        break;
    }
}

void pd_domain_stop(pd_domain *d)
{
    if (d->state == PD_D_DONE || d->state == PD_D_QUEUED)
        return;
    if (d->x && d->x->kind == PD_X_DELIVER)
        return;                 /* let the MTA answer; deliver_done finishes */
    interrupted(d);
    finish(d);
}

void pd_domain_abort(pd_domain *d)
{
    if (d->state == PD_D_DONE || d->state == PD_D_QUEUED)
        return;
    if (d->x && d->x->kind == PD_X_DELIVER) {
        d->x->cancel = 1;       /* ends in deliver_done, without the "." */
        return;
    }
    interrupted(d);
    finish(d);
}

void pd_domain_free(pd_domain *d)
{
    if (!d)
        return;
    if (d->x)
        pd_xfer_free(d->x);
    drop_file(d);
    free(d->items);
    free(d->pairs);
    free(d->old);
    free(d->name);
    free(d->url);
    free(d->secret);
    free(d);
}
