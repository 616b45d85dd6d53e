/* stubmail_config — mod_stubmail's server configuration: the fields every
 * directive sets, and the functions that create, merge and complete them.
 * The directives themselves, with their defaults and help, are one table in
 * stubmail_config.c (docs/mod_stubmail.md documents them; a test compares
 * the two). */
#ifndef STUBMAIL_CONFIG_H
#define STUBMAIL_CONFIG_H

#include "httpd.h"
#include "http_config.h"

#include "sm_keyfpr.h"
#include "sm_token.h"
#include "stubmail_udp.h"

#define STUBMAIL_UNSET (-1)

/* StubmailLoginRate N/SECS: n requests at once, all back after secs;
 * n 0 = off, STUBMAIL_UNSET = unset. */
typedef struct stubmail_rate {
    apr_int64_t n, secs;
} stubmail_rate;

/* StubmailPublicKey FILE [OTHER-FILE]: our domain key, and during a key
 * rotation the other one (docs/PROTOCOL.md "Key rotation"). */
typedef struct stubmail_key_files {
    const char *current;        /* NULL = unset */
    const char *other;          /* NULL = none */
} stubmail_key_files;

/* A key file as post_config read it. */
typedef struct stubmail_public_key {
    const char *text;           /* the ASCII-armored key, as served */
    char fpr[SM_KEYFPR_MAX + 1];        /* its primary fingerprint, uppercase hex */
} stubmail_public_key;

typedef struct stubmail_srv_conf {
    const char *spool_dir;      /* NULL = unset */
    apr_int64_t max_body;       /* STUBMAIL_UNSET = unset */
    apr_int64_t max_pairs;
    apr_int64_t poll_limit;
    const char *domain;         /* StubmailDomain, lowercase; NULL = unset */
    stubmail_key_files key_files;       /* StubmailPublicKey */
    const char *gnupg_home;     /* NULL = unset */
    const char *resolver;       /* NULL = unset: the system resolver */
    apr_int64_t resolver_trusted;       /* believe its AD bit off loopback */
    const char *dnssec_require; /* none, all or domains (sm_dnssec.h) */
    sm_token_keyring *tokens;   /* NULL = unset */
    apr_int64_t token_lifetime; /* seconds; STUBMAIL_UNSET = unset */
    apr_int64_t login_max_skew;
    apr_int64_t min_poll_interval;      /* 0 = no limit */
    apr_int64_t poll_burst;     /* polls at once before the interval holds */
    stubmail_rate login_rate;   /* logins per claimed domain */
    stubmail_rate login_addr_rate;      /* logins per client address */
    stubmail_udp_conf udp;      /* the UDP poll responder (main server only);
                                 * listen NULL = off, rate STUBMAIL_UNSET = unset */
    apr_int64_t poll_cache;     /* StubmailPollCache: 1 on, 0 off */
    sm_token_keyring *link_keys;        /* StubmailLinkKey; NULL = off */
    const char *user_domain;    /* NULL = unset: StubmailDomain */
    const char *user_stub;      /* pollerd's udp_listen, NULL = off */
    const char *feed_url;       /* StubmailFeedURL, NULL = no feeds */

    /* Not directives: filled in by post_config. */
    stubmail_public_key public_key;     /* key_files.current's */
    stubmail_public_key other_key;      /* key_files.other's; text NULL = none */
    int udp_login;              /* login answers name the UDP responder: it
                                 * runs, and tokens are its keys */
} stubmail_srv_conf;

extern module AP_MODULE_DECLARE_DATA stubmail_module;

/* The module's directives, for its module record. */
extern const command_rec stubmail_cmds[];

void *stubmail_create_srv_conf(apr_pool_t *p, server_rec *s);

/* Every field: the virtual host's value if set, else the main server's. */
void *stubmail_merge_srv_conf(apr_pool_t *p, void *basev, void *addv);

/* The one place where defaults are applied (post_config, after merging):
 * every unset field that has a default gets it. OK, or
 * HTTP_INTERNAL_SERVER_ERROR (logged) if a default does not parse. */
int stubmail_conf_defaults(server_rec *s, stubmail_srv_conf *c, apr_pool_t *p);

stubmail_srv_conf *stubmail_conf_of(const server_rec *s);

#endif
