/*
 * NAME
 *	stubmail_config - mod_stubmail's directives
 *
 * DESCRIPTION
 *	STUBMAIL_DIRECTIVES below is the one list of the module's directives:
 *	name, arguments, kind, the field of stubmail_srv_conf it sets, its
 *	range, its default and its help. From it come the command_rec array
 *	httpd reads, the descriptor table that creating, merging and
 *	completing a configuration walk, and the "(default: ...)" that ends
 *	every help text (apache2 -L shows it; tests/docs/t-module-directives
 *	compares it with docs/mod_stubmail.md).
 *
 *	Every field starts out unset; a virtual host inherits every unset
 *	field from the main server; then stubmail_conf_defaults gives each
 *	field still unset its default, by parsing the default text as the
 *	directive would, so what the help says is what applies.
 */

#include <errno.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "apr_lib.h"
#include "apr_strings.h"

#include "sm_addr.h"
#include "sm_dnssec.h"
#include "sm_txt.h"
#include "sm_token.h"
#include "stubmail_config.h"

APLOG_USE_MODULE(stubmail);

/* How a directive's arguments become its field. */
typedef enum stubmail_kind {
    STUBMAIL_PATH,              /* const char *, relative to ServerRoot */
    STUBMAIL_NUMBER,            /* apr_int64_t from min to max */
    STUBMAIL_SWITCH,            /* apr_int64_t: on 1, off 0 */
    STUBMAIL_RATE,              /* stubmail_rate: N/SECS or off */
    STUBMAIL_DOMAIN,            /* const char *, a domain name, lowercased */
    STUBMAIL_RESOLVER,          /* const char *, IP:PORT or [IPv6]:PORT */
    STUBMAIL_STRING,            /* const char *, as given */
    STUBMAIL_DNSSEC_REQUIRE,    /* const char *: none, all or domains (sm_dnssec.h) */
    STUBMAIL_TOKEN_KEY,         /* sm_token_keyring *: ID HEX, repeatable */
    STUBMAIL_UDP_ADDR,          /* stubmail_udp_conf's listen [advertise] */
    STUBMAIL_KEY_FILES          /* stubmail_key_files: FILE [OTHER-FILE] */
} stubmail_kind;

enum {
    STUBMAIL_MAIN_ONLY = 1,     /* not in <VirtualHost> */
    STUBMAIL_NO_VALUE = 2       /* the default says what unset means; the
                                 * field stays unset */
};

typedef struct stubmail_directive {
    const char *name;
    stubmail_kind kind;
    apr_size_t offset;          /* of the field in stubmail_srv_conf */
    apr_int64_t min, max;       /* STUBMAIL_NUMBER */
    int flags;
    const char *dflt;
} stubmail_directive;

/* One row per directive: D(name, args, kind, field, min, max, flags,
 * default, help). args is TAKE1, TAKE2 or TAKE12; min and max are the
 * range of a NUMBER; the help text gets " (default: DEFAULT)" appended. */
