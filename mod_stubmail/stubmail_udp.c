/*
 * NAME
 *	stubmail_udp - mod_stubmail's UDP poll responder process
 *
 * SYNOPSIS
 *	StubmailUDPResponder 127.0.0.2:20444 [ADVERTISED-IP:PORT]
 *	StubmailUDPDatabase "host=... dbname=... user=..."
 *	StubmailUDPRateLimit 20
 *
 * DESCRIPTION
 *	Answers "stubmail1 poll" datagrams (docs/PROTOCOL.md, "UDP poll"):
 *	"idle" when the poller's cursor is the current poll_etag() of its
 *	domain, "poll" otherwise. Everything else (malformed, unauthenticated,
 *	stale, replayed, over the per-source rate, or while the database is
 *	down) is dropped without a reply and counted; a reply is never larger
 *	than the datagram it answers.
 *
 *	The process is forked by Apache's parent in post_config (not in the
 *	first, configuration-only pass), registered as an "other child" so
 *	that the parent restarts it when it dies, and noted as a subprocess
 *	of pconf so that every restart (graceful too) and stop ends it before
 *	the next generation binds the port. It binds as root, then drops to
 *	Apache's User/Group like the MPM children, and keeps no Apache
 *	listener open. PR_SET_PDEATHSIG ends it if the parent is killed.
 *
 *	It is not an MPM child, so mod_dbd's pool is not available: it holds
 *	one libpq connection of its own (StubmailUDPDatabase), LISTENs on
 *	'stubmail_poll' and caches each domain's ETag until a notification
 *	for that domain (or STUBMAIL_UDP_CACHE_MAX_AGE, or the next expiry of
 *	the domain's matches, sql/012, which no one announces) makes it ask
 *	again.
 *	The same notifications keep the children's poll cache true
 *	(stubmail_pollcache.c): while its connection is up the responder holds
 *	that cache's lock, and it makes a domain's entry invalid for every
 *	notification naming it.
 *
 * DIAGNOSTICS
 *	"stubmail: udp responder ..." lines: start and stop at info, trouble
 *	with the database or the socket at error, once per minute a debug
 *	summary of what was dropped and why (never a line per datagram).
 */

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "ap_listen.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "apr_strings.h"
#include "apr_thread_proc.h"

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "sm_txt.h"
#include "sm_udppoll.h"
#include "stubmail_pollcache.h"
#include "stubmail_udp.h"

APLOG_USE_MODULE(stubmail);

#define STUBMAIL_UDP_STARTUP_ERROR 254  /* exit code: do not restart, the cause stays */
#define STUBMAIL_UDP_QUICK_DEATH   10   /* seconds: died sooner counts as a crash loop */
#define STUBMAIL_UDP_QUICK_MAX     5    /* crash-loop deaths in a row before giving up */
#define STUBMAIL_UDP_BUCKETS       4096 /* per-source rate limit slots */
#define STUBMAIL_UDP_PROBE         4    /* slots looked at per source */
#define STUBMAIL_UDP_SESSIONS      4096 /* last accepted time per session */
#define STUBMAIL_UDP_CACHE         1024 /* cached ETags */
#define STUBMAIL_UDP_CACHE_MAX_AGE 10   /* seconds: a lost notification costs at most this */
#define STUBMAIL_UDP_RECONNECT     2    /* seconds between database connection attempts */
#define STUBMAIL_UDP_BATCH         64   /* datagrams read per wakeup */
#define STUBMAIL_UDP_STATS         60   /* seconds between debug summaries */

/* ------------------------------------------------------------------------
 * The parent's side: start, restart, stop
 * ---------------------------------------------------------------------- */

static server_rec *udp_server;
static apr_pool_t *udp_pconf;
static const stubmail_udp_conf *udp_conf;
static apr_time_t udp_started;
static int udp_quick_deaths;

/* One started responder. proc is also on pconf's subprocess list, which
 * kills and reaps what is left of it at a restart or stop: once it is
 * dead, its pid becomes our own (never -1 or 0, which that cleanup would
 * pass to kill() as "every process" or "our group"), and death is a flag
 * of its own. */
typedef struct udp_child {
    apr_proc_t proc;
    int dead;                   /* reaped by the MPM: never signal the pid */
} udp_child;

