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
 *	POST v1/poll, GET v1/message/ID, POST v1/message/ID/ack. The polling
 *	domain authenticates with HTTP Basic (user = domain, password = the
 *	secret in table peer). The database comes from mod_dbd: statements are
 *	prepared at configuration time under stubmail_* labels, a connection
 *	is acquired per request. Bodies are streamed from the spool directory
 *	through a file bucket (sendfile; the core byterange filter does Range).
 *	Directives: see docs/mod_stubmail.md.
 *
 * DIAGNOSTICS
 *	Every log line starts with "stubmail:" and names the polling domain and
 *	message id when known. Client errors are logged at info, database or
 *	spool trouble at error. A missing database connection answers 503.
 */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_filter.h"
#include "apr_strings.h"
#include "apr_hash.h"
#include "apr_buckets.h"
#include "apr_file_io.h"
#include "apr_optional.h"
#include "apr_dbd.h"
#include "mod_dbd.h"

#include <jansson.h>

#include "sm_addr.h"
#include "sm_id.h"
#include "sm_proto.h"
#include "sm_spool.h"

module AP_MODULE_DECLARE_DATA stubmail_module;
APLOG_USE_MODULE(stubmail);

/* ------------------------------------------------------------------------
 * Configuration
 * ---------------------------------------------------------------------- */

#define STUBMAIL_UNSET              (-1)
#define STUBMAIL_DEFAULT_SPOOL_DIR  "/var/spool/stubmail"
#define STUBMAIL_DEFAULT_MAX_BODY   1048576
#define STUBMAIL_DEFAULT_MAX_PAIRS  10000
#define STUBMAIL_DEFAULT_POLL_LIMIT 1000
#define STUBMAIL_RETRY_AFTER        "30"

typedef struct stubmail_srv_conf {
    const char *spool_dir;      /* NULL = unset */
    apr_int64_t max_body;       /* STUBMAIL_UNSET = unset */
    apr_int64_t max_pairs;
    apr_int64_t poll_limit;
} stubmail_srv_conf;

static void *stubmail_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    stubmail_srv_conf *c = apr_pcalloc(p, sizeof(*c));

    (void)s;
    c->spool_dir = NULL;
    c->max_body = STUBMAIL_UNSET;
    c->max_pairs = STUBMAIL_UNSET;
    c->poll_limit = STUBMAIL_UNSET;
    return c;
}

/* Merge rule for every field: the virtual host's value if set, else the
 * main server's. */
static void *stubmail_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    const stubmail_srv_conf *base = basev, *add = addv;
    stubmail_srv_conf *c = apr_pcalloc(p, sizeof(*c));

    c->spool_dir = add->spool_dir ? add->spool_dir : base->spool_dir;
    c->max_body = add->max_body != STUBMAIL_UNSET ? add->max_body : base->max_body;
    c->max_pairs = add->max_pairs != STUBMAIL_UNSET ? add->max_pairs : base->max_pairs;
    c->poll_limit = add->poll_limit != STUBMAIL_UNSET ? add->poll_limit : base->poll_limit;
    return c;
}

/* The one place where defaults are applied (post_config, after merging). */
static void stubmail_srv_conf_defaults(stubmail_srv_conf *c)
{
    if (c->spool_dir == NULL)
        c->spool_dir = STUBMAIL_DEFAULT_SPOOL_DIR;
    if (c->max_body == STUBMAIL_UNSET)
        c->max_body = STUBMAIL_DEFAULT_MAX_BODY;
    if (c->max_pairs == STUBMAIL_UNSET)
        c->max_pairs = STUBMAIL_DEFAULT_MAX_PAIRS;
    if (c->poll_limit == STUBMAIL_UNSET)
        c->poll_limit = STUBMAIL_DEFAULT_POLL_LIMIT;
}

static const char *stubmail_set_spool_dir(cmd_parms *cmd, void *dconf,
                                          const char *arg)
{
    stubmail_srv_conf *c = ap_get_module_config(cmd->server->module_config,
                                                &stubmail_module);
    const char *path = ap_server_root_relative(cmd->pool, arg);

    (void)dconf;
    if (path == NULL || *arg == '\0')
        return apr_pstrcat(cmd->pool, cmd->cmd->name, ": invalid path ", arg,
                           NULL);
    c->spool_dir = path;
    return NULL;
}

/* Numeric directives; cmd->info names the field. Limits: 1 .. max. */
enum { STUBMAIL_MAX_BODY, STUBMAIL_MAX_PAIRS, STUBMAIL_POLL_LIMIT };

static const char *stubmail_set_number(cmd_parms *cmd, void *dconf,
                                       const char *arg)
{
    stubmail_srv_conf *c = ap_get_module_config(cmd->server->module_config,
                                                &stubmail_module);
    apr_int64_t v, max;
    apr_int64_t *field;
    char *end;

    (void)dconf;
    switch ((long)cmd->info) {
    case STUBMAIL_MAX_BODY:
        field = &c->max_body;
        max = APR_INT64_C(1) << 30;     /* 1 GiB: bodies are held in memory */
        break;
    case STUBMAIL_MAX_PAIRS:
        field = &c->max_pairs;
        max = 10000000;
        break;
    default:
        field = &c->poll_limit;
        max = 1000000;
        break;
    }
    errno = 0;
    v = apr_strtoi64(arg, &end, 10);
    if (errno || end == arg || *end != '\0' || v < 1 || v > max)
        return apr_psprintf(cmd->pool, "%s: expected a number from 1 to %"
                            APR_INT64_T_FMT ", not '%s'", cmd->cmd->name,
                            max, arg);
    *field = v;
    return NULL;
}

