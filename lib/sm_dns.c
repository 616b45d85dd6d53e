/* sm_dns — the _stubmail TXT record (grammar in sm_dns.h) and its lookup
 * through glibc's resolver.
 *
 * The parser is strict: a record the next implementation might read
 * differently is refused rather than guessed at, because the milter decides
 * from it where mail goes and pollerd which key to trust.
 *
 * The lookup uses res_nmkquery/res_nsend on a resolver state of its own (the
 * milter calls it from many threads at once), not res_nquery: res_nquery
 * hides the answer of an NXDOMAIN or NODATA reply, and the SOA in it is what
 * says how long "not pulling" may be cached. */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdarg.h>
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
#define MAX_TAGS      (SM_TXT_MAX / 2 + 1)

static int is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* ---- the record ------------------------------------------------------- */

int sm_txt_is_stubmail(const char *txt, size_t len)
{
    static const char version[] = "stubmail1";
    size_t i = 0;

    while (i < len && is_wsp(txt[i]))
        i++;
    if (i >= len || txt[i++] != 'v')
        return 0;
    while (i < len && is_wsp(txt[i]))
        i++;
    if (i >= len || txt[i++] != '=')
        return 0;
    while (i < len && is_wsp(txt[i]))
        i++;
    if (len - i < sizeof version - 1 || memcmp(txt + i, version, sizeof version - 1) != 0)
        return 0;
    i += sizeof version - 1;
    return i == len || txt[i] == ';' || is_wsp(txt[i]);
}

/* Decimal port 1-65535, no sign, no leading zero. */
static int parse_port(const char *s, size_t n, unsigned *port)
{
    unsigned v = 0;
    size_t i;

    if (n == 0 || n > 5 || s[0] == '0')
        return -1;
    for (i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = v;
    return 0;
}

/* "IPv4:port" or "[IPv6]:port" into a sockaddr and its canonical text (the
 * udp= tag and the resolver setting share this). canon may be NULL.
 * Returns 0 or one of these, with a reason in *why. */
#define HP_SYNTAX    -1
#define HP_PORT      -2
#define HP_FORBIDDEN -3

static int parse_hostport(const char *s, size_t n, struct sockaddr_storage *ss,
                          socklen_t *sslen, char *canon, size_t canonlen, const char **why)
{
    char host[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN];
    const char *colon, *hs;
    size_t hlen;
    unsigned port;
    int v6;

    memset(ss, 0, sizeof *ss);
    *sslen = 0;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL || close + 1 == s + n || close[1] != ':') {
            *why = "IPv6 address must be written [address]:port";
            return HP_SYNTAX;
        }
        v6 = 1;
        hs = s + 1;
        hlen = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = NULL;
        for (hs = s; hs < s + n; hs++)
            if (*hs == ':')
                colon = hs;
        if (colon == NULL) {
            *why = "address has no :port";
            return HP_SYNTAX;
        }
        v6 = 0;
        hs = s;
        hlen = (size_t)(colon - s);
        if (memchr(hs, ':', hlen) != NULL) {
            *why = "IPv6 address must be written [address]:port";
            return HP_SYNTAX;
        }
    }
    if (parse_port(colon + 1, (size_t)(s + n - colon - 1), &port) != 0) {
        *why = "port is not a number 1-65535";
        return HP_PORT;
    }
    if (hlen == 0 || hlen >= sizeof host) {
        *why = "not an IPv4 or [IPv6] address (host names are not allowed)";
        return HP_SYNTAX;
    }
    memcpy(host, hs, hlen);
    host[hlen] = '\0';
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            *why = "not a valid IPv6 address";
            return HP_SYNTAX;
        }
        if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr) || IN6_IS_ADDR_MULTICAST(&sin6->sin6_addr)) {
            *why = "address is unspecified or multicast";
            return HP_FORBIDDEN;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)port);
        *sslen = sizeof *sin6;
        inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
        if (canon)
            snprintf(canon, canonlen, "[%s]:%u", text, port);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        uint32_t a;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            *why = "not an IPv4 or [IPv6] address (host names are not allowed)";
            return HP_SYNTAX;
        }
        a = ntohl(sin->sin_addr.s_addr);
        if (a == 0 || IN_MULTICAST(a) || a == 0xffffffffu) {
            *why = "address is unspecified, multicast or broadcast";
            return HP_FORBIDDEN;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((unsigned short)port);
        *sslen = sizeof *sin;
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
        if (canon)
            snprintf(canon, canonlen, "%s:%u", text, port);
    }
    return 0;
}

