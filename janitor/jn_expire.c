/* jn_expire — the messages nobody retrieved in time: a warning once they
 * waited delay_warning, and at expires_at (sql/012) the failure notice and
 * the removal of the message, its outbox rows (their pending matches go by
 * cascade, which notifies the polls' caches) and its body.
 *
 * Each message is one transaction that locks its row (FOR UPDATE SKIP
 * LOCKED: another janitor working on it at the same time skips it, and
 * one that comes after finds it removed or warned), hands the notice to
 * the MTA, then removes the message or marks it warned, and commits. So
 * a message is removed once and noticed once, except for one window: a
 * crash (or a lost connection) after the MTA took the notice and before
 * the commit leaves the row as it was, and the next pass sends the notice
 * again. SMTP has no two-phase commit: the choice is a notice sent twice
 * (rarely, recognisable by its Message-ID) or one lost, and a sender who
 * is not told is worse. The message's outbox rows are locked too, so an
 * ack that races with the notice either commits first (that recipient is
 * not named) or finds its row gone.
 *
 * A notice names the recipients whose sender wants that kind (RFC 3461
 * NOTIFY, sql/016: FAILURE for the failure, DELAY for the warning, or no
 * NOTIFY at all, as Postfix does; NEVER: neither). A message with an ack
 * notice still due (jn_notify.c) is not removed until that notice went:
 * the removal would take its outbox row, and with it the notice. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sm_log.h"
#include "sm_spool.h"
#include "jn.h"

/* expired messages, oldest expiry first, without ack notices due */
static const char sql_expired[] =
    "SELECT id FROM message m WHERE expires_at <= now()"
    " AND (sender = '' OR NOT EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id"
    "                                 AND outbox_notice_due(o)))"
    " ORDER BY expires_at, id";
/* $1 delay_warning seconds: messages due a warning */
static const char sql_due_warning[] =
    "SELECT m.id FROM message m WHERE m.warned_at IS NULL AND m.expires_at > now()"
    " AND m.created_at <= now() - make_interval(secs => $1::float8)"
    " AND EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id AND o.retrieved_at IS NULL)"
    " ORDER BY m.created_at, m.id";
/* $1 id: the claim, re-checking why it was chosen */
static const char sql_claim_expired[] =
    "SELECT sender, extract(epoch FROM created_at)::bigint,"
    " extract(epoch FROM expires_at)::bigint, coalesce(spool_name, '')"
    " FROM message WHERE id = $1 AND expires_at <= now() FOR UPDATE SKIP LOCKED";
static const char sql_claim_warning[] =
    "SELECT sender, extract(epoch FROM created_at)::bigint,"
    " extract(epoch FROM expires_at)::bigint, coalesce(spool_name, '')"
    " FROM message WHERE id = $1 AND warned_at IS NULL AND expires_at > now()"
    " FOR UPDATE SKIP LOCKED";
/* $1 id: every outbox row of it, locked: whether it waits, whether an ack
 * notice is due for it, whether its sender wants a failure, a warning */
static const char sql_outbox_rows[] =
    "SELECT recipient, coalesce(dsn_orcpt, ''), retrieved_at IS NULL, outbox_notice_due(o),"
    " dsn_notify IS NULL OR 'failure' = ANY (dsn_notify),"
    " dsn_notify IS NULL OR 'delay' = ANY (dsn_notify)"
    " FROM outbox o WHERE message_id = $1 ORDER BY recipient FOR UPDATE";
static const char sql_remove[] = "DELETE FROM message WHERE id = $1";
static const char sql_warned[] = "UPDATE message SET warned_at = now() WHERE id = $1";

