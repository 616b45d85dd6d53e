/* stubmail_link — a signed link's query, checked (stubmail_link.h). */

#include "httpd.h"
#include "util_script.h"
#include "apr_strings.h"

#include "stubmail_link.h"

int stubmail_link_read(stubmail_req *q, sm_link_purpose purpose, int with_sender,
                       const char *what, stubmail_link *link, const char **why)
{
    request_rec *r = q->r;
    apr_table_t *args = NULL;
    const char *u, *s, *k, *m, *bad = NULL;

    if (q->conf->link_keys == NULL) {
        stubmail_fail(q, "no_such_endpoint", "no such endpoint",
                      apr_psprintf(r->pool, "%s are off here (no StubmailLinkKey)", what));
        return 0;
    }
    ap_args_to_table(r, &args);
    u = apr_table_get(args, "u");
    s = with_sender ? apr_table_get(args, "s") : "";
    k = apr_table_get(args, "k");
    m = apr_table_get(args, "m");
    if (!u || !s || !k || !m) {
        *why = with_sender ? "a field of u, s, k, m is missing" : "a field of u, k, m is missing";
        return -1;
    }
    if (sm_link_check(purpose, q->conf->link_keys, k, u, s, m, link->user, link->sender,
                      sizeof(link->user), &bad) != 0) {
        *why = apr_psprintf(r->pool, "%s (u=%s s=%s k=%s)", bad, ap_escape_logitem(r->pool, u),
                            ap_escape_logitem(r->pool, s), ap_escape_logitem(r->pool, k));
        return -1;
    }
    return 1;
}
