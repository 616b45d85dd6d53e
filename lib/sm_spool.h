/* sm_spool — durable message bodies in a spool directory.
 *
 * A body is written to DIR/tmp/ID while it streams in, then fsync'd, renamed
 * to DIR/ID and the directory fsync'd: only then may the database row that
 * names it commit. A crash leaves at most a file in DIR/tmp or an orphan in
 * DIR, never a row without its body. */
#ifndef SM_SPOOL_H
#define SM_SPOOL_H

#include <stddef.h>
#include <limits.h>
#include "sm_id.h"

typedef struct sm_spool_file {
    int fd;
    long long size;
    char dir[PATH_MAX];
    char name[SM_ID_LEN + 1];     /* what the database stores as spool_name */
    char tmp_path[PATH_MAX];
} sm_spool_file;

/* Create DIR/tmp/ID (mode 0640; DIR/tmp is created if missing). */
int sm_spool_create(sm_spool_file *f, const char *dir, const char *id);
/* Append; -1 with errno on failure (the file is then useless: abort it). */
int sm_spool_write(sm_spool_file *f, const void *buf, size_t len);
/* fsync, close, rename to DIR/ID, fsync DIR. */
int sm_spool_commit(sm_spool_file *f);
/* Close and unlink whatever exists of it (tmp or committed). Never fails. */
void sm_spool_abort(sm_spool_file *f);
/* Path of a committed body: DIR/NAME into out; -1 if NAME is not an id. */
int sm_spool_path(const char *dir, const char *name, char *out, size_t outlen);
/* fsync a directory, so that a rename or link into it survives a crash.
 * -1 with errno. */
int sm_fsync_dir(const char *dir);

#endif
