/* stubmailctl — the administrator's command over the stubmail database:
 * peers and the DNS cache, address books and site-wide contacts,
 * introductions, the outbox, the domain key, and a check of a domain's
 * whole setup. man/stubmailctl.8 is its manual.
 *
 *   stubmailctl [-c FILE] [--json] SUBCOMMAND ...
 *
 * --json may come anywhere on the line, so that a script can append it. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sm_log.h"
#include "sm_pgp.h"
#include "ctl.h"

typedef struct ctl_command {
    const char *name;
    int (*main)(ctl *c, int argc, char **argv);
    const char *usage;
} ctl_command;

static const ctl_command commands[] = {
    { "peer", ctl_peer_main,
      "peer list | peer pin DOMAIN URL FPR | peer optout DOMAIN | peer remove DOMAIN" },
    { "dns", ctl_dns_main, "dns list | dns flush [DOMAIN]" },
    { "book", ctl_book_main,
      "book list USER | book add|remove|block|unblock USER CONTACT\n"
      "              | book site list | book site add|remove CONTACT" },
    { "intro", ctl_intro_main, "intro list [USER] | intro accept|drop USER SENDER" },
    { "outbox", ctl_outbox_main, "outbox [USER | --domain DOMAIN] [--stuck AGE]" },
    { "key", ctl_key_main,
      "key show | key rotate start|finish\n"
      "              | key rotate switch [-o FILE] [--old-key-file FILE]" },
    { "check", ctl_check_main, "check DOMAIN" },
    { NULL, NULL, NULL }
};

static int usage(FILE *fp, int status)
{
    const ctl_command *k;

    fprintf(fp, "usage: " CTL_NAME " [-c FILE] [--json] SUBCOMMAND ...\n"
                "  -c FILE  configuration (default " CTL_DEFAULT_CONF ")\n"
                "  --json   answer in JSON\n"
                "  -K       print the configuration keys and exit\n"
                "subcommands:\n");
    for (k = commands; k->name; k++)
        fprintf(fp, "  %s\n", k->usage);
    return status;
}

/* Take every --json out of argv; the rest keeps its order. */
static int strip_json(int argc, char **argv, int *json)
{
    int i, n = 1;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            *json = 1;
        else
            argv[n++] = argv[i];
    }
    argv[n] = NULL;
    return n;
}

int main(int argc, char **argv)
{
    ctl c;
    const ctl_command *k;
    char err[1024];
    int opt, rc = EX_USAGE;

    memset(&c, 0, sizeof c);
    c.conf_path = CTL_DEFAULT_CONF;
    argc = strip_json(argc, argv, &c.json);
    while ((opt = getopt(argc, argv, "+c:hK")) != -1) {
        switch (opt) {
        case 'c': c.conf_path = optarg; break;
        case 'h': return usage(stdout, EX_OK);
        case 'K': ctl_conf_print_keys(stdout); return EX_OK;
        default: return usage(stderr, EX_USAGE);
        }
    }
    if (optind >= argc)
        return usage(stderr, EX_USAGE);
    for (k = commands; k->name && strcmp(k->name, argv[optind]); k++)
        ;
    if (!k->name) {
        fprintf(stderr, CTL_NAME ": no subcommand \"%s\"\n", argv[optind]);
        return usage(stderr, EX_USAGE);
    }
    sm_log_open(CTL_NAME, 1);
    if (ctl_conf_load(c.conf_path, &c.conf, err, sizeof err) != 0) {
        rc = ctl_fail(EX_CONFIG, "%s", err);
        goto leave;
    }
    if (sm_pgp_init() != 0) {
        rc = ctl_fail(EX_SOFTWARE, "gpgme initialisation failed");
        goto leave;
    }
    rc = k->main(&c, argc - optind, argv + optind);
    if (rc == EX_USAGE)
        fprintf(stderr, "usage: " CTL_NAME " [-c FILE] [--json] %s\n", k->usage);
leave:
    ctl_db_close(&c);
    ctl_conf_free();
    return rc;
}
