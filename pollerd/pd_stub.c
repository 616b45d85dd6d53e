/* pd_stub.c — UDP stubs: pollerd listens on udp_listen, and a stub whose
 * sender some local address book holds makes pollerd poll that sender's
 * domain now instead of at the next interval (docs/PROTOCOL.md "UDP
 * stubs"); stubs from senders nobody knows become introductions when the
 * admin turned them on (stubmailctl intro lists and accepts them).
 *
 * Anyone can send a stub, so a stub is only a hint and costs little:
 * - it never names a URL: the poll goes to the domain's published outbox
 *   (peer row, else DNS), found exactly as in a normal cycle;
 * - many stubs for one domain make one poll (coalesced while one waits),
 *   at most one per stub_interval per domain, and at most stub_rate polls
 *   per second for all domains together; a stub for a domain the running
 *   cycle has yet to poll changes nothing;
 * - but a poll that found mail lifts the domain's stub_interval: a sender
 *   that keeps sending is pulled as its stubs come (the next poll waits
 *   only for the one under way), while stubs that bring nothing, forged
 *   or repeated, still make one poll per stub_interval at most;
 * - a database lookup per stub, at most PD_STUB_LOOKUPS per second; the
 *   rest are dropped (counted);
 * - what is malformed is dropped and counted; the log says so at debug
 *   level, at most one line per PD_STUB_LOG_MS, never one per datagram.
 *
 * The polls themselves run as small cycles of their own (ctx->only names
 * the domains: pd_db_load reads only their pairs), started by the event
 * loop whenever no cycle is running; so a stub that arrives during a cycle
 * gets its poll right after it. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sm_log.h"
#include "sm_stub.h"
#include "pd.h"

#define PD_STUB_DOMAINS_MAX 4096    /* remote domains remembered (known senders' only) */
#define PD_STUB_READ_MAX     256    /* datagrams read per wakeup: the loop stays responsive */
#define PD_STUB_LOOKUPS      200    /* database lookups per second for stubs */
#define PD_STUB_LOG_MS     10000    /* at most one log line per kind this often */
#define PD_STUB_DB_BACKOFF  5000    /* after a database failure, no lookups this long */
#define PD_STUB_RCVBUF   (256 * 1024)

typedef struct pd_stubdom {
    struct pd_stubdom *next;
    char name[SM_DOMAIN_MAX + 1];
    long long last_ms;              /* a stub poll of it last started, 0: never */
    int pending;                    /* a stub poll waits for its turn */
} pd_stubdom;

typedef struct pd_stubs {
    int fd;
    pd_stubdom *doms;
    size_t ndoms;
    double tokens;                  /* stub polls that may start now */
    long long tokens_ms;
    double lookups;                 /* database lookups that may run now */
    long long lookups_ms;
    long long db_down_until;
    /* since start, for the debug summary */
    unsigned long n_ok, n_bad, n_foreign, n_unknown, n_over, n_coalesced;
    /* new introductions since the last line about them */
    unsigned long intro_unlogged;
    long long intro_log_ms;
    char intro_last[2 * SM_ADDR_MAX + 40];
    /* dropped since the last line about it */
    unsigned long bad_unlogged;
    long long bad_log_ms;
} pd_stubs;

static void introduced(pd_stubs *st, size_t n, const char *rcpt, const char *sender, int flush);

int pd_stub_check_conf(pd_conf *c, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *why = "";

    if (c->udp_listen && sm_dns_resolver_parse(c->udp_listen, &ss, &sslen, &why) != 0) {
        snprintf(err, errlen, "udp_listen: \"%s\": %s (IP:PORT or [IPv6]:PORT, a "
                 "specific address)", c->udp_listen, why);
        return -1;
    }
    if (c->stub_interval < 1) {
        snprintf(err, errlen, "stub_interval must be at least 1s");
        return -1;
    }
    if (c->stub_rate < 1 || c->stub_rate > 10000) {
        snprintf(err, errlen, "stub_rate: %ld is not within 1..10000", c->stub_rate);
        return -1;
    }
    if (c->introductions_max < 1 || c->introductions_max > 100000) {
        snprintf(err, errlen, "introductions_max: %ld is not within 1..100000",
                 c->introductions_max);
        return -1;
    }
    return 0;
}

