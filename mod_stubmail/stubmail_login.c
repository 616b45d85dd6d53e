/*
 * NAME
 *	stubmail_login - GET v1/key, GET v1/key/{fpr}, POST v1/login and what they need
 *
 * DESCRIPTION
 *	With StubmailDomain set, GET v1/key answers StubmailPublicKey (read
 *	once at startup), GET v1/key/{fpr} that key or the other key of a
 *	rotation by fingerprint, and POST v1/login runs the checks of
 *	docs/PROTOCOL.md ("POST /v1/login") in its order: the body, the
 *	server named, the time, the login rate, the domain's published key
 *	fingerprint (lib's sm_discover_run over the store of
 *	stubmail_discover.c), the key and the signature (GnuPG, in
 *	StubmailGnupgHome), the nonce. Then it issues an HMAC token for the
 *	domain, with the UDP poll session when the responder runs on the
 *	same keys.
 *
 *	Each child remembers the public key blobs it imported, by
 *	fingerprint, so that a domain logging in again with the key it sent
 *	before costs one gpg run (the verification), not three.
 *
 * DIAGNOSTICS
 *	Each login at info with the fingerprint and where it came from; a
 *	refused one at info with the check it failed; gpg trouble at error.
 *	Configuration that stops the start at crit.
 */

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "unixd.h"
#include "apr_file_io.h"
#include "apr_hash.h"
#include "apr_strings.h"
#include "apr_thread_mutex.h"

#include <jansson.h>
#include <openssl/crypto.h>

#include "sm_discover.h"
#include "sm_dns.h"
#include "sm_keyfpr.h"
#include "sm_pgp.h"
#include "sm_proto.h"
#include "sm_token.h"
#include "sm_udppoll.h"
#include "stubmail_db.h"
#include "stubmail_discover.h"
#include "stubmail_login.h"
#include "stubmail_poll.h"

APLOG_USE_MODULE(stubmail);

#define DB_UNAVAILABLE "database unavailable, retry later"
#define STUBMAIL_PUBLIC_KEY_MAX (256 * 1024)    /* octets of StubmailPublicKey */

/* ------------------------------------------------------------------------
 * The imported-key memory of a child
 * ---------------------------------------------------------------------- */

/* The same octets for the same fingerprint pass sm_pgp_import_public's
 * checks the same way every time; what can change, expiry or revocation,
 * sm_pgp_verify_detached checks itself. */
#define STUBMAIL_KEYS_MAX      256      /* remembered blobs; then start over */
#define STUBMAIL_KEY_CACHE_MAX 16384    /* larger blobs are not remembered */

typedef struct stubmail_known_key {
    apr_size_t len;
    char blob[1];               /* len octets */
} stubmail_known_key;

static apr_thread_mutex_t *stubmail_keys_lock;
static apr_pool_t *stubmail_keys_pool;  /* cleared when full */
static apr_hash_t *stubmail_keys;       /* fpr -> stubmail_known_key */
static int stubmail_keys_added;

static int stubmail_key_known(const char *fpr, const char *key, apr_size_t len)
{
    const stubmail_known_key *k;
    int known;

    if (stubmail_keys_lock == NULL)
        return 0;
    apr_thread_mutex_lock(stubmail_keys_lock);
    k = apr_hash_get(stubmail_keys, fpr, APR_HASH_KEY_STRING);
    known = k && k->len == len && memcmp(k->blob, key, len) == 0;
    apr_thread_mutex_unlock(stubmail_keys_lock);
    return known;
}

