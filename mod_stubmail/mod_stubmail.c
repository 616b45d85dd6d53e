/*
 * NAME
 *	mod_stubmail - Apache httpd 2.4 module serving a stubmail outbox
 *
 * SYNOPSIS
 *	LoadModule dbd_module      modules/mod_dbd.so
 *	LoadModule stubmail_module modules/mod_stubmail.so
 *	DBDriver pgsql
 *	DBDParams "host=... dbname=... user=..."
 *	<Location /stubmail>
 *	    SetHandler stubmail
 *	</Location>
 *
 * DESCRIPTION
 *	Serves the HTTP side of docs/PROTOCOL.md below the <Location> prefix:
 *	GET v1/key, POST v1/login, POST v1/poll, POST v1/subscription, GET
 *	v1/poll?version=V (from pending_match, with ETag/304), GET
 *	v1/message/ID, POST v1/message/ID/ack. A polling domain logs in by
 *	signing a statement with
 *	its OpenPGP domain key (checked against the fingerprint its peer row or
 *	_stubmail DNS record names) and gets an HMAC bearer token that names it
 *	on the other endpoints. The database comes
 *	from mod_dbd: statements are prepared at configuration time under
 *	stubmail_* labels, a connection is acquired per request. Bodies are
 *	streamed from the spool directory through a file bucket (sendfile; the
 *	core byterange filter does Range). With StubmailUDPResponder, a helper
 *	process answers UDP polls (stubmail_udp.c) and login answers name it.
 *	Directives: docs/mod_stubmail.md.
 *
 * DIAGNOSTICS
 *	Every log line starts with "stubmail:" and names the polling domain and
 *	message id when known. Client errors are logged at info, database or
 *	spool trouble at error. A missing database connection answers 503.
 */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_filter.h"
#include "unixd.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_hash.h"
#include "apr_buckets.h"
#include "apr_file_io.h"
#include "apr_optional.h"
#include "apr_thread_mutex.h"
#include "apr_dbd.h"
#include "mod_dbd.h"

#include <jansson.h>
#include <openssl/crypto.h>

#include "sm_addr.h"
#include "sm_dns.h"
#include "sm_id.h"
#include "sm_pgp.h"
#include "sm_proto.h"
#include "sm_spool.h"
#include "sm_token.h"
#include "sm_udppoll.h"
#include "stubmail_udp.h"

module AP_MODULE_DECLARE_DATA stubmail_module;
APLOG_USE_MODULE(stubmail);

/* ------------------------------------------------------------------------
 * Configuration
 * ---------------------------------------------------------------------- */

#define STUBMAIL_UNSET              (-1)
#define STUBMAIL_DEFAULT_SPOOL_DIR  "/var/spool/stubmail"
#define STUBMAIL_DEFAULT_MAX_BODY   1048576
#define STUBMAIL_DEFAULT_MAX_PAIRS  10000
#define STUBMAIL_DEFAULT_POLL_LIMIT 1000
#define STUBMAIL_DEFAULT_TOKEN_LIFETIME 3600
#define STUBMAIL_DEFAULT_LOGIN_SKEW 300
#define STUBMAIL_DEFAULT_MIN_POLL   1
#define STUBMAIL_DEFAULT_POLL_BURST 5
/* A poller logs in once per token lifetime; ten tries a minute leaves room
 * for mistakes and costs at most ten signature checks. One address may
 * serve several polling domains, hence the larger default there. */
#define STUBMAIL_DEFAULT_LOGIN_RATE      10
#define STUBMAIL_DEFAULT_LOGIN_ADDR_RATE 60
#define STUBMAIL_DEFAULT_LOGIN_RATE_SECS 60
#define STUBMAIL_RETRY_AFTER        "30"
#define STUBMAIL_PUBLIC_KEY_MAX     (256 * 1024)   /* octets of StubmailPublicKey */

/* StubmailLoginRate N/SECS: n requests at once, all back after secs;
 * n 0 = off, STUBMAIL_UNSET = unset. */
typedef struct stubmail_rate {
    apr_int64_t n, secs;
} stubmail_rate;

typedef struct stubmail_srv_conf {
    const char *spool_dir;      /* NULL = unset */
    apr_int64_t max_body;       /* STUBMAIL_UNSET = unset */
    apr_int64_t max_pairs;
    apr_int64_t poll_limit;
    const char *domain;         /* StubmailDomain, lowercase; NULL = unset */
    const char *public_key_file;        /* NULL = unset */
    const char *public_key;     /* its text, read by post_config */
    const char *gnupg_home;     /* NULL = unset */
    const char *resolver;       /* NULL = unset: the system resolver */
    sm_token_keyring *tokens;   /* NULL = unset */
    apr_int64_t token_lifetime; /* seconds; STUBMAIL_UNSET = unset */
    apr_int64_t login_max_skew;
    apr_int64_t min_poll_interval;      /* 0 = no limit */
    apr_int64_t poll_burst;     /* polls at once before the interval holds */
    stubmail_rate login_rate;   /* logins per claimed domain */
    stubmail_rate login_addr_rate;      /* logins per client address */
    stubmail_udp_conf udp;      /* the UDP poll responder (main server only);
                                 * listen NULL = off, rate STUBMAIL_UNSET = unset */
} stubmail_srv_conf;

static void *stubmail_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    stubmail_srv_conf *c = apr_pcalloc(p, sizeof(*c));

    (void)s;
    c->max_body = STUBMAIL_UNSET;
    c->max_pairs = STUBMAIL_UNSET;
    c->poll_limit = STUBMAIL_UNSET;
    c->token_lifetime = STUBMAIL_UNSET;
    c->login_max_skew = STUBMAIL_UNSET;
    c->min_poll_interval = STUBMAIL_UNSET;
    c->poll_burst = STUBMAIL_UNSET;
    c->login_rate.n = STUBMAIL_UNSET;
    c->login_addr_rate.n = STUBMAIL_UNSET;
    c->udp.rate = STUBMAIL_UNSET;
    return c;               /* the pointers start NULL: unset */
}

#define MERGE_PTR(f) c->f = add->f ? add->f : base->f
#define MERGE_NUM(f) c->f = add->f != STUBMAIL_UNSET ? add->f : base->f
#define MERGE_RATE(f) c->f = add->f.n != STUBMAIL_UNSET ? add->f : base->f

/* Merge rule for every field: the virtual host's value if set, else the
 * main server's. StubmailTokenKey is one field: a virtual host that names
 * any key has exactly its own keys. */
static void *stubmail_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    const stubmail_srv_conf *base = basev, *add = addv;
    stubmail_srv_conf *c = apr_pcalloc(p, sizeof(*c));

    MERGE_PTR(spool_dir);
    MERGE_NUM(max_body);
    MERGE_NUM(max_pairs);
    MERGE_NUM(poll_limit);
    MERGE_PTR(domain);
    MERGE_PTR(public_key_file);
    MERGE_PTR(gnupg_home);
    MERGE_PTR(resolver);
    MERGE_PTR(tokens);
    MERGE_NUM(token_lifetime);
    MERGE_NUM(login_max_skew);
    MERGE_NUM(min_poll_interval);
    MERGE_NUM(poll_burst);
    MERGE_RATE(login_rate);
    MERGE_RATE(login_addr_rate);
    MERGE_PTR(udp.listen);
    MERGE_PTR(udp.advertise);
    MERGE_PTR(udp.database);
    MERGE_NUM(udp.rate);
    return c;               /* public_key: read later, from the merged file name */
}

/* The one place where defaults are applied (post_config, after merging).
 * domain, public_key_file, gnupg_home and tokens have none: login is on
 * when StubmailDomain is set, and then needs the others (post_config). */
static void stubmail_srv_conf_defaults(stubmail_srv_conf *c)
{
    if (c->spool_dir == NULL)
        c->spool_dir = STUBMAIL_DEFAULT_SPOOL_DIR;
    if (c->max_body == STUBMAIL_UNSET)
        c->max_body = STUBMAIL_DEFAULT_MAX_BODY;
    if (c->max_pairs == STUBMAIL_UNSET)
        c->max_pairs = STUBMAIL_DEFAULT_MAX_PAIRS;
    if (c->poll_limit == STUBMAIL_UNSET)
        c->poll_limit = STUBMAIL_DEFAULT_POLL_LIMIT;
    if (c->token_lifetime == STUBMAIL_UNSET)
        c->token_lifetime = STUBMAIL_DEFAULT_TOKEN_LIFETIME;
    if (c->login_max_skew == STUBMAIL_UNSET)
        c->login_max_skew = STUBMAIL_DEFAULT_LOGIN_SKEW;
    if (c->min_poll_interval == STUBMAIL_UNSET)
        c->min_poll_interval = STUBMAIL_DEFAULT_MIN_POLL;
    if (c->poll_burst == STUBMAIL_UNSET)
        c->poll_burst = STUBMAIL_DEFAULT_POLL_BURST;
    if (c->login_rate.n == STUBMAIL_UNSET) {
        c->login_rate.n = STUBMAIL_DEFAULT_LOGIN_RATE;
        c->login_rate.secs = STUBMAIL_DEFAULT_LOGIN_RATE_SECS;
    }
    if (c->login_addr_rate.n == STUBMAIL_UNSET) {
        c->login_addr_rate.n = STUBMAIL_DEFAULT_LOGIN_ADDR_RATE;
        c->login_addr_rate.secs = STUBMAIL_DEFAULT_LOGIN_RATE_SECS;
    }
    if (c->udp.rate == STUBMAIL_UNSET)
        c->udp.rate = STUBMAIL_UDP_DEFAULT_RATE;
    if (c->udp.advertise == NULL)
        c->udp.advertise = c->udp.listen;
}

static stubmail_srv_conf *stubmail_cmd_conf(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config, &stubmail_module);
}

/* StubmailSpoolDir, StubmailPublicKey, StubmailGnupgHome: a path, relative
 * to ServerRoot; cmd->info is the field's offset. */
static const char *stubmail_set_path(cmd_parms *cmd, void *dconf, const char *arg)
{
    const char *path = ap_server_root_relative(cmd->pool, arg);

    (void)dconf;
    if (path == NULL || *arg == '\0')
        return apr_pstrcat(cmd->pool, cmd->cmd->name, ": invalid path ", arg,
                           NULL);
    *(const char **)((char *)stubmail_cmd_conf(cmd) + (apr_size_t)cmd->info) = path;
    return NULL;
}

static const char *stubmail_set_domain(cmd_parms *cmd, void *dconf, const char *arg)
{
    char *domain = apr_pstrdup(cmd->pool, arg);

    (void)dconf;
    ap_str_tolower(domain);
    if (strlen(domain) > SM_DOMAIN_MAX || !sm_domain_valid(domain))
        return apr_psprintf(cmd->pool, "%s: '%s' is not a domain name",
                            cmd->cmd->name, arg);
    stubmail_cmd_conf(cmd)->domain = domain;
    return NULL;
}

