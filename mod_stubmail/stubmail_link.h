/* stubmail_link — the signed links of the pages for people (one-click
 * unsubscribe, introductions, the sent-mail feed): their query fields
 * u=USER[&s=SENDER]&k=KEY-ID&m=MAC, checked against StubmailLinkKey
 * (lib/sm_link.h). The MAC is such a link's whole proof. */
#ifndef STUBMAIL_LINK_H
#define STUBMAIL_LINK_H

#include "sm_addr.h"
#include "sm_link.h"
#include "stubmail_req.h"

/* What a link names, once its MAC checked: normalized addresses. */
typedef struct stubmail_link {
    char user[SM_ADDR_MAX + 1];
    char sender[SM_ADDR_MAX + 1];       /* "" for a link without s= */
} stubmail_link;

/* The query's fields for purpose (with_sender: s= is part of it), the MAC
 * checked: 1 with *link; 0 after the answer 404 when no StubmailLinkKey is
 * configured (what = the links' name, for the log); -1 when the link does
 * not check, with *why for the log (the caller answers). */
int stubmail_link_read(stubmail_req *q, sm_link_purpose purpose, int with_sender,
                       const char *what, stubmail_link *link, const char **why);

#endif
