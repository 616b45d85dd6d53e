/* stubmail_discover — lib's discovery store (sm_discover.h) over the
 * request's mod_dbd connection: the peer table and the dns_cache functions
 * of sql/002, through the module's prepared statements. A login runs
 * sm_discover_run() on it for the polling domain's key fingerprint. */
#ifndef STUBMAIL_DISCOVER_H
#define STUBMAIL_DISCOVER_H

#include "sm_discover.h"
#include "stubmail_req.h"

/* The store over q's database connection (which must be acquired). A
 * failed cache write is logged and reported as stored: the answer stands,
 * and the next login asks DNS again. */
void stubmail_discover_store(stubmail_req *q, sm_discover_store *store);

#endif
