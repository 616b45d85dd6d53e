/* pd.h — stubmail-pollerd internals, shared by the pollerd/ sources.
 *
 * stubmail-pollerd.c   options, configuration, signals, the event loop and
 *                      the poll cycle (which domains, how many at once)
 * pd_domain.c          the work for one remote domain, a small state
 *                      machine: discovery → login → old acks → poll → fetch
 *                      → verify → deliver or quarantine → record → ack, one
 *                      transfer at a time
 * pd_verify.c          OpenPGP: login request and answer, decrypt and
 *                      verify a fetched body, quarantine; forged
 *                      Authentication-Results
 * pd_xfer.c            one libcurl transfer (HTTP poll/fetch/ack, SMTP)
 * pd_db.c              everything said to PostgreSQL
 * pd_stub.c            UDP stubs: listener, coalescing, rate limits,
 *                      introductions and the `intro` command
 *
 * Every transfer runs in the one curl multi handle of pd_ctx; the event loop
 * calls pd_domain_xfer_done() when one finishes. Database calls are short
 * synchronous PQexecParams on one connection, bounded by statement_timeout. */
#ifndef PD_H
#define PD_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <time.h>
#include <curl/curl.h>
#include <libpq-fe.h>

#include "sm_addr.h"
#include "sm_authres.h"
#include "sm_dns.h"
#include "sm_id.h"
#include "sm_keyfetch.h"
#include "sm_pgp.h"
#include "sm_proto.h"
#include "sm_token.h"
#include "sm_udppoll.h"

typedef struct pd_conf {
    char *domain;           /* own domain, lowercase */
    char *database;         /* libpq conninfo */
    char *deliver_to;       /* smtp://host:port as configured */
    char *spool_dir;
    long interval;          /* seconds */
    long timeout;           /* seconds */
    long concurrency;
    long batch_max;
    char *resolver;         /* "IP:PORT" or NULL: the system resolver */
    char *gnupg_home;       /* our domain key lives here ... */
    char *domain_key;       /* ... with this fingerprint (uppercased) */
    char *ca_file;          /* NULL: the system CA store */
    int allow_http;         /* http:// outboxes on loopback addresses */
    char *quarantine_dir;
    char *udp_listen;       /* "IP:PORT" for UDP stubs, NULL: off (pd_stub.c) */
    long stub_interval;     /* seconds between stub-made polls of one domain */
    long stub_rate;         /* stub-made polls per second, all domains */
    int introductions;      /* record stubs from unknown senders */
    long introductions_max; /* introductions kept per recipient */
    int udp_poll;           /* ask by UDP before an HTTP poll (pd_udp.c) */
    long udp_timeout;       /* seconds to wait for the UDP answer */
    /* derived */
    char *smtp_url;         /* deliver_to with our domain as EHLO name */
    char *pubkey;           /* our armored public key, sent with every login */
    sm_https_opts https;    /* ca_file, allow_http, timeout for key fetches */
} pd_conf;

/* A growing memory buffer with a hard cap (responses of poll and ack, error
 * bodies). Bodies of messages never go here. */
typedef struct pd_buf {
    char *data;
    size_t len, cap, max;
    int overflow;
} pd_buf;

typedef enum { PD_X_NONE, PD_X_LOGIN, PD_X_POLL, PD_X_FETCH, PD_X_DELIVER, PD_X_ACK,
               PD_X_SUBSCRIBE } pd_xkind;

/* An HTTP entity tag as the outbox sends it, quotes included
 * (sql/004_subscription.sql makes them far shorter). */
#define PD_ETAG_MAX 128

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
    int openpgp;                    /* the answer says Stubmail-Format: openpgp
                                     * or Content-Type: application/pgp-encrypted */
    int write_errno;
    /* deliver: prefix (trace header), then fd from offset 0 but skips */
    char *prefix;
    size_t prefix_len, prefix_off;
    off_t file_off;
    sm_range *skips;                /* left out: ascending, not overlapping (malloc'd) */
    size_t nskips, skip_idx;
    int read_errno;
    int cancel;                     /* abort via the progress callback */
    char reply[256];                /* last SMTP reply line */
    /* ack: what is being acked */
    char ack_id[SM_ID_LEN + 1];
    char ack_to[SM_ADDR_MAX + 1];
    /* GET /v1/poll: the answer's ETag, "" if none (or too long to keep) */
    char etag[PD_ETAG_MAX + 1];
} pd_xfer;

