/* smf_quota — the sender's outbox quota in words and numbers: the SIZE=
 * that a client announced at MAIL FROM, whether a message goes over a
 * quota, and the text of the refusal. The figures come from the database
 * (smf_db_quota, smf_db_store; sql/011); the answer goes out through the
 * failure policy of smf_callbacks.c. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smf.h"

int smf_quota_size_arg(char *const *argv, long long *size)
{
    const char *v;
    char *end;
    long long n;
    size_t i;

    /* argv[0] is the sender; the ESMTP parameters follow, NULL-terminated */
    for (i = 1; argv[0] != NULL && argv[i] != NULL; i++) {
        if (strncasecmp(argv[i], "SIZE=", 5) != 0)
            continue;
        v = argv[i] + 5;
        if (!isdigit((unsigned char)*v))
            return 0;
        errno = 0;
        n = strtoll(v, &end, 10);
        if (errno != 0 || *end != '\0')
            return 0;
        *size = n;
        return 1;
    }
    return 0;
}

int smf_quota_over(const smf_quota *q, long long size, int whole_message)
{
    if (q->max_bytes > 0 && q->bytes + size > q->max_bytes)
        return 1;
    return whole_message && q->max_messages > 0 && q->messages + 1 > q->max_messages;
}

void smf_quota_human(long long n, char *out, size_t outlen)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
    double v = (double)n;
    size_t u;

    if (n < 1024) {
        snprintf(out, outlen, "%lld byte%s", n, n == 1 ? "" : "s");
        return;
    }
    for (u = 0, v /= 1024; v >= 1024 && u + 1 < sizeof units / sizeof *units; u++)
        v /= 1024;
    /* one decimal, none when it is 0: "1 MiB", "1.2 MiB" */
    if ((long long)(v * 10 + 0.5) % 10 == 0)
        snprintf(out, outlen, "%.0f %s", v, units[u]);
    else
        snprintf(out, outlen, "%.1f %s", v, units[u]);
}

/* "N messages" or "1 message" */
static void messages_text(long long n, char *out, size_t outlen)
{
    snprintf(out, outlen, "%lld message%s", n, n == 1 ? "" : "s");
}

void smf_quota_text(const char *sender, const smf_quota *q, long long size, char *out,
                    size_t outlen)
{
    char msgs[32], bytes[32], max_msgs[32], max_bytes[32], this[32], limits[80];

    messages_text(q->messages, msgs, sizeof msgs);
    smf_quota_human(q->bytes, bytes, sizeof bytes);
    messages_text(q->max_messages, max_msgs, sizeof max_msgs);
    smf_quota_human(q->max_bytes, max_bytes, sizeof max_bytes);
    smf_quota_human(size, this, sizeof this);
    if (q->max_messages > 0 && q->max_bytes > 0)
        snprintf(limits, sizeof limits, "%s, %s", max_msgs, max_bytes);
    else
        snprintf(limits, sizeof limits, "%s", q->max_messages > 0 ? max_msgs : max_bytes);
    snprintf(out, outlen, "%s has %s, %s waiting to be retrieved; the quota is %s; "
             "this message is %s", sender, msgs, bytes, limits, this);
}
