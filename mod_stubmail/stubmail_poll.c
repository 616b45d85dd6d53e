/*
 * NAME
 *	stubmail_poll - polls, subscriptions and the rate gates
 *
 * DESCRIPTION
 *	POST v1/poll lists what is waiting for the (sender, recipient) pairs of
 *	its body, in one query for the whole batch. POST v1/subscription
 *	changes the pairs the server keeps for the polling domain, and GET
 *	v1/poll?version=V lists what is pending for them (table pending_match,
 *	kept by the triggers of sql/004_subscription.sql), with an ETag, so an
 *	idle poll is a 304. The ETag and version come from the poll cache
 *	(stubmail_pollcache.c) when it can be trusted, so an idle poll needs
 *	no database at all (unless StubmailMinPollInterval takes a token).
 *
 *	The rate gates are token buckets in table rate_limit (the SQL function
 *	rate_take() of sql/007_rate_limit.sql): StubmailMinPollInterval with
 *	StubmailPollBurst per polling domain, and StubmailLoginAddressRate and
 *	StubmailLoginRate before a login's key checks. An empty bucket answers
 *	429 too_soon with Retry-After.
 *
 * DIAGNOSTICS
 *	Each poll and subscription change at info (pairs, entries listed,
 *	version); a 304 at debug.
 */

#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include <jansson.h>

#include "sm_proto.h"
#include "stubmail_db.h"
#include "stubmail_poll.h"
#include "stubmail_pollcache.h"

APLOG_USE_MODULE(stubmail);

#define DB_UNAVAILABLE "database unavailable, retry later"
#define OUT_OF_MEMORY  "internal error, retry later"

/* ------------------------------------------------------------------------
 * Rate gates
 * ---------------------------------------------------------------------- */

/* Take one request from the bucket of (kind, key) that holds n and fills
 * again in secs seconds. 1 taken, 0 refused with *wait the seconds until
 * one is back, -1 database trouble (logged; nothing answered yet). */
static int stubmail_rate_take(stubmail_req *q, const char *kind, const char *key,
                              apr_int64_t n, apr_int64_t secs, apr_int64_t *wait)
{
    const char *args[4], *v = NULL;

    args[0] = kind;
    args[1] = key;
    args[2] = apr_psprintf(q->r->pool, "%" APR_INT64_T_FMT, n);
    args[3] = apr_psprintf(q->r->pool, "%" APR_INT64_T_FMT, secs);
    switch (stubmail_db_first_row(q, STMT_RATE, 4, args, 1, &v)) {
    case 1:
        if (*v != '\0')
            break;
        /* fall through */
    case 0:
        SMLOG(q, APLOG_ERR, 0, "rate limit %s %s: no answer from rate_take", kind, key);
        return -1;
    default:
        return -1;
    }
    *wait = apr_atoi64(v);
    return *wait == 0;
}

/* Retry-After for a request the bucket refused: its wait, from 1 up to
 * longest (a clock that went back could ask for more). Returns the
 * seconds, for the error message. */
static apr_int64_t stubmail_retry_after(stubmail_req *q, apr_int64_t wait,
                                        apr_int64_t longest)
{
    if (wait < 1)
        wait = 1;
    if (wait > longest)
        wait = longest;
    q->retry_after = apr_psprintf(q->r->pool, "%" APR_INT64_T_FMT, wait);
    return wait;
}

/* StubmailMinPollInterval and StubmailPollBurst: a bucket of burst polls
 * per domain, one back every interval. 1 when this poll may go ahead, 0
 * when an error answer went out (429 with Retry-After, or 503). */
