/* Unit tests: the key/value configuration parser. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sm_conf.h"
#include "tap.h"

static char *s_db, *s_sock;
static long interval, workers;
static long long maxsize;
static int flag;

static const sm_conf_key keys[] = {
    { "database", SM_CONF_STRING, &s_db, NULL, "libpq conninfo" },
    { "socket", SM_CONF_STRING, &s_sock, "unix:/run/x.sock", "milter socket" },
    { "interval", SM_CONF_SECONDS, &interval, "60s", "poll interval" },
    { "concurrency", SM_CONF_INT, &workers, "4", "domains at once" },
    { "max_size", SM_CONF_BYTES, &maxsize, "10M", "biggest body" },
    { "debug", SM_CONF_BOOL, &flag, "no", "debug" },
    { NULL, 0, NULL, NULL, NULL },
};

static int load(const char *text, char *err, size_t errlen)
{
    char path[] = "/tmp/sm-test-conf-XXXXXX";
    int fd = mkstemp(path), rc;
    FILE *fp = fdopen(fd, "w");

    fputs(text, fp);
    fclose(fp);
    sm_conf_free(keys);
    rc = sm_conf_load(path, keys, err, errlen);
    unlink(path);
    return rc;
}

/* sm_conf_load_lines of text: each key's line in lines[]. */
static int lines[sizeof keys / sizeof keys[0]];

static int lines_of(const char *text, char *err, size_t errlen)
{
    char path[] = "/tmp/sm-test-conf-XXXXXX";
    int fd = mkstemp(path), rc;
    FILE *fp = fdopen(fd, "w");

    fputs(text, fp);
    fclose(fp);
    sm_conf_free(keys);
    rc = sm_conf_load_lines(path, keys, lines, err, errlen);
    unlink(path);
    return rc;
}

int main(void)
{
    char err[512];

    ok(load("# comment\n\ndatabase host=127.0.0.1 dbname=x\n", err, sizeof err) == 0, "loads");
    is_str(s_db, "host=127.0.0.1 dbname=x", "string value is the rest of the line");
    is_str(s_sock, "unix:/run/x.sock", "default applied");
    ok(interval == 60 && workers == 4 && maxsize == 10 * 1024 * 1024 && flag == 0, "defaults typed");

    ok(load("interval 5m\nconcurrency 16\nmax_size 2G\ndebug yes\nsocket \"  inet:1@h # x\"\n",
            err, sizeof err) == 0, "typed values load");
    ok(interval == 300, "5m is 300 s");
    ok(workers == 16, "integer");
    ok(maxsize == 2LL * 1024 * 1024 * 1024, "2G");
    ok(flag == 1, "yes is true");
    is_str(s_sock, "  inet:1@h # x", "quoted value keeps blanks and #");
    ok(s_db == NULL, "unset required key stays NULL");
    ok(sm_conf_require(keys, "database", err, sizeof err) == -1 && strstr(err, "database"),
       "missing required key reported: %s", err);

    ok(load("databse x\n", err, sizeof err) == -1 && strstr(err, ":1: unknown key \"databse\""),
       "unknown key names file and line: %s", err);
    ok(load("\ninterval soon\n", err, sizeof err) == -1 && strstr(err, ":2: interval"),
       "bad duration refused: %s", err);
    ok(load("concurrency -1\n", err, sizeof err) == -1, "negative integer refused");
    ok(load("concurrency 99999999999999999999\n", err, sizeof err) == -1, "overflow refused");
    ok(load("max_size 10X\n", err, sizeof err) == -1, "bad size suffix refused");
    ok(load("debug maybe\n", err, sizeof err) == -1, "bad bool refused");
    ok(load("socket \"open\n", err, sizeof err) == -1, "unterminated quote refused");
    ok(sm_conf_load("/nonexistent/stubmail.conf", keys, err, sizeof err) == -1
       && strstr(err, "No such file"), "missing file reported: %s", err);
    ok(lines_of("# c\ninterval 5m\n\nconcurrency 2\ninterval 6m\n", err, sizeof err) == 0,
       "loads with lines");
    ok(lines[2] == 5, "the line of the key's last setting: %d", lines[2]);
    ok(lines[3] == 4, "the line of a key set once: %d", lines[3]);
    ok(lines[0] == 0 && lines[1] == 0, "0 for keys left at their default (%d, %d)", lines[0],
       lines[1]);
    sm_conf_free(keys);
    return tap_done();
}