#define STUBMAIL_DIRECTIVES(D)                                                \
    D("StubmailSpoolDir", TAKE1, PATH, spool_dir, 0, 0, 0,                    \
      "/var/spool/stubmail", "directory holding the message bodies")          \
    /* at most 1 GiB: a body is held in memory */                             \
    D("StubmailMaxRequestBody", TAKE1, NUMBER, max_body,                      \
      1, APR_INT64_C(1) << 30, 0,                                             \
      "1048576", "largest POST body in bytes; larger gets 413")               \
    D("StubmailMaxPairs", TAKE1, NUMBER, max_pairs, 1, 10000000, 0,           \
      "10000", "most pairs in one poll; more gets 413")                       \
    D("StubmailPollLimit", TAKE1, NUMBER, poll_limit, 1, 1000000, 0,          \
      "1000", "most entries in one poll answer")                              \
    D("StubmailDomain", TAKE1, DOMAIN, domain, 0, 0, STUBMAIL_NO_VALUE,       \
      "none", "this server's own domain; turns on GET v1/key and POST "       \
      "v1/login")                                                             \
    D("StubmailPublicKey", TAKE12, KEY_FILES, key_files, 0, 0,                \
      STUBMAIL_NO_VALUE, "none", "FILE [OTHER-FILE]: this domain's "          \
      "ASCII-armored public key, served at v1/key; during a key rotation "    \
      "the other key too, served with it at v1/key/{fpr}")                    \
    D("StubmailGnupgHome", TAKE1, PATH, gnupg_home, 0, 0, STUBMAIL_NO_VALUE,  \
      "none", "GnuPG home owned by the Apache user, for the polling "         \
      "domains' public keys (no secret key)")                                 \
    D("StubmailResolver", TAKE1, RESOLVER, resolver, 0, 0, STUBMAIL_NO_VALUE, \
      "the system resolver", "DNS server IP:PORT for _stubmail records")      \
    D("StubmailResolverTrusted", TAKE1, SWITCH, resolver_trusted, 0, 0, 0,    \
      "off", "on|off: believe the resolver's DNSSEC AD bit even off loopback "\
      "(off: only from a loopback StubmailResolver, or the system resolver "  \
      "with options trust-ad)")                                               \
    D("StubmailDNSSECRequire", TAKE1, DNSSEC_REQUIRE, dnssec_require, 0, 0,   \
      0, "none", "none, all, or polling domains (one argument, separated by " \
      "commas, or blanks in quotes) whose _stubmail record is used only when "\
      "DNSSEC-validated")                                                     \
    D("StubmailTokenKey", TAKE2, TOKEN_KEY, tokens, 0, 0, STUBMAIL_NO_VALUE,  \
      "none", "ID HEX: a token secret (64 to 128 hex digits); repeatable, "   \
      "the last one issues")                                                  \
    /* at most a week: a token cannot be revoked, only outlived */            \
    D("StubmailTokenLifetime", TAKE1, NUMBER, token_lifetime, 1, 604800, 0,   \
      "3600", "seconds a login token is good for")                            \
    D("StubmailLoginMaxSkew", TAKE1, NUMBER, login_max_skew, 1, 86400, 0,     \
      "300", "seconds a login's time may differ from ours")                   \
    D("StubmailMinPollInterval", TAKE1, NUMBER, min_poll_interval,            \
      0, 86400, 0, "1", "seconds between two polls of one domain; sooner "    \
      "gets 429; 0 = no limit")                                               \
    D("StubmailPollBurst", TAKE1, NUMBER, poll_burst, 1, 1000, 0,             \
      "5", "polls of one domain that may follow each other at once before "   \
      "StubmailMinPollInterval holds")                                        \
    /* A poller logs in once per token lifetime; ten tries a minute leaves   \
     * room for mistakes and costs at most ten signature checks. One        \
     * address may serve several polling domains, hence more there. */      \
    D("StubmailLoginRate", TAKE1, RATE, login_rate, 0, 0, 0,                  \
      "10/60", "N/SECS: logins per claimed domain; more gets 429; off = no "  \
      "limit")                                                                \
    D("StubmailLoginAddressRate", TAKE1, RATE, login_addr_rate, 0, 0, 0,      \
      "60/60", "N/SECS: logins per client address; more gets 429; off = no "  \
      "limit")                                                                \
    D("StubmailUDPResponder", TAKE12, UDP_ADDR, udp, 0, 0,                    \
      STUBMAIL_MAIN_ONLY | STUBMAIL_NO_VALUE, "off",                          \
      "IP:PORT [ADVERTISED-IP:PORT]: run the UDP poll responder there "       \
      "(main server only)")                                                   \
    D("StubmailUDPDatabase", TAKE1, STRING, udp.database, 0, 0,               \
      STUBMAIL_MAIN_ONLY | STUBMAIL_NO_VALUE, "none",                         \
      "libpq conninfo of the UDP poll responder's own connection")            \
    D("StubmailUDPRateLimit", TAKE1, NUMBER, udp.rate, 1, 1000000, 0,         \
      "20", "UDP poll datagrams per second per source address; burst twice "  \
      "that")                                                                 \
    /* per virtual host: one whose DBDParams name another database than    \
     * StubmailUDPDatabase must not use what the responder keeps */         \
    D("StubmailPollCache", TAKE1, SWITCH, poll_cache, 0, 0, 0,                \
      "on", "on|off: answer idle GET v1/poll from shared memory, kept true "  \
      "by the UDP poll responder (without StubmailUDPResponder every poll "   \
      "asks the database)")                                                  \
    /* the receiving side: the pages for our own users */                  \
    D("StubmailLinkKey", TAKE2, TOKEN_KEY, link_keys, 0, 0,                   \
      STUBMAIL_NO_VALUE, "none", "ID HEX: a secret of the users' signed "     \
      "links and forms (64 to 128 hex digits), as pollerd's unsubscribe_key; "\
      "repeatable, the last one signs; turns on /unsubscribe and the user's " \
      "page")                                                                 \
    D("StubmailUserDomain", TAKE1, DOMAIN, user_domain, 0, 0,                 \
      STUBMAIL_NO_VALUE, "StubmailDomain", "the domain of the user's page's " \
      "users: REMOTE_USER bob is bob@DOMAIN")                                 \
    D("StubmailFeedURL", TAKE1, STRING, feed_url, 0, 0, STUBMAIL_NO_VALUE,    \
      "off", "https URL of /feed below the <Location> of SetHandler "         \
      "stubmail: the user's page links each user's private feed there")      \
    D("StubmailUserStub", TAKE1, RESOLVER, user_stub, 0, 0,                   \
      STUBMAIL_NO_VALUE, "off", "IP:PORT of pollerd's udp_listen: an "        \
      "introduction accepted on the user's page is pulled at once")

