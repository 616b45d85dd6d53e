/* jn_notify — the notices a sender asked for at RCPT TO (RFC 3461 NOTIFY),
 * once the recipient's ISP acked: "delivered" when it retrieved the
 * message (only with NOTIFY=SUCCESS: without it a sender hears nothing of
 * mail that arrived, no backscatter), "failed" when it rejected it (with
 * NOTIFY=FAILURE, or without NOTIFY: RFC 3461 leaves the default to the
 * MTA, and Postfix sends failure notices then). NEVER: nothing. Which rows
 * are due is sql/016's outbox_notice_due(): acked, not recalled, not
 * noticed yet, and the kind asked for.
 *
 * Each message is one transaction: its due outbox rows are claimed with
 * FOR UPDATE SKIP LOCKED (another janitor at the same time skips them,
 * one that comes later finds them noticed), and its message row with FOR
 * KEY SHARE SKIP LOCKED (an expiry, which takes it FOR UPDATE, waits for
 * the next pass and then finds the rows noticed); one notice per kind is
 * handed to the MTA, the rows it names get notified_at, then the commit.
 * As for expiry notices (jn_expire.c), a crash between the MTA's answer
 * and the commit sends a notice again at the next pass, with the same
 * Message-ID. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "jn.h"

/* The rows due, as a condition the partial index of sql/016 answers */
#define DUE "o.notified_at IS NULL AND o.retrieved_at IS NOT NULL AND o.recalled_at IS NULL" \
    " AND (o.rejected_reason IS NOT NULL OR 'success' = ANY (o.dsn_notify))" \
    " AND outbox_notice_due(o) AND m.sender <> ''"

/* messages with notices due, the oldest ack first */
static const char sql_due[] =
    "SELECT o.message_id FROM outbox o JOIN message m ON m.id = o.message_id WHERE " DUE
    " GROUP BY o.message_id ORDER BY min(o.retrieved_at), o.message_id";
/* $1 id: the claim of its due rows, with what the notice says */
static const char sql_claim[] =
    "SELECT m.sender, floor(extract(epoch FROM m.created_at))::bigint,"
    " extract(epoch FROM m.expires_at)::bigint, m.dsn_envid,"
    " o.recipient, o.dsn_orcpt, floor(extract(epoch FROM o.retrieved_at))::bigint,"
    " o.rejected_reason"
    " FROM outbox o JOIN message m ON m.id = o.message_id"
    " WHERE o.message_id = $1 AND " DUE
    " ORDER BY o.recipient FOR UPDATE OF o SKIP LOCKED FOR KEY SHARE OF m SKIP LOCKED";
/* $1 id, $2 the recipients noticed, as a text[] literal */
static const char sql_noticed[] =
    "UPDATE outbox SET notified_at = now() WHERE message_id = $1 AND recipient = ANY ($2::text[])";

static char *dup_or_null(const PGresult *r, int row, int col, int *failed)
{
    char *s;

    if (PQgetisnull(r, row, col))
        return NULL;
    if ((s = strdup(PQgetvalue(r, row, col))) == NULL)
        *failed = 1;
    return s;
}

/* The claimed rows of one kind (rejected or not) into m; 0, -1 on ENOMEM. */
static int collect(const PGresult *r, const char *id, int rejected, jn_message *m)
{
    int i, failed = 0;
    jn_rcpt *rc;

    memset(m, 0, sizeof *m);
    snprintf(m->id, sizeof m->id, "%s", id);
    m->sender = strdup(PQgetvalue(r, 0, 0));
    m->created = (time_t)strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    m->expires = (time_t)strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    m->envid = dup_or_null(r, 0, 3, &failed);
    m->recipients = calloc((size_t)PQntuples(r) + 1, sizeof *m->recipients);
    if (m->sender == NULL || m->recipients == NULL)
        failed = 1;
    for (i = 0; i < PQntuples(r) && !failed; i++) {
        if (PQgetisnull(r, i, 7) == rejected)
            continue;
        rc = &m->recipients[m->nrecipients++];
        rc->addr = dup_or_null(r, i, 4, &failed);
        rc->orcpt = dup_or_null(r, i, 5, &failed);
        rc->acked = (time_t)strtoll(PQgetvalue(r, i, 6), NULL, 10);
        rc->reason = dup_or_null(r, i, 7, &failed);
    }
    if (failed) {
        jn_message_free(m);
        return -1;
    }
    return 0;
}