/* Remember key as fpr's blob, or forget fpr (key NULL). */
static void stubmail_key_note(const char *fpr, const char *key, apr_size_t len)
{
    stubmail_known_key *k = NULL;

    if (stubmail_keys_lock == NULL || len > STUBMAIL_KEY_CACHE_MAX)
        return;
    apr_thread_mutex_lock(stubmail_keys_lock);
    if (key && ++stubmail_keys_added > STUBMAIL_KEYS_MAX) {
        apr_pool_clear(stubmail_keys_pool);
        stubmail_keys = apr_hash_make(stubmail_keys_pool);
        stubmail_keys_added = 1;
    }
    if (key) {
        k = apr_palloc(stubmail_keys_pool, sizeof(*k) + len);
        k->len = len;
        memcpy(k->blob, key, len);
    }
    apr_hash_set(stubmail_keys, apr_pstrdup(stubmail_keys_pool, fpr),
                 APR_HASH_KEY_STRING, k);
    apr_thread_mutex_unlock(stubmail_keys_lock);
}

/* ------------------------------------------------------------------------
 * GET v1/key
 * ---------------------------------------------------------------------- */

/* 1 if StubmailDomain is set here (post_config then made sure of the
 * public key, the GnuPG home and a token key), else 0 after a 404: without
 * it this server has no key and takes no logins, which is a lasting
 * answer, not a failure to retry. */
static int stubmail_login_configured(stubmail_req *q)
{
    if (q->conf->domain)
        return 1;
    return stubmail_fail_0(q, "no_such_endpoint", "this server has no domain key",
                           "StubmailDomain is not set for this server: GET v1/key "
                           "and POST v1/login are off");
}

int stubmail_key(stubmail_req *q)
{
    if (!stubmail_login_configured(q))
        return q->ret;
    return stubmail_send(q, HTTP_OK, "application/pgp-keys", q->conf->public_key.text);
}

/* GET v1/key/{fpr}: our key or, during a rotation, the other one, by its
 * primary fingerprint (docs/PROTOCOL.md "Key rotation"), so that a poller
 * that never held the key a stored message was signed with can verify it. */
int stubmail_key_by_fpr(stubmail_req *q)
{
    const stubmail_public_key *k = NULL;

    if (!stubmail_login_configured(q))
        return q->ret;
    if (sm_pgp_fpr_valid(q->fpr) && strcasecmp(q->fpr, q->conf->public_key.fpr) == 0)
        k = &q->conf->public_key;
    else if (sm_pgp_fpr_valid(q->fpr) && q->conf->other_key.text
             && strcasecmp(q->fpr, q->conf->other_key.fpr) == 0)
        k = &q->conf->other_key;
    if (k == NULL)
        return stubmail_fail(q, "not_found", "no such key",
                             apr_psprintf(q->r->pool, "no key %s here",
                                          ap_escape_logitem(q->r->pool, q->fpr)));
    return stubmail_send(q, HTTP_OK, "application/pgp-keys", k->text);
}

/* ------------------------------------------------------------------------
 * POST v1/login
 * ---------------------------------------------------------------------- */

/* Import the login's key into StubmailGnupgHome (only fpr's), and remember
 * it: SM_PGP_OK or the failure, with why. */
static int stubmail_import_key(const char *home, const sm_login_request *req,
                               const char *fpr, char *why, size_t whylen)
{
    int rc = sm_pgp_import_public(home, req->key, req->key_len, fpr, why, whylen);

    if (rc == SM_PGP_OK)
        stubmail_key_note(fpr, req->key, req->key_len);
    return rc;
}

/* The key in the login is fpr's (or, during the domain's key rotation,
 * alt's: docs/PROTOCOL.md "Key rotation") and nothing else (imported unless
 * this child already did that with these octets), and the signature over
 * the statement is good and by that key. 1 with *used the fingerprint it
 * was, or 0 after the error answer. */