static const command_rec stubmail_cmds[] = {
    AP_INIT_TAKE1("StubmailSpoolDir", stubmail_set_spool_dir, NULL, RSRC_CONF,
                  "directory holding the message bodies (default "
                  STUBMAIL_DEFAULT_SPOOL_DIR ")"),
    AP_INIT_TAKE1("StubmailMaxRequestBody", stubmail_set_number,
                  (void *)STUBMAIL_MAX_BODY, RSRC_CONF,
                  "largest POST body in bytes; larger gets 413 (default 1048576)"),
    AP_INIT_TAKE1("StubmailMaxPairs", stubmail_set_number,
                  (void *)STUBMAIL_MAX_PAIRS, RSRC_CONF,
                  "most pairs in one poll; more gets 413 (default 10000)"),
    AP_INIT_TAKE1("StubmailPollLimit", stubmail_set_number,
                  (void *)STUBMAIL_POLL_LIMIT, RSRC_CONF,
                  "most entries in one poll answer (default 1000)"),
    { NULL }
};

/* ------------------------------------------------------------------------
 * SQL, prepared through mod_dbd under these labels (also the PostgreSQL
 * statement names). %s is apr_dbd's placeholder; no literal '%' anywhere.
 * ---------------------------------------------------------------------- */

#define SQL_RFC3339(col) \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

typedef struct stubmail_stmt {
    const char *label;
    const char *sql;
} stubmail_stmt;

#define STMT_AUTH      "stubmail_auth"
#define STMT_POLL      "stubmail_poll"
#define STMT_FETCH     "stubmail_fetch"
#define STMT_ACK_MARK  "stubmail_ack_mark"
#define STMT_ACK_SEEN  "stubmail_ack_seen"
#define STMT_ACK_DONE  "stubmail_ack_done"

static const stubmail_stmt stubmail_stmts[] = {
    /* $1 domain */
    { STMT_AUTH, "SELECT secret FROM peer WHERE domain = %s" },
    /* $1 pairs as JSON, $2 polling domain, $3 limit + 1.
     * The pairs are grouped by recipient, and each recipient is looked up
     * on its own (LATERAL; OFFSET 0 keeps the planner from flattening it)
     * through outbox_pending_by_recipient and message_pkey, so the cost
     * follows the number of pairs and matches, never the size of the
     * outbox. Grouping also makes every (message, recipient) appear once
     * (outbox's key), which a DISTINCT over the raw pairs did before. */
    { STMT_POLL,
      "SELECT l.id, l.sender, l.recipient, l.size, "
      SQL_RFC3339("l.created_at")
      " FROM (SELECT x.recipient, array_agg(DISTINCT x.sender) AS senders"
      "       FROM jsonb_to_recordset(%s::jsonb) AS x(sender text, recipient text)"
      "       GROUP BY x.recipient) AS p"
      " CROSS JOIN LATERAL ("
      "   SELECT m.id, m.sender, o.recipient, m.size, m.created_at"
      "   FROM outbox o JOIN message m ON m.id = o.message_id"
      "   WHERE o.recipient_domain = %s AND o.recipient = p.recipient"
      "   AND o.retrieved_at IS NULL AND m.body_deleted_at IS NULL"
      "   AND (m.sender = ANY (p.senders)"
      "        OR '*@' || split_part(m.sender, '@', 2) = ANY (p.senders))"
      "   OFFSET 0) AS l"
      " ORDER BY l.created_at, l.id, l.recipient"
      " LIMIT CAST(%s AS integer)" },
    /* $1 id, $2 polling domain */
    { STMT_FETCH,
      "SELECT m.spool_name, m.size, m.sender FROM message m"
      " WHERE m.id = %s AND m.body_deleted_at IS NULL"
      " AND EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id"
      "             AND o.recipient_domain = %s AND o.retrieved_at IS NULL)" },
    /* $1 id, $2 recipient, $3 polling domain */
    { STMT_ACK_MARK,
      "UPDATE outbox SET retrieved_at = now()"
      " WHERE message_id = %s AND recipient = %s AND recipient_domain = %s"
      " AND retrieved_at IS NULL RETURNING " SQL_RFC3339("retrieved_at") },
    /* $1 id, $2 recipient, $3 polling domain */
    { STMT_ACK_SEEN,
      "SELECT " SQL_RFC3339("retrieved_at") " FROM outbox"
      " WHERE message_id = %s AND recipient = %s AND recipient_domain = %s" },
    /* $1 id, $2 id */
    { STMT_ACK_DONE,
      "UPDATE message SET body_deleted_at = now()"
      " WHERE id = %s AND body_deleted_at IS NULL"
      " AND NOT EXISTS (SELECT 1 FROM outbox"
      "                 WHERE message_id = %s AND retrieved_at IS NULL)"
      " RETURNING spool_name" },
};

static APR_OPTIONAL_FN_TYPE(ap_dbd_prepare) *stubmail_dbd_prepare;
static APR_OPTIONAL_FN_TYPE(ap_dbd_acquire) *stubmail_dbd_acquire;

/* ------------------------------------------------------------------------
 * Per-request state, logging and the one error function
 * ---------------------------------------------------------------------- */

