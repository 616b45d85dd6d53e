/* ctl_peer.c — the admin's overrides of discovery (table peer) and the
 * cached DNS verdicts (dns_cache). Every change fires sql/024's trigger, so
 * running milters forget what they kept about the domain. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_https.h"
#include "sm_pgp.h"
#include "ctl.h"

static const char SQL_PEER_LIST[] =
    "SELECT domain, pulling, outbox_url, fpr FROM peer ORDER BY domain";

/* The pin: where the domain's outbox is and which key is its, whatever DNS
 * says; it pulls. */
static const char SQL_PEER_PIN[] =
    "INSERT INTO peer (domain, outbox_url, pulling, fpr) VALUES ($1, $2, true, $3)"
    " ON CONFLICT (domain) DO UPDATE"
    "   SET outbox_url = EXCLUDED.outbox_url, pulling = true, fpr = EXCLUDED.fpr";

/* Opted out: our mail to it is pushed by SMTP, whatever DNS says. */
static const char SQL_PEER_OPTOUT[] =
    "INSERT INTO peer (domain, outbox_url, pulling, fpr) VALUES ($1, NULL, false, NULL)"
    " ON CONFLICT (domain) DO UPDATE SET pulling = false";

static const char SQL_PEER_REMOVE[] = "DELETE FROM peer WHERE domain = $1";

static const char SQL_DNS_LIST[] =
    "SELECT domain, status, outbox, udp, fpr, policy, why,"
    "       to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    "         AS expires"
    "  FROM dns_cache ORDER BY domain";

static const char SQL_DNS_FLUSH[] =
    "DELETE FROM dns_cache WHERE $1::text IS NULL OR domain = $1";

static int peer_list(ctl *c)
{
    PGresult *res = ctl_db_exec(c, "listing peers", SQL_PEER_LIST, 0, NULL);
    int rc = EX_TEMPFAIL;

    if (!res)
        goto leave;
    ctl_out_rows(c, res, "peer rows (every domain is found by DNS)");
    rc = EX_OK;
leave:
    PQclear(res);
    return rc;
}

static int peer_pin(ctl *c, char **argv)
{
    sm_https_opts opts = { c->conf.ca_file, c->conf.allow_http, 0 };
    char dom[256], fpr[SM_PGP_FPR_MAX + 1], why[512], text[1024];
    const char *p[3] = { dom, argv[2], fpr };
    long n;
    size_t i;
    int rc = EX_USAGE;

    if (ctl_arg_domain("domain", argv[1], dom) != 0)
        goto leave;
    if (sm_url_allowed(argv[2], &opts, why, sizeof why) != 0) {
        ctl_fail(EX_USAGE, "outbox URL \"%s\": %s", argv[2], why);
        goto leave;
    }
    if (!sm_pgp_fpr_valid(argv[3])) {
        ctl_fail(EX_USAGE, "fingerprint \"%s\" is not 40 or 64 hex digits", argv[3]);
        goto leave;
    }
    /* gpgme's spelling, as discovery compares it */
    for (i = 0; argv[3][i]; i++)
        fpr[i] = (char)(argv[3][i] >= 'a' && argv[3][i] <= 'f' ? argv[3][i] - 32 : argv[3][i]);
    fpr[i] = '\0';
    rc = EX_TEMPFAIL;
    if (ctl_db_change(c, "pinning a peer", SQL_PEER_PIN, 3, p, &n) != 0)
        goto leave;
    snprintf(text, sizeof text, "pinned %s: outbox %s, key %s (DNS is not asked for it)", dom,
             argv[2], fpr);
    ctl_out_done(c, text, "domain", dom, "outbox_url", argv[2], "fpr", fpr, NULL);
    rc = EX_OK;
leave:
    return rc;
}

/* optout and remove: one domain, one statement */
static int peer_change(ctl *c, const char *verb, const char *domain_arg)
{
    char dom[256], text[512];
    const char *p[1] = { dom };
    int optout = !strcmp(verb, "optout"), rc = EX_USAGE;
    long n;

    if (ctl_arg_domain("domain", domain_arg, dom) != 0)
        goto leave;
    rc = EX_TEMPFAIL;
    if (ctl_db_change(c, optout ? "opting a peer out" : "removing a peer",
                   optout ? SQL_PEER_OPTOUT : SQL_PEER_REMOVE, 1, p, &n) != 0)
        goto leave;
    if (n == 0) {
        rc = ctl_fail(1, "no peer row for %s", dom);
        goto leave;
    }
    snprintf(text, sizeof text, optout ? "opted out %s: our mail to it is pushed by SMTP"
             : "removed the peer row of %s: DNS decides again", dom);
    ctl_out_done(c, text, "domain", dom, NULL);
    rc = EX_OK;
leave:
    return rc;
}

int ctl_peer_main(ctl *c, int argc, char **argv)
{
    int rc = EX_USAGE;

    if (argc == 2 && !strcmp(argv[1], "list"))
        rc = peer_list(c);
    else if (argc == 5 && !strcmp(argv[1], "pin"))
        rc = peer_pin(c, argv + 1);
    else if (argc == 3 && (!strcmp(argv[1], "optout") || !strcmp(argv[1], "remove")))
        rc = peer_change(c, argv[1], argv[2]);
    return rc;
}

int ctl_dns_main(ctl *c, int argc, char **argv)
{
    char dom[256], text[512], count[32];
    const char *p[1] = { NULL };
    PGresult *res = NULL;
    int rc = EX_USAGE;
    long n;

    if (argc == 2 && !strcmp(argv[1], "list")) {
        rc = EX_TEMPFAIL;
        if (!(res = ctl_db_exec(c, "listing the DNS cache", SQL_DNS_LIST, 0, NULL)))
            goto leave;
        ctl_out_rows(c, res, "cached DNS answers");
        rc = EX_OK;
        goto leave;
    }
    if ((argc != 2 && argc != 3) || strcmp(argv[1], "flush"))
        goto leave;
    if (argc == 3) {
        if (ctl_arg_domain("domain", argv[2], dom) != 0)
            goto leave;
        p[0] = dom;
    }
    rc = EX_TEMPFAIL;
    if (ctl_db_change(c, "flushing the DNS cache", SQL_DNS_FLUSH, 1, p, &n) != 0)
        goto leave;
    snprintf(count, sizeof count, "%ld", n);
    snprintf(text, sizeof text, "flushed %ld cached answer%s%s%s: the next use asks DNS", n,
             n == 1 ? "" : "s", p[0] ? " for " : "", p[0] ? dom : "");
    ctl_out_done(c, text, "flushed", count, NULL);
    rc = EX_OK;
leave:
    PQclear(res);
    return rc;
}