static int stubmail_login_verify(stubmail_req *q, const sm_login_request *req,
                                 const char *fpr, const char *alt, const char *statement,
                                 int statement_len, const char **used)
{
    const char *home = q->conf->gnupg_home, *wanted = fpr;
    char why[SM_PGP_WHY_MAX];
    int known = stubmail_key_known(fpr, req->key, req->key_len), rc = SM_PGP_OK;

    if (!known && alt[0] && stubmail_key_known(alt, req->key, req->key_len)) {
        fpr = alt;
        known = 1;
    }
    if (!known && (rc = stubmail_import_key(home, req, fpr, why, sizeof(why))) == SM_PGP_REJECT
        && alt[0] && (rc = stubmail_import_key(home, req, alt, why, sizeof(why))) == SM_PGP_OK)
        fpr = alt;
    if (rc != SM_PGP_OK)
        goto key_failed;
    *used = fpr;
    rc = sm_pgp_verify_detached(home, statement, (size_t)statement_len, req->signature,
                                req->signature_len, fpr, why, sizeof(why));
    if (rc == SM_PGP_REJECT && known
        && sm_pgp_have_key(home, fpr, NULL, 0) == SM_PGP_REJECT) {
        /* The keyring lost the key this child imported (an admin cleaned
         * it up): import again, then judge the signature. */
        stubmail_key_note(fpr, NULL, 0);
        if ((rc = stubmail_import_key(home, req, fpr, why, sizeof(why))) != SM_PGP_OK)
            goto key_failed;
        rc = sm_pgp_verify_detached(home, statement, (size_t)statement_len,
                                    req->signature, req->signature_len, fpr, why,
                                    sizeof(why));
    }
    if (rc == SM_PGP_REJECT)
        return stubmail_fail_0(q, "bad_signature",
                               "the signature does not verify with the domain key",
                               apr_psprintf(q->r->pool, "signature by %s refused: %s",
                                            fpr, why));
    if (rc != SM_PGP_OK)
        return stubmail_fail_0(q, "internal_error",
                               "could not check the signature, retry later",
                               apr_psprintf(q->r->pool, "verifying with GnuPG home %s "
                                            "failed: %s", home, why));
    return 1;

key_failed:
    if (rc == SM_PGP_REJECT)
        return stubmail_fail_0(q, "wrong_key", "the key is not the one the domain publishes",
                               apr_psprintf(q->r->pool, "key refused, expected %s%s%s: %s",
                                            wanted, alt[0] ? " or " : "", alt, why));
    return stubmail_fail_0(q, "internal_error", "could not check the key, retry later",
                           apr_psprintf(q->r->pool, "importing into GnuPG home %s failed: %s",
                                        home, why));
}

/* The checks that need neither database nor GnuPG: the server named is
 * this one, and the time is within StubmailLoginMaxSkew. 1, or 0 after
 * the error answer. */
static int stubmail_login_cheap_checks(stubmail_req *q, const sm_login_request *req,
                                       time_t now)
{
    request_rec *r = q->r;
    const stubmail_srv_conf *c = q->conf;

    if (strcmp(req->server, c->domain) != 0)
        return stubmail_fail_0(q, "login_failed", "this login is for another server",
                               apr_psprintf(r->pool, "login names server %s, we are %s",
                                            req->server, c->domain));
    if (req->when < now - (time_t)c->login_max_skew
        || req->when > now + (time_t)c->login_max_skew)
        return stubmail_fail_0(q, "stale_login",
                               apr_psprintf(r->pool, "login time %s is more than %"
                                            APR_INT64_T_FMT " s from the server's clock",
                                            req->time, c->login_max_skew),
                               apr_psprintf(r->pool, "login time %s, %ld s off",
                                            req->time, (long)(req->when - now)));
    return 1;
}

/* The key the domain publishes, into fpr: peer.fpr when the admin pinned
 * one, else the fpr of its _stubmail record (lib's discovery, over this
 * request's connection). 1 with *source saying where it came from, or 0
 * after the error answer. */