typedef struct stubmail_req {
    request_rec *r;
    const stubmail_srv_conf *conf;
    ap_dbd_t *dbd;
    const char *domain;         /* authenticated polling domain, or NULL */
    const char *id;             /* message id from the path, or NULL */
    const char *allow;          /* Allow header for 405 */
    int ret;                    /* handler result once an answer was sent */
} stubmail_req;

#define SMLOG(q, level, rv, fmt, ...)                                        \
    ap_log_rerror(APLOG_MARK, (level), (rv), (q)->r,                         \
                  "stubmail: domain=%s id=%s: " fmt,                         \
                  (q)->domain ? (q)->domain : "-",                           \
                  (q)->id ? (q)->id : "-", ##__VA_ARGS__)

/* Protocol error codes and their HTTP status (docs/PROTOCOL.md, Errors). */
static const struct {
    const char *code;
    int status;
} stubmail_codes[] = {
    { "bad_json",               HTTP_BAD_REQUEST },
    { "bad_request",            HTTP_BAD_REQUEST },
    { "bad_id",                 HTTP_BAD_REQUEST },
    { "auth_required",          HTTP_UNAUTHORIZED },
    { "auth_failed",            HTTP_UNAUTHORIZED },
    { "foreign_recipient",      HTTP_FORBIDDEN },
    { "not_found",              HTTP_NOT_FOUND },
    { "no_such_endpoint",       HTTP_NOT_FOUND },
    { "method_not_allowed",     HTTP_METHOD_NOT_ALLOWED },
    { "length_required",        HTTP_LENGTH_REQUIRED },
    { "too_large",              HTTP_REQUEST_ENTITY_TOO_LARGE },
    { "too_many_pairs",         HTTP_REQUEST_ENTITY_TOO_LARGE },
    { "unsupported_media_type", HTTP_UNSUPPORTED_MEDIA_TYPE },
    { "internal_error",         HTTP_INTERNAL_SERVER_ERROR },
    { "unavailable",            HTTP_SERVICE_UNAVAILABLE },
};

/* Send text (copied) as the whole response body with the given status. */
static int stubmail_send(stubmail_req *q, int status, const char *ctype,
                         const char *text)
{
    request_rec *r = q->r;
    apr_size_t len = strlen(text);
    apr_bucket_brigade *bb;
    apr_status_t rv;

    r->status = status;
    ap_set_content_type(r, ctype);
    ap_set_content_length(r, len);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_pool_create(
        apr_pstrmemdup(r->pool, text, len), len, r->pool, bb->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, bb);
    if (rv != APR_SUCCESS)
        SMLOG(q, APLOG_DEBUG, rv, "sending the answer failed");
    return OK;
}

/* 1 if the request may carry a body larger than StubmailMaxRequestBody. */
static int stubmail_body_unbounded(stubmail_req *q)
{
    const char *cl = apr_table_get(q->r->headers_in, "Content-Length");
    apr_off_t length;
    char *end;

    if (apr_table_get(q->r->headers_in, "Transfer-Encoding"))
        return 1;
    if (cl == NULL)
        return 0;
    return apr_strtoff(&length, cl, &end, 10) != APR_SUCCESS || *end != '\0'
           || length > q->conf->max_body;
}

/* The one way out with an error: map code to status, log why with the
 * request's context, answer {"error":code,"message":message}. Client
 * errors log at info, server trouble at error. */
static int stubmail_fail(stubmail_req *q, const char *code,
                         const char *message, const char *why)
{
    request_rec *r = q->r;
    int status = HTTP_INTERNAL_SERVER_ERROR;
    char *body;
    size_t i;

    for (i = 0; i < sizeof(stubmail_codes) / sizeof(stubmail_codes[0]); i++) {
        if (strcmp(stubmail_codes[i].code, code) == 0) {
            status = stubmail_codes[i].status;
            break;
        }
    }
    SMLOG(q, status >= 500 ? APLOG_ERR : APLOG_INFO, 0, "%s %s %s: %d %s: %s",
          r->method, r->uri, r->useragent_ip, status, code, why ? why : message);

    /* Leave the connection in step for keep-alive by reading what is left
     * of the request body (a no-op for statuses that drop the connection,
     * 411 and 413 among them), unless that could be a lot: then close. */
    r->status = status;
    if (stubmail_body_unbounded(q))
        r->connection->keepalive = AP_CONN_CLOSE;
    ap_discard_request_body(r);

    switch (status) {
    case HTTP_UNAUTHORIZED:
        apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                       "Basic realm=\"stubmail\"");
        break;
    case HTTP_METHOD_NOT_ALLOWED:
        apr_table_setn(r->err_headers_out, "Allow", q->allow ? q->allow : "");
        break;
    case HTTP_SERVICE_UNAVAILABLE:
        apr_table_setn(r->err_headers_out, "Retry-After", STUBMAIL_RETRY_AFTER);
        break;
    }

    body = sm_error_body(code, message);
    if (body == NULL) {
        SMLOG(q, APLOG_ERR, APR_ENOMEM, "out of memory encoding an error");
        return q->ret = status;
    }
    stubmail_send(q, status, "application/json", body);
    free(body);
    return q->ret = OK;
}

/* stubmail_fail for helpers that return 1 = go on, 0 = answered. */
static int stubmail_fail_0(stubmail_req *q, const char *code,
                           const char *message, const char *why)
{
    stubmail_fail(q, code, message, why);
    return 0;
}

/* The protocol code for a refused request body; lib says "internal" when
 * it ran out of memory, which is our trouble, not the client's. */
