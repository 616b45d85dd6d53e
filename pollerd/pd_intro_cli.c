/* pd_intro_cli.c — the `intro` command line of stubmail-pollerd:
 *
 *   stubmail-pollerd -c FILE intro list [RECIPIENT]
 *   stubmail-pollerd -c FILE intro accept|drop RECIPIENT SENDER
 *
 * Introductions are what stubs from senders in no address book leave
 * (pd_stub.c, introductions = yes). Accepting one moves the sender into the
 * recipient's address book and pokes the running pollerd with a stub of our
 * own, so that the waiting mail is pulled now. Exit statuses are sysexits:
 * EX_USAGE for a bad command line, EX_TEMPFAIL when the database fails, 1
 * when there is no such introduction.
 *
 * The entry point takes a loaded configuration and the words after -c
 * FILE, so that another command line (an admin tool) can offer the same
 * commands. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "sm_log.h"
#include "sm_stub.h"
#include "pd.h"

static int intro_usage(void)
{
    fprintf(stderr, "usage: stubmail-pollerd -c FILE intro list [RECIPIENT]\n"
                    "       stubmail-pollerd -c FILE intro accept RECIPIENT SENDER\n"
                    "       stubmail-pollerd -c FILE intro drop RECIPIENT SENDER\n");
    return EX_USAGE;
}

static int intro_addr(const char *what, const char *in, char *out)
{
    const char *why = "";

    if (sm_addr_normalize(in, out, SM_ADDR_MAX + 1, &why) != 0) {
        fprintf(stderr, "stubmail-pollerd: %s \"%s\": %s\n", what, in, why);
        return -1;
    }
    return 0;
}

/* After an accept: tell the running pollerd, by a stub of our own to its
 * udp_listen, so that the waiting mail is pulled now. */
static void intro_poke(pd_ctx *ctx, const char *rcpt, const char *sender)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *bad = "", *to[1] = { rcpt };
    char why[256];

    if (!ctx->conf.udp_listen) {
        printf("pollerd pulls the waiting mail at its next cycle (udp_listen is not set)\n");
        return;
    }
    if (sm_dns_resolver_parse(ctx->conf.udp_listen, &ss, &sslen, &bad) != 0
        || sm_stub_send((struct sockaddr *)&ss, sslen, sender, to, 1, why, sizeof(why)) != 1) {
        fprintf(stderr, "stubmail-pollerd: cannot send a stub to %s (%s): the waiting mail "
                "is pulled at the next cycle\n", ctx->conf.udp_listen, bad[0] ? bad : why);
        return;
    }
    printf("told pollerd at %s: the waiting mail from %s is pulled now\n",
           ctx->conf.udp_listen, sm_addr_domain(sender));
}

int pd_intro_cli_main(pd_ctx *ctx, int argc, char **argv)
{
    char rcpt[SM_ADDR_MAX + 1], sender[SM_ADDR_MAX + 1];
    int rc, added = 0;

    if (argc < 2)
        return intro_usage();
    if (pd_db_connect(ctx) != 0)
        return EX_TEMPFAIL;
    if (!strcmp(argv[1], "list") && argc <= 3) {
        if (argc == 3 && intro_addr("recipient", argv[2], rcpt) != 0)
            return EX_USAGE;
        if ((rc = pd_db_intro_list(ctx, argc == 3 ? rcpt : NULL, stdout)) < 0)
            return EX_TEMPFAIL;
        if (!ctx->conf.introductions)
            fprintf(stderr, "stubmail-pollerd: note: introductions are off "
                    "(introductions = no): none are recorded\n");
        return EX_OK;
    }
    if ((strcmp(argv[1], "accept") && strcmp(argv[1], "drop")) || argc != 4)
        return intro_usage();
    if (intro_addr("recipient", argv[2], rcpt) != 0 || intro_addr("sender", argv[3], sender) != 0)
        return EX_USAGE;
    if (strcmp(sm_addr_domain(rcpt), ctx->conf.domain) != 0) {
        fprintf(stderr, "stubmail-pollerd: recipient <%s> is not at %s\n", rcpt,
                ctx->conf.domain);
        return EX_USAGE;
    }
    if (!strcmp(argv[1], "drop")) {
        if ((rc = pd_db_intro_drop(ctx, rcpt, sender)) < 0)
            return EX_TEMPFAIL;
        if (rc == 0) {
            fprintf(stderr, "stubmail-pollerd: no introduction of <%s> to <%s>\n", sender, rcpt);
            return 1;
        }
        printf("dropped the introduction of <%s> to <%s>\n", sender, rcpt);
        return EX_OK;
    }
    if ((rc = pd_db_intro_accept(ctx, rcpt, sender, &added)) < 0)
        return EX_TEMPFAIL;
    if (rc == 0) {
        fprintf(stderr, "stubmail-pollerd: no introduction of <%s> to <%s>\n", sender, rcpt);
        return 1;
    }
    sm_info("introduction accepted: <%s> added to the address book of <%s>%s", sender, rcpt,
            added ? "" : " (it was there already)");
    printf("accepted: <%s> is in the address book of <%s>\n", sender, rcpt);
    intro_poke(ctx, rcpt, sender);
    return EX_OK;
}