int jn_run_cmd(PGconn *db, const char *sql, int nparams, const char *id, const char *what)
{
    const char *vals[1] = { id };
    PGresult *r = PQexecParams(db, sql, nparams, NULL, nparams ? vals : NULL, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

    if (!ok)
        sm_err("%s: %s: %s", id, what, PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

void jn_message_free(jn_message *m)
{
    size_t i;

    free(m->sender);
    free(m->envid);
    for (i = 0; i < m->nrecipients; i++) {
        free(m->recipients[i].addr);
        free(m->recipients[i].orcpt);
        free(m->recipients[i].reason);
    }
    free(m->recipients);
    memset(m, 0, sizeof *m);
}

/* The claim and the recipients of id for a notice of kind (FAILED or
 * DELAYED), in the open transaction: 1 with *m (the recipients that did
 * not retrieve it and want that kind), *nwaiting (all that did not
 * retrieve it) and spool (the body's file, "" for a body in the row), 0
 * when another janitor has it, it no longer qualifies, or (FAILED) an ack
 * notice is still due; -1 on error. */
static int claim(PGconn *db, const char *sql, jn_dsn_kind kind, const char *id,
                 jn_message *m, size_t *nwaiting, char *spool, size_t spoollen)
{
    const char *vals[1] = { id };
    PGresult *r = PQexecParams(db, sql, 1, NULL, vals, NULL, NULL, 0);
    int rc = -1, i, wants;
    jn_rcpt *named;

    memset(m, 0, sizeof *m);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sm_err("%s: claiming the message: %s", id, PQresultErrorMessage(r));
        goto leave;
    }
    if (PQntuples(r) == 0) {
        rc = 0;
        goto leave;
    }
    snprintf(m->id, sizeof m->id, "%s", id);
    m->sender = strdup(PQgetvalue(r, 0, 0));
    m->created = (time_t)strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    m->expires = (time_t)strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    snprintf(spool, spoollen, "%s", PQgetvalue(r, 0, 3));
    PQclear(r);
    r = PQexecParams(db, sql_outbox_rows, 1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sm_err("%s: locking its outbox rows: %s", id, PQresultErrorMessage(r));
        goto leave;
    }
    m->recipients = calloc((size_t)PQntuples(r) + 1, sizeof *m->recipients);
    if (m->sender == NULL || m->recipients == NULL) {
        sm_err("%s: out of memory", id);
        goto leave;
    }
    *nwaiting = 0;
    for (i = 0; i < PQntuples(r); i++) {
        /* acked since the message was chosen, and its notice not sent:
         * that comes first (the removal would lose it) */
        if (kind == JN_DSN_FAILED && m->sender[0] && PQgetvalue(r, i, 3)[0] == 't') {
            sm_info("%s: expired, but an ack notice to %s is still due: removed after it",
                    id, m->sender);
            rc = 0;
            goto leave;
        }
        if (PQgetvalue(r, i, 2)[0] != 't')
            continue;
        (*nwaiting)++;
        wants = PQgetvalue(r, i, kind == JN_DSN_FAILED ? 4 : 5)[0] == 't';
        if (!wants)
            continue;
        named = &m->recipients[m->nrecipients++];
        if ((named->addr = strdup(PQgetvalue(r, i, 0))) == NULL
            || (PQgetvalue(r, i, 1)[0] && (named->orcpt = strdup(PQgetvalue(r, i, 1))) == NULL)) {
            sm_err("%s: out of memory", id);
            goto leave;
        }
    }
    rc = 1;
leave:
    PQclear(r);
    if (rc != 1)
        jn_message_free(m);
    return rc;
}

/* The recipients as one log field: "a@x, b@y" */
static void recipient_list(const jn_message *m, char *out, size_t len)
{
    size_t i, n = 0;

    out[0] = '\0';
    for (i = 0; i < m->nrecipients && n < len; i++)
        n += (size_t)snprintf(out + n, len - n, "%s%s", i ? ", " : "", m->recipients[i].addr);
}

/* A refusal for good is logged and counts as handed: the message goes (or
 * its rows are marked noticed) anyway, as an MTA drops a bounce it cannot
 * deliver. */
int jn_hand_over(const jn_settings *set, jn_dsn_kind kind, const jn_message *m)
{
    static const char *const name[] = { "failure", "delay", "success", "failure" };
    static const char *const about[] = { "not retrieved by", "not retrieved by",
                                         "retrieved by", "rejected by" };
    char why[512], rcpts[1024];
    char *text;
    int rc = -1;

    recipient_list(m, rcpts, sizeof rcpts);
    if ((text = jn_dsn_build(kind, set, m, time(NULL))) == NULL) {
        sm_err("%s: out of memory building the notice to %s", m->id, m->sender);
        return -1;
    }
    switch (jn_submit(set, m->sender, text, why, sizeof why)) {
    case JN_SUBMIT_OK:
        sm_info("%s: %s notice to %s handed to the MTA (%s %s)", m->id, name[kind],
                m->sender, about[kind], rcpts);
        rc = 0;
        break;
    case JN_SUBMIT_REFUSED:
        sm_err("%s: the MTA refused the %s notice to %s for good, not sent: %s", m->id,
               name[kind], m->sender, why);
        rc = 0;
        break;
    case JN_SUBMIT_LATER:
        sm_err("%s: %s notice to %s not handed over, next pass tries again: %s", m->id,
               name[kind], m->sender, why);
        break;
    }
    free(text);
    return rc;
}

static PGresult *candidates(PGconn *db, const char *sql, const jn_settings *set)
{
    char secs[32];
    const char *vals[1] = { secs };
    PGresult *r;

    snprintf(secs, sizeof secs, "%ld", set->delay_warning);
    r = PQexecParams(db, sql, sql == sql_due_warning ? 1 : 0, NULL,
                     sql == sql_due_warning ? vals : NULL, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        return r;
    sm_err("listing messages: %s", PQresultErrorMessage(r));
    PQclear(r);
    return NULL;
}

/* One expired message: 1 removed, 0 not ours (another janitor's, or gone),
 * -1 failed (rolled back). */
static int expire_one(PGconn *db, const jn_settings *set, const char *id, jn_tally *t)
{
    char spool[SM_ID_LEN + 1], path[4096];
    jn_message m;
    size_t waiting;
    int rc = -1, claimed;

    if (jn_run_cmd(db, "BEGIN", 0, id, "BEGIN") != 0)
        return -1;
    if ((claimed = claim(db, sql_claim_expired, JN_DSN_FAILED, id, &m, &waiting, spool,
                         sizeof spool)) <= 0) {
        jn_run_cmd(db, "ROLLBACK", 0, id, "ROLLBACK");
        return claimed;
    }
    /* a message from the null sender is not bounced (RFC 5321 4.5.5) */
    if (m.nrecipients > 0 && m.sender[0] != '\0') {
        if (jn_hand_over(set, JN_DSN_FAILED, &m) != 0)
            goto leave;
        t->failed_dsns++;
    }
    if (jn_run_cmd(db, sql_remove, 1, id, "removing the message") != 0)
        goto leave;
    if (jn_run_cmd(db, "COMMIT", 0, id, "COMMIT") != 0) {
        if (m.nrecipients > 0)
            sm_err("%s: its failure notice was handed over but the removal did not "
                   "commit: the next pass sends it again", id);
        goto leave;
    }
    rc = 1;
    t->expired++;
    sm_info("%s: expired (from %s, %zu unretrieved), removed", id,
            m.sender[0] ? m.sender : "<>", waiting);
    /* after the commit: a crash here leaves a file no row names, which a
     * later pass removes as an orphan. ENOENT: the last ack removed it. */
    if (spool[0] && sm_spool_path(set->spool_dir, spool, path, sizeof path) == 0) {
        if (unlink(path) == 0)
            t->files++;
        else if (errno != ENOENT)
            sm_syserr("%s: removing its spool file %s (a later pass removes it)", id, path);
    }
leave:
    if (rc != 1 && PQtransactionStatus(db) != PQTRANS_IDLE)
        jn_run_cmd(db, "ROLLBACK", 0, id, "ROLLBACK");
    jn_message_free(&m);
    return rc;
}

int jn_expire(PGconn *db, const jn_settings *set, jn_tally *t)
{
    PGresult *r = candidates(db, sql_expired, set);
    int i, rc = 0;

    if (r == NULL)
        return -1;
    for (i = 0; i < PQntuples(r); i++)
        if (expire_one(db, set, PQgetvalue(r, i, 0), t) < 0) {
            rc = -1;
            /* the MTA or the database is down: the rest would fail too */
            break;
        }
    PQclear(r);
    return rc;
}

/* One message due a warning: 1 warned, 0 not ours, -1 failed. */
static int warn_one(PGconn *db, const jn_settings *set, const char *id, jn_tally *t)
{
    char spool[SM_ID_LEN + 1];
    jn_message m;
    size_t waiting = 0;
    int rc = -1, claimed;

    if (jn_run_cmd(db, "BEGIN", 0, id, "BEGIN") != 0)
        return -1;
    if ((claimed = claim(db, sql_claim_warning, JN_DSN_DELAYED, id, &m, &waiting, spool,
                         sizeof spool)) <= 0
        || waiting == 0) {
        jn_run_cmd(db, "ROLLBACK", 0, id, "ROLLBACK");
        if (claimed > 0)
            jn_message_free(&m);
        return claimed < 0 ? -1 : 0;
    }
    /* marked warned also when no recipient wants a warning (NOTIFY
     * without DELAY): it is not looked at again */
    if (m.nrecipients > 0 && m.sender[0] != '\0'
        && jn_hand_over(set, JN_DSN_DELAYED, &m) != 0)
        goto leave;
    if (jn_run_cmd(db, sql_warned, 1, id, "marking the message warned") != 0)
        goto leave;
    if (jn_run_cmd(db, "COMMIT", 0, id, "COMMIT") != 0) {
        sm_err("%s: its delay notice was handed over but not recorded: the next pass "
               "sends it again", id);
        goto leave;
    }
    rc = 1;
    if (m.nrecipients > 0 && m.sender[0] != '\0')
        t->warnings++;
leave:
    if (rc != 1 && PQtransactionStatus(db) != PQTRANS_IDLE)
        jn_run_cmd(db, "ROLLBACK", 0, id, "ROLLBACK");
    jn_message_free(&m);
    return rc;
}

int jn_warn(PGconn *db, const jn_settings *set, jn_tally *t)
{
    PGresult *r;
    int i, rc = 0;

    if (set->delay_warning == 0)
        return 0;
    if ((r = candidates(db, sql_due_warning, set)) == NULL)
        return -1;
    for (i = 0; i < PQntuples(r); i++)
        if (warn_one(db, set, PQgetvalue(r, i, 0), t) < 0) {
            rc = -1;
            break;
        }
    PQclear(r);
    return rc;
}