#define STUBMAIL_DESCRIPTOR(name, args, kind, field, min, max, flags, dflt, help) \
    { name, STUBMAIL_##kind, APR_OFFSETOF(stubmail_srv_conf, field), min, max,    \
      flags, dflt },

static const stubmail_directive stubmail_directives[] = {
    STUBMAIL_DIRECTIVES(STUBMAIL_DESCRIPTOR)
};

#define STUBMAIL_NDIRECTIVES (sizeof(stubmail_directives) / sizeof(stubmail_directives[0]))

/* ------------------------------------------------------------------------
 * Fields by kind
 * ---------------------------------------------------------------------- */

static void *stubmail_field(const stubmail_srv_conf *c, const stubmail_directive *d)
{
    return (char *)c + d->offset;
}

static int stubmail_is_set(const stubmail_directive *d, const void *field)
{
    switch (d->kind) {
    case STUBMAIL_NUMBER:
    case STUBMAIL_SWITCH:
        return *(const apr_int64_t *)field != STUBMAIL_UNSET;
    case STUBMAIL_RATE:
        return ((const stubmail_rate *)field)->n != STUBMAIL_UNSET;
    case STUBMAIL_UDP_ADDR:
        return ((const stubmail_udp_conf *)field)->listen != NULL;
    case STUBMAIL_KEY_FILES:
        return ((const stubmail_key_files *)field)->current != NULL;
    default:
        return *(void *const *)field != NULL;
    }
}

/* Copy the field of from into to (merging). */
static void stubmail_copy(const stubmail_directive *d, void *to, const void *from)
{
    switch (d->kind) {
    case STUBMAIL_NUMBER:
    case STUBMAIL_SWITCH:
        *(apr_int64_t *)to = *(const apr_int64_t *)from;
        break;
    case STUBMAIL_RATE:
        *(stubmail_rate *)to = *(const stubmail_rate *)from;
        break;
    case STUBMAIL_UDP_ADDR:
        /* only the two addresses: the struct's other fields are
         * directives of their own */
        ((stubmail_udp_conf *)to)->listen = ((const stubmail_udp_conf *)from)->listen;
        ((stubmail_udp_conf *)to)->advertise =
            ((const stubmail_udp_conf *)from)->advertise;
        break;
    case STUBMAIL_KEY_FILES:
        *(stubmail_key_files *)to = *(const stubmail_key_files *)from;
        break;
    default:
        *(void **)to = *(void *const *)from;
        break;
    }
}