static int stubmail_login_fpr(stubmail_req *q, const char *domain, char *fpr, char *alt,
                              const char **source)
{
    sm_discover_store store;
    sm_dns_conf dns;
    sm_peer_info info;
    char why[512];
    int rc;

    stubmail_discover_store(q, &store);
    dns.resolver = q->conf->resolver;
    dns.resolver_trusted = q->conf->resolver_trusted == 1;
    dns.dnssec_require = q->conf->dnssec_require;
    rc = sm_discover_run(&store, &dns, domain, SM_DISCOVER_FPR_ONLY, &info, why, sizeof(why));
    /* nothing cached: the next login asks DNS again */
    if (info.status == SM_DNS_TEMPFAIL)
        return stubmail_fail_0(q, "unavailable", "DNS lookup failed, retry later", why);
    if (rc != 0)
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                               "looking up the domain's key fingerprint failed");
    if (info.status != SM_DNS_FOUND || info.fpr[0] == '\0')
        return stubmail_fail_0(q, "unknown_domain", "the domain publishes no stubmail key",
                               apr_psprintf(q->r->pool, "_stubmail record %s%s: %s",
                                            sm_dns_status_name(info.status),
                                            info.source == SM_PEER_FROM_CACHE
                                            ? " (cached)" : "", *why ? why : "-"));
    apr_cpystrn(fpr, info.fpr, SM_PGP_FPR_MAX + 1);
    apr_cpystrn(alt, info.fpr_alt, SM_PGP_FPR_MAX + 1);
    *source = info.source == SM_PEER_FROM_PEER ? "peer.fpr"
              : sm_peer_source_name(info.source);
    return 1;
}

/* Last, so that only a proven login spends its nonce: keep it for twice
 * the skew, which covers every clock the time check lets through. 1, or 0
 * after the error answer (a nonce seen before: 401). */
static int stubmail_login_nonce(stubmail_req *q, const sm_login_request *req)
{
    const char *args[3];

    args[0] = req->domain;
    args[1] = req->nonce;
    args[2] = apr_psprintf(q->r->pool, "%" APR_INT64_T_FMT, 2 * q->conf->login_max_skew);
    switch (stubmail_db_first_row(q, STMT_NONCE, 3, args, 0, NULL)) {
    case 1:
        return 1;
    case 0:
        return stubmail_fail_0(q, "replayed_login", "this login was used before",
                               apr_psprintf(q->r->pool, "nonce %s seen before",
                                            req->nonce));
    default:
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                               "recording the nonce failed");
    }
}

/* The token for domain: {"token": ..., "expires": ...}, and "udp" with
 * the session of the UDP poll when the responder runs on these keys (the
 * session is the token's payload, its key derived from the same secret, so
 * the responder needs no state). */
static int stubmail_login_answer(stubmail_req *q, const char *domain, time_t now,
                                 const char *fpr, const char *source)
{
    const stubmail_srv_conf *c = q->conf;
    char token[SM_TOKEN_MAX + 1], expires[SM_TIME_LEN + 1];
    char session[SM_UDPPOLL_SESSION_MAX + 1], secret[SM_UDPPOLL_B64_LEN + 1];
    const char *why;
    int ret;

    if (sm_token_issue(c->tokens, NULL, domain, (long)c->token_lifetime, now, token,
                       sizeof(token)) != 0
        || sm_time_format(now + (time_t)c->token_lifetime, expires, sizeof(expires)) != 0)
        return stubmail_fail(q, "internal_error", "could not issue a token, retry later",
                             apr_psprintf(q->r->pool, "sm_token_issue: %s",
                                          strerror(errno)));
    q->r->user = (char *)q->domain;
    SMLOG(q, APLOG_INFO, 0, "login: key %s (from %s) verified, token until %s", fpr,
          source, expires);
    if (!c->udp_login)
        return stubmail_send_json(q, json_pack("{s:s, s:s}", "token", token,
                                               "expires", expires));
    if (sm_udppoll_session_of_token(token, session, sizeof(session)) != 0
        || sm_udppoll_secret(c->tokens, session, secret, sizeof(secret), &why) != 0)
        return stubmail_fail(q, "internal_error", "could not issue a token, retry later",
                             "deriving the UDP poll secret failed");
    ret = stubmail_send_json(q, json_pack("{s:s, s:s, s:{s:s, s:s, s:s}}", "token", token,
                                          "expires", expires, "udp", "address",
                                          c->udp.advertise, "session", session,
                                          "secret", secret));
    OPENSSL_cleanse(secret, sizeof(secret));
    return ret;
}

