/* pd.h — stubmail-pollerd internals, shared by the pollerd/ sources.
 *
 * stubmail-pollerd.c   options, configuration, signals, the event loop and
 *                      the poll cycle (which domains, how many at once)
 * pd_domain.c          the work for one remote domain, a small state
 *                      machine: old acks → poll → fetch → deliver → record →
 *                      ack, one transfer at a time
 * pd_xfer.c            one libcurl transfer (HTTP poll/fetch/ack, SMTP)
 * pd_db.c              everything said to PostgreSQL
 *
 * Every transfer runs in the one curl multi handle of pd_ctx; the event loop
 * calls pd_domain_xfer_done() when one finishes. Database calls are short
 * synchronous PQexecParams on one connection, bounded by statement_timeout. */
#ifndef PD_H
#define PD_H

#include <stddef.h>
#include <sys/types.h>
#include <curl/curl.h>
#include <libpq-fe.h>

#include "sm_addr.h"
#include "sm_id.h"
#include "sm_proto.h"

typedef struct pd_conf {
    char *domain;           /* own domain, lowercase */
    char *database;         /* libpq conninfo */
    char *deliver_to;       /* smtp://host:port as configured */
    char *spool_dir;
    long interval;          /* seconds */
    long timeout;           /* seconds */
    long concurrency;
    long batch_max;
    char *smtp_url;         /* deliver_to with our domain as EHLO name */
} pd_conf;

/* A growing memory buffer with a hard cap (responses of poll and ack, error
 * bodies). Bodies of messages never go here. */
typedef struct pd_buf {
    char *data;
    size_t len, cap, max;
    int overflow;
} pd_buf;

typedef enum { PD_X_POLL, PD_X_FETCH, PD_X_DELIVER, PD_X_ACK } pd_xkind;

struct pd_domain;
struct pd_ctx;

typedef struct pd_xfer {
    pd_xkind kind;
    struct pd_ctx *ctx;
    struct pd_domain *dom;
    CURL *easy;
    int in_multi;
    struct curl_slist *hdrs;
    struct curl_slist *rcpt;
    char *post;                     /* request body (poll, ack) */
    pd_buf body;                    /* response body, or error body of a fetch */
    char errbuf[CURL_ERROR_SIZE];
    CURLcode result;
    long status;                    /* HTTP status or last SMTP reply code */
    /* fetch: stream into fd, exactly expect bytes */
    int fd;
    long long expect, got;
    int length_mismatch;            /* Content-Length or body size != expect */
    long long content_length;       /* as announced, -1 if none */
    int write_errno;
    /* deliver: prefix (trace header), then fd from offset 0 */
    char *prefix;
    size_t prefix_len, prefix_off;
    off_t file_off;
    int read_errno;
    int cancel;                     /* abort via the progress callback */
    char reply[256];                /* last SMTP reply line */
    /* ack: what is being acked */
    char ack_id[SM_ID_LEN + 1];
    char ack_to[SM_ADDR_MAX + 1];
} pd_xfer;

typedef struct pd_old {             /* delivered earlier, not yet acked */
    char id[SM_ID_LEN + 1];
    char to[SM_ADDR_MAX + 1];
    char from[SM_ADDR_MAX + 1];
} pd_old;

typedef enum {
    PD_D_QUEUED, PD_D_OLD_ACKS, PD_D_POLL, PD_D_ITEMS, PD_D_DONE
} pd_dstate;

typedef struct pd_domain {
    struct pd_ctx *ctx;
    struct pd_domain *next;
    char *name;                     /* remote domain */
    char *url;                      /* outbox base URL, no trailing slash */
    char *secret;
    sm_pair *pairs;                 /* sorted by (to, from) */
    size_t npairs, pairs_cap;
    pd_old *old;
    size_t nold, old_cap, old_idx;
    pd_dstate state;
    int locked;                     /* holds the advisory lock */
    int failed;
    size_t chunk;                   /* first pair of the current poll */
    size_t chunk_len;
    unsigned polls;                 /* polls of the current chunk (more: true) */
    sm_listing *items;
    size_t nitems, idx;
    int more;
    size_t progress;                /* items acked since the last poll */
    int fd;                         /* fetched body, reused for the next */
    char fd_id[SM_ID_LEN + 1];      /* recipient of the same id */
    char delivered_reply[256];      /* MTA answer for the current item */
    int recorded;                   /* current item is in table received */
    pd_xfer *x;                     /* running transfer, or NULL */
} pd_domain;

