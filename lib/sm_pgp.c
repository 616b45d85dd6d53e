/* sm_pgp — domain keys through gpgme: initialisation, the context and error
 * helpers the other sm_pgp_*.c files share (sm_pgp_impl.h), and the checks
 * of our own key at start-up. Keys are sm_pgp_key.c, login signatures
 * sm_pgp_msg.c; bodies are sealed and opened in process (sm_seal).
 *
 * Each call opens its own context in the home it is given and releases
 * everything it made on every path; the decisions stubmail adds on top of
 * gpgme are all about whose key counts: only the one whose fingerprint DNS
 * publishes (see sm_pgp.h), or for a recipient's own key one that a
 * caller's rule accepts (sm_wkd). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gpgme.h>

#include "sm_log.h"
#include "sm_addr.h"
#include "sm_pgp.h"
#include "sm_pgp_impl.h"

extern char **environ;

/* gpgme_op_keylist_from_data_start (list a blob without importing it) */
#define GPGME_MIN_VERSION "1.14.0"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc = SM_PGP_ERROR;
static char init_why[128];

static void init_gpgme(void)
{
    const char *loc;

    if (!gpgme_check_version(GPGME_MIN_VERSION)) {
        snprintf(init_why, sizeof init_why, "gpgme %s or later needed, have %s",
                 GPGME_MIN_VERSION, gpgme_check_version(NULL));
        return;
    }
    /* gpg's messages and its idea of the terminal follow the process locale */
    if ((loc = setlocale(LC_CTYPE, NULL)) != NULL)
        gpgme_set_locale(NULL, LC_CTYPE, loc);
    if ((loc = setlocale(LC_MESSAGES, NULL)) != NULL)
        gpgme_set_locale(NULL, LC_MESSAGES, loc);
    if (gpgme_engine_check_version(GPGME_PROTOCOL_OpenPGP) != 0) {
        snprintf(init_why, sizeof init_why, "gpg (the OpenPGP engine) is missing or too old");
        return;
    }
    init_rc = SM_PGP_OK;
}

int sm_pgp_init(void)
{
    if (pthread_once(&init_once, init_gpgme) != 0)
        return SM_PGP_ERROR;
    return init_rc;
}

/* why is empty after a success. */
void pgp_clear(char *why, size_t whylen)
{
    if (why && whylen > 0)
        why[0] = '\0';
}

/* gpgme_get_key says "End of file" for a key that is not there. */
const char *pgp_key_strerror(gpgme_error_t err)
{
    return gpg_err_code(err) == GPG_ERR_EOF ? "not in the keyring" : gpgme_strerror(err);
}

/* Trouble on this machine (retry later) rather than an answer about the
 * input: errno-style errors (I/O, memory), no agent, no usable gpg. */
int pgp_is_local(gpgme_error_t err)
{
    gpg_err_code_t code = gpg_err_code(err);

    if (gpgme_err_code_to_errno(code) != 0)
        return code != GPG_ERR_EPIPE;   /* gpg stopped reading: it refused the input */
    switch (code) {
    case GPG_ERR_NO_AGENT:
    case GPG_ERR_AGENT:
    case GPG_ERR_INV_ENGINE:
    case GPG_ERR_ENGINE_TOO_OLD:
    case GPG_ERR_NOT_OPERATIONAL:
        return 1;
    default:
        return 0;
    }
}

int pgp_fail(char *why, size_t whylen, const char *what, gpgme_error_t err)
{
    sm_why(why, whylen, "%s: %s", what, gpgme_strerror(err));
    return pgp_is_local(err) ? SM_PGP_ERROR : SM_PGP_REJECT;
}

int sm_pgp_fpr_valid(const char *fpr)
{
    size_t n = 0;

    if (!fpr)
        return 0;
    for (; fpr[n]; n++)
        if (!isxdigit((unsigned char)fpr[n]) || n >= SM_PGP_FPR_MAX)
            return 0;
    return n == 40 || n == 64;
}

/* Uppercase copy of a valid fingerprint (gpgme's own spelling). */
int pgp_fpr_norm(const char *in, char out[SM_PGP_FPR_MAX + 1])
{
    size_t i;

    if (!sm_pgp_fpr_valid(in))
        return -1;
    for (i = 0; in[i]; i++)
        out[i] = (char)toupper((unsigned char)in[i]);
    out[i] = '\0';
    return 0;
}

int pgp_fpr_eq(const char *a, const char *b)
{
    return sm_pgp_fpr_valid(a) && sm_pgp_fpr_valid(b) && strcasecmp(a, b) == 0;
}

int pgp_key_usable(gpgme_key_t key)
{
    return key && key->fpr && !key->revoked && !key->expired && !key->disabled && !key->invalid;
}

/* A context in home: OpenPGP, armor as asked, and loopback pinentry so a key
 * that wants a passphrase fails at once instead of waiting for a pinentry
 * nobody will ever see (daemons have no terminal). */
