/* pd_unsub.c — the one-click unsubscribe headers pollerd puts above each
 * message it delivers (RFC 8058 over RFC 2369):
 *
 *   List-Unsubscribe: <URL?u=USER&s=SENDER&k=KEY-ID&m=MAC>
 *   List-Unsubscribe-Post: List-Unsubscribe=One-Click
 *
 * URL is our own ISP's unsubscribe endpoint (mod_stubmail's
 * /unsubscribe), never the sender's: the receiver stops the sender here,
 * whatever the sender does. The MAC (lib/sm_link.h) makes the link good
 * for exactly that (user, sender) pair, so the endpoint needs no row per
 * link. The headers go above the message: a List-Unsubscribe of the
 * sender's own stays as it was, below ours. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "sm_link.h"
#include "pd.h"

/* RFC 5322's limit on a line, CRLF included */
#define PD_LINE_MAX 1000

int pd_unsub_check_conf(pd_conf *c, char *err, size_t errlen)
{
    char id[SM_TOKEN_KEY_ID_MAX + 2], hex[2 * SM_TOKEN_SECRET_MAX + 2], extra[2];
    const char *why = "";
    int n;

    sm_token_keyring_clear(&c->unsub_keys);
    if (!c->unsubscribe_url && !c->unsubscribe_key)
        return 0;
    if (!c->unsubscribe_url || !c->unsubscribe_key) {
        snprintf(err, errlen, "unsubscribe_url and unsubscribe_key go together: set both "
                 "(or neither, and pulled mail carries no List-Unsubscribe)");
        return -1;
    }
    if (strncmp(c->unsubscribe_url, "https://", 8) != 0 || strpbrk(c->unsubscribe_url, " <>\"")) {
        snprintf(err, errlen, "unsubscribe_url: \"%s\" is not an https:// URL (RFC 8058 "
                 "wants HTTPS)", c->unsubscribe_url);
        return -1;
    }
    n = sscanf(c->unsubscribe_key, "%17s %129s %1s", id, hex, extra);
    if (n != 2 || sm_token_keyring_add_hex(&c->unsub_keys, id, hex, &why) != 0) {
        snprintf(err, errlen, "unsubscribe_key: want \"ID HEX\", the key id and 64 to 128 "
                 "hex digits, as in the Apache's StubmailLinkKey%s%s",
                 n == 2 ? ": " : "", n == 2 ? why : "");
        sm_token_keyring_clear(&c->unsub_keys);
        return -1;
    }
    return 0;
}

int pd_signed_link(const pd_conf *c, sm_link_purpose purpose, const char *base,
                   const char *user, const char *sender, char *out, size_t outlen,
                   char *why, size_t whylen)
{
    char mac[SM_LINK_MAC_LEN + 1];
    char *u = NULL, *s = NULL;
    const char *kid = NULL, *mwhy = "";
    int n, rc = -1;

    out[0] = '\0';
    if (sm_link_mac(purpose, &c->unsub_keys, NULL, user, sender, mac, sizeof(mac), &kid,
                    &mwhy) != 0) {
        snprintf(why, whylen, "%s", mwhy);
        goto leave;
    }
    if (!(u = curl_easy_escape(NULL, user, 0)) || !(s = curl_easy_escape(NULL, sender, 0))) {
        snprintf(why, whylen, "out of memory");
        goto leave;
    }
    n = snprintf(out, outlen, "%s%cu=%s&s=%s&k=%s&m=%s", base, strchr(base, '?') ? '&' : '?',
                 u, s, kid, mac);
    if (n < 0 || (size_t)n >= outlen) {
        snprintf(why, whylen, "the link does not fit %zu octets", outlen);
        out[0] = '\0';
        goto leave;
    }
    rc = 0;
leave:
    curl_free(u);
    curl_free(s);
    return rc;
}

int pd_unsub_headers(const pd_conf *c, const char *to, const char *from, char *out,
                     size_t outlen, char *why, size_t whylen)
{
    char link[PD_LINE_MAX], lwhy[200];
    int n;

    out[0] = '\0';
    if (c->unsub_keys.n == 0 || c->unsubscribe_url == NULL)
        return 0;
    if (pd_signed_link(c, SM_LINK_UNSUBSCRIBE, c->unsubscribe_url, to, from, link,
                       sizeof(link), lwhy, sizeof(lwhy)) != 0) {
        snprintf(why, whylen, "no List-Unsubscribe: %s", lwhy);
        return -1;
    }
    n = snprintf(out, outlen, "List-Unsubscribe: <%s>\r\n"
                 "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", link);
    if (n < 0 || (size_t)n >= outlen || strlen("List-Unsubscribe: <>\r\n") + strlen(link)
                                        > PD_LINE_MAX) {
        snprintf(why, whylen, "no List-Unsubscribe: the link would be a line of %zu octets, "
                 "over RFC 5322's %d", strlen("List-Unsubscribe: <>\r\n") + strlen(link),
                 PD_LINE_MAX);
        out[0] = '\0';
        return -1;
    }
    return 0;
}