static const char *stubmail_set_resolver(cmd_parms *cmd, void *dconf, const char *arg)
{
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *why;

    (void)dconf;
    if (sm_dns_resolver_parse(arg, &addr, &addrlen, &why) != 0)
        return apr_psprintf(cmd->pool, "%s: '%s': %s (expected IPv4:PORT or "
                            "[IPv6]:PORT)", cmd->cmd->name, arg, why);
    stubmail_cmd_conf(cmd)->resolver = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

/* The secrets are wiped when the configuration goes away (restart). */
static apr_status_t stubmail_tokens_wipe(void *kr)
{
    sm_token_keyring_clear(kr);
    return APR_SUCCESS;
}

/* StubmailTokenKey ID HEX, repeatable: every key checks tokens, the last
 * one given issues them. */
static const char *stubmail_add_token_key(cmd_parms *cmd, void *dconf,
                                          const char *id, const char *hex)
{
    stubmail_srv_conf *c = stubmail_cmd_conf(cmd);
    const char *why;

    (void)dconf;
    if (c->tokens == NULL) {
        c->tokens = apr_palloc(cmd->pool, sizeof(*c->tokens));
        sm_token_keyring_init(c->tokens);
        apr_pool_cleanup_register(cmd->pool, c->tokens, stubmail_tokens_wipe,
                                  apr_pool_cleanup_null);
    }
    if (sm_token_keyring_add_hex(c->tokens, id, hex, &why) != 0)
        return apr_psprintf(cmd->pool, "%s %s: %s (secret: %d to %d hex digits; "
                            "at most %d keys)", cmd->cmd->name, id, why,
                            2 * SM_TOKEN_SECRET_MIN, 2 * SM_TOKEN_SECRET_MAX,
                            SM_TOKEN_KEYS_MAX);
    return NULL;
}

/* StubmailUDPResponder IP:PORT [ADVERTISED-IP:PORT]: where the responder
 * binds, and what the login answer tells pollers when that differs (a
 * wildcard or NATed address). Main server only: there is one responder. */
static const char *stubmail_set_udp(cmd_parms *cmd, void *dconf, const char *listen,
                                    const char *advertise)
{
    stubmail_srv_conf *c = stubmail_cmd_conf(cmd);
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *why, *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    int i;

    (void)dconf;
    if (err)
        return err;
    for (i = 0; i < 2; i++) {
        const char *a = i == 0 ? listen : advertise;
        if (a && sm_dns_resolver_parse(a, &addr, &addrlen, &why) != 0)
            return apr_psprintf(cmd->pool, "%s: '%s': %s (expected IPv4:PORT or "
                                "[IPv6]:PORT)", cmd->cmd->name, a, why);
    }
    c->udp.listen = apr_pstrdup(cmd->pool, listen);
    c->udp.advertise = advertise ? apr_pstrdup(cmd->pool, advertise) : NULL;
    return NULL;
}

static const char *stubmail_set_udp_database(cmd_parms *cmd, void *dconf, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dconf;
    if (err)
        return err;
    stubmail_cmd_conf(cmd)->udp.database = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

/* StubmailLoginRate, StubmailLoginAddressRate: N/SECS or off; cmd->info
 * is the field's offset. */
static const char *stubmail_set_rate(cmd_parms *cmd, void *dconf, const char *arg)
{
    stubmail_rate *rate = (stubmail_rate *)((char *)stubmail_cmd_conf(cmd)
                                            + (apr_size_t)cmd->info);
    apr_int64_t n, secs;
    char *end;

    (void)dconf;
    if (strcasecmp(arg, "off") == 0) {
        rate->n = 0;
        rate->secs = 1;
        return NULL;
    }
    errno = 0;
    n = apr_strtoi64(arg, &end, 10);
    if (errno == 0 && end != arg && *end == '/' && n >= 1 && n <= 1000000) {
        const char *s = end + 1;

        secs = apr_strtoi64(s, &end, 10);
        if (errno == 0 && end != s && *end == '\0' && secs >= 1 && secs <= 86400) {
            rate->n = n;
            rate->secs = secs;
            return NULL;
        }
    }
    return apr_psprintf(cmd->pool, "%s: expected N/SECS (N logins from 1 to 1000000 "
                        "within SECS seconds from 1 to 86400) or off, not '%s'",
                        cmd->cmd->name, arg);
}

/* Numeric directives: cmd->info indexes this table. */
enum { STUBMAIL_MAX_BODY, STUBMAIL_MAX_PAIRS, STUBMAIL_POLL_LIMIT,
       STUBMAIL_TOKEN_LIFETIME, STUBMAIL_LOGIN_SKEW, STUBMAIL_MIN_POLL,
       STUBMAIL_UDP_RATE, STUBMAIL_POLL_BURST };

static const struct {
    apr_size_t offset;
    apr_int64_t min, max;
} stubmail_numbers[] = {
    /* 1 GiB: bodies are held in memory */
    [STUBMAIL_MAX_BODY] = { APR_OFFSETOF(stubmail_srv_conf, max_body), 1, APR_INT64_C(1) << 30 },
    [STUBMAIL_MAX_PAIRS] = { APR_OFFSETOF(stubmail_srv_conf, max_pairs), 1, 10000000 },
    [STUBMAIL_POLL_LIMIT] = { APR_OFFSETOF(stubmail_srv_conf, poll_limit), 1, 1000000 },
    /* a week: a token cannot be revoked, only outlived */
    [STUBMAIL_TOKEN_LIFETIME] = { APR_OFFSETOF(stubmail_srv_conf, token_lifetime), 1, 604800 },
    [STUBMAIL_LOGIN_SKEW] = { APR_OFFSETOF(stubmail_srv_conf, login_max_skew), 1, 86400 },
    [STUBMAIL_MIN_POLL] = { APR_OFFSETOF(stubmail_srv_conf, min_poll_interval), 0, 86400 },
    [STUBMAIL_UDP_RATE] = { APR_OFFSETOF(stubmail_srv_conf, udp.rate), 1, 1000000 },
    [STUBMAIL_POLL_BURST] = { APR_OFFSETOF(stubmail_srv_conf, poll_burst), 1, 1000 },
};

static const char *stubmail_set_number(cmd_parms *cmd, void *dconf,
                                       const char *arg)
{
    long which = (long)cmd->info;
    apr_int64_t v, min = stubmail_numbers[which].min, max = stubmail_numbers[which].max;
    char *end;

    (void)dconf;
    errno = 0;
    v = apr_strtoi64(arg, &end, 10);
    if (errno || end == arg || *end != '\0' || v < min || v > max)
        return apr_psprintf(cmd->pool, "%s: expected a number from %" APR_INT64_T_FMT
                            " to %" APR_INT64_T_FMT ", not '%s'", cmd->cmd->name,
                            min, max, arg);
    *(apr_int64_t *)((char *)stubmail_cmd_conf(cmd) + stubmail_numbers[which].offset) = v;
    return NULL;
}

#define STUBMAIL_NUMBER(name, which, help) \
    AP_INIT_TAKE1(name, stubmail_set_number, (void *)(which), RSRC_CONF, help)
#define STUBMAIL_PATH(name, field, help) \
    AP_INIT_TAKE1(name, stubmail_set_path, \
                  (void *)APR_OFFSETOF(stubmail_srv_conf, field), RSRC_CONF, help)

static const command_rec stubmail_cmds[] = {
    STUBMAIL_PATH("StubmailSpoolDir", spool_dir,
                  "directory holding the message bodies (default "
                  STUBMAIL_DEFAULT_SPOOL_DIR ")"),
    STUBMAIL_NUMBER("StubmailMaxRequestBody", STUBMAIL_MAX_BODY,
                    "largest POST body in bytes; larger gets 413 (default 1048576)"),
    STUBMAIL_NUMBER("StubmailMaxPairs", STUBMAIL_MAX_PAIRS,
                    "most pairs in one poll; more gets 413 (default 10000)"),
    STUBMAIL_NUMBER("StubmailPollLimit", STUBMAIL_POLL_LIMIT,
                    "most entries in one poll answer (default 1000)"),
    AP_INIT_TAKE1("StubmailDomain", stubmail_set_domain, NULL, RSRC_CONF,
                  "this server's own domain; turns on GET v1/key and POST v1/login"),
    STUBMAIL_PATH("StubmailPublicKey", public_key_file,
                  "file with this domain's ASCII-armored public key, served at v1/key"),
    STUBMAIL_PATH("StubmailGnupgHome", gnupg_home,
                  "GnuPG home owned by the Apache user, for the polling domains' "
                  "public keys (no secret key)"),
    AP_INIT_TAKE1("StubmailResolver", stubmail_set_resolver, NULL, RSRC_CONF,
                  "DNS server IP:PORT for _stubmail records (default: the system's)"),
    AP_INIT_TAKE2("StubmailTokenKey", stubmail_add_token_key, NULL, RSRC_CONF,
                  "ID HEX: a token secret (64 to 128 hex digits); repeatable, the "
                  "last one issues"),
    STUBMAIL_NUMBER("StubmailTokenLifetime", STUBMAIL_TOKEN_LIFETIME,
                    "seconds a login token is good for (default 3600)"),
    STUBMAIL_NUMBER("StubmailLoginMaxSkew", STUBMAIL_LOGIN_SKEW,
                    "seconds a login's time may differ from ours (default 300)"),
    STUBMAIL_NUMBER("StubmailMinPollInterval", STUBMAIL_MIN_POLL,
                    "seconds between two polls of one domain; sooner gets 429 "
                    "(default 1, 0 = no limit)"),
    STUBMAIL_NUMBER("StubmailPollBurst", STUBMAIL_POLL_BURST,
                    "polls of one domain that may follow each other at once before "
                    "StubmailMinPollInterval holds (default 5)"),
    AP_INIT_TAKE1("StubmailLoginRate", stubmail_set_rate,
                  (void *)APR_OFFSETOF(stubmail_srv_conf, login_rate), RSRC_CONF,
                  "N/SECS: logins per claimed domain; more gets 429 (default 10/60, "
                  "off = no limit)"),
    AP_INIT_TAKE1("StubmailLoginAddressRate", stubmail_set_rate,
                  (void *)APR_OFFSETOF(stubmail_srv_conf, login_addr_rate), RSRC_CONF,
                  "N/SECS: logins per client address; more gets 429 (default 60/60, "
                  "off = no limit)"),
    AP_INIT_TAKE12("StubmailUDPResponder", stubmail_set_udp, NULL, RSRC_CONF,
                   "IP:PORT [ADVERTISED-IP:PORT]: run the UDP poll responder there "
                   "(main server only)"),
    AP_INIT_TAKE1("StubmailUDPDatabase", stubmail_set_udp_database, NULL, RSRC_CONF,
                  "libpq conninfo of the UDP poll responder's own connection"),
    STUBMAIL_NUMBER("StubmailUDPRateLimit", STUBMAIL_UDP_RATE,
                    "UDP poll datagrams per second per source address; burst twice "
                    "that (default 20)"),
    { NULL }
};

/* ------------------------------------------------------------------------
 * SQL, prepared through mod_dbd under these labels (also the PostgreSQL
 * statement names). %s is apr_dbd's placeholder; no literal '%' anywhere.
 * ---------------------------------------------------------------------- */

#define SQL_RFC3339(col) \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

typedef struct stubmail_stmt {
    const char *label;
    const char *sql;
} stubmail_stmt;

#define STMT_POLL      "stubmail_poll"
#define STMT_FETCH     "stubmail_fetch"
#define STMT_ACK_MARK  "stubmail_ack_mark"
#define STMT_ACK_SEEN  "stubmail_ack_seen"
#define STMT_ACK_DONE  "stubmail_ack_done"
#define STMT_PEER_FPR  "stubmail_peer_fpr"
#define STMT_DNS_GET   "stubmail_dns_get"
#define STMT_DNS_PUT   "stubmail_dns_put"
#define STMT_NONCE     "stubmail_nonce"
#define STMT_RATE      "stubmail_rate"
#define STMT_RATE_CLEAN "stubmail_rate_clean"
#define STMT_SUB_CHANGE "stubmail_sub_change"
#define STMT_POLL_STATE "stubmail_poll_state"
#define STMT_POLL_PENDING "stubmail_poll_pending"

static const stubmail_stmt stubmail_stmts[] = {
    /* $1 pairs as JSON, $2 polling domain, $3 limit + 1.
     * The pairs are grouped by recipient, and each recipient is looked up
     * on its own (LATERAL; OFFSET 0 keeps the planner from flattening it)
     * through outbox_pending_by_recipient and message_pkey, so the cost
     * follows the number of pairs and matches, never the size of the
     * outbox. Grouping also makes every (message, recipient) appear once
     * (outbox's key), which a DISTINCT over the raw pairs did before. */
    { STMT_POLL,
      "SELECT l.id, l.sender, l.recipient, l.size, "
      SQL_RFC3339("l.created_at")
      " FROM (SELECT x.recipient, array_agg(DISTINCT x.sender) AS senders"
      "       FROM jsonb_to_recordset(%s::jsonb) AS x(sender text, recipient text)"
      "       GROUP BY x.recipient) AS p"
      " CROSS JOIN LATERAL ("
      "   SELECT m.id, m.sender, o.recipient, m.size, m.created_at"
      "   FROM outbox o JOIN message m ON m.id = o.message_id"
      "   WHERE o.recipient_domain = %s AND o.recipient = p.recipient"
      "   AND o.retrieved_at IS NULL AND m.body_deleted_at IS NULL"
      "   AND (m.sender = ANY (p.senders)"
      "        OR '*@' || split_part(m.sender, '@', 2) = ANY (p.senders))"
      "   OFFSET 0) AS l"
      " ORDER BY l.created_at, l.id, l.recipient"
      " LIMIT CAST(%s AS integer)" },
    /* $1 id, $2 polling domain */
    { STMT_FETCH,
      "SELECT m.spool_name, m.size, m.sender, m.format FROM message m"
      " WHERE m.id = %s AND m.body_deleted_at IS NULL"
      " AND EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id"
      "             AND o.recipient_domain = %s AND o.retrieved_at IS NULL)" },
    /* $1 rejection reason ('' = delivered), $2 id, $3 recipient,
     * $4 polling domain */
    { STMT_ACK_MARK,
      "UPDATE outbox SET retrieved_at = now(), rejected_reason = NULLIF(%s, '')"
      " WHERE message_id = %s AND recipient = %s AND recipient_domain = %s"
      " AND retrieved_at IS NULL RETURNING " SQL_RFC3339("retrieved_at") ","
      " rejected_reason IS NOT NULL" },
    /* $1 id, $2 recipient, $3 polling domain */
    { STMT_ACK_SEEN,
      "SELECT " SQL_RFC3339("retrieved_at") ", rejected_reason IS NOT NULL"
      " FROM outbox"
      " WHERE message_id = %s AND recipient = %s AND recipient_domain = %s" },
    /* $1 id, $2 id */
    { STMT_ACK_DONE,
      "UPDATE message SET body_deleted_at = now()"
      " WHERE id = %s AND body_deleted_at IS NULL"
      " AND NOT EXISTS (SELECT 1 FROM outbox"
      "                 WHERE message_id = %s AND retrieved_at IS NULL)"
      " RETURNING spool_name" },
    /* $1 domain: the admin's pinned key fingerprint, if any */
    { STMT_PEER_FPR, "SELECT fpr FROM peer WHERE domain = %s" },
    /* $1 domain: the cached _stubmail answer (sql/002 keeps the TTL
     * policy in these two functions, shared with the milter and pollerd) */
    { STMT_DNS_GET, "SELECT status, fpr, why FROM dns_cache_get(%s)" },
    /* $1 domain, $2 status, $3 outbox, $4 udp, $5 fpr, $6 policy, $7 why,
     * $8 ttl; '' stands for NULL */
    { STMT_DNS_PUT,
      "SELECT dns_cache_put(%s, %s, NULLIF(%s, ''), NULLIF(%s, ''), NULLIF(%s, ''),"
      " NULLIF(%s, ''), NULLIF(%s, ''), CAST(%s AS integer))" },
    /* $1 domain, $2 nonce, $3 seconds to keep it. No row back: used
     * before. Expired nonces go on the way (the table only holds the
     * logins of the last few minutes, so the scan is short). */
    { STMT_NONCE,
      "WITH expired AS (DELETE FROM login_nonce WHERE expires_at <= now())"
      " INSERT INTO login_nonce (domain, nonce, expires_at)"
      " VALUES (%s, %s, now() + make_interval(secs => CAST(%s AS integer)))"
      " ON CONFLICT DO NOTHING RETURNING 1" },
    /* $1 kind, $2 key, $3 requests at once, $4 seconds to fill again:
     * 0 taken, else seconds to wait (sql/007_rate_limit.sql: a token
     * bucket in one locked row, shared by every child) */
    { STMT_RATE,
      "SELECT rate_take(%s, %s, CAST(%s AS integer), CAST(%s AS integer))" },
    { STMT_RATE_CLEAN, "SELECT rate_clean()" },
    /* $1 domain, $2 reset ('t'/'f'), $3 base ('' with reset), $4 pairs to
     * add and $5 to remove as JSON. One statement, so all or nothing;
     * sql/004_subscription.sql keeps pending_match in step by triggers. */
    { STMT_SUB_CHANGE,
      "SELECT ok, version FROM subscription_change(%s, CAST(%s AS boolean),"
      " CAST(NULLIF(%s, '') AS bigint), CAST(%s AS jsonb), CAST(%s AS jsonb))" },
    /* $1 and $2 domain: the ETag and the subscription version, from one
     * snapshot */
    { STMT_POLL_STATE,
      "SELECT poll_etag(%s), coalesce((SELECT version FROM subscription_state"
      " WHERE domain = %s), 0)" },
    /* $1 domain, $2 limit + 1: what is pending for the domain's
     * subscription, in the order it became pending (pending_match_by_domain) */
    { STMT_POLL_PENDING,
      "SELECT m.id, m.sender, p.recipient, m.size, " SQL_RFC3339("m.created_at")
      " FROM pending_match p JOIN message m ON m.id = p.message_id"
      " WHERE p.domain = %s AND m.body_deleted_at IS NULL"
      " ORDER BY p.seq LIMIT CAST(%s AS integer)" },
};

static APR_OPTIONAL_FN_TYPE(ap_dbd_prepare) *stubmail_dbd_prepare;
/* The keys of the UDP poll responder's sessions (the main server's), or
 * NULL when there is none: a login answer names the responder only when
 * its token was made with these keys. */
static const sm_token_keyring *stubmail_udp_keyring;
static APR_OPTIONAL_FN_TYPE(ap_dbd_acquire) *stubmail_dbd_acquire;

/* ------------------------------------------------------------------------
 * Per-request state, logging and the one error function
 * ---------------------------------------------------------------------- */

typedef struct stubmail_req {
    request_rec *r;
    const stubmail_srv_conf *conf;
    ap_dbd_t *dbd;
    const char *domain;         /* authenticated polling domain, or NULL */
    const char *id;             /* message id from the path, or NULL */
    const char *allow;          /* Allow header for 405 */
    const char *retry_after;    /* Retry-After for 429 and 503 (NULL: default) */
    const char *version;        /* 409 subscription_changed: the current
                                 * version, put into the error body */
    int ret;                    /* handler result once an answer was sent */
} stubmail_req;

#define SMLOG(q, level, rv, fmt, ...)                                        \
    ap_log_rerror(APLOG_MARK, (level), (rv), (q)->r,                         \
                  "stubmail: domain=%s id=%s: " fmt,                         \
                  (q)->domain ? (q)->domain : "-",                           \
                  (q)->id ? (q)->id : "-", ##__VA_ARGS__)

/* Protocol error codes and their HTTP status (docs/PROTOCOL.md, Errors). */
static const struct {
    const char *code;
    int status;
} stubmail_codes[] = {
    { "bad_json",               HTTP_BAD_REQUEST },
    { "bad_request",            HTTP_BAD_REQUEST },
    { "bad_id",                 HTTP_BAD_REQUEST },
    { "token_required",         HTTP_UNAUTHORIZED },
    { "bad_token",              HTTP_UNAUTHORIZED },
    { "token_expired",          HTTP_UNAUTHORIZED },
    { "login_failed",           HTTP_UNAUTHORIZED },
    { "stale_login",            HTTP_UNAUTHORIZED },
    { "unknown_domain",         HTTP_UNAUTHORIZED },
    { "wrong_key",              HTTP_UNAUTHORIZED },
    { "bad_signature",          HTTP_UNAUTHORIZED },
    { "replayed_login",         HTTP_UNAUTHORIZED },
    { "foreign_recipient",      HTTP_FORBIDDEN },
    { "subscription_changed",   HTTP_CONFLICT },
    { "not_found",              HTTP_NOT_FOUND },
    { "no_such_endpoint",       HTTP_NOT_FOUND },
    { "method_not_allowed",     HTTP_METHOD_NOT_ALLOWED },
    { "length_required",        HTTP_LENGTH_REQUIRED },
    { "too_large",              HTTP_REQUEST_ENTITY_TOO_LARGE },
    { "too_many_pairs",         HTTP_REQUEST_ENTITY_TOO_LARGE },
    { "unsupported_media_type", HTTP_UNSUPPORTED_MEDIA_TYPE },
    { "too_soon",               HTTP_TOO_MANY_REQUESTS },
    { "internal_error",         HTTP_INTERNAL_SERVER_ERROR },
    { "unavailable",            HTTP_SERVICE_UNAVAILABLE },
};

/* Send text (copied) as the whole response body with the given status. */
static int stubmail_send(stubmail_req *q, int status, const char *ctype,
                         const char *text)
{
    request_rec *r = q->r;
    apr_size_t len = strlen(text);
    apr_bucket_brigade *bb;
    apr_status_t rv;

    r->status = status;
    ap_set_content_type(r, ctype);
    ap_set_content_length(r, len);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_pool_create(
        apr_pstrmemdup(r->pool, text, len), len, r->pool, bb->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, bb);
    if (rv != APR_SUCCESS)
        SMLOG(q, APLOG_DEBUG, rv, "sending the answer failed");
    return OK;
}

/* 1 if the request may carry a body larger than StubmailMaxRequestBody. */
static int stubmail_body_unbounded(stubmail_req *q)
{
    const char *cl = apr_table_get(q->r->headers_in, "Content-Length");
    apr_off_t length;
    char *end;

    if (apr_table_get(q->r->headers_in, "Transfer-Encoding"))
        return 1;
    if (cl == NULL)
        return 0;
    return apr_strtoff(&length, cl, &end, 10) != APR_SUCCESS || *end != '\0'
           || length > q->conf->max_body;
}

/* The one way out with an error: map code to status, log why with the
 * request's context, answer {"error":code,"message":message}. Client
 * errors log at info, server trouble at error. */
static int stubmail_fail(stubmail_req *q, const char *code,
                         const char *message, const char *why)
{
    request_rec *r = q->r;
    int status = HTTP_INTERNAL_SERVER_ERROR;
    char *body;
    size_t i;

    for (i = 0; i < sizeof(stubmail_codes) / sizeof(stubmail_codes[0]); i++) {
        if (strcmp(stubmail_codes[i].code, code) == 0) {
            status = stubmail_codes[i].status;
            break;
        }
    }
    SMLOG(q, status >= 500 ? APLOG_ERR : APLOG_INFO, 0, "%s %s %s: %d %s: %s",
          r->method, r->uri, r->useragent_ip, status, code, why ? why : message);

    /* Leave the connection in step for keep-alive by reading what is left
     * of the request body (a no-op for statuses that drop the connection,
     * 411 and 413 among them), unless that could be a lot: then close. */
    r->status = status;
    if (stubmail_body_unbounded(q))
        r->connection->keepalive = AP_CONN_CLOSE;
    ap_discard_request_body(r);

    switch (status) {
    case HTTP_UNAUTHORIZED:
        /* every 401 offers a token: log in */
        apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                       "Bearer realm=\"stubmail\"");
        break;
    case HTTP_METHOD_NOT_ALLOWED:
        apr_table_setn(r->err_headers_out, "Allow", q->allow ? q->allow : "");
        break;
    case HTTP_TOO_MANY_REQUESTS:
    case HTTP_SERVICE_UNAVAILABLE:
        apr_table_setn(r->err_headers_out, "Retry-After",
                       q->retry_after ? q->retry_after : STUBMAIL_RETRY_AFTER);
        break;
    }

    body = q->version ? sm_error_body_version(code, message, apr_atoi64(q->version))
                      : sm_error_body(code, message);
    if (body == NULL) {
        SMLOG(q, APLOG_ERR, APR_ENOMEM, "out of memory encoding an error");
        return q->ret = status;
    }
    stubmail_send(q, status, "application/json", body);
    free(body);
    return q->ret = OK;
}

/* stubmail_fail for helpers that return 1 = go on, 0 = answered. */
static int stubmail_fail_0(stubmail_req *q, const char *code,
                           const char *message, const char *why)
{
    stubmail_fail(q, code, message, why);
    return 0;
}

/* The protocol code for a refused request body; lib says "internal" when
 * it ran out of memory, which is our trouble, not the client's. */
static const char *stubmail_parse_code(const sm_parse_error *perr)
{
    if (perr->code == NULL || strcmp(perr->code, "internal") == 0)
        return "unavailable";
    return perr->code;
}

/* Send a jansson value as a 200 answer; takes the reference. */
static int stubmail_send_json(stubmail_req *q, json_t *root)
{
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;

    json_decref(root);
    if (text == NULL)
        return stubmail_fail(q, "unavailable", "internal error, retry later",
                             "out of memory encoding the answer");
    stubmail_send(q, HTTP_OK, "application/json", text);
    free(text);
    return OK;
}

/* ------------------------------------------------------------------------
 * Database helpers
 * ---------------------------------------------------------------------- */

static const char *stubmail_sql_of(const char *label)
{
    size_t i;

    for (i = 0; i < sizeof(stubmail_stmts) / sizeof(stubmail_stmts[0]); i++)
        if (strcmp(stubmail_stmts[i].label, label) == 0)
            return stubmail_stmts[i].sql;
    return NULL;
}

static const char *stubmail_db_error(stubmail_req *q, int rc)
{
    const char *err = apr_dbd_error(q->dbd->driver, q->dbd->handle, rc);
    char *e = apr_pstrdup(q->r->pool, err ? err : "unknown error"), *c;
    size_t n;

    for (c = e; *c; c++)        /* libpq's messages span lines */
        if (*c == '\n' || *c == '\r' || *c == '\t')
            *c = ' ';
    n = strlen(e);
    while (n > 0 && e[n - 1] == ' ')
        e[--n] = '\0';
    return e;
}

/* Run a prepared statement that returns rows (SELECT, ... RETURNING) with
 * random access: libpq reads the whole result, so an SQL error shows here,
 * not as an empty result. Callers still read every row with
 * stubmail_next_row until it says 0. Returns 0, or -1 after logging.
 *
 * When PostgreSQL restarted, a pooled connection is dead until used, and
 * apr_dbd_pgsql's connection check then silently PQreset()s it; mod_dbd
 * does not prepare its statements again. So after a failure: check (and
 * reset) the connection, prepare the statement once more on it (into the
 * same apr_dbd_prepared_t that mod_dbd's hash holds) and retry once. If the
 * statement still existed, that PREPARE fails and the first error stands. */
static int stubmail_select(stubmail_req *q, const char *label,
                           apr_dbd_results_t **res, int nargs,
                           const char **args)
{
    apr_dbd_prepared_t *st;
    const char *first;
    int rc;

    *res = NULL;
    st = apr_hash_get(q->dbd->prepared, label, APR_HASH_KEY_STRING);
    if (st == NULL) {
        SMLOG(q, APLOG_ERR, 0, "prepared statement %s is missing", label);
        return -1;
    }
    rc = apr_dbd_pselect(q->dbd->driver, q->r->pool, q->dbd->handle, res, st,
                         1, nargs, args);
    if (rc == 0)
        return 0;
    first = stubmail_db_error(q, rc);
    *res = NULL;
    if (apr_dbd_check_conn(q->dbd->driver, q->r->pool, q->dbd->handle)
            == APR_SUCCESS
        && apr_dbd_prepare(q->dbd->driver, q->dbd->pool, q->dbd->handle,
                        stubmail_sql_of(label), label, &st) == 0) {
        SMLOG(q, APLOG_NOTICE, 0, "prepared %s again on a reset database "
              "connection", label);
        rc = apr_dbd_pselect(q->dbd->driver, q->r->pool, q->dbd->handle, res,
                             st, 1, nargs, args);
        if (rc == 0)
            return 0;
        first = stubmail_db_error(q, rc);
        *res = NULL;
    }
    SMLOG(q, APLOG_ERR, 0, "%s failed: %s", label, first);
    return -1;
}

/* 1 with *row set while rows remain, then 0 (and the result is released). */
static int stubmail_next_row(stubmail_req *q, apr_dbd_results_t *res,
                             apr_dbd_row_t **row)
{
    return apr_dbd_get_row(q->dbd->driver, q->r->pool, res, row, -1) == 0;
}

static const char *stubmail_col(stubmail_req *q, apr_dbd_row_t *row, int n)
{
    const char *v = apr_dbd_get_entry(q->dbd->driver, row, n);

    return v ? apr_pstrdup(q->r->pool, v) : "";
}

/* ------------------------------------------------------------------------
 * Authentication: a bearer token from POST v1/login
 * ---------------------------------------------------------------------- */

/* A database connection for this request (acquired once). 1, or 0 when
 * the 503 went out (q->ret). */
static int stubmail_db(stubmail_req *q)
{
    if (q->dbd == NULL && stubmail_dbd_acquire)
        q->dbd = stubmail_dbd_acquire(q->r);
    if (q->dbd == NULL)
        return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                               "no database connection from mod_dbd");
    return 1;
}

/* Authorization: Bearer TOKEN. No database: the MAC proves the token. */
static int stubmail_auth_bearer(stubmail_req *q, const char *token)
{
    request_rec *r = q->r;
    char domain[SM_DOMAIN_MAX + 1];
    const char *why = "no StubmailTokenKey configured";
    time_t expiry;
    size_t n = strlen(token);

    while (n > 0 && apr_isspace(token[n - 1]))
        n--;
    token = apr_pstrmemdup(r->pool, token, n);
    if (q->conf->tokens == NULL
        || sm_token_check(q->conf->tokens, token, time(NULL), domain, sizeof(domain),
                          &expiry, &why) != 0) {
        if (strcmp(why, "expired") == 0)
            return stubmail_fail_0(q, "token_expired", "the token has expired: log in again",
                                   "token expired");
        return stubmail_fail_0(q, "bad_token", "not a token of this server",
                               apr_pstrcat(r->pool, "bearer token refused: ", why, NULL));
    }
    q->domain = apr_pstrdup(r->pool, domain);
    r->user = (char *)q->domain;
    return 1;
}

/* 1 with q->domain set, or 0 when an error answer went out (q->ret). */
static int stubmail_authenticate(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *auth = apr_table_get(r->headers_in, "Authorization");
    const char *scheme = auth ? ap_getword_white(r->pool, &auth) : "";

    if (strcasecmp(scheme, "Bearer") == 0)
        return stubmail_auth_bearer(q, auth);
    return stubmail_fail_0(q, "token_required", "a bearer token is required: log in",
                           *scheme ? apr_psprintf(r->pool, "Authorization scheme '%s' "
                                                  "not accepted",
                                                  ap_escape_logitem(r->pool, scheme))
                                   : "no Authorization header");
}

/* ------------------------------------------------------------------------
 * Request bodies
 * ---------------------------------------------------------------------- */

static int stubmail_is_json(const char *ctype)
{
    size_t n;

    if (ctype == NULL)
        return 0;
    while (*ctype == ' ' || *ctype == '\t')
        ctype++;
    n = strcspn(ctype, "; \t");
    return n == strlen("application/json")
           && strncasecmp(ctype, "application/json", n) == 0;
}

/* Read the whole JSON body (at most StubmailMaxRequestBody bytes) into
 * *body (NUL-terminated, in r->pool). 1, or 0 when an error answer went
 * out (q->ret). */
static int stubmail_read_body(stubmail_req *q, char **body, apr_size_t *len)
{
    request_rec *r = q->r;
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_off_t length;
    apr_bucket_brigade *bb;
    apr_size_t got = 0;
    char *buf, *end;
    int eos = 0;

    if (cl == NULL || apr_table_get(r->headers_in, "Transfer-Encoding"))
        return stubmail_fail_0(q, "length_required", "Content-Length required",
                             "POST without Content-Length");
    if (apr_strtoff(&length, cl, &end, 10) != APR_SUCCESS || end == cl
        || *end != '\0' || length < 0)
        return stubmail_fail_0(q, "bad_request", "invalid Content-Length",
                             "invalid Content-Length");
    if (length > q->conf->max_body)
        return stubmail_fail_0(q, "too_large", "request body too large",
                             apr_psprintf(r->pool, "Content-Length %" APR_OFF_T_FMT
                                          " above StubmailMaxRequestBody %"
                                          APR_INT64_T_FMT, length,
                                          q->conf->max_body));
    if (!stubmail_is_json(apr_table_get(r->headers_in, "Content-Type")))
        return stubmail_fail_0(q, "unsupported_media_type",
                             "Content-Type must be application/json",
                             apr_psprintf(r->pool, "Content-Type '%s'",
                                          ap_escape_logitem(r->pool,
                                              apr_table_get(r->headers_in,
                                                            "Content-Type"))));

    buf = apr_palloc(r->pool, (apr_size_t)length + 1);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    while (!eos) {
        apr_bucket *b;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_BLOCK_READ, HUGE_STRING_LEN);

        if (rv != APR_SUCCESS) {
            apr_brigade_cleanup(bb);
            r->connection->keepalive = AP_CONN_CLOSE;
            return stubmail_fail_0(q, "bad_request", "could not read the request body",
                                 "reading the request body failed");
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t n;

            if (APR_BUCKET_IS_EOS(b)) {
                eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b))
                continue;
            rv = apr_bucket_read(b, &data, &n, APR_BLOCK_READ);
            if (rv != APR_SUCCESS || got + n > (apr_size_t)length) {
                apr_brigade_cleanup(bb);
                r->connection->keepalive = AP_CONN_CLOSE;
                return stubmail_fail_0(q, "bad_request",
                                     "could not read the request body",
                                     "request body unreadable or longer than "
                                     "Content-Length");
            }
            memcpy(buf + got, data, n);
            got += n;
        }
        apr_brigade_cleanup(bb);
    }
    buf[got] = '\0';
    *body = buf;
    *len = got;
    return 1;
}