static const char *stubmail_parse_code(const sm_parse_error *perr)
{
    if (perr->code == NULL || strcmp(perr->code, "internal") == 0)
        return "unavailable";
    return perr->code;
}

/* Send a jansson value as a 200 answer; takes the reference. */
static int stubmail_send_json(stubmail_req *q, json_t *root)
{
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;

    json_decref(root);
    if (text == NULL)
        return stubmail_fail(q, "unavailable", "internal error, retry later",
                             "out of memory encoding the answer");
    stubmail_send(q, HTTP_OK, "application/json", text);
    free(text);
    return OK;
}

/* ------------------------------------------------------------------------
 * Database helpers
 * ---------------------------------------------------------------------- */

static const char *stubmail_sql_of(const char *label)
{
    size_t i;

    for (i = 0; i < sizeof(stubmail_stmts) / sizeof(stubmail_stmts[0]); i++)
        if (strcmp(stubmail_stmts[i].label, label) == 0)
            return stubmail_stmts[i].sql;
    return NULL;
}

static const char *stubmail_db_error(stubmail_req *q, int rc)
{
    const char *err = apr_dbd_error(q->dbd->driver, q->dbd->handle, rc);
    char *e = apr_pstrdup(q->r->pool, err ? err : "unknown error"), *c;
    size_t n;

    for (c = e; *c; c++)        /* libpq's messages span lines */
        if (*c == '\n' || *c == '\r' || *c == '\t')
            *c = ' ';
    n = strlen(e);
    while (n > 0 && e[n - 1] == ' ')
        e[--n] = '\0';
    return e;
}

/* Run a prepared statement that returns rows (SELECT, ... RETURNING) with
 * random access: libpq reads the whole result, so an SQL error shows here,
 * not as an empty result. Callers still read every row with
 * stubmail_next_row until it says 0. Returns 0, or -1 after logging.
 *
 * When PostgreSQL restarted, a pooled connection is dead until used, and
 * apr_dbd_pgsql's connection check then silently PQreset()s it; mod_dbd
 * does not prepare its statements again. So after a failure: check (and
 * reset) the connection, prepare the statement once more on it (into the
 * same apr_dbd_prepared_t that mod_dbd's hash holds) and retry once. If the
 * statement still existed, that PREPARE fails and the first error stands. */
static int stubmail_select(stubmail_req *q, const char *label,
                           apr_dbd_results_t **res, int nargs,
                           const char **args)
{
    apr_dbd_prepared_t *st;
    const char *first;
    int rc;

    *res = NULL;
    st = apr_hash_get(q->dbd->prepared, label, APR_HASH_KEY_STRING);
    if (st == NULL) {
        SMLOG(q, APLOG_ERR, 0, "prepared statement %s is missing", label);
        return -1;
    }
    rc = apr_dbd_pselect(q->dbd->driver, q->r->pool, q->dbd->handle, res, st,
                         1, nargs, args);
    if (rc == 0)
        return 0;
    first = stubmail_db_error(q, rc);
    *res = NULL;
    if (apr_dbd_check_conn(q->dbd->driver, q->r->pool, q->dbd->handle)
            == APR_SUCCESS
        && apr_dbd_prepare(q->dbd->driver, q->dbd->pool, q->dbd->handle,
                        stubmail_sql_of(label), label, &st) == 0) {
        SMLOG(q, APLOG_NOTICE, 0, "prepared %s again on a reset database "
              "connection", label);
        rc = apr_dbd_pselect(q->dbd->driver, q->r->pool, q->dbd->handle, res,
                             st, 1, nargs, args);
        if (rc == 0)
            return 0;
        first = stubmail_db_error(q, rc);
        *res = NULL;
    }
    SMLOG(q, APLOG_ERR, 0, "%s failed: %s", label, first);
    return -1;
}

/* 1 with *row set while rows remain, then 0 (and the result is released). */
static int stubmail_next_row(stubmail_req *q, apr_dbd_results_t *res,
                             apr_dbd_row_t **row)
{
    return apr_dbd_get_row(q->dbd->driver, q->r->pool, res, row, -1) == 0;
}

static const char *stubmail_col(stubmail_req *q, apr_dbd_row_t *row, int n)
{
    const char *v = apr_dbd_get_entry(q->dbd->driver, row, n);

    return v ? apr_pstrdup(q->r->pool, v) : "";
}

/* ------------------------------------------------------------------------
 * Authentication: HTTP Basic, user = polling domain, password = secret
 * ---------------------------------------------------------------------- */

/* Constant time in the stored secret; depends only on the given length. */
static int stubmail_secret_equal(const char *given, const char *stored)
{
    size_t gl = strlen(given), sl = strlen(stored), i;
    volatile unsigned int diff = (unsigned int)(gl ^ sl);

    for (i = 0; i < gl; i++)
        diff |= (unsigned char)given[i]
                ^ (unsigned char)stored[sl ? i % sl : 0];
    return diff == 0 && sl > 0;
}

