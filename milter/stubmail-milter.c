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
 *	with the empty envelope sender, passes untouched.
 *
 *	Per-connection state (struct smf_conn) hangs off the libmilter context
 *	and is reached only through smf_conn_get(); the per-message state
 *	(struct smf_msg) hangs off the connection and is reached only through
 *	smf_msg_get(). Both are freed on every exit path: a new MAIL FROM,
 *	abort, close, and every callback that ends the message.
 * DIAGNOSTICS
 *	Database, spool or gpg trouble is a temporary failure (SMTP 451
 *	4.3.0), so is DNS that cannot answer at RCPT (451 4.4.3, that
 *	recipient) and a recipient domain's key that cannot be fetched (451
 *	4.7.5 at DATA): the MTA keeps the message and retries, nothing is
 *	lost. Every such failure is logged with the queue id, the sender and
 *	the reason. An invalid _stubmail record is pushed with a warning.
 *	Configuration errors (gnupg_home and domain_key are required): exit
 *	status 78 (EX_CONFIG).
 * SEE ALSO
 *	docs/stubmail-milter.8, docs/HACKING.md, smf_db.c, smf_net.c
 *--*/
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <libmilter/mfapi.h>
#include <libpq-fe.h>

#include <curl/curl.h>

#include "sm_addr.h"
#include "sm_conf.h"
#include "sm_dns.h"
#include "sm_id.h"
#include "sm_keyfetch.h"
#include "sm_log.h"
#include "sm_pgp.h"
#include "sm_spool.h"
#include "sm_wkd.h"
#include "smf.h"

#define SMF_NAME    "stubmail-milter"
#define SMF_BUFSZ   65536           /* spool write buffer per message */
#define SMF_MAX_CONNECTIONS 1000

/* ---- configuration ---------------------------------------------------- */

static struct {
    char *socket;
    char *database;
    char *spool_dir;
    char *originating_daemon;
    char *trusted_networks;
    long db_connections;
    char *resolver;
    char *gnupg_home;
    char *domain_key;
    char *ca_file;
    int allow_http;
    long key_timeout;
    int recipient_keys;
    long recipient_key_timeout;
} cfg;

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
    { NULL, 0, NULL, NULL, NULL }
};

#define SMF_KEY_TIMEOUT_MAX 300
#define SMF_SEAL_KEYS_MAX   64      /* recipients sm_pgp_encrypt_sign_fd takes */

