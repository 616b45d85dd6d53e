/* pd_digest.c — introductions reach the user: with intro_digest set,
 * pollerd mails each local user with new introductions (senders in no
 * address book of theirs who have mail waiting, sql/005) a short digest
 * naming them, each with an Accept and a Decline link to mod_stubmail's
 * /introduction (intro_url), signed like the one-click unsubscribe links
 * (lib/sm_link.h, SM_LINK_INTRO over (user, sender), unsubscribe_key).
 *
 * Each introduction is announced once (introduction.announced_at, sql/017),
 * and a user gets at most one digest per intro_digest (table intro_digest,
 * which outlives a restart). Both are recorded only once the MTA took the
 * digest: a digest that fails announces nothing, and its introductions go
 * in the next one.
 *
 * Several pollerd instances on one database take turns: a look for due
 * digests is made under an advisory lock (pd_db_lock's, named
 * PD_DIGEST_LOCK, which no domain can be), held until the digests it read
 * are sent and recorded, so that no user gets the same digest from each.
 * An instance that finds the lock taken looks again later.
 *
 * The digest goes to deliver_to, the MTA listener pulled mail goes to, as
 * one SMTP transfer in the event loop's multi handle (pd_xfer.c), one
 * digest at a time: a daily digest has all day. Its envelope sender is
 * null (nothing bounces back to us), and it says Auto-Submitted:
 * auto-generated (RFC 3834), so that nothing learns from it or answers it.
 *
 * Sender addresses are what senders control: they go in the body only,
 * quoted-printable (no line of theirs can end early, be too long or start
 * a header), with control characters shown as '?'; in the links, percent-
 * encoded. The headers hold only our domain, the user and a count. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sm_link.h"
#include "sm_log.h"
#include "pd.h"

#define PD_DIGEST_BATCH 100         /* recipients read from the database at once */
#define PD_DIGEST_LOOK_MS 60000     /* look for due digests at least this often */
#define PD_DIGEST_MAIL_MAX (4u * 1024 * 1024)
#define PD_QP_LINE 76               /* RFC 2045's limit on an encoded line */
#define PD_DIGEST_LOCK "(intro digest)"

/* A digest composed and waiting for its turn. */
typedef struct pd_digest_job {
    struct pd_digest_job *next;
    char *user;
    char *senders;                  /* the senders it names, a JSON array */
    char *mail;
    size_t count;
} pd_digest_job;

struct pd_digests {
    long long next_look_ms;         /* when to read the due digests again */
    pd_digest_job *jobs;            /* composed, not yet started */
    pd_digest_job *sending;         /* its transfer is x */
    pd_xfer *x;
    int locked;                     /* we hold PD_DIGEST_LOCK */
};

int pd_digest_check_conf(pd_conf *c, char *err, size_t errlen)
{
    if (c->intro_digest == 0)
        return 0;
    if (!c->introductions || c->unsub_keys.n == 0 || !c->intro_url) {
        snprintf(err, errlen, "intro_digest needs introductions yes, intro_url and "
                 "unsubscribe_key (whose key signs the digest's links too)");
        return -1;
    }
    if (strncmp(c->intro_url, "https://", 8) != 0 || strpbrk(c->intro_url, " <>\"\r\n")) {
        snprintf(err, errlen, "intro_url: \"%s\" is not an https:// URL", c->intro_url);
        return -1;
    }
    return 0;
}

/* ---- composing ------------------------------------------------------- */

/* Append the text in quoted-printable (RFC 2045 6.7): "\n" ends a line
 * (CRLF out), every other octet that is not printable ASCII, '=', and a
 * blank before a line end are encoded, and long lines get soft breaks. */
static int qp_append(pd_buf *b, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)text;
    size_t col = 0;
    char enc[3];

    for (; *p; p++) {
        int plain = *p >= 33 && *p <= 126 && *p != '=';
        size_t w;

        if (*p == '\n') {
            if (pd_buf_append(b, "\r\n", 2) != 0)
                return -1;
            col = 0;
            continue;
        }
        if ((*p == ' ' || *p == '\t') && p[1] != '\n' && p[1] != '\0')
            plain = 1;
        w = plain ? 1 : 3;
        if (col + w > PD_QP_LINE - 1) {
            if (pd_buf_append(b, "=\r\n", 3) != 0)
                return -1;
            col = 0;
        }
        enc[0] = '=';
        enc[1] = hex[*p >> 4];
        enc[2] = hex[*p & 15];
        if (pd_buf_append(b, plain ? (const char *)p : enc, w) != 0)
            return -1;
        col += w;
    }
    return 0;
}

