/* sm_dns — looking up the _stubmail TXT record (its grammar: sm_txt.h).
 *
 * Lookup: class IN, type TXT at _stubmail.<domain> (CNAMEs followed). A TXT
 * record with several strings is their concatenation (RFC 7208 3.3). A TXT
 * record is a stubmail record if it starts, after optional blanks, with
 * "v", optional blanks, "=", optional blanks, "stubmail1", then ";", a blank
 * or its end; all others are ignored. More than one stubmail record makes
 * the answer ambiguous (invalid).
 *
 * DNSSEC, as Postfix's smtp_dns_support_level = dnssec: every query asks
 * with the DO bit (EDNS0), and an answer counts as validated when its AD bit
 * is set by a resolver whose AD bit we believe: one on a loopback address
 * (a local validating resolver, e.g. unbound), the system resolver when
 * /etc/resolv.conf says "options trust-ad" (glibc's rule), or any resolver
 * the admin vouches for (resolver_trusted). A validating resolver answers
 * a bogus record with SERVFAIL, which is SM_DNS_TEMPFAIL here.
 */
#ifndef SM_DNS_H
#define SM_DNS_H

#include <stddef.h>

#include "sm_txt.h"

#define SM_DNS_NEG_TTL     300u  /* negative answer without an SOA */
#define SM_DNS_TIMEOUT       1   /* seconds per try ...          */
#define SM_DNS_TRIES         2   /* ... so a dead resolver costs ~2 s */

/* Where to ask, whose AD bit to believe, which domains must validate. */
typedef struct sm_dns_conf {
    const char *resolver;        /* "IP:PORT", or NULL: the system resolver */
    int resolver_trusted;        /* believe its AD bit even off loopback */
    const char *dnssec_require;  /* sm_dnssec.h; NULL: "none" */
} sm_dns_conf;

typedef enum sm_dns_status {
    SM_DNS_FOUND,     /* rec filled; ttl = the TXT RRset's TTL */
    SM_DNS_NONE,      /* NXDOMAIN, NODATA or no stubmail record: not pulling */
    SM_DNS_TEMPFAIL,  /* SERVFAIL, REFUSED, timeout, network, malformed answer */
    SM_DNS_INVALID    /* a stubmail record that does not parse, or several;
                         or the domain is not a valid name (ttl 0) */
} sm_dns_status;

/* Look up _stubmail.<domain> through dns->resolver ("IP:PORT" or NULL for
 * the system resolver, /etc/resolv.conf). Thread-safe (per-call resolver
 * state). *validated is 1 when the answer's AD bit was set by a resolver we
 * believe (see above), else 0; for a FOUND answer that is not validated,
 * why says why not (for the log line of a domain that requires it).
 * On return *rec is filled only for SM_DNS_FOUND (zeroed otherwise); *ttl is
 * how long the verdict may be cached: the RRset's TTL for FOUND and INVALID
 * and for NONE when TXT records exist but none is ours, the negative-caching
 * TTL (RFC 2308: min of the SOA's TTL and MINIMUM, else SM_DNS_NEG_TTL) for
 * NXDOMAIN and NODATA, 0 for TEMPFAIL. why (may be NULL) says what happened,
 * for logs. A resolver that does not answer fails after about
 * SM_DNS_TIMEOUT * SM_DNS_TRIES seconds per configured name server. */
sm_dns_status sm_dns_lookup(const sm_dns_conf *dns, const char *domain, sm_txt_record *rec,
                            unsigned *ttl, int *validated, char *why, size_t whylen);

/* The answer-handling half of sm_dns_lookup, separate so that tests and the
 * fuzzer can feed it raw DNS messages: msg is a response to a TXT query for
 * qname ("_stubmail.<domain>"). Same results as sm_dns_lookup; trust_ad
 * says whether the AD bit of this answer is believed (*validated is 1 only
 * with trust_ad, the AD bit and an answer that is not TEMPFAIL). */
sm_dns_status sm_dns_parse_answer(const unsigned char *msg, size_t len, const char *qname,
                                  int trust_ad, sm_txt_record *rec, unsigned *ttl,
                                  int *validated, char *why, size_t whylen);

/* Append the EDNS0 OPT record (RFC 6891: a 1232-octet UDP payload, the DO
 * bit of RFC 3225 set) to a query of qlen octets in a buffer of cap and
 * count it in ARCOUNT. Returns the new length, or -1 when it does not fit
 * or the query already has additional records. */
int sm_dns_add_edns(unsigned char *query, int qlen, size_t cap);

/* Whether the AD bit of the resolver dns names is believed: the admin
 * vouches for it (resolver_trusted); else a configured resolver on a
 * loopback address (127.0.0.0/8, ::1); else, for the system resolver,
 * resolv_conf_trust_ad ("options trust-ad" in /etc/resolv.conf). */
int sm_dns_trusts_ad(const sm_dns_conf *dns, int resolv_conf_trust_ad);

/* "found", "none", "tempfail", "invalid" */
const char *sm_dns_status_name(sm_dns_status st);

#endif