static int stubmail_poll_gate(stubmail_req *q)
{
    request_rec *r = q->r;
    apr_int64_t interval = q->conf->min_poll_interval, burst = q->conf->poll_burst;
    apr_int64_t wait = interval;

    if (interval == 0)
        return 1;
    if (!stubmail_db(q))
        return 0;
    switch (stubmail_rate_take(q, "poll", q->domain, burst, burst * interval, &wait)) {
    case 1:
        return 1;
    case 0:
        break;
    default:
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                               "poll interval check failed");
    }
    wait = stubmail_retry_after(q, wait, interval);
    return stubmail_fail_0(q, "too_soon",
                           apr_psprintf(r->pool, "polled %" APR_INT64_T_FMT " times "
                                        "within %" APR_INT64_T_FMT " s: retry after %"
                                        APR_INT64_T_FMT " s", burst, burst * interval,
                                        wait),
                           apr_psprintf(r->pool, "StubmailMinPollInterval %"
                                        APR_INT64_T_FMT " with StubmailPollBurst %"
                                        APR_INT64_T_FMT, interval, burst));
}

/* Checked before any DNS or GnuPG work, which is what they protect. The
 * address first, so that one client cannot fill the table with made-up
 * domains. Every login that gets this far counts, good or bad. */
int stubmail_login_rate(stubmail_req *q, const char *domain)
{
    request_rec *r = q->r;
    const struct {
        const char *kind, *key, *directive, *what;
        const stubmail_rate *rate;
    } limits[] = {
        { "login_address", r->useragent_ip, "StubmailLoginAddressRate",
          "from this address", &q->conf->login_addr_rate },
        { "login_domain", domain, "StubmailLoginRate", "for this domain",
          &q->conf->login_rate },
    };
    apr_int64_t wait = 0;
    size_t i;

    if (q->conf->login_rate.n == 0 && q->conf->login_addr_rate.n == 0)
        return 1;
    /* logins are rare enough to carry the cleaning of old buckets */
    if (stubmail_db_first_row(q, STMT_RATE_CLEAN, 0, NULL, 0, NULL) < 0)
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                               "cleaning the rate limits failed");
    for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        const stubmail_rate *rate = limits[i].rate;

        if (rate->n == 0)
            continue;
        switch (stubmail_rate_take(q, limits[i].kind, limits[i].key, rate->n,
                                   rate->secs, &wait)) {
        case 1:
            continue;
        case 0:
            break;
        default:
            return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                                   "login rate check failed");
        }
        wait = stubmail_retry_after(q, wait, rate->secs);
        return stubmail_fail_0(q, "too_soon",
                               apr_psprintf(r->pool, "more than %" APR_INT64_T_FMT
                                            " logins %s within %" APR_INT64_T_FMT
                                            " s: retry after %" APR_INT64_T_FMT " s",
                                            rate->n, limits[i].what, rate->secs, wait),
                               apr_psprintf(r->pool, "%s %" APR_INT64_T_FMT "/%"
                                            APR_INT64_T_FMT " reached by %s %s, login "
                                            "refused before any key check",
                                            limits[i].directive, rate->n, rate->secs,
                                            limits[i].kind, limits[i].key));
    }
    return 1;
}

/* ------------------------------------------------------------------------
 * POST v1/poll
 * ---------------------------------------------------------------------- */

/* The listing of both polls: the rows of label (id, sender, recipient,
 * size, time) become root's "messages" and "more". At most poll_limit are
 * listed, but every row is read, so that the result is released. 1 with
 * *more and *listed set, or 0 after the error answer (503). */
