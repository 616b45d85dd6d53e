/* test_dnssec.c — DNSSEC in discovery: the query asks with the DO bit
 * (EDNS0), the answer's AD bit counts only from a resolver we believe, and
 * the dnssec_require list says which domains must validate. */
#include <arpa/nameser.h>
#include <resolv.h>
#include <string.h>

#include "sm_dns.h"
#include "sm_dnssec.h"
#include "tap.h"

#define QNAME "_stubmail.b.example"
#define GOOD  "v=stubmail1; outbox=https://b.example/stubmail; " \
              "fpr=0123456789ABCDEF0123456789ABCDEF01234567; policy=1"
#define AD_BIT 0x20     /* in the header's fourth octet */

/* A NOERROR answer to a TXT query for QNAME with one TXT record, and the AD
 * bit as asked; returns its length. */
static size_t answer(unsigned char *m, int ad, int rcode)
{
    static const unsigned char head[] = { 0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0 };
    size_t n = 0, tl = strlen(GOOD);
    const char *label = QNAME, *dot;

    memcpy(m, head, sizeof head);
    n = sizeof head;
    if (ad)
        m[3] |= AD_BIT;
    m[3] |= (unsigned char)rcode;
    for (; *label; label = *dot ? dot + 1 : dot) {
        dot = strchr(label, '.');
        if (dot == NULL)
            dot = label + strlen(label);
        m[n++] = (unsigned char)(dot - label);
        memcpy(m + n, label, (size_t)(dot - label));
        n += (size_t)(dot - label);
    }
    m[n++] = 0;
    memcpy(m + n, "\0\x10\0\x01", 4);           /* TXT IN */
    n += 4;
    memcpy(m + n, "\xc0\x0c\0\x10\0\x01\0\0\x0e\x10", 10);   /* TTL 3600 */
    n += 10;
    m[n++] = 0;
    m[n++] = (unsigned char)(tl + 1);
    m[n++] = (unsigned char)tl;
    memcpy(m + n, GOOD, tl);
    return n + tl;
}

static void edns(void)
{
    unsigned char q[NS_PACKETSZ];
    int qlen = res_mkquery(ns_o_query, QNAME, ns_c_in, ns_t_txt, NULL, 0, NULL, q, sizeof q);
    int n;

    ok(qlen > NS_HFIXEDSZ, "a query to add to");
    n = sm_dns_add_edns(q, qlen, sizeof q);
    ok(n == qlen + 11, "the OPT record is 11 octets");
    ok(q[10] == 0 && q[11] == 1, "ARCOUNT 1");
    ok(q[qlen] == 0 && q[qlen + 1] == 0 && q[qlen + 2] == ns_t_opt, "owner the root, type OPT");
    ok(q[qlen + 3] == (1232 >> 8) && q[qlen + 4] == (1232 & 0xff), "UDP payload 1232");
    ok(q[qlen + 5] == 0 && q[qlen + 6] == 0, "extended RCODE and version 0");
    ok(q[qlen + 7] == 0x80 && q[qlen + 8] == 0, "flags: the DO bit alone");
    ok(q[qlen + 9] == 0 && q[qlen + 10] == 0, "no options");
    ok(sm_dns_add_edns(q, n, sizeof q) == -1, "not twice (ARCOUNT is taken)");
    ok(sm_dns_add_edns(q, qlen, (size_t)qlen + 10) == -1, "not past the buffer");
}

