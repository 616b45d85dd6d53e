/* stubmail_user_sent — "did they get it?": the mail the user sent to
 * recipients at pulling domains, and for each recipient whether their ISP
 * has fetched it (and when), refused it (and why, in the receiving ISP's
 * words), not yet (and until when it waits), or never (it expired, or
 * the sender recalled it). Push mail cannot say this; pull mail knows it
 * from the acks (docs/PROTOCOL.md, "POST /v1/message/{id}/ack"). The same
 * rows make the user's Atom feed (stubmail_feed.c). */

#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include "sm_id.h"
#include "stubmail_db.h"
#include "stubmail_feed.h"
#include "stubmail_html.h"
#include "stubmail_user.h"

APLOG_USE_MODULE(stubmail);

static const char *status_html(stubmail_user_req *u, const sent_row *s)
{
    apr_pool_t *p = u->q.r->pool;

    if (s->recalled)
        return apr_pstrcat(p, "<span class=\"note\">recalled ",
                           stubmail_user_time(u, s->retrieved), "</span>", NULL);
    if (!*s->retrieved && s->expired)
        return apr_pstrcat(p, "<span class=\"rejected\">expired unfetched ",
                           stubmail_user_time(u, s->expires), "</span>", NULL);
    if (!*s->retrieved)
        return apr_pstrcat(p, "<span class=\"note\">not fetched yet (kept until ",
                           stubmail_user_time(u, s->expires), ")</span>", NULL);
    if (*s->reason)
        return apr_pstrcat(p, "<span class=\"rejected\">refused ",
                           stubmail_user_time(u, s->retrieved), ": ",
                           ap_escape_html(p, s->reason), "</span>", NULL);
    return apr_pstrcat(p, "<span class=\"done\">fetched ",
                       stubmail_user_time(u, s->retrieved), "</span>", NULL);
}

/* JSON: one object per message, its recipients inside. */
static json_t *sent_json(stubmail_user_req *u, apr_array_header_t *rows)
{
    json_t *messages = json_array(), *current = NULL;
    const char *last = "";
    int i;

    for (i = 0; messages && i < rows->nelts; i++) {
        const sent_row *s = &APR_ARRAY_IDX(rows, i, sent_row);
        json_t *rcpt;

        if (strcmp(s->id, last) != 0) {
            current = json_array();
            json_array_append_new(messages, json_pack("{s:s, s:s, s:I, s:o}", "id", s->id,
                                                      "sent", s->sent, "size",
                                                      (json_int_t)apr_atoi64(s->size),
                                                      "recipients", current));
            last = s->id;
        }
        rcpt = json_pack("{s:s, s:s}", "to", s->to, "status", stubmail_sent_status(s));
        if (*s->retrieved)
            json_object_set_new(rcpt, s->recalled ? "recalled" : "retrieved",
                                json_string(s->retrieved));
        if (*s->reason)
            json_object_set_new(rcpt, "reason", json_string(s->reason));
        if (!*s->retrieved && *s->expires)
            json_object_set_new(rcpt, "expires", json_string(s->expires));
        json_array_append_new(current, rcpt);
    }
    return json_pack("{s:s, s:o}", "user", u->q.user, "messages", messages);
}

/* Does any recipient of the message starting at row i still wait? */
static int waiting_from(apr_array_header_t *rows, int i)
{
    const char *id = APR_ARRAY_IDX(rows, i, sent_row).id;

    for (; i < rows->nelts && !strcmp(APR_ARRAY_IDX(rows, i, sent_row).id, id); i++)
        if (!strcmp(stubmail_sent_status(&APR_ARRAY_IDX(rows, i, sent_row)), "waiting"))
            return 1;
    return 0;
}

static const char *sent_html(stubmail_user_req *u, apr_array_header_t *rows)
{
    apr_pool_t *p = u->q.r->pool;
    const char *html = "", *last = "", *when;
    int i;

    for (i = 0; i < rows->nelts; i++) {
        const sent_row *s = &APR_ARRAY_IDX(rows, i, sent_row);
        int first = strcmp(s->id, last) != 0;

        when = !first ? "" : waiting_from(rows, i)
            ? apr_pstrcat(p, stubmail_user_time(u, s->sent), "<br>",
                          stubmail_user_button(u, "/sent", "Recall", "do", "recall", "id",
                                               s->id, NULL), NULL)
            : stubmail_user_time(u, s->sent);
        html = apr_pstrcat(p, html, "<tr data-id=\"", s->id, "\"", first ? " class=\"first\""
                           : "", "><td>", when, "</td><td>", ap_escape_html(p, s->to),
                           "</td><td>", status_html(u, s), "</td></tr>\n", NULL);
        last = s->id;
    }
    return html;
}

