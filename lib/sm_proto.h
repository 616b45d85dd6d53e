/* sm_proto — encode and decode the JSON bodies of docs/PROTOCOL.md.
 * Parsers validate everything (types, address syntax, limits) and say why a
 * body is refused; the strings they return are the protocol's error codes. */
#ifndef SM_PROTO_H
#define SM_PROTO_H

#include <stddef.h>
#include <time.h>

#include "sm_addr.h"
#include "sm_id.h"
#include "sm_receipt.h"

typedef struct sm_pair {
    char from[SM_ADDR_MAX + 1];   /* normalised sender pattern */
    char to[SM_ADDR_MAX + 1];     /* normalised recipient */
} sm_pair;

typedef struct sm_listing {       /* one entry of a poll answer */
    char id[SM_ID_LEN + 1];
    char from[SM_ADDR_MAX + 1];
    char to[SM_ADDR_MAX + 1];
    long long size;
    char time[32];                /* RFC 3339 UTC, as sent */
} sm_listing;

/* Outcome of parsing a request body. On failure, code is the protocol error
 * code ("bad_json", "bad_request", "foreign_recipient", "too_many_pairs") and
 * message a human-readable reason (points into the result). */
typedef struct sm_parse_error {
    const char *code;
    char message[256];
} sm_parse_error;

/* Parse a poll request. Every "to" must be at own_domain. On success returns
 * 0 and a malloc'd array in *pairs (caller frees) of *npairs entries. */
int sm_poll_request_parse(const char *body, size_t len, const char *own_domain,
                          size_t max_pairs, sm_pair **pairs, size_t *npairs,
                          sm_parse_error *err);

/* An ack request as a whole: {"to": ...} says the recipient's MTA took the
 * message; with "status": "rejected" and "reason" it says the poller refused
 * it (signature did not verify, could not decrypt). "receipt" (either way)
 * is the message's receipt (sm_receipt.h): the proof that the poller read
 * the body, which the outbox requires of a message stored with one. */
#define SM_ACK_REASON_MAX 200     /* octets of printable US-ASCII */
typedef struct sm_ack_request {
    char to[SM_ADDR_MAX + 1];     /* normalised, at own_domain */
    int rejected;                 /* 1: "status": "rejected" */
    char reason[SM_ACK_REASON_MAX + 1];   /* "" unless rejected */
    char receipt[SM_RECEIPT_LEN + 1];     /* "" when the ack carries none */
} sm_ack_request;

/* Parse an ack with its optional status: "status" absent or "delivered", or
 * "rejected" together with "reason" (a string of 1 to SM_ACK_REASON_MAX
 * printable US-ASCII octets); "reason" without "rejected" is refused. */
int sm_ack_request_parse_status(const char *body, size_t len, const char *own_domain,
                                sm_ack_request *ack, sm_parse_error *err);

/* Encode an ack body (pollerd): {"to":to}, or with reason != NULL
 * {"to":to,"status":"rejected","reason":reason}; "receipt" too unless
 * receipt is NULL or "". malloc'd; NULL on ENOMEM. */
char *sm_ack_request_encode(const char *to, const char *reason, const char *receipt);

/* Acks in a batch (POST /v1/ack): {"acks": [ITEM, ...]}, each ITEM an ack
 * body as above with the message's "id" added; 1 to SM_ACKS_MAX of them,
 * all at own_domain. On success *items is malloc'd (caller frees). */
#define SM_ACKS_MAX 1000
typedef struct sm_ack_item {
    char id[SM_ID_LEN + 1];
    sm_ack_request ack;
} sm_ack_item;
int sm_acks_request_parse(const char *body, size_t len, const char *own_domain,
                          sm_ack_item **items, size_t *nitems, sm_parse_error *err);
/* Encode a batch (pollerd). malloc'd; NULL on ENOMEM. */
char *sm_acks_request_encode(const sm_ack_item *items, size_t nitems);
/* Read the answer to a batch of nsent acks (pollerd): one answer per ack,
 * in order, each naming the same id and recipient; acked[i] is 1 for
 * "status" delivered or rejected, 0 for "error": "not_found", -1 for
 * "error": "bad_receipt" (refused: no receipt, or not this message's). 0, or -1
 * (code "bad_response") when the answer is not that. */
int sm_acks_response_parse(const char *body, size_t len, const sm_ack_item *sent,
                           size_t nsent, int *acked, sm_parse_error *err);

/* Time on the wire: RFC 3339 in UTC with whole seconds, exactly
 * "YYYY-MM-DDTHH:MM:SSZ" (seconds 00-59, years 1970-9999), one spelling per
 * instant. */
#define SM_TIME_LEN 20
/* Parse s (NUL-terminated) into *t. Returns 0, or -1 if s is not that form
 * or names no real date. */
int sm_time_parse(const char *s, time_t *t);
/* Format t into out (at least SM_TIME_LEN + 1 bytes). Returns 0, or -1 if
 * t is before 1970 or after 9999. */
int sm_time_format(time_t t, char *out, size_t outlen);

/* POST /v1/login (docs/PROTOCOL.md, "Login"). domain and server are lowercase
 * DNS names; the signature covers the statement sm_login_statement builds
 * from them, so both sides make it with that one function. */
