/*
 * NAME
 *	udpload - load generator for mod_stubmail's UDP poll responder
 *
 * SYNOPSIS
 *	udpload IP:PORT SESSION SECRET CURSOR SECONDS [SOCKETS]
 *
 * DESCRIPTION
 *	Sends valid "stubmail1 poll" requests (docs/PROTOCOL.md, "UDP poll"),
 *	built and MAC'd with lib/sm_udppoll exactly as stubmail-pollerd builds
 *	them, for SECONDS seconds from SOCKETS sockets (default 32), each with
 *	one request in flight: a socket sends its next request when the reply
 *	to the last one arrived (checked with sm_udppoll_reply_parse against
 *	that request's MAC) or after 200 ms without one. SESSION and SECRET are
 *	the "udp" member of a login answer, CURSOR the ETag of the last HTTP
 *	poll (double quotes included).
 *
 *	Prints one line:
 *	  sent N replies N idle N poll N bad N late N timeouts N seconds S rate R
 *	where rate is verified replies to the request in flight per second.
 *	"bad" counts replies that verify against no request of their socket:
 *	the harness treats any as a failed run. "late" counts replies to a
 *	request given up on after 200 ms ("timeouts"); the harness accepts a
 *	small share of those (the responder drops what it rate-limits without
 *	a word, and so does the kernel when a socket buffer is full).
 *
 * DIAGNOSTICS
 *	Exit 0 after a run; 64 on bad arguments, 1 when a socket cannot be
 *	made, with a line on stderr saying why.
 */

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "sm_udppoll.h"

#define MAX_SOCKETS 256
#define TIMEOUT_NS  200000000LL         /* a reply later than this counts as lost */

typedef struct slot {
    int fd;
    char mac[SM_UDPPOLL_B64_LEN + 1];   /* of the request in flight */
    char prev[SM_UDPPOLL_B64_LEN + 1];  /* of the one given up on, "" if none */
    long long sent_ns;
} slot;

static long long now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    char *end;
    long port;

    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return -1;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* Build and send the next request on s; 0, or -1 if it could not be built
 * (a bad session or cursor: the caller gives up). A send the kernel
 * refuses counts as a request lost, as on the wire. */
static int send_one(slot *s, const unsigned char *key, const char *session,
                    const char *cursor, unsigned long *sent)
{
    char pkt[SM_UDPPOLL_REQUEST_MAX + 1];
    long n = sm_udppoll_request_encode(key, session, cursor, (long long)time(NULL),
                                       pkt, sizeof(pkt), s->mac);

    if (n < 0)
        return -1;
    s->sent_ns = now_ns();
    if (send(s->fd, pkt, (size_t)n, 0) == n)
        (*sent)++;
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    unsigned char key[SM_UDPPOLL_KEY_LEN];
    struct pollfd pfd[MAX_SOCKETS];
    slot slots[MAX_SOCKETS];
    unsigned long sent = 0, replies = 0, idle = 0, busy = 0, bad = 0, late = 0, timeouts = 0;
    long long start, deadline, t;
    double seconds;
    int nsock = 32, i;

    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: udpload IP:PORT SESSION SECRET CURSOR SECONDS [SOCKETS]\n");
        return 64;
    }
    if (parse_addr(argv[1], &sa) != 0) {
        fprintf(stderr, "udpload: %s is not IPv4:PORT\n", argv[1]);
        return 64;
    }
    if (sm_udppoll_secret_decode(argv[3], key) != 0) {
        fprintf(stderr, "udpload: the secret is not 32 octets of base64url\n");
        return 64;
    }
    seconds = atof(argv[5]);
    if (argc == 7)
        nsock = atoi(argv[6]);
    if (seconds <= 0 || nsock < 1 || nsock > MAX_SOCKETS) {
        fprintf(stderr, "udpload: SECONDS > 0 and 1 <= SOCKETS <= %d\n", MAX_SOCKETS);
        return 64;
    }

    for (i = 0; i < nsock; i++) {
        slots[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        /* connected: the kernel drops datagrams from anyone else */
        if (slots[i].fd < 0 || connect(slots[i].fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            fprintf(stderr, "udpload: socket to %s: %s\n", argv[1], strerror(errno));
            return 1;
        }
        pfd[i].fd = slots[i].fd;
        pfd[i].events = POLLIN;
        slots[i].prev[0] = '\0';
    }

    start = now_ns();
    deadline = start + (long long)(seconds * 1e9);
    for (i = 0; i < nsock; i++)
        if (send_one(&slots[i], key, argv[2], argv[4], &sent) != 0) {
            fprintf(stderr, "udpload: cannot build a request (session or cursor invalid)\n");
            return 64;
        }

    while ((t = now_ns()) < deadline) {
        int n = poll(pfd, (nfds_t)nsock, 10);

        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "udpload: poll: %s\n", strerror(errno));
            return 1;
        }
        for (i = 0; i < nsock; i++) {
            unsigned char buf[512];
            ssize_t got;
            sm_udppoll_status status;
            const char *why;

            if (pfd[i].revents & POLLIN) {
                while ((got = recv(slots[i].fd, buf, sizeof(buf), 0)) >= 0) {
                    if (sm_udppoll_reply_parse(key, slots[i].mac, buf, (size_t)got,
                                               &status, &why) != 0) {
                        /* the answer to the request given up on arrived after all */
                        if (slots[i].prev[0] != '\0'
                            && sm_udppoll_reply_parse(key, slots[i].prev, buf, (size_t)got,
                                                      &status, &why) == 0)
                            late++;
                        else
                            bad++;
                        continue;
                    }
                    replies++;
                    if (status == SM_UDPPOLL_IDLE)
                        idle++;
                    else
                        busy++;
                    send_one(&slots[i], key, argv[2], argv[4], &sent);
                }
            } else if (now_ns() - slots[i].sent_ns > TIMEOUT_NS) {
                timeouts++;
                memcpy(slots[i].prev, slots[i].mac, sizeof(slots[i].prev));
                send_one(&slots[i], key, argv[2], argv[4], &sent);
            }
        }
    }
    seconds = (double)(now_ns() - start) / 1e9;
    printf("sent %lu replies %lu idle %lu poll %lu bad %lu late %lu timeouts %lu "
           "seconds %.3f rate %.0f\n", sent, replies, idle, busy, bad, late, timeouts,
           seconds, (double)replies / seconds);
    return 0;
}