/* ------------------------------------------------------------------------
 * Parsing, for a directive and for a default alike
 * ---------------------------------------------------------------------- */

static const char *stubmail_parse_number(apr_pool_t *p, const stubmail_directive *d,
                                         apr_int64_t *field, const char *arg)
{
    apr_int64_t v;
    char *end;

    errno = 0;
    v = apr_strtoi64(arg, &end, 10);
    if (errno || end == arg || *end != '\0' || v < d->min || v > d->max)
        return apr_psprintf(p, "%s: expected a number from %" APR_INT64_T_FMT
                            " to %" APR_INT64_T_FMT ", not '%s'", d->name,
                            d->min, d->max, arg);
    *field = v;
    return NULL;
}

/* N/SECS or off. */
static const char *stubmail_parse_rate(apr_pool_t *p, const stubmail_directive *d,
                                       stubmail_rate *rate, const char *arg)
{
    apr_int64_t n, secs;
    char *end;

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
    return apr_psprintf(p, "%s: expected N/SECS (N logins from 1 to 1000000 "
                        "within SECS seconds from 1 to 86400) or off, not '%s'",
                        d->name, arg);
}

static const char *stubmail_parse_domain(apr_pool_t *p, const stubmail_directive *d,
                                         const char **field, const char *arg)
{
    char *domain = apr_pstrdup(p, arg);

    ap_str_tolower(domain);
    if (strlen(domain) > SM_DOMAIN_MAX || !sm_domain_valid(domain))
        return apr_psprintf(p, "%s: '%s' is not a domain name", d->name, arg);
    *field = domain;
    return NULL;
}

static const char *stubmail_check_address(apr_pool_t *p, const stubmail_directive *d,
                                          const char *arg)
{
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *why;

    if (sm_dns_resolver_parse(arg, &addr, &addrlen, &why) != 0)
        return apr_psprintf(p, "%s: '%s': %s (expected IPv4:PORT or [IPv6]:PORT)",
                            d->name, arg, why);
    return NULL;
}

/* The secrets are wiped when the configuration goes away (restart). */
static apr_status_t stubmail_tokens_wipe(void *kr)
{
    sm_token_keyring_clear(kr);
    return APR_SUCCESS;
}

/* StubmailTokenKey ID HEX, repeatable: every key checks tokens, the last
 * one given issues them. A virtual host that names any key has exactly its
 * own keys (the keyring is one field). */
static const char *stubmail_parse_token_key(apr_pool_t *p, const stubmail_directive *d,
                                            sm_token_keyring **field, const char *id,
                                            const char *hex)
{
    const char *why;

    if (*field == NULL) {
        *field = apr_palloc(p, sizeof(**field));
        sm_token_keyring_init(*field);
        apr_pool_cleanup_register(p, *field, stubmail_tokens_wipe,
                                  apr_pool_cleanup_null);
    }
    if (sm_token_keyring_add_hex(*field, id, hex, &why) != 0)
        return apr_psprintf(p, "%s %s: %s (secret: %d to %d hex digits; at most %d "
                            "keys)", d->name, id, why, 2 * SM_TOKEN_SECRET_MIN,
                            2 * SM_TOKEN_SECRET_MAX, SM_TOKEN_KEYS_MAX);
    return NULL;
}

/* StubmailUDPResponder IP:PORT [ADVERTISED-IP:PORT]: where the responder
 * binds, and what the login answer tells pollers when that differs (a
 * wildcard or NATed address). */
