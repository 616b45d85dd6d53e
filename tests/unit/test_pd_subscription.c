/* Unit tests of stubmail-pollerd's subscription planning
 * (pollerd/pd_subscription.c): the change a cycle sends is exactly the
 * difference between the address book and what the outbox last confirmed
 * (pairs it lacks added, pairs it has too many removed), nothing when
 * nothing changed, and a reset to the whole address book when the
 * confirmed subscription is unknown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "pd.h"
#include "tap.h"

static sm_pair pair(const char *from, const char *to)
{
    sm_pair p;

    memset(&p, 0, sizeof(p));
    snprintf(p.from, sizeof(p.from), "%s", from);
    snprintf(p.to, sizeof(p.to), "%s", to);
    return p;
}

/* "from>to,from>to" of n pairs, for comparing lists in one line. */
static const char *list(const sm_pair *p, size_t n)
{
    static char buf[4][1024];
    static int which;
    char *out = buf[which++ % 4];
    size_t i, off = 0;

    out[0] = '\0';
    for (i = 0; i < n && off < 1000; i++)
        off += (size_t)snprintf(out + off, 1024 - off, "%s%s>%s", i ? "," : "", p[i].from,
                                p[i].to);
    return out;
}

/* The outbox confirmed these pairs (sorted, as pd_subscription_done keeps
 * them). */
static void confirmed(pd_session *s, sm_pair *pairs, size_t n)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->domain, sizeof(s->domain), "a.example");
    s->sub_known = 1;
    s->sub_version = 7;
    s->sub_pairs = pairs;
    s->sub_npairs = n;
}

int main(void)
{
    sm_pair book[4], outbox[4];
    pd_subchange plan;
    pd_session s;
    pd_ctx ctx;
    pd_domain *d;

    sm_log_open("test_pd_subscription", 1);   /* skipped rows are told on stderr */
    memset(&plan, 0, sizeof(plan));

    /* the address book, sorted by (to, from) */
    book[0] = pair("*@a.example", "bob@b.example");
    book[1] = pair("alice@a.example", "bob@b.example");
    book[2] = pair("alice@a.example", "carol@b.example");

    /* nothing known (a start, a 409): a reset to the whole book */
    memset(&s, 0, sizeof(s));
    ok(pd_subscription_plan(&plan, book, 3, &s) == 0, "unknown: planned");
    ok(plan.reset, "unknown: a reset");
    is_str(list(plan.add, plan.nadd), list(book, 3), "unknown: the reset sends the whole book");
    ok(plan.nremove == 0 && !plan.remove, "unknown: nothing to remove");

    /* the outbox has exactly the book: nothing is sent, nothing allocated */
    outbox[0] = book[0];
    outbox[1] = book[1];
    outbox[2] = book[2];
    confirmed(&s, outbox, 3);
    ok(pd_subscription_plan(&plan, book, 3, &s) == 0, "in step: planned");
    ok(!plan.reset && plan.nadd == 0 && plan.nremove == 0, "in step: no change");
    ok(!plan.add && !plan.remove, "in step: nothing allocated");

    /* the book gained carol's pair and lost bob's wildcard since */
    confirmed(&s, outbox, 2);                   /* *@a.example>bob, alice>bob */
    ok(pd_subscription_plan(&plan, book + 1, 2, &s) == 0, "changed: planned");
    ok(!plan.reset, "changed: not a reset");
    is_str(list(plan.add, plan.nadd), "alice@a.example>carol@b.example",
           "changed: adds what the outbox lacks");
    is_str(list(plan.remove, plan.nremove), "*@a.example>bob@b.example",
           "changed: removes what the book no longer has");

    /* the outbox has pairs on both sides of the book's */
    outbox[0] = pair("alice@a.example", "amy@b.example");
    outbox[1] = pair("alice@a.example", "bob@b.example");
    outbox[2] = pair("zed@a.example", "zoe@b.example");
    confirmed(&s, outbox, 3);
    ok(pd_subscription_plan(&plan, book, 3, &s) == 0, "interleaved: planned");
    is_str(list(plan.add, plan.nadd),
           "*@a.example>bob@b.example,alice@a.example>carol@b.example",
           "interleaved: the additions, in order");
    is_str(list(plan.remove, plan.nremove),
           "alice@a.example>amy@b.example,zed@a.example>zoe@b.example",
           "interleaved: the removals, in order");

    /* an empty book: everything goes */
    ok(pd_subscription_plan(&plan, book, 0, &s) == 0, "empty book: planned");
    ok(plan.nadd == 0 && plan.nremove == 3, "empty book: all three removed");

    /* an empty subscription: everything comes */
    confirmed(&s, NULL, 0);
    ok(pd_subscription_plan(&plan, book, 3, &s) == 0, "empty outbox: planned");
    ok(!plan.reset && plan.nadd == 3 && plan.nremove == 0, "empty outbox: all three added");
    pd_subscription_plan_free(&plan);
    ok(!plan.add && !plan.nadd, "freed");

    /* the domain's plan: address book rows normalised, sorted and made a
     * set first; an outbox without subscriptions gets no change at all */
    memset(&ctx, 0, sizeof(ctx));
    ctx.conf.domain = "b.example";
    d = pd_domain_get(&ctx, "a.example");
    ok(d != NULL, "domain made");
    ok(pd_domain_add_pair(d, "Alice@A.example", "carol@b.example") == 0
       && pd_domain_add_pair(d, "alice@a.example", "bob@b.example") == 0
       && pd_domain_add_pair(d, "alice@a.example", "Bob@b.example") == 0,
       "address book rows taken");
    ok(pd_domain_add_pair(d, "mallory@c.example", "bob@b.example") != 0,
       "a contact at another domain is skipped");
    pd_domain_sort_pairs(d);
    is_str(list(d->pairs, d->npairs),
           "alice@a.example>bob@b.example,alice@a.example>carol@b.example",
           "sorted by recipient, duplicates dropped");
    outbox[0] = pair("alice@a.example", "bob@b.example");
    confirmed(&s, outbox, 1);
    d->sess = &s;
    ok(pd_subscription_begin(d) == 0 && pd_subscription_pending(d), "domain: a change is due");
    is_str(list(d->sub.add, d->sub.nadd), "alice@a.example>carol@b.example",
           "domain: adds carol's pair only");
    s.legacy = 1;
    pd_subscription_plan_free(&d->sub);
    ok(pd_subscription_begin(d) == 0 && !pd_subscription_pending(d),
       "no subscriptions at that outbox: no change");
    d->sess = NULL;
    pd_domain_free(d);
    return tap_done();
}