typedef struct pd_old {             /* delivered or quarantined earlier, not yet acked */
    char id[SM_ID_LEN + 1];
    char to[SM_ADDR_MAX + 1];
    char from[SM_ADDR_MAX + 1];
    char reason[SM_ACK_REASON_MAX + 1];     /* quarantined: why; "" delivered */
} pd_old;

/* What pollerd keeps about a remote domain from cycle to cycle: the bearer
 * token of its outbox and when it may be polled again (429). */
typedef struct pd_session {
    struct pd_session *next;
    char domain[SM_DOMAIN_MAX + 1];
    char url[SM_TXT_URL_MAX + 1];   /* the outbox that issued the token */
    char token[SM_TOKEN_MAX + 1];   /* "" if none */
    time_t token_expires;
    long long not_before_ms;        /* monotonic: no request before this */
    /* The subscription (POST /v1/subscription) as the outbox confirmed it.
     * Unknown after a start, a failed change or a 409: the next change is
     * a reset. */
    int sub_known;
    long long sub_version;          /* for GET /v1/poll?version= */
    sm_pair *sub_pairs;             /* sorted by (to, from), no duplicates */
    size_t sub_npairs;
    char etag[PD_ETAG_MAX + 1];     /* ETag of the last poll answer that listed
                                     * nothing, for If-None-Match; "" if none */
    int legacy;                     /* the outbox has no subscriptions (404):
                                     * POST /v1/poll with pairs */
    /* The UDP poll responder the last login answer named (pd_udp.c). */
    int udp_ok;                     /* 0: none, poll by HTTP only */
    struct sockaddr_storage udp_addr;
    socklen_t udp_addrlen;
    char udp_session[SM_UDPPOLL_SESSION_MAX + 1];
    unsigned char udp_key[SM_UDPPOLL_KEY_LEN];
} pd_session;

/* pd_domain.udp_state: the UDP poll of this cycle */
enum { PD_UDP_UNTRIED, PD_UDP_WAITING, PD_UDP_DONE };

typedef enum {
    PD_D_QUEUED, PD_D_OLD_ACKS, PD_D_SUBSCRIBE, PD_D_POLL, PD_D_ITEMS, PD_D_DONE
} pd_dstate;

typedef struct pd_domain {
    struct pd_ctx *ctx;
    struct pd_domain *next;
    char *name;                     /* remote domain */
    char *url;                      /* outbox base URL, no trailing slash;
                                     * NULL until discovered */
    char fpr[SM_PGP_FPR_MAX + 1];   /* its domain key, "" if unknown */
    pd_session *sess;
    int key_ok;                     /* its key is in our keyring */
    int relogged;                   /* logged in again after a 401, no
                                     * authenticated request succeeded since */
    pd_xkind redo;                  /* what to start again after a wait */
    pd_xkind after_login;           /* what to start after the login */
    long long wake_ms;              /* waiting for Retry-After until, or 0 */
    unsigned waits;                 /* 429s this cycle */
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
    /* the subscription change of this cycle: what the outbox lacks and
     * what it has too much, sent in chunks of at most batch_max pairs */
    int sub_reset;                  /* the first chunk replaces everything */
    sm_pair *sub_add, *sub_remove;  /* malloc'd */
    size_t sub_nadd, sub_nremove;
    size_t sub_add_idx, sub_remove_idx;     /* sent and confirmed */
    size_t sub_sent_add, sub_sent_remove;   /* in the request under way */
    unsigned sub_resets;            /* 409s this cycle */
    int udp_state;                  /* PD_UDP_*: the UDP poll before the HTTP one */
    char udp_mac[SM_UDPPOLL_B64_LEN + 1];   /* of the request waiting for its answer */
    int fd;                         /* fetched body, reused for the next */
    char fd_id[SM_ID_LEN + 1];      /* recipient of the same id */
    long long fd_size;              /* what fd holds: the listed size, or the
                                     * size of the decrypted text */
    int fd_verified;                /* fd is decrypted text, signature good */
    char fd_reject[SM_ACK_REASON_MAX + 1];  /* fd is quarantined: why */
    char item_reason[SM_ACK_REASON_MAX + 1]; /* current item is rejected: why */
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
    pd_session *sessions;
    struct pd_stubs *stubs;         /* UDP stub listener (pd_stub.c), or NULL */
    struct pd_udp *udp;             /* UDP poll sockets (pd_udp.c), or NULL: off */
    char *only;                     /* this cycle polls only these domains (a
                                     * PostgreSQL text[] literal), NULL: all */
    /* per-cycle counters */
    unsigned n_domains, n_failed_domains;
    unsigned n_delivered, n_acked, n_failed, n_quarantined;
} pd_ctx;

