/* kill_at_statement — an LD_PRELOAD shim for the tests: the process dies
 * by SIGKILL at a chosen SQL statement, so that no fault hook enters the
 * product's code. Two moments:
 *
 *   after a commit  when a statement whose text contains
 *                   STUBMAIL_KILL_AFTER_COMMIT_MATCH (default
 *                   "outbox_store"), or COMMIT, returns a result and leaves
 *                   the connection outside a transaction (its work
 *                   committed): the milter between its outbox commit and
 *                   its reply to the MTA.
 *   before a send   with STUBMAIL_KILL_BEFORE_MATCH set instead, right
 *                   before a statement whose text contains it is sent:
 *                   pollerd between its local MTA's 250 and its record of
 *                   the delivery (SMTP's hand-off window).
 *
 * It wraps libpq's synchronous calls, PQexec and PQexecParams (what the
 * milter and pollerd use). It is armed by a file: when the file named by
 * STUBMAIL_KILL_ARM exists at such a statement, the shim removes it and
 * kills the process. The file's removal is the one winner among threads:
 * one arming, one kill.
 *
 * Built by tests/sandbox (MilterMixin.use_kill_after_commit,
 * PollerdMixin.use_kill_before_record):
 *   cc -shared -fPIC -o kill_at_statement.so kill_at_statement.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libpq-fe.h>

typedef PGresult *(*exec_fn)(PGconn *, const char *);
typedef PGresult *(*exec_params_fn)(PGconn *, const char *, int, const Oid *,
                                    const char *const *, const int *, const int *, int);

static void die_if_armed(void)
{
    const char *arm = getenv("STUBMAIL_KILL_ARM");

    if (arm && *arm && unlink(arm) == 0)
        kill(getpid(), SIGKILL);
}

static void before(const char *sql)
{
    const char *match = getenv("STUBMAIL_KILL_BEFORE_MATCH");

    if (match && *match && sql && strstr(sql, match))
        die_if_armed();
}

static void after(PGconn *conn, const char *sql, const PGresult *r)
{
    const char *match = getenv("STUBMAIL_KILL_AFTER_COMMIT_MATCH");
    const char *other = getenv("STUBMAIL_KILL_BEFORE_MATCH");
    ExecStatusType st = PQresultStatus(r);

    if ((other && *other) || !sql)
        return;
    if (!match || !*match)
        match = "outbox_store";
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return;
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return;                         /* not committed yet */
    if (!strstr(sql, match) && strncasecmp(sql, "COMMIT", 6) != 0)
        return;
    die_if_armed();
}

PGresult *PQexec(PGconn *conn, const char *sql)
{
    static exec_fn real;
    PGresult *r;

    if (!real)
        real = (exec_fn)dlsym(RTLD_NEXT, "PQexec");
    before(sql);
    r = real(conn, sql);
    after(conn, sql, r);
    return r;
}

PGresult *PQexecParams(PGconn *conn, const char *sql, int n, const Oid *types,
                       const char *const *vals, const int *lens, const int *fmts, int rfmt)
{
    static exec_params_fn real;
    PGresult *r;

    if (!real)
        real = (exec_params_fn)dlsym(RTLD_NEXT, "PQexecParams");
    before(sql);
    r = real(conn, sql, n, types, vals, lens, fmts, rfmt);
    after(conn, sql, r);
    return r;
}
