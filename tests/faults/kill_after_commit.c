/* kill_after_commit — an LD_PRELOAD shim for the tests: the process dies
 * by SIGKILL right after a statement of its committed, before it can act
 * on the answer (e.g. the milter between its outbox commit and its reply
 * to the MTA), so that no fault hook enters the product's code.
 *
 * It wraps libpq's synchronous calls, PQexec and PQexecParams (what
 * stubmail-milter uses). It is armed by a file: when the file named by
 * STUBMAIL_KILL_AFTER_COMMIT exists and a statement whose text contains
 * STUBMAIL_KILL_AFTER_COMMIT_MATCH (default "outbox_store"), or COMMIT,
 * returns a result and leaves the connection outside a transaction (its
 * work committed), the shim removes the file and kills the process. The
 * file's removal is the one winner among threads: one arming, one kill.
 *
 * Built by tests/sandbox (MilterMixin.use_kill_after_commit):
 *   cc -shared -fPIC -o kill_after_commit.so kill_after_commit.c -ldl */
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

static void maybe_die(PGconn *conn, const char *sql, const PGresult *r)
{
    const char *arm = getenv("STUBMAIL_KILL_AFTER_COMMIT");
    const char *match = getenv("STUBMAIL_KILL_AFTER_COMMIT_MATCH");
    ExecStatusType st = PQresultStatus(r);

    if (!arm || !*arm || !sql)
        return;
    if (!match || !*match)
        match = "outbox_store";
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return;
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return;                         /* not committed yet */
    if (!strstr(sql, match) && strncasecmp(sql, "COMMIT", 6) != 0)
        return;
    if (unlink(arm) == 0)
        kill(getpid(), SIGKILL);
}

PGresult *PQexec(PGconn *conn, const char *sql)
{
    static exec_fn real;
    PGresult *r;

    if (!real)
        real = (exec_fn)dlsym(RTLD_NEXT, "PQexec");
    r = real(conn, sql);
    maybe_die(conn, sql, r);
    return r;
}

PGresult *PQexecParams(PGconn *conn, const char *sql, int n, const Oid *types,
                       const char *const *vals, const int *lens, const int *fmts, int rfmt)
{
    static exec_params_fn real;
    PGresult *r;

    if (!real)
        real = (exec_params_fn)dlsym(RTLD_NEXT, "PQexecParams");
    r = real(conn, sql, n, types, vals, lens, fmts, rfmt);
    maybe_die(conn, sql, r);
    return r;
}