static const char *stubmail_parse_udp(apr_pool_t *p, const stubmail_directive *d,
                                      stubmail_udp_conf *udp, const char *listen,
                                      const char *advertise)
{
    const char *err = stubmail_check_address(p, d, listen);

    if (err == NULL && advertise)
        err = stubmail_check_address(p, d, advertise);
    if (err)
        return err;
    udp->listen = apr_pstrdup(p, listen);
    udp->advertise = advertise ? apr_pstrdup(p, advertise) : NULL;
    return NULL;
}

/* StubmailPublicKey FILE [OTHER-FILE], both relative to ServerRoot. */
static const char *stubmail_parse_key_files(apr_pool_t *p, const stubmail_directive *d,
                                            stubmail_key_files *files, const char *current,
                                            const char *other)
{
    const char *cur = *current ? ap_server_root_relative(p, current) : NULL;
    const char *oth = other && *other ? ap_server_root_relative(p, other) : NULL;

    if (cur == NULL || (other && oth == NULL))
        return apr_pstrcat(p, d->name, ": invalid path ", cur ? other : current, NULL);
    if (oth && strcmp(cur, oth) == 0)
        return apr_pstrcat(p, d->name, ": the other key's file is the key's own, ", cur,
                           NULL);
    files->current = cur;
    files->other = oth;
    return NULL;
}

/* Set field from the arguments (a2 NULL unless the directive takes two):
 * NULL, or the error. */
static const char *stubmail_parse(apr_pool_t *p, const stubmail_directive *d,
                                  void *field, const char *a1, const char *a2)
{
    const char *path, *err;

    switch (d->kind) {
    case STUBMAIL_PATH:
        path = ap_server_root_relative(p, a1);
        if (path == NULL || *a1 == '\0')
            return apr_pstrcat(p, d->name, ": invalid path ", a1, NULL);
        *(const char **)field = path;
        return NULL;
    case STUBMAIL_NUMBER:
        return stubmail_parse_number(p, d, field, a1);
    case STUBMAIL_SWITCH:
        if (strcasecmp(a1, "on") != 0 && strcasecmp(a1, "off") != 0)
            return apr_psprintf(p, "%s: expected on or off, not '%s'", d->name, a1);
        *(apr_int64_t *)field = strcasecmp(a1, "on") == 0;
        return NULL;
    case STUBMAIL_RATE:
        return stubmail_parse_rate(p, d, field, a1);
    case STUBMAIL_DOMAIN:
        return stubmail_parse_domain(p, d, field, a1);
    case STUBMAIL_RESOLVER:
        if ((err = stubmail_check_address(p, d, a1)) != NULL)
            return err;
        *(const char **)field = apr_pstrdup(p, a1);
        return NULL;
    case STUBMAIL_STRING:
        *(const char **)field = apr_pstrdup(p, a1);
        return NULL;
    case STUBMAIL_DNSSEC_REQUIRE:
        if (sm_dnssec_require_check(a1, &err) != 0)
            return apr_psprintf(p, "%s: '%s': %s", d->name, a1, err);
        *(const char **)field = apr_pstrdup(p, a1);
        return NULL;
    case STUBMAIL_TOKEN_KEY:
        return stubmail_parse_token_key(p, d, field, a1, a2);
    case STUBMAIL_UDP_ADDR:
        return stubmail_parse_udp(p, d, field, a1, a2);
    case STUBMAIL_KEY_FILES:
        return stubmail_parse_key_files(p, d, field, a1, a2);
    }
    return apr_pstrcat(p, d->name, ": unknown kind of directive (bug)", NULL);
}

/* ------------------------------------------------------------------------
 * The directives for httpd
 * ---------------------------------------------------------------------- */

stubmail_srv_conf *stubmail_conf_of(const server_rec *s)
{
    return ap_get_module_config(s->module_config, &stubmail_module);
}

static const stubmail_directive *stubmail_directive_named(const char *name)
{
    size_t i;

    for (i = 0; i < STUBMAIL_NDIRECTIVES; i++)
        if (strcmp(stubmail_directives[i].name, name) == 0)
            return &stubmail_directives[i];
    return NULL;
}

