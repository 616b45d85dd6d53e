/* pd_xfer.c — one libcurl transfer of stubmail-pollerd.
 *
 * HTTP poll and ack: JSON body out, response into a capped memory buffer.
 * HTTP fetch: the body streams into its partial file (pd_partial.c, never
 * into memory), the whole of it (200) or the rest of it (206, when the
 * request asked for a Range); Content-Length and the byte count must add up
 * to the listed size.
 * SMTP delivery: the trace header, then the spool file, read by the read
 * callback; libcurl does the dot-stuffing. A digest of introductions
 * (pd_digest.c) is all prefix, with no file. CURLOPT_CRLF stays off: the stored
 * message already has CRLF line ends and goes out byte for byte.
 *
 * Every transfer has a connect timeout and a low-speed limit of one byte per
 * second over `timeout` seconds, so a stalled peer or MTA fails the transfer
 * and the work is retried next cycle. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "sm_log.h"
#include "pd.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0"
#endif

#define PD_ERRBODY_MAX 65536

/* An SMTP transfer: a pulled message's delivery or a digest of ours. */
static int is_smtp(const pd_xfer *x)
{
    return x->kind == PD_X_DELIVER || x->kind == PD_X_DIGEST;
}

/* Whose transfer it is, for the log: the remote domain, or ours for a
 * digest. */
static const char *whose(const pd_xfer *x)
{
    return x->dom ? x->dom->name : x->ctx->conf.domain;
}

int pd_buf_append(pd_buf *b, const void *data, size_t len)
{
    size_t ncap;
    char *n;

    if (b->overflow || len > b->max - b->len) {
        b->overflow = 1;
        return -1;
    }
    if (b->len + len + 1 > b->cap) {
        ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + len + 1)
            ncap *= 2;
        if (!(n = realloc(b->data, ncap))) {
            b->overflow = 1;
            return -1;
        }
        b->data = n;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

void pd_buf_free(pd_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

pd_xfer *pd_xfer_new(pd_ctx *ctx, pd_domain *d, pd_lane *lane, pd_xkind kind)
{
    pd_xfer *x = calloc(1, sizeof(*x));

    if (!x)
        return NULL;
    x->kind = kind;
    x->ctx = ctx;
    x->dom = d;
    x->lane = lane;
    x->fd = -1;
    x->content_length = -1;
    x->cr_from = x->cr_to = x->cr_total = -1;
    x->body.max = PD_ERRBODY_MAX;
    if (!(x->easy = curl_easy_init())) {
        free(x);
        return NULL;
    }
    return x;
}

void pd_xfer_free(pd_xfer *x)
{
    if (!x)
        return;
    if (x->in_multi)
        curl_multi_remove_handle(x->ctx->multi, x->easy);
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->hdrs);
    curl_slist_free_all(x->rcpt);
    free(x->post);
    free(x->prefix);
    free(x->skips);
    pd_buf_free(&x->body);
    free(x);                /* x->fd belongs to the lane */
}

/* The first body bytes of a fetch: the answer must be what was asked for.
 * A 206 carries the rest from range_from (Content-Range says so); a 200 the
 * whole body, from the file's start even if a range was asked for. 0 to
 * take the bytes, -1 to abort. */
static int fetch_begins(pd_xfer *x, long status)
{
    curl_off_t cl = -1;

    x->started = 1;
    if (status == 206 && (x->range_from == 0 || x->cr_from != x->range_from
                          || x->cr_to != x->expect - 1 || x->cr_total != x->expect)) {
        x->length_mismatch = 1;
        return -1;
    }
    if (status == 200 && x->range_from > 0) {
        /* the outbox sent it all (say If-Range did not match): start over */
        if (pd_partial_restart(x->fd) != 0) {
            x->write_errno = errno;
            return -1;
        }
        x->restarted = 1;
        x->got = x->range_from = 0;
    }
    curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (cl != (curl_off_t)(x->expect - x->range_from)) {
        x->content_length = (long long)cl;
        x->length_mismatch = 1;
        return -1;
    }
    if (status == 200 && x->openpgp && pd_partial_mark(x->fd, x->expect, x->etag) != 0)
        sm_debug("%s: the fetch cannot be resumed if it breaks: %s", x->dom->name,
                 strerror(errno));
    return 0;
}

/* Fetch: body → file while the status is 200 or 206; anything else (an
 * error body) → memory. The size was announced by the listing: a different
 * Content-Length or more bytes than that abort the transfer. */
static size_t write_cb(char *data, size_t size, size_t nmemb, void *baton)
{
    pd_xfer *x = baton;
    size_t len = size * nmemb, done = 0;
    long status = 0;
    ssize_t n;

    if (x->kind != PD_X_FETCH)
        return pd_buf_append(&x->body, data, len) ? 0 : len;

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 && status != 206)
        return pd_buf_append(&x->body, data, len) ? 0 : len;

    if (!x->started && fetch_begins(x, status) != 0)
        return 0;
    if ((long long)len > x->expect - x->got) {
        x->length_mismatch = 1;
        return 0;
    }
    while (done < len) {
        n = write(x->fd, data + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            x->write_errno = errno;
            return 0;
        }
        done += (size_t)n;
    }
    x->got += (long long)len;
    return len;
}

