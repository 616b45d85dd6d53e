/* sm_authres — the Authentication-Results header fields (RFC 8601) of a
 * message that claim to come from us.
 *
 * A poller adds "Authentication-Results: <us>; stubmail=pass ..." to the
 * messages it verified. RFC 8601 section 5: a receiver removes any such
 * field that names its own authserv-id and arrived with the message, or a
 * sender could forge the verdict. This finds them: the byte ranges of the
 * whole fields (first line to the line ending of the last continuation
 * line) in the header section, which ends at the first empty line.
 *
 * A push parser, so that bodies of any size stream through it: feed the
 * message in pieces of any size, in order, then call sm_authres_end. The
 * field name is matched without regard to case, blanks are allowed before
 * the colon, and the authserv-id (a token or quoted-string after optional
 * blanks, line breaks and comments, nested too) is compared without regard
 * to case. */
#ifndef SM_AUTHRES_H
#define SM_AUTHRES_H

#include <stddef.h>

#define SM_AUTHRES_HEAD_MAX 1024  /* octets of a field kept: name and authserv-id */

typedef struct sm_range {         /* octets [from, to) of the message */
    long long from, to;
} sm_range;

typedef struct sm_authres_scan {
    const char *authserv_id;      /* not copied */
    long long off;                /* octets fed so far */
    long long line_start;         /* of the current line */
    long long field_start;        /* of the current field, -1 if none */
    int at_line_start, blank, done;
    char head[SM_AUTHRES_HEAD_MAX];
    size_t head_len;
    sm_range *ranges;             /* malloc'd, ascending, n entries */
    size_t n;
} sm_authres_scan;

void sm_authres_init(sm_authres_scan *s, const char *authserv_id);

/* Feed the next len octets. Returns 1 once the header section has ended
 * (the rest of the message need not be fed), 0 to go on, -1 when out of
 * memory. */
int sm_authres_feed(sm_authres_scan *s, const char *data, size_t len);

/* The message ended (perhaps without an empty line: all header). Returns 0,
 * or -1 when out of memory. s->ranges / s->n are then final. */
int sm_authres_end(sm_authres_scan *s);

/* Free the ranges (and forget them). */
void sm_authres_free(sm_authres_scan *s);

/* 1 if the field text (name, colon, value; continuation lines joined with
 * their line breaks) is an Authentication-Results field whose authserv-id is
 * authserv_id, else 0. len octets, not NUL-terminated. */
int sm_authres_claims(const char *field, size_t len, const char *authserv_id);

#endif
