/* stubmail_poll — the endpoints a poller calls every cycle (POST v1/poll,
 * POST v1/subscription, GET v1/poll?version=V) and the rate gates in front
 * of polls and logins (token buckets in the database, shared by every
 * child and front end). */
#ifndef STUBMAIL_POLL_H
#define STUBMAIL_POLL_H

#include "stubmail_req.h"

/* POST v1/poll: what is waiting for the pairs of the body. */
int stubmail_poll_post(stubmail_req *q);

/* POST v1/subscription: change the domain's pairs, all or nothing. */
int stubmail_subscription(stubmail_req *q);

/* GET v1/poll?version=V: what is waiting for the subscription; ETag, 304. */
int stubmail_poll_get(stubmail_req *q);

/* StubmailLoginAddressRate, then StubmailLoginRate, for a login claiming
 * domain: 1 to go on, 0 after the error answer (429 or 503). Needs the
 * request's database connection. */
int stubmail_login_rate(stubmail_req *q, const char *domain);

#endif