static int udp_fork(void);

/* The responder is gone: keep the unregister callback from signalling its
 * pid, and pconf's cleanup from waiting for it. That cleanup still holds
 * the record, and would signal (and wait for) the pid if a later child of
 * ours, an MPM child, got it: our own pid is never our child, so its
 * waitpid fails and the cleanup leaves the record alone. */
static void udp_forget(udp_child *child)
{
    child->dead = 1;
    child->proc.pid = getpid();
    apr_proc_other_child_unregister(child);
}

/* Whether a responder that died should be started again: not while Apache
 * stops, not after a start-up failure (the cause stays), not in a crash
 * loop. */
static int udp_restartable(apr_wait_t status)
{
    int mpm_state = AP_MPMQ_STOPPING;
    int quick;

    if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) != APR_SUCCESS
        || mpm_state == AP_MPMQ_STOPPING)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == STUBMAIL_UDP_STARTUP_ERROR) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, udp_server, "stubmail: udp responder "
                     "could not start (see above); not restarted until Apache restarts");
        return 0;
    }
    quick = apr_time_now() - udp_started < apr_time_from_sec(STUBMAIL_UDP_QUICK_DEATH);
    udp_quick_deaths = quick ? udp_quick_deaths + 1 : 0;
    if (udp_quick_deaths >= STUBMAIL_UDP_QUICK_MAX) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, udp_server, "stubmail: udp responder "
                     "died %d times within %d s of its start; not restarted until "
                     "Apache restarts", udp_quick_deaths, STUBMAIL_UDP_QUICK_DEATH);
        return 0;
    }
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, udp_server, "stubmail: udp responder died "
                 "(%s %d); restarting it", WIFSIGNALED(status) ? "signal" : "exit",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    return 1;
}

static void udp_maint(int reason, void *data, apr_wait_t status)
{
    udp_child *child = data;

    switch (reason) {
    case APR_OC_REASON_DEATH:
        udp_forget(child);
        if (udp_restartable(status))
            udp_fork();
        break;
    case APR_OC_REASON_RESTART:
        /* Apache restarts or stops: pconf's cleanup ends the process */
        apr_proc_other_child_unregister(data);
        break;
    case APR_OC_REASON_LOST:
        udp_forget(child);
        udp_fork();
        break;
    case APR_OC_REASON_UNREGISTER:
        if (!child->dead && child->proc.pid > 1)
            kill(child->proc.pid, SIGTERM);
        break;
    }
}

static int udp_main(pid_t parent);

/* Fork the responder; the parent registers it. 0, or -1 (logged). */
static int udp_fork(void)
{
    udp_child *child = apr_pcalloc(udp_pconf, sizeof(*child));
    pid_t parent = getpid(), pid;

    if ((pid = fork()) < 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, udp_server, "stubmail: cannot fork "
                     "the udp responder");
        return -1;
    }
    if (pid == 0)
        _exit(udp_main(parent));
    child->proc.pid = pid;
    udp_started = apr_time_now();
    /* a new record per start: pconf's subprocess list keeps the old ones,
     * which must not name the new pid */
    apr_pool_note_subprocess(udp_pconf, &child->proc, APR_KILL_AFTER_TIMEOUT);
    apr_proc_other_child_register(&child->proc, udp_maint, child, NULL, udp_pconf);
    return 0;
}

int stubmail_udp_start(apr_pool_t *pconf, server_rec *s, const stubmail_udp_conf *conf)
{
    /* the first pass only checks the configuration; the real start follows */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    udp_server = s;
    udp_pconf = pconf;
    udp_conf = conf;
    udp_quick_deaths = 0;
    return udp_fork() == 0 ? OK : HTTP_INTERNAL_SERVER_ERROR;
}

/* ------------------------------------------------------------------------
 * The responder process
 * ---------------------------------------------------------------------- */

typedef struct udp_bucket {
    struct sockaddr_storage addr;   /* address only; port zeroed */
    socklen_t len;
    double tokens;
    apr_time_t last;
} udp_bucket;

typedef struct udp_seen {
    unsigned char id[16];           /* first octets of the session's K */
    long long time;                 /* last accepted request time */
} udp_seen;

