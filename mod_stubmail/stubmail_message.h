/* stubmail_message — one message of the outbox, by its id (q->id): its body
 * (GET v1/message/ID). */
#ifndef STUBMAIL_MESSAGE_H
#define STUBMAIL_MESSAGE_H

#include "stubmail_req.h"

/* The body, streamed from the spool (sendfile; Range by httpd). */
int stubmail_fetch(stubmail_req *q);

#endif