/* If the header line data (len octets, with its CRLF) is "name: value",
 * 1 with *value and *vlen set to the value without the blanks around it;
 * else 0. Names are compared ignoring case. */
static int header_value(const char *data, size_t len, const char *name, const char **value,
                        size_t *vlen)
{
    size_t n = strlen(name);

    if (len <= n || strncasecmp(data, name, n) != 0 || data[n] != ':')
        return 0;
    data += n + 1;
    len -= n + 1;
    while (len && (*data == ' ' || *data == '\t')) {
        data++;
        len--;
    }
    while (len && (data[len - 1] == '\r' || data[len - 1] == '\n' || data[len - 1] == ' '
                   || data[len - 1] == '\t'))
        len--;
    *value = data;
    *vlen = len;
    return 1;
}

/* 1 if the header line data is "name: value" with value equal to want, or
 * starting with want and a ';' (parameters), ignoring case. */
static int header_is(const char *data, size_t len, const char *name, const char *want)
{
    size_t w = strlen(want);

    if (!header_value(data, len, name, &data, &len))
        return 0;
    return len >= w && strncasecmp(data, want, w) == 0 && (len == w || data[w] == ';'
                                                            || data[w] == ' ');
}

/* Keep "Content-Range: bytes FROM-TO/TOTAL" of a 206; anything else there
 * stays -1 (and fails the check of the body's first bytes). */
static void header_content_range(pd_xfer *x, const char *data, size_t len)
{
    char buf[96];
    long long from, to, total;
    int end = 0;

    if (!header_value(data, len, "Content-Range", &data, &len) || len >= sizeof(buf))
        return;
    memcpy(buf, data, len);
    buf[len] = '\0';
    if (sscanf(buf, "bytes %lld-%lld/%lld%n", &from, &to, &total, &end) == 3
        && (size_t)end == len && from >= 0 && to >= from && total > to) {
        x->cr_from = from;
        x->cr_to = to;
        x->cr_total = total;
    }
}

/* Keep the value of header line data if it is "ETag: value"; a value too
 * long, or with other than visible ASCII, is not kept: it could not go
 * back in If-None-Match or a UDP poll cursor as it came. */
static void header_etag(pd_xfer *x, const char *data, size_t len)
{
    size_t i;

    if (!header_value(data, len, "ETag", &data, &len))
        return;
    x->etag[0] = '\0';
    if (len == 0 || len > PD_ETAG_MAX)
        return;
    for (i = 0; i < len; i++)
        if ((unsigned char)data[i] < 0x21 || (unsigned char)data[i] > 0x7e)
            return;
    memcpy(x->etag, data, len);
    x->etag[len] = '\0';
}

/* HTTP: whether the answer is an OpenPGP message (docs/PROTOCOL.md, "Stored
 * messages are signed and encrypted"), its ETag, and a fetch's
 * Content-Range; a new status line
 * (after a 100 Continue) starts over. SMTP: keep the last reply line of the
 * MTA (libcurl passes SMTP replies to the header callback). */