typedef struct udp_etag {
    char domain[SM_DOMAIN_MAX + 1];
    char etag[SM_UDPPOLL_CURSOR_MAX + 1];   /* "" = not cached */
    time_t at;
    apr_time_t until;           /* the next expiry ends it; 0: none */
} udp_etag;

typedef struct udp_state {
    int fd;
    PGconn *db;
    time_t db_tried;
    double rate, burst;
    udp_bucket buckets[STUBMAIL_UDP_BUCKETS];
    udp_seen seen[STUBMAIL_UDP_SESSIONS];
    udp_etag cache[STUBMAIL_UDP_CACHE];
    /* what happened since the last summary */
    unsigned long n_idle, n_poll, n_malformed, n_unauth, n_stale, n_replayed, n_rate,
                  n_db, n_oversized;
} udp_state;

static volatile sig_atomic_t udp_stop;

static void udp_on_signal(int sig)
{
    (void)sig;
    udp_stop = 1;
}

/* FNV-1a: spreads addresses, sessions and domains over the tables. */
static unsigned long udp_hash(const void *p, size_t n)
{
    const unsigned char *c = p;
    unsigned long h = 2166136261UL;

    while (n--)
        h = (h ^ *c++) * 16777619UL;
    return h;
}

/* The source address without its port (rate limits are per host). */
static void udp_source_key(const struct sockaddr_storage *from, struct sockaddr_storage *key,
                           socklen_t *len)
{
    memset(key, 0, sizeof(*key));
    key->ss_family = from->ss_family;
    if (from->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)key)->sin6_addr = ((const struct sockaddr_in6 *)from)->sin6_addr;
        *len = sizeof(struct sockaddr_in6);
    } else {
        ((struct sockaddr_in *)key)->sin_addr = ((const struct sockaddr_in *)from)->sin_addr;
        *len = sizeof(struct sockaddr_in);
    }
}

/* Token bucket per source: 1 if this datagram may be looked at. A source
 * not in the table takes the least recently used of its probe slots, so a
 * flood of spoofed sources can evict others but never grant itself more
 * than one burst per slot. */
static int udp_rate_ok(udp_state *st, const struct sockaddr_storage *from)
{
    struct sockaddr_storage key;
    socklen_t len;
    apr_time_t now = apr_time_now();
    unsigned long h;
    udp_bucket *b = NULL, *oldest = NULL;
    int i;

    udp_source_key(from, &key, &len);
    h = udp_hash(&key, len);
    for (i = 0; i < STUBMAIL_UDP_PROBE && !b; i++) {
        udp_bucket *c = &st->buckets[(h + (unsigned long)i) % STUBMAIL_UDP_BUCKETS];
        if (c->len == len && memcmp(&c->addr, &key, len) == 0)
            b = c;
        else if (!oldest || c->last < oldest->last)
            oldest = c;
    }
    if (!b) {
        b = oldest;
        b->addr = key;
        b->len = len;
        b->tokens = st->burst;
        b->last = now;
    }
    b->tokens += (double)(now - b->last) / APR_USEC_PER_SEC * st->rate;
    if (b->tokens > st->burst)
        b->tokens = st->burst;
    b->last = now;
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}

/* Refuse a request older than the last one accepted for its session. */
static int udp_fresh(udp_state *st, const unsigned char *key, long long t)
{
    udp_seen *s = &st->seen[udp_hash(key, 16) % STUBMAIL_UDP_SESSIONS];

    if (memcmp(s->id, key, 16) == 0) {
        if (t < s->time)
            return 0;
    } else {
        memcpy(s->id, key, 16);
    }
    s->time = t;
    return 1;
}

static udp_etag *udp_cache_slot(udp_state *st, const char *domain)
{
    return &st->cache[udp_hash(domain, strlen(domain)) % STUBMAIL_UDP_CACHE];
}

/* Without the connection no notification arrives, so nothing cached can
 * be trusted: until it is back, every datagram goes unanswered (pollers
 * use HTTP, which answers 503 or works). */
