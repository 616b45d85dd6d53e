/* pd_db.c — what stubmail-pollerd says to PostgreSQL.
 *
 * One connection, opened (or reset) at the start of each cycle. Every
 * statement is one PQexecParams, bounded by statement_timeout = `timeout`.
 * PostgreSQL down is a temporary failure: the caller logs, skips the work
 * and tries again next cycle; nothing is delivered that could not first be
 * checked against table received. Every error line names the remote domain
 * (and the message id) the statement was for. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sm_log.h"
#include "pd.h"

/* Namespace of our advisory locks: one lock per remote domain, so that
 * several pollerd instances on one database never work on a domain at once.
 * The class is stubmail_lock_class('pollerd') of sql/008, the one table of
 * lock classes; spelled here so that the hot path costs no extra call. */
#define PD_LOCK_CLASS 7239032

/* Every remote contact domain of our users: where its outbox is comes
 * from discovery (pd_domain.c: peer row, else DNS). $2: a cycle made by UDP
 * stubs reads only the domains they named (ctx->only), NULL: all. The
 * site-wide contacts (sql/025) count as entries of every user that has an
 * address book, but not of one who unsubscribed from that sender; a pair
 * in both comes twice and pd_domain.c keeps one. */
static const char SQL_PAIRS[] =
    "SELECT a.contact_domain, a.contact, a.owner"
    "  FROM address_book a"
    " WHERE split_part(a.owner, '@', 2) = $1 AND a.contact_domain <> $1"
    "   AND ($2::text[] IS NULL OR a.contact_domain = ANY ($2::text[]))"
    " UNION ALL"
    " SELECT s.contact_domain, s.contact, u.owner"
    "   FROM site_contact s"
    "  CROSS JOIN (SELECT DISTINCT owner FROM address_book"
    "               WHERE split_part(owner, '@', 2) = $1) u"
    "  WHERE s.contact_domain <> $1"
    "    AND ($2::text[] IS NULL OR s.contact_domain = ANY ($2::text[]))"
    "    AND NOT EXISTS (SELECT 1 FROM address_block b"
    "                     WHERE b.owner = u.owner AND b.contact = s.contact)"
    " ORDER BY 1";

static const char SQL_UNACKED[] =
    "SELECT r.remote_domain, r.message_id, r.recipient, r.sender,"
    "       CASE WHEN r.status = 'quarantined' THEN coalesce(r.reason, 'rejected')"
    "            ELSE '' END,"
    "       coalesce(r.receipt, '')"
    "  FROM received r"
    " WHERE r.acked_at IS NULL"
    "   AND ($1::text[] IS NULL OR r.remote_domain = ANY ($1::text[]))"
    " ORDER BY r.remote_domain, r.delivered_at";

static const char SQL_RECEIVED[] =
    "SELECT acked_at IS NOT NULL,"
    "       CASE WHEN status = 'quarantined' THEN coalesce(reason, 'rejected') ELSE '' END,"
    "       coalesce(receipt, '')"
    "  FROM received"
    " WHERE remote_domain = $1 AND message_id = $2 AND recipient = $3";

/* $6: NULL for a delivery, the reason for a quarantined message; $7 the
 * body's receipt (sql/020), '' none */
static const char SQL_RECORD[] =
    "INSERT INTO received (remote_domain, message_id, recipient, sender, acked_at,"
    "                      status, reason, receipt)"
    " VALUES ($1, $2, $3, $4, CASE WHEN $5::boolean THEN now() END,"
    "         CASE WHEN $6::text IS NULL THEN 'delivered' ELSE 'quarantined' END, $6,"
    "         NULLIF($7, ''))"
    " ON CONFLICT (remote_domain, message_id, recipient) DO NOTHING";

/* $2: the acks as a JSON array of {"id", "to"} */
/* $1: the deliveries as a JSON array of {"domain", "id", "to", "from",
 * "acked", "receipt"}: one statement, one commit for them all */
