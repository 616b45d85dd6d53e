/* jn.h — stubmail-janitor: one pass over the sender's outbox. It tells
 * senders what became of their mail when they asked (RFC 3461 NOTIFY: a
 * recipient's ISP retrieved it, or rejected it), and about mail nobody
 * retrieved (a delay warning, then the failure when it expired: RFC 3464
 * notifications handed to the local MTA),
 * removes expired messages with their bodies, and removes spool files no
 * live message names. Safe to run on several hosts at once: each message
 * is claimed with a row lock (FOR UPDATE SKIP LOCKED) held over its
 * notification's hand-off, and a file's removal is an unlink, which only
 * one caller can do. */
#ifndef JN_H
#define JN_H

#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <libpq-fe.h>

#define JN_NAME "stubmail-janitor"

typedef struct jn_settings {
    char *database;             /* libpq conninfo */
    char *spool_dir;
    char *submit_to;            /* smtp://HOST:PORT of the local MTA */
    char *hostname;             /* Reporting-MTA, MAILER-DAEMON@hostname */
    long delay_warning;         /* seconds unretrieved before a warning; 0: none */
    long orphan_grace;          /* a file no row names is removed this old */
    long submit_timeout;        /* seconds for one hand-off */
} jn_settings;

/* jn_conf.c: the keys (-h prints them), loading and checking. */
int jn_conf_load(const char *path, jn_settings *set, char *err, size_t errlen);
void jn_conf_usage(FILE *fp);
/* "key<TAB>default" lines (default empty when none): -K */
void jn_conf_dump_keys(FILE *fp);

/* jn_dsn.c: a delivery status notification. FAILED: it expired
 * unretrieved; DELAYED: not retrieved yet; DELIVERED: the recipient's ISP
 * retrieved it; REJECTED: it fetched it and refused it. */
typedef enum { JN_DSN_FAILED, JN_DSN_DELAYED, JN_DSN_DELIVERED, JN_DSN_REJECTED } jn_dsn_kind;

typedef struct jn_rcpt {
    char *addr;
    char *orcpt;                /* its ORCPT ("rfc822;bob@b.example"), NULL if none */
    time_t acked;               /* DELIVERED, REJECTED: when its ISP acked */
    char *reason;               /* REJECTED: the ISP's reason */
} jn_rcpt;

typedef struct jn_message {
    char id[33];
    char *sender;
    char *envid;                /* its ENVID, NULL if none */
    time_t created, expires;
    jn_rcpt *recipients;        /* those the notice is about */
    size_t nrecipients;
} jn_message;

void jn_message_free(jn_message *m);

/* The whole notification (RFC 5322, CRLF line ends) for msg, malloc'd;
 * NULL when out of memory. now is its Date. */
char *jn_dsn_build(jn_dsn_kind kind, const jn_settings *set, const jn_message *msg,
                   time_t now);

/* jn_submit.c: hand text to the MTA, MAIL FROM:<>, RCPT TO:<rcpt>. */
typedef enum {
    JN_SUBMIT_OK = 0,           /* the MTA took it (250 after the data) */
    JN_SUBMIT_REFUSED = -1,     /* a permanent refusal (5xx): it never will */
    JN_SUBMIT_LATER = -2        /* not now (4xx, no connection, timeout) */
} jn_submit_status;
jn_submit_status jn_submit(const jn_settings *set, const char *rcpt, const char *text,
                           char *why, size_t whylen);

/* jn_expire.c: the notifications and the expired messages; counts into
 * the pass's tally. 0, or -1 when the database or the MTA failed (what
 * was done stays done). */
typedef struct jn_tally {
    long expired, failed_dsns, warnings, acked_dsns, files;
} jn_tally;
int jn_expire(PGconn *db, const jn_settings *set, jn_tally *t);
int jn_warn(PGconn *db, const jn_settings *set, jn_tally *t);

/* Shared by the steps: sql with $1 = id (nparams 1) or without parameters
 * (0: BEGIN, COMMIT, ROLLBACK), id naming the message in the log; 0 or
 * -1. jn_hand_over: the notice of kind about m to the MTA; 0 handed (or
 * refused for good: logged), -1 not now. */
int jn_run_cmd(PGconn *db, const char *sql, int nparams, const char *id, const char *what);
int jn_hand_over(const jn_settings *set, jn_dsn_kind kind, const jn_message *m);

/* jn_notify.c: the notices senders asked for (NOTIFY=SUCCESS, FAILURE or
 * none) about recipients whose ISP acked (sql/016 outbox_notice_due), one
 * per message and kind; outbox.notified_at records each. 0, or -1. */
int jn_notify(PGconn *db, const jn_settings *set, jn_tally *t);

/* jn_spool.c: spool files that no live message names, older than
 * orphan_grace. 0, or -1. */
int jn_spool_sweep(PGconn *db, const jn_settings *set, jn_tally *t);

#endif
