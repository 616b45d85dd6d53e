/* smf — internals shared by the files of stubmail-milter.
 *
 * stubmail-milter.c   main()
 * smf_conf.c          the configuration keys, loading a file with their
 *                     checks (-n), what a reload compares
 * smf_reload.c        the settings in use, held by each connection; SIGUSR1
 *                     loads the file again for the connections that follow
 * smf_callbacks.c     the libmilter callbacks and the failure policy
 * smf_ctx.c           per-connection and per-message contexts; the message's
 *                     buffer
 * smf_stream.c        the seal of a message that outgrew its buffer, made
 *                     in a thread of its own while the message arrives
 * smf_seal.c          sealing: domain keys, recipients' own keys (WKD), sign
 *                     and encrypt
 * smf_db.c            the PostgreSQL connection pool and every SQL statement
 * smf_net.c           trusted_networks: CIDR lists, IPv4 and IPv6; UDP stubs
 * smf_quota.c         the sender's outbox quota: SIZE=, over or not, the
 *                     refusal's text
 * smf_dsn.c           the RFC 3461 parameters: NOTIFY, ORCPT, ENVID
 * smf_cache.c         recipient domains' verdicts and recipients' keys kept
 *                     in memory, forgotten at each change (LISTEN)
 * smf_ident.c         a submission's identity, which a client's retry repeats
 *
 * Who calls whom (no cycles): stubmail-milter.c -> smf_conf, smf_reload,
 * smf_callbacks, smf_db, smf_cache; smf_reload -> smf_conf, smf_cache;
 * smf_conf -> smf_net; smf_callbacks -> smf_ctx, smf_stream, smf_seal, smf_db,
 * smf_net, smf_quota, smf_dsn, smf_ident; smf_ctx -> smf_stream, smf_ident,
 * smf_reload; smf_stream -> smf_seal; smf_seal -> smf_db (and reads the message
 * context's fields); smf_db -> smf_cache; smf_net, smf_quota, smf_dsn,
 * smf_cache and smf_ident call no other file of the milter. All but
 * stubmail-milter.c make libsmf.la, which the program and the unit tests
 * link.
 */
#ifndef SMF_H
#define SMF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <libmilter/mfapi.h>
#include <openssl/evp.h>

#include "sm_addr.h"
#include "sm_discover_pq.h"
#include "sm_dns.h"
#include "sm_id.h"
#include "sm_receipt.h"
#include "sm_pgp.h"
#include "sm_seal.h"
#include "sm_spool.h"

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
 * SMF_DB_UNKNOWN: the connection broke after the store was sent, and no
 * second try said whether it committed (smf_db_store only). SMF_DB_DNSFAIL: the database answered
 * but DNS failed temporarily (smf_db_discover only). SMF_DB_OVERQUOTA: the
 * message would take its sender over the outbox quota, nothing was stored
 * (smf_db_store only). */
typedef enum {
    SMF_DB_OK = 0, SMF_DB_TEMPFAIL = -1, SMF_DB_UNKNOWN = -2, SMF_DB_DNSFAIL = -3,
    SMF_DB_OVERQUOTA = -4
} smf_db_status;

/* A sender's outbox use (messages waiting to be retrieved and their stored
 * octets, the message at hand not counted) and quota (0: no limit), as
 * sql/011 counts them. The use is -1 when no limit applies (not read). */
typedef struct smf_quota {
    long long messages, bytes;
    long long max_messages, max_bytes;
} smf_quota;

/* Set up a pool of size connections to conninfo; connections are opened
 * lazily and reopened after they break. Every message stored through them
 * expires expire_after seconds later (sql/012). */
int smf_db_init(const char *conninfo, long size, long expire_after);
void smf_db_shutdown(void);

/* Who domain (lowercase) is: sm_discover on a pooled connection (the peer
 * row, then _stubmail through dns_cache, as dns says). */
smf_db_status smf_db_discover(const sm_dns_conf *dns, const char *domain, sm_peer_info *info,
                              char *why, size_t whylen);

