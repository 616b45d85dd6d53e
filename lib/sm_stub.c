/* sm_stub — the UDP stub datagram (sm_stub.h, docs/PROTOCOL.md "UDP
 * stubs"): strict parser, encoder, and a non-blocking sender.
 *
 * Anyone can send a receiver a stub, so the parser accepts exactly the
 * grammar and nothing near it: a stub that parses is still only a reason to
 * poll a domain the receiver already knows. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sm_log.h"
#include "sm_stub.h"

/* The address in line[0..len) after its "from:"/"to:" prefix: valid, and
 * already in normalised (lowercase) form, into out. */
static int take_addr(const char *p, size_t len, char *out, const char **why)
{
    char buf[SM_ADDR_MAX + 1];
    size_t i;

    if (len == 0) {
        *why = "empty address";
        return -1;
    }
    if (len > SM_ADDR_MAX) {
        *why = "address longer than 320 octets";
        return -1;
    }
    memcpy(buf, p, len);
    buf[len] = '\0';
    for (i = 0; i < len; i++) {
        if (buf[i] >= 'A' && buf[i] <= 'Z') {
            *why = "address is not in lowercase";
            return -1;
        }
        /* sm_addr_normalize would strip these: a stub must not need it */
        if (buf[i] == '<' || buf[i] == '>') {
            *why = "address has angle brackets";
            return -1;
        }
    }
    if (sm_addr_normalize(buf, out, SM_ADDR_MAX + 1, why) != 0)
        return -1;
    return 0;
}

int sm_stub_parse(const unsigned char *pkt, size_t len, sm_stub *out, const char **why)
{
    const char *p = (const char *)pkt, *end = p + len, *nl;
    size_t i, j, line = 0, n;

    memset(out, 0, sizeof *out);
    if (len == 0) {
        *why = "empty datagram";
        goto bad;
    }
    if (len > SM_STUB_MAX) {
        *why = "datagram longer than 512 octets";
        goto bad;
    }
    for (i = 0; i < len; i++) {
        if (pkt[i] != '\n' && (pkt[i] < 0x21 || pkt[i] > 0x7e)) {
            *why = "octet outside %x21-7E and LF";
            goto bad;
        }
    }
    if (pkt[len - 1] != '\n') {
        *why = "last line does not end with LF";
        goto bad;
    }
    for (; p < end; p = nl + 1, line++) {
        nl = memchr(p, '\n', (size_t)(end - p));   /* found: the last octet is LF */
        n = (size_t)(nl - p);
        if (line == 0) {
            if (n != sizeof SM_STUB_MAGIC - 1 || memcmp(p, SM_STUB_MAGIC, n) != 0) {
                *why = "not a stubmail-stub-v1 datagram";
                goto bad;
            }
        } else if (line == 1) {
            if (n < 5 || memcmp(p, "from:", 5) != 0) {
                *why = "second line is not from:";
                goto bad;
            }
            if (take_addr(p + 5, n - 5, out->from, why) != 0)
                goto bad;
        } else {
            if (n < 3 || memcmp(p, "to:", 3) != 0) {
                *why = "a line after from: is not to:";
                goto bad;
            }
            if (out->nto == SM_STUB_RCPT_MAX) {
                *why = "more than 32 recipients";
                goto bad;
            }
            if (take_addr(p + 3, n - 3, out->to[out->nto], why) != 0)
                goto bad;
            if (out->nto > 0 && strcmp(sm_addr_domain(out->to[out->nto]),
                                       sm_addr_domain(out->to[0])) != 0) {
                *why = "recipients at more than one domain";
                goto bad;
            }
            for (j = 0; j < out->nto; j++) {
                if (strcmp(out->to[j], out->to[out->nto]) == 0) {
                    *why = "a recipient appears twice";
                    goto bad;
                }
            }
            out->nto++;
        }
    }
    if (line < 2) {
        *why = "no from: line";
        goto bad;
    }
    if (out->nto == 0) {
        *why = "no to: line";
        goto bad;
    }
    return 0;
bad:
    memset(out, 0, sizeof *out);
    return -1;
}

int sm_stub_encode(const char *from, const char *const *to, size_t n, size_t *used,
                   char *out, size_t outlen, const char **why)
{
    char norm[SM_ADDR_MAX + 1];
    size_t len, k, add;
    int w;

    *used = 0;
    if (outlen < SM_STUB_MAX) {
        *why = "buffer smaller than a stub";
        return -1;
    }
    if (n == 0) {
        *why = "no recipients";
        return -1;
    }
    /* only what the parser accepts goes out */
    if (sm_addr_normalize(from, norm, sizeof norm, why) != 0)
        return -1;
    if (strcmp(norm, from) != 0) {
        *why = "sender is not a normalised address";
        return -1;
    }
    w = snprintf(out, outlen, "%s\nfrom:%s\n", SM_STUB_MAGIC, from);
    if (w < 0 || (size_t)w >= SM_STUB_MAX) {
        *why = "sender address too long for a stub";
        return -1;
    }
    len = (size_t)w;
    for (k = 0; k < n && k < SM_STUB_RCPT_MAX; k++) {
        if (sm_addr_normalize(to[k], norm, sizeof norm, why) != 0)
            return -1;
        if (strcmp(norm, to[k]) != 0) {
            *why = "recipient is not a normalised address";
            return -1;
        }
        if (strcmp(sm_addr_domain(to[k]), sm_addr_domain(to[0])) != 0) {
            *why = "recipients at more than one domain";
            return -1;
        }
        add = 3 + strlen(to[k]) + 1;
        if (len + add > SM_STUB_MAX)
            break;
        memcpy(out + len, "to:", 3);
        memcpy(out + len + 3, to[k], add - 4);
        out[len + add - 1] = '\n';
        len += add;
    }
    if (k == 0) {
        *why = "addresses too long for a stub";
        return -1;
    }
    *used = k;
    return (int)len;
}

int sm_stub_send(const struct sockaddr *addr, socklen_t addrlen, const char *from,
                 const char *const *to, size_t n, char *why, size_t whylen)
{
    char pkt[SM_STUB_MAX];
    const char *bad = "";
    size_t done = 0, used;
    int fd, len, sent = 0;

    if ((fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
        sm_why(why, whylen, "socket: %s", strerror(errno));
        return -1;
    }
    while (done < n) {
        if ((len = sm_stub_encode(from, to + done, n - done, &used, pkt, sizeof pkt, &bad)) < 0) {
            sm_why(why, whylen, "%s", bad);
            sent = -1;
            break;
        }
        if (sendto(fd, pkt, (size_t)len, 0, addr, addrlen) != len) {
            sm_why(why, whylen, "sendto: %s", strerror(errno));
            sent = -1;
            break;
        }
        sent++;
        done += used;
    }
    close(fd);
    return sent;
}