int sm_dns_resolver_parse(const char *s, struct sockaddr_storage *addr, socklen_t *addrlen,
                          const char **why)
{
    return parse_hostport(s, strlen(s), addr, addrlen, NULL, 0, why) == 0 ? 0 : -1;
}

/* RFC 3986 pchar minus ";" (it ends the tag value anyway), plus "/" "?". */
static int url_char_ok(char c)
{
    return is_alnum(c) || (c != '\0' && strchr("-._~!$&'()*+,=:@/?", c) != NULL);
}

static int check_url(const char *v, size_t n, int *https, const char **why)
{
    const char *p, *end = v + n, *auth, *auth_end, *host_end;
    char host[SM_DOMAIN_MAX + 1];
    size_t hlen;
    unsigned port;

    if (n > SM_TXT_URL_MAX) {
        *why = "outbox URL longer than 512 octets";
        return -1;
    }
    if (n >= 8 && memcmp(v, "https://", 8) == 0) {
        *https = 1;
        auth = v + 8;
    } else if (n >= 7 && memcmp(v, "http://", 7) == 0) {
        *https = 0;
        auth = v + 7;
    } else {
        *why = "outbox is not an http:// or https:// URL";
        return -1;
    }
    if (memchr(v, '#', n) != NULL) {
        *why = "outbox URL has a fragment";
        return -1;
    }
    for (auth_end = auth; auth_end < end && *auth_end != '/' && *auth_end != '?'; auth_end++)
        ;
    if (memchr(auth, '@', (size_t)(auth_end - auth)) != NULL) {
        *why = "outbox URL has userinfo";
        return -1;
    }
    if (auth < auth_end && *auth == '[') {
        char a6[INET6_ADDRSTRLEN];
        struct in6_addr in6;
        const char *close = memchr(auth, ']', (size_t)(auth_end - auth));
        hlen = close ? (size_t)(close - auth - 1) : 0;
        if (close == NULL || hlen == 0 || hlen >= sizeof a6) {
            *why = "outbox URL has a bad IPv6 literal";
            return -1;
        }
        memcpy(a6, auth + 1, hlen);
        a6[hlen] = '\0';
        if (inet_pton(AF_INET6, a6, &in6) != 1) {
            *why = "outbox URL has a bad IPv6 literal";
            return -1;
        }
        host_end = close + 1;
        if (host_end < auth_end && *host_end != ':') {
            *why = "outbox URL has a bad IPv6 literal";
            return -1;
        }
    } else {
        const char *last;
        struct in_addr in4;
        int numeric = 1;

        host_end = memchr(auth, ':', (size_t)(auth_end - auth));
        if (host_end == NULL)
            host_end = auth_end;
        hlen = (size_t)(host_end - auth);
        if (hlen == 0 || hlen > SM_DOMAIN_MAX) {
            *why = "outbox URL has no valid host";
            return -1;
        }
        memcpy(host, auth, hlen);
        host[hlen] = '\0';
        if (!sm_domain_valid(host)) {
            *why = "outbox URL host is not a valid DNS name or address";
            return -1;
        }
        /* An all-digit last label would be read as a (possibly octal or
         * decimal-integer) IPv4 address by getaddrinfo: only dotted quads. */
        last = strrchr(host, '.');
        for (p = last ? last + 1 : host; *p; p++)
            if (!is_digit(*p))
                numeric = 0;
        if (numeric && inet_pton(AF_INET, host, &in4) != 1) {
            *why = "outbox URL host is not a valid DNS name or address";
            return -1;
        }
    }
    if (host_end < auth_end) {   /* ":" port */
        if (parse_port(host_end + 1, (size_t)(auth_end - host_end - 1), &port) != 0) {
            *why = "outbox URL port is not a number 1-65535";
            return -1;
        }
    }
    for (p = auth_end; p < end; p++) {
        if (*p == '%') {
            if (end - p < 3 || !is_hex(p[1]) || !is_hex(p[2])) {
                *why = "outbox URL has a bad %-escape";
                return -1;
            }
            p += 2;
        } else if (!url_char_ok(*p)) {
            *why = "outbox URL has a character that must be %-encoded";
            return -1;
        }
    }
    return 0;
}