/* One recipient of a stored message. */
typedef struct smf_db_rcpt {
    const char *addr;           /* normalised */
    const char *domain;         /* sm_addr_domain(addr) */
    const char *notify;         /* its NOTIFY keywords ("success,failure"), "" none */
    const char *orcpt;          /* its ORCPT, decoded, "" none */
} smf_db_rcpt;

#define SMF_IDENT_LEN   32      /* octets of a submission's identity (SHA-256) */

/* One transaction, one statement (outbox_store_quota, sql/011): when the
 * message fits its sender's quota (quota: the defaults, max_messages and
 * max_bytes; sender_quota's override wins), the message row, an outbox row
 * per pulling recipient, an address-book row (owner = sender) per contact.
 * format is how the body is stored: "openpgp" (signed and encrypted). The
 * body is either in the row (body, size octets; spool_name NULL) or in the
 * spool file spool_name (body NULL). The outbox rows keep each recipient's
 * NOTIFY and ORCPT, the message row envid ("" none; sql/016), and the
 * SHA-256 of the message's receipt (SM_RECEIPT_HASH_LEN octets; sql/020).
 * SMF_DB_OVERQUOTA: nothing stored; quota has the sender's use and quota.
 * ident: the submission's identity (smf_ident_end; NULL none); when a
 * message of the sender with that identity was stored within sql/021's
 * window under another id, nothing is stored, SMF_DB_OK, and retry_of
 * (SM_ID_LEN + 1 octets) gets that id; else retry_of is "". */
smf_db_status smf_db_store(const char *id, const char *sender, long long size,
                           const char *spool_name, const unsigned char *body,
                           const char *format, const char *envid,
                           const unsigned char *ident, char *retry_of,
                           const smf_db_rcpt *outbox, size_t noutbox,
                           const smf_db_rcpt *contacts, size_t ncontacts,
                           const unsigned char *receipt_hash, smf_quota *quota, char *why,
                           size_t whylen);

/* The sender's use and quota now (sender_quota_use, sql/011); quota holds
 * the defaults on entry, the figures on return. */
smf_db_status smf_db_quota(const char *sender, smf_quota *quota, char *why, size_t whylen);

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

/* ---- smf_cache.c: recipient domains' verdicts and recipients' keys -- */

/* Start the thread that LISTENs for changes (sql/024) on its own
 * connection to conninfo; until it is connected every lookup misses.
 * 0, or -1 (errno). smf_cache_stop ends it (harmless when not started). */
int smf_cache_start(const char *conninfo);
void smf_cache_stop(void);

/* Forget every answer: a reload, whose resolver, dnssec_require or keyring
 * may give other ones. */
void smf_cache_forget_all(void);

/* Take a mark before reading the database, and hand it to the put: an
 * answer read before a change that was heard since is not kept. */
unsigned long smf_cache_mark(void);

/* 1 with the kept answer (and sm_discover's why with it), 0 on a miss. */
int smf_cache_domain_get(const char *domain, sm_peer_info *info, char *why, size_t whylen);
void smf_cache_domain_put(const char *domain, const sm_peer_info *info, const char *why,
                          unsigned long mark);
int smf_cache_rcpt_key_get(const char *addr, char *status, size_t statuslen, char *fpr,
                           size_t fprlen);
void smf_cache_rcpt_key_put(const char *addr, const char *status, const char *fpr,
                            unsigned long mark);

/* ---- smf_net.c: UDP stubs ------------------------------------------ */

/* After the outbox commit: tell a recipient domain that publishes udp=
 * (udp, as discovery gave it) in its _stubmail record that mail from sender
 * waits for its recipients to (docs/PROTOCOL.md "UDP stubs"): one datagram
 * (more if to does not fit in 512 octets). Fire and forget: never blocks on
 * the network, never fails the message; what was not sent is logged (qid
 * for the log line). */
