/*
 * NAME
 *	stubmail_ack - a polling domain says it has a message
 *
 * DESCRIPTION
 *	POST v1/message/ID/ack records that one recipient retrieved (or
 *	rejected) the message; POST v1/ack records a batch of such acks
 *	(up to SM_ACKS_MAX) with one statement and one commit, which is what
 *	a poller draining many messages sends. A single ack is a batch of one
 *	through the same statements, answered as an ack of its own. An ack is idempotent: a
 *	repeated one answers what the first recorded. Once no recipient of a
 *	message is pending, its body is marked deleted and its file removed,
 *	also on a repeated ack, so that a retry completes what an
 *	interrupted ack left undone.
 *
 *	An ack proves that its sender could read the message (docs/PROTOCOL.md
 *	"Receipts"): its "receipt" must hash to the one its outbox row keeps
 *	(sql/020), compared here in constant time, or the ack is refused
 *	(bad_receipt) and records nothing; a rejection too, or a thief holding
 *	only a token could reject mail away. A row stored before receipts has
 *	no hash and is acked without one. In a batch, a refused ack is
 *	answered on its own and the others are recorded.
 *
 * DIAGNOSTICS
 *	Each ack at info (one line per message and recipient, a batch too);
 *	an ack refused for its receipt at warn (a token in the hands of
 *	someone who cannot read the mail, or a poller's bug); a rejecting
 *	ack at warn (the receiver could not verify or decrypt what we
 *	stored); spool trouble at error.
 */

#include <limits.h>
#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "apr_escape.h"
#include "apr_file_io.h"
#include "apr_strings.h"

#include <jansson.h>

#include "sm_proto.h"
#include "sm_receipt.h"
#include "sm_spool.h"
#include "stubmail_db.h"
#include "stubmail_pollcache.h"
#include "stubmail_ack.h"

APLOG_USE_MODULE(stubmail);

#define DB_UNAVAILABLE "database unavailable, retry later"

/* The log line of one recorded ack. */
static void stubmail_ack_log(stubmail_req *q, const char *id, const char *to,
                             const sm_ack_request *ack, const char *retrieved, int first)
{
    if (first && ack->rejected)
        /* The receiver could not verify or decrypt what we stored: worth
         * the sender admin's attention (storage tampering, key mix-up);
         * a user who unsubscribed is no fault of ours. */
        ap_log_rerror(APLOG_MARK, strcmp(ack->reason, "unsubscribed") == 0 ? APLOG_INFO
                      : APLOG_WARNING, 0, q->r, "stubmail: domain=%s id=%s: "
                      "ack: %s rejected the message at %s: %s", q->domain, id, to,
                      retrieved, ap_escape_logitem(q->r->pool, ack->reason));
    else
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, q->r, "stubmail: domain=%s id=%s: "
                      "ack: %s retrieved %s%s", q->domain, id, to, retrieved,
                      first ? "" : " (repeated)");
}

/* Remove the body file of message id (its row already says deleted); a
 * body kept in the row (no spool_name: NULL or "") went with the UPDATE.
 * Failures are logged: the file stays in the spool. */
static void stubmail_ack_remove_file(stubmail_req *q, const char *id, const char *spool_name)
{
    char path[PATH_MAX];
    apr_status_t rv;

    if (spool_name == NULL || *spool_name == '\0')
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, q->r, "stubmail: domain=%s id=%s: all "
                      "recipients acked, body dropped from its row", q->domain, id);
    else if (sm_spool_path(q->conf->spool_dir, spool_name, path, sizeof(path)) != 0)
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r, "stubmail: domain=%s id=%s: bad "
                      "spool_name '%s': body file not removed", q->domain, id, spool_name);
    else if ((rv = apr_file_remove(path, q->r->pool)) != APR_SUCCESS)
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, q->r, "stubmail: domain=%s id=%s: cannot "
                      "remove spool file %s: it stays in the spool, remove it by hand",
                      q->domain, id, path);
    else
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, q->r, "stubmail: domain=%s id=%s: all "
                      "recipients acked, removed %s", q->domain, id, path);
}

