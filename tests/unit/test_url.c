/* Unit tests: sm_url_allowed — which outbox URLs a key fetch (and pollerd)
 * may use: https always, http only when allowed and only to a loopback
 * address literal; never user info, fragments or other schemes. */
#include <stddef.h>

#include "sm_keyfetch.h"
#include "tap.h"

struct url_case {
    const char *url;
    int allow_http;
    int want;           /* 0 allowed, -1 refused */
    const char *what;
};

static const struct url_case cases[] = {
    { "https://stubmail.a.example/stubmail", 0, 0, "https to a name" },
    { "https://stubmail.a.example:8443/stubmail/", 0, 0, "https with port and trailing slash" },
    { "https://192.0.2.1/stubmail", 0, 0, "https to an IPv4 literal" },
    { "https://[2001:db8::1]:443/x", 0, 0, "https to an IPv6 literal" },
    { "https://a.example/stubmail?v=1", 0, 0, "https with a query" },
    { "http://127.0.0.2:18080/stubmail", 0, -1, "http refused unless allowed" },
    { "http://127.0.0.2:18080/stubmail", 1, 0, "http to 127.0.0.2 when allowed" },
    { "http://127.255.255.254/stubmail", 1, 0, "http anywhere in 127/8 when allowed" },
    { "http://[::1]:18080/stubmail", 1, 0, "http to [::1] when allowed" },
    { "http://128.0.0.1/stubmail", 1, -1, "http to 128.0.0.1 refused" },
    { "http://10.0.0.1/stubmail", 1, -1, "http to a private address refused" },
    { "http://localhost/stubmail", 1, -1, "http to a name (even localhost) refused" },
    { "http://a.example/stubmail", 1, -1, "http to a DNS name refused" },
    { "http://[::2]/stubmail", 1, -1, "http to another IPv6 address refused" },
    { "http://[::ffff:127.0.0.1]/x", 1, -1, "http to a v4-mapped address refused" },
    { "https://user:pw@a.example/stubmail", 0, -1, "user info refused" },
    { "https://a.example/stubmail#frag", 0, -1, "fragment refused" },
    { "ftp://a.example/stubmail", 1, -1, "ftp refused" },
    { "file:///etc/passwd", 1, -1, "file refused" },
    { "HTTPS://a.example/stubmail", 0, -1, "uppercase scheme refused (the record grammar says lowercase)" },
    { "a.example/stubmail", 1, -1, "no scheme refused" },
    { "https://", 0, -1, "no host refused" },
    { "https://a.example/st ubmail", 0, -1, "blank inside refused" },
    { "", 0, -1, "empty refused" },
};

int main(void)
{
    char why[256];
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct url_case *c = &cases[i];
        sm_https_opts opts = { NULL, c->allow_http, 10 };
        int got = sm_url_allowed(c->url, &opts, why, sizeof why);

        ok(got == c->want, "%s: %s%s%s", c->what, c->url, got ? " -> " : "", got ? why : "");
        if (got != 0)
            ok(why[0] != '\0', "  says why");
        else
            is_str(why, "", "  why is empty when allowed");
    }
    ok(sm_url_allowed(NULL, NULL, why, sizeof why) == -1, "NULL refused");
    ok(sm_url_allowed("http://127.0.0.1/", NULL, why, sizeof why) == -1,
       "no options: http refused");
    ok(sm_url_allowed("https://a.example/", NULL, NULL, 0) == 0, "why may be NULL");
    return tap_done();
}
