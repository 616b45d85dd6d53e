/* smf_callbacks — stubmail-milter's libmilter callbacks, one SMTP step
 * each, and the failure policy that turns what went wrong into the answer.
 *
 * Outbound mail (submission listener, authenticated client, or a client in
 * trusted_networks) with a non-empty sender gets a message context at MAIL
 * FROM; everything else is accepted there and not looked at again. RCPT
 * decides each recipient's domain once per message (sm_discover). DATA
 * learns push-only mail and steps aside, or makes the message's buffer
 * and makes sure of the keys (smf_seal.c); headers and body go into the
 * buffer (smf_ctx.c), a big message on into its seal, made while it
 * arrives (smf_stream.c), with no reply per step (SMFIP_NR_*: a failure
 * there is carried to end of message and answered there); end of message
 * seals (or ends the seal of a big one), stores the rows in one
 * transaction (smf_db.c), and only then removes the pulling recipients
 * (smfi_delrcpt) and sends the UDP stubs (smf_net.c). A message that a
 * client sends again after a 4xx that came past the commit (the milter
 * died before its reply) is known by its identity (smf_ident.c, sql/021)
 * and answered as stored: the earlier copy stands.
 *
 * Every callback reads the settings its connection holds (conn->set, and
 * msg->set, the same): a reload (SIGUSR1, smf_reload.c) while a message is
 * under way changes nothing for it.
 *
 * The sender's outbox quota (smf_quota.c, sql/011) is checked where the
 * message is stored, in the store's own statement; a client that announced
 * SIZE= is refused at MAIL FROM already when that size alone would go over. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sm_log.h"
#include "smf.h"

/* ---- the failure policy ------------------------------------------------- */

/* What went wrong. Every kind but the quota is a temporary failure (the
 * MTA keeps the message and retries, nothing is lost); a sender over the
 * quota is refused for good, since a retry would find the same outbox
 * until the receivers fetch. The table says how each is answered, and how
 * loud its log line is: a refusal by policy is not the milter's error. */
typedef enum {
    SMF_FAIL_DB,        /* the database cannot answer or store */
    SMF_FAIL_STORE,     /* spool, gpg, or a step after the commit */
    SMF_FAIL_NOMEM,
    SMF_FAIL_DNS,       /* DNS cannot say whether a domain pulls */
    SMF_FAIL_KEY,       /* a recipient domain's key cannot be had */
    SMF_FAIL_QUOTA      /* the sender's outbox quota would be exceeded */
} smf_failure;

static const struct {
    sfsistat action;
    const char *code, *dsn;
    const char *reply;  /* NULL: the caller words it (it names the domain) */
    int prio;           /* of the log line */
} smf_policy[] = {
    [SMF_FAIL_DB]    = { SMFIS_TEMPFAIL, "451", "4.3.0",
                         "stubmail: database unavailable, try again later", LOG_ERR },
    [SMF_FAIL_STORE] = { SMFIS_TEMPFAIL, "451", "4.3.0",
                         "stubmail: cannot store message, try again later", LOG_ERR },
    [SMF_FAIL_NOMEM] = { SMFIS_TEMPFAIL, "451", "4.3.0",
                         "stubmail: out of memory, try again later", LOG_ERR },
    [SMF_FAIL_DNS]   = { SMFIS_TEMPFAIL, "451", "4.4.3", NULL, LOG_ERR },
    [SMF_FAIL_KEY]   = { SMFIS_TEMPFAIL, "451", "4.7.5", NULL, LOG_ERR },
    [SMF_FAIL_QUOTA] = { SMFIS_REJECT, "552", "5.2.2", NULL, LOG_NOTICE },
};

/* Reply text for smfi_setreply: printable ASCII only ("%" would be taken
 * as a format, CR or LF would make the call fail), at most SMF_REPLY_MAX. */
#define SMF_REPLY_MAX 400

/* The one place a failure becomes an SMTP answer: a log line that says
 * which message (and recipient) and why, the kind's reply (or reply, when
 * given), and its SMFIS_* action. rcpt NULL: the whole message fails and
 * its context is freed; else that recipient only, the message goes on. */