/* ------------------------------------------------------------------------
 * Rate limits: token buckets in the database, shared by every child
 * ---------------------------------------------------------------------- */

/* Take one request from the bucket of (kind, key) that holds n and fills
 * again in secs seconds. 1 taken, 0 refused with *wait the seconds until
 * one is back, -1 database trouble (logged; nothing answered yet). */
static int stubmail_rate_take(stubmail_req *q, const char *kind, const char *key,
                              apr_int64_t n, apr_int64_t secs, apr_int64_t *wait)
{
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[4], *v = NULL;

    args[0] = kind;
    args[1] = key;
    args[2] = apr_psprintf(q->r->pool, "%" APR_INT64_T_FMT, n);
    args[3] = apr_psprintf(q->r->pool, "%" APR_INT64_T_FMT, secs);
    if (stubmail_select(q, STMT_RATE, &res, 4, args) != 0)
        return -1;
    while (stubmail_next_row(q, res, &row))
        if (v == NULL)
            v = stubmail_col(q, row, 0);
    if (v == NULL || *v == '\0') {
        SMLOG(q, APLOG_ERR, 0, "rate limit %s %s: no answer from rate_take", kind, key);
        return -1;
    }
    *wait = apr_atoi64(v);
    return *wait == 0;
}

/* Retry-After for a request the bucket refused: its wait, from 1 up to
 * longest (a clock that went back could ask for more). Returns the
 * seconds, for the error message. */