/* 1 with q->domain set, or 0 when an error answer went out (q->ret). */
static int stubmail_authenticate(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *auth, *user = NULL, *pass = NULL, *secret = NULL;
    char *domain;
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[1];

    auth = apr_table_get(r->headers_in, "Authorization");
    if (auth == NULL || strcasecmp(ap_getword_white(r->pool, &auth), "Basic") != 0)
        return stubmail_fail_0(q, "auth_required", "HTTP Basic credentials required",
                               "no Basic credentials");
    if (ap_get_basic_auth_components(r, &user, &pass) != APR_SUCCESS)
        return stubmail_fail_0(q, "auth_failed", "bad credentials",
                               "malformed Basic credentials");
    domain = apr_pstrdup(r->pool, user);
    ap_str_tolower(domain);
    if (strlen(domain) > SM_DOMAIN_MAX || !sm_domain_valid(domain))
        return stubmail_fail_0(q, "auth_failed", "bad credentials",
                               apr_psprintf(r->pool, "user '%s' is not a domain",
                                            ap_escape_logitem(r->pool, user)));

    args[0] = domain;
    if (stubmail_select(q, STMT_AUTH, &res, 1, args) != 0)
        return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                               "looking up the peer failed");
    while (stubmail_next_row(q, res, &row)) {
        if (secret == NULL)
            secret = stubmail_col(q, row, 0);
    }

    /* Compare against a dummy for an unknown domain too: same work. */
    if (!stubmail_secret_equal(pass, secret ? secret : "-unknown-peer-secret-")
        || secret == NULL)
        return stubmail_fail_0(q, "auth_failed", "bad credentials",
                               apr_psprintf(r->pool, "%s for '%s'",
                                            secret ? "wrong secret" : "unknown domain",
                                            domain));
    q->domain = domain;
    r->user = domain;
    return 1;
}

/* ------------------------------------------------------------------------
 * Request bodies
 * ---------------------------------------------------------------------- */

static int stubmail_is_json(const char *ctype)
{
    size_t n;

    if (ctype == NULL)
        return 0;
    while (*ctype == ' ' || *ctype == '\t')
        ctype++;
    n = strcspn(ctype, "; \t");
    return n == strlen("application/json")
           && strncasecmp(ctype, "application/json", n) == 0;
}

/* Read the whole JSON body (at most StubmailMaxRequestBody bytes) into
 * *body (NUL-terminated, in r->pool). 1, or 0 when an error answer went
 * out (q->ret). */
static int stubmail_read_body(stubmail_req *q, char **body, apr_size_t *len)
{
    request_rec *r = q->r;
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_off_t length;
    apr_bucket_brigade *bb;
    apr_size_t got = 0;
    char *buf, *end;
    int eos = 0;

    if (cl == NULL || apr_table_get(r->headers_in, "Transfer-Encoding"))
        return stubmail_fail_0(q, "length_required", "Content-Length required",
                             "POST without Content-Length");
    if (apr_strtoff(&length, cl, &end, 10) != APR_SUCCESS || end == cl
        || *end != '\0' || length < 0)
        return stubmail_fail_0(q, "bad_request", "invalid Content-Length",
                             "invalid Content-Length");
    if (length > q->conf->max_body)
        return stubmail_fail_0(q, "too_large", "request body too large",
                             apr_psprintf(r->pool, "Content-Length %" APR_OFF_T_FMT
                                          " above StubmailMaxRequestBody %"
                                          APR_INT64_T_FMT, length,
                                          q->conf->max_body));
    if (!stubmail_is_json(apr_table_get(r->headers_in, "Content-Type")))
        return stubmail_fail_0(q, "unsupported_media_type",
                             "Content-Type must be application/json",
                             apr_psprintf(r->pool, "Content-Type '%s'",
                                          ap_escape_logitem(r->pool,
                                              apr_table_get(r->headers_in,
                                                            "Content-Type"))));

    buf = apr_palloc(r->pool, (apr_size_t)length + 1);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    while (!eos) {
        apr_bucket *b;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_BLOCK_READ, HUGE_STRING_LEN);

        if (rv != APR_SUCCESS) {
            apr_brigade_cleanup(bb);
            r->connection->keepalive = AP_CONN_CLOSE;
            return stubmail_fail_0(q, "bad_request", "could not read the request body",
                                 "reading the request body failed");
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t n;

            if (APR_BUCKET_IS_EOS(b)) {
                eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b))
                continue;
            rv = apr_bucket_read(b, &data, &n, APR_BLOCK_READ);
            if (rv != APR_SUCCESS || got + n > (apr_size_t)length) {
                apr_brigade_cleanup(bb);
                r->connection->keepalive = AP_CONN_CLOSE;
                return stubmail_fail_0(q, "bad_request",
                                     "could not read the request body",
                                     "request body unreadable or longer than "
                                     "Content-Length");
            }
            memcpy(buf + got, data, n);
            got += n;
        }
        apr_brigade_cleanup(bb);
    }
    buf[got] = '\0';
    *body = buf;
    *len = got;
    return 1;
}

/* ------------------------------------------------------------------------
 * POST v1/poll
 * ---------------------------------------------------------------------- */