static smf_netlist trusted;

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
    if (cfg.originating_daemon[0] == '\0') {
        snprintf(err, errlen, "%s: originating_daemon: must not be empty", path);
        return -1;
    }
    smf_netlist_free(&trusted);
    if (smf_netlist_parse(cfg.trusted_networks, &trusted, sub, sizeof sub) != 0) {
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

/* ---- per-connection and per-message state ---------------------------- */

typedef struct smf_rcpt {
    char *raw;                  /* as received, with <>: what smfi_delrcpt needs */
    char *addr;                 /* normalised; NULL if not a plain address */
    int pulling;
    char keyfpr[SM_PGP_FPR_MAX + 1];    /* its own key (WKD), "" if none */
} smf_rcpt;

/* A recipient domain of the message: discovered once per message. */
typedef struct smf_domain {
    char name[SM_DOMAIN_MAX + 1];
    int pulling;
    char outbox[SM_TXT_URL_MAX + 1];    /* where its key is, when pulling */
    char fpr[SM_TXT_FPR_MAX + 1];       /* its domain key, when pulling */
    char udp[SM_TXT_UDP_MAX + 1];       /* its published udp=, "" if none */
} smf_domain;

typedef struct smf_msg {
    char sender[SM_ADDR_MAX + 1];   /* normalised envelope sender */
    smf_rcpt *rcpts;
    size_t nrcpts, cap, npulling;
    smf_domain *domains;
    size_t ndomains, domcap;
    int learned;                /* address book done (push-only mail) */
    int spool_open;             /* spool holds a file that is not ours to keep */
    int saw_eoh;
    sm_spool_file spool;        /* the message as received (plaintext) */
    char *buf;                  /* write buffer in front of the spool file */
    size_t buflen;
    int keys_ready;             /* every pulling domain's key is in gnupg_home */
    int sealed_open;            /* like spool_open, for sealed */
    sm_spool_file sealed;       /* the stored OpenPGP form */
} smf_msg;

typedef struct smf_conn {
    char client[INET6_ADDRSTRLEN];
    int originating;            /* {daemon_name} == originating_daemon */
    int trusted;                /* client inside trusted_networks */
    int can_delrcpt;            /* the MTA lets us remove recipients */
    int leadspc;                /* header values keep their leading space */
    smf_msg *msg;
} smf_conn;

static smf_conn *smf_conn_get(SMFICTX *ctx)
{
    return smfi_getpriv(ctx);
}

static smf_conn *smf_conn_new(SMFICTX *ctx)
{
    smf_conn *conn = smf_conn_get(ctx);

    if (conn)
        return conn;
    if ((conn = calloc(1, sizeof *conn)) == NULL)
        return NULL;
    strcpy(conn->client, "unknown");
    if (smfi_setpriv(ctx, conn) != MI_SUCCESS) {
        free(conn);
        return NULL;
    }
    return conn;
}

static smf_msg *smf_msg_get(SMFICTX *ctx)
{
    smf_conn *conn = smf_conn_get(ctx);

    return conn ? conn->msg : NULL;
}

/* Forget the current message; a spool file not yet handed to the database
 * is removed. */
static void smf_msg_free(SMFICTX *ctx)
{
    smf_conn *conn = smf_conn_get(ctx);
    smf_msg *msg = conn ? conn->msg : NULL;
    size_t i;

    if (msg == NULL)
        return;
    if (msg->spool_open)
        sm_spool_abort(&msg->spool);
    if (msg->sealed_open)
        sm_spool_abort(&msg->sealed);
    for (i = 0; i < msg->nrcpts; i++) {
        free(msg->rcpts[i].raw);
        free(msg->rcpts[i].addr);
    }
    free(msg->rcpts);
    free(msg->domains);
    free(msg->buf);
    free(msg);
    conn->msg = NULL;
}

static void smf_conn_free(SMFICTX *ctx)
{
    smf_conn *conn = smf_conn_get(ctx);

    if (conn == NULL)
        return;
    smf_msg_free(ctx);
    free(conn);
    smfi_setpriv(ctx, NULL);
}

static const char *smf_qid(SMFICTX *ctx)
{
    const char *qid = smfi_getsymval(ctx, "i");

    return qid && *qid ? qid : "NOQUEUE";
}

/* Reply text for smfi_setreply: printable ASCII only ("%" would be taken
 * as a format, CR or LF would make the call fail), at most SMF_REPLY_MAX. */
#define SMF_REPLY_MAX 400

static void smf_setreply(SMFICTX *ctx, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void smf_setreply(SMFICTX *ctx, const char *dsn, const char *fmt, ...)
{
    char text[SMF_REPLY_MAX + 1], *p;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (p = text; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '%')
            *p = '?';
    smfi_setreply(ctx, "451", (char *)dsn, text);
}

/* End the message with a temporary failure (451 dsn reply) the client sees
 * and a log line that says which message and why. */
static sfsistat smf_tempfail(SMFICTX *ctx, const char *dsn, const char *reply,
                             const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static sfsistat smf_tempfail(SMFICTX *ctx, const char *dsn, const char *reply,
                             const char *fmt, ...)
{
    smf_msg *msg = smf_msg_get(ctx);
    char why[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    sm_err("%s: from=<%s>: %s; answered 451 %s", smf_qid(ctx), msg ? msg->sender : "?", why,
           dsn);
    smf_setreply(ctx, dsn, "%s", reply);
    smf_msg_free(ctx);
    return SMFIS_TEMPFAIL;
}

#define DSN_LOCAL   "4.3.0"     /* our database or spool */
#define DSN_DNS     "4.4.3"     /* directory server (DNS) failure */
#define DSN_KEY     "4.7.5"     /* a key needed for encryption is not available */
#define REPLY_DB    "stubmail: database unavailable, try again later"
#define REPLY_STORE "stubmail: cannot store message, try again later"

/* ---- the spool file ---------------------------------------------------- */

static int smf_flush(smf_msg *msg)
{
    if (msg->buflen == 0)
        return 0;
    if (sm_spool_write(&msg->spool, msg->buf, msg->buflen) != 0)
        return -1;
    msg->buflen = 0;
    return 0;
}

static int smf_out(smf_msg *msg, const void *p, size_t len)
{
    if (msg->buflen + len > SMF_BUFSZ) {
        if (smf_flush(msg) != 0)
            return -1;
        if (len >= SMF_BUFSZ)
            return sm_spool_write(&msg->spool, p, len) != 0 ? -1 : 0;
    }
    memcpy(msg->buf + msg->buflen, p, len);
    msg->buflen += len;
    return 0;
}

static int smf_spool_open(smf_msg *msg)
{
    char id[SM_ID_LEN + 1];

    if (msg->spool_open)
        return 0;
    if (msg->buf == NULL && (msg->buf = malloc(SMF_BUFSZ)) == NULL)
        return -1;
    if (sm_id_new(id) != 0)
        return -1;
    if (sm_spool_create(&msg->spool, cfg.spool_dir, id) != 0) {
        int saved = errno;
        sm_spool_abort(&msg->spool);
        errno = saved;
        return -1;
    }
    msg->spool_open = 1;
    return 0;
}

/* "Name:value\r\n"; with SMFIP_HDR_LEADSPC the value is exactly what followed
 * the colon, without it the MTA dropped one space we put back. Folded values
 * arrive with bare LF line ends (Postfix): stored with CRLF. */
static int smf_out_header(smf_msg *msg, int leadspc, const char *name, const char *value)
{
    const char *p = value, *nl;

    if (smf_out(msg, name, strlen(name)) != 0
        || smf_out(msg, leadspc ? ":" : ": ", leadspc ? 1 : 2) != 0)
        return -1;
    while ((nl = strchr(p, '\n')) != NULL) {
        if (nl > value && nl[-1] == '\r') {
            if (smf_out(msg, p, (size_t)(nl + 1 - p)) != 0)
                return -1;
        } else if (smf_out(msg, p, (size_t)(nl - p)) != 0 || smf_out(msg, "\r\n", 2) != 0) {
            return -1;
        }
        p = nl + 1;
    }
    return smf_out(msg, p, strlen(p)) != 0 || smf_out(msg, "\r\n", 2) != 0 ? -1 : 0;
}

/* ---- address lists for the database ----------------------------------- */

/* The recipients with a normalised address; pulling_only selects the outbox
 * rows. malloc'd (NULL with *n = 0 when there are none). */
static smf_db_rcpt *smf_rcpt_list(const smf_msg *msg, int pulling_only, size_t *n)
{
    smf_db_rcpt *list = calloc(msg->nrcpts ? msg->nrcpts : 1, sizeof *list);
    size_t i;

    *n = 0;
    if (list == NULL)
        return NULL;
    for (i = 0; i < msg->nrcpts; i++) {
        if (msg->rcpts[i].addr == NULL || (pulling_only && !msg->rcpts[i].pulling))
            continue;
        list[*n].addr = msg->rcpts[i].addr;
        list[*n].domain = sm_addr_domain(msg->rcpts[i].addr);
        (*n)++;
    }
    return list;
}

/* Push-only outbound mail: learn, and only warn when that fails. */
static void smf_learn(SMFICTX *ctx, smf_msg *msg)
{
    smf_db_rcpt *contacts;
    char why[512];
    size_t n;

    if (msg->learned)
        return;
    msg->learned = 1;
    if ((contacts = smf_rcpt_list(msg, 0, &n)) == NULL) {
        sm_warn("%s: from=<%s>: address book not updated: out of memory", smf_qid(ctx),
                msg->sender);
        return;
    }
    if (n > 0 && smf_db_learn(msg->sender, contacts, n, why, sizeof why) != SMF_DB_OK)
        sm_warn("%s: from=<%s>: address book not updated: %s", smf_qid(ctx), msg->sender, why);
    free(contacts);
}

/* "a@x,b@y" for the log, cut short with ",..." when long. */
static void smf_pulling_text(const smf_msg *msg, char *out, size_t outlen)
{
    size_t i, used = 0, len;
    int first = 1;

    out[0] = '\0';
    for (i = 0; i < msg->nrcpts; i++) {
        if (!msg->rcpts[i].pulling)
            continue;
        len = strlen(msg->rcpts[i].addr) + 1;
        if (used + len + 5 >= outlen) {
            snprintf(out + used, outlen - used, ",...");
            return;
        }
        used += (size_t)snprintf(out + used, outlen - used, "%s%s", first ? "" : ",",
                                 msg->rcpts[i].addr);
        first = 0;
    }
}

/* ---- sealing: signed by us, encrypted to the pulling domains ------------ */

static long long smf_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The pulling recipients' own keys, where their domain publishes one (WKD
 * on its outbox origin, sm_wkd): the recipient_key cache, else a lookup
 * whose answer (a key, none, refused, trouble) is cached. A cached key is
 * rechecked in the keyring before each use. Never fails the message: the
 * domain key is always there, so a recipient without a usable key of its
 * own gets the stored copy encrypted to the domain key alone. */
static void smf_rcpt_keys(SMFICTX *ctx, smf_msg *msg)
{
    sm_https_opts opts = { cfg.ca_file, cfg.allow_http, cfg.recipient_key_timeout };
    char status[16], fpr[SM_PGP_FPR_MAX + 1], why[768], why2[512], url[SM_WKD_URL_MAX];
    const smf_domain *d;
    smf_rcpt *r;
    size_t i, j, late = 0;
    long long deadline = smf_now_ms() + cfg.recipient_key_timeout * 1000LL, left;
    int rc;

    for (i = 0; i < msg->nrcpts; i++)
        msg->rcpts[i].keyfpr[0] = '\0';
    if (!cfg.recipient_keys)
        return;
    for (i = 0; i < msg->nrcpts; i++) {
        r = &msg->rcpts[i];
        if (!r->pulling || r->addr == NULL)
            continue;
        /* a recipient named twice is looked up once */
        for (j = 0; j < i; j++)
            if (msg->rcpts[j].addr && strcmp(msg->rcpts[j].addr, r->addr) == 0)
                break;
        if (j < i) {
            memcpy(r->keyfpr, msg->rcpts[j].keyfpr, sizeof r->keyfpr);
            continue;
        }
        if (smf_db_rcpt_key_get(r->addr, status, sizeof status, fpr, sizeof fpr, why,
                                sizeof why) != SMF_DB_OK) {
            sm_warn("%s: from=<%s> to=%s: recipient key cache unreadable, encrypted to the "
                    "domain key only: %s", smf_qid(ctx), msg->sender, r->addr, why);
            continue;
        }
        if (strcmp(status, "found") == 0) {
            if (sm_wkd_key_usable(cfg.gnupg_home, fpr, r->addr, why, sizeof why) == SM_PGP_OK) {
                memcpy(r->keyfpr, fpr, sizeof r->keyfpr);
                continue;
            }
            sm_info("%s: to=%s: cached recipient key %s no longer usable (%s); looking again",
                    smf_qid(ctx), r->addr, fpr, why);
        } else if (status[0] != '\0') {
            continue;                   /* cached: none, refused or error */
        }
        for (j = 0; j < msg->ndomains; j++)
            if (strcmp(msg->domains[j].name, sm_addr_domain(r->addr)) == 0)
                break;
        if (j == msg->ndomains || !msg->domains[j].pulling)
            continue;
        d = &msg->domains[j];
        /* One budget for the whole message, not one per recipient: the MTA
         * waits for DATA only so long (Postfix: milter_command_timeout,
         * 30s), and many recipients at an origin that never answers would
         * otherwise hold the message past it. What is left out is not
         * cached, so a later message looks it up. */
        if ((left = (deadline - smf_now_ms()) / 1000) < 1) {
            late++;
            continue;
        }
        opts.timeout = left;
        rc = sm_wkd_fetch(cfg.gnupg_home, d->outbox, r->addr, &opts, fpr, url, sizeof url, why,
                          sizeof why);
        switch (rc) {
        case SM_WKD_FOUND:
            sm_info("%s: to=%s: recipient key %s from %s", smf_qid(ctx), r->addr, fpr, url);
            memcpy(r->keyfpr, fpr, sizeof r->keyfpr);
            break;
        case SM_WKD_NONE:
            sm_info("%s: to=%s: no recipient key published: %s", smf_qid(ctx), r->addr, why);
            break;
        case SM_WKD_REFUSED:
            sm_warn("%s: to=%s: recipient key refused, encrypted to the domain key only: %s",
                    smf_qid(ctx), r->addr, why);
            break;
        default:
            sm_warn("%s: to=%s: recipient key lookup failed, encrypted to the domain key "
                    "only: %s", smf_qid(ctx), r->addr, why);
            break;
        }
        if (smf_db_rcpt_key_put(r->addr, sm_wkd_status_name(rc),
                                rc == SM_WKD_FOUND ? fpr : NULL, rc == SM_WKD_FOUND ? url : why,
                                why2, sizeof why2) != SMF_DB_OK)
            sm_warn("%s: to=%s: recipient key answer not cached: %s", smf_qid(ctx), r->addr,
                    why2);
    }
    if (late)
        sm_warn("%s: from=<%s>: %zu recipient key lookup%s left out, encrypted to the domain "
                "key only: the lookups of this message took recipient_key_timeout (%lds) "
                "already", smf_qid(ctx), msg->sender, late, late == 1 ? "" : "s",
                cfg.recipient_key_timeout);
}

/* Every pulling domain's key into gnupg_home: sm_keyfetch looks in the
 * keyring and fetches {outbox}/v1/key only when the fingerprint is not
 * there. Returns SMFIS_CONTINUE, or ends the message with 451 4.7.5. */
static sfsistat smf_keys_fetch(SMFICTX *ctx, smf_msg *msg)
{
    const sm_https_opts opts = { cfg.ca_file, cfg.allow_http, cfg.key_timeout };
    char why[768], reply[SM_DOMAIN_MAX + 80];
    const smf_domain *d;
    size_t i;

    for (i = 0; i < msg->ndomains; i++) {
        d = &msg->domains[i];
        if (!d->pulling
            || sm_keyfetch(cfg.gnupg_home, d->outbox, d->fpr, &opts, why, sizeof why) == 0)
            continue;
        snprintf(reply, sizeof reply, "stubmail: cannot get the domain key of %s, try again "
                 "later", d->name);
        return smf_tempfail(ctx, DSN_KEY, reply, "message not stored: no domain key %s of %s: %s",
                            d->fpr, d->name, why);
    }
    smf_rcpt_keys(ctx, msg);
    msg->keys_ready = 1;
    return SMFIS_CONTINUE;
}

/* The stored form: the plaintext spool file, signed with our domain key and
 * encrypted to the key of every pulling domain, streamed by gpg into a
 * second spool file (memory stays flat) that is committed in its place.
 * The plaintext is removed. Returns SMFIS_CONTINUE with msg->sealed
 * committed (its size set), or ends the message with 451 4.3.0. */
static sfsistat smf_seal(SMFICTX *ctx, smf_msg *msg)
{
    char id[SM_ID_LEN + 1], why[SM_PGP_WHY_MAX], why2[SM_PGP_WHY_MAX];
    const char **fprs;
    struct stat st;
    size_t i, j, n = 0, ndom, skipped = 0;
    int in_fd = -1, pgp;
    sfsistat rc = SMFIS_CONTINUE;

    if ((fprs = calloc(msg->ndomains + msg->nrcpts + 1, sizeof *fprs)) == NULL) {
        rc = smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "out of memory");
        goto leave;
    }
    for (i = 0; i < msg->ndomains; i++) {
        if (!msg->domains[i].pulling)
            continue;
        /* domains that share a key (hosted alike) name it once */
        for (j = 0; j < n && strcasecmp(fprs[j], msg->domains[i].fpr) != 0; j++)
            ;
        if (j == n)
            fprs[n++] = msg->domains[i].fpr;
    }
    ndom = n;
    /* then the recipients' own keys (smf_rcpt_keys), as many as gpgme takes */
    for (i = 0; i < msg->nrcpts; i++) {
        if (msg->rcpts[i].keyfpr[0] == '\0')
            continue;
        for (j = 0; j < n && strcasecmp(fprs[j], msg->rcpts[i].keyfpr) != 0; j++)
            ;
        if (j < n)
            continue;
        if (n < SMF_SEAL_KEYS_MAX)
            fprs[n++] = msg->rcpts[i].keyfpr;
        else
            skipped++;
    }
    if (skipped)
        sm_warn("%s: from=<%s>: %zu recipient keys left out: at most %d keys per message",
                smf_qid(ctx), msg->sender, skipped, SMF_SEAL_KEYS_MAX);
    if ((in_fd = open(msg->spool.tmp_path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot read spool file %s back: %s",
                          msg->spool.tmp_path, strerror(errno));
        goto leave;
    }
    if (sm_id_new(id) != 0) {
        rc = smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "no random message id: %s",
                          strerror(errno));
        goto leave;
    }
    msg->sealed_open = 1;               /* from here smf_msg_free removes it */
    if (sm_spool_create(&msg->sealed, cfg.spool_dir, id) != 0) {
        rc = smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot create spool file in %s: %s",
                          cfg.spool_dir, strerror(errno));
        goto leave;
    }
    pgp = sm_pgp_encrypt_sign_fd(cfg.gnupg_home, cfg.domain_key, fprs, in_fd, msg->sealed.fd,
                                 why, sizeof why);
    if (pgp == SM_PGP_REJECT && n > ndom) {
        /* a recipient key went bad since smf_rcpt_keys checked it: the
         * domain keys alone still deliver, so do not hold the mail back */
        sm_warn("%s: from=<%s>: cannot encrypt id %s to the recipient keys (%s); encrypted "
                "to the domain key%s only", smf_qid(ctx), msg->sender, id, why,
                ndom == 1 ? "" : "s");
        fprs[ndom] = NULL;
        n = ndom;
        if (lseek(in_fd, 0, SEEK_SET) != 0 || lseek(msg->sealed.fd, 0, SEEK_SET) != 0
            || ftruncate(msg->sealed.fd, 0) != 0) {
            snprintf(why2, sizeof why2, "%s", strerror(errno));
            rc = smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot rewind spool files of "
                              "message id %s: %s", id, why2);
            goto leave;
        }
        pgp = sm_pgp_encrypt_sign_fd(cfg.gnupg_home, cfg.domain_key, fprs, in_fd,
                                     msg->sealed.fd, why, sizeof why);
    }
    if (pgp != SM_PGP_OK) {
        rc = smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot sign and encrypt message id %s "
                          "(%zu key%s): %s", id, n, n == 1 ? "" : "s", why);
        goto leave;
    }
    if (n > ndom)
        sm_info("%s: id=%s encrypted to %zu domain key%s and %zu recipient key%s",
                smf_qid(ctx), id, ndom, ndom == 1 ? "" : "s", n - ndom, n - ndom == 1 ? "" : "s");
    /* gpg wrote to the descriptor, not through sm_spool_write */
    if (fstat(msg->sealed.fd, &st) != 0) {
        rc = smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot stat spool file %s: %s",
                          msg->sealed.tmp_path, strerror(errno));
        goto leave;
    }
    msg->sealed.size = (long long)st.st_size;
    if (sm_spool_commit(&msg->sealed) != 0) {
        rc = smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot commit spool file %s/%s: %s",
                          cfg.spool_dir, id, strerror(errno));
        goto leave;
    }
    sm_spool_abort(&msg->spool);        /* the plaintext is not kept */
    msg->spool_open = 0;