static apr_int64_t stubmail_retry_after(stubmail_req *q, apr_int64_t wait,
                                        apr_int64_t longest)
{
    if (wait < 1)
        wait = 1;
    if (wait > longest)
        wait = longest;
    q->retry_after = apr_psprintf(q->r->pool, "%" APR_INT64_T_FMT, wait);
    return wait;
}

/* StubmailMinPollInterval and StubmailPollBurst: a bucket of burst polls
 * per domain, one back every interval. 1 when this poll may go ahead, 0
 * when an error answer went out (429 with Retry-After, or 503). */
static int stubmail_poll_gate(stubmail_req *q)
{
    request_rec *r = q->r;
    apr_int64_t interval = q->conf->min_poll_interval, burst = q->conf->poll_burst;
    apr_int64_t wait = interval;

    if (interval == 0)
        return 1;
    switch (stubmail_rate_take(q, "poll", q->domain, burst, burst * interval, &wait)) {
    case 1:
        return 1;
    case 0:
        break;
    default:
        return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                               "poll interval check failed");
    }
    wait = stubmail_retry_after(q, wait, interval);
    return stubmail_fail_0(q, "too_soon",
                           apr_psprintf(r->pool, "polled %" APR_INT64_T_FMT " times "
                                        "within %" APR_INT64_T_FMT " s: retry after %"
                                        APR_INT64_T_FMT " s", burst, burst * interval,
                                        wait),
                           apr_psprintf(r->pool, "StubmailMinPollInterval %"
                                        APR_INT64_T_FMT " with StubmailPollBurst %"
                                        APR_INT64_T_FMT, interval, burst));
}

/* StubmailLoginAddressRate, then StubmailLoginRate: checked before any
 * DNS or GnuPG work, which is what they protect. The address first, so
 * that one client cannot fill the table with made-up domains. Every login
 * that gets this far counts, good or bad. 1 to go on, 0 when an error
 * answer went out (429 with Retry-After, or 503). */
