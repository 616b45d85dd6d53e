/* sm_dns — looking up the _stubmail TXT record (its grammar: sm_txt.h).
 *
 * Lookup: class IN, type TXT at _stubmail.<domain> (CNAMEs followed). A TXT
 * record with several strings is their concatenation (RFC 7208 3.3). A TXT
 * record is a stubmail record if it starts, after optional blanks, with
 * "v", optional blanks, "=", optional blanks, "stubmail1", then ";", a blank
 * or its end; all others are ignored. More than one stubmail record makes
 * the answer ambiguous (invalid).
 */
#ifndef SM_DNS_H
#define SM_DNS_H

#include <stddef.h>

#include "sm_txt.h"

#define SM_DNS_NEG_TTL     300u  /* negative answer without an SOA */
#define SM_DNS_TIMEOUT       1   /* seconds per try ...          */
#define SM_DNS_TRIES         2   /* ... so a dead resolver costs ~2 s */

typedef enum sm_dns_status {
    SM_DNS_FOUND,     /* rec filled; ttl = the TXT RRset's TTL */
    SM_DNS_NONE,      /* NXDOMAIN, NODATA or no stubmail record: not pulling */
    SM_DNS_TEMPFAIL,  /* SERVFAIL, REFUSED, timeout, network, malformed answer */
    SM_DNS_INVALID    /* a stubmail record that does not parse, or several;
                         or the domain is not a valid name (ttl 0) */
} sm_dns_status;

/* Look up _stubmail.<domain>. resolver is "IP:PORT" or NULL for the system
 * resolver (/etc/resolv.conf). Thread-safe (per-call resolver state).
 * On return *rec is filled only for SM_DNS_FOUND (zeroed otherwise); *ttl is
 * how long the verdict may be cached: the RRset's TTL for FOUND and INVALID
 * and for NONE when TXT records exist but none is ours, the negative-caching
 * TTL (RFC 2308: min of the SOA's TTL and MINIMUM, else SM_DNS_NEG_TTL) for
 * NXDOMAIN and NODATA, 0 for TEMPFAIL. why (may be NULL) says what happened,
 * for logs. A resolver that does not answer fails after about
 * SM_DNS_TIMEOUT * SM_DNS_TRIES seconds per configured name server. */
sm_dns_status sm_dns_lookup(const char *resolver, const char *domain, sm_txt_record *rec,
                            unsigned *ttl, char *why, size_t whylen);

/* The answer-handling half of sm_dns_lookup, separate so that tests and the
 * fuzzer can feed it raw DNS messages: msg is a response to a TXT query for
 * qname ("_stubmail.<domain>"). Same results as sm_dns_lookup. */
sm_dns_status sm_dns_parse_answer(const unsigned char *msg, size_t len, const char *qname,
                                  sm_txt_record *rec, unsigned *ttl, char *why, size_t whylen);

/* "found", "none", "tempfail", "invalid" */
const char *sm_dns_status_name(sm_dns_status st);

#endif