/* A sender's address as the body shows it: control characters as '?'. */
static void shown(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    for (; *in && o + 1 < outlen; in++)
        out[o++] = ((unsigned char)*in < 0x20 || *in == 0x7f) ? '?' : *in;
    out[o] = '\0';
}

/* "every day", "every 3 hours", ... */
static void every(long secs, char *out, size_t outlen)
{
    static const struct { long n; const char *one; } units[] = {
        { 86400, "day" }, { 3600, "hour" }, { 60, "minute" }, { 1, "second" },
    };
    size_t i;

    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (secs % units[i].n == 0)
            break;
    if (secs / units[i].n == 1)
        snprintf(out, outlen, "every %s", units[i].one);
    else
        snprintf(out, outlen, "every %ld %ss", secs / units[i].n, units[i].one);
}

/* The two links of one introduction into the body text. */
static int links(const pd_conf *c, const char *user, const char *sender, pd_buf *text,
                 char *why, size_t whylen)
{
    char link[2048], line[4200], lwhy[200];
    int n;

    if (pd_signed_link(c, SM_LINK_INTRO, c->intro_url, user, sender, link, sizeof(link), lwhy,
                       sizeof(lwhy)) != 0) {
        snprintf(why, whylen, "no link for <%s>: %s", sender, lwhy);
        return -1;
    }
    n = snprintf(line, sizeof(line), "  Accept:  %s&do=accept\n  Decline: %s&do=decline\n\n",
                 link, link);
    if (n < 0 || (size_t)n >= sizeof(line) || pd_buf_append(text, line, (size_t)n) != 0) {
        snprintf(why, whylen, "the links of <%s> do not fit", sender);
        return -1;
    }
    return 0;
}

/* The Date header's value (RFC 5322 3.3), in UTC, locale or not. */
static void rfc5322_date(time_t t, char *out, size_t outlen)
{
    static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
}

char *pd_digest_compose(const pd_conf *c, const char *user, const pd_digest_intro *in,
                        size_t n, time_t date, char *why, size_t whylen)
{
    static unsigned serial;
    pd_buf text = { .max = PD_DIGEST_MAIL_MAX }, mail = { .max = PD_DIGEST_MAIL_MAX };
    char u[SM_ADDR_MAX + 1], who[SM_ADDR_MAX + 1], line[1024], when[64], often[64];
    const char *awhy = "";
    char *out = NULL;
    size_t i;
    int len;

    if (n == 0 || sm_addr_normalize(user, u, sizeof(u), &awhy) != 0 || strcmp(u, user) != 0) {
        snprintf(why, whylen, "no digest to <%s>: %s", user, n ? "not a normalized address"
                 : "nothing to say");
        goto leave;
    }
    every(c->intro_digest, often, sizeof(often));
    len = snprintf(line, sizeof(line), "%zu %s not in your address book %s mail waiting "
                   "for you.\nAccept, and their mail is fetched for you at once. Decline, "
                   "and it never is.\n\n", n, n == 1 ? "sender" : "senders",
                   n == 1 ? "has" : "have");
    if (pd_buf_append(&text, line, (size_t)len) != 0)
        goto nomem;
    for (i = 0; i < n; i++) {
        shown(in[i].sender, who, sizeof(who));
        len = snprintf(line, sizeof(line), "%s (%lld %s)\n", who, in[i].stubs,
                       in[i].stubs == 1 ? "message" : "messages");
        if (pd_buf_append(&text, line, (size_t)len) != 0)
            goto nomem;
        if (links(c, u, in[i].sender, &text, why, whylen) != 0)
            goto leave;
    }
    len = snprintf(line, sizeof(line), "Each link shows a page that asks you first. Each "
                   "sender is named in one\nsuch mail only, and you get at most one %s.\n",
                   often);
    if (pd_buf_append(&text, line, (size_t)len) != 0)
        goto nomem;

    rfc5322_date(date, when, sizeof(when));
    len = snprintf(line, sizeof(line),
                   "Date: %s\r\nFrom: Mail introductions <postmaster@%s>\r\nTo: <%s>\r\n"
                   "Subject: %zu %s to write to you\r\n"
                   "Message-ID: <intro-digest.%lld.%ld.%u@%s>\r\n"
                   "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                   when, c->domain, u, n, n == 1 ? "person wants" : "people want",
                   (long long)date, (long)getpid(), ++serial, c->domain);
    if (len < 0 || (size_t)len >= sizeof(line) || pd_buf_append(&mail, line, (size_t)len) != 0
        || qp_append(&mail, text.data) != 0)
        goto nomem;
    out = mail.data;
    mail.data = NULL;
    goto leave;
nomem:
    snprintf(why, whylen, "no digest to <%s>: out of memory", user);
leave:
    pd_buf_free(&text);
    pd_buf_free(&mail);
    return out;
}

