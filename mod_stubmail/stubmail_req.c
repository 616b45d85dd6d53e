/*
 * NAME
 *	stubmail_req - the answers and the inputs of every mod_stubmail request
 *
 * DESCRIPTION
 *	stubmail_fail is the one way out with an error: it maps the protocol
 *	code (docs/PROTOCOL.md, "Errors") to its status, logs why with the
 *	request's context, sets the headers that status needs (WWW-Authenticate,
 *	Allow, Retry-After) and answers {"error": code, "message": message}.
 *	The other answers are JSON (200), a body of given type, and 304.
 *	Inputs: the JSON request body, read whole within
 *	StubmailMaxRequestBody (or a smaller limit), no body where none
 *	belongs, and the bearer token, checked by its MAC alone.
 *
 * DIAGNOSTICS
 *	Client errors at info, server trouble at error; every line names the
 *	polling domain and the message id when known (SMLOG).
 */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "httpd.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "util_filter.h"
#include "util_script.h"
#include "apr_buckets.h"
#include "apr_lib.h"
#include "apr_strings.h"

#include "sm_addr.h"
#include "sm_proto.h"
#include "sm_token.h"
#include "stubmail_html.h"
#include "stubmail_req.h"

APLOG_USE_MODULE(stubmail);

#define STUBMAIL_RETRY_AFTER "30"   /* seconds, for a 503 */

/* Protocol error codes and their HTTP status (docs/PROTOCOL.md, Errors). */
static const struct {
    const char *code;
    int status;
} stubmail_codes[] = {
    { "bad_json",               HTTP_BAD_REQUEST },
    { "bad_request",            HTTP_BAD_REQUEST },
    { "bad_id",                 HTTP_BAD_REQUEST },
    { "token_required",         HTTP_UNAUTHORIZED },
    { "bad_token",              HTTP_UNAUTHORIZED },
    { "token_expired",          HTTP_UNAUTHORIZED },
    { "login_failed",           HTTP_UNAUTHORIZED },
    { "stale_login",            HTTP_UNAUTHORIZED },
    { "unknown_domain",         HTTP_UNAUTHORIZED },
    { "wrong_key",              HTTP_UNAUTHORIZED },
    { "bad_signature",          HTTP_UNAUTHORIZED },
    { "replayed_login",         HTTP_UNAUTHORIZED },
    { "foreign_recipient",      HTTP_FORBIDDEN },
    { "bad_receipt",            HTTP_FORBIDDEN },
    { "forbidden",              HTTP_FORBIDDEN },       /* the user's page */
    { "subscription_changed",   HTTP_CONFLICT },
    { "not_found",              HTTP_NOT_FOUND },
    { "no_such_endpoint",       HTTP_NOT_FOUND },
    { "method_not_allowed",     HTTP_METHOD_NOT_ALLOWED },
    { "length_required",        HTTP_LENGTH_REQUIRED },
    { "too_large",              HTTP_REQUEST_ENTITY_TOO_LARGE },
    { "too_many_pairs",         HTTP_REQUEST_ENTITY_TOO_LARGE },
    { "too_many_acks",          HTTP_REQUEST_ENTITY_TOO_LARGE },
    { "unsupported_media_type", HTTP_UNSUPPORTED_MEDIA_TYPE },
    { "too_soon",               HTTP_TOO_MANY_REQUESTS },
    { "internal_error",         HTTP_INTERNAL_SERVER_ERROR },
    { "unavailable",            HTTP_SERVICE_UNAVAILABLE },
};

/* ------------------------------------------------------------------------
 * Answers
 * ---------------------------------------------------------------------- */

/* End the answer with bb's buckets (the caller's) and EOS. */
static void stubmail_pass(stubmail_req *q, apr_bucket_brigade *bb)
{
    apr_status_t rv;

    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    rv = ap_pass_brigade(q->r->output_filters, bb);
    if (rv != APR_SUCCESS)
        SMLOG(q, APLOG_DEBUG, rv, "sending the answer failed");
}

int stubmail_send(stubmail_req *q, int status, const char *ctype, const char *text)
{
    request_rec *r = q->r;
    apr_size_t len = strlen(text);
    apr_bucket_brigade *bb;

    r->status = status;
    ap_set_content_type(r, ctype);
    ap_set_content_length(r, len);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_pool_create(
        apr_pstrmemdup(r->pool, text, len), len, r->pool, bb->bucket_alloc));
    stubmail_pass(q, bb);
    return OK;
}

