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
 *	our OpenPGP domain key for a bearer token (kept from cycle to cycle
 *	until it nears expiry), acks what an earlier run delivered but could
 *	not ack, and brings the outbox's subscription in step with the
 *	address book (POST /v1/subscription with only what changed, in
 *	chunks of batch_max pairs). Then it polls: when the outbox's login
 *	named a UDP responder and the last poll listed nothing, one UDP
 *	datagram asks first whether anything changed ("idle" ends the
 *	domain's cycle); otherwise GET /v1/poll?version=V, conditional on the
 *	last answer's ETag, so that an idle outbox answers 304. Only an
 *	outbox without subscriptions (404 no_such_endpoint) is polled the old
 *	way, POST /v1/poll with batches of batch_max pairs.
 *
 *	Each listed message is fetched into an unlinked file in spool_dir,
 *	decrypted and verified against the sender domain's key, handed to the
 *	local MTA by SMTP with the original envelope, an
 *	Authentication-Results and a Received: trace header, recorded in
 *	table received, and acked to the outbox; a message that does not
 *	verify is quarantined, recorded and acked as rejected.
 *	docs/PROTOCOL.md is the wire contract.
 *
 *	With udp_listen set it also listens for UDP stubs (pd_stub.c): a
 *	stub whose sender a local address book holds makes it poll that
 *	sender's domain now, in a cycle of that domain only, coalesced and
 *	rate-limited; stubs from unknown senders leave introductions when
 *	introductions = yes (`stubmailctl intro list|accept|drop` manages
 *	them). With intro_digest set, each user with new introductions is
 *	mailed a digest of them with accept / decline links
 *	(pd_digest.c), at most one per interval, through deliver_to.
 *
 *	With metrics_listen set it answers GET /metrics there
 *	(pd_metrics_http.c, libmicrohttpd run by this loop, no thread).
 *
 *	All transfers of all domains run in one libcurl multi handle; up to
 *	`concurrency` domains are worked on at once, each one transfer at a
 *	time. State lives in PostgreSQL only: a stop or crash at any point
 *	loses nothing and delivers nothing twice (a delivery recorded but not
 *	acked is acked at the next cycle).
 *
 *	This file is the process: options, signals, the event loop. The
 *	rest is libpollerd (pd.h lists its files).
 *
 *	-c FILE	configuration file (keys: pd_conf.c, -h)
 *	-f	stay in the foreground, log to stderr
 *	-1	run one full cycle, then exit (1 if any domain failed)
 *	-n	check the configuration and exit
 *	-d	debug logging (protocol lines, never credentials or bodies)
 *	-K	(not in -h) print the key table, "key<TAB>default" lines, for
 *		tests/docs/t-pollerd-keys
 *
 *	SIGHUP reloads the configuration once nothing is in flight, after a
 *	check (pd_reload.c). SIGUSR1 starts a cycle now. SIGTERM or SIGINT stop: transfers are
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
#include <strings.h>
#include <sysexits.h>
#include <unistd.h>

#include "sm_log.h"
#include "pd.h"

#define PD_WAIT_CYCLE_MS 1000       /* longest sleep while a cycle runs */
#define PD_WAIT_IDLE_MS 60000       /* longest sleep between cycles */

static pd_ctx ctx;

static void usage(FILE *fp)
{
    fprintf(fp, "usage: stubmail-pollerd -c FILE [-f] [-1] [-n] [-d]\n"
            "  -c FILE  configuration file\n"
            "  -f       foreground, log to stderr\n"
            "  -1       one cycle, then exit (non-zero if a domain failed)\n"
            "  -n       check the configuration and exit\n"
            "  -d       debug logging\n"
            "configuration keys:\n");
    pd_conf_print_keys(fp);
}

/* ---- signals ---------------------------------------------------------- */

static volatile sig_atomic_t got_term, got_usr1, got_hup;
static const char *conf_path;       /* -c, read again at SIGHUP */
static int sig_pipe[2] = { -1, -1 };

static void on_signal(int sig)
{
    int e = errno;

    if (sig == SIGUSR1)
        got_usr1 = 1;
    else if (sig == SIGHUP)
        got_hup = 1;
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
        || sigaction(SIGUSR1, &sa, NULL) != 0 || sigaction(SIGHUP, &sa, NULL) != 0)
        return -1;
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    return 0;
}