/* The user's feed of the same, when StubmailFeedURL says where it is. */
static const char *feed_html(stubmail_user_req *u)
{
    apr_pool_t *p = u->q.r->pool;
    const char *url = stubmail_feed_url(&u->q, u->q.user);

    if (url == NULL)
        return "";
    return apr_pstrcat(p, "<p class=\"note\">In a feed reader: <a id=\"feed\" href=\"",
                       ap_escape_html(p, url), "\">your sent mail as a feed</a> (a private "
                       "address: keep it to yourself).</p>\n", NULL);
}

int stubmail_user_sent_page(stubmail_user_req *u)
{
    stubmail_req *q = &u->q;
    request_rec *r = q->r;
    apr_array_header_t *rows;

    if (!stubmail_sent_rows(q, q->user, &rows))
        return q->ret;
    if (stubmail_wants_json(r))
        return stubmail_send_json(q, sent_json(u, rows));
    return stubmail_html_page(q, HTTP_OK, "Your sent mail", apr_pstrcat(
        r->pool, stubmail_user_nav(u, "sent"), stubmail_user_notice(u),
        "<p>Mail you sent to people whose provider fetches it from us, newest first (the "
        "last " APR_STRINGIFY(STUBMAIL_USER_SENT) " messages), and whether it was "
        "fetched. Recall takes a message back from everyone who has not fetched it "
        "yet.</p>\n",
        rows->nelts ? "<table id=\"sent\"><thead><tr><th>Sent</th><th>To</th><th>"
                      "Fetched?</th></tr></thead><tbody>\n" : "<p>Nothing yet.</p>\n",
        sent_html(u, rows), rows->nelts ? "</tbody></table>\n" : "", feed_html(u), NULL));
}

/* POST do=recall&id=ID: the message back from whoever has not fetched it. */
int stubmail_user_sent_change(stubmail_user_req *u)
{
    stubmail_req *q = &u->q;
    request_rec *r = q->r;
    const char *act = apr_table_get(u->form, "do"), *id = apr_table_get(u->form, "id");
    const char *args[2], *cols[3];
    int got;

    if (act == NULL || strcmp(act, "recall") != 0 || id == NULL || !sm_id_valid(id))
        return stubmail_fail(q, "bad_request", "no such change",
                             apr_psprintf(r->pool, "do=%s id=%s",
                                          ap_escape_logitem(r->pool, act ? act : ""),
                                          ap_escape_logitem(r->pool, id ? id : "")));
    if (!stubmail_db(q))
        return q->ret;
    args[0] = q->user;
    args[1] = id;
    got = stubmail_db_first_row(q, STMT_USER_RECALL, 2, args, 3, cols);
    if (got != 1)
        return stubmail_fail(q, "unavailable", "the message cannot be recalled just now",
                             apr_psprintf(r->pool, "recall %s failed", id));
    if (!*cols[2])
        return stubmail_fail(q, "not_found", "you sent no such message",
                             apr_psprintf(r->pool, "recall %s: not a message of theirs", id));
    q->id = id;
    SMLOG(q, APLOG_NOTICE, 0, "recalled from %s recipients, %s had fetched it (from %s)",
          cols[0], cols[1], r->useragent_ip);
    return stubmail_user_done(u, "/sent", "recalled", stubmail_user_time(u, cols[2]),
                              json_pack("{s:s, s:s, s:I, s:I}", "done", "recalled", "id", id,
                                        "recalled", (json_int_t)apr_atoi64(cols[0]),
                                        "kept", (json_int_t)apr_atoi64(cols[1])));
}

static int is_true(stubmail_req *q, apr_dbd_row_t *row, int col)
{
    const char *v = apr_dbd_get_entry(q->dbd->driver, row, col);

    return v != NULL && strcmp(v, "t") == 0;
}

const char *stubmail_sent_status(const sent_row *s)
{
    return s->recalled ? "recalled" : *s->retrieved ? (*s->reason ? "rejected" : "retrieved")
           : s->expired ? "expired" : "waiting";
}

int stubmail_sent_rows(stubmail_req *q, const char *user, apr_array_header_t **rows)
{
    request_rec *r = q->r;
    apr_dbd_results_t *res = NULL;
    apr_dbd_row_t *row = NULL;
    const char *args[1] = { user };

    *rows = apr_array_make(r->pool, 64, sizeof(sent_row));
    if (!stubmail_db(q))
        return 0;
    if (stubmail_db_select(q, STMT_USER_SENT, &res, 1, args) != 0)
        return stubmail_fail_0(q, "unavailable", "the sent mail cannot be read just now",
                               "reading the sent mail failed");
    while (stubmail_db_next_row(q, res, &row) == 1) {
        sent_row *s = apr_array_push(*rows);

        s->id = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 0));
        s->sent = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 1));
        s->size = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 2));
        s->to = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 3));
        s->retrieved = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 4));
        s->reason = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 5));
        s->expires = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 6));
        s->expired = is_true(q, row, 7);
        s->recalled = is_true(q, row, 8);
    }
    return 1;
}
