/*++
 * NAME
 *	stubmail-milter 8
 * SUMMARY
 *	divert outbound mail for pulling domains into the stubmail outbox
 * SYNOPSIS
 *	stubmail-milter -c FILE [-f] [-n]
 * DESCRIPTION
 *	A libmilter filter beside Postfix or Sendmail. For outbound mail (from
 *	a submission listener whose {daemon_name} is originating_daemon, an
 *	authenticated client, or a client inside trusted_networks) it decides
 *	each recipient's domain once per message with sm_discover: the peer
 *	row, else the _stubmail DNS record through dns_cache. When some
 *	recipients are at pulling domains, the message streams into a spool
 *	file while it arrives; at end of message it is signed with our domain
 *	key and encrypted to the recipient domains' keys (made sure of at
 *	DATA), and to each recipient's own key where its domain publishes one
 *	by WKD on its outbox origin (recipient_keys; looked up at DATA, cached
 *	in recipient_key; no key or a refused one is never a failure), by gpg
 *	into a second spool file that is committed instead, then
 *	one transaction
 *	stores the message row, one outbox row per pulling recipient and the
 *	sender's learned address-book entries. Only after COMMIT are the
 *	pulling recipients removed from the envelope (smfi_delrcpt); when none
 *	remain the message is discarded from the push path. Push-only outbound
 *	mail still teaches the sender's address book. Inbound mail, and mail
 *	with the empty envelope sender, passes untouched. What a sender may
 *	leave waiting in the outbox is bounded (quota_messages, quota_bytes,
 *	sender_quota; sql/011): the store refuses a message that would go over,
 *	and so does MAIL FROM when its SIZE= alone would.
 *
 *	This file holds main() and the configuration keys (one table, one
 *	parser, the checks of -n); the filter itself is libsmf: the callbacks
 *	and the failure policy in smf_callbacks.c, the contexts and the spool
 *	in smf_ctx.c, sealing in smf_seal.c, SQL in smf_db.c, network lists
 *	and UDP stubs in smf_net.c (smf.h says who calls whom).
 * DIAGNOSTICS
 *	Database, spool or gpg trouble is a temporary failure (SMTP 451
 *	4.3.0), so is DNS that cannot answer at RCPT (451 4.4.3, that
 *	recipient) and a recipient domain's key that cannot be fetched (451
 *	4.7.5 at DATA): the MTA keeps the message and retries, nothing is
 *	lost. A sender over the quota is refused for good (552 5.2.2, with
 *	the use and the quota). Every such failure is logged with the queue
 *	id, the sender and the reason. An invalid _stubmail record is pushed
 *	with a warning, and so is one that was not DNSSEC-validated for a
 *	domain that dnssec_require names; a bogus one (the validating
 *	resolver's SERVFAIL) is a DNS temporary failure like any other.
 *	Configuration errors (gnupg_home and domain_key are required): exit
 *	status 78 (EX_CONFIG).
 * SEE ALSO
 *	man/stubmail-milter.8, docs/HACKING.md, smf.h
 *--*/
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <libmilter/mfapi.h>
#include <libpq-fe.h>

#include <curl/curl.h>

#include "sm_conf.h"
#include "sm_dns.h"
#include "sm_dnssec.h"
#include "sm_log.h"
#include "sm_pgp.h"
#include "smf.h"

#define SMF_NAME    "stubmail-milter"
#define SMF_MAX_CONNECTIONS 1000
#define SMF_TRIM_THRESHOLD (1024 * 1024) /* freed memory malloc keeps per arena */

/* ---- configuration ---------------------------------------------------- */

static smf_settings cfg;

