/*
 * NAME
 *	stubmail_metrics - mod_stubmail's metrics in Prometheus text format
 *
 * DESCRIPTION
 *	The handler stubmail-metrics (SetHandler stubmail-metrics in a
 *	<Location> of the admin's choosing) answers GET with the Prometheus
 *	text exposition format 0.0.4:
 *
 *	stubmail_requests_total{endpoint,code} and
 *	stubmail_response_bytes_total{endpoint}: what the protocol handler
 *	answered, counted in log_transaction from the note the handler leaves
 *	(STUBMAIL_METRICS_NOTE) with the final status and r->bytes_sent;
 *	stubmail_rate_limited_total{endpoint}: those answered 429 (the poll
 *	interval, the login rates). Children come and go, so the counters
 *	live in an anonymous apr_shm segment that Apache's parent makes in
 *	post_config, added to with atomic operations (no lock: a child killed
 *	halfway loses nothing but its own increment). They start at zero with
 *	each start of Apache, as Prometheus counters may.
 *
 *	stubmail_outbox_recipients{state} and stubmail_outbox_messages{state},
 *	stubmail_outbox_bytes{state}: the outbox as the database has it now
 *	(STMT_METRICS), which is also where the milter's work shows: every
 *	message it diverted is a message row, every recipient an outbox row.
 *
 * DIAGNOSTICS
 *	A segment that cannot be made: error at startup, and the request
 *	counters are left out (the outbox gauges stay). The database down:
 *	503, as every endpoint that needs it.
 */

#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "apr_shm.h"
#include "apr_strings.h"

#include "stubmail_db.h"
#include "stubmail_metrics.h"
#include "stubmail_req.h"

APLOG_USE_MODULE(stubmail);

/* what the protocol handler's routes are called here (mod_stubmail.c's
 * route table names one of these for each route); the last catches
 * requests no route took */
static const char *const metrics_endpoints[] = {
    "key", "login", "poll", "subscription", "fetch", "ack", "unsubscribe",
    "introduction", "feed", "other"
};
#define METRICS_NENDPOINTS (sizeof(metrics_endpoints) / sizeof(metrics_endpoints[0]))

/* the statuses docs/PROTOCOL.md gives; the last catches any other */
static const int metrics_codes[] = {
    200, 204, 206, 304, 400, 401, 403, 404, 405, 409, 411, 413, 415, 416, 429, 500, 503, 0
};
#define METRICS_NCODES (sizeof(metrics_codes) / sizeof(metrics_codes[0]))

typedef struct metrics_table {
    apr_uint64_t requests[METRICS_NENDPOINTS][METRICS_NCODES];
    apr_uint64_t bytes[METRICS_NENDPOINTS];
} metrics_table;

static metrics_table *metrics;  /* NULL: no counters */

static apr_status_t metrics_off(void *unused)
{
    (void)unused;
    metrics = NULL;             /* the segment goes with pconf */
    return APR_SUCCESS;
}