/* ------------------------------------------------------------------------
 * POST v1/ack
 * ---------------------------------------------------------------------- */

enum { ACKS_RETRIEVED, ACKS_REJECTED, ACKS_FIRST, ACKS_EXISTS, ACKS_NCOLS };

/* The acks as the statements' JSON argument, each refused[i] marked skip
 * (refused NULL: none). NULL: out of memory. */
static const char *stubmail_acks_arg(stubmail_req *q, const sm_ack_item *items, size_t n,
                                     const char *refused)
{
    json_t *list = json_array();
    char *text;
    const char *arg;
    size_t i;

    for (i = 0; list && i < n; i++)
        if (json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:b}", "id", items[i].id,
                                                  "to", items[i].ack.to, "reason",
                                                  items[i].ack.reason, "skip",
                                                  refused && refused[i])) != 0) {
            json_decref(list);
            list = NULL;
        }
    if (list == NULL || (text = json_dumps(list, JSON_COMPACT)) == NULL) {
        json_decref(list);
        return NULL;
    }
    json_decref(list);
    arg = apr_pstrdup(q->r->pool, text);
    free(text);
    return arg;
}

/* Whether ack may be recorded against the stored receipt hash hex ("":
 * none, a row stored before receipts or no row at all). NULL: it may;
 * else why not, for the log. */
static const char *stubmail_receipt_refusal(stubmail_req *q, const sm_ack_request *ack,
                                            const char *hex)
{
    unsigned char hash[SM_RECEIPT_HASH_LEN];
    size_t len;
    apr_status_t rv;

    if (*hex == '\0')
        return NULL;
    rv = strlen(hex) == 2 * sizeof hash ? apr_unescape_hex(hash, hex, 2 * sizeof hash, 0, &len)
                                         : APR_EINVAL;
    if (rv != APR_SUCCESS || len != sizeof hash)
        return apr_psprintf(q->r->pool, "the stored receipt hash is not %d octets",
                            SM_RECEIPT_HASH_LEN);
    if (ack->receipt[0] == '\0')
        return "no receipt";
    if (!sm_receipt_matches(ack->receipt, hash, sizeof hash))
        return "the receipt is not this message's";
    return NULL;
}

/* Check every ack's receipt against its row (sql/020): refused[i] set for
 * those that may not be recorded, each logged. 1, or 0 after the error
 * answer. */
static int stubmail_acks_check_receipts(stubmail_req *q, const sm_ack_item *items, size_t n,
                                        char *refused)
{
    const char *args[2];
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *why;
    size_t i = 0;

    args[0] = stubmail_acks_arg(q, items, n, NULL);
    args[1] = q->domain;
    if (args[0] == NULL)
        return stubmail_fail_0(q, "unavailable", "out of memory, retry later",
                               "out of memory for the acks");
    if (stubmail_db_select(q, STMT_ACKS_RECEIPTS, &res, 2, args) != 0)
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE, "reading the receipts failed");
    while (stubmail_db_next_row(q, res, &row)) {
        const char *hex = apr_dbd_get_entry(q->dbd->driver, row, 0);

        if (i >= n)
            continue;           /* read every row */
        why = stubmail_receipt_refusal(q, &items[i].ack, hex ? hex : "");
        refused[i] = why != NULL;
        if (why)
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, q->r, "stubmail: domain=%s id=%s: "
                          "ack of %s refused, the message stays: %s (a token used by someone "
                          "who cannot read the message?)", q->domain, items[i].id,
                          items[i].ack.to, why);
        i++;
    }
    if (i != n)
        return stubmail_fail_0(q, "unavailable", "retry later",
                               apr_psprintf(q->r->pool, "%" APR_SIZE_T_FMT " receipt rows "
                                            "for %" APR_SIZE_T_FMT " acks", (apr_size_t)i,
                                            (apr_size_t)n));
    return 1;
}

