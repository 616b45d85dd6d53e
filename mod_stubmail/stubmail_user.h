/* stubmail_user — the user's own page (SetHandler stubmail-user): their
 * address book, blocks and introductions (stubmail_user_book.c) and what
 * became of the mail they sent (stubmail_user_sent.c).
 *
 * Who the user is comes from Apache's own authentication (REMOTE_USER),
 * never from us: "bob" is bob@StubmailUserDomain, "bob@b.example" must be
 * at that domain. Pages are HTML without script; the same URLs answer JSON
 * to a client whose Accept names application/json. Every change is a POST
 * of a form that carries the user's form MAC (lib/sm_link.h), so another
 * site cannot make a user's browser change anything. */
#ifndef STUBMAIL_USER_H
#define STUBMAIL_USER_H

#include <jansson.h>

#include "stubmail_req.h"

/* The handler of "stubmail-user", for mod_stubmail.c: DECLINED for any
 * other handler. */
int stubmail_user_handler(request_rec *r);

/* ---- shared by the page files ----------------------------------------- */

/* The request of a page: q->user is the signed-in user's address. */
typedef struct stubmail_user_req {
    stubmail_req q;
    const char *base;           /* the <Location> path, for links and forms */
    const char *form_mac;       /* "KEY-ID.MAC" for this user's forms */
    apr_table_t *form;          /* a POST's fields, checked against form_mac */
} stubmail_user_req;

/* The navigation between the pages, here being "book" or "sent"; HTML. */
const char *stubmail_user_nav(stubmail_user_req *u, const char *here);

/* A form of one button: POST to path below base, with the form MAC, the
 * hidden fields (name, value pairs, NULL-terminated; values raw) and the
 * button's label. HTML. */
const char *stubmail_user_button(stubmail_user_req *u, const char *path, const char *label,
                                 ...);

/* After a change: a 303 to path below base with "?done=WHAT&c=CONTACT" for
 * the page to say what was done, or, to a JSON client, result (taken). */
int stubmail_user_done(stubmail_user_req *u, const char *path, const char *what,
                       const char *contact, json_t *result);

/* The notice of the change just made, from the query (?done=&c=) the 303
 * of stubmail_user_done added; HTML, "" without one. */
const char *stubmail_user_notice(stubmail_user_req *u);

/* 2026-12-07T11:20:17Z as "2026-12-07 11:20 UTC" (r->pool). */
const char *stubmail_user_time(stubmail_user_req *u, const char *rfc3339);

int stubmail_user_book_page(stubmail_user_req *u);
int stubmail_user_book_change(stubmail_user_req *u);
/* One recipient of one of the user's sent messages (STMT_USER_SENT). */
typedef struct sent_row {
    const char *id;
    const char *sent;
    const char *size;
    const char *to;
    const char *retrieved;      /* "" while waiting; when recalled, if recalled */
    const char *reason;         /* "" unless rejected */
    const char *expires;        /* when it expires unfetched (sql/012) */
    int expired;
    int recalled;               /* by the sender (sql/015) */
} sent_row;

/* The recipients of user's last STUBMAIL_USER_SENT messages, newest first,
 * into *rows (sent_row): 1, or 0 after the error answer. */
int stubmail_sent_rows(stubmail_req *q, const char *user, apr_array_header_t **rows);

/* waiting, retrieved, rejected, expired or recalled */
const char *stubmail_sent_status(const sent_row *s);

int stubmail_user_sent_page(stubmail_user_req *u);
int stubmail_user_sent_change(stubmail_user_req *u);

#endif
