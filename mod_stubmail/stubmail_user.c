/* stubmail_user — the user's own page: who the user is, the form MAC, the
 * routes, and what the page files share (stubmail_user.h).
 *
 * The page trusts REMOTE_USER, set by whatever authentication the ISP
 * already runs for its users (mod_auth_basic with mod_authn_dbd or
 * mod_authnz_ldap, a front end's), and nothing of its own: no passwords,
 * no sessions, no cookies. What keeps another site from making a signed-in
 * browser change the user's address book is the form MAC: every form of
 * the page carries HMAC(StubmailLinkKey, user), which a page of another
 * origin cannot read; Origin and Sec-Fetch-Site, when the browser sends
 * them, must also say the POST came from this site. */

#include <stdarg.h>
#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "http_protocol.h"
#include "util_script.h"
#include "apr_strings.h"

#include "sm_addr.h"
#include "sm_link.h"
#include "stubmail_html.h"
#include "stubmail_user.h"

APLOG_USE_MODULE(stubmail);

/* REMOTE_USER as the user's address: 1, or 0 after the answer. */
static int user_identity(stubmail_user_req *u)
{
    stubmail_req *q = &u->q;
    request_rec *r = q->r;
    const char *domain = q->conf->user_domain ? q->conf->user_domain : q->conf->domain;
    const char *name = r->user, *why = "";
    char addr[SM_ADDR_MAX + 1];

    if (domain == NULL) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "stubmail: configuration: the user's "
                      "page needs StubmailUserDomain (or StubmailDomain) to know whose "
                      "addresses its users have");
        return stubmail_fail_0(q, "internal_error", "this page is not set up yet",
                               "no StubmailUserDomain");
    }
    if (name == NULL || *name == '\0') {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "stubmail: configuration: %s has no "
                      "signed-in user (REMOTE_USER); put Apache authentication on its "
                      "<Location> (AuthType ..., Require valid-user)", r->uri);
        return stubmail_fail_0(q, "forbidden", "sign in first", "no REMOTE_USER");
    }
    if (sm_addr_normalize(strchr(name, '@') ? name : apr_pstrcat(r->pool, name, "@", domain,
                                                                  NULL),
                          addr, sizeof(addr), &why) != 0
        || strcmp(sm_addr_domain(addr), domain) != 0)
        return stubmail_fail_0(q, "forbidden", "your sign-in name is not a mail address here",
                               apr_psprintf(r->pool, "REMOTE_USER '%s' is no address at %s%s%s",
                                            ap_escape_logitem(r->pool, name), domain,
                                            *why ? ": " : "", why));
    q->user = apr_pstrdup(r->pool, addr);
    return 1;
}

/* The user's form MAC under the newest StubmailLinkKey: 1, or 0 after the
 * answer. */
static int user_form_mac(stubmail_user_req *u)
{
    stubmail_req *q = &u->q;
    char mac[SM_LINK_MAC_LEN + 1];
    const char *kid = NULL, *why = "no StubmailLinkKey";

    if (q->conf->link_keys == NULL
        || sm_link_mac(SM_LINK_FORM, q->conf->link_keys, NULL, q->user, "", mac, sizeof(mac),
                       &kid, &why) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r, "stubmail: configuration: the user's "
                      "page signs its forms with StubmailLinkKey: %s", why);
        return stubmail_fail_0(q, "internal_error", "this page is not set up yet", why);
    }
    u->form_mac = apr_pstrcat(q->r->pool, kid, ".", mac, NULL);
    return 1;
}

/* Did the POST come from this site? Browsers say where a request comes
 * from in Sec-Fetch-Site and Origin; programs send neither, and have the
 * form MAC to show. */
static const char *cross_site(request_rec *r)
{
    const char *site = apr_table_get(r->headers_in, "Sec-Fetch-Site");
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *host = apr_table_get(r->headers_in, "Host");
    const char *slashes;

    if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0)
        return apr_psprintf(r->pool, "Sec-Fetch-Site: %s", site);
    /* "null": a page with Referrer-Policy no-referrer, ours among them,
     * posts with Origin null; Sec-Fetch-Site and the MAC still judge it */
    if (origin == NULL || strcmp(origin, "null") == 0)
        return NULL;
    slashes = strstr(origin, "://");
    if (!host || !slashes || strcasecmp(slashes + 3, host) != 0)
        return apr_psprintf(r->pool, "Origin %s is not Host %s", origin, host ? host : "(none)");
    return NULL;
}

