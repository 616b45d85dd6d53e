/* ctl_book.c — address books (address_book, address_block: sql/001, 014)
 * and the site-wide contacts every local user pulls from (site_contact:
 * sql/025). A CONTACT is an address or *@domain, stored normalised. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* A user's whole view: their entries, their blocks, and the site-wide
 * entries that apply to them (not those they blocked). */
static const char SQL_BOOK_LIST[] =
    "SELECT contact, kind, source,"
    "       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS since"
    "  FROM (SELECT contact, 'book' AS kind, source, created_at FROM address_book"
    "         WHERE owner = $1"
    "        UNION ALL"
    "        SELECT contact, 'blocked', source, created_at FROM address_block"
    "         WHERE owner = $1"
    "        UNION ALL"
    "        SELECT s.contact, 'site', 'admin', s.created_at FROM site_contact s"
    "         WHERE NOT EXISTS (SELECT 1 FROM address_block b"
    "                            WHERE b.owner = $1 AND b.contact = s.contact)) e"
    " ORDER BY kind, contact";

/* The admin's entry: a block of the contact and an introduction from it go
 * (as address_add() of sql/014 does for the user's own, whose entries it
 * marks 'user'). */
static const char SQL_BOOK_ADD[] =
    "WITH unblock AS (DELETE FROM address_block WHERE owner = $1 AND contact = $2"
    "                 RETURNING 1),"
    " intro AS (DELETE FROM introduction WHERE recipient = $1 AND sender = $2 RETURNING 1)"
    " INSERT INTO address_book (owner, contact, contact_domain, source)"
    " VALUES ($1, $2, split_part($2, '@', 2), 'admin')"
    " ON CONFLICT (owner, contact) DO NOTHING";

static const char SQL_BOOK_REMOVE[] =
    "DELETE FROM address_book WHERE owner = $1 AND contact = $2";

static const char SQL_BOOK_BLOCK[] =
    "SELECT removed, newly_blocked FROM address_unsubscribe($1, $2, 'admin')";

static const char SQL_BOOK_UNBLOCK[] =
    "DELETE FROM address_block WHERE owner = $1 AND contact = $2";

static const char SQL_SITE_LIST[] =
    "SELECT s.contact,"
    "       to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS since,"
    "       (SELECT count(*) FROM address_block b WHERE b.contact = s.contact) AS blocked_by"
    "  FROM site_contact s ORDER BY s.contact";

static const char SQL_SITE_ADD[] =
    "INSERT INTO site_contact (contact, contact_domain) VALUES ($1, split_part($1, '@', 2))"
    " ON CONFLICT (contact) DO NOTHING";

static const char SQL_SITE_REMOVE[] = "DELETE FROM site_contact WHERE contact = $1";

static int book_list(ctl *c, const char *user_arg)
{
    char user[SM_ADDR_MAX + 1];
    const char *p[1] = { user };
    PGresult *res = NULL;
    int rc = EX_USAGE;

    if (ctl_arg_addr("user", user_arg, user) != 0)
        goto leave;
    rc = EX_TEMPFAIL;
    if (!(res = ctl_db_exec(c, "listing an address book", SQL_BOOK_LIST, 1, p)))
        goto leave;
    ctl_out_rows(c, res, "entries");
    rc = EX_OK;
leave:
    PQclear(res);
    return rc;
}

