/* pd_session.c — what stubmail-pollerd keeps about a remote domain from
 * cycle to cycle (pd_session): the bearer token of its outbox, when it may
 * be polled again, the subscription as the outbox last confirmed it, and
 * its UDP poll responder. Sessions live in memory only: after a start,
 * pollerd logs in again and resets the subscription. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sm_log.h"
#include "pd.h"

#define PD_TOKEN_MARGIN 60      /* seconds: log in again this long before expiry */

pd_session *pd_session_get(pd_ctx *ctx, const char *domain)
{
    pd_session *s;

    for (s = ctx->sessions; s; s = s->next)
        if (!strcmp(s->domain, domain))
            return s;
    if (strlen(domain) > SM_DOMAIN_MAX || !(s = calloc(1, sizeof(*s)))) {
        sm_err("%s: out of memory for its session", domain);
        return NULL;
    }
    strcpy(s->domain, domain);
    s->next = ctx->sessions;
    ctx->sessions = s;
    return s;
}

void pd_sessions_free(pd_ctx *ctx)
{
    pd_session *s;

    while ((s = ctx->sessions)) {
        ctx->sessions = s->next;
        free(s->sub_pairs);
        free(s);
    }
}

void pd_session_forget(pd_session *s)
{
    s->sub_known = 0;
    s->etag[0] = '\0';
}

/* A token is dropped PD_TOKEN_MARGIN seconds before it expires, so that a
 * request does not carry one that runs out on the way. */
int pd_session_token_due(const pd_session *s, const char *url)
{
    return !s->token[0] || strcmp(s->url, url) != 0
           || time(NULL) + PD_TOKEN_MARGIN >= s->token_expires;
}