void smf_stub_send(const char *qid, const char *sender, const char *domain, const char *udp,
                   const char *const *to, size_t nto);

/* After the commit: a stub to each pulling domain of msg that publishes
 * udp=, naming its recipients among outbox[0..n), what was stored (msg is
 * smf_ctx.c's, defined below). */
struct smf_msg;
void smf_stubs(const char *qid, const struct smf_msg *msg, const smf_db_rcpt *outbox,
               size_t n);

/* ---- smf_quota.c: the sender's outbox quota ------------------------------ */

/* The SIZE= ESMTP parameter of MAIL FROM (argv as xxfi_envfrom gets it:
 * the sender, then the parameters): 1 with *size, 0 when there is none or
 * it is not a number. */
int smf_quota_size_arg(char *const *argv, long long *size);
/* 1 when a message of size octets takes the sender over q; whole_message:
 * it also counts as one more message (at MAIL FROM it may yet go by SMTP
 * only, and SIZE= speaks for the octets alone). */
int smf_quota_over(const smf_quota *q, long long size, int whole_message);
/* n octets for people: "512 bytes", "1 MiB", "1.2 MiB". */
void smf_quota_human(long long n, char *out, size_t outlen);
/* The refusal: "SENDER has 9 messages, 1.2 MiB waiting to be retrieved;
 * the quota is 10 messages, 1 MiB; this message is 300 KiB" (a limit that
 * is 0 is left out). */
void smf_quota_text(const char *sender, const smf_quota *q, long long size, char *out,
                    size_t outlen);

/* ---- smf_dsn.c: NOTIFY, ORCPT, ENVID (RFC 3461) ------------------------- */

#define SMF_DSN_ORCPT_MAX   500     /* RFC 3461 4.2 */
#define SMF_DSN_ENVID_MAX   100     /* RFC 3461 4.4 */

typedef struct smf_dsn_rcpt {
    int has_notify, has_orcpt;  /* the parameter was given (well formed or not) */
    char notify[32];            /* known keywords, lowercase, in the order
                                   success,failure,delay; or "never"; "" none */
    char orcpt[SMF_DSN_ORCPT_MAX + 1];  /* "rfc822;bob@b.example" decoded, "" none */
} smf_dsn_rcpt;

/* The NOTIFY and ORCPT parameters of RCPT TO (argv as xxfi_envrcpt gets it:
 * the recipient, then the parameters). What is not well formed is left out
 * (as if not given: unknown NOTIFY keywords alone; NEVER with others, bad
 * xtext, control characters: the whole parameter) and said in why ("" when
 * nothing was). Never fails. */
void smf_dsn_rcpt_args(char *const *argv, smf_dsn_rcpt *out, char *why, size_t whylen);
/* ENVID of MAIL FROM, decoded, into envid ("" none or not well formed:
 * why says so). */
void smf_dsn_envid_arg(char *const *argv, char *envid, size_t len, char *why, size_t whylen);

/* ---- smf_conf.c: the settings ---------------------------------------- */

/* The configuration keys' values (man/stubmail-milter.8, CONFIGURATION),
 * filled and checked by smf_conf_load and read-only afterwards (but refs):
 * a reload makes a new one (smf_reload.c). */
typedef struct smf_settings {
    char *socket;
    char *database;
    char *spool_dir;
    char *originating_daemon;
    char *trusted_networks;
    long db_connections;
    long long inline_max;       /* largest sealed body stored in its row */
    long quota_messages;        /* default outbox quota of a sender (0: none) */
    long long quota_bytes;
    long expire_after;          /* seconds until unretrieved mail expires */
    char *resolver;
    int resolver_trusted;       /* believe its AD bit even off loopback */
    char *dnssec_require;       /* none, all or domains (sm_dnssec.h) */
    sm_dns_conf dns;            /* the three above, for discovery */
    char *gnupg_home;
    char *domain_key;
    char *ca_file;
    int allow_http;
    long key_timeout;
    int recipient_keys;
    long recipient_key_timeout;
    char *log_facility;         /* syslog facility name (sm_log_facility_parse) */
    char *log_level;            /* least severe level logged */
    int log_facility_value, log_level_value;    /* the two, parsed */
    smf_netlist trusted;        /* trusted_networks, parsed */
    sm_seal *seal;              /* the in-process OpenPGP engine over
                                   gnupg_home's keys (sm_seal.h), smf_conf_seal */
    unsigned long reload;       /* 0: the start's; n: made by the nth reload */
    atomic_long refs;           /* smf_reload.c: in use, and by how many connections */
} smf_settings;