static int stubmail_poll(stubmail_req *q)
{
    request_rec *r = q->r;
    char *body, *pairs_json = NULL;
    apr_size_t len;
    sm_pair *pairs = NULL;
    size_t npairs = 0;
    sm_parse_error perr;
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[3];
    json_t *root = NULL, *messages = NULL;
    apr_int64_t n = 0;
    int more = 0, ret;

    if (!stubmail_read_body(q, &body, &len))
        return q->ret;

    memset(&perr, 0, sizeof(perr));
    if (sm_poll_request_parse(body, len, q->domain, (size_t)q->conf->max_pairs,
                              &pairs, &npairs, &perr) != 0) {
        ret = stubmail_fail(q, stubmail_parse_code(&perr),
                            perr.message, apr_pstrcat(r->pool, "poll refused: ",
                                                      perr.message, NULL));
        goto leave;
    }
    pairs_json = sm_pairs_sql_json(pairs, npairs);
    root = json_object();
    messages = json_array();
    if (pairs_json == NULL || root == NULL || messages == NULL) {
        ret = stubmail_fail(q, "unavailable", "internal error, retry later",
                            "out of memory");
        goto leave;
    }

    args[0] = pairs_json;
    args[1] = q->domain;
    args[2] = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, q->conf->poll_limit + 1);
    if (stubmail_select(q, STMT_POLL, &res, 3, args) != 0) {
        ret = stubmail_fail(q, "unavailable", "database unavailable, retry later",
                            "poll query failed");
        goto leave;
    }
    while (stubmail_next_row(q, res, &row)) {
        json_t *m;

        if (n++ >= q->conf->poll_limit) {
            more = 1;
            continue;           /* read every row */
        }
        m = json_pack("{s:s, s:s, s:s, s:I, s:s}",
                      "id", apr_dbd_get_entry(q->dbd->driver, row, 0),
                      "from", apr_dbd_get_entry(q->dbd->driver, row, 1),
                      "to", apr_dbd_get_entry(q->dbd->driver, row, 2),
                      "size", (json_int_t)apr_atoi64(
                          apr_dbd_get_entry(q->dbd->driver, row, 3)),
                      "time", apr_dbd_get_entry(q->dbd->driver, row, 4));
        if (m == NULL || json_array_append_new(messages, m) != 0)
            more = -1;          /* out of memory; keep draining */
    }
    if (more < 0) {
        ret = stubmail_fail(q, "unavailable", "internal error, retry later",
                            "out of memory building the answer");
        goto leave;
    }
    if (json_object_set_new(root, "messages", messages) != 0) {
        messages = NULL;
        ret = stubmail_fail(q, "unavailable", "internal error, retry later",
                            "out of memory building the answer");
        goto leave;
    }
    messages = NULL;
    json_object_set_new(root, "more", json_boolean(more));
    SMLOG(q, APLOG_INFO, 0, "poll: %lu pairs, %" APR_INT64_T_FMT " listed%s",
          (unsigned long)npairs, more ? q->conf->poll_limit : n,
          more ? ", more" : "");
    ret = stubmail_send_json(q, root);
    root = NULL;

leave:
    json_decref(messages);
    json_decref(root);
    free(pairs_json);
    free(pairs);
    return ret;
}

/* ------------------------------------------------------------------------
 * GET v1/message/{id}
 * ---------------------------------------------------------------------- */

/* Look the message up for this domain. 1 found, 0 not, -1 database error. */
static int stubmail_fetch_lookup(stubmail_req *q, const char **spool_name,
                                 const char **size, const char **sender)
{
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[2];
    int found = 0;

    args[0] = q->id;
    args[1] = q->domain;
    if (stubmail_select(q, STMT_FETCH, &res, 2, args) != 0)
        return -1;
    while (stubmail_next_row(q, res, &row)) {
        if (!found) {
            *spool_name = stubmail_col(q, row, 0);
            *size = stubmail_col(q, row, 1);
            *sender = stubmail_col(q, row, 2);
            found = 1;
        }
    }
    return found;
}

static int stubmail_fetch(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *spool_name = NULL, *size = NULL, *sender = NULL;
    char path[PATH_MAX];
    apr_file_t *fd;
    apr_finfo_t fi;
    apr_bucket_brigade *bb;
    apr_status_t rv;
    int found;

    found = stubmail_fetch_lookup(q, &spool_name, &size, &sender);
    if (found < 0)
        return stubmail_fail(q, "unavailable", "database unavailable, retry later",
                             "fetch query failed");
    if (found == 0)
        return stubmail_fail(q, "not_found", "no such message",
                             "no unacked recipient at this domain, or body gone");
    if (sm_spool_path(q->conf->spool_dir, spool_name, path, sizeof(path)) != 0)
        return stubmail_fail(q, "internal_error", "message body unavailable",
                             apr_psprintf(r->pool, "bad spool_name '%s' in the "
                                          "database", spool_name));

    rv = apr_file_open(&fd, path, APR_FOPEN_READ | APR_FOPEN_BINARY
                       | APR_FOPEN_SENDFILE_ENABLED, APR_OS_DEFAULT, r->pool);
    if (rv != APR_SUCCESS && APR_STATUS_IS_ENOENT(rv)) {
        /* A last ack may have removed it since the lookup. */
        found = stubmail_fetch_lookup(q, &spool_name, &size, &sender);
        if (found == 0)
            return stubmail_fail(q, "not_found", "no such message",
                                 "acked and removed while being fetched");
    }
    if (rv != APR_SUCCESS) {
        char err[256];

        return stubmail_fail(q, "internal_error", "message body unavailable",
                             apr_psprintf(r->pool, "cannot open spool file %s: %s",
                                          path, apr_strerror(rv, err, sizeof(err))));
    }
    rv = apr_file_info_get(&fi, APR_FINFO_SIZE, fd);
    if (rv != APR_SUCCESS) {
        char err[256];

        return stubmail_fail(q, "internal_error", "message body unavailable",
                             apr_psprintf(r->pool, "cannot stat spool file %s: %s",
                                          path, apr_strerror(rv, err, sizeof(err))));
    }
    if (fi.size != apr_atoi64(size))
        SMLOG(q, APLOG_WARNING, 0, "spool file %s has %" APR_OFF_T_FMT
              " bytes, the database says %s; serving the file", path,
              fi.size, size);

    ap_set_content_type(r, "message/rfc822");
    ap_set_content_length(r, fi.size);
    apr_table_setn(r->headers_out, "Stubmail-From", sender);
    apr_table_setn(r->headers_out, "Accept-Ranges", "bytes");
    /* The bytes behind an id never change: a strong validator for If-Range. */
    apr_table_setn(r->headers_out, "ETag",
                   apr_pstrcat(r->pool, "\"", q->id, "\"", NULL));

    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    if (fi.size > 0)
        apr_brigade_insert_file(bb, fd, 0, fi.size, r->pool);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    SMLOG(q, APLOG_INFO, 0, "fetch: %" APR_OFF_T_FMT " bytes from %s%s", fi.size,
          path, apr_table_get(r->headers_in, "Range") ? " (range)" : "");
    rv = ap_pass_brigade(r->output_filters, bb);
    if (rv != APR_SUCCESS)
        SMLOG(q, APLOG_DEBUG, rv, "fetch: sending the body failed");
    return OK;
}

