/* ctl_out.c — what stubmailctl prints: rows as an aligned table for people
 * or a JSON array of objects for scripts (--json), changes as a sentence
 * or a JSON object, errors on stderr. Column names are the statement's, so
 * the two forms always say the same. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* type oids of pg_type.h, which client code does not get */
#define OID_BOOL     16
#define OID_INT8     20
#define OID_INT2     21
#define OID_INT4     23
#define OID_NUMERIC  1700

void ctl_out_json(json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(v);
}

static json_t *cell_json(const PGresult *res, int row, int col)
{
    const char *v = PQgetvalue(res, row, col);

    if (PQgetisnull(res, row, col))
        return json_null();
    switch (PQftype(res, col)) {
    case OID_BOOL:
        return json_boolean(v[0] == 't');
    case OID_INT2: case OID_INT4: case OID_INT8:
        return json_integer(strtoll(v, NULL, 10));
    case OID_NUMERIC:
        return json_real(strtod(v, NULL));
    default:
        return json_string(v);
    }
}

static const char *cell_text(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return "-";
    if (PQftype(res, col) == OID_BOOL)
        return PQgetvalue(res, row, col)[0] == 't' ? "yes" : "no";
    return PQgetvalue(res, row, col);
}

void ctl_out_rows(ctl *c, PGresult *res, const char *title)
{
    int rows = PQntuples(res), cols = PQnfields(res), i, j;
    size_t *width = NULL, w;
    json_t *arr, *obj;

    if (c->json) {
        arr = json_array();
        for (i = 0; i < rows; i++) {
            obj = json_object();
            for (j = 0; j < cols; j++)
                json_object_set_new(obj, PQfname(res, j), cell_json(res, i, j));
            json_array_append_new(arr, obj);
        }
        ctl_out_json(arr);
        goto leave;
    }
    if (rows == 0) {
        printf("no %s\n", title);
        goto leave;
    }
    if (!(width = calloc((size_t)cols, sizeof *width)))
        goto leave;
    for (j = 0; j < cols; j++) {
        width[j] = strlen(PQfname(res, j));
        for (i = 0; i < rows; i++)
            if ((w = strlen(cell_text(res, i, j))) > width[j])
                width[j] = w;
    }
    for (j = 0; j < cols; j++)
        printf("%-*s%s", j + 1 < cols ? (int)width[j] : 0, PQfname(res, j),
               j + 1 < cols ? "  " : "\n");
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++)
            printf("%-*s%s", j + 1 < cols ? (int)width[j] : 0, cell_text(res, i, j),
                   j + 1 < cols ? "  " : "\n");
leave:
    free(width);
}

void ctl_out_done(ctl *c, const char *text, ...)
{
    va_list ap;
    const char *k, *v;
    json_t *obj;

    if (!c->json) {
        printf("%s\n", text);
        return;
    }
    obj = json_object();
    json_object_set_new(obj, "ok", json_true());
    va_start(ap, text);
    while ((k = va_arg(ap, const char *)) != NULL) {
        v = va_arg(ap, const char *);
        json_object_set_new(obj, k, v ? json_string(v) : json_null());
    }
    va_end(ap);
    json_object_set_new(obj, "message", json_string(text));
    ctl_out_json(obj);
}

int ctl_fail(int status, const char *fmt, ...)
{
    va_list ap;

    fputs(CTL_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return status;
}

int ctl_arg_addr(const char *what, const char *in, char out[SM_ADDR_MAX + 1])
{
    const char *why = "";

    if (sm_addr_normalize(in, out, SM_ADDR_MAX + 1, &why) != 0) {
        ctl_fail(EX_USAGE, "%s \"%s\" is not an address: %s", what, in, why);
        return -1;
    }
    return 0;
}

int ctl_arg_pattern(const char *what, const char *in, char out[SM_ADDR_MAX + 1])
{
    const char *why = "";

    if (sm_pattern_normalize(in, out, SM_ADDR_MAX + 1, &why) != 0) {
        ctl_fail(EX_USAGE, "%s \"%s\" is neither an address nor *@domain: %s", what, in, why);
        return -1;
    }
    return 0;
}

int ctl_arg_domain(const char *what, const char *in, char out[256])
{
    size_t i, n = strlen(in);

    if (n >= 256 || !sm_domain_valid(in)) {
        ctl_fail(EX_USAGE, "%s \"%s\" is not a domain name", what, in);
        return -1;
    }
    for (i = 0; i <= n; i++)
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
    return 0;
}