static int stubmail_poll_list(stubmail_req *q, const char *label, int nargs,
                              const char **args, json_t *root, int *more,
                              apr_int64_t *listed)
{
    const apr_dbd_driver_t *driver = q->dbd->driver;
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    json_t *messages = json_array();
    apr_int64_t n = 0;

    *more = 0;
    if (messages == NULL)
        return stubmail_fail_0(q, "unavailable", OUT_OF_MEMORY, "out of memory");
    if (stubmail_db_select(q, label, &res, nargs, args) != 0) {
        json_decref(messages);
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE, "poll query failed");
    }
    while (stubmail_db_next_row(q, res, &row)) {
        json_t *m;

        if (n++ >= q->conf->poll_limit) {
            *more = 1;
            continue;           /* read every row */
        }
        m = json_pack("{s:s, s:s, s:s, s:I, s:s}",
                      "id", apr_dbd_get_entry(driver, row, 0),
                      "from", apr_dbd_get_entry(driver, row, 1),
                      "to", apr_dbd_get_entry(driver, row, 2),
                      "size", (json_int_t)apr_atoi64(apr_dbd_get_entry(driver, row, 3)),
                      "time", apr_dbd_get_entry(driver, row, 4));
        if (m == NULL || json_array_append_new(messages, m) != 0)
            *more = -1;         /* out of memory; keep draining */
    }
    if (*more < 0 || json_object_set_new(root, "messages", messages) != 0) {
        if (*more < 0)
            json_decref(messages);      /* else set_new took it */
        return stubmail_fail_0(q, "unavailable", OUT_OF_MEMORY,
                               "out of memory building the answer");
    }
    json_object_set_new(root, "more", json_boolean(*more));
    *listed = *more ? q->conf->poll_limit : n;
    return 1;
}

int stubmail_poll_post(stubmail_req *q)
{
    request_rec *r = q->r;
    char *pairs_json = NULL;
    sm_pair *pairs = NULL;
    size_t npairs = 0;
    sm_parse_error perr;
    const char *args[3];
    json_t *root = NULL;
    apr_int64_t listed;
    int more, ret;

    memset(&perr, 0, sizeof(perr));
    if (sm_poll_request_parse(q->body, q->body_len, q->domain, (size_t)q->conf->max_pairs,
                              &pairs, &npairs, &perr) != 0) {
        ret = stubmail_fail(q, stubmail_parse_code(&perr),
                            perr.message, apr_pstrcat(r->pool, "poll refused: ",
                                                      perr.message, NULL));
        goto leave;
    }
    /* Only a poll that will be answered counts against the interval. */
    if (!stubmail_poll_gate(q)) {
        ret = q->ret;
        goto leave;
    }
    pairs_json = sm_pairs_sql_json(pairs, npairs);
    root = json_object();
    if (pairs_json == NULL || root == NULL) {
        ret = stubmail_fail(q, "unavailable", OUT_OF_MEMORY, "out of memory");
        goto leave;
    }

    args[0] = pairs_json;
    args[1] = q->domain;
    args[2] = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, q->conf->poll_limit + 1);
    if (!stubmail_poll_list(q, STMT_POLL, 3, args, root, &more, &listed)) {
        ret = q->ret;
        goto leave;
    }
    SMLOG(q, APLOG_INFO, 0, "poll: %lu pairs, %" APR_INT64_T_FMT " listed%s",
          (unsigned long)npairs, listed, more ? ", more" : "");
    ret = stubmail_send_json(q, root);
    root = NULL;

leave:
    json_decref(root);
    free(pairs_json);
    free(pairs);
    return ret;
}

/* ------------------------------------------------------------------------
 * POST v1/subscription and GET v1/poll?version=V
 * ---------------------------------------------------------------------- */

/* 409 subscription_changed: the poller works from version asked, which is
 * not the current one; the body names the current one, so that the poller
 * can reset. */
static int stubmail_version_changed(stubmail_req *q, const char *current,
                                    apr_int64_t asked, const char *why)
{
    q->version = current;
    return stubmail_fail(q, "subscription_changed",
                         apr_psprintf(q->r->pool, "the subscription is at version %s, "
                                      "not %" APR_INT64_T_FMT ": reset it", current,
                                      asked),
                         why);
}

/* Change the domain's subscription: all of it or nothing (one statement),
 * then {"version": V}; a base that is not the current version gets 409
 * with the current one, so the poller knows to reset. */
