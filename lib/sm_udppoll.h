/* sm_udppoll — the UDP lightweight poll of docs/PROTOCOL.md ("UDP poll"):
 * a poller asks an outbox "anything new since the ETag of my last HTTP poll?"
 * in one datagram and gets "idle" or "poll" back in a smaller one.
 *
 *   request = "stubmail1 poll " session " " cursor " " time " " mac
 *   reply   = "stubmail1 " ("idle" / "poll") " " mac
 *
 * session is the payload part of the poller's bearer token (base64url of
 * domain "|" expiry "|" key-id), so the bearer token itself never travels
 * over UDP. The MAC key K of a session is derived statelessly from the token
 * secret named by its key-id:
 *
 *   K = HMAC-SHA256(secret[key-id], "stubmail-udp-v1|" session)
 *
 * The login answer hands K to the poller as base64url ("secret"). The
 * request MAC is base64url(HMAC-SHA256(K, the request up to, not including,
 * the space before the mac)); the reply MAC is base64url(HMAC-SHA256(K,
 * "stubmail1 reply " status " " request-mac)), which binds a reply to the
 * one request it answers.
 *
 * Pure functions: no sockets, no clock (the caller passes the time), no
 * logging. Parsers take raw octets (NULs and all) and refuse anything that
 * is not exactly the grammar. */
#ifndef SM_UDPPOLL_H
#define SM_UDPPOLL_H

#include <stddef.h>
#include <time.h>

#include "sm_addr.h"
#include "sm_token.h"

#define SM_UDPPOLL_VERSION     "stubmail1"
#define SM_UDPPOLL_KEY_LEN     32       /* K, octets */
#define SM_UDPPOLL_B64_LEN     43       /* base64url of 32 octets, no padding */
#define SM_UDPPOLL_SESSION_MAX 400      /* a token's payload is at most 386 */
#define SM_UDPPOLL_CURSOR_MAX  128
#define SM_UDPPOLL_TIME_DIGITS 12       /* Unix seconds, no leading zeros */
#define SM_UDPPOLL_SKEW        30       /* seconds a request's time may be off */
/* The longest request that fits the grammar; a responder drops longer
 * datagrams unread. */
#define SM_UDPPOLL_REQUEST_MAX (15 + SM_UDPPOLL_SESSION_MAX + 1 + SM_UDPPOLL_CURSOR_MAX \
                                + 1 + SM_UDPPOLL_TIME_DIGITS + 1 + SM_UDPPOLL_B64_LEN)
#define SM_UDPPOLL_REPLY_LEN   (10 + 4 + 1 + SM_UDPPOLL_B64_LEN)        /* 58 */
/* The shortest request that parses; longer than every reply, so that a
 * responder can never amplify what it is sent. */
#define SM_UDPPOLL_REQUEST_MIN (15 + 1 + 1 + 1 + 1 + 1 + 1 + SM_UDPPOLL_B64_LEN)   /* 64 */

typedef enum { SM_UDPPOLL_IDLE = 1, SM_UDPPOLL_POLL = 2 } sm_udppoll_status;

/* A request as parsed: syntax only, nothing in it is believed yet. */
typedef struct sm_udppoll_request {
    char session[SM_UDPPOLL_SESSION_MAX + 1];
    char cursor[SM_UDPPOLL_CURSOR_MAX + 1];
    long long time;
    char mac[SM_UDPPOLL_B64_LEN + 1];
    size_t signed_len;          /* octets of the datagram the MAC covers */
} sm_udppoll_request;

/* What a session names, once its key is known (sm_udppoll_key). */
typedef struct sm_udppoll_session {
    char domain[SM_DOMAIN_MAX + 1];
    time_t expiry;
    char key_id[SM_TOKEN_KEY_ID_MAX + 1];
} sm_udppoll_session;

/* The session part of a token ("v1." session "." mac) into out (outlen
 * bytes with the NUL). 0, or -1 if the token has no such part or it does
 * not fit. */
