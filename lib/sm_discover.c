/* sm_discover — the peer row, then the DNS record through the store's cache.
 *
 * The TTL policy (at least 60 s, at most a day) lives in the SQL function
 * dns_cache_put, so every program caches alike; this file only decides what
 * to store: FOUND, NONE and INVALID with the TTL DNS gave, never a temporary
 * failure (the next caller asks DNS again). */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sm_log.h"
#include "sm_addr.h"
#include "sm_discover.h"
#include "sm_dnssec.h"

const char *sm_peer_source_name(sm_peer_source source)
{
    switch (source) {
    case SM_PEER_FROM_PEER:  return "peer";
    case SM_PEER_FROM_CACHE: return "DNS (cached)";
    case SM_PEER_FROM_DNS:   return "DNS";
    }
    return "?";
}

/* The peer row answers alone when it has what the caller needs. */
static int peer_is_enough(const sm_peer_info *out, unsigned flags)
{
    if (!out->from_peer_table || !out->fpr[0])
        return 0;
    return (flags & SM_DISCOVER_FPR_ONLY) || out->outbox[0];
}

int sm_discover_run(const sm_discover_store *store, const sm_dns_conf *dns, const char *domain,
                    unsigned flags, sm_peer_info *out, char *why, size_t whylen)
{
    char name[SM_DOMAIN_MAX + 1], dns_why[768] = "";
    sm_txt_record rec;
    sm_dns_status status = SM_DNS_NONE;
    unsigned ttl = 0;
    size_t i, n;
    int rc = -1, hit, validated = 0;

    memset(out, 0, sizeof *out);
    memset(&rec, 0, sizeof rec);
    out->status = SM_DNS_NONE;
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

    if (store->peer(store->baton, name, out, why, whylen) < 0)
        goto leave;
    for (i = 0; out->fpr[i]; i++)       /* gpgme's spelling, whatever the admin typed */
        out->fpr[i] = (char)toupper((unsigned char)out->fpr[i]);
    if (peer_is_enough(out, flags)) {
        out->status = SM_DNS_FOUND;
        out->source = SM_PEER_FROM_PEER;
        rc = 0;
        goto leave;
    }

    out->source = SM_PEER_FROM_CACHE;
    if ((hit = store->cache_get(store->baton, name, &status, &validated, &rec, dns_why,
                                sizeof dns_why)) < 0) {
        sm_why(why, whylen, "%s", dns_why);
        goto leave;
    }
    if (hit && status != SM_DNS_FOUND) {
        char cached[sizeof dns_why];

        snprintf(cached, sizeof cached, "%s (cached)",
                 dns_why[0] ? dns_why : sm_dns_status_name(status));
        strcpy(dns_why, cached);
    }
    if (!hit) {
        out->source = SM_PEER_FROM_DNS;
        status = sm_dns_lookup(dns, name, &rec, &ttl, &validated, dns_why, sizeof dns_why);
        if (status == SM_DNS_TEMPFAIL) {
            out->status = SM_DNS_TEMPFAIL;
            sm_why(why, whylen, "%s: DNS temporary failure: %s", name, dns_why);
            if (out->from_peer_table && !out->pulling)
                rc = 0;     /* opted out: the milter needs nothing more */
            goto leave;
        }
        if (ttl > SM_DISCOVER_TTL_MAX)
            ttl = SM_DISCOVER_TTL_MAX;
        if (store->cache_put(store->baton, name, status, validated, &rec, dns_why, ttl, why,
                             whylen) != 0)
            goto leave;
    }

    out->validated = validated;
    if (status == SM_DNS_FOUND && !validated && sm_dnssec_required(dns->dnssec_require, name)) {
        /* as if there were no record: the fingerprint is the trust anchor of
         * the domain's key, and an unvalidated one may be anybody's. A live
         * answer's why says why it was not validated; the cache keeps no
         * why for a record. */
        if (hit)
            snprintf(dns_why, sizeof dns_why, "_stubmail.%s: not DNSSEC-validated (cached)",
                     name);
        snprintf(dns_why + strlen(dns_why), sizeof dns_why - strlen(dns_why),
                 ", and validation is required for %s: record not used", name);
        out->dnssec_refused = 1;
        status = SM_DNS_NONE;
    }
    out->status = status;
    if (!out->from_peer_table)
        out->pulling = status == SM_DNS_FOUND;
    if (status == SM_DNS_FOUND) {
        if (!out->outbox[0])
            strcpy(out->outbox, rec.outbox);
        if (!out->fpr[0]) {
            /* a pinned fpr names one key: the record's second one only
             * stands beside the record's own */
            strcpy(out->fpr, rec.fpr);
            strcpy(out->fpr_alt, rec.fpr_alt);
        }
        strcpy(out->udp, rec.udp);
        strcpy(out->policy, rec.policy);
    } else {
        sm_why(why, whylen, "%s", dns_why);
    }
    rc = 0;
leave:
    return rc;
}
