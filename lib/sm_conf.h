/* sm_conf — the "key value" configuration files of stubmail-milter and
 * stubmail-pollerd. One table per program declares every key with its type
 * and default; one parser reads the file; unknown keys are errors.
 *
 * Syntax: one "key value" per line; '#' starts a comment at the beginning of a
 * line; the value is the rest of the line with surrounding blanks removed and
 * may be wrapped in double quotes (to keep '#' or leading blanks). */
#ifndef SM_CONF_H
#define SM_CONF_H

#include <stddef.h>

typedef enum {
    SM_CONF_STRING,     /* char ** (malloc'd) */
    SM_CONF_INT,        /* long *, decimal, >= 0 */
    SM_CONF_BOOL,       /* int *: yes/no, true/false, on/off, 1/0 */
    SM_CONF_SECONDS,    /* long *: "90", "90s", "5m", "2h", "1d" */
    SM_CONF_BYTES       /* long long *: "512", "64k", "10M", "2G" */
} sm_conf_type;

typedef struct sm_conf_key {
    const char *name;
    sm_conf_type type;
    void *dst;
    const char *dflt;   /* applied before the file is read; NULL = unset */
    const char *help;   /* one line for -h and the man page */
} sm_conf_key;

/* Apply defaults, then read path. Returns 0, or -1 with "file:line: why" in
 * err. A key whose default is NULL and which the file does not set stays
 * NULL/0: check required keys with sm_conf_require. */
int sm_conf_load(const char *path, const sm_conf_key *keys, char *err, size_t errlen);

/* sm_conf_load, also telling where each key was set: lines[i] gets the line
 * of keys[i] in the file (the last one that set it), or 0 when it kept its
 * default; so that a check beyond syntax names the line too. */
int sm_conf_load_lines(const char *path, const sm_conf_key *keys, int *lines, char *err,
                       size_t errlen);

/* Parse one value into key->dst (used by sm_conf_load and for defaults). */
int sm_conf_set(const sm_conf_key *key, const char *value, char *err, size_t errlen);

/* -1 with "missing required key NAME" if a string key is still NULL. */
int sm_conf_require(const sm_conf_key *keys, const char *name, char *err, size_t errlen);

/* Free the strings sm_conf_load allocated. */
void sm_conf_free(const sm_conf_key *keys);

#endif
