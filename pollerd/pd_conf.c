/* pd_conf.c — stubmail-pollerd's configuration: the one key table (type,
 * default, the help line of -h), loading a file into a pd_conf, and the
 * checks beyond syntax that derive what the rest of pollerd uses (the SMTP
 * URL with our EHLO name, our exported public key, the HTTPS options of key
 * fetches). The man page and docs/HACKING.md document exactly these keys
 * with these defaults: tests/docs/t-pollerd-keys compares them with
 * pd_conf_dump_keys (stubmail-pollerd -K). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sm_conf.h"
#include "sm_dnssec.h"
#include "sm_log.h"
#include "pd.h"

#define PD_KEYFETCH_TIMEOUT 20L     /* seconds the loop may block on a key fetch */

/* A key of the table: where its value goes in a pd_conf. */
typedef struct pd_conf_key {
    const char *name;
    sm_conf_type type;
    size_t offset;
    const char *dflt;
    const char *help;
} pd_conf_key;

/* The one key table: defaults, and the text of -h and the man page. */
static const pd_conf_key keys[] = {
    { "domain", SM_CONF_STRING, offsetof(pd_conf, domain), NULL,
      "our own domain: who logs in (required)" },
    { "database", SM_CONF_STRING, offsetof(pd_conf, database), NULL,
      "libpq conninfo of the stubmail database (required)" },
    { "deliver_to", SM_CONF_STRING, offsetof(pd_conf, deliver_to), "smtp://127.0.0.1:10026",
      "local MTA listener without the milter (smtp:// or smtps://)" },
    { "interval", SM_CONF_SECONDS, offsetof(pd_conf, interval), "60s",
      "time between poll cycles" },
    { "concurrency", SM_CONF_INT, offsetof(pd_conf, concurrency), "4",
      "remote domains worked on at once" },
    { "parallel", SM_CONF_INT, offsetof(pd_conf, parallel), "4",
      "messages of one remote domain fetched and delivered at once" },
    { "timeout", SM_CONF_SECONDS, offsetof(pd_conf, timeout), "60s",
      "a connect or a transfer stalled longer fails (retried next cycle)" },
    { "batch_max", SM_CONF_INT, offsetof(pd_conf, batch_max), "1000",
      "pairs per subscription change or POST poll (more: several requests)" },
    { "spool_dir", SM_CONF_STRING, offsetof(pd_conf, spool_dir), "/var/spool/stubmail-pollerd",
      "where fetched bodies stay until delivered (absolute path)" },
    { "resolver", SM_CONF_STRING, offsetof(pd_conf, resolver), NULL,
      "DNS server for _stubmail records, IP:PORT (default: the system's)" },
    { "resolver_trusted", SM_CONF_BOOL, offsetof(pd_conf, resolver_trusted), "no",
      "believe the resolver's DNSSEC AD bit even off loopback (no: only from a loopback "
      "resolver, or /etc/resolv.conf's options trust-ad)" },
    { "dnssec_require", SM_CONF_STRING, offsetof(pd_conf, dnssec_require), "none",
      "domains whose _stubmail record is used only when DNSSEC-validated: none, all, or "
      "a list of domains" },
    { "gnupg_home", SM_CONF_STRING, offsetof(pd_conf, gnupg_home), NULL,
      "GnuPG home with our domain key (required)" },
    { "domain_key", SM_CONF_STRING, offsetof(pd_conf, domain_key), NULL,
      "fingerprint of our domain key (required)" },
    { "ca_file", SM_CONF_STRING, offsetof(pd_conf, ca_file), NULL,
      "CA certificates for outbox HTTPS (default: the system's)" },
    { "allow_http", SM_CONF_BOOL, offsetof(pd_conf, allow_http), "no",
      "accept http:// outboxes at loopback addresses" },
    { "quarantine_dir", SM_CONF_STRING, offsetof(pd_conf, quarantine_dir),
      "/var/spool/stubmail-pollerd/quarantine",
      "where messages that do not verify are kept" },
    { "udp_listen", SM_CONF_STRING, offsetof(pd_conf, udp_listen), NULL,
      "IP:PORT for UDP stubs (the udp= we publish); unset: off" },
    { "stub_interval", SM_CONF_SECONDS, offsetof(pd_conf, stub_interval), "5s",
      "stubs make at most one poll of a domain this often" },
    { "stub_rate", SM_CONF_INT, offsetof(pd_conf, stub_rate), "10",
      "stub-made polls per second at most, all domains together" },
    { "introductions", SM_CONF_BOOL, offsetof(pd_conf, introductions), "no",
      "record stubs from senders in no address book (first contact)" },
    { "introductions_max", SM_CONF_INT, offsetof(pd_conf, introductions_max), "100",
      "introductions kept per recipient" },
    { "udp_poll", SM_CONF_BOOL, offsetof(pd_conf, udp_poll), "yes",
      "ask an outbox's UDP responder before an HTTP poll (when its login names one)" },
    { "udp_timeout", SM_CONF_SECONDS, offsetof(pd_conf, udp_timeout), "1s",
      "wait this long for the UDP answer, then poll by HTTP" },
    { "unsubscribe_url", SM_CONF_STRING, offsetof(pd_conf, unsubscribe_url), NULL,
      "our one-click unsubscribe endpoint, https://; unset: no List-Unsubscribe" },
    { "unsubscribe_key", SM_CONF_STRING, offsetof(pd_conf, unsubscribe_key), NULL,
      "ID HEX: the key that signs unsubscribe links (as StubmailLinkKey)" },
    { "intro_digest", SM_CONF_SECONDS, offsetof(pd_conf, intro_digest), "0",
      "mail each user new introductions at most this often (like 1d); 0: off" },
    { "intro_url", SM_CONF_STRING, offsetof(pd_conf, intro_url), NULL,
      "mod_stubmail's /introduction, https://: the digest's accept/decline links" },
    { "metrics_file", SM_CONF_STRING, offsetof(pd_conf, metrics_file), NULL,
      "Prometheus metrics written here after every cycle (absolute path); unset: off" },
    { "metrics_listen", SM_CONF_STRING, offsetof(pd_conf, metrics_listen), NULL,
      "IP:PORT serving the same metrics at GET /metrics (keep it loopback); unset: off" },
    { "log_facility", SM_CONF_STRING, offsetof(pd_conf, log_facility), "mail",
      "syslog facility (mail, daemon, user, local0..local7); -f logs to stderr instead" },
    { "log_level", SM_CONF_STRING, offsetof(pd_conf, log_level), "info",
      "least severe lines logged: debug, info, notice, warning or error (-d: debug)" },
};