static void udp_db_drop(udp_state *st, const char *why)
{
    stubmail_pollcache_listening(udp_server, 0);
    memset(st->cache, 0, sizeof(st->cache));
    if (st->db) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, udp_server, "stubmail: udp responder: "
                     "database connection lost (%s); datagrams go unanswered until it "
                     "is back", why);
        PQfinish(st->db);
        st->db = NULL;
    }
}

/* Notifications libpq holds already: the payload names a domain whose
 * pending set or version changed. No system call. */
static void udp_db_notified(udp_state *st)
{
    PGnotify *n;

    while (st->db && (n = PQnotifies(st->db))) {
        udp_etag *e = udp_cache_slot(st, n->extra);
        if (strcmp(e->domain, n->extra) == 0)
            e->etag[0] = '\0';
        stubmail_pollcache_forget(n->extra);
        PQfreemem(n);
    }
}

/* Read what the connection has for us, then take its notifications. */
static void udp_db_notifications(udp_state *st)
{
    if (!st->db)
        return;
    if (!PQconsumeInput(st->db) || PQstatus(st->db) != CONNECTION_OK) {
        udp_db_drop(st, PQerrorMessage(st->db));
        return;
    }
    udp_db_notified(st);
}

/* (Re)connect, at most every STUBMAIL_UDP_RECONNECT seconds: 0 if there is
 * a connection. Blocking, bounded by connect_timeout: 2 s unless the
 * conninfo says otherwise (its own parameters come later and win). */
static int udp_db_ready(udp_state *st)
{
    static const char *const keys[] = { "connect_timeout", "dbname", NULL };
    const char *values[] = { "2", udp_conf->database, NULL };
    PGresult *res;
    time_t now = time(NULL);
    int ok;

    if (st->db && PQstatus(st->db) == CONNECTION_OK)
        return 0;
    udp_db_drop(st, "bad status");
    if (now - st->db_tried < STUBMAIL_UDP_RECONNECT)
        return -1;
    st->db_tried = now;
    st->db = PQconnectdbParams(keys, values, 1);
    if (PQstatus(st->db) != CONNECTION_OK) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, udp_server, "stubmail: udp responder: "
                     "cannot connect to StubmailUDPDatabase: %s", PQerrorMessage(st->db));
        PQfinish(st->db);
        st->db = NULL;
        return -1;
    }
    /* a stuck query must not stall the responder: pollers fall back to HTTP */
    res = PQexec(st->db, "SET statement_timeout = 2000; LISTEN stubmail_poll");
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (ok) {
        res = PQprepare(st->db, "stubmail_udp_etag",
                        "SELECT etag, valid_until_ms FROM poll_etag_until($1)", 1, NULL);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, udp_server, "stubmail: udp responder: "
                         "preparing SELECT poll_etag_until($1) failed (is sql/012 applied?): %s",
                         PQresultErrorMessage(res));
        PQclear(res);
    } else {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, udp_server, "stubmail: udp responder: "
                     "LISTEN stubmail_poll failed: %s", PQerrorMessage(st->db));
    }
    if (!ok) {
        PQfinish(st->db);
        st->db = NULL;
        return -1;
    }
    /* notifications were missed while there was no connection */
    memset(st->cache, 0, sizeof(st->cache));
    stubmail_pollcache_listening(udp_server, 1);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, udp_server, "stubmail: udp responder: "
                 "connected to the database");
    /* what arrived behind the answers above is in libpq's buffer already */
    udp_db_notifications(st);
    return st->db ? 0 : -1;
}

/* The current ETag of domain into etag; 0, or -1 when the database cannot
 * say (no reply then). The socket was read for notifications after the
 * batch holding this datagram arrived (udp_serve); only what a query of
 * this batch brought into libpq's buffer is left to take. */
