/* smf_db — stubmail-milter's PostgreSQL: a small pool of connections and
 * every statement the milter runs (discovery's are sm_discover's, run on a
 * connection from this pool).
 *
 * The pool holds db_connections slots. A thread takes a free slot (waiting
 * up to SMF_DB_WAIT seconds when all are busy), opens or resets its
 * connection if needed, runs its statements and gives the slot back. A
 * connection that broke is reset on its next use, so the milter comes back
 * by itself when PostgreSQL does; until then every call is a temporary
 * failure, which the milter turns into an SMTP 4xx. After a failed connect,
 * further connects fail fast for SMF_DB_HOLDOFF seconds instead of piling up
 * on a database that is down.
 *
 * A connection the server closed while it sat in the pool (PostgreSQL
 * restarted) is found when it is taken, by what waits on its socket (a
 * poll, no round trip), and opened again before anything is sent on it. A
 * statement whose connection breaks all the same is sent once more on a
 * fresh connection when that is safe: reads, the address-book upsert, and
 * the store (outbox_store() of sql/009 knows a message it stored already,
 * and outbox_store_quota() of sql/011 never refuses it). A store that
 * broke past its commit and was answered 4xx all the same is known again
 * when the client sends the message again under a new id, by its
 * identity (smf_ident.c, sql/021).
 *
 * Only parameterised statements (PQexecParams) are used. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "sm_log.h"
#include "smf.h"

#define SMF_DB_WAIT     30      /* seconds to wait for a free connection */
#define SMF_DB_HOLDOFF  1       /* seconds to fail fast after a failed connect */
#define SMF_DB_CONNECT_TIMEOUT "5"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char *conninfo;
    long size;
    long expire_after;          /* seconds: stubmail.expire_after of each session */
    PGconn **conns;
    int *busy;
    time_t holdoff_until;
    char holdoff_why[256];
} pool = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, NULL, NULL, 0, "" };

/* libpq error text as one line. */
static void copy_error(char *why, size_t whylen, const char *prefix, const char *msg)
{
    char *p;
    char *q;

    snprintf(why, whylen, "%s%s", prefix, msg && *msg ? msg : "unknown error");
    for (p = q = why; *p; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
        if (*p == ' ' && (q == why || q[-1] == ' '))
            continue;                   /* squeeze runs of blanks */
        *q++ = *p;
    }
    while (q > why && q[-1] == ' ')
        q--;
    *q = '\0';
}

int smf_db_init(const char *conninfo, long size, long expire_after)
{
    if (size < 1)
        size = 1;
    pool.expire_after = expire_after;
    pool.conninfo = strdup(conninfo);
    pool.conns = calloc((size_t)size, sizeof *pool.conns);
    pool.busy = calloc((size_t)size, sizeof *pool.busy);
    if (!pool.conninfo || !pool.conns || !pool.busy) {
        smf_db_shutdown();
        return -1;
    }
    pool.size = size;
    return 0;
}

void smf_db_shutdown(void)
{
    long i;

    for (i = 0; pool.conns && i < pool.size; i++)
        if (pool.conns[i])
            PQfinish(pool.conns[i]);
    free(pool.conns);
    free(pool.busy);
    free(pool.conninfo);
    pool.conns = NULL;
    pool.busy = NULL;
    pool.conninfo = NULL;
    pool.size = 0;
}

static PGconn *connect_new(void)
{
    /* The conninfo comes last, so that its settings override ours. */
    const char *const keys[] = { "connect_timeout", "fallback_application_name", "dbname", NULL };
    const char *const vals[] = { SMF_DB_CONNECT_TIMEOUT, "stubmail-milter", pool.conninfo, NULL };

    return PQconnectdbParams(keys, vals, 1);
}

/* What every session of the milter sets once it is connected (again):
 * the lifetime its stored messages get (sql/012's outbox_lifetime()). A
 * SET, not the conninfo's options, which the admin's conninfo may name.
 * 0, or -1 with why. */