/* Delivered to the MTA but not yet in table received (database trouble):
 * kept in memory, consulted before every delivery, flushed each cycle. */
typedef struct pd_unrecorded {
    struct pd_unrecorded *next;
    char domain[SM_DOMAIN_MAX + 1];
    char id[SM_ID_LEN + 1];
    char to[SM_ADDR_MAX + 1];
    char from[SM_ADDR_MAX + 1];
    int acked;
} pd_unrecorded;

typedef struct pd_ctx {
    pd_conf conf;
    int debug;
    CURLM *multi;
    PGconn *db;
    pd_domain *domains;             /* this cycle's, in order */
    pd_domain *queue;               /* next one to start */
    long active;                    /* domains started, not yet done */
    int cycle_running;
    int stopping;                   /* SIGTERM: finish deliveries, then exit */
    int mta_down;                   /* the MTA was unreachable this cycle */
    pd_unrecorded *unrecorded;
    /* per-cycle counters */
    unsigned n_domains, n_failed_domains;
    unsigned n_delivered, n_acked, n_failed;
} pd_ctx;

/* pd_buf */
int pd_buf_append(pd_buf *b, const void *data, size_t len);
void pd_buf_free(pd_buf *b);

/* pd_xfer.c */
pd_xfer *pd_xfer_new(pd_ctx *ctx, pd_domain *d, pd_xkind kind);
/* Set up an HTTP request to url (POST with a JSON body if post != NULL). */
int pd_xfer_http(pd_xfer *x, const char *url, const char *post, size_t maxbody);
/* Set up the SMTP delivery of prefix + the file fd (size bytes). */
int pd_xfer_smtp(pd_xfer *x, const char *from, const char *to, const char *prefix,
                 int fd, long long size);
int pd_xfer_start(pd_xfer *x);
void pd_xfer_free(pd_xfer *x);
/* "HTTP 404 not_found: no such message" or the transport error. */
void pd_xfer_describe(const pd_xfer *x, char *out, size_t outlen);
/* The JSON error code of an HTTP error body, or "" (points into a static
 * buffer of at most 63 chars, valid until the next call). */
const char *pd_xfer_error_code(const pd_xfer *x);

/* pd_domain.c */
pd_domain *pd_domain_get(pd_ctx *ctx, const char *name, const char *url,
                         const char *secret);
int pd_domain_add_pair(pd_domain *d, const char *from, const char *to);
int pd_domain_add_old(pd_domain *d, const char *id, const char *to, const char *from);
void pd_domain_begin(pd_domain *d);
void pd_domain_xfer_done(pd_xfer *x, CURLcode result);
/* SIGTERM: abort what can be aborted; deliveries run to their end. */
void pd_domain_stop(pd_domain *d);
/* Second signal: abort everything now. */
void pd_domain_abort(pd_domain *d);
void pd_domain_free(pd_domain *d);

/* pd_db.c */
int pd_db_connect(pd_ctx *ctx);
void pd_db_close(pd_ctx *ctx);
int pd_db_load(pd_ctx *ctx);                 /* builds ctx->domains */
int pd_db_lock(pd_ctx *ctx, const char *domain);   /* 1 got, 0 busy, -1 err */
void pd_db_unlock(pd_ctx *ctx, const char *domain);
/* 0 not received, 1 received not acked, 2 received and acked, -1 error */
int pd_db_received(pd_ctx *ctx, const char *domain, const char *id, const char *to);
int pd_db_record(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                 const char *from, int acked);
int pd_db_acked(pd_ctx *ctx, const char *domain, const char *id, const char *to);
/* Insert what could not be recorded earlier; 0 when nothing is left. */
int pd_db_flush_unrecorded(pd_ctx *ctx);
int pd_unrecorded_add(pd_ctx *ctx, const char *domain, const char *id,
                      const char *to, const char *from);
pd_unrecorded *pd_unrecorded_find(pd_ctx *ctx, const char *domain,
                                  const char *id, const char *to);

#endif
