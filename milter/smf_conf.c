/* smf_conf — stubmail-milter's configuration: the one key table (type,
 * default, whether a reload applies it, the help line of -h), loading a
 * file into a smf_settings with every check of -n, and what a reload
 * compares (smf_reload.c).
 *
 * A settings struct is loaded whole or not at all, at the start and at
 * each reload, so that a connection sees one file's settings from its
 * first step to its last. Each key a check refuses is named with the line
 * that set it (or "(default)"). The keys that only a restart applies are
 * those of what is made once for the whole process: the socket libmilter
 * listens on, and the database pool (its connections, the answers cache's
 * LISTEN connection, and the stubmail.expire_after each session sets). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "sm_conf.h"
#include "sm_dnssec.h"
#include "sm_log.h"
#include "smf.h"

#define SMF_MAX_CONNECTIONS 1000
#define SMF_KEY_TIMEOUT_MAX 300
/* An inline body is read whole into memory by whoever serves it (the
 * fetch, a backup's COPY): kept to bodies PostgreSQL handles as small. */
#define SMF_INLINE_MAX_MAX  (1024LL * 1024)

/* A key of the table: where its value goes in a smf_settings. */
typedef struct smf_conf_key {
    const char *name;
    sm_conf_type type;
    size_t offset;
    const char *dflt;           /* NULL: unset (required ones: smf_required) */
    int restart_only;           /* a reload leaves it as it was, and says so */
    const char *help;
} smf_conf_key;

#define AT(field) offsetof(smf_settings, field)

static const smf_conf_key keys[] = {
    { "socket", SM_CONF_STRING, AT(socket), "unix:/run/stubmail/milter.sock", 1,
      "libmilter socket (inet:PORT@ADDR, inet6:PORT@ADDR or unix:PATH)" },
    { "database", SM_CONF_STRING, AT(database), NULL, 1, "libpq conninfo" },
    { "spool_dir", SM_CONF_STRING, AT(spool_dir), "/var/spool/stubmail", 0,
      "where bodies are written" },
    { "originating_daemon", SM_CONF_STRING, AT(originating_daemon), "ORIGINATING", 0,
      "{daemon_name} value that marks a submission listener" },
    { "trusted_networks", SM_CONF_STRING, AT(trusted_networks), "127.0.0.1/32 ::1/128", 0,
      "clients whose mail is outbound (CIDR list, IPv4 and IPv6)" },
    { "db_connections", SM_CONF_INT, AT(db_connections), "8", 1,
      "PostgreSQL connections kept open" },
    { "resolver", SM_CONF_STRING, AT(resolver), NULL, 0,
      "DNS server for _stubmail lookups, IP:PORT or [IPv6]:PORT; unset: /etc/resolv.conf" },
    { "resolver_trusted", SM_CONF_BOOL, AT(resolver_trusted), "no", 0,
      "believe the resolver's DNSSEC AD bit even off loopback (no: only from a loopback "
      "resolver, or /etc/resolv.conf's options trust-ad)" },
    { "dnssec_require", SM_CONF_STRING, AT(dnssec_require), "none", 0,
      "domains whose _stubmail record is used only when DNSSEC-validated: none, all, or "
      "a list of domains" },
    { "gnupg_home", SM_CONF_STRING, AT(gnupg_home), NULL, 0,
      "GnuPG home with our domain key: stored mail is signed and encrypted" },
    { "domain_key", SM_CONF_STRING, AT(domain_key), NULL, 0,
      "fingerprint of our domain key in gnupg_home (the fpr= we publish)" },
    { "ca_file", SM_CONF_STRING, AT(ca_file), NULL, 0,
      "CA certificates for fetching peers' keys over HTTPS; unset: the system's" },
    { "allow_http", SM_CONF_BOOL, AT(allow_http), "no", 0,
      "fetch peers' keys over plain http:// from loopback addresses" },
    { "key_timeout", SM_CONF_SECONDS, AT(key_timeout), "10s", 0,
      "longest fetch of one peer's domain key" },
    { "recipient_keys", SM_CONF_BOOL, AT(recipient_keys), "yes", 0,
      "also encrypt to a recipient's own key published by WKD on its outbox origin" },
    { "recipient_key_timeout", SM_CONF_SECONDS, AT(recipient_key_timeout), "5s", 0,
      "longest the WKD lookups of one message take together (the rest: no key this time)" },
    { "inline_max", SM_CONF_BYTES, AT(inline_max), "96k", 0,
      "largest sealed body kept in its message row instead of a spool file (0: none)" },
    { "quota_messages", SM_CONF_INT, AT(quota_messages), "1000", 0,
      "messages a local sender may have waiting in the outbox (0: no limit; sender_quota "
      "overrides)" },
    { "quota_bytes", SM_CONF_BYTES, AT(quota_bytes), "100M", 0,
      "octets of stored mail a local sender may have waiting in the outbox (0: no limit; "
      "sender_quota overrides)" },
    { "expire_after", SM_CONF_SECONDS, AT(expire_after), "100d", 1,
      "unretrieved mail expires this long after it was stored (stubmail-janitor bounces it)" },
    { "log_facility", SM_CONF_STRING, AT(log_facility), "mail", 0,
      "syslog facility (mail, daemon, user, local0..local7); -f logs to stderr instead" },
    { "log_level", SM_CONF_STRING, AT(log_level), "info", 0,
      "least severe lines logged: debug, info, notice, warning or error" },
};