static int session_setup(PGconn *c, char *why, size_t whylen)
{
    char sql[64];
    PGresult *r;
    int rc = 0;

    snprintf(sql, sizeof sql, "SET stubmail.expire_after = '%ld s'", pool.expire_after);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        copy_error(why, whylen, "setting stubmail.expire_after: ", PQresultErrorMessage(r));
        rc = -1;
    }
    PQclear(r);
    return rc;
}

/* A connection idle in the pool has nothing to read, unless the server
 * sent it its last words (FATAL, terminating connection) and closed it. */
static int closed_by_server(PGconn *c)
{
    struct pollfd p = { PQsocket(c), POLLIN, 0 };

    return p.fd < 0 || poll(&p, 1, 0) != 0;
}

/* Take a slot with a working connection. Returns the slot, or -1 with why. */
static long acquire(char *why, size_t whylen)
{
    struct timespec deadline;
    long i, slot = -1;
    PGconn *c;
    time_t now;
    int stale;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += SMF_DB_WAIT;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        /* prefer a slot that already has an open connection */
        for (i = 0; i < pool.size; i++)
            if (!pool.busy[i] && pool.conns[i] && (slot < 0 || !pool.conns[slot]))
                slot = i;
        for (i = 0; slot < 0 && i < pool.size; i++)
            if (!pool.busy[i])
                slot = i;
        if (slot >= 0)
            break;
        if (pthread_cond_timedwait(&pool.cond, &pool.lock, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&pool.lock);
            snprintf(why, whylen, "all %ld database connections busy for %d s", pool.size,
                     SMF_DB_WAIT);
            return -1;
        }
    }
    pool.busy[slot] = 1;
    c = pool.conns[slot];
    stale = c != NULL && (PQstatus(c) != CONNECTION_OK || closed_by_server(c));
    if (c == NULL || stale) {
        now = time(NULL);
        if (now < pool.holdoff_until) {
            snprintf(why, whylen, "%s", pool.holdoff_why);
            goto fail_locked;
        }
    }
    pthread_mutex_unlock(&pool.lock);

    if (stale)
        PQreset(c);                     /* went bad: reconnect in place */
    else if (c == NULL)
        c = connect_new();
    if (c == NULL) {
        snprintf(why, whylen, "cannot connect to the database: out of memory");
        pthread_mutex_lock(&pool.lock);
        goto fail_locked;
    }
    if (PQstatus(c) != CONNECTION_OK
        || (c != pool.conns[slot] || stale ? session_setup(c, why, whylen) : 0) != 0) {
        if (PQstatus(c) != CONNECTION_OK)
            copy_error(why, whylen, "cannot connect to the database: ", PQerrorMessage(c));
        PQfinish(c);
        pthread_mutex_lock(&pool.lock);
        pool.conns[slot] = NULL;
        pool.holdoff_until = time(NULL) + SMF_DB_HOLDOFF;
        snprintf(pool.holdoff_why, sizeof pool.holdoff_why, "%s", why);
        goto fail_locked;
    }
    pool.conns[slot] = c;               /* only this thread touches a busy slot */
    return slot;

fail_locked:
    pool.busy[slot] = 0;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    return -1;
}

/* Give a slot back; a broken connection, or one left inside a transaction,
 * is closed rather than handed to the next caller. */
