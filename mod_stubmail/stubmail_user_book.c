/* stubmail_user_book — the user's address book on their page: whose mail is
 * fetched for them (learned when they wrote, added by them or the ISP),
 * whom they blocked (the Unsubscribe button, or here), and who asks to be
 * let in (introductions). One POST changes one entry (stubmail_user.h);
 * the SQL is sql/014's, shared with the one-click unsubscribe. */

#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include "sm_addr.h"
#include "sm_txt.h"
#include "stubmail_db.h"
#include "stubmail_html.h"
#include "stubmail_poke.h"
#include "stubmail_user.h"

APLOG_USE_MODULE(stubmail);

/* One row of the page (STMT_USER_BOOK). */
typedef struct book_row {
    const char *kind;           /* introduction, book, blocked */
    const char *contact;
    const char *source;
    const char *since;
    const char *stubs;
} book_row;

static const char *how_text(const book_row *row)
{
    if (strcmp(row->kind, "blocked") == 0)
        return strcmp(row->source, "unsubscribe") == 0 ? "Unsubscribe button"
               : strcmp(row->source, "admin") == 0 ? "by your provider" : "by you";
    return strcmp(row->source, "learned") == 0 ? "you wrote to them"
           : strcmp(row->source, "admin") == 0 ? "added by your provider" : "added by you";
}

/* The rows of the page as HTML for one kind, and as JSON. */
static const char *rows_html(stubmail_user_req *u, apr_array_header_t *rows, const char *kind)
{
    apr_pool_t *p = u->q.r->pool;
    const char *html = "";
    int i;

    for (i = 0; i < rows->nelts; i++) {
        const book_row *row = &APR_ARRAY_IDX(rows, i, book_row);
        const char *c = ap_escape_html(p, row->contact), *buttons;

        if (strcmp(row->kind, kind) != 0)
            continue;
        if (strcmp(kind, "introduction") == 0) {
            buttons = apr_pstrcat(
                p, stubmail_user_button(u, "/", "Accept", "do", "accept", "contact",
                                        row->contact, NULL), " ",
                stubmail_user_button(u, "/", "Decline", "do", "decline", "contact",
                                     row->contact, NULL), NULL);
            html = apr_pstrcat(p, html, "<tr><td>", c, "</td><td>", row->stubs,
                               strcmp(row->stubs, "1") == 0 ? " message" : " messages",
                               ", last ", stubmail_user_time(u, row->since), "</td><td>",
                               buttons, "</td></tr>\n", NULL);
            continue;
        }
        buttons = strcmp(kind, "book") == 0
            ? apr_pstrcat(p, stubmail_user_button(u, "/", "Remove", "do", "remove", "contact",
                                                  row->contact, NULL), " ",
                          stubmail_user_button(u, "/", "Block", "do", "block", "contact",
                                               row->contact, NULL), NULL)
            : stubmail_user_button(u, "/", "Unblock", "do", "unblock", "contact",
                                   row->contact, NULL);
        html = apr_pstrcat(p, html, "<tr><td>", c, "</td><td>", how_text(row), ", ",
                           stubmail_user_time(u, row->since), "</td><td>", buttons,
                           "</td></tr>\n", NULL);
    }
    return html;
}

static json_t *rows_json(apr_array_header_t *rows, const char *kind)
{
    json_t *list = json_array();
    int i;

    for (i = 0; list && i < rows->nelts; i++) {
        const book_row *row = &APR_ARRAY_IDX(rows, i, book_row);

        if (strcmp(row->kind, kind) != 0)
            continue;
        if (strcmp(kind, "introduction") == 0)
            json_array_append_new(list, json_pack("{s:s, s:s, s:I}", "sender", row->contact,
                                                  "last_seen", row->since, "stubs",
                                                  (json_int_t)apr_atoi64(row->stubs)));
        else
            json_array_append_new(list, json_pack("{s:s, s:s, s:s}", "contact", row->contact,
                                                  "source", row->source, "since",
                                                  row->since));
    }
    return list;
}