#define SMF_NKEYS (sizeof keys / sizeof keys[0])

/* A file being loaded: where each key was set, for the checks' errors. */
typedef struct smf_loading {
    const char *path;
    int lines[SMF_NKEYS];
    char where[SMF_NKEYS][600];         /* "PATH:LINE: KEY" or "PATH: KEY (default)" */
} smf_loading;

static const char *where(const smf_loading *ld, const char *name)
{
    size_t i;

    for (i = 0; i < SMF_NKEYS && strcmp(keys[i].name, name) != 0; i++)
        ;
    return i < SMF_NKEYS ? ld->where[i] : name;
}

static void *field(const smf_settings *set, size_t i)
{
    return (char *)set + keys[i].offset;
}

static int smf_required(const char *name)
{
    return !strcmp(name, "database") || !strcmp(name, "gnupg_home")
        || !strcmp(name, "domain_key");
}

void smf_conf_print_keys(FILE *fp)
{
    size_t i;

    for (i = 0; i < SMF_NKEYS; i++)
        fprintf(fp, "  %-20s %s (default: %s)\n", keys[i].name, keys[i].help,
                keys[i].dflt ? keys[i].dflt : smf_required(keys[i].name) ? "required"
                : "unset");
}

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

/* value of key within [lo, hi] (unit after each number, "s" or ""): 0; else
 * -1 with err naming the file, line and key. */
static int out_of_range(const smf_loading *ld, const char *key, long long value, long long lo,
                        long long hi, const char *unit, char *err, size_t errlen)
{
    if (value >= lo && value <= hi)
        return 0;
    snprintf(err, errlen, "%s: %lld%s is not between %lld%s and %lld%s", where(ld, key), value,
             unit, lo, unit, hi, unit);
    return -1;
}

/* The keys of discovery and sealing; the key itself is checked by
 * smf_key_check. Returns 0, or -1 with err. */
