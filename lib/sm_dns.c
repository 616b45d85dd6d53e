/* sm_dns — the lookup of _stubmail.<domain> through glibc's resolver; the
 * record's grammar is sm_txt.c.
 *
 * The lookup uses res_nmkquery/res_nsend on a resolver state of its own (the
 * milter calls it from many threads at once), not res_nquery: res_nquery
 * hides the answer of an NXDOMAIN or NODATA reply, and the SOA in it is what
 * says how long "not pulling" may be cached.
 *
 * DNSSEC: the query carries the DO bit, and res_nsend is told to keep the
 * answer's AD bit (RES_TRUSTAD; glibc clears it otherwise) only when we
 * believe it; sm_dns_parse_answer believes it only when told so as well. */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sm_log.h"
#include "sm_addr.h"
#include "sm_dns.h"

#define QNAME_PREFIX  "_stubmail."
#define ANSWER_MAX    65536   /* largest DNS message (TCP) */
#define EDNS_PAYLOAD  1232    /* DNS flag day 2020: no fragmentation */
#define CNAME_HOPS    8
#define EDNS_DO       0x8000  /* RFC 3225: DNSSEC OK, in the OPT's flags */
#define OPT_LEN       11      /* root name, type, class, TTL, RDLEN 0 */
const char *sm_dns_status_name(sm_dns_status st)
{
    switch (st) {
    case SM_DNS_FOUND:    return "found";
    case SM_DNS_NONE:     return "none";
    case SM_DNS_TEMPFAIL: return "tempfail";
    case SM_DNS_INVALID:  return "invalid";
    }
    return "?";
}

/* ---- the answer ------------------------------------------------------- */

/* RFC 2181 8: a TTL with the top bit set means 0. */
static unsigned rr_ttl(const ns_rr *rr)
{
    unsigned long t = ns_rr_ttl(*rr);
    return t > 0x7fffffffUL ? 0 : (unsigned)t;
}

/* RFC 2308 5: negative answers live min(SOA TTL, SOA MINIMUM). */
static unsigned negative_ttl(ns_msg *h)
{
    ns_rr rr;
    int i, n = ns_msg_count(*h, ns_s_ns);

    for (i = 0; i < n; i++) {
        const unsigned char *p, *end;
        unsigned long min;
        unsigned ttl;

        if (ns_parserr(h, ns_s_ns, i, &rr) != 0)
            break;
        if (ns_rr_type(rr) != ns_t_soa || ns_rr_class(rr) != ns_c_in)
            continue;
        p = ns_rr_rdata(rr);
        end = p + ns_rr_rdlen(rr);
        if (ns_name_skip(&p, end) != 0 || ns_name_skip(&p, end) != 0 || end - p < 20)
            break;
        min = ns_get32(p + 16);
        ttl = rr_ttl(&rr);
        if (min > 0x7fffffffUL)
            min = 0;
        return (unsigned)min < ttl ? (unsigned)min : ttl;
    }
    return SM_DNS_NEG_TTL;
}

