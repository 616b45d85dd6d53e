/* ctl_intro.c — introductions (sql/005): what UDP stubs from senders in no
 * address book leave when pollerd runs with introductions = yes. Accepting
 * one moves the sender into the recipient's address book in one statement
 * and pokes pollerd with a stub of our own (pollerd_udp), so that the
 * waiting mail is pulled now rather than at its next cycle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_stub.h"
#include "sm_txt.h"
#include "ctl.h"

static const char SQL_INTRO_LIST[] =
    "SELECT recipient, sender,"
    "       to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS first_seen,"
    "       to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS last_seen,"
    "       stubs"
    "  FROM introduction"
    " WHERE $1::text IS NULL OR recipient = $1"
    " ORDER BY recipient, last_seen DESC, sender";

static const char SQL_INTRO_ACCEPT[] =
    "WITH gone AS ("
    "  DELETE FROM introduction WHERE recipient = $1 AND sender = $2"
    "  RETURNING recipient, sender, sender_domain),"
    " added AS ("
    "  INSERT INTO address_book (owner, contact, contact_domain, source)"
    "  SELECT recipient, sender, sender_domain, 'user' FROM gone"
    "  ON CONFLICT (owner, contact) DO NOTHING RETURNING 1)"
    " SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM added)";

static const char SQL_INTRO_DROP[] =
    "DELETE FROM introduction WHERE recipient = $1 AND sender = $2";

/* After an accept: a stub to pollerd, so that the waiting mail is pulled
 * now. Returns what happened, for the answer. */
static const char *poke(ctl *c, const char *rcpt, const char *sender)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *bad = "", *to[1] = { rcpt };
    char why[256];

    if (!c->conf.pollerd_udp)
        return "pollerd pulls the waiting mail at its next cycle (pollerd_udp is not set)";
    if (sm_dns_resolver_parse(c->conf.pollerd_udp, &ss, &sslen, &bad) != 0
        || sm_stub_send((struct sockaddr *)&ss, sslen, sender, to, 1, why, sizeof why) != 1) {
        fprintf(stderr, CTL_NAME ": cannot send a stub to pollerd at %s (%s): the waiting "
                "mail is pulled at its next cycle\n", c->conf.pollerd_udp, bad[0] ? bad : why);
        return "pollerd pulls the waiting mail at its next cycle (the stub was not sent)";
    }
    return "told pollerd: the waiting mail is pulled now";
}

int ctl_intro_main(ctl *c, int argc, char **argv)
{
    char rcpt[SM_ADDR_MAX + 1], sender[SM_ADDR_MAX + 1], text[2 * SM_ADDR_MAX + 256];
    const char *p[2] = { rcpt, sender }, *told;
    PGresult *res = NULL;
    int rc = EX_USAGE, found;

    if (argc >= 2 && argc <= 3 && !strcmp(argv[1], "list")) {
        if (argc == 3 && ctl_arg_addr("user", argv[2], rcpt) != 0)
            goto leave;
        p[0] = argc == 3 ? rcpt : NULL;
        rc = EX_TEMPFAIL;
        if (!(res = ctl_db_exec(c, "listing introductions", SQL_INTRO_LIST, 1, p)))
            goto leave;
        ctl_out_rows(c, res, "introductions (pollerd records them with introductions = yes)");
        rc = EX_OK;
        goto leave;
    }
    if (argc != 4 || (strcmp(argv[1], "accept") && strcmp(argv[1], "drop")))
        goto leave;
    if (ctl_arg_addr("user", argv[2], rcpt) != 0 || ctl_arg_addr("sender", argv[3], sender) != 0)
        goto leave;
    if (c->conf.domain && strcmp(sm_addr_domain(rcpt), c->conf.domain) != 0) {
        rc = ctl_fail(EX_USAGE, "user <%s> is not at our domain %s", rcpt, c->conf.domain);
        goto leave;
    }
    rc = EX_TEMPFAIL;
    if (!strcmp(argv[1], "drop")) {
        if (!(res = ctl_db_exec(c, "dropping an introduction", SQL_INTRO_DROP, 2, p)))
            goto leave;
        found = strtol(PQcmdTuples(res), NULL, 10) > 0;
        snprintf(text, sizeof text, "dropped the introduction of <%s> to <%s>", sender, rcpt);
        told = NULL;
    } else {
        if (!(res = ctl_db_exec(c, "accepting an introduction", SQL_INTRO_ACCEPT, 2, p)))
            goto leave;
        found = strtol(PQgetvalue(res, 0, 0), NULL, 10) > 0;
        told = found ? poke(c, rcpt, sender) : NULL;
        snprintf(text, sizeof text, "accepted: <%s> is in the address book of <%s>; %s", sender,
                 rcpt, told ? told : "");
    }
    if (!found) {
        rc = ctl_fail(1, "no introduction of <%s> to <%s>", sender, rcpt);
        goto leave;
    }
    ctl_out_done(c, text, "user", rcpt, "sender", sender, "pollerd", told, NULL);
    rc = EX_OK;
leave:
    PQclear(res);
    return rc;
}
