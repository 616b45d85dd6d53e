/* sm_discover_pq — the discovery store over libpq (milter, pollerd): the
 * peer table and the dns_cache functions of sql/002. The dns_cache_put
 * INSERT runs in the connection's current transaction: a failure there
 * aborts it, and the caller sees -1. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sm_log.h"
#include "sm_discover_pq.h"

static const char SQL_PEER[] =
    "SELECT outbox_url, fpr, pulling FROM peer WHERE domain = $1";
static const char SQL_CACHE_GET[] =
    "SELECT status, outbox, udp, fpr, policy, why FROM dns_cache_get($1)";
static const char SQL_CACHE_PUT[] =
    "SELECT dns_cache_put($1, $2, $3, $4, $5, $6, $7, $8)";

/* Copy a column into a fixed buffer; NULL and overlong values become "" (an
 * overlong one cannot come from a parsed record or the peer CHECKs). */
static void copy_col(const PGresult *res, int col, char *dst, size_t dstlen)
{
    const char *v = PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col);

    if (strlen(v) >= dstlen)
        v = "";
    strcpy(dst, v);
}

/* The admin's row: 1 found, 0 none, -1 database error. */
static int peer_row(void *baton, const char *domain, sm_peer_info *out, char *why, size_t whylen)
{
    PGconn *db = baton;
    const char *params[1] = { domain };
    PGresult *res = PQexecParams(db, SQL_PEER, 1, NULL, params, NULL, NULL, 0);
    int rc = -1;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        sm_why(why, whylen, "%s: reading peer: %s", domain, PQerrorMessage(db));
        goto leave;
    }
    rc = PQntuples(res) > 0;
    if (rc) {
        out->from_peer_table = 1;
        copy_col(res, 0, out->outbox, sizeof out->outbox);
        copy_col(res, 1, out->fpr, sizeof out->fpr);
        out->pulling = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    }
leave:
    PQclear(res);
    return rc;
}

/* The record as cached: 1 hit (rec/status filled), 0 miss, -1 error. */
static int cache_get(void *baton, const char *domain, sm_dns_status *status, sm_txt_record *rec,
                     char *why, size_t whylen)
{
    PGconn *db = baton;
    const char *params[1] = { domain };
    PGresult *res = PQexecParams(db, SQL_CACHE_GET, 1, NULL, params, NULL, NULL, 0);
    const char *st;
    int rc = -1;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        sm_why(why, whylen, "%s: reading dns_cache: %s", domain, PQerrorMessage(db));
        goto leave;
    }
    rc = 0;
    if (PQntuples(res) == 0)
        goto leave;
    st = PQgetvalue(res, 0, 0);
    rc = 1;
    if (strcmp(st, "found") == 0) {
        *status = SM_DNS_FOUND;
        copy_col(res, 1, rec->outbox, sizeof rec->outbox);
        copy_col(res, 2, rec->udp, sizeof rec->udp);
        copy_col(res, 3, rec->fpr, sizeof rec->fpr);
        copy_col(res, 4, rec->policy, sizeof rec->policy);
    } else {
        /* the table's CHECK allows only found, none, invalid */
        *status = strcmp(st, "none") == 0 ? SM_DNS_NONE : SM_DNS_INVALID;
        sm_why(why, whylen, "%s", PQgetisnull(res, 0, 5) ? "" : PQgetvalue(res, 0, 5));
    }
leave:
    PQclear(res);
    return rc;
}

static int cache_put(void *baton, const char *domain, sm_dns_status status,
                     const sm_txt_record *rec, const char *dns_why, unsigned ttl,
                     char *why, size_t whylen)
{
    PGconn *db = baton;
    char ttl_text[16];
    const char *found = status == SM_DNS_FOUND ? "" : NULL;
    const char *params[8];
    PGresult *res;
    int rc = -1;

    snprintf(ttl_text, sizeof ttl_text, "%u", ttl);
    params[0] = domain;
    params[1] = sm_dns_status_name(status);
    params[2] = found ? rec->outbox : NULL;
    params[3] = found && rec->udp[0] ? rec->udp : NULL;
    params[4] = found ? rec->fpr : NULL;
    params[5] = found ? rec->policy : NULL;
    params[6] = found ? NULL : dns_why;
    params[7] = ttl_text;
    res = PQexecParams(db, SQL_CACHE_PUT, 8, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        sm_why(why, whylen, "%s: writing dns_cache: %s", domain, PQerrorMessage(db));
        goto leave;
    }
    rc = 0;
leave:
    PQclear(res);
    return rc;
}

int sm_discover(PGconn *db, const char *resolver, const char *domain,
                sm_peer_info *out, char *why, size_t whylen)
{
    const sm_discover_store store = { db, peer_row, cache_get, cache_put };

    return sm_discover_run(&store, resolver, domain, 0, out, why, whylen);
}