static size_t header_cb(char *data, size_t size, size_t nmemb, void *baton)
{
    pd_xfer *x = baton;
    size_t len = size * nmemb, i, o = 0;

    if (!is_smtp(x)) {
        if (len >= 5 && !strncmp(data, "HTTP/", 5)) {
            x->openpgp = 0;
            x->etag[0] = '\0';
            x->cr_from = x->cr_to = x->cr_total = -1;
        } else if (len > 5 && !strncasecmp(data, "ETag:", 5))
            header_etag(x, data, len);
        else if (x->kind == PD_X_FETCH && len > 14 && !strncasecmp(data, "Content-Range:", 14))
            header_content_range(x, data, len);
        else if (header_is(data, len, "Stubmail-Format", "openpgp")
                 || header_is(data, len, "Content-Type", "application/pgp-encrypted"))
            x->openpgp = 1;
        return len;
    }

    /* skip 221, the answer to the QUIT libcurl sends after a failure */
    if (len >= 3 && strncmp(data, "221", 3) != 0) {
        for (i = 0; i < len && o + 1 < sizeof(x->reply); i++) {
            unsigned char c = (unsigned char)data[i];
            if (c == '\r' || c == '\n')
                break;
            x->reply[o++] = (c < 0x20 || c > 0x7e) ? '?' : (char)c;
        }
        x->reply[o] = '\0';
    }
    return len;
}

/* SMTP DATA: the prefix, then the file from its start, less the skips. */
static size_t read_cb(char *buf, size_t size, size_t nmemb, void *baton)
{
    pd_xfer *x = baton;
    size_t want = size * nmemb, n;
    ssize_t r;

    if (x->prefix_off < x->prefix_len) {
        n = x->prefix_len - x->prefix_off;
        if (n > want)
            n = want;
        memcpy(buf, x->prefix + x->prefix_off, n);
        x->prefix_off += n;
        return n;
    }
    if (x->fd < 0)
        return 0;                   /* a digest: the prefix is all of it */
    /* step over the ranges left out, and never read into the next one */
    while (x->skip_idx < x->nskips && x->file_off >= x->skips[x->skip_idx].from) {
        if (x->file_off < x->skips[x->skip_idx].to)
            x->file_off = x->skips[x->skip_idx].to;
        x->skip_idx++;
    }
    if (x->skip_idx < x->nskips && (off_t)want > x->skips[x->skip_idx].from - x->file_off)
        want = (size_t)(x->skips[x->skip_idx].from - x->file_off);
    for (;;) {
        r = pread(x->fd, buf, want, x->file_off);
        if (r >= 0)
            break;
        if (errno != EINTR) {
            x->read_errno = errno;
            return CURL_READFUNC_ABORT;
        }
    }
    if (r == 0 && x->file_off != x->expect) {
        x->read_errno = EIO;        /* never end a message early: the MTA
                                     * would accept a truncated one */
        return CURL_READFUNC_ABORT;
    }
    x->file_off += r;
    return (size_t)r;
}

/* SMTP: the only safe way to stop a delivery under way. Removing the handle
 * would make libcurl end the DATA phase with "." (smtp_done ignores
 * "premature") and the MTA would accept a truncated message; an error from
 * this callback closes the connection without it. */
