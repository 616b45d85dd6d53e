/* sm_stub — UDP stubs (docs/PROTOCOL.md, "UDP stubs"): the hint a sender
 * domain sends to a recipient domain's published udp= address after it
 * stored mail for it: "mail from this sender to these recipients waits in
 * my outbox". A stub is only ever a reason to poll the sender domain's
 * published outbox; it carries no URL, no message id and no credentials.
 *
 * One datagram, at most SM_STUB_MAX octets, ASCII lines each ended by LF:
 *
 *   stubmail-stub-v1
 *   from:alice@a.example
 *   to:bob@b.example
 *   to:carol@b.example
 *
 * - the first line is exactly "stubmail-stub-v1" (a later version changes
 *   it; a receiver drops versions it does not know);
 * - then exactly one "from:" line and 1..SM_STUB_RCPT_MAX "to:" lines, in
 *   that order; no other lines, no empty lines, nothing after the last LF;
 * - every octet is %x21-7E or LF (no CR, blanks, controls, 8-bit);
 * - every address follows docs/PROTOCOL.md "Address" and is lowercase as
 *   sent; all recipients are at one domain and none appears twice.
 */
#ifndef SM_STUB_H
#define SM_STUB_H

#include <stddef.h>
#include <sys/socket.h>

#include "sm_addr.h"

#define SM_STUB_MAX        512   /* octets in one stub datagram */
#define SM_STUB_RCPT_MAX    32   /* "to:" lines in one stub */
#define SM_STUB_MAGIC "stubmail-stub-v1"

typedef struct sm_stub {
    char from[SM_ADDR_MAX + 1];
    size_t nto;
    char to[SM_STUB_RCPT_MAX][SM_ADDR_MAX + 1];
} sm_stub;

/* Parse one datagram (len octets, may hold NULs) strictly by the rules
 * above. Returns 0 with *out filled, or -1 with a reason in *why (static
 * string); on failure *out is zeroed. */
int sm_stub_parse(const unsigned char *pkt, size_t len, sm_stub *out, const char **why);

/* Encode a stub from `from` to as many of the n recipients in `to`
 * (normalised addresses at one domain, no duplicates) as fit into one
 * datagram, from the first on. Returns its length with *used set to how
 * many recipients it names (>= 1), or -1 with why when not even one fits or
 * an address is not valid. out needs SM_STUB_MAX octets. */
int sm_stub_encode(const char *from, const char *const *to, size_t n, size_t *used,
                   char *out, size_t outlen, const char **why);

/* Send stubs from `from` to the n recipients (at one domain) to addr: as
 * many datagrams as needed, without blocking (a full socket buffer drops
 * the stub: it is a hint). Returns the number of datagrams sent, or -1 with
 * why (nothing more was tried after the failure). */
int sm_stub_send(const struct sockaddr *addr, socklen_t addrlen, const char *from,
                 const char *const *to, size_t n, char *why, size_t whylen);

#endif