static const char SQL_RECORD_MANY[] =
    "INSERT INTO received (remote_domain, message_id, recipient, sender, acked_at, status,"
    "                      receipt)"
    " SELECT r.domain, r.id, r.\"to\", r.\"from\", CASE WHEN r.acked THEN now() END,"
    "        'delivered', NULLIF(r.receipt, '')"
    "   FROM json_to_recordset($1::json)"
    "        AS r(domain text, id text, \"to\" text, \"from\" text, acked boolean,"
    "             receipt text)"
    " ON CONFLICT (remote_domain, message_id, recipient) DO NOTHING";

static const char SQL_ACKED[] =
    "UPDATE received SET acked_at = now()"
    " WHERE remote_domain = $1 AND acked_at IS NULL"
    "   AND (message_id, recipient) IN (SELECT a->>'id', a->>'to'"
    "                                   FROM json_array_elements($2::json) AS a)";

static const char SQL_LOCK[] =
    "SELECT pg_try_advisory_lock($1::integer, hashtext($2))";

static const char SQL_UNLOCK[] =
    "SELECT pg_advisory_unlock($1::integer, hashtext($2))";

/* One line of the server's error, for the log. */
static const char *pq_why(const PGresult *res, const PGconn *db)
{
    static char buf[300];
    const char *m = res ? PQresultErrorMessage(res) : "";
    size_t i;

    if (!m || !*m)
        m = db ? PQerrorMessage(db) : "no connection";
    if (!m || !*m)
        m = "unknown error";
    snprintf(buf, sizeof(buf), "%s", m);
    for (i = 0; buf[i]; i++)
        if (buf[i] == '\n' || buf[i] == '\r')
            buf[i] = ' ';
    while (i > 0 && buf[i - 1] == ' ')
        buf[--i] = '\0';
    return buf;
}

/* Run a statement for domain (and message id; either may be NULL); NULL
 * (and logged, in the words of the domain's other log lines: "domain id:
 * ...") unless it returned `want`. */
static PGresult *exec(pd_ctx *ctx, const char *domain, const char *id, const char *what,
                      const char *sql, int n, const char *const *params, ExecStatusType want)
{
    PGresult *res = NULL;
    const char *why;

    if (!ctx->db || PQstatus(ctx->db) != CONNECTION_OK) {
        why = "not connected";
    } else {
        res = PQexecParams(ctx->db, sql, n, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) == want)
            return res;
        why = pq_why(res, ctx->db);
    }
    sm_err("%s%s%s%sdatabase: %s: %s", domain ? domain : "", id ? " " : "", id ? id : "",
           domain || id ? ": " : "", what, why);
    PQclear(res);
    return NULL;
}

int pd_db_connect(pd_ctx *ctx)
{
    /* connect_timeout first: a value in the configured conninfo wins */
    const char *keys[] = { "connect_timeout", "application_name", "dbname", NULL };
    const char *vals[] = { "10", "stubmail-pollerd", ctx->conf.database, NULL };
    char ms[32];
    const char *p[1];
    PGresult *res;

    if (ctx->db && PQstatus(ctx->db) == CONNECTION_OK)
        return 0;
    if (ctx->db) {
        sm_warn("database: connection lost, reconnecting");
        PQreset(ctx->db);
    } else {
        ctx->db = PQconnectdbParams(keys, vals, 1);
    }
    if (!ctx->db || PQstatus(ctx->db) != CONNECTION_OK) {
        sm_err("database: cannot connect: %s", pq_why(NULL, ctx->db));
        goto fail;
    }
    snprintf(ms, sizeof(ms), "%ld", ctx->conf.timeout * 1000);
    p[0] = ms;
    res = exec(ctx, NULL, NULL, "set statement_timeout",
               "SELECT set_config('statement_timeout', $1, false)", 1, p, PGRES_TUPLES_OK);
    if (!res)
        goto fail;
    PQclear(res);
    sm_debug("database: connected");
    return 0;
fail:
    pd_db_close(ctx);
    return -1;
}

