/*
 * NAME
 *	stubmail_message - the body of one message
 *
 * DESCRIPTION
 *	GET v1/message/ID answers the stored body of a message that has an
 *	unacked recipient at the polling domain. A small body is kept in its
 *	message row (sql/010) and served from memory as a pool bucket; a
 *	bigger one is a spool file, served as a file bucket: never read into
 *	memory, sent by sendfile. Either way Range is answered by httpd's
 *	byterange filter (the ETag is the id: the bytes behind an id never
 *	change).
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
#include "apr_escape.h"
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

enum { FETCH_SPOOL_NAME, FETCH_SIZE, FETCH_SENDER, FETCH_FORMAT, FETCH_BODY, FETCH_NCOLS };

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

/* An inline body: the hex text of STMT_FETCH (two digits an octet) decoded
 * into the request pool. 1 with *body and *len, or 0 after the error
 * answer. */
static int stubmail_fetch_inline(stubmail_req *q, const char *hex, const char **body,
                                 apr_off_t *len)
{
    apr_size_t n = 0;

    *len = 0;
    *body = "";
    if (*hex == '\0')
        return 1;               /* an empty body (apr takes it for an error) */
    if ((*body = apr_punescape_hex(q->r->pool, hex, 0, &n)) == NULL)
        return stubmail_fail_0(q, "internal_error", "message body unavailable",
                               "inline body: not hex from the database");
    *len = (apr_off_t)n;
    return 1;
}

/* The body as a brigade: the row's bytes, or the spool file. 1 with *bb
 * and *len, or 0 after the error answer. */
static int stubmail_fetch_body(stubmail_req *q, const char **cols, apr_bucket_brigade **bb,
                               apr_off_t *len, const char **from)
{
    request_rec *r = q->r;
    char path[PATH_MAX];
    const char *inline_body = NULL;
    apr_file_t *fd;
    apr_finfo_t fi;

    *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    if (*cols[FETCH_SPOOL_NAME] == '\0') {
        if (!stubmail_fetch_inline(q, cols[FETCH_BODY], &inline_body, len))
            return 0;
        if (*len > 0)
            APR_BRIGADE_INSERT_TAIL(*bb, apr_bucket_pool_create(inline_body, (apr_size_t)*len,
                                                                r->pool,
                                                                (*bb)->bucket_alloc));
        *from = "its row";
    }
    else {
        if (sm_spool_path(q->conf->spool_dir, cols[FETCH_SPOOL_NAME], path, sizeof(path)) != 0)
            return stubmail_fail_0(q, "internal_error", "message body unavailable",
                                   apr_psprintf(r->pool, "bad spool_name '%s' in the "
                                                "database", cols[FETCH_SPOOL_NAME]));
        if (!stubmail_fetch_open(q, cols, path, &fd, &fi))
            return 0;
        *len = fi.size;
        if (fi.size > 0)
            apr_brigade_insert_file(*bb, fd, 0, fi.size, r->pool);
        *from = apr_pstrdup(r->pool, path);
    }
    if (*len != apr_atoi64(cols[FETCH_SIZE]))
        SMLOG(q, APLOG_WARNING, 0, "body in %s has %" APR_OFF_T_FMT
              " bytes, the database says %s; serving the body", *from, *len,
              cols[FETCH_SIZE]);
    return 1;
}

int stubmail_fetch(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *cols[FETCH_NCOLS], *from;
    apr_bucket_brigade *bb;
    apr_off_t len;
    apr_status_t rv;

    if (!stubmail_db_own(q))
        return q->ret;
    switch (stubmail_fetch_lookup(q, cols)) {
    case 1:
        break;
    case 0:
        return stubmail_fail(q, "not_found", "no such message",
                             "no unacked recipient at this domain, or body gone");
    default:
        return stubmail_fail(q, "unavailable", DB_UNAVAILABLE, "fetch query failed");
    }
    if (!stubmail_fetch_body(q, cols, &bb, &len, &from))
        return q->ret;
    /* what the answer needs is in r->pool and the file: a client that
     * reads slowly holds no pooled connection while it is sent */
    stubmail_db_release(q);

    /* message.format says what the milter stored: an OpenPGP message
     * (signed, encrypted) or, from before, the plain text */
    if (strcmp(cols[FETCH_FORMAT], "openpgp") == 0) {
        ap_set_content_type(r, "application/pgp-encrypted");
        apr_table_setn(r->headers_out, "Stubmail-Format", "openpgp");
    }
    else {
        ap_set_content_type(r, "message/rfc822");
    }
    ap_set_content_length(r, len);
    apr_table_setn(r->headers_out, "Stubmail-From", cols[FETCH_SENDER]);
    apr_table_setn(r->headers_out, "Accept-Ranges", "bytes");
    /* The bytes behind an id never change: a strong validator for If-Range. */
    apr_table_setn(r->headers_out, "ETag",
                   apr_pstrcat(r->pool, "\"", q->id, "\"", NULL));

    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    SMLOG(q, APLOG_INFO, 0, "fetch: %" APR_OFF_T_FMT " bytes from %s%s", len,
          from, apr_table_get(r->headers_in, "Range") ? " (range)" : "");
    rv = ap_pass_brigade(r->output_filters, bb);
    if (rv != APR_SUCCESS)
        SMLOG(q, APLOG_DEBUG, rv, "fetch: sending the body failed");
    return OK;
}
