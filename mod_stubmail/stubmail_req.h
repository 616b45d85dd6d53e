/* stubmail_req — one request to mod_stubmail: its state, its log lines, the
 * answers every endpoint gives (errors, JSON, 304) and what every endpoint
 * reads (the JSON body, the bearer token).
 *
 * Helpers that may answer return 1 to go on, or 0 once an error answer went
 * out; the handler's return value is then in q->ret. */
#ifndef STUBMAIL_REQ_H
#define STUBMAIL_REQ_H

#include "httpd.h"
#include "http_log.h"
#include "apr_dbd.h"
#include "mod_dbd.h"

#include <jansson.h>

#include "sm_proto.h"
#include "stubmail_config.h"

typedef struct stubmail_db_hold stubmail_db_hold;

typedef struct stubmail_req {
    request_rec *r;
    const stubmail_srv_conf *conf;
    ap_dbd_t *dbd;
    stubmail_db_hold *dbd_hold; /* dbd is stubmail_db_own's (stubmail_db.h) */
    const char *domain;         /* authenticated polling domain, or NULL */
    const char *id;             /* message id from the path, or NULL */
    const char *fpr;            /* key fingerprint from the path (as given), or NULL */
    const char *allow;          /* Allow header for 405 */
    const char *retry_after;    /* Retry-After for 429 and 503 (NULL: default) */
    const char *version;        /* 409 subscription_changed: the current
                                 * version, put into the error body */
    const char *user;           /* the person on a page for people, or NULL */
    int for_people;             /* errors as HTML pages (stubmail_html.h),
                                 * unless the client asks for JSON */
    char *body;                 /* the request body, read whole before the
                                 * database connection is taken, or NULL */
    apr_size_t body_len;
    int ret;                    /* handler result once an answer was sent */
} stubmail_req;

/* Every request's log line names the polling domain and message id. */
#define SMLOG(q, level, rv, fmt, ...)                                        \
    ap_log_rerror(APLOG_MARK, (level), (rv), (q)->r,                         \
                  "stubmail: %s=%s id=%s: " fmt,                             \
                  (q)->user ? "user" : "domain",                             \
                  (q)->user ? (q)->user : (q)->domain ? (q)->domain : "-",   \
                  (q)->id ? (q)->id : "-", ##__VA_ARGS__)

/* The one way out with an error: code (docs/PROTOCOL.md, Errors) decides
 * the status; message goes to the client (as JSON, or as a page when
 * for_people), why (or message) to the log. Returns the handler's result
 * (also in q->ret). */
int stubmail_fail(stubmail_req *q, const char *code, const char *message,
                  const char *why);

/* stubmail_fail for helpers that return 1 = go on, 0 = answered. */
int stubmail_fail_0(stubmail_req *q, const char *code, const char *message,
                    const char *why);

/* The protocol code for a request body lib's parser refused. */
const char *stubmail_parse_code(const sm_parse_error *perr);

/* text (copied) as the whole answer, with status. OK. */
int stubmail_send(stubmail_req *q, int status, const char *ctype, const char *text);

/* root as a 200 answer; takes the reference (NULL: out of memory, 503). */
int stubmail_send_json(stubmail_req *q, json_t *root);

/* 304, no body; the headers already set go along. OK. */
int stubmail_not_modified(stubmail_req *q);

/* The whole JSON body into q->body and q->body_len (at most max octets,
 * the limit named limit in the log; NUL-terminated, in r->pool). 1, or 0
 * after the error answer. */
int stubmail_read_body(stubmail_req *q, apr_off_t max, const char *limit);

/* The request says no body follows (GET, HEAD): 1, or 0 after the 400,
 * the body unread and the connection to be closed. */
int stubmail_no_body(stubmail_req *q);

/* The same for a body of any Content-Type (a form: the caller judges it). */
int stubmail_read_form(stubmail_req *q, char **body, apr_size_t *len);

/* An application/x-www-form-urlencoded body (httpd's ap_parse_form_data;
 * another type gives no fields), small as our pages' forms are, as a
 * table of its fields. 1, or 0 after the error answer. */
int stubmail_read_urlencoded(stubmail_req *q, apr_table_t **form);

/* The path of the <Location> whose SetHandler brought us here, without
 * trailing '/', or NULL when that section is not a literal path. */
const char *stubmail_location(request_rec *r);

/* Authorization: Bearer TOKEN: 1 with q->domain set (no database needed:
 * the MAC proves the token), or 0 after the 401. */
int stubmail_authenticate(stubmail_req *q);

#endif