int stubmail_login(stubmail_req *q)
{
    request_rec *r = q->r;
    sm_login_request req;
    sm_parse_error perr;
    char statement[SM_LOGIN_STATEMENT_MAX], fpr[SM_PGP_FPR_MAX + 1], alt[SM_PGP_FPR_MAX + 1];
    const char *source = NULL, *used = fpr;
    time_t now;
    int statement_len, ret;

    memset(&req, 0, sizeof(req));
    if (!stubmail_login_configured(q))
        return q->ret;

    memset(&perr, 0, sizeof(perr));
    if (sm_login_request_parse(q->body, q->body_len, &req, &perr) != 0) {
        ret = stubmail_fail(q, stubmail_parse_code(&perr), perr.message,
                            apr_pstrcat(r->pool, "login refused: ", perr.message, NULL));
        goto leave;
    }
    q->domain = apr_pstrdup(r->pool, req.domain);    /* claimed, for the log */
    now = time(NULL);
    if (!stubmail_login_cheap_checks(q, &req, now)
        || !stubmail_db(q) || !stubmail_login_rate(q, req.domain)
        || !stubmail_login_fpr(q, req.domain, fpr, alt, &source)) {
        ret = q->ret;
        goto leave;
    }
    statement_len = sm_login_statement(req.server, req.domain, req.time, req.nonce,
                                       statement, sizeof(statement));
    if (statement_len < 0) {
        /* cannot happen: the parser checked the same fields */
        ret = stubmail_fail(q, "internal_error", "internal error",
                            "building the login statement failed");
        goto leave;
    }
    if (!stubmail_login_verify(q, &req, fpr, alt, statement, statement_len, &used)
        || !stubmail_login_nonce(q, &req)) {
        ret = q->ret;
        goto leave;
    }
    ret = stubmail_login_answer(q, req.domain, now, used,
                                used == fpr ? source : "the record's fpr-alt");
leave:
    sm_login_request_free(&req);
    return ret;
}

/* ------------------------------------------------------------------------
 * Startup
 * ---------------------------------------------------------------------- */

/* Read a file of StubmailPublicKey into *k (pconf) with its fingerprint:
 * it is small, and read once here a missing or wrong file stops the start
 * with a clear message instead of failing pollers later; a new key means a
 * new DNS record, and the graceful restart that goes with it reads the
 * file again. The fingerprint is computed here, not by gpg: this runs as
 * root, and gpg would leave root's files in a keyring. */
static int stubmail_read_public_key(server_rec *s, const char *file, stubmail_public_key *k,
                                    apr_pool_t *pconf)
{
    static const char begin[] = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    char why[256];
    apr_file_t *f = NULL;
    apr_finfo_t fi;
    apr_size_t got = 0;
    char *text;
    apr_status_t rv;
    int ret = HTTP_INTERNAL_SERVER_ERROR;

    rv = apr_file_open(&f, file, APR_FOPEN_READ | APR_FOPEN_BINARY, APR_OS_DEFAULT, pconf);
    if (rv == APR_SUCCESS)
        rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "stubmail: StubmailPublicKey %s "
                     "cannot be read", file);
        goto leave;
    }
    if (fi.size <= 0 || fi.size > STUBMAIL_PUBLIC_KEY_MAX) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailPublicKey %s has %"
                     APR_OFF_T_FMT " bytes; expected 1 to %d", file, fi.size,
                     STUBMAIL_PUBLIC_KEY_MAX);
        goto leave;
    }
    text = apr_palloc(pconf, (apr_size_t)fi.size + 1);
    rv = apr_file_read_full(f, text, (apr_size_t)fi.size, &got);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "stubmail: reading StubmailPublicKey "
                     "%s failed", file);
        goto leave;
    }
    text[got] = '\0';
    if (strncmp(text, begin, sizeof(begin) - 1) != 0 || strlen(text) != got
        || strstr(text, "PRIVATE KEY") != NULL) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailPublicKey %s is not "
                     "an ASCII-armored public key (make it with stubmail-keygen -o, or "
                     "gpg --armor --export)", file);
        goto leave;
    }
    if (sm_keyfpr_armored(text, got, k->fpr, why, sizeof(why)) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailPublicKey %s: no "
                     "OpenPGP public key in it: %s", file, why);
        goto leave;
    }
    k->text = text;
    ret = OK;