static int stubmail_login_rate(stubmail_req *q, const char *domain)
{
    request_rec *r = q->r;
    const struct {
        const char *kind, *key, *directive, *what;
        const stubmail_rate *rate;
    } limits[] = {
        { "login_address", r->useragent_ip, "StubmailLoginAddressRate",
          "from this address", &q->conf->login_addr_rate },
        { "login_domain", domain, "StubmailLoginRate", "for this domain",
          &q->conf->login_rate },
    };
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    apr_int64_t wait = 0;
    size_t i;

    if (q->conf->login_rate.n == 0 && q->conf->login_addr_rate.n == 0)
        return 1;
    /* logins are rare enough to carry the cleaning of old buckets */
    if (stubmail_select(q, STMT_RATE_CLEAN, &res, 0, NULL) != 0)
        return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                               "cleaning the rate limits failed");
    while (stubmail_next_row(q, res, &row))
        ;
    for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        const stubmail_rate *rate = limits[i].rate;

        if (rate->n == 0)
            continue;
        switch (stubmail_rate_take(q, limits[i].kind, limits[i].key, rate->n,
                                   rate->secs, &wait)) {
        case 1:
            continue;
        case 0:
            break;
        default:
            return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                                   "login rate check failed");
        }
        wait = stubmail_retry_after(q, wait, rate->secs);
        return stubmail_fail_0(q, "too_soon",
                               apr_psprintf(r->pool, "more than %" APR_INT64_T_FMT
                                            " logins %s within %" APR_INT64_T_FMT
                                            " s: retry after %" APR_INT64_T_FMT " s",
                                            rate->n, limits[i].what, rate->secs, wait),
                               apr_psprintf(r->pool, "%s %" APR_INT64_T_FMT "/%"
                                            APR_INT64_T_FMT " reached by %s %s, login "
                                            "refused before any key check",
                                            limits[i].directive, rate->n, rate->secs,
                                            limits[i].kind, limits[i].key));
    }
    return 1;
}

/* ------------------------------------------------------------------------
 * POST v1/poll
 * ---------------------------------------------------------------------- */

/* The listing of both polls: the rows of label (id, sender, recipient,
 * size, time) become root's "messages" and "more". At most poll_limit are
 * listed, but every row is read, so that the result is released. 1 with
 * *more and *listed set, or 0 after the error answer (503). */
static int stubmail_poll_list(stubmail_req *q, const char *label, int nargs,
                              const char **args, json_t *root, int *more,
                              apr_int64_t *listed)
{
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    json_t *messages = json_array();
    apr_int64_t n = 0;

    *more = 0;
    if (messages == NULL)
        return stubmail_fail_0(q, "unavailable", "internal error, retry later",
                               "out of memory");
    if (stubmail_select(q, label, &res, nargs, args) != 0) {
        json_decref(messages);
        return stubmail_fail_0(q, "unavailable", "database unavailable, retry later",
                               "poll query failed");
    }
    while (stubmail_next_row(q, res, &row)) {
        json_t *m;

        if (n++ >= q->conf->poll_limit) {
            *more = 1;
            continue;           /* read every row */
        }
        m = json_pack("{s:s, s:s, s:s, s:I, s:s}",
                      "id", apr_dbd_get_entry(q->dbd->driver, row, 0),
                      "from", apr_dbd_get_entry(q->dbd->driver, row, 1),
                      "to", apr_dbd_get_entry(q->dbd->driver, row, 2),
                      "size", (json_int_t)apr_atoi64(
                          apr_dbd_get_entry(q->dbd->driver, row, 3)),
                      "time", apr_dbd_get_entry(q->dbd->driver, row, 4));
        if (m == NULL || json_array_append_new(messages, m) != 0)
            *more = -1;         /* out of memory; keep draining */
    }
    if (*more < 0 || json_object_set_new(root, "messages", messages) != 0) {
        if (*more < 0)
            json_decref(messages);      /* else set_new took it */
        return stubmail_fail_0(q, "unavailable", "internal error, retry later",
                               "out of memory building the answer");
    }
    json_object_set_new(root, "more", json_boolean(*more));
    *listed = *more ? q->conf->poll_limit : n;
    return 1;
}

static int stubmail_poll(stubmail_req *q)
{
    request_rec *r = q->r;
    char *body, *pairs_json = NULL;
    apr_size_t len;
    sm_pair *pairs = NULL;
    size_t npairs = 0;
    sm_parse_error perr;
    const char *args[3];
    json_t *root = NULL;
    apr_int64_t listed;
    int more, ret;

    if (!stubmail_read_body(q, &body, &len))
        return q->ret;

    memset(&perr, 0, sizeof(perr));
    if (sm_poll_request_parse(body, len, q->domain, (size_t)q->conf->max_pairs,
                              &pairs, &npairs, &perr) != 0) {
        ret = stubmail_fail(q, stubmail_parse_code(&perr),
                            perr.message, apr_pstrcat(r->pool, "poll refused: ",
                                                      perr.message, NULL));
        goto leave;
    }
    /* Only a poll that will be answered counts against the interval. */
    if (!stubmail_poll_gate(q)) {
        ret = q->ret;
        goto leave;
    }
    pairs_json = sm_pairs_sql_json(pairs, npairs);
    root = json_object();
    if (pairs_json == NULL || root == NULL) {
        ret = stubmail_fail(q, "unavailable", "internal error, retry later",
                            "out of memory");
        goto leave;
    }

    args[0] = pairs_json;
    args[1] = q->domain;
    args[2] = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, q->conf->poll_limit + 1);
    if (!stubmail_poll_list(q, STMT_POLL, 3, args, root, &more, &listed)) {
        ret = q->ret;
        goto leave;
    }
    SMLOG(q, APLOG_INFO, 0, "poll: %lu pairs, %" APR_INT64_T_FMT " listed%s",
          (unsigned long)npairs, listed, more ? ", more" : "");
    ret = stubmail_send_json(q, root);
    root = NULL;

leave:
    json_decref(root);
    free(pairs_json);
    free(pairs);
    return ret;
}

/* ------------------------------------------------------------------------
 * POST v1/subscription and GET v1/poll?version=V
 * ---------------------------------------------------------------------- */

/* 409 subscription_changed: the poller works from version asked, which is
 * not the current one; the body names the current one, so that the poller
 * can reset. */
static int stubmail_version_changed(stubmail_req *q, const char *current,
                                    apr_int64_t asked, const char *why)
{
    q->version = current;
    return stubmail_fail(q, "subscription_changed",
                         apr_psprintf(q->r->pool, "the subscription is at version %s, "
                                      "not %" APR_INT64_T_FMT ": reset it", current,
                                      asked),
                         why);
}

/* Change the domain's subscription: all of it or nothing (one statement),
 * then {"version": V}; a base that is not the current version gets 409
 * with the current one, so the poller knows to reset. */
static int stubmail_subscription(stubmail_req *q)
{
    request_rec *r = q->r;
    char *body, *add_json = NULL, *remove_json = NULL;
    apr_size_t len;
    sm_subscription_request req;
    sm_parse_error perr;
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[5], *ok = NULL, *version = NULL;
    int ret;

    memset(&req, 0, sizeof(req));
    if (!stubmail_read_body(q, &body, &len))
        return q->ret;
    memset(&perr, 0, sizeof(perr));
    if (sm_subscription_request_parse(body, len, q->domain, (size_t)q->conf->max_pairs,
                                      &req, &perr) != 0) {
        ret = stubmail_fail(q, stubmail_parse_code(&perr), perr.message,
                            apr_pstrcat(r->pool, "subscription change refused: ",
                                        perr.message, NULL));
        goto leave;
    }
    add_json = sm_pairs_sql_json(req.add, req.nadd);
    remove_json = sm_pairs_sql_json(req.remove, req.nremove);
    if (add_json == NULL || remove_json == NULL) {
        ret = stubmail_fail(q, "unavailable", "internal error, retry later",
                            "out of memory");
        goto leave;
    }
    args[0] = q->domain;
    args[1] = req.reset ? "t" : "f";
    args[2] = req.reset ? "" : apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                                            (apr_int64_t)req.base);
    args[3] = add_json;
    args[4] = remove_json;
    if (stubmail_select(q, STMT_SUB_CHANGE, &res, 5, args) != 0) {
        ret = stubmail_fail(q, "unavailable", "database unavailable, retry later",
                            "subscription change failed");
        goto leave;
    }
    while (stubmail_next_row(q, res, &row)) {
        if (ok == NULL) {
            ok = stubmail_col(q, row, 0);
            version = stubmail_col(q, row, 1);
        }
    }
    if (ok == NULL) {
        ret = stubmail_fail(q, "unavailable", "database unavailable, retry later",
                            "subscription change returned no row");
        goto leave;
    }
    if (strcmp(ok, "t") != 0) {
        ret = stubmail_version_changed(q, version, (apr_int64_t)req.base,
                                       apr_psprintf(r->pool, "subscription change with "
                                                    "base %" APR_INT64_T_FMT ", current "
                                                    "version %s", (apr_int64_t)req.base,
                                                    version));
        goto leave;
    }
    SMLOG(q, APLOG_INFO, 0, "subscription: %s%lu added, %lu removed, now version %s",
          req.reset ? "reset, " : "", (unsigned long)req.nadd,
          (unsigned long)req.nremove, version);
    ret = stubmail_send_json(q, json_pack("{s:I}", "version",
                                          (json_int_t)apr_atoi64(version)));
leave:
    free(add_json);
    free(remove_json);
    sm_subscription_request_free(&req);
    return ret;
}

/* The version=V of the query string (other parameters are ignored): 1 with
 * *version, or 0 after a 400. */
static int stubmail_query_version(stubmail_req *q, apr_int64_t *version)
{
    request_rec *r = q->r;
    const char *rest = r->args ? r->args : "", *value = NULL;
    size_t n;

    while (*rest) {
        n = strcspn(rest, "&");
        if (n >= 8 && strncmp(rest, "version=", 8) == 0) {
            if (value != NULL)
                return stubmail_fail_0(q, "bad_request", "version given twice",
                                       "query string names version twice");
            value = apr_pstrmemdup(r->pool, rest + 8, n - 8);
        }
        rest += n;
        if (*rest == '&')
            rest++;
    }
    /* at most 15 digits: below 2^53, exact in every JSON number */
    if (value == NULL || *value == '\0' || strlen(value) > 15
        || strspn(value, "0123456789") != strlen(value))
        return stubmail_fail_0(q, "bad_request",
                               "version=V (the subscription version) is required",
                               apr_psprintf(r->pool, "query string '%s'",
                                            ap_escape_logitem(r->pool, r->args ? r->args
                                                                      : "")));
    *version = apr_atoi64(value);
    return 1;
}

/* 304: no body; the ETag (already in headers_out) goes along. */
static int stubmail_not_modified(stubmail_req *q)
{
    request_rec *r = q->r;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_status_t rv;

    r->status = HTTP_NOT_MODIFIED;
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, bb);
    if (rv != APR_SUCCESS)
        SMLOG(q, APLOG_DEBUG, rv, "sending the answer failed");
    return OK;
}

/* What is pending for the domain's subscription, from pending_match only.
 * The ETag is read before the listing: whatever it covers is listed (or
 * was acked meanwhile), so a poller never gets 304 for a match it did not
 * see. An answer cut short (more: true) carries no ETag: the rest must be
 * polled for. */
static int stubmail_poll_get(stubmail_req *q)
{
    request_rec *r = q->r;
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[2], *etag = NULL, *version = NULL;
    apr_int64_t want, listed;
    json_t *root;
    ap_condition_e cond;
    int more;

    if (!stubmail_query_version(q, &want))
        return q->ret;
    args[0] = args[1] = q->domain;
    if (stubmail_select(q, STMT_POLL_STATE, &res, 2, args) != 0)
        return stubmail_fail(q, "unavailable", "database unavailable, retry later",
                             "poll state query failed");
    while (stubmail_next_row(q, res, &row)) {
        if (etag == NULL) {
            etag = stubmail_col(q, row, 0);
            version = stubmail_col(q, row, 1);
        }
    }
    if (etag == NULL || *etag == '\0')
        return stubmail_fail(q, "unavailable", "database unavailable, retry later",
                             "poll state query returned no row");
    if (apr_atoi64(version) != want)
        return stubmail_version_changed(q, version, want,
                                        apr_psprintf(r->pool, "poll for version %"
                                                     APR_INT64_T_FMT ", current version %s",
                                                     want, version));
    /* a 304 is a poll too */
    if (!stubmail_poll_gate(q))
        return q->ret;
    apr_table_setn(r->headers_out, "ETag", etag);
    cond = ap_condition_if_none_match(r, r->headers_out);
    if (cond == AP_CONDITION_WEAK || cond == AP_CONDITION_STRONG) {
        SMLOG(q, APLOG_DEBUG, 0, "poll: not modified, %s", etag);
        return stubmail_not_modified(q);
    }

    root = json_object();
    if (root == NULL)
        return stubmail_fail(q, "unavailable", "internal error, retry later",
                             "out of memory");
    args[1] = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, q->conf->poll_limit + 1);
    if (!stubmail_poll_list(q, STMT_POLL_PENDING, 2, args, root, &more, &listed)) {
        json_decref(root);
        return q->ret;
    }
    json_object_set_new(root, "version", json_integer((json_int_t)want));
    if (more)
        apr_table_unset(r->headers_out, "ETag");
    SMLOG(q, APLOG_INFO, 0, "poll: version %" APR_INT64_T_FMT ", %" APR_INT64_T_FMT
          " listed%s", want, listed, more ? ", more" : "");
    return stubmail_send_json(q, root);
}

