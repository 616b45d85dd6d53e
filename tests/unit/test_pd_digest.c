/* Unit tests: the introductions digest pollerd mails (pd_digest_compose) is
 * RFC 5322 text whose headers nothing of a sender's reaches, whose lines
 * are short CRLF lines, and whose quoted-printable body decodes to the
 * senders and their signed links. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pd.h"
#include "sm_link.h"
#include "tap.h"

#define HEAD "Date: Mon, 07 Dec 2026 00:00:00 +0000\r\n" \
    "From: Mail introductions <postmaster@b.example>\r\nTo: <bob@b.example>\r\n" \
    "Subject: 2 people want to write to you\r\nMessage-ID: <intro-digest.1796601600."

/* Quoted-printable (RFC 2045 6.7) back to text, CRLF as "\n". */
static char *qp_decode(const char *in)
{
    char *out = malloc(strlen(in) + 1), *o = out;

    while (*in) {
        if (in[0] == '=' && in[1] == '\r' && in[2] == '\n') {
            in += 3;
        } else if (in[0] == '=' && in[1] && in[2]) {
            char hex[3] = { in[1], in[2], 0 };
            *o++ = (char)strtol(hex, NULL, 16);
            in += 3;
        } else if (in[0] == '\r' && in[1] == '\n') {
            *o++ = '\n';
            in += 2;
        } else {
            *o++ = *in++;
        }
    }
    *o = '\0';
    return out;
}

/* Every line ends with CRLF and is at most max octets before it. */
static int lines_ok(const char *s, size_t max)
{
    const char *nl;

    for (; *s; s = nl + 1) {
        if (!(nl = strchr(s, '\n')) || nl == s || nl[-1] != '\r'
            || (size_t)(nl - s - 1) > max || memchr(s, '\r', (size_t)(nl - s - 1)))
            return 0;
    }
    return 1;
}

int main(void)
{
    static const char hostile[] = "x=?utf-8?q?bcc=_eve?=&s=carol%40b.example'+/@evil.example";
    const pd_digest_intro in[2] = { { "mallory@a.example", 1 }, { hostile, 3 } };
    unsigned char secret[32];
    char why[256] = "", *mail, *body, *text, mac[SM_LINK_MAC_LEN + 1], want[512];
    const char *kwhy;
    pd_conf c;
    size_t i;

    memset(&c, 0, sizeof(c));
    for (i = 0; i < sizeof(secret); i++)
        secret[i] = (unsigned char)i;
    sm_token_keyring_init(&c.unsub_keys);
    sm_token_keyring_add(&c.unsub_keys, "k1", secret, sizeof(secret), &kwhy);
    c.domain = "b.example";
    c.intro_url = "https://mail.b.example/stubmail/introduction";
    c.intro_digest = 86400;

    mail = pd_digest_compose(&c, "bob@b.example", in, 2, 1796601600, why, sizeof(why));
    ok(mail != NULL, "a digest of two made (%s)", why);
    body = strstr(mail, "\r\n\r\n");
    ok(body != NULL, "headers, an empty line, the body");
    *body = '\0';
    body += 4;
    ok(strncmp(mail, HEAD, strlen(HEAD)) == 0, "the headers begin as they should");
    ok(strstr(mail, "\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
              "Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Transfer-Encoding: quoted-printable") != NULL,
       "auto-generated, one text/plain UTF-8 part, quoted-printable");
    ok(strstr(mail, "evil") == NULL && strstr(mail, "mallory") == NULL,
       "no sender in the headers");
    ok(lines_ok(body, 76), "body lines are CRLF and at most 76 octets");
    text = qp_decode(body);
    ok(strstr(text, "mallory@a.example (1 message)\n") != NULL, "mallory named");
    ok(strstr(text, hostile) != NULL, "the hostile sender shown as it is, in the body");
    ok(strstr(text, "at most one every day") != NULL, "the interval said in words");
    sm_link_mac(SM_LINK_INTRO, &c.unsub_keys, NULL, "bob@b.example", "mallory@a.example", mac,
                sizeof(mac), NULL, &kwhy);
    snprintf(want, sizeof(want), "  Accept:  %s?u=bob%%40b.example&s=mallory%%40a.example"
             "&k=k1&m=%s&do=accept\n  Decline: %s?u=bob%%40b.example&s=mallory%%40a.example"
             "&k=k1&m=%s&do=decline\n", c.intro_url, mac, c.intro_url, mac);
    ok(strstr(text, want) != NULL, "mallory's two links, signed for (bob, mallory)");
    ok(strstr(text, "s=x%3D%3Futf-8%3Fq%3Fbcc%3D_eve%3F%3D%26s%3Dcarol%2540b.example%27%2B"
              "%2F%40evil.example&") != NULL, "the hostile sender percent-encoded in its links");
    free(text);
    free(mail);

    mail = pd_digest_compose(&c, "bob@b.example", in, 1, 1796601600, why, sizeof(why));
    ok(mail && strstr(mail, "Subject: 1 person wants to write to you\r\n"), "one: singular");
    free(mail);
    ok(pd_digest_compose(&c, "Bob@B.example", in, 1, 0, why, sizeof(why)) == NULL,
       "a user not normalized is refused");
    is_str(why, "no digest to <Bob@B.example>: not a normalized address", "and says why");
    ok(pd_digest_compose(&c, "bob@b.example\r\nBcc: x@y.example", in, 1, 0, why,
                         sizeof(why)) == NULL, "a user with a line break is refused");
    ok(pd_digest_compose(&c, "bob@b.example", in, 0, 0, why, sizeof(why)) == NULL,
       "no introductions, no digest");
    sm_token_keyring_clear(&c.unsub_keys);
    return tap_done();
}