sm_dns_status sm_dns_parse_answer(const unsigned char *msg, size_t len, const char *qname,
                                  int trust_ad, sm_txt_record *rec, unsigned *ttl,
                                  int *validated, char *why, size_t whylen)
{
    sm_dns_status st = SM_DNS_TEMPFAIL;
    char owner[NS_MAXDNAME], target[NS_MAXDNAME];
    const char *bad = NULL;
    char *text = NULL;
    ns_msg h;
    ns_rr rr;
    int i, n, hop, rcode, ntxt = 0, nstub = 0, parsed = -1, ad = 0;
    unsigned minttl = UINT_MAX;

    memset(rec, 0, sizeof *rec);
    *ttl = 0;
    *validated = 0;
    sm_why(why, whylen, "%s", "");
    if (len > ANSWER_MAX || ns_initparse(msg, (int)len, &h) != 0) {
        sm_why(why, whylen, "%s: malformed DNS answer", qname);
        goto leave;
    }
    ad = ns_msg_getflag(h, ns_f_ad);
    if (!ns_msg_getflag(h, ns_f_qr) || ns_msg_getflag(h, ns_f_opcode) != ns_o_query) {
        sm_why(why, whylen, "%s: DNS message is not an answer to a query", qname);
        goto leave;
    }
    /* before anything else: a FORMERR or SERVFAIL may carry no question */
    rcode = ns_msg_getflag(h, ns_f_rcode);
    if (rcode != ns_r_noerror && rcode != ns_r_nxdomain) {
        static const char *names[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                       "NOTIMP", "REFUSED" };
        if (rcode < (int)(sizeof names / sizeof names[0]))
            sm_why(why, whylen, "%s: resolver answered %s", qname, names[rcode]);
        else
            sm_why(why, whylen, "%s: resolver answered rcode %d", qname, rcode);
        goto leave;
    }
    if (ns_msg_getflag(h, ns_f_tc)) {
        sm_why(why, whylen, "%s: DNS answer truncated", qname);
        goto leave;
    }
    if (ns_msg_count(h, ns_s_qd) != 1 || ns_parserr(&h, ns_s_qd, 0, &rr) != 0
        || ns_rr_type(rr) != ns_t_txt || ns_rr_class(rr) != ns_c_in
        || strcasecmp(ns_rr_name(rr), qname) != 0) {
        sm_why(why, whylen, "%s: DNS answer does not match the question", qname);
        goto leave;
    }
    if (rcode == ns_r_nxdomain) {
        st = SM_DNS_NONE;
        *ttl = negative_ttl(&h);
        sm_why(why, whylen, "%s: no such name (NXDOMAIN)", qname);
        goto leave;
    }

    /* Follow a CNAME chain in the answer section (a provider may host
     * _stubmail for its customers), then take the TXT records at its end. */
    n = ns_msg_count(h, ns_s_an);
    snprintf(owner, sizeof owner, "%s", qname);
    for (hop = 0; ; hop++) {
        int moved = 0;
        for (i = 0; i < n && !moved; i++) {
            if (ns_parserr(&h, ns_s_an, i, &rr) != 0) {
                sm_why(why, whylen, "%s: malformed DNS answer", qname);
                goto leave;
            }
            if (ns_rr_type(rr) != ns_t_cname || ns_rr_class(rr) != ns_c_in
                || strcasecmp(ns_rr_name(rr), owner) != 0)
                continue;
            if (ns_name_uncompress(ns_msg_base(h), ns_msg_end(h), ns_rr_rdata(rr),
                                   target, sizeof target) < 0) {
                sm_why(why, whylen, "%s: malformed CNAME in DNS answer", qname);
                goto leave;
            }
            if (rr_ttl(&rr) < minttl)
                minttl = rr_ttl(&rr);
            memcpy(owner, target, sizeof owner);
            moved = 1;
        }
        if (!moved)
            break;
        if (hop == CNAME_HOPS) {
            sm_why(why, whylen, "%s: CNAME chain longer than %d", qname, CNAME_HOPS);
            goto leave;
        }
    }

    if ((text = malloc(ANSWER_MAX)) == NULL) {
        sm_why(why, whylen, "%s: out of memory", qname);
        goto leave;
    }
    for (i = 0; i < n; i++) {
        const unsigned char *p, *end;
        size_t tlen = 0;

        if (ns_parserr(&h, ns_s_an, i, &rr) != 0) {
            sm_why(why, whylen, "%s: malformed DNS answer", qname);
            goto leave;
        }
        if (ns_rr_type(rr) != ns_t_txt || ns_rr_class(rr) != ns_c_in
            || strcasecmp(ns_rr_name(rr), owner) != 0)
            continue;
        /* the strings of one record, concatenated (RFC 7208 3.3) */
        for (p = ns_rr_rdata(rr), end = p + ns_rr_rdlen(rr); p < end; p += *p + 1) {
            if (*p >= end - p) {
                sm_why(why, whylen, "%s: malformed TXT record in DNS answer", qname);
                goto leave;
            }
            memcpy(text + tlen, p + 1, *p);
            tlen += *p;
        }
        ntxt++;
        if (rr_ttl(&rr) < minttl)
            minttl = rr_ttl(&rr);
        if (!sm_txt_is_stubmail(text, tlen))
            continue;
        if (++nstub == 1)
            parsed = sm_txt_parse(text, tlen, rec, &bad);
    }
    if (ntxt == 0) {
        st = SM_DNS_NONE;
        *ttl = negative_ttl(&h);
        sm_why(why, whylen, "%s: no TXT record (NODATA)", qname);
    } else if (nstub == 0) {
        st = SM_DNS_NONE;
        *ttl = minttl;
        sm_why(why, whylen, "%s: no v=stubmail1 record among %d TXT record%s", qname, ntxt,
            ntxt == 1 ? "" : "s");
    } else if (nstub > 1) {
        st = SM_DNS_INVALID;
        *ttl = minttl;
        sm_why(why, whylen, "%s: %d v=stubmail1 records (ambiguous)", qname, nstub);
    } else if (parsed != 0) {
        st = SM_DNS_INVALID;
        *ttl = minttl;
        sm_why(why, whylen, "%s: invalid record: %s", qname, bad);
    } else {
        st = SM_DNS_FOUND;
        *ttl = minttl;
    }
    if (st == SM_DNS_FOUND && !(trust_ad && ad))
        sm_why(why, whylen, "%s: not DNSSEC-validated (%s)", qname,
               !trust_ad ? "the resolver's AD bit is not trusted"
               : "the resolver did not set the AD bit: an unsigned zone, or a resolver "
                 "that does not validate");
leave:
    /* RFC 4035 3.2.3: AD covers the answer and authority sections, so a
     * secure NXDOMAIN or NODATA is as validated as a record */
    *validated = st != SM_DNS_TEMPFAIL && trust_ad && ad;
    free(text);
    if (st != SM_DNS_FOUND)
        memset(rec, 0, sizeof *rec);
    return st;
}

