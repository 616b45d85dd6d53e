/* stubmail_discover — the key fingerprint a polling domain publishes, for
 * its login: the admin's peer.fpr when pinned, else the fpr of its
 * _stubmail record, read through table dns_cache and asked of DNS on a
 * miss (sql/002 keeps the TTL policy, shared with the milter and pollerd),
 * over the request's mod_dbd connection. */
#ifndef STUBMAIL_DISCOVER_H
#define STUBMAIL_DISCOVER_H

#include "sm_pgp.h"
#include "stubmail_req.h"

/* Answers of stubmail_domain_fpr. */
enum { STUBMAIL_FPR_FOUND, STUBMAIL_FPR_UNKNOWN, STUBMAIL_FPR_DNS_TEMPFAIL,
       STUBMAIL_FPR_DB_ERROR };

/* fpr gets SM_PGP_FPR_MAX + 1 bytes; *source says where a found one came
 * from, *why why there is none (both in r->pool). A definite DNS answer is
 * cached, a temporary failure is not. */
int stubmail_domain_fpr(stubmail_req *q, const char *domain, char *fpr,
                        const char **source, const char **why);

#endif