/* ---- sending ---------------------------------------------------------- */

static void job_free(pd_digest_job *j)
{
    if (!j)
        return;
    free(j->user);
    free(j->senders);
    free(j->mail);
    free(j);
}

static void jobs_drop(struct pd_digests *st)
{
    pd_digest_job *j;

    while ((j = st->jobs)) {
        st->jobs = j->next;
        job_free(j);
    }
}

/* The job of one recipient's rows [from, to) of res; NULL (logged). */
static pd_digest_job *job_of(pd_ctx *ctx, PGresult *res, int from, int to, time_t now)
{
    pd_digest_intro *in = calloc((size_t)(to - from), sizeof(*in));
    json_t *names = json_array();
    pd_digest_job *j = calloc(1, sizeof(*j));
    const char *user = PQgetvalue(res, from, 0);
    char why[256] = "out of memory";
    int i;

    if (!in || !names || !j || !(j->user = strdup(user)))
        goto fail;
    for (i = from; i < to; i++) {
        in[i - from].sender = PQgetvalue(res, i, 1);
        in[i - from].stubs = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        if (json_array_append_new(names, json_string(in[i - from].sender)) != 0)
            goto fail;
    }
    j->count = (size_t)(to - from);
    if (!(j->senders = json_dumps(names, JSON_COMPACT))
        || !(j->mail = pd_digest_compose(&ctx->conf, user, in, j->count, now, why,
                                         sizeof(why))))
        goto fail;
    json_decref(names);
    free(in);
    return j;
fail:
    sm_err("%s: introductions digest to <%s>: %s", ctx->conf.domain, user, why);
    json_decref(names);
    free(in);
    job_free(j);
    return NULL;
}

/* Read the due digests into st->jobs, in the database's order. */
static void look(pd_ctx *ctx, struct pd_digests *st, long long now_ms)
{
    long long period = ctx->conf.intro_digest * 1000LL;
    pd_digest_job **tail = &st->jobs, *j;
    PGresult *res;
    int i, from, rows;

    st->next_look_ms = now_ms + (period < PD_DIGEST_LOOK_MS ? period : PD_DIGEST_LOOK_MS);
    if (pd_db_connect(ctx) != 0)
        return;
    if ((st->locked = pd_db_lock(ctx, PD_DIGEST_LOCK) == 1) == 0) {
        sm_debug("%s: introductions digest: another pollerd is sending them; looking "
                 "again later", ctx->conf.domain);
        return;
    }
    if (!(res = pd_db_digest_due(ctx, PD_DIGEST_BATCH)))
        return;
    rows = PQntuples(res);
    for (from = 0; from < rows; from = i) {
        for (i = from + 1; i < rows; i++)
            if (strcmp(PQgetvalue(res, i, 0), PQgetvalue(res, from, 0)) != 0)
                break;
        if ((j = job_of(ctx, res, from, i, time(NULL)))) {
            *tail = j;
            tail = &j->next;
        }
    }
    PQclear(res);
}

