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

int sm_ack_request_parse(const char *body, size_t len, const char *own_domain,
                         char *to, size_t tolen, sm_parse_error *err)
{
    json_t *root;
    int rc = -1;

    if ((root = load_object(body, len, err)) == NULL)
        return -1;
    if (get_address(root, "to", 0, to, tolen, "ack", err) == 0
        && check_own_domain(to, own_domain, "ack", err) == 0)
        rc = 0;
    json_decref(root);
    return rc;
}

static char *encode_pairs(const sm_pair *pairs, size_t npairs, const char *from_key,
                          const char *to_key, int wrap)
{
    json_t *list = json_array(), *root = list;
    char *text = NULL;
    size_t i;

    if (list == NULL)
        return NULL;
    for (i = 0; i < npairs; i++)
        if (json_array_append_new(list, json_pack("{s:s, s:s}", from_key, pairs[i].from,
                                                  to_key, pairs[i].to)) != 0)
            goto leave;
    if (wrap && (root = json_pack("{s:o}", "pairs", list)) == NULL) {
        root = list;
        goto leave;
    }
    text = json_dumps(root, JSON_COMPACT);
leave:
    json_decref(root);
    return text;
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
    json_t *root = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *text;

    if (root == NULL)
        return NULL;
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}
