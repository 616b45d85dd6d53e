/* Unit tests: sm_authres finds the Authentication-Results fields that claim
 * to be ours (RFC 8601 section 5), whole, in the header section only, fed in
 * one piece or one octet at a time. */
#include <stdio.h>
#include <string.h>

#include "sm_authres.h"
#include "tap.h"

struct ar_case {
    const char *what;
    const char *msg;
    const char *kept;       /* the message without the ranges found */
};

#define BODY "\r\nAuthentication-Results: b.example; in the body\r\n"

static const struct ar_case cases[] = {
    { "ours removed, others kept",
      "From: a@a.example\r\nAuthentication-Results: b.example; stubmail=pass\r\n"
      "Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n" BODY,
      "From: a@a.example\r\n"
      "Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n" BODY },
    { "case, blanks before the colon, nested comment, continuation line",
      "authentication-results :  (c (nested)) B.Example ;\r\n\tdkim=pass\r\nTo: b@b.example\r\n" BODY,
      "To: b@b.example\r\n" BODY },
    { "authserv-id on a continuation line",
      "Authentication-Results:\r\n b.example; x=y\r\nTo: b@b.example\r\n" BODY,
      "To: b@b.example\r\n" BODY },
    { "quoted authserv-id",
      "Authentication-Results: \"b.example\"; x\r\nTo: b@b.example\r\n" BODY,
      "To: b@b.example\r\n" BODY },
    { "a longer name that starts with ours is not ours",
      "Authentication-Results: b.example.evil; x\r\n" BODY,
      "Authentication-Results: b.example.evil; x\r\n" BODY },
    { "another field name is not ours",
      "X-Authentication-Results: b.example; x\r\nAuthentication-Results-X: b.example\r\n" BODY,
      "X-Authentication-Results: b.example; x\r\nAuthentication-Results-X: b.example\r\n" BODY },
    { "the last field before the empty line",
      "To: b@b.example\r\nAuthentication-Results: b.example; none\r\n" BODY,
      "To: b@b.example\r\n" BODY },
    { "LF line ends",
      "Authentication-Results: b.example; x\nTo: b@b.example\n\nAuthentication-Results: b.example; b\n",
      "To: b@b.example\n\nAuthentication-Results: b.example; b\n" },
    { "no body: the header runs to the end",
      "To: b@b.example\r\nAuthentication-Results: b.example; x",
      "To: b@b.example\r\n" },
    { "a message that starts with the empty line has no header",
      "\r\nAuthentication-Results: b.example; x\r\n",
      "\r\nAuthentication-Results: b.example; x\r\n" },
    { "empty authserv-id is not ours",
      "Authentication-Results: ; x\r\n" BODY,
      "Authentication-Results: ; x\r\n" BODY },
    { "several in a row",
      "Authentication-Results: b.example; 1\r\nAuthentication-Results: b.example; 2\r\n"
      " folded\r\nAuthentication-Results: b.example; 3\r\n" BODY,
      BODY },
};

/* The message without the ranges, or NULL if the ranges are not ascending,
 * disjoint and inside it. */
static const char *cut(const char *msg, const sm_authres_scan *s, char *out, size_t outlen)
{
    long long pos = 0, len = (long long)strlen(msg);
    size_t o = 0, i;

    for (i = 0; i < s->n; i++) {
        if (s->ranges[i].from < pos || s->ranges[i].to <= s->ranges[i].from
            || s->ranges[i].to > len)
            return NULL;
        memcpy(out + o, msg + pos, (size_t)(s->ranges[i].from - pos));
        o += (size_t)(s->ranges[i].from - pos);
        pos = s->ranges[i].to;
    }
    if (o + (size_t)(len - pos) >= outlen)
        return NULL;
    memcpy(out + o, msg + pos, (size_t)(len - pos));
    out[o + (size_t)(len - pos)] = '\0';
    return out;
}

int main(void)
{
    char out[1024];
    size_t i, j;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct ar_case *c = &cases[i];
        sm_authres_scan whole, bytes;
        size_t len = strlen(c->msg);
        int r = 0;

        sm_authres_init(&whole, "b.example");
        ok(sm_authres_feed(&whole, c->msg, len) >= 0 && sm_authres_end(&whole) == 0,
           "%s: scanned", c->what);
        is_str(cut(c->msg, &whole, out, sizeof out), c->kept, "  in one piece");
        sm_authres_init(&bytes, "b.example");
        for (j = 0; j < len && r == 0; j++)
            r = sm_authres_feed(&bytes, c->msg + j, 1);
        ok(r >= 0 && sm_authres_end(&bytes) == 0, "  octet by octet: scanned");
        is_str(cut(c->msg, &bytes, out, sizeof out), c->kept, "  octet by octet");
        sm_authres_free(&whole);
        sm_authres_free(&bytes);
    }
    ok(sm_authres_claims("Authentication-Results: b.example;", 34, "b.example"), "claims");
    ok(!sm_authres_claims("Authentication-Results", 22, "b.example"), "no colon: not a field");
    return tap_done();
}
