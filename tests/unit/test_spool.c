/* Unit tests: spool files appear under their id only once committed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sm_spool.h"
#include "tap.h"

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int main(void)
{
    char dir[] = "/tmp/sm-test-spool-XXXXXX", id[SM_ID_LEN + 1], path[PATH_MAX], buf[64];
    sm_spool_file f;
    FILE *fp;
    size_t n;

    ok(mkdtemp(dir) != NULL, "temp dir");
    sm_id_new(id);
    ok(sm_spool_create(&f, dir, id) == 0, "create");
    ok(sm_spool_write(&f, "Subject: x\r\n\r\n", 14) == 0 && sm_spool_write(&f, "body\r\n", 6) == 0,
       "write");
    sm_spool_path(dir, id, path, sizeof path);
    ok(!exists(path), "not visible before commit");
    ok(sm_spool_commit(&f) == 0, "commit");
    ok(exists(path), "visible after commit");
    ok(f.size == 20, "size counted");
    fp = fopen(path, "rb");
    n = fp ? fread(buf, 1, sizeof buf, fp) : 0;
    if (fp)
        fclose(fp);
    ok(n == 20 && memcmp(buf, "Subject: x\r\n\r\nbody\r\n", 20) == 0, "bytes as written");
    sm_spool_abort(&f);
    ok(!exists(path), "abort after commit removes the body");

    sm_id_new(id);
    ok(sm_spool_create(&f, dir, id) == 0, "second create");
    sm_spool_abort(&f);
    snprintf(path, sizeof path, "%s/tmp/%s", dir, id);
    ok(!exists(path), "abort before commit removes the temporary file");

    ok(sm_spool_create(&f, dir, "../../etc/passwd") == -1, "a non-id name is refused");
    ok(sm_spool_path(dir, "x/../y", path, sizeof path) == -1, "path of a non-id refused");
    snprintf(path, sizeof path, "%s/tmp", dir);
    rmdir(path);
    ok(rmdir(dir) == 0, "nothing left behind");
    return tap_done();
}
