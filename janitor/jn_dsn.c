/* jn_dsn — the delivery status notification of a message (RFC 3464 in an
 * RFC 6522 multipart/report, as Postfix's bounces): a human-readable part,
 * a message/delivery-status part with one block per recipient it is about,
 * and text/rfc822-headers with what the outbox knows of the original
 * message. Four kinds: a message nobody retrieved (Action failed, Status
 * 5.4.7, when it expired; Action delayed, Status 4.4.7, Will-Retry-Until
 * its expiry, for the warning), and what a recipient's ISP acked when the
 * sender asked (RFC 3461): Action delivered, Status 2.0.0, its retrieval
 * time as Last-Attempt-Date; or Action failed with the ISP's reason as
 * Diagnostic-Code, Status the enhanced code in the reason (a refusal by
 * its MTA carries one) or 5.0.0. Original-Recipient and
 * Original-Envelope-Id carry the sender's ORCPT and ENVID. The stored body is sealed to the recipients' keys, so
 * the sender's ISP cannot read the original headers: that part holds the
 * envelope and the outbox id, and says so. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jn.h"

typedef struct jn_buf {
    char *p;
    size_t len, cap;
    int failed;
} jn_buf;

static void put(jn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(jn_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *bigger;

    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        if ((bigger = realloc(b->p, b->cap * 2 + (size_t)n)) == NULL) {
            b->failed = 1;
            return;
        }
        b->p = bigger;
        b->cap = b->cap * 2 + (size_t)n;
    }
}

/* Text from the database into a header field: printable US-ASCII only
 * (the milter and mod_stubmail check what they store; an admin's UPDATE
 * must not make a line break either). */
static void put_clean(jn_buf *b, const char *s)
{
    char c[2] = { 0, 0 };

    for (; *s; s++) {
        c[0] = (*s >= 32 && *s <= 126) ? *s : '?';
        put(b, "%s", c);
    }
}

/* The first RFC 3463 enhanced status code of class 5 in a reason
 * ("refused by b.example: 550 5.1.1 <ghost@b.example>: ..."), else 5.0.0. */
static void status_of(const char *reason, char *out, size_t len)
{
    const char *p;
    int a, b, n;

    for (p = reason; *p; p++)
        if (p[0] == '5' && p[1] == '.' && (p == reason || p[-1] == ' ')
            && sscanf(p, "5.%3d.%3d%n", &a, &b, &n) == 2
            && (p[n] == '\0' || p[n] == ' ') && a >= 0 && b >= 0) {
            snprintf(out, len, "5.%d.%d", a, b);
            return;
        }
    snprintf(out, len, "5.0.0");
}

/* RFC 5322 date-time in UTC */
static void rfc5322_date(time_t t, char *out, size_t len)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* "100 days", "3 hours", "90 seconds": the largest unit that divides */
static void span(long secs, char *out, size_t len)
{
    static const struct { long n; const char *name; } units[] = {
        { 86400, "day" }, { 3600, "hour" }, { 60, "minute" }, { 1, "second" }
    };
    size_t i;

    for (i = 0; i < sizeof units / sizeof units[0] - 1; i++)
        if (secs >= units[i].n && secs % units[i].n == 0)
            break;
    snprintf(out, len, "%ld %s%s", secs / units[i].n, units[i].name,
             secs / units[i].n == 1 ? "" : "s");
}

