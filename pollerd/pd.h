/* pd.h — stubmail-pollerd internals, shared by the pollerd/ sources.
 *
 * The files, each calling only the ones listed below it (no file calls
 * one above it: the lower ones report back by return value or callback):
 *
 * stubmail-pollerd.c   main: options, signals, the event loop
 * pd_cycle.c           one poll cycle: which domains, how many at once
 * pd_dispatch.c        the state machine of one remote domain: discovery
 *                      → login → old acks → subscription → poll → messages,
 *                      one request to the outbox at a time, and the listed
 *                      messages on up to `parallel` lanes at once; it routes
 *                      every finished transfer and frees it
 * pd_poll.c            GET /v1/poll (UDP poll first), or POST /v1/poll
 * pd_message.c         one listed message on a lane: fetch → verify →
 *                      deliver or quarantine → record → queue its ack
 * pd_ack.c             the queue of acks, sent in batches (POST /v1/ack),
 *                      of this cycle's messages and of earlier ones
 * pd_subscription.c    planning the subscription change, POST /v1/subscription
 * pd_login.c           POST /v1/login and the token it earns
 * pd_domain.c          the record of one remote domain: its pairs, unacked
 *                      deliveries, spool file, outcome log line
 * pd_conf.c            the configuration key table and its checks
 * pd_digest.c          the introductions digest mailed to each user
 * pd_stub.c            UDP stubs: listener, coalescing, rate limits,
 *                      introductions
 * pd_verify.c          OpenPGP: decrypt and verify a fetched body,
 *                      quarantine; forged Authentication-Results
 * pd_udp.c             the UDP poll sockets and datagrams
 * pd_xfer.c            one libcurl transfer (HTTP poll/fetch/ack, SMTP)
 * pd_db.c              everything said to PostgreSQL
 * pd_session.c         what is kept of a remote domain between cycles
 * pd_util.c            the monotonic clock, unlinked spool files
 * pd_metrics_http.c    metrics_listen: GET /metrics (libmicrohttpd, run
 *                      by the event loop, no thread of its own)
 * pd_metrics.c         Prometheus metrics: the counters, their one text,
 *                      metrics_file
 * pd_reload.c          SIGHUP: check the file, start again between cycles
 *
 * All but stubmail-pollerd.c make libpollerd.la, which the program and the
 * unit tests (tests/unit/test_pd_*.c) link.
 *
 * Every transfer runs in the one curl multi handle of pd_ctx (which keeps
 * the connections to an outbox and to the MTA open for the next transfer);
 * the event loop calls pd_dispatch_done() when one finishes. Database calls are short
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
#include "sm_link.h"
#include "sm_pgp.h"
#include "sm_proto.h"
#include "sm_seal.h"
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
    long parallel;          /* lanes: messages of one domain in flight */
    char *resolver;         /* "IP:PORT" or NULL: the system resolver */
    int resolver_trusted;   /* believe its AD bit even off loopback */
    char *dnssec_require;   /* none, all or domains (sm_dnssec.h) */
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
    char *unsubscribe_url;  /* our one-click unsubscribe endpoint, NULL: off */
    char *unsubscribe_key;  /* "ID HEX" that signs its links (pd_unsub.c) */
    long intro_digest;      /* seconds: a digest of new introductions per
                             * user at most this often; 0: off (pd_digest.c) */
    char *intro_url;        /* mod_stubmail's /introduction, for its links */
    char *metrics_file;     /* Prometheus text written after each cycle, NULL: off */
    char *metrics_listen;   /* "IP:PORT" serving GET /metrics, NULL: off */
    char *log_facility;     /* syslog facility name (sm_log_facility_parse) */
    char *log_level;        /* least severe level logged */
    int log_facility_value, log_level_value;    /* the two, parsed */
    /* derived */
    char *smtp_url;         /* deliver_to with our domain as EHLO name */
    char *pubkey;           /* our armored public key, sent with every login */
    sm_https_opts https;    /* ca_file, allow_http, timeout for key fetches */
    sm_dns_conf dns;        /* resolver, resolver_trusted, dnssec_require */
    sm_token_keyring unsub_keys;    /* unsubscribe_key; empty: off */
} pd_conf;

/* A growing memory buffer with a hard cap (responses of poll and ack, error
 * bodies). Bodies of messages never go here. */
typedef struct pd_buf {
    char *data;
    size_t len, cap, max;
    int overflow;
} pd_buf;

typedef enum { PD_X_NONE, PD_X_LOGIN, PD_X_POLL, PD_X_FETCH, PD_X_DELIVER, PD_X_ACK,
               PD_X_SUBSCRIBE, PD_X_DIGEST } pd_xkind;

