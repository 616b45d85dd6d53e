/* sm_discover — the peer row, then the DNS record through dns_cache.
 *
 * The TTL policy (at least 60 s, at most a day) lives in the SQL function
 * dns_cache_put, so the milter, pollerd and mod_stubmail cache alike; this
 * file only decides what to store: FOUND, NONE and INVALID with the TTL DNS
 * gave, never a temporary failure (the next caller asks DNS again). */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "sm_addr.h"
#include "sm_discover.h"

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

static void upcase(char *s)
{
    for (; *s; s++)
        *s = (char)toupper((unsigned char)*s);
}

/* The admin's row: 1 found, 0 none, -1 database error. */
static int peer_row(PGconn *db, const char *domain, sm_peer_info *out, char *why, size_t whylen)
{
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
        upcase(out->fpr);
        out->pulling = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    }
leave:
    PQclear(res);
    return rc;
}

/* The record as cached: 1 hit (rec/status filled), 0 miss, -1 error. */
static int cache_get(PGconn *db, const char *domain, sm_dns_status *status, sm_txt_record *rec,
                     char *why, size_t whylen)
{
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
        sm_why(why, whylen, "%s (cached)", PQgetisnull(res, 0, 5) ? st : PQgetvalue(res, 0, 5));
    }
leave:
    PQclear(res);
    return rc;
}

static int cache_put(PGconn *db, const char *domain, sm_dns_status status,
                     const sm_txt_record *rec, const char *dns_why, unsigned ttl,
                     char *why, size_t whylen)
{
    char ttl_text[16];
    const char *found = status == SM_DNS_FOUND ? "" : NULL;
    const char *params[8];
    PGresult *res;
    int rc = -1;

    /* the SQL function clamps; keep the text a valid integer either way */
    snprintf(ttl_text, sizeof ttl_text, "%u", ttl > 86400u ? 86400u : ttl);
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
    char name[SM_DOMAIN_MAX + 1], dns_why[256] = "";
    sm_txt_record rec;
    sm_dns_status status = SM_DNS_NONE;
    unsigned ttl = 0;
    size_t i, n;
    int rc = -1, hit;

    memset(out, 0, sizeof *out);
    memset(&rec, 0, sizeof rec);
    if (why && whylen)
        why[0] = '\0';
    n = domain ? strlen(domain) : 0;
    if (n == 0 || n > SM_DOMAIN_MAX || !sm_domain_valid(domain)) {
        /* nothing to look up, nothing worth caching */
        out->status = SM_DNS_INVALID;
        sm_why(why, whylen, "not a domain name");
        rc = 0;
        goto leave;
    }
    for (i = 0; i <= n; i++)
        name[i] = (char)tolower((unsigned char)domain[i]);

    if (peer_row(db, name, out, why, whylen) < 0)
        goto leave;
    if (out->from_peer_table && out->outbox[0] && out->fpr[0]) {
        out->status = SM_DNS_FOUND;
        rc = 0;
        goto leave;
    }

    if ((hit = cache_get(db, name, &status, &rec, dns_why, sizeof dns_why)) < 0) {
        sm_why(why, whylen, "%s", dns_why);
        goto leave;
    }
    if (!hit) {
        status = sm_dns_lookup(resolver, name, &rec, &ttl, dns_why, sizeof dns_why);
        if (status == SM_DNS_TEMPFAIL) {
            out->status = SM_DNS_TEMPFAIL;
            sm_why(why, whylen, "%s: DNS temporary failure: %s", name, dns_why);
            if (out->from_peer_table && !out->pulling)
                rc = 0;     /* opted out: the milter needs nothing more */
            goto leave;
        }
        if (cache_put(db, name, status, &rec, dns_why, ttl, why, whylen) != 0)
            goto leave;
    }

    out->status = status;
    if (!out->from_peer_table)
        out->pulling = status == SM_DNS_FOUND;
    if (status == SM_DNS_FOUND) {
        if (!out->outbox[0])
            strcpy(out->outbox, rec.outbox);
        if (!out->fpr[0])
            strcpy(out->fpr, rec.fpr);
        strcpy(out->udp, rec.udp);
        strcpy(out->policy, rec.policy);
    } else {
        sm_why(why, whylen, "%s", dns_why);
    }
    rc = 0;
leave:
    return rc;
}
