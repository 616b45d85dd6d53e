/* Unit tests: the _stubmail TXT record (grammar in lib/sm_txt.h). Each
 * accepted record is checked through its canonical form, which also shows
 * what was normalised (fpr case, udp address). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "sm_dns.h"
#include "tap.h"

#define URL "https://stubmail.b.example/stubmail"
#define FPR "0123456789ABCDEF0123456789ABCDEF01234567"
#define FPR64 "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"
#define TAIL "; fpr=" FPR "; policy=2026112601"
#define CANON(url, rest) "v=stubmail1; outbox=" url rest

static const struct {
    const char *in;
    size_t len;         /* 0: strlen(in) */
    const char *want;   /* canonical form; NULL: must be refused */
} cases[] = {
    /* accepted */
    { "v=stubmail1; outbox=" URL "; udp=127.0.0.3:20090" TAIL, 0,
      CANON(URL, "; udp=127.0.0.3:20090" TAIL) },
    { "v=stubmail1; outbox=" URL TAIL, 0, CANON(URL, TAIL) },
    { "v=stubmail1; future=yes; outbox=" URL "; x-y2=; fpr=" FPR "; z=a=b; policy=2026112601",
      0, CANON(URL, TAIL) },
    { " v = stubmail1 ;outbox = " URL "\t;\tfpr=" FPR " ; policy=2026112601 ", 0,
      CANON(URL, TAIL) },
    { "v=stubmail1; outbox=" URL TAIL ";", 0, CANON(URL, TAIL) },
    { "v=stubmail1; outbox=" URL TAIL "; ", 0, CANON(URL, TAIL) },
    { "v=stubmail1;outbox=" URL ";udp=[2001:DB8:0::1]:20090;fpr=" FPR ";policy=2026112601", 0,
      CANON(URL, "; udp=[2001:db8::1]:20090" TAIL) },
    { "v=stubmail1; outbox=" URL "; fpr=0123456789abcdef0123456789abcdef01234567; policy=2026112601",
      0, CANON(URL, TAIL) },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR64 "; policy=2026112601", 0,
      CANON(URL, "; fpr=" FPR64 "; policy=2026112601") },
    { "v=stubmail1; outbox=http://127.0.0.3:20080/stubmail" TAIL, 0,
      CANON("http://127.0.0.3:20080/stubmail", TAIL) },
    { "v=stubmail1; outbox=https://B.example:8443/stub%20mail/x?a=b&c=d~" TAIL, 0,
      CANON("https://B.example:8443/stub%20mail/x?a=b&c=d~", TAIL) },
    { "v=stubmail1; outbox=http://[::1]:8080/stubmail" TAIL, 0,
      CANON("http://[::1]:8080/stubmail", TAIL) },
    { "v=stubmail1; outbox=https://b.example" TAIL, 0, CANON("https://b.example", TAIL) },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR "; policy=A.b_c-9", 0,
      CANON(URL, "; fpr=" FPR "; policy=A.b_c-9") },
    { "v=stubmail1; outbox=" URL "; udp=[::ffff:127.0.0.3]:1" TAIL, 0,
      CANON(URL, "; udp=[::ffff:127.0.0.3]:1" TAIL) },
    { "v=stubmail1; outbox=" URL "; udp=10.0.0.1:65535" TAIL, 0,
      CANON(URL, "; udp=10.0.0.1:65535" TAIL) },
    /* a rotation's second key, after fpr in the canonical form */
    { "v=stubmail1; outbox=" URL "; fpr-alt=" FPR64 "; fpr=" FPR "; policy=2026112601", 0,
      CANON(URL, "; fpr=" FPR "; fpr-alt=" FPR64 "; policy=2026112601") },

    /* refused: version */
    { "", 0, NULL },
    { "outbox=" URL TAIL, 0, NULL },
    { "outbox=" URL "; v=stubmail1" TAIL, 0, NULL },
    { "v=stubmail2; outbox=" URL TAIL, 0, NULL },
    { "v=stubmail1x; outbox=" URL TAIL, 0, NULL },
    { "V=stubmail1; outbox=" URL TAIL, 0, NULL },
    { "v=STUBMAIL1; outbox=" URL TAIL, 0, NULL },
    { "v=stubmail1 extra; outbox=" URL TAIL, 0, NULL },
    /* refused: tag list */
    { "v=stubmail1; outbox=" URL TAIL "; policy=2", 0, NULL },
    { "v=stubmail1; x=1; outbox=" URL "; x=2" TAIL, 0, NULL },
    { "v=stubmail1; v=stubmail1; outbox=" URL TAIL, 0, NULL },
    { "v=stubmail1;; outbox=" URL TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL TAIL "; ;", 0, NULL },
    { "v=stubmail1; Policy=x; outbox=" URL TAIL, 0, NULL },
    { "v=stubmail1; 1x=y; outbox=" URL TAIL, 0, NULL },
    { "v=stubmail1; x_y=z; outbox=" URL TAIL, 0, NULL },
    { "v=stubmail1; flag; outbox=" URL TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR "; policy=2026 112601", 0, NULL },
    /* refused: required tags */
    { "v=stubmail1" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; policy=2026112601", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR, 0, NULL },
    /* refused: fpr */
    { "v=stubmail1; outbox=" URL "; fpr=" FPR "0; policy=1", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=123456789ABCDEF0123456789ABCDEF01234567; policy=1", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR64 "0; policy=1", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=G123456789ABCDEF0123456789ABCDEF01234567; policy=1", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=; policy=1", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR "; fpr-alt=0123; policy=1", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR "; fpr-alt=; policy=1", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR "; fpr-alt=" FPR "; fpr-alt=" FPR "; policy=1",
      0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=0x23456789ABCDEF0123456789ABCDEF01234567; policy=1", 0, NULL },
    /* refused: policy */
    { "v=stubmail1; outbox=" URL "; fpr=" FPR "; policy=", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR "; policy=a/b", 0, NULL },
    { "v=stubmail1; outbox=" URL "; fpr=" FPR
      "; policy=12345678901234567890123456789012345678901234567890123456789012345", 0, NULL },
    /* refused: outbox */
    { "v=stubmail1; outbox=stubmail.b.example/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=ftp://stubmail.b.example/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=HTTPS://stubmail.b.example/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://user:pw@stubmail.b.example/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://stubmail.b.example/stubmail#top" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://stubmail.b.example/stub mail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https:///stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b.example:0/" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b.example:65536/" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b.example:/" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b..example/" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b_c.example/" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b.example./" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b.example/\"x\"" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b.example/a%zz" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b.example/a%4" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://[::1/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://[::1]x/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://[b.example]/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://999.1.1.1/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://2130706433/stubmail" TAIL, 0, NULL },
    { "v=stubmail1; outbox=https://b.example\\@evil.example/" TAIL, 0, NULL },
    /* refused: udp */
    { "v=stubmail1; outbox=" URL "; udp=stubmail.b.example:20090" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=127.0.0.3" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=127.0.0.3:0" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=127.0.0.3:65536" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=127.0.0.3:020090" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=127.0.0.3:-1" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=::1:20090" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=[::1]" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=[::1]:" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=127.0.0.300:1" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=0.0.0.0:1" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=224.0.0.1:1" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=255.255.255.255:1" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=[ff02::1]:1" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=[::]:1" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; udp=" TAIL, 0, NULL },
    /* refused: octets */
    { "v=stubmail1; outbox=" URL TAIL "\r\n", 0, NULL },
    { "v=stubmail1; outbox=" URL ";\x01" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; x=\x7f" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL "; x=caf\xc3\xa9" TAIL, 0, NULL },
    { "v=stubmail1; outbox=" URL TAIL "\0; policy=2", sizeof("v=stubmail1; outbox=" URL TAIL) + 10,
      NULL },
    { "v=stubmail1; outbox=" URL "\0" TAIL, sizeof("v=stubmail1; outbox=" URL "\0" TAIL) - 1,
      NULL },
};

/* Which records the lookup counts as "ours" (then they must parse). */
static const struct {
    const char *in;
    int want;
} classify[] = {
    { "v=stubmail1", 1 },
    { "v=stubmail1;", 1 },
    { "  v =\tstubmail1 ; junk", 1 },
    { "v=stubmail1 x", 1 },
    { "v=stubmail10", 0 },
    { "v=stubmail2; outbox=x", 0 },
    { "v=spf1 -all", 0 },
    { "x=1; v=stubmail1", 0 },
    { "", 0 },
    { "v=", 0 },
};

static const struct {
    const char *in;
    int ok;
} resolvers[] = {
    { "127.0.0.1:53", 1 },
    { "[::1]:5353", 1 },
    { "127.0.0.1", 0 },
    { "localhost:53", 0 },
    { "::1:53", 0 },
    { "127.0.0.1:53x", 0 },
    { "", 0 },
};

int main(void)
{
    char big[SM_TXT_MAX + 64], out[SM_TXT_MAX + 1], url[SM_TXT_URL_MAX + 16];
    struct sockaddr_storage ss;
    socklen_t sslen;
    sm_txt_record rec, again;
    const char *why;
    size_t i, len, fill;
    int rc;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        why = NULL;
        len = cases[i].len ? cases[i].len : strlen(cases[i].in);
        rc = sm_txt_parse(cases[i].in, len, &rec, &why);
        if (cases[i].want) {
            if (rc == 0 && sm_txt_format(&rec, out, sizeof out) < 0)
                strcpy(out, "(does not format)");
            is_str(rc == 0 ? out : why, cases[i].want, "case %zu accepted", i);
        } else {
            ok(rc == -1 && why != NULL && rec.outbox[0] == '\0', "case %zu refused (%s)", i,
               why ? why : "accepted!");
        }
    }

    /* what the struct says beyond the canonical text */
    rc = sm_txt_parse(cases[0].in, strlen(cases[0].in), &rec, &why);
    ok(rc == 0 && rec.outbox_https == 1 && rec.udp_addrlen == sizeof(struct sockaddr_in)
       && rec.udp_addr.ss_family == AF_INET
       && ntohs(((struct sockaddr_in *)&rec.udp_addr)->sin_port) == 20090,
       "https and udp sockaddr of the example record");
    rc = sm_txt_parse(cases[1].in, strlen(cases[1].in), &rec, &why);
    ok(rc == 0 && rec.udp[0] == '\0' && rec.udp_addrlen == 0, "no udp= means no address");
    rc = sm_txt_parse(cases[9].in, strlen(cases[9].in), &rec, &why);
    ok(rc == 0 && rec.outbox_https == 0, "http:// is recorded as such");
    rc = sm_txt_parse(cases[6].in, strlen(cases[6].in), &rec, &why);
    ok(rc == 0 && rec.udp_addr.ss_family == AF_INET6
       && rec.udp_addrlen == sizeof(struct sockaddr_in6), "IPv6 udp sockaddr");

    /* fpr-alt (docs/PROTOCOL.md "Key rotation") */
    rc = sm_txt_parse("v=stubmail1; outbox=" URL TAIL "; fpr-alt=abcdef0123456789abcdef0123456789abcdef01",
                      strlen("v=stubmail1; outbox=" URL TAIL
                             "; fpr-alt=abcdef0123456789abcdef0123456789abcdef01"), &rec, &why);
    is_str(rc == 0 ? rec.fpr_alt : why, "ABCDEF0123456789ABCDEF0123456789ABCDEF01",
           "fpr-alt parsed, uppercase");
    rc = sm_txt_parse(cases[1].in, strlen(cases[1].in), &rec, &why);
    ok(rc == 0 && rec.fpr_alt[0] == '\0', "no fpr-alt= means none");
    rc = sm_txt_parse("v=stubmail1; outbox=" URL TAIL "; fpr-alt=xyz",
                      strlen("v=stubmail1; outbox=" URL TAIL "; fpr-alt=xyz"), &rec, &why);
    is_str(rc == -1 ? why : "accepted", "fpr-alt is not 40 or 64 hex digits",
           "a malformed fpr-alt makes the record invalid");

    /* the canonical form parses back to the same struct */
    rc = sm_txt_parse(cases[3].in, strlen(cases[3].in), &rec, &why);
    len = (size_t)sm_txt_format(&rec, out, sizeof out);
    ok(rc == 0 && sm_txt_parse(out, len, &again, &why) == 0
       && memcmp(&rec, &again, sizeof rec) == 0, "canonical form round-trips");
    ok(sm_txt_format(&rec, out, 10) == -1, "format into a small buffer fails");

    /* length limits: 1024 octets in all, 512 in the URL */
    snprintf(big, sizeof big, "v=stubmail1; outbox=" URL TAIL "; pad=");
    fill = SM_TXT_MAX - strlen(big);
    memset(big + strlen(big), 'x', fill);
    big[SM_TXT_MAX] = '\0';
    ok(sm_txt_parse(big, SM_TXT_MAX, &rec, &why) == 0, "1024-octet record accepted");
    strcat(big, "x");
    rc = sm_txt_parse(big, SM_TXT_MAX + 1, &rec, &why);
    ok(rc == -1, "1025-octet record refused (%s)", why);
    snprintf(url, sizeof url, "https://b.example/");
    memset(url + strlen(url), 'u', SM_TXT_URL_MAX - strlen(url));
    url[SM_TXT_URL_MAX] = '\0';
    snprintf(big, sizeof big, "v=stubmail1; outbox=%s" TAIL, url);
    ok(sm_txt_parse(big, strlen(big), &rec, &why) == 0 && strcmp(rec.outbox, url) == 0,
       "512-octet URL accepted");
    strcat(url, "u");
    snprintf(big, sizeof big, "v=stubmail1; outbox=%s" TAIL, url);
    rc = sm_txt_parse(big, strlen(big), &rec, &why);
    ok(rc == -1, "513-octet URL refused (%s)", why);
    /* the most tags a record can hold, all distinct */
    strcpy(big, "v=stubmail1; outbox=" URL TAIL);
    for (i = 0; strlen(big) + 6 <= SM_TXT_MAX; i++)
        sprintf(big + strlen(big), ";%c%c%c=", 'a' + (int)(i / 676), 'a' + (int)(i / 26 % 26),
                'a' + (int)(i % 26));
    ok(sm_txt_parse(big, strlen(big), &rec, &why) == 0, "%zu empty unknown tags accepted", i);

    for (i = 0; i < sizeof classify / sizeof classify[0]; i++)
        ok(sm_txt_is_stubmail(classify[i].in, strlen(classify[i].in)) == classify[i].want,
           "\"%s\" is %sa stubmail record", classify[i].in, classify[i].want ? "" : "not ");

    for (i = 0; i < sizeof resolvers / sizeof resolvers[0]; i++) {
        why = NULL;
        rc = sm_dns_resolver_parse(resolvers[i].in, &ss, &sslen, &why);
        ok(resolvers[i].ok ? rc == 0 && sslen > 0 : rc == -1 && why != NULL,
           "resolver \"%s\" %s (%s)", resolvers[i].in, resolvers[i].ok ? "accepted" : "refused",
           why ? why : "-");
    }

    is_str(sm_dns_status_name(SM_DNS_FOUND), "found", "status names");
    is_str(sm_dns_status_name(SM_DNS_TEMPFAIL), "tempfail", "status names");
    return tap_done();
}