/* Most octets kept of an answer to a login, subscription change or ack,
 * and of an error body. */
#define PD_SMALL_BODY_MAX (64u * 1024)

/* An HTTP entity tag as the outbox sends it, quotes included
 * (sql/004_subscription.sql makes them far shorter). */
#define PD_ETAG_MAX 128

struct pd_domain;
struct pd_ctx;
struct MHD_Daemon;                 /* libmicrohttpd's, only pd_metrics_http.c sees inside */
struct pd_lane;


typedef struct pd_xfer {
    pd_xkind kind;
    struct pd_ctx *ctx;
    struct pd_domain *dom;
    struct pd_lane *lane;           /* fetch and deliver: the lane it works
                                     * for; NULL: the domain's own request */
    CURL *easy;
    int in_multi;
    struct curl_slist *hdrs;
    struct curl_slist *rcpt;
    char *post;                     /* request body (poll, ack) */
    pd_buf body;                    /* response body, or error body of a fetch */
    char errbuf[CURL_ERROR_SIZE];
    CURLcode result;
    long status;                    /* HTTP status or last SMTP reply code */
    /* fetch: stream into fd, exactly expect bytes; with range_from > 0 the
     * request asked for the rest from there (got starts there) */
    int fd;
    long long expect, got;
    long long range_from;
    int started;                    /* the first body bytes came */
    int restarted;                  /* asked for a range, got the whole body */
    long long cr_from, cr_to, cr_total;     /* Content-Range of a 206, -1 if none */
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
    /* ack: how many of the queue's first acks it carries */
    size_t nacks;
    /* GET /v1/poll: the answer's ETag, "" if none (or too long to keep) */
    char etag[PD_ETAG_MAX + 1];
} pd_xfer;

