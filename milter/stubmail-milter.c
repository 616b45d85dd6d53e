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
 *	SIGUSR1 reloads the configuration file (smf_reload.c): connections
 *	that come after it get the new settings, open ones finish under the
 *	settings they started with; a file that does not load is refused and
 *	logged. SIGTERM, and SIGHUP too (libmilter's own signal thread takes
 *	both), stops the milter.
 *
 *	This file holds main(); the configuration keys and their checks are
 *	smf_conf.c, and the filter itself is libsmf: the callbacks
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

#include <curl/curl.h>

#include "sm_dns.h"
#include "sm_log.h"
#include "smf.h"

#define SMF_NAME    "stubmail-milter"
#define SMF_TRIM_THRESHOLD (1024 * 1024) /* freed memory malloc keeps per arena */

/* ---- main ------------------------------------------------------------ */

static void usage(FILE *fp)
{
    fprintf(fp, "usage: %s -c FILE [-f] [-n]\n"
            "  -c FILE  configuration file\n"
            "  -f       stay in the foreground, log to stderr\n"
            "  -n       check the configuration and exit (0 = good)\n"
            "SIGUSR1 reloads FILE; SIGTERM or SIGHUP stops\n"
            "configuration keys:\n", SMF_NAME);
    smf_conf_print_keys(fp);
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
    smf_settings *cfg = NULL;
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
    if ((cfg = calloc(1, sizeof *cfg)) == NULL) {
        fprintf(stderr, "%s: out of memory\n", SMF_NAME);
        goto leave;
    }
    if (smf_conf_load(cfg, path, !check_only, err, sizeof err) != 0) {
        fprintf(stderr, "%s: configuration error: %s\n", SMF_NAME, err);
        rc = EX_CONFIG;
        goto leave;
    }
    if (check_only) {
        printf("%s: %s: configuration OK\n", SMF_NAME, path);
        rc = 0;
        goto leave;
    }

    sm_log_setup(cfg->log_facility_value, cfg->log_level_value);
    sm_log_open(SMF_NAME, foreground);
    /* before any thread (libmilter's, the cache's, ours): a SIGUSR1 that
     * came before the reload thread waits for it */
    if (smf_reload_block_signal() != 0) {
        sm_syserr("cannot block SIGUSR1");
        goto leave;
    }
    umask(007);                 /* the MTA connects through the socket's group */
    if (smfi_setconn(cfg->socket) != MI_SUCCESS || smfi_register(*smf_callbacks()) != MI_SUCCESS) {
        sm_err("cannot set up libmilter for socket %s", cfg->socket);
        goto leave;
    }
    /* removes a stale unix socket; without it libmilter exits silently */
    if (smfi_opensocket(1) != MI_SUCCESS) {
        sm_err("cannot listen on %s (address in use, or directory missing or not writable?)",
               cfg->socket);
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
    if (smf_db_init(cfg->database, cfg->db_connections, cfg->expire_after) != 0) {
        sm_err("out of memory");
        goto leave;
    }
    if (smf_cache_start(cfg->database) != 0) {
        sm_syserr("cannot start the answers cache's thread");
        goto leave;
    }
    /* after daemonize: the seal's contexts are this process's */
    if (smf_conf_seal(cfg, err, sizeof err) != 0) {
        sm_err("%s", err);
        goto leave;
    }
    sm_info("listening on %s; spool %s (sealed bodies up to %lld octets in the row); %ld "
            "database connections; outbound = {daemon_name} %s, authenticated, or from %s; "
            "DNS from %s (AD bit %s; DNSSEC required for %s)", cfg->socket, cfg->spool_dir,
            cfg->inline_max, cfg->db_connections, cfg->originating_daemon,
            cfg->trusted_networks, cfg->resolver ? cfg->resolver : "/etc/resolv.conf",
            sm_dns_trusts_ad(&cfg->dns, 0) ? "trusted"
            : cfg->resolver ? "not trusted" : "trusted if resolv.conf says trust-ad",
            cfg->dnssec_require);
    sm_info("stored mail is signed with domain key %s in %s and encrypted to the "
            "recipient domains' keys%s", cfg->domain_key, cfg->gnupg_home,
            cfg->recipient_keys ? " and to recipients' own keys published by WKD" : "");
    /* from here the settings are smf_reload's: a reload may free them */
    rc = smf_reload_start(cfg, path);
    cfg = NULL;
    if (rc != 0) {
        sm_syserr("cannot start the reload thread (SIGUSR1)");
        rc = 1;
        goto leave;
    }
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
    smf_reload_stop();                  /* all harmless when not set up */
    smf_cache_stop();
    smf_db_shutdown();
    curl_global_cleanup();
    smf_conf_free(cfg);
    free(cfg);
    return rc;
}
