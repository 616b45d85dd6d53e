/* Unit tests: address and domain syntax (docs/PROTOCOL.md, "Address"). */
#include <string.h>

#include "sm_addr.h"
#include "tap.h"

static const struct {
    const char *in;
    const char *want;   /* NULL: must be refused */
    int pattern;
} cases[] = {
    { "alice@a.example", "alice@a.example", 0 },
    { "<Alice@A.Example>", "alice@a.example", 0 },
    { "  <bob@b.example>  ", "bob@b.example", 0 },
    { "first.last+tag@sub.b.example", "first.last+tag@sub.b.example", 0 },
    { "o'neil@a.example", "o'neil@a.example", 0 },
    { "x@a-b.example", "x@a-b.example", 0 },
    { "", NULL, 0 },
    { "<>", NULL, 0 },
    { "alice", NULL, 0 },
    { "@a.example", NULL, 0 },
    { "alice@", NULL, 0 },
    { "a@b@c.example", NULL, 0 },
    { "al ice@a.example", NULL, 0 },
    { "alice@a..example", NULL, 0 },
    { "alice@-a.example", NULL, 0 },
    { "alice@a-.example", NULL, 0 },
    { "alice@a_b.example", NULL, 0 },
    { ".alice@a.example", NULL, 0 },
    { "alice.@a.example", NULL, 0 },
    { "al..ice@a.example", NULL, 0 },
    { "al\"ice@a.example", NULL, 0 },
    { "al'ice;drop table@a.example", NULL, 0 },
    { "al\\ice@a.example", NULL, 0 },
    { "al\rice@a.example", NULL, 0 },
    { "al\x80ice@a.example", NULL, 0 },
    { "alice@a.example\n", NULL, 0 },
    { "<alice@a.example", NULL, 0 },
    { "alice@../../etc/passwd", NULL, 0 },
    { "*@a.example", NULL, 0 },
    { "*@A.example", "*@a.example", 1 },
    { "alice@a.example", "alice@a.example", 1 },
    { "*x@a.example", "*x@a.example", 1 },
    { "*@", NULL, 1 },
    { "**@a.example", "**@a.example", 1 },
};

int main(void)
{
    char out[SM_ADDR_MAX + 1], big[400], label[80];
    const char *why;
    size_t i;
    int rc;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        why = NULL;
        rc = cases[i].pattern ? sm_pattern_normalize(cases[i].in, out, sizeof out, &why)
                              : sm_addr_normalize(cases[i].in, out, sizeof out, &why);
        if (cases[i].want)
            is_str(rc == 0 ? out : why, cases[i].want, "case %zu accepted", i);
        else
            ok(rc == -1 && why != NULL, "case %zu refused (%s)", i, why ? why : "accepted!");
    }

    /* length limits: 64-octet local part, 320 in all, 63-octet labels */
    memset(big, 'a', 65);
    strcpy(big + 65, "@a.example");
    ok(sm_addr_normalize(big, out, sizeof out, &why) == -1, "65-octet local part refused");
    strcpy(big + 64, "@a.example");
    ok(sm_addr_normalize(big + 1, out, sizeof out, &why) == 0, "64-octet local part accepted");
    memset(label, 'b', 64);
    label[64] = '\0';
    snprintf(big, sizeof big, "x@%s.example", label);
    ok(sm_addr_normalize(big, out, sizeof out, &why) == -1, "64-octet label refused");
    ok(sm_addr_normalize("alice@a.example", out, 8, &why) == -1, "too small buffer refused");

    is_str(sm_addr_domain("bob@b.example"), "b.example", "domain of an address");
    is_str(sm_addr_domain("*@c.example"), "c.example", "domain of a pattern");
    ok(sm_domain_valid("a.example"), "a.example valid");
    ok(!sm_domain_valid("a.example."), "trailing dot invalid");
    ok(!sm_domain_valid(""), "empty domain invalid");
    return tap_done();
}