leave:
    if (f)
        apr_file_close(f);
    return ret;
}

/* StubmailPublicKey's files: ours and, during a rotation, the other key,
 * which must be another key. */
static int stubmail_read_public_keys(server_rec *s, stubmail_srv_conf *c, apr_pool_t *pconf)
{
    if (stubmail_read_public_key(s, c->key_files.current, &c->public_key, pconf) != OK)
        return HTTP_INTERNAL_SERVER_ERROR;
    c->other_key.text = NULL;
    if (c->key_files.other == NULL)
        return OK;
    if (stubmail_read_public_key(s, c->key_files.other, &c->other_key, pconf) != OK)
        return HTTP_INTERNAL_SERVER_ERROR;
    if (strcmp(c->public_key.fpr, c->other_key.fpr) == 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailPublicKey %s and %s "
                     "hold the same key %s: the second is the other key of a rotation",
                     c->key_files.current, c->key_files.other, c->public_key.fpr);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "stubmail: serving key %s at v1/key and with "
                 "the other key of a rotation, %s, at v1/key/{fpr}", c->public_key.fpr,
                 c->other_key.fpr);
    return OK;
}

/* The user Apache's children run as: User when started as root, else us. */
static uid_t stubmail_apache_uid(void)
{
    return geteuid() == 0 ? ap_unixd_config.user_id : geteuid();
}

/* Give StubmailGnupgHome a gpg.conf with no-autostart unless it has one:
 * importing a key would otherwise start a gpg-agent as the Apache user that
 * outlives Apache, and this keyring only verifies, which needs no agent. */
static int stubmail_gnupg_conf(server_rec *s, const stubmail_srv_conf *c, uid_t owner,
                               gid_t group, apr_pool_t *ptemp)
{
    static const char text[] = "# written by mod_stubmail: this keyring only imports "
                               "public keys and verifies,\n# which needs no gpg-agent\n"
                               "no-autostart\n";
    const char *path = apr_pstrcat(ptemp, c->gnupg_home, "/gpg.conf", NULL);
    apr_file_t *f = NULL;
    apr_size_t n = sizeof(text) - 1;
    apr_status_t rv;

    rv = apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_EXCL,
                       APR_FPROT_UREAD | APR_FPROT_UWRITE, ptemp);
    if (APR_STATUS_IS_EEXIST(rv))
        return OK;
    if (rv == APR_SUCCESS)
        rv = apr_file_write_full(f, text, n, NULL);
    if (f && apr_file_close(f) != APR_SUCCESS && rv == APR_SUCCESS)
        rv = APR_EGENERAL;
    if (rv == APR_SUCCESS && chown(path, owner, group) != 0)
        rv = errno;
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "stubmail: cannot write %s", path);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "stubmail: wrote %s (no-autostart)", path);
    return OK;
}

/* 1 if the GnuPG home's private-keys-v1.d holds anything. */
static int stubmail_has_secret_keys(const char *secrets, apr_pool_t *ptemp)
{
    apr_dir_t *dir;
    apr_finfo_t fi;
    int found = 0;

    if (apr_dir_open(&dir, secrets, ptemp) != APR_SUCCESS)
        return 0;
    while (!found && apr_dir_read(&fi, APR_FINFO_NAME, dir) == APR_SUCCESS)
        found = strcmp(fi.name, ".") != 0 && strcmp(fi.name, "..") != 0;
    apr_dir_close(dir);
    return found;
}

