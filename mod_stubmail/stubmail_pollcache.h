/* stubmail_pollcache — each polling domain's ETag and subscription version
 * (what GET v1/poll?version=V compares with) in shared memory across
 * Apache's children, so that an idle poll answers 304 without the
 * database. The UDP poll responder keeps it true: it LISTENs on
 * stubmail_poll and makes a domain's entry invalid for every notification,
 * and children trust no entry while it is not listening (dead, restarting,
 * or without its database connection). docs/mod_stubmail.md, "The poll
 * cache", says why it is built this way. */
#ifndef STUBMAIL_POLLCACHE_H
#define STUBMAIL_POLLCACHE_H

#include "httpd.h"
#include "apr_pools.h"

/* The longest ETag kept; poll_etag() is about 80 octets. */
#define STUBMAIL_POLLCACHE_ETAG_MAX 127

/* What a child learns from the cache: on a hit the entry; on a miss, what
 * it needs to store the answer of the database afterwards. */
typedef struct stubmail_pollcache_ticket {
    int usable;                 /* 0: no cache, or its keeper is not listening */
    unsigned slot;
    apr_uint32_t gen;           /* the slot's generation before the SELECT */
} stubmail_pollcache_ticket;

/* post_config of the main server, before the responder is forked: with on,
 * a fresh segment for this generation of children (none in the first,
 * configuration-only pass); with off, none. A segment that cannot be made
 * is logged and leaves the cache off. */
void stubmail_pollcache_init(apr_pool_t *pconf, server_rec *s, int on);

/* A child's look-up: 1 with etag (of size etag_len) and *version when the
 * entry of domain can be trusted, else 0, with *ticket for
 * stubmail_pollcache_put. Takes the ticket before anything else, so the
 * caller's SELECT comes after it. */
int stubmail_pollcache_get(const char *domain, char *etag, apr_size_t etag_len,
                           apr_int64_t *version, stubmail_pollcache_ticket *ticket);

/* Store what the database said after a miss; until (0: no end) is when
 * the ETag stops being true by itself, the next expiry (sql/012). An
 * invalidation of the slot since the ticket was taken leaves the stored
 * entry invalid; a slot being written by another child is left alone. */
void stubmail_pollcache_put(const stubmail_pollcache_ticket *ticket, const char *domain,
                            const char *etag, apr_int64_t version, apr_time_t until);

/* The entry of domain is no longer true: a notification (the responder),
 * or a change this child itself committed (ack, subscription change). */
void stubmail_pollcache_forget(const char *domain);

/* The responder: listening 1 once its LISTEN is in effect (every entry is
 * made invalid, then children may trust the cache), 0 before it closes
 * or loses the connection. Its exit ends the listening too. */
void stubmail_pollcache_listening(server_rec *s, int listening);

#endif
