/*
 * NAME
 *	stubmail_discover - a polling domain's published key fingerprint
 *
 * DESCRIPTION
 *	peer.fpr when the admin pinned one; else the cached _stubmail answer
 *	(dns_cache_get); else a live lookup through StubmailResolver whose
 *	definite answer (found, none, invalid) goes into the cache with its
 *	TTL (dns_cache_put, at most a day). A temporary DNS failure is never
 *	cached. The answer stands even if it cannot be cached: the next login
 *	asks DNS again.
 *
 * DIAGNOSTICS
 *	A failed cache write at warn; the reasons for no fingerprint go back
 *	to the caller, which logs them with the refused login.
 */

#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "apr_strings.h"

#include "sm_dns.h"
#include "stubmail_db.h"
#include "stubmail_discover.h"

APLOG_USE_MODULE(stubmail);

/* Cache what DNS said about domain (not a temporary failure). */
static void stubmail_dns_put(stubmail_req *q, const char *domain, sm_dns_status st,
                             const sm_txt_record *rec, const char *dns_why,
                             unsigned ttl_s)
{
    const char *args[8];
    char ttl[16];

    apr_snprintf(ttl, sizeof(ttl), "%u", ttl_s > 86400 ? 86400 : ttl_s);
    args[0] = domain;
    args[1] = sm_dns_status_name(st);
    args[2] = st == SM_DNS_FOUND ? rec->outbox : "";
    args[3] = st == SM_DNS_FOUND ? rec->udp : "";
    args[4] = st == SM_DNS_FOUND ? rec->fpr : "";
    args[5] = st == SM_DNS_FOUND ? rec->policy : "";
    args[6] = st == SM_DNS_FOUND ? "" : dns_why;
    args[7] = ttl;
    if (stubmail_db_first_row(q, STMT_DNS_PUT, 8, args, 0, NULL) < 0)
        SMLOG(q, APLOG_WARNING, 0, "could not cache the _stubmail answer for %s", domain);
}

int stubmail_domain_fpr(stubmail_req *q, const char *domain, char *fpr,
                        const char **source, const char **why)
{
    request_rec *r = q->r;
    const char *args[1], *cols[3];      /* status, fpr, why */
    char dns_why[256];
    sm_txt_record rec;
    sm_dns_status st;
    unsigned ttl_s = 0;

    args[0] = domain;
    switch (stubmail_db_first_row(q, STMT_PEER_FPR, 1, args, 1, cols)) {
    case 1:
        if (*cols[0] == '\0')
            break;
        apr_cpystrn(fpr, cols[0], SM_PGP_FPR_MAX + 1);
        *source = "peer.fpr";
        return STUBMAIL_FPR_FOUND;
    case 0:
        break;
    default:
        return STUBMAIL_FPR_DB_ERROR;
    }

    switch (stubmail_db_first_row(q, STMT_DNS_GET, 1, args, 3, cols)) {
    case 1:
        if (strcmp(cols[0], "found") == 0 && *cols[1]) {
            apr_cpystrn(fpr, cols[1], SM_PGP_FPR_MAX + 1);
            *source = "DNS (cached)";
            return STUBMAIL_FPR_FOUND;
        }
        *why = apr_psprintf(r->pool, "_stubmail record %s (cached): %s", cols[0],
                            *cols[2] ? cols[2] : "-");
        return STUBMAIL_FPR_UNKNOWN;
    case 0:
        break;
    default:
        return STUBMAIL_FPR_DB_ERROR;
    }

    st = sm_dns_lookup(q->conf->resolver, domain, &rec, &ttl_s, dns_why, sizeof(dns_why));
    if (st == SM_DNS_TEMPFAIL) {
        *why = apr_psprintf(r->pool, "DNS lookup of _stubmail.%s failed: %s", domain,
                            dns_why);
        return STUBMAIL_FPR_DNS_TEMPFAIL;
    }
    stubmail_dns_put(q, domain, st, &rec, dns_why, ttl_s);
    if (st != SM_DNS_FOUND) {
        *why = apr_psprintf(r->pool, "_stubmail record %s: %s", sm_dns_status_name(st),
                            dns_why);
        return STUBMAIL_FPR_UNKNOWN;
    }
    apr_cpystrn(fpr, rec.fpr, SM_PGP_FPR_MAX + 1);
    *source = "DNS";
    return STUBMAIL_FPR_FOUND;
}