/* Load path into set (zeroed first) with every check of -n; with
 * probe_secret our domain key must also sign (starts gpg-agent). 0, or -1
 * with err naming the file, the line and the key ("FILE:LINE: KEY: why";
 * "FILE: KEY (default): why" for a default). Either way smf_conf_free
 * frees what it holds. */
int smf_conf_load(smf_settings *set, const char *path, int probe_secret, char *err,
                  size_t errlen);
/* The seal (set->seal) over set's gnupg_home and domain_key: 0, or -1 with
 * err. */
int smf_conf_seal(smf_settings *set, char *err, size_t errlen);
/* What set holds (not set itself). Harmless on NULL. */
void smf_conf_free(smf_settings *set);
/* The key table for -h: "  NAME  HELP (default: D)" a line. */
void smf_conf_print_keys(FILE *fp);
/* A reload: each key that only a restart applies (socket, database,
 * db_connections, expire_after) and that next changes is logged as ignored
 * by name (path: the file) and set back in next to now's value. 0, or -1
 * with err (out of memory). */
int smf_conf_keep_restart_only(smf_settings *next, const smf_settings *now, const char *path,
                               char *err, size_t errlen);
/* The names of the keys whose values differ, "a, b" into out ("" none). */
void smf_conf_changed(const smf_settings *a, const smf_settings *b, char *out, size_t outlen);

/* ---- smf_reload.c: the settings in use, and SIGUSR1 ------------------- */

/* Block SIGUSR1 in the calling thread, and so in every thread made after
 * it (libmilter's too): call in main() before any thread is made, or the
 * signal's default action would end the milter. */
int smf_reload_block_signal(void);
/* first (malloc'd, sealed) becomes the settings in use, and this file's to
 * free, even on failure; a thread of our own waits for SIGUSR1 and then
 * reloads path (smf_reload). 0, or -1 (errno). smf_reload_stop ends the
 * thread and lets go of the settings (harmless when not started). */
int smf_reload_start(smf_settings *first, const char *path);
void smf_reload_stop(void);
/* Load the file again, as -n checks it, and make it the settings that new
 * connections hold; a file that does not load is refused with its error
 * and the settings in use stay. 0 applied, -1 refused; logged either way. */
int smf_reload(void);
/* The settings in use, held until smf_settings_release: a connection's,
 * from its first step to its close. NULL before smf_reload_start. */
const smf_settings *smf_settings_hold(void);
/* Let go; the last one out frees settings a reload replaced. Harmless on
 * NULL. */
void smf_settings_release(const smf_settings *set);

/* ---- smf_ctx.c: per-connection and per-message state ------------------ */

typedef struct smf_rcpt {
    char *raw;                  /* as received, with <>: what smfi_delrcpt needs */
    char *addr;                 /* normalised; NULL if not a plain address */
    int pulling;
    char keyfpr[SM_PGP_FPR_MAX + 1];    /* its own key (WKD), "" if none */
    char notify[32];            /* NOTIFY= as smf_dsn_rcpt keeps it, "" none */
    char *orcpt;                /* ORCPT= decoded; NULL if none */
} smf_rcpt;

/* The seal of a message while it arrives (smf_stream.c). */
typedef struct smf_stream smf_stream;

#define SMF_QID_MAX 63              /* the MTA's queue id, as long as we keep it */