static const sm_conf_key smf_keys[] = {
    { "socket", SM_CONF_STRING, &cfg.socket, "unix:/run/stubmail/milter.sock",
      "libmilter socket (inet:PORT@ADDR, inet6:PORT@ADDR or unix:PATH)" },
    { "database", SM_CONF_STRING, &cfg.database, NULL, "libpq conninfo" },
    { "spool_dir", SM_CONF_STRING, &cfg.spool_dir, "/var/spool/stubmail",
      "where bodies are written" },
    { "originating_daemon", SM_CONF_STRING, &cfg.originating_daemon, "ORIGINATING",
      "{daemon_name} value that marks a submission listener" },
    { "trusted_networks", SM_CONF_STRING, &cfg.trusted_networks, "127.0.0.1/32 ::1/128",
      "clients whose mail is outbound (CIDR list, IPv4 and IPv6)" },
    { "db_connections", SM_CONF_INT, &cfg.db_connections, "8",
      "PostgreSQL connections kept open" },
    { "resolver", SM_CONF_STRING, &cfg.resolver, NULL,
      "DNS server for _stubmail lookups, IP:PORT or [IPv6]:PORT; unset: /etc/resolv.conf" },
    { "resolver_trusted", SM_CONF_BOOL, &cfg.resolver_trusted, "no",
      "believe the resolver's DNSSEC AD bit even off loopback (no: only from a loopback "
      "resolver, or /etc/resolv.conf's options trust-ad)" },
    { "dnssec_require", SM_CONF_STRING, &cfg.dnssec_require, "none",
      "domains whose _stubmail record is used only when DNSSEC-validated: none, all, or "
      "a list of domains" },
    { "gnupg_home", SM_CONF_STRING, &cfg.gnupg_home, NULL,
      "GnuPG home with our domain key: stored mail is signed and encrypted" },
    { "domain_key", SM_CONF_STRING, &cfg.domain_key, NULL,
      "fingerprint of our domain key in gnupg_home (the fpr= we publish)" },
    { "ca_file", SM_CONF_STRING, &cfg.ca_file, NULL,
      "CA certificates for fetching peers' keys over HTTPS; unset: the system's" },
    { "allow_http", SM_CONF_BOOL, &cfg.allow_http, "no",
      "fetch peers' keys over plain http:// from loopback addresses" },
    { "key_timeout", SM_CONF_SECONDS, &cfg.key_timeout, "10s",
      "longest fetch of one peer's domain key" },
    { "recipient_keys", SM_CONF_BOOL, &cfg.recipient_keys, "yes",
      "also encrypt to a recipient's own key published by WKD on its outbox origin" },
    { "recipient_key_timeout", SM_CONF_SECONDS, &cfg.recipient_key_timeout, "5s",
      "longest the WKD lookups of one message take together (the rest: no key this time)" },
    { "inline_max", SM_CONF_BYTES, &cfg.inline_max, "96k",
      "largest sealed body kept in its message row instead of a spool file (0: none)" },
    { "quota_messages", SM_CONF_INT, &cfg.quota_messages, "1000",
      "messages a local sender may have waiting in the outbox (0: no limit; sender_quota "
      "overrides)" },
    { "quota_bytes", SM_CONF_BYTES, &cfg.quota_bytes, "100M",
      "octets of stored mail a local sender may have waiting in the outbox (0: no limit; "
      "sender_quota overrides)" },
    { "expire_after", SM_CONF_SECONDS, &cfg.expire_after, "100d",
      "unretrieved mail expires this long after it was stored (stubmail-janitor bounces it)" },
    { "log_facility", SM_CONF_STRING, &cfg.log_facility, "mail",
      "syslog facility (mail, daemon, user, local0..local7); -f logs to stderr instead" },
    { "log_level", SM_CONF_STRING, &cfg.log_level, "info",
      "least severe lines logged: debug, info, notice, warning or error" },
    { NULL, 0, NULL, NULL, NULL }
};

#define SMF_KEY_TIMEOUT_MAX 300
/* An inline body is read whole into memory by whoever serves it (the
 * fetch, a backup's COPY): kept to bodies PostgreSQL handles as small. */
#define SMF_INLINE_MAX_MAX  (1024LL * 1024)

