/* jn_spool — spool files that no live message names: orphans (a crash
 * between the file's rename and its row's commit, or after an expired
 * message's removal committed), bodies whose every recipient acked but
 * whose unlink failed, and the milter's DIR/tmp files of sessions that
 * died. A file is touched only once it is orphan_grace old (by its
 * mtime): the milter commits a row within moments of renaming its file,
 * so an older file no live row names will never be named. Only names of
 * the milter's form (32 hex digits) are looked at. Two janitors may both
 * decide on a file; unlink lets one of them remove it, and only that one
 * logs and counts it. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sm_id.h"
#include "sm_log.h"
#include "jn.h"

/* $1 names as a text[] literal: those that no message with its body still
 * there names, with whether some message names it at all */
static const char sql_unnamed[] =
    "SELECT n, EXISTS (SELECT 1 FROM message m WHERE m.spool_name = n)"
    " FROM unnest($1::text[]) AS n"
    " WHERE NOT EXISTS (SELECT 1 FROM message m"
    "                   WHERE m.spool_name = n AND m.body_deleted_at IS NULL)";

typedef struct jn_names {
    char *literal;              /* "{a,b,...}" */
    size_t len, cap, n;
} jn_names;

/* The old enough files of dir with the milter's names, into *names as an
 * array literal (when names is not NULL), or each removed at once (tmp).
 * 0, or -1 when dir cannot be read. */
static int scan(const char *dir, const jn_settings *set, jn_names *names, jn_tally *t)
{
    char path[4096];
    struct dirent *e;
    struct stat st;
    time_t now = time(NULL);
    DIR *d = opendir(dir);

    if (d == NULL) {
        if (errno == ENOENT && names == NULL)
            return 0;           /* no tmp yet */
        sm_syserr("reading the spool directory %s", dir);
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (!sm_id_valid(e->d_name))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)
            || now - st.st_mtime < set->orphan_grace)
            continue;
        if (names == NULL) {
            if (unlink(path) == 0) {
                t->files++;
                sm_info("%s: removed the unfinished spool file %s (%ld s old)", e->d_name,
                        path, (long)(now - st.st_mtime));
            } else if (errno != ENOENT) {
                sm_syserr("%s: removing %s", e->d_name, path);
            }
            continue;
        }
        if (names->len + SM_ID_LEN + 3 > names->cap) {
            char *bigger = realloc(names->literal, names->cap * 2 + SM_ID_LEN + 3);

            if (bigger == NULL) {
                sm_err("out of memory listing %s", dir);
                closedir(d);
                return -1;
            }
            names->literal = bigger;
            names->cap = names->cap * 2 + SM_ID_LEN + 3;
        }
        names->len += (size_t)sprintf(names->literal + names->len, "%s%s",
                                      names->n++ ? "," : "{", e->d_name);
    }
    closedir(d);
    return 0;
}

int jn_spool_sweep(PGconn *db, const jn_settings *set, jn_tally *t)
{
    char tmp[4096], path[4096];
    jn_names names = { NULL, 0, 0, 0 };
    const char *vals[1];
    PGresult *r = NULL;
    int rc = -1, i;

    snprintf(tmp, sizeof tmp, "%s/tmp", set->spool_dir);
    if (scan(tmp, set, NULL, t) != 0 || scan(set->spool_dir, set, &names, t) != 0)
        goto leave;
    if (names.n == 0) {
        rc = 0;
        goto leave;
    }
    strcpy(names.literal + names.len, "}");
    vals[0] = names.literal;
    r = PQexecParams(db, sql_unnamed, 1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sm_err("asking which spool files are named: %s", PQresultErrorMessage(r));
        goto leave;
    }
    for (i = 0; i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);

        snprintf(path, sizeof path, "%s/%s", set->spool_dir, name);
        if (unlink(path) == 0) {
            t->files++;
            sm_info("%s: removed the spool file %s (%s)", name, path,
                    strcmp(PQgetvalue(r, i, 1), "t") == 0
                        ? "every recipient acked it, yet it survived"
                        : "no message names it");
        } else if (errno != ENOENT) {
            sm_syserr("%s: removing %s", name, path);
        }
    }
    rc = 0;
leave:
    PQclear(r);
    free(names.literal);
    return rc;
}
