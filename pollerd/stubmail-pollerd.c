/*++
 * NAME
 *	stubmail-pollerd 8
 * SUMMARY
 *	pull waiting mail from remote stubmail outboxes
 * SYNOPSIS
 *	stubmail-pollerd -c FILE [-f] [-1] [-n] [-d]
 * DESCRIPTION
 *	Every `interval`, stubmail-pollerd reads the pairs (remote sender or
 *	*@domain, local recipient) of the local users' address books from
 *	PostgreSQL, groups them by remote domain, and for every domain that
 *	has an outbox (peer row, else its _stubmail DNS record): logs in with
 *	our OpenPGP domain key for a bearer token, polls the outbox (POST
 *	/v1/poll, batches of batch_max pairs), fetches each listed message
 *	into an unlinked file in
 *	spool_dir, decrypts and verifies it against the sender domain's key,
 *	hands it to the local MTA by SMTP with the original envelope, an
 *	Authentication-Results and a Received: trace header, records the
 *	delivery in table received, and acks it to the outbox; a message that
 *	does not verify is quarantined, recorded and acked as rejected.
 *	docs/PROTOCOL.md is the wire contract.
 *
 *	With udp_listen set it also listens for UDP stubs (pd_stub.c): a
 *	stub whose sender a local address book holds makes it poll that
 *	sender's domain now, in a cycle of that domain only, coalesced and
 *	rate-limited; `intro list|accept|drop` manages the introductions
 *	that stubs from unknown senders leave when introductions = yes.
 *
 *	All transfers of all domains run in one libcurl multi handle; up to
 *	`concurrency` domains are worked on at once, each one transfer at a
 *	time. State lives in PostgreSQL only: a stop or crash at any point
 *	loses nothing and delivers nothing twice (a delivery recorded but not
 *	acked is acked at the next cycle).
 *
 *	-c FILE	configuration file (keys: see the table below, -h)
 *	-f	stay in the foreground, log to stderr
 *	-1	run one full cycle, then exit (1 if any domain failed)
 *	-n	check the configuration and exit
 *	-d	debug logging (protocol lines, never credentials or bodies)
 *
 *	SIGUSR1 starts a cycle now. SIGTERM or SIGINT stop: transfers are
 *	aborted except SMTP deliveries in progress, which are allowed to end
 *	(and recorded) so that no accepted message is left unrecorded; a
 *	second signal aborts those too.
 * DIAGNOSTICS
 *	One log line per message outcome: domain, id, from, to, size, and
 *	delivered/acked/deferred/failed with the reason. Configuration errors
 *	exit EX_CONFIG, usage errors EX_USAGE.
 *--*/
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>
#include <ctype.h>

#include "sm_conf.h"
#include "sm_log.h"
#include "pd.h"

#define PD_KEYFETCH_TIMEOUT 20L     /* seconds the loop may block on a key fetch */

static pd_ctx ctx;

