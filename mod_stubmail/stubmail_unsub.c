/* stubmail_unsub — the one-click unsubscribe endpoint (stubmail_unsub.h).
 *
 * The link is BASE/unsubscribe?u=USER&s=SENDER&k=KEY-ID&m=MAC, made by
 * pollerd (pollerd/pd_unsub.c) with a key of StubmailLinkKey; the MAC
 * (lib/sm_link.h) is the whole proof, so the endpoint asks for no login and
 * keeps no row per link. A link scanner that follows the URL only GETs the
 * confirmation page, which changes nothing; RFC 8058's POST with
 * List-Unsubscribe=One-Click, from the mail program's button or the page's,
 * does the work. That POST comes from anywhere by design (a mail provider's
 * server, the page itself): the MAC, not the origin, is what is checked.
 *
 * These answers are for people, so they are small HTML pages
 * (stubmail_html.h), not the JSON errors of the protocol's endpoints. */

#include <string.h>

#include "httpd.h"
#include "http_protocol.h"
#include "util_script.h"
#include "apr_strings.h"

#include "stubmail_db.h"
#include "stubmail_html.h"
#include "stubmail_link.h"
#include "stubmail_unsub.h"

APLOG_USE_MODULE(stubmail);

/* A link that does not check: say so, log why. */
static int bad_link(stubmail_req *q, const char *why)
{
    request_rec *r = q->r;

    SMLOG(q, APLOG_INFO, 0, "%s unsubscribe %s: 400 refused: %s", r->method,
          r->useragent_ip, why);
    ap_discard_request_body(r);
    return stubmail_html_page(q, HTTP_BAD_REQUEST, "This unsubscribe link does not work",
                "<p>The link is not one we made, or it was cut or changed on the way. "
                "Use the Unsubscribe button of your mail program, or the link in the "
                "message itself, whole.</p>\n");
}

/* The link's pair, its MAC checked: 1, or 0 after the answer. */
static int read_link(stubmail_req *q, stubmail_link *link)
{
    const char *why = "";
    int got = stubmail_link_read(q, SM_LINK_UNSUBSCRIBE, 1, "unsubscribe links", link, &why);

    if (got < 0)
        bad_link(q, why);
    return got == 1;
}

int stubmail_unsubscribe_page(stubmail_req *q)
{
    request_rec *r = q->r;
    stubmail_link link;
    const char *user, *sender;

    if (!read_link(q, &link))
        return q->ret;
    user = ap_escape_html(r->pool, link.user);
    sender = ap_escape_html(r->pool, link.sender);
    /* action: this very URL, query and all, so the POST carries the MAC */
    return stubmail_html_page(q, HTTP_OK, "Unsubscribe", apr_pstrcat(
        r->pool, "<p>Stop mail from <strong>", sender, "</strong> to <strong>", user,
        "</strong>?</p>\n<p>Mail from that sender will no longer be fetched for you. "
        "Writing to them again starts it again.</p>\n"
        "<form method=\"post\" action=\"", ap_escape_html(r->pool, r->unparsed_uri), "\">"
        "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
        "<button type=\"submit\">Unsubscribe</button></form>\n", NULL));
}

/* Does the form say List-Unsubscribe=One-Click? RFC 8058 allows either
 * form encoding: httpd parses the urlencoded one; a multipart part is
 * looked for by its name. 1 yes, 0 no, -1 after an error answer. */
static int one_click(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *ctype = apr_table_get(r->headers_in, "Content-Type"), *v;
    apr_table_t *form = NULL;
    apr_size_t len;
    char *body;

    if (ctype && strncasecmp(ctype, "multipart/form-data", 19) == 0) {
        if (!stubmail_read_form(q, &body, &len))
            return -1;
        if (!(v = strstr(body, "name=\"List-Unsubscribe\"")) || !(v = strstr(v, "\r\n\r\n")))
            return 0;
        return strncmp(v + 4, "One-Click", 9) == 0 && (v[13] == '\r' || v[13] == '\0');
    }
    if (!stubmail_read_urlencoded(q, &form))
        return -1;
    v = apr_table_get(form, "List-Unsubscribe");
    return v != NULL && strcmp(v, "One-Click") == 0;
}

int stubmail_unsubscribe(stubmail_req *q)
{
    request_rec *r = q->r;
    stubmail_link link;
    const char *args[2], *cols[2];
    int got, yes;

    if (!read_link(q, &link))
        return q->ret;
    if ((yes = one_click(q)) < 0)
        return q->ret;
    if (!yes) {
        SMLOG(q, APLOG_INFO, 0, "POST unsubscribe %s: 400 refused: no "
              "List-Unsubscribe=One-Click in the body (user=<%s> sender=<%s>)",
              r->useragent_ip, link.user, link.sender);
        return stubmail_html_page(q, HTTP_BAD_REQUEST, "Nothing was changed",
                    "<p>The request did not say <code>List-Unsubscribe=One-Click</code> "
                    "(RFC 8058). Use the button on the page this link shows.</p>\n");
    }
    if (!stubmail_db(q))
        return q->ret;
    args[0] = link.user;
    args[1] = link.sender;
    got = stubmail_db_first_row(q, STMT_UNSUBSCRIBE, 2, args, 2, cols);
    if (got != 1)
        return stubmail_fail(q, "unavailable", "try again later",
                             apr_psprintf(r->pool, "unsubscribe user=<%s> sender=<%s>: the "
                                          "database did not answer", link.user, link.sender));
    SMLOG(q, APLOG_NOTICE, 0, "unsubscribe %s: user=<%s> sender=<%s>: address-book entry %s, "
          "%s", r->useragent_ip, link.user, link.sender,
          strcmp(cols[0], "t") == 0 ? "removed" : "none", strcmp(cols[1], "t") == 0
          ? "blocked" : "already blocked");
    return stubmail_html_page(q, HTTP_OK, "Unsubscribed", apr_pstrcat(
        r->pool, "<p>Mail from <strong>", ap_escape_html(r->pool, link.sender),
        "</strong> will no longer be fetched for <strong>",
        ap_escape_html(r->pool, link.user), "</strong>.</p>\n"
        "<p>Changed your mind? Write to them: that starts their mail again.</p>\n", NULL));
}
