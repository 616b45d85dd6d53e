/* ctl_check.c — `stubmailctl check DOMAIN`: is a domain (ours or a peer's)
 * set up right for pull mail? Like an MTA-STS or DMARC checker, step by
 * step, each pass, fail or skip with the reason:
 *
 *   record  the _stubmail TXT record is there and parses (docs/PROTOCOL.md
 *           "Discovery")
 *   https   the outbox answers GET /v1/key over HTTPS with a certificate
 *           valid for its host (ca_file, else the system's CAs)
 *   key     that key's primary fingerprint is the record's fpr
 *   login   a login with our domain key succeeds (only when we are a
 *           stubmail domain: domain, gnupg_home and domain_key set)
 *   udp     the UDP poll responder the login answer names answers a poll
 *
 * A step that needs an earlier one that failed is skipped. The record's
 * own udp= (where stubs go) is checked for form only: stubs get no answer.
 * Exit 0 when nothing failed, 1 when a step failed. Nothing is written to
 * the database: the DNS answer is not cached. */
#define _GNU_SOURCE 1   /* nftw */
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sm_dns.h"
#include "sm_https.h"
#include "sm_pgp.h"
#include "sm_proto.h"
#include "sm_token.h"
#include "sm_udppoll.h"
#include "ctl.h"

#define CHECK_AGENT   CTL_NAME " check"
#define KEY_ANSWER_MAX (256 * 1024)
#define LOGIN_ANSWER_MAX 65536
#define UDP_WAIT_MS   2000

typedef enum { STEP_PASS, STEP_FAIL, STEP_SKIP } step_result;

typedef struct check_run {
    ctl *c;
    const char *domain;
    json_t *steps;
    int failed;
    sm_txt_record rec;
    int have_record, have_https, have_login;
    char *key;                  /* the outbox's /v1/key answer */
    size_t keylen;
    char *login_answer;
    size_t login_len;
} check_run;