/* pd_buf */
int pd_buf_append(pd_buf *b, const void *data, size_t len);
void pd_buf_free(pd_buf *b);

/* pd_xfer.c */
pd_xfer *pd_xfer_new(pd_ctx *ctx, pd_domain *d, pd_xkind kind);
/* Set up an HTTP request to url (POST with a JSON body if post != NULL). */
int pd_xfer_http(pd_xfer *x, const char *url, const char *post, size_t maxbody);
/* Set up the SMTP delivery of prefix + the file fd (size bytes) without the
 * nskips ranges in skips (taken over: freed with x). */
int pd_xfer_smtp(pd_xfer *x, const char *from, const char *to, const char *prefix,
                 int fd, long long size, sm_range *skips, size_t nskips);
int pd_xfer_start(pd_xfer *x);
void pd_xfer_free(pd_xfer *x);
/* Add a request header line ("Name: value") to an HTTP transfer. */
int pd_xfer_header(pd_xfer *x, const char *line);
/* "HTTP 404 not_found: no such message" or the transport error. */
void pd_xfer_describe(const pd_xfer *x, char *out, size_t outlen);
/* The JSON error code of an HTTP error body, or "" (points into a static
 * buffer of at most 63 chars, valid until the next call). */
const char *pd_xfer_error_code(const pd_xfer *x);

/* pd_domain.c */
/* The domain named name in ctx->domains, added if new. */
pd_domain *pd_domain_get(pd_ctx *ctx, const char *name);
int pd_domain_add_pair(pd_domain *d, const char *from, const char *to);
/* reason: why it was quarantined, or "" if it was delivered. */
int pd_domain_add_old(pd_domain *d, const char *id, const char *to, const char *from,
                      const char *reason);
void pd_domain_begin(pd_domain *d);
void pd_domain_xfer_done(pd_xfer *x, CURLcode result);
/* Start what waited for a Retry-After once now_ms has come; returns when the
 * domain wants to be woken next (0: not waiting). */
long long pd_domain_wake(pd_domain *d, long long now_ms);
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
/* 0 not received, 1 received not acked, 2 received and acked, -1 error;
 * reason (SM_ACK_REASON_MAX + 1 bytes) gets why it was quarantined, or "". */
int pd_db_received(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                   char *reason);
/* reason NULL: delivered; else quarantined for that reason. */
int pd_db_record(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                 const char *from, int acked, const char *reason);
int pd_db_acked(pd_ctx *ctx, const char *domain, const char *id, const char *to);
/* Insert what could not be recorded earlier; 0 when nothing is left. */
int pd_db_flush_unrecorded(pd_ctx *ctx);
int pd_unrecorded_add(pd_ctx *ctx, const char *domain, const char *id,
                      const char *to, const char *from);
pd_unrecorded *pd_unrecorded_find(pd_ctx *ctx, const char *domain,
                                  const char *id, const char *to);

/* pd_domain.c: helpers */
long long pd_now_ms(void);          /* CLOCK_MONOTONIC */
/* The session of domain, made on first use; NULL when out of memory. */
pd_session *pd_session_get(pd_ctx *ctx, const char *domain);
void pd_sessions_free(pd_ctx *ctx);
/* A fresh, already unlinked file in dir: a crash leaves nothing behind. */
int pd_spool_tmpfile(const char *dir);

/* pd_stub.c: UDP stubs and introductions (docs/PROTOCOL.md "UDP stubs") */
/* Check udp_listen and the stub keys. 0, or -1 with err. */
int pd_stub_check_conf(pd_conf *c, char *err, size_t errlen);
/* Bind udp_listen (when set). 0, or -1 with why. */
int pd_stub_open(pd_ctx *ctx, char *why, size_t whylen);
void pd_stub_close(pd_ctx *ctx);
/* The socket to wait on, or -1. */
int pd_stub_fd(const pd_ctx *ctx);
/* Read and act on what arrived (never blocks). */
void pd_stub_read(pd_ctx *ctx);
/* A full cycle is starting: it polls every domain, so nothing waits. */
void pd_stub_cycle_all(pd_ctx *ctx);
/* The domains whose stub poll is due now, as a text[] literal for
 * ctx->only (malloc'd; the caller frees), or NULL. */
