/* pd_util.c — small helpers every part of stubmail-pollerd uses: the
 * monotonic clock that times waits and rate limits, and the unlinked spool
 * files that hold fetched bodies. */
#define _GNU_SOURCE 1   /* O_TMPFILE, mkostemp */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "pd.h"

long long pd_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pd_spool_tmpfile(const char *dir)
{
    char path[4096];
    int fd;

#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
#endif
    if (snprintf(path, sizeof(path), "%s/fetch-XXXXXX", dir) >= (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
        return -1;
    unlink(path);
    return fd;
}
