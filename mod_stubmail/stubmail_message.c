/*
 * NAME
 *	stubmail_message - the body of one message
 *
 * DESCRIPTION
 *	GET v1/message/ID answers the spool file of a message that has an
 *	unacked recipient at the polling domain, as a file bucket: never read
 *	into memory, sent by sendfile, Range answered by httpd's byterange
 *	filter (the ETag is the id: the bytes behind an id never change).

 *
 * DIAGNOSTICS
 *	Each fetch at info; spool trouble at error.
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

#include "sm_proto.h"
#include "sm_spool.h"
#include "stubmail_db.h"
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
