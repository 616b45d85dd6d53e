/*
 * NAME
 *	stubmail_db - mod_stubmail's prepared statements and how they run
 *
 * DESCRIPTION
 *	Every statement is prepared through mod_dbd at configuration time
 *	under its label (stubmail_db.h; also the PostgreSQL statement name),
 *	and a request acquires one pooled connection. %s is apr_dbd's
 *	placeholder; no literal '%' anywhere in the SQL.
 *
 *	When PostgreSQL restarted, a pooled connection is dead until used, and
 *	apr_dbd_pgsql's connection check then silently PQreset()s it; mod_dbd
 *	does not prepare its statements again. So after a failure a statement
 *	checks (and resets) the connection, prepares itself once more on it
 *	and runs again, once.
 *
 * DIAGNOSTICS
 *	A failed statement is logged at error with its label and PostgreSQL's
 *	message on one line; a statement prepared again at notice.
 */

#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "apr_hash.h"
#include "apr_optional.h"
#include "apr_strings.h"
#include "apr_dbd.h"
#include "mod_dbd.h"

#include "stubmail_db.h"

APLOG_USE_MODULE(stubmail);

#define SQL_RFC3339(col) \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

typedef struct stubmail_stmt {
    const char *label;
    const char *sql;
} stubmail_stmt;