/* Mark every ack but the refused ones, one answer per ack into answers.
 * 1, or 0 after the error answer. *ids gets the JSON array of the ids
 * recorded or repeated (their bodies may be done with). */
static int stubmail_acks_record(stubmail_req *q, const sm_ack_item *items, size_t n,
                                const char *refused, json_t *answers, json_t *ids)
{
    const char *args[5];
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    size_t i = 0;
    int broken = 0;

    args[0] = stubmail_acks_arg(q, items, n, refused);
    args[1] = q->domain;
    args[2] = apr_psprintf(q->r->pool, "%" APR_INT64_T_FMT, q->conf->min_poll_interval);
    args[3] = q->domain;
    args[4] = q->domain;
    if (args[0] == NULL)
        return stubmail_fail_0(q, "unavailable", "out of memory, retry later",
                               "out of memory for the acks");
    if (stubmail_db_select(q, STMT_ACKS_MARK, &res, 5, args) != 0)
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE, "marking retrieved failed");
    while (stubmail_db_next_row(q, res, &row)) {
        const char *cols[ACKS_NCOLS];
        json_t *a;
        int c;

        for (c = 0; c < ACKS_NCOLS; c++) {
            const char *v = apr_dbd_get_entry(q->dbd->driver, row, c);
            cols[c] = v ? v : "";
        }
        if (i >= n || broken) {
            broken = 1;         /* read every row */
            continue;
        }
        if (refused[i])
            a = json_pack("{s:s, s:s, s:s}", "id", items[i].id, "to", items[i].ack.to,
                          "error", "bad_receipt");
        else if (strcmp(cols[ACKS_EXISTS], "t") != 0)
            a = json_pack("{s:s, s:s, s:s}", "id", items[i].id, "to", items[i].ack.to,
                          "error", "not_found");
        else if (*cols[ACKS_RETRIEVED] == '\0') {
            broken = 2;         /* acked by someone else while we looked */
            continue;
        }
        else {
            stubmail_ack_log(q, items[i].id, items[i].ack.to, &items[i].ack,
                             cols[ACKS_RETRIEVED], strcmp(cols[ACKS_FIRST], "t") == 0);
            a = json_pack("{s:s, s:s, s:s, s:s}", "id", items[i].id, "to", items[i].ack.to,
                          "retrieved", cols[ACKS_RETRIEVED], "status",
                          strcmp(cols[ACKS_REJECTED], "t") == 0 ? "rejected" : "delivered");
            if (json_array_append_new(ids, json_string(items[i].id)) != 0)
                broken = 3;
        }
        if (json_array_append_new(answers, a) != 0)
            broken = 3;
        i++;
    }
    /* committed: as for one ack, the cached ETag is stale now */
    stubmail_pollcache_forget(q->domain);
    if (broken == 2)
        return stubmail_fail_0(q, "unavailable", "retry later",
                               "a recipient row changed under the ack");
    if (broken || i != n)
        return stubmail_fail_0(q, "unavailable", "retry later",
                               apr_psprintf(q->r->pool, "%" APR_SIZE_T_FMT " answers from "
                                            "the database for %" APR_SIZE_T_FMT " acks%s",
                                            (apr_size_t)i, (apr_size_t)n, broken == 3
                                            ? " (out of memory)" : ""));
    return 1;
}