int stubmail_not_modified(stubmail_req *q)
{
    request_rec *r = q->r;

    r->status = HTTP_NOT_MODIFIED;
    stubmail_pass(q, apr_brigade_create(r->pool, r->connection->bucket_alloc));
    return OK;
}

/* 1 if the request may carry a body larger than StubmailMaxRequestBody. */
static int stubmail_body_unbounded(stubmail_req *q)
{
    const char *cl = apr_table_get(q->r->headers_in, "Content-Length");
    apr_off_t length;
    char *end;

    if (apr_table_get(q->r->headers_in, "Transfer-Encoding"))
        return 1;
    if (cl == NULL)
        return 0;
    return apr_strtoff(&length, cl, &end, 10) != APR_SUCCESS || *end != '\0'
           || length > q->conf->max_body;
}

static int stubmail_status_of(const char *code)
{
    size_t i;

    for (i = 0; i < sizeof(stubmail_codes) / sizeof(stubmail_codes[0]); i++)
        if (strcmp(stubmail_codes[i].code, code) == 0)
            return stubmail_codes[i].status;
    return HTTP_INTERNAL_SERVER_ERROR;
}

int stubmail_fail(stubmail_req *q, const char *code, const char *message,
                  const char *why)
{
    request_rec *r = q->r;
    int status = stubmail_status_of(code);
    char *body;

    SMLOG(q, status >= 500 ? APLOG_ERR : APLOG_INFO, 0, "%s %s %s: %d %s: %s",
          r->method, r->uri, r->useragent_ip, status, code, why ? why : message);

    /* Leave the connection in step for keep-alive by reading what is left
     * of the request body (a no-op for statuses that drop the connection,
     * 411 and 413 among them), unless that could be a lot: then close. */
    r->status = status;
    if (stubmail_body_unbounded(q))
        r->connection->keepalive = AP_CONN_CLOSE;
    ap_discard_request_body(r);

    switch (status) {
    case HTTP_UNAUTHORIZED:
        /* every 401 offers a token: log in */
        apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                       "Bearer realm=\"stubmail\"");
        break;
    case HTTP_METHOD_NOT_ALLOWED:
        apr_table_setn(r->err_headers_out, "Allow", q->allow ? q->allow : "");
        break;
    case HTTP_TOO_MANY_REQUESTS:
    case HTTP_SERVICE_UNAVAILABLE:
        apr_table_setn(r->err_headers_out, "Retry-After",
                       q->retry_after ? q->retry_after : STUBMAIL_RETRY_AFTER);
        break;
    }

    if (q->for_people && !stubmail_wants_json(r))
        return q->ret = stubmail_html_page(
            q, status, status >= 500 ? "Not available just now" : "That did not work",
            apr_pstrcat(r->pool, "<p>", ap_escape_html(r->pool, message), "</p>\n", NULL));
    body = q->version ? sm_error_body_version(code, message, apr_atoi64(q->version))
                      : sm_error_body(code, message);
    if (body == NULL) {
        SMLOG(q, APLOG_ERR, APR_ENOMEM, "out of memory encoding an error");
        return q->ret = status;
    }
    stubmail_send(q, status, "application/json", body);
    free(body);
    return q->ret = OK;
}

int stubmail_fail_0(stubmail_req *q, const char *code, const char *message,
                    const char *why)
{
    stubmail_fail(q, code, message, why);
    return 0;
}

/* lib says "internal" when it ran out of memory, which is our trouble, not
 * the client's. */
const char *stubmail_parse_code(const sm_parse_error *perr)
{
    if (perr->code == NULL || strcmp(perr->code, "internal") == 0)
        return "unavailable";
    return perr->code;
}

int stubmail_send_json(stubmail_req *q, json_t *root)
{
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;

    json_decref(root);
    if (text == NULL)
        return stubmail_fail(q, "unavailable", "internal error, retry later",
                             "out of memory encoding the answer");
    stubmail_send(q, HTTP_OK, "application/json", text);
    free(text);
    return OK;
}

/* ------------------------------------------------------------------------
 * Request bodies
 * ---------------------------------------------------------------------- */

static int stubmail_is_json(const char *ctype)
{
    size_t n;

    if (ctype == NULL)
        return 0;
    while (*ctype == ' ' || *ctype == '\t')
        ctype++;
    n = strcspn(ctype, "; \t");
    return n == strlen("application/json")
           && strncasecmp(ctype, "application/json", n) == 0;
}