#define SM_NONCE_LEN          32       /* lowercase hex digits */
#define SM_LOGIN_KEY_MAX      65536    /* octets of the armored public key */
#define SM_LOGIN_SIGNATURE_MAX 16384   /* octets of the armored signature */
#define SM_LOGIN_STATEMENT_MAX 640     /* enough for the longest statement */

typedef struct sm_login_request {
    char domain[SM_DOMAIN_MAX + 1];    /* the polling domain */
    char server[SM_DOMAIN_MAX + 1];    /* the outbox's own domain */
    char time[SM_TIME_LEN + 1];        /* as sent (one spelling, see sm_time_parse) */
    time_t when;                       /* the same, parsed */
    char nonce[SM_NONCE_LEN + 1];
    char *key;                         /* malloc'd, NUL-terminated */
    size_t key_len;
    char *signature;                   /* malloc'd, NUL-terminated */
    size_t signature_len;
} sm_login_request;

/* Parse a login body. Every member must be present with its type and form:
 * domain and server lowercase DNS names, time as sm_time_parse, nonce 32
 * lowercase hex digits, key an ASCII-armored public key block and signature
 * an ASCII-armored signature (each starting with its BEGIN line, within the
 * limits above). Unknown members are ignored. Errors: bad_json, bad_request
 * (or "internal" when out of memory). On success free with
 * sm_login_request_free; on failure nothing is left allocated. */
int sm_login_request_parse(const char *body, size_t len, sm_login_request *req,
                           sm_parse_error *err);
void sm_login_request_free(sm_login_request *req);

/* The exact octets a login signs:
 *   "stubmail-login-v1\nserver:S\ndomain:D\ntime:T\nnonce:N\n"
 * Checks every field as sm_login_request_parse does (so nothing can smuggle a
 * line break in) and writes the NUL-terminated text into buf. Returns its
 * length, or -1 if a field is malformed or buflen is too small
 * (SM_LOGIN_STATEMENT_MAX is always enough). */
int sm_login_statement(const char *server, const char *domain, const char *time,
                       const char *nonce, char *buf, size_t buflen);

/* Encode a login body (pollerd). malloc'd; NULL on ENOMEM. */
char *sm_login_request_encode(const char *domain, const char *server, const char *time,
                              const char *nonce, const char *key, const char *signature);

/* Encode pairs as the JSON array the poll SQL takes:
 * [{"sender":...,"recipient":...},...]. malloc'd; NULL on ENOMEM. */
char *sm_pairs_sql_json(const sm_pair *pairs, size_t npairs);

/* Encode a poll request body {"pairs":[...]} (pollerd). malloc'd. */
char *sm_poll_request_encode(const sm_pair *pairs, size_t npairs);

/* Parse a poll answer (pollerd). On success *items is malloc'd. */
int sm_poll_response_parse(const char *body, size_t len, sm_listing **items,
                           size_t *nitems, int *more, sm_parse_error *err);

/* Encode {"error":code,"message":message}. malloc'd. */
char *sm_error_body(const char *code, const char *message);

/* POST /v1/subscription (docs/PROTOCOL.md): {"base": V, "add": [pairs],
 * "remove": [pairs]}, or {"reset": true, "add": [pairs]} which replaces the
 * whole subscription. Pairs are {"from", "to"} as in a poll. */
typedef struct sm_subscription_request {
    int reset;                    /* 1: "reset": true */
    long long base;               /* the version the change applies to; -1 with reset */
    sm_pair *add;                 /* malloc'd, nadd entries (NULL if none) */
    size_t nadd;
    sm_pair *remove;              /* malloc'd, nremove entries (NULL if none) */
    size_t nremove;
} sm_subscription_request;

/* Parse a subscription change. Every "to" must be at own_domain; add and
 * remove together hold at most max_pairs pairs. "base" (a non-negative
 * integer) is required unless "reset" is true; "remove" goes only without
 * "reset"; "add" and "remove" may be absent or empty. Errors: bad_json,
 * bad_request, foreign_recipient, too_many_pairs (or "internal"). On success
 * free with sm_subscription_request_free; on failure nothing is left. */
int sm_subscription_request_parse(const char *body, size_t len, const char *own_domain,
                                  size_t max_pairs, sm_subscription_request *req,
                                  sm_parse_error *err);
void sm_subscription_request_free(sm_subscription_request *req);

/* Encode a subscription change (pollerd): reset → {"reset":true,"add":[...]},
 * else {"base":base,"add":[...],"remove":[...]}. malloc'd; NULL on ENOMEM. */
char *sm_subscription_request_encode(int reset, long long base, const sm_pair *add,
                                     size_t nadd, const sm_pair *remove, size_t nremove);

/* The "version" member (a non-negative integer) of a JSON object: the
 * answer of POST /v1/subscription, of GET /v1/poll, or the error body of
 * 409 subscription_changed. 0, or -1 with err. */
int sm_version_parse(const char *body, size_t len, long long *version, sm_parse_error *err);

/* Encode {"error":code,"message":message,"version":version} (409
 * subscription_changed). malloc'd. */
char *sm_error_body_version(const char *code, const char *message, long long version);

#endif
