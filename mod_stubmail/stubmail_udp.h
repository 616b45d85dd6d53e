/* stubmail_udp — mod_stubmail's UDP poll responder (docs/PROTOCOL.md, "UDP
 * poll"): a helper process that Apache's parent starts after the
 * configuration pass, restarts when it dies, and stops with every restart
 * or stop, as mod_cgid does with its daemon. */
#ifndef STUBMAIL_UDP_H
#define STUBMAIL_UDP_H

#include "httpd.h"
#include "apr_pools.h"

#include "sm_token.h"

typedef struct stubmail_udp_conf {
    const char *listen;         /* IP:PORT the responder binds */
    const char *advertise;      /* IP:PORT the login answer names (default: listen) */
    const char *database;       /* libpq conninfo */
    apr_int64_t rate;           /* datagrams per second per source; burst twice that */
    const sm_token_keyring *tokens;     /* derives every session's key */
} stubmail_udp_conf;

/* post_config of the main server: starts the responder, except in the
 * first configuration pass. The configuration must live as long as pconf.
 * OK, or HTTP_INTERNAL_SERVER_ERROR (logged) when it cannot be started. */
int stubmail_udp_start(apr_pool_t *pconf, server_rec *s, const stubmail_udp_conf *conf);

#endif