void pd_db_close(pd_ctx *ctx)
{
    if (ctx->db)
        PQfinish(ctx->db);
    ctx->db = NULL;
}


int pd_db_load(pd_ctx *ctx, const pd_db_loader *load)
{
    const char *p[2] = { ctx->conf.domain, ctx->only };
    char which[64];
    PGresult *res = NULL;
    int i, n, r, rc = -1;
    unsigned npairs = 0, nold = 0;

    /* no domain of its own: a stub cycle names its domains */
    snprintf(which, sizeof(which), "%s%.40s%s", ctx->only ? "domains " : "every domain",
             ctx->only ? ctx->only : "", ctx->only && strlen(ctx->only) > 40 ? "..." : "");
    if (!(res = exec(ctx, which, NULL, "reading address books", SQL_PAIRS, 2, p,
                     PGRES_TUPLES_OK)))
        goto leave;
    n = PQntuples(res);
    for (i = 0; i < n; i++) {
        if ((r = load->pair(load->arg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                            PQgetvalue(res, i, 2))) < 0)
            goto leave;
        npairs += (unsigned)r;
    }
    PQclear(res);

    if (!(res = exec(ctx, which, NULL, "reading unacked deliveries", SQL_UNACKED, 1, p + 1,
                     PGRES_TUPLES_OK)))
        goto leave;
    n = PQntuples(res);
    for (i = 0; i < n; i++) {
        if ((r = load->unacked(load->arg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                               PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                               PQgetvalue(res, i, 4), PQgetvalue(res, i, 5))) < 0)
            goto leave;
        nold += (unsigned)r;
    }
    sm_debug("database: %u pairs, %u unacked deliveries", npairs, nold);
    rc = 0;
leave:
    PQclear(res);
    return rc;
}

int pd_db_lock(pd_ctx *ctx, const char *domain)
{
    char cls[16];
    const char *p[2] = { cls, domain };
    PGresult *res;
    int got;

    snprintf(cls, sizeof(cls), "%d", PD_LOCK_CLASS);
    if (!(res = exec(ctx, domain, NULL, "taking its lock", SQL_LOCK, 2, p, PGRES_TUPLES_OK)))
        return -1;
    got = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    return got;
}

void pd_db_unlock(pd_ctx *ctx, const char *domain)
{
    char cls[16];
    const char *p[2] = { cls, domain };
    PGresult *res;

    snprintf(cls, sizeof(cls), "%d", PD_LOCK_CLASS);
    /* a lost connection has released the lock already */
    if (!ctx->db || PQstatus(ctx->db) != CONNECTION_OK)
        return;
    if ((res = exec(ctx, domain, NULL, "releasing its lock", SQL_UNLOCK, 2, p,
                    PGRES_TUPLES_OK)))
        PQclear(res);
}

