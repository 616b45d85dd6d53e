/* stubmail_intro — the accept / decline links of the introductions digest
 * pollerd mails a user (pollerd/pd_digest.c): GET for a page with the two
 * buttons, POST do=accept or do=decline to act. */
#ifndef STUBMAIL_INTRO_H
#define STUBMAIL_INTRO_H

#include "stubmail_req.h"

/* GET (and HEAD): who wants to write, with Accept and Decline. */
int stubmail_intro_page(stubmail_req *q);

/* POST: do=accept adds the sender to the user's address book and pulls
 * their mail now; do=decline blocks them (sql/014). */
int stubmail_intro(stubmail_req *q);

#endif
