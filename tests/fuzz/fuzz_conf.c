/* Fuzz the configuration file parser through an in-memory file. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sm_conf.h"

static char *s_str;
static long s_int, s_secs;
static long long s_bytes;
static int s_bool;

static const sm_conf_key keys[] = {
    { "database", SM_CONF_STRING, &s_str, "x", "" },
    { "concurrency", SM_CONF_INT, &s_int, "4", "" },
    { "interval", SM_CONF_SECONDS, &s_secs, "60s", "" },
    { "max_size", SM_CONF_BYTES, &s_bytes, "10M", "" },
    { "debug", SM_CONF_BOOL, &s_bool, "no", "" },
    { NULL, 0, NULL, NULL, NULL },
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[512];
    int fd = memfd_create("conf", 0);

    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        sm_conf_load(path, keys, err, sizeof err);
    }
    close(fd);
    sm_conf_free(keys);
    return 0;
}