static int xferinfo_cb(void *baton, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    pd_xfer *x = baton;

    (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
    return x->cancel ? 1 : 0;
}

/* With -d: libcurl's own commentary and the protocol lines, never the
 * credentials and never message data. */
static int debug_cb(CURL *easy, curl_infotype type, char *data, size_t size, void *baton)
{
    pd_xfer *x = baton;
    const char *dir;
    size_t len = size;

    (void)easy;
    switch (type) {
    case CURLINFO_TEXT:       dir = "*"; break;
    case CURLINFO_HEADER_IN:  dir = "<"; break;
    case CURLINFO_HEADER_OUT: dir = ">"; break;
    default: return 0;
    }
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (type == CURLINFO_HEADER_OUT) {
        /* an HTTP request header block: log it line by line, minus auth */
        const char *p = data, *end = data + len, *nl;
        while (p < end) {
            size_t l;
            nl = memchr(p, '\n', (size_t)(end - p));
            l = (size_t)((nl ? nl : end) - p);
            if (l && p[l - 1] == '\r')
                l--;
            if (l >= 14 && !strncasecmp(p, "Authorization:", 14))
                sm_debug("%s: %s Authorization: (hidden)", whose(x), dir);
            else if (l)
                sm_debug("%s: %s %.*s", whose(x), dir, (int)(l > 300 ? 300 : l), p);
            p = nl ? nl + 1 : end;
        }
        return 0;
    }
    if (len > 300)
        len = 300;
    sm_debug("%s: %s %.*s", whose(x), dir, (int)len, data);
    return 0;
}

static void common_opts(pd_xfer *x)
{
    const pd_conf *c = &x->ctx->conf;
    CURL *e = x->easy;

    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, c->timeout);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, c->timeout);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    if (x->ctx->debug) {
        curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
        curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, debug_cb);
        curl_easy_setopt(e, CURLOPT_DEBUGDATA, x);
    }
}

int pd_xfer_http(pd_xfer *x, const char *url, const char *post, size_t maxbody)
{
    const pd_conf *c = &x->ctx->conf;
    CURL *e = x->easy;
    struct curl_slist *h;
    char auth[SM_TOKEN_MAX + 32];

    common_opts(x);
    if (maxbody)
        x->body.max = maxbody;
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "stubmail-pollerd/" PACKAGE_VERSION);
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    if (x->kind != PD_X_LOGIN) {    /* the login is its own credential */
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", x->dom->sess->token);
        if (!(h = curl_slist_append(x->hdrs, auth)))
            return -1;
        x->hdrs = h;
    }
    if (post) {
        if (!(x->post = strdup(post)))
            return -1;
        if (!(h = curl_slist_append(x->hdrs, "Content-Type: application/json")))
            return -1;
        x->hdrs = h;
        if (!(h = curl_slist_append(x->hdrs, "Expect:")))
            return -1;
        x->hdrs = h;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->post);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(x->post));
    }
    if (x->hdrs)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    return 0;
}

int pd_xfer_header(pd_xfer *x, const char *line)
{
    struct curl_slist *h = curl_slist_append(x->hdrs, line);

    if (!h)
        return -1;
    x->hdrs = h;
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
    return 0;
}

int pd_xfer_smtp(pd_xfer *x, const char *from, const char *to, const char *prefix,
                 int fd, long long size, sm_range *skips, size_t nskips)
{
    CURL *e = x->easy;
    char buf[SM_ADDR_MAX + 3];
    long long left_out = 0;
    size_t i;

    x->skips = skips;
    x->nskips = nskips;
    for (i = 0; i < nskips; i++)
        left_out += (long long)(skips[i].to - skips[i].from);

    common_opts(x);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_SMTP | CURLPROTO_SMTPS));
#endif
    curl_easy_setopt(e, CURLOPT_URL, x->ctx->conf.smtp_url);
    snprintf(buf, sizeof(buf), "<%s>", from);
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, buf);
    snprintf(buf, sizeof(buf), "<%s>", to);
    if (!(x->rcpt = curl_slist_append(NULL, buf)))
        return -1;
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, x->rcpt);
    if (!(x->prefix = strdup(prefix)))
        return -1;
    x->prefix_len = strlen(prefix);
    x->fd = fd;
    x->file_off = 0;
    x->expect = size;
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
                     (curl_off_t)((long long)x->prefix_len + size - left_out));
    curl_easy_setopt(e, CURLOPT_CRLF, 0L);
    /* libcurl waits for the answer to the final "." in a blocking loop
     * (smtp_done): bound that wait by `timeout` too */
    curl_easy_setopt(e, CURLOPT_SERVER_RESPONSE_TIMEOUT, x->ctx->conf.timeout);
    return 0;
}