typedef struct pd_old {             /* delivered or quarantined earlier, not yet acked */
    char id[SM_ID_LEN + 1];
    char to[SM_ADDR_MAX + 1];
    char from[SM_ADDR_MAX + 1];
    char reason[SM_ACK_REASON_MAX + 1];     /* quarantined: why; "" delivered */
    char receipt[SM_RECEIPT_LEN + 1];       /* the body's receipt, "" none */
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
    int single_acks;                /* the outbox has no POST /v1/ack (404):
                                     * one POST /v1/message/ID/ack each */
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

/* A change of the outbox's subscription (POST /v1/subscription): what it
 * lacks and what it has too much, sent in chunks of at most batch_max pairs
 * (pd_subscription.c). */
typedef struct pd_subchange {
    int reset;                      /* the first chunk replaces everything */
    sm_pair *add, *remove;          /* malloc'd, sorted by (to, from) */
    size_t nadd, nremove;
    size_t add_idx, remove_idx;     /* sent and confirmed */
    size_t sent_add, sent_remove;   /* in the request under way */
} pd_subchange;

/* A lane works on listed messages one after the other: the recipients of
 * one message (listed together) are all its own, so the body is fetched
 * and verified once. A domain runs up to `parallel` lanes at once. */
typedef struct pd_lane {
    struct pd_domain *d;
    size_t idx, end;                /* items [idx, end) of d->items are this
                                     * lane's; idx == end: idle */
    pd_xfer *x;                     /* its fetch or delivery, or NULL */
    int again;                      /* begin idx anew once logged in again */
    int fd;                         /* fetched body, reused for the next
                                     * recipient of the same message */
    char fd_id[SM_ID_LEN + 1];
    long long fd_size;              /* what fd holds: the listed size, or the
                                     * size of the decrypted text */
    int fd_verified;                /* fd is decrypted text, signature good */
    const char *fd_signer;          /* ... by this key: its domain's fpr or
                                     * fpr_alt */
    int fd_resumed;                 /* fd was put together from more than one
                                     * transfer (or found on disk) */
    int msg_failed;                 /* a recipient of the current message
                                     * failed: keep its partial file */
    char fd_reject[SM_ACK_REASON_MAX + 1];  /* fd is quarantined: why */
    char fd_receipt[SM_RECEIPT_LEN + 1];    /* the receipt sealed in fd's body (once
                                             * decrypted), for its acks; "" none */
    int blocked;                    /* the current item's recipient unsubscribed
                                     * from its sender: fetched and opened only
                                     * for the receipt its refusal needs */
    char item_reason[SM_ACK_REASON_MAX + 1]; /* current item is rejected: why */
    char delivered_reply[256];      /* MTA answer for the current item */
} pd_lane;

#define PD_LANES_MAX 32             /* most `parallel` may say */

/* An ack waiting to be sent, with what the log line says of it. */
typedef struct pd_ack {
    sm_ack_item item;               /* id, to, rejected with its reason */
    char from[SM_ADDR_MAX + 1];
    char what[SM_ACK_REASON_MAX + 300];     /* "delivered (250 ...)", ... */
    int earlier;                    /* from table received, not this cycle's
                                     * listing */
} pd_ack;

typedef struct pd_domain {
    struct pd_ctx *ctx;
    struct pd_domain *next;
    char *name;                     /* remote domain */
    char *url;                      /* outbox base URL, no trailing slash;
                                     * NULL until discovered */
    char fpr[SM_PGP_FPR_MAX + 1];   /* its domain key, "" if unknown */
    char fpr_alt[SM_PGP_FPR_MAX + 1];   /* its other key while it rotates
                                         * (the record's fpr-alt), or "" */
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
    size_t nold, old_cap;
    pd_dstate state;
    int locked;                     /* holds the advisory lock */
    int failed;
    size_t chunk;                   /* first pair of the current poll */
    size_t chunk_len;
    unsigned polls;                 /* polls of the current chunk (more: true) */
    sm_listing *items;
    size_t nitems;
    size_t untaken;                 /* first item no lane has taken */
    int more;
    size_t progress;                /* items acked since the last poll */
    int found;                      /* a poll of this cycle listed mail */
    pd_lane lanes[PD_LANES_MAX];    /* `parallel` of them in use */
    int want_login;                 /* a lane's request needs a new token */
    int ending;                     /* finished but for deliveries under way */
    pd_ack *acks;                   /* to be sent, oldest first */
    size_t nacks, acks_cap;
    pd_subchange sub;               /* the subscription change of this cycle */
    unsigned sub_resets;            /* 409s this cycle */
    int udp_state;                  /* PD_UDP_*: the UDP poll before the HTTP one */
    char udp_mac[SM_UDPPOLL_B64_LEN + 1];   /* of the request waiting for its answer */
    pd_xfer *x;                     /* the domain's own request (login,
                                     * subscription, poll, ack), or NULL */
} pd_domain;

/* Delivered to the MTA but not yet in table received: kept in memory,
 * consulted before every delivery and every ack, and recorded all at once
 * (one commit) after each turn of the event loop, before any ack goes out;
 * while the database is down, until it is back. */
typedef struct pd_unrecorded {
    struct pd_unrecorded *next;
    char domain[SM_DOMAIN_MAX + 1];
    char id[SM_ID_LEN + 1];
    char to[SM_ADDR_MAX + 1];
    char from[SM_ADDR_MAX + 1];
    char receipt[SM_RECEIPT_LEN + 1];   /* "" none */
    int acked;
    int late;                       /* a try to record it failed (logged) */
} pd_unrecorded;

typedef struct pd_ctx {
    pd_conf conf;
    int debug;
    CURLM *multi;
    PGconn *db;
    sm_seal *seal;                  /* opens fetched bodies in process, over
                                     * gnupg_home's keys (sm_seal.h) */
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
    struct MHD_Daemon *metrics_http;    /* metrics_listen (pd_metrics_http.c), or NULL */
    struct pd_digests *digests;     /* introductions digests (pd_digest.c), or
                                     * NULL: none made yet */
    char *only;                     /* this cycle polls only these domains (a
                                     * PostgreSQL text[] literal), NULL: all */
    long long cycle_t0;             /* when the cycle started (pd_now_ms) */
    int cycle_db_failed;            /* the cycle could not read the database */
    /* per-cycle counters */
    unsigned n_domains, n_failed_domains;
    unsigned n_delivered, n_acked, n_failed, n_quarantined;
} pd_ctx;

/* What a step asks of the dispatcher (pd_dispatch.c) once it is done with
 * a finished transfer; the steps never call the dispatcher themselves. */
typedef enum {
    PD_NEXT_WAIT,       /* a transfer (or a timer) runs: wait for it */
    PD_NEXT_STEP,       /* go on with the state machine */
    PD_NEXT_ITEM,       /* the lane's message is finished: on to its next */
    PD_NEXT_RESUME,     /* logged in: start d->after_login */
    PD_NEXT_FINISH,     /* the domain's cycle is over */
    PD_NEXT_GIVE_UP     /* ... and it failed */
} pd_next;

/* ---- pd_metrics.c: counters since start, per domain what was learned;
 * written to metrics_file after every cycle, served by pd_metrics_http.c -- */
typedef enum { PD_POLL_LISTED, PD_POLL_IDLE, PD_POLL_FAILED, PD_POLL_N } pd_poll_result;
typedef enum {
    PD_FAIL_FETCH, PD_FAIL_VERIFY, PD_FAIL_DELIVERY, PD_FAIL_DEFERRED, PD_FAIL_DATABASE,
    PD_FAIL_QUARANTINE, PD_FAIL_ACK, PD_FAIL_PROTOCOL, PD_FAIL_N
} pd_fail_reason;
void pd_metrics_poll(const char *domain, pd_poll_result result);
void pd_metrics_fetched(long long octets);
/* stored_at: the listing's time (RFC 3339), the start of the lag */
void pd_metrics_delivered(const char *domain, const char *stored_at);
void pd_metrics_rejected(void);
void pd_metrics_failure(pd_fail_reason reason, unsigned n);
void pd_metrics_write(const char *path);   /* NULL: nothing */
/* The text as of now, malloc'd (the caller frees), its length in len; NULL
 * when out of memory. */
char *pd_metrics_text(size_t *len);
void pd_metrics_free(void);

/* ---- pd_metrics_http.c: metrics_listen ----------------------------------- */
/* Check metrics_listen. 0, or -1 with err naming the key. */
int pd_metrics_http_check_conf(const pd_conf *c, char *err, size_t errlen);
/* Listen on metrics_listen (when set). 0, or -1 with why. */
int pd_metrics_http_open(pd_ctx *ctx, char *why, size_t whylen);
void pd_metrics_http_close(pd_ctx *ctx);
/* The fd to wait on for reading, or -1: off. */
int pd_metrics_http_fd(const pd_ctx *ctx);
/* When pd_metrics_http_run must run at the latest (monotonic ms), however
 * quiet its fd; 0: only when its fd is readable. */
long long pd_metrics_http_next_ms(const pd_ctx *ctx);
/* Accept, read, answer, close what is ready (never blocks). */
void pd_metrics_http_run(pd_ctx *ctx);

/* ---- pd_reload.c: SIGHUP ----------------------------------------------- */
/* Set in the environment of the program a reload starts: a daemon already. */
#define PD_REEXEC_ENV "STUBMAIL_POLLERD_REEXEC"
/* Run our own -n on conf_path: 0 good, -1 with the first error line in why. */
int pd_reload_check(const char *conf_path, char *why, size_t whylen);
/* Start again with argv (returns only when execv failed, errno set). */
void pd_reload_exec(char **argv);

/* ---- pd_util.c ----------------------------------------------------------- */
long long pd_now_ms(void);          /* CLOCK_MONOTONIC */
/* A fresh, already unlinked file in dir: a crash leaves nothing behind. */
int pd_spool_tmpfile(const char *dir);

/* pd_partial.c: the file a fetch streams into, DOMAIN_ID.partial in
 * spool_dir, found again after a cut or a restart. */
typedef struct pd_partial {
    char path[4096];
    int fd;
    long long from;                 /* bytes already there: ask for the rest */
    char etag[PD_ETAG_MAX + 1];     /* for If-Range when from > 0 */
    const char *restart_why;        /* a file found, but not resumable: why */
    long long had;                  /* its length then */
} pd_partial;

int pd_partial_path(const char *spool_dir, const char *domain, const char *id, char *out,
                    size_t outlen);
/* Open (or create) the file for (domain, id) of the listed size: p->from
 * bytes of it can be kept (positioned there), or it was emptied (p->restart_why
 * says why). 0, or -1 with errno. */
int pd_partial_open(const char *spool_dir, const char *domain, const char *id,
                    long long size, pd_partial *p);
/* Say that fd holds (part of) the answer with this strong ETag to a body of
 * size octets; without a strong ETag, the file is not resumable. */
int pd_partial_mark(int fd, long long size, const char *etag);
/* Empty the file: the next bytes are the body's first. */
int pd_partial_restart(int fd);
void pd_partial_remove(const char *spool_dir, const char *domain, const char *id);

/* ---- pd_session.c -------------------------------------------------------- */
/* The session of domain, made on first use; NULL when out of memory. */
pd_session *pd_session_get(pd_ctx *ctx, const char *domain);
void pd_sessions_free(pd_ctx *ctx);
/* Forget what we know of the outbox's subscription: the next change is a
 * reset. */
void pd_session_forget(pd_session *s);
/* No token we can still use for the outbox at url. */
int pd_session_token_due(const pd_session *s, const char *url);

/* ---- pd_db.c ------------------------------------------------------------- */
int pd_db_connect(pd_ctx *ctx);
void pd_db_close(pd_ctx *ctx);
/* What pd_db_load hands over, row by row (rows of one domain come
 * together). Each returns 1 taken, 0 skipped (logged), -1 stop the load
 * (out of memory, logged). */
typedef struct pd_db_loader {
    void *arg;
    int (*pair)(void *arg, const char *domain, const char *contact, const char *owner);
    int (*unacked)(void *arg, const char *domain, const char *id, const char *to,
                   const char *from, const char *reason, const char *receipt);
} pd_db_loader;
/* The address book pairs and the unacked deliveries of this cycle's
 * domains (ctx->only, or all). 0, or -1 (logged). */
int pd_db_load(pd_ctx *ctx, const pd_db_loader *load);
int pd_db_lock(pd_ctx *ctx, const char *domain);   /* 1 got, 0 busy, -1 err */
void pd_db_unlock(pd_ctx *ctx, const char *domain);
/* 1 if the recipient unsubscribed from the sender (sql/014's
 * address_block), 0 if not, -1 on database trouble (logged). */
int pd_db_blocked(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                  const char *from);
/* 0 not received, 1 received not acked, 2 received and acked, -1 error;
 * reason (SM_ACK_REASON_MAX + 1 bytes) gets why it was quarantined, or "";
 * receipt (SM_RECEIPT_LEN + 1 bytes) the body's receipt, or "". */
int pd_db_received(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                   char *reason, char *receipt);
/* reason NULL: delivered; else quarantined for that reason. receipt: the
 * body's ("" none), for the ack. */
int pd_db_record(pd_ctx *ctx, const char *domain, const char *id, const char *to,
                 const char *from, int acked, const char *reason, const char *receipt);
/* The n acks went through (or found nothing left to ack): acked_at for
 * them all in one statement. 0, or -1 (logged). */
int pd_db_acked(pd_ctx *ctx, const char *domain, const pd_ack *acks, size_t n);
/* Record every delivery in ctx->unrecorded, in one statement; 0 when
 * nothing is left, -1 when the database did not take them (each logged
 * once: they stay in memory and are tried again). */
int pd_db_flush_unrecorded(pd_ctx *ctx);
int pd_unrecorded_add(pd_ctx *ctx, const char *domain, const char *id,
                      const char *to, const char *from, const char *receipt);
pd_unrecorded *pd_unrecorded_find(pd_ctx *ctx, const char *domain,
                                  const char *id, const char *to);
/* Who of the stub's recipients (at our domain) knows its sender: *known = 1
 * if some local address book holds the sender (address or *@domain); with
 * record, an introduction is recorded or refreshed for each recipient that
 * has an address book but not the sender in it (*added: how many are new),
 * in one statement; the rcpts hold no spaces (sm_stub_parse makes sure).
 * 0, or -1 (logged). */
int pd_db_stub(pd_ctx *ctx, const char *sender, const char *const *rcpts, size_t n,
               int record, int *known, size_t *added);
/* The introductions no digest announced yet, of at most max recipients
 * whose last digest is older than intro_digest: rows of recipient, sender,
 * stubs, grouped by recipient (PQclear it). NULL on error (logged). */
PGresult *pd_db_digest_due(pd_ctx *ctx, long max);
/* The digest to recipient naming senders (a JSON array) went out: those
 * are announced, and the recipient's last digest is now. 0, or -1. */
int pd_db_digest_sent(pd_ctx *ctx, const char *recipient, const char *senders_json);

/* ---- pd_xfer.c ----------------------------------------------------------- */
int pd_buf_append(pd_buf *b, const void *data, size_t len);
void pd_buf_free(pd_buf *b);
/* A transfer for d (a lane's when lane is not NULL). */
pd_xfer *pd_xfer_new(pd_ctx *ctx, pd_domain *d, pd_lane *lane, pd_xkind kind);
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
/* Whether a failed HTTP transfer says something about the whole domain
 * (unreachable, login refused, server trouble) rather than one message. */
int pd_xfer_domain_wide(const pd_xfer *x);

/* ---- pd_verify.c --------------------------------------------------------- */
/* Decrypt and verify the fetched body in *fd (OpenPGP) from the domain
 * whose key is signer_fpr: SM_PGP_OK with *fd replaced by the decrypted text
 * and *size set; SM_PGP_REJECT with reason (SM_ACK_REASON_MAX + 1 bytes, for
 * the ack) and detail (for the log), *fd untouched; SM_PGP_ERROR with detail:
 * local trouble, retry. Blocking: decryption runs as fast as gpg does.
 * receipt (SM_RECEIPT_LEN + 1 bytes) gets the receipt sealed in the body
 * whenever its literal data header came out (a bad signature, a tampered
 * or compressed body too), else "". */
int pd_verify(pd_ctx *ctx, const char *signer_fpr, int *fd, long long *size,
              char *reason, char *receipt, char *detail, size_t detaillen);
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

/* ---- pd_udp.c: the UDP lightweight poll (docs/PROTOCOL.md "UDP poll") ---- */
/* ctx->udp when udp_poll is on. 0, or -1 (logged). */
int pd_udp_open(pd_ctx *ctx);
void pd_udp_close(pd_ctx *ctx);
/* The sockets to wait on (at most max, 2 is enough); how many. */
size_t pd_udp_fds(const pd_ctx *ctx, int *fds, size_t max);
/* Keep the "udp" member of a login answer in s (udp_ok = 0 if none). */
void pd_udp_login_answer(pd_session *s, const char *body, size_t len);
/* Ask s's responder whether anything changed since s->etag; mac
 * (SM_UDPPOLL_B64_LEN + 1 bytes) gets the request's MAC, which its answer
 * carries. 0 sent, -1 not (told at debug level). */
int pd_udp_ask(pd_ctx *ctx, const pd_session *s, char *mac);
/* A question went unanswered in time (counted for the cycle's summary). */
void pd_udp_unanswered(pd_ctx *ctx);
/* Whose answer is the datagram pkt: the status it gives (SM_UDPPOLL_IDLE
 * or _POLL) once acted on, or -1 if it is nobody's. */
typedef int (*pd_udp_answer_fn)(pd_ctx *ctx, const unsigned char *pkt, size_t len);
/* Read the answers that arrived (never blocks), each handed to answer. */
void pd_udp_read(pd_ctx *ctx, pd_udp_answer_fn answer);
/* Debug summary of the cycle. */
void pd_udp_cycle_end(pd_ctx *ctx);

/* ---- pd_unsub.c: the one-click unsubscribe headers (RFC 8058) -------- */
/* Check unsubscribe_url and unsubscribe_key (both or neither) and load the
 * key. 0, or -1 with err. */
int pd_unsub_check_conf(pd_conf *c, char *err, size_t errlen);
/* BASE?u=USER&s=SENDER&k=KEY-ID&m=MAC (percent-encoded addresses) into out,
 * signed for purpose with unsubscribe_key: the links pollerd puts in mail
 * (List-Unsubscribe, the introduction digest). 0, or -1 with why. */
int pd_signed_link(const pd_conf *c, sm_link_purpose purpose, const char *base,
                   const char *user, const char *sender, char *out, size_t outlen,
                   char *why, size_t whylen);
/* The List-Unsubscribe and List-Unsubscribe-Post lines (CRLF each) for the
 * pair into out; out is "" when unsubscribe links are off. 0, or -1 with
 * why (out ""): the message then goes without them. */
int pd_unsub_headers(const pd_conf *c, const char *to, const char *from, char *out,
                     size_t outlen, char *why, size_t whylen);

/* ---- pd_digest.c: the introductions digest ---------------------------- */
/* Check intro_digest and intro_url (the digest needs introductions and
 * unsubscribe_key, whose key signs its links too). 0, or -1 with err. */
int pd_digest_check_conf(pd_conf *c, char *err, size_t errlen);
/* One turn of the event loop: send the next digest that is due (one SMTP
 * transfer at a time in the multi handle), looking for due ones every
 * so often. Never blocks but for short database statements. */
void pd_digest_run(pd_ctx *ctx, long long now_ms);
/* A digest's transfer finished: record it as sent, or log why not. */
void pd_digest_done(pd_xfer *x, CURLcode result);
/* When pd_digest_run has something to do next (monotonic ms), or 0. */
long long pd_digest_next_ms(const pd_ctx *ctx);
/* A digest is being handed to the MTA. */
int pd_digest_busy(const pd_ctx *ctx);
/* Second signal: cut the digest under way (it goes again later). */
void pd_digest_abort(pd_ctx *ctx);
void pd_digest_free(pd_ctx *ctx);
/* One introduction of a digest. */
typedef struct pd_digest_intro {
    const char *sender;             /* normalized (sm_addr_normalize) */
    long long stubs;
} pd_digest_intro;
/* The whole digest mail to user (normalized) naming the n introductions,
 * with accept and decline links under c's intro_url and key, date the Date
 * header's time: malloc'd RFC 5322 text with CRLF line ends, or NULL with
 * why. Nothing of a sender's goes into a header. */
char *pd_digest_compose(const pd_conf *c, const char *user, const pd_digest_intro *in,
                        size_t n, time_t date, char *why, size_t whylen);

/* ---- pd_stub.c: UDP stubs and introductions (docs/PROTOCOL.md "UDP stubs") */
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
/* A poll of domain found mail: its next stub need not wait stub_interval. */
void pd_stub_found(pd_ctx *ctx, const char *domain);
/* When the next stub poll becomes due (monotonic ms), or 0: none waits. */
long long pd_stub_next_ms(const pd_ctx *ctx);

/* ---- pd_conf.c ----------------------------------------------------------- */
/* Defaults, the file at path, then the checks beyond syntax (which also
 * derive smtp_url, pubkey and https). 0, or -1 with err. */
int pd_conf_load(pd_conf *c, const char *path, char *err, size_t errlen);
/* The "  key  default  help" lines of -h. */
void pd_conf_print_keys(FILE *fp);
/* "key<TAB>default" lines, one per key ("" when it has none), for
 * tests/docs/t-pollerd-keys. */
void pd_conf_dump_keys(FILE *fp);
/* Sign once (this starts the home's gpg-agent). 0, or -1 (logged). */
int pd_conf_can_sign(const pd_conf *c);
void pd_conf_free(pd_conf *c);

/* ---- pd_domain.c: the record of one remote domain ------------------------ */
/* The domain named name in ctx->domains, added if new. */
pd_domain *pd_domain_get(pd_ctx *ctx, const char *name);
/* 0, or -1 if the pair is skipped (logged). */
int pd_domain_add_pair(pd_domain *d, const char *contact, const char *owner);
/* reason: why it was quarantined, or "" if it was delivered; receipt: the
 * body's, or "". 0, or -1. */
int pd_domain_add_old(pd_domain *d, const char *id, const char *to, const char *from,
                      const char *reason, const char *receipt);
/* Order of sm_pair by (to, from), for qsort and bsearch. */
int pd_pair_cmp(const void *a, const void *b);
/* Sort the pairs and drop duplicates: the subscription is a set. */
void pd_domain_sort_pairs(pd_domain *d);
/* Where the outbox is and which key signs its mail. 0, or -1 when the
 * domain is skipped this cycle (logged; d->failed set when that is a
 * failure rather than "nothing to do"). */
int pd_domain_discover(pd_domain *d);
/* The listed message lane l is working on. */
sm_listing *pd_lane_item(const pd_lane *l);
/* The one log line per message outcome. */
void pd_domain_outcome(pd_domain *d, const sm_listing *it, int prio, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void pd_lane_drop_file(pd_lane *l);
/* Drop the lane's spool file unless it holds the body of its item. */
void pd_lane_keep_file_for_item(pd_lane *l);
/* A lane has a transfer running. */
int pd_domain_lanes_busy(const pd_domain *d);
void pd_domain_free_items(pd_domain *d);
/* Start x (taken over: running as d->x, or as its lane's x, or freed).
 * 0, or -1. */
int pd_domain_start(pd_domain *d, pd_xfer *x);
/* No transfer until until_ms; then start kind (pd_dispatch_wake). */
void pd_domain_wait(pd_domain *d, pd_xkind kind, long long until_ms);
void pd_domain_free(pd_domain *d);

/* ---- pd_login.c ---------------------------------------------------------- */
/* The JSON body of POST /v1/login to server, signed with our domain key.
 * malloc'd, or NULL with why. Blocking (gpg-agent signs). */
char *pd_login_body(pd_ctx *ctx, const char *server, char *why, size_t whylen);
/* Parse a login answer into sess. 0, or -1 with why. */
int pd_login_answer(pd_session *sess, const char *body, size_t len, char *why, size_t whylen);
/* No token we can still use for d's outbox: log in before the next request. */
int pd_login_due(const pd_domain *d);
/* POST /v1/login; after it, start `after` (PD_X_NONE: go on with the
 * state machine). 0, or -1 (logged). */
int pd_login_start(pd_domain *d, pd_xkind after);
pd_next pd_login_done(pd_domain *d, const pd_xfer *x);

/* ---- pd_subscription.c --------------------------------------------------- */
/* What a subscription change must send so that the outbox holds exactly
 * book (nbook pairs sorted by pd_pair_cmp, no duplicates): with s's
 * subscription known, the pairs it lacks and those it has too many;
 * otherwise a reset to all of book. 0, or -1 out of memory (logged). */
int pd_subscription_plan(pd_subchange *plan, const sm_pair *book, size_t nbook,
                         const pd_session *s);
void pd_subscription_plan_free(pd_subchange *plan);
/* Plan this cycle's change of d (nothing for an outbox without
 * subscriptions). 0, or -1. */
int pd_subscription_begin(pd_domain *d);
/* Some of this cycle's change is still to be sent. */
int pd_subscription_pending(const pd_domain *d);
/* POST /v1/subscription with the next chunk. 0, or -1 (logged). */
int pd_subscription_start(pd_domain *d);
pd_next pd_subscription_done(pd_domain *d, const pd_xfer *x);
/* After a 409: reset the subscription (once per cycle) and go on. */
pd_next pd_subscription_restart(pd_domain *d, const char *what);

/* ---- pd_poll.c ----------------------------------------------------------- */
/* The next poll: a UDP poll first when it can save the HTTP one, then GET
 * /v1/poll, or POST /v1/poll with the next chunk of pairs for an outbox
 * without subscriptions. 0, or -1 (logged). */
int pd_poll_start(pd_domain *d);
pd_next pd_poll_done(pd_domain *d, const pd_xfer *x);
/* Every listed message is finished: poll the same chunk again or the
 * next one (d->state becomes PD_D_POLL). */
void pd_poll_items_done(pd_domain *d);
/* The UDP answer pkt, if it is d's: its status (SM_UDPPOLL_POLL: d polls
 * by HTTP now), else -1. */
int pd_poll_udp_answer(pd_domain *d, const unsigned char *pkt, size_t len);

/* ---- pd_ack.c ------------------------------------------------------------ */
/* Queue the ack of (id, to): delivered, or rejected when reason is not
 * NULL, with the body's receipt ("" none); what and earlier are for its log
 * line. 0, or -1 out of memory (logged: it is acked next cycle, from table
 * received). */
int pd_ack_queue(pd_domain *d, const char *id, const char *to, const char *from,
                 const char *reason, const char *receipt, const char *what, int earlier);
/* Queue the acks an earlier run could not send (d->old). */
void pd_ack_queue_old(pd_domain *d);
/* Acks are waiting and should go now: a batch is full, or all is
 * (everything listed is finished). */
int pd_ack_due(const pd_domain *d, int all);
/* POST /v1/ack with the first PD_ACK_BATCH queued acks (POST
 * /v1/message/ID/ack with the first one, for an outbox without batches).
 * 0, or -1 (logged; the acks stay queued). */
int pd_ack_start(pd_domain *d);
pd_next pd_ack_done(pd_domain *d, const pd_xfer *x);
/* The cycle ends: say of each queued ack that it waits for the next one. */
void pd_ack_drop_queue(pd_domain *d, const char *why);

/* ---- pd_message.c -------------------------------------------------------- */
/* Start the work on lane l's item: 0 when a transfer started, -1 if the
 * item is finished already (its outcome logged; its ack queued unless it
 * failed). */
int pd_message_begin(pd_lane *l);
/* Also notes in x a body that is not the listed size. */
pd_next pd_message_fetch_done(pd_lane *l, pd_xfer *x);
pd_next pd_message_deliver_done(pd_lane *l, const pd_xfer *x);
/* The outcome line of a message whose transfer a stop cuts short. */
void pd_message_interrupted(pd_lane *l);
/* The lane's current item is the last recipient of its message: the
 * message is finished with (its partial file goes unless one failed). */
void pd_message_done(pd_lane *l);

/* ---- pd_dispatch.c ------------------------------------------------------- */
void pd_dispatch_begin(pd_domain *d);
/* A transfer finished: route it to its step, free it, act on the answer. */
void pd_dispatch_done(pd_xfer *x, CURLcode result);
/* Start what waited for a Retry-After once now_ms has come; returns when the
 * domain wants to be woken next (0: not waiting). */
long long pd_dispatch_wake(pd_domain *d, long long now_ms);
/* SIGTERM: abort what can be aborted; deliveries run to their end. */
void pd_dispatch_stop(pd_domain *d);
/* Second signal: abort everything now. */
void pd_dispatch_abort(pd_domain *d);
/* pd_udp_answer_fn: the UDP poll answer of a waiting domain. */
int pd_dispatch_udp_answer(pd_ctx *ctx, const unsigned char *pkt, size_t len);

/* ---- pd_cycle.c ---------------------------------------------------------- */
/* only: the domains UDP stubs asked for (pd_stub_due; taken over), or NULL
 * for a full cycle of every domain. */
void pd_cycle_start(pd_ctx *ctx, char *only);
/* Start queued domains while there is room. */
void pd_cycle_pump(pd_ctx *ctx);
/* Wake what waited; when the next domain wants waking (0: none). */
long long pd_cycle_wake(pd_ctx *ctx);
void pd_cycle_stop(pd_ctx *ctx);
void pd_cycle_abort(pd_ctx *ctx);
/* Every domain of the running cycle is done. */
int pd_cycle_over(const pd_ctx *ctx);
/* The summary line; 1 if the cycle had failures. */
int pd_cycle_end(pd_ctx *ctx);
/* Free the cycle's domains. */
void pd_cycle_free(pd_ctx *ctx);


#endif
