/* sm_proto — the JSON bodies of docs/PROTOCOL.md, parsed strictly and
 * encoded in one place, so the server, the poller and the tests agree. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sm_proto.h"

static int fail(sm_parse_error *err, const char *code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* Serialise root compactly and release it; NULL in, NULL out, so a failed
 * json_pack needs no check of its own. */
static char *dump_compact(json_t *root)
{
    char *text;

    if (root == NULL)
        return NULL;
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

static json_t *load_object(const char *body, size_t len, sm_parse_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        fail(err, "bad_json", "body is not valid JSON: %s at line %d column %d",
             jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(err, "bad_json", "body is not a JSON object");
        return NULL;
    }
    return root;
}

/* Read string member name of obj as a normalised address (or pattern). */
static int get_address(json_t *obj, const char *name, int pattern, char *out,
                       size_t outlen, const char *where, sm_parse_error *err)
{
    json_t *v = json_object_get(obj, name);
    const char *why;
    int rc;

    if (!json_is_string(v))
        return fail(err, "bad_request", "%s: member \"%s\" missing or not a string", where, name);
    /* The normalisers also take the SMTP envelope form; on the wire an
     * address is bare: no brackets, no surrounding blanks. */
    if (strpbrk(json_string_value(v), "<> \t") != NULL)
        return fail(err, "bad_request", "%s: \"%s\": address has brackets or blanks", where, name);
    rc = pattern ? sm_pattern_normalize(json_string_value(v), out, outlen, &why)
                 : sm_addr_normalize(json_string_value(v), out, outlen, &why);
    if (rc != 0)
        return fail(err, "bad_request", "%s: \"%s\": %s", where, name, why);
    return 0;
}

static int check_own_domain(const char *to, const char *own_domain, const char *where,
                            sm_parse_error *err)
{
    if (strcmp(sm_addr_domain(to), own_domain) != 0)
        return fail(err, "foreign_recipient", "%s: recipient %s is not at %s",
                    where, to, own_domain);
    return 0;
}

int sm_poll_request_parse(const char *body, size_t len, const char *own_domain,
                          size_t max_pairs, sm_pair **pairs, size_t *npairs,
                          sm_parse_error *err)
{
    json_t *root, *list, *item;
    sm_pair *out = NULL;
    size_t i, n;
    char where[48];
    int rc = -1;

    *pairs = NULL;
    *npairs = 0;
    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    list = json_object_get(root, "pairs");
    if (!json_is_array(list)) {
        fail(err, "bad_request", "member \"pairs\" missing or not an array");
        goto leave;
    }
    n = json_array_size(list);
    if (n == 0) {
        fail(err, "bad_request", "\"pairs\" is empty");
        goto leave;
    }
    if (n > max_pairs) {
        fail(err, "too_many_pairs", "%zu pairs, the limit is %zu", n, max_pairs);
        goto leave;
    }
    if ((out = calloc(n, sizeof *out)) == NULL) {
        fail(err, "internal", "out of memory for %zu pairs", n);
        goto leave;
    }
    json_array_foreach(list, i, item) {
        snprintf(where, sizeof where, "pairs[%zu]", i);
        if (!json_is_object(item)) {
            fail(err, "bad_request", "%s is not an object", where);
            goto leave;
        }
        if (get_address(item, "from", 1, out[i].from, sizeof out[i].from, where, err) != 0
            || get_address(item, "to", 0, out[i].to, sizeof out[i].to, where, err) != 0
            || check_own_domain(out[i].to, own_domain, where, err) != 0)
            goto leave;
    }
    *pairs = out;
    *npairs = n;
    out = NULL;
    rc = 0;
leave:
    free(out);
    json_decref(root);
    return rc;
}

/* 1 if s is len octets of printable US-ASCII (%x20-7E), else 0. */
static int printable(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* The members of one ack (an ack body, or an item of a batch) in obj. */
static int parse_ack(json_t *obj, const char *own_domain, const char *where,
                     sm_ack_request *ack, sm_parse_error *err)
{
    json_t *status, *reason, *receipt;
    size_t n;

    if (get_address(obj, "to", 0, ack->to, sizeof ack->to, where, err) != 0
        || check_own_domain(ack->to, own_domain, where, err) != 0)
        return -1;
    receipt = json_object_get(obj, "receipt");
    if (receipt != NULL) {
        if (!json_is_string(receipt) || !sm_receipt_valid(json_string_value(receipt)))
            return fail(err, "bad_request", "%s: \"receipt\" is not %d base64url characters",
                        where, SM_RECEIPT_LEN);
        memcpy(ack->receipt, json_string_value(receipt), SM_RECEIPT_LEN + 1);
    }
    status = json_object_get(obj, "status");
    reason = json_object_get(obj, "reason");
    if (status != NULL && !json_is_string(status))
        return fail(err, "bad_request", "%s: \"status\" is not a string", where);
    if (status == NULL || strcmp(json_string_value(status), "delivered") == 0) {
        if (reason != NULL)
            return fail(err, "bad_request", "%s: \"reason\" only goes with \"status\": "
                        "\"rejected\"", where);
        return 0;
    }
    if (strcmp(json_string_value(status), "rejected") != 0)
        return fail(err, "bad_request", "%s: \"status\" is neither \"delivered\" nor "
                    "\"rejected\"", where);
    if (!json_is_string(reason))
        return fail(err, "bad_request", "%s: a rejection needs a string \"reason\"", where);
    n = json_string_length(reason);
    if (n == 0 || n > SM_ACK_REASON_MAX || !printable(json_string_value(reason), n))
        return fail(err, "bad_request", "%s: \"reason\" must be 1 to %d printable ASCII "
                    "characters", where, SM_ACK_REASON_MAX);
    ack->rejected = 1;
    memcpy(ack->reason, json_string_value(reason), n + 1);
    return 0;
}

int sm_ack_request_parse_status(const char *body, size_t len, const char *own_domain,
                                sm_ack_request *ack, sm_parse_error *err)
{
    json_t *root;
    int rc;

    memset(ack, 0, sizeof *ack);
    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    if ((rc = parse_ack(root, own_domain, "ack", ack, err)) != 0)
        memset(ack, 0, sizeof *ack);
    json_decref(root);
    return rc;
}

/* One ack (an ack body: id NULL; or a batch item). NULL on ENOMEM. */
static json_t *encode_ack(const char *id, const char *to, const char *reason,
                          const char *receipt)
{
    json_t *obj = id ? json_pack("{s:s}", "id", id) : json_object();

    if (obj && (json_object_set_new(obj, "to", json_string(to)) != 0
                || (reason && (json_object_set_new(obj, "status", json_string("rejected")) != 0
                               || json_object_set_new(obj, "reason", json_string(reason)) != 0))
                || (receipt && receipt[0]
                    && json_object_set_new(obj, "receipt", json_string(receipt)) != 0))) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

char *sm_ack_request_encode(const char *to, const char *reason, const char *receipt)
{
    return dump_compact(encode_ack(NULL, to, reason, receipt));
}

/* ---- acks in a batch (POST /v1/ack) ------------------------------------ */

int sm_acks_request_parse(const char *body, size_t len, const char *own_domain,
                          sm_ack_item **items, size_t *nitems, sm_parse_error *err)
{
    json_t *root, *list, *item, *id;
    sm_ack_item *out = NULL;
    size_t i, n;
    char where[48];
    int rc = -1;

    *items = NULL;
    *nitems = 0;
    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    list = json_object_get(root, "acks");
    if (!json_is_array(list)) {
        fail(err, "bad_request", "member \"acks\" missing or not an array");
        goto leave;
    }
    if ((n = json_array_size(list)) == 0) {
        fail(err, "bad_request", "\"acks\" is empty");
        goto leave;
    }
    if (n > SM_ACKS_MAX) {
        fail(err, "too_many_acks", "%zu acks, the limit is %d", n, SM_ACKS_MAX);
        goto leave;
    }
    if ((out = calloc(n, sizeof *out)) == NULL) {
        fail(err, "internal", "out of memory for %zu acks", n);
        goto leave;
    }
    json_array_foreach(list, i, item) {
        snprintf(where, sizeof where, "acks[%zu]", i);
        if (!json_is_object(item)) {
            fail(err, "bad_request", "%s is not an object", where);
            goto leave;
        }
        id = json_object_get(item, "id");
        if (!json_is_string(id) || !sm_id_valid(json_string_value(id))) {
            fail(err, "bad_request", "%s: \"id\" missing or not 32 lowercase hex digits",
                 where);
            goto leave;
        }
        memcpy(out[i].id, json_string_value(id), SM_ID_LEN + 1);
        if (parse_ack(item, own_domain, where, &out[i].ack, err) != 0)
            goto leave;
    }
    *items = out;
    *nitems = n;
    out = NULL;
    rc = 0;
leave:
    free(out);
    json_decref(root);
    return rc;
}

char *sm_acks_request_encode(const sm_ack_item *items, size_t nitems)
{
    json_t *list = json_array(), *one;
    size_t i;

    for (i = 0; list && i < nitems; i++) {
        one = encode_ack(items[i].id, items[i].ack.to,
                         items[i].ack.rejected ? items[i].ack.reason : NULL, items[i].ack.receipt);
        if (json_array_append_new(list, one) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return dump_compact(list ? json_pack("{s:o}", "acks", list) : NULL);
}

int sm_acks_response_parse(const char *body, size_t len, const sm_ack_item *sent,
                           size_t nsent, int *acked, sm_parse_error *err)
{
    json_t *root, *list, *item, *v;
    const char *error;
    char to[SM_ADDR_MAX + 1], where[48];
    size_t i;
    int rc = -1;

    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    list = json_object_get(root, "acks");
    if (!json_is_array(list) || json_array_size(list) != nsent) {
        fail(err, "bad_response", "\"acks\" is not an array of %zu answers", nsent);
        goto leave;
    }
    json_array_foreach(list, i, item) {
        snprintf(where, sizeof where, "acks[%zu]", i);
        if (!json_is_object(item)) {
            fail(err, "bad_response", "%s is not an object", where);
            goto leave;
        }
        v = json_object_get(item, "id");
        if (!json_is_string(v) || strcmp(json_string_value(v), sent[i].id) != 0
            || get_address(item, "to", 0, to, sizeof to, where, err) != 0
            || strcmp(to, sent[i].ack.to) != 0) {
            fail(err, "bad_response", "%s is not the answer to the ack of %s for %s", where,
                 sent[i].id, sent[i].ack.to);
            goto leave;
        }
        v = json_object_get(item, "error");
        error = json_is_string(v) ? json_string_value(v) : NULL;
        if (v != NULL && !error) {
            fail(err, "bad_response", "%s: \"error\" is not a string", where);
            goto leave;
        }
        if (error && strcmp(error, "not_found") != 0 && strcmp(error, "bad_receipt") != 0) {
            fail(err, "bad_response", "%s: unknown error \"%.40s\"", where, error);
            goto leave;
        }
        v = json_object_get(item, "status");
        if (!error && !(json_is_string(v) && (!strcmp(json_string_value(v), "delivered")
                                               || !strcmp(json_string_value(v), "rejected")))) {
            fail(err, "bad_response", "%s: no \"status\" and no \"error\"", where);
            goto leave;
        }
        acked[i] = error == NULL ? 1 : strcmp(error, "not_found") == 0 ? 0 : -1;
    }
    rc = 0;
leave:
    json_decref(root);
    return rc;
}

/* ---- time on the wire -------------------------------------------------- */

int sm_time_parse(const char *s, time_t *t)
{
    /* positions of the digits in "YYYY-MM-DDTHH:MM:SSZ" */
    static const char form[] = "dddd-dd-ddTdd:dd:ddZ";
    struct tm tm, back;
    time_t when;
    size_t i;

    if (strlen(s) != SM_TIME_LEN)
        return -1;
    for (i = 0; i < SM_TIME_LEN; i++) {
        if (form[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != form[i])
            return -1;
    }
    memset(&tm, 0, sizeof tm);
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = atoi(s + 11);
    tm.tm_min = atoi(s + 14);
    tm.tm_sec = atoi(s + 17);
    if (tm.tm_year < 70 || tm.tm_sec > 59)
        return -1;
    /* timegm carries over in its argument (February 30 becomes March 2): a
     * date that does not come back unchanged does not exist */
    back = tm;
    when = timegm(&back);
    if (when == (time_t)-1 || gmtime_r(&when, &back) == NULL
        || back.tm_year != tm.tm_year || back.tm_mon != tm.tm_mon
        || back.tm_mday != tm.tm_mday || back.tm_hour != tm.tm_hour
        || back.tm_min != tm.tm_min || back.tm_sec != tm.tm_sec)
        return -1;
    *t = when;
    return 0;
}

int sm_time_format(time_t t, char *out, size_t outlen)
{
    struct tm tm;

    if (t < 0 || outlen < SM_TIME_LEN + 1 || gmtime_r(&t, &tm) == NULL
        || tm.tm_year + 1900 > 9999)
        return -1;
    return strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == SM_TIME_LEN ? 0 : -1;
}

/* ---- login --------------------------------------------------------------- */

static const char KEY_BEGIN[] = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
static const char SIGNATURE_BEGIN[] = "-----BEGIN PGP SIGNATURE-----";

/* 1 if s is a lowercase DNS name, else 0. One spelling only, because the
 * name goes into the signed statement as it was sent. */
static int canonical_domain(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > SM_DOMAIN_MAX || !sm_domain_valid(s))
        return 0;
    for (i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            return 0;
    return 1;
}

/* 1 if s is SM_NONCE_LEN lowercase hex digits: the form of a message id. */
static int nonce_valid(const char *s)
{
    return sm_id_valid(s);
}

/* Copy string member name of obj into out (outlen bytes with the NUL);
 * valid says whether the text is well-formed. */
static int get_text(json_t *obj, const char *name, char *out, size_t outlen,
                    int (*valid)(const char *), const char *form, sm_parse_error *err)
{
    json_t *v = json_object_get(obj, name);

    if (!json_is_string(v))
        return fail(err, "bad_request", "login: member \"%s\" missing or not a string", name);
    if (json_string_length(v) >= outlen || !valid(json_string_value(v)))
        return fail(err, "bad_request", "login: \"%s\" is not %s", name, form);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int time_valid(const char *s)
{
    time_t t;

    return sm_time_parse(s, &t) == 0;
}

/* A malloc'd copy of string member name, which must start with begin and be
 * at most max octets. */
static int get_armor(json_t *obj, const char *name, const char *begin, size_t max,
                     char **out, size_t *outlen, sm_parse_error *err)
{
    json_t *v = json_object_get(obj, name);
    size_t n;

    if (!json_is_string(v))
        return fail(err, "bad_request", "login: member \"%s\" missing or not a string", name);
    n = json_string_length(v);
    if (n > max)
        return fail(err, "bad_request", "login: \"%s\" is longer than %zu octets", name, max);
    if (strncmp(json_string_value(v), begin, strlen(begin)) != 0)
        return fail(err, "bad_request", "login: \"%s\" does not start with \"%s\"", name, begin);
    if ((*out = malloc(n + 1)) == NULL)
        return fail(err, "internal", "out of memory for \"%s\"", name);
    memcpy(*out, json_string_value(v), n + 1);
    *outlen = n;
    return 0;
}

int sm_login_request_parse(const char *body, size_t len, sm_login_request *req,
                           sm_parse_error *err)
{
    json_t *root;
    int rc = -1;

    memset(req, 0, sizeof *req);
    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    if (get_text(root, "domain", req->domain, sizeof req->domain, canonical_domain,
                 "a lowercase domain name", err) != 0
        || get_text(root, "server", req->server, sizeof req->server, canonical_domain,
                    "a lowercase domain name", err) != 0
        || get_text(root, "time", req->time, sizeof req->time, time_valid,
                    "a time like 2026-11-26T19:04:05Z", err) != 0
        || get_text(root, "nonce", req->nonce, sizeof req->nonce, nonce_valid,
                    "32 lowercase hex digits", err) != 0
        || get_armor(root, "key", KEY_BEGIN, SM_LOGIN_KEY_MAX, &req->key, &req->key_len,
                     err) != 0
        || get_armor(root, "signature", SIGNATURE_BEGIN, SM_LOGIN_SIGNATURE_MAX,
                     &req->signature, &req->signature_len, err) != 0)
        goto leave;
    sm_time_parse(req->time, &req->when);
    rc = 0;
leave:
    if (rc != 0)
        sm_login_request_free(req);
    json_decref(root);
    return rc;
}

void sm_login_request_free(sm_login_request *req)
{
    free(req->key);
    free(req->signature);
    memset(req, 0, sizeof *req);
}

int sm_login_statement(const char *server, const char *domain, const char *time,
                       const char *nonce, char *buf, size_t buflen)
{
    int n;

    if (!canonical_domain(server) || !canonical_domain(domain) || !time_valid(time)
        || !nonce_valid(nonce))
        return -1;
    n = snprintf(buf, buflen, "stubmail-login-v1\nserver:%s\ndomain:%s\ntime:%s\nnonce:%s\n",
                 server, domain, time, nonce);
    return n < 0 || (size_t)n >= buflen ? -1 : n;
}

char *sm_login_request_encode(const char *domain, const char *server, const char *time,
                              const char *nonce, const char *key, const char *signature)
{
    return dump_compact(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "domain", domain,
                                  "server", server, "time", time, "nonce", nonce,
                                  "key", key, "signature", signature));
}

static char *encode_pairs(const sm_pair *pairs, size_t npairs, const char *from_key,
                          const char *to_key, int wrap)
{
    json_t *list = json_array(), *root;
    size_t i;

    if (list == NULL)
        return NULL;
    for (i = 0; i < npairs; i++)
        if (json_array_append_new(list, json_pack("{s:s, s:s}", from_key, pairs[i].from,
                                                  to_key, pairs[i].to)) != 0) {
            json_decref(list);
            return NULL;
        }
    /* "O" takes its own reference, so list is ours to release either way */
    root = wrap ? json_pack("{s:O}", "pairs", list) : json_incref(list);
    json_decref(list);
    return dump_compact(root);
}

char *sm_pairs_sql_json(const sm_pair *pairs, size_t npairs)
{
    return encode_pairs(pairs, npairs, "sender", "recipient", 0);
}

char *sm_poll_request_encode(const sm_pair *pairs, size_t npairs)
{
    return encode_pairs(pairs, npairs, "from", "to", 1);
}

int sm_poll_response_parse(const char *body, size_t len, sm_listing **items,
                           size_t *nitems, int *more, sm_parse_error *err)
{
    json_t *root, *list, *item, *v;
    sm_listing *out = NULL;
    size_t i, n;
    char where[48];
    int rc = -1;

    *items = NULL;
    *nitems = 0;
    *more = 0;
    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    list = json_object_get(root, "messages");
    if (!json_is_array(list)) {
        fail(err, "bad_request", "member \"messages\" missing or not an array");
        goto leave;
    }
    n = json_array_size(list);
    if (n > 0 && (out = calloc(n, sizeof *out)) == NULL) {
        fail(err, "internal", "out of memory for %zu messages", n);
        goto leave;
    }
    json_array_foreach(list, i, item) {
        snprintf(where, sizeof where, "messages[%zu]", i);
        if (!json_is_object(item)) {
            fail(err, "bad_request", "%s is not an object", where);
            goto leave;
        }
        v = json_object_get(item, "id");
        if (!json_is_string(v) || !sm_id_valid(json_string_value(v))) {
            fail(err, "bad_request", "%s: \"id\" missing or not a message id", where);
            goto leave;
        }
        memcpy(out[i].id, json_string_value(v), SM_ID_LEN + 1);
        if (get_address(item, "from", 0, out[i].from, sizeof out[i].from, where, err) != 0
            || get_address(item, "to", 0, out[i].to, sizeof out[i].to, where, err) != 0)
            goto leave;
        v = json_object_get(item, "size");
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            fail(err, "bad_request", "%s: \"size\" missing or not a non-negative integer", where);
            goto leave;
        }
        out[i].size = json_integer_value(v);
        v = json_object_get(item, "time");
        if (json_is_string(v))
            snprintf(out[i].time, sizeof out[i].time, "%s", json_string_value(v));
    }
    v = json_object_get(root, "more");
    *more = json_is_true(v);
    *items = out;
    *nitems = n;
    out = NULL;
    rc = 0;
leave:
    free(out);
    json_decref(root);
    return rc;
}

char *sm_error_body(const char *code, const char *message)
{
    return dump_compact(json_pack("{s:s, s:s}", "error", code, "message", message));
}

/* ---- subscriptions ------------------------------------------------------ */

/* Parse member name of root (absent: none) as a pair list into a malloc'd
 * array. *total counts the pairs of every list so far, against max_pairs. */
static int get_pairs(json_t *root, const char *name, const char *own_domain,
                     size_t max_pairs, size_t *total, sm_pair **pairs, size_t *npairs,
                     sm_parse_error *err)
{
    json_t *list = json_object_get(root, name), *item;
    char where[48];
    size_t i, n;

    *pairs = NULL;
    *npairs = 0;
    if (list == NULL)
        return 0;
    if (!json_is_array(list))
        return fail(err, "bad_request", "member \"%s\" is not an array", name);
    n = json_array_size(list);
    if (n > max_pairs - *total)
        return fail(err, "too_many_pairs", "more than %zu pairs in one change", max_pairs);
    *total += n;
    if (n == 0)
        return 0;
    if ((*pairs = calloc(n, sizeof **pairs)) == NULL)
        return fail(err, "internal", "out of memory for %zu pairs", n);
    json_array_foreach(list, i, item) {
        snprintf(where, sizeof where, "%s[%zu]", name, i);
        if (!json_is_object(item))
            return fail(err, "bad_request", "%s is not an object", where);
        if (get_address(item, "from", 1, (*pairs)[i].from, sizeof (*pairs)[i].from, where,
                        err) != 0
            || get_address(item, "to", 0, (*pairs)[i].to, sizeof (*pairs)[i].to, where,
                           err) != 0
            || check_own_domain((*pairs)[i].to, own_domain, where, err) != 0)
            return -1;
    }
    *npairs = n;
    return 0;
}

/* A JSON integer from 0 to 2^53 - 1 (exact in every JSON implementation). */
static int get_version(json_t *root, const char *name, long long *out, sm_parse_error *err)
{
    json_t *v = json_object_get(root, name);

    if (!json_is_integer(v) || json_integer_value(v) < 0
        || json_integer_value(v) > 9007199254740991LL)
        return fail(err, "bad_request", "member \"%s\" missing or not a non-negative integer",
                    name);
    *out = (long long)json_integer_value(v);
    return 0;
}

int sm_subscription_request_parse(const char *body, size_t len, const char *own_domain,
                                  size_t max_pairs, sm_subscription_request *req,
                                  sm_parse_error *err)
{
    json_t *root, *reset;
    size_t total = 0;
    int rc = -1;

    memset(req, 0, sizeof *req);
    req->base = -1;
    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    reset = json_object_get(root, "reset");
    if (reset != NULL && !json_is_boolean(reset)) {
        fail(err, "bad_request", "member \"reset\" is not a boolean");
        goto leave;
    }
    req->reset = json_is_true(reset);
    if (req->reset) {
        if (json_object_get(root, "remove") != NULL) {
            fail(err, "bad_request", "\"remove\" does not go with \"reset\"");
            goto leave;
        }
        /* a base alongside a reset is checked for its form, then ignored */
        if (json_object_get(root, "base") != NULL
            && get_version(root, "base", &req->base, err) != 0)
            goto leave;
        req->base = -1;
    } else if (get_version(root, "base", &req->base, err) != 0) {
        goto leave;
    }
    if (get_pairs(root, "add", own_domain, max_pairs, &total, &req->add, &req->nadd, err) != 0
        || get_pairs(root, "remove", own_domain, max_pairs, &total, &req->remove,
                     &req->nremove, err) != 0)
        goto leave;
    rc = 0;
leave:
    if (rc != 0)
        sm_subscription_request_free(req);
    json_decref(root);
    return rc;
}

void sm_subscription_request_free(sm_subscription_request *req)
{
    free(req->add);
    free(req->remove);
    memset(req, 0, sizeof *req);
    req->base = -1;
}

static json_t *pair_list(const sm_pair *pairs, size_t npairs)
{
    json_t *list = json_array();
    size_t i;

    if (list == NULL)
        return NULL;
    for (i = 0; i < npairs; i++)
        if (json_array_append_new(list, json_pack("{s:s, s:s}", "from", pairs[i].from,
                                                  "to", pairs[i].to)) != 0) {
            json_decref(list);
            return NULL;
        }
    return list;
}

char *sm_subscription_request_encode(int reset, long long base, const sm_pair *add,
                                     size_t nadd, const sm_pair *remove, size_t nremove)
{
    json_t *a = pair_list(add, nadd), *r = reset ? NULL : pair_list(remove, nremove);
    json_t *root = NULL;

    /* "o" takes the references, also when json_pack fails */
    if (reset && a)
        root = json_pack("{s:b, s:o}", "reset", 1, "add", a);
    else if (!reset && a && r)
        root = json_pack("{s:I, s:o, s:o}", "base", (json_int_t)base, "add", a, "remove", r);
    else {
        json_decref(a);
        json_decref(r);
    }
    return dump_compact(root);
}

int sm_version_parse(const char *body, size_t len, long long *version, sm_parse_error *err)
{
    json_t *root;
    int rc;

    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    rc = get_version(root, "version", version, err);
    json_decref(root);
    return rc;
}

char *sm_error_body_version(const char *code, const char *message, long long version)
{
    return dump_compact(json_pack("{s:s, s:s, s:I}", "error", code, "message", message,
                                  "version", (json_int_t)version));
}