char *pd_stub_due(pd_ctx *ctx, long long now_ms);
/* When the next stub poll becomes due (monotonic ms), or 0: none waits. */
long long pd_stub_next_ms(const pd_ctx *ctx);
/* `stubmail-pollerd -c FILE intro ...`: list, accept or drop introductions.
 * Returns an exit status. */
int pd_intro_main(pd_ctx *ctx, int argc, char **argv);

/* pd_db.c: stubs and introductions */
/* Who of the stub's recipients (at our domain) knows its sender: *known = 1
 * if some local address book holds the sender (address or *@domain); with
 * record, an introduction is recorded or refreshed for each recipient that
 * has an address book but not the sender in it (*added: how many are new),
 * in one statement; the rcpts hold no spaces (sm_stub_parse makes sure).
 * 0, or -1 (logged). */
int pd_db_stub(pd_ctx *ctx, const char *sender, const char *const *rcpts, size_t n,
               int record, int *known, size_t *added);
/* Print the introductions (of recipient, or all when NULL) as tab-separated
 * lines: recipient, sender, first seen, last seen, stubs. Their number, or -1. */
int pd_db_intro_list(pd_ctx *ctx, const char *recipient, FILE *out);
/* 1 accepted (*added: the address book got the sender; 0: it had it), 0 no
 * such introduction, -1 error. */
int pd_db_intro_accept(pd_ctx *ctx, const char *recipient, const char *sender, int *added);
/* 1 dropped, 0 no such introduction, -1 error. */
int pd_db_intro_drop(pd_ctx *ctx, const char *recipient, const char *sender);

/* pd_udp.c: the UDP lightweight poll (docs/PROTOCOL.md "UDP poll") */
/* ctx->udp when udp_poll is on. 0, or -1 (logged). */
int pd_udp_open(pd_ctx *ctx);
void pd_udp_close(pd_ctx *ctx);
/* The sockets to wait on (at most max, 2 is enough); how many. */
size_t pd_udp_fds(const pd_ctx *ctx, int *fds, size_t max);
/* Read the answers that arrived (never blocks). */
void pd_udp_read(pd_ctx *ctx);
/* Keep the "udp" member of a login answer in s (udp_ok = 0 if none). */
void pd_udp_login_answer(pd_session *s, const char *body, size_t len);
/* Before the HTTP poll of d: 0 if a UDP poll was sent and the domain now
 * waits for its answer (pd_domain_udp_idle, or the HTTP poll again through
 * wake_ms); -1 if not (no responder, no ETag, tried already): poll by HTTP. */
int pd_udp_poll_start(pd_domain *d);
/* Debug summary of the cycle. */
void pd_udp_cycle_end(pd_ctx *ctx);
/* pd_domain.c: the UDP poll said nothing is new; the domain is done. */
void pd_domain_udp_idle(pd_domain *d);

/* pd_verify.c */
/* The JSON body of POST /v1/login to server, signed with our domain key.
 * malloc'd, or NULL with why. Blocking (gpg-agent signs). */
char *pd_login_body(pd_ctx *ctx, const char *server, char *why, size_t whylen);
/* Parse a login answer into sess. 0, or -1 with why. */
int pd_login_answer(pd_session *sess, const char *body, size_t len, char *why, size_t whylen);
/* Decrypt and verify the fetched body in *fd (OpenPGP) from the domain
 * whose key is signer_fpr: SM_PGP_OK with *fd replaced by the decrypted text
 * and *size set; SM_PGP_REJECT with reason (SM_ACK_REASON_MAX + 1 bytes, for
 * the ack) and detail (for the log), *fd untouched; SM_PGP_ERROR with detail:
 * local trouble, retry. Blocking: decryption runs as fast as gpg does. */
int pd_verify(pd_ctx *ctx, const char *signer_fpr, int *fd, long long *size,
              char *reason, char *detail, size_t detaillen);
/* The Authentication-Results header fields of the message in fd that claim
 * to come from authserv_id (us), to be left out (sm_authres.h). *skips
 * (malloc'd, *nskips entries, NULL if none) covers each whole field. Reads
 * at most the first PD_HEADER_SCAN_MAX octets. 0, or -1 with why. */
#define PD_HEADER_SCAN_MAX (1024 * 1024)
int pd_forged_results(int fd, const char *authserv_id, sm_range **skips, size_t *nskips,
                      char *why, size_t whylen);
/* Keep the body in fd as quarantine_dir/<domain>-<id>. 0, or -1 with why. */
int pd_quarantine(pd_ctx *ctx, const char *domain, const char *id, int fd,
                  char *why, size_t whylen);

#endif
