/*
 * NAME
 *	stubmail_message - fetch and ack of one message
 *
 * DESCRIPTION
 *	GET v1/message/ID answers the spool file of a message that has an
 *	unacked recipient at the polling domain, as a file bucket: never read
 *	into memory, sent by sendfile, Range answered by httpd's byterange
 *	filter (the ETag is the id: the bytes behind an id never change).
 *
 *	POST v1/message/ID/ack records that one recipient retrieved (or
 *	rejected) the message; a repeated ack answers what the first recorded.
 *	Once no recipient is pending, the body is marked deleted and its file
 *	removed, also on a repeated ack, so that a retry completes what an
 *	interrupted ack left undone.
 *
 * DIAGNOSTICS
 *	Each fetch and ack at info; a rejecting ack at warn (the receiver
 *	could not verify or decrypt what we stored); spool trouble at error.
 */

#include <limits.h>
#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "http_protocol.h"
#include "util_filter.h"
#include "apr_buckets.h"
#include "apr_file_io.h"
#include "apr_strings.h"

#include <jansson.h>

#include "sm_proto.h"
#include "sm_spool.h"
#include "stubmail_db.h"
#include "stubmail_pollcache.h"
#include "stubmail_message.h"

APLOG_USE_MODULE(stubmail);

#define DB_UNAVAILABLE "database unavailable, retry later"

/* ------------------------------------------------------------------------
 * GET v1/message/{id}
 * ---------------------------------------------------------------------- */

enum { FETCH_SPOOL_NAME, FETCH_SIZE, FETCH_SENDER, FETCH_FORMAT, FETCH_NCOLS };

/* Look the message up for this domain: 1 found (cols), 0 not, -1 database
 * error. */
static int stubmail_fetch_lookup(stubmail_req *q, const char **cols)
{
    const char *args[2];

    args[0] = q->id;
    args[1] = q->domain;
    return stubmail_db_first_row(q, STMT_FETCH, 2, args, FETCH_NCOLS, cols);
}

/* The spool file of the message, open: 1 with *fd and *fi, or 0 after the
 * error answer. */
static int stubmail_fetch_open(stubmail_req *q, const char **cols, const char *path,
                               apr_file_t **fd, apr_finfo_t *fi)
{
    request_rec *r = q->r;
    const char *what = "open";
    char err[256];
    apr_status_t rv;

    rv = apr_file_open(fd, path, APR_FOPEN_READ | APR_FOPEN_BINARY
                       | APR_FOPEN_SENDFILE_ENABLED, APR_OS_DEFAULT, r->pool);
    /* A last ack may have removed it since the lookup. */
    if (rv != APR_SUCCESS && APR_STATUS_IS_ENOENT(rv)
        && stubmail_fetch_lookup(q, cols) == 0)
        return stubmail_fail_0(q, "not_found", "no such message",
                             "acked and removed while being fetched");
    if (rv == APR_SUCCESS) {
        what = "stat";
        rv = apr_file_info_get(fi, APR_FINFO_SIZE, *fd);
    }
    if (rv != APR_SUCCESS)
        return stubmail_fail_0(q, "internal_error", "message body unavailable",
                               apr_psprintf(r->pool, "cannot %s spool file %s: %s", what,
                                            path, apr_strerror(rv, err, sizeof(err))));
    return 1;
}

