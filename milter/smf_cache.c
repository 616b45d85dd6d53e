/* smf_cache — the answers the milter would otherwise ask the database for
 * at every message, though they change rarely: each recipient domain's
 * verdict (sm_discover: the peer row and the cached _stubmail record) and
 * each recipient's cached WKD key (recipient_key). Two round trips a
 * diverted message, about a tenth of a millisecond of PostgreSQL's time
 * each (docs/BENCHMARKS.md, "The milter's answers cache").
 *
 * Nothing here may be staler than the database by more than the time a
 * NOTIFY takes. sql/024 notifies stubmail_keys of every changed row of
 * peer, dns_cache and recipient_key ("d:DOMAIN", "r:ADDRESS"; "*" for a
 * TRUNCATE): an admin's edit, an answer another milter (or this one)
 * cached, the janitor's cleaning. A thread of our own LISTENs on its own
 * connection and forgets what each notice names. While that connection is
 * down (PostgreSQL restarting) every lookup misses, and everything is
 * forgotten when it is back: what changed meanwhile was not heard.
 *
 * An answer read from the database just before a change, and put here
 * just after its notice was heard, would bring the old answer back: so a
 * lookup takes a mark before it reads, and its put is dropped if a notice
 * for its key (or a "forget all") was heard since the mark. Notices are
 * remembered in a ring of SMF_CACHE_HEARD; a put older than the ring is
 * dropped too.
 *
 * An entry also lives SMF_CACHE_SECS at most, which bounds how long a
 * verdict outlives its DNS TTL in dns_cache (the database does not say
 * when it expires). Only answers are kept: a temporary failure, or
 * "nothing cached" for a recipient key, is asked again. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "sm_log.h"
#include "smf.h"

#define SMF_CACHE_SLOTS   1024  /* entries; a full probe run evicts its first */
#define SMF_CACHE_PROBE   8
#define SMF_CACHE_SECS    10
#define SMF_CACHE_HEARD   256   /* notices remembered for the puts in flight */
#define SMF_CACHE_CHANNEL "stubmail_keys"

typedef enum { ENTRY_FREE = 0, ENTRY_DOMAIN, ENTRY_RCPT_KEY } entry_kind;

typedef struct entry {
    entry_kind kind;
    time_t expires;                     /* CLOCK_MONOTONIC seconds */
    char key[SM_ADDR_MAX + 1];          /* domain or address */
    union {
        struct {
            sm_peer_info info;
            char why[256];              /* sm_discover's note (an invalid record's fault) */
        } peer;
        struct {
            char status[16];
            char fpr[SM_PGP_FPR_MAX + 1];
        } rcpt;
    } v;
} entry;

/* A notice heard: which key it named (hash_of's hash, so a collision only
 * drops a put that was fine). */
typedef struct heard {
    entry_kind kind;
    uint32_t hash;
} heard;

static struct {
    pthread_mutex_t lock;               /* over all below but the thread's own */
    entry slots[SMF_CACHE_SLOTS];
    unsigned long notices;              /* notices heard, "forget all" counted too */
    unsigned long forgot_all;           /* the value of notices at the last one */
    heard ring[SMF_CACHE_HEARD];        /* notice n at ring[n % SMF_CACHE_HEARD] */
    atomic_int listening;               /* the LISTEN connection is up */
    char *conninfo;
    int stop_pipe[2];
    pthread_t thread;
    int started;
} cache = { .lock = PTHREAD_MUTEX_INITIALIZER, .stop_pipe = { -1, -1 } };

static time_t now_secs(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static uint32_t hash_of(entry_kind kind, const char *key)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;    /* FNV-1a */

    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h;
}

unsigned long smf_cache_mark(void)
{
    unsigned long mark;

    pthread_mutex_lock(&cache.lock);
    mark = cache.notices;
    pthread_mutex_unlock(&cache.lock);
    return mark;
}

/* The live entry of kind and key, copied into out; 1 hit, 0 miss. */
static int cache_get(entry_kind kind, const char *key, entry *out)
{
    uint32_t h = hash_of(kind, key);
    time_t now = now_secs();
    size_t i;
    int hit = 0;

    if (!atomic_load(&cache.listening) || strlen(key) > SM_ADDR_MAX)
        return 0;
    pthread_mutex_lock(&cache.lock);
    for (i = 0; i < SMF_CACHE_PROBE; i++) {
        const entry *e = &cache.slots[(h + i) % SMF_CACHE_SLOTS];

        if (e->kind == kind && strcmp(e->key, key) == 0) {
            if (e->expires > now) {
                *out = *e;
                hit = 1;
            }
            break;
        }
    }
    pthread_mutex_unlock(&cache.lock);
    return hit;
}

