/* stubmail_intro — the introductions digest's links (stubmail_intro.h).
 *
 * The link is BASE/introduction?u=USER&s=SENDER&k=KEY-ID&m=MAC&do=WHAT,
 * made by pollerd (pollerd/pd_digest.c) with a key of StubmailLinkKey; the
 * MAC (lib/sm_link.h, SM_LINK_INTRO) over (user, sender) is the whole
 * proof, as for /unsubscribe: no login, no row per link, and a link made for
 * one pair checks for no other (nor as an unsubscribe link). do= in the
 * link only says which button the page puts first: the MAC does not cover
 * it, and the choice is the POST's. A GET, which link scanners and
 * previews make, changes nothing. The POST does it in one statement, the
 * same as the user's page (sql/014): address_add (the sender into the
 * book, the introduction and any block gone) or address_unsubscribe with
 * source 'user' (the sender blocked, the introduction gone); an accept then
 * pokes pollerd (stubmail_poke.h) so that the waiting mail comes now. */

#include <string.h>

#include "httpd.h"
#include "http_protocol.h"
#include "util_script.h"
#include "apr_strings.h"

#include "stubmail_db.h"
#include "stubmail_html.h"
#include "stubmail_intro.h"
#include "stubmail_link.h"
#include "stubmail_poke.h"

APLOG_USE_MODULE(stubmail);

/* A link that does not check: say so, log why. */
static int bad_link(stubmail_req *q, const char *why)
{
    request_rec *r = q->r;

    SMLOG(q, APLOG_INFO, 0, "%s introduction %s: 400 refused: %s", r->method,
          r->useragent_ip, why);
    ap_discard_request_body(r);
    return stubmail_html_page(q, HTTP_BAD_REQUEST, "This link does not work",
                "<p>The link is not one we made, or it was cut or changed on the way. "
                "Use the link in the mail whole, or answer on your address book page.</p>\n");
}

/* The link's pair, its MAC checked: 1, or 0 after the answer. */
static int read_link(stubmail_req *q, stubmail_link *link)
{
    const char *why = "";
    int got = stubmail_link_read(q, SM_LINK_INTRO, 1, "introduction links", link, &why);

    if (got < 0)
        bad_link(q, why);
    return got == 1;
}

/* The button the link hints at (do=decline in a digest's Decline link). */
static int decline_first(request_rec *r)
{
    apr_table_t *args = NULL;
    const char *hint;

    ap_args_to_table(r, &args);
    hint = apr_table_get(args, "do");
    return hint && strcmp(hint, "decline") == 0;
}

/* A button that POSTs do=what to this very URL (query and all, so the POST
 * carries the MAC). */
static const char *button(request_rec *r, const char *what, const char *label)
{
    return apr_pstrcat(r->pool, "<form method=\"post\" action=\"",
                       ap_escape_html(r->pool, r->unparsed_uri), "\">"
                       "<input type=\"hidden\" name=\"do\" value=\"", what, "\">"
                       "<button type=\"submit\" id=\"", what, "\">", label,
                       "</button></form>\n", NULL);
}

int stubmail_intro_page(stubmail_req *q)
{
    request_rec *r = q->r;
    stubmail_link link;
    const char *accept, *decline;

    if (!read_link(q, &link))
        return q->ret;
    accept = button(r, "accept", "Accept: fetch their mail");
    decline = button(r, "decline", "Decline: never fetch it");
    return stubmail_html_page(q, HTTP_OK, "Someone wants to write to you", apr_pstrcat(
        r->pool, "<p><strong>", ap_escape_html(r->pool, link.sender), "</strong> has mail "
        "waiting for <strong>", ap_escape_html(r->pool, link.user), "</strong> but is not "
        "in your address book.</p>\n<p>Accept, and their mail is fetched for you now and "
        "from now on. Decline, and it never is (writing to them lets them in again).</p>\n",
        decline_first(r) ? decline : accept, decline_first(r) ? accept : decline, NULL));
}

/* The form's do=, or NULL. */
static const char *form_do(request_rec *r, char *body)
{
    const char *ctype = apr_table_get(r->headers_in, "Content-Type");
    char *pair, *state = NULL, *v;

    if (!ctype || strncasecmp(ctype, "application/x-www-form-urlencoded", 33) != 0)
        return NULL;
    for (pair = apr_strtok(body, "&", &state); pair; pair = apr_strtok(NULL, "&", &state)) {
        if (!(v = strchr(pair, '=')))
            continue;
        *v++ = '\0';
        if (ap_unescape_urlencoded(pair) == OK && ap_unescape_urlencoded(v) == OK
            && strcmp(pair, "do") == 0)
            return v;
    }
    return NULL;
}

int stubmail_intro(stubmail_req *q)
{
    request_rec *r = q->r;
    stubmail_link link;
    const char *args[2], *cols[3], *act, *done;
    char *body;
    apr_size_t len;
    int accept, got;

    if (!read_link(q, &link))
        return q->ret;
    if (!stubmail_read_form(q, &body, &len))
        return q->ret;
    act = form_do(r, body);
    if (!act || (strcmp(act, "accept") != 0 && strcmp(act, "decline") != 0)) {
        SMLOG(q, APLOG_INFO, 0, "POST introduction %s: 400 refused: no do=accept or "
              "do=decline in the form (user=<%s> sender=<%s>)", r->useragent_ip, link.user,
              link.sender);
        return stubmail_html_page(q, HTTP_BAD_REQUEST, "Nothing was changed",
                    "<p>The request said neither Accept nor Decline. Use a button on the "
                    "page this link shows.</p>\n");
    }
    accept = strcmp(act, "accept") == 0;
    if (!stubmail_db(q))
        return q->ret;
    args[0] = link.user;
    args[1] = link.sender;
    got = stubmail_db_first_row(q, accept ? STMT_USER_ADD : STMT_USER_BLOCK, 2, args,
                                accept ? 3 : 2, cols);
    if (got != 1)
        return stubmail_fail(q, "unavailable", "try again later",
                             apr_psprintf(r->pool, "introduction %s user=<%s> sender=<%s>: the "
                                          "database did not answer", act, link.user,
                                          link.sender));
    done = accept ? "accepted" : "declined";
    SMLOG(q, APLOG_NOTICE, 0, "introduction: user=<%s> sender=<%s> %s%s (from %s)",
          link.user, link.sender, done, accept
          ? (strcmp(cols[2], "t") == 0 ? "" : ", no introduction was waiting")
          : (strcmp(cols[1], "t") == 0 ? ", blocked" : ", already blocked"), r->useragent_ip);
    if (accept)
        stubmail_poke_pollerd(q, link.user, link.sender);
    return stubmail_html_page(q, HTTP_OK, accept ? "Accepted" : "Declined", apr_pstrcat(
        r->pool, "<p>Mail from <strong>", ap_escape_html(r->pool, link.sender), "</strong> ",
        accept ? "is fetched for <strong>" : "will never be fetched for <strong>",
        ap_escape_html(r->pool, link.user), "</strong>", accept ? " from now on; what "
        "waits comes in a moment.</p>\n" : ".</p>\n<p>Changed your mind? Write to them: "
        "that lets them in.</p>\n", NULL));
}