leave:
    if (in_fd >= 0)
        close(in_fd);
    free(fprs);
    return rc;
}

/* ---- libmilter callbacks ----------------------------------------------- */

static sfsistat smf_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
                              unsigned long f2, unsigned long f3, unsigned long *pf0,
                              unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
    smf_conn *conn = smf_conn_new(ctx);

    if (conn == NULL) {
        sm_err("out of memory for a new connection");
        return SMFIS_REJECT;            /* libmilter drops the connection */
    }
    *pf0 = f0 & SMFIF_DELRCPT;
    conn->can_delrcpt = (*pf0 & SMFIF_DELRCPT) != 0;
    if (!conn->can_delrcpt)
        sm_warn("the MTA does not let filters remove recipients: "
                "no mail will be diverted on this connection");
    /* *pf1 holds the SMFIP_NO* bits for our NULL callbacks; ask only for
     * what the MTA offers. No NR_* bits: every step gets a reply, and no
     * NODATA: xxfi_data is real (a NULL one stalls Postfix on TCP). */
    *pf1 &= f1;
    if (f1 & SMFIP_HDR_LEADSPC) {
        *pf1 |= SMFIP_HDR_LEADSPC;
        conn->leadspc = 1;
    }
    *pf2 = 0;
    *pf3 = 0;
    return SMFIS_CONTINUE;
}