int pd_db_received(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                   char *reason, char *receipt)
{
    const char *p[3] = { domain, id, to };
    char what[SM_ADDR_MAX + 64];
    PGresult *res;
    pd_unrecorded *u;
    int rc;

    reason[0] = '\0';
    receipt[0] = '\0';
    if ((u = pd_unrecorded_find(ctx, domain, id, to))) {
        snprintf(receipt, SM_RECEIPT_LEN + 1, "%s", u->receipt);
        return u->acked ? 2 : 1;
    }
    snprintf(what, sizeof(what), "looking up table received (to=<%s>)", to);
    if (!(res = exec(ctx, domain, id, what, SQL_RECEIVED, 3, p, PGRES_TUPLES_OK)))
        return -1;
    if (PQntuples(res) == 0) {
        rc = 0;
    } else {
        rc = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? 2 : 1;
        snprintf(reason, SM_ACK_REASON_MAX + 1, "%s", PQgetvalue(res, 0, 1));
        if (sm_receipt_valid(PQgetvalue(res, 0, 2)))
            snprintf(receipt, SM_RECEIPT_LEN + 1, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return rc;
}

/* $1 recipient, $2 sender: did the recipient unsubscribe from the sender
 * (sql/014)? */
static const char SQL_BLOCKED[] =
    "SELECT EXISTS (SELECT 1 FROM address_block WHERE owner = $1 AND contact = $2)";

int pd_db_blocked(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                  const char *from)
{
    const char *p[2] = { to, from };
    char what[2 * SM_ADDR_MAX + 64];
    PGresult *res;
    int rc;

    snprintf(what, sizeof(what), "looking up table address_block (from=<%s> to=<%s>)", from,
             to);
    if (!(res = exec(ctx, domain, id, what, SQL_BLOCKED, 2, p, PGRES_TUPLES_OK)))
        return -1;
    rc = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return rc;
}

int pd_db_record(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                 const char *from, int acked, const char *reason, const char *receipt)
{
    const char *p[7] = { domain, id, to, from, acked ? "true" : "false", reason, receipt };
    char what[SM_ADDR_MAX + 64];
    PGresult *res;

    snprintf(what, sizeof(what), "recording a %s (to=<%s>)",
             reason ? "quarantined message" : "delivery", to);
    if (!(res = exec(ctx, domain, id, what, SQL_RECORD, 7, p, PGRES_COMMAND_OK)))
        return -1;
    PQclear(res);
    return 0;
}

int pd_db_acked(pd_ctx *ctx, const char *domain, const pd_ack *acks, size_t n)
{
    json_t *list = json_array();
    const char *p[2] = { domain, NULL };
    char *text = NULL;
    PGresult *res;
    pd_unrecorded *u;
    size_t i, left = 0;
    int rc = -1;

    for (i = 0; list && i < n; i++) {
        if ((u = pd_unrecorded_find(ctx, domain, acks[i].item.id, acks[i].item.ack.to))) {
            u->acked = 1;       /* recorded as acked when the database is back */
            continue;
        }
        if (json_array_append_new(list, json_pack("{s:s, s:s}", "id", acks[i].item.id,
                                                  "to", acks[i].item.ack.to)) != 0)
            goto leave;
        left++;
    }
    if (!list || !(text = json_dumps(list, JSON_COMPACT))) {
        sm_err("%s: database: recording %zu acks: out of memory", domain, n);
        goto leave;
    }
    p[1] = text;
    if (left && !(res = exec(ctx, domain, NULL, "recording acks", SQL_ACKED, 2, p,
                             PGRES_COMMAND_OK)))
        goto leave;
    if (left)
        PQclear(res);
    rc = 0;
leave:
    free(text);
    json_decref(list);
    return rc;
}

int pd_unrecorded_add(pd_ctx *ctx, const char *domain, const char *id,
                      const char *to, const char *from, const char *receipt)
{
    pd_unrecorded *u = calloc(1, sizeof(*u));

    if (!u)
        return -1;
    snprintf(u->domain, sizeof(u->domain), "%s", domain);
    snprintf(u->id, sizeof(u->id), "%s", id);
    snprintf(u->to, sizeof(u->to), "%s", to);
    snprintf(u->from, sizeof(u->from), "%s", from);
    snprintf(u->receipt, sizeof(u->receipt), "%s", receipt);
    u->next = ctx->unrecorded;
    ctx->unrecorded = u;
    return 0;
}

pd_unrecorded *pd_unrecorded_find(pd_ctx *ctx, const char *domain,
                                  const char *id, const char *to)
{
    pd_unrecorded *u;

    for (u = ctx->unrecorded; u; u = u->next)
        if (!strcmp(u->id, id) && !strcmp(u->to, to) && !strcmp(u->domain, domain))
            return u;
    return NULL;
}

int pd_db_flush_unrecorded(pd_ctx *ctx)
{
    json_t *list = json_array();
    const char *p[1];
    char *text = NULL;
    PGresult *res = NULL;
    pd_unrecorded *u;
    int rc = -1;

    for (u = ctx->unrecorded; u && list; u = u->next)
        if (json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "domain",
                                                  u->domain, "id", u->id, "to", u->to,
                                                  "from", u->from, "acked", u->acked,
                                                  "receipt", u->receipt)) != 0)
            goto leave;
    if (!list || !(text = json_dumps(list, JSON_COMPACT))) {
        sm_err("database: recording deliveries: out of memory");
        goto leave;
    }
    p[0] = text;
    if (!(res = exec(ctx, NULL, NULL, "recording deliveries", SQL_RECORD_MANY, 1, p,
                     PGRES_COMMAND_OK)))
        goto leave;
    PQclear(res);
    while ((u = ctx->unrecorded)) {
        if (u->late)
            sm_info("%s %s: to=<%s>: delivery recorded late%s", u->domain, u->id, u->to,
                    u->acked ? " (acked)" : "");
        ctx->unrecorded = u->next;
        free(u);
    }
    rc = 0;
leave:
    for (u = rc ? ctx->unrecorded : NULL; u; u = u->next)
        if (!u->late) {
            u->late = 1;
            sm_err("%s %s: to=<%s>: delivered but not recorded in the database; kept in "
                   "memory (and acked so that it is not listed again)", u->domain, u->id,
                   u->to);
        }
    free(text);
    json_decref(list);
    return rc;
}