static int book_change(ctl *c, const char *verb, const char *user_arg, const char *contact_arg)
{
    char user[SM_ADDR_MAX + 1], contact[SM_ADDR_MAX + 1], text[2 * SM_ADDR_MAX + 128];
    const char *p[2] = { user, contact };
    PGresult *res;
    long n = 0;
    int rc = EX_USAGE;

    if (ctl_arg_addr("user", user_arg, user) != 0
        || ctl_arg_pattern("contact", contact_arg, contact) != 0)
        goto leave;
    if (c->conf.domain && strcmp(sm_addr_domain(user), c->conf.domain) != 0) {
        ctl_fail(EX_USAGE, "user <%s> is not at our domain %s", user, c->conf.domain);
        goto leave;
    }
    rc = EX_TEMPFAIL;
    if (!strcmp(verb, "add")) {
        if (ctl_db_change(c, "adding to an address book", SQL_BOOK_ADD, 2, p, &n) != 0)
            goto leave;
        snprintf(text, sizeof text, "%s <%s> to the address book of <%s>",
                 n ? "added" : "already there:", contact, user);
    } else if (!strcmp(verb, "remove")) {
        if (ctl_db_change(c, "removing from an address book", SQL_BOOK_REMOVE, 2, p, &n) != 0)
            goto leave;
        if (n == 0) {
            rc = ctl_fail(1, "<%s> is not in the address book of <%s>", contact, user);
            goto leave;
        }
        snprintf(text, sizeof text, "removed <%s> from the address book of <%s>", contact, user);
    } else if (!strcmp(verb, "block")) {
        if (!(res = ctl_db_exec(c, "blocking a contact", SQL_BOOK_BLOCK, 2, p)))
            goto leave;
        snprintf(text, sizeof text, "blocked <%s> for <%s>%s", contact, user,
                 PQgetvalue(res, 0, 0)[0] == 't' ? " (and removed it from the address book)"
                 : PQgetvalue(res, 0, 1)[0] == 't' ? "" : " (it was blocked already)");
        PQclear(res);
    } else {
        if (ctl_db_change(c, "unblocking a contact", SQL_BOOK_UNBLOCK, 2, p, &n) != 0)
            goto leave;
        if (n == 0) {
            rc = ctl_fail(1, "<%s> is not blocked for <%s>", contact, user);
            goto leave;
        }
        snprintf(text, sizeof text, "unblocked <%s> for <%s>", contact, user);
    }
    ctl_out_done(c, text, "user", user, "contact", contact, NULL);
    rc = EX_OK;
leave:
    return rc;
}

static int site_main(ctl *c, int argc, char **argv)
{
    char contact[SM_ADDR_MAX + 1], text[SM_ADDR_MAX + 128];
    const char *p[1] = { contact };
    PGresult *res = NULL;
    int add, rc = EX_USAGE;
    long n;

    if (argc == 2 && !strcmp(argv[1], "list")) {
        rc = EX_TEMPFAIL;
        if (!(res = ctl_db_exec(c, "listing site-wide contacts", SQL_SITE_LIST, 0, NULL)))
            goto leave;
        ctl_out_rows(c, res, "site-wide contacts");
        rc = EX_OK;
        goto leave;
    }
    if (argc != 3 || (strcmp(argv[1], "add") && strcmp(argv[1], "remove")))
        goto leave;
    add = !strcmp(argv[1], "add");
    if (ctl_arg_pattern("contact", argv[2], contact) != 0)
        goto leave;
    if (c->conf.domain && !strcmp(sm_addr_domain(contact), c->conf.domain)) {
        ctl_fail(EX_USAGE, "<%s> is at our own domain: its mail is not pulled", contact);
        goto leave;
    }
    rc = EX_TEMPFAIL;
    if (ctl_db_change(c, add ? "adding a site-wide contact" : "removing a site-wide contact",
                add ? SQL_SITE_ADD : SQL_SITE_REMOVE, 1, p, &n) != 0)
        goto leave;
    if (!add && n == 0) {
        rc = ctl_fail(1, "<%s> is not a site-wide contact", contact);
        goto leave;
    }
    snprintf(text, sizeof text, !add ? "removed the site-wide contact <%s>"
             : n ? "added <%s>: every local user pulls its mail" : "already there: <%s>",
             contact);
    ctl_out_done(c, text, "contact", contact, NULL);
    rc = EX_OK;
leave:
    PQclear(res);
    return rc;
}

int ctl_book_main(ctl *c, int argc, char **argv)
{
    int rc = EX_USAGE;

    if (argc >= 2 && !strcmp(argv[1], "site"))
        rc = site_main(c, argc - 1, argv + 1);
    else if (argc == 3 && !strcmp(argv[1], "list"))
        rc = book_list(c, argv[2]);
    else if (argc == 4 && (!strcmp(argv[1], "add") || !strcmp(argv[1], "remove")
                           || !strcmp(argv[1], "block") || !strcmp(argv[1], "unblock")))
        rc = book_change(c, argv[1], argv[2], argv[3]);
    return rc;
}
