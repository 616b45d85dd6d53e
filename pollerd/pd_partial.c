/* pd_partial.c — the file a fetch streams into, kept under a name made of
 * the domain and the message id in spool_dir (DOMAIN_ID.partial), so that
 * a fetch cut short (a dropped connection, a timeout, a crash or a stop of
 * pollerd) resumes from its last byte with Range instead of starting over.
 *
 * What the body is, is kept beside its bytes in an extended attribute of
 * the file (user.stubmail.fetch: "SIZE ETAG"): the listed size, and the
 * strong ETag of the outbox's answer that If-Range sends back. A file
 * without it (the outbox gave no strong ETag, the file system keeps no
 * extended attributes, a crash before the first byte) is not trusted: the
 * fetch starts over. The file is removed once every recipient of the
 * message is finished with. */
#define _GNU_SOURCE 1
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "sm_log.h"
#include "pd.h"

#define PD_PARTIAL_XATTR "user.stubmail.fetch"

int pd_partial_path(const char *spool_dir, const char *domain, const char *id, char *out,
                    size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s_%s.partial", spool_dir, domain, id);

    if (n < 0 || (size_t)n >= outlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* The size and ETag the file says it holds part of: 0, or -1 when it says
 * nothing usable. */
static int read_mark(int fd, long long *size, char *etag, size_t etaglen)
{
    char buf[PD_ETAG_MAX + 32], *sp, *end;
    ssize_t n = fgetxattr(fd, PD_PARTIAL_XATTR, buf, sizeof(buf) - 1);

    if (n <= 0)
        return -1;
    buf[n] = '\0';
    errno = 0;
    *size = strtoll(buf, &end, 10);
    if (errno || end == buf || *end != ' ' || *size < 0)
        return -1;
    sp = end + 1;
    if (*sp != '"' || strlen(sp) >= etaglen)   /* strong tags only: no W/ */
        return -1;
    memcpy(etag, sp, strlen(sp) + 1);
    return 0;
}

int pd_partial_open(const char *spool_dir, const char *domain, const char *id,
                    long long size, pd_partial *p)
{
    struct stat st;
    long long marked = -1;

    memset(p, 0, sizeof(*p));
    p->fd = -1;
    if (pd_partial_path(spool_dir, domain, id, p->path, sizeof(p->path)) != 0)
        return -1;
    if ((p->fd = open(p->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
        return -1;
    if (fstat(p->fd, &st) != 0)
        goto fail;
    if (st.st_size == 0)
        return 0;
    if (read_mark(p->fd, &marked, p->etag, sizeof(p->etag)) != 0)
        p->restart_why = "it does not say which answer it is part of";
    else if (marked != size)
        p->restart_why = "it is part of a body of another size";
    else if ((long long)st.st_size > size)
        p->restart_why = "it is longer than the listed size";
    if (p->restart_why) {
        p->had = (long long)st.st_size;
        p->etag[0] = '\0';
        if (pd_partial_restart(p->fd) != 0)
            goto fail;
        return 0;
    }
    p->from = (long long)st.st_size;
    if (lseek(p->fd, (off_t)p->from, SEEK_SET) < 0)
        goto fail;
    return 0;
fail:
    close(p->fd);
    p->fd = -1;
    return -1;
}

int pd_partial_mark(int fd, long long size, const char *etag)
{
    char buf[PD_ETAG_MAX + 32];

    if (!etag[0] || etag[0] != '"') {           /* none, or weak: not resumable */
        if (fremovexattr(fd, PD_PARTIAL_XATTR) != 0 && errno != ENODATA)
            return -1;
        return 0;
    }
    snprintf(buf, sizeof(buf), "%lld %s", size, etag);
    return fsetxattr(fd, PD_PARTIAL_XATTR, buf, strlen(buf), 0);
}

int pd_partial_restart(int fd)
{
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
        return -1;
    if (fremovexattr(fd, PD_PARTIAL_XATTR) != 0 && errno != ENODATA && errno != ENOTSUP)
        return -1;
    return 0;
}

void pd_partial_remove(const char *spool_dir, const char *domain, const char *id)
{
    char path[4096];

    if (pd_partial_path(spool_dir, domain, id, path, sizeof(path)) != 0)
        return;
    if (unlink(path) != 0 && errno != ENOENT)
        sm_warn("%s %s: cannot remove %s: %s", domain, id, path, strerror(errno));
}
