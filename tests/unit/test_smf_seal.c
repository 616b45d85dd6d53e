/* Unit tests: which keys the milter encrypts a stored message to
 * (milter/smf_seal.c, smf_seal_keylist): every pulling domain's key once,
 * then the recipients' own keys not already named, at most max_keys. */
#include <stdlib.h>
#include <string.h>

#include "smf.h"
#include "tap.h"

#define FPR_B "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
#define FPR_C "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"
#define FPR_D "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD"
#define FPR_R1 "1111111111111111111111111111111111111111"
#define FPR_R2 "2222222222222222222222222222222222222222"

static void domain(smf_msg *msg, const char *name, int pulling, const char *fpr)
{
    smf_domain *d = &msg->domains[msg->ndomains++];

    memset(d, 0, sizeof *d);
    strcpy(d->name, name);
    d->pulling = pulling;
    strcpy(d->fpr, fpr);
}

static void rcpt(smf_msg *msg, const char *keyfpr)
{
    smf_rcpt *r = &msg->rcpts[msg->nrcpts++];

    memset(r, 0, sizeof *r);
    r->pulling = 1;
    strcpy(r->keyfpr, keyfpr);
}

/* fprs as one string "A,B,..." (first letters of each key are enough) */
static const char *names(const char **fprs, size_t n)
{
    static char out[256];
    size_t i;

    out[0] = '\0';
    for (i = 0; i < n; i++) {
        if (i)
            strcat(out, ",");
        strncat(out, fprs[i], 1);
    }
    return out;
}

int main(void)
{
    smf_domain domains[8];
    smf_rcpt rcpts[8];
    smf_msg msg;
    const char *fprs[17];
    size_t n, ndom, skipped;

    memset(&msg, 0, sizeof msg);
    msg.domains = domains;
    msg.rcpts = rcpts;

    domain(&msg, "b.example", 1, FPR_B);
    domain(&msg, "c.example", 0, FPR_C);            /* pushed: not a recipient key */
    domain(&msg, "d.example", 1, FPR_D);
    domain(&msg, "d2.example", 1, "dddddddddddddddddddddddddddddddddddddddd");  /* hosted alike */
    rcpt(&msg, "");                                 /* no key of its own */
    rcpt(&msg, FPR_R1);
    rcpt(&msg, FPR_B);                              /* its own key is the domain's */
    rcpt(&msg, FPR_R1);                             /* named twice */
    rcpt(&msg, FPR_R2);

    memset(fprs, 0, sizeof fprs);
    n = smf_seal_keylist(&msg, fprs, 64, &ndom, &skipped);
    is_str(names(fprs, n), "B,D,1,2", "domain keys once each, then the recipients' own");
    ok(ndom == 2, "two domain keys (got %zu)", ndom);
    ok(skipped == 0, "nothing left out (got %zu)", skipped);
    ok(fprs[n] == NULL, "the list ends with NULL");

    memset(fprs, 0, sizeof fprs);
    n = smf_seal_keylist(&msg, fprs, 3, &ndom, &skipped);
    is_str(names(fprs, n), "B,D,1", "max_keys caps the recipients' keys");
    ok(skipped == 1, "the one left out is counted (got %zu)", skipped);

    memset(fprs, 0, sizeof fprs);
    n = smf_seal_keylist(&msg, fprs, 1, &ndom, &skipped);
    is_str(names(fprs, n), "B,D", "every domain key, whatever max_keys");
    ok(ndom == 2 && skipped == 3, "each recipient whose key is left out counts, 3 (got %zu)",
       skipped);

    msg.ndomains = 0;
    msg.nrcpts = 0;
    domain(&msg, "c.example", 0, FPR_C);
    rcpt(&msg, "");
    n = smf_seal_keylist(&msg, fprs, 64, &ndom, &skipped);
    ok(n == 0 && ndom == 0 && skipped == 0, "no pulling domain, no key");
    return tap_done();
}