static const stubmail_stmt stubmail_stmts[] = {
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
      "   AND m.expires_at > now()"
      "   AND sender_patterns(m.sender) && p.senders"
      "   OFFSET 0) AS l"
      " ORDER BY l.created_at, l.id, l.recipient"
      " LIMIT CAST(%s AS integer)" },
    /* $1 id, $2 polling domain */
    /* the body (sql/010) as hex (whatever bytea_output says), NULL when it
     * is in the spool: apr_dbd's pgsql driver reads text. An expired
     * message (sql/012) is not served: its sender is told it failed. */
    { STMT_FETCH,
      "SELECT m.spool_name, m.size, m.sender, m.format, encode(m.body, 'hex') FROM message m"
      " WHERE m.id = %s AND m.body_deleted_at IS NULL AND m.expires_at > now()"
      " AND EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id"
      "             AND o.recipient_domain = %s AND o.retrieved_at IS NULL)" },
    /* $1 the acks as a JSON array of {"id", "to", "reason", "skip"} ("" =
     * delivered; skip: refused for its receipt, answered but not marked),
     * $2 the polling domain, $3 StubmailMinPollInterval, $4
     * and $5 the polling domain. One row per ack, in the order given: the
     * time of the (first) ack, whether it rejected, and whether this
     * statement recorded it; no time when there is no such recipient. The
     * UPDATE fires pending_match_outbox_update (sql/004, as re-created by
     * 008) once per row: it takes the polling domain's "subscription"
     * advisory lock (sql/008's stubmail_lock_class) shared, so it waits
     * while a subscription change of that domain commits, and deletes the
     * pending_match row, whose trigger NOTIFYs stubmail_poll at COMMIT (the
     * UDP responder's caches learn of it that way). The statement commits
     * once for the whole batch. An ack that recorded
     * something gives the domain back one poll (docs/PROTOCOL.md,
     * "Limits"): its bucket's time moves back one interval, never before
     * now. The final SELECT reads the outbox as it was before the UPDATE,
     * so a row that this statement marked shows up through `marked`. A
     * recipient the sender recalled (sql/015) whose ISP acks all the same
     * had fetched the body before the recall: its ack is recorded. */
    { STMT_ACKS_MARK,
      "WITH a AS (SELECT t.i, t.x->>'id' AS id, t.x->>'to' AS rcpt,"
      "                  NULLIF(t.x->>'reason', '') AS reason,"
      "                  coalesce((t.x->>'skip')::boolean, false) AS skip"
      "           FROM json_array_elements(%s::json) WITH ORDINALITY AS t(x, i)),"
      " marked AS (UPDATE outbox o SET retrieved_at = now(), rejected_reason = a.reason,"
      "                                recalled_at = NULL"
      "            FROM a WHERE o.message_id = a.id AND o.recipient = a.rcpt"
      "            AND o.recipient_domain = %s AND NOT a.skip"
      "            AND (o.retrieved_at IS NULL OR o.recalled_at IS NOT NULL)"
      "            RETURNING o.message_id, o.recipient, o.retrieved_at,"
      "                      o.rejected_reason IS NOT NULL AS rejected),"
      " refund AS (UPDATE rate_limit SET tat = greatest(tat - make_interval(secs => CAST(%s AS float8)),"
      "                                                 now())"
      "            WHERE kind = 'poll' AND key = %s AND EXISTS (SELECT 1 FROM marked))"
      " SELECT " SQL_RFC3339("coalesce(m.retrieved_at, o.retrieved_at)") ","
      "        coalesce(m.rejected, o.rejected_reason IS NOT NULL),"
      "        m.message_id IS NOT NULL, o.message_id IS NOT NULL"
      " FROM a LEFT JOIN marked m ON m.message_id = a.id AND m.recipient = a.rcpt"
      " LEFT JOIN outbox o ON o.message_id = a.id AND o.recipient = a.rcpt"
      "                   AND o.recipient_domain = %s"
      " ORDER BY a.i" },
    /* $1 acks as a JSON array of {"id", "to"}, $2 the polling domain: per
     * ack, in order, the SHA-256 of its message's receipt in hex (sql/020),
     * '' when its row has none (stored before receipts) or there is no such
     * row. Read before the marking, so that the module compares the
     * receipts itself, in constant time; a row's hash never changes. */
    { STMT_ACKS_RECEIPTS,
      "SELECT coalesce(encode(o.receipt_hash, 'hex'), '')"
      " FROM json_array_elements(%s::json) WITH ORDINALITY AS t(x, i)"
      " LEFT JOIN outbox o ON o.message_id = t.x->>'id' AND o.recipient = t.x->>'to'"
      "                   AND o.recipient_domain = %s"
      " ORDER BY t.i" },
    /* $1 message ids as a JSON array: the bodies of those without a
     * pending recipient are marked deleted (and dropped from their rows),
     * one commit; the spool files to remove come back. */
    { STMT_ACKS_DONE,
      "UPDATE message m SET body_deleted_at = now(), body = NULL"
      " WHERE m.id IN (SELECT json_array_elements_text(%s::json))"
      " AND m.body_deleted_at IS NULL"
      " AND NOT EXISTS (SELECT 1 FROM outbox o"
      "                 WHERE o.message_id = m.id AND o.retrieved_at IS NULL)"
      " RETURNING m.id, m.spool_name" },
    /* $1 domain: the admin's row, if any (fpr pins the domain key) */
    { STMT_PEER, "SELECT outbox_url, fpr, pulling FROM peer WHERE domain = %s" },
    /* $1 domain: the cached _stubmail answer (sql/002 keeps the TTL
     * policy in these two functions, shared with the milter and pollerd) */
    { STMT_DNS_GET,
      "SELECT status, outbox, udp, fpr, policy, why, validated, coalesce(fpr_alt, '')"
      " FROM dns_cache_get(%s)" },
    /* $1 domain, $2 status, $3 outbox, $4 udp, $5 fpr, $6 policy, $7 why,
     * $8 ttl, $9 validated, $10 fpr-alt (sql/025); '' stands for NULL */
    { STMT_DNS_PUT,
      "SELECT dns_cache_put(%s, %s, NULLIF(%s, ''), NULLIF(%s, ''), NULLIF(%s, ''),"
      " NULLIF(%s, ''), NULLIF(%s, ''), CAST(%s AS integer), CAST(%s AS boolean),"
      " NULLIF(%s, ''))" },
    /* $1 domain, $2 nonce, $3 seconds to keep it. No row back: used
     * before. Expired nonces go on the way (the table only holds the
     * logins of the last few minutes, so the scan is short). */
    { STMT_NONCE,
      "WITH expired AS (DELETE FROM login_nonce WHERE expires_at <= now())"
      " INSERT INTO login_nonce (domain, nonce, expires_at)"
      " VALUES (%s, %s, now() + make_interval(secs => CAST(%s AS integer)))"
      " ON CONFLICT DO NOTHING RETURNING 1" },
    /* $1 kind, $2 key, $3 requests at once, $4 seconds to fill again:
     * 0 taken, else seconds to wait (sql/007_rate_limit.sql: a token
     * bucket in one locked row, shared by every child) */
    { STMT_RATE,
      "SELECT rate_take(%s, %s, CAST(%s AS integer), CAST(%s AS integer))" },
    { STMT_RATE_CLEAN, "SELECT rate_clean()" },
    /* $1 domain, $2 reset ('t'/'f'), $3 base ('' with reset), $4 pairs to
     * add and $5 to remove as JSON. One statement, so all or nothing;
     * sql/004_subscription.sql keeps pending_match in step by triggers. */
    { STMT_SUB_CHANGE,
      "SELECT ok, version FROM subscription_change(%s, CAST(%s AS boolean),"
      " CAST(NULLIF(%s, '') AS bigint), CAST(%s AS jsonb), CAST(%s AS jsonb))" },
    /* $1 and $2 domain: the ETag, the subscription version, and until
     * when the ETag holds without a notification (sql/012: the next
     * expiry, ms since the epoch, '' for never), from one snapshot */
    { STMT_POLL_STATE,
      "SELECT e.etag, coalesce((SELECT version FROM subscription_state"
      " WHERE domain = %s), 0), e.valid_until_ms FROM poll_etag_until(%s) e" },
    /* $1 domain, $2 limit + 1: what is pending for the domain's
     * subscription and not expired (sql/012), in the order it became
     * pending (pending_match_by_domain) */
    { STMT_POLL_PENDING,
      "SELECT m.id, m.sender, p.recipient, m.size, " SQL_RFC3339("m.created_at")
      " FROM pending_match p JOIN message m ON m.id = p.message_id"
      " WHERE p.domain = %s AND m.body_deleted_at IS NULL AND p.expires_at > now()"
      " ORDER BY p.seq LIMIT CAST(%s AS integer)" },
    /* $1 local user, $2 sender: one-click unsubscribe (sql/014) */
    { STMT_UNSUBSCRIBE,
      "SELECT removed, newly_blocked FROM address_unsubscribe(%s, %s)" },
    /* The user's page (stubmail_user_book.c). $1, $2, $3 the user: their
     * introductions, address book and blocks, in the page's order; one
     * row more than the page shows says it is cut. */
    { STMT_USER_BOOK,
      "SELECT kind, contact, source, " SQL_RFC3339("since") ", stubs FROM ("
      " SELECT 0 AS k, 'introduction' AS kind, sender AS contact, '' AS source,"
      "        last_seen AS since, stubs FROM introduction WHERE recipient = %s"
      " UNION ALL SELECT 1, 'book', contact, source, created_at, 0 FROM address_book"
      "  WHERE owner = %s"
      " UNION ALL SELECT 2, 'blocked', contact, source, created_at, 0 FROM address_block"
      "  WHERE owner = %s) x ORDER BY k, contact LIMIT " STUBMAIL_USER_ROWS_SQL },
    /* $1 user, $2 contact: add, unblock, accept (sql/014) */
    { STMT_USER_ADD,
      "SELECT added, unblocked, introduced FROM address_add(%s, %s)" },
    /* $1 user, $2 contact: block, decline (sql/014) */
    { STMT_USER_BLOCK,
      "SELECT removed, newly_blocked FROM address_unsubscribe(%s, %s, 'user')" },
    /* $1 user, $2 contact */
    { STMT_USER_REMOVE,
      "DELETE FROM address_book WHERE owner = %s AND contact = %s RETURNING source" },
    /* $1 the sender: the recipients of their newest messages, newest first
     * (message_by_sender), and until when each waits (sql/012) */
    { STMT_USER_SENT,
      "SELECT m.id, " SQL_RFC3339("m.created_at") ", m.size, o.recipient, "
      "coalesce(" SQL_RFC3339("o.retrieved_at") ", ''), coalesce(o.rejected_reason, ''),"
      " coalesce(" SQL_RFC3339("m.expires_at") ", ''), m.expires_at <= now(),"
      " o.recalled_at IS NOT NULL"
      " FROM (SELECT id, created_at, size, expires_at FROM message WHERE sender = %s"
      "       ORDER BY created_at DESC LIMIT " STUBMAIL_USER_SENT_SQL ") m"
      " JOIN outbox o ON o.message_id = m.id"
      " ORDER BY m.created_at DESC, m.id, o.recipient" },
    /* $1 the sender, $2 the message id (sql/015) */
    { STMT_USER_RECALL,
      "SELECT recalled, kept, " SQL_RFC3339("sent_at") " FROM message_recall(%s, %s)" },
    /* The outbox by state for stubmail-metrics (what the milter stored,
     * what was retrieved): recipients, then messages with the octets of
     * the bodies still kept. Two scans of the tables: a scrape a minute
     * is cheap, a scrape a second on a big outbox is not. */
    { STMT_METRICS,
      "SELECT 'recipients', s.state, count(*), 0 FROM"
      " (SELECT CASE WHEN o.retrieved_at IS NULL AND m.expires_at <= now() THEN 'expired'"
      "              WHEN o.retrieved_at IS NULL THEN 'waiting'"
      "              WHEN o.recalled_at IS NOT NULL THEN 'recalled'"
      "              WHEN o.rejected_reason IS NOT NULL THEN 'rejected'"
      "              ELSE 'delivered' END AS state"
      "  FROM outbox o JOIN message m ON m.id = o.message_id) AS s GROUP BY s.state"
      " UNION ALL"
      " SELECT 'messages', s.state, count(*), coalesce(sum(s.kept), 0) FROM"
      " (SELECT CASE WHEN body_deleted_at IS NOT NULL THEN 'done'"
      "              WHEN expires_at <= now() THEN 'expired' ELSE 'waiting' END AS state,"
      "         CASE WHEN body_deleted_at IS NULL THEN size ELSE 0 END AS kept"
      "  FROM message) AS s GROUP BY s.state" },
};