/* ------------------------------------------------------------------------
 * GET v1/message/{id}
 * ---------------------------------------------------------------------- */

/* Look the message up for this domain. 1 found, 0 not, -1 database error. */
static int stubmail_fetch_lookup(stubmail_req *q, const char **spool_name,
                                 const char **size, const char **sender,
                                 const char **format)
{
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[2];
    int found = 0;

    args[0] = q->id;
    args[1] = q->domain;
    if (stubmail_select(q, STMT_FETCH, &res, 2, args) != 0)
        return -1;
    while (stubmail_next_row(q, res, &row)) {
        if (!found) {
            *spool_name = stubmail_col(q, row, 0);
            *size = stubmail_col(q, row, 1);
            *sender = stubmail_col(q, row, 2);
            *format = stubmail_col(q, row, 3);
            found = 1;
        }
    }
    return found;
}

static int stubmail_fetch(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *spool_name = NULL, *size = NULL, *sender = NULL, *format = NULL;
    char path[PATH_MAX];
    apr_file_t *fd;
    apr_finfo_t fi;
    apr_bucket_brigade *bb;
    apr_status_t rv;
    int found;

    found = stubmail_fetch_lookup(q, &spool_name, &size, &sender, &format);
    if (found < 0)
        return stubmail_fail(q, "unavailable", "database unavailable, retry later",
                             "fetch query failed");
    if (found == 0)
        return stubmail_fail(q, "not_found", "no such message",
                             "no unacked recipient at this domain, or body gone");
    if (sm_spool_path(q->conf->spool_dir, spool_name, path, sizeof(path)) != 0)
        return stubmail_fail(q, "internal_error", "message body unavailable",
                             apr_psprintf(r->pool, "bad spool_name '%s' in the "
                                          "database", spool_name));

    rv = apr_file_open(&fd, path, APR_FOPEN_READ | APR_FOPEN_BINARY
                       | APR_FOPEN_SENDFILE_ENABLED, APR_OS_DEFAULT, r->pool);
    if (rv != APR_SUCCESS && APR_STATUS_IS_ENOENT(rv)) {
        /* A last ack may have removed it since the lookup. */
        found = stubmail_fetch_lookup(q, &spool_name, &size, &sender, &format);
        if (found == 0)
            return stubmail_fail(q, "not_found", "no such message",
                                 "acked and removed while being fetched");
    }
    if (rv != APR_SUCCESS) {
        char err[256];

        return stubmail_fail(q, "internal_error", "message body unavailable",
                             apr_psprintf(r->pool, "cannot open spool file %s: %s",
                                          path, apr_strerror(rv, err, sizeof(err))));
    }
    rv = apr_file_info_get(&fi, APR_FINFO_SIZE, fd);
    if (rv != APR_SUCCESS) {
        char err[256];

        return stubmail_fail(q, "internal_error", "message body unavailable",
                             apr_psprintf(r->pool, "cannot stat spool file %s: %s",
                                          path, apr_strerror(rv, err, sizeof(err))));
    }
    if (fi.size != apr_atoi64(size))
        SMLOG(q, APLOG_WARNING, 0, "spool file %s has %" APR_OFF_T_FMT
              " bytes, the database says %s; serving the file", path,
              fi.size, size);

    /* message.format says what the milter stored: an OpenPGP message
     * (signed, encrypted) or, from before, the plain text */
    if (strcmp(format, "openpgp") == 0) {
        ap_set_content_type(r, "application/pgp-encrypted");
        apr_table_setn(r->headers_out, "Stubmail-Format", "openpgp");
    }
    else {
        ap_set_content_type(r, "message/rfc822");
    }
    ap_set_content_length(r, fi.size);
    apr_table_setn(r->headers_out, "Stubmail-From", sender);
    apr_table_setn(r->headers_out, "Accept-Ranges", "bytes");
    /* The bytes behind an id never change: a strong validator for If-Range. */
    apr_table_setn(r->headers_out, "ETag",
                   apr_pstrcat(r->pool, "\"", q->id, "\"", NULL));

    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    if (fi.size > 0)
        apr_brigade_insert_file(bb, fd, 0, fi.size, r->pool);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    SMLOG(q, APLOG_INFO, 0, "fetch: %" APR_OFF_T_FMT " bytes from %s%s", fi.size,
          path, apr_table_get(r->headers_in, "Range") ? " (range)" : "");
    rv = ap_pass_brigade(r->output_filters, bb);
    if (rv != APR_SUCCESS)
        SMLOG(q, APLOG_DEBUG, rv, "fetch: sending the body failed");
    return OK;
}

/* ------------------------------------------------------------------------
 * POST v1/message/{id}/ack
 * ---------------------------------------------------------------------- */

static int stubmail_ack(stubmail_req *q)
{
    request_rec *r = q->r;
    char *body;
    apr_size_t len;
    sm_ack_request ack;
    const char *to = NULL;
    sm_parse_error perr;
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[4];
    const char *retrieved = NULL, *spool_name = NULL, *rejected = NULL;
    int first;
    json_t *root;

    if (!stubmail_read_body(q, &body, &len))
        return q->ret;
    memset(&perr, 0, sizeof(perr));
    if (sm_ack_request_parse_status(body, len, q->domain, &ack, &perr) != 0)
        return stubmail_fail(q, stubmail_parse_code(&perr),
                             perr.message, apr_pstrcat(r->pool, "ack refused: ",
                                                       perr.message, NULL));
    to = apr_pstrdup(r->pool, ack.to);

    args[0] = ack.reason;       /* "" unless rejected */
    args[1] = q->id;
    args[2] = to;
    args[3] = q->domain;
    if (stubmail_select(q, STMT_ACK_MARK, &res, 4, args) != 0)
        return stubmail_fail(q, "unavailable", "database unavailable, retry later",
                             "marking retrieved failed");
    while (stubmail_next_row(q, res, &row)) {
        if (retrieved == NULL) {
            retrieved = stubmail_col(q, row, 0);
            rejected = stubmail_col(q, row, 1);
        }
    }
    first = retrieved != NULL;
    if (!first) {
        /* Already acked (idempotent answer: the first ack's time and
         * status) or no such recipient. */
        row = NULL;
        if (stubmail_select(q, STMT_ACK_SEEN, &res, 3, args + 1) != 0)
            return stubmail_fail(q, "unavailable", "database unavailable, retry later",
                                 "looking up the ack failed");
        while (stubmail_next_row(q, res, &row)) {
            if (retrieved == NULL) {
                retrieved = stubmail_col(q, row, 0);
                rejected = stubmail_col(q, row, 1);
            }
        }
        if (retrieved == NULL)
            return stubmail_fail(q, "not_found", "no such message",
                                 apr_psprintf(r->pool, "no recipient %s", to));
        if (*retrieved == '\0')
            return stubmail_fail(q, "unavailable", "retry later",
                                 "recipient row changed under the ack");
    }

    /* Delete the body once no recipient is pending. Also on a repeated ack,
     * so that a retry completes what an interrupted ack left undone. */
    args[0] = q->id;
    args[1] = q->id;
    row = NULL;
    if (stubmail_select(q, STMT_ACK_DONE, &res, 2, args) != 0) {
        /* The ack itself is recorded; the next ack or the janitor
         * finishes the deletion. */
        SMLOG(q, APLOG_ERR, 0, "ack of %s recorded, but marking the body "
              "deleted failed", to);
    }
    else {
        while (stubmail_next_row(q, res, &row)) {
            if (spool_name == NULL)
                spool_name = stubmail_col(q, row, 0);
        }
    }
    if (spool_name) {
        char path[PATH_MAX];
        apr_status_t rv;

        if (sm_spool_path(q->conf->spool_dir, spool_name, path, sizeof(path)) != 0)
            SMLOG(q, APLOG_ERR, 0, "bad spool_name '%s': body left for the "
                  "janitor", spool_name);
        else if ((rv = apr_file_remove(path, r->pool)) != APR_SUCCESS)
            SMLOG(q, APLOG_ERR, rv, "cannot remove spool file %s: left for "
                  "the janitor", path);
        else
            SMLOG(q, APLOG_INFO, 0, "all recipients acked, removed %s", path);
    }

    if (first && ack.rejected)
        /* The receiver could not verify or decrypt what we stored: worth
         * the sender admin's attention (storage tampering, key mix-up). */
        SMLOG(q, APLOG_WARNING, 0, "ack: %s rejected the message at %s: %s", to,
              retrieved, ap_escape_logitem(r->pool, ack.reason));
    else
        SMLOG(q, APLOG_INFO, 0, "ack: %s retrieved %s%s", to, retrieved,
              first ? "" : " (repeated)");
    root = json_pack("{s:s, s:s, s:s, s:s}", "id", q->id, "to", to,
                     "retrieved", retrieved, "status",
                     strcmp(rejected, "t") == 0 ? "rejected" : "delivered");
    return stubmail_send_json(q, root);
}

/* ------------------------------------------------------------------------
 * GET v1/key
 * ---------------------------------------------------------------------- */

/* 1 if StubmailDomain is set here (post_config then made sure of the
 * public key, the GnuPG home and a token key), else 0 after a 404: without
 * it this server has no key and takes no logins, which is a
 * lasting answer, not a failure to retry. */
static int stubmail_login_configured(stubmail_req *q)
{
    if (q->conf->domain)
        return 1;
    return stubmail_fail_0(q, "no_such_endpoint", "this server has no domain key",
                           "StubmailDomain is not set for this server: GET v1/key "
                           "and POST v1/login are off");
}

static int stubmail_key(stubmail_req *q)
{
    if (!stubmail_login_configured(q))
        return q->ret;
    return stubmail_send(q, HTTP_OK, "application/pgp-keys", q->conf->public_key);
}

/* ------------------------------------------------------------------------
 * POST v1/login
 * ---------------------------------------------------------------------- */

/* Public key blobs this child has imported, by fingerprint, so that a
 * domain logging in again with the key it sent before costs one gpg run
 * (the verification), not three. The same octets for the same fingerprint
 * pass sm_pgp_import_public's checks the same way every time; what can
 * change, expiry or revocation, sm_pgp_verify_detached checks itself. */
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

/* Answers of stubmail_domain_fpr. */
enum { FPR_FOUND, FPR_UNKNOWN, FPR_DNS_TEMPFAIL, FPR_DB_ERROR };

/* The key fingerprint the polling domain publishes: peer.fpr when the admin
 * pinned one, else its _stubmail record through dns_cache, asking DNS on a
 * miss and caching the answer (not a temporary failure). fpr gets
 * SM_PGP_FPR_MAX + 1 bytes; *source or *why say where it came from or why
 * there is none. */
