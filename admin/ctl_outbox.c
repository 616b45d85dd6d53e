/* ctl_outbox.c — the sender's side at a glance: what waits in the outbox,
 * what was retrieved or rejected, what is stuck (waiting longer than
 * --stuck, default a day: the polling domain may be down or have lost its
 * subscription), the oldest waiting, and per sender the quota use.
 *
 *   outbox                 one row per recipient domain
 *   outbox --domain D      that recipient domain
 *   outbox USER            that sender, with its quota use (sql/011's
 *                          sender_usage, the milter's own count)
 *
 * Counts are outbox rows (one per message and recipient); "waiting" is
 * sql/011's rule: not retrieved and the body still kept. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_conf.h"
#include "ctl.h"

#define COUNTS(stuck) \
    "count(*) FILTER (WHERE o.retrieved_at IS NULL AND m.body_deleted_at IS NULL) AS waiting," \
    " count(*) FILTER (WHERE o.retrieved_at IS NOT NULL AND o.rejected_reason IS NULL" \
    "                  AND o.recalled_at IS NULL) AS retrieved," \
    " count(*) FILTER (WHERE o.rejected_reason IS NOT NULL) AS rejected," \
    " count(*) FILTER (WHERE o.retrieved_at IS NULL AND m.body_deleted_at IS NULL" \
    "                  AND m.created_at < now() - make_interval(secs => " stuck ")) AS stuck," \
    " to_char(min(m.created_at) FILTER (WHERE o.retrieved_at IS NULL" \
    "                                    AND m.body_deleted_at IS NULL)" \
    "         AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS oldest"

/* $1 recipient domain or NULL, $2 --stuck in seconds */
static const char SQL_BY_DOMAIN[] =
    "SELECT o.recipient_domain AS domain, " COUNTS("$2::double precision")
    "  FROM outbox o JOIN message m ON m.id = o.message_id"
    " WHERE $1::text IS NULL OR o.recipient_domain = $1"
    " GROUP BY o.recipient_domain ORDER BY o.recipient_domain";

/* $1 sender, $2 --stuck in seconds; a sender with nothing stored still
 * gets its row (and its quota override, if any) */
static const char SQL_BY_SENDER[] =
    "SELECT $1::text AS sender, c.waiting, c.retrieved, c.rejected, c.stuck, c.oldest,"
    "       coalesce(u.messages, 0) AS quota_messages, coalesce(u.bytes, 0) AS quota_bytes,"
    "       u.max_messages, u.max_bytes"
    "  FROM (SELECT " COUNTS("$2::double precision")
    "          FROM outbox o JOIN message m ON m.id = o.message_id"
    "         WHERE m.sender = $1) c"
    "  LEFT JOIN sender_usage u ON u.sender = $1";

int ctl_outbox_main(ctl *c, int argc, char **argv)
{
    const sm_conf_key stuck_key = { "--stuck", SM_CONF_SECONDS, NULL, NULL, NULL };
    char dom[256], sender[SM_ADDR_MAX + 1], secs[32], err[256];
    const char *p[2] = { NULL, secs }, *sql = SQL_BY_DOMAIN;
    sm_conf_key k = stuck_key;
    long stuck = 86400;
    PGresult *res = NULL;
    int i, rc = EX_USAGE;

    k.dst = &stuck;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--domain") && i + 1 < argc && !p[0]) {
            if (ctl_arg_domain("domain", argv[++i], dom) != 0)
                goto leave;
            p[0] = dom;
        } else if (!strcmp(argv[i], "--stuck") && i + 1 < argc) {
            if (sm_conf_set(&k, argv[++i], err, sizeof err) != 0) {
                rc = ctl_fail(EX_USAGE, "--stuck \"%s\": %s", argv[i], err);
                goto leave;
            }
        } else if (argv[i][0] != '-' && !p[0]) {
            if (ctl_arg_addr("user", argv[i], sender) != 0)
                goto leave;
            p[0] = sender;
            sql = SQL_BY_SENDER;
        } else {
            goto leave;
        }
    }
    snprintf(secs, sizeof secs, "%ld", stuck);
    rc = EX_TEMPFAIL;
    if (!(res = ctl_db_exec(c, "reading the outbox", sql, 2, p)))
        goto leave;
    ctl_out_rows(c, res, "mail in the outbox");
    rc = EX_OK;
leave:
    PQclear(res);
    return rc;
}
