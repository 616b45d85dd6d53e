/*
 * NAME
 *	mod_stubmail - Apache httpd 2.4 module serving a stubmail outbox
 *
 * SYNOPSIS
 *	LoadModule dbd_module      modules/mod_dbd.so
 *	LoadModule stubmail_module modules/mod_stubmail.so
 *	DBDriver pgsql
 *	DBDParams "host=... dbname=... user=..."
 *	<Location /stubmail>
 *	    SetHandler stubmail
 *	</Location>
 *
 * DESCRIPTION
 *	Serves the HTTP side of docs/PROTOCOL.md below the <Location> prefix:
 *	GET v1/key, GET v1/key/{fpr}, POST v1/login, POST v1/poll, POST v1/subscription, GET
 *	v1/poll?version=V (from pending_match, with ETag/304), GET
 *	v1/message/ID, POST v1/message/ID/ack, POST v1/ack (acks in a
 *	batch). A polling domain logs in by
 *	signing a statement with its OpenPGP domain key (checked against the
 *	fingerprint its peer row or _stubmail DNS record names) and gets an
 *	HMAC bearer token that names it on the other endpoints. The database
 *	comes from mod_dbd: statements are prepared at configuration time under
 *	stubmail_* labels, a connection is acquired per request. Bodies are
 *	streamed from the spool directory through a file bucket (sendfile; the
 *	core byterange filter does Range). With StubmailUDPResponder, a helper
 *	process answers UDP polls, login answers name it, and it keeps the
 *	poll cache that answers idle GET v1/poll without the database.
 *
 *	For the ISP's own users, not the protocol: /unsubscribe below the same
 *	prefix (the one-click unsubscribe links pollerd puts in pulled mail),
 *	/introduction (the accept / decline links of pollerd's introductions
 *	digest),
 *	and a second handler, stubmail-user, for the user's own page (address
 *	book, introductions, sent mail) behind the ISP's Apache login. For
 *	the admin: a third, stubmail-metrics, Prometheus metrics
 *	(stubmail_metrics.c), which counts what this one answered.
 *	Directives: docs/mod_stubmail.md.
 *
 *	This file holds the hooks, the route table and the handler. The rest:
 *	stubmail_config.c (directives), stubmail_req.c (answers, body, token),
 *	stubmail_db.c (SQL), stubmail_poll.c (polls, subscription, rate gates),
 *	stubmail_message.c (fetch), stubmail_ack.c (acks, one or a batch),
 *	stubmail_login.c (keys, login),
 *	stubmail_discover.c (discovery's store), stubmail_route.c (path
 *	patterns), stubmail_udp.c (the UDP responder), stubmail_pollcache.c
 *	(the ETags of idle polls in shared memory); for people:
 *	stubmail_html.c (the pages' frame), stubmail_unsub.c (one-click
 *	unsubscribe), stubmail_intro.c (the digest's links), stubmail_poke.c
 *	(the stub to pollerd after an accept), stubmail_user*.c (the user's
 *	page), stubmail_feed.c (the user's sent mail as an Atom feed).
 *
 * DIAGNOSTICS
 *	Every log line starts with "stubmail:" and names the polling domain and
 *	message id when known. Client errors are logged at info, database or
 *	spool trouble at error. A missing database connection answers 503.
 */

#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_hash.h"
#include "apr_strings.h"

#include "sm_id.h"
#include "stubmail_config.h"
#include "stubmail_db.h"
#include "stubmail_login.h"
#include "stubmail_message.h"
#include "stubmail_ack.h"
#include "stubmail_poll.h"
#include "stubmail_pollcache.h"
#include "stubmail_req.h"
#include "stubmail_route.h"
#include "stubmail_udp.h"
#include "stubmail_feed.h"
#include "stubmail_unsub.h"
#include "stubmail_intro.h"
#include "stubmail_user.h"
#include "stubmail_metrics.h"

APLOG_USE_MODULE(stubmail);

/* ------------------------------------------------------------------------
 * Routes
 * ---------------------------------------------------------------------- */

enum {
    NEEDS_NOTHING,              /* the endpoint sees to credentials and database */
    NEEDS_TOKEN,                /* a bearer token; the endpoint gets the
                                 * database when it needs it */
    NEEDS_TOKEN_DB              /* a bearer token, then a database connection */
};

/* The request body, read whole before any database connection is taken,
 * so that a client sending slowly holds a thread (until mod_reqtimeout
 * cuts it), never one of mod_dbd's pooled connections. */
enum {
    BODY_NONE,                  /* none may come (GET): 400 if one does */
    BODY_JSON,                  /* JSON within StubmailMaxRequestBody, in q->body */
    BODY_LOGIN,                 /* JSON within STUBMAIL_LOGIN_BODY_MAX too */
    BODY_FORM                   /* a form for people: the endpoint reads it
                                 * before it takes the database */
};

