/* jn_dsn — the delivery status notification of a message nobody retrieved
 * (RFC 3464 in an RFC 6522 multipart/report, as Postfix's bounces): a
 * human-readable part, a message/delivery-status part with one block per
 * recipient that did not retrieve it (Action failed, Status 5.4.7, when it
 * expired; Action delayed, Status 4.4.7, Will-Retry-Until its expiry, for
 * the warning), and text/rfc822-headers with what the outbox knows of the
 * original message. The stored body is sealed to the recipients' keys, so
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
    const int failed = kind == JN_DSN_FAILED;
    jn_buf b = { malloc(4096), 0, 4096, 0 };
    char date[64], arrival[64], until[64], waited[64], lifetime[64], boundary[80];
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
     * is recognisable as one */
    put(&b, "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n"
        "To: %s\r\n"
        "Subject: %s\r\n"
        "Date: %s\r\n"
        "Message-ID: <%s.%s@%s>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        "\tboundary=\"%s\"\r\n"
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n",
        set->hostname, msg->sender,
        failed ? "Undelivered Mail Returned to Sender"
               : "Delayed Mail (not yet retrieved)",
        date, msg->id, failed ? "expired" : "delayed", set->hostname, boundary);

    put(&b, "--%s\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is the mail system at host %s.\r\n"
        "\r\n", boundary, set->hostname);
    if (failed)
        put(&b, "I'm sorry to have to inform you that your message of\r\n"
            "%s could not be delivered to one or more\r\n"
            "recipients. Their mail system collects mail by pulling it from\r\n"
            "ours, and it did not collect this message within %s.\r\n"
            "The message has been removed; they will not receive it.\r\n",
            arrival, lifetime);
    else
        put(&b, "####################################################################\r\n"
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
            "####################################################################\r\n"
            "\r\n"
            "Your message of %s has not yet been\r\n"
            "collected by one or more recipients after %s. Their mail system\r\n"
            "collects mail by pulling it from ours. It stays here for them\r\n"
            "until %s; after that you will be told it failed.\r\n",
            arrival, waited, until);
    put(&b, "\r\n");
    for (i = 0; i < msg->nrecipients; i++)
        put(&b, "<%s>: %s\r\n", msg->recipients[i],
            failed ? "not retrieved before the message expired"
                   : "not retrieved yet");
    put(&b, "\r\n");

    put(&b, "--%s\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; %s\r\n"
        "X-Stubmail-Outbox-Id: %s\r\n"
        "Arrival-Date: %s\r\n",
        boundary, set->hostname, msg->id, arrival);
    for (i = 0; i < msg->nrecipients; i++) {
        put(&b, "\r\n"
            "Final-Recipient: rfc822; %s\r\n"
            "Action: %s\r\n"
            "Status: %s\r\n"
            "Diagnostic-Code: X-Stubmail; %s\r\n",
            msg->recipients[i],
            failed ? "failed" : "delayed", failed ? "5.4.7" : "4.4.7",
            failed ? "not retrieved from the outbox before it expired"
                   : "not yet retrieved from the outbox");
        if (!failed)
            put(&b, "Will-Retry-Until: %s\r\n", until);
    }
    put(&b, "\r\n");

    put(&b, "--%s\r\n"
        "Content-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        "X-Stubmail-Note: the stored message is encrypted to its recipients; these\r\n"
        " are its envelope as the outbox recorded it\r\n"
        "Return-Path: <%s>\r\n"
        "X-Stubmail-Outbox-Id: %s\r\n"
        "Date: %s\r\n",
        boundary, msg->sender, msg->id, arrival);
    for (i = 0; i < msg->nrecipients; i++)
        put(&b, "X-Original-To: %s\r\n", msg->recipients[i]);
    put(&b, "\r\n--%s--\r\n", boundary);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
