/* sm_proto — encode and decode the JSON bodies of docs/PROTOCOL.md.
 * Parsers validate everything (types, address syntax, limits) and say why a
 * body is refused; the strings they return are the protocol's error codes. */
#ifndef SM_PROTO_H
#define SM_PROTO_H

#include <stddef.h>
#include "sm_addr.h"
#include "sm_id.h"

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

/* Parse an ack request {"to": ...}; to must be at own_domain. */
int sm_ack_request_parse(const char *body, size_t len, const char *own_domain,
                         char *to, size_t tolen, sm_parse_error *err);

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

#endif