static void step(check_run *r, const char *name, step_result res, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void step(check_run *r, const char *name, step_result res, const char *fmt, ...)
{
    static const char *const words[] = { "pass", "FAIL", "skip" };
    static const char *const json_words[] = { "pass", "fail", "skip" };
    char detail[1024];
    json_t *o;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (res == STEP_FAIL)
        r->failed = 1;
    if (!r->c->json) {
        printf("%-4s  %-6s  %s\n", words[res], name, detail);
        return;
    }
    o = json_object();
    json_object_set_new(o, "step", json_string(name));
    json_object_set_new(o, "result", json_string(json_words[res]));
    json_object_set_new(o, "detail", json_string(detail));
    json_array_append_new(r->steps, o);
}

static void check_record(check_run *r)
{
    char why[512], canon[SM_TXT_MAX + 1];
    sm_dns_conf dns = { r->c->conf.resolver, 0, NULL };
    unsigned ttl = 0;
    int validated = 0;
    sm_dns_status st = sm_dns_lookup(&dns, r->domain, &r->rec, &ttl, &validated, why,
                                     sizeof why);

    switch (st) {
    case SM_DNS_FOUND:
        sm_txt_format(&r->rec, canon, sizeof canon);
        r->have_record = 1;
        step(r, "record", STEP_PASS, "_stubmail.%s: %s (TTL %u s%s)", r->domain, canon, ttl,
             validated ? ", DNSSEC-validated" : ", not DNSSEC-validated");
        break;
    case SM_DNS_NONE:
        step(r, "record", STEP_FAIL, "_stubmail.%s: no stubmail record (%s): the domain does "
             "not pull, mail to it is pushed", r->domain, why);
        break;
    case SM_DNS_INVALID:
        step(r, "record", STEP_FAIL, "_stubmail.%s: invalid, which counts as none: %s",
             r->domain, why);
        break;
    default:
        step(r, "record", STEP_FAIL, "_stubmail.%s: DNS failed: %s", r->domain, why);
        break;
    }
}

static void check_https(check_run *r)
{
    sm_https_opts opts = { r->c->conf.ca_file, r->c->conf.allow_http, 10 };
    char url[SM_TXT_URL_MAX + 16], why[1024];
    long status = 0;
    int rc;

    if (!r->have_record) {
        step(r, "https", STEP_SKIP, "no record: no outbox to ask");
        return;
    }
    snprintf(url, sizeof url, "%s/v1/key", r->rec.outbox);
    if (sm_url_allowed(url, &opts, why, sizeof why) != 0) {
        step(r, "https", STEP_FAIL, "%s", why);
        return;
    }
    rc = sm_https_get(url, &opts, KEY_ANSWER_MAX, CHECK_AGENT, &r->key, &r->keylen, &status,
                      why, sizeof why);
    if (rc != 0) {
        step(r, "https", STEP_FAIL, "%s", why);
        return;
    }
    if (status != 200) {
        step(r, "https", STEP_FAIL, "GET %s answered HTTP %ld, not 200%s", url, status,
             status == 404 ? " (an outbox without a domain key, or the wrong URL)" : "");
        return;
    }
    r->have_https = 1;
    step(r, "https", STEP_PASS, "GET %s: 200 over %s", url,
         r->rec.outbox_https ? "HTTPS, certificate valid for the host"
                             : "plain http (allow_http, loopback)");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void check_key(check_run *r)
{
    char home[] = "/tmp/stubmailctl.XXXXXX", why[SM_PGP_WHY_MAX];
    int rc;

    if (!r->have_https) {
        step(r, "key", STEP_SKIP, "no key from the outbox to compare");
        return;
    }
    if (!mkdtemp(home)) {
        step(r, "key", STEP_FAIL, "cannot make a GnuPG home in /tmp: %s", strerror(errno));
        return;
    }
    rc = sm_pgp_import_public(home, r->key, r->keylen, r->rec.fpr, why, sizeof why);
    if (rc == SM_PGP_OK)
        step(r, "key", STEP_PASS, "/v1/key is the key %s the record names", r->rec.fpr);
    else
        step(r, "key", STEP_FAIL, "/v1/key is not the record's key %s: %s", r->rec.fpr, why);
    sm_pgp_stop_agent(home, why, sizeof why);
    nftw(home, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* The login body of docs/PROTOCOL.md "POST /v1/login", signed with our
 * domain key. NULL with why. */
static char *login_body(const ctl_conf *cf, const char *server, char *why, size_t whylen)
{
    char now[SM_TIME_LEN + 1], nonce[SM_NONCE_LEN + 1], statement[SM_LOGIN_STATEMENT_MAX];
    char pgp_why[SM_PGP_WHY_MAX];
    char *sig = NULL, *pub = NULL, *body = NULL;
    size_t siglen = 0, publen = 0;
    int n;

    if (sm_time_format(time(NULL), now, sizeof now) != 0
        || sm_random_hex(nonce, sizeof nonce, SM_NONCE_LEN / 2) != 0) {
        snprintf(why, whylen, "no clock or no random numbers for the statement");
        goto leave;
    }
    if ((n = sm_login_statement(server, cf->domain, now, nonce, statement, sizeof statement))
        < 0) {
        snprintf(why, whylen, "cannot build the statement for server %s", server);
        goto leave;
    }
    if (sm_pgp_export_public(cf->gnupg_home, cf->domain_key, &pub, &publen, pgp_why,
                             sizeof pgp_why) != SM_PGP_OK
        || sm_pgp_sign_detached(cf->gnupg_home, cf->domain_key, statement, (size_t)n, &sig,
                                &siglen, pgp_why, sizeof pgp_why) != SM_PGP_OK) {
        snprintf(why, whylen, "our key %s in %s: %s", cf->domain_key, cf->gnupg_home, pgp_why);
        goto leave;
    }
    if (!(body = sm_login_request_encode(cf->domain, server, now, nonce, pub, sig)))
        snprintf(why, whylen, "out of memory");
leave:
    free(sig);
    free(pub);
    return body;
}

static void check_login(check_run *r)
{
    const ctl_conf *cf = &r->c->conf;
    sm_https_opts opts = { cf->ca_file, cf->allow_http, 10 };
    char url[SM_TXT_URL_MAX + 16], why[1024];
    char *body = NULL;
    json_t *ans = NULL, *err;
    long status = 0;

    if (!cf->domain || !cf->gnupg_home || !cf->domain_key) {
        step(r, "login", STEP_SKIP, "we are no stubmail domain here (domain, gnupg_home and "
             "domain_key are not all set)");
        goto leave;
    }
    if (!r->have_https) {
        step(r, "login", STEP_SKIP, "the outbox did not answer");
        goto leave;
    }
    if (!(body = login_body(cf, r->domain, why, sizeof why))) {
        step(r, "login", STEP_FAIL, "%s", why);
        goto leave;
    }
    snprintf(url, sizeof url, "%s/v1/login", r->rec.outbox);
    if (sm_https_post(url, body, &opts, LOGIN_ANSWER_MAX, CHECK_AGENT, &r->login_answer,
                      &r->login_len, &status, why, sizeof why) != 0) {
        step(r, "login", STEP_FAIL, "%s", why);
        goto leave;
    }
    ans = json_loadb(r->login_answer ? r->login_answer : "", r->login_len, 0, NULL);
    if (status != 200) {
        err = json_object_get(ans, "error");
        step(r, "login", STEP_FAIL, "as %s with key %s: HTTP %ld %s%s%s", cf->domain,
             cf->domain_key, status, json_string_value(err) ? json_string_value(err) : "",
             status == 401 ? " (does our own _stubmail record name this key?)" : "",
             status == 429 ? " (too many logins: try later)" : "");
        goto leave;
    }
    if (!json_is_string(json_object_get(ans, "token"))) {
        step(r, "login", STEP_FAIL, "HTTP 200 without a token");
        goto leave;
    }
    r->have_login = 1;
    step(r, "login", STEP_PASS, "as %s with key %s: a token", cf->domain, cf->domain_key);
leave:
    json_decref(ans);
    free(body);
}

/* One UDP poll to the responder the login named; "idle" and "poll" are
 * both an answer. */
static void check_udp(check_run *r)
{
    json_t *ans = NULL, *udp;
    const char *addr, *session, *secret, *why = "";
    unsigned char key[SM_UDPPOLL_KEY_LEN], reply[512];
    char req[SM_UDPPOLL_SESSION_MAX + 256], mac[SM_UDPPOLL_B64_LEN + 1];
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct pollfd pfd = { -1, POLLIN, 0 };
    sm_udppoll_status st;
    long len;
    ssize_t got;

    if (!r->have_login) {
        step(r, "udp", STEP_SKIP, "no login: the UDP poll needs its session");
        goto leave;
    }
    ans = json_loadb(r->login_answer, r->login_len, 0, NULL);
    if (!(udp = json_object_get(ans, "udp"))) {
        step(r, "udp", STEP_SKIP, "the outbox names no UDP poll responder (polls are by HTTP)");
        goto leave;
    }
    addr = json_string_value(json_object_get(udp, "address"));
    session = json_string_value(json_object_get(udp, "session"));
    secret = json_string_value(json_object_get(udp, "secret"));
    if (!addr || !session || !secret || sm_dns_resolver_parse(addr, &ss, &sslen, &why) != 0
        || sm_udppoll_secret_decode(secret, key) != 0) {
        step(r, "udp", STEP_FAIL, "the login answer's \"udp\" is unusable%s%s",
             why[0] ? ": " : "", why);
        goto leave;
    }
    if ((len = sm_udppoll_request_encode(key, session, "check", (long long)time(NULL), req,
                                         sizeof req, mac)) < 0
        || (pfd.fd = socket(ss.ss_family, SOCK_DGRAM, 0)) < 0
        || sendto(pfd.fd, req, (size_t)len, 0, (struct sockaddr *)&ss, sslen) != len) {
        step(r, "udp", STEP_FAIL, "cannot send a UDP poll to %s: %s", addr, strerror(errno));
        goto leave;
    }
    if (poll(&pfd, 1, UDP_WAIT_MS) != 1
        || (got = recvfrom(pfd.fd, reply, sizeof reply, 0, NULL, NULL)) < 0) {
        step(r, "udp", STEP_FAIL, "no answer from %s within %d ms", addr, UDP_WAIT_MS);
        goto leave;
    }
    if (sm_udppoll_reply_parse(key, mac, reply, (size_t)got, &st, &why) != 0) {
        step(r, "udp", STEP_FAIL, "%s answered, but not right: %s", addr, why);
        goto leave;
    }
    step(r, "udp", STEP_PASS, "%s answered a UDP poll (%s)", addr,
         st == SM_UDPPOLL_IDLE ? "idle" : "poll");
leave:
    if (pfd.fd >= 0)
        close(pfd.fd);
    json_decref(ans);
}

int ctl_check_main(ctl *c, int argc, char **argv)
{
    char dom[256];
    check_run r;
    json_t *out;

    if (argc != 2)
        return EX_USAGE;
    if (ctl_arg_domain("domain", argv[1], dom) != 0)
        return EX_USAGE;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.domain = dom;
    r.steps = json_array();
    check_record(&r);
    check_https(&r);
    check_key(&r);
    check_login(&r);
    check_udp(&r);
    if (c->json) {
        out = json_object();
        json_object_set_new(out, "domain", json_string(dom));
        json_object_set_new(out, "ok", json_boolean(!r.failed));
        json_object_set_new(out, "steps", r.steps);
        ctl_out_json(out);
    } else {
        printf("%s: %s\n", dom, r.failed ? "some checks FAILED" : "set up right");
        json_decref(r.steps);
    }
    free(r.key);
    free(r.login_answer);
    return r.failed ? 1 : EX_OK;
}