/* StubmailGnupgHome: a directory the Apache user owns and only it can use
 * (gpg writes its keyring and trust database there, and warns about
 * anything looser), holding no secret key: a web server that verifies
 * logins never needs one, so a home with the domain's secret key is a
 * configuration mistake that would hand it to every process of this user. */
static int stubmail_check_gnupg_home(server_rec *s, const stubmail_srv_conf *c,
                                     apr_pool_t *ptemp)
{
    uid_t owner = stubmail_apache_uid();
    const char *secrets = apr_pstrcat(ptemp, c->gnupg_home, "/private-keys-v1.d", NULL);
    struct stat st;
    int stat_err = stat(c->gnupg_home, &st) != 0 ? errno : 0;

    if (stat_err != 0 || !S_ISDIR(st.st_mode)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, stat_err, s, "stubmail: StubmailGnupgHome %s "
                     "is not a directory: create it, owned by the Apache user, mode 0700",
                     c->gnupg_home);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (st.st_uid != owner || (st.st_mode & 077) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailGnupgHome %s must "
                     "be owned by uid %ld (the Apache user) with mode 0700; it is uid %ld "
                     "mode %04o", c->gnupg_home, (long)owner, (long)st.st_uid,
                     (unsigned)(st.st_mode & 07777));
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (stubmail_has_secret_keys(secrets, ptemp)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailGnupgHome %s "
                     "holds secret keys (%s): give mod_stubmail a keyring of its "
                     "own, the domain key belongs to stubmail-pollerd and the milter",
                     c->gnupg_home, secrets);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

int stubmail_login_check_config(server_rec *s, stubmail_srv_conf *c, apr_pool_t *pconf,
                                apr_pool_t *ptemp)
{
    const char *missing = c->key_files.current == NULL ? "StubmailPublicKey"
                          : c->gnupg_home == NULL ? "StubmailGnupgHome"
                          : c->tokens == NULL ? "StubmailTokenKey" : NULL;

    if (c->domain == NULL)
        return OK;
    if (missing) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailDomain %s turns "
                     "login on, which needs %s too (docs/mod_stubmail.md)", c->domain,
                     missing);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (stubmail_read_public_keys(s, c, pconf) != OK
        || stubmail_check_gnupg_home(s, c, ptemp) != OK)
        return HTTP_INTERNAL_SERVER_ERROR;
    return OK;
}

int stubmail_login_post_config(server_rec *s, const stubmail_srv_conf *c, apr_pool_t *ptemp)
{
    if (c->domain == NULL)
        return OK;
    return stubmail_gnupg_conf(s, c, stubmail_apache_uid(),
                               geteuid() == 0 ? ap_unixd_config.group_id : (gid_t)-1, ptemp);
}

/* gpgme once per child (it spawns gpg for every login). */
void stubmail_login_child_init(apr_pool_t *pchild, server_rec *s)
{
    server_rec *sp;
    apr_status_t rv;

    for (sp = s; sp; sp = sp->next)
        if (stubmail_conf_of(sp)->domain)
            break;
    if (sp == NULL)
        return;
    if (sm_pgp_init() != SM_PGP_OK)
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: gpgme or gpg is missing "
                     "or too old: every login will fail");
    rv = apr_thread_mutex_create(&stubmail_keys_lock, APR_THREAD_MUTEX_DEFAULT, pchild);
    if (rv == APR_SUCCESS)
        rv = apr_pool_create(&stubmail_keys_pool, pchild);
    if (rv != APR_SUCCESS) {
        /* logins still work, importing the key every time */
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "stubmail: cannot set up the "
                     "imported-key memory");
        stubmail_keys_lock = NULL;
        return;
    }
    stubmail_keys = apr_hash_make(stubmail_keys_pool);
}
