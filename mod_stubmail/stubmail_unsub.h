/* stubmail_unsub — the receiving ISP's one-click unsubscribe endpoint
 * (RFC 8058): the link pollerd puts into each pulled message, GET for a
 * confirmation page, POST to stop the sender for that user. */
#ifndef STUBMAIL_UNSUB_H
#define STUBMAIL_UNSUB_H

#include "stubmail_req.h"

/* GET (and HEAD): a page that names the pair and carries the button. */
int stubmail_unsubscribe_page(stubmail_req *q);

/* POST: List-Unsubscribe=One-Click stops the sender (sql/014). */
int stubmail_unsubscribe(stubmail_req *q);

#endif
