/* sm_discover_pq — the discovery store over libpq (milter, pollerd): the
 * peer table and the dns_cache functions of sql/002 (sql/019: with whether
 * the answer was DNSSEC-validated). The dns_cache_put
 * INSERT runs in the connection's current transaction: a failure there
 * aborts it, and the caller sees -1.
 *
 * The peer row and the cached verdict come back from one call,
 * discovery_get() of sql/009, made for the peer row: sm_discover_run asks
 * for the cache only after the peer, and a round trip to the server cost
 * the milter more than reading a cache row it may not need
 * (docs/BENCHMARKS.md). cache_get answers from that row. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sm_log.h"
#include "sm_discover_pq.h"

/* one row, whatever is there (sql/009): the peer's columns, then the cached
 * verdict's (status NULL when nothing unexpired is cached) */
static const char SQL_PEER_AND_CACHE[] =
    "SELECT peer_outbox_url, peer_fpr, peer_pulling, peer_found,"
    " status, outbox, udp, fpr, policy, why, validated, fpr_alt FROM discovery_get($1)";
/* sql/019: validated; sql/025: fpr_alt last */
enum { COL_PEER_OUTBOX, COL_PEER_FPR, COL_PEER_PULLING, COL_PEER_FOUND, COL_STATUS, COL_OUTBOX,
       COL_UDP, COL_FPR, COL_POLICY, COL_WHY, COL_VALIDATED, COL_FPR_ALT };
static const char SQL_CACHE_PUT[] =
    "SELECT dns_cache_put($1, $2, $3, $4, $5, $6, $7, $8, $9::boolean, $10)";

/* The store's baton: the connection, and the row of SQL_PEER_AND_CACHE
 * that peer_row read, which cache_get answers from. */
typedef struct pq_store {
    PGconn *db;
    PGresult *row;
} pq_store;

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
    pq_store *st = baton;
    const char *params[1] = { domain };
    PGresult *res = PQexecParams(st->db, SQL_PEER_AND_CACHE, 1, NULL, params, NULL, NULL, 0);
    int rc = -1;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        sm_why(why, whylen, "%s: reading peer and dns_cache: %s", domain,
               PQresultStatus(res) == PGRES_TUPLES_OK ? "not one row" : PQerrorMessage(st->db));
        PQclear(res);
        goto leave;
    }
    rc = strcmp(PQgetvalue(res, 0, COL_PEER_FOUND), "t") == 0;
    if (rc) {
        out->from_peer_table = 1;
        copy_col(res, COL_PEER_OUTBOX, out->outbox, sizeof out->outbox);
        copy_col(res, COL_PEER_FPR, out->fpr, sizeof out->fpr);
        out->pulling = strcmp(PQgetvalue(res, 0, COL_PEER_PULLING), "t") == 0;
    }
    PQclear(st->row);
    st->row = res;
leave:
    return rc;
}

/* The record as cached: 1 hit (rec/status filled), 0 miss; from the row
 * peer_row read (sm_discover_run asks for the peer first). */
static int cache_get(void *baton, const char *domain, sm_dns_status *status, int *validated,
                     sm_txt_record *rec, char *why, size_t whylen)
{
    pq_store *st = baton;
    const PGresult *res = st->row;
    const char *v;

    (void)domain;
    if (PQgetisnull(res, 0, COL_STATUS))
        return 0;
    v = PQgetvalue(res, 0, COL_STATUS);
    *validated = strcmp(PQgetvalue(res, 0, COL_VALIDATED), "t") == 0;
    if (strcmp(v, "found") == 0) {
        *status = SM_DNS_FOUND;
        copy_col(res, COL_OUTBOX, rec->outbox, sizeof rec->outbox);
        copy_col(res, COL_UDP, rec->udp, sizeof rec->udp);
        copy_col(res, COL_FPR, rec->fpr, sizeof rec->fpr);
        copy_col(res, COL_FPR_ALT, rec->fpr_alt, sizeof rec->fpr_alt);
        copy_col(res, COL_POLICY, rec->policy, sizeof rec->policy);
    } else {
        /* the table's CHECK allows only found, none, invalid */
        *status = strcmp(v, "none") == 0 ? SM_DNS_NONE : SM_DNS_INVALID;
        sm_why(why, whylen, "%s", PQgetisnull(res, 0, COL_WHY) ? "" : PQgetvalue(res, 0, COL_WHY));
    }
    return 1;
}

static int cache_put(void *baton, const char *domain, sm_dns_status status, int validated,
                     const sm_txt_record *rec, const char *dns_why, unsigned ttl,
                     char *why, size_t whylen)
{
    PGconn *db = ((pq_store *)baton)->db;
    char ttl_text[16];
    const char *found = status == SM_DNS_FOUND ? "" : NULL;
    const char *params[10];
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
    params[8] = validated ? "true" : "false";
    params[9] = found && rec->fpr_alt[0] ? rec->fpr_alt : NULL;
    res = PQexecParams(db, SQL_CACHE_PUT, 10, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        sm_why(why, whylen, "%s: writing dns_cache: %s", domain, PQerrorMessage(db));
        goto leave;
    }
    rc = 0;
leave:
    PQclear(res);
    return rc;
}

int sm_discover(PGconn *db, const sm_dns_conf *dns, const char *domain,
                sm_peer_info *out, char *why, size_t whylen)
{
    pq_store st = { db, NULL };
    const sm_discover_store store = { &st, peer_row, cache_get, cache_put };
    int rc = sm_discover_run(&store, dns, domain, 0, out, why, whylen);

    PQclear(st.row);
    return rc;
}