static int check_fpr(const char *v, size_t n, char *out, const char **why)
{
    size_t i;

    if (n != 40 && n != 64) {
        *why = "fpr is not 40 or 64 hex digits";
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (!is_hex(v[i])) {
            *why = "fpr is not 40 or 64 hex digits";
            return -1;
        }
        out[i] = (v[i] >= 'a' && v[i] <= 'f') ? (char)(v[i] - 'a' + 'A') : v[i];
    }
    out[n] = '\0';
    return 0;
}

static int check_policy(const char *v, size_t n, const char **why)
{
    size_t i;

    if (n == 0 || n > SM_TXT_POLICY_MAX) {
        *why = "policy is not 1-64 characters";
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (!is_alnum(v[i]) && v[i] != '.' && v[i] != '_' && v[i] != '-') {
            *why = "policy has a character other than A-Z a-z 0-9 . _ -";
            return -1;
        }
    }
    return 0;
}

static int name_is(const char *name, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(name, want, n) == 0;
}

int sm_txt_parse(const char *txt, size_t len, sm_txt_record *rec, const char **why)
{
    struct { const char *p; size_t n; } seen[MAX_TAGS];
    size_t nseen = 0, i = 0, j;
    int have_outbox = 0, have_fpr = 0, have_policy = 0, rc = -1;

    memset(rec, 0, sizeof *rec);
    if (len > SM_TXT_MAX) {
        *why = "record longer than 1024 octets";
        goto leave;
    }
    for (j = 0; j < len; j++) {
        unsigned char c = (unsigned char)txt[j];
        if ((c < 0x20 || c > 0x7e) && c != '\t') {
            *why = "record has a control character, NUL or non-ASCII octet";
            goto leave;
        }
    }
    if (!sm_txt_is_stubmail(txt, len)) {
        *why = "record does not start with v=stubmail1";
        goto leave;
    }
    for (;;) {
        const char *name, *val;
        size_t nlen, vlen;

        while (i < len && is_wsp(txt[i]))
            i++;
        if (i == len) {
            if (nseen == 0) {   /* cannot happen after sm_txt_is_stubmail */
                *why = "empty record";
                goto leave;
            }
            break;   /* end, possibly after a trailing ";" */
        }
        name = txt + i;
        if (!(txt[i] >= 'a' && txt[i] <= 'z')) {
            *why = txt[i] == ';' ? "empty tag between two \";\""
                                 : "tag name does not match [a-z][a-z0-9-]*";
            goto leave;
        }
        while (i < len && ((txt[i] >= 'a' && txt[i] <= 'z') || is_digit(txt[i]) || txt[i] == '-'))
            i++;
        nlen = (size_t)(txt + i - name);
        while (i < len && is_wsp(txt[i]))
            i++;
        if (i == len || txt[i] != '=') {
            *why = "tag name not followed by \"=\" (or not [a-z][a-z0-9-]*)";
            goto leave;
        }
        i++;
        while (i < len && is_wsp(txt[i]))
            i++;
        val = txt + i;
        while (i < len && txt[i] != ';' && !is_wsp(txt[i]))
            i++;
        vlen = (size_t)(txt + i - val);
        while (i < len && is_wsp(txt[i]))
            i++;
        if (i < len && txt[i] != ';') {
            *why = "blank inside a tag value";
            goto leave;
        }
        for (j = 0; j < nseen; j++) {
            if (seen[j].n == nlen && memcmp(seen[j].p, name, nlen) == 0) {
                *why = "duplicate tag";
                goto leave;
            }
        }
        seen[nseen].p = name;   /* at least 2 octets per tag: cannot overflow */
        seen[nseen].n = nlen;
        nseen++;

        if (nseen == 1) {
            /* "v=stubmail1", already checked by sm_txt_is_stubmail */
        } else if (name_is(name, nlen, "outbox")) {
            if (check_url(val, vlen, &rec->outbox_https, why) != 0)
                goto leave;
            memcpy(rec->outbox, val, vlen);
            rec->outbox[vlen] = '\0';
            have_outbox = 1;
        } else if (name_is(name, nlen, "fpr")) {
            if (check_fpr(val, vlen, rec->fpr, why) != 0)
                goto leave;
            have_fpr = 1;
        } else if (name_is(name, nlen, "policy")) {
            if (check_policy(val, vlen, why) != 0)
                goto leave;
            memcpy(rec->policy, val, vlen);
            rec->policy[vlen] = '\0';
            have_policy = 1;
        } else if (name_is(name, nlen, "udp")) {
            int e = parse_hostport(val, vlen, &rec->udp_addr, &rec->udp_addrlen, rec->udp,
                                   sizeof rec->udp, why);
            /* parse_hostport's reasons do not name the tag: these do */
            if (e == HP_PORT) {
                *why = "udp port is not a number 1-65535";
                goto leave;
            } else if (e == HP_FORBIDDEN) {
                *why = "udp address is unspecified, multicast or broadcast";
                goto leave;
            } else if (e != 0) {
                *why = "udp is not IPv4:port or [IPv6]:port (no host names)";
                goto leave;
            }
        }
        /* any other tag: ignored (forward compatibility) */
        if (i == len)
            break;
        i++;   /* the ";" */
    }
    if (!have_outbox) {
        *why = "no outbox= tag";
        goto leave;
    }
    if (!have_fpr) {
        *why = "no fpr= tag";
        goto leave;
    }
    if (!have_policy) {
        *why = "no policy= tag";
        goto leave;
    }
    rc = 0;
leave:
    if (rc != 0)
        memset(rec, 0, sizeof *rec);
    return rc;
}