void stubmail_metrics_init(apr_pool_t *pconf, server_rec *s)
{
    apr_shm_t *shm;
    apr_status_t rv;

    if ((rv = apr_shm_create(&shm, sizeof(metrics_table), NULL, pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "stubmail: metrics: cannot make a shared "
                     "memory segment of %lu octets; stubmail-metrics leaves the request "
                     "counters out", (unsigned long)sizeof(metrics_table));
        return;
    }
    memset(apr_shm_baseaddr_get(shm), 0, sizeof(metrics_table));
    metrics = apr_shm_baseaddr_get(shm);
    apr_pool_cleanup_register(pconf, NULL, metrics_off, apr_pool_cleanup_null);
}

static size_t metrics_endpoint_index(const char *name)
{
    size_t i;

    for (i = 0; i + 1 < METRICS_NENDPOINTS; i++)
        if (strcmp(metrics_endpoints[i], name) == 0)
            break;
    return i;
}

static size_t metrics_code_index(int status)
{
    size_t i;

    for (i = 0; i + 1 < METRICS_NCODES; i++)
        if (metrics_codes[i] == status)
            break;
    return i;
}

int stubmail_metrics_count(request_rec *r)
{
    const char *endpoint = apr_table_get(r->notes, STUBMAIL_METRICS_NOTE);
    size_t e;

    if (metrics == NULL || endpoint == NULL)
        return DECLINED;
    e = metrics_endpoint_index(endpoint);
    __atomic_add_fetch(&metrics->requests[e][metrics_code_index(r->status)], 1,
                       __ATOMIC_RELAXED);
    __atomic_add_fetch(&metrics->bytes[e], (apr_uint64_t)r->bytes_sent, __ATOMIC_RELAXED);
    return DECLINED;
}

static void metrics_counters(request_rec *r)
{
    size_t e, c, limited = metrics_code_index(429);

    ap_rputs("# HELP stubmail_requests_total Requests the outbox answered, by endpoint and "
             "HTTP status (code \"other\": a status not listed).\n"
             "# TYPE stubmail_requests_total counter\n", r);
    for (e = 0; e < METRICS_NENDPOINTS; e++)
        for (c = 0; c < METRICS_NCODES; c++) {
            apr_uint64_t n = __atomic_load_n(&metrics->requests[e][c], __ATOMIC_RELAXED);

            if (n == 0)
                continue;
            if (metrics_codes[c])
                ap_rprintf(r, "stubmail_requests_total{endpoint=\"%s\",code=\"%d\"} %"
                           APR_UINT64_T_FMT "\n", metrics_endpoints[e], metrics_codes[c], n);
            else
                ap_rprintf(r, "stubmail_requests_total{endpoint=\"%s\",code=\"other\"} %"
                           APR_UINT64_T_FMT "\n", metrics_endpoints[e], n);
        }
    ap_rputs("# HELP stubmail_response_bytes_total Octets sent in answers, by endpoint.\n"
             "# TYPE stubmail_response_bytes_total counter\n", r);
    for (e = 0; e < METRICS_NENDPOINTS; e++)
        ap_rprintf(r, "stubmail_response_bytes_total{endpoint=\"%s\"} %" APR_UINT64_T_FMT "\n",
                   metrics_endpoints[e],
                   __atomic_load_n(&metrics->bytes[e], __ATOMIC_RELAXED));
    ap_rputs("# HELP stubmail_rate_limited_total Requests refused with 429 (poll interval, "
             "login rates), by endpoint.\n"
             "# TYPE stubmail_rate_limited_total counter\n", r);
    for (e = 0; e < METRICS_NENDPOINTS; e++)
        ap_rprintf(r, "stubmail_rate_limited_total{endpoint=\"%s\"} %" APR_UINT64_T_FMT "\n",
                   metrics_endpoints[e],
                   __atomic_load_n(&metrics->requests[e][limited], __ATOMIC_RELAXED));
}

static const char *const metrics_rstates[] = { "waiting", "delivered", "rejected", "recalled",
                                               "expired" };
static const char *const metrics_mstates[] = { "waiting", "expired", "done" };
#define METRICS_NRSTATES 5
#define METRICS_NMSTATES 3

typedef struct metrics_outbox {
    const char *recipients[METRICS_NRSTATES];
    const char *messages[METRICS_NMSTATES];
    const char *bytes[METRICS_NMSTATES];
} metrics_outbox;

/* The outbox as the database has it, every state present ("0" when
 * nothing is in it). 1, or 0 after the error answer. */
static int metrics_outbox_read(stubmail_req *q, metrics_outbox *o)
{
    apr_dbd_results_t *res = NULL;
    apr_dbd_row_t *row = NULL;
    size_t i;

    for (i = 0; i < METRICS_NRSTATES; i++)
        o->recipients[i] = "0";
    for (i = 0; i < METRICS_NMSTATES; i++)
        o->messages[i] = o->bytes[i] = "0";
    if (!stubmail_db(q))
        return 0;
    if (stubmail_db_select(q, STMT_METRICS, &res, 0, NULL) != 0)
        return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                               "metrics: the outbox query failed");
    while (stubmail_db_next_row(q, res, &row) == 1) {
        const char *kind = apr_dbd_get_entry(q->dbd->driver, row, 0);
        const char *state = apr_dbd_get_entry(q->dbd->driver, row, 1);
        const char *n = apr_pstrdup(q->r->pool, apr_dbd_get_entry(q->dbd->driver, row, 2));
        const char *b = apr_pstrdup(q->r->pool, apr_dbd_get_entry(q->dbd->driver, row, 3));

        for (i = 0; strcmp(kind, "recipients") == 0 && i < METRICS_NRSTATES; i++)
            if (strcmp(state, metrics_rstates[i]) == 0)
                o->recipients[i] = n;
        for (i = 0; strcmp(kind, "messages") == 0 && i < METRICS_NMSTATES; i++)
            if (strcmp(state, metrics_mstates[i]) == 0) {
                o->messages[i] = n;
                o->bytes[i] = b;
            }
    }
    return 1;
}

static void metrics_outbox_write(request_rec *r, const metrics_outbox *o)
{
    size_t i;

    ap_rputs("# HELP stubmail_outbox_recipients Outbox rows (one per diverted recipient), by "
             "state.\n# TYPE stubmail_outbox_recipients gauge\n", r);
    for (i = 0; i < METRICS_NRSTATES; i++)
        ap_rprintf(r, "stubmail_outbox_recipients{state=\"%s\"} %s\n", metrics_rstates[i],
                   o->recipients[i]);
    ap_rputs("# HELP stubmail_outbox_messages Messages the milter stored, by state (done: "
             "every recipient retrieved, the body dropped).\n"
             "# TYPE stubmail_outbox_messages gauge\n", r);
    for (i = 0; i < METRICS_NMSTATES; i++)
        ap_rprintf(r, "stubmail_outbox_messages{state=\"%s\"} %s\n", metrics_mstates[i],
                   o->messages[i]);
    ap_rputs("# HELP stubmail_outbox_bytes Octets of sealed bodies kept, by message state.\n"
             "# TYPE stubmail_outbox_bytes gauge\n", r);
    for (i = 0; i < METRICS_NMSTATES; i++)
        ap_rprintf(r, "stubmail_outbox_bytes{state=\"%s\"} %s\n", metrics_mstates[i],
                   o->bytes[i]);
}

int stubmail_metrics_handler(request_rec *r)
{
    stubmail_req q;
    metrics_outbox o;

    if (r->handler == NULL || strcmp(r->handler, "stubmail-metrics") != 0)
        return DECLINED;
    memset(&q, 0, sizeof(q));
    q.r = r;
    q.conf = stubmail_conf_of(r->server);
    if (r->method_number != M_GET) {
        q.allow = "GET, HEAD";
        return stubmail_fail(&q, "method_not_allowed", "use GET", "metrics: wrong method");
    }
    if (!metrics_outbox_read(&q, &o))
        return q.ret;
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only)
        return OK;
    if (metrics)
        metrics_counters(r);
    metrics_outbox_write(r, &o);
    return OK;
}