/* Append m's recipients to the text[] literal in out (addresses hold no
 * '"' or '\\': normalised by the milter). 0, or -1 when it does not fit. */
static int add_noticed(const jn_message *m, char *out, size_t len)
{
    size_t i, n = strlen(out);

    for (i = 0; i < m->nrecipients; i++) {
        if (n + strlen(m->recipients[i].addr) + 4 >= len)
            return -1;
        n += (size_t)snprintf(out + n, len - n, "%s\"%s\"", n > 1 ? "," : "",
                              m->recipients[i].addr);
    }
    return 0;
}

/* One message: 1 noticed, 0 nothing of it ours (another janitor's, or no
 * longer due), -1 failed (rolled back; what the MTA took is sent again at
 * the next pass only if the commit did not happen). */
static int notify_one(PGconn *db, const jn_settings *set, const char *id, jn_tally *t)
{
    static const jn_dsn_kind kinds[] = { JN_DSN_DELIVERED, JN_DSN_REJECTED };
    const char *vals[2] = { id, NULL };
    char *noticed = NULL;
    size_t cap = 64, k;
    jn_message m;
    PGresult *r = NULL;
    int rc = -1, handed = 0, later = 0;

    memset(&m, 0, sizeof m);
    if (jn_run_cmd(db, "BEGIN", 0, id, "BEGIN") != 0)
        return -1;
    r = PQexecParams(db, sql_claim, 1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sm_err("%s: claiming its ack notices: %s", id, PQresultErrorMessage(r));
        goto leave;
    }
    if (PQntuples(r) == 0) {
        rc = 0;
        goto leave;
    }
    /* room for every claimed address, quoted */
    for (k = 0; k < (size_t)PQntuples(r); k++)
        cap += strlen(PQgetvalue(r, (int)k, 4)) + 4;
    if ((noticed = malloc(cap)) == NULL) {
        sm_err("%s: out of memory", id);
        goto leave;
    }
    strcpy(noticed, "{");
    for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (collect(r, id, kinds[k] == JN_DSN_REJECTED, &m) != 0) {
            sm_err("%s: out of memory", id);
            goto leave;
        }
        if (m.nrecipients > 0) {
            if (jn_hand_over(set, kinds[k], &m) != 0)
                later = 1;          /* those rows stay due: the next pass */
            else if (add_noticed(&m, noticed, cap) == 0)
                handed++;
        }
        jn_message_free(&m);
    }
    strcat(noticed, "}");
    if (handed) {
        vals[1] = noticed;
        PQclear(r);
        r = PQexecParams(db, sql_noticed, 2, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            sm_err("%s: marking its rows noticed: %s", id, PQresultErrorMessage(r));
            goto leave;
        }
        if (jn_run_cmd(db, "COMMIT", 0, id, "COMMIT") != 0) {
            sm_err("%s: its ack notice was handed over but not recorded: the next pass "
                   "sends it again", id);
            goto leave;
        }
        t->acked_dsns += handed;
    }
    rc = later ? -1 : 1;
leave:
    PQclear(r);
    free(noticed);
    jn_message_free(&m);
    if (PQtransactionStatus(db) != PQTRANS_IDLE)
        jn_run_cmd(db, "ROLLBACK", 0, id, "ROLLBACK");
    return rc;
}

int jn_notify(PGconn *db, const jn_settings *set, jn_tally *t)
{
    PGresult *r = PQexecParams(db, sql_due, 0, NULL, NULL, NULL, NULL, 0);
    int i, rc = 0;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sm_err("listing ack notices due: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    for (i = 0; i < PQntuples(r); i++)
        if (notify_one(db, set, PQgetvalue(r, i, 0), t) < 0) {
            rc = -1;
            /* the MTA or the database is down: the rest would fail too */
            break;
        }
    PQclear(r);
    return rc;
}