#define PD_NKEYS (sizeof(keys) / sizeof(keys[0]))

/* The table as sm_conf reads it, pointing into the pd_conf being loaded
 * (one per process: pd_conf_free frees what it allocated). */
static sm_conf_key bound[PD_NKEYS + 1];

static void bind_keys(pd_conf *c)
{
    size_t i;

    for (i = 0; i < PD_NKEYS; i++) {
        bound[i].name = keys[i].name;
        bound[i].type = keys[i].type;
        bound[i].dst = (char *)c + keys[i].offset;
        bound[i].dflt = keys[i].dflt;
        bound[i].help = keys[i].help;
    }
    memset(&bound[PD_NKEYS], 0, sizeof(bound[PD_NKEYS]));
}

void pd_conf_print_keys(FILE *fp)
{
    size_t i;

    for (i = 0; i < PD_NKEYS; i++)
        fprintf(fp, "  %-14s %-28s %s\n", keys[i].name, keys[i].dflt ? keys[i].dflt : "",
                keys[i].help);
}

void pd_conf_dump_keys(FILE *fp)
{
    size_t i;

    for (i = 0; i < PD_NKEYS; i++)
        fprintf(fp, "%s\t%s\n", keys[i].name, keys[i].dflt ? keys[i].dflt : "");
}