static APR_OPTIONAL_FN_TYPE(ap_dbd_prepare) *stubmail_dbd_prepare;
static APR_OPTIONAL_FN_TYPE(ap_dbd_acquire) *stubmail_dbd_acquire;
static APR_OPTIONAL_FN_TYPE(ap_dbd_open) *stubmail_dbd_open;
static APR_OPTIONAL_FN_TYPE(ap_dbd_close) *stubmail_dbd_close;

/* A connection of stubmail_db_own, given back to the pool by
 * stubmail_db_release or, at the latest, when the request ends. */
struct stubmail_db_hold {
    server_rec *s;
    ap_dbd_t *dbd;
};

int stubmail_db_init(server_rec *s)
{
    stubmail_dbd_prepare = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_prepare);
    stubmail_dbd_acquire = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_acquire);
    stubmail_dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
    stubmail_dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    if (stubmail_dbd_prepare == NULL || stubmail_dbd_acquire == NULL
        || stubmail_dbd_open == NULL || stubmail_dbd_close == NULL) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: mod_dbd is not "
                     "loaded: add 'LoadModule dbd_module .../mod_dbd.so' and "
                     "configure DBDriver/DBDParams");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

void stubmail_db_prepare_all(server_rec *s)
{
    size_t i;

    for (i = 0; i < sizeof(stubmail_stmts) / sizeof(stubmail_stmts[0]); i++)
        stubmail_dbd_prepare(s, stubmail_stmts[i].sql, stubmail_stmts[i].label);
}