static void release(long slot)
{
    PGconn *c = pool.conns[slot];
    PGresult *r;

    if (c && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        r = PQexecParams(c, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
        PQclear(r);
    }
    if (c && (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE)) {
        PQfinish(c);
        c = NULL;
    }
    pthread_mutex_lock(&pool.lock);
    pool.conns[slot] = c;
    pool.busy[slot] = 0;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
}

/* Run one statement, its parameters in text unless fmts says binary (1,
 * lens octets). Returns the result if its status is want, else NULL with
 * why; *gone is set when the connection itself broke. */
static PGresult *run_bin(long slot, const char *what, const char *sql, int n,
                         const char *const *vals, const int *lens, const int *fmts,
                         ExecStatusType want, int *gone, char *why, size_t whylen)
{
    PGconn *c = pool.conns[slot];
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, lens, fmts, 0);
    char prefix[64];

    if (r && PQresultStatus(r) == want)
        return r;
    snprintf(prefix, sizeof prefix, "%s: ", what);
    copy_error(why, whylen, prefix,
               r && PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    *gone = PQstatus(c) != CONNECTION_OK;
    return NULL;
}

/* run_bin with every parameter in text. */
static PGresult *run(long slot, const char *what, const char *sql, int n,
                     const char *const *vals, ExecStatusType want, int *gone,
                     char *why, size_t whylen)
{
    return run_bin(slot, what, sql, n, vals, NULL, NULL, want, gone, why, whylen);
}

/* One statement on a slot of its own, sent once more on a fresh
 * connection when the first one broke (a restarted server): the result,
 * or NULL with why. */
static PGresult *run_alone(const char *what, const char *sql, int n, const char *const *vals,
                           ExecStatusType want, char *why, size_t whylen)
{
    PGresult *r = NULL;
    int attempt, gone = 0;
    long slot;

    for (attempt = 0; attempt < 2 && !r; attempt++) {
        if ((slot = acquire(why, whylen)) < 0)
            return NULL;
        r = run(slot, what, sql, n, vals, want, &gone, why, whylen);
        release(slot);
        if (!r && !gone)
            break;
    }
    return r;
}

smf_db_status smf_db_discover(const sm_dns_conf *dns, const char *domain, sm_peer_info *info,
                              char *why, size_t whylen)
{
    unsigned long mark = smf_cache_mark();
    int attempt, gone, rc;
    long slot;

    if (smf_cache_domain_get(domain, info, why, whylen))
        return SMF_DB_OK;
    /* The slot stays taken during a DNS lookup (about 2 s at worst per name
     * server): sm_discover reads the cache, asks DNS and writes the cache on
     * one connection. */
    for (attempt = 0; attempt < 2; attempt++) {
        if ((slot = acquire(why, whylen)) < 0)
            return SMF_DB_TEMPFAIL;
        rc = sm_discover(pool.conns[slot], dns, domain, info, why, whylen);
        gone = PQstatus(pool.conns[slot]) != CONNECTION_OK;
        release(slot);
        if (rc == 0) {
            /* not a peer's opt-out answered while DNS failed: asked again */
            if (info->status != SM_DNS_TEMPFAIL)
                smf_cache_domain_put(domain, info, why, mark);
            return SMF_DB_OK;
        }
        /* sm_discover says DNS through the status of its DNS part */
        if (info->status == SM_DNS_TEMPFAIL)
            return SMF_DB_DNSFAIL;
        if (!gone)
            break;
    }
    return SMF_DB_TEMPFAIL;
}

/* Which field of a recipient an array literal holds. */
typedef enum { RCPT_ADDR, RCPT_DOMAIN, RCPT_NOTIFY, RCPT_ORCPT } rcpt_field;

static const char *rcpt_value(const smf_db_rcpt *r, rcpt_field field)
{
    switch (field) {
    case RCPT_DOMAIN: return r->domain;
    case RCPT_NOTIFY: return r->notify;
    case RCPT_ORCPT: return r->orcpt;
    default: return r->addr;
    }
}

/* A PostgreSQL text[] literal of one field of the recipients. Addresses
 * cannot hold '"' or '\' (sm_addr_normalize), an ORCPT can (printable
 * US-ASCII, smf_dsn.c): the literal quotes and escapes. malloc'd; NULL on
 * ENOMEM. */
static char *array_literal(const smf_db_rcpt *items, size_t n, rcpt_field field)
{
    size_t len = 3, i;
    const char *s;
    char *out, *p;

    for (i = 0; i < n; i++)
        len += 2 * strlen(rcpt_value(&items[i], field)) + 3;
    if ((out = malloc(len)) == NULL)
        return NULL;
    p = out;
    *p++ = '{';
    for (i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        *p++ = '"';
        for (s = rcpt_value(&items[i], field); *s; s++) {
            if (*s == '"' || *s == '\\')
                *p++ = '\\';
            *p++ = *s;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

/* outbox_store_quota (sql/011): under the sender's "quota" advisory lock
 * (to the commit), the sender's use and quota, and, when the message fits,
 * outbox_store (sql/010): the message row, its outbox rows and the learned
 * contacts in one statement, one transaction. Its outbox INSERT fires
 * pending_match_outbox_insert (sql/004), which takes the per-domain
 * advisory lock pg_advisory_xact_lock_shared(7239033,
 * hashtext(recipient_domain)) for each recipient domain, in hash order, and
 * so waits while a subscription change of that domain (which holds it
 * exclusively) commits; then it adds a pending_match row for every
 * recipient whose domain subscribed to (sender or *@its domain, recipient),
 * and that insert NOTIFYs stubmail_poll with the domain at the commit.
 * sql/016: each outbox row keeps its NOTIFY and ORCPT, the message its
 * ENVID; sql/020: each outbox row the SHA-256 of the message's receipt;
 * sql/021: the submission's identity, and the id of the copy stored
 * already when this is a retry of it (then nothing is stored). */
static const char sql_store[] =
    "SELECT refused, coalesce(messages, -1), coalesce(bytes, -1), max_messages, max_bytes,"
    " coalesce(retry_of, '')"
    " FROM outbox_store_quota($1, $2, $3::bigint, $4, $5, $6::text[], $7::text[], $8::text[],"
    " $9::text[], $10::bytea, $11::bigint, $12::bigint, $13::text[], $14::text[], $15,"
    " $16::bytea, $17::bytea)";
/* sorted, so that concurrent learners take row locks in the same order */
static const char sql_learn[] =
    "INSERT INTO address_book (owner, contact, contact_domain)"
    " SELECT $1, c, d FROM unnest($2::text[], $3::text[]) AS t(c, d) ORDER BY c"
    " ON CONFLICT DO NOTHING";

/* The four figures of a quota row (columns 1 to 4: messages, bytes,
 * max_messages, max_bytes; the store's has a sixth) into quota. */
static smf_db_status quota_figures(const PGresult *r, smf_quota *quota, char *why,
                                   size_t whylen)
{
    if (PQntuples(r) != 1 || PQnfields(r) < 5) {
        snprintf(why, whylen, "quota: %d rows of %d columns, expected 1 of 5 or more",
                 PQntuples(r), PQnfields(r));
        return SMF_DB_TEMPFAIL;
    }
    quota->messages = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    quota->bytes = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    quota->max_messages = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    quota->max_bytes = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    return SMF_DB_OK;
}

smf_db_status smf_db_store(const char *id, const char *sender, long long size,
                           const char *spool_name, const unsigned char *body,
                           const char *format, const char *envid,
                           const unsigned char *ident, char *retry_of,
                           const smf_db_rcpt *outbox, size_t noutbox,
                           const smf_db_rcpt *contacts, size_t ncontacts,
                           const unsigned char *receipt_hash, smf_quota *quota, char *why,
                           size_t whylen)
{
    char sizebuf[24], maxmsgs[24], maxbytes[24];
    char *ob_addr = NULL, *ob_dom = NULL, *ab_addr = NULL, *ab_dom = NULL;
    char *ob_notify = NULL, *ob_orcpt = NULL;
    const char *vals[17];
    /* the body, the receipt's hash and the identity go as binary: no
     * escaping, no hex doubling */
    int lens[17] = { 0 }, fmts[17] = { 0 };
    smf_db_status rc = SMF_DB_TEMPFAIL;
    PGresult *r;
    int attempt, gone = 0;
    long slot;

    snprintf(sizebuf, sizeof sizebuf, "%lld", size);
    snprintf(maxmsgs, sizeof maxmsgs, "%lld", quota->max_messages);
    snprintf(maxbytes, sizeof maxbytes, "%lld", quota->max_bytes);
    ob_addr = array_literal(outbox, noutbox, RCPT_ADDR);
    ob_dom = array_literal(outbox, noutbox, RCPT_DOMAIN);
    ob_notify = array_literal(outbox, noutbox, RCPT_NOTIFY);
    ob_orcpt = array_literal(outbox, noutbox, RCPT_ORCPT);
    ab_addr = array_literal(contacts, ncontacts, RCPT_ADDR);
    ab_dom = array_literal(contacts, ncontacts, RCPT_DOMAIN);
    if (!ob_addr || !ob_dom || !ob_notify || !ob_orcpt || !ab_addr || !ab_dom) {
        snprintf(why, whylen, "out of memory");
        goto leave;
    }
    vals[0] = id; vals[1] = sender; vals[2] = sizebuf; vals[3] = spool_name;
    vals[4] = format; vals[5] = ob_addr; vals[6] = ob_dom; vals[7] = ab_addr;
    vals[8] = ab_dom; vals[9] = (const char *)body;
    lens[9] = body ? (int)size : 0;
    fmts[9] = 1;
    vals[10] = maxmsgs; vals[11] = maxbytes;
    vals[12] = ob_notify; vals[13] = ob_orcpt; vals[14] = envid;
    vals[15] = (const char *)receipt_hash;
    lens[15] = SM_RECEIPT_HASH_LEN;
    fmts[15] = 1;
    vals[16] = (const char *)ident;
    lens[16] = ident ? SMF_IDENT_LEN : 0;
    fmts[16] = 1;
    retry_of[0] = '\0';

    for (attempt = 0; attempt < 2; attempt++) {
        if ((slot = acquire(why, whylen)) < 0)
            goto leave;
        r = run_bin(slot, "outbox_store_quota", sql_store, 17, vals, lens, fmts,
                    PGRES_TUPLES_OK, &gone, why, whylen);
        release(slot);
        if (r) {
            rc = quota_figures(r, quota, why, whylen);
            if (rc == SMF_DB_OK && PQgetvalue(r, 0, 0)[0] == 't')
                rc = SMF_DB_OVERQUOTA;
            if (rc == SMF_DB_OK)
                snprintf(retry_of, SM_ID_LEN + 1, "%s", PQgetvalue(r, 0, 5));
            PQclear(r);
            goto leave;
        }
        if (!gone)
            goto leave;
        /* Sent, and the connection broke: it may have committed. Sending it
         * again says which; until an answer comes, nobody knows. */
        rc = SMF_DB_UNKNOWN;
    }
leave:
    free(ob_addr);
    free(ob_dom);
    free(ob_notify);
    free(ob_orcpt);
    free(ab_addr);
    free(ab_dom);
    return rc;
}

smf_db_status smf_db_quota(const char *sender, smf_quota *quota, char *why, size_t whylen)
{
    char maxmsgs[24], maxbytes[24];
    const char *vals[3] = { sender, maxmsgs, maxbytes };
    smf_db_status rc;
    PGresult *r;

    snprintf(maxmsgs, sizeof maxmsgs, "%lld", quota->max_messages);
    snprintf(maxbytes, sizeof maxbytes, "%lld", quota->max_bytes);
    /* in the store's shape (refused first), for quota_figures */
    if (!(r = run_alone("sender_quota_use",
                        "SELECT false, coalesce(messages, -1), coalesce(bytes, -1),"
                        " max_messages, max_bytes"
                        " FROM sender_quota_use($1, $2::bigint, $3::bigint)", 3, vals,
                        PGRES_TUPLES_OK, why, whylen)))
        return SMF_DB_TEMPFAIL;
    rc = quota_figures(r, quota, why, whylen);
    PQclear(r);
    return rc;
}

/* The DELETE cascades to the message's outbox rows and their pending_match
 * rows, whose delete trigger NOTIFYs stubmail_poll (sql/004); no advisory
 * lock is taken. */
smf_db_status smf_db_unstore(const char *id, char *why, size_t whylen)
{
    const char *vals[1] = { id };
    PGresult *r = run_alone("DELETE message", "DELETE FROM message WHERE id = $1", 1, vals,
                            PGRES_COMMAND_OK, why, whylen);

    if (!r)
        return SMF_DB_TEMPFAIL;
    PQclear(r);
    return SMF_DB_OK;
}

smf_db_status smf_db_learn(const char *owner, const smf_db_rcpt *contacts, size_t ncontacts,
                           char *why, size_t whylen)
{
    char *addrs = NULL, *doms = NULL;
    const char *vals[3];
    smf_db_status rc = SMF_DB_TEMPFAIL;
    PGresult *r;
    int attempt, gone = 0;
    long slot;

    if (ncontacts == 0)
        return SMF_DB_OK;
    addrs = array_literal(contacts, ncontacts, RCPT_ADDR);
    doms = array_literal(contacts, ncontacts, RCPT_DOMAIN);
    if (!addrs || !doms) {
        snprintf(why, whylen, "out of memory");
        goto leave;
    }
    vals[0] = owner; vals[1] = addrs; vals[2] = doms;
    for (attempt = 0; attempt < 2; attempt++) {
        if ((slot = acquire(why, whylen)) < 0)
            goto leave;
        r = run(slot, "INSERT address_book", sql_learn, 3, vals, PGRES_COMMAND_OK, &gone,
                why, whylen);
        release(slot);
        if (r) {
            PQclear(r);
            rc = SMF_DB_OK;
            goto leave;
        }
        if (!gone)
            break;
    }
leave:
    free(addrs);
    free(doms);
    return rc;
}

/* ---- recipients' own keys (WKD answers), cached ----------------------- */

smf_db_status smf_db_rcpt_key_get(const char *addr, char *status, size_t statuslen,
                                  char *fpr, size_t fprlen, char *why, size_t whylen)
{
    const char *vals[1] = { addr };
    unsigned long mark = smf_cache_mark();
    PGresult *r;

    status[0] = '\0';
    fpr[0] = '\0';
    if (smf_cache_rcpt_key_get(addr, status, statuslen, fpr, fprlen))
        return SMF_DB_OK;
    if (!(r = run_alone("recipient_key_get",
                        "SELECT status, coalesce(fpr, '') FROM recipient_key_get($1)", 1, vals,
                        PGRES_TUPLES_OK, why, whylen)))
        return SMF_DB_TEMPFAIL;
    if (PQntuples(r) == 1) {
        snprintf(status, statuslen, "%s", PQgetvalue(r, 0, 0));
        snprintf(fpr, fprlen, "%s", PQgetvalue(r, 0, 1));
        smf_cache_rcpt_key_put(addr, status, fpr, mark);
    }
    PQclear(r);
    return SMF_DB_OK;
}

smf_db_status smf_db_rcpt_key_put(const char *addr, const char *status, const char *fpr,
                                  const char *reason, char *why, size_t whylen)
{
    const char *vals[4] = { addr, status, fpr, reason };
    PGresult *r = run_alone("recipient_key_put", "SELECT recipient_key_put($1, $2, $3, $4)", 4,
                            vals, PGRES_TUPLES_OK, why, whylen);

    if (!r)
        return SMF_DB_TEMPFAIL;
    PQclear(r);
    return SMF_DB_OK;
}