static sfsistat smf_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *hostaddr)
{
    smf_conn *conn = smf_conn_new(ctx);
    const char *daemon;

    if (conn == NULL) {
        sm_err("out of memory for a new connection");
        return SMFIS_TEMPFAIL;
    }
    conn->trusted = smf_netlist_match(&trusted, hostaddr);
    daemon = smfi_getsymval(ctx, "{daemon_name}");
    conn->originating = daemon != NULL && strcmp(daemon, cfg.originating_daemon) == 0;
    if (hostaddr && hostaddr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)hostaddr)->sin_addr, conn->client,
                  sizeof conn->client);
    else if (hostaddr && hostaddr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)hostaddr)->sin6_addr, conn->client,
                  sizeof conn->client);
    sm_debug("connect from %s[%s] daemon=%s%s%s", hostname ? hostname : "?", conn->client,
             daemon ? daemon : "-", conn->originating ? " originating" : "",
             conn->trusted ? " trusted" : "");
    return SMFIS_CONTINUE;
}

static sfsistat smf_envfrom(SMFICTX *ctx, char **argv)
{
    smf_conn *conn = smf_conn_get(ctx);
    const char *auth, *why = NULL, *raw = argv[0];
    char sender[SM_ADDR_MAX + 1];
    size_t len;
    smf_msg *msg;

    smf_msg_free(ctx);                  /* a previous message left over */
    if (conn == NULL)
        return SMFIS_ACCEPT;
    auth = smfi_getsymval(ctx, "{auth_authen}");
    if (!conn->originating && !conn->trusted && !(auth && *auth))
        return SMFIS_ACCEPT;            /* inbound: not ours to divert */

    /* the empty envelope sender (bounces) is never diverted */
    raw += strspn(raw, " \t");
    len = strlen(raw);
    while (len > 0 && (raw[len - 1] == ' ' || raw[len - 1] == '\t'))
        len--;
    if (len == 0 || (len == 2 && raw[0] == '<' && raw[1] == '>'))
        return SMFIS_ACCEPT;
    if (sm_addr_normalize(argv[0], sender, sizeof sender, &why) != 0) {
        sm_info("%s: from=%s: not diverted: sender %s", smf_qid(ctx), argv[0], why);
        return SMFIS_ACCEPT;
    }
    if ((msg = calloc(1, sizeof *msg)) == NULL) {
        sm_err("%s: from=<%s>: out of memory", smf_qid(ctx), sender);
        smfi_setreply(ctx, "451", "4.3.0", "stubmail: out of memory, try again later");
        return SMFIS_TEMPFAIL;
    }
    memcpy(msg->sender, sender, sizeof sender);
    conn->msg = msg;
    return SMFIS_CONTINUE;
}