/* ---- the event loop --------------------------------------------------- */

#define PD_RUN_RELOAD 2             /* run(): start again (SIGHUP) */

/* What the loop keeps from one turn to the next. */
static struct {
    long long next_cycle;       /* when the next full cycle is due (pd_now_ms) */
    int handled_term;           /* SIGTERMs acted on */
    int poll_again;             /* SIGUSR1 during a cycle: another one right after */
    int reload;                 /* SIGHUP: start again once nothing is in flight */
    int metrics_slot;           /* the metrics listener's index in the wait fds, -1: none */
} loop;

/* What the loop waits on besides libcurl's own sockets: the signal pipe,
 * the UDP stub socket, the UDP poll sockets, the metrics listener's epoll
 * fd. Their number (at most PD_WAIT_FDS). */
#define PD_WAIT_FDS 6
static unsigned wait_fds(struct curl_waitfd *wfd)
{
    int ufd[2];
    size_t i, nufd;
    unsigned n = 0;

    loop.metrics_slot = -1;
    if (pd_metrics_http_fd(&ctx) >= 0) {
        loop.metrics_slot = (int)n;
        wfd[n].fd = pd_metrics_http_fd(&ctx);
        wfd[n++].events = CURL_WAIT_POLLIN;
    }
    wfd[n].fd = sig_pipe[0];
    wfd[n++].events = CURL_WAIT_POLLIN;
    if (pd_stub_fd(&ctx) >= 0) {
        wfd[n].fd = pd_stub_fd(&ctx);
        wfd[n++].events = CURL_WAIT_POLLIN;
    }
    nufd = pd_udp_fds(&ctx, ufd, 2);
    for (i = 0; i < nufd; i++) {
        wfd[n].fd = ufd[i];
        wfd[n++].events = CURL_WAIT_POLLIN;
    }
    return n;
}

/* Act on the signals that arrived since the last turn. */
static void handle_signals(void)
{
    char drain[64];

    while (read(sig_pipe[0], drain, sizeof(drain)) > 0)
        ;
    if (got_term > loop.handled_term) {
        loop.handled_term = got_term;
        if (!ctx.stopping) {
            sm_info("stopping: deliveries in progress may finish");
            ctx.stopping = 1;
            pd_cycle_stop(&ctx);
        } else {
            sm_warn("second signal: aborting every transfer");
            pd_cycle_abort(&ctx);
            pd_digest_abort(&ctx);
        }
    }
    if (got_hup) {
        got_hup = 0;
        loop.reload = 1;
        sm_info("SIGHUP: reloading %s%s", conf_path,
                ctx.cycle_running ? " once the cycle in progress is done" : "");
    }
    if (got_usr1) {
        got_usr1 = 0;
        sm_info("SIGUSR1: polling now");
        if (ctx.cycle_running)
            loop.poll_again = 1;
        else
            loop.next_cycle = pd_now_ms();
    }
}

/* No cycle running: a full one when it is due, else one of the domains
 * UDP stubs asked for. */
static void start_due_cycle(void)
{
    char *only;

    if (ctx.cycle_running || ctx.stopping)
        return;
    if (pd_now_ms() >= loop.next_cycle)
        pd_cycle_start(&ctx, NULL);
    else if ((only = pd_stub_due(&ctx, pd_now_ms())))
        pd_cycle_start(&ctx, only);
}

/* Record the deliveries that finished, in one commit (group commit: those
 * that finished together share it). Only new ones: those that failed
 * before wait for the cycle's end (the newest come first in the list). */
static void record_deliveries(void)
{
    if (ctx.unrecorded && !ctx.unrecorded->late)
        pd_db_flush_unrecorded(&ctx);
}

