/*
 * NAME
 *	stubmail_discover - the discovery store over mod_dbd
 *
 * DESCRIPTION
 *	The three calls of lib's sm_discover_store (sm_discover.h), each one
 *	prepared statement on the request's pooled connection: the admin's
 *	peer row, the cached _stubmail verdict (dns_cache_get) and storing a
 *	new one (dns_cache_put, which keeps the TTL policy shared with the
 *	milter and pollerd), each with whether DNSSEC validated it (sql/019). The libpq store of the milter and pollerd is
 *	lib/sm_discover_pq.c; precedence, DNS and what gets cached are
 *	sm_discover_run's, written once.
 *
 * DIAGNOSTICS
 *	A failed statement is logged by stubmail_db.c; a failed cache write
 *	at warn as well, and then not reported as a failure.
 */

#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "apr_strings.h"

#include "sm_log.h"
#include "stubmail_db.h"
#include "stubmail_discover.h"

APLOG_USE_MODULE(stubmail);

/* A column into a fixed buffer; an overlong value (which neither a parsed
 * record nor the tables' CHECKs let through) becomes "". */
static void stubmail_copy_col(char *dst, size_t dstlen, const char *v)
{
    apr_cpystrn(dst, strlen(v) < dstlen ? v : "", dstlen);
}

enum { PEER_OUTBOX, PEER_FPR, PEER_PULLING, PEER_NCOLS };

static int stubmail_peer_row(void *baton, const char *domain, sm_peer_info *out,
                             char *why, size_t whylen)
{
    stubmail_req *q = baton;
    const char *args[1] = { domain }, *cols[PEER_NCOLS];
    int rc = stubmail_db_first_row(q, STMT_PEER, 1, args, PEER_NCOLS, cols);

    if (rc < 0) {
        sm_why(why, whylen, "%s: reading peer failed", domain);
        return -1;
    }
    if (rc == 1) {
        out->from_peer_table = 1;
        stubmail_copy_col(out->outbox, sizeof(out->outbox), cols[PEER_OUTBOX]);
        stubmail_copy_col(out->fpr, sizeof(out->fpr), cols[PEER_FPR]);
        out->pulling = strcmp(cols[PEER_PULLING], "t") == 0;
    }
    return rc;
}

enum { CACHE_STATUS, CACHE_OUTBOX, CACHE_UDP, CACHE_FPR, CACHE_POLICY, CACHE_WHY,
       CACHE_VALIDATED, CACHE_FPR_ALT, CACHE_NCOLS };

static int stubmail_cache_get(void *baton, const char *domain, sm_dns_status *status,
                              int *validated, sm_txt_record *rec, char *why, size_t whylen)
{
    stubmail_req *q = baton;
    const char *args[1] = { domain }, *cols[CACHE_NCOLS];
    int rc = stubmail_db_first_row(q, STMT_DNS_GET, 1, args, CACHE_NCOLS, cols);

    if (rc < 0) {
        sm_why(why, whylen, "%s: reading dns_cache failed", domain);
        return -1;
    }
    if (rc == 0)
        return 0;
    *validated = strcmp(cols[CACHE_VALIDATED], "t") == 0;
    if (strcmp(cols[CACHE_STATUS], "found") == 0) {
        *status = SM_DNS_FOUND;
        stubmail_copy_col(rec->outbox, sizeof(rec->outbox), cols[CACHE_OUTBOX]);
        stubmail_copy_col(rec->udp, sizeof(rec->udp), cols[CACHE_UDP]);
        stubmail_copy_col(rec->fpr, sizeof(rec->fpr), cols[CACHE_FPR]);
        stubmail_copy_col(rec->fpr_alt, sizeof(rec->fpr_alt), cols[CACHE_FPR_ALT]);
        stubmail_copy_col(rec->policy, sizeof(rec->policy), cols[CACHE_POLICY]);
    }
    else {
        /* the table's CHECK allows only found, none, invalid */
        *status = strcmp(cols[CACHE_STATUS], "none") == 0 ? SM_DNS_NONE : SM_DNS_INVALID;
        sm_why(why, whylen, "%s", cols[CACHE_WHY]);
    }
    return 1;
}

static int stubmail_cache_put(void *baton, const char *domain, sm_dns_status status,
                              int validated, const sm_txt_record *rec, const char *dns_why,
                              unsigned ttl, char *why, size_t whylen)
{
    stubmail_req *q = baton;
    int found = status == SM_DNS_FOUND;
    const char *args[10];
    char ttl_text[16];

    (void)why;
    (void)whylen;
    apr_snprintf(ttl_text, sizeof(ttl_text), "%u", ttl);
    args[0] = domain;
    args[1] = sm_dns_status_name(status);
    args[2] = found ? rec->outbox : "";         /* '' stands for NULL */
    args[3] = found ? rec->udp : "";
    args[4] = found ? rec->fpr : "";
    args[5] = found ? rec->policy : "";
    args[6] = found ? "" : dns_why;
    args[7] = ttl_text;
    args[8] = validated ? "true" : "false";
    args[9] = found ? rec->fpr_alt : "";
    if (stubmail_db_first_row(q, STMT_DNS_PUT, 10, args, 0, NULL) < 0)
        SMLOG(q, APLOG_WARNING, 0, "could not cache the _stubmail answer for %s", domain);
    return 0;
}

void stubmail_discover_store(stubmail_req *q, sm_discover_store *store)
{
    store->baton = q;
    store->peer = stubmail_peer_row;
    store->cache_get = stubmail_cache_get;
    store->cache_put = stubmail_cache_put;
}