int pd_stub_open(pd_ctx *ctx, char *why, size_t whylen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *bad = "";
    pd_stubs *st;
    int one = 1, rcvbuf = PD_STUB_RCVBUF;

    if (!ctx->conf.udp_listen)
        return 0;
    if (sm_dns_resolver_parse(ctx->conf.udp_listen, &ss, &sslen, &bad) != 0) {
        snprintf(why, whylen, "udp_listen \"%s\": %s", ctx->conf.udp_listen, bad);
        return -1;
    }
    if (!(st = calloc(1, sizeof(*st)))) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    st->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (st->fd < 0) {
        snprintf(why, whylen, "udp_listen %s: socket: %s", ctx->conf.udp_listen,
                 strerror(errno));
        goto fail;
    }
    if (ss.ss_family == AF_INET6)
        setsockopt(st->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* a burst of stubs waits in the kernel, not lost, while a cycle runs */
    setsockopt(st->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (bind(st->fd, (struct sockaddr *)&ss, sslen) != 0) {
        snprintf(why, whylen, "udp_listen %s: bind: %s", ctx->conf.udp_listen, strerror(errno));
        goto fail;
    }
    st->tokens = (double)ctx->conf.stub_rate;
    st->lookups = PD_STUB_LOOKUPS;
    st->tokens_ms = st->lookups_ms = pd_now_ms();
    ctx->stubs = st;
    sm_info("listening for UDP stubs on %s (one poll per domain every %lds at most, "
            "%ld per second in all; introductions %s)", ctx->conf.udp_listen,
            ctx->conf.stub_interval, ctx->conf.stub_rate,
            ctx->conf.introductions ? "on" : "off");
    return 0;
fail:
    if (st->fd >= 0)
        close(st->fd);
    free(st);
    return -1;
}

void pd_stub_close(pd_ctx *ctx)
{
    pd_stubs *st = ctx->stubs;
    pd_stubdom *d, *n;

    if (!st)
        return;
    introduced(st, 0, NULL, NULL, 1);
    sm_debug("stubs: %lu polled or coalesced (%lu coalesced), %lu from unknown senders, "
             "%lu malformed, %lu not for us, %lu over the rate", st->n_ok, st->n_coalesced,
             st->n_unknown, st->n_bad, st->n_foreign, st->n_over);
    for (d = st->doms; d; d = n) {
        n = d->next;
        free(d);
    }
    close(st->fd);
    free(st);
    ctx->stubs = NULL;
}

int pd_stub_fd(const pd_ctx *ctx)
{
    return ctx->stubs ? ctx->stubs->fd : -1;
}

static void src_text(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    char a[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
        snprintf(out, outlen, "%s:%u", a, ntohs(s4->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
        snprintf(out, outlen, "[%s]:%u", a, ntohs(s6->sin6_port));
    } else {
        snprintf(out, outlen, "?");
    }
}

/* A dropped datagram: counted, and told at debug level at most once per
 * PD_STUB_LOG_MS (the first at once, then a summary of the rest). */
static void dropped(pd_stubs *st, const char *src, const char *why)
{
    long long now = pd_now_ms();

    st->bad_unlogged++;
    if (now - st->bad_log_ms < PD_STUB_LOG_MS)
        return;
    if (st->bad_unlogged == 1)
        sm_debug("stub from %s dropped: %s", src, why);
    else
        sm_debug("%lu stubs dropped in the last %llds, the last from %s: %s",
                 st->bad_unlogged, (now - st->bad_log_ms) / 1000, src, why);
    st->bad_unlogged = 0;
    st->bad_log_ms = now;
}

/* New introductions, at info level but at most one line per PD_STUB_LOG_MS:
 * a flood of forged stubs adds at most introductions_max rows per recipient,
 * and not as many log lines. */
static void introduced(pd_stubs *st, size_t n, const char *rcpt, const char *sender, int flush)
{
    long long now = pd_now_ms();

    if (n) {
        st->intro_unlogged += n;
        snprintf(st->intro_last, sizeof(st->intro_last), "<%s> has mail waiting from <%s>",
                 rcpt, sender);
    }
    if (!st->intro_unlogged || (!flush && now - st->intro_log_ms < PD_STUB_LOG_MS))
        return;
    if (st->intro_unlogged == 1)
        sm_info("introduction: %s (not in the address book)", st->intro_last);
    else
        sm_info("%lu new introductions, the last: %s (not in the address book)",
                st->intro_unlogged, st->intro_last);
    st->intro_unlogged = 0;
    st->intro_log_ms = now;
}

static void refill(double *bucket, long long *at, double per_sec, double cap, long long now)
{
    *bucket += (double)(now - *at) * per_sec / 1000.0;
    if (*bucket > cap)
        *bucket = cap;
    *at = now;
}

static pd_stubdom *find_dom(pd_stubs *st, const char *name)
{
    pd_stubdom *d;

    for (d = st->doms; d; d = d->next)
        if (!strcmp(d->name, name))
            return d;
    return NULL;
}

/* The running cycle has yet to start on name: its poll comes anyway. */
static int queued_in_cycle(const pd_ctx *ctx, const char *name)
{
    const pd_domain *d;

    if (!ctx->cycle_running)
        return 0;
    for (d = ctx->domains; d; d = d->next)
        if (!strcmp(d->name, name))
            return d->state == PD_D_QUEUED;
    return 0;
}

/* A remembered domain whose entry says nothing any more (no poll waits, its
 * interval is over), for a new domain to take when the list is full. */
static pd_stubdom *reusable(const pd_ctx *ctx, long long now)
{
    pd_stubdom *d;

    for (d = ctx->stubs->doms; d; d = d->next)
        if (!d->pending && (!d->last_ms || now - d->last_ms >= ctx->conf.stub_interval * 1000LL))
            return d;
    return NULL;
}

static void handle(pd_ctx *ctx, const unsigned char *pkt, size_t len, const char *src)
{
    pd_stubs *st = ctx->stubs;
    const char *rcpts[SM_STUB_RCPT_MAX];
    const char *why = "", *dom;
    static sm_stub stub;            /* 10 KB: not on the stack of every call */
    pd_stubdom *d;
    long long now;
    size_t i, added = 0;
    int known = 0;

    if (sm_stub_parse(pkt, len, &stub, &why) != 0) {
        st->n_bad++;
        dropped(st, src, why);
        return;
    }
    if (strcmp(sm_addr_domain(stub.to[0]), ctx->conf.domain) != 0) {
        st->n_foreign++;
        dropped(st, src, "recipients not at our domain");
        return;
    }
    dom = sm_addr_domain(stub.from);
    if (!strcmp(dom, ctx->conf.domain)) {
        st->n_foreign++;
        dropped(st, src, "sender at our own domain");
        return;
    }
    d = find_dom(st, dom);
    /* nothing a lookup could change: a poll of that domain is coming */
    if (!ctx->conf.introductions && ((d && d->pending) || queued_in_cycle(ctx, dom))) {
        st->n_ok++;
        st->n_coalesced++;
        return;
    }
    now = pd_now_ms();
    refill(&st->lookups, &st->lookups_ms, PD_STUB_LOOKUPS, PD_STUB_LOOKUPS, now);
    if (st->lookups < 1.0 || now < st->db_down_until) {
        st->n_over++;
        dropped(st, src, now < st->db_down_until ? "database unavailable"
                                                  : "more stubs than we look up per second");
        return;
    }
    st->lookups -= 1.0;
    for (i = 0; i < stub.nto; i++)
        rcpts[i] = stub.to[i];
    if (pd_db_connect(ctx) != 0
        || pd_db_stub(ctx, stub.from, rcpts, stub.nto, ctx->conf.introductions, &known,
                      &added) != 0) {
        /* logged; the sender's mail is polled at the next cycle anyway */
        st->db_down_until = now + PD_STUB_DB_BACKOFF;
        return;
    }
    introduced(st, added, stub.to[0], stub.from, 0);
    if (!known) {
        st->n_unknown++;
        return;
    }
    if (!d && st->ndoms >= PD_STUB_DOMAINS_MAX && (d = reusable(ctx, now))) {
        snprintf(d->name, sizeof(d->name), "%s", dom);
        d->last_ms = 0;
    } else if (!d) {
        if (st->ndoms >= PD_STUB_DOMAINS_MAX) {
            st->n_over++;
            dropped(st, src, "too many domains with a stub poll waiting");
            return;
        }
        if (!(d = calloc(1, sizeof(*d)))) {
            sm_err("stub from <%s>: out of memory", stub.from);
            return;
        }
        snprintf(d->name, sizeof(d->name), "%s", dom);
        d->next = st->doms;
        st->doms = d;
        st->ndoms++;
    }
    st->n_ok++;
    if (d->pending || queued_in_cycle(ctx, dom)) {
        st->n_coalesced++;
        return;
    }
    d->pending = 1;
    sm_debug("stub from %s: <%s> to <%s>%s: polling %s", src, stub.from, stub.to[0],
             stub.nto > 1 ? " and others" : "", dom);
}

void pd_stub_read(pd_ctx *ctx)
{
    pd_stubs *st = ctx->stubs;
    unsigned char pkt[SM_STUB_MAX + 1];
    struct sockaddr_storage ss;
    socklen_t sslen;
    char src[INET6_ADDRSTRLEN + 8];
    ssize_t n;
    int i;

    if (!st)
        return;
    for (i = 0; i < PD_STUB_READ_MAX; i++) {
        sslen = sizeof(ss);
        /* MSG_TRUNC: the real length, so an oversized datagram is refused,
         * not parsed cut short */
        n = recvfrom(st->fd, pkt, sizeof(pkt), MSG_TRUNC, (struct sockaddr *)&ss, &sslen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                sm_syserr("udp_listen %s: recvfrom", ctx->conf.udp_listen);
            return;
        }
        src_text(&ss, src, sizeof(src));
        if ((size_t)n > SM_STUB_MAX) {
            st->n_bad++;
            dropped(st, src, "datagram longer than 512 octets");
            continue;
        }
        handle(ctx, pkt, (size_t)n, src);
    }
}

void pd_stub_cycle_all(pd_ctx *ctx)
{
    pd_stubdom *d;

    if (!ctx->stubs)
        return;
    for (d = ctx->stubs->doms; d; d = d->next)
        d->pending = 0;
}

static int due(const pd_ctx *ctx, const pd_stubdom *d, long long now)
{
    return d->pending && (!d->last_ms || now >= d->last_ms + ctx->conf.stub_interval * 1000LL);
}

char *pd_stub_due(pd_ctx *ctx, long long now)
{
    pd_stubs *st = ctx->stubs;
    pd_stubdom *d;
    size_t len = 3, off;
    char *out;

    if (!st)
        return NULL;
    refill(&st->tokens, &st->tokens_ms, (double)ctx->conf.stub_rate,
           (double)ctx->conf.stub_rate, now);
    for (d = st->doms; d; d = d->next)
        if (due(ctx, d, now))
            len += strlen(d->name) + 1;
    if (len == 3 || st->tokens < 1.0)
        return NULL;
    if (!(out = malloc(len))) {
        sm_err("stubs: out of memory");
        return NULL;
    }
    /* domain names hold only letters, digits, '-' and '.': nothing to quote */
    out[0] = '{';
    off = 1;
    for (d = st->doms; d && st->tokens >= 1.0; d = d->next) {
        if (!due(ctx, d, now))
            continue;
        off += (size_t)sprintf(out + off, "%s%s", off > 1 ? "," : "", d->name);
        d->pending = 0;
        d->last_ms = now;
        st->tokens -= 1.0;
    }
    out[off++] = '}';
    out[off] = '\0';
    return out;
}

void pd_stub_found(pd_ctx *ctx, const char *domain)
{
    pd_stubdom *d;

    if (ctx->stubs && (d = find_dom(ctx->stubs, domain)))
        d->last_ms = 0;
}

long long pd_stub_next_ms(const pd_ctx *ctx)
{
    const pd_stubs *st = ctx->stubs;
    const pd_stubdom *d;
    long long next = 0, t, tok;

    if (!st)
        return 0;
    for (d = st->doms; d; d = d->next) {
        if (!d->pending)
            continue;
        t = d->last_ms ? d->last_ms + ctx->conf.stub_interval * 1000LL : 0;
        if (!next || t < next)
            next = t ? t : 1;
    }
    if (next && st->tokens < 1.0) {
        /* the global budget refills at stub_rate per second */
        tok = st->tokens_ms + (long long)((1.0 - st->tokens) * 1000.0 / (double)ctx->conf.stub_rate) + 1;
        if (tok > next)
            next = tok;
    }
    return next;
}