/* Every directive, one argument or two. */
static const char *stubmail_set_take2(cmd_parms *cmd, void *dconf, const char *a1,
                                      const char *a2)
{
    const stubmail_directive *d = stubmail_directive_named(cmd->cmd->name);
    const char *err;

    (void)dconf;
    if (d == NULL)
        return apr_pstrcat(cmd->pool, cmd->cmd->name, ": not in the directive table "
                           "(bug)", NULL);
    if ((d->flags & STUBMAIL_MAIN_ONLY)
        && (err = ap_check_cmd_context(cmd, GLOBAL_ONLY)) != NULL)
        return err;
    return stubmail_parse(cmd->pool, d, stubmail_field(stubmail_conf_of(cmd->server), d),
                          a1, a2);
}

static const char *stubmail_set_take1(cmd_parms *cmd, void *dconf, const char *a1)
{
    return stubmail_set_take2(cmd, dconf, a1, NULL);
}

#define STUBMAIL_CMD_TAKE1(name, help) \
    AP_INIT_TAKE1(name, stubmail_set_take1, NULL, RSRC_CONF, help)
#define STUBMAIL_CMD_TAKE2(name, help) \
    AP_INIT_TAKE2(name, stubmail_set_take2, NULL, RSRC_CONF, help)
#define STUBMAIL_CMD_TAKE12(name, help) \
    AP_INIT_TAKE12(name, stubmail_set_take2, NULL, RSRC_CONF, help)
#define STUBMAIL_COMMAND(name, args, kind, field, min, max, flags, dflt, help) \
    STUBMAIL_CMD_##args(name, help " (default: " dflt ")"),

const command_rec stubmail_cmds[] = {
    STUBMAIL_DIRECTIVES(STUBMAIL_COMMAND)
    { NULL }
};

/* ------------------------------------------------------------------------
 * Create, merge, defaults
 * ---------------------------------------------------------------------- */

void *stubmail_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    stubmail_srv_conf *c = apr_pcalloc(p, sizeof(*c));
    size_t i;

    (void)s;
    /* pointers start NULL, which is unset; numbers need saying */
    for (i = 0; i < STUBMAIL_NDIRECTIVES; i++) {
        const stubmail_directive *d = &stubmail_directives[i];
        void *field = stubmail_field(c, d);

        if (d->kind == STUBMAIL_NUMBER || d->kind == STUBMAIL_SWITCH)
            *(apr_int64_t *)field = STUBMAIL_UNSET;
        else if (d->kind == STUBMAIL_RATE)
            ((stubmail_rate *)field)->n = STUBMAIL_UNSET;
    }
    return c;
}

void *stubmail_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    const stubmail_srv_conf *base = basev, *add = addv;
    stubmail_srv_conf *c = apr_pcalloc(p, sizeof(*c));
    size_t i;

    for (i = 0; i < STUBMAIL_NDIRECTIVES; i++) {
        const stubmail_directive *d = &stubmail_directives[i];
        const void *from = stubmail_field(add, d);

        if (!stubmail_is_set(d, from))
            from = stubmail_field(base, d);
        stubmail_copy(d, stubmail_field(c, d), from);
    }
    return c;               /* the keys: read later, from the merged file names */
}

int stubmail_conf_defaults(server_rec *s, stubmail_srv_conf *c, apr_pool_t *p)
{
    size_t i;

    for (i = 0; i < STUBMAIL_NDIRECTIVES; i++) {
        const stubmail_directive *d = &stubmail_directives[i];
        void *field = stubmail_field(c, d);
        const char *err;

        if ((d->flags & STUBMAIL_NO_VALUE) || stubmail_is_set(d, field))
            continue;
        if ((err = stubmail_parse(p, d, field, d->dflt, NULL)) != NULL) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "stubmail: the default of %s "
                         "does not parse (bug): %s", d->name, err);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    /* the login answer names where the responder listens, unless told */
    if (c->udp.advertise == NULL)
        c->udp.advertise = c->udp.listen;
    return OK;
}