static int smf_check_discovery(smf_settings *set, const smf_loading *ld, char *err,
                               size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *bad;
    char sub[512];

    if (set->resolver && sm_dns_resolver_parse(set->resolver, &addr, &addrlen, &bad) != 0) {
        snprintf(err, errlen, "%s: \"%s\": %s", where(ld, "resolver"), set->resolver, bad);
        return -1;
    }
    if (sm_dnssec_require_check(set->dnssec_require, &bad) != 0) {
        snprintf(err, errlen, "%s: \"%s\": %s", where(ld, "dnssec_require"),
                 set->dnssec_require, bad);
        return -1;
    }
    set->dns.resolver = set->resolver;
    set->dns.resolver_trusted = set->resolver_trusted;
    set->dns.dnssec_require = set->dnssec_require;
    if (sm_pgp_own_key_settings(set->gnupg_home, set->domain_key, sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: %s", ld->path, sub);
        return -1;
    }
    if (set->ca_file && access(set->ca_file, R_OK) != 0) {
        snprintf(err, errlen, "%s: %s: %s", where(ld, "ca_file"), set->ca_file, strerror(errno));
        return -1;
    }
    if (out_of_range(ld, "key_timeout", set->key_timeout, 1, SMF_KEY_TIMEOUT_MAX, "s", err,
                     errlen)
        || out_of_range(ld, "recipient_key_timeout", set->recipient_key_timeout, 1,
                        SMF_KEY_TIMEOUT_MAX, "s", err, errlen))
        return -1;
    return 0;
}

/* Our domain key is in gnupg_home; with probe_secret, it also signs (which
 * starts gpg-agent): the daemon fails at start, not at the first message. */
static int smf_key_check(const smf_settings *set, const smf_loading *ld, int probe_secret,
                         char *err, size_t errlen)
{
    char why[SM_PGP_WHY_MAX];
    int rc = -1;

    if (sm_pgp_init() != SM_PGP_OK) {
        snprintf(err, errlen, "gpgme or gpg is missing or too old");
        goto leave;
    }
    if (sm_pgp_have_key(set->gnupg_home, set->domain_key, why, sizeof why) != SM_PGP_OK) {
        snprintf(err, errlen, "%s %s in gnupg_home %s: %s", where(ld, "domain_key"),
                 set->domain_key, set->gnupg_home, why);
        goto leave;
    }
    if (probe_secret && sm_pgp_probe_sign(set->gnupg_home, set->domain_key, why, sizeof why)
                        != SM_PGP_OK) {
        snprintf(err, errlen, "%s %s in gnupg_home %s cannot sign: %s",
                 where(ld, "domain_key"), set->domain_key, set->gnupg_home, why);
        goto leave;
    }
    rc = 0;
leave:
    return rc;
}

/* The checks beyond syntax, and the values derived from the keys. */
static int smf_check(smf_settings *set, const smf_loading *ld, char *err, size_t errlen)
{
    char sub[512];
    struct stat st;
    PQconninfoOption *opts;
    char *pqerr = NULL;

    if (set->database == NULL) {
        snprintf(err, errlen, "%s: missing required key \"database\" (libpq conninfo)",
                 ld->path);
        return -1;
    }
    if ((opts = PQconninfoParse(set->database, &pqerr)) == NULL) {
        snprintf(err, errlen, "%s: not a libpq conninfo: %s", where(ld, "database"),
                 pqerr ? pqerr : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        PQfreemem(pqerr);
        return -1;
    }
    PQconninfoFree(opts);
    if (!socket_spec_ok(set->socket)) {
        snprintf(err, errlen, "%s: \"%s\" is not unix:/PATH, inet:PORT@ADDR or "
                 "inet6:PORT@ADDR", where(ld, "socket"), set->socket);
        return -1;
    }
    if (out_of_range(ld, "db_connections", set->db_connections, 1, SMF_MAX_CONNECTIONS, "",
                     err, errlen)
        || out_of_range(ld, "inline_max", set->inline_max, 0, SMF_INLINE_MAX_MAX, "", err,
                        errlen))
        return -1;
    if (set->expire_after < 1) {
        snprintf(err, errlen, "%s: must be at least 1s", where(ld, "expire_after"));
        return -1;
    }
    if (sm_log_facility_parse(set->log_facility, &set->log_facility_value, sub, sizeof sub)
        != 0) {
        snprintf(err, errlen, "%s: %s", where(ld, "log_facility"), sub);
        return -1;
    }
    if (sm_log_level_parse(set->log_level, &set->log_level_value, sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: %s", where(ld, "log_level"), sub);
        return -1;
    }
    if (set->originating_daemon[0] == '\0') {
        snprintf(err, errlen, "%s: must not be empty", where(ld, "originating_daemon"));
        return -1;
    }
    if (smf_netlist_parse(set->trusted_networks, &set->trusted, sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: %s", where(ld, "trusted_networks"), sub);
        return -1;
    }
    if (set->spool_dir[0] != '/') {
        snprintf(err, errlen, "%s: \"%s\" is not an absolute path", where(ld, "spool_dir"),
                 set->spool_dir);
        return -1;
    }
    if (stat(set->spool_dir, &st) != 0) {
        snprintf(err, errlen, "%s: %s: %s", where(ld, "spool_dir"), set->spool_dir,
                 strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: %s: not a directory", where(ld, "spool_dir"),
                 set->spool_dir);
        return -1;
    }
    if (access(set->spool_dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "%s: %s: not writable: %s", where(ld, "spool_dir"),
                 set->spool_dir, strerror(errno));
        return -1;
    }
    return smf_check_discovery(set, ld, err, errlen);
}

int smf_conf_load(smf_settings *set, const char *path, int probe_secret, char *err,
                  size_t errlen)
{
    sm_conf_key bound[SMF_NKEYS + 1];
    smf_loading *ld;
    size_t i;
    int rc = -1;

    memset(set, 0, sizeof *set);
    if ((ld = calloc(1, sizeof *ld)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto leave;
    }
    ld->path = path;
    for (i = 0; i < SMF_NKEYS; i++) {
        bound[i].name = keys[i].name;
        bound[i].type = keys[i].type;
        bound[i].dst = field(set, i);
        bound[i].dflt = keys[i].dflt;
        bound[i].help = keys[i].help;
    }
    memset(&bound[SMF_NKEYS], 0, sizeof bound[SMF_NKEYS]);
    if (sm_conf_load_lines(path, bound, ld->lines, err, errlen) != 0)
        goto leave;
    for (i = 0; i < SMF_NKEYS; i++) {
        if (ld->lines[i])
            snprintf(ld->where[i], sizeof ld->where[i], "%s:%d: %s", path, ld->lines[i],
                     keys[i].name);
        else
            snprintf(ld->where[i], sizeof ld->where[i], "%s: %s (default)", path,
                     keys[i].name);
    }
    if (smf_check(set, ld, err, errlen) != 0
        || smf_key_check(set, ld, probe_secret, err, errlen) != 0)
        goto leave;
    rc = 0;
leave:
    free(ld);
    return rc;
}

int smf_conf_seal(smf_settings *set, char *err, size_t errlen)
{
    char why[512];
    int rc = 0;

    if (sm_seal_new(set->gnupg_home, set->domain_key, SMF_SEAL_SLOTS, &set->seal, why,
                    sizeof why) != SM_PGP_OK) {
        snprintf(err, errlen, "domain_key %s in gnupg_home %s: cannot load it for sealing: %s",
                 set->domain_key, set->gnupg_home, why);
        rc = -1;
    }
    return rc;
}

void smf_conf_free(smf_settings *set)
{
    size_t i;

    if (set == NULL)
        return;
    for (i = 0; i < SMF_NKEYS; i++)
        if (keys[i].type == SM_CONF_STRING) {
            free(*(char **)field(set, i));
            *(char **)field(set, i) = NULL;
        }
    smf_netlist_free(&set->trusted);
    sm_seal_free(set->seal);
    set->seal = NULL;
}

static int same_value(size_t i, const smf_settings *a, const smf_settings *b)
{
    const char *sa, *sb;

    switch (keys[i].type) {
    case SM_CONF_STRING:
        sa = *(char **)field(a, i);
        sb = *(char **)field(b, i);
        return sa == sb || (sa && sb && strcmp(sa, sb) == 0);
    case SM_CONF_BOOL:
        return *(int *)field(a, i) == *(int *)field(b, i);
    case SM_CONF_INT:
    case SM_CONF_SECONDS:
        return *(long *)field(a, i) == *(long *)field(b, i);
    case SM_CONF_BYTES:
        return *(long long *)field(a, i) == *(long long *)field(b, i);
    }
    return 0;
}

/* Append name to the list "a, b" in out. */
static void list_add(char *out, size_t outlen, const char *name)
{
    size_t used = strlen(out);

    snprintf(out + used, outlen - used, "%s%s", used ? ", " : "", name);
}

int smf_conf_keep_restart_only(smf_settings *next, const smf_settings *now, const char *path,
                               char *err, size_t errlen)
{
    char *copy;
    size_t i;
    int rc = 0;

    for (i = 0; i < SMF_NKEYS && rc == 0; i++) {
        if (!keys[i].restart_only || same_value(i, next, now))
            continue;
        /* the value is not logged: database's may hold a password */
        sm_warn("reload of %s: %s changed, ignored: only a restart applies it (the milter "
                "goes on with the value it started with)", path, keys[i].name);
        if (keys[i].type != SM_CONF_STRING) {
            memcpy(field(next, i), field(now, i),
                   keys[i].type == SM_CONF_BOOL ? sizeof(int)
                   : keys[i].type == SM_CONF_BYTES ? sizeof(long long) : sizeof(long));
        } else if ((copy = strdup(*(char **)field(now, i))) != NULL) {
            free(*(char **)field(next, i));
            *(char **)field(next, i) = copy;
        } else {
            snprintf(err, errlen, "%s: out of memory", keys[i].name);
            rc = -1;
        }
    }
    return rc;
}

void smf_conf_changed(const smf_settings *a, const smf_settings *b, char *out, size_t outlen)
{
    size_t i;

    out[0] = '\0';
    for (i = 0; i < SMF_NKEYS; i++)
        if (!same_value(i, a, b))
            list_add(out, outlen, keys[i].name);
}