/* The headers promise a body of at most max octets (named limit in the
 * log), a JSON one if json: 1 with *length, or 0 after the error answer. */
static int stubmail_body_acceptable(stubmail_req *q, int json, apr_off_t max,
                                    const char *limit, apr_off_t *length)
{
    request_rec *r = q->r;
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    const char *ctype = apr_table_get(r->headers_in, "Content-Type");
    char *end;

    if (cl == NULL || apr_table_get(r->headers_in, "Transfer-Encoding"))
        return stubmail_fail_0(q, "length_required", "Content-Length required",
                               "POST without Content-Length");
    if (apr_strtoff(length, cl, &end, 10) != APR_SUCCESS || end == cl
        || *end != '\0' || *length < 0)
        return stubmail_fail_0(q, "bad_request", "invalid Content-Length",
                               "invalid Content-Length");
    if (*length > max)
        return stubmail_fail_0(q, "too_large", "request body too large",
                               apr_psprintf(r->pool, "Content-Length %" APR_OFF_T_FMT
                                            " above %s %" APR_OFF_T_FMT, *length,
                                            limit, max));
    if (json && !stubmail_is_json(ctype))
        return stubmail_fail_0(q, "unsupported_media_type",
                               "Content-Type must be application/json",
                               apr_psprintf(r->pool, "Content-Type '%s'",
                                            ap_escape_logitem(r->pool, ctype)));
    return 1;
}

static int stubmail_read(stubmail_req *q, int json, apr_off_t max, const char *limit,
                         char **body, apr_size_t *len)
{
    request_rec *r = q->r;
    apr_bucket_brigade *bb = NULL;
    apr_off_t length;
    apr_size_t got = 0;
    const char *why = NULL;
    char *buf;
    int eos = 0;

    if (!stubmail_body_acceptable(q, json, max, limit, &length))
        return 0;
    buf = apr_palloc(r->pool, (apr_size_t)length + 1);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    while (!eos) {
        apr_bucket *b;

        if (ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ,
                           HUGE_STRING_LEN) != APR_SUCCESS) {
            why = "reading the request body failed";
            goto leave;
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t n;

            if (APR_BUCKET_IS_EOS(b)) {
                eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b))
                continue;
            if (apr_bucket_read(b, &data, &n, APR_BLOCK_READ) != APR_SUCCESS
                || got + n > (apr_size_t)length) {
                why = "request body unreadable or longer than Content-Length";
                goto leave;
            }
            memcpy(buf + got, data, n);
            got += n;
        }
        apr_brigade_cleanup(bb);
    }
    buf[got] = '\0';
    *body = buf;
    *len = got;

leave:
    apr_brigade_cleanup(bb);
    if (why == NULL)
        return 1;
    r->connection->keepalive = AP_CONN_CLOSE;
    return stubmail_fail_0(q, "bad_request", "could not read the request body", why);
}

int stubmail_read_body(stubmail_req *q, apr_off_t max, const char *limit)
{
    return stubmail_read(q, 1, max, limit, &q->body, &q->body_len);
}

int stubmail_read_form(stubmail_req *q, char **body, apr_size_t *len)
{
    return stubmail_read(q, 0, q->conf->max_body, "StubmailMaxRequestBody", body, len);
}

/* A request that says a body follows: chunked, or a Content-Length that is
 * not 0. */
static int stubmail_has_body(request_rec *r)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_off_t length;
    char *end;

    if (apr_table_get(r->headers_in, "Transfer-Encoding"))
        return 1;
    return cl != NULL && (apr_strtoff(&length, cl, &end, 10) != APR_SUCCESS
                          || end == cl || *end != '\0' || length != 0);
}

int stubmail_no_body(stubmail_req *q)
{
    request_rec *r = q->r;

    if (!stubmail_has_body(r))
        return 1;
    /* A body where none belongs is how requests are smuggled past a proxy
     * that frames them otherwise (Transfer-Encoding with Content-Length):
     * refuse it unread and end the connection, whose framing is now in
     * doubt. */
    r->connection->keepalive = AP_CONN_CLOSE;
    return stubmail_fail_0(q, "bad_request", apr_psprintf(r->pool, "a %s request carries "
                                                          "no body", r->method),
                           apr_psprintf(r->pool, "%s with a body (Transfer-Encoding "
                                        "'%s', Content-Length '%s')", r->method,
                                        ap_escape_logitem(r->pool, apr_table_get(
                                            r->headers_in, "Transfer-Encoding")),
                                        ap_escape_logitem(r->pool, apr_table_get(
                                            r->headers_in, "Content-Length"))));
}