int sm_udppoll_session_of_token(const char *token, char *out, size_t outlen);

/* Parse session (len octets) and derive its K from the keyring. 0 with
 * key and *info filled, or -1 with *why (static string): "malformed
 * session", "unknown key id", "crypto failure". Says nothing about expiry
 * or whether anybody ever held K: the caller checks info->expiry, and the
 * request MAC proves the sender got K from a login. */
int sm_udppoll_key(const sm_token_keyring *kr, const char *session, size_t len,
                   unsigned char key[SM_UDPPOLL_KEY_LEN], sm_udppoll_session *info,
                   const char **why);

/* K as the login answer carries it: base64url, SM_UDPPOLL_B64_LEN chars
 * plus the NUL in out. 0, or -1 (why as sm_udppoll_key, or "buffer too
 * small"). */
int sm_udppoll_secret(const sm_token_keyring *kr, const char *session, char *out,
                      size_t outlen, const char **why);
/* The other way, for the poller: 0, or -1 if b64 is not exactly 32 octets
 * in canonical base64url. */
int sm_udppoll_secret_decode(const char *b64, unsigned char key[SM_UDPPOLL_KEY_LEN]);

/* Build a request. session and cursor must fit the grammar, t >= 0. Writes
 * the datagram (no NUL counted; one is written after it) into out and its
 * MAC, base64url with the NUL, into mac_out (SM_UDPPOLL_B64_LEN + 1 bytes,
 * kept to check the reply). Returns the datagram length, or -1 (bad field,
 * out too small, crypto failure). */
long sm_udppoll_request_encode(const unsigned char key[SM_UDPPOLL_KEY_LEN],
                               const char *session, const char *cursor, long long t,
                               char *out, size_t outlen, char *mac_out);

/* Parse a received datagram. 0, or -1 with *why (static string). */
int sm_udppoll_request_parse(const unsigned char *pkt, size_t len, sm_udppoll_request *req,
                             const char **why);

/* Whether req's MAC is right for the datagram pkt it was parsed from, under
 * key; constant-time. 1 yes, 0 no. */
int sm_udppoll_request_mac_ok(const unsigned char *pkt, const sm_udppoll_request *req,
                              const unsigned char key[SM_UDPPOLL_KEY_LEN]);

/* The whole check a responder makes before it looks anything up: syntax,
 * session, key, MAC, then expiry and time within SM_UDPPOLL_SKEW of now.
 * 0 with *req, *info and key filled, or -1 with *why: the parse errors,
 * "malformed session", "unknown key id", "bad mac", "session expired",
 * "stale time", "future time". Nothing unauthenticated decides anything
 * after the key lookup: expiry and time are checked after the MAC. */
int sm_udppoll_request_verify(const sm_token_keyring *kr, const unsigned char *pkt,
                              size_t len, time_t now, sm_udppoll_request *req,
                              sm_udppoll_session *info, unsigned char key[SM_UDPPOLL_KEY_LEN],
                              const char **why);

/* Build the reply to the request whose MAC is req_mac. Returns its length
 * (SM_UDPPOLL_REPLY_LEN), or -1. */
long sm_udppoll_reply_encode(const unsigned char key[SM_UDPPOLL_KEY_LEN], sm_udppoll_status status,
                             const char *req_mac, char *out, size_t outlen);

/* Check a received reply against the request it should answer: 0 with
 * *status, or -1 with *why ("malformed reply", "bad mac"). */
int sm_udppoll_reply_parse(const unsigned char key[SM_UDPPOLL_KEY_LEN], const char *req_mac,
                           const unsigned char *pkt, size_t len, sm_udppoll_status *status,
                           const char **why);

/* Whether s is a possible cursor: 1 to SM_UDPPOLL_CURSOR_MAX visible
 * ASCII octets (%x21-7E). The cursor is the ETag header value of the last
 * HTTP poll exactly, double quotes included. */
int sm_udppoll_cursor_valid(const char *s, size_t len);

#endif
