/* stubmail_poke — after a user accepts a sender (their page, or the
 * introductions digest's link), a UDP stub to the local pollerd
 * (StubmailUserStub) so that the sender's waiting mail is pulled now, not
 * at the next cycle. */
#ifndef STUBMAIL_POKE_H
#define STUBMAIL_POKE_H

#include "stubmail_req.h"

/* Send the stub "sender has mail for user". A stub is a hint: if it is
 * lost (logged), the next cycle pulls the mail. Nothing when
 * StubmailUserStub is unset. */
void stubmail_poke_pollerd(stubmail_req *q, const char *user, const char *sender);

#endif