/* Was a notice for (kind, h) heard since mark? Under the lock. */
static int heard_since(unsigned long mark, entry_kind kind, uint32_t h)
{
    unsigned long n;

    if (cache.forgot_all > mark || cache.notices - mark > SMF_CACHE_HEARD)
        return 1;
    for (n = mark + 1; n <= cache.notices; n++) {
        const heard *x = &cache.ring[n % SMF_CACHE_HEARD];

        if (x->kind == kind && x->hash == h)
            return 1;
    }
    return 0;
}

/* Keep in (its kind, key and value set), read from the database after
 * mark (smf_cache_mark), unless a notice since has made it stale. */
static void cache_put(entry *in, unsigned long mark)
{
    uint32_t h = hash_of(in->kind, in->key);
    time_t now = now_secs();
    size_t i;
    entry *e, *victim = NULL;

    if (!atomic_load(&cache.listening) || strlen(in->key) > SM_ADDR_MAX)
        return;
    in->expires = now + SMF_CACHE_SECS;
    pthread_mutex_lock(&cache.lock);
    if (!heard_since(mark, in->kind, h)) {
        for (i = 0; i < SMF_CACHE_PROBE; i++) {
            e = &cache.slots[(h + i) % SMF_CACHE_SLOTS];
            if (e->kind == in->kind && strcmp(e->key, in->key) == 0) {
                victim = e;
                break;
            }
            if (!victim && (e->kind == ENTRY_FREE || e->expires <= now))
                victim = e;
        }
        *(victim ? victim : &cache.slots[h % SMF_CACHE_SLOTS]) = *in;
    }
    pthread_mutex_unlock(&cache.lock);
}

/* A notice: forget its key (kind ENTRY_FREE: everything). */
static void cache_forget(entry_kind kind, const char *key)
{
    uint32_t h = kind == ENTRY_FREE ? 0 : hash_of(kind, key);
    size_t i;

    pthread_mutex_lock(&cache.lock);
    cache.notices++;
    if (kind == ENTRY_FREE) {
        cache.forgot_all = cache.notices;
        memset(cache.slots, 0, sizeof cache.slots);
    } else {
        cache.ring[cache.notices % SMF_CACHE_HEARD] = (heard){ kind, h };
        for (i = 0; i < SMF_CACHE_PROBE; i++) {
            entry *e = &cache.slots[(h + i) % SMF_CACHE_SLOTS];

            if (e->kind == kind && strcmp(e->key, key) == 0) {
                e->kind = ENTRY_FREE;
                break;
            }
        }
    }
    pthread_mutex_unlock(&cache.lock);
}

/* A notice's payload (sql/024): "d:DOMAIN", "r:ADDRESS", or anything
 * else, "*" included, for "forget all". */
static void notice_heard(const char *payload)
{
    if (strncmp(payload, "d:", 2) == 0)
        cache_forget(ENTRY_DOMAIN, payload + 2);
    else if (strncmp(payload, "r:", 2) == 0)
        cache_forget(ENTRY_RCPT_KEY, payload + 2);
    else
        cache_forget(ENTRY_FREE, "");
}

void smf_cache_forget_all(void)
{
    cache_forget(ENTRY_FREE, "");
}

int smf_cache_domain_get(const char *domain, sm_peer_info *info, char *why, size_t whylen)
{
    entry e;

    if (!cache_get(ENTRY_DOMAIN, domain, &e))
        return 0;
    *info = e.v.peer.info;
    snprintf(why, whylen, "%s", e.v.peer.why);
    return 1;
}

void smf_cache_domain_put(const char *domain, const sm_peer_info *info, const char *why,
                          unsigned long mark)
{
    entry e = { .kind = ENTRY_DOMAIN };

    snprintf(e.key, sizeof e.key, "%s", domain);
    e.v.peer.info = *info;
    snprintf(e.v.peer.why, sizeof e.v.peer.why, "%s", why);
    cache_put(&e, mark);
}

int smf_cache_rcpt_key_get(const char *addr, char *status, size_t statuslen, char *fpr,
                           size_t fprlen)
{
    entry e;

    if (!cache_get(ENTRY_RCPT_KEY, addr, &e))
        return 0;
    snprintf(status, statuslen, "%s", e.v.rcpt.status);
    snprintf(fpr, fprlen, "%s", e.v.rcpt.fpr);
    return 1;
}

