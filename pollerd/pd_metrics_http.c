/*
 * NAME
 *	pd_metrics_http - pollerd's metrics on a local port (metrics_listen)
 *
 * DESCRIPTION
 *	With metrics_listen IP:PORT set, pollerd answers GET /metrics (and
 *	HEAD) with the text of pd_metrics.c, made from the counters at the
 *	moment of the request, as a Prometheus server scrapes it; any other
 *	path is 404, any other method 405. libmicrohttpd does the HTTP.
 *
 *	It runs inside pollerd's one event loop, with no thread of its own:
 *	the daemon is started in libmicrohttpd's external epoll mode, and the
 *	loop (stubmail-pollerd.c) waits on its epoll fd beside libcurl's
 *	sockets, calls pd_metrics_http_run when that fd is readable or when
 *	libmicrohttpd's timeout (pd_metrics_http_next_ms) comes, and never
 *	sleeps past it. Every socket is non-blocking, so a client that is slow
 *	or sends nothing costs the loop nothing: it holds one of at most
 *	PD_MHTTP_CONNECTIONS connections until PD_MHTTP_IDLE_S of silence
 *	closes it; a connection beyond those is closed at once. A request is
 *	answered as soon as its headers are in: a request body is never read.
 *
 *	That limit is ours (pd_mhttp_accept), not libmicrohttpd's
 *	MHD_OPTION_CONNECTION_LIMIT: at its own limit libmicrohttpd takes the
 *	listening socket out of its epoll set and puts it back only at the
 *	start of a later MHD_run, which nothing would call once the last
 *	connection is gone (no fd ready, no timeout pending): the port would
 *	stay deaf.
 *
 *	A reload (pd_reload.c) stops the daemon before its execv, and
 *	libmicrohttpd makes its sockets close-on-exec besides: the new image
 *	binds the port again (SO_REUSEADDR, libmicrohttpd's default, lets it
 *	while old connections linger in TIME_WAIT).
 *
 * DIAGNOSTICS
 *	metrics_listen that does not parse: a configuration error naming the
 *	key (-n too). A port that cannot be bound at start: an error with
 *	libmicrohttpd's reason, and pollerd does not start. Once started,
 *	libmicrohttpd's own lines (a client gone, the connection limit
 *	reached) are debug lines: a client could otherwise fill the log.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <microhttpd.h>

#include "sm_log.h"
#include "sm_txt.h"
#include "pd.h"

#define PD_MHTTP_CONNECTIONS 8      /* scrapers at once: one or two in practice */
#define PD_MHTTP_IDLE_S 10          /* a connection silent this long is closed */
#define PD_MHTTP_MEMORY (16 * 1024) /* per connection: a scrape's headers fit */
#define PD_MHTTP_PATH "/metrics"
#define PD_MHTTP_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* What libmicrohttpd said while starting: the reason a bind failed. */
static char pd_mhttp_start_why[256];
static int pd_mhttp_starting;
static int pd_mhttp_run_failed;     /* said once */

int pd_metrics_http_check_conf(const pd_conf *c, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *why = "";
    int rc = 0;

    if (c->metrics_listen && sm_dns_resolver_parse(c->metrics_listen, &ss, &sslen, &why) != 0) {
        snprintf(err, errlen, "metrics_listen: \"%s\": %s (IP:PORT or [IPv6]:PORT, a "
                 "specific address)", c->metrics_listen, why);
        rc = -1;
    }
    return rc;
}

/* libmicrohttpd's own lines: kept while it starts (the caller names the
 * reason it did not), debug lines after. */
static void pd_mhttp_log(void *cls, const char *fmt, va_list ap)
{
    const pd_conf *c = cls;
    char line[256];

    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\r\n")] = '\0';
    if (pd_mhttp_starting && !pd_mhttp_start_why[0])
        snprintf(pd_mhttp_start_why, sizeof(pd_mhttp_start_why), "%s", line);
    else
        sm_debug("metrics_listen %s: %s", c->metrics_listen, line);
}

/* A request's method or path as a log line may show it: printable, cut
 * short (libmicrohttpd has decoded %0A and the like in the path). */
static const char *pd_mhttp_loggable(const char *s, char *buf, size_t buflen)
{
    size_t i;

    for (i = 0; s[i] && i + 1 < buflen; i++)
        buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    buf[i] = '\0';
    return buf;
}