static sfsistat smf_fail(SMFICTX *ctx, smf_failure what, const char *rcpt, const char *reply,
                         const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static sfsistat smf_fail(SMFICTX *ctx, smf_failure what, const char *rcpt, const char *reply,
                         const char *fmt, ...)
{
    smf_msg *msg = smf_msg_get(ctx);
    char why[1024], text[SMF_REPLY_MAX + 1], *p;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    sm_log(smf_policy[what].prio, "%s: from=<%s>%s%s: %s; answered %s %s", smf_qid(ctx),
           msg ? msg->sender : "?", rcpt ? " to=" : "", rcpt ? rcpt : "", why,
           smf_policy[what].code, smf_policy[what].dsn);
    snprintf(text, sizeof text, "%s", reply ? reply : smf_policy[what].reply);
    for (p = text; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '%')
            *p = '?';
    smfi_setreply(ctx, (char *)smf_policy[what].code, (char *)smf_policy[what].dsn, text);
    if (rcpt == NULL)
        smf_msg_free(ctx);
    return smf_policy[what].action;
}

/* The steps that never refuse anything on their own: connect (its context
 * was made at negotiation), each header, end of header, each body chunk.
 * They are answered by no reply (SMFIS_NOREPLY): a 1 KiB message takes four
 * round trips instead of twelve. libmilter offers these steps whatever the
 * MTA (protocol 6: Postfix 2.6 and later, Sendmail 8.14) and answers
 * continue for us to an MTA that wants a reply. MAIL, RCPT and DATA keep
 * their replies: they refuse, and DATA steps aside for push-only mail. */
#define SMF_NOREPLY_STEPS (SMFIP_NR_CONN | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY)

/* A step of SMF_NOREPLY_STEPS failed for the whole message. Having no
 * reply, it cannot refuse: the failure is kept in the message (the first
 * one: nothing after it is kept), and smf_eom refuses the message with the
 * reply and the log line smf_fail would have given here. */
static sfsistat smf_step_failed(SMFICTX *ctx, smf_failure what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static sfsistat smf_step_failed(SMFICTX *ctx, smf_failure what, const char *fmt, ...)
{
    smf_msg *msg = smf_msg_get(ctx);
    va_list ap;

    if (msg->carried)
        return SMFIS_NOREPLY;
    msg->carried = 1;
    msg->carried_what = (int)what;
    va_start(ap, fmt);
    vsnprintf(msg->carried_why, sizeof msg->carried_why, fmt, ap);
    va_end(ap);
    return SMFIS_NOREPLY;
}

/* ---- helpers of the callbacks ------------------------------------------- */

/* Push-only outbound mail: learn, and only warn when that fails. */
static void smf_learn(SMFICTX *ctx, smf_msg *msg)
{
    smf_db_rcpt *contacts;
    char why[512];
    size_t n;

    if (msg->learned)
        return;
    msg->learned = 1;
    if ((contacts = smf_rcpt_list(msg, 0, &n)) == NULL) {
        sm_warn("%s: from=<%s>: address book not updated: out of memory", smf_qid(ctx),
                msg->sender);
        return;
    }
    if (n > 0 && smf_db_learn(msg->sender, contacts, n, why, sizeof why) != SMF_DB_OK)
        sm_warn("%s: from=<%s>: address book not updated: %s", smf_qid(ctx), msg->sender, why);
    free(contacts);
}

/* A new entry at the end of msg->domains, or NULL on ENOMEM. */
static smf_domain *smf_domain_add(smf_msg *msg)
{
    smf_domain *grown;
    size_t n;

    if (msg->ndomains == msg->domcap) {
        n = msg->domcap ? 2 * msg->domcap : 4;
        if ((grown = realloc(msg->domains, n * sizeof *grown)) == NULL)
            return NULL;
        msg->domains = grown;
        msg->domcap = n;
    }
    return &msg->domains[msg->ndomains];
}

/* Is domain pulled or pushed? Decided once per message: an earlier
 * recipient's verdict, else sm_discover (the peer row, then _stubmail through
 * dns_cache) appended to msg->domains. Returns SMFIS_CONTINUE with *pulling,
 * or this recipient's temporary failure: nothing is decided while DNS or
 * the database cannot answer. */
static sfsistat smf_domain_verdict(SMFICTX *ctx, smf_msg *msg, const char *rcpt,
                                   const char *domain, int *pulling)
{
    char why[768], reply[sizeof why + SM_DOMAIN_MAX + 80];
    const char *reason;
    sm_peer_info info;
    smf_domain *d;
    smf_db_status st;
    size_t i, n;

    for (i = 0; i < msg->ndomains; i++) {
        if (strcmp(msg->domains[i].name, domain) == 0) {
            *pulling = msg->domains[i].pulling;
            return SMFIS_CONTINUE;
        }
    }
    if ((d = smf_domain_add(msg)) == NULL)
        return smf_fail(ctx, SMF_FAIL_NOMEM, rcpt, NULL, "out of memory");

    st = smf_db_discover(&msg->set->dns, domain, &info, why, sizeof why);
    if (st == SMF_DB_DNSFAIL) {
        /* "b.example: DNS temporary failure: ..." without the repeated name */
        n = strlen(domain);
        reason = strncmp(why, domain, n) == 0 && strncmp(why + n, ": ", 2) == 0 ? why + n + 2 : why;
        snprintf(reply, sizeof reply, "stubmail: cannot tell whether %s pulls its mail (%s); "
                 "try again later", domain, reason);
        return smf_fail(ctx, SMF_FAIL_DNS, rcpt, reply, "cannot tell whether %s pulls its "
                        "mail: %s", domain, why);
    }
    if (st != SMF_DB_OK)
        return smf_fail(ctx, SMF_FAIL_DB, rcpt, NULL, "%s", why);

    msg->ndomains++;
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", domain);
    d->pulling = info.pulling;
    if (info.pulling && info.fpr[0] == '\0') {
        /* it could never log in to fetch it, nor read it: push instead */
        sm_warn("%s: from=<%s> to=%s: %s pulls its mail (peer table) but no domain key is "
                "known for it (neither peer.fpr nor a _stubmail record: %s); pushed by SMTP",
                smf_qid(ctx), msg->sender, rcpt, domain, why[0] ? why : "none");
        d->pulling = 0;
    } else if (!info.pulling && info.status == SM_DNS_INVALID) {
        sm_warn("%s: from=<%s> to=%s: %s has an invalid _stubmail record (%s); pushed by SMTP",
                smf_qid(ctx), msg->sender, rcpt, domain, why);
    } else if (!info.pulling && info.dnssec_refused) {
        /* the record may be a forgery that would seal the mail to somebody
         * else's key; SMTP is what the domain gets without stubmail */
        sm_warn("%s: from=<%s> to=%s: %s's _stubmail record is not used (%s); pushed by SMTP",
                smf_qid(ctx), msg->sender, rcpt, domain, why);
    }
    if (d->pulling) {
        memcpy(d->outbox, info.outbox, sizeof d->outbox);
        memcpy(d->fpr, info.fpr, sizeof d->fpr);
        memcpy(d->fpr_alt, info.fpr_alt, sizeof d->fpr_alt);
        memcpy(d->udp, info.udp, sizeof d->udp);
    }
    sm_debug("%s: %s: %s (%s%s%s%s)", smf_qid(ctx), domain, d->pulling ? "pulled" : "pushed",
             info.from_peer_table ? "peer table, " : "", sm_dns_status_name(info.status),
             info.validated ? ", DNSSEC-validated" : "", info.fpr[0] ? ", key on record" : "");
    *pulling = d->pulling;
    return SMFIS_CONTINUE;
}

/* Every pulling domain's key, then the recipients' own keys (smf_seal.c).
 * Returns SMFIS_CONTINUE, or ends the message with 451 4.7.5. */
static sfsistat smf_keys_fetch(SMFICTX *ctx, smf_msg *msg)
{
    char why[768], reply[SM_DOMAIN_MAX + 80];
    const smf_domain *bad = NULL;

    if (smf_seal_domain_keys(msg->set, msg, &bad, why, sizeof why) != SMF_SEAL_OK) {
        snprintf(reply, sizeof reply, "stubmail: cannot get the domain key of %s, try again "
                 "later", bad->name);
        return smf_fail(ctx, SMF_FAIL_KEY, NULL, reply, "message not stored: no domain key %s "
                        "of %s: %s", bad->fpr, bad->name, why);
    }
    smf_seal_rcpt_keys(msg->set, smf_qid(ctx), msg);
    msg->keys_ready = 1;
    return SMFIS_CONTINUE;
}

/* The message could not be kept or handed to its seal (msg->spool_why
 * says why): it fails, now (end of message) or at its end (a step without
 * a reply). */
static sfsistat smf_spool_failed(SMFICTX *ctx, smf_msg *msg)
{
    return smf_fail(ctx, SMF_FAIL_STORE, NULL, NULL, "%s", msg->spool_why);
}

static sfsistat smf_spool_lost(SMFICTX *ctx, smf_msg *msg)
{
    return smf_step_failed(ctx, SMF_FAIL_STORE, "%s", msg->spool_why);
}

/* The sender's quota refuses the message (size octets): 552 5.2.2 with
 * the use and the quota; when names the step for the log. */
static sfsistat smf_quota_refuse(SMFICTX *ctx, smf_msg *msg, const smf_quota *q,
                                 long long size, const char *when)
{
    char text[SMF_REPLY_MAX - 10], reply[SMF_REPLY_MAX + 1];

    smf_quota_text(msg->sender, q, size, text, sizeof text);
    snprintf(reply, sizeof reply, "stubmail: %s", text);
    return smf_fail(ctx, SMF_FAIL_QUOTA, NULL, reply, "over quota %s: size=%lld "
                    "waiting=%lld messages, %lld bytes; quota=%lld messages, %lld bytes",
                    when, size, q->messages, q->bytes, q->max_messages, q->max_bytes);
}

/* The quota defaults of the settings the message's connection started
 * with, as the database calls take them. */
static void smf_quota_defaults(const smf_msg *msg, smf_quota *q)
{
    memset(q, 0, sizeof *q);
    q->max_messages = msg->set->quota_messages;
    q->max_bytes = msg->set->quota_bytes;
}

/* MAIL FROM with SIZE=: refused already when that size alone takes the
 * sender over the octets of the quota, before the body is sent. Whether
 * the message is diverted at all is not known yet, so a database that
 * cannot answer leaves the check to the store. */
static sfsistat smf_quota_mailfrom(SMFICTX *ctx, smf_msg *msg, long long size)
{
    char why[512];
    smf_quota q;

    smf_quota_defaults(msg, &q);
    if (smf_db_quota(msg->sender, &q, why, sizeof why) != SMF_DB_OK) {
        sm_warn("%s: from=<%s>: quota not checked at MAIL FROM (end of message will): %s",
                smf_qid(ctx), msg->sender, why);
        return SMFIS_CONTINUE;
    }
    if (smf_quota_over(&q, size, 0))
        return smf_quota_refuse(ctx, msg, &q, size, "at MAIL FROM (SIZE=)");
    return SMFIS_CONTINUE;
}

/* End of message, step 2: the message row, its outbox rows and the learned
 * contacts in one transaction (smf_db_store). Auto-Submitted mail (RFC 3834:
 * auto-replies, notices) teaches the address book nothing: only mail the
 * user wrote says they want answers from its recipients, and may lift an
 * unsubscribe (sql/014). Returns SMFIS_CONTINUE with *outbox (malloc'd)
 * what was stored, or ends the message. retry_of (SM_ID_LEN + 1): the id
 * of the copy stored already when this is a client's retry of it (nothing
 * stored now), else "". */
static sfsistat smf_eom_store(SMFICTX *ctx, smf_msg *msg, smf_db_rcpt **outbox,
                              size_t *noutbox, char *retry_of)
{
    smf_db_rcpt *contacts;
    size_t ncontacts;
    char why[512];
    unsigned char ident[SMF_IDENT_LEN];
    int has_ident;
    smf_db_status st;
    smf_quota q;

    *outbox = smf_rcpt_list(msg, 1, noutbox);
    contacts = smf_rcpt_list(msg, 0, &ncontacts);
    if (*outbox == NULL || contacts == NULL) {
        free(*outbox);
        *outbox = NULL;
        free(contacts);
        return smf_fail(ctx, SMF_FAIL_STORE, NULL, NULL, "out of memory");
    }
    smf_quota_defaults(msg, &q);
    has_ident = smf_ident_end(msg, ident) == 0;
    if (!has_ident && msg->ident_msgid)
        sm_warn("%s: from=<%s>: no identity (its digest failed): were the reply lost, the "
                "client's retry would be stored again", smf_qid(ctx), msg->sender);
    st = smf_db_store(msg->id, msg->sender, msg->size, msg->inline_body ? NULL : msg->id,
                      msg->inline_body, "openpgp", msg->envid, has_ident ? ident : NULL,
                      retry_of, *outbox, *noutbox, contacts,
                      msg->auto_submitted ? 0 : ncontacts, msg->receipt_hash, &q, why,
                      sizeof why);
    free(contacts);
    if (st == SMF_DB_OK)
        return SMFIS_CONTINUE;
    free(*outbox);
    *outbox = NULL;
    if (st == SMF_DB_OVERQUOTA)         /* nothing stored: the sealed body goes */
        return smf_quota_refuse(ctx, msg, &q, msg->size, "at end of message");
    if (st == SMF_DB_UNKNOWN) {
        /* maybe committed: keep the body its row may name; the client's
         * retry finds the copy by its identity */
        msg->sealed_open = 0;
        return smf_fail(ctx, SMF_FAIL_DB, NULL, NULL, "message id %s may or may not be stored: "
                        "%s", msg->id, why);
    }
    return smf_fail(ctx, SMF_FAIL_DB, NULL, NULL, "message not stored: %s", why);
}

/* End of message, step 3, only after the commit: the pulling recipients off
 * the push path. Returns SMFIS_DISCARD when none is left, SMFIS_CONTINUE
 * when others are, or ends the message (the rows taken back) when the MTA
 * will not remove one. */
static sfsistat smf_eom_delrcpts(SMFICTX *ctx, smf_msg *msg)
{
    const char *id = msg->id;
    char why[512];
    size_t i;

    if (msg->npulling == msg->nrcpts)
        return SMFIS_DISCARD;
    for (i = 0; i < msg->nrcpts; i++) {
        if (!msg->rcpts[i].pulling || smfi_delrcpt(ctx, msg->rcpts[i].raw) == MI_SUCCESS)
            continue;
        if (smf_db_unstore(id, why, sizeof why) != SMF_DB_OK) {
            sm_err("%s: message id %s stays in the outbox and will be stored again on retry: "
                   "%s", smf_qid(ctx), id, why);
            msg->sealed_open = 0;       /* its row still names the body */
        }
        return smf_fail(ctx, SMF_FAIL_STORE, NULL, NULL, "cannot remove recipient %s",
                        msg->rcpts[i].raw);
    }
    return SMFIS_CONTINUE;
}

/* ---- the callbacks ----------------------------------------------------------- */

static sfsistat smf_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
                              unsigned long f2, unsigned long f3, unsigned long *pf0,
                              unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
    smf_conn *conn;

    if ((f1 & SMF_NOREPLY_STEPS) != SMF_NOREPLY_STEPS) {
        sm_err("libmilter does not offer to leave connect, headers and body unanswered "
               "(protocol options 0x%lx): libmilter 8.14 or later is needed", f1);
        return SMFIS_REJECT;            /* libmilter drops the connection */
    }
    if ((conn = smf_conn_new(ctx)) == NULL) {
        sm_err("out of memory for a new connection");
        return SMFIS_REJECT;
    }
    *pf0 = f0 & SMFIF_DELRCPT;
    conn->can_delrcpt = (*pf0 & SMFIF_DELRCPT) != 0;
    if (!conn->can_delrcpt)
        sm_warn("the MTA does not let filters remove recipients: "
                "no mail will be diverted on this connection");
    /* *pf1 holds the SMFIP_NO* bits for our NULL callbacks; ask only for
     * what the MTA offers, and no reply where we never refuse. No NODATA:
     * xxfi_data is real (a NULL one stalls Postfix on TCP). */
    *pf1 = (*pf1 & f1) | SMF_NOREPLY_STEPS;
    if (f1 & SMFIP_HDR_LEADSPC) {
        *pf1 |= SMFIP_HDR_LEADSPC;
        conn->leadspc = 1;
    }
    *pf2 = 0;
    *pf3 = 0;
    return SMFIS_CONTINUE;
}

/* Postfix always sends {daemon_name}; Sendmail sends it only while its
 * confMILTER_MACROS_CONNECT names it (its default list does; a site's own
 * list may not). Without it no submission port is outbound, silently:
 * said once a run. */
static void smf_no_daemon_name(const smf_conn *conn)
{
    static atomic_int said;

    if (atomic_exchange(&said, 1))
        return;
    sm_warn("connect from [%s]: the MTA sends no {daemon_name} macro, so no listener counts "
            "as originating_daemon %s (only trusted_networks and authenticated clients are "
            "outbound). Sendmail: name {daemon_name} in confMILTER_MACROS_CONNECT and "
            "{auth_authen} in confMILTER_MACROS_ENVFROM (see the admin guide). Said once.",
            conn->client, conn->set->originating_daemon);
}

static sfsistat smf_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *hostaddr)
{
    smf_conn *conn = smf_conn_new(ctx);
    const char *daemon;

    if (conn == NULL) {
        /* made at negotiation, which drops the connection without it */
        sm_err("out of memory for a new connection");
        return SMFIS_NOREPLY;
    }
    conn->trusted = smf_netlist_match(&conn->set->trusted, hostaddr);
    daemon = smfi_getsymval(ctx, "{daemon_name}");
    conn->originating = daemon != NULL && strcmp(daemon, conn->set->originating_daemon) == 0;
    if (hostaddr && hostaddr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)hostaddr)->sin_addr, conn->client,
                  sizeof conn->client);
    else if (hostaddr && hostaddr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)hostaddr)->sin6_addr, conn->client,
                  sizeof conn->client);
    conn->local_stand_in = hostname && strcmp(hostname, "localhost") == 0
                           && strcmp(conn->client, "127.0.0.1") == 0;
    if (daemon == NULL)
        smf_no_daemon_name(conn);
    sm_debug("connect from %s[%s] daemon=%s%s%s", hostname ? hostname : "?", conn->client,
             daemon ? daemon : "-", conn->originating ? " originating" : "",
             conn->trusted ? " trusted" : "");
    return SMFIS_NOREPLY;
}