int sm_dns_add_edns(unsigned char *query, int qlen, size_t cap)
{
    const unsigned char opt[OPT_LEN] = {
        0,                                  /* the root */
        0, ns_t_opt,
        EDNS_PAYLOAD >> 8, EDNS_PAYLOAD & 0xff,
        0, 0,                               /* extended RCODE, version 0 */
        EDNS_DO >> 8, EDNS_DO & 0xff,       /* flags: DO */
        0, 0                                /* no options */
    };
    int rc = -1;

    if (qlen < NS_HFIXEDSZ || (size_t)qlen + sizeof opt > cap || query[10] != 0 || query[11] != 0)
        goto leave;
    memcpy(query + qlen, opt, sizeof opt);
    query[11] = 1;                          /* ARCOUNT = 1 */
    rc = qlen + (int)sizeof opt;
leave:
    return rc;
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET
           ? (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127
           : IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* Postfix's rule, as its DNSSEC_README puts it: the AD bit means something
 * only on a path nobody can tamper with, in practice a resolver on the
 * same host. */
int sm_dns_trusts_ad(const sm_dns_conf *dns, int resolv_conf_trust_ad)
{
    struct sockaddr_storage server;
    socklen_t serverlen;
    const char *bad;
    int trusted;

    if (dns->resolver_trusted)
        trusted = 1;
    else if (dns->resolver == NULL)
        trusted = resolv_conf_trust_ad;
    else
        trusted = sm_dns_resolver_parse(dns->resolver, &server, &serverlen, &bad) == 0
                  && is_loopback(&server);
    return trusted;
}

/* ---- the lookup ------------------------------------------------------- */

/* Point a freshly initialised resolver state at one server. glibc keeps
 * IPv6 server addresses out of line (_u._ext.nsaddrs, malloc'd, freed by
 * res_nclose), IPv4 ones in nsaddr_list. */
static int use_server(res_state rs, const struct sockaddr_storage *ss)
{
    int i;

    for (i = 0; i < MAXNS; i++) {   /* res_ninit's IPv6 copies: ours now */
        free(rs->_u._ext.nsaddrs[i]);
        rs->_u._ext.nsaddrs[i] = NULL;
    }
    memset(rs->nsaddr_list, 0, sizeof rs->nsaddr_list);
    if (ss->ss_family == AF_INET) {
        memcpy(&rs->nsaddr_list[0], ss, sizeof(struct sockaddr_in));
    } else {
        struct sockaddr_in6 *sin6 = malloc(sizeof *sin6);
        if (sin6 == NULL)
            return -1;
        memcpy(sin6, ss, sizeof *sin6);
        rs->nsaddr_list[0].sin_family = 0;   /* "look in _u._ext" */
        rs->_u._ext.nsaddrs[0] = sin6;
    }
    rs->nscount = 1;
    rs->_u._ext.nscount = 0;   /* make res_nsend re-read the list */
    return 0;
}

sm_dns_status sm_dns_lookup(const sm_dns_conf *dns, const char *domain, sm_txt_record *rec,
                            unsigned *ttl, int *validated, char *why, size_t whylen)
{
    const char *resolver = dns->resolver;
    sm_dns_status st = SM_DNS_TEMPFAIL;
    struct __res_state rs;
    struct sockaddr_storage server;
    socklen_t serverlen;
    unsigned char query[NS_PACKETSZ];
    unsigned char *answer = NULL;
    char qname[sizeof QNAME_PREFIX + SM_DOMAIN_MAX];
    const char *bad;
    int rs_open = 0, qlen, alen, trust_ad;

    memset(rec, 0, sizeof *rec);
    *ttl = 0;
    *validated = 0;
    sm_why(why, whylen, "%s", "");
    if (!sm_domain_valid(domain)) {
        st = SM_DNS_INVALID;
        sm_why(why, whylen, "\"%.64s\" is not a valid domain name", domain);
        goto leave;
    }
    snprintf(qname, sizeof qname, "%s%s", QNAME_PREFIX, domain);
    if (strlen(qname) > SM_DOMAIN_MAX) {
        /* no such name can exist, so no record either */
        st = SM_DNS_NONE;
        *ttl = SM_DNS_NEG_TTL;
        sm_why(why, whylen, "%s: name longer than 253 octets", qname);
        goto leave;
    }
    if (resolver != NULL && sm_dns_resolver_parse(resolver, &server, &serverlen, &bad) != 0) {
        sm_why(why, whylen, "resolver \"%.64s\": %s", resolver, bad);
        goto leave;
    }
    if ((answer = malloc(ANSWER_MAX)) == NULL) {
        sm_why(why, whylen, "%s: out of memory", qname);
        goto leave;
    }
    memset(&rs, 0, sizeof rs);
    if (res_ninit(&rs) != 0) {
        sm_why(why, whylen, "%s: cannot initialise the resolver", qname);
        goto leave;
    }
    rs_open = 1;
    /* glibc's defaults (5 s, 2 tries per server) would hold a milter thread
     * for 10 s or more per dead resolver. */
    rs.retrans = SM_DNS_TIMEOUT;
    rs.retry = SM_DNS_TRIES;
    if (resolver != NULL && use_server(&rs, &server) != 0) {
        sm_why(why, whylen, "%s: out of memory", qname);
        goto leave;
    }
    /* resolv.conf's "options trust-ad" is read by res_ninit into options;
     * from here on RES_TRUSTAD is our verdict, so that res_nsend keeps the
     * AD bit exactly when we believe it */
    trust_ad = sm_dns_trusts_ad(dns, (rs.options & RES_TRUSTAD) != 0);
    if (trust_ad)
        rs.options |= RES_TRUSTAD;
    else
        rs.options &= ~(unsigned long)RES_TRUSTAD;
    /* room for the EDNS0 OPT record appended below */
    qlen = res_nmkquery(&rs, ns_o_query, qname, ns_c_in, ns_t_txt, NULL, 0, NULL, query,
                        (int)sizeof query - OPT_LEN);
    /* EDNS0 (RFC 6891): a 1024-octet record and its neighbours fit in one
     * UDP answer, so TCP (where glibc has no timeout) is rarely needed; and
     * the DO bit asks a validating resolver for the AD bit. */
    if (qlen < NS_HFIXEDSZ || (qlen = sm_dns_add_edns(query, qlen, sizeof query)) < 0) {
        sm_why(why, whylen, "%s: cannot build the DNS query", qname);
        goto leave;
    }
    errno = 0;
    alen = res_nsend(&rs, query, qlen, answer, ANSWER_MAX);
    if (alen < 0) {
        /* glibc retries SERVFAIL, NOTIMP and REFUSED on the next server and
         * then gives up as if timed out: all of it is temporary. */
        sm_why(why, whylen, "%s: no usable answer from %s (%s)", qname,
            resolver ? resolver : "the system resolver",
            errno == ECONNREFUSED ? "connection refused"
            : errno == ETIMEDOUT ? "timeout, SERVFAIL or REFUSED" : strerror(errno));
        goto leave;
    }
    st = sm_dns_parse_answer(answer, (size_t)alen, qname, trust_ad, rec, ttl, validated, why,
                             whylen);
leave:
    if (rs_open)
        res_nclose(&rs);
    free(answer);
    if (st != SM_DNS_FOUND)
        memset(rec, 0, sizeof *rec);
    return st;
}
