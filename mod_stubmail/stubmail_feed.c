/* stubmail_feed — the user's sent mail as an Atom feed (stubmail_feed.h).
 *
 * A feed reader cannot sign in, so the address is the credential: it
 * carries the user and an HMAC of the user (lib/sm_link.h, the feed's own
 * purpose), which nobody can make without StubmailLinkKey. The feed is
 * served by the protocol's handler (route /feed), outside the user's
 * page's login. Readers poll: the answer has an ETag and a Last-Modified,
 * and httpd's own ap_meets_conditions answers a conditional GET with 304
 * when nothing happened since. */

#include <stdio.h>
#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_script.h"
#include "apr_strings.h"
#include "apr_time.h"

#include "sm_addr.h"
#include "stubmail_feed.h"
#include "stubmail_link.h"
#include "stubmail_user.h"

APLOG_USE_MODULE(stubmail);

const char *stubmail_feed_url(stubmail_req *q, const char *user)
{
    apr_pool_t *p = q->r->pool;
    char mac[SM_LINK_MAC_LEN + 1];
    const char *kid = NULL, *why = "";

    if (q->conf->feed_url == NULL || q->conf->link_keys == NULL
        || sm_link_mac(SM_LINK_FEED, q->conf->link_keys, NULL, user, "", mac, sizeof(mac),
                       &kid, &why) != 0)
        return NULL;
    return apr_pstrcat(p, q->conf->feed_url, strchr(q->conf->feed_url, '?') ? "&" : "?",
                       "u=", ap_escape_urlencoded(p, user), "&k=", kid, "&m=", mac, NULL);
}

/* 2026-12-07T11:20:17Z as an apr_time_t; 0 if it is not one. */
static apr_time_t rfc3339_time(const char *s)
{
    apr_time_exp_t t;
    apr_time_t when = 0;

    memset(&t, 0, sizeof(t));
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ", &t.tm_year, &t.tm_mon, &t.tm_mday, &t.tm_hour,
               &t.tm_min, &t.tm_sec) != 6)
        return 0;
    t.tm_year -= 1900;
    t.tm_mon -= 1;
    return apr_time_exp_gmt_get(&when, &t) == APR_SUCCESS ? when : 0;
}

/* One event of a recipient, or NULL while it waits: *when gets its time. */
static const char *event_title(apr_pool_t *p, const sent_row *s, const char **when)
{
    const char *status = stubmail_sent_status(s);
    const char *sent = apr_psprintf(p, "%.10s %.5s UTC", s->sent, s->sent + 11);

    *when = s->retrieved;
    if (!strcmp(status, "retrieved"))
        return apr_psprintf(p, "%s fetched your message of %s", s->to, sent);
    if (!strcmp(status, "rejected"))
        return apr_psprintf(p, "%s refused your message of %s: %s", s->to, sent, s->reason);
    if (!strcmp(status, "recalled"))
        return apr_psprintf(p, "You recalled your message of %s from %s", sent, s->to);
    if (!strcmp(status, "expired")) {
        *when = s->expires;
        return apr_psprintf(p, "Your message of %s to %s expired unfetched", sent, s->to);
    }
    return NULL;
}

int stubmail_feed(stubmail_req *q)
{
    request_rec *r = q->r;
    apr_pool_t *p = r->pool;
    apr_array_header_t *rows;
    stubmail_link link;
    const char *why = "", *updated = "", *entries = "", *domain, *tag, *when, *title;
    int i, events = 0, rc, got;

    if ((got = stubmail_link_read(q, SM_LINK_FEED, 0, "feeds", &link, &why)) <= 0)
        return got == 0 ? q->ret
                        : stubmail_fail(q, "not_found", "no such feed",
                                        apr_psprintf(p, "feed refused: %s", why));
    q->user = apr_pstrdup(p, link.user);
    if (!stubmail_sent_rows(q, q->user, &rows))
        return q->ret;

    domain = sm_addr_domain(q->user);
    tag = apr_pstrcat(p, "tag:", domain, ",2026:stubmail/sent/", NULL);
    for (i = 0; i < rows->nelts; i++) {
        const sent_row *s = &APR_ARRAY_IDX(rows, i, sent_row);

        if (strcmp(s->sent, updated) > 0)
            updated = s->sent;
        if ((title = event_title(p, s, &when)) == NULL)
            continue;
        events++;
        if (strcmp(when, updated) > 0)
            updated = when;
        entries = apr_pstrcat(
            p, entries, "<entry><id>", tag, s->id, "/", ap_escape_html(p, s->to), "/",
            stubmail_sent_status(s), "</id><title>", ap_escape_html(p, title),
            "</title><updated>", when, "</updated></entry>\n", NULL);
    }
    if (!*updated)
        updated = "2026-01-01T00:00:00Z";   /* nothing sent yet: any fixed instant */

    /* a new message or a new event changes both */
    r->mtime = rfc3339_time(updated);
    ap_set_last_modified(r);
    apr_table_setn(r->headers_out, "ETag", apr_psprintf(p, "\"%d.%d.%s\"", rows->nelts,
                                                        events, updated));
    apr_table_setn(r->headers_out, "Cache-Control", "private, no-cache");
    apr_table_setn(r->headers_out, "Referrer-Policy", "no-referrer");
    if ((rc = ap_meets_conditions(r)) != OK) {
        r->status = rc;
        return rc == HTTP_NOT_MODIFIED ? stubmail_not_modified(q) : rc;
    }
    return stubmail_send(q, HTTP_OK, "application/atom+xml; charset=utf-8", apr_pstrcat(
        p, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
        "<feed xmlns=\"http://www.w3.org/2005/Atom\">\n"
        "<title>Sent mail of ", ap_escape_html(p, q->user), "</title>\n"
        "<id>", tag, ap_escape_html(p, q->user), "</id>\n"
        "<updated>", updated, "</updated>\n"
        "<author><name>stubmail at ", ap_escape_html(p, domain), "</name></author>\n",
        entries, "</feed>\n", NULL));
}