int stubmail_db(stubmail_req *q)
{
    if (q->dbd == NULL && stubmail_dbd_acquire)
        q->dbd = stubmail_dbd_acquire(q->r);
    if (q->dbd == NULL)
        return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                               "no database connection from mod_dbd");
    return 1;
}

static apr_status_t stubmail_db_give_back(void *data)
{
    stubmail_db_hold *hold = data;

    stubmail_dbd_close(hold->s, hold->dbd);
    return APR_SUCCESS;
}

int stubmail_db_own(stubmail_req *q)
{
    request_rec *r = q->r;
    stubmail_db_hold *hold;

    if (q->dbd == NULL && stubmail_dbd_open
        && (q->dbd = stubmail_dbd_open(r->pool, r->server)) != NULL) {
        hold = apr_palloc(r->pool, sizeof(*hold));
        hold->s = r->server;
        hold->dbd = q->dbd;
        q->dbd_hold = hold;
        apr_pool_cleanup_register(r->pool, hold, stubmail_db_give_back,
                                  apr_pool_cleanup_null);
    }
    if (q->dbd == NULL)
        return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                               "no database connection from mod_dbd");
    return 1;
}

void stubmail_db_release(stubmail_req *q)
{
    if (q->dbd_hold == NULL)
        return;
    apr_pool_cleanup_run(q->r->pool, q->dbd_hold, stubmail_db_give_back);
    q->dbd_hold = NULL;
    q->dbd = NULL;
}

static const char *stubmail_sql_of(const char *label)
{
    size_t i;

    for (i = 0; i < sizeof(stubmail_stmts) / sizeof(stubmail_stmts[0]); i++)
        if (strcmp(stubmail_stmts[i].label, label) == 0)
            return stubmail_stmts[i].sql;
    return NULL;
}

/* PostgreSQL's message on one line. */
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

/* Random access: libpq reads the whole result, so an SQL error shows
 * here, not as an empty result. After a failure, prepare the statement
 * again (into the same apr_dbd_prepared_t that mod_dbd's hash holds) and
 * retry once; if the statement still existed, that PREPARE fails and the
 * first error stands. */
int stubmail_db_select(stubmail_req *q, const char *label, apr_dbd_results_t **res,
                       int nargs, const char **args)
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

int stubmail_db_next_row(stubmail_req *q, apr_dbd_results_t *res, apr_dbd_row_t **row)
{
    return apr_dbd_get_row(q->dbd->driver, q->r->pool, res, row, -1) == 0;
}

int stubmail_db_first_row(stubmail_req *q, const char *label, int nargs,
                          const char **args, int ncols, const char **cols)
{
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    int found = 0, i;

    if (stubmail_db_select(q, label, &res, nargs, args) != 0)
        return -1;
    while (stubmail_db_next_row(q, res, &row)) {
        if (found++)
            continue;           /* read every row */
        for (i = 0; i < ncols; i++) {
            const char *v = apr_dbd_get_entry(q->dbd->driver, row, i);

            cols[i] = v ? apr_pstrdup(q->r->pool, v) : "";
        }
    }
    return found > 0;
}
