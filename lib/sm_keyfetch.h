/* sm_keyfetch — get a peer domain's public key into a GnuPG home: if a key
 * with that fingerprint is not there yet, GET {outbox}/v1/key (libcurl,
 * certificate verified against ca_file or the system store; http:// only if
 * allow_http and the host is loopback) and import it only if it is exactly
 * the key with fingerprint fpr (sm_pgp_import_public). Blocking, bounded by
 * timeout seconds: called rarely, the imported key stays in the keyring. */
#ifndef SM_KEYFETCH_H
#define SM_KEYFETCH_H

#include <stddef.h>

typedef struct sm_https_opts {
    const char *ca_file;    /* NULL: system CA store */
    int allow_http;         /* accept http:// for loopback hosts */
    long timeout;           /* seconds, whole transfer */
} sm_https_opts;

/* 0 when the key is in home; -1 rejected (wrong key, bad URL, 4xx) or -2
 * temporary (network, 5xx, gpg trouble), with why. */
int sm_keyfetch(const char *home, const char *outbox_url, const char *fpr,
                const sm_https_opts *opts, char *why, size_t whylen);

/* GET url under opts (no redirects; agent is the User-Agent) into *body,
 * malloc'd and NUL-terminated, *len octets (NULL, 0 when empty), whatever
 * the HTTP status (*status). 0; -1 when the answer is larger than max;
 * -2 for transport trouble (network, TLS, certificate), with why. Blocking,
 * bounded by opts->timeout (default 30 s). */
int sm_https_get(const char *url, const sm_https_opts *opts, size_t max, const char *agent,
                 char **body, size_t *len, long *status, char *why, size_t whylen);

/* 0 if url may be used under opts (https, or http to a loopback host when
 * allowed), else -1 with why. */
int sm_url_allowed(const char *url, const sm_https_opts *opts, char *why, size_t whylen);

#endif