static int udp_etag_of(udp_state *st, const char *domain, char *etag, size_t len)
{
    udp_etag *e = udp_cache_slot(st, domain);
    time_t now = time(NULL);
    const char *params[1] = { domain };
    PGresult *res;
    const char *v;
    int rc = -1;

    udp_db_notified(st);
    if (e->etag[0] && strcmp(e->domain, domain) == 0 && now - e->at < STUBMAIL_UDP_CACHE_MAX_AGE
        && now >= e->at && (e->until == 0 || apr_time_now() < e->until)) {
        apr_cpystrn(etag, e->etag, len);
        return 0;
    }
    if (udp_db_ready(st) != 0)
        return -1;
    res = PQexecPrepared(st->db, "stubmail_udp_etag", 1, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, udp_server, "stubmail: udp responder: "
                     "SELECT poll_etag_until('%s') failed: %s", domain, PQresultErrorMessage(res));
        if (PQstatus(st->db) != CONNECTION_OK)
            udp_db_drop(st, PQerrorMessage(st->db));
        goto leave;
    }
    /* NULL (no such domain) matches no cursor: the answer is "poll" */
    v = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);
    apr_cpystrn(etag, v, len);
    if (v[0] && strlen(v) <= SM_UDPPOLL_CURSOR_MAX) {
        apr_cpystrn(e->domain, domain, sizeof(e->domain));
        apr_cpystrn(e->etag, v, sizeof(e->etag));
        e->at = now;
        e->until = PQgetisnull(res, 0, 1) ? 0
                   : apr_time_from_msec(apr_atoi64(PQgetvalue(res, 0, 1)));
    }
    rc = 0;
leave:
    PQclear(res);
    return rc;
}

/* The reply to one datagram into reply (SM_UDPPOLL_REPLY_LEN + 1 octets):
 * its length, or 0 for none (dropped and counted). */
static size_t udp_datagram(udp_state *st, const unsigned char *pkt, size_t len,
                           const struct sockaddr_storage *from, char *reply)
{
    sm_udppoll_request req;
    sm_udppoll_session info;
    unsigned char key[SM_UDPPOLL_KEY_LEN];
    char etag[SM_UDPPOLL_CURSOR_MAX + 2];
    const char *why = NULL;
    sm_udppoll_status status;
    size_t out = 0;
    long n;

    if (!udp_rate_ok(st, from)) {
        st->n_rate++;
        return 0;
    }
    if (sm_udppoll_request_verify(udp_conf->tokens, pkt, len, time(NULL), &req, &info, key,
                                  &why) != 0) {
        if (!strcmp(why, "bad mac") || !strcmp(why, "unknown key id"))
            st->n_unauth++;
        else if (!strcmp(why, "stale time") || !strcmp(why, "future time")
                 || !strcmp(why, "session expired"))
            st->n_stale++;
        else
            st->n_malformed++;
        goto leave;
    }
    if (!udp_fresh(st, key, req.time)) {
        st->n_replayed++;
        goto leave;
    }
    if (udp_etag_of(st, info.domain, etag, sizeof(etag)) != 0) {
        st->n_db++;
        goto leave;
    }
    status = strcmp(etag, req.cursor) == 0 ? SM_UDPPOLL_IDLE : SM_UDPPOLL_POLL;
    n = sm_udppoll_reply_encode(key, status, req.mac, reply, SM_UDPPOLL_REPLY_LEN + 1);
    /* never answer with more octets than were sent: no amplification */
    if (n < 0 || (size_t)n > len) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, udp_server, "stubmail: udp responder: "
                     "reply of %ld octets to a request of %lu not sent (bug)", n,
                     (unsigned long)len);
        goto leave;
    }
    out = (size_t)n;
    if (status == SM_UDPPOLL_IDLE)
        st->n_idle++;
    else
        st->n_poll++;
leave:
    OPENSSL_cleanse(key, sizeof(key));
    return out;
}

static void udp_stats(udp_state *st)
{
    if (st->n_idle || st->n_poll || st->n_malformed || st->n_unauth || st->n_stale
        || st->n_replayed || st->n_rate || st->n_db || st->n_oversized)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, udp_server, "stubmail: udp responder: "
                     "answered %lu idle, %lu poll; dropped %lu malformed, %lu oversized, "
                     "%lu unauthenticated, %lu stale, %lu replayed, %lu over the rate, "
                     "%lu for want of the database", st->n_idle, st->n_poll,
                     st->n_malformed, st->n_oversized, st->n_unauth, st->n_stale,
                     st->n_replayed, st->n_rate, st->n_db);
    st->n_idle = st->n_poll = st->n_malformed = st->n_unauth = st->n_stale = 0;
    st->n_replayed = st->n_rate = st->n_db = st->n_oversized = 0;
}

