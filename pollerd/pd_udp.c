/* pd_udp.c — the UDP lightweight poll, the poller's side (docs/PROTOCOL.md,
 * "UDP poll"): the sockets, the "udp" member of a login answer, sending a
 * question and reading the answers. When to ask and what an answer means
 * for the domain is pd_poll.c's:
 *
 * A login answer may name the outbox's UDP responder with a session and a
 * secret (kept in pd_session). Before the HTTP poll of a domain whose last
 * HTTP poll listed nothing (its ETag is known), one datagram asks whether
 * anything changed since that ETag; the domain waits at most udp_timeout:
 *
 *   "idle"            nothing new: the domain is done for this cycle
 *   "poll"            poll by HTTP now
 *   no or bad answer  poll by HTTP when the time is up
 *
 * So UDP can only ever save an HTTP request, never lose mail: whatever goes
 * wrong ends in the HTTP poll of today. Replies are matched to the waiting
 * domain by their MAC (the answer callback); anything else is dropped
 * (counted at debug level). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "sm_log.h"
#include "pd.h"

typedef struct pd_udp {
    int fd4, fd6;               /* one per family; fd6 -1 without IPv6 */
    unsigned long n_sent, n_idle, n_poll, n_timeout, n_dropped;
} pd_udp;

int pd_udp_open(pd_ctx *ctx)
{
    if (!ctx->conf.udp_poll)
        return 0;
    if (!(ctx->udp = calloc(1, sizeof(*ctx->udp)))) {
        sm_err("out of memory for the UDP poll");
        return -1;
    }
    ctx->udp->fd4 = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ctx->udp->fd4 < 0) {
        sm_syserr("cannot open a UDP socket for the UDP poll");
        free(ctx->udp);
        ctx->udp = NULL;
        return -1;
    }
    /* a host without IPv6 polls IPv4 responders only */
    ctx->udp->fd6 = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ctx->udp->fd6 < 0)
        sm_debug("no IPv6 socket for the UDP poll: %s", strerror(errno));
    return 0;
}

void pd_udp_close(pd_ctx *ctx)
{
    if (!ctx->udp)
        return;
    if (ctx->udp->fd4 >= 0)
        close(ctx->udp->fd4);
    if (ctx->udp->fd6 >= 0)
        close(ctx->udp->fd6);
    free(ctx->udp);
    ctx->udp = NULL;
}

size_t pd_udp_fds(const pd_ctx *ctx, int *fds, size_t max)
{
    size_t n = 0;

    if (ctx->udp && ctx->udp->fd4 >= 0 && n < max)
        fds[n++] = ctx->udp->fd4;
    if (ctx->udp && ctx->udp->fd6 >= 0 && n < max)
        fds[n++] = ctx->udp->fd6;
    return n;
}

/* The "udp" member of a login answer, when there is one. A malformed one
 * costs only the UDP poll: the login itself stands. */
void pd_udp_login_answer(pd_session *s, const char *body, size_t len)
{
    json_t *root = json_loadb(body, len, 0, NULL), *udp, *addr, *sess, *secret;
    const char *why = "", *v;
    size_t i, n;

    OPENSSL_cleanse(s->udp_key, sizeof(s->udp_key));
    s->udp_ok = 0;
    if (!json_is_object(root) || !(udp = json_object_get(root, "udp")))
        goto leave;
    addr = json_object_get(udp, "address");
    sess = json_object_get(udp, "session");
    secret = json_object_get(udp, "secret");
    if (!json_is_string(addr) || !json_is_string(sess) || !json_is_string(secret)) {
        why = "\"address\", \"session\" or \"secret\" missing or not a string";
        goto bad;
    }
    if (sm_dns_resolver_parse(json_string_value(addr), &s->udp_addr, &s->udp_addrlen,
                              &why) != 0)
        goto bad;
    v = json_string_value(sess);
    n = json_string_length(sess);
    for (i = 0; i < n; i++)
        if (!((v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= 'a' && v[i] <= 'z')
              || (v[i] >= '0' && v[i] <= '9') || v[i] == '-' || v[i] == '_'))
            break;
    if (n == 0 || n > SM_UDPPOLL_SESSION_MAX || i != n) {
        why = "\"session\" is not base64url of at most 400 characters";
        goto bad;
    }
    if (sm_udppoll_secret_decode(json_string_value(secret), s->udp_key) != 0) {
        why = "\"secret\" is not 32 octets in base64url";
        goto bad;
    }
    memcpy(s->udp_session, v, n + 1);
    s->udp_ok = 1;
    sm_debug("%s: UDP poll at %s", s->domain, json_string_value(addr));
    goto leave;
bad:
    sm_warn("%s: the login answer's \"udp\" is unusable (%s): polling by HTTP only",
            s->domain, why);
leave:
    json_decref(root);
}