char *jn_dsn_build(jn_dsn_kind kind, const jn_settings *set, const jn_message *msg,
                   time_t now)
{
    static const char *const subject[] = {
        "Undelivered Mail Returned to Sender", "Delayed Mail (not yet retrieved)",
        "Successful Mail Delivery Report", "Undelivered Mail Returned to Sender"
    };
    static const char *const tag[] = { "expired", "delayed", "delivered", "rejected" };
    const int failed = kind == JN_DSN_FAILED;
    const int acked = kind == JN_DSN_DELIVERED || kind == JN_DSN_REJECTED;
    jn_buf b = { malloc(4096), 0, 4096, 0 };
    char date[64], arrival[64], until[64], waited[64], lifetime[64], boundary[80];
    char when[64], status[32];
    size_t i;

    if (b.p == NULL)
        return NULL;
    rfc5322_date(now, date, sizeof date);
    rfc5322_date(msg->created, arrival, sizeof arrival);
    rfc5322_date(msg->expires, until, sizeof until);
    span((long)(now - msg->created), waited, sizeof waited);
    span((long)(msg->expires - msg->created), lifetime, sizeof lifetime);
    snprintf(boundary, sizeof boundary, "%s.%ld/%s", msg->id, (long)now, set->hostname);

    /* the same Message-ID if a crash makes us send it again: a duplicate
     * is recognisable as one (an ack notice: also the time of its first
     * ack, since a message may get several) */
    put(&b, "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n"
        "To: %s\r\n"
        "Subject: %s\r\n"
        "Date: %s\r\n"
        "Message-ID: <%s.%s", set->hostname, msg->sender, subject[kind], date, msg->id,
        tag[kind]);
    if (acked && msg->nrecipients > 0)
        put(&b, ".%ld", (long)msg->recipients[0].acked);
    put(&b, "@%s>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        "\tboundary=\"%s\"\r\n"
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n", set->hostname, boundary);

    put(&b, "--%s\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is the mail system at host %s.\r\n"
        "\r\n", boundary, set->hostname);
    switch (kind) {
    case JN_DSN_FAILED:
        put(&b, "I'm sorry to have to inform you that your message of\r\n"
            "%s could not be delivered to one or more\r\n"
            "recipients. Their mail system collects mail by pulling it from\r\n"
            "ours, and it did not collect this message within %s.\r\n"
            "The message has been removed; they will not receive it.\r\n",
            arrival, lifetime);
        break;
    case JN_DSN_DELAYED:
        put(&b, "####################################################################\r\n"
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
            "####################################################################\r\n"
            "\r\n"
            "Your message of %s has not yet been\r\n"
            "collected by one or more recipients after %s. Their mail system\r\n"
            "collects mail by pulling it from ours. It stays here for them\r\n"
            "until %s; after that you will be told it failed.\r\n",
            arrival, waited, until);
        break;
    case JN_DSN_DELIVERED:
        put(&b, "Your message of %s was retrieved by\r\n"
            "the mail system of the recipients below, as you asked to be told.\r\n"
            "Their mail system collects mail by pulling it from ours, and\r\n"
            "delivers it to their mailbox itself.\r\n", arrival);
        break;
    case JN_DSN_REJECTED:
        put(&b, "I'm sorry to have to inform you that your message of\r\n"
            "%s could not be delivered to one or more\r\n"
            "recipients. Their mail system collected it from ours and\r\n"
            "refused it, for the reason given below.\r\n", arrival);
        break;
    }
    put(&b, "\r\n");
    for (i = 0; i < msg->nrecipients; i++) {
        const jn_rcpt *r = &msg->recipients[i];

        rfc5322_date(r->acked, when, sizeof when);
        put(&b, "<%s>: ", r->addr);
        if (kind == JN_DSN_DELIVERED)
            put(&b, "retrieved %s", when);
        else if (kind == JN_DSN_REJECTED) {
            put(&b, "refused %s: ", when);
            put_clean(&b, r->reason ? r->reason : "");
        } else
            put(&b, "%s", failed ? "not retrieved before the message expired"
                                 : "not retrieved yet");
        put(&b, "\r\n");
    }
    put(&b, "\r\n");

    put(&b, "--%s\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; %s\r\n", boundary, set->hostname);
    if (msg->envid) {
        put(&b, "Original-Envelope-Id: ");
        put_clean(&b, msg->envid);
        put(&b, "\r\n");
    }
    put(&b, "X-Stubmail-Outbox-Id: %s\r\n"
        "Arrival-Date: %s\r\n", msg->id, arrival);
    for (i = 0; i < msg->nrecipients; i++) {
        const jn_rcpt *r = &msg->recipients[i];

        put(&b, "\r\n");
        if (r->orcpt) {
            put(&b, "Original-Recipient: ");
            put_clean(&b, r->orcpt);
            put(&b, "\r\n");
        }
        put(&b, "Final-Recipient: rfc822; %s\r\n", r->addr);
        switch (kind) {
        case JN_DSN_FAILED:
        case JN_DSN_DELAYED:
            put(&b, "Action: %s\r\n"
                "Status: %s\r\n"
                "Diagnostic-Code: X-Stubmail; %s\r\n",
                failed ? "failed" : "delayed", failed ? "5.4.7" : "4.4.7",
                failed ? "not retrieved from the outbox before it expired"
                       : "not yet retrieved from the outbox");
            if (!failed)
                put(&b, "Will-Retry-Until: %s\r\n", until);
            break;
        case JN_DSN_DELIVERED:
            rfc5322_date(r->acked, when, sizeof when);
            put(&b, "Action: delivered\r\n"
                "Status: 2.0.0\r\n"
                "Diagnostic-Code: X-Stubmail; retrieved from the outbox by the recipient's mail system\r\n"
                "Last-Attempt-Date: %s\r\n", when);
            break;
        case JN_DSN_REJECTED:
            rfc5322_date(r->acked, when, sizeof when);
            status_of(r->reason ? r->reason : "", status, sizeof status);
            put(&b, "Action: failed\r\n"
                "Status: %s\r\n"
                "Diagnostic-Code: X-Stubmail; ", status);
            put_clean(&b, r->reason ? r->reason : "");
            put(&b, "\r\nLast-Attempt-Date: %s\r\n", when);
            break;
        }
    }
    put(&b, "\r\n");

    put(&b, "--%s\r\n"
        "Content-Description: %s Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        "X-Stubmail-Note: the stored message is encrypted to its recipients; these\r\n"
        " are its envelope as the outbox recorded it\r\n"
        "Return-Path: <%s>\r\n"
        "X-Stubmail-Outbox-Id: %s\r\n"
        "Date: %s\r\n",
        boundary, kind == JN_DSN_DELIVERED ? "Delivered" : "Undelivered", msg->sender,
        msg->id, arrival);
    for (i = 0; i < msg->nrecipients; i++)
        put(&b, "X-Original-To: %s\r\n", msg->recipients[i].addr);
    put(&b, "\r\n--%s--\r\n", boundary);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