static int socket_spec_ok(const char *s)
{
    const char *colon = strchr(s, ':');

    if (s[0] == '/')
        return 1;                       /* libmilter takes a bare path */
    if (colon == NULL || colon[1] == '\0')
        return 0;
    if (!strncmp(s, "unix:", 5) || !strncmp(s, "local:", 6))
        return colon[1] == '/';
    if (!strncmp(s, "inet:", 5) || !strncmp(s, "inet6:", 6))
        return colon[1] >= '0' && colon[1] <= '9';
    return 0;
}

/* The keys of discovery and sealing; the key itself is checked by
 * smf_key_check. Returns 0, or -1 with err. */
static int smf_config_check_discovery(const char *path, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *bad;
    char sub[512];

    if (cfg.resolver && sm_dns_resolver_parse(cfg.resolver, &addr, &addrlen, &bad) != 0) {
        snprintf(err, errlen, "%s: resolver: \"%s\": %s", path, cfg.resolver, bad);
        return -1;
    }
    if (sm_dnssec_require_check(cfg.dnssec_require, &bad) != 0) {
        snprintf(err, errlen, "%s: dnssec_require: \"%s\": %s", path, cfg.dnssec_require, bad);
        return -1;
    }
    cfg.dns.resolver = cfg.resolver;
    cfg.dns.resolver_trusted = cfg.resolver_trusted;
    cfg.dns.dnssec_require = cfg.dnssec_require;
    if (sm_pgp_own_key_settings(cfg.gnupg_home, cfg.domain_key, sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: %s", path, sub);
        return -1;
    }
    if (cfg.ca_file && access(cfg.ca_file, R_OK) != 0) {
        snprintf(err, errlen, "%s: ca_file: %s: %s", path, cfg.ca_file, strerror(errno));
        return -1;
    }
    if (cfg.key_timeout < 1 || cfg.key_timeout > SMF_KEY_TIMEOUT_MAX) {
        snprintf(err, errlen, "%s: key_timeout: %lds is not between 1s and %ds", path,
                 cfg.key_timeout, SMF_KEY_TIMEOUT_MAX);
        return -1;
    }
    if (cfg.recipient_key_timeout < 1 || cfg.recipient_key_timeout > SMF_KEY_TIMEOUT_MAX) {
        snprintf(err, errlen, "%s: recipient_key_timeout: %lds is not between 1s and %ds",
                 path, cfg.recipient_key_timeout, SMF_KEY_TIMEOUT_MAX);
        return -1;
    }
    return 0;
}

/* Our domain key is in gnupg_home; with probe_secret, it also signs (which
 * starts gpg-agent): the daemon fails at start, not at the first message. */
static int smf_key_check(int probe_secret, char *err, size_t errlen)
{
    char why[SM_PGP_WHY_MAX];
    int rc = -1;

    if (sm_pgp_init() != SM_PGP_OK) {
        snprintf(err, errlen, "gpgme or gpg is missing or too old");
        goto leave;
    }
    if (sm_pgp_have_key(cfg.gnupg_home, cfg.domain_key, why, sizeof why) != SM_PGP_OK) {
        snprintf(err, errlen, "domain_key %s in gnupg_home %s: %s", cfg.domain_key,
                 cfg.gnupg_home, why);
        goto leave;
    }
    if (probe_secret && sm_pgp_probe_sign(cfg.gnupg_home, cfg.domain_key, why, sizeof why)
                        != SM_PGP_OK) {
        snprintf(err, errlen, "domain_key %s in gnupg_home %s cannot sign: %s", cfg.domain_key,
                 cfg.gnupg_home, why);
        goto leave;
    }
    rc = 0;
leave:
    return rc;
}

/* Load and check the whole configuration. Returns 0, or -1 with err. */
static int smf_config_load(const char *path, char *err, size_t errlen)
{
    char sub[512];
    struct stat st;
    PQconninfoOption *opts;
    char *pqerr = NULL;

    if (sm_conf_load(path, smf_keys, err, errlen) != 0)
        return -1;
    if (sm_conf_require(smf_keys, "database", sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: %s", path, sub);
        return -1;
    }
    if ((opts = PQconninfoParse(cfg.database, &pqerr)) == NULL) {
        snprintf(err, errlen, "%s: database: not a libpq conninfo: %s", path,
                 pqerr ? pqerr : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        PQfreemem(pqerr);
        return -1;
    }
    PQconninfoFree(opts);
    if (!socket_spec_ok(cfg.socket)) {
        snprintf(err, errlen, "%s: socket: \"%s\" is not unix:/PATH, inet:PORT@ADDR or "
                 "inet6:PORT@ADDR", path, cfg.socket);
        return -1;
    }
    if (cfg.db_connections < 1 || cfg.db_connections > SMF_MAX_CONNECTIONS) {
        snprintf(err, errlen, "%s: db_connections: %ld is not between 1 and %d", path,
                 cfg.db_connections, SMF_MAX_CONNECTIONS);
        return -1;
    }
    if (cfg.inline_max < 0 || cfg.inline_max > SMF_INLINE_MAX_MAX) {
        snprintf(err, errlen, "%s: inline_max: %lld is not between 0 and %lld (1M)", path,
                 cfg.inline_max, SMF_INLINE_MAX_MAX);
        return -1;
    }
    if (cfg.expire_after < 1) {
        snprintf(err, errlen, "%s: expire_after: must be at least 1s", path);
        return -1;
    }
    if (sm_log_facility_parse(cfg.log_facility, &cfg.log_facility_value, sub, sizeof sub)
        != 0) {
        snprintf(err, errlen, "%s: log_facility: %s", path, sub);
        return -1;
    }
    if (sm_log_level_parse(cfg.log_level, &cfg.log_level_value, sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: log_level: %s", path, sub);
        return -1;
    }
    if (cfg.originating_daemon[0] == '\0') {
        snprintf(err, errlen, "%s: originating_daemon: must not be empty", path);
        return -1;
    }
    smf_netlist_free(&cfg.trusted);
    if (smf_netlist_parse(cfg.trusted_networks, &cfg.trusted, sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: trusted_networks: %s", path, sub);
        return -1;
    }
    if (cfg.spool_dir[0] != '/') {
        snprintf(err, errlen, "%s: spool_dir: \"%s\" is not an absolute path", path,
                 cfg.spool_dir);
        return -1;
    }
    if (stat(cfg.spool_dir, &st) != 0) {
        snprintf(err, errlen, "%s: spool_dir: %s: %s", path, cfg.spool_dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: spool_dir: %s: not a directory", path, cfg.spool_dir);
        return -1;
    }
    if (access(cfg.spool_dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "%s: spool_dir: %s: not writable: %s", path, cfg.spool_dir,
                 strerror(errno));
        return -1;
    }
    return smf_config_check_discovery(path, err, errlen);
}

/* ---- main ------------------------------------------------------------ */

static int smf_required(const char *name)
{
    return !strcmp(name, "database") || !strcmp(name, "gnupg_home")
        || !strcmp(name, "domain_key");
}

static void usage(FILE *fp)
{
    const sm_conf_key *k;

    fprintf(fp, "usage: %s -c FILE [-f] [-n]\n"
            "  -c FILE  configuration file\n"
            "  -f       stay in the foreground, log to stderr\n"
            "  -n       check the configuration and exit (0 = good)\n"
            "configuration keys:\n", SMF_NAME);
    for (k = smf_keys; k->name; k++)
        fprintf(fp, "  %-20s %s (default: %s)\n", k->name, k->help,
                k->dflt ? k->dflt : smf_required(k->name) ? "required" : "unset");
}

static int daemonize(void)
{
    pid_t pid;
    int fd;

    if ((pid = fork()) < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return -1;
    if (chdir("/") != 0)
        return -1;
    if ((fd = open("/dev/null", O_RDWR)) >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int opt, foreground = 0, check_only = 0, rc = 1;
    char err[1024];

    while ((opt = getopt(argc, argv, "c:fnhV")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'f': foreground = 1; break;
        case 'n': check_only = 1; break;
        case 'V': printf("%s %s\n", SMF_NAME, PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 64;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 64;
    }
    if (smf_config_load(path, err, sizeof err) != 0
        || smf_key_check(!check_only, err, sizeof err) != 0) {
        fprintf(stderr, "%s: configuration error: %s\n", SMF_NAME, err);
        rc = EX_CONFIG;
        goto leave;
    }
    if (check_only) {
        printf("%s: %s: configuration OK\n", SMF_NAME, path);
        rc = 0;
        goto leave;
    }

    sm_log_setup(cfg.log_facility_value, cfg.log_level_value);
    sm_log_open(SMF_NAME, foreground);
    umask(007);                 /* the MTA connects through the socket's group */
    if (smfi_setconn(cfg.socket) != MI_SUCCESS || smfi_register(*smf_callbacks(&cfg)) != MI_SUCCESS) {
        sm_err("cannot set up libmilter for socket %s", cfg.socket);
        goto leave;
    }
    /* removes a stale unix socket; without it libmilter exits silently */
    if (smfi_opensocket(1) != MI_SUCCESS) {
        sm_err("cannot listen on %s (address in use, or directory missing or not writable?)",
               cfg.socket);
        goto leave;
    }
    if (!foreground && daemonize() != 0) {
        sm_syserr("cannot become a daemon");
        goto leave;
    }
    /* before any thread: key fetches run in libmilter's threads */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        sm_err("cannot initialise libcurl");
        goto leave;
    }
    if (smf_db_init(cfg.database, cfg.db_connections, cfg.expire_after) != 0) {
        sm_err("out of memory");
        goto leave;
    }
    if (smf_cache_start(cfg.database) != 0) {
        sm_syserr("cannot start the answers cache's thread");
        goto leave;
    }
    /* after daemonize: the seal's contexts are this process's */
    if (sm_seal_new(cfg.gnupg_home, cfg.domain_key, SMF_SEAL_SLOTS, &cfg.seal, err,
                    sizeof err) != SM_PGP_OK) {
        sm_err("domain_key %s in gnupg_home %s: cannot load it for sealing: %s",
               cfg.domain_key, cfg.gnupg_home, err);
        goto leave;
    }
    sm_info("listening on %s; spool %s (sealed bodies up to %lld octets in the row); %ld "
            "database connections; outbound = {daemon_name} %s, authenticated, or from %s; "
            "DNS from %s (AD bit %s; DNSSEC required for %s)", cfg.socket, cfg.spool_dir, cfg.inline_max, cfg.db_connections, cfg.originating_daemon, cfg.trusted_networks,
            cfg.resolver ? cfg.resolver : "/etc/resolv.conf",
            sm_dns_trusts_ad(&cfg.dns, 0) ? "trusted"
            : cfg.resolver ? "not trusted" : "trusted if resolv.conf says trust-ad",
            cfg.dnssec_require);
    sm_info("stored mail is signed with domain key %s in %s and encrypted to the "
            "recipient domains' keys%s", cfg.domain_key, cfg.gnupg_home,
            cfg.recipient_keys ? " and to recipients' own keys published by WKD" : "");
    /* A message's buffer (up to 64 KiB) and its seal's memory are freed at
     * its end, and libmilter's threads come and go with the connections
     * (one a message from most clients): glibc would hand the top of the
     * arena back (madvise) after nearly every message, only for the next
     * one to fault it in again page by page. Keep what was freed, up to
     * this much per arena. */
    if (mallopt(M_TRIM_THRESHOLD, SMF_TRIM_THRESHOLD) != 1)
        sm_warn("cannot set malloc's trim threshold: freed memory goes back after each message");
    rc = smfi_main() == MI_SUCCESS ? 0 : 1;
    sm_info("stopped%s", rc ? " after a libmilter error" : "");
leave:
    smf_cache_stop();
    smf_db_shutdown();                  /* all harmless when not set up */
    sm_seal_free(cfg.seal);
    curl_global_cleanup();
    smf_netlist_free(&cfg.trusted);
    sm_conf_free(smf_keys);
    return rc;
}