static int udp_socket(pd_ctx *ctx, int family)
{
    return family == AF_INET6 ? ctx->udp->fd6 : ctx->udp->fd4;
}

int pd_udp_ask(pd_ctx *ctx, const pd_session *s, char *mac)
{
    char pkt[SM_UDPPOLL_REQUEST_MAX + 1];
    long n;
    int fd;

    n = sm_udppoll_request_encode(s->udp_key, s->udp_session, s->etag, (long long)time(NULL),
                                  pkt, sizeof(pkt), mac);
    if (n < 0) {
        sm_debug("%s: the ETag %s cannot be a UDP poll cursor: polling by HTTP", s->domain,
                 s->etag);
        return -1;
    }
    if ((fd = udp_socket(ctx, s->udp_addr.ss_family)) < 0)
        return -1;
    if (sendto(fd, pkt, (size_t)n, 0, (const struct sockaddr *)&s->udp_addr,
               s->udp_addrlen) != n) {
        sm_debug("%s: sending the UDP poll failed: %s; polling by HTTP", s->domain,
                 strerror(errno));
        return -1;
    }
    ctx->udp->n_sent++;
    return 0;
}

void pd_udp_unanswered(pd_ctx *ctx)
{
    if (ctx->udp)
        ctx->udp->n_timeout++;
}

/* One datagram: the answer for a waiting domain, or dropped. The MAC
 * alone says whose answer it is (only the responder holds that session's
 * key, and it covers our request's MAC); the source address is not
 * compared, so a responder behind NAT or on a wildcard address works. */
static void udp_answer(pd_ctx *ctx, const unsigned char *pkt, size_t len,
                       pd_udp_answer_fn answer)
{
    switch (answer(ctx, pkt, len)) {
    case SM_UDPPOLL_IDLE:
        ctx->udp->n_idle++;
        break;
    case SM_UDPPOLL_POLL:
        ctx->udp->n_poll++;
        break;
    default:
        /* late (the domain went on by HTTP), forged, or for nobody */
        ctx->udp->n_dropped++;
    }
}

void pd_udp_read(pd_ctx *ctx, pd_udp_answer_fn answer)
{
    unsigned char buf[SM_UDPPOLL_REPLY_LEN + 1];
    struct sockaddr_storage from;
    socklen_t fromlen;
    ssize_t got;
    int fds[2], i, k;
    size_t n;

    n = pd_udp_fds(ctx, fds, 2);
    for (i = 0; i < (int)n; i++) {
        for (k = 0; k < 256; k++) {
            fromlen = sizeof(from);
            /* MSG_TRUNC: a longer datagram shows its real length and is
             * refused, not read cut short */
            got = recvfrom(fds[i], buf, sizeof(buf), MSG_TRUNC, (struct sockaddr *)&from,
                           &fromlen);
            if (got < 0) {
                /* EAGAIN: all read; ECONNREFUSED: an ICMP error for an
                 * earlier datagram (nobody there): the timer handles it */
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNREFUSED
                    && errno != EINTR)
                    sm_debug("UDP poll socket: %s", strerror(errno));
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                continue;
            }
            if ((size_t)got != SM_UDPPOLL_REPLY_LEN) {
                ctx->udp->n_dropped++;
                continue;
            }
            udp_answer(ctx, buf, (size_t)got, answer);
        }
    }
}

void pd_udp_cycle_end(pd_ctx *ctx)
{
    pd_udp *u = ctx->udp;

    if (!u || !(u->n_sent || u->n_dropped))
        return;
    sm_debug("UDP poll this cycle: %lu sent, %lu idle, %lu poll, %lu unanswered, %lu "
             "datagrams dropped", u->n_sent, u->n_idle, u->n_poll, u->n_timeout, u->n_dropped);
    u->n_sent = u->n_idle = u->n_poll = u->n_timeout = u->n_dropped = 0;
}