/* A recipient domain of the message: discovered once per message. */
typedef struct smf_domain {
    char name[SM_DOMAIN_MAX + 1];
    int pulling;
    char outbox[SM_TXT_URL_MAX + 1];    /* where its key is, when pulling */
    char fpr[SM_TXT_FPR_MAX + 1];       /* its domain key, when pulling */
    char fpr_alt[SM_TXT_FPR_MAX + 1];   /* its record's fpr-alt (a key
                                         * rotation), "" if none */
    char udp[SM_TXT_UDP_MAX + 1];       /* its published udp=, "" if none */
} smf_domain;

typedef struct smf_msg {
    char sender[SM_ADDR_MAX + 1];   /* normalised envelope sender */
    char envid[SMF_DSN_ENVID_MAX + 1];  /* ENVID= decoded, "" none */
    smf_rcpt *rcpts;
    size_t nrcpts, cap, npulling;
    smf_domain *domains;
    size_t ndomains, domcap;
    int learned;                /* address book done (push-only mail) */
    int auto_submitted;         /* Auto-Submitted other than "no": learn nothing */
    int saw_eoh;
    const smf_settings *set;    /* its connection's (held there): every step and
                                   the stream's thread read these */
    char qid[SMF_QID_MAX + 1];  /* the MTA's queue id, for the stream's log lines */
    char *buf;                  /* the message while it fits, else the write
                                   buffer in front of stream */
    size_t buflen;
    smf_stream *stream;         /* the seal running while the message arrives,
                                   once it outgrew buf; NULL before and after */
    char spool_why[768];        /* why the last smf_spool_* call failed */
    int keys_ready;             /* every pulling domain's key is in gnupg_home */
    char id[SM_ID_LEN + 1];     /* the stored message's id, once sealed */
    char receipt[SM_RECEIPT_LEN + 1];   /* sealed inside the body, once sealed:
                                           an ack proves it read the body */
    unsigned char receipt_hash[SM_RECEIPT_HASH_LEN];    /* what the row keeps */
    long long size;             /* the stored (sealed) body's length */
    unsigned char *inline_body; /* the sealed body when it goes into the row
                                   (at most inline_max octets), else NULL */
    int sealed_open;            /* like spool_open, for sealed */
    sm_spool_file sealed;       /* the sealed body's spool file, when it
                                   is not inline (written by the stream's
                                   thread while there is one) */
    int carried;                /* a step without a reply failed (smf_callbacks.c):
                                   the rest is not kept, end of message refuses it */
    int carried_what;           /* its failure kind (smf_callbacks.c) */
    char carried_why[512];      /* and its reason, as the log line gives it */
    EVP_MD_CTX *ident;          /* the identity's digest under way (smf_ident.c) */
    int ident_broken;           /* it could not be made, or is finished */
    int ident_msgid;            /* a Message-ID header came */
    int ident_body;             /* the body began */
} smf_msg;

typedef struct smf_conn {
    char client[INET6_ADDRSTRLEN];
    int originating;            /* {daemon_name} == originating_daemon */
    int trusted;                /* client inside trusted_networks */
    int local_stand_in;         /* localhost[127.0.0.1]: how Postfix presents
                                   mail that came without SMTP (sendmail(1)) */
    int can_delrcpt;            /* the MTA lets us remove recipients */
    int leadspc;                /* header values keep their leading space */
    const smf_settings *set;    /* held from the first step to the close */
    smf_msg *msg;
} smf_conn;

/* The connection's context (smfi_getpriv), made on first use with the
 * settings in use then (smf_settings_hold); NULL on ENOMEM. smf_conn_get:
 * NULL when there is none. */
smf_conn *smf_conn_new(SMFICTX *ctx);
smf_conn *smf_conn_get(SMFICTX *ctx);
/* A new message from sender (normalised) on the connection, under its
 * settings, replacing none (call smf_msg_free first); NULL on ENOMEM. */