int pgp_ctx_open(const char *home, int armor, gpgme_ctx_t *out, char *why, size_t whylen)
{
    gpgme_ctx_t ctx = NULL;
    gpgme_error_t err;
    int rc = SM_PGP_ERROR;

    *out = NULL;
    if (sm_pgp_init() != SM_PGP_OK) {
        sm_why(why, whylen, "%s", init_why[0] ? init_why : "gpgme initialisation failed");
        goto leave;
    }
    if (!home || !*home) {
        sm_why(why, whylen, "no GnuPG home directory given");
        goto leave;
    }
    if ((err = gpgme_new(&ctx)) != 0) {
        sm_why(why, whylen, "gpgme_new: %s", gpgme_strerror(err));
        goto leave;
    }
    if ((err = gpgme_set_protocol(ctx, GPGME_PROTOCOL_OpenPGP)) != 0
        || (err = gpgme_ctx_set_engine_info(ctx, GPGME_PROTOCOL_OpenPGP, NULL, home)) != 0
        || (err = gpgme_set_pinentry_mode(ctx, GPGME_PINENTRY_MODE_LOOPBACK)) != 0) {
        sm_why(why, whylen, "gpgme context for %s: %s", home, gpgme_strerror(err));
        goto leave;
    }
    gpgme_set_armor(ctx, armor);
    *out = ctx;
    ctx = NULL;
    rc = SM_PGP_OK;
leave:
    if (ctx)
        gpgme_release(ctx);
    return rc;
}

/* Copy a gpgme memory data object into a NUL-terminated malloc'd string and
 * release it. */
int pgp_take_mem(gpgme_data_t *data, char **out, size_t *outlen, char *why, size_t whylen)
{
    size_t n = 0;
    char *mem = gpgme_data_release_and_get_mem(*data, &n);

    *data = NULL;
    *out = NULL;
    *outlen = 0;
    if (!mem || n == 0) {
        gpgme_free(mem);
        return SM_PGP_REJECT;
    }
    if ((*out = malloc(n + 1)) == NULL) {
        gpgme_free(mem);
        sm_why(why, whylen, "out of memory");
        return SM_PGP_ERROR;
    }
    memcpy(*out, mem, n);
    (*out)[n] = '\0';
    *outlen = n;
    gpgme_free(mem);
    return SM_PGP_OK;
}

int sm_pgp_stop_agent(const char *home, char *why, size_t whylen)
{
    posix_spawn_file_actions_t fa;
    gpgme_engine_info_t info = NULL;
    const char *gpgconf = NULL;
    char *argv[] = { "gpgconf", "--homedir", (char *)home, "--kill", "all", NULL };
    int rc = SM_PGP_ERROR, fa_ok = 0, status, e;
    pid_t pid;

    pgp_clear(why, whylen);
    if (sm_pgp_init() != SM_PGP_OK) {
        sm_why(why, whylen, "%s", init_why[0] ? init_why : "gpgme initialisation failed");
        goto leave;
    }
    if (!home || !*home) {
        sm_why(why, whylen, "no GnuPG home directory given");
        goto leave;
    }
    if (gpgme_get_engine_info(&info) == 0)
        for (; info; info = info->next)
            if (info->protocol == GPGME_PROTOCOL_GPGCONF)
                gpgconf = info->file_name;
    if (!gpgconf) {
        sm_why(why, whylen, "gpgconf not found");
        goto leave;
    }
    if ((e = posix_spawn_file_actions_init(&fa)) == 0) {
        fa_ok = 1;
        if ((e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) == 0
            && (e = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0)) == 0
            && (e = posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0)) == 0)
            e = posix_spawn(&pid, gpgconf, &fa, NULL, argv, environ);
    }
    if (e != 0) {
        sm_why(why, whylen, "spawning %s: %s", gpgconf, strerror(e));
        goto leave;
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            sm_why(why, whylen, "waitpid gpgconf: %s", strerror(errno));
            goto leave;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        sm_why(why, whylen, "gpgconf --kill all failed for %s", home);
        goto leave;
    }
    rc = SM_PGP_OK;
leave:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    return rc;
}

int sm_pgp_own_key_settings(const char *home, const char *fpr, char *err, size_t errlen)
{
    struct stat st;

    if (!home || !fpr) {
        sm_why(err, errlen, "gnupg_home and domain_key are required (missing: %s): the GnuPG "
               "home and fingerprint of our domain key, see stubmail-keygen",
               !home && !fpr ? "both" : !home ? "gnupg_home" : "domain_key");
        return -1;
    }
    if (!sm_pgp_fpr_valid(fpr)) {
        sm_why(err, errlen, "domain_key: \"%s\" is not a fingerprint (40 or 64 hex digits)",
               fpr);
        return -1;
    }
    if (home[0] != '/' || strlen(home) > SM_PGP_HOME_MAX) {
        sm_why(err, errlen, "gnupg_home: \"%s\" is not an absolute path of at most %d "
               "characters (gpg-agent's socket lives in it)", home, SM_PGP_HOME_MAX);
        return -1;
    }
    if (stat(home, &st) != 0) {
        sm_why(err, errlen, "gnupg_home: %s: %s", home, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        sm_why(err, errlen, "gnupg_home: %s: not a directory", home);
        return -1;
    }
    return 0;
}

int sm_pgp_probe_sign(const char *home, const char *fpr, char *why, size_t whylen)
{
    static const char probe[] = "stubmail start\n";
    char *sig = NULL;
    size_t siglen;
    int rc = sm_pgp_sign_detached(home, fpr, probe, sizeof probe - 1, &sig, &siglen, why,
                                  whylen);

    free(sig);
    return rc;
}
