/* stubmail_metrics — the module's counters for Prometheus: requests by
 * endpoint and status, octets served, rate-limit refusals (in shared
 * memory, across children), and the outbox by state from the database,
 * served by the handler stubmail-metrics. */
#ifndef STUBMAIL_METRICS_H
#define STUBMAIL_METRICS_H

#include "httpd.h"

/* The note (r->notes) the protocol handler puts the endpoint's name in. */
#define STUBMAIL_METRICS_NOTE "stubmail-endpoint"

/* post_config, in Apache's parent: the shared counters. */
void stubmail_metrics_init(apr_pool_t *pconf, server_rec *s);

/* log_transaction: count a request the protocol handler answered. */
int stubmail_metrics_count(request_rec *r);

/* The handler stubmail-metrics. */
int stubmail_metrics_handler(request_rec *r);

#endif