/* Is domain pulled or pushed? Decided once per message: an earlier
 * recipient's verdict, else sm_discover (the peer row, then _stubmail through
 * dns_cache) appended to msg->domains. Returns SMFIS_CONTINUE with *pulling,
 * or SMFIS_TEMPFAIL after setting this recipient's 451 reply: nothing is
 * decided while DNS or the database cannot answer. */
static sfsistat smf_domain_verdict(SMFICTX *ctx, smf_msg *msg, const char *rcpt,
                                   const char *domain, int *pulling)
{
    char why[768];
    const char *reason;
    sm_peer_info info;
    smf_domain *d, *grown;
    smf_db_status st;
    size_t i, n;

    for (i = 0; i < msg->ndomains; i++) {
        if (strcmp(msg->domains[i].name, domain) == 0) {
            *pulling = msg->domains[i].pulling;
            return SMFIS_CONTINUE;
        }
    }
    if (msg->ndomains == msg->domcap) {
        n = msg->domcap ? 2 * msg->domcap : 4;
        if ((grown = realloc(msg->domains, n * sizeof *grown)) == NULL) {
            sm_err("%s: from=<%s> to=%s: out of memory", smf_qid(ctx), msg->sender, rcpt);
            smf_setreply(ctx, DSN_LOCAL, "stubmail: out of memory, try again later");
            return SMFIS_TEMPFAIL;
        }
        msg->domains = grown;
        msg->domcap = n;
    }

    st = smf_db_discover(cfg.resolver, domain, &info, why, sizeof why);
    if (st == SMF_DB_DNSFAIL) {
        sm_err("%s: from=<%s> to=%s: cannot tell whether %s pulls its mail: %s; "
               "answered 451 %s", smf_qid(ctx), msg->sender, rcpt, domain, why, DSN_DNS);
        /* "b.example: DNS temporary failure: ..." without the repeated name */
        n = strlen(domain);
        reason = strncmp(why, domain, n) == 0 && strncmp(why + n, ": ", 2) == 0 ? why + n + 2 : why;
        smf_setreply(ctx, DSN_DNS, "stubmail: cannot tell whether %s pulls its mail (%s); "
                     "try again later", domain, reason);
        return SMFIS_TEMPFAIL;
    }
    if (st != SMF_DB_OK) {
        sm_err("%s: from=<%s> to=%s: %s; answered 451 %s", smf_qid(ctx), msg->sender, rcpt,
               why, DSN_LOCAL);
        smf_setreply(ctx, DSN_LOCAL, "%s", REPLY_DB);
        return SMFIS_TEMPFAIL;
    }

    d = &msg->domains[msg->ndomains++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", domain);
    d->pulling = info.pulling;
    if (info.pulling && info.fpr[0] == '\0') {
        /* it could never log in to fetch it, nor read it: push instead */
        sm_warn("%s: from=<%s> to=%s: %s pulls its mail (peer table) but no domain key is "
                "known for it (neither peer.fpr nor a _stubmail record: %s); pushed by SMTP",
                smf_qid(ctx), msg->sender, rcpt, domain, why[0] ? why : "none");
        d->pulling = 0;
    } else if (!info.pulling && info.status == SM_DNS_INVALID) {
        sm_warn("%s: from=<%s> to=%s: %s has an invalid _stubmail record (%s); pushed by SMTP",
                smf_qid(ctx), msg->sender, rcpt, domain, why);
    }
    if (d->pulling) {
        memcpy(d->outbox, info.outbox, sizeof d->outbox);
        memcpy(d->fpr, info.fpr, sizeof d->fpr);
        memcpy(d->udp, info.udp, sizeof d->udp);
    }
    sm_debug("%s: %s: %s (%s%s%s)", smf_qid(ctx), domain, d->pulling ? "pulled" : "pushed",
             info.from_peer_table ? "peer table, " : "", sm_dns_status_name(info.status),
             info.fpr[0] ? ", key on record" : "");
    *pulling = d->pulling;
    return SMFIS_CONTINUE;
}

static sfsistat smf_envrcpt(SMFICTX *ctx, char **argv)
{
    smf_conn *conn = smf_conn_get(ctx);
    smf_msg *msg = smf_msg_get(ctx);
    char addr[SM_ADDR_MAX + 1];
    const char *bad = NULL;
    smf_rcpt *grown, *r;
    int pulling = 0;
    sfsistat rc;

    if (msg == NULL)
        return SMFIS_CONTINUE;
    if (msg->nrcpts == msg->cap) {
        size_t cap = msg->cap ? 2 * msg->cap : 8;
        if ((grown = realloc(msg->rcpts, cap * sizeof *grown)) == NULL)
            goto oom;
        msg->rcpts = grown;
        msg->cap = cap;
    }
    r = &msg->rcpts[msg->nrcpts];
    memset(r, 0, sizeof *r);
    if (sm_addr_normalize(argv[0], addr, sizeof addr, &bad) != 0)
        /* not a plain address (say <postmaster>): pushed, never pulled */
        sm_debug("%s: to=%s: not divertible: %s", smf_qid(ctx), argv[0], bad);
    if ((r->raw = strdup(argv[0])) == NULL
        || (bad == NULL && (r->addr = strdup(addr)) == NULL)) {
        free(r->raw);
        goto oom;
    }
    /* memory first: a domain in msg->domains always has its recipient */
    if (bad == NULL && conn->can_delrcpt
        && (rc = smf_domain_verdict(ctx, msg, argv[0], sm_addr_domain(addr), &pulling))
           != SMFIS_CONTINUE) {
        free(r->raw);
        free(r->addr);
        return rc;                      /* this recipient only */
    }
    r->pulling = bad == NULL && pulling;
    msg->nrcpts++;
    if (r->pulling)
        msg->npulling++;
    return SMFIS_CONTINUE;
oom:
    sm_err("%s: from=<%s> to=%s: out of memory", smf_qid(ctx), msg->sender, argv[0]);
    smf_setreply(ctx, DSN_LOCAL, "stubmail: out of memory, try again later");
    return SMFIS_TEMPFAIL;
}

static sfsistat smf_data(SMFICTX *ctx)
{
    smf_msg *msg = smf_msg_get(ctx);

    if (msg == NULL)
        return SMFIS_CONTINUE;
    if (msg->npulling == 0) {
        /* push only: learn now and leave the rest of the message alone */
        smf_learn(ctx, msg);
        smf_msg_free(ctx);
        return SMFIS_ACCEPT;
    }
    if (smf_spool_open(msg) != 0)
        return smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot create spool file in %s: %s",
                            cfg.spool_dir, strerror(errno));
    /* the keys now, before the body comes: a failure costs the client no transfer */
    return smf_keys_fetch(ctx, msg);
}