smf_msg *smf_msg_new(SMFICTX *ctx, const char *sender);
/* The current message, or NULL (none, or mail we do not divert). */
smf_msg *smf_msg_get(SMFICTX *ctx);
/* Forget the current message; a seal still running is ended and waited
 * for, and a spool file not yet handed to the database is removed.
 * Harmless when there is none. */
void smf_msg_free(SMFICTX *ctx);
/* Forget the connection and its message. */
void smf_conn_free(SMFICTX *ctx);
/* The MTA's queue id ({i}), or "NOQUEUE": first word of every log line. */
const char *smf_qid(SMFICTX *ctx);

/* The message as received, in memory while it fits a buffer of its own
 * (smf_spool_open makes it, and keeps the queue id qid for a stream),
 * sealed as it goes on arriving once it outgrows it (smf_stream.c:
 * msg->stream then): no plaintext of it is written to disk. Before the seal
 * of end of message: smf_spool_flush, which hands the rest of a streamed
 * message to its seal and leaves a message in memory where it is. Each is
 * 0, or -1 with the reason in msg->spool_why. */
int smf_spool_open(smf_msg *msg, const char *qid);
int smf_spool_write(smf_msg *msg, const void *p, size_t len);
int smf_spool_flush(smf_msg *msg);
/* One header, "Name:value\r\n" exactly as received (leadspc: the MTA kept
 * the space after the colon). */
int smf_spool_header(smf_msg *msg, int leadspc, const char *name, const char *value);

/* The recipients with a normalised address; pulling_only selects the outbox
 * rows. malloc'd, pointing into msg (NULL on ENOMEM). */
smf_db_rcpt *smf_rcpt_list(const smf_msg *msg, int pulling_only, size_t *n);
/* "a@x,b@y" of the pulling recipients for the log, cut short with ",...". */
void smf_pulling_text(const smf_msg *msg, char *out, size_t outlen);

/* ---- smf_ident.c: a submission's identity (sql/021) --------------------- */

/* Each header and body chunk as the MTA hands it over, into the digest
 * (Received headers left out: an MTA may write one anew at each attempt).
 * Never fail the message: a digest that cannot be made leaves it without
 * an identity. */
void smf_ident_header(smf_msg *msg, const char *name, const char *value);
void smf_ident_body(smf_msg *msg, const void *p, size_t len);
/* The identity, over what came and the envelope (sender, recipients as
 * given): 0, or -1 when the message has none (no Message-ID, or the digest
 * failed). Call once, at end of message. */
int smf_ident_end(smf_msg *msg, unsigned char out[SMF_IDENT_LEN]);
/* Forget the digest (smf_msg_free). */
void smf_ident_free(smf_msg *msg);

/* ---- smf_seal.c: signed by us, encrypted to the pulling domains -------- */

#define SMF_SEAL_KEYS_MAX   64      /* recipients sm_seal_encrypt_sign_* take */
#define SMF_SEAL_SLOTS      8       /* messages sealed from their buffer at once;
                                       more wait their turn (a streamed seal
                                       takes no slot: smf_stream.c) */

typedef enum { SMF_SEAL_OK = 0, SMF_SEAL_FAIL = -1 } smf_seal_status;

/* Every pulling domain's key into gnupg_home (sm_keyfetch: fetched from
 * {outbox}/v1/key only when the keyring lacks it). SMF_SEAL_FAIL names the
 * domain whose key cannot be had in *bad, and why. */
smf_seal_status smf_seal_domain_keys(const smf_settings *set, const smf_msg *msg,
                                     const smf_domain **bad, char *why, size_t whylen);

/* Each pulling recipient's own key, where recipient_keys is on and its
 * domain publishes one by WKD (cached in recipient_key), into rcpts[].keyfpr.
 * Never fails the message: what cannot be had is logged (qid). */
void smf_seal_rcpt_keys(const smf_settings *set, const char *qid, smf_msg *msg);