int stubmail_subscription(stubmail_req *q)
{
    request_rec *r = q->r;
    char *add_json = NULL, *remove_json = NULL;
    sm_subscription_request req;
    sm_parse_error perr;
    const char *args[5], *cols[2];       /* ok, version */
    int ret;

    memset(&req, 0, sizeof(req));
    memset(&perr, 0, sizeof(perr));
    if (sm_subscription_request_parse(q->body, q->body_len, q->domain, (size_t)q->conf->max_pairs,
                                      &req, &perr) != 0) {
        ret = stubmail_fail(q, stubmail_parse_code(&perr), perr.message,
                            apr_pstrcat(r->pool, "subscription change refused: ",
                                        perr.message, NULL));
        goto leave;
    }
    add_json = sm_pairs_sql_json(req.add, req.nadd);
    remove_json = sm_pairs_sql_json(req.remove, req.nremove);
    if (add_json == NULL || remove_json == NULL) {
        ret = stubmail_fail(q, "unavailable", OUT_OF_MEMORY, "out of memory");
        goto leave;
    }
    args[0] = q->domain;
    args[1] = req.reset ? "t" : "f";
    args[2] = req.reset ? "" : apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                                            (apr_int64_t)req.base);
    args[3] = add_json;
    args[4] = remove_json;
    switch (stubmail_db_first_row(q, STMT_SUB_CHANGE, 5, args, 2, cols)) {
    case 1:
        break;
    case 0:
        ret = stubmail_fail(q, "unavailable", DB_UNAVAILABLE,
                            "subscription change returned no row");
        goto leave;
    default:
        ret = stubmail_fail(q, "unavailable", DB_UNAVAILABLE,
                            "subscription change failed");
        goto leave;
    }
    if (strcmp(cols[0], "t") != 0) {
        ret = stubmail_version_changed(q, cols[1], (apr_int64_t)req.base,
                                       apr_psprintf(r->pool, "subscription change with "
                                                    "base %" APR_INT64_T_FMT ", current "
                                                    "version %s", (apr_int64_t)req.base,
                                                    cols[1]));
        goto leave;
    }
    /* committed: no child may answer from what was cached before, even
     * before the notification reaches the responder */
    stubmail_pollcache_forget(q->domain);
    SMLOG(q, APLOG_INFO, 0, "subscription: %s%lu added, %lu removed, now version %s",
          req.reset ? "reset, " : "", (unsigned long)req.nadd,
          (unsigned long)req.nremove, cols[1]);
    ret = stubmail_send_json(q, json_pack("{s:I}", "version",
                                          (json_int_t)apr_atoi64(cols[1])));
leave:
    free(add_json);
    free(remove_json);
    sm_subscription_request_free(&req);
    return ret;
}

/* The version=V of the query string (other parameters are ignored): 1 with
 * *version, or 0 after a 400. */
static int stubmail_query_version(stubmail_req *q, apr_int64_t *version)
{
    request_rec *r = q->r;
    const char *rest = r->args ? r->args : "", *value = NULL;
    size_t n;

    while (*rest) {
        n = strcspn(rest, "&");
        if (n >= 8 && strncmp(rest, "version=", 8) == 0) {
            if (value != NULL)
                return stubmail_fail_0(q, "bad_request", "version given twice",
                                       "query string names version twice");
            value = apr_pstrmemdup(r->pool, rest + 8, n - 8);
        }
        rest += n;
        if (*rest == '&')
            rest++;
    }
    /* at most 15 digits: below 2^53, exact in every JSON number */
    if (value == NULL || *value == '\0' || strlen(value) > 15
        || strspn(value, "0123456789") != strlen(value))
        return stubmail_fail_0(q, "bad_request",
                               "version=V (the subscription version) is required",
                               apr_psprintf(r->pool, "query string '%s'",
                                            ap_escape_logitem(r->pool, r->args ? r->args
                                                                      : "")));
    *version = apr_atoi64(value);
    return 1;
}

/* The domain's ETag and subscription version: from the poll cache when it
 * can be trusted, else from the database, and then into the cache. 1 with
 * *etag, *version and *cached, or 0 after the error answer (503). */
