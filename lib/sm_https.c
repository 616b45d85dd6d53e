/* sm_https — the one HTTPS client for small answers (a domain key, a WKD
 * key): libcurl easy, a verified certificate, no redirects, a size cap and a
 * time limit; plain http only where the caller allowed it and only to a
 * loopback address. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "sm_log.h"
#include "sm_https.h"

#define DEFAULT_TIMEOUT  30L

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe before libcurl 7.84: once, here, for
 * callers that did not do it at startup (it counts, so theirs is harmless). */
static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* An IP literal in 127.0.0.0/8 or ::1 (curl gives IPv6 hosts in brackets).
 * Names, "localhost" too, are not loopback: what they resolve to is not
 * ours to check here. */
static int host_is_loopback(const char *host)
{
    char buf[64];
    struct in_addr a4;
    struct in6_addr a6;
    size_t n = strlen(host);

    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (n < 3 || n - 2 >= sizeof buf || host[0] != '[' || host[n - 1] != ']')
        return 0;
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    return inet_pton(AF_INET6, buf, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

int sm_url_allowed(const char *url, const sm_https_opts *opts, char *why, size_t whylen)
{
    CURLU *u = NULL;
    char *host = NULL, *user = NULL, *fragment = NULL;
    int rc = -1;

    if (why && whylen)
        why[0] = '\0';
    if (!url || !*url) {
        sm_why(why, whylen, "no URL");
        goto leave;
    }
    if (curl_url_set(u = curl_url(), CURLUPART_URL, url, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        sm_why(why, whylen, "not an absolute URL: %.200s", url);
        goto leave;
    }
    /* credentials or a fragment in an outbox URL are a mistake or a trick */
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK
        || curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK) {
        sm_why(why, whylen, "URL with user info or fragment: %.200s", url);
        goto leave;
    }
    /* the scheme as written: curl lowercases it, the record grammar does not */
    if (strncmp(url, "https://", 8) == 0) {
        rc = 0;
    } else if (strncmp(url, "http://", 7) == 0) {
        if (!opts || !opts->allow_http)
            sm_why(why, whylen, "plain http is not allowed: %.200s", url);
        else if (!host_is_loopback(host))
            sm_why(why, whylen, "plain http only to a loopback address: %.200s", url);
        else
            rc = 0;
    } else {
        sm_why(why, whylen, "scheme is neither https:// nor http:// (lowercase): %.200s", url);
    }
leave:
    curl_free(host);
    curl_free(user);
    curl_free(fragment);
    curl_url_cleanup(u);
    return rc;
}

typedef struct get_buf {
    char *data;
    size_t len, max;
    int too_big;
} get_buf;

static size_t write_cb(char *data, size_t size, size_t nmemb, void *baton)
{
    get_buf *b = baton;
    size_t len = size * nmemb;
    char *n;

    if (len > b->max - b->len) {
        b->too_big = 1;
        return 0;               /* aborts the transfer */
    }
    if (!(n = realloc(b->data, b->len + len + 1)))
        return 0;
    b->data = n;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return len;
}

/* GET, or POST of a JSON body when post is not NULL. */
static int transfer(const char *url, const char *post, const sm_https_opts *opts, size_t max,
                    const char *agent, char **body, size_t *len, long *status, char *why,
                    size_t whylen)
{
    struct curl_slist *hdrs = NULL;
    const char *method = post ? "POST" : "GET";
    char errbuf[CURL_ERROR_SIZE] = "";
    get_buf b = { NULL, 0, max, 0 };
    CURL *e = NULL;
    CURLcode cc;
    long timeout = opts && opts->timeout > 0 ? opts->timeout : DEFAULT_TIMEOUT;
    int rc = -2;

    *body = NULL;
    *len = 0;
    *status = 0;
    if (pthread_once(&curl_once, curl_init) != 0 || curl_init_rc != CURLE_OK
        || !(e = curl_easy_init())) {
        sm_why(why, whylen, "libcurl initialisation failed");
        goto leave;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, opts && opts->allow_http ? "http,https" : "https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS,
                     (long)(opts && opts->allow_http ? CURLPROTO_HTTP | CURLPROTO_HTTPS
                                                     : CURLPROTO_HTTPS));
#endif
    /* a redirect could lead anywhere: the origin DNS named answers */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);          /* threads: no SIGALRM */
    curl_easy_setopt(e, CURLOPT_TIMEOUT, timeout);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, timeout);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE, (long)max);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, agent);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    if (opts && opts->ca_file && *opts->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, opts->ca_file);
    if (post) {
        if (!(hdrs = curl_slist_append(NULL, "Content-Type: application/json"))) {
            sm_why(why, whylen, "%s %s: out of memory", method, url);
            goto leave;
        }
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, post);
    }

    cc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    if (b.too_big || cc == CURLE_FILESIZE_EXCEEDED) {
        sm_why(why, whylen, "%s %s: answer larger than %zu bytes", method, url, max);
        rc = -1;
        goto leave;
    }
    if (cc != CURLE_OK) {
        /* network, TLS and certificate trouble: maybe fixed by the next try */
        sm_why(why, whylen, "%s %s: %s", method, url,
               errbuf[0] ? errbuf : curl_easy_strerror(cc));
        goto leave;
    }
    *body = b.data;
    *len = b.len;
    b.data = NULL;
    rc = 0;
leave:
    free(b.data);
    if (e)
        curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    return rc;
}

int sm_https_get(const char *url, const sm_https_opts *opts, size_t max, const char *agent,
                 char **body, size_t *len, long *status, char *why, size_t whylen)
{
    return transfer(url, NULL, opts, max, agent, body, len, status, why, whylen);
}

int sm_https_post(const char *url, const char *json, const sm_https_opts *opts, size_t max,
                  const char *agent, char **body, size_t *len, long *status, char *why,
                  size_t whylen)
{
    return transfer(url, json, opts, max, agent, body, len, status, why, whylen);
}