static void ad(void)
{
    unsigned char m[512];
    sm_txt_record rec;
    char why[256];
    unsigned ttl;
    int validated = -1;
    size_t n;
    sm_dns_status st;

    n = answer(m, 1, 0);
    st = sm_dns_parse_answer(m, n, QNAME, 1, &rec, &ttl, &validated, why, sizeof why);
    ok(st == SM_DNS_FOUND && validated == 1 && why[0] == '\0',
       "AD set, resolver believed: validated");

    st = sm_dns_parse_answer(m, n, QNAME, 0, &rec, &ttl, &validated, why, sizeof why);
    ok(st == SM_DNS_FOUND && validated == 0 && strstr(why, "AD bit is not trusted"),
       "AD set by a resolver not believed: not validated (%s)", why);

    n = answer(m, 0, 0);
    st = sm_dns_parse_answer(m, n, QNAME, 1, &rec, &ttl, &validated, why, sizeof why);
    ok(st == SM_DNS_FOUND && validated == 0 && strstr(why, "did not set the AD bit"),
       "no AD from a believed resolver: not validated, the record still found (%s)", why);
    is_str(rec.fpr, "0123456789ABCDEF0123456789ABCDEF01234567", "and its fields are there");

    n = answer(m, 1, ns_r_servfail);
    st = sm_dns_parse_answer(m, n, QNAME, 1, &rec, &ttl, &validated, why, sizeof why);
    ok(st == SM_DNS_TEMPFAIL && validated == 0, "a SERVFAIL (bogus) is a failure, never validated");

    n = answer(m, 1, ns_r_nxdomain);
    st = sm_dns_parse_answer(m, n, QNAME, 1, &rec, &ttl, &validated, why, sizeof why);
    ok(st == SM_DNS_NONE && validated == 1, "a secure NXDOMAIN is validated");
}

static void trust(void)
{
    sm_dns_conf c = { "127.0.0.1:53", 0, NULL };

    ok(sm_dns_trusts_ad(&c, 0), "a configured resolver on 127.0.0.1: believed");
    c.resolver = "127.9.8.7:5353";
    ok(sm_dns_trusts_ad(&c, 0), "anywhere in 127/8: believed");
    c.resolver = "[::1]:53";
    ok(sm_dns_trusts_ad(&c, 0), "::1: believed");
    c.resolver = "192.0.2.53:53";
    ok(!sm_dns_trusts_ad(&c, 1), "a remote resolver: not believed, whatever resolv.conf says");
    c.resolver = "[2001:db8::53]:53";
    ok(!sm_dns_trusts_ad(&c, 0), "a remote IPv6 resolver: not believed");
    c.resolver_trusted = 1;
    ok(sm_dns_trusts_ad(&c, 0), "unless the admin vouches for it");
    c.resolver = NULL;
    c.resolver_trusted = 0;
    ok(!sm_dns_trusts_ad(&c, 0), "the system resolver without trust-ad: not believed");
    ok(sm_dns_trusts_ad(&c, 1), "the system resolver with options trust-ad: believed");
}

static void require(void)
{
    static const struct { const char *spec; int ok; } specs[] = {
        { "none", 1 }, { "all", 1 }, { "ALL", 1 }, { "b.example", 1 },
        { "b.example c.example", 1 }, { "b.example, c.example,d.example", 1 },
        { "", 0 }, { "  ,", 0 }, { "all b.example", 0 }, { "b.example none", 0 },
        { "b..example", 0 }, { "*.example", 0 },
    };
    const char *bad;
    size_t i;

    for (i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        int rc = sm_dnssec_require_check(specs[i].spec, &bad);
        ok(specs[i].ok ? rc == 0 : rc == -1 && bad != NULL, "\"%s\" %s%s", specs[i].spec,
           specs[i].ok ? "accepted" : "refused: ", specs[i].ok ? "" : bad ? bad : "(no why)");
    }
    ok(!sm_dnssec_required(NULL, "b.example"), "unset: nothing required");
    ok(!sm_dnssec_required("none", "b.example"), "none: nothing required");
    ok(sm_dnssec_required("all", "b.example"), "all: every domain");
    ok(sm_dnssec_required("a.example, B.example", "b.example"), "a listed domain, any case");
    ok(!sm_dnssec_required("a.example b.example", "c.example"), "an unlisted domain");
    ok(!sm_dnssec_required("b.example", "x.b.example"), "not the subdomains of a listed one");
    ok(!sm_dnssec_required("x.b.example", "b.example"), "nor its parent");
}

int main(void)
{
    edns();
    ad();
    trust();
    require();
    return tap_done();
}