/* ---- UDP stubs and introductions (pd_stub.c) ------------------------- */

/* $1 sender, $2 its domain, $3 our domain; a site-wide contact (sql/025)
 * is known to every user */
static const char SQL_STUB_KNOWN[] =
    "SELECT EXISTS (SELECT 1 FROM address_book a"
    "                WHERE a.contact_domain = $2 AND a.contact IN ($1, '*@' || $2)"
    "                  AND split_part(a.owner, '@', 2) = $3)"
    "    OR EXISTS (SELECT 1 FROM site_contact s"
    "                WHERE s.contact_domain = $2 AND s.contact IN ($1, '*@' || $2))";

/* $1 the recipients, separated by spaces (a stub's addresses have none),
 * $2 sender, $3 its domain, $4 introductions_max: one statement for all of
 * a stub's recipients. Only a recipient that has an address book (a real
 * local user has sent mail, or the admin made one) gets introductions, and
 * only while it has fewer than $4: a flood of forged stubs updates rows, it
 * never adds without bound. A sender the recipient unsubscribed from
 * (sql/014) is not introduced again. */
static const char SQL_INTRO[] =
    "WITH r AS (SELECT DISTINCT unnest(string_to_array($1, ' ')) AS recipient),"
    " seen AS ("
    "  UPDATE introduction i SET last_seen = now(), stubs = i.stubs + 1"
    "    FROM r WHERE i.recipient = r.recipient AND i.sender = $2 RETURNING i.recipient)"
    " INSERT INTO introduction (recipient, sender, sender_domain)"
    " SELECT r.recipient, $2, $3 FROM r"
    "  WHERE r.recipient NOT IN (SELECT recipient FROM seen)"
    "    AND EXISTS (SELECT 1 FROM address_book WHERE owner = r.recipient)"
    "    AND NOT EXISTS (SELECT 1 FROM address_book"
    "                     WHERE owner = r.recipient AND contact IN ($2, '*@' || $3))"
    "    AND NOT EXISTS (SELECT 1 FROM address_block"
    "                     WHERE owner = r.recipient AND contact IN ($2, '*@' || $3))"
    "    AND NOT EXISTS (SELECT 1 FROM site_contact WHERE contact IN ($2, '*@' || $3))"
    "    AND (SELECT count(*) FROM introduction"
    "          WHERE recipient = r.recipient) < $4::bigint"
    " ON CONFLICT (recipient, sender) DO NOTHING";

