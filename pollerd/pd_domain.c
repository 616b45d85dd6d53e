/* pd_domain.c — the work of one cycle for one remote domain.
 *
 * First, in pd_domain_begin: the advisory lock, then where the outbox is and
 * which key signs its mail (sm_discover: peer row, else DNS), then a bearer
 * token (POST /v1/login) unless the one kept from an earlier
 * cycle is still good. Then a small state machine, one transfer at a time,
 * driven by step():
 *
 *   OLD_ACKS  ack what an earlier run delivered (or quarantined) but could
 *             not ack
 *   SUBSCRIBE bring the outbox's subscription in step with the address
 *             book: POST /v1/subscription with only what changed since the
 *             last confirmed version (chunks of batch_max pairs); a reset
 *             when we know nothing (start, failure) or it answers 409
 *   POLL      GET /v1/poll?version=V, with If-None-Match when the last
 *             answer listed nothing: 304 ends the domain's cycle. An outbox
 *             without subscriptions (404) gets POST /v1/poll with the next
 *             chunk of at most batch_max pairs instead
 *   ITEMS     for each listed (id, from, to):
 *               already in table received → ack only
 *               else fetch → verify → deliver → INSERT received → ack →
 *               UPDATE acked_at; or, when it does not verify, quarantine →
 *               INSERT received (quarantined) → ack as rejected
 *             then poll the same chunk again if the answer said "more" and
 *             something was acked, else go on with the next chunk
 *   DONE
 *
 * Around any request: 429 waits for Retry-After and sends it again (a long
 * wait moves the domain to a later cycle); a 401 that says the token is bad
 * or expired logs in again once and sends it again.
 *
 * One log line per message outcome. A transport error, another 401 or a 5xx
 * from the outbox ends the domain's work for this cycle (retried next
 * cycle); a problem with one message skips that message. */
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

#include "sm_discover_pq.h"
#include "sm_log.h"
#include "pd.h"

#define PD_POLL_BODY_MAX (64u * 1024 * 1024)   /* a poll answer */
#define PD_SMALL_BODY_MAX (64u * 1024)          /* ack and login answers, error bodies */
#define PD_MAX_POLLS 1000       /* polls of one chunk per cycle ("more": true) */
#define PD_TOKEN_MARGIN 60      /* seconds: log in again this long before expiry */
#define PD_WAIT_MAX 60          /* seconds of Retry-After waited within a cycle */
#define PD_WAITS_MAX 20         /* 429s of one domain in one cycle */

static void step(pd_domain *d);
static void resume(pd_domain *d, pd_xkind kind);

/* ---- helpers shared with the other files ------------------------------ */

long long pd_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pd_session *pd_session_get(pd_ctx *ctx, const char *domain)
{
    pd_session *s;

    for (s = ctx->sessions; s; s = s->next)
        if (!strcmp(s->domain, domain))
            return s;
    if (strlen(domain) > SM_DOMAIN_MAX || !(s = calloc(1, sizeof(*s)))) {
        sm_err("%s: out of memory for its session", domain);
        return NULL;
    }
    strcpy(s->domain, domain);
    s->next = ctx->sessions;
    ctx->sessions = s;
    return s;
}

void pd_sessions_free(pd_ctx *ctx)
{
    pd_session *s;

    while ((s = ctx->sessions)) {
        ctx->sessions = s->next;
        free(s->sub_pairs);
        free(s);
    }
}

int pd_spool_tmpfile(const char *dir)
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

/* ---- building the domain list ---------------------------------------- */