/* ------------------------------------------------------------------------
 * POST v1/message/{id}/ack
 * ---------------------------------------------------------------------- */

static int stubmail_ack(stubmail_req *q)
{
    request_rec *r = q->r;
    char *body;
    apr_size_t len;
    char to[SM_ADDR_MAX + 1];
    sm_parse_error perr;
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[3];
    const char *retrieved = NULL, *spool_name = NULL;
    int first;
    json_t *root;

    if (!stubmail_read_body(q, &body, &len))
        return q->ret;
    memset(&perr, 0, sizeof(perr));
    if (sm_ack_request_parse(body, len, q->domain, to, sizeof(to), &perr) != 0)
        return stubmail_fail(q, stubmail_parse_code(&perr),
                             perr.message, apr_pstrcat(r->pool, "ack refused: ",
                                                       perr.message, NULL));

    args[0] = q->id;
    args[1] = to;
    args[2] = q->domain;
    if (stubmail_select(q, STMT_ACK_MARK, &res, 3, args) != 0)
        return stubmail_fail(q, "unavailable", "database unavailable, retry later",
                             "marking retrieved failed");
    while (stubmail_next_row(q, res, &row)) {
        if (retrieved == NULL)
            retrieved = stubmail_col(q, row, 0);
    }
    first = retrieved != NULL;
    if (!first) {
        /* Already acked (idempotent answer) or no such recipient. */
        row = NULL;
        if (stubmail_select(q, STMT_ACK_SEEN, &res, 3, args) != 0)
            return stubmail_fail(q, "unavailable", "database unavailable, retry later",
                                 "looking up the ack failed");
        while (stubmail_next_row(q, res, &row)) {
            if (retrieved == NULL)
                retrieved = stubmail_col(q, row, 0);
        }
        if (retrieved == NULL)
            return stubmail_fail(q, "not_found", "no such message",
                                 apr_psprintf(r->pool, "no recipient %s", to));
        if (*retrieved == '\0')
            return stubmail_fail(q, "unavailable", "retry later",
                                 "recipient row changed under the ack");
    }

    /* Delete the body once no recipient is pending. Also on a repeated ack,
     * so that a retry completes what an interrupted ack left undone. */
    args[1] = q->id;
    row = NULL;
    if (stubmail_select(q, STMT_ACK_DONE, &res, 2, args) != 0) {
        /* The ack itself is recorded; the next ack or the janitor
         * finishes the deletion. */
        SMLOG(q, APLOG_ERR, 0, "ack of %s recorded, but marking the body "
              "deleted failed", to);
    }
    else {
        while (stubmail_next_row(q, res, &row)) {
            if (spool_name == NULL)
                spool_name = stubmail_col(q, row, 0);
        }
    }
    if (spool_name) {
        char path[PATH_MAX];
        apr_status_t rv;

        if (sm_spool_path(q->conf->spool_dir, spool_name, path, sizeof(path)) != 0)
            SMLOG(q, APLOG_ERR, 0, "bad spool_name '%s': body left for the "
                  "janitor", spool_name);
        else if ((rv = apr_file_remove(path, r->pool)) != APR_SUCCESS)
            SMLOG(q, APLOG_ERR, rv, "cannot remove spool file %s: left for "
                  "the janitor", path);
        else
            SMLOG(q, APLOG_INFO, 0, "all recipients acked, removed %s", path);
    }

    SMLOG(q, APLOG_INFO, 0, "ack: %s retrieved %s%s", to, retrieved,
          first ? "" : " (repeated)");
    root = json_pack("{s:s, s:s, s:s}", "id", q->id, "to", to,
                     "retrieved", retrieved);
    return stubmail_send_json(q, root);
}

/* ------------------------------------------------------------------------
 * Routing
 * ---------------------------------------------------------------------- */

enum { ROUTE_NONE, ROUTE_POLL, ROUTE_FETCH, ROUTE_ACK };

/* Map the path below the <Location> prefix to an endpoint; *id points at
 * the id segment (copied into the pool) for message endpoints. */
