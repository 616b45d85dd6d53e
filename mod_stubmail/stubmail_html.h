/* stubmail_html — the pages mod_stubmail shows to people (the one-click
 * unsubscribe page, the user's own page), as opposed to the JSON of the
 * protocol: one frame, the headers every such page carries, and the
 * choice between HTML and JSON that the user's page offers programs. */
#ifndef STUBMAIL_HTML_H
#define STUBMAIL_HTML_H

#include "stubmail_req.h"

/* A whole page: title (plain text, also its heading) and body (HTML, everything a sender or a
 * user controls already escaped), with status. The headers keep the page
 * out of caches, frames and Referer headers, and allow no script. OK. */
int stubmail_html_page(stubmail_req *q, int status, const char *title, const char *body);

/* 1 if the client asks for JSON (its Accept names application/json). */
int stubmail_wants_json(request_rec *r);

#endif
