/* sm_https — GET a small answer over HTTPS (libcurl): a verified
 * certificate (ca_file or the system store), no redirects, a size cap, a
 * time limit; http:// only if allow_http and the host is loopback. */
#ifndef SM_HTTPS_H
#define SM_HTTPS_H

#include <stddef.h>

typedef struct sm_https_opts {
    const char *ca_file;    /* NULL: system CA store */
    int allow_http;         /* accept http:// for loopback hosts */
    long timeout;           /* seconds, whole transfer */
} sm_https_opts;

/* GET url under opts (no redirects; agent is the User-Agent) into *body,
 * malloc'd and NUL-terminated, *len octets (NULL, 0 when empty), whatever
 * the HTTP status (*status). 0; -1 when the answer is larger than max;
 * -2 for transport trouble (network, TLS, certificate), with why. Blocking,
 * bounded by opts->timeout (default 30 s). */
int sm_https_get(const char *url, const sm_https_opts *opts, size_t max, const char *agent,
                 char **body, size_t *len, long *status, char *why, size_t whylen);

/* The same as a POST of json (Content-Type: application/json): a login
 * (stubmailctl check). */
int sm_https_post(const char *url, const char *json, const sm_https_opts *opts, size_t max,
                  const char *agent, char **body, size_t *len, long *status, char *why,
                  size_t whylen);

/* 0 if url may be used under opts (https, or http to a loopback host when
 * allowed), else -1 with why. */
int sm_url_allowed(const char *url, const sm_https_opts *opts, char *why, size_t whylen);

#endif