static int stubmail_domain_fpr(stubmail_req *q, const char *domain, char *fpr,
                               const char **source, const char **why)
{
    request_rec *r = q->r;
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    const char *args[8], *status = NULL, *found = NULL, *cached_why = NULL;
    char dns_why[256], ttl[16];
    sm_txt_record rec;
    sm_dns_status st;
    unsigned ttl_s = 0;

    args[0] = domain;
    if (stubmail_select(q, STMT_PEER_FPR, &res, 1, args) != 0)
        return FPR_DB_ERROR;
    while (stubmail_next_row(q, res, &row)) {
        if (found == NULL)
            found = stubmail_col(q, row, 0);
    }
    if (found && *found) {
        apr_cpystrn(fpr, found, SM_PGP_FPR_MAX + 1);
        *source = "peer.fpr";
        return FPR_FOUND;
    }

    row = NULL;
    found = NULL;
    if (stubmail_select(q, STMT_DNS_GET, &res, 1, args) != 0)
        return FPR_DB_ERROR;
    while (stubmail_next_row(q, res, &row)) {
        if (status == NULL) {
            status = stubmail_col(q, row, 0);
            found = stubmail_col(q, row, 1);
            cached_why = stubmail_col(q, row, 2);
        }
    }
    if (status) {
        if (strcmp(status, "found") == 0 && *found) {
            apr_cpystrn(fpr, found, SM_PGP_FPR_MAX + 1);
            *source = "DNS (cached)";
            return FPR_FOUND;
        }
        *why = apr_psprintf(r->pool, "_stubmail record %s (cached): %s", status,
                            *cached_why ? cached_why : "-");
        return FPR_UNKNOWN;
    }

    st = sm_dns_lookup(q->conf->resolver, domain, &rec, &ttl_s, dns_why, sizeof(dns_why));
    if (st == SM_DNS_TEMPFAIL) {
        *why = apr_psprintf(r->pool, "DNS lookup of _stubmail.%s failed: %s", domain,
                            dns_why);
        return FPR_DNS_TEMPFAIL;
    }
    apr_snprintf(ttl, sizeof(ttl), "%u", ttl_s > 86400 ? 86400 : ttl_s);
    args[1] = sm_dns_status_name(st);
    args[2] = st == SM_DNS_FOUND ? rec.outbox : "";
    args[3] = st == SM_DNS_FOUND ? rec.udp : "";
    args[4] = st == SM_DNS_FOUND ? rec.fpr : "";
    args[5] = st == SM_DNS_FOUND ? rec.policy : "";
    args[6] = st == SM_DNS_FOUND ? "" : dns_why;
    args[7] = ttl;
    row = NULL;
    /* The answer stands even if it cannot be cached: the next login asks
     * DNS again. */
    if (stubmail_select(q, STMT_DNS_PUT, &res, 8, args) != 0)
        SMLOG(q, APLOG_WARNING, 0, "could not cache the _stubmail answer for %s", domain);
    else
        while (stubmail_next_row(q, res, &row))
            ;
    if (st != SM_DNS_FOUND) {
        *why = apr_psprintf(r->pool, "_stubmail record %s: %s", sm_dns_status_name(st),
                            dns_why);
        return FPR_UNKNOWN;
    }
    apr_cpystrn(fpr, rec.fpr, SM_PGP_FPR_MAX + 1);
    *source = "DNS";
    return FPR_FOUND;
}

/* The key in the login is fpr's and nothing else (imported into
 * StubmailGnupgHome unless this child already did that with these octets),
 * and the signature over the statement is good and fpr's. 1, or 0 when an
 * error answer went out (q->ret). */
static int stubmail_login_verify(stubmail_req *q, const sm_login_request *req,
                                         const char *fpr, const char *statement,
                                         int statement_len)
{
    const char *home = q->conf->gnupg_home;
    char why[SM_PGP_WHY_MAX];
    int known = stubmail_key_known(fpr, req->key, req->key_len), rc;

    if (!known) {
        rc = sm_pgp_import_public(home, req->key, req->key_len, fpr, why, sizeof(why));
        if (rc != SM_PGP_OK)
            goto key_failed;
        stubmail_key_note(fpr, req->key, req->key_len);
    }
    rc = sm_pgp_verify_detached(home, statement, (size_t)statement_len, req->signature,
                                req->signature_len, fpr, why, sizeof(why));
    if (rc == SM_PGP_REJECT && known
        && sm_pgp_have_key(home, fpr, NULL, 0) == SM_PGP_REJECT) {
        /* The keyring lost the key this child imported (an admin cleaned
         * it up): import again, then judge the signature. */
        stubmail_key_note(fpr, NULL, 0);
        rc = sm_pgp_import_public(home, req->key, req->key_len, fpr, why, sizeof(why));
        if (rc != SM_PGP_OK)
            goto key_failed;
        stubmail_key_note(fpr, req->key, req->key_len);
        rc = sm_pgp_verify_detached(home, statement, (size_t)statement_len, req->signature,
                                    req->signature_len, fpr, why, sizeof(why));
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
                               apr_psprintf(q->r->pool, "key refused, expected %s: %s",
                                            fpr, why));
    return stubmail_fail_0(q, "internal_error", "could not check the key, retry later",
                           apr_psprintf(q->r->pool, "importing into GnuPG home %s failed: %s",
                                        home, why));
}

/* The checks of docs/PROTOCOL.md ("POST /v1/login"), in its order, then a
 * token: {"token": ..., "expires": ...}. */
static int stubmail_login(stubmail_req *q)
{
    request_rec *r = q->r;
    const stubmail_srv_conf *c = q->conf;
    sm_login_request req;
    sm_parse_error perr;
    char statement[SM_LOGIN_STATEMENT_MAX], fpr[SM_PGP_FPR_MAX + 1];
    char token[SM_TOKEN_MAX + 1], expires[SM_TIME_LEN + 1];
    const char *source = NULL, *why = NULL, *args[3];
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    char *body;
    apr_size_t len;
    time_t now;
    int statement_len, fresh = 0, ret;

    memset(&req, 0, sizeof(req));
    if (!stubmail_login_configured(q) || !stubmail_read_body(q, &body, &len))
        return q->ret;

    memset(&perr, 0, sizeof(perr));
    if (sm_login_request_parse(body, len, &req, &perr) != 0) {
        ret = stubmail_fail(q, stubmail_parse_code(&perr), perr.message,
                            apr_pstrcat(r->pool, "login refused: ", perr.message, NULL));
        goto leave;
    }
    q->domain = apr_pstrdup(r->pool, req.domain);    /* claimed, for the log */

    if (strcmp(req.server, c->domain) != 0) {
        ret = stubmail_fail(q, "login_failed", "this login is for another server",
                            apr_psprintf(r->pool, "login names server %s, we are %s",
                                         req.server, c->domain));
        goto leave;
    }
    now = time(NULL);
    if (req.when < now - (time_t)c->login_max_skew
        || req.when > now + (time_t)c->login_max_skew) {
        ret = stubmail_fail(q, "stale_login",
                            apr_psprintf(r->pool, "login time %s is more than %"
                                         APR_INT64_T_FMT " s from the server's clock",
                                         req.time, c->login_max_skew),
                            apr_psprintf(r->pool, "login time %s, %ld s off", req.time,
                                         (long)(req.when - now)));
        goto leave;
    }

    if (!stubmail_db(q) || !stubmail_login_rate(q, req.domain)) {
        ret = q->ret;
        goto leave;
    }
    switch (stubmail_domain_fpr(q, req.domain, fpr, &source, &why)) {
    case FPR_FOUND:
        break;
    case FPR_UNKNOWN:
        ret = stubmail_fail(q, "unknown_domain", "the domain publishes no stubmail key",
                            why);
        goto leave;
    case FPR_DNS_TEMPFAIL:
        ret = stubmail_fail(q, "unavailable", "DNS lookup failed, retry later", why);
        goto leave;
    default:
        ret = stubmail_fail(q, "unavailable", "database unavailable, retry later",
                            "looking up the domain's key fingerprint failed");
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
    if (!stubmail_login_verify(q, &req, fpr, statement, statement_len)) {
        ret = q->ret;
        goto leave;
    }

    /* Last, so that only a proven login spends its nonce: keep it for twice
     * the skew, which covers every clock the time check lets through. */
    args[0] = req.domain;
    args[1] = req.nonce;
    args[2] = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, 2 * c->login_max_skew);
    if (stubmail_select(q, STMT_NONCE, &res, 3, args) != 0) {
        ret = stubmail_fail(q, "unavailable", "database unavailable, retry later",
                            "recording the nonce failed");
        goto leave;
    }
    while (stubmail_next_row(q, res, &row))
        fresh = 1;
    if (!fresh) {
        ret = stubmail_fail(q, "replayed_login", "this login was used before",
                            apr_psprintf(r->pool, "nonce %s seen before", req.nonce));
        goto leave;
    }

    if (sm_token_issue(c->tokens, NULL, req.domain, (long)c->token_lifetime, now, token,
                       sizeof(token)) != 0
        || sm_time_format(now + (time_t)c->token_lifetime, expires, sizeof(expires)) != 0) {
        ret = stubmail_fail(q, "internal_error", "could not issue a token, retry later",
                            apr_psprintf(r->pool, "sm_token_issue: %s", strerror(errno)));
        goto leave;
    }
    r->user = (char *)q->domain;
    SMLOG(q, APLOG_INFO, 0, "login: key %s (from %s) verified, token until %s", fpr,
          source, expires);
    if (stubmail_udp_keyring != NULL && c->tokens == stubmail_udp_keyring) {
        /* the UDP poll's session is the token's payload; its key is derived
         * from the same secret, so the responder needs no state */
        char session[SM_UDPPOLL_SESSION_MAX + 1], secret[SM_UDPPOLL_B64_LEN + 1];

        if (sm_udppoll_session_of_token(token, session, sizeof(session)) != 0
            || sm_udppoll_secret(c->tokens, session, secret, sizeof(secret), &why) != 0) {
            ret = stubmail_fail(q, "internal_error", "could not issue a token, retry later",
                                "deriving the UDP poll secret failed");
            goto leave;
        }
        ret = stubmail_send_json(q, json_pack("{s:s, s:s, s:{s:s, s:s, s:s}}", "token", token,
                                              "expires", expires, "udp", "address",
                                              c->udp.advertise, "session", session,
                                              "secret", secret));
        OPENSSL_cleanse(secret, sizeof(secret));
        goto leave;
    }
    ret = stubmail_send_json(q, json_pack("{s:s, s:s}", "token", token, "expires", expires));
leave:
    sm_login_request_free(&req);
    return ret;
}

/* ------------------------------------------------------------------------
 * Routing
 * ---------------------------------------------------------------------- */

enum { ROUTE_NONE, ROUTE_KEY, ROUTE_LOGIN, ROUTE_POLL, ROUTE_FETCH, ROUTE_ACK,
       ROUTE_SUBSCRIPTION };

/* Map the path below the <Location> prefix to an endpoint; *id points at
 * the id segment (copied into the pool) for message endpoints. */
static int stubmail_route(request_rec *r, const char *rest, const char **id)
{
    static const char msg[] = "/v1/message/";
    const char *seg, *slash;

    *id = NULL;
    if (strcmp(rest, "/v1/key") == 0)
        return ROUTE_KEY;
    if (strcmp(rest, "/v1/login") == 0)
        return ROUTE_LOGIN;
    if (strcmp(rest, "/v1/poll") == 0)
        return ROUTE_POLL;
    if (strcmp(rest, "/v1/subscription") == 0)
        return ROUTE_SUBSCRIPTION;
    if (strncmp(rest, msg, sizeof(msg) - 1) != 0)
        return ROUTE_NONE;
    seg = rest + sizeof(msg) - 1;
    slash = strchr(seg, '/');
    if (slash == NULL) {
        if (*seg == '\0')
            return ROUTE_NONE;
        *id = apr_pstrdup(r->pool, seg);
        return ROUTE_FETCH;
    }
    if (slash == seg || strcmp(slash, "/ack") != 0)
        return ROUTE_NONE;
    *id = apr_pstrmemdup(r->pool, seg, (apr_size_t)(slash - seg));
    return ROUTE_ACK;
}

/* The path of the <Location> whose SetHandler brought us here, without
 * trailing '/': core's per-directory config of the innermost section that
 * applies (a module's own per-directory config is only created for sections
 * that contain one of its directives, and SetHandler is core's). NULL when
 * that section is not a literal path (regex, wildcard, <If>). */
static const char *stubmail_location(request_rec *r)
{
    const core_dir_config *cd = ap_get_core_module_config(r->per_dir_config);
    size_t n;

    if (cd == NULL || cd->d == NULL || cd->r != NULL || cd->d_is_fnmatch
        || cd->d[0] != '/')
        return NULL;
    n = strlen(cd->d);
    while (n > 0 && cd->d[n - 1] == '/')
        n--;
    return apr_pstrmemdup(r->pool, cd->d, n);
}

