/* sm_addr — mail address and domain syntax, the one definition every part
 * uses (docs/PROTOCOL.md, "Address"). Deliberately stricter than RFC 5321:
 * no quoted local parts, no address literals, nothing an SQL, shell or header
 * context could misread. */
#define _GNU_SOURCE /* memmem */
#include <ctype.h>
#include <string.h>

#include "sm_addr.h"

int sm_domain_valid(const char *s)
{
    size_t total = strlen(s), label = 0;
    const char *p;

    if (total == 0 || total > SM_DOMAIN_MAX)
        return 0;
    for (p = s; ; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || label > 63 || p[-1] == '-')
                return 0;
            if (*p == '\0')
                return 1;
            label = 0;
            continue;
        }
        if (!(isascii((unsigned char)*p) && isalnum((unsigned char)*p)) && *p != '-')
            return 0;
        if (*p == '-' && label == 0)
            return 0;
        label++;
    }
}

static int local_char_ok(unsigned char c)
{
    /* printable US-ASCII minus the specials that mean something elsewhere */
    return c > 0x20 && c < 0x7f && !strchr("<>\"\\,;()[]:@", c);
}

static int normalize(const char *in, char *out, size_t outlen, int allow_pattern,
                     const char **why)
{
    const char *start = in, *end, *at;
    size_t len, i;

    while (*start == ' ' || *start == '\t')
        start++;
    end = start + strlen(start);
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - start >= 2 && *start == '<' && end[-1] == '>') {
        start++;
        end--;
    }
    len = (size_t)(end - start);
    if (len == 0) {
        *why = "empty address";
        return -1;
    }
    if (len > SM_ADDR_MAX) {
        *why = "address longer than 320 octets";
        return -1;
    }
    if (len + 1 > outlen) {
        *why = "address does not fit the buffer";
        return -1;
    }
    at = memchr(start, '@', len);
    if (at == NULL) {
        *why = "address has no @";
        return -1;
    }
    if (memchr(at + 1, '@', (size_t)(end - at - 1)) != NULL) {
        *why = "address has more than one @";
        return -1;
    }
    if (at == start) {
        *why = "address has an empty local part";
        return -1;
    }
    if (at - start > 64) {
        *why = "local part longer than 64 octets";
        return -1;
    }
    if (at - start == 1 && *start == '*') {
        /* "*@domain" means any sender at that domain: never an address */
        if (!allow_pattern) {
            *why = "\"*\" is a sender pattern, not an address";
            return -1;
        }
    } else {
        for (i = 0; start + i < at; i++) {
            if (!local_char_ok((unsigned char)start[i])) {
                *why = "local part has a forbidden character";
                return -1;
            }
        }
        if (*start == '.' || at[-1] == '.' || memmem(start, (size_t)(at - start), "..", 2)) {
            *why = "local part has a misplaced dot";
            return -1;
        }
    }
    for (i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)start[i]);
    out[len] = '\0';
    if (!sm_domain_valid(out + (at - start) + 1)) {
        *why = "domain is not a valid DNS name";
        return -1;
    }
    return 0;
}

int sm_addr_normalize(const char *in, char *out, size_t outlen, const char **why)
{
    return normalize(in, out, outlen, 0, why);
}

int sm_pattern_normalize(const char *in, char *out, size_t outlen, const char **why)
{
    return normalize(in, out, outlen, 1, why);
}

const char *sm_addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : addr + strlen(addr);
}