/* Mail submitted without SMTP (sendmail(1), through non_smtpd_milters)
 * reaches the milter as from localhost[127.0.0.1], with the {daemon_name}
 * of Postfix's cleanup: unless the admin marked it, it is not outbound and
 * is pushed. Said once a run, so that an admin who narrowed
 * trusted_networks learns why local mail is not pulled. */
static void smf_local_not_outbound(SMFICTX *ctx, const smf_conn *conn, const char *sender)
{
    static atomic_int said;
    const char *daemon = smfi_getsymval(ctx, "{daemon_name}");

    if (atomic_exchange(&said, 1))
        return;
    sm_warn("%s: from=%s: mail from localhost[127.0.0.1], which is how Postfix presents mail "
            "submitted without SMTP (sendmail(1)), is not outbound here: {daemon_name} is %s, "
            "not %s, and 127.0.0.1 is not in trusted_networks, so it is pushed by SMTP. To "
            "pull it, give Postfix's pickup service a cleanup with -o "
            "milter_macro_daemon_name=%s (see the admin guide). Said once.",
            smf_qid(ctx), sender, daemon ? daemon : "(none)", conn->set->originating_daemon,
            conn->set->originating_daemon);
}

static sfsistat smf_envfrom(SMFICTX *ctx, char **argv)
{
    smf_conn *conn = smf_conn_get(ctx);
    const char *auth, *why = NULL, *raw = argv[0];
    char sender[SM_ADDR_MAX + 1], dsnwhy[128];
    long long size;
    smf_msg *msg;
    size_t len;

    smf_msg_free(ctx);                  /* a previous message left over */
    if (conn == NULL)
        return SMFIS_ACCEPT;
    auth = smfi_getsymval(ctx, "{auth_authen}");
    if (!conn->originating && !conn->trusted && !(auth && *auth)) {
        if (conn->local_stand_in)
            smf_local_not_outbound(ctx, conn, argv[0]);
        return SMFIS_ACCEPT;            /* inbound: not ours to divert */
    }

    /* the empty envelope sender (bounces) is never diverted */
    raw += strspn(raw, " \t");
    len = strlen(raw);
    while (len > 0 && (raw[len - 1] == ' ' || raw[len - 1] == '\t'))
        len--;
    if (len == 0 || (len == 2 && raw[0] == '<' && raw[1] == '>'))
        return SMFIS_ACCEPT;
    if (sm_addr_normalize(argv[0], sender, sizeof sender, &why) != 0) {
        sm_info("%s: from=%s: not diverted: sender %s", smf_qid(ctx), argv[0], why);
        return SMFIS_ACCEPT;
    }
    if ((msg = smf_msg_new(ctx, sender)) == NULL)
        return smf_fail(ctx, SMF_FAIL_NOMEM, NULL, NULL, "out of memory for a message from "
                        "<%s>", sender);
    smf_dsn_envid_arg(argv, msg->envid, sizeof msg->envid, dsnwhy, sizeof dsnwhy);
    if (dsnwhy[0])
        sm_warn("%s: from=<%s>: %s", smf_qid(ctx), sender, dsnwhy);
    if (smf_quota_size_arg(argv, &size))
        return smf_quota_mailfrom(ctx, msg, size);
    return SMFIS_CONTINUE;
}

