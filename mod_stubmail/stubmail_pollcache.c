/*
 * NAME
 *	stubmail_pollcache - the ETag of GET v1/poll from shared memory
 *
 * DESCRIPTION
 *	A table of STUBMAIL_POLLCACHE_SLOTS slots in an anonymous apr_shm
 *	segment that Apache's parent makes in post_config, so that every child
 *	and the UDP poll responder forked after it share it. A domain hashes to
 *	one slot (another domain of the same hash evicts it).
 *
 *	Each slot has a generation, gen, that every invalidation raises by one
 *	(an atomic increment: no lock, so the responder never waits for a
 *	child), and a content (domain, ETag, version, the generation it was
 *	read under, when) that children write under a seqlock, seq: a writer
 *	makes it odd by compare-and-swap, writes, makes it even again; a reader
 *	copies the content and trusts the copy only if seq was even and the
 *	same before and after. A writer that cannot take seq at once gives up
 *	(the entry stays a miss), so a child killed while writing leaves one
 *	slot that never hits, never a lock that others wait on.
 *
 *	The race that matters: a child reads the database, a change commits
 *	and is notified, and the child stores what it read. The child takes
 *	the slot's gen before its SELECT and stores it with the content; an
 *	entry counts only while gen has not moved since. A commit the SELECT
 *	did not see ends after that moment, and so does its notification.
 *
 *	Whether anyone is listening: the responder holds a POSIX record lock
 *	on a memfd (made with the segment, inherited by everyone) while its
 *	LISTEN connection is up, and releases it before it closes or when it
 *	finds it lost; the kernel releases it when the responder dies, SIGKILL
 *	too. A child asks with F_GETLK (one system call, no waiting) before
 *	it trusts or fills an entry. On (re)connecting, the responder raises
 *	every slot's gen after its LISTEN is in effect and before it takes
 *	the lock: whatever was filled while nobody listened is invalid.
 *
 *	An entry older than STUBMAIL_POLLCACHE_MAX_AGE is a miss, as in the
 *	responder's own cache: a change that no trigger announces (TRUNCATE,
 *	a table changed by hand with the triggers disabled) lasts that long.
 *	An expiry (sql/012) is a change nobody announces either, at an instant
 *	known beforehand: an entry is a miss from the next expiry of its
 *	domain's matches on, which the SELECT that filled it returned.
 *
 * DIAGNOSTICS
 *	At startup, a segment that cannot be made (error: the cache is off);
 *	in the responder, the lock it cannot take or give back (error).
 */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>              /* memfd_create: apxs CFLAGS define _GNU_SOURCE */
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "apr_time.h"

#include "sm_addr.h"
#include "stubmail_pollcache.h"

APLOG_USE_MODULE(stubmail);

#define STUBMAIL_POLLCACHE_SLOTS    4096
#define STUBMAIL_POLLCACHE_ETAG_MAX 127 /* poll_etag() is about 80 octets */
#define STUBMAIL_POLLCACHE_MAX_AGE  10  /* seconds: a change no trigger announces */

typedef struct pollcache_content {
    apr_uint32_t filled_gen;    /* gen of the slot before the SELECT */
    apr_int64_t version;
    apr_time_t at;              /* when it was stored */
    apr_time_t until;           /* the next expiry (sql/012) ends it; 0: none */
    char domain[SM_DOMAIN_MAX + 1];
    char etag[STUBMAIL_POLLCACHE_ETAG_MAX + 1];
} pollcache_content;

typedef struct pollcache_slot {
    apr_uint32_t gen;           /* raised by every invalidation */
    apr_uint32_t seq;           /* seqlock of content: odd while written */
    pollcache_content content;
} pollcache_slot;

typedef struct pollcache_table {
    pollcache_slot slots[STUBMAIL_POLLCACHE_SLOTS];
} pollcache_table;

/* This generation's table and the memfd whose lock says "listening";
 * NULL and -1 when the cache is off. Set in the parent before any fork. */
static pollcache_table *pollcache;
static int pollcache_lock_fd = -1;

/* FNV-1a, as the responder's own tables. */
static unsigned pollcache_slot_of(const char *domain)
{
    const unsigned char *c = (const unsigned char *)domain;
    unsigned long h = 2166136261UL;

    while (*c)
        h = (h ^ *c++) * 16777619UL;
    return (unsigned)(h % STUBMAIL_POLLCACHE_SLOTS);
}

/* pconf goes (restart, stop): later look-ups of this process find no
 * cache. Children of this generation keep their mapping and their copy of
 * the memfd; the responder that held its lock is stopped with pconf, so
 * they trust nothing in it any more. */
static apr_status_t pollcache_off(void *data)
{
    (void)data;
    if (pollcache_lock_fd >= 0)
        close(pollcache_lock_fd);
    pollcache_lock_fd = -1;
    pollcache = NULL;
    return APR_SUCCESS;
}