/* Signals: stop on TERM/HUP/INT (pconf's cleanup, the other-child
 * unregister, or the parent's death); whatever the parent had set up for
 * itself does not apply here. */
static void udp_signals(void)
{
    struct sigaction sa;
    sigset_t all;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = udp_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
}

/* Bind the socket (as root: a port below 1024 works), then become the
 * Apache user: the responder's state, or NULL (logged). */
static udp_state *udp_open(void)
{
    struct sockaddr_storage addr;
    socklen_t addrlen;
    apr_pool_t *pool;
    udp_state *st = NULL;
    const char *why = NULL;

    if (sm_dns_resolver_parse(udp_conf->listen, &addr, &addrlen, &why) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, udp_server, "stubmail: udp responder: "
                     "StubmailUDPResponder %s: %s", udp_conf->listen, why);
        goto fail;
    }
    if (!(st = calloc(1, sizeof(*st)))) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, udp_server, "stubmail: udp responder: "
                     "out of memory");
        goto fail;
    }
    st->rate = (double)udp_conf->rate;
    st->burst = 2.0 * (double)udp_conf->rate;
    /* no SO_REUSEADDR: on UDP it would let another socket bind the same
     * address and take a share of the datagrams; the responder of the
     * previous generation is gone (pconf's cleanup waits for it) before
     * this one starts */
    st->fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (st->fd < 0 || bind(st->fd, (struct sockaddr *)&addr, addrlen) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, udp_server, "stubmail: udp responder: "
                     "cannot bind UDP %s", udp_conf->listen);
        goto fail;
    }
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS
        || ap_run_drop_privileges(pool, udp_server) != OK) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, udp_server, "stubmail: udp responder: "
                     "cannot drop privileges");
        goto fail;
    }
    return st;

fail:
    if (st && st->fd >= 0)
        close(st->fd);
    free(st);
    return NULL;
}

/* One wakeup's datagrams and their replies: read with one recvmmsg,
 * answered with one sendmmsg. */
typedef struct udp_batch {
    struct mmsghdr in[STUBMAIL_UDP_BATCH], out[STUBMAIL_UDP_BATCH];
    struct iovec in_iov[STUBMAIL_UDP_BATCH], out_iov[STUBMAIL_UDP_BATCH];
    struct sockaddr_storage from[STUBMAIL_UDP_BATCH];
    unsigned char pkt[STUBMAIL_UDP_BATCH][SM_UDPPOLL_REQUEST_MAX + 1];
    char reply[STUBMAIL_UDP_BATCH][SM_UDPPOLL_REPLY_LEN + 1];
} udp_batch;

/* Send the replies of a batch. A reply the kernel refuses is lost, as on
 * the wire (the poller asks again or uses HTTP); the others still go. */
static void udp_send_batch(udp_state *st, udp_batch *b, unsigned int count)
{
    unsigned int done = 0;
    int sent;

    while (done < count) {
        sent = sendmmsg(st->fd, b->out + done, count - done, 0);
        if (sent > 0) {
            done += (unsigned int)sent;
            continue;
        }
        ap_log_error(APLOG_MARK, APLOG_DEBUG, errno, udp_server, "stubmail: udp "
                     "responder: sendmmsg failed");
        done++;
    }
}

/* The fixed parts of a batch: datagram i into pkt[i], its source into
 * from[i]; reply j from out_iov[j]. */
static void udp_batch_init(udp_batch *b)
{
    int i;

    for (i = 0; i < STUBMAIL_UDP_BATCH; i++) {
        b->in_iov[i].iov_base = b->pkt[i];
        b->in_iov[i].iov_len = sizeof(b->pkt[i]);
        b->in[i].msg_hdr.msg_name = &b->from[i];
        b->in[i].msg_hdr.msg_iov = &b->in_iov[i];
        b->in[i].msg_hdr.msg_iovlen = 1;
        b->out[i].msg_hdr.msg_iov = &b->out_iov[i];
        b->out[i].msg_hdr.msg_iovlen = 1;
    }
}

/* Read up to STUBMAIL_UDP_BATCH datagrams, answer them with one sendmmsg:
 * how many were read (0 when none was waiting). */