/* The one key table: defaults, and the text of -h and the man page. */
static const sm_conf_key keys[] = {
    { "domain", SM_CONF_STRING, &ctx.conf.domain, NULL,
      "our own domain: who logs in (required)" },
    { "database", SM_CONF_STRING, &ctx.conf.database, NULL,
      "libpq conninfo of the stubmail database (required)" },
    { "deliver_to", SM_CONF_STRING, &ctx.conf.deliver_to, "smtp://127.0.0.1:10026",
      "local MTA listener without the milter (smtp:// or smtps://)" },
    { "interval", SM_CONF_SECONDS, &ctx.conf.interval, "60s",
      "time between poll cycles" },
    { "concurrency", SM_CONF_INT, &ctx.conf.concurrency, "4",
      "remote domains worked on at once" },
    { "timeout", SM_CONF_SECONDS, &ctx.conf.timeout, "60s",
      "a connect or a transfer stalled longer fails (retried next cycle)" },
    { "batch_max", SM_CONF_INT, &ctx.conf.batch_max, "1000",
      "pairs per poll request (more: several requests)" },
    { "spool_dir", SM_CONF_STRING, &ctx.conf.spool_dir, "/var/spool/stubmail-pollerd",
      "where fetched bodies stay until delivered (absolute path)" },
    { "resolver", SM_CONF_STRING, &ctx.conf.resolver, NULL,
      "DNS server for _stubmail records, IP:PORT (default: the system's)" },
    { "gnupg_home", SM_CONF_STRING, &ctx.conf.gnupg_home, NULL,
      "GnuPG home with our domain key (required)" },
    { "domain_key", SM_CONF_STRING, &ctx.conf.domain_key, NULL,
      "fingerprint of our domain key (required)" },
    { "ca_file", SM_CONF_STRING, &ctx.conf.ca_file, NULL,
      "CA certificates for outbox HTTPS (default: the system's)" },
    { "allow_http", SM_CONF_BOOL, &ctx.conf.allow_http, "no",
      "accept http:// outboxes at loopback addresses" },
    { "quarantine_dir", SM_CONF_STRING, &ctx.conf.quarantine_dir,
      "/var/spool/stubmail-pollerd/quarantine",
      "where messages that do not verify are kept" },
    { "udp_listen", SM_CONF_STRING, &ctx.conf.udp_listen, NULL,
      "IP:PORT for UDP stubs (the udp= we publish); unset: off" },
    { "stub_interval", SM_CONF_SECONDS, &ctx.conf.stub_interval, "5s",
      "stubs make at most one poll of a domain this often" },
    { "stub_rate", SM_CONF_INT, &ctx.conf.stub_rate, "10",
      "stub-made polls per second at most, all domains together" },
    { "introductions", SM_CONF_BOOL, &ctx.conf.introductions, "no",
      "record stubs from senders in no address book (first contact)" },
    { "introductions_max", SM_CONF_INT, &ctx.conf.introductions_max, "100",
      "introductions kept per recipient" },
    { "udp_poll", SM_CONF_BOOL, &ctx.conf.udp_poll, "yes",
      "ask an outbox's UDP responder before an HTTP poll (when its login names one)" },
    { "udp_timeout", SM_CONF_SECONDS, &ctx.conf.udp_timeout, "1s",
      "wait this long for the UDP answer, then poll by HTTP" },
    { NULL, 0, NULL, NULL, NULL }
};

static volatile sig_atomic_t got_term, got_usr1;
static int sig_pipe[2] = { -1, -1 };

static void usage(FILE *fp)
{
    const sm_conf_key *k;

    fprintf(fp, "usage: stubmail-pollerd -c FILE [-f] [-1] [-n] [-d]\n"
            "       stubmail-pollerd -c FILE intro list [RECIPIENT]\n"
            "       stubmail-pollerd -c FILE intro accept|drop RECIPIENT SENDER\n"
            "  -c FILE  configuration file\n"
            "  -f       foreground, log to stderr\n"
            "  -1       one cycle, then exit (non-zero if a domain failed)\n"
            "  -n       check the configuration and exit\n"
            "  -d       debug logging\n"
            "configuration keys:\n");
    for (k = keys; k->name; k++)
        fprintf(fp, "  %-14s %-28s %s\n", k->name, k->dflt ? k->dflt : "", k->help);
}

/* Checks beyond syntax; builds conf.smtp_url (deliver_to with our domain as
 * the EHLO name when it names none). */
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

