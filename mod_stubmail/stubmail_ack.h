/* stubmail_ack — acks: a polling domain says it has a message (POST
 * v1/message/ID/ack, one recipient of q->id) or many (POST v1/ack). */
#ifndef STUBMAIL_ACK_H
#define STUBMAIL_ACK_H

#include "stubmail_req.h"

/* Record one recipient's retrieval; delete the body after the last. */
int stubmail_ack(stubmail_req *q);

/* The same for a batch of (id, recipient), one commit. */
int stubmail_acks(stubmail_req *q);

#endif
