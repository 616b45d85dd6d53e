/* sm_txt — the _stubmail TXT record's grammar (sm_txt.h): parse, format,
 * and the "IP:port" addresses of udp= and of resolver settings.
 *
 * The parser is strict: a record the next implementation might read
 * differently is refused rather than guessed at, because the milter decides
 * from it where mail goes and pollerd which key to trust. Pure code: no
 * network, no resolver; the lookup is sm_dns.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sm_log.h"
#include "sm_addr.h"
#include "sm_txt.h"

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
        } else if (name_is(name, nlen, "fpr-alt")) {
            if (check_fpr(val, vlen, rec->fpr_alt, why) != 0) {
                *why = "fpr-alt is not 40 or 64 hex digits";
                goto leave;
            }
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
    int n = snprintf(out, outlen, "v=stubmail1; outbox=%s; %s%s%sfpr=%s; %s%s%spolicy=%s",
                     rec->outbox, rec->udp[0] ? "udp=" : "", rec->udp, rec->udp[0] ? "; " : "",
                     rec->fpr, rec->fpr_alt[0] ? "fpr-alt=" : "", rec->fpr_alt,
                     rec->fpr_alt[0] ? "; " : "", rec->policy);

    return n < 0 || (size_t)n >= outlen ? -1 : n;
}