/* A new connection: taken while there is room (see above). */
static enum MHD_Result pd_mhttp_accept(void *cls, const struct sockaddr *addr,
                                       socklen_t addrlen)
{
    const pd_ctx *ctx = cls;
    const union MHD_DaemonInfo *info;
    enum MHD_Result rc = MHD_YES;

    (void)addr;
    (void)addrlen;
    info = MHD_get_daemon_info(ctx->metrics_http, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (info && info->num_connections >= PD_MHTTP_CONNECTIONS) {
        /* debug only: a client could otherwise fill the log */
        sm_debug("metrics_listen %s: %u connections already: one more closed",
                 ctx->conf.metrics_listen, info->num_connections);
        rc = MHD_NO;
    }
    return rc;
}

/* A short answer that is not the metrics. */
static enum MHD_Result pd_mhttp_refuse(struct MHD_Connection *conn, unsigned status,
                                       const char *text)
{
    struct MHD_Response *r;
    enum MHD_Result rc = MHD_NO;

    r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r == NULL) {
        sm_err("out of memory for an HTTP %u answer of metrics_listen: connection closed",
               status);
        goto leave;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
leave:
    return rc;
}

/* The metrics, made now. */
static enum MHD_Result pd_mhttp_metrics(const pd_conf *c, struct MHD_Connection *conn)
{
    struct MHD_Response *r = NULL;
    enum MHD_Result rc = MHD_NO;
    size_t len;
    char *text;

    if ((text = pd_metrics_text(&len)) == NULL) {
        sm_err("metrics_listen %s: out of memory for the metrics: answered 500",
               c->metrics_listen);
        rc = pd_mhttp_refuse(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        goto leave;
    }
    r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        sm_err("metrics_listen %s: out of memory for the answer: connection closed",
               c->metrics_listen);
        free(text);
        goto leave;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, PD_MHTTP_TYPE);
    rc = MHD_queue_response(conn, MHD_HTTP_OK, r);
leave:
    if (r)
        MHD_destroy_response(r);
    return rc;
}

/* Every request, answered at its first call (its headers are in): the
 * body of a request, if any, is never read. */
static enum MHD_Result pd_mhttp_request(void *cls, struct MHD_Connection *conn,
                                        const char *url, const char *method,
                                        const char *version, const char *upload_data,
                                        size_t *upload_data_size, void **con_cls)
{
    const pd_conf *c = cls;
    enum MHD_Result rc;
    char shown[80], verb[17];

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    sm_debug("metrics_listen %s: %s %s", c->metrics_listen,
             pd_mhttp_loggable(method, verb, sizeof(verb)),
             pd_mhttp_loggable(url, shown, sizeof(shown)));
    if (strcmp(url, PD_MHTTP_PATH) != 0)
        rc = pd_mhttp_refuse(conn, MHD_HTTP_NOT_FOUND, "not found: the metrics are at "
                             PD_MHTTP_PATH "\n");
    else if (strcmp(method, MHD_HTTP_METHOD_GET) != 0
             && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        rc = pd_mhttp_refuse(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: "
                             "GET or HEAD\n");
    else
        rc = pd_mhttp_metrics(c, conn);
    return rc;
}

int pd_metrics_http_open(pd_ctx *ctx, char *why, size_t whylen)
{
    const pd_conf *c = &ctx->conf;
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *bad = "";
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    uint16_t port;
    int rc = -1;

    if (!c->metrics_listen) {
        rc = 0;
        goto leave;
    }
    if (sm_dns_resolver_parse(c->metrics_listen, &ss, &sslen, &bad) != 0) {
        snprintf(why, whylen, "metrics_listen \"%s\": %s", c->metrics_listen, bad);
        goto leave;
    }
    /* the port again, as libmicrohttpd names it in its bind errors */
    if (ss.ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    } else {
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    pd_mhttp_start_why[0] = '\0';
    pd_mhttp_starting = 1;
    /* the logger first, so that it hears what goes wrong with the others */
    ctx->metrics_http = MHD_start_daemon(flags, port, pd_mhttp_accept, ctx,
                                         pd_mhttp_request, (void *)c,
                                         MHD_OPTION_EXTERNAL_LOGGER, pd_mhttp_log, (void *)c,
                                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)PD_MHTTP_IDLE_S,
                                         MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                         (size_t)PD_MHTTP_MEMORY,
                                         MHD_OPTION_END);
    pd_mhttp_starting = 0;
    if (ctx->metrics_http == NULL) {
        snprintf(why, whylen, "metrics_listen %s: cannot listen: %s", c->metrics_listen,
                 pd_mhttp_start_why[0] ? pd_mhttp_start_why : "libmicrohttpd did not start");
        goto leave;
    }
    sm_info("serving metrics on http://%s%s", c->metrics_listen, PD_MHTTP_PATH);
    rc = 0;
leave:
    return rc;
}

void pd_metrics_http_close(pd_ctx *ctx)
{
    if (ctx->metrics_http) {
        MHD_stop_daemon(ctx->metrics_http);
        ctx->metrics_http = NULL;
    }
}

int pd_metrics_http_fd(const pd_ctx *ctx)
{
    const union MHD_DaemonInfo *info;

    if (!ctx->metrics_http)
        return -1;
    info = MHD_get_daemon_info(ctx->metrics_http, MHD_DAEMON_INFO_EPOLL_FD);
    return info ? info->epoll_fd : -1;
}

long long pd_metrics_http_next_ms(const pd_ctx *ctx)
{
    MHD_UNSIGNED_LONG_LONG ms;

    if (!ctx->metrics_http || MHD_get_timeout(ctx->metrics_http, &ms) != MHD_YES)
        return 0;
    return pd_now_ms() + (long long)ms;
}

void pd_metrics_http_run(pd_ctx *ctx)
{
    if (ctx->metrics_http && MHD_run(ctx->metrics_http) != MHD_YES && !pd_mhttp_run_failed++)
        sm_err("metrics_listen %s: libmicrohttpd could not run (its epoll failed): scrapes "
               "may go unanswered (said once)", ctx->conf.metrics_listen);
}