void smf_cache_rcpt_key_put(const char *addr, const char *status, const char *fpr,
                            unsigned long mark)
{
    entry e = { .kind = ENTRY_RCPT_KEY };

    snprintf(e.key, sizeof e.key, "%s", addr);
    snprintf(e.v.rcpt.status, sizeof e.v.rcpt.status, "%s", status);
    snprintf(e.v.rcpt.fpr, sizeof e.v.rcpt.fpr, "%s", fpr);
    cache_put(&e, mark);
}

/* A connection that LISTENs on the channel, or NULL (why logged once per
 * outage by the caller). */
static PGconn *listen_connect(char *why, size_t whylen)
{
    const char *const keys[] = { "connect_timeout", "fallback_application_name", "dbname",
                                 NULL };
    const char *const vals[] = { "5", "stubmail-milter cache", cache.conninfo, NULL };
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    PGresult *r = NULL;

    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(why, whylen, "%s", PQerrorMessage(c));
        goto fail;
    }
    r = PQexec(c, "LISTEN " SMF_CACHE_CHANNEL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(why, whylen, "LISTEN: %s", PQresultErrorMessage(r));
        goto fail;
    }
    PQclear(r);
    return c;
fail:
    PQclear(r);
    PQfinish(c);
    why[strcspn(why, "\n")] = '\0';
    return NULL;
}

/* Wait up to ms for the stop pipe; 1 when asked to stop. */
static int stop_asked(int ms)
{
    struct pollfd p = { cache.stop_pipe[0], POLLIN, 0 };

    return poll(&p, 1, ms) > 0;
}

static void *listen_main(void *unused)
{
    char why[512];
    PGconn *c = NULL;
    PGnotify *n;
    int down_logged = 0;

    (void)unused;
    for (;;) {
        if (c == NULL) {
            if ((c = listen_connect(why, sizeof why)) == NULL) {
                if (!down_logged)
                    sm_warn("answers cache off until the database is back (every recipient "
                            "domain and key is read from it meanwhile): %s", why);
                down_logged = 1;
                if (stop_asked(1000))
                    break;
                continue;
            }
            /* what changed while nobody listened was not heard */
            cache_forget(ENTRY_FREE, "");
            atomic_store(&cache.listening, 1);
            sm_info("answers cache on: recipient domains and keys kept %d s at most, "
                    "forgotten at each change (LISTEN " SMF_CACHE_CHANNEL ")", SMF_CACHE_SECS);
            down_logged = 0;
        }
        {
            struct pollfd p[2] = { { PQsocket(c), POLLIN, 0 },
                                   { cache.stop_pipe[0], POLLIN, 0 } };

            if (poll(p, 2, -1) < 0)
                continue;
            if (p[1].revents)
                break;
        }
        if (!PQconsumeInput(c)) {
            snprintf(why, sizeof why, "%s", PQerrorMessage(c));
            why[strcspn(why, "\n")] = '\0';
            atomic_store(&cache.listening, 0);
            sm_warn("answers cache off until the database is back: %s", why);
            down_logged = 1;
            PQfinish(c);
            c = NULL;
            continue;
        }
        while ((n = PQnotifies(c)) != NULL) {
            notice_heard(n->extra);
            PQfreemem(n);
        }
    }
    atomic_store(&cache.listening, 0);
    PQfinish(c);
    return NULL;
}

int smf_cache_start(const char *conninfo)
{
    sigset_t all, was;
    int rc;

    if ((cache.conninfo = strdup(conninfo)) == NULL || pipe(cache.stop_pipe) != 0)
        return -1;
    /* Signals are libmilter's (its thread sigwaits for SIGTERM and SIGHUP,
     * blocked in the threads it makes): ours starts before it, so it
     * blocks them itself, or a SIGTERM would kill the milter outright. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &was);
    rc = pthread_create(&cache.thread, NULL, listen_main, NULL);
    pthread_sigmask(SIG_SETMASK, &was, NULL);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    cache.started = 1;
    return 0;
}

void smf_cache_stop(void)
{
    if (cache.started) {
        if (write(cache.stop_pipe[1], "", 1) != 1)
            sm_warn("answers cache: cannot wake its thread to stop it");
        else
            pthread_join(cache.thread, NULL);
        cache.started = 0;
    }
    if (cache.stop_pipe[0] >= 0) {
        close(cache.stop_pipe[0]);
        close(cache.stop_pipe[1]);
        cache.stop_pipe[0] = cache.stop_pipe[1] = -1;
    }
    free(cache.conninfo);
    cache.conninfo = NULL;
}
