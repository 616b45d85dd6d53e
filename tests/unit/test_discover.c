/* Unit tests: sm_discover_run — the precedence of the admin's peer row over
 * the cached or live _stubmail record, and dnssec_require applied to a
 * cached record that was or was not validated, over a store kept in this file's
 * tables. A live lookup goes to 127.0.0.1:1, where nothing listens: the
 * resolver's "connection refused" is a DNS temporary failure at once. */
#include <stddef.h>
#include <string.h>

#include "sm_discover.h"
#include "sm_log.h"
#include "tap.h"

#define DEAD_RESOLVER "127.0.0.1:1"

struct peer_row { const char *domain, *outbox, *fpr; int pulling; };
struct cache_row {
    const char *domain;
    sm_dns_status status;
    const char *outbox, *fpr, *why;
    int validated;
};

static const struct peer_row *peers;
static const struct cache_row *cache;
static int fail_peer, calls_peer, calls_get, calls_put;
static char last_domain[64];

static int t_peer(void *baton, const char *domain, sm_peer_info *out, char *why, size_t whylen)
{
    const struct peer_row *p;

    calls_peer++;
    snprintf(last_domain, sizeof last_domain, "%s", domain);
    if (fail_peer) {
        sm_why(why, whylen, "%s: reading peer: connection lost", domain);
        return -1;
    }
    for (p = peers; p && p->domain; p++) {
        if (strcmp(p->domain, domain) == 0) {
            out->from_peer_table = 1;
            strcpy(out->outbox, p->outbox);
            strcpy(out->fpr, p->fpr);
            out->pulling = p->pulling;
            return 1;
        }
    }
    return 0;
}

static int t_cache_get(void *baton, const char *domain, sm_dns_status *status, int *validated,
                       sm_txt_record *rec, char *why, size_t whylen)
{
    const struct cache_row *c;

    calls_get++;
    for (c = cache; c && c->domain; c++) {
        if (strcmp(c->domain, domain) == 0) {
            *status = c->status;
            *validated = c->validated;
            if (c->status == SM_DNS_FOUND) {
                strcpy(rec->outbox, c->outbox);
                strcpy(rec->fpr, c->fpr);
                strcpy(rec->policy, "p1");
            } else {
                sm_why(why, whylen, "%s", c->why);
            }
            return 1;
        }
    }
    return 0;
}

static int t_cache_put(void *baton, const char *domain, sm_dns_status status, int validated,
                       const sm_txt_record *rec, const char *dns_why, unsigned ttl,
                       char *why, size_t whylen)
{
    calls_put++;
    return 0;
}

static const sm_discover_store store = { NULL, t_peer, t_cache_get, t_cache_put };

#define FA "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define FB "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"

static const struct peer_row peer_rows[] = {
    { "full.example", "https://peer.full.example/s", FA, 1 },
    { "fpronly.example", "", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1 },
    { "optout.example", "", "", 0 },
    { "override.example", "https://admin.override.example/s", "", 1 },
    { NULL, NULL, NULL, 0 }
};
static const struct cache_row cache_rows[] = {
    { "fpronly.example", SM_DNS_FOUND, "https://dns.fpronly.example/s", FB, NULL, 0 },
    { "override.example", SM_DNS_FOUND, "https://dns.override.example/s", FB, NULL, 0 },
    { "cached.example", SM_DNS_FOUND, "https://dns.cached.example/s", FB, NULL, 0 },
    { "signed.example", SM_DNS_FOUND, "https://dns.signed.example/s", FB, NULL, 1 },
    { "none.example", SM_DNS_NONE, NULL, NULL, "NXDOMAIN", 0 },
    { NULL, 0, NULL, NULL, NULL, 0 }
};

static sm_dns_conf dns = { DEAD_RESOLVER, 0, NULL };

static int run(const char *domain, unsigned flags, sm_peer_info *out, char *why, size_t whylen)
{
    calls_peer = calls_get = calls_put = 0;
    return sm_discover_run(&store, &dns, domain, flags, out, why, whylen);
}