static int stubmail_route(request_rec *r, const char *rest, const char **id)
{
    static const char msg[] = "/v1/message/";
    const char *seg, *slash;

    *id = NULL;
    if (strcmp(rest, "/v1/poll") == 0)
        return ROUTE_POLL;
    if (strncmp(rest, msg, sizeof(msg) - 1) != 0)
        return ROUTE_NONE;
    seg = rest + sizeof(msg) - 1;
    slash = strchr(seg, '/');
    if (slash == NULL) {
        if (*seg == '\0')
            return ROUTE_NONE;
        *id = apr_pstrdup(r->pool, seg);
        return ROUTE_FETCH;
    }
    if (slash == seg || strcmp(slash, "/ack") != 0)
        return ROUTE_NONE;
    *id = apr_pstrmemdup(r->pool, seg, (apr_size_t)(slash - seg));
    return ROUTE_ACK;
}

/* The path of the <Location> whose SetHandler brought us here, without
 * trailing '/': core's per-directory config of the innermost section that
 * applies (a module's own per-directory config is only created for sections
 * that contain one of its directives, and SetHandler is core's). NULL when
 * that section is not a literal path (regex, wildcard, <If>). */
static const char *stubmail_location(request_rec *r)
{
    const core_dir_config *cd = ap_get_core_module_config(r->per_dir_config);
    size_t n;

    if (cd == NULL || cd->d == NULL || cd->r != NULL || cd->d_is_fnmatch
        || cd->d[0] != '/')
        return NULL;
    n = strlen(cd->d);
    while (n > 0 && cd->d[n - 1] == '/')
        n--;
    return apr_pstrmemdup(r->pool, cd->d, n);
}

static int stubmail_handler(request_rec *r)
{
    stubmail_req q;
    const char *prefix, *rest, *id = NULL;
    size_t plen;
    int route;

    if (r->handler == NULL || strcmp(r->handler, "stubmail") != 0)
        return DECLINED;

    memset(&q, 0, sizeof(q));
    q.r = r;
    q.conf = ap_get_module_config(r->server->module_config, &stubmail_module);
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
    rest = r->uri + plen;

    route = stubmail_route(r, rest, &id);
    switch (route) {
    case ROUTE_POLL:
    case ROUTE_ACK:
        q.allow = "POST";
        if (r->method_number != M_POST)
            return stubmail_fail(&q, "method_not_allowed", "use POST",
                                 "wrong method");
        break;
    case ROUTE_FETCH:
        q.allow = "GET, HEAD";
        if (r->method_number != M_GET)
            return stubmail_fail(&q, "method_not_allowed", "use GET",
                                 "wrong method");
        break;
    default:
        return stubmail_fail(&q, "no_such_endpoint", "no such endpoint",
                             "unknown path");
    }

    q.dbd = stubmail_dbd_acquire ? stubmail_dbd_acquire(r) : NULL;
    if (q.dbd == NULL)
        return stubmail_fail(&q, "unavailable", "database unavailable, retry later",
                             "no database connection from mod_dbd");

    if (!stubmail_authenticate(&q))
        return q.ret;

    if (id) {
        if (!sm_id_valid(id))
            return stubmail_fail(&q, "bad_id", "not a message id",
                                 apr_psprintf(r->pool, "bad id '%s'",
                                              ap_escape_logitem(r->pool, id)));
        q.id = id;
    }

    switch (route) {
    case ROUTE_POLL:
        return stubmail_poll(&q);
    case ROUTE_FETCH:
        return stubmail_fetch(&q);
    default:
        return stubmail_ack(&q);
    }
}

/* ------------------------------------------------------------------------
 * Startup
 * ---------------------------------------------------------------------- */

/* Runs before mod_dbd's post_config: apply defaults, check the spool
 * directory, and register the statements for every server so that mod_dbd
 * prepares them on each connection. A virtual host without DBD directives
 * shares the main server's mod_dbd configuration: register once per
 * distinct configuration, or mod_dbd warns about conflicting labels. */
static int stubmail_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                                apr_pool_t *ptemp, server_rec *s)
{
    server_rec *sp;
    module *dbd_mod;
    apr_hash_t *done;
    size_t i;

    (void)pconf;
    (void)plog;
    stubmail_dbd_prepare = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_prepare);
    stubmail_dbd_acquire = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_acquire);
    if (stubmail_dbd_prepare == NULL || stubmail_dbd_acquire == NULL) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: mod_dbd is not "
                     "loaded: add 'LoadModule dbd_module .../mod_dbd.so' and "
                     "configure DBDriver/DBDParams");
        return HTTP_INTERNAL_SERVER_ERROR;
    }

    dbd_mod = ap_find_linked_module("mod_dbd.c");
    done = apr_hash_make(ptemp);
    for (sp = s; sp; sp = sp->next) {
        stubmail_srv_conf *c = ap_get_module_config(sp->module_config,
                                                    &stubmail_module);
        void *dbd_conf = dbd_mod ? ap_get_module_config(sp->module_config,
                                                        dbd_mod) : NULL;
        apr_finfo_t fi;
        apr_status_t rv;

        stubmail_srv_conf_defaults(c);
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
        for (i = 0; i < sizeof(stubmail_stmts) / sizeof(stubmail_stmts[0]); i++)
            stubmail_dbd_prepare(sp, stubmail_stmts[i].sql,
                                 stubmail_stmts[i].label);
    }
    return OK;
}

static void stubmail_register_hooks(apr_pool_t *p)
{
    static const char *const succ[] = { "mod_dbd.c", NULL };

    (void)p;
    ap_hook_post_config(stubmail_post_config, NULL, succ, APR_HOOK_MIDDLE);
    ap_hook_handler(stubmail_handler, NULL, NULL, APR_HOOK_MIDDLE);
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
