/* sm_discover — who a domain is, for the milter and pollerd (libpq): the
 * admin's peer row overrides, else the _stubmail DNS record, through the
 * dns_cache table (dns_cache_get / dns_cache_put, sql/002).
 *
 * Precedence per field: peer.pulling decides pulling when a peer row exists
 * (else pulling = record found); peer.outbox_url and peer.fpr, when not NULL,
 * replace the record's outbox and fpr.
 *
 * DNS (cache first, then a live lookup whose FOUND/NONE/INVALID verdict is
 * stored with its TTL; a temporary failure never is) is consulted only when
 * the peer row leaves outbox or fpr open: a peer row with both needs no DNS,
 * so udp and policy stay "" for it. */
#ifndef SM_DISCOVER_H
#define SM_DISCOVER_H

#include <libpq-fe.h>

#include "sm_dns.h"

typedef struct sm_peer_info {
    sm_dns_status status;         /* of the DNS part (FOUND if the peer row alone
                                     supplies outbox and fpr) */
    int pulling;                  /* divert our mail to this domain */
    int from_peer_table;          /* a peer row exists */
    char outbox[SM_TXT_URL_MAX + 1];   /* "" if unknown */
    char fpr[SM_TXT_FPR_MAX + 1];      /* "" if unknown; uppercase */
    char udp[SM_TXT_UDP_MAX + 1];      /* "" if none */
    char policy[SM_TXT_POLICY_MAX + 1];
} sm_peer_info;

/* resolver as for sm_dns_lookup (NULL: system). domain in any case (it is
 * lowercased). Returns 0 with *out filled, or -1 with why when the answer is
 * not known now: database error or DNS temporary failure (the caller
 * tempfails / retries). A domain with no record and no peer row is 0 with
 * pulling = 0 and status NONE; a domain that is not a valid name is 0 with
 * status INVALID and no database or DNS query.
 *
 * One exception to "-1 on a DNS temporary failure": a peer row with pulling
 * = false is a definite answer for the milter (opted out: push by SMTP), so
 * it is 0 with status TEMPFAIL and only what the peer row gives. A caller
 * that needs outbox/fpr checks status == SM_DNS_TEMPFAIL.
 *
 * On 0, why is "" or, for NONE/INVALID, what DNS said (for a log line).
 * The dns_cache_put INSERT runs in the connection's current transaction:
 * a failure there aborts it. Blocking: a live DNS lookup costs up to about
 * SM_DNS_TIMEOUT * SM_DNS_TRIES seconds per name server. */
int sm_discover(PGconn *db, const char *resolver, const char *domain,
                sm_peer_info *out, char *why, size_t whylen);

#endif
