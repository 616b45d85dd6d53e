/* sm_authres — find Authentication-Results fields that claim to be ours
 * (see sm_authres.h). A byte-at-a-time state machine over lines: a line
 * that starts with a blank continues the field before it; any other line
 * ends it (and the empty line ends the header section). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sm_authres.h"

void sm_authres_init(sm_authres_scan *s, const char *authserv_id)
{
    memset(s, 0, sizeof *s);
    s->authserv_id = authserv_id;
    s->field_start = -1;
    s->at_line_start = 1;
    s->blank = 1;
}

void sm_authres_free(sm_authres_scan *s)
{
    free(s->ranges);
    s->ranges = NULL;
    s->n = 0;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int sm_authres_claims(const char *field, size_t len, const char *authserv_id)
{
    static const char name[] = "Authentication-Results";
    const char *p = field, *end = field + len, *id;
    size_t n = sizeof name - 1, idlen;
    int depth = 0;

    if (len < n || strncasecmp(p, name, n) != 0)
        return 0;
    p += n;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p >= end || *p++ != ':')
        return 0;
    /* CFWS: blanks, folding and comments (which nest) */
    for (; p < end; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')' && depth > 0)
            depth--;
        else if (!depth && !is_blank(*p))
            break;
    }
    if (p < end && *p == '"') {
        id = ++p;
        while (p < end && *p != '"')
            p++;
    } else {
        id = p;
        while (p < end && *p != ';' && *p != '(' && !is_blank(*p))
            p++;
    }
    idlen = (size_t)(p - id);
    return idlen > 0 && idlen == strlen(authserv_id) && strncasecmp(id, authserv_id, idlen) == 0;
}

/* The field that started at s->field_start ends at `to`. */
static int close_field(sm_authres_scan *s, long long to)
{
    sm_range *grown;

    if (s->field_start < 0 || !sm_authres_claims(s->head, s->head_len, s->authserv_id))
        return 0;
    if ((grown = realloc(s->ranges, (s->n + 1) * sizeof *grown)) == NULL)
        return -1;
    s->ranges = grown;
    grown[s->n].from = s->field_start;
    grown[s->n].to = to;
    s->n++;
    return 0;
}

int sm_authres_feed(sm_authres_scan *s, const char *data, size_t len)
{
    size_t i;

    for (i = 0; i < len && !s->done; i++) {
        char c = data[i];

        if (s->at_line_start) {
            s->at_line_start = 0;
            s->blank = 1;
            if (c != ' ' && c != '\t') {
                /* a new field, or the empty line: the one before is whole */
                if (close_field(s, s->line_start) != 0)
                    return -1;
                s->field_start = s->line_start;
                s->head_len = 0;
            }
        }
        if (c == '\n') {
            if (s->blank) {
                s->done = 1;
                s->field_start = -1;
            }
            s->at_line_start = 1;
            s->line_start = s->off + (long long)i + 1;
            continue;
        }
        if (c != '\r')
            s->blank = 0;
        if (s->head_len < sizeof s->head)
            s->head[s->head_len++] = c;
    }
    s->off += (long long)len;
    return s->done;
}

int sm_authres_end(sm_authres_scan *s)
{
    if (s->done)
        return 0;
    s->done = 1;
    return close_field(s, s->off);
}