int stubmail_user_book_page(stubmail_user_req *u)
{
    stubmail_req *q = &u->q;
    request_rec *r = q->r;
    apr_array_header_t *rows = apr_array_make(r->pool, 64, sizeof(book_row));
    apr_dbd_results_t *res = NULL;
    apr_dbd_row_t *row = NULL;
    const char *args[3] = { q->user, q->user, q->user }, *intros, *cut = "";
    json_t *root;

    if (!stubmail_db(q))
        return q->ret;
    if (stubmail_db_select(q, STMT_USER_BOOK, &res, 3, args) != 0)
        return stubmail_fail(q, "unavailable", "your address book cannot be read just now",
                             "reading the address book failed");
    while (stubmail_db_next_row(q, res, &row) == 1) {
        book_row *b;

        if (rows->nelts == STUBMAIL_USER_ROWS) {
            cut = "<p class=\"note\">Only the first " APR_STRINGIFY(STUBMAIL_USER_ROWS)
                  " entries are shown.</p>\n";
            continue;
        }
        b = apr_array_push(rows);
        b->kind = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 0));
        b->contact = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 1));
        b->source = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 2));
        b->since = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 3));
        b->stubs = apr_pstrdup(r->pool, apr_dbd_get_entry(q->dbd->driver, row, 4));
    }

    if (stubmail_wants_json(r)) {
        root = json_pack("{s:s, s:s, s:o, s:o, s:o}", "user", q->user, "form", u->form_mac,
                         "introductions", rows_json(rows, "introduction"), "address_book",
                         rows_json(rows, "book"), "blocked", rows_json(rows, "blocked"));
        return stubmail_send_json(q, root);
    }
    intros = rows_html(u, rows, "introduction");
    return stubmail_html_page(q, HTTP_OK, "Your address book", apr_pstrcat(
        r->pool, stubmail_user_nav(u, "book"), stubmail_user_notice(u),
        *intros ? "<h2>Asking to write to you</h2>\n<p>These senders have mail waiting "
                  "for you but are not in your address book.</p>\n"
                  "<table id=\"introductions\"><tbody>\n" : "",
        intros, *intros ? "</tbody></table>\n" : "",
        "<h2>Address book</h2>\n<p>Mail from these senders is fetched for you. Everyone "
        "you write to is added.</p>\n"
        "<form method=\"post\" action=\"", ap_escape_html(r->pool, u->base), "/\">"
        "<input type=\"hidden\" name=\"form\" value=\"", ap_escape_html(r->pool, u->form_mac),
        "\"><input type=\"hidden\" name=\"do\" value=\"add\">"
        "<label>Add <input type=\"text\" name=\"contact\" required "
        "placeholder=\"name@example.com or *@example.com\" autocomplete=\"off\"></label> "
        "<button type=\"submit\">Add</button></form>\n"
        "<table id=\"book\"><tbody>\n", rows_html(u, rows, "book"), "</tbody></table>\n",
        "<h2>Blocked</h2>\n<p>Mail from these senders is never fetched for you.</p>\n"
        "<table id=\"blocked\"><tbody>\n", rows_html(u, rows, "blocked"), "</tbody></table>\n",
        cut, NULL));
}

/* The contact as typed: an address, "*@domain", or a bare domain meaning
 * the whole domain. 1 with out, or 0. */
static int contact_of(request_rec *r, const char *in, char *out, size_t outlen)
{
    const char *why = "";
    char *lower;

    if (in == NULL)
        return 0;
    lower = apr_pstrdup(r->pool, in + strspn(in, " \t"));
    ap_str_tolower(lower);
    lower[strcspn(lower, " \t")] = '\0';
    if (strchr(lower, '@') == NULL && sm_domain_valid(lower))
        lower = apr_pstrcat(r->pool, "*@", lower, NULL);
    return sm_pattern_normalize(lower, out, outlen, &why) == 0;
}

int stubmail_user_book_change(stubmail_user_req *u)
{
    stubmail_req *q = &u->q;
    request_rec *r = q->r;
    const char *act = apr_table_get(u->form, "do"), *in = apr_table_get(u->form, "contact");
    const char *args[2], *cols[3], *label, *done;
    char contact[SM_ADDR_MAX + 1];
    int got, changed, removing;

    if (act == NULL || !contact_of(r, in, contact, sizeof(contact)))
        return stubmail_fail(q, "bad_request", apr_psprintf(
                                 r->pool, "\"%s\" is not a mail address, nor *@ and a domain",
                                 in ? in : ""),
                             apr_psprintf(r->pool, "bad contact '%s'",
                                          ap_escape_logitem(r->pool, in ? in : "")));
    if (!strcmp(act, "add") || !strcmp(act, "unblock") || !strcmp(act, "accept"))
        label = STMT_USER_ADD;
    else if (!strcmp(act, "block") || !strcmp(act, "decline"))
        label = STMT_USER_BLOCK;
    else if (!strcmp(act, "remove"))
        label = STMT_USER_REMOVE;
    else
        return stubmail_fail(q, "bad_request", "no such change",
                             apr_psprintf(r->pool, "do=%s", ap_escape_logitem(r->pool, act)));
    if (!stubmail_db(q))
        return q->ret;
    removing = strcmp(label, STMT_USER_REMOVE) == 0;
    args[0] = q->user;
    args[1] = contact;
    got = stubmail_db_first_row(q, label, 2, args, removing ? 1 : 2, cols);
    if (got < 0)
        return stubmail_fail(q, "unavailable", "your address book cannot be changed just now",
                             apr_psprintf(r->pool, "%s <%s> failed", act, contact));
    changed = got == 1 && (removing || !strcmp(cols[0], "t")
                           || !strcmp(cols[1], "t"));
    done = !strcmp(act, "add") ? "added" : !strcmp(act, "remove") ? "removed"
           : !strcmp(act, "block") ? "blocked" : !strcmp(act, "unblock") ? "unblocked"
           : !strcmp(act, "accept") ? "accepted" : "declined";
    SMLOG(q, APLOG_NOTICE, 0, "address book: %s <%s>%s (from %s)", done, contact,
          changed ? "" : ", nothing to change", r->useragent_ip);
    if (!strcmp(act, "accept"))
        stubmail_poke_pollerd(q, q->user, contact);
    return stubmail_user_done(u, "/", done, contact,
                              json_pack("{s:s, s:s, s:b}", "done", done, "contact", contact,
                                        "changed", changed));
}