static int stubmail_poll_state(stubmail_req *q, const char **etag, apr_int64_t *version,
                               int *cached)
{
    char buf[STUBMAIL_POLLCACHE_ETAG_MAX + 1];
    stubmail_pollcache_ticket ticket;
    const char *args[2], *cols[3];      /* etag, version, valid until (ms) */
    apr_time_t until;

    /* a ticket that allows no fill, for a host that does not use the cache */
    memset(&ticket, 0, sizeof(ticket));
    *cached = q->conf->poll_cache
              && stubmail_pollcache_get(q->domain, buf, sizeof(buf), version, &ticket);
    if (*cached) {
        *etag = apr_pstrdup(q->r->pool, buf);
        return 1;
    }
    if (!stubmail_db(q))
        return 0;
    args[0] = args[1] = q->domain;
    switch (stubmail_db_first_row(q, STMT_POLL_STATE, 2, args, 3, cols)) {
    case 1:
        if (*cols[0] != '\0')
            break;
        /* fall through */
    case 0:
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                               "poll state query returned no row");
    default:
        return stubmail_fail_0(q, "unavailable", DB_UNAVAILABLE,
                               "poll state query failed");
    }
    *etag = cols[0];
    *version = apr_atoi64(cols[1]);
    /* an expiry changes the ETag with no notification: the entry holds
     * until the next one (sql/012) */
    until = *cols[2] ? apr_time_from_msec(apr_atoi64(cols[2])) : 0;
    stubmail_pollcache_put(&ticket, q->domain, *etag, *version, until);
    return 1;
}

/* What is pending for the domain's subscription, from pending_match only.
 * The ETag is read before the listing: whatever it covers is listed (or
 * was acked meanwhile), so a poller never gets 304 for a match it did not
 * see. An answer cut short (more: true) carries no ETag: the rest must be
 * polled for. */
int stubmail_poll_get(stubmail_req *q)
{
    request_rec *r = q->r;
    const char *args[2], *etag = NULL;
    apr_int64_t want = 0, version = 0, listed;
    json_t *root;
    ap_condition_e cond;
    int more, cached;

    if (!stubmail_query_version(q, &want))
        return q->ret;
    if (!stubmail_poll_state(q, &etag, &version, &cached))
        return q->ret;
    if (version != want) {
        const char *current = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, version);

        return stubmail_version_changed(q, current, want,
                                        apr_psprintf(r->pool, "poll for version %"
                                                     APR_INT64_T_FMT ", current version %s%s",
                                                     want, current,
                                                     cached ? " (poll cache)" : ""));
    }
    /* a 304 is a poll too */
    if (!stubmail_poll_gate(q))
        return q->ret;
    apr_table_setn(r->headers_out, "ETag", etag);
    cond = ap_condition_if_none_match(r, r->headers_out);
    if (cond == AP_CONDITION_WEAK || cond == AP_CONDITION_STRONG) {
        SMLOG(q, APLOG_DEBUG, 0, "poll: not modified, %s%s", etag,
              cached ? " (poll cache)" : "");
        return stubmail_not_modified(q);
    }

    root = json_object();
    if (root == NULL)
        return stubmail_fail(q, "unavailable", OUT_OF_MEMORY, "out of memory");
    if (!stubmail_db(q)) {
        json_decref(root);
        return q->ret;
    }
    args[0] = q->domain;
    args[1] = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, q->conf->poll_limit + 1);
    if (!stubmail_poll_list(q, STMT_POLL_PENDING, 2, args, root, &more, &listed)) {
        json_decref(root);
        return q->ret;
    }
    json_object_set_new(root, "version", json_integer((json_int_t)want));
    if (more)
        apr_table_unset(r->headers_out, "ETag");
    SMLOG(q, APLOG_INFO, 0, "poll: version %" APR_INT64_T_FMT ", %" APR_INT64_T_FMT
          " listed%s", want, listed, more ? ", more" : "");
    return stubmail_send_json(q, root);
}