#define FORM_FIELDS_MAX 16
#define FORM_SIZE_MAX 8192      /* our pages' forms are a few hundred octets */
#define FORM_VALUE_MAX 1024

int stubmail_read_urlencoded(stubmail_req *q, apr_table_t **form)
{
    request_rec *r = q->r;
    apr_array_header_t *pairs = NULL;
    int i, rc = ap_parse_form_data(r, NULL, &pairs, FORM_FIELDS_MAX, FORM_SIZE_MAX);

    if (rc != OK)
        return stubmail_fail_0(q, "bad_request", "the form could not be read",
                               apr_psprintf(r->pool, "form unreadable (%d)", rc));
    *form = apr_table_make(r->pool, pairs ? pairs->nelts : 0);
    for (i = 0; pairs && i < pairs->nelts; i++) {
        ap_form_pair_t *pair = &APR_ARRAY_IDX(pairs, i, ap_form_pair_t);
        char value[FORM_VALUE_MAX + 1];
        apr_size_t len = FORM_VALUE_MAX;
        apr_off_t total = 0;

        if (apr_brigade_length(pair->value, 1, &total) != APR_SUCCESS
            || total > FORM_VALUE_MAX
            || apr_brigade_flatten(pair->value, value, &len) != APR_SUCCESS)
            return stubmail_fail_0(q, "bad_request", "a field of the form is too long",
                                   apr_psprintf(r->pool, "form field %s too long",
                                                ap_escape_logitem(r->pool, pair->name)));
        value[len] = '\0';
        apr_table_set(*form, pair->name, value);
    }
    return 1;
}

/* ------------------------------------------------------------------------
 * Authentication: a bearer token from POST v1/login
 * ---------------------------------------------------------------------- */

static int stubmail_auth_bearer(stubmail_req *q, const char *token)
{
    request_rec *r = q->r;
    char domain[SM_DOMAIN_MAX + 1];
    const char *why = "no StubmailTokenKey configured";
    time_t expiry;
    size_t n = strlen(token);

    while (n > 0 && apr_isspace(token[n - 1]))
        n--;
    token = apr_pstrmemdup(r->pool, token, n);
    if (q->conf->tokens == NULL
        || sm_token_check(q->conf->tokens, token, time(NULL), domain, sizeof(domain),
                          &expiry, &why) != 0) {
        if (strcmp(why, "expired") == 0)
            return stubmail_fail_0(q, "token_expired",
                                   "the token has expired: log in again",
                                   "token expired");
        return stubmail_fail_0(q, "bad_token", "not a token of this server",
                               apr_pstrcat(r->pool, "bearer token refused: ", why,
                                           NULL));
    }
    q->domain = apr_pstrdup(r->pool, domain);
    r->user = (char *)q->domain;
    return 1;
}

int stubmail_authenticate(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *auth = apr_table_get(r->headers_in, "Authorization");
    const char *scheme = auth ? ap_getword_white(r->pool, &auth) : "";

    if (strcasecmp(scheme, "Bearer") == 0)
        return stubmail_auth_bearer(q, auth);
    return stubmail_fail_0(q, "token_required", "a bearer token is required: log in",
                           *scheme ? apr_psprintf(r->pool, "Authorization scheme '%s' "
                                                  "not accepted",
                                                  ap_escape_logitem(r->pool, scheme))
                                   : "no Authorization header");
}

/* ------------------------------------------------------------------------
 * Where the handler was set
 * ---------------------------------------------------------------------- */

/* The location comes from core's per-directory config of the innermost
 * section that applies (a module's own per-directory config is only created for sections
 * that contain one of its directives, and SetHandler is core's). NULL when
 * that section is not a literal path (regex, wildcard, <If>). */
const char *stubmail_location(request_rec *r)
{
    const core_dir_config *cd = ap_get_core_module_config(r->per_dir_config);
    size_t n;

    if (cd == NULL || cd->d == NULL || cd->r != NULL || cd->d_is_fnmatch
        || cd->d[0] != '/')
        return NULL;
    n = strlen(cd->d);
    while (n > 0 && cd->d[n - 1] == '/')
        n--;
    return apr_pstrmemdup(r->pool, cd->d, n);
}