static sfsistat smf_header(SMFICTX *ctx, char *name, char *value)
{
    smf_conn *conn = smf_conn_get(ctx);
    smf_msg *msg = smf_msg_get(ctx);

    if (msg == NULL || msg->npulling == 0)
        return SMFIS_CONTINUE;
    if (smf_spool_open(msg) != 0 || smf_out_header(msg, conn->leadspc, name, value) != 0)
        return smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot write spool file in %s: %s",
                            cfg.spool_dir, strerror(errno));
    return SMFIS_CONTINUE;
}

static sfsistat smf_eoh(SMFICTX *ctx)
{
    smf_msg *msg = smf_msg_get(ctx);

    if (msg == NULL || msg->npulling == 0)
        return SMFIS_CONTINUE;
    msg->saw_eoh = 1;
    if (smf_spool_open(msg) != 0 || smf_out(msg, "\r\n", 2) != 0)
        return smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot write spool file in %s: %s",
                            cfg.spool_dir, strerror(errno));
    return SMFIS_CONTINUE;
}

static sfsistat smf_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
    smf_msg *msg = smf_msg_get(ctx);

    if (msg == NULL || msg->npulling == 0)
        return SMFIS_CONTINUE;
    if (smf_spool_open(msg) != 0 || smf_out(msg, chunk, len) != 0)
        return smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot write spool file in %s: %s",
                            cfg.spool_dir, strerror(errno));
    return SMFIS_CONTINUE;
}

