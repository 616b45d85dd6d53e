/* ctl_db.c — stubmailctl's one connection to PostgreSQL: every statement
 * is one PQexecParams in autocommit, so each command is one transaction
 * that either happened or did not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* The server's message on one line. */
static void say_why(const char *what, const PGresult *res, const PGconn *db)
{
    char buf[512];
    const char *m = res ? PQresultErrorMessage(res) : "";
    size_t i;

    if (!m || !*m)
        m = db ? PQerrorMessage(db) : "no connection";
    snprintf(buf, sizeof buf, "%s", m && *m ? m : "unknown error");
    for (i = 0; buf[i]; i++)
        if (buf[i] == '\n')
            buf[i] = ' ';
    while (i > 0 && buf[i - 1] == ' ')
        buf[--i] = '\0';
    fprintf(stderr, CTL_NAME ": database: %s: %s\n", what, buf);
}

int ctl_db_connect(ctl *c)
{
    /* connect_timeout first: a value in the configured conninfo wins */
    const char *keys[] = { "connect_timeout", "application_name", "dbname", NULL };
    const char *vals[] = { "10", CTL_NAME, c->conf.database, NULL };
    int rc = -1;

    if (c->db)
        return 0;
    c->db = PQconnectdbParams(keys, vals, 1);
    if (!c->db || PQstatus(c->db) != CONNECTION_OK) {
        say_why("cannot connect (database in the configuration)", NULL, c->db);
        ctl_db_close(c);
        goto leave;
    }
    rc = 0;
leave:
    return rc;
}

PGresult *ctl_db_exec(ctl *c, const char *what, const char *sql, int n,
                      const char *const *params)
{
    PGresult *res = NULL;
    ExecStatusType st;

    if (ctl_db_connect(c) != 0)
        goto leave;
    res = PQexecParams(c->db, sql, n, NULL, params, NULL, NULL, 0);
    st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        say_why(what, res, c->db);
        PQclear(res);
        res = NULL;
    }
leave:
    return res;
}

void ctl_db_close(ctl *c)
{
    if (c->db)
        PQfinish(c->db);
    c->db = NULL;
}

int ctl_db_change(ctl *c, const char *what, const char *sql, int n, const char *const *p,
                  long *count)
{
    PGresult *res = ctl_db_exec(c, what, sql, n, p);
    int rc = -1;

    if (!res)
        goto leave;
    *count = strtol(PQcmdTuples(res), NULL, 10);
    rc = 0;
leave:
    PQclear(res);
    return rc;
}
