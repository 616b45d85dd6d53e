/* stubmail_html — the frame of the pages for people (stubmail_html.h).
 *
 * Plain server-made HTML that works without JavaScript and on a phone:
 * one inline style sheet, no script, no outside resource. */

#include <string.h>

#include "httpd.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include "stubmail_html.h"

#define STUBMAIL_STYLE                                                           \
    "body{font-family:system-ui,sans-serif;max-width:48em;margin:1.5em auto;"   \
    "padding:0 1em;line-height:1.5;color:#222}"                                   \
    "nav a{margin-right:1.2em}nav a.here{font-weight:bold;text-decoration:none;"  \
    "color:#222}"                                                                 \
    "table{border-collapse:collapse;width:100%}td,th{text-align:left;"            \
    "padding:.3em .5em .3em 0;border-bottom:1px solid #ddd;vertical-align:top;"   \
    "overflow-wrap:break-word}"                                                     \
    "form.inline{display:inline}button{font-size:1em;padding:.3em 1em;"          \
    "white-space:nowrap;margin:.1em 0}"                                           \
    "input[type=text]{font-size:1em;padding:.3em;width:16em;max-width:100%}"      \
    ".note{color:#555}.done{color:#070}.rejected{color:#a00}"

int stubmail_html_page(stubmail_req *q, int status, const char *title, const char *body)
{
    request_rec *r = q->r;
    const char *t = ap_escape_html(r->pool, title);

    /* what a page shows is the user's own, and its URL may be a capability */
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->headers_out, "Referrer-Policy", "no-referrer");
    apr_table_setn(r->headers_out, "Content-Security-Policy",
                   "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                   "frame-ancestors 'none'");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    apr_table_setn(r->headers_out, "X-Robots-Tag", "noindex");
    return stubmail_send(q, status, "text/html; charset=utf-8", apr_pstrcat(
        r->pool, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>", t, "</title><style>" STUBMAIL_STYLE "</style></head>\n"
        "<body><h1>", t, "</h1>\n", body, "</body></html>\n", NULL));
}

int stubmail_wants_json(request_rec *r)
{
    const char *accept = apr_table_get(r->headers_in, "Accept");

    return accept != NULL && ap_strcasestr(accept, "application/json") != NULL;
}
