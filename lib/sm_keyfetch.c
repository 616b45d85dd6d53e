/* sm_keyfetch — a peer's domain key from {outbox}/v1/key into a GnuPG home.
 *
 * The key is trusted only because its fingerprint is the one DNS (or the
 * admin's peer row) names: sm_pgp_import_public refuses any other blob whole.
 * The transport still matters (a forged answer costs a retry, not trust), so
 * it is HTTPS with a verified certificate, no redirects, a size cap and a
 * time limit; plain http only where the admin allowed it and only to a
 * loopback address. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "sm_keyfetch.h"
#include "sm_pgp.h"

#define KEY_URL_MAX      2048

/* fpr's key from {outbox}/v1/key, or with by_fpr from {outbox}/v1/key/{fpr}. */
static int keyfetch(const char *home, const char *outbox_url, const char *fpr, int by_fpr,
                    const sm_https_opts *opts, char *why, size_t whylen)
{
    char url[KEY_URL_MAX], pgp_why[SM_PGP_WHY_MAX];
    char *body = NULL;
    size_t blen = 0;
    long status = 0;
    size_t n;
    int rc = -1, have;

    if (why && whylen)
        why[0] = '\0';
    if (!sm_pgp_fpr_valid(fpr)) {
        sm_why(why, whylen, "not a fingerprint: %.80s", fpr ? fpr : "(null)");
        goto leave;
    }
    if ((have = sm_pgp_have_key(home, fpr, pgp_why, sizeof pgp_why)) == SM_PGP_OK) {
        rc = 0;
        goto leave;
    }
    if (have == SM_PGP_ERROR) {
        sm_why(why, whylen, "looking for key %s: %s", fpr, pgp_why);
        rc = -2;
        goto leave;
    }
    if (sm_url_allowed(outbox_url, opts, why, whylen) != 0)
        goto leave;
    n = strlen(outbox_url);
    while (n > 0 && outbox_url[n - 1] == '/')
        n--;
    if (n + sizeof "/v1/key/" + SM_PGP_FPR_MAX > sizeof url) {
        sm_why(why, whylen, "outbox URL too long");
        goto leave;
    }
    snprintf(url, sizeof url, "%.*s/v1/key%s%s", (int)n, outbox_url, by_fpr ? "/" : "",
             by_fpr ? fpr : "");
    if ((rc = sm_https_get(url, opts, SM_PGP_KEY_MAX, "stubmail-keyfetch", &body, &blen, &status,
                           why, whylen)) != 0)
        goto leave;
    if (status != 200) {
        sm_why(why, whylen, "GET %s: HTTP %ld", url, status);
        rc = status >= 500 || status == 429 ? -2 : -1;
        goto leave;
    }
    rc = sm_pgp_import_public(home, body, blen, fpr, pgp_why, sizeof pgp_why);
    if (rc != SM_PGP_OK) {
        sm_why(why, whylen, "key from %s: %s", url, pgp_why);
        rc = rc == SM_PGP_ERROR ? -2 : -1;
        goto leave;
    }
    rc = 0;
leave:
    free(body);
    return rc;
}

int sm_keyfetch(const char *home, const char *outbox_url, const char *fpr,
                const sm_https_opts *opts, char *why, size_t whylen)
{
    return keyfetch(home, outbox_url, fpr, 0, opts, why, whylen);
}

int sm_keyfetch_by_fpr(const char *home, const char *outbox_url, const char *fpr,
                       const sm_https_opts *opts, char *why, size_t whylen)
{
    return keyfetch(home, outbox_url, fpr, 1, opts, why, whylen);
}