int pd_db_stub(pd_ctx *ctx, const char *sender, const char *const *rcpts, size_t n,
               int record, int *known, size_t *added)
{
    const char *dom = sm_addr_domain(sender);
    const char *p[4] = { sender, dom, ctx->conf.domain, NULL }, *q[4];
    char max[32], *list;
    PGresult *res;
    size_t i, len, off;

    *known = 0;
    *added = 0;
    if (!(res = exec(ctx, dom, NULL, "looking up a stub's sender", SQL_STUB_KNOWN, 3, p,
                     PGRES_TUPLES_OK)))
        return -1;
    *known = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    if (!record)
        return 0;
    snprintf(max, sizeof(max), "%ld", ctx->conf.introductions_max);
    for (i = 0, len = 1; i < n; i++)
        len += strlen(rcpts[i]) + 1;
    if (!(list = malloc(len))) {
        sm_err("%s: recording introductions from <%s>: out of memory", dom, sender);
        return -1;
    }
    for (i = 0, off = 0; i < n; i++)
        off += (size_t)sprintf(list + off, "%s%s", i ? " " : "", rcpts[i]);
    list[off] = '\0';
    q[0] = list;
    q[1] = sender;
    q[2] = dom;
    q[3] = max;
    res = exec(ctx, dom, NULL, "recording introductions", SQL_INTRO, 4, q, PGRES_COMMAND_OK);
    free(list);
    if (!res)
        return -1;
    *added = strtoul(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return 0;
}

/* ---- the introductions digest (pd_digest.c, sql/017) --------------------- */

/* $1 intro_digest in seconds, $2 most recipients: their unannounced
 * introductions, oldest first within a recipient. A recipient who got a
 * digest within the interval waits (at most one per interval). */
static const char SQL_DIGEST_DUE[] =
    "SELECT i.recipient, i.sender, i.stubs FROM introduction i"
    " WHERE i.announced_at IS NULL AND i.recipient IN ("
    "  SELECT DISTINCT u.recipient FROM introduction u"
    "   WHERE u.announced_at IS NULL AND NOT EXISTS ("
    "    SELECT 1 FROM intro_digest d WHERE d.recipient = u.recipient"
    "       AND d.sent_at > now() - make_interval(secs => $1::bigint))"
    "   ORDER BY u.recipient LIMIT $2::bigint)"
    " ORDER BY i.recipient, i.first_seen, i.sender";

/* $1 recipient, $2 the senders the digest named (JSON array): announced,
 * and the digest's time kept, in one statement (the WITH runs whether or
 * not the INSERT reads it). An introduction accepted or declined meanwhile
 * is gone and stays gone. */
static const char SQL_DIGEST_SENT[] =
    "WITH announced AS ("
    "  UPDATE introduction SET announced_at = now()"
    "   WHERE recipient = $1 AND announced_at IS NULL"
    "     AND sender IN (SELECT jsonb_array_elements_text($2::jsonb)))"
    " INSERT INTO intro_digest (recipient, sent_at) VALUES ($1, now())"
    " ON CONFLICT (recipient) DO UPDATE SET sent_at = now()";

PGresult *pd_db_digest_due(pd_ctx *ctx, long max)
{
    char secs[24], lim[24];
    const char *p[2] = { secs, lim };

    snprintf(secs, sizeof(secs), "%ld", ctx->conf.intro_digest);
    snprintf(lim, sizeof(lim), "%ld", max);
    return exec(ctx, NULL, NULL, "reading the introductions due for a digest", SQL_DIGEST_DUE,
                2, p, PGRES_TUPLES_OK);
}

int pd_db_digest_sent(pd_ctx *ctx, const char *recipient, const char *senders_json)
{
    const char *p[2] = { recipient, senders_json };
    char what[SM_ADDR_MAX + 80];
    PGresult *res;

    snprintf(what, sizeof(what), "recording the introductions digest to <%s>", recipient);
    if (!(res = exec(ctx, NULL, NULL, what, SQL_DIGEST_SENT, 2, p, PGRES_COMMAND_OK)))
        return -1;
    PQclear(res);
    return 0;
}