static int udp_batch_once(udp_state *st, udp_batch *b)
{
    unsigned int count = 0;
    size_t len;
    int got, i;

    /* the kernel wrote the last batch's source lengths over these */
    for (i = 0; i < STUBMAIL_UDP_BATCH; i++)
        b->in[i].msg_hdr.msg_namelen = sizeof(b->from[i]);
    /* MSG_TRUNC: each msg_len is the real length, so that an oversized
     * datagram is recognised, not parsed cut short */
    got = recvmmsg(st->fd, b->in, STUBMAIL_UDP_BATCH, MSG_TRUNC, NULL);
    if (got <= 0)
        return 0;
    /* a notification that arrived before these datagrams is taken before
     * any of them is answered from the cache */
    udp_db_notifications(st);
    for (i = 0; i < got; i++) {
        if (b->in[i].msg_len > SM_UDPPOLL_REQUEST_MAX) {
            st->n_oversized++;
            continue;
        }
        len = udp_datagram(st, b->pkt[i], b->in[i].msg_len, &b->from[i], b->reply[count]);
        if (len == 0)
            continue;
        b->out_iov[count].iov_base = b->reply[count];
        b->out_iov[count].iov_len = len;
        b->out[count].msg_hdr.msg_name = &b->from[i];
        b->out[count].msg_hdr.msg_namelen = b->in[i].msg_hdr.msg_namelen;
        count++;
    }
    udp_send_batch(st, b, count);
    return got;
}

/* Answer datagrams and take notifications until told to stop or the
 * parent is gone. */
static void udp_serve(udp_state *st, pid_t parent)
{
    udp_batch *b = calloc(1, sizeof(*b));
    struct pollfd pfd[2];
    time_t last_stats = time(NULL);
    int n;

    if (!b) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, udp_server, "stubmail: udp responder: "
                     "out of memory");
        return;
    }
    udp_batch_init(b);

    while (!udp_stop) {
        /* not only for datagrams: the poll cache is off until the
         * connection is back */
        if (!st->db)
            udp_db_ready(st);
        pfd[0].fd = st->fd;
        pfd[0].events = POLLIN;
        pfd[1].fd = st->db ? PQsocket(st->db) : -1;
        pfd[1].events = POLLIN;
        n = poll(pfd, 2, 1000);
        if (udp_stop || getppid() != parent)
            break;
        if (n < 0 && errno != EINTR) {
            ap_log_error(APLOG_MARK, APLOG_ERR, errno, udp_server, "stubmail: udp "
                         "responder: poll failed");
            break;
        }
        if (n > 0 && (pfd[1].revents & (POLLIN | POLLERR | POLLHUP)))
            udp_db_notifications(st);
        /* a notification that came in with a query's answer sits in
         * libpq's buffer, where poll() does not see it: take it now, not
         * at the next datagram */
        if (n > 0 && (pfd[0].revents & POLLIN) && udp_batch_once(st, b) > 0)
            udp_db_notified(st);
        if (time(NULL) - last_stats >= STUBMAIL_UDP_STATS) {
            udp_stats(st);
            last_stats = time(NULL);
        }
    }
    free(b);
}

/* The responder process, from the fork to its exit status. */
static int udp_main(pid_t parent)
{
    udp_state *st;

    udp_signals();
    udp_stop = 0;
#ifdef PR_SET_PDEATHSIG
    /* the parent may die without running pconf's cleanup (SIGKILL); the
     * getppid() check of the loop covers other systems within a second */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    if (getppid() != parent)
        return 0;
    ap_close_listeners();
    if ((st = udp_open()) == NULL)
        return STUBMAIL_UDP_STARTUP_ERROR;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, udp_server, "stubmail: udp responder pid %ld "
                 "on %s, %" APR_INT64_T_FMT " datagrams/s per source", (long)getpid(),
                 udp_conf->listen, udp_conf->rate);
    udp_db_ready(st);
    udp_serve(st, parent);
    udp_stats(st);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, udp_server, "stubmail: udp responder pid %ld "
                 "stopping", (long)getpid());
    /* children stop trusting the cache before notifications stop coming */
    stubmail_pollcache_listening(udp_server, 0);
    if (st->db)
        PQfinish(st->db);
    close(st->fd);
    free(st);
    return 0;
}