/* Once what a look read is sent (or dropped), let another instance look. */
static void unlock_when_done(pd_ctx *ctx, struct pd_digests *st)
{
    if (st->locked && !st->jobs && !st->x) {
        pd_db_unlock(ctx, PD_DIGEST_LOCK);
        st->locked = 0;
    }
}

/* Hand the next job to the MTA. */
static void start_next(pd_ctx *ctx, struct pd_digests *st)
{
    pd_digest_job *j = st->jobs;
    pd_xfer *x;

    st->jobs = j->next;
    j->next = NULL;
    if (!(x = pd_xfer_new(ctx, NULL, NULL, PD_X_DIGEST))
        || pd_xfer_smtp(x, "", j->user, j->mail, -1, 0, NULL, 0) != 0
        || pd_xfer_start(x) != 0) {
        sm_err("%s: introductions digest to <%s>: cannot start the SMTP transfer: out of "
               "memory; it goes at the next look", ctx->conf.domain, j->user);
        pd_xfer_free(x);
        job_free(j);
        return;
    }
    st->x = x;
    st->sending = j;
}

void pd_digest_run(pd_ctx *ctx, long long now_ms)
{
    struct pd_digests *st = ctx->digests;

    if (ctx->conf.intro_digest == 0 || ctx->stopping)
        return;
    if (!st && !(st = ctx->digests = calloc(1, sizeof(*st)))) {
        sm_err("%s: introductions digest: out of memory", ctx->conf.domain);
        return;
    }
    if (st->x)
        return;
    if (!st->jobs && now_ms >= st->next_look_ms)
        look(ctx, st, now_ms);
    if (st->jobs)
        start_next(ctx, st);
    unlock_when_done(ctx, st);
}

void pd_digest_done(pd_xfer *x, CURLcode result)
{
    pd_ctx *ctx = x->ctx;
    struct pd_digests *st = ctx->digests;
    pd_digest_job *j = st->sending;
    char what[512];

    x->result = result;
    x->in_multi = 0;
    curl_multi_remove_handle(ctx->multi, x->easy);
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    if (result == CURLE_OK) {
        if (pd_db_digest_sent(ctx, j->user, j->senders) == 0)
            sm_info("%s: introductions digest to <%s>: %zu introduction%s, sent (%s)",
                    ctx->conf.domain, j->user, j->count, j->count == 1 ? "" : "s", x->reply);
        else
            sm_err("%s: introductions digest to <%s>: sent (%s) but not recorded: the next "
                   "one names them again", ctx->conf.domain, j->user, x->reply);
    } else {
        /* the MTA is down or refuses: the rest waits for the next look */
        pd_xfer_describe(x, what, sizeof(what));
        sm_warn("%s: introductions digest to <%s>: not sent: %s; tried again within %lds",
                ctx->conf.domain, j->user, what, ctx->conf.intro_digest < PD_DIGEST_LOOK_MS
                / 1000 ? ctx->conf.intro_digest : PD_DIGEST_LOOK_MS / 1000);
        jobs_drop(st);
    }
    pd_xfer_free(x);
    job_free(j);
    st->x = NULL;
    st->sending = NULL;
    unlock_when_done(ctx, st);
}

long long pd_digest_next_ms(const pd_ctx *ctx)
{
    const struct pd_digests *st = ctx->digests;

    if (ctx->conf.intro_digest == 0 || ctx->stopping)
        return 0;
    if (!st)
        return pd_now_ms();
    if (st->x)
        return 0;                   /* libcurl wakes the loop */
    return st->jobs ? pd_now_ms() : st->next_look_ms;
}

int pd_digest_busy(const pd_ctx *ctx)
{
    return ctx->digests && ctx->digests->x;
}

void pd_digest_abort(pd_ctx *ctx)
{
    if (pd_digest_busy(ctx))
        ctx->digests->x->cancel = 1;
}

void pd_digest_free(pd_ctx *ctx)
{
    struct pd_digests *st = ctx->digests;

    if (!st)
        return;
    pd_xfer_free(st->x);
    st->x = NULL;
    job_free(st->sending);
    jobs_drop(st);
    unlock_when_done(ctx, st);
    free(st);
    ctx->digests = NULL;
}
