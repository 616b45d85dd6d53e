/* stubmail_feed — a user's sent mail as an Atom feed (RFC 4287) at a
 * private address, for a feed reader that polls it: what the sent view of
 * the user's page shows, as events ("bob@b.example fetched your message
 * of ..."). */
#ifndef STUBMAIL_FEED_H
#define STUBMAIL_FEED_H

#include "stubmail_req.h"

/* The feed address of user: StubmailFeedURL?u=USER&k=KEY-ID&m=MAC, signed
 * with the newest StubmailLinkKey; NULL when either is not configured. */
const char *stubmail_feed_url(stubmail_req *q, const char *user);

/* GET (and HEAD) /feed below the protocol's <Location>: the feed, its MAC
 * the only proof; 304 to a conditional GET when nothing happened since. */
int stubmail_feed(stubmail_req *q);

#endif