int stubmail_fetch(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *cols[FETCH_NCOLS];
    char path[PATH_MAX];
    apr_file_t *fd;
    apr_finfo_t fi;
    apr_bucket_brigade *bb;
    apr_status_t rv;

    switch (stubmail_fetch_lookup(q, cols)) {
    case 1:
        break;
    case 0:
        return stubmail_fail(q, "not_found", "no such message",
                             "no unacked recipient at this domain, or body gone");
    default:
        return stubmail_fail(q, "unavailable", DB_UNAVAILABLE, "fetch query failed");
    }
    if (sm_spool_path(q->conf->spool_dir, cols[FETCH_SPOOL_NAME], path, sizeof(path)) != 0)
        return stubmail_fail(q, "internal_error", "message body unavailable",
                             apr_psprintf(r->pool, "bad spool_name '%s' in the "
                                          "database", cols[FETCH_SPOOL_NAME]));
    if (!stubmail_fetch_open(q, cols, path, &fd, &fi))
        return q->ret;
    if (fi.size != apr_atoi64(cols[FETCH_SIZE]))
        SMLOG(q, APLOG_WARNING, 0, "spool file %s has %" APR_OFF_T_FMT
              " bytes, the database says %s; serving the file", path,
              fi.size, cols[FETCH_SIZE]);

    /* message.format says what the milter stored: an OpenPGP message
     * (signed, encrypted) or, from before, the plain text */
    if (strcmp(cols[FETCH_FORMAT], "openpgp") == 0) {
        ap_set_content_type(r, "application/pgp-encrypted");
        apr_table_setn(r->headers_out, "Stubmail-Format", "openpgp");
    }
    else {
        ap_set_content_type(r, "message/rfc822");
    }
    ap_set_content_length(r, fi.size);
    apr_table_setn(r->headers_out, "Stubmail-From", cols[FETCH_SENDER]);
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

enum { ACK_RETRIEVED, ACK_REJECTED, ACK_NCOLS };

/* Mark the recipient retrieved, or find the first ack's record (an ack is
 * idempotent: a repeated one answers the first one's time and status).
 * 1 with cols and *first, or 0 after the error answer. */
static int stubmail_ack_record(stubmail_req *q, const sm_ack_request *ack,
                               const char *to, const char **cols, int *first)
{
    const char *args[4];
    int rc;

    args[0] = ack->reason;      /* "" unless rejected */
    args[1] = q->id;
    args[2] = to;
    args[3] = q->domain;
    rc = stubmail_db_first_row(q, STMT_ACK_MARK, 4, args, ACK_NCOLS, cols);
    if (rc < 0)
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                               "marking retrieved failed");
    *first = rc == 1;
    if (*first) {
        /* committed: the pending set changed, so no child may answer a
         * 304 from what was cached before, even before the notification
         * reaches the responder */
        stubmail_pollcache_forget(q->domain);
        return 1;
    }
    /* Already acked, or no such recipient. */
    rc = stubmail_db_first_row(q, STMT_ACK_SEEN, 3, args + 1, ACK_NCOLS, cols);
    if (rc < 0)
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                               "looking up the ack failed");
    if (rc == 0)
        return stubmail_fail_0(q, "not_found", "no such message",
                               apr_psprintf(q->r->pool, "no recipient %s", to));
    if (*cols[ACK_RETRIEVED] == '\0')
        return stubmail_fail_0(q, "unavailable", "retry later",
                               "recipient row changed under the ack");
    return 1;
}

/* Delete the body once no recipient is pending. Failures are logged: the
 * ack itself is recorded, and a repeated ack finishes the deletion; a file
 * whose unlink failed stays in the spool (nothing removes such leftovers
 * yet). */
static void stubmail_ack_remove_body(stubmail_req *q, const char *to)
{
    const char *args[2], *spool_name;
    char path[PATH_MAX];
    apr_status_t rv;

    args[0] = q->id;
    args[1] = q->id;
    switch (stubmail_db_first_row(q, STMT_ACK_DONE, 2, args, 1, &spool_name)) {
    case 1:
        break;
    case 0:
        return;                 /* a recipient is still pending */
    default:
        SMLOG(q, APLOG_ERR, 0, "ack of %s recorded, but marking the body "
              "deleted failed", to);
        return;
    }
    if (sm_spool_path(q->conf->spool_dir, spool_name, path, sizeof(path)) != 0)
        SMLOG(q, APLOG_ERR, 0, "bad spool_name '%s': body file not removed",
              spool_name);
    else if ((rv = apr_file_remove(path, q->r->pool)) != APR_SUCCESS)
        SMLOG(q, APLOG_ERR, rv, "cannot remove spool file %s: it stays in the "
              "spool, remove it by hand", path);
    else
        SMLOG(q, APLOG_INFO, 0, "all recipients acked, removed %s", path);
}

int stubmail_ack(stubmail_req *q)
{
    request_rec *r = q->r;
    char *body;
    apr_size_t len;
    sm_ack_request ack;
    sm_parse_error perr;
    const char *to, *cols[ACK_NCOLS];
    int first;

    if (!stubmail_read_body(q, &body, &len))
        return q->ret;
    memset(&perr, 0, sizeof(perr));
    if (sm_ack_request_parse_status(body, len, q->domain, &ack, &perr) != 0)
        return stubmail_fail(q, stubmail_parse_code(&perr),
                             perr.message, apr_pstrcat(r->pool, "ack refused: ",
                                                       perr.message, NULL));
    to = apr_pstrdup(r->pool, ack.to);
    if (!stubmail_ack_record(q, &ack, to, cols, &first))
        return q->ret;
    stubmail_ack_remove_body(q, to);

    if (first && ack.rejected)
        /* The receiver could not verify or decrypt what we stored: worth
         * the sender admin's attention (storage tampering, key mix-up). */
        SMLOG(q, APLOG_WARNING, 0, "ack: %s rejected the message at %s: %s", to,
              cols[ACK_RETRIEVED], ap_escape_logitem(r->pool, ack.reason));
    else
        SMLOG(q, APLOG_INFO, 0, "ack: %s retrieved %s%s", to, cols[ACK_RETRIEVED],
              first ? "" : " (repeated)");
    return stubmail_send_json(q, json_pack("{s:s, s:s, s:s, s:s}", "id", q->id, "to", to,
                                           "retrieved", cols[ACK_RETRIEVED], "status",
                                           strcmp(cols[ACK_REJECTED], "t") == 0
                                           ? "rejected" : "delivered"));
}
