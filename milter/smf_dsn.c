/* smf_dsn — the RFC 3461 parameters a sender gives for a diverted
 * recipient: NOTIFY and ORCPT of RCPT TO, ENVID of MAIL FROM. The milter
 * keeps them with the outbox rows (sql/016) so that stubmail-janitor can
 * send the notices the sender asked for once the recipient's ISP acked.
 *
 * Postfix checks their syntax before a milter sees them, but the milter
 * trusts nothing it did not check: what is not well formed is ignored (the
 * recipient then gets what a sender without that parameter gets) and said
 * in *why for the log. A decoded ORCPT or ENVID goes into a notice's
 * header fields, so it must be printable US-ASCII: no line breaks. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "smf.h"

static const struct {
    const char *name;
    unsigned bit;
} notify_keywords[] = {
    /* the canonical order of the stored list */
    { "SUCCESS", 1 }, { "FAILURE", 2 }, { "DELAY", 4 }, { "NEVER", 8 }
};

/* RFC 3461 section 4: xtext, "+" and two upper-case hex digits for what
 * is not a plain character. Decoded into out (len with its NUL); 0, or -1
 * when in is not xtext, decodes to other than printable US-ASCII, or does
 * not fit. */
static int xtext_decode(const char *in, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *hi, *lo;
    size_t n = 0;
    int c;

    for (; *in; in++) {
        c = (unsigned char)*in;
        if (c == '+') {
            if (in[1] == '\0' || in[2] == '\0' || (hi = strchr(hex, in[1])) == NULL
                || (lo = strchr(hex, in[2])) == NULL)
                return -1;
            c = (int)((hi - hex) * 16 + (lo - hex));
            in += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return -1;
        }
        if (c < 32 || c > 126 || n + 1 >= len)
            return -1;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

/* NOTIFY's comma-separated keywords into out ("success,failure", "never");
 * unknown keywords are left out and named in why. "" when nothing known is
 * left, or NEVER comes with another keyword (RFC 3461 4.1 forbids it). */
static void notify_parse(const char *v, char *out, size_t len, char *why, size_t whylen)
{
    unsigned bits = 0;
    size_t i, n, used = 0;
    int bad = 0;

    while (*v) {
        n = strcspn(v, ",");
        for (i = 0; i < sizeof notify_keywords / sizeof notify_keywords[0]; i++)
            if (n == strlen(notify_keywords[i].name)
                && strncasecmp(v, notify_keywords[i].name, n) == 0)
                break;
        if (i < sizeof notify_keywords / sizeof notify_keywords[0])
            bits |= notify_keywords[i].bit;
        else if (!bad++)
            snprintf(why, whylen, "NOTIFY: unknown keyword \"%.*s\" ignored",
                     (int)(n > 40 ? 40 : n), v);
        v += n;
        if (*v == ',')
            v++;
    }
    out[0] = '\0';
    if (bits == 0 && !bad)
        snprintf(why, whylen, "NOTIFY: no keyword, ignored");
    if ((bits & 8) && bits != 8) {
        snprintf(why, whylen, "NOTIFY: NEVER with other keywords, ignored");
        return;
    }
    for (i = 0; i < sizeof notify_keywords / sizeof notify_keywords[0]; i++)
        if (bits & notify_keywords[i].bit)
            used += (size_t)snprintf(out + used, len - used, "%s%s", used ? "," : "",
                                     notify_keywords[i].name);
    for (i = 0; out[i]; i++)
        out[i] = (char)tolower((unsigned char)out[i]);
}

/* ORCPT=addr-type;xtext, decoded: "rfc822;bob@b.example". "" when it is
 * not well formed (why says so). */
static void orcpt_parse(const char *v, char *out, size_t len, char *why, size_t whylen)
{
    size_t n = strcspn(v, ";"), i;

    out[0] = '\0';
    if (v[n] != ';' || n == 0 || n > 40 || n + 2 > len) {
        snprintf(why, whylen, "ORCPT: no address type, ignored");
        return;
    }
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)v[i]) && v[i] != '-') {
            snprintf(why, whylen, "ORCPT: bad address type, ignored");
            return;
        }
    memcpy(out, v, n + 1);
    if (v[n + 1] == '\0' || xtext_decode(v + n + 1, out + n + 1, len - n - 1) != 0) {
        out[0] = '\0';
        snprintf(why, whylen, "ORCPT: not xtext of printable US-ASCII (at most %zu "
                 "characters), ignored", len - 1);
    }
}

/* why2 after what why says already, "; " between */
static void say_also(char *why, size_t whylen, const char *why2)
{
    size_t n = strlen(why);

    if (why2[0])
        snprintf(why + n, whylen - n, "%s%s", n ? "; " : "", why2);
}

void smf_dsn_rcpt_args(char *const *argv, smf_dsn_rcpt *out, char *why, size_t whylen)
{
    char one[128];
    size_t i;

    memset(out, 0, sizeof *out);
    why[0] = '\0';
    /* argv[0] is the recipient; the ESMTP parameters follow. The first of
     * a parameter given twice counts. */
    for (i = 1; argv[0] != NULL && argv[i] != NULL; i++) {
        one[0] = '\0';
        if (strncasecmp(argv[i], "NOTIFY=", 7) == 0 && !out->has_notify) {
            out->has_notify = 1;
            notify_parse(argv[i] + 7, out->notify, sizeof out->notify, one, sizeof one);
        } else if (strncasecmp(argv[i], "ORCPT=", 6) == 0 && !out->has_orcpt) {
            out->has_orcpt = 1;
            orcpt_parse(argv[i] + 6, out->orcpt, sizeof out->orcpt, one, sizeof one);
        }
        say_also(why, whylen, one);
    }
}

void smf_dsn_envid_arg(char *const *argv, char *envid, size_t len, char *why, size_t whylen)
{
    size_t i;

    envid[0] = '\0';
    why[0] = '\0';
    for (i = 1; argv[0] != NULL && argv[i] != NULL; i++) {
        if (strncasecmp(argv[i], "ENVID=", 6) != 0)
            continue;
        if (xtext_decode(argv[i] + 6, envid, len) != 0) {
            envid[0] = '\0';
            snprintf(why, whylen, "ENVID: not xtext of printable US-ASCII (at most %zu "
                     "characters), ignored", len - 1);
        }
        return;
    }
}