typedef struct stubmail_route {
    const char *path;           /* below the <Location>; {id}: one path
                                 * segment, the message id; {fpr}: one, a
                                 * key fingerprint */
    int method;                 /* M_GET (HEAD as well) or M_POST */
    int needs;                  /* what the handler finds done (NEEDS_...) */
    int body;                   /* BODY_... */
    int (*handler)(stubmail_req *q);
    const char *endpoint;       /* its name in stubmail-metrics */
} stubmail_route;

static const stubmail_route stubmail_routes[] = {
    /* No credentials on these: the keys are public, and a login is its
     * own proof. */
    { "/v1/key",              M_GET,  NEEDS_NOTHING,  BODY_NONE,  stubmail_key, "key" },
    { "/v1/key/{fpr}",        M_GET,  NEEDS_NOTHING,  BODY_NONE,  stubmail_key_by_fpr, "key" },
    { "/v1/login",            M_POST, NEEDS_NOTHING,  BODY_LOGIN, stubmail_login, "login" },
    /* GET: the subscription's poll, idle ones answered from the poll
     * cache without the database; POST: the stateless poll with pairs */
    { "/v1/poll",             M_GET,  NEEDS_TOKEN,    BODY_NONE,  stubmail_poll_get, "poll" },
    { "/v1/poll",             M_POST, NEEDS_TOKEN_DB, BODY_JSON,  stubmail_poll_post, "poll" },
    { "/v1/subscription",     M_POST, NEEDS_TOKEN_DB, BODY_JSON,  stubmail_subscription, "subscription" },
    /* the fetch gives its connection back before it sends the body */
    { "/v1/message/{id}",     M_GET,  NEEDS_TOKEN,    BODY_NONE,  stubmail_fetch, "fetch" },
    { "/v1/message/{id}/ack", M_POST, NEEDS_TOKEN_DB, BODY_JSON,  stubmail_ack, "ack" },
    { "/v1/ack",              M_POST, NEEDS_TOKEN_DB, BODY_JSON,  stubmail_acks, "ack" },
    /* Not the protocol: our own users' one-click unsubscribe links, whose
     * MAC is their proof (stubmail_unsub.c). */
    { "/unsubscribe",         M_GET,  NEEDS_NOTHING,  BODY_NONE,  stubmail_unsubscribe_page, "unsubscribe" },
    { "/unsubscribe",         M_POST, NEEDS_NOTHING,  BODY_FORM,  stubmail_unsubscribe, "unsubscribe" },
    /* the introductions digest's accept / decline links, the same way */
    { "/introduction",        M_GET,  NEEDS_NOTHING,  BODY_NONE,  stubmail_intro_page, "introduction" },
    { "/introduction",        M_POST, NEEDS_NOTHING,  BODY_FORM,  stubmail_intro, "introduction" },
    /* a user's sent mail for their feed reader, the MAC its proof too */
    { "/feed",                M_GET,  NEEDS_NOTHING,  BODY_NONE,  stubmail_feed, "feed" },
};

#define STUBMAIL_NROUTES (sizeof(stubmail_routes) / sizeof(stubmail_routes[0]))

/* The route for rest and the request's method, with *id; NULL if there
 * is none, and then *methods has the bit (AP_METHOD_BIT << M_...) of each
 * method the path has a route for. */
static const stubmail_route *stubmail_route_of(request_rec *r, const char *rest,
                                               const char **id, apr_int64_t *methods)
{
    size_t i;

    *methods = 0;
    for (i = 0; i < STUBMAIL_NROUTES; i++) {
        const stubmail_route *rt = &stubmail_routes[i];
        size_t id_off, id_len;

        if (!stubmail_path_match(rt->path, rest, &id_off, &id_len))
            continue;
        *id = id_len ? apr_pstrmemdup(r->pool, rest + id_off, id_len) : NULL;
        if (rt->method == r->method_number)
            return rt;
        *methods |= AP_METHOD_BIT << rt->method;
    }
    return NULL;
}

/* 405, saying which methods the path has. */
static int stubmail_method_not_allowed(stubmail_req *q, apr_int64_t methods)
{
    int get = (methods & (AP_METHOD_BIT << M_GET)) != 0;
    int post = (methods & (AP_METHOD_BIT << M_POST)) != 0;

    q->allow = get && post ? "GET, HEAD, POST" : get ? "GET, HEAD" : "POST";
    return stubmail_fail(q, "method_not_allowed",
                         get && post ? "use GET or POST" : get ? "use GET" : "use POST",
                         "wrong method");
}

