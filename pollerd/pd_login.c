/* pd_login.c — logging in at a remote outbox: POST /v1/login with a
 * statement signed by our domain key (docs/PROTOCOL.md "Login"), and the
 * bearer token the answer carries, kept in the domain's session for the
 * requests that follow. Every request first asks pd_login_due(); a token
 * that is missing, for another outbox or about to expire means a login
 * first, then the request (d->after_login).
 *
 * Signing blocks the event loop while gpg-agent works: once per token
 * lifetime and domain. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "sm_log.h"
#include "pd.h"


/* ---- the request and its answer --------------------------------------- */

char *pd_login_body(pd_ctx *ctx, const char *server, char *why, size_t whylen)
{
    const pd_conf *c = &ctx->conf;
    char now[SM_TIME_LEN + 1], nonce[SM_NONCE_LEN + 1], statement[SM_LOGIN_STATEMENT_MAX];
    char pgp_why[SM_PGP_WHY_MAX];
    char *sig = NULL, *body = NULL;
    size_t siglen = 0;
    int n;

    if (sm_time_format(time(NULL), now, sizeof(now)) != 0) {
        sm_why(why, whylen, "the clock is not set");
        goto leave;
    }
    if (sm_random_hex(nonce, sizeof(nonce), SM_NONCE_LEN / 2) != 0) {
        sm_why(why, whylen, "no random numbers for the nonce");
        goto leave;
    }
    if ((n = sm_login_statement(server, c->domain, now, nonce, statement,
                                sizeof(statement))) < 0) {
        sm_why(why, whylen, "cannot build the statement for server %s", server);
        goto leave;
    }
    if (sm_pgp_sign_detached(c->gnupg_home, c->domain_key, statement, (size_t)n, &sig, &siglen,
                             pgp_why, sizeof(pgp_why)) != SM_PGP_OK) {
        sm_why(why, whylen, "signing with %s in %s: %s", c->domain_key, c->gnupg_home, pgp_why);
        goto leave;
    }
    if (!(body = sm_login_request_encode(c->domain, server, now, nonce, c->pubkey, sig)))
        sm_why(why, whylen, "out of memory");
leave:
    free(sig);
    return body;
}

/* A token goes into an HTTP header as it came: base64url parts and dots. */
static int token_chars_ok(const char *t)
{
    for (; *t; t++)
        if (!((*t >= 'A' && *t <= 'Z') || (*t >= 'a' && *t <= 'z') || (*t >= '0' && *t <= '9')
              || *t == '-' || *t == '_' || *t == '.'))
            return 0;
    return 1;
}

int pd_login_answer(pd_session *sess, const char *body, size_t len, char *why, size_t whylen)
{
    json_t *root = json_loadb(body, len, 0, NULL), *token, *expires;
    time_t when;
    int rc = -1;

    if (!json_is_object(root)) {
        sm_why(why, whylen, "not a JSON object");
        goto leave;
    }
    token = json_object_get(root, "token");
    expires = json_object_get(root, "expires");
    if (!json_is_string(token) || json_string_length(token) == 0
        || json_string_length(token) > SM_TOKEN_MAX || !token_chars_ok(json_string_value(token))) {
        sm_why(why, whylen, "\"token\" missing, too long or not base64url and dots");
        goto leave;
    }
    if (!json_is_string(expires) || sm_time_parse(json_string_value(expires), &when) != 0) {
        sm_why(why, whylen, "\"expires\" missing or not a time like 2026-11-26T20:04:05Z");
        goto leave;
    }
    if (when <= time(NULL)) {
        sm_why(why, whylen, "the token expired already (%s): are the clocks right?",
            json_string_value(expires));
        goto leave;
    }
    strcpy(sess->token, json_string_value(token));
    sess->token_expires = when;
    rc = 0;
leave:
    json_decref(root);
    return rc;
}

/* ---- the login of a domain -------------------------------------------- */

int pd_login_due(const pd_domain *d)
{
    return pd_session_token_due(d->sess, d->url);
}

int pd_login_start(pd_domain *d, pd_xkind after)
{
    char url[4096], why[512];
    char *body;
    pd_xfer *x = NULL;
    int rc = -1;

    d->sess->token[0] = '\0';
    if (!(body = pd_login_body(d->ctx, d->name, why, sizeof(why)))) {
        sm_err("%s: cannot make the login request: %s; retry next cycle", d->name, why);
        goto leave;
    }
    snprintf(url, sizeof(url), "%s/v1/login", d->url);
    if (!(x = pd_xfer_new(d->ctx, d, NULL, PD_X_LOGIN))
        || pd_xfer_http(x, url, body, PD_SMALL_BODY_MAX) != 0) {
        sm_err("%s: cannot start the login (out of memory?)", d->name);
        pd_xfer_free(x);
        goto leave;
    }
    if (pd_domain_start(d, x) != 0)
        goto leave;
    d->after_login = after;
    sm_debug("%s: logging in at %s", d->name, url);
    rc = 0;
leave:
    free(body);
    return rc;
}

pd_next pd_login_done(pd_domain *d, const pd_xfer *x)
{
    const char *body = x->body.data ? x->body.data : "";
    char why[512];

    if (x->result != CURLE_OK || x->status != 200) {
        pd_xfer_describe(x, why, sizeof(why));
        sm_err("%s: login at %s/v1/login failed: %s; retry next cycle", d->name, d->url, why);
        return PD_NEXT_GIVE_UP;
    }
    if (pd_login_answer(d->sess, body, x->body.len, why, sizeof(why)) != 0) {
        sm_err("%s: login answer refused: %s; retry next cycle", d->name, why);
        return PD_NEXT_GIVE_UP;
    }
    pd_udp_login_answer(d->sess, body, x->body.len);
    if (strcmp(d->sess->url, d->url) != 0) {
        /* another outbox: what the old one confirmed says nothing here */
        pd_session_forget(d->sess);
        d->sess->legacy = 0;
    }
    snprintf(d->sess->url, sizeof(d->sess->url), "%s", d->url);
    sm_info("%s: logged in, token good for %lds", d->name,
            (long)(d->sess->token_expires - time(NULL)));
    return PD_NEXT_RESUME;
}