/* The keys a message is encrypted to, into fprs (room for ndomains +
 * nrcpts + 1, NULL-terminated by the caller's calloc): every pulling
 * domain's key once, then the recipients' own keys not already named while
 * fewer than max_keys are named. *ndomain: how many are domain keys;
 * *skipped: recipient keys left out. Returns how many were put in fprs. */
size_t smf_seal_keylist(const smf_msg *msg, const char **fprs, size_t max_keys,
                        size_t *ndomain, size_t *skipped);

/* smf_seal_keylist at SMF_SEAL_KEYS_MAX keys, those left out logged (qid). */
size_t smf_seal_keys(const char *qid, const smf_msg *msg, const char **fprs, size_t *ndomain);

/* The stored form under a new msg->id of a message that stayed in its
 * buffer (a streamed one: smf_stream_finish), signed with our domain key
 * and encrypted to smf_seal_keys's keys. It is sealed into memory, and kept
 * there (msg->inline_body, for its row) when it comes to at most
 * set->inline_max octets; otherwise it goes into msg->sealed, which is
 * committed. msg->size: the sealed length. SMF_SEAL_FAIL with why
 * otherwise (the message context removes what is left when it is freed). */
smf_seal_status smf_seal_body(const smf_settings *set, const char *qid, smf_msg *msg,
                              char *why, size_t whylen);

/* The seal of what arrives on in_fd, to its end, into out_fd: signed by
 * seal's key, encrypted to the n keys of fprs (the first ndom domain keys),
 * with smf_seal_body's second try to the domain keys alone when a
 * recipient key went bad (id, sender and qid for its log lines). For the
 * stream's thread: it touches no message context. */
smf_seal_status smf_seal_stream(sm_seal *seal, const char *qid, const char *id,
                                const char *sender, const char **fprs, size_t n, size_t ndom,
                                const char *literal_name, int in_fd, int out_fd, char *why,
                                size_t whylen);

/* A new receipt for msg (msg->receipt, msg->receipt_hash; made with its
 * id) and the literal data file name that carries it into the seal
 * (namelen SMF_RECEIPT_NAME_MAX). 0, or -1 with why. */
#define SMF_RECEIPT_NAME_MAX (sizeof SM_RECEIPT_NAME_PREFIX + SM_RECEIPT_LEN)
int smf_seal_receipt(smf_msg *msg, char *name, size_t namelen, char *why, size_t whylen);

/* msg->sealed, written, made durable: msg->size its length. 0, or -1 with
 * why. */
int smf_seal_commit(const smf_settings *set, smf_msg *msg, char *why, size_t whylen);

/* ---- smf_stream.c: the seal of a big message while it arrives ------------ */

/* The message outgrew its buffer: seal it from here on as it arrives, under
 * a new msg->id into its spool file msg->sealed, in a thread of its own that
 * librnp's seal (sm_seal_encrypt_sign_stream) runs in, fed through a socket
 * by smf_stream_write. The keys must be ready (the DATA step). 0 with
 * msg->stream, or -1 with why (nothing runs; freeing the message context
 * removes the file). */
int smf_stream_start(smf_msg *msg, char *why, size_t whylen);
/* The next len octets of the message to its seal; waits while the seal is
 * behind. -1 with why when the seal failed (it has ended then). */
int smf_stream_write(smf_msg *msg, const void *p, size_t len, char *why, size_t whylen);
/* End of message: the input ends, the seal is waited for and its file
 * committed (msg->size). 0, or -1 with why; msg->stream is gone either way. */
int smf_stream_finish(smf_msg *msg, char *why, size_t whylen);
/* The message goes (abort, close, a refusal): the input ends here and the
 * thread is waited for, so that the file may be removed. Harmless without a
 * stream. */
void smf_stream_stop(smf_msg *msg);

/* ---- smf_callbacks.c ------------------------------------------------------ */

/* The filter description for smfi_register; the callbacks read the
 * settings their connection holds (smf_conn_new). */
struct smfiDesc *smf_callbacks(void);

#endif