static int stubmail_handler(request_rec *r)
{
    stubmail_req q;
    const char *prefix, *rest, *id = NULL;
    size_t plen;
    int route;

    if (r->handler == NULL || strcmp(r->handler, "stubmail") != 0)
        return DECLINED;

    memset(&q, 0, sizeof(q));
    q.r = r;
    q.conf = ap_get_module_config(r->server->module_config, &stubmail_module);
    prefix = stubmail_location(r);
    plen = prefix ? strlen(prefix) : 0;
    if (prefix == NULL || strncmp(r->uri, prefix, plen) != 0
        || (r->uri[plen] != '/' && r->uri[plen] != '\0')) {
        SMLOG(&q, APLOG_WARNING, 0, "configuration: %s is not below the "
              "<Location> path %s; put SetHandler stubmail in a <Location "
              "/PATH> with a literal path, and let no later <Location> match",
              r->uri, prefix ? prefix : "(none)");
        return stubmail_fail(&q, "no_such_endpoint", "no such endpoint",
                             "handler outside a literal <Location>");
    }
    rest = r->uri + plen;

    route = stubmail_route(r, rest, &id);
    switch (route) {
    case ROUTE_POLL:
        /* POST: the stateless poll with pairs; GET: the subscription's */
        q.allow = "GET, HEAD, POST";
        if (r->method_number != M_POST && r->method_number != M_GET)
            return stubmail_fail(&q, "method_not_allowed", "use GET or POST",
                                 "wrong method");
        break;
    case ROUTE_LOGIN:
    case ROUTE_SUBSCRIPTION:
    case ROUTE_ACK:
        q.allow = "POST";
        if (r->method_number != M_POST)
            return stubmail_fail(&q, "method_not_allowed", "use POST",
                                 "wrong method");
        break;
    case ROUTE_KEY:
    case ROUTE_FETCH:
        q.allow = "GET, HEAD";
        if (r->method_number != M_GET)
            return stubmail_fail(&q, "method_not_allowed", "use GET",
                                 "wrong method");
        break;
    default:
        return stubmail_fail(&q, "no_such_endpoint", "no such endpoint",
                             "unknown path");
    }

    /* No credentials on these two: the key is public, and a login is its
     * own proof. */
    if (route == ROUTE_KEY)
        return stubmail_key(&q);
    if (route == ROUTE_LOGIN)
        return stubmail_login(&q);

    /* A token needs no database; then the endpoint does. */
    if (!stubmail_authenticate(&q) || !stubmail_db(&q))
        return q.ret;

    if (id) {
        if (!sm_id_valid(id))
            return stubmail_fail(&q, "bad_id", "not a message id",
                                 apr_psprintf(r->pool, "bad id '%s'",
                                              ap_escape_logitem(r->pool, id)));
        q.id = id;
    }

    switch (route) {
    case ROUTE_POLL:
        return r->method_number == M_GET ? stubmail_poll_get(&q) : stubmail_poll(&q);
    case ROUTE_SUBSCRIPTION:
        return stubmail_subscription(&q);
    case ROUTE_FETCH:
        return stubmail_fetch(&q);
    default:
        return stubmail_ack(&q);
    }
}

/* ------------------------------------------------------------------------
 * Startup
 * ---------------------------------------------------------------------- */

/* Read StubmailPublicKey into c->public_key (pconf): it is small, and read
 * once here a missing or wrong file stops the start with a clear message
 * instead of failing pollers later; a new key means a new DNS record, and
 * the graceful restart that goes with it reads the file again. */
static int stubmail_read_public_key(server_rec *s, stubmail_srv_conf *c, apr_pool_t *pconf)
{
    static const char begin[] = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    apr_file_t *f = NULL;
    apr_finfo_t fi;
    apr_size_t got = 0;
    char *text;
    apr_status_t rv;
    int ret = HTTP_INTERNAL_SERVER_ERROR;

    rv = apr_file_open(&f, c->public_key_file, APR_FOPEN_READ | APR_FOPEN_BINARY,
                       APR_OS_DEFAULT, pconf);
    if (rv == APR_SUCCESS)
        rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "stubmail: StubmailPublicKey %s "
                     "cannot be read", c->public_key_file);
        goto leave;
    }
    if (fi.size <= 0 || fi.size > STUBMAIL_PUBLIC_KEY_MAX) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailPublicKey %s has %"
                     APR_OFF_T_FMT " bytes; expected 1 to %d", c->public_key_file,
                     fi.size, STUBMAIL_PUBLIC_KEY_MAX);
        goto leave;
    }
    text = apr_palloc(pconf, (apr_size_t)fi.size + 1);
    rv = apr_file_read_full(f, text, (apr_size_t)fi.size, &got);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "stubmail: reading StubmailPublicKey "
                     "%s failed", c->public_key_file);
        goto leave;
    }
    text[got] = '\0';
    if (strncmp(text, begin, sizeof(begin) - 1) != 0 || strlen(text) != got
        || strstr(text, "PRIVATE KEY") != NULL) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailPublicKey %s is not "
                     "an ASCII-armored public key (make it with stubmail-keygen -o, or "
                     "gpg --armor --export)", c->public_key_file);
        goto leave;
    }
    c->public_key = text;
    ret = OK;
leave:
    if (f)
        apr_file_close(f);
    return ret;
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

/* StubmailGnupgHome: a directory the Apache user owns and only it can use
 * (gpg writes its keyring and trust database there, and warns about
 * anything looser), holding no secret key: a web server that verifies
 * logins never needs one, so a home with the domain's secret key is a
 * configuration mistake that would hand it to every process of this user. */
static int stubmail_check_gnupg_home(server_rec *s, const stubmail_srv_conf *c,
                                     apr_pool_t *ptemp)
{
    uid_t owner = geteuid() == 0 ? ap_unixd_config.user_id : geteuid();
    const char *secrets = apr_pstrcat(ptemp, c->gnupg_home, "/private-keys-v1.d", NULL);
    struct stat st;
    apr_dir_t *dir;
    apr_finfo_t fi;
    int ret = HTTP_INTERNAL_SERVER_ERROR;

    int stat_err = stat(c->gnupg_home, &st) != 0 ? errno : 0;

    if (stat_err != 0 || !S_ISDIR(st.st_mode)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, stat_err, s, "stubmail: StubmailGnupgHome %s "
                     "is not a directory: create it, owned by the Apache user, mode 0700",
                     c->gnupg_home);
        goto leave;
    }
    if (st.st_uid != owner || (st.st_mode & 077) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailGnupgHome %s must "
                     "be owned by uid %ld (the Apache user) with mode 0700; it is uid %ld "
                     "mode %04o", c->gnupg_home, (long)owner, (long)st.st_uid,
                     (unsigned)(st.st_mode & 07777));
        goto leave;
    }
    if (apr_dir_open(&dir, secrets, ptemp) == APR_SUCCESS) {
        int secret_found = 0;

        while (!secret_found && apr_dir_read(&fi, APR_FINFO_NAME, dir) == APR_SUCCESS)
            secret_found = strcmp(fi.name, ".") != 0 && strcmp(fi.name, "..") != 0;
        apr_dir_close(dir);
        if (secret_found) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailGnupgHome %s "
                         "holds secret keys (%s): give mod_stubmail a keyring of its "
                         "own, the domain key belongs to stubmail-pollerd and the milter",
                         c->gnupg_home, secrets);
            goto leave;
        }
    }
    ret = stubmail_gnupg_conf(s, c, owner,
                              geteuid() == 0 ? ap_unixd_config.group_id : (gid_t)-1, ptemp);
leave:
    return ret;
}

/* With StubmailDomain set, login is on and needs its other directives. */
static int stubmail_check_login(server_rec *s, stubmail_srv_conf *c, apr_pool_t *pconf,
                                apr_pool_t *ptemp)
{
    const char *missing = c->public_key_file == NULL ? "StubmailPublicKey"
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
    if (stubmail_read_public_key(s, c, pconf) != OK
        || stubmail_check_gnupg_home(s, c, ptemp) != OK)
        return HTTP_INTERNAL_SERVER_ERROR;
    return OK;
}

/* The UDP poll responder, when the main server names one. Its sessions
 * are the payloads of this server's tokens, so it needs login and the
 * token keys; and a database connection of its own. */
static int stubmail_check_udp(apr_pool_t *pconf, server_rec *s)
{
    stubmail_srv_conf *c = ap_get_module_config(s->module_config, &stubmail_module);
    const char *missing = c->domain == NULL ? "StubmailDomain"
                          : c->tokens == NULL ? "StubmailTokenKey"
                          : c->udp.database == NULL ? "StubmailUDPDatabase" : NULL;

    stubmail_udp_keyring = NULL;
    if (c->udp.listen == NULL)
        return OK;
    if (missing) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: StubmailUDPResponder %s "
                     "needs %s too (docs/mod_stubmail.md)", c->udp.listen, missing);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    c->udp.tokens = c->tokens;
    stubmail_udp_keyring = c->tokens;
    return stubmail_udp_start(pconf, s, &c->udp);
}

/* Runs before mod_dbd's post_config: apply defaults, check the spool
 * directory, and register the statements for every server so that mod_dbd
 * prepares them on each connection. A virtual host without DBD directives
 * shares the main server's mod_dbd configuration: register once per
 * distinct configuration, or mod_dbd warns about conflicting labels. */
static int stubmail_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                                apr_pool_t *ptemp, server_rec *s)
{
    server_rec *sp;
    module *dbd_mod;
    apr_hash_t *done;
    size_t i;

    (void)plog;
    stubmail_dbd_prepare = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_prepare);
    stubmail_dbd_acquire = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_acquire);
    if (stubmail_dbd_prepare == NULL || stubmail_dbd_acquire == NULL) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: mod_dbd is not "
                     "loaded: add 'LoadModule dbd_module .../mod_dbd.so' and "
                     "configure DBDriver/DBDParams");
        return HTTP_INTERNAL_SERVER_ERROR;
    }

    dbd_mod = ap_find_linked_module("mod_dbd.c");
    done = apr_hash_make(ptemp);
    for (sp = s; sp; sp = sp->next) {
        stubmail_srv_conf *c = ap_get_module_config(sp->module_config,
                                                    &stubmail_module);
        void *dbd_conf = dbd_mod ? ap_get_module_config(sp->module_config,
                                                        dbd_mod) : NULL;
        apr_finfo_t fi;
        apr_status_t rv;

        stubmail_srv_conf_defaults(c);
        if (stubmail_check_login(sp, c, pconf, ptemp) != OK)
            return HTTP_INTERNAL_SERVER_ERROR;
        rv = apr_stat(&fi, c->spool_dir, APR_FINFO_TYPE, ptemp);
        if (rv != APR_SUCCESS || fi.filetype != APR_DIR)
            ap_log_error(APLOG_MARK, APLOG_WARNING, rv, sp, "stubmail: "
                         "StubmailSpoolDir %s is not a directory: fetches "
                         "will fail", c->spool_dir);
        if (dbd_conf) {
            if (apr_hash_get(done, &dbd_conf, sizeof(dbd_conf)))
                continue;
            apr_hash_set(done, apr_pmemdup(ptemp, &dbd_conf, sizeof(dbd_conf)),
                         sizeof(dbd_conf), "");
        }
        for (i = 0; i < sizeof(stubmail_stmts) / sizeof(stubmail_stmts[0]); i++)
            stubmail_dbd_prepare(sp, stubmail_stmts[i].sql,
                                 stubmail_stmts[i].label);
    }
    return stubmail_check_udp(pconf, s);
}

/* Each child: gpgme once (it spawns gpg for every login) and the lock of
 * the imported-key memory, when any server takes logins. */
static void stubmail_child_init(apr_pool_t *pchild, server_rec *s)
{
    server_rec *sp;
    apr_status_t rv;

    for (sp = s; sp; sp = sp->next) {
        const stubmail_srv_conf *c = ap_get_module_config(sp->module_config,
                                                          &stubmail_module);
        if (c->domain)
            break;
    }
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

static void stubmail_register_hooks(apr_pool_t *p)
{
    static const char *const succ[] = { "mod_dbd.c", NULL };

    (void)p;
    ap_hook_post_config(stubmail_post_config, NULL, succ, APR_HOOK_MIDDLE);
    ap_hook_child_init(stubmail_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(stubmail_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA stubmail_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                       /* no per-directory configuration */
    NULL,
    stubmail_create_srv_conf,
    stubmail_merge_srv_conf,
    stubmail_cmds,
    stubmail_register_hooks,
    AP_MODULE_FLAG_NONE
};