/* A directory pollerd can write into. */
static int writable_dir(const char *key, const char *dir, char *err, size_t errlen)
{
    struct stat st;

    if (dir[0] != '/') {
        snprintf(err, errlen, "%s: \"%s\" is not an absolute path", key, dir);
        return -1;
    }
    errno = 0;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "%s: %s is not a writable directory%s%s", key, dir,
                 errno ? ": " : "", errno ? strerror(errno) : "");
        return -1;
    }
    return 0;
}

/* The OpenPGP settings: gnupg_home and domain_key are required; the
 * quarantine directory must be there (made if missing) and our public key
 * is exported once, to go with every login. */
static int check_pgp(pd_conf *c, char *err, size_t errlen)
{
    char why[SM_PGP_WHY_MAX];
    size_t len, i;
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *rwhy = "";

    if (c->resolver && sm_dns_resolver_parse(c->resolver, &ss, &sslen, &rwhy) != 0) {
        snprintf(err, errlen, "resolver: \"%s\": %s", c->resolver, rwhy);
        return -1;
    }
    if (sm_dnssec_require_check(c->dnssec_require, &rwhy) != 0) {
        snprintf(err, errlen, "dnssec_require: \"%s\": %s", c->dnssec_require, rwhy);
        return -1;
    }
    c->dns.resolver = c->resolver;
    c->dns.resolver_trusted = c->resolver_trusted;
    c->dns.dnssec_require = c->dnssec_require;
    if (c->ca_file && access(c->ca_file, R_OK) != 0) {
        snprintf(err, errlen, "ca_file: %s: %s", c->ca_file, strerror(errno));
        return -1;
    }
    c->https.ca_file = c->ca_file;
    c->https.allow_http = c->allow_http;
    c->https.timeout = c->timeout < PD_KEYFETCH_TIMEOUT ? c->timeout : PD_KEYFETCH_TIMEOUT;
    if (sm_pgp_own_key_settings(c->gnupg_home, c->domain_key, err, errlen) != 0)
        return -1;
    for (i = 0; c->domain_key[i]; i++)
        c->domain_key[i] = (char)toupper((unsigned char)c->domain_key[i]);
    if (c->quarantine_dir[0] == '/' && mkdir(c->quarantine_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "quarantine_dir: cannot create %s: %s", c->quarantine_dir,
                 strerror(errno));
        return -1;
    }
    if (writable_dir("quarantine_dir", c->quarantine_dir, err, errlen) != 0)
        return -1;
    free(c->pubkey);
    c->pubkey = NULL;
    if (sm_pgp_export_public(c->gnupg_home, c->domain_key, &c->pubkey, &len, why,
                             sizeof(why)) != SM_PGP_OK) {
        snprintf(err, errlen, "domain_key %s in gnupg_home %s: %s", c->domain_key,
                 c->gnupg_home, why);
        return -1;
    }
    return 0;
}

/* Checks beyond syntax; builds c->smtp_url (deliver_to with our domain as
 * the EHLO name when it names none). */