/* The body as the route takes it: 1, or 0 after the error answer. */
static int stubmail_take_body(stubmail_req *q, const stubmail_route *route)
{
    switch (route->body) {
    case BODY_NONE:
        return stubmail_no_body(q);
    case BODY_JSON:
        return stubmail_read_body(q, q->conf->max_body, "StubmailMaxRequestBody");
    case BODY_LOGIN:
        if (q->conf->max_body < STUBMAIL_LOGIN_BODY_MAX)
            return stubmail_read_body(q, q->conf->max_body, "StubmailMaxRequestBody");
        return stubmail_read_body(q, STUBMAIL_LOGIN_BODY_MAX, "the login body limit");
    default:
        return 1;
    }
}

static int stubmail_handler(request_rec *r)
{
    stubmail_req q;
    const stubmail_route *route;
    const char *prefix, *id = NULL;
    apr_int64_t methods;
    size_t plen;

    if (r->handler == NULL || strcmp(r->handler, "stubmail") != 0)
        return DECLINED;

    apr_table_setn(r->notes, STUBMAIL_METRICS_NOTE, "other");
    memset(&q, 0, sizeof(q));
    q.r = r;
    q.conf = stubmail_conf_of(r->server);
    prefix = stubmail_location(r);
    plen = prefix ? strlen(prefix) : 0;
    if (prefix == NULL || strncmp(r->uri, prefix, plen) != 0
        || (r->uri[plen] != '/' && r->uri[plen] != '\0')) {
        SMLOG(&q, APLOG_WARNING, 0, "configuration: %s is not below the "
              "<Location> path %s; put SetHandler stubmail in a <Location "
              "/PATH> with a literal path, and let no later <Location> match",
              r->uri, prefix ? prefix : "(none)");
        return stubmail_fail(&q, "no_such_endpoint", "no such endpoint",
                             "handler outside a literal <Location>");
    }

    route = stubmail_route_of(r, r->uri + plen, &id, &methods);
    if (route == NULL && methods == 0)
        return stubmail_fail(&q, "no_such_endpoint", "no such endpoint", "unknown path");
    if (route == NULL)
        return stubmail_method_not_allowed(&q, methods);
    apr_table_setn(r->notes, STUBMAIL_METRICS_NOTE, route->endpoint);

    /* A token needs no database; the whole request is in before the
     * endpoint, or the route, takes a connection. */
    if (route->needs != NEEDS_NOTHING && !stubmail_authenticate(&q))
        return q.ret;
    if (id && strstr(route->path, "{fpr}")) {
        q.fpr = id;
    } else if (id) {
        if (!sm_id_valid(id))
            return stubmail_fail(&q, "bad_id", "not a message id",
                                 apr_psprintf(r->pool, "bad id '%s'",
                                              ap_escape_logitem(r->pool, id)));
        q.id = id;
    }
    if (!stubmail_take_body(&q, route))
        return q.ret;
    if (route->needs == NEEDS_TOKEN_DB && !stubmail_db(&q))
        return q.ret;
    return route->handler(&q);
}

/* ------------------------------------------------------------------------
 * TRACE
 * ---------------------------------------------------------------------- */

/* The handler that SetHandler names for r's <Location>, or "". */
static const char *stubmail_set_handler(request_rec *r)
{
    const core_dir_config *cd = ap_get_core_module_config(r->per_dir_config);
    const char *err = NULL, *handler = NULL;

    if (cd != NULL && cd->expr_handler != NULL)
        handler = ap_expr_str_exec(r, cd->expr_handler, &err);
    return handler != NULL && err == NULL ? handler : "";
}

/* TRACE echoes the request back, Authorization and cookies included, to
 * whatever page made the browser send it (cross-site tracing). Core
 * answers TRACE at map_to_storage, before any handler runs, unless
 * TraceEnable is off; below our locations it is refused whatever
 * TraceEnable says. translate_name is the first hook that sees the
 * <Location>'s SetHandler. */
static int stubmail_refuse_trace(request_rec *r)
{
    stubmail_req q;
    const char *handler;

    if (r->method_number != M_TRACE)
        return DECLINED;
    handler = stubmail_set_handler(r);
    if (strcmp(handler, "stubmail") != 0 && strcmp(handler, "stubmail-user") != 0)
        return DECLINED;
    memset(&q, 0, sizeof(q));
    q.r = r;
    q.conf = stubmail_conf_of(r->server);
    q.allow = "GET, HEAD, POST";
    stubmail_fail(&q, "method_not_allowed", "TRACE is not served here",
                  "TRACE refused: it would echo the credentials");
    return DONE;
}

/* ------------------------------------------------------------------------
 * Startup
 * ---------------------------------------------------------------------- */

/* The UDP poll responder, when the main server names one, and the poll
 * cache it keeps (StubmailPollCache). Its sessions
 * are the payloads of this server's tokens, so it needs login and the
 * token keys; and a database connection of its own (checked in
 * stubmail_check_config). Login answers name it where tokens are made with
 * the main server's keys. */
