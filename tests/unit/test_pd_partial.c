/* Unit tests of the file a fetch streams into (pollerd/pd_partial.c): what
 * it finds again after a cut is resumed from its end only when it says it
 * is part of the body listed now (its size and a strong ETag); anything else
 * is emptied with the reason, and a new file starts empty. */
#define _GNU_SOURCE 1
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
#include "tap.h"

static char dir[] = "/tmp/test_pd_partial.XXXXXX";

/* Leave n octets in the file of (a.example, id), marked as part of a body
 * of size octets with etag (no mark if etag is NULL). */
static void leave(const char *id, size_t n, long long size, const char *etag)
{
    char path[4096], buf[4096];
    int fd;

    pd_partial_path(dir, "a.example", id, path, sizeof(path));
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    memset(buf, 'x', sizeof(buf));
    while (n > 0) {
        size_t k = n < sizeof(buf) ? n : sizeof(buf);

        if (write(fd, buf, k) != (ssize_t)k)
            break;
        n -= k;
    }
    if (etag)
        pd_partial_mark(fd, size, etag);
    close(fd);
}

static long long file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Open the file of id for a body of size octets, then close it again. */
static int reopen(const char *id, long long size, pd_partial *p)
{
    int r = pd_partial_open(dir, "a.example", id, size, p);

    if (r == 0)
        close(p->fd);
    return r;
}

int main(void)
{
    static const char *ids[] = { "new", "whole", "resized", "unmarked", "weak", "long",
                                 "restart" };
    char path[4096], tiny[16];
    pd_partial p;
    size_t i;
    int fd;

    sm_log_open("test_pd_partial", 1);
    if (!mkdtemp(dir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }

    /* a first fetch: an empty file under the name of domain and id */
    ok(pd_partial_open(dir, "a.example", "new", 1000, &p) == 0 && p.from == 0
       && !p.restart_why, "a new file starts empty, nothing to restart");
    snprintf(path, sizeof(path), "%s/a.example_new.partial", dir);
    is_str(p.path, path, "named DOMAIN_ID.partial");
    close(p.fd);

    /* what a cut fetch left: resumed from its end, with its ETag */
    leave("cut", 100, 1000, "\"cut\"");
    ok(pd_partial_open(dir, "a.example", "cut", 1000, &p) == 0 && p.from == 100
       && !p.restart_why, "a marked file of the listed size resumes from its end");
    is_str(p.etag, "\"cut\"", "with the ETag for If-Range");
    ok(lseek(p.fd, 0, SEEK_CUR) == 100, "positioned at its end");
    close(p.fd);

    leave("whole", 1000, 1000, "\"whole\"");
    ok(reopen("whole", 1000, &p) == 0 && p.from == 1000, "a whole body is found whole");

    /* not of the body listed now: emptied, and why */
    leave("resized", 100, 999, "\"resized\"");
    ok(reopen("resized", 1000, &p) == 0 && p.from == 0 && p.had == 100 && p.restart_why
       && strstr(p.restart_why, "another size"), "part of a body of another size: emptied");
    ok(file_size(p.path) == 0, "and its octets are gone");

    leave("unmarked", 50, 0, NULL);
    ok(reopen("unmarked", 1000, &p) == 0 && p.from == 0 && p.restart_why
       && strstr(p.restart_why, "does not say"), "no mark: emptied");

    leave("weak", 50, 1000, "W/\"weak\"");
    ok(reopen("weak", 1000, &p) == 0 && p.from == 0 && p.restart_why,
       "a weak ETag is no mark: emptied");

    leave("long", 20, 10, "\"long\"");
    ok(reopen("long", 10, &p) == 0 && p.from == 0 && p.restart_why
       && strstr(p.restart_why, "longer"), "longer than the listed size: emptied");

    /* restart empties it and drops the mark: the next open trusts nothing */
    leave("restart", 100, 1000, "\"restart\"");
    pd_partial_path(dir, "a.example", "restart", path, sizeof(path));
    fd = open(path, O_RDWR);
    ok(pd_partial_restart(fd) == 0 && file_size(path) == 0
       && fgetxattr(fd, "user.stubmail.fetch", tiny, sizeof(tiny)) < 0,
       "restart empties the file and removes its mark");
    close(fd);

    pd_partial_remove(dir, "a.example", "cut");
    pd_partial_path(dir, "a.example", "cut", path, sizeof(path));
    ok(file_size(path) < 0, "remove takes the file away");
    pd_partial_remove(dir, "a.example", "cut");
    ok(1, "removing it twice is no error");

    ok(pd_partial_path(dir, "a.example", "id", tiny, sizeof(tiny)) == -1
       && errno == ENAMETOOLONG, "a path that does not fit is refused");

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        pd_partial_remove(dir, "a.example", ids[i]);
    rmdir(dir);
    return tap_done();
}