static int check_conf(pd_conf *c, char *err, size_t errlen)
{
    CURLU *u = NULL;
    char *scheme = NULL, *host = NULL, *path = NULL, *url = NULL, *p;
    int rc = -1;

    if (sm_conf_require(keys, "domain", err, errlen) != 0
        || sm_conf_require(keys, "database", err, errlen) != 0)
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
    if (c->concurrency < 1 || c->concurrency > 1000) {
        snprintf(err, errlen, "concurrency: %ld is not within 1..1000", c->concurrency);
        return -1;
    }
    if (c->batch_max < 1) {
        snprintf(err, errlen, "batch_max must be at least 1");
        return -1;
    }
    if (pd_stub_check_conf(c, err, errlen) != 0)
        return -1;
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
static int can_sign(const pd_conf *c)
{
    char why[SM_PGP_WHY_MAX];

    if (sm_pgp_probe_sign(c->gnupg_home, c->domain_key, why, sizeof(why)) == SM_PGP_OK)
        return 0;
    sm_err("domain_key %s in gnupg_home %s cannot sign: %s", c->domain_key, c->gnupg_home, why);
    return -1;
}

static void on_signal(int sig)
{
    int e = errno;

    if (sig == SIGUSR1)
        got_usr1 = 1;
    else
        got_term++;
    if (write(sig_pipe[1], "s", 1) < 0) {
        /* full pipe: a wakeup is pending anyway */
    }
    errno = e;
}

static int setup_signals(void)
{
    struct sigaction sa;
    int i;

    if (pipe(sig_pipe) != 0)
        return -1;
    for (i = 0; i < 2; i++) {
        fcntl(sig_pipe[i], F_SETFL, fcntl(sig_pipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_signal;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0
        || sigaction(SIGUSR1, &sa, NULL) != 0)
        return -1;
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    return 0;
}

/* ---- the cycle -------------------------------------------------------- */

static long long cycle_t0;
static int cycle_db_failed;

static void free_domains(void)
{
    pd_domain *d, *n;

    for (d = ctx.domains; d; d = n) {
        n = d->next;
        pd_domain_free(d);
    }
    ctx.domains = ctx.queue = NULL;
}

/* only: the domains UDP stubs asked for (pd_stub_due; taken over), or NULL
 * for a full cycle of every domain. */
static void cycle_start(char *only)
{
    pd_domain *d;

    ctx.only = only;
    if (!only)
        pd_stub_cycle_all(&ctx);
    ctx.cycle_running = 1;
    ctx.mta_down = 0;
    ctx.n_domains = ctx.n_failed_domains = 0;
    ctx.n_delivered = ctx.n_acked = ctx.n_failed = ctx.n_quarantined = 0;
    cycle_t0 = pd_now_ms();
    cycle_db_failed = 0;

    if (pd_db_connect(&ctx) != 0) {
        sm_err("cycle skipped: database unavailable; retry in %lds", ctx.conf.interval);
        cycle_db_failed = 1;
        return;
    }
    if (ctx.unrecorded && pd_db_flush_unrecorded(&ctx) != 0)
        sm_warn("deliveries still not recorded in the database; remembered in memory");
    if (pd_db_load(&ctx) != 0) {
        sm_err("cycle skipped: cannot read the address books; retry in %lds",
               ctx.conf.interval);
        cycle_db_failed = 1;
        free_domains();
        return;
    }
    for (d = ctx.domains; d; d = d->next)
        ctx.n_domains++;
    ctx.queue = ctx.domains;
    sm_debug("%s: %u domains", ctx.only ? "stub cycle" : "cycle", ctx.n_domains);
}

/* Start queued domains while there is room. */
static void pump(void)
{
    pd_domain *d;

    while (!ctx.stopping && ctx.queue && ctx.active < ctx.conf.concurrency) {
        d = ctx.queue;
        ctx.queue = d->next;
        pd_domain_begin(d);
    }
}

/* 1 if the cycle had failures. */
static int cycle_end(void)
{
    double secs = (double)(pd_now_ms() - cycle_t0) / 1000.0;
    int failed = cycle_db_failed || ctx.n_failed_domains > 0 || ctx.stopping;
    int prio = (ctx.n_delivered || ctx.n_acked || ctx.n_failed || ctx.n_failed_domains
                || ctx.n_quarantined) ? LOG_INFO : LOG_DEBUG;

    if (!cycle_db_failed)
        sm_log(prio, "%s%s: %u domains (%u failed), %u delivered, %u quarantined, "
               "%u acked, %u failed, %.1fs", ctx.only ? "stub cycle" : "cycle",
               ctx.stopping ? " stopped" : "", ctx.n_domains,
               ctx.n_failed_domains, ctx.n_delivered, ctx.n_quarantined, ctx.n_acked,
               ctx.n_failed, secs);
    pd_udp_cycle_end(&ctx);
    free_domains();
    free(ctx.only);
    ctx.only = NULL;
    if (ctx.unrecorded && ctx.db && pd_db_flush_unrecorded(&ctx) != 0)
        sm_warn("deliveries still not recorded in the database; remembered in memory");
    ctx.cycle_running = 0;
    return failed;
}

static void each_domain(void (*fn)(pd_domain *))
{
    pd_domain *d;

    for (d = ctx.domains; d; d = d->next)
        fn(d);
}

/* Start what waited for a Retry-After; returns the next time one is due
 * (0: none waits). */
static long long wake_domains(void)
{
    long long now = pd_now_ms(), next = 0, t;
    pd_domain *d;

    for (d = ctx.domains; d; d = d->next)
        if ((t = pd_domain_wake(d, now)) && (!next || t < next))
            next = t;
    return next;
}

static int run(int once)
{
    struct curl_waitfd wfd[6];      /* the signal pipe, UDP stubs, UDP poll, ... */
    int ufd[2];
    size_t i, nufd;
    unsigned nwfd = 0;
    struct CURLMsg *m;
    long long next = pd_now_ms(), t, wake;
    int handled_term = 0, running, left, poll_again = 0, rc = 0, failed, partial;
    char drain[64], *only;
    pd_xfer *x;
    int timeout;

    memset(wfd, 0, sizeof(wfd));
    wfd[nwfd].fd = sig_pipe[0];
    wfd[nwfd++].events = CURL_WAIT_POLLIN;
    if (pd_stub_fd(&ctx) >= 0) {
        wfd[nwfd].fd = pd_stub_fd(&ctx);
        wfd[nwfd++].events = CURL_WAIT_POLLIN;
    }
    nufd = pd_udp_fds(&ctx, ufd, 2);
    for (i = 0; i < nufd; i++) {
        wfd[nwfd].fd = ufd[i];
        wfd[nwfd++].events = CURL_WAIT_POLLIN;
    }

    for (;;) {
        while (read(sig_pipe[0], drain, sizeof(drain)) > 0)
            ;
        if (got_term > handled_term) {
            handled_term = got_term;
            if (!ctx.stopping) {
                sm_info("stopping: deliveries in progress may finish");
                ctx.stopping = 1;
                each_domain(pd_domain_stop);
            } else {
                sm_warn("second signal: aborting every transfer");
                each_domain(pd_domain_abort);
            }
        }
        if (got_usr1) {
            got_usr1 = 0;
            sm_info("SIGUSR1: polling now");
            if (ctx.cycle_running)
                poll_again = 1;
            else
                next = pd_now_ms();
        }
        if (ctx.stopping && !ctx.cycle_running)
            break;
        pd_stub_read(&ctx);
        pd_udp_read(&ctx);
        if (!ctx.cycle_running && !ctx.stopping && pd_now_ms() >= next)
            cycle_start(NULL);
        else if (!ctx.cycle_running && !ctx.stopping
                 && (only = pd_stub_due(&ctx, pd_now_ms())))
            cycle_start(only);
        if (ctx.cycle_running)
            pump();
        wake = ctx.cycle_running ? wake_domains() : 0;

        curl_multi_perform(ctx.multi, &running);
        while ((m = curl_multi_info_read(ctx.multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            if (x)
                pd_domain_xfer_done(x, m->data.result);
        }
        if (ctx.cycle_running)
            pump();

        if (ctx.cycle_running && ctx.active == 0 && (!ctx.queue || ctx.stopping)) {
            partial = ctx.only != NULL;
            failed = cycle_end();
            if (once) {
                rc = failed ? 1 : 0;
                break;
            }
            if (ctx.stopping)
                break;
            /* a stub cycle leaves the schedule of full cycles alone */
            if (poll_again)
                next = pd_now_ms();
            else if (!partial)
                next = pd_now_ms() + ctx.conf.interval * 1000LL;
            poll_again = 0;
            continue;
        }

        /* curl_multi_poll also wakes for libcurl's own timers */
        if (ctx.cycle_running) {
            t = wake ? wake - pd_now_ms() : 1000;
            timeout = t < 0 ? 0 : t > 1000 ? 1000 : (int)t;
        } else {
            t = next - pd_now_ms();
            if ((wake = pd_stub_next_ms(&ctx)) && wake - pd_now_ms() < t)
                t = wake - pd_now_ms();
            timeout = t < 0 ? 0 : t > 60000 ? 60000 : (int)t;
        }
        curl_multi_poll(ctx.multi, wfd, nwfd, timeout, NULL);
    }
    return rc;
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    int foreground = 0, once = 0, check_only = 0, debug = 0;
    char err[512];
    int ch, rc = EX_OK;
    pd_unrecorded *u;

    while ((ch = getopt(argc, argv, "c:f1ndh")) != -1) {
        switch (ch) {
        case 'c': conf_path = optarg; break;
        case 'f': foreground = 1; break;
        case '1': once = 1; break;
        case 'n': check_only = 1; break;
        case 'd': debug = 1; break;
        case 'h': usage(stdout); return EX_OK;
        default: usage(stderr); return EX_USAGE;
        }
    }
    if (!conf_path || (optind != argc && strcmp(argv[optind], "intro") != 0)) {
        usage(stderr);
        return EX_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "stubmail-pollerd: cannot initialise libcurl\n");
        return EX_SOFTWARE;
    }
    if (sm_conf_load(conf_path, keys, err, sizeof(err)) != 0
        || check_conf(&ctx.conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "stubmail-pollerd: %s: %s\n", conf_path, err);
        rc = EX_CONFIG;
        goto leave;
    }
    if (check_only) {
        printf("stubmail-pollerd: %s: configuration OK\n", conf_path);
        goto leave;
    }
    if (optind != argc) {
        sm_log_open("stubmail-pollerd", 1);
        rc = pd_intro_main(&ctx, argc - optind, argv + optind);
        goto leave;
    }

    /* -1 is interactive by nature: it stays in the foreground too */
    if (!foreground && !once && daemon(0, 0) != 0) {
        fprintf(stderr, "stubmail-pollerd: daemon: %s\n", strerror(errno));
        rc = EX_OSERR;
        goto leave;
    }
    sm_log_open("stubmail-pollerd", foreground);
    sm_log_set_debug(debug);
    ctx.debug = debug;
    if (setup_signals() != 0) {
        sm_syserr("cannot set up signals");
        rc = EX_OSERR;
        goto leave;
    }
    if (!(ctx.multi = curl_multi_init())) {
        sm_err("cannot create the libcurl multi handle");
        rc = EX_OSERR;
        goto leave;
    }
    if (can_sign(&ctx.conf) != 0) {
        rc = EX_CONFIG;
        goto leave;
    }
    if (!once && pd_stub_open(&ctx, err, sizeof(err)) != 0) {
        sm_err("%s", err);
        rc = EX_OSERR;
        goto leave;
    }
    if (pd_udp_open(&ctx) != 0) {
        rc = EX_OSERR;
        goto leave;
    }
    sm_info("starting: domain %s, deliver to %s, every %lds, %ld domains at once, "
            "login with domain key %s%s", ctx.conf.domain, ctx.conf.deliver_to,
            ctx.conf.interval, ctx.conf.concurrency, ctx.conf.domain_key,
            once ? ", one cycle" : "");
    rc = run(once);
    sm_info("stopped");

leave:
    free_domains();
    while ((u = ctx.unrecorded)) {
        sm_err("%s %s: to=<%s> from=<%s>: delivered but never recorded in table received%s",
               u->domain, u->id, u->to, u->from, u->acked
               ? " (acked, so never listed again)"
               : " and not acked: record it by hand, or it is delivered again");
        ctx.unrecorded = u->next;
        free(u);
        if (rc == EX_OK)
            rc = 1;
    }
    if (ctx.multi)
        curl_multi_cleanup(ctx.multi);
    pd_stub_close(&ctx);
    pd_udp_close(&ctx);
    free(ctx.only);
    pd_db_close(&ctx);
    pd_sessions_free(&ctx);
    free(ctx.conf.smtp_url);
    free(ctx.conf.pubkey);
    sm_conf_free(keys);
    curl_global_cleanup();
    if (sig_pipe[0] >= 0) {
        close(sig_pipe[0]);
        close(sig_pipe[1]);
    }
    return rc;
}
