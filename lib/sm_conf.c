/* sm_conf — one parser for the "key value" files of the milter and pollerd.
 * Every key is declared with its type and default in the program's table;
 * an unknown key or a bad value is an error naming file and line. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sm_conf.h"

static int parse_number(const char *value, long long *out, int suffixes_seconds,
                        int suffixes_bytes)
{
    char *end;
    long long n, mult = 1;

    if (!isdigit((unsigned char)*value))
        return -1;
    errno = 0;
    n = strtoll(value, &end, 10);
    if (errno != 0)
        return -1;
    if (*end != '\0') {
        if (end[1] != '\0')
            return -1;
        if (suffixes_seconds) {
            switch (*end) {
            case 's': mult = 1; break;
            case 'm': mult = 60; break;
            case 'h': mult = 3600; break;
            case 'd': mult = 86400; break;
            default: return -1;
            }
        } else if (suffixes_bytes) {
            switch (*end) {
            case 'k': case 'K': mult = 1024LL; break;
            case 'M': mult = 1024LL * 1024; break;
            case 'G': mult = 1024LL * 1024 * 1024; break;
            default: return -1;
            }
        } else {
            return -1;
        }
    }
    if (n > (long long)(9.2e18 / (double)mult))
        return -1;
    *out = n * mult;
    return 0;
}

int sm_conf_set(const sm_conf_key *key, const char *value, char *err, size_t errlen)
{
    long long n;
    char *copy;

    switch (key->type) {
    case SM_CONF_STRING:
        if ((copy = strdup(value)) == NULL) {
            snprintf(err, errlen, "%s: out of memory", key->name);
            return -1;
        }
        free(*(char **)key->dst);
        *(char **)key->dst = copy;
        return 0;
    case SM_CONF_BOOL:
        if (!strcasecmp(value, "yes") || !strcasecmp(value, "true")
            || !strcasecmp(value, "on") || !strcmp(value, "1")) {
            *(int *)key->dst = 1;
            return 0;
        }
        if (!strcasecmp(value, "no") || !strcasecmp(value, "false")
            || !strcasecmp(value, "off") || !strcmp(value, "0")) {
            *(int *)key->dst = 0;
            return 0;
        }
        snprintf(err, errlen, "%s: \"%s\" is not yes or no", key->name, value);
        return -1;
    case SM_CONF_INT:
        if (parse_number(value, &n, 0, 0) != 0 || n > 2147483647LL) {
            snprintf(err, errlen, "%s: \"%s\" is not a non-negative integer", key->name, value);
            return -1;
        }
        *(long *)key->dst = (long)n;
        return 0;
    case SM_CONF_SECONDS:
        if (parse_number(value, &n, 1, 0) != 0 || n > 2147483647LL) {
            snprintf(err, errlen, "%s: \"%s\" is not a duration (like 90, 90s, 5m, 2h, 1d)",
                     key->name, value);
            return -1;
        }
        *(long *)key->dst = (long)n;
        return 0;
    case SM_CONF_BYTES:
        if (parse_number(value, &n, 0, 1) != 0) {
            snprintf(err, errlen, "%s: \"%s\" is not a size (like 512, 64k, 10M, 2G)",
                     key->name, value);
            return -1;
        }
        *(long long *)key->dst = n;
        return 0;
    }
    snprintf(err, errlen, "%s: unknown key type", key->name);
    return -1;
}

/* Split a line into key and value in place; returns 0 for a blank or comment
 * line, 1 for a key/value, -1 for a syntax error. */
static int split_line(char *line, char **key, char **value, const char **why)
{
    char *p = line, *end;

    line[strcspn(line, "\r\n")] = '\0';
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    *key = p;
    while (*p && !isspace((unsigned char)*p))
        p++;
    if (*p)
        *p++ = '\0';
    while (isspace((unsigned char)*p))
        p++;
    end = p + strlen(p);
    while (end > p && isspace((unsigned char)end[-1]))
        *--end = '\0';
    if (*p == '"') {
        if (end - p < 2 || end[-1] != '"') {
            *why = "unterminated double quote";
            return -1;
        }
        end[-1] = '\0';
        p++;
    }
    *value = p;
    return 1;
}

int sm_conf_load(const char *path, const sm_conf_key *keys, char *err, size_t errlen)
{
    return sm_conf_load_lines(path, keys, NULL, err, errlen);
}

int sm_conf_load_lines(const char *path, const sm_conf_key *keys, int *lines, char *err,
                       size_t errlen)
{
    char line[4096], sub[512], *key, *value;
    const sm_conf_key *k;
    const char *why = "";
    FILE *fp = NULL;
    int lineno = 0, rc = -1, kind;

    for (k = keys; k->name; k++) {
        if (lines)
            lines[k - keys] = 0;
        if (k->dflt && sm_conf_set(k, k->dflt, err, errlen) != 0)
            return -1;
    }
    if ((fp = fopen(path, "r")) == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, fp)) {
        lineno++;
        if (strlen(line) == sizeof line - 1 && line[sizeof line - 2] != '\n') {
            snprintf(err, errlen, "%s:%d: line longer than %zu characters", path, lineno,
                     sizeof line - 2);
            goto leave;
        }
        kind = split_line(line, &key, &value, &why);
        if (kind == 0)
            continue;
        if (kind < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            goto leave;
        }
        for (k = keys; k->name && strcmp(k->name, key) != 0; k++)
            ;
        if (k->name == NULL) {
            snprintf(err, errlen, "%s:%d: unknown key \"%s\"", path, lineno, key);
            goto leave;
        }
        if (sm_conf_set(k, value, sub, sizeof sub) != 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, sub);
            goto leave;
        }
        if (lines)
            lines[k - keys] = lineno;
    }
    if (ferror(fp)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        goto leave;
    }
    rc = 0;
leave:
    fclose(fp);
    return rc;
}

int sm_conf_require(const sm_conf_key *keys, const char *name, char *err, size_t errlen)
{
    const sm_conf_key *k;

    for (k = keys; k->name; k++) {
        if (strcmp(k->name, name) != 0)
            continue;
        if (k->type == SM_CONF_STRING && *(char **)k->dst == NULL) {
            snprintf(err, errlen, "missing required key \"%s\" (%s)", name, k->help);
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "no such key \"%s\"", name);
    return -1;
}

void sm_conf_free(const sm_conf_key *keys)
{
    const sm_conf_key *k;

    for (k = keys; k->name; k++)
        if (k->type == SM_CONF_STRING) {
            free(*(char **)k->dst);
            *(char **)k->dst = NULL;
        }
}
