/* Unit tests: the RFC 3461 parameters the milter keeps for a diverted
 * recipient (milter/smf_dsn.c): NOTIFY and ORCPT of RCPT TO, ENVID of
 * MAIL FROM, well formed and hostile. What is not well formed is left out
 * and said; nothing a notice's header would carry may hold a line break. */
#include <string.h>

#include "smf.h"
#include "tap.h"

/* smf_dsn_rcpt_args on "<bob@b.example>" and the given parameters */
static void rcpt(smf_dsn_rcpt *d, char *why, size_t whylen, char *p1, char *p2)
{
    char *argv[] = { "<bob@b.example>", p1, p2, NULL };

    smf_dsn_rcpt_args(argv, d, why, whylen);
}

int main(void)
{
    smf_dsn_rcpt d;
    char why[128], envid[SMF_DSN_ENVID_MAX + 1], big[2048];
    char *no_args[] = { "<bob@b.example>", NULL };
    char *env_ok[] = { "<alice@a.example>", "BODY=8BITMIME", "ENVID=QQ+2B314", NULL };
    char *env_crlf[] = { "<alice@a.example>", "ENVID=a+0D+0ABcc:+20x", NULL };
    char *env_long[] = { "<alice@a.example>", big, NULL };

    smf_dsn_rcpt_args(no_args, &d, why, sizeof why);
    ok(!d.has_notify && !d.has_orcpt && d.notify[0] == '\0' && d.orcpt[0] == '\0'
       && why[0] == '\0', "no parameters: nothing asked, nothing said");

    rcpt(&d, why, sizeof why, "NOTIFY=SUCCESS", NULL);
    is_str(d.notify, "success", "NOTIFY=SUCCESS");
    ok(why[0] == '\0', "well formed: nothing said");
    rcpt(&d, why, sizeof why, "notify=delay,Failure,SUCCESS", NULL);
    is_str(d.notify, "success,failure,delay", "keywords in any case and order, stored in one order");
    rcpt(&d, why, sizeof why, "NOTIFY=NEVER", NULL);
    is_str(d.notify, "never", "NOTIFY=NEVER");
    rcpt(&d, why, sizeof why, "NOTIFY=SUCCESS,BOGUS,,FAILURE", NULL);
    is_str(d.notify, "success,failure", "an unknown keyword and an empty one are left out");
    ok(strstr(why, "BOGUS") != NULL, "and the unknown one is named: %s", why);
    rcpt(&d, why, sizeof why, "NOTIFY=BOGUS", NULL);
    ok(d.has_notify && d.notify[0] == '\0', "nothing known left: as if not given");
    rcpt(&d, why, sizeof why, "NOTIFY=NEVER,SUCCESS", NULL);
    ok(d.notify[0] == '\0' && strstr(why, "NEVER") != NULL,
       "NEVER with another keyword: ignored as a whole");
    rcpt(&d, why, sizeof why, "NOTIFY=", NULL);
    ok(d.has_notify && d.notify[0] == '\0' && why[0] != '\0', "NOTIFY= empty: ignored, said");
    rcpt(&d, why, sizeof why, "NOTIFY=SUCCESS,BOGUS", "ORCPT=rfc822");
    ok(strstr(why, "BOGUS") != NULL && strstr(why, "ORCPT") != NULL,
       "two bad parameters: both said (%s)", why);
    rcpt(&d, why, sizeof why, "NOTIFY=SUCCESS", "NOTIFY=NEVER");
    is_str(d.notify, "success", "given twice: the first counts");

    rcpt(&d, why, sizeof why, "ORCPT=rfc822;Bob+2BTag@B.example", "NOTIFY=FAILURE");
    is_str(d.orcpt, "rfc822;Bob+Tag@B.example", "ORCPT decoded (xtext +2B)");
    is_str(d.notify, "failure", "beside NOTIFY");
    rcpt(&d, why, sizeof why, "ORCPT=rfc822;a+0D+0ABcc:evil@x", NULL);
    ok(d.has_orcpt && d.orcpt[0] == '\0' && why[0] != '\0',
       "ORCPT decoding to CR LF: ignored (it would be a header line of its own)");
    rcpt(&d, why, sizeof why, "ORCPT=rfc822;bob+2g@b.example", NULL);
    ok(d.orcpt[0] == '\0', "lowercase hex in xtext: not xtext");
    rcpt(&d, why, sizeof why, "ORCPT=rfc822;bob+4", NULL);
    ok(d.orcpt[0] == '\0', "a cut hexchar at the end: not xtext");
    rcpt(&d, why, sizeof why, "ORCPT=rfc822;bob+", NULL);
    ok(d.orcpt[0] == '\0', "a lone + at the end: not xtext");
    rcpt(&d, why, sizeof why, "ORCPT=rfc822;bob=x@b.example", NULL);
    ok(d.orcpt[0] == '\0', "a raw = is not xtext");
    rcpt(&d, why, sizeof why, "ORCPT=bob@b.example", NULL);
    ok(d.orcpt[0] == '\0' && strstr(why, "type") != NULL, "no address type: ignored");
    rcpt(&d, why, sizeof why, "ORCPT=rfc 822;bob@b.example", NULL);
    ok(d.orcpt[0] == '\0', "a bad address type: ignored");
    rcpt(&d, why, sizeof why, "ORCPT=rfc822;", NULL);
    ok(d.orcpt[0] == '\0', "no address: ignored");
    rcpt(&d, why, sizeof why, "ORCPT=rfc822;+C3+A9@b.example", NULL);
    ok(d.orcpt[0] == '\0', "8-bit octets: ignored");
    memcpy(big, "ORCPT=rfc822;", 13);
    memset(big + 13, 'a', 600);
    big[613] = '\0';
    rcpt(&d, why, sizeof why, big, NULL);
    ok(d.orcpt[0] == '\0' && why[0] != '\0', "longer than 500: ignored, nothing overrun");

    smf_dsn_envid_arg(env_ok, envid, sizeof envid, why, sizeof why);
    is_str(envid, "QQ+314", "ENVID decoded");
    smf_dsn_envid_arg(no_args, envid, sizeof envid, why, sizeof why);
    ok(envid[0] == '\0' && why[0] == '\0', "no ENVID");
    smf_dsn_envid_arg(env_crlf, envid, sizeof envid, why, sizeof why);
    ok(envid[0] == '\0' && why[0] != '\0', "ENVID decoding to CR LF: ignored, said");
    memcpy(big, "ENVID=", 6);
    memset(big + 6, 'e', 101);
    big[107] = '\0';
    smf_dsn_envid_arg(env_long, envid, sizeof envid, why, sizeof why);
    ok(envid[0] == '\0', "ENVID longer than 100: ignored");
    return tap_done();
}