static sfsistat smf_envrcpt(SMFICTX *ctx, char **argv)
{
    smf_conn *conn = smf_conn_get(ctx);
    smf_msg *msg = smf_msg_get(ctx);
    char addr[SM_ADDR_MAX + 1], dsnwhy[256];
    const char *bad = NULL;
    smf_dsn_rcpt dsn;
    smf_rcpt *grown, *r;
    int pulling = 0;
    sfsistat rc;

    if (msg == NULL)
        return SMFIS_CONTINUE;
    if (msg->nrcpts == msg->cap) {
        size_t cap = msg->cap ? 2 * msg->cap : 8;
        if ((grown = realloc(msg->rcpts, cap * sizeof *grown)) == NULL)
            return smf_fail(ctx, SMF_FAIL_NOMEM, argv[0], NULL, "out of memory");
        msg->rcpts = grown;
        msg->cap = cap;
    }
    r = &msg->rcpts[msg->nrcpts];
    memset(r, 0, sizeof *r);
    if (sm_addr_normalize(argv[0], addr, sizeof addr, &bad) != 0)
        /* not a plain address (say <postmaster>): pushed, never pulled */
        sm_debug("%s: to=%s: not divertible: %s", smf_qid(ctx), argv[0], bad);
    /* what the sender wants to hear of it, for stubmail-janitor (kept when
     * the recipient is diverted) */
    smf_dsn_rcpt_args(argv, &dsn, dsnwhy, sizeof dsnwhy);
    snprintf(r->notify, sizeof r->notify, "%s", dsn.notify);
    if ((r->raw = strdup(argv[0])) == NULL
        || (bad == NULL && (r->addr = strdup(addr)) == NULL)
        || (dsn.orcpt[0] && (r->orcpt = strdup(dsn.orcpt)) == NULL)) {
        rc = smf_fail(ctx, SMF_FAIL_NOMEM, argv[0], NULL, "out of memory");
        goto forget;
    }
    /* memory first: a domain in msg->domains always has its recipient */
    if (bad == NULL && conn->can_delrcpt
        && (rc = smf_domain_verdict(ctx, msg, argv[0], sm_addr_domain(addr), &pulling))
           != SMFIS_CONTINUE)
        goto forget;                    /* this recipient only */
    r->pulling = bad == NULL && pulling;
    if (r->pulling && dsnwhy[0])
        sm_warn("%s: from=<%s> to=%s: %s", smf_qid(ctx), msg->sender, argv[0], dsnwhy);
    msg->nrcpts++;
    if (r->pulling)
        msg->npulling++;
    return SMFIS_CONTINUE;
forget:
    free(r->raw);
    free(r->addr);
    free(r->orcpt);
    return rc;
}