void stubmail_pollcache_init(apr_pool_t *pconf, server_rec *s, int on)
{
    apr_shm_t *shm = NULL;
    apr_status_t rv;
    int fd;

    pollcache = NULL;
    pollcache_lock_fd = -1;
    /* the first pass only checks the configuration */
    if (!on || ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return;
    if ((rv = apr_shm_create(&shm, sizeof(pollcache_table), NULL, pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "stubmail: poll cache: cannot make a "
                     "shared memory segment of %lu octets; every poll asks the database",
                     (unsigned long)sizeof(pollcache_table));
        return;
    }
    if ((fd = memfd_create("stubmail-pollcache", MFD_CLOEXEC)) < 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, "stubmail: poll cache: cannot make "
                     "its lock file (memfd_create); every poll asks the database");
        return;
    }
    /* apr_shm_create zeroes nothing: every gen 0, every content unfilled */
    memset(apr_shm_baseaddr_get(shm), 0, sizeof(pollcache_table));
    pollcache = apr_shm_baseaddr_get(shm);
    pollcache_lock_fd = fd;
    /* registered after the segment's own cleanup, so it runs before it */
    apr_pool_cleanup_register(pconf, NULL, pollcache_off, apr_pool_cleanup_null);
}

/* Whether the responder holds the lock: listening, with every
 * notification since its LISTEN applied or on its way. */
static int pollcache_listened(void)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_len = 1;
    if (fcntl(pollcache_lock_fd, F_GETLK, &fl) != 0)
        return 0;
    return fl.l_type != F_UNLCK;
}

int stubmail_pollcache_get(const char *domain, char *etag, apr_size_t etag_len,
                           apr_int64_t *version, stubmail_pollcache_ticket *ticket)
{
    pollcache_slot *slot;
    pollcache_content copy;
    apr_uint32_t seq, gen;

    memset(ticket, 0, sizeof(*ticket));
    if (pollcache == NULL || !pollcache_listened())
        return 0;
    ticket->usable = 1;
    ticket->slot = pollcache_slot_of(domain);
    slot = &pollcache->slots[ticket->slot];
    seq = __atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE);
    memcpy(&copy, &slot->content, sizeof(copy));
    gen = __atomic_load_n(&slot->gen, __ATOMIC_ACQUIRE);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    /* on a miss the caller's SELECT follows: it is this gen that its
     * answer must be stored under */
    ticket->gen = gen;
    if ((seq & 1) || __atomic_load_n(&slot->seq, __ATOMIC_RELAXED) != seq)
        return 0;
    copy.domain[sizeof(copy.domain) - 1] = '\0';
    copy.etag[sizeof(copy.etag) - 1] = '\0';
    if (copy.filled_gen != gen || copy.etag[0] == '\0' || strcmp(copy.domain, domain) != 0
        || apr_time_now() - copy.at >= apr_time_from_sec(STUBMAIL_POLLCACHE_MAX_AGE)
        || apr_time_now() < copy.at || (copy.until && apr_time_now() >= copy.until)
        || strlen(copy.etag) >= etag_len)
        return 0;
    memcpy(etag, copy.etag, strlen(copy.etag) + 1);
    *version = copy.version;
    return 1;
}

void stubmail_pollcache_put(const stubmail_pollcache_ticket *ticket, const char *domain,
                            const char *etag, apr_int64_t version, apr_time_t until)
{
    pollcache_slot *slot;
    apr_uint32_t seq;

    if (!ticket->usable || pollcache == NULL || strlen(domain) > SM_DOMAIN_MAX
        || strlen(etag) > STUBMAIL_POLLCACHE_ETAG_MAX)
        return;
    slot = &pollcache->slots[ticket->slot];
    seq = __atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE);
    if ((seq & 1) || !__atomic_compare_exchange_n(&slot->seq, &seq, seq + 1, 0,
                                                  __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return;                 /* another child is writing it */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    slot->content.filled_gen = ticket->gen;
    slot->content.version = version;
    slot->content.at = apr_time_now();
    slot->content.until = until;
    apr_cpystrn(slot->content.domain, domain, sizeof(slot->content.domain));
    apr_cpystrn(slot->content.etag, etag, sizeof(slot->content.etag));
    __atomic_store_n(&slot->seq, seq + 2, __ATOMIC_RELEASE);
}

void stubmail_pollcache_forget(const char *domain)
{
    if (pollcache != NULL)
        __atomic_add_fetch(&pollcache->slots[pollcache_slot_of(domain)].gen, 1,
                           __ATOMIC_SEQ_CST);
}

void stubmail_pollcache_listening(server_rec *s, int listening)
{
    struct flock fl;
    unsigned i;

    if (pollcache == NULL)
        return;
    if (listening)
        for (i = 0; i < STUBMAIL_POLLCACHE_SLOTS; i++)
            __atomic_add_fetch(&pollcache->slots[i].gen, 1, __ATOMIC_SEQ_CST);
    memset(&fl, 0, sizeof(fl));
    fl.l_type = listening ? F_WRLCK : F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_len = 1;
    if (fcntl(pollcache_lock_fd, F_SETLK, &fl) == 0) {
        if (listening)
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "stubmail: udp responder: poll "
                         "cache on");
        return;
    }
    /* closing the file releases this process's locks on it whatever
     * fcntl said: children stop trusting the cache, for good */
    ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, "stubmail: udp responder: cannot %s "
                 "the poll cache's lock; the cache stays off until Apache restarts",
                 listening ? "take" : "release");
    close(pollcache_lock_fd);
    pollcache_lock_fd = -1;
    pollcache = NULL;
}