/* The POST's form, its MAC checked: 1, or 0 after the answer. */
static int user_read_form(stubmail_user_req *u)
{
    stubmail_req *q = &u->q;
    request_rec *r = q->r;
    const char *mac, *dot, *why = "", *bad;
    char ignored[SM_ADDR_MAX + 1], ignored2[SM_ADDR_MAX + 1];

    if ((bad = cross_site(r)) != NULL)
        return stubmail_fail_0(q, "forbidden", "this change did not come from your page",
                               apr_psprintf(r->pool, "cross-site POST refused: %s", bad));
    if (!stubmail_read_urlencoded(q, &u->form))
        return 0;
    mac = apr_table_get(u->form, "form");
    dot = mac ? strchr(mac, '.') : NULL;
    if (dot == NULL
        || sm_link_check(SM_LINK_FORM, q->conf->link_keys,
                         apr_pstrmemdup(r->pool, mac, (apr_size_t)(dot - mac)), q->user, "",
                         dot + 1, ignored, ignored2, sizeof(ignored), &why) != 0)
        return stubmail_fail_0(q, "forbidden", "this change did not come from your page: "
                               "open the page again and retry",
                               apr_psprintf(r->pool, "form MAC refused: %s",
                                            !mac ? "no form field" : !dot ? "no key id" : why));
    return 1;
}

const char *stubmail_user_nav(stubmail_user_req *u, const char *here)
{
    apr_pool_t *p = u->q.r->pool;

    return apr_pstrcat(
        p, "<nav><a href=\"", ap_escape_html(p, u->base), "/\"",
        strcmp(here, "book") == 0 ? " class=\"here\"" : "", ">Address book</a>"
        "<a href=\"", ap_escape_html(p, u->base), "/sent\"",
        strcmp(here, "sent") == 0 ? " class=\"here\"" : "", ">Sent mail</a>"
        "<span class=\"note\">", ap_escape_html(p, u->q.user), "</span></nav>\n", NULL);
}

const char *stubmail_user_button(stubmail_user_req *u, const char *path, const char *label,
                                 ...)
{
    apr_pool_t *p = u->q.r->pool;
    const char *html = apr_pstrcat(p, "<form class=\"inline\" method=\"post\" action=\"",
                                   ap_escape_html(p, u->base), path, "\">"
                                   "<input type=\"hidden\" name=\"form\" value=\"",
                                   ap_escape_html(p, u->form_mac), "\">", NULL);
    const char *name, *value;
    va_list ap;

    va_start(ap, label);
    while ((name = va_arg(ap, const char *)) != NULL) {
        value = va_arg(ap, const char *);
        html = apr_pstrcat(p, html, "<input type=\"hidden\" name=\"", name, "\" value=\"",
                           ap_escape_html(p, value), "\">", NULL);
    }
    va_end(ap);
    return apr_pstrcat(p, html, "<button type=\"submit\">", label, "</button></form>", NULL);
}

/* What each change says on the page afterwards (?done=). */
static const struct {
    const char *done;
    const char *text;
} done_texts[] = {
    { "added", "Mail from %s is fetched for you from now on." },
    { "removed", "%s is out of your address book. Writing to them adds them again." },
    { "blocked", "Mail from %s is no longer fetched for you." },
    { "unblocked", "%s is unblocked: their mail is fetched for you again." },
    { "accepted", "%s is in your address book: their waiting mail is on its way." },
    { "declined", "%s is declined and blocked." },
    { "recalled", "Your message of %s is recalled: whoever had not fetched it will not get "
                  "it." },
};