int sm_txt_format(const sm_txt_record *rec, char *out, size_t outlen)
{
    int n;

    if (rec->udp[0])
        n = snprintf(out, outlen, "v=stubmail1; outbox=%s; udp=%s; fpr=%s; policy=%s",
                     rec->outbox, rec->udp, rec->fpr, rec->policy);
    else
        n = snprintf(out, outlen, "v=stubmail1; outbox=%s; fpr=%s; policy=%s",
                     rec->outbox, rec->fpr, rec->policy);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

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
                                  sm_txt_record *rec, unsigned *ttl, char *why, size_t whylen)
{
    sm_dns_status st = SM_DNS_TEMPFAIL;
    char owner[NS_MAXDNAME], target[NS_MAXDNAME];
    const char *bad = NULL;
    char *text = NULL;
    ns_msg h;
    ns_rr rr;
    int i, n, hop, rcode, ntxt = 0, nstub = 0, parsed = -1;
    unsigned minttl = UINT_MAX;

    memset(rec, 0, sizeof *rec);
    *ttl = 0;
    sm_why(why, whylen, "%s", "");
    if (len > ANSWER_MAX || ns_initparse(msg, (int)len, &h) != 0) {
        sm_why(why, whylen, "%s: malformed DNS answer", qname);
        goto leave;
    }
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
leave:
    free(text);
    if (st != SM_DNS_FOUND)
        memset(rec, 0, sizeof *rec);
    return st;
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

sm_dns_status sm_dns_lookup(const char *resolver, const char *domain, sm_txt_record *rec,
                            unsigned *ttl, char *why, size_t whylen)
{
    sm_dns_status st = SM_DNS_TEMPFAIL;
    struct __res_state rs;
    struct sockaddr_storage server;
    socklen_t serverlen;
    unsigned char query[NS_PACKETSZ];
    unsigned char *answer = NULL;
    char qname[sizeof QNAME_PREFIX + SM_DOMAIN_MAX];
    const char *bad;
    int rs_open = 0, qlen, alen;

    memset(rec, 0, sizeof *rec);
    *ttl = 0;
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
    /* room for the 11-octet EDNS0 OPT record appended below */
    qlen = res_nmkquery(&rs, ns_o_query, qname, ns_c_in, ns_t_txt, NULL, 0, NULL, query,
                        (int)sizeof query - 11);
    if (qlen < NS_HFIXEDSZ) {
        sm_why(why, whylen, "%s: cannot build the DNS query", qname);
        goto leave;
    }
    /* EDNS0 (RFC 6891): a 1024-octet record and its neighbours fit in one
     * UDP answer, so TCP (where glibc has no timeout) is rarely needed. */
    {
        static const unsigned char opt[11] = {
            0, 0, ns_t_opt, EDNS_PAYLOAD >> 8, EDNS_PAYLOAD & 0xff, 0, 0, 0, 0, 0, 0
        };
        memcpy(query + qlen, opt, sizeof opt);
        qlen += (int)sizeof opt;
        query[11] = 1;   /* ARCOUNT = 1 (low octet; res_nmkquery left it 0) */
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
    st = sm_dns_parse_answer(answer, (size_t)alen, qname, rec, ttl, why, whylen);
leave:
    if (rs_open)
        res_nclose(&rs);
    free(answer);
    if (st != SM_DNS_FOUND)
        memset(rec, 0, sizeof *rec);
    return st;
}
