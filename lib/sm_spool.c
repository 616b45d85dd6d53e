/* sm_spool — durable bodies: write to DIR/tmp, fsync, rename into DIR, fsync
 * DIR. Only then may the row that names the body commit. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sm_spool.h"

int sm_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc, saved;

    if (fd < 0)
        return -1;
    rc = fsync(fd);
    saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int sm_spool_path(const char *dir, const char *name, char *out, size_t outlen)
{
    int n;

    if (!sm_id_valid(name)) {
        errno = EINVAL;
        return -1;
    }
    n = snprintf(out, outlen, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= outlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

int sm_spool_create(sm_spool_file *f, const char *dir, const char *id)
{
    char tmpdir[PATH_MAX];
    int n;

    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (!sm_id_valid(id) || strlen(dir) >= sizeof f->dir) {
        errno = EINVAL;
        return -1;
    }
    memcpy(f->name, id, SM_ID_LEN + 1);
    strcpy(f->dir, dir);
    n = snprintf(tmpdir, sizeof tmpdir, "%s/tmp", dir);
    if (n < 0 || (size_t)n >= sizeof tmpdir
        || snprintf(f->tmp_path, sizeof f->tmp_path, "%s/%s", tmpdir, id) >= (int)sizeof f->tmp_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (mkdir(tmpdir, 0750) != 0 && errno != EEXIST)
        return -1;
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    return f->fd < 0 ? -1 : 0;
}

int sm_spool_write(sm_spool_file *f, const void *buf, size_t len)
{
    const char *p = buf;
    ssize_t n;

    while (len > 0) {
        n = write(f->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        f->size += n;
    }
    return 0;
}

int sm_spool_commit(sm_spool_file *f)
{
    char final[PATH_MAX];
    int saved;

    if (sm_spool_path(f->dir, f->name, final, sizeof final) != 0)
        return -1;
    if (fsync(f->fd) != 0) {
        saved = errno;
        close(f->fd);
        f->fd = -1;
        errno = saved;
        return -1;
    }
    if (close(f->fd) != 0) {
        f->fd = -1;
        return -1;
    }
    f->fd = -1;
    if (rename(f->tmp_path, final) != 0)
        return -1;
    f->tmp_path[0] = '\0';
    return sm_fsync_dir(f->dir);
}

void sm_spool_abort(sm_spool_file *f)
{
    char final[PATH_MAX];
    int saved = errno;

    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    if (f->tmp_path[0])
        unlink(f->tmp_path);
    else if (f->name[0] && sm_spool_path(f->dir, f->name, final, sizeof final) == 0)
        unlink(final);
    f->tmp_path[0] = '\0';
    f->name[0] = '\0';
    errno = saved;
}
