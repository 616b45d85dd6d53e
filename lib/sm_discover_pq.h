/* sm_discover_pq — discovery (sm_discover.h) on a libpq connection: the
 * peer table and dns_cache (dns_cache_get / dns_cache_put, sql/002). */
#ifndef SM_DISCOVER_PQ_H
#define SM_DISCOVER_PQ_H

#include <libpq-fe.h>

#include "sm_discover.h"

/* sm_discover_run over db, needing outbox and fpr; results as there. The
 * dns_cache_put INSERT runs in the connection's current transaction: a
 * failure there aborts it. */
int sm_discover(PGconn *db, const sm_dns_conf *dns, const char *domain,
                sm_peer_info *out, char *why, size_t whylen);

#endif