int main(void)
{
    sm_peer_info p;
    char why[512];
    int rc;

    peers = peer_rows;
    cache = cache_rows;

    rc = run("not a domain", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_INVALID && calls_peer + calls_get + calls_put == 0,
       "an invalid name: INVALID, no store call");

    rc = run("FULL.Example", 0, &p, why, sizeof why);
    is_str(last_domain, "full.example", "the store sees the name lowercased");
    ok(rc == 0 && p.status == SM_DNS_FOUND && p.source == SM_PEER_FROM_PEER && p.pulling
       && strcmp(p.fpr, FA) == 0 && calls_get == 0,
       "a peer row with outbox and fpr answers alone");

    rc = run("fpronly.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.source == SM_PEER_FROM_CACHE && strcmp(p.outbox, "https://dns.fpronly.example/s") == 0
       && strcmp(p.fpr, FA) == 0,
       "a peer row without outbox: outbox from the record, fpr from the peer row");
    rc = run("fpronly.example", SM_DISCOVER_FPR_ONLY, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_FOUND && p.source == SM_PEER_FROM_PEER && calls_get == 0
       && strcmp(p.fpr, FA) == 0,
       "with SM_DISCOVER_FPR_ONLY the peer row's fpr is enough");

    rc = run("override.example", SM_DISCOVER_FPR_ONLY, &p, why, sizeof why);
    ok(rc == 0 && p.source == SM_PEER_FROM_CACHE && strcmp(p.fpr, FB) == 0
       && strcmp(p.outbox, "https://admin.override.example/s") == 0,
       "peer outbox overrides the record's; fpr from the record");

    rc = run("cached.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_FOUND && p.pulling && !p.from_peer_table
       && strcmp(p.policy, "p1") == 0 && calls_put == 0,
       "a cache hit: pulling, nothing stored");
    is_str(sm_peer_source_name(p.source), "DNS (cached)", "source named for the log");

    rc = run("none.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_NONE && !p.pulling && strstr(why, "NXDOMAIN (cached)"),
       "a cached NONE: not pulling, the cached reason (%s)", why);

    rc = run("optout.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_TEMPFAIL && !p.pulling && calls_put == 0,
       "opted out by the admin: a DNS failure still answers, status TEMPFAIL (%s)", why);

    rc = run("unknown.example", 0, &p, why, sizeof why);
    ok(rc == -1 && p.status == SM_DNS_TEMPFAIL && p.source == SM_PEER_FROM_DNS && calls_put == 0,
       "no peer, no cache, DNS down: -1 with TEMPFAIL, nothing cached (%s)", why);

    rc = run("signed.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_FOUND && p.validated && p.pulling && !p.dnssec_refused,
       "a cached validated record: validated");

    dns.dnssec_require = "other.example, signed.example";
    rc = run("cached.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_FOUND && p.pulling && !p.dnssec_refused,
       "an unvalidated record of a domain the list does not name: used");
    rc = run("signed.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_FOUND && p.pulling && strcmp(p.fpr, FB) == 0,
       "a validated record of a listed domain: used");
    dns.dnssec_require = "all";
    rc = run("cached.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_NONE && p.dnssec_refused && !p.pulling && !p.fpr[0]
       && !p.outbox[0] && strstr(why, "_stubmail.cached.example: not DNSSEC-validated (cached)")
       && strstr(why, "required for cached.example"),
       "dnssec_require all: an unvalidated record is no record (%s)", why);
    rc = run("fpronly.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.dnssec_refused && p.pulling && strcmp(p.fpr, FA) == 0 && !p.outbox[0],
       "a peer row keeps its own word; the unvalidated record adds nothing");
    rc = run("full.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_FOUND && !p.dnssec_refused && calls_get == 0,
       "a peer row that answers alone needs no DNS, validated or not");
    rc = run("none.example", 0, &p, why, sizeof why);
    ok(rc == 0 && p.status == SM_DNS_NONE && !p.dnssec_refused,
       "no record is no record, validated or not");
    dns.dnssec_require = NULL;

    fail_peer = 1;
    rc = run("cached.example", 0, &p, why, sizeof why);
    ok(rc == -1 && p.status != SM_DNS_TEMPFAIL && strstr(why, "connection lost") && calls_get == 0,
       "a store error: -1, status not TEMPFAIL, the store's reason");
    fail_peer = 0;

    return tap_done();
}
