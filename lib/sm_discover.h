/* sm_discover — who a domain is: the admin's peer row overrides, else the
 * _stubmail DNS record, through a cache. Written once, over a small store
 * interface (peer row, cache get, cache put) that each program implements
 * on its own database handle: sm_discover_pq.c over libpq (milter,
 * pollerd), mod_stubmail's stubmail_discover.c over apr_dbd.
 *
 * Precedence per field: peer.pulling decides pulling when a peer row exists
 * (else pulling = record found); peer.outbox_url and peer.fpr, when not NULL,
 * replace the record's outbox and fpr.
 *
 * DNS (cache first, then a live lookup whose FOUND/NONE/INVALID verdict is
 * stored with its TTL; a temporary failure never is) is consulted only when
 * the peer row leaves open what the caller needs: outbox and fpr, or with
 * SM_DISCOVER_FPR_ONLY the fpr alone. A peer row that answers needs no DNS,
 * so udp and policy stay "" for it.
 *
 * DNSSEC: whether the answer was validated is cached with it. For a domain
 * that dns->dnssec_require names, a record that was not validated (live or
 * cached) is not used: status NONE, dnssec_refused set, why saying so. The
 * requirement is applied when the verdict is read, not when it is cached,
 * so a changed requirement holds at once. A bogus record never gets here:
 * a validating resolver answers it with SERVFAIL, a temporary failure. */
#ifndef SM_DISCOVER_H
#define SM_DISCOVER_H

#include <stddef.h>

#include "sm_dns.h"

typedef enum sm_peer_source {
    SM_PEER_FROM_PEER,         /* the peer row alone answered */
    SM_PEER_FROM_CACHE,        /* the cached DNS verdict */
    SM_PEER_FROM_DNS           /* a live lookup */
} sm_peer_source;

typedef struct sm_peer_info {
    sm_dns_status status;         /* of the DNS part (FOUND if the peer row alone
                                     supplies what was needed) */
    sm_peer_source source;        /* where status came from */
    int pulling;                  /* divert our mail to this domain */
    int from_peer_table;          /* a peer row exists */
    int validated;                /* the DNS part was DNSSEC-validated */
    int dnssec_refused;           /* a record was found but not validated, and
                                     validation is required for the domain:
                                     status is NONE, the record unused */
    char outbox[SM_TXT_URL_MAX + 1];   /* "" if unknown */
    char fpr[SM_TXT_FPR_MAX + 1];      /* "" if unknown; uppercase */
    char fpr_alt[SM_TXT_FPR_MAX + 1];  /* the record's fpr-alt during a key
                                          rotation, "" if none or pinned */
    char udp[SM_TXT_UDP_MAX + 1];      /* "" if none */
    char policy[SM_TXT_POLICY_MAX + 1];
} sm_peer_info;

/* A store: three calls over the caller's own database handle (baton).
 * domain is lowercase and valid. Each returns -1 with why on a database
 * error. */
typedef struct sm_discover_store {
    void *baton;
    /* The admin's row: 1 found (sets from_peer_table, outbox, fpr,
     * pulling; NULL columns as ""), 0 none. */
    int (*peer)(void *baton, const char *domain, sm_peer_info *out,
                char *why, size_t whylen);
    /* The cached verdict: 1 hit (*status; *validated; rec filled for FOUND;
     * for NONE and INVALID why gets the stored reason, "" if none), 0 miss. */
    int (*cache_get)(void *baton, const char *domain, sm_dns_status *status,
                     int *validated, sm_txt_record *rec, char *why, size_t whylen);
    /* Store a verdict (never TEMPFAIL) for ttl seconds (at most
     * SM_DISCOVER_TTL_MAX); dns_why is the
     * reason of a NONE or INVALID. 0 when stored. A store may report a
     * failed write as 0 (after logging it) when the answer should stand
     * anyway: the next caller asks DNS again. */
    int (*cache_put)(void *baton, const char *domain, sm_dns_status status,
                     int validated, const sm_txt_record *rec, const char *dns_why,
                     unsigned ttl, char *why, size_t whylen);
} sm_discover_store;

#define SM_DISCOVER_FPR_ONLY  1u   /* the caller needs the fpr alone (a login) */
#define SM_DISCOVER_TTL_MAX   86400u   /* a verdict is cached a day at most (the
                                          SQL function clamps as well) */

/* dns as for sm_dns_lookup, and its dnssec_require. domain in any case (it is
 * lowercased). Returns 0 with *out filled, or -1 with why when the answer is
 * not known now: out->status is SM_DNS_TEMPFAIL when DNS failed, anything
 * else when the store did (the caller tempfails / retries either way). A
 * domain with no record and no peer row is 0 with pulling = 0 and status
 * NONE; a domain that is not a valid name is 0 with status INVALID and no
 * store or DNS query.
 *
 * One exception to "-1 on a DNS temporary failure": a peer row with pulling
 * = false is a definite answer for the milter (opted out: push by SMTP), so
 * it is 0 with status TEMPFAIL and only what the peer row gives. A caller
 * that needs outbox/fpr checks status == SM_DNS_TEMPFAIL.
 *
 * On 0, why is "" or, for NONE/INVALID, what DNS said (for a log line).
 * Blocking: a live DNS lookup costs up to about SM_DNS_TIMEOUT *
 * SM_DNS_TRIES seconds per name server. */
int sm_discover_run(const sm_discover_store *store, const sm_dns_conf *dns, const char *domain,
                    unsigned flags, sm_peer_info *out, char *why, size_t whylen);

/* "peer", "DNS (cached)", "DNS": for log lines */
const char *sm_peer_source_name(sm_peer_source source);

#endif