static int stubmail_start_udp(apr_pool_t *pconf, server_rec *s)
{
    stubmail_srv_conf *c = stubmail_conf_of(s);
    server_rec *sp;
    int cache = 0;

    /* before the responder is forked: it keeps the cache */
    for (sp = s; sp; sp = sp->next)
        cache |= stubmail_conf_of(sp)->poll_cache != 0;
    stubmail_pollcache_init(pconf, s, c->udp.listen != NULL && cache);
    stubmail_metrics_init(pconf, s);
    if (c->udp.listen == NULL)
        return OK;
    c->udp.tokens = c->tokens;
    for (sp = s; sp; sp = sp->next)
        stubmail_conf_of(sp)->udp_login = stubmail_conf_of(sp)->tokens == c->tokens;
    return stubmail_udp_start(pconf, s, &c->udp);
}

/* What a configuration needs, checked after it is read and before anything
 * starts: httpd runs check_config for `apachectl configtest` too (post_config
 * it does not), so a missing directive, an unreadable key file or a GnuPG
 * home with secret keys fails the test with the reason, and not only the
 * start. Gives every unset field its default. */
static int stubmail_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                                 server_rec *s)
{
    stubmail_srv_conf *main_conf = stubmail_conf_of(s);
    const char *missing = main_conf->domain == NULL ? "StubmailDomain"
                          : main_conf->tokens == NULL ? "StubmailTokenKey"
                          : main_conf->udp.database == NULL ? "StubmailUDPDatabase" : NULL;
    server_rec *sp;

    (void)plog;
    if (stubmail_db_init(s) != OK)
        return HTTP_INTERNAL_SERVER_ERROR;
    for (sp = s; sp; sp = sp->next) {
        stubmail_srv_conf *c = stubmail_conf_of(sp);

        if (stubmail_conf_defaults(sp, c, pconf) != OK
            || stubmail_login_check_config(sp, c, pconf, ptemp) != OK)
            return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (main_conf->udp.listen != NULL && missing) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailUDPResponder %s "
                     "needs %s too (docs/mod_stubmail.md)", main_conf->udp.listen, missing);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

/* Runs before mod_dbd's post_config: register the statements for every
 * server so that mod_dbd prepares them on each connection. A virtual host
 * without DBD directives shares the main server's mod_dbd configuration:
 * register once per distinct configuration, or mod_dbd warns about
 * conflicting labels. */
static int stubmail_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                                apr_pool_t *ptemp, server_rec *s)
{
    module *dbd_mod = ap_find_linked_module("mod_dbd.c");
    apr_hash_t *done = apr_hash_make(ptemp);
    server_rec *sp;

    (void)plog;
    for (sp = s; sp; sp = sp->next) {
        stubmail_srv_conf *c = stubmail_conf_of(sp);
        void *dbd_conf = dbd_mod ? ap_get_module_config(sp->module_config,
                                                        dbd_mod) : NULL;
        apr_finfo_t fi;
        apr_status_t rv;

        if (stubmail_login_post_config(sp, c, ptemp) != OK)
            return HTTP_INTERNAL_SERVER_ERROR;
        rv = apr_stat(&fi, c->spool_dir, APR_FINFO_TYPE, ptemp);
        if (rv != APR_SUCCESS || fi.filetype != APR_DIR)
            ap_log_error(APLOG_MARK, APLOG_WARNING, rv, sp, "stubmail: "
                         "StubmailSpoolDir %s is not a directory: fetches "
                         "will fail", c->spool_dir);
        if (dbd_conf) {
            if (apr_hash_get(done, &dbd_conf, sizeof(dbd_conf)))
                continue;
            apr_hash_set(done, apr_pmemdup(ptemp, &dbd_conf, sizeof(dbd_conf)),
                         sizeof(dbd_conf), "");
        }
        stubmail_db_prepare_all(sp);
    }
    return stubmail_start_udp(pconf, s);
}

static void stubmail_register_hooks(apr_pool_t *p)
{
    static const char *const succ[] = { "mod_dbd.c", NULL };

    (void)p;
    ap_hook_check_config(stubmail_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(stubmail_post_config, NULL, succ, APR_HOOK_MIDDLE);
    ap_hook_child_init(stubmail_login_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(stubmail_refuse_trace, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(stubmail_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(stubmail_user_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(stubmail_metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_log_transaction(stubmail_metrics_count, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA stubmail_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                       /* no per-directory configuration */
    NULL,
    stubmail_create_srv_conf,
    stubmail_merge_srv_conf,
    stubmail_cmds,
    stubmail_register_hooks,
    AP_MODULE_FLAG_NONE
};
