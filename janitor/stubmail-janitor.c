/* stubmail-janitor — one pass over the sender's outbox, then exit: meant
 * for cron or a systemd timer on any host that reaches the outbox's
 * database and spool (man/stubmail-janitor.8). In order: the notices
 * senders asked for about acked mail (RFC 3461 NOTIFY), expired messages
 * (failure notices, removal), delay warnings, then the spool's leftovers. Exit 0 when everything went, 1 when something failed (what
 * was done stays done; the next pass does the rest), 78 on a bad
 * configuration. -K (not in -h) prints the key table as "key<TAB>default"
 * lines for tests/docs/t-janitor-keys. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "sm_log.h"
#include "jn.h"

int main(int argc, char **argv)
{
    const char *path = NULL;
    int opt, to_stderr = 0, check_only = 0, rc = 1;
    char err[1024];
    jn_settings set;
    jn_tally t = { 0, 0, 0, 0, 0 };
    PGconn *db = NULL;

    while ((opt = getopt(argc, argv, "c:fnhVK")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'f': to_stderr = 1; break;
        case 'n': check_only = 1; break;
        case 'V': printf("%s %s\n", JN_NAME, PACKAGE_VERSION); return 0;
        case 'h': jn_conf_usage(stdout); return 0;
        case 'K': jn_conf_dump_keys(stdout); return 0;
        default: jn_conf_usage(stderr); return EX_USAGE;
        }
    }
    if (path == NULL || optind != argc) {
        jn_conf_usage(stderr);
        return EX_USAGE;
    }
    if (jn_conf_load(path, &set, err, sizeof err) != 0) {
        fprintf(stderr, "%s: configuration error: %s\n", JN_NAME, err);
        return EX_CONFIG;
    }
    if (check_only)
        return 0;
    sm_log_open(JN_NAME, to_stderr);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        sm_err("curl_global_init failed");
        goto leave;
    }
    db = PQconnectdb(set.database);
    if (PQstatus(db) != CONNECTION_OK) {
        sm_err("cannot connect to the database: %s", PQerrorMessage(db));
        goto leave;
    }
    rc = 0;
    /* before the expiry: a message whose ack notice is due is not removed */
    if (jn_notify(db, &set, &t) != 0)
        rc = 1;
    if (jn_expire(db, &set, &t) != 0)
        rc = 1;
    if (jn_warn(db, &set, &t) != 0)
        rc = 1;
    if (jn_spool_sweep(db, &set, &t) != 0)
        rc = 1;
    sm_info("pass %s: %ld ack notices, %ld expired (%ld failure notices), "
            "%ld delay warnings, %ld spool files removed", rc ? "incomplete" : "done",
            t.acked_dsns, t.expired, t.failed_dsns, t.warnings, t.files);
leave:
    PQfinish(db);
    curl_global_cleanup();
    return rc;
}