static int check_conf(pd_conf *c, char *err, size_t errlen)
{
    char sub[256];
    CURLU *u = NULL;
    char *scheme = NULL, *host = NULL, *path = NULL, *url = NULL, *p;
    int rc = -1;

    if (sm_conf_require(bound, "domain", err, errlen) != 0
        || sm_conf_require(bound, "database", err, errlen) != 0)
        return -1;
    for (p = c->domain; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (!sm_domain_valid(c->domain)) {
        snprintf(err, errlen, "domain: \"%s\" is not a domain name", c->domain);
        return -1;
    }
    if (c->interval < 1 || c->timeout < 1) {
        snprintf(err, errlen, "interval and timeout must be at least 1s");
        return -1;
    }
    if (c->parallel < 1 || c->parallel > PD_LANES_MAX) {
        snprintf(err, errlen, "parallel: %ld is not within 1..%d", c->parallel, PD_LANES_MAX);
        return -1;
    }
    if (c->concurrency < 1 || c->concurrency > 1000) {
        snprintf(err, errlen, "concurrency: %ld is not within 1..1000", c->concurrency);
        return -1;
    }
    if (c->batch_max < 1) {
        snprintf(err, errlen, "batch_max must be at least 1");
        return -1;
    }
    if (pd_stub_check_conf(c, err, errlen) != 0 || pd_unsub_check_conf(c, err, errlen) != 0
        || pd_digest_check_conf(c, err, errlen) != 0
        || pd_metrics_http_check_conf(c, err, errlen) != 0)
        return -1;
    if (sm_log_facility_parse(c->log_facility, &c->log_facility_value, sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "log_facility: %s", sub);
        return -1;
    }
    if (sm_log_level_parse(c->log_level, &c->log_level_value, sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "log_level: %s", sub);
        return -1;
    }
    if (c->metrics_file && c->metrics_file[0] != '/') {
        snprintf(err, errlen, "metrics_file: \"%s\" is not an absolute path", c->metrics_file);
        return -1;
    }
    if (c->udp_timeout < 1 || c->udp_timeout > 60) {
        snprintf(err, errlen, "udp_timeout: %lds is not within 1s..60s", c->udp_timeout);
        return -1;
    }
    if (writable_dir("spool_dir", c->spool_dir, err, errlen) != 0
        || check_pgp(c, err, errlen) != 0)
        return -1;

    if (!(u = curl_url()) || curl_url_set(u, CURLUPART_URL, c->deliver_to, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK
        || (strcmp(scheme, "smtp") != 0 && strcmp(scheme, "smtps") != 0)) {
        snprintf(err, errlen, "deliver_to: \"%s\" is not an smtp:// or smtps:// URL",
                 c->deliver_to);
        goto leave;
    }
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK || !path[0]
        || !strcmp(path, "/")) {
        char ehlo[SM_DOMAIN_MAX + 2];
        snprintf(ehlo, sizeof(ehlo), "/%s", c->domain);
        if (curl_url_set(u, CURLUPART_PATH, ehlo, 0) != CURLUE_OK) {
            snprintf(err, errlen, "deliver_to: cannot add the EHLO name");
            goto leave;
        }
    }
    if (curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK) {
        snprintf(err, errlen, "deliver_to: \"%s\" is not a URL", c->deliver_to);
        goto leave;
    }
    free(c->smtp_url);
    if (!(c->smtp_url = strdup(url))) {
        snprintf(err, errlen, "out of memory");
        goto leave;
    }
    rc = 0;
leave:
    curl_free(scheme);
    curl_free(host);
    curl_free(path);
    curl_free(url);
    curl_url_cleanup(u);
    return rc;
}

/* Sign once at start (this starts the home's gpg-agent): a domain key
 * without its secret half would otherwise fail every login, every cycle. -n
 * does not do this, so that a check leaves no agent running. */
int pd_conf_can_sign(const pd_conf *c)
{
    char why[SM_PGP_WHY_MAX];

    if (sm_pgp_probe_sign(c->gnupg_home, c->domain_key, why, sizeof(why)) == SM_PGP_OK)
        return 0;
    sm_err("domain_key %s in gnupg_home %s cannot sign: %s", c->domain_key, c->gnupg_home, why);
    return -1;
}

int pd_conf_load(pd_conf *c, const char *path, char *err, size_t errlen)
{
    bind_keys(c);
    if (sm_conf_load(path, bound, err, errlen) != 0)
        return -1;
    return check_conf(c, err, errlen);
}

void pd_conf_free(pd_conf *c)
{
    if (bound[0].name)
        sm_conf_free(bound);
    free(c->smtp_url);
    free(c->pubkey);
    c->smtp_url = c->pubkey = NULL;
    sm_token_keyring_clear(&c->unsub_keys);
}