/* After the commit: a stub to each pulling domain that publishes udp=, so
 * that it polls us now (smf_stub_send); outbox is what was stored. */
static void smf_stubs(SMFICTX *ctx, const smf_msg *msg, const smf_db_rcpt *outbox, size_t n)
{
    const smf_domain *d;
    const char **to;
    size_t i, j, k, nto;

    if (n == 0)
        return;
    if ((to = calloc(n, sizeof *to)) == NULL) {
        sm_info("%s: no stubs sent: out of memory", smf_qid(ctx));
        return;
    }
    for (i = 0; i < msg->ndomains; i++) {
        d = &msg->domains[i];
        if (!d->pulling)
            continue;
        if (d->udp[0] == '\0') {
            sm_debug("%s: no stub to %s: it publishes no udp=", smf_qid(ctx), d->name);
            continue;
        }
        for (nto = 0, j = 0; j < n; j++) {
            if (strcmp(outbox[j].domain, d->name) != 0)
                continue;
            /* the parser refuses a recipient named twice */
            for (k = 0; k < nto && strcmp(to[k], outbox[j].addr) != 0; k++)
                ;
            if (k == nto)
                to[nto++] = outbox[j].addr;
        }
        if (nto)
            smf_stub_send(smf_qid(ctx), msg->sender, d->name, d->udp, to, nto);
    }
    free(to);
}