/* The notice of the change just made, from the query (?done=&c=). */
const char *stubmail_user_notice(stubmail_user_req *u)
{
    request_rec *r = u->q.r;
    apr_table_t *args = NULL;
    const char *done, *c;
    size_t i;

    ap_args_to_table(r, &args);
    done = apr_table_get(args, "done");
    c = apr_table_get(args, "c");
    if (done == NULL || c == NULL)
        return "";
    for (i = 0; i < sizeof(done_texts) / sizeof(done_texts[0]); i++)
        if (strcmp(done, done_texts[i].done) == 0)
            return apr_pstrcat(r->pool, "<p class=\"done\" role=\"status\">",
                               apr_psprintf(r->pool, done_texts[i].text,
                                            apr_pstrcat(r->pool, "<strong>",
                                                        ap_escape_html(r->pool, c),
                                                        "</strong>", NULL)),
                               "</p>\n", NULL);
    return "";
}

/* text as a query value that ap_args_to_table gives back: it decodes %XX
 * but not the '+' that ap_escape_urlencoded makes of a space (a '+' of the
 * text is %2B by then). */
static const char *query_value(apr_pool_t *p, const char *text)
{
    const char *enc = ap_escape_urlencoded(p, text);
    char *out = apr_palloc(p, 3 * strlen(enc) + 1), *o = out;

    for (; *enc; enc++)
        if (*enc == '+') {
            memcpy(o, "%20", 3);
            o += 3;
        } else {
            *o++ = *enc;
        }
    *o = '\0';
    return out;
}

int stubmail_user_done(stubmail_user_req *u, const char *path, const char *what,
                       const char *contact, json_t *result)
{
    request_rec *r = u->q.r;

    if (stubmail_wants_json(r))
        return stubmail_send_json(&u->q, result);
    json_decref(result);
    apr_table_setn(r->headers_out, "Location", apr_pstrcat(
        r->pool, u->base, path, "?done=", what, "&c=", query_value(r->pool, contact), NULL));
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    return stubmail_send(&u->q, HTTP_SEE_OTHER, "text/plain; charset=utf-8", "done\n");
}

const char *stubmail_user_time(stubmail_user_req *u, const char *rfc3339)
{
    /* YYYY-MM-DDTHH:MM:SSZ */
    if (rfc3339 == NULL || strlen(rfc3339) != 20)
        return "";
    return apr_psprintf(u->q.r->pool, "%.10s %.5s UTC", rfc3339, rfc3339 + 11);
}

int stubmail_user_handler(request_rec *r)
{
    stubmail_user_req u;
    stubmail_req *q = &u.q;
    const char *rest;
    size_t plen;
    int get;

    if (r->handler == NULL || strcmp(r->handler, "stubmail-user") != 0)
        return DECLINED;
    memset(&u, 0, sizeof(u));
    q->r = r;
    q->conf = stubmail_conf_of(r->server);
    q->for_people = 1;
    u.base = stubmail_location(r);
    plen = u.base ? strlen(u.base) : 0;
    if (u.base == NULL || strncmp(r->uri, u.base, plen) != 0
        || (r->uri[plen] != '/' && r->uri[plen] != '\0')) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "stubmail: configuration: %s is not "
                      "below the <Location> path %s; put SetHandler stubmail-user in a "
                      "<Location /PATH> with a literal path", r->uri, u.base ? u.base : "(none)");
        return stubmail_fail(q, "no_such_endpoint", "no such page",
                             "handler outside a literal <Location>");
    }
    rest = r->uri + plen;
    if (!user_identity(&u) || !user_form_mac(&u))
        return q->ret;
    get = r->method_number == M_GET;
    if (strcmp(rest, "") == 0 || strcmp(rest, "/") == 0) {
        if (get)
            return stubmail_user_book_page(&u);
        if (r->method_number == M_POST)
            return user_read_form(&u) ? stubmail_user_book_change(&u) : q->ret;
        q->allow = "GET, HEAD, POST";
    } else if (strcmp(rest, "/sent") == 0) {
        if (get)
            return stubmail_user_sent_page(&u);
        if (r->method_number == M_POST)
            return user_read_form(&u) ? stubmail_user_sent_change(&u) : q->ret;
        q->allow = "GET, HEAD, POST";
    } else {
        return stubmail_fail(q, "no_such_endpoint", "no such page", "unknown path");
    }
    return stubmail_fail(q, "method_not_allowed", "not with this method", "wrong method");
}
