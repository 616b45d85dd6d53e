/* jn_conf — stubmail-janitor's configuration keys: one table, printed by
 * -h (and by -K for tests/docs/t-janitor-keys, which compares it with
 * stubmail-janitor(8) and docs/HACKING.md). */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sm_conf.h"
#include "jn.h"

static jn_settings cfg;

static const sm_conf_key jn_keys[] = {
    { "database", SM_CONF_STRING, &cfg.database, NULL, "libpq conninfo of the outbox" },
    { "spool_dir", SM_CONF_STRING, &cfg.spool_dir, "/var/spool/stubmail",
      "the milter's spool directory" },
    { "submit_to", SM_CONF_STRING, &cfg.submit_to, "smtp://127.0.0.1:10026",
      "local MTA that notifications are handed to (smtp://HOST:PORT)" },
    { "hostname", SM_CONF_STRING, &cfg.hostname, NULL,
      "name in notifications (Reporting-MTA, MAILER-DAEMON@); unset: the host's name" },
    { "delay_warning", SM_CONF_SECONDS, &cfg.delay_warning, "0",
      "warn the sender once when mail is unretrieved this long (0: never)" },
    { "orphan_grace", SM_CONF_SECONDS, &cfg.orphan_grace, "1h",
      "a spool file no message names is removed once this old" },
    { "submit_timeout", SM_CONF_SECONDS, &cfg.submit_timeout, "60s",
      "longest hand-off of one notification" },
    { NULL, 0, NULL, NULL, NULL }
};

void jn_conf_usage(FILE *fp)
{
    const sm_conf_key *k;

    fprintf(fp, "usage: %s -c FILE [-f] [-n]\n"
            "  -c FILE  configuration file\n"
            "  -n       check the configuration and exit (0 = good)\n"
            "  -f       log to stderr instead of syslog\n"
            "configuration keys:\n", JN_NAME);
    for (k = jn_keys; k->name; k++)
        fprintf(fp, "  %-20s %s (default: %s)\n", k->name, k->help,
                k->dflt ? k->dflt : strcmp(k->name, "database") == 0 ? "required" : "unset");
}

void jn_conf_dump_keys(FILE *fp)
{
    const sm_conf_key *k;

    for (k = jn_keys; k->name; k++)
        fprintf(fp, "%s\t%s\n", k->name, k->dflt ? k->dflt : "");
}

int jn_conf_load(const char *path, jn_settings *set, char *err, size_t errlen)
{
    char sub[512], host[256];
    struct stat st;
    int rc = -1;

    if (sm_conf_load(path, jn_keys, err, errlen) != 0)
        goto leave;
    if (sm_conf_require(jn_keys, "database", sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: %s", path, sub);
        goto leave;
    }
    if (strncmp(cfg.submit_to, "smtp://", 7) != 0 || cfg.submit_to[7] == '\0') {
        snprintf(err, errlen, "%s: submit_to: \"%s\" is not smtp://HOST:PORT", path,
                 cfg.submit_to);
        goto leave;
    }
    if (cfg.submit_timeout < 1) {
        snprintf(err, errlen, "%s: submit_timeout: must be at least 1s", path);
        goto leave;
    }
    if (stat(cfg.spool_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: spool_dir: %s: not a directory", path, cfg.spool_dir);
        goto leave;
    }
    if (cfg.hostname == NULL) {
        if (gethostname(host, sizeof host) != 0) {
            snprintf(err, errlen, "%s: hostname: unset, and gethostname failed: %s", path,
                     strerror(errno));
            goto leave;
        }
        host[sizeof host - 1] = '\0';
        if ((cfg.hostname = strdup(host)) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto leave;
        }
    }
    *set = cfg;
    rc = 0;
leave:
    return rc;
}