static sfsistat smf_data(SMFICTX *ctx)
{
    smf_msg *msg = smf_msg_get(ctx);

    if (msg == NULL)
        return SMFIS_CONTINUE;
    if (msg->npulling == 0) {
        /* push only: learn now and leave the rest of the message alone */
        smf_learn(ctx, msg);
        smf_msg_free(ctx);
        return SMFIS_ACCEPT;
    }
    if (smf_spool_open(msg, smf_qid(ctx)) != 0)
        return smf_fail(ctx, SMF_FAIL_NOMEM, NULL, NULL, "%s", msg->spool_why);
    /* the keys now, before the body comes: a failure costs the client no transfer */
    return smf_keys_fetch(ctx, msg);
}

/* An Auto-Submitted value other than "no" (RFC 3834 section 5: the keyword,
 * then optional parameters or a comment). */
static int smf_auto_submitted(const char *value)
{
    size_t n;

    value += strspn(value, " \t");
    n = strcspn(value, " \t;(");
    return !(n == 2 && strncasecmp(value, "no", 2) == 0);
}

static sfsistat smf_header(SMFICTX *ctx, char *name, char *value)
{
    smf_conn *conn = smf_conn_get(ctx);
    smf_msg *msg = smf_msg_get(ctx);

    if (msg == NULL || msg->npulling == 0 || msg->carried)
        return SMFIS_NOREPLY;
    if (strcasecmp(name, "Auto-Submitted") == 0 && smf_auto_submitted(value))
        msg->auto_submitted = 1;
    if (smf_spool_open(msg, smf_qid(ctx)) != 0
        || smf_spool_header(msg, conn->leadspc, name, value) != 0)
        return smf_spool_lost(ctx, msg);
    smf_ident_header(msg, name, value);
    return SMFIS_NOREPLY;
}

