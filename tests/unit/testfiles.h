/* testfiles.h — files under a test's temporary directory: the helpers the
 * OpenPGP tests share. The including file defines `base` (its mkdtemp
 * template, short: gpg-agent's socket lives below it) before including. */
#ifndef TESTFILES_H
#define TESTFILES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TF_UNUSED __attribute__((unused))

static TF_UNUSED double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* base/name, in one of eight rotating buffers. */
static TF_UNUSED const char *path(const char *name)
{
    static char buf[8][128];
    static int i;

    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s/%s", base, name);
    return buf[i];
}

static TF_UNUSED int write_file(const char *p, const void *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    int rc = -1;

    if (f && fwrite(data, 1, len, f) == len)
        rc = 0;
    if (f && fclose(f) != 0)
        rc = -1;
    return rc;
}

/* Whole small file into a malloc'd NUL-terminated buffer. */
static TF_UNUSED char *read_file(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    char *buf = NULL;
    long n;

    *len = 0;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0
        && (buf = malloc((size_t)n + 1)) != NULL) {
        *len = fread(buf, 1, (size_t)n, f);
        buf[*len] = '\0';
    }
    fclose(f);
    return buf;
}

static TF_UNUSED int same_files(const char *p, const char *q)
{
    FILE *f = fopen(p, "rb"), *g = fopen(q, "rb");
    static char b1[65536], b2[65536];
    size_t n1, n2;
    int same = f && g;

    while (same) {
        n1 = fread(b1, 1, sizeof b1, f);
        n2 = fread(b2, 1, sizeof b2, g);
        if (n1 != n2 || memcmp(b1, b2, n1) != 0)
            same = 0;
        if (n1 == 0)
            break;
    }
    if (f)
        fclose(f);
    if (g)
        fclose(g);
    return same;
}

#endif
