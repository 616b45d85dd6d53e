/* smf — internals shared by the files of stubmail-milter.
 *
 * stubmail-milter.c   configuration, libmilter callbacks, main()
 * smf_db.c            the PostgreSQL connection pool and every SQL statement
 * smf_net.c           trusted_networks: CIDR lists, IPv4 and IPv6; UDP stubs
 */
#ifndef SMF_H
#define SMF_H

#include <stddef.h>
#include <sys/socket.h>

#include "sm_addr.h"
#include "sm_discover_pq.h"
#include "sm_id.h"

/* ---- smf_net.c ------------------------------------------------------- */

typedef struct smf_net {
    int family;                 /* AF_INET or AF_INET6 */
    unsigned char addr[16];     /* network address, host bits cleared */
    unsigned prefix;            /* prefix length in bits */
} smf_net;

typedef struct smf_netlist {
    smf_net *nets;
    size_t n;
} smf_netlist;

/* Parse a list of "ADDR[/PREFIX]" separated by blanks or commas. Returns 0,
 * or -1 with a reason in err. An empty list is valid (nothing trusted). */
int smf_netlist_parse(const char *spec, smf_netlist *out, char *err, size_t errlen);
void smf_netlist_free(smf_netlist *list);
/* 1 if sa (AF_INET or AF_INET6; IPv4-mapped IPv6 counts as IPv4) is inside
 * one of the networks, else 0. NULL or other families: 0. */
int smf_netlist_match(const smf_netlist *list, const struct sockaddr *sa);

/* ---- smf_db.c -------------------------------------------------------- */

/* Outcome of every database call: OK, or a temporary failure (database
 * unreachable, query failed) with a reason in the caller's buffer.
 * SMF_DB_UNKNOWN: the connection broke during COMMIT, which may or may not
 * have committed (smf_db_store only). SMF_DB_DNSFAIL: the database answered
 * but DNS failed temporarily (smf_db_discover only). */
typedef enum {
    SMF_DB_OK = 0, SMF_DB_TEMPFAIL = -1, SMF_DB_UNKNOWN = -2, SMF_DB_DNSFAIL = -3
} smf_db_status;

/* Set up a pool of size connections to conninfo; connections are opened
 * lazily and reopened after they break. */
int smf_db_init(const char *conninfo, long size);
void smf_db_shutdown(void);

/* Who domain (lowercase) is: sm_discover on a pooled connection (the peer
 * row, then _stubmail through dns_cache; resolver NULL = the system's). */
smf_db_status smf_db_discover(const char *resolver, const char *domain, sm_peer_info *info,
                              char *why, size_t whylen);

/* One recipient of a stored message. */
typedef struct smf_db_rcpt {
    const char *addr;           /* normalised */
    const char *domain;         /* sm_addr_domain(addr) */
} smf_db_rcpt;

/* One transaction: the message row, an outbox row per pulling recipient,
 * an address-book row (owner = sender) per contact. format is how the body
 * is stored: "openpgp" (signed and encrypted). */
smf_db_status smf_db_store(const char *id, const char *sender, long long size,
                           const char *spool_name, const char *format,
                           const smf_db_rcpt *outbox, size_t noutbox,
                           const smf_db_rcpt *contacts, size_t ncontacts,
                           char *why, size_t whylen);

/* Undo smf_db_store after a later step failed (the MTA will retry). */
smf_db_status smf_db_unstore(const char *id, char *why, size_t whylen);

/* Address-book learning alone (push mail). */
smf_db_status smf_db_learn(const char *owner, const smf_db_rcpt *contacts, size_t ncontacts,
                           char *why, size_t whylen);

/* A recipient's cached WKD answer (sql/006_recipient_key.sql): status gets
 * "found" (with its fingerprint in fpr), "none", "refused" or "error", or
 * "" when nothing unexpired is cached. */
smf_db_status smf_db_rcpt_key_get(const char *addr, char *status, size_t statuslen,
                                  char *fpr, size_t fprlen, char *why, size_t whylen);

/* Cache an answer; the TTL follows from status (recipient_key_put).
 * fpr: NULL unless status is "found"; reason: why, or NULL. */
smf_db_status smf_db_rcpt_key_put(const char *addr, const char *status, const char *fpr,
                                  const char *reason, char *why, size_t whylen);

/* ---- smf_net.c: UDP stubs ------------------------------------------ */

/* After the outbox commit: tell a recipient domain that publishes udp=
 * (udp, as discovery gave it) in its _stubmail record that mail from sender
 * waits for its recipients to (docs/PROTOCOL.md "UDP stubs"): one datagram
 * (more if to does not fit in 512 octets). Fire and forget: never blocks on
 * the network, never fails the message; what was not sent is logged (qid
 * for the log line). */
void smf_stub_send(const char *qid, const char *sender, const char *domain, const char *udp,
                   const char *const *to, size_t nto);

#endif
