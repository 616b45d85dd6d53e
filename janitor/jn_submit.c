/* jn_submit — a notification handed to the local MTA by SMTP (libcurl),
 * with the null reverse-path (MAIL FROM:<>, RFC 5321 4.5.5) so that it is
 * never bounced back to us. The MTA has it once it answered the data with
 * 250; libcurl dot-stuffs the text. */
#include <string.h>

#include <curl/curl.h>

#include "jn.h"

typedef struct jn_reader {
    const char *p;
    size_t left;
} jn_reader;

static size_t jn_read(char *buf, size_t size, size_t n, void *arg)
{
    jn_reader *r = arg;
    size_t len = size * n < r->left ? size * n : r->left;

    memcpy(buf, r->p, len);
    r->p += len;
    r->left -= len;
    return len;
}

jn_submit_status jn_submit(const jn_settings *set, const char *rcpt, const char *text,
                           char *why, size_t whylen)
{
    jn_submit_status st = JN_SUBMIT_LATER;
    jn_reader r = { text, strlen(text) };
    struct curl_slist *to = NULL;
    char errbuf[CURL_ERROR_SIZE] = "", addr[1024];
    long code = 0;
    CURLcode rc;
    CURL *c;

    snprintf(addr, sizeof addr, "<%s>", rcpt);
    if ((c = curl_easy_init()) == NULL || (to = curl_slist_append(NULL, addr)) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto leave;
    }
    curl_easy_setopt(c, CURLOPT_URL, set->submit_to);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, "<>");
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, to);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, jn_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, set->submit_timeout);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK) {
        st = JN_SUBMIT_OK;
        goto leave;
    }
    /* a 5xx to MAIL, RCPT or the data: the MTA will never take it */
    if (code >= 500 && code < 600)
        st = JN_SUBMIT_REFUSED;
    snprintf(why, whylen, "%s: %s (last reply %ld)", set->submit_to,
             errbuf[0] ? errbuf : curl_easy_strerror(rc), code);
leave:
    curl_slist_free_all(to);
    if (c)
        curl_easy_cleanup(c);
    return st;
}