static sfsistat smf_eom(SMFICTX *ctx)
{
    smf_msg *msg = smf_msg_get(ctx);
    smf_db_rcpt *outbox = NULL, *contacts = NULL;
    size_t noutbox = 0, ncontacts = 0, i;
    char why[512], why2[512], list[1024];
    sm_spool_file *body = &msg->sealed;
    smf_db_status st;
    sfsistat rc;

    if (msg == NULL)
        return SMFIS_CONTINUE;
    if (msg->npulling == 0) {
        smf_learn(ctx, msg);
        smf_msg_free(ctx);
        return SMFIS_CONTINUE;
    }

    /* 1. the body, durable: its sealed form */
    if (smf_spool_open(msg) != 0 || (!msg->saw_eoh && smf_out(msg, "\r\n", 2) != 0)
        || smf_flush(msg) != 0)
        return smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot write spool file in %s: %s",
                            cfg.spool_dir, strerror(errno));
    /* an MTA that skipped the DATA step gets its keys fetched here */
    if (!msg->keys_ready && (rc = smf_keys_fetch(ctx, msg)) != SMFIS_CONTINUE)
        return rc;
    if ((rc = smf_seal(ctx, msg)) != SMFIS_CONTINUE)
        return rc;

    /* 2. the rows, one transaction */
    outbox = smf_rcpt_list(msg, 1, &noutbox);
    contacts = smf_rcpt_list(msg, 0, &ncontacts);
    if (outbox == NULL || contacts == NULL) {
        free(outbox);
        free(contacts);
        return smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "out of memory");
    }
    st = smf_db_store(body->name, msg->sender, body->size, body->name, "openpgp", outbox,
                      noutbox, contacts, ncontacts, why, sizeof why);
    free(contacts);
    if (st == SMF_DB_UNKNOWN) {
        /* maybe committed: keep the body its row may name (the janitor
         * removes it if not); the retry may store a second copy */
        free(outbox);
        msg->sealed_open = 0;
        return smf_tempfail(ctx, DSN_LOCAL, REPLY_DB, "message id %s may or may not be stored: %s",
                            body->name, why);
    }
    if (st != SMF_DB_OK) {
        free(outbox);
        return smf_tempfail(ctx, DSN_LOCAL, REPLY_DB, "message not stored: %s", why);
    }

    /* 3. only now: take the pulling recipients off the push path */
    rc = SMFIS_DISCARD;
    if (msg->npulling < msg->nrcpts) {
        rc = SMFIS_CONTINUE;
        for (i = 0; i < msg->nrcpts; i++) {
            if (!msg->rcpts[i].pulling || smfi_delrcpt(ctx, msg->rcpts[i].raw) == MI_SUCCESS)
                continue;
            if (smf_db_unstore(body->name, why2, sizeof why2) != SMF_DB_OK) {
                sm_err("%s: message id %s stays in the outbox and will be stored again "
                       "on retry: %s", smf_qid(ctx), body->name, why2);
                msg->sealed_open = 0;   /* its row still names the body */
            }
            free(outbox);
            return smf_tempfail(ctx, DSN_LOCAL, REPLY_STORE, "cannot remove recipient %s",
                                msg->rcpts[i].raw);
        }
    }
    smf_pulling_text(msg, list, sizeof list);
    sm_info("%s: diverted id=%s from=<%s> to=%s (%zu of %zu recipients) size=%lld format=%s%s",
            smf_qid(ctx), body->name, msg->sender, list, msg->npulling, msg->nrcpts,
            body->size, "openpgp",
            rc == SMFIS_DISCARD ? ", discarded from the push path" : "");
    msg->sealed_open = 0;               /* committed: the outbox owns it now */
    /* 4. the hint: recipient domains that publish udp= poll us now */
    smf_stubs(ctx, msg, outbox, noutbox);
    free(outbox);
    smf_msg_free(ctx);
    return rc;
}

static sfsistat smf_abort(SMFICTX *ctx)
{
    smf_msg_free(ctx);
    return SMFIS_CONTINUE;
}

static sfsistat smf_close(SMFICTX *ctx)
{
    smf_conn_free(ctx);
    return SMFIS_CONTINUE;
}

static struct smfiDesc smf_desc = {
    SMF_NAME,
    SMFI_VERSION,
    SMFIF_DELRCPT,
    smf_connect,
    NULL,                       /* helo */
    smf_envfrom,
    smf_envrcpt,
    smf_header,
    smf_eoh,
    smf_body,
    smf_eom,
    smf_abort,
    smf_close,
    NULL,                       /* unknown */
    smf_data,
    smf_negotiate
};

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

    sm_log_open(SMF_NAME, foreground);
    umask(007);                 /* the MTA connects through the socket's group */
    if (smfi_setconn(cfg.socket) != MI_SUCCESS || smfi_register(smf_desc) != MI_SUCCESS) {
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
    if (smf_db_init(cfg.database, cfg.db_connections) != 0) {
        sm_err("out of memory");
        goto leave;
    }
    sm_info("listening on %s; spool %s; %ld database connections; outbound = "
            "{daemon_name} %s, authenticated, or from %s; DNS from %s", cfg.socket,
            cfg.spool_dir, cfg.db_connections, cfg.originating_daemon, cfg.trusted_networks,
            cfg.resolver ? cfg.resolver : "/etc/resolv.conf");
    sm_info("stored mail is signed with domain key %s in %s and encrypted to the "
            "recipient domains' keys%s", cfg.domain_key, cfg.gnupg_home,
            cfg.recipient_keys ? " and to recipients' own keys published by WKD" : "");
    rc = smfi_main() == MI_SUCCESS ? 0 : 1;
    sm_info("stopped%s", rc ? " after a libmilter error" : "");
leave:
    smf_db_shutdown();                  /* both harmless when not set up */
    curl_global_cleanup();
    smf_netlist_free(&trusted);
    sm_conf_free(smf_keys);
    return rc;
}