/* Delete the bodies nobody is waiting for any more. */
static void stubmail_acks_remove_bodies(stubmail_req *q, json_t *ids)
{
    const char *args[1];
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    char *text;

    if (json_array_size(ids) == 0)
        return;
    if ((text = json_dumps(ids, JSON_COMPACT)) == NULL) {
        SMLOG(q, APLOG_ERR, 0, "acks recorded, but out of memory for deleting the bodies");
        return;
    }
    args[0] = apr_pstrdup(q->r->pool, text);
    free(text);
    if (stubmail_db_select(q, STMT_ACKS_DONE, &res, 1, args) != 0) {
        SMLOG(q, APLOG_ERR, 0, "acks recorded, but marking the bodies deleted failed");
        return;
    }
    while (stubmail_db_next_row(q, res, &row))
        stubmail_ack_remove_file(q, apr_pstrdup(q->r->pool,
                                                apr_dbd_get_entry(q->dbd->driver, row, 0)),
                                 apr_pstrdup(q->r->pool,
                                             apr_dbd_get_entry(q->dbd->driver, row, 1)));
}

int stubmail_acks(stubmail_req *q)
{
    sm_ack_item *items = NULL;
    size_t n = 0;
    char *refused;
    sm_parse_error perr;
    json_t *answers = json_array(), *ids = json_array();
    int rc;

    memset(&perr, 0, sizeof(perr));
    if (sm_acks_request_parse(q->body, q->body_len, q->domain, &items, &n, &perr) != 0) {
        rc = stubmail_fail(q, stubmail_parse_code(&perr), perr.message,
                           apr_pstrcat(q->r->pool, "acks refused: ", perr.message, NULL));
        goto leave;
    }
    refused = apr_pcalloc(q->r->pool, n);
    if (answers == NULL || ids == NULL) {
        rc = stubmail_fail(q, "unavailable", "out of memory, retry later", "out of memory");
        goto leave;
    }
    if (!stubmail_acks_check_receipts(q, items, n, refused)
        || !stubmail_acks_record(q, items, n, refused, answers, ids)) {
        rc = q->ret;
        goto leave;
    }
    stubmail_acks_remove_bodies(q, ids);
    rc = stubmail_send_json(q, json_pack("{s:O}", "acks", answers));
leave:
    free(items);
    json_decref(answers);
    json_decref(ids);
    return rc;
}

/* ------------------------------------------------------------------------
 * POST v1/message/{id}/ack: a batch of one, answered as an ack of its own
 * ---------------------------------------------------------------------- */

int stubmail_ack(stubmail_req *q)
{
    request_rec *r = q->r;
    sm_ack_item item;
    sm_parse_error perr;
    json_t *answers = json_array(), *ids = json_array(), *answer;
    const char *error;
    char refused = 0;
    int rc;

    memset(&perr, 0, sizeof(perr));
    memset(&item, 0, sizeof(item));
    if (sm_ack_request_parse_status(q->body, q->body_len, q->domain, &item.ack, &perr) != 0) {
        rc = stubmail_fail(q, stubmail_parse_code(&perr), perr.message,
                           apr_pstrcat(r->pool, "ack refused: ", perr.message, NULL));
        goto leave;
    }
    apr_cpystrn(item.id, q->id, sizeof(item.id));
    if (answers == NULL || ids == NULL) {
        rc = stubmail_fail(q, "unavailable", "out of memory, retry later", "out of memory");
        goto leave;
    }
    if (!stubmail_acks_check_receipts(q, &item, 1, &refused)
        || !stubmail_acks_record(q, &item, 1, &refused, answers, ids)) {
        rc = q->ret;
        goto leave;
    }
    answer = json_array_get(answers, 0);
    if ((error = json_string_value(json_object_get(answer, "error"))) != NULL) {
        rc = refused ? stubmail_fail(q, "bad_receipt", "the ack needs this message's receipt",
                                     apr_psprintf(r->pool, "ack of %s refused for its "
                                                  "receipt", item.ack.to))
                     : stubmail_fail(q, "not_found", "no such message",
                                     apr_psprintf(r->pool, "no recipient %s", item.ack.to));
        goto leave;
    }
    stubmail_acks_remove_bodies(q, ids);
    rc = stubmail_send_json(q, json_incref(answer));
leave:
    json_decref(answers);
    json_decref(ids);
    return rc;
}
