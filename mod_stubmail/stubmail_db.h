/* stubmail_db — mod_stubmail's SQL: the statements prepared through mod_dbd
 * (their labels here, their SQL and arguments in stubmail_db.c), the
 * connection of a request, and running a statement.
 *
 * mod_dbd's sequential results must be read to the last row, or the pooled
 * connection stays busy and later requests fail: stubmail_db_first_row
 * does that for the statements whose first row is all that counts, and a
 * caller of stubmail_db_select reads with stubmail_db_next_row until 0. */
#ifndef STUBMAIL_DB_H
#define STUBMAIL_DB_H

#include "httpd.h"
#include "apr_dbd.h"

#include "stubmail_req.h"

/* The labels, also the PostgreSQL statement names. */
#define STMT_POLL         "stubmail_poll"
#define STMT_FETCH        "stubmail_fetch"
#define STMT_ACKS_RECEIPTS "stubmail_acks_receipts"
#define STMT_ACKS_MARK    "stubmail_acks_mark"
#define STMT_ACKS_DONE    "stubmail_acks_done"
#define STMT_PEER         "stubmail_peer"
#define STMT_DNS_GET      "stubmail_dns_get"
#define STMT_DNS_PUT      "stubmail_dns_put"
#define STMT_NONCE        "stubmail_nonce"
#define STMT_RATE         "stubmail_rate"
#define STMT_RATE_CLEAN   "stubmail_rate_clean"
#define STMT_SUB_CHANGE   "stubmail_sub_change"
#define STMT_POLL_STATE   "stubmail_poll_state"
#define STMT_POLL_PENDING "stubmail_poll_pending"
#define STMT_UNSUBSCRIBE  "stubmail_unsubscribe"
#define STMT_USER_BOOK    "stubmail_user_book"
#define STMT_USER_ADD     "stubmail_user_add"
#define STMT_USER_BLOCK   "stubmail_user_block"
#define STMT_USER_REMOVE  "stubmail_user_remove"
#define STMT_USER_SENT    "stubmail_user_sent"
#define STMT_USER_RECALL  "stubmail_user_recall"
#define STMT_METRICS      "stubmail_metrics"

/* The user's page shows at most this many rows of their address book,
 * blocks and introductions, and this many of their sent messages. */
#define STUBMAIL_USER_ROWS 5000
#define STUBMAIL_USER_ROWS_SQL "5001"
#define STUBMAIL_USER_SENT 100
#define STUBMAIL_USER_SENT_SQL "100"

/* post_config: mod_dbd's functions. OK, or HTTP_INTERNAL_SERVER_ERROR
 * (logged) when mod_dbd is not loaded. */
int stubmail_db_init(server_rec *s);

/* post_config: have mod_dbd prepare every statement on s's connections. */
void stubmail_db_prepare_all(server_rec *s);

/* A database connection for this request (acquired once): 1, or 0 after
 * the 503. */
int stubmail_db(stubmail_req *q);

/* The same, for an endpoint that gives the connection back with
 * stubmail_db_release before the end of the request: before it sends a
 * body that a slow reader may take long to read. */
int stubmail_db_own(stubmail_req *q);

/* Give back the connection of stubmail_db_own (none: nothing to do);
 * q->dbd is NULL after. */
void stubmail_db_release(stubmail_req *q);

/* Run a statement that returns rows (SELECT, ... RETURNING): 0 with *res,
 * or -1 (logged). Then read every row with stubmail_db_next_row. */
int stubmail_db_select(stubmail_req *q, const char *label, apr_dbd_results_t **res,
                       int nargs, const char **args);

/* 1 with *row set while rows remain, then 0 (and the result is released). */
int stubmail_db_next_row(stubmail_req *q, apr_dbd_results_t *res, apr_dbd_row_t **row);

/* Run a statement and keep the first ncols columns of its first row in
 * cols (copies in r->pool; "" for NULL), reading the other rows too.
 * 1 a row, 0 none, -1 database trouble (logged). */
int stubmail_db_first_row(stubmail_req *q, const char *label, int nargs,
                          const char **args, int ncols, const char **cols);

#endif