/* Hand the finished transfers to the dispatcher, one at a time (a
 * dispatch may free another domain transfer, and libcurl then drops its
 * message). The deliveries that finished are recorded before anything
 * else that may take a while (a fetched body to decrypt). */
static void finished_transfers(void)
{
    struct CURLMsg *m;
    int left;
    pd_xfer *x;

    while ((m = curl_multi_info_read(ctx.multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (!x)
            continue;
        if (x->kind == PD_X_DIGEST) {      /* ours, of no remote domain */
            pd_digest_done(x, m->data.result);
            continue;
        }
        if (x->kind != PD_X_DELIVER)
            record_deliveries();
        pd_dispatch_done(x, m->data.result);
    }
    record_deliveries();
}

/* Start the domains there is room for, start again what waited, let
 * libcurl move the transfers and hand the finished ones to the dispatcher.
 * When a waiting domain wants waking next (0: none). */
static long long run_transfers(void)
{
    int running;
    long long wake;

    if (ctx.cycle_running)
        pd_cycle_pump(&ctx);
    wake = ctx.cycle_running ? pd_cycle_wake(&ctx) : 0;
    curl_multi_perform(ctx.multi, &running);
    finished_transfers();
    if (ctx.cycle_running)
        pd_cycle_pump(&ctx);
    return wake;
}

/* The cycle is over (partial: a stub cycle): when the next full one is
 * due. A stub cycle leaves the schedule of full cycles alone. */
static void schedule_next(int partial)
{
    if (loop.poll_again)
        loop.next_cycle = pd_now_ms();
    else if (!partial)
        loop.next_cycle = pd_now_ms() + ctx.conf.interval * 1000LL;
    loop.poll_again = 0;
}

/* Answer the metrics scrapes that are ready: when the listener's fd was
 * readable at the last wait, or libmicrohttpd's time for its timeouts (and
 * its own pending work) came. */
static void serve_metrics(const struct curl_waitfd *wfd)
{
    long long due;

    if (loop.metrics_slot >= 0
        && (wfd[loop.metrics_slot].revents
            || ((due = pd_metrics_http_next_ms(&ctx)) && due <= pd_now_ms())))
        pd_metrics_http_run(&ctx);
}

/* t, or the time left until wake if that is sooner (wake 0: none). */
static long long sooner(long long t, long long wake)
{
    return wake && wake - pd_now_ms() < t ? wake - pd_now_ms() : t;
}

/* Sleep until a signal, a datagram, a metrics scrape or libcurl (its
 * sockets and timers) wakes us, a waiting domain's time (wake), the
 * metrics listener's time or the next cycle comes. */
static void wait_events(struct curl_waitfd *wfd, unsigned nwfd, long long wake)
{
    long long t, most;
    unsigned i;
    int timeout;

    if (ctx.cycle_running) {
        t = sooner(PD_WAIT_CYCLE_MS, wake);
        t = sooner(t, pd_digest_next_ms(&ctx));
        most = PD_WAIT_CYCLE_MS;
    } else {
        t = loop.next_cycle - pd_now_ms();
        t = sooner(t, pd_stub_next_ms(&ctx));
        t = sooner(t, pd_digest_next_ms(&ctx));
        most = PD_WAIT_IDLE_MS;
    }
    t = sooner(t, pd_metrics_http_next_ms(&ctx));
    timeout = t < 0 ? 0 : t > most ? (int)most : (int)t;
    /* curl_multi_poll sets revents only when something was ready */
    for (i = 0; i < nwfd; i++)
        wfd[i].revents = 0;
    curl_multi_poll(ctx.multi, wfd, nwfd, timeout, NULL);
}

/* A SIGHUP waits for a moment with nothing in flight: no cycle (its
 * fetches and deliveries), no digest being sent, every delivery recorded
 * (what is only in memory would be lost). Then the file is checked: 1 to
 * start again, 0 to go on (now with the old configuration, if it was bad). */
static int reload_now(void)
{
    char why[512];

    if (ctx.cycle_running || pd_digest_busy(&ctx) || ctx.unrecorded)
        return 0;
    loop.reload = 0;
    if (pd_reload_check(conf_path, why, sizeof(why)) != 0) {
        sm_err("SIGHUP: %s not reloaded, going on as before: %s", conf_path, why);
        return 0;
    }
    return 1;
}

/* Cycles until a stop (or, with once, one cycle). 0, or 1 if once and the
 * cycle had failures; PD_RUN_RELOAD after a SIGHUP. */
static int run(int once)
{
    struct curl_waitfd wfd[PD_WAIT_FDS];
    unsigned nwfd;
    long long wake;
    int partial, failed;

    memset(wfd, 0, sizeof(wfd));
    nwfd = wait_fds(wfd);
    loop.next_cycle = pd_now_ms();
    for (;;) {
        handle_signals();
        if (ctx.stopping && !ctx.cycle_running && !pd_digest_busy(&ctx))
            return 0;
        if (!once && loop.reload && reload_now())
            return PD_RUN_RELOAD;
        pd_stub_read(&ctx);
        pd_udp_read(&ctx, pd_dispatch_udp_answer);
        serve_metrics(wfd);
        start_due_cycle();
        if (!once)
            pd_digest_run(&ctx, pd_now_ms());
        wake = run_transfers();
        if (pd_cycle_over(&ctx)) {
            partial = ctx.only != NULL;
            failed = pd_cycle_end(&ctx);
            if (once)
                return failed ? 1 : 0;
            if (ctx.stopping && !pd_digest_busy(&ctx))
                return 0;
            schedule_next(partial);
            continue;
        }
        wait_events(wfd, nwfd, wake);
    }
}

/* ---- main ------------------------------------------------------------- */

/* During a key rotation (docs/PROTOCOL.md "Key rotation") peers that still
 * hold the old record encrypt to our other domain key: the seal decrypts
 * with every domain key of ours in gnupg_home, signs with domain_key
 * alone. A key that will not load is left out, loudly: mail encrypted to
 * it is then refused, as before the rotation. */
static void decrypt_with_other_keys(pd_ctx *c)
{
    char fprs[SM_PGP_DOMAIN_KEYS_MAX][SM_PGP_FPR_MAX + 1], why[SM_PGP_WHY_MAX];
    char also[SM_SEAL_DECRYPT_MAX * (SM_PGP_FPR_MAX + 2) + 1] = "";
    size_t i, n = 0, added = 0;

    if (sm_pgp_domain_keys(c->conf.gnupg_home, c->conf.domain, fprs, SM_PGP_DOMAIN_KEYS_MAX,
                           &n, why, sizeof(why)) != SM_PGP_OK) {
        sm_warn("domain %s: cannot list our domain keys in %s (%s): decrypting with "
                "domain_key %s alone", c->conf.domain, c->conf.gnupg_home, why,
                c->conf.domain_key);
        n = 0;
    }
    for (i = 0; i < n; i++) {
        if (!strcasecmp(fprs[i], c->conf.domain_key))
            continue;
        if (added == SM_SEAL_DECRYPT_MAX
            || sm_seal_decrypt_also(c->seal, fprs[i], why, sizeof(why)) != SM_PGP_OK) {
            sm_warn("domain %s: our domain key %s will not decrypt: %s", c->conf.domain,
                    fprs[i], added == SM_SEAL_DECRYPT_MAX ? "more keys than a rotation has"
                    : why);
            continue;
        }
        snprintf(also + strlen(also), sizeof(also) - strlen(also), " %s", fprs[i]);
        added++;
    }
    sm_info("decrypting with domain_key %s%s%s", c->conf.domain_key,
            added ? " and our other domain key(s) of a rotation:" : "", also);
}

/* Become the daemon and open what the loop needs. EX_OK, or the exit
 * status (logged). */
static int setup(int foreground, int once, int debug)
{
    char err[512];

    /* -1 is interactive by nature: it stays in the foreground too */
    if (!foreground && !once && !getenv(PD_REEXEC_ENV) && daemon(0, 0) != 0) {
        fprintf(stderr, "stubmail-pollerd: daemon: %s\n", strerror(errno));
        return EX_OSERR;
    }
    sm_log_setup(ctx.conf.log_facility_value, ctx.conf.log_level_value);
    sm_log_open("stubmail-pollerd", foreground);
    sm_log_set_debug(debug);
    ctx.debug = debug;
    if (setup_signals() != 0) {
        sm_syserr("cannot set up signals");
        return EX_OSERR;
    }
    if (!(ctx.multi = curl_multi_init())) {
        sm_err("cannot create the libcurl multi handle");
        return EX_OSERR;
    }
    if (pd_conf_can_sign(&ctx.conf) != 0)
        return EX_CONFIG;
    /* one slot: the event loop opens one body at a time */
    if (sm_seal_new(ctx.conf.gnupg_home, ctx.conf.domain_key, 1, &ctx.seal, err,
                    sizeof(err)) != SM_PGP_OK) {
        sm_err("domain_key %s in gnupg_home %s: cannot load it to decrypt with: %s",
               ctx.conf.domain_key, ctx.conf.gnupg_home, err);
        return EX_CONFIG;
    }
    decrypt_with_other_keys(&ctx);
    if (!once && pd_stub_open(&ctx, err, sizeof(err)) != 0) {
        sm_err("%s", err);
        return EX_OSERR;
    }
    if (pd_udp_open(&ctx) != 0)
        return EX_OSERR;
    if (!once && pd_metrics_http_open(&ctx, err, sizeof(err)) != 0) {
        sm_err("%s", err);
        return EX_OSERR;
    }
    sm_info("starting: domain %s, deliver to %s, every %lds, %ld domains at once, "
            "login with domain key %s%s", ctx.conf.domain, ctx.conf.deliver_to,
            ctx.conf.interval, ctx.conf.concurrency, ctx.conf.domain_key,
            once ? ", one cycle" : "");
    return EX_OK;
}

/* Close everything; a delivery never recorded makes rc non-zero. */
static int cleanup(int rc)
{
    pd_unrecorded *u;

    pd_cycle_free(&ctx);
    pd_digest_free(&ctx);
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
    pd_metrics_http_close(&ctx);
    free(ctx.only);
    pd_db_close(&ctx);
    pd_sessions_free(&ctx);
    sm_seal_free(ctx.seal);
    pd_metrics_free();
    pd_conf_free(&ctx.conf);
    curl_global_cleanup();
    if (sig_pipe[0] >= 0) {
        close(sig_pipe[0]);
        close(sig_pipe[1]);
    }
    return rc;
}

int main(int argc, char **argv)
{
    int foreground = 0, once = 0, check_only = 0, debug = 0;
    char err[512];
    int ch, rc = EX_OK;

    while ((ch = getopt(argc, argv, "c:f1ndhK")) != -1) {
        switch (ch) {
        case 'c': conf_path = optarg; break;
        case 'f': foreground = 1; break;
        case '1': once = 1; break;
        case 'n': check_only = 1; break;
        case 'd': debug = 1; break;
        case 'h': usage(stdout); return EX_OK;
        case 'K': pd_conf_dump_keys(stdout); return EX_OK;
        default: usage(stderr); return EX_USAGE;
        }
    }
    if (!conf_path || optind != argc) {
        usage(stderr);
        return EX_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "stubmail-pollerd: cannot initialise libcurl\n");
        return EX_SOFTWARE;
    }
    if (pd_conf_load(&ctx.conf, conf_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "stubmail-pollerd: %s: %s\n", conf_path, err);
        rc = EX_CONFIG;
    } else if (check_only) {
        printf("stubmail-pollerd: %s: configuration OK\n", conf_path);
    } else if ((rc = setup(foreground, once, debug)) == EX_OK) {
        if ((rc = run(once)) == PD_RUN_RELOAD) {
            sm_info("reloading: starting again with %s", conf_path);
            cleanup(EX_OK);
            pd_reload_exec(argv);
            sm_syserr("reloading: cannot start %s again", argv[0]);
            return EX_OSERR;
        }
        sm_info("stopped");
    }
    return cleanup(rc);
}