int pd_xfer_start(pd_xfer *x)
{
    CURLMcode mc = curl_multi_add_handle(x->ctx->multi, x->easy);

    if (mc != CURLM_OK) {
        sm_err("%s: cannot start a transfer: %s", whose(x), curl_multi_strerror(mc));
        return -1;
    }
    x->in_multi = 1;
    return 0;
}

/* Log-safe copy: printable ASCII only, capped. */
static void clean_copy(char *out, size_t outlen, const char *in)
{
    size_t o = 0;

    for (; in && *in && o + 1 < outlen; in++)
        out[o++] = ((unsigned char)*in < 0x20 || (unsigned char)*in > 0x7e) ? '?' : *in;
    out[o] = '\0';
}

static void error_body(const pd_xfer *x, char *code, size_t codelen, char *msg, size_t msglen)
{
    json_t *j, *v;

    code[0] = msg[0] = '\0';
    if (!x->body.len)
        return;
    if (!(j = json_loadb(x->body.data, x->body.len, 0, NULL))) {
        clean_copy(msg, msglen > 120 ? 120 : msglen, x->body.data);
        return;
    }
    if ((v = json_object_get(j, "error")) && json_is_string(v))
        clean_copy(code, codelen, json_string_value(v));
    if ((v = json_object_get(j, "message")) && json_is_string(v))
        clean_copy(msg, msglen, json_string_value(v));
    json_decref(j);
}

const char *pd_xfer_error_code(const pd_xfer *x)
{
    static char code[64];
    char msg[8];

    error_body(x, code, sizeof(code), msg, sizeof(msg));
    return code;
}

void pd_xfer_describe(const pd_xfer *x, char *out, size_t outlen)
{
    char code[64], msg[200];

    if (x->result != CURLE_OK && !(x->kind == PD_X_FETCH && x->length_mismatch)
        && !is_smtp(x)) {
        if (x->write_errno)
            snprintf(out, outlen, "writing the spool file: %s", strerror(x->write_errno));
        else
            snprintf(out, outlen, "%s", x->errbuf[0] ? x->errbuf
                     : curl_easy_strerror(x->result));
        return;
    }
    switch (x->kind) {
    case PD_X_DELIVER:
    case PD_X_DIGEST:
        if (x->cancel)
            snprintf(out, outlen, "aborted by a second signal before the end of DATA");
        else if (x->read_errno)
            snprintf(out, outlen, "reading the spool file: %s", strerror(x->read_errno));
        else if (x->reply[0] && x->status >= 400)
            snprintf(out, outlen, "MTA said: %s", x->reply);
        else
            snprintf(out, outlen, "%s", x->errbuf[0] ? x->errbuf
                     : curl_easy_strerror(x->result));
        return;
    case PD_X_FETCH:
        if (x->length_mismatch && x->status == 206
            && (x->cr_from != x->range_from || x->cr_to != x->expect - 1
                || x->cr_total != x->expect))
            snprintf(out, outlen, "206 for bytes %lld- with Content-Range %lld-%lld/%lld, "
                     "not the rest of the listed %lld", x->range_from, x->cr_from, x->cr_to,
                     x->cr_total, x->expect);
        else if (x->length_mismatch && x->content_length != x->expect - x->range_from)
            snprintf(out, outlen, "Content-Length %lld is not the %lld %s", x->content_length,
                     x->expect - x->range_from, x->range_from ? "octets asked for"
                     : "listed octets");
        else if (x->length_mismatch)
            snprintf(out, outlen, "body is not the %lld listed bytes (got %lld)",
                     x->expect, x->got);
        if (x->length_mismatch)
            return;
        /* fall through */
    default:
        error_body(x, code, sizeof(code), msg, sizeof(msg));
        if (code[0] || msg[0])
            snprintf(out, outlen, "HTTP %ld %s%s%s", x->status, code[0] ? code : "-",
                     msg[0] ? ": " : "", msg);
        else
            snprintf(out, outlen, "HTTP %ld", x->status);
    }
}

int pd_xfer_domain_wide(const pd_xfer *x)
{
    if (x->result != CURLE_OK)
        return !(x->kind == PD_X_FETCH && (x->length_mismatch || x->write_errno));
    return x->status == 401 || x->status >= 500 || x->status < 200;
}