pd_domain *pd_domain_get(pd_ctx *ctx, const char *name)
{
    pd_domain *d, **pp;

    for (pp = &ctx->domains; (d = *pp); pp = &d->next)
        if (!strcmp(d->name, name))
            return d;
    if (!(d = calloc(1, sizeof(*d))))
        goto nomem;
    d->ctx = ctx;
    d->fd = -1;
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
                      const char *reason)
{
    pd_old *n;

    if (!sm_id_valid(id) || strlen(to) > SM_ADDR_MAX || strlen(from) > SM_ADDR_MAX
        || strlen(reason) > SM_ACK_REASON_MAX) {
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
    d->fd_size = 0;
    d->fd_verified = 0;
    d->fd_reject[0] = '\0';
}

static void free_items(pd_domain *d)
{
    free(d->items);
    d->items = NULL;
    d->nitems = d->idx = 0;
}

static void sub_forget(pd_session *s);

static void sub_plan_free(pd_domain *d)
{
    free(d->sub_add);
    free(d->sub_remove);
    d->sub_add = d->sub_remove = NULL;
    d->sub_nadd = d->sub_nremove = d->sub_add_idx = d->sub_remove_idx = 0;
    d->sub_sent_add = d->sub_sent_remove = 0;
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
    /* A change cut off after some chunks were applied (or while one was
     * under way) leaves the outbox with neither the old set nor the new:
     * diffing against the old one next cycle could skip a pair it lacks
     * (removed here, back in the address book since). Reset instead. */
    if (d->sess && (d->sub_add_idx || d->sub_remove_idx || d->sub_sent_add
                    || d->sub_sent_remove))
        sub_forget(d->sess);
    sub_plan_free(d);
    d->wake_ms = 0;
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
 * (unreachable, login refused, server trouble) rather than one message. */
static int domain_wide(const pd_xfer *x)
{
    if (x->result != CURLE_OK)
        return !(x->kind == PD_X_FETCH && (x->length_mismatch || x->write_errno));
    return x->status == 401 || x->status >= 500 || x->status < 200;
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

/* No token we can still use for this outbox: a token is
 * dropped PD_TOKEN_MARGIN seconds before it expires, so that a request does
 * not carry one that runs out on the way. */
static int login_due(const pd_domain *d)
{
    const pd_session *s = d->sess;

    return !s->token[0] || strcmp(s->url, d->url) != 0
           || time(NULL) + PD_TOKEN_MARGIN >= s->token_expires;
}

/* POST /v1/login; after it, start `after` (PD_X_NONE: go on with step()). */
static int start_login(pd_domain *d, pd_xkind after)
{
    char url[4096], why[512];
    char *body;
    pd_xfer *x = NULL;
    int rc = -1;

    d->sess->token[0] = '\0';
    if (!(body = pd_login_body(d->ctx, d->name, why, sizeof(why)))) {
        sm_err("%s: cannot make the login request: %s; retry next cycle", d->name, why);
        goto leave;
    }
    snprintf(url, sizeof(url), "%s/v1/login", d->url);
    if (!(x = pd_xfer_new(d->ctx, d, PD_X_LOGIN)) || pd_xfer_http(x, url, body, PD_SMALL_BODY_MAX) != 0) {
        sm_err("%s: cannot start the login (out of memory?)", d->name);
        pd_xfer_free(x);
        goto leave;
    }
    if (start(d, x) != 0)
        goto leave;
    d->after_login = after;
    sm_debug("%s: logging in at %s", d->name, url);
    rc = 0;
leave:
    free(body);
    return rc;
}

/* GET /v1/poll?version=V for everything subscribed, conditional when the
 * last answer listed nothing. */
static int start_poll_get(pd_domain *d)
{
    pd_session *s = d->sess;
    char url[4096], inm[PD_ETAG_MAX + 32];
    pd_xfer *x;

    d->chunk = 0;
    d->chunk_len = d->npairs;
    snprintf(url, sizeof(url), "%s/v1/poll?version=%lld", d->url, s->sub_version);
    if (!(x = pd_xfer_new(d->ctx, d, PD_X_POLL)))
        goto nomem;
    if (pd_xfer_http(x, url, NULL, PD_POLL_BODY_MAX) != 0)
        goto nomem;
    snprintf(inm, sizeof(inm), "If-None-Match: %s", s->etag);
    if (s->etag[0] && pd_xfer_header(x, inm) != 0)
        goto nomem;
    if (start(d, x) != 0)
        return -1;
    d->polls++;
    sm_debug("%s: polling subscription version %lld%s%s", d->name, s->sub_version,
             s->etag[0] ? ", if not " : "", s->etag);
    return 0;
nomem:
    pd_xfer_free(x);
    sm_err("%s: cannot start the poll (out of memory?)", d->name);
    return -1;
}

static int start_poll(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    char url[4096];
    char *body;
    pd_xfer *x;
    int rc = -1;

    if (login_due(d))
        return start_login(d, PD_X_POLL);
    /* a UDP "idle" saves the HTTP poll (pd_udp.c); any other outcome comes
     * back here */
    if (pd_udp_poll_start(d) == 0)
        return 0;
    if (!d->sess->legacy)
        return start_poll_get(d);
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

/* What this cycle's subscription change sends: with the outbox's version
 * known, the pairs of the address book it lacks and those it has that the
 * address book no longer does (both lists sorted, so one merge walk);
 * otherwise a reset to the whole address book. 0, or -1 out of memory. */
static int sub_plan(pd_domain *d)
{
    const pd_session *s = d->sess;
    size_t i, j, nadd = 0, nremove = 0;
    int c, pass;

    sub_plan_free(d);
    d->sub_reset = !s->sub_known;
    if (d->sub_reset) {
        if (d->npairs && !(d->sub_add = malloc(d->npairs * sizeof(*d->sub_add))))
            goto nomem;
        if (d->npairs)
            memcpy(d->sub_add, d->pairs, d->npairs * sizeof(*d->sub_add));
        d->sub_nadd = d->npairs;
        return 0;
    }
    /* Pass 0 counts, pass 1 copies: a pair is some 640 octets, and most
     * cycles change nothing, so nothing is allocated for them. */
    for (pass = 0; pass < 2; pass++) {
        for (i = j = 0; i < d->npairs || j < s->sub_npairs;) {
            c = i >= d->npairs ? 1 : j >= s->sub_npairs ? -1
                : pair_cmp(&d->pairs[i], &s->sub_pairs[j]);
            if (c < 0) {
                if (pass)
                    d->sub_add[d->sub_nadd++] = d->pairs[i];
                else
                    nadd++;
                i++;
            } else if (c > 0) {
                if (pass)
                    d->sub_remove[d->sub_nremove++] = s->sub_pairs[j];
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
        if ((nadd && !(d->sub_add = malloc(nadd * sizeof(*d->sub_add))))
            || (nremove && !(d->sub_remove = malloc(nremove * sizeof(*d->sub_remove)))))
            goto nomem;
    }
    return 0;
nomem:
    sm_err("%s: out of memory for the subscription change", d->name);
    sub_plan_free(d);
    return -1;
}

/* POST /v1/subscription with the next chunk of the plan: removals first,
 * at most batch_max pairs in all. */
static int start_subscribe(pd_domain *d)
{
    pd_session *s = d->sess;
    size_t room = (size_t)d->ctx->conf.batch_max, nrem, nadd;
    char url[4096];
    char *body = NULL;
    pd_xfer *x = NULL;
    int rc = -1;

    if (login_due(d))
        return start_login(d, PD_X_SUBSCRIBE);
    nrem = d->sub_nremove - d->sub_remove_idx;
    if (nrem > room)
        nrem = room;
    nadd = d->sub_nadd - d->sub_add_idx;
    if (nadd > room - nrem)
        nadd = room - nrem;
    if (!(body = sm_subscription_request_encode(d->sub_reset, s->sub_version,
                                                d->sub_add + d->sub_add_idx, nadd,
                                                d->sub_remove + d->sub_remove_idx, nrem)))
        goto leave;
    snprintf(url, sizeof(url), "%s/v1/subscription", d->url);
    if (!(x = pd_xfer_new(d->ctx, d, PD_X_SUBSCRIBE)))
        goto leave;
    if (pd_xfer_http(x, url, body, PD_SMALL_BODY_MAX) != 0) {
        pd_xfer_free(x);
        goto leave;
    }
    if (start(d, x) != 0)
        goto leave;
    d->sub_sent_add = nadd;
    d->sub_sent_remove = nrem;
    if (d->sub_reset)
        sm_debug("%s: subscription reset, %zu pairs (%zu..%zu of %zu)", d->name, nadd,
                 d->sub_add_idx + 1, d->sub_add_idx + nadd, d->sub_nadd);
    else
        sm_debug("%s: subscription change from version %lld: %zu added, %zu removed",
                 d->name, s->sub_version, nadd, nrem);
    rc = 0;
leave:
    if (rc != 0 && !x)
        sm_err("%s: cannot start the subscription change (out of memory?)", d->name);
    free(body);
    return rc;
}

/* Ack (id, to): delivered, or rejected for reason when reason is not "". */
static int start_ack(pd_domain *d, const char *id, const char *to, const char *reason)
{
    char url[4096];
    char *body = NULL;
    pd_xfer *x = NULL;
    int rc = -1;

    if (login_due(d))
        return start_login(d, PD_X_ACK);
    if (!(body = sm_ack_request_encode(to, reason[0] ? reason : NULL)))
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

    if (login_due(d))
        return start_login(d, PD_X_FETCH);
    drop_file(d);
    if ((d->fd = pd_spool_tmpfile(d->ctx->conf.spool_dir)) < 0) {
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

/* The headers pollerd puts above the message: for a verified one the
 * Authentication-Results of docs/PROTOCOL.md (folded: addresses are up to
 * 320 octets), then the Received trace header. Any Authentication-Results
 * in the message that claims to be ours is left out, verified or not. */
static int start_deliver(pd_domain *d)
{
    sm_listing *it = cur(d);
    char prefix[2048], date[64], why[256];
    struct tm tm;
    time_t now = time(NULL);
    pd_xfer *x = NULL;
    sm_range *skips = NULL;
    size_t nskips = 0;
    int n = 0;

    if (pd_forged_results(d->fd, d->ctx->conf.domain, &skips, &nskips, why, sizeof(why)) != 0) {
        outcome(d, it, LOG_ERR, "failed: %s; retry next cycle", why);
        return -1;
    }
    if (nskips)
        outcome(d, it, LOG_WARNING, "%zu Authentication-Results header%s claiming to be "
                "ours removed", nskips, nskips == 1 ? "" : "s");

    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    if (d->fd_verified)
        n = snprintf(prefix, sizeof(prefix),
                     "Authentication-Results: %s; stubmail=pass\r\n"
                     "\tsmtp.mailfrom=%s header.d=%s\r\n"
                     "\t(key %s)\r\n", d->ctx->conf.domain, it->from, d->name, d->fpr);
    snprintf(prefix + n, sizeof(prefix) - (size_t)n,
             "Received: from %s (stubmail outbox) by %s (stubmail-pollerd)\r\n"
             "\twith HTTP id %s for <%s>;\r\n"
             "\t%s\r\n", d->name, d->ctx->conf.domain, it->id, it->to, date);
    if (!(x = pd_xfer_new(d->ctx, d, PD_X_DELIVER))) {
        free(skips);
        goto fail;
    }
    if (pd_xfer_smtp(x, it->from, it->to, prefix, d->fd, d->fd_size, skips, nskips) != 0) {
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

/* start_deliver, counting a failure to start as a failed message. */
static int deliver(pd_domain *d)
{
    if (start_deliver(d) == 0)
        return 0;
    d->ctx->n_failed++;
    d->failed = 1;
    return -1;
}

static int reject(pd_domain *d, const char *reason, const char *detail);

/* Start the work on the current item; -1 if it is finished already (the
 * outcome is logged). */
static int item_begin(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    sm_listing *it = cur(d);
    int r;

    d->recorded = 0;
    d->delivered_reply[0] = '\0';
    d->item_reason[0] = '\0';
    if (!pair_polled(d, it)) {
        outcome(d, it, LOG_ERR, "refused: the outbox listed a pair we did not poll for");
        ctx->n_failed++;
        d->failed = 1;
        return -1;
    }
    r = pd_db_received(ctx, d->name, it->id, it->to, d->item_reason);
    if (r < 0) {
        outcome(d, it, LOG_WARNING, "failed: cannot check table received; retry next cycle");
        ctx->n_failed++;
        d->failed = 1;
        return -1;
    }
    if (r > 0) {
        /* delivered or quarantined before: never again, only (re-)ack */
        d->recorded = 1;
        snprintf(d->delivered_reply, sizeof(d->delivered_reply), "earlier");
        return start_ack(d, it->id, it->to, d->item_reason);
    }
    if (d->fd >= 0 && !strcmp(d->fd_id, it->id) && d->fd_reject[0])
        return reject(d, d->fd_reject, "as for the recipient before");
    if (ctx->mta_down) {
        outcome(d, it, LOG_WARNING, "failed: the MTA is unreachable this cycle; retry next cycle");
        ctx->n_failed++;
        d->failed = 1;
        return -1;
    }
    if (d->fd >= 0 && !strcmp(d->fd_id, it->id))
        return deliver(d);            /* same message, another recipient */
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

/* Never deliver it to this recipient: keep the body in quarantine_dir,
 * record it, then ack it as rejected so that the sender's ISP and the sender
 * see it. -1 if the item is finished (outcome logged). */
static int reject_recipient(pd_domain *d, const char *reason, const char *detail)
{
    pd_ctx *ctx = d->ctx;
    sm_listing *it = cur(d);
    char why[512];

    snprintf(d->item_reason, sizeof(d->item_reason), "%s", reason);
    if (pd_quarantine(ctx, d->name, it->id, d->fd, why, sizeof(why)) != 0) {
        outcome(d, it, LOG_ERR, "failed: not delivered (%s: %s) and cannot be quarantined: "
                "%s; retry next cycle", reason, detail, why);
        goto failed;
    }
    if (pd_db_record(ctx, d->name, it->id, it->to, it->from, 0, reason) != 0) {
        outcome(d, it, LOG_ERR, "failed: quarantined (%s: %s) but not recorded in the "
                "database; retry next cycle", reason, detail);
        goto failed;
    }
    d->recorded = 1;
    ctx->n_quarantined++;
    outcome(d, it, LOG_WARNING, "quarantined as %s/%s-%s, not delivered: %s (%s)",
            ctx->conf.quarantine_dir, d->name, it->id, reason, detail);
    return start_ack(d, it->id, it->to, reason);
failed:
    ctx->n_failed++;
    d->failed = 1;
    return -1;
}

/* The body itself is bad (it does not verify): every recipient of it is
 * rejected for the same reason. */
static int reject(pd_domain *d, const char *reason, const char *detail)
{
    if (reason != d->fd_reject)
        snprintf(d->fd_reject, sizeof(d->fd_reject), "%s", reason);
    return reject_recipient(d, reason, detail);
}

/* The body of the current item is complete in d->fd: verify it where it
 * must be, then deliver or quarantine it. 0 when a transfer started; -1 if
 * the item is finished (outcome logged); -2 if the domain gave up. */
static int fetched(pd_domain *d, int openpgp)
{
    pd_ctx *ctx = d->ctx;
    sm_listing *it = cur(d);
    char reason[SM_ACK_REASON_MAX + 1], detail[512];
    int r;

    snprintf(d->fd_id, sizeof(d->fd_id), "%s", it->id);
    d->fd_size = it->size;
    if (!openpgp)
        return reject(d, "unsigned", "a plain message, but we take only signed and encrypted ones");
    /* the key stays in the keyring: this is a fetch only the first time */
    if (!d->key_ok && sm_keyfetch(ctx->conf.gnupg_home, d->url, d->fpr, &ctx->conf.https,
                                  detail, sizeof(detail)) != 0) {
        outcome(d, it, LOG_ERR, "failed: no domain key %s of %s to verify with: %s; retry "
                "next cycle", d->fpr, d->name, detail);
        ctx->n_failed++;
        drop_file(d);
        give_up(d);
        return -2;
    }
    d->key_ok = 1;
    r = pd_verify(ctx, d->fpr, &d->fd, &d->fd_size, reason, detail, sizeof(detail));
    if (r == SM_PGP_OK) {
        d->fd_verified = 1;
        return deliver(d);
    }
    if (r == SM_PGP_REJECT)
        return reject(d, reason, detail);
    outcome(d, it, LOG_ERR, "failed: cannot verify it here: %s; retry next cycle", detail);
    ctx->n_failed++;
    d->failed = 1;
    drop_file(d);
    return -1;
}

static void fetch_done(pd_domain *d, pd_xfer *x)
{
    sm_listing *it = cur(d);
    curl_off_t cl = -1;
    char why[512];
    int openpgp = x->openpgp;

    if (x->result == CURLE_OK && x->status == 200) {
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        x->content_length = (long long)cl;
        if (cl != (curl_off_t)it->size || x->got != it->size)
            x->length_mismatch = 1;
        else {
            pd_xfer_free(x);
            if (fetched(d, openpgp) == -1)
                item_next(d);
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
        if (pd_db_record(ctx, d->name, it->id, it->to, it->from, 0, NULL) == 0) {
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
        if (start_ack(d, it->id, it->to, "") != 0) {
            outcome(d, it, LOG_WARNING, "delivered (%s), ack next cycle", d->delivered_reply);
            item_next(d);
        }
        return;
    }

    pd_xfer_describe(x, why, sizeof(why));
    if (x->status >= 500 && x->status < 600) {
        /* Retrying cannot change a permanent refusal: tell the sender's ISP
         * as for a message that does not verify, for this recipient only. */
        char reason[SM_ACK_REASON_MAX + 1];

        /* a long reply is cut to what the ack can carry */
        if (snprintf(reason, sizeof(reason), "refused by %s: %s", ctx->conf.domain,
                     x->reply) < 0)
            snprintf(reason, sizeof(reason), "refused by %s", ctx->conf.domain);
        pd_xfer_free(x);
        if (ctx->stopping) {
            finish(d);
            return;
        }
        if (reject_recipient(d, reason, why) != 0)
            item_next(d);
        return;
    }
    ctx->n_failed++;
    d->failed = 1;
    if (x->status >= 400 && x->status < 500) {
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
    char why[512] = "", what[SM_ACK_REASON_MAX + 300];
    const char *from, *to, *reason;

    if (!ok)
        pd_xfer_describe(x, why, sizeof(why));
    if (ok || gone) {
        /* not_found: the outbox no longer has that recipient (expired or
         * purged); there is nothing left to ack, ever */
        if (pd_db_acked(ctx, d->name, x->ack_id, x->ack_to) != 0)
            sm_warn("%s %s: to=<%s>: acked, but the database did not take it: "
                    "acked again next cycle", d->name, x->ack_id, x->ack_to);
    }

    /* what happened to the message before this ack, for the outcome line */
    if (d->state == PD_D_OLD_ACKS) {
        pd_old *o = &d->old[d->old_idx];
        from = o->from;
        to = o->to;
        reason = o->reason;
        snprintf(what, sizeof(what), "%s earlier%s%s%s", reason[0] ? "quarantined" : "delivered",
                 reason[0] ? " (" : "", reason, reason[0] ? ")" : "");
    } else {
        int earlier = !strcmp(d->delivered_reply, "earlier");
        from = cur(d)->from;
        to = cur(d)->to;
        reason = d->item_reason;
        if (reason[0])
            snprintf(what, sizeof(what), "quarantined%s (%s), rejected", earlier ? " earlier" : "",
                     reason);
        else if (earlier)
            snprintf(what, sizeof(what), "delivered earlier");
        else
            snprintf(what, sizeof(what), "delivered (%s)", d->delivered_reply);
    }
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
    pd_xfer_free(x);
    if (d->state == PD_D_OLD_ACKS)
        d->old_idx++;
    else if (ok || gone)
        d->progress++;
    if (wide)
        give_up(d);
    else if (d->state == PD_D_OLD_ACKS)
        step(d);
    else
        item_next(d);
}

/* Forget what we know of the outbox's subscription: the next change is a
 * reset. */
static void sub_forget(pd_session *s)
{
    s->sub_known = 0;
    s->etag[0] = '\0';
}

/* After a 409: once per cycle, reset the subscription and poll again. */
static void sub_restart(pd_domain *d, const char *what)
{
    sub_forget(d->sess);
    if (++d->sub_resets > 1) {
        sm_err("%s: %s: the subscription changed under us again; retry next cycle",
               d->name, what);
        give_up(d);
        return;
    }
    sm_info("%s: %s: the outbox's subscription is not the one we know: resetting it",
            d->name, what);
    d->state = PD_D_SUBSCRIBE;
    if (sub_plan(d) != 0) {
        give_up(d);
        return;
    }
    step(d);
}

static void subscribe_done(pd_domain *d, pd_xfer *x)
{
    pd_session *s = d->sess;
    sm_parse_error perr;
    long long version;
    char why[512];
    sm_pair *n = NULL;

    if (x->result == CURLE_OK && x->status == 404
        && !strcmp(pd_xfer_error_code(x), "no_such_endpoint")) {
        sm_info("%s: the outbox has no subscriptions: polling with pairs", d->name);
        pd_xfer_free(x);
        s->legacy = 1;
        sub_forget(s);
        sub_plan_free(d);
        d->state = PD_D_POLL;
        d->chunk = 0;
        d->polls = 0;
        step(d);
        return;
    }
    if (x->result == CURLE_OK && x->status == 409
        && !strcmp(pd_xfer_error_code(x), "subscription_changed")) {
        pd_xfer_free(x);
        sub_restart(d, "subscription change refused (409)");
        return;
    }
    if (x->result != CURLE_OK || x->status != 200) {
        pd_xfer_describe(x, why, sizeof(why));
        sm_err("%s: subscription change at %s/v1/subscription failed: %s; retry next "
               "cycle%s", d->name, d->url, why,
               x->status == 413 ? " (is batch_max above the outbox's StubmailMaxPairs?)" : "");
        pd_xfer_free(x);
        /* it may or may not have been applied: start over next time */
        sub_forget(s);
        give_up(d);
        return;
    }
    memset(&perr, 0, sizeof(perr));
    if (sm_version_parse(x->body.data ? x->body.data : "", x->body.len, &version,
                         &perr) != 0) {
        sm_err("%s: subscription answer refused: %s; retry next cycle", d->name,
               perr.message);
        pd_xfer_free(x);
        sub_forget(s);
        give_up(d);
        return;
    }
    pd_xfer_free(x);
    s->sub_version = version;
    s->etag[0] = '\0';
    d->sub_reset = 0;           /* the next chunks change what this one set */
    d->sub_add_idx += d->sub_sent_add;
    d->sub_remove_idx += d->sub_sent_remove;
    d->sub_sent_add = d->sub_sent_remove = 0;
    if (d->sub_add_idx < d->sub_nadd || d->sub_remove_idx < d->sub_nremove) {
        step(d);
        return;
    }
    /* all of it confirmed: the outbox now has exactly the address book */
    if (d->npairs && !(n = malloc(d->npairs * sizeof(*n)))) {
        sm_err("%s: out of memory for the subscription", d->name);
        sub_forget(s);
        give_up(d);
        return;
    }
    free(s->sub_pairs);
    s->sub_pairs = d->npairs ? n : NULL;
    if (d->npairs)
        memcpy(s->sub_pairs, d->pairs, d->npairs * sizeof(*n));
    s->sub_npairs = d->npairs;
    s->sub_known = 1;
    sm_info("%s: subscription at version %lld, %zu pairs", d->name, version, d->npairs);
    sub_plan_free(d);
    step(d);
}

static void poll_done(pd_domain *d, pd_xfer *x)
{
    sm_parse_error perr;
    char why[512];
    long long version;
    int get = !d->sess->legacy;

    if (get && x->result == CURLE_OK && x->status == 304) {
        sm_debug("%s: nothing new (%s)", d->name, d->sess->etag);
        pd_xfer_free(x);
        finish(d);
        return;
    }
    if (get && x->result == CURLE_OK && x->status == 409
        && !strcmp(pd_xfer_error_code(x), "subscription_changed")) {
        pd_xfer_free(x);
        sub_restart(d, "poll refused (409)");
        return;
    }
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
    if (get) {
        if (sm_version_parse(x->body.data, x->body.len, &version, &perr) != 0)
            snprintf(why, sizeof(why), "%s", perr.message[0] ? perr.message : "no version");
        else if (version != d->sess->sub_version)
            snprintf(why, sizeof(why), "it is for version %lld", version);
        else
            why[0] = '\0';
        if (why[0]) {
            sm_err("%s: poll answer refused: not for subscription version %lld (%s); retry "
                   "next cycle", d->name, d->sess->sub_version, why);
            pd_xfer_free(x);
            sub_forget(d->sess);
            give_up(d);
            return;
        }
        /* Only an answer that listed nothing makes the next poll
         * conditional: what is listed now leaves the pending set when it
         * is acked (a new ETag), and what could not be finished must be
         * listed again even if nothing changed. */
        if (d->nitems == 0 && !d->more)
            snprintf(d->sess->etag, sizeof(d->sess->etag), "%s", x->etag);
        else
            d->sess->etag[0] = '\0';
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

static void login_done(pd_domain *d, pd_xfer *x)
{
    char why[512];

    if (x->result != CURLE_OK || x->status != 200) {
        pd_xfer_describe(x, why, sizeof(why));
        sm_err("%s: login at %s/v1/login failed: %s; retry next cycle", d->name, d->url, why);
        pd_xfer_free(x);
        give_up(d);
        return;
    }
    if (pd_login_answer(d->sess, x->body.data ? x->body.data : "", x->body.len, why,
                        sizeof(why)) != 0) {
        sm_err("%s: login answer refused: %s; retry next cycle", d->name, why);
        pd_xfer_free(x);
        give_up(d);
        return;
    }
    pd_udp_login_answer(d->sess, x->body.data ? x->body.data : "", x->body.len);
    pd_xfer_free(x);
    if (strcmp(d->sess->url, d->url) != 0) {
        /* another outbox: what the old one confirmed says nothing here */
        sub_forget(d->sess);
        d->sess->legacy = 0;
    }
    snprintf(d->sess->url, sizeof(d->sess->url), "%s", d->url);
    sm_info("%s: logged in, token good for %lds", d->name,
            (long)(d->sess->token_expires - time(NULL)));
    resume(d, d->after_login);
}

/* ---- the state machine ------------------------------------------------ */

void pd_domain_udp_idle(pd_domain *d)
{
    sm_debug("%s: UDP poll says nothing new since %s: no HTTP poll this cycle", d->name,
             d->sess->etag);
    finish(d);
}

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
                pd_old *o = &d->old[d->old_idx];
                if (start_ack(d, o->id, o->to, o->reason) == 0)
                    return;
                d->failed = 1;
                d->old_idx++;
                continue;
            }
            d->state = PD_D_SUBSCRIBE;
            d->chunk = 0;
            d->polls = 0;
            if (d->npairs && !d->sess->legacy && sub_plan(d) != 0) {
                give_up(d);
                return;
            }
            continue;
        case PD_D_SUBSCRIBE:
            if (d->npairs && !d->sess->legacy
                && (d->sub_reset || d->sub_add_idx < d->sub_nadd
                    || d->sub_remove_idx < d->sub_nremove)) {
                if (start_subscribe(d) == 0)
                    return;
                sub_forget(d->sess);
                give_up(d);
                return;
            }
            sub_plan_free(d);
            d->state = PD_D_POLL;
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

/* Start the request `kind` again (after a login or a wait). */
static void resume(pd_domain *d, pd_xkind kind)
{
    int rc = 0;

    switch (kind) {
    case PD_X_NONE:
        step(d);
        return;
    case PD_X_LOGIN:
        rc = start_login(d, d->after_login);
        break;
    case PD_X_POLL:
        if (d->polls > 0)
            d->polls--;         /* the same poll once more, not another one */
        rc = start_poll(d);
        break;
    case PD_X_SUBSCRIBE:
        rc = start_subscribe(d);
        break;
    case PD_X_FETCH:
        rc = start_fetch(d);
        break;
    case PD_X_ACK:
        if (d->state == PD_D_OLD_ACKS)
            rc = start_ack(d, d->old[d->old_idx].id, d->old[d->old_idx].to,
                           d->old[d->old_idx].reason);
        else
            rc = start_ack(d, cur(d)->id, cur(d)->to, d->item_reason);
        break;
    case PD_X_DELIVER:
        break;                  /* never repeated: see deliver_done */
    }
    if (rc != 0) {
        d->failed = 1;
        finish(d);
    }
}

/* Where the outbox is and which key signs its mail.
 * 0, or -1 when the domain is skipped this cycle (logged; d->failed set
 * when that is a failure rather than "nothing to do"). */
static int discover(pd_domain *d)
{
    const pd_conf *c = &d->ctx->conf;
    sm_peer_info peer;
    char why[512];
    size_t l;

    if (sm_discover(d->ctx->db, c->resolver, d->name, &peer, why, sizeof(why)) != 0
        || peer.status == SM_DNS_TEMPFAIL) {
        sm_warn("%s: discovery failed: %s; skipped this cycle", d->name, why);
        d->failed = 1;
        return -1;
    }
    if (!peer.outbox[0]) {
        /* most contact domains take no part: worth a warning only when
         * the admin named it or its record is broken */
        sm_log(peer.from_peer_table || peer.status == SM_DNS_INVALID ? LOG_WARNING
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

void pd_domain_begin(pd_domain *d)
{
    pd_ctx *ctx = d->ctx;
    int r;

    ctx->active++;
    d->state = PD_D_OLD_ACKS;
    if (!(d->sess = pd_session_get(ctx, d->name))) {
        d->failed = 1;
        finish(d);
        return;
    }
    if (d->sess->not_before_ms > pd_now_ms()) {
        sm_info("%s: the outbox asked us to wait another %llds: skipped", d->name,
                (d->sess->not_before_ms - pd_now_ms() + 999) / 1000);
        finish(d);
        return;
    }
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
    if (discover(d) != 0) {
        finish(d);
        return;
    }
    if (d->npairs) {
        size_t i, n = 1;

        qsort(d->pairs, d->npairs, sizeof(*d->pairs), pair_cmp);
        /* two address book rows can normalise to one pair: the
         * subscription is a set */
        for (i = 1; i < d->npairs; i++)
            if (pair_cmp(&d->pairs[i], &d->pairs[n - 1]) != 0)
                d->pairs[n++] = d->pairs[i];
        d->npairs = n;
    }
    sm_debug("%s: %zu pairs, %zu unacked deliveries, outbox %s%s%s", d->name, d->npairs,
             d->nold, d->url, d->fpr[0] ? ", key " : "", d->fpr);
    if (login_due(d)) {
        if (start_login(d, PD_X_NONE) != 0)
            give_up(d);
        return;
    }
    step(d);
}

/* 429: wait as long as Retry-After says and send it again; a long wait (or
 * too many) ends the domain's cycle, and the next cycle does not poll it
 * before the time has come. Not a failure. */
static void too_soon(pd_domain *d, pd_xfer *x)
{
    curl_off_t wait = 0;
    pd_xkind kind = x->kind;

    curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &wait);
    pd_xfer_free(x);
    if (wait < 1)
        wait = 1;
    d->sess->not_before_ms = pd_now_ms() + (long long)wait * 1000;
    if (wait > PD_WAIT_MAX || ++d->waits > PD_WAITS_MAX) {
        sm_info("%s: the outbox says too soon (Retry-After %llds, %u times this cycle): "
                "next cycle", d->name, (long long)wait, d->waits);
        finish(d);
        return;
    }
    sm_debug("%s: too soon, sending it again in %llds", d->name, (long long)wait);
    d->redo = kind;
    d->wake_ms = d->sess->not_before_ms;
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

long long pd_domain_wake(pd_domain *d, long long now_ms)
{
    if (!d->wake_ms || d->state == PD_D_DONE || d->state == PD_D_QUEUED)
        return 0;
    if (now_ms < d->wake_ms)
        return d->wake_ms;
    d->wake_ms = 0;
    resume(d, d->redo);
    return 0;
}

void pd_domain_xfer_done(pd_xfer *x, CURLcode result)
{
    pd_domain *d = x->dom;

    x->result = result;

    d->x = NULL;
    x->in_multi = 0;
    curl_multi_remove_handle(x->ctx->multi, x->easy);
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->kind != PD_X_DELIVER && result == CURLE_OK) {
        if (x->status == 429) {
            too_soon(d, x);
            return;
        }
        if (relogin_wanted(d, x)) {
            sm_info("%s: the outbox says %s: logging in again", d->name, pd_xfer_error_code(x));
            d->relogged = 1;
            if (start_login(d, x->kind) != 0)
                give_up(d);
            pd_xfer_free(x);
            return;
        }
        if (x->kind != PD_X_LOGIN && x->status >= 200 && x->status < 300)
            d->relogged = 0;
    }
    switch (x->kind) {
    case PD_X_NONE:    break;
    case PD_X_LOGIN:   login_done(d, x); break;
    case PD_X_POLL:    poll_done(d, x); break;
    case PD_X_FETCH:   fetch_done(d, x); break;
    case PD_X_DELIVER: deliver_done(d, x); break;
    case PD_X_ACK:     ack_done(d, x); break;
    case PD_X_SUBSCRIBE: subscribe_done(d, x); break;
    }
}

/* The outcome line of a message whose transfer a stop cuts short. */
static void interrupted(pd_domain *d)
{
    pd_xfer *x = d->x;
    const char *earlier;

    if (!x || x->kind == PD_X_POLL || x->kind == PD_X_LOGIN || x->kind == PD_X_SUBSCRIBE)
        return;
    if (d->state == PD_D_OLD_ACKS) {
        pd_old *o = &d->old[d->old_idx];
        sm_info("%s %s: from=<%s> to=<%s>: %s earlier, ack interrupted by the stop; "
                "acked at next start", d->name, o->id, o->from, o->to,
                o->reason[0] ? "quarantined" : "delivered");
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
        if (d->item_reason[0])
            outcome(d, cur(d), LOG_INFO, "quarantined (%s), ack interrupted by the stop; "
                    "acked at next start", d->item_reason);
        else
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
    sub_plan_free(d);
    free(d->items);
    free(d->pairs);
    free(d->old);
    free(d->name);
    free(d->url);
    free(d);
}