static sfsistat smf_eoh(SMFICTX *ctx)
{
    smf_msg *msg = smf_msg_get(ctx);

    if (msg == NULL || msg->npulling == 0 || msg->carried)
        return SMFIS_NOREPLY;
    msg->saw_eoh = 1;
    if (smf_spool_open(msg, smf_qid(ctx)) != 0
        || smf_spool_write(msg, "\r\n", 2) != 0)
        return smf_spool_lost(ctx, msg);
    return SMFIS_NOREPLY;
}

static sfsistat smf_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
    smf_msg *msg = smf_msg_get(ctx);

    if (msg == NULL || msg->npulling == 0 || msg->carried)
        return SMFIS_NOREPLY;
    if (smf_spool_open(msg, smf_qid(ctx)) != 0
        || smf_spool_write(msg, chunk, len) != 0)
        return smf_spool_lost(ctx, msg);
    smf_ident_body(msg, chunk, len);
    return SMFIS_NOREPLY;
}

static sfsistat smf_eom(SMFICTX *ctx)
{
    smf_msg *msg = smf_msg_get(ctx);
    smf_db_rcpt *outbox = NULL;
    size_t noutbox = 0;
    char why[1024], list[1024], retry_of[SM_ID_LEN + 1];
    sfsistat rc;

    if (msg == NULL)
        return SMFIS_CONTINUE;
    if (msg->npulling == 0) {
        smf_learn(ctx, msg);
        smf_msg_free(ctx);
        return SMFIS_CONTINUE;
    }

    /* 0. a header or body step that had no reply to refuse it with */
    if (msg->carried)
        return smf_fail(ctx, (smf_failure)msg->carried_what, NULL, NULL, "%s",
                        msg->carried_why);
    /* 1. the body, durable: its sealed form */
    if (smf_spool_open(msg, smf_qid(ctx)) != 0
        || (!msg->saw_eoh && smf_spool_write(msg, "\r\n", 2) != 0)
        || smf_spool_flush(msg) != 0)
        return smf_spool_failed(ctx, msg);
    if (msg->stream) {
        /* sealed while it arrived: what is left is to wait for the end */
        if (smf_stream_finish(msg, why, sizeof why) != 0)
            return smf_fail(ctx, SMF_FAIL_STORE, NULL, NULL, "%s", why);
    } else {
        /* an MTA that skipped the DATA step gets its keys fetched here */
        if (!msg->keys_ready && (rc = smf_keys_fetch(ctx, msg)) != SMFIS_CONTINUE)
            return rc;
        if (smf_seal_body(msg->set, smf_qid(ctx), msg, why, sizeof why) != SMF_SEAL_OK)
            return smf_fail(ctx, SMF_FAIL_STORE, NULL, NULL, "%s", why);
    }

    /* 2. the rows, one transaction */
    if ((rc = smf_eom_store(ctx, msg, &outbox, &noutbox, retry_of)) != SMFIS_CONTINUE)
        return rc;

    /* 3. only now: take the pulling recipients off the push path */
    if ((rc = smf_eom_delrcpts(ctx, msg)) != SMFIS_CONTINUE && rc != SMFIS_DISCARD)
        goto leave;
    smf_pulling_text(msg, list, sizeof list);
    if (retry_of[0]) {
        /* this attempt's sealed body goes with the message context */
        sm_log(LOG_NOTICE, "%s: retry of stored id=%s (this attempt's id=%s dropped, the stored copy "
                  "stands) from=<%s> to=%s (%zu of %zu recipients)%s", smf_qid(ctx), retry_of,
                  msg->id, msg->sender, list, msg->npulling, msg->nrcpts,
                  rc == SMFIS_DISCARD ? ", discarded from the push path" : "");
    } else {
        sm_info("%s: diverted id=%s from=<%s> to=%s (%zu of %zu recipients) size=%lld "
                "format=%s body=%s%s", smf_qid(ctx), msg->id, msg->sender, list, msg->npulling,
                msg->nrcpts, msg->size, "openpgp", msg->inline_body ? "row" : "spool",
                rc == SMFIS_DISCARD ? ", discarded from the push path" : "");
        msg->sealed_open = 0;           /* committed: the outbox owns it now */
    }
    /* 4. the hint: recipient domains that publish udp= poll us now */
    smf_stubs(smf_qid(ctx), msg, outbox, noutbox);
    smf_msg_free(ctx);
leave:
    free(outbox);
    return rc;
}

static sfsistat smf_abort(SMFICTX *ctx)
{
    smf_msg_free(ctx);
    return SMFIS_CONTINUE;
}

static sfsistat smf_close(SMFICTX *ctx)
{
    smf_conn_free(ctx);
    return SMFIS_CONTINUE;
}

static struct smfiDesc smf_desc = {
    "stubmail-milter",
    SMFI_VERSION,
    SMFIF_DELRCPT,
    smf_connect,
    NULL,                       /* helo */
    smf_envfrom,
    smf_envrcpt,
    smf_header,
    smf_eoh,
    smf_body,
    smf_eom,
    smf_abort,
    smf_close,
    NULL,                       /* unknown */
    smf_data,
    smf_negotiate
};

struct smfiDesc *smf_callbacks(void)
{
    return &smf_desc;
}
