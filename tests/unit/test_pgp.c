/* Unit tests: domain keys and login signatures through gpgme, in throwaway
 * GnuPG homes.
 *
 * Three domains, each in its own home under one short temporary directory
 * (gpg-agent's socket must fit a unix socket path): a.example and b.example
 * are the honest peers, c.example plays the stranger. Keys are trusted only by
 * fingerprint, so every check here is "right key, right fingerprint" against
 * "some other key". The agents are stopped and the homes removed at the end. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sm_pgp.h"
#include "tap.h"

static char base[] = "/tmp/smpgXXXXXX";
#include "testfiles.h"
static char home_a[64], home_b[64], home_c[64];
static char fa[SM_PGP_FPR_MAX + 1], fb[SM_PGP_FPR_MAX + 1], fc[SM_PGP_FPR_MAX + 1];
static char why[SM_PGP_WHY_MAX];

static int export_to(const char *home, const char *fpr, const char *file)
{
    char *key = NULL;
    size_t len = 0;
    int rc = sm_pgp_export_public(home, fpr, &key, &len, why, sizeof why);

    if (rc == SM_PGP_OK)
        rc = write_file(file, key, len);
    free(key);
    return rc;
}

static int import_from(const char *home, const char *file, const char *expected)
{
    size_t len;
    char *key = read_file(file, &len);
    int rc = sm_pgp_import_public(home, key, len, expected, why, sizeof why);

    free(key);
    return rc;
}

/* Is fpr's public key in home? Asked of gpg itself, not of the code under test. */
static int has_key(const char *home, const char *fpr)
{
    char cmd[512];

    snprintf(cmd, sizeof cmd, "gpg --homedir %s --batch --quiet --list-keys %s >/dev/null 2>&1",
             home, fpr);
    return system(cmd) == 0;
}

static int gpg(const char *fmt, const char *a1, const char *a2, const char *a3, const char *a4)
{
    char cmd[1024];

    snprintf(cmd, sizeof cmd, fmt, a1, a2, a3, a4);
    return system(cmd);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

/* A fourth domain, d.example, whose key is revoked after its export: the
 * checks the keyring's view makes after an import (sm_pgp_import_checked). */
static void revoked_tests(void)
{
    char cmd[2048], fd[SM_PGP_FPR_MAX + 1] = "", home_d[64];
    FILE *p;

    snprintf(home_d, sizeof home_d, "%s/d", base);
    snprintf(cmd, sizeof cmd,
        "set -e; mkdir -m 700 %s; cd %s; G='gpg --homedir %s --batch --quiet --pinentry-mode"
        " loopback --passphrase \"\"';"
        " $G --quick-gen-key stubmail@d.example future-default default never 2>/dev/null;"
        " F=$($G --with-colons --list-keys | awk -F: '/^fpr/{print $10; exit}');"
        " $G --export $F > d.pgp; cat d.pgp d.pgp > dd.pgp;"
        " $G --export-secret-keys $F > dsec.pgp;"
        " sed 's/^:-----/-----/' %s/openpgp-revocs.d/$F.rev | $G --import 2>/dev/null;"
        " $G --export $F > drev.pgp; echo $F > d.fpr",
        home_d, base, home_d, home_d);
    if (system(cmd) != 0 || !(p = fopen(path("d.fpr"), "r"))) {
        ok(0, "making d.example's key with gpg");
        return;
    }
    if (!fgets(fd, sizeof fd, p))
        fd[0] = '\0';
    fd[strcspn(fd, "\n")] = '\0';
    fclose(p);
    ok(sm_pgp_fpr_valid(fd), "d.example's key made: %s", fd);

    ok(import_from(home_b, path("dsec.pgp"), fd) == SM_PGP_REJECT
       && strstr(why, "secret key material"), "a blob with the secret key refused: %s", why);
    ok(import_from(home_b, path("dd.pgp"), fd) == SM_PGP_REJECT
       && strstr(why, "more than one key"), "the key twice in one blob refused: %s", why);
    ok(!has_key(home_b, fd), "and nothing of it is in b's keyring");
    ok(import_from(home_b, path("drev.pgp"), fd) == SM_PGP_REJECT && strstr(why, "revoked"),
       "a revoked key refused once the keyring has it: %s", why);
    ok(!has_key(home_b, fd), "and deleted again, since this import added it");

    ok(import_from(home_b, path("d.pgp"), fd) == SM_PGP_OK, "d's key before its revocation (%s)",
       why);
    ok(import_from(home_b, path("drev.pgp"), fd) == SM_PGP_REJECT && strstr(why, "revoked"),
       "its revocation, as an update, refused: %s", why);
    ok(sm_pgp_have_key(home_b, fd, why, sizeof why) == SM_PGP_REJECT && strstr(why, "not usable"),
       "the key known before stays, merged and not usable: %s", why);
    sm_pgp_stop_agent(home_d, why, sizeof why);
}

static void sign_verify_tests(void)
{
    static const char msg[] = "POST /stubmail/login domain=a.example time=1700000000 nonce=42";
    char *sig = NULL, *sig2 = NULL, *both = NULL;
    size_t siglen = 0, sig2len = 0, bothlen = 0;
    char tampered[sizeof msg];

    ok(sm_pgp_sign_detached(home_a, fa, msg, strlen(msg), &sig, &siglen, why, sizeof why) == SM_PGP_OK,
       "a signs a login request (%s)", why);
    ok(sig && strstr(sig, "-----BEGIN PGP SIGNATURE-----") == sig && strlen(sig) == siglen,
       "detached signature is armored text");
    ok(sm_pgp_verify_detached(home_b, msg, strlen(msg), sig, siglen, fa, why, sizeof why) == SM_PGP_OK,
       "b verifies it against a's fingerprint (%s)", why);
    ok(sm_pgp_verify_detached(home_a, msg, strlen(msg), sig, siglen, fa, why, sizeof why) == SM_PGP_OK,
       "a verifies its own signature");

    memcpy(tampered, msg, sizeof msg);
    tampered[strlen(tampered) - 1] = '3';
    ok(sm_pgp_verify_detached(home_b, tampered, strlen(tampered), sig, siglen, fa, why, sizeof why)
       == SM_PGP_REJECT && strstr(why, "Bad signature"), "tampered data refused: %s", why);
    ok(sm_pgp_verify_detached(home_b, msg, strlen(msg), sig, siglen, fb, why, sizeof why) == SM_PGP_REJECT
       && strstr(why, "expected"), "a's signature is not b's: %s", why);
    ok(sm_pgp_verify_detached(home_b, msg, strlen(msg), "garbage", 7, fa, why, sizeof why) == SM_PGP_REJECT,
       "garbage signature refused: %s", why);
    ok(sm_pgp_verify_detached(home_b, msg, strlen(msg), sig, 0, fa, why, sizeof why) == SM_PGP_REJECT,
       "empty signature refused: %s", why);
    ok(sm_pgp_verify_detached(home_b, msg, strlen(msg), sig, siglen, "1234", why, sizeof why) == SM_PGP_REJECT,
       "malformed expected fingerprint refused: %s", why);
    ok(sm_pgp_sign_detached(home_a, fb, msg, strlen(msg), &sig2, &sig2len, why, sizeof why) == SM_PGP_ERROR
       && sig2 == NULL, "a cannot sign as b (local trouble, not a verdict): %s", why);

    /* c (a stranger to b) signs and claims to be a */
    ok(sm_pgp_sign_detached(home_c, fc, msg, strlen(msg), &sig2, &sig2len, why, sizeof why) == SM_PGP_OK,
       "c signs the same request");
    ok(sm_pgp_verify_detached(home_b, msg, strlen(msg), sig2, sig2len, fa, why, sizeof why) == SM_PGP_REJECT
       && strstr(why, "unknown key"), "signature by a key b does not have: %s", why);
    ok(export_to(home_c, fc, path("c.asc")) == 0 && import_from(home_b, path("c.asc"), fc) == SM_PGP_OK,
       "b imports c's key by its fingerprint");
    ok(sm_pgp_verify_detached(home_b, msg, strlen(msg), sig2, sig2len, fa, why, sizeof why) == SM_PGP_REJECT
       && strstr(why, "signed by"), "c's good signature is not a's: %s", why);
    ok(sm_pgp_verify_detached(home_b, msg, strlen(msg), sig2, sig2len, fc, why, sizeof why) == SM_PGP_OK,
       "c's signature is c's");

    /* two signatures (a's and c's packets, dearmored and concatenated) */
    write_file(path("s1.asc"), sig, siglen);
    write_file(path("s2.asc"), sig2, sig2len);
    gpg("gpg --homedir %s --batch --quiet --dearmor < %s > %s 2>/dev/null", home_b, path("s1.asc"),
        path("s1.sig"), NULL);
    gpg("gpg --homedir %s --batch --quiet --dearmor < %s > %s 2>/dev/null", home_b, path("s2.asc"),
        path("s2.sig"), NULL);
    gpg("cat %s %s > %s%s", path("s1.sig"), path("s2.sig"), path("both.sig"), "");
    both = read_file(path("both.sig"), &bothlen);
    ok(bothlen > 0 && sm_pgp_verify_detached(home_b, msg, strlen(msg), both, bothlen, fa, why, sizeof why)
       == SM_PGP_REJECT && strstr(why, "exactly one"), "two signatures refused: %s", why);
    free(both);
    both = read_file(path("s1.sig"), &bothlen);
    ok(bothlen > 0 && sm_pgp_verify_detached(home_b, msg, strlen(msg), both, bothlen, fa, why, sizeof why)
       == SM_PGP_OK, "a binary signature verifies too");

    /* the digest: SHA-1 (still made and verified by gpg) is refused,
     * SHA-256 taken (PROTOCOL.md, POST /v1/login) */
    write_file(path("msg.txt"), msg, strlen(msg));
    gpg("gpg --homedir %s --batch --quiet --digest-algo SHA1 --local-user %s --detach-sign "
        "-o %s %s 2>/dev/null", home_a, fa, path("sha1.sig"), path("msg.txt"));
    gpg("gpg --homedir %s --batch --quiet --digest-algo SHA256 --local-user %s --detach-sign "
        "-o %s %s 2>/dev/null", home_a, fa, path("sha256.sig"), path("msg.txt"));
    free(both);
    both = read_file(path("sha1.sig"), &bothlen);
    ok(bothlen > 0 && sm_pgp_verify_detached(home_b, msg, strlen(msg), both, bothlen, fa, why, sizeof why)
       == SM_PGP_REJECT && strstr(why, "SHA1"), "a SHA-1 signature refused: %s", why);
    free(both);
    both = read_file(path("sha256.sig"), &bothlen);
    ok(bothlen > 0 && sm_pgp_verify_detached(home_b, msg, strlen(msg), both, bothlen, fa, why, sizeof why)
       == SM_PGP_OK, "a SHA-256 signature verifies (%s)", why);
    free(both);
    free(sig);
    free(sig2);
}

static void import_tests(void)
{
    char *key = NULL, *blob = NULL;
    size_t len = 0, len2 = 0;
    char lower[SM_PGP_FPR_MAX + 1];
    int i;

    ok(sm_pgp_export_public(home_a, fa, &key, &len, why, sizeof why) == SM_PGP_OK,
       "export a's public key");
    ok(key && strstr(key, "-----BEGIN PGP PUBLIC KEY BLOCK-----") == key && strlen(key) == len,
       "export is armored");
    ok(key && !strstr(key, "PRIVATE"), "export holds no secret key");
    write_file(path("a.asc"), key, len);
    free(key);
    key = NULL;
    ok(sm_pgp_export_public(home_a, "*", &key, &len, why, sizeof why) == SM_PGP_REJECT && !key,
       "export of a pattern refused: %s", why);
    ok(sm_pgp_export_public(home_a, fb, &key, &len, why, sizeof why) == SM_PGP_REJECT && !key,
       "export of a key the home lacks refused: %s", why);

    /* wrong expected fingerprint: refused and not left behind */
    ok(import_from(home_b, path("a.asc"), fb) == SM_PGP_REJECT, "a's key offered as b's: %s", why);
    ok(!has_key(home_b, fa), "and a's key is not in b's keyring");
    ok(import_from(home_b, path("a.asc"), fc) == SM_PGP_REJECT, "a's key offered as c's: %s", why);

    /* a's key with c's key in the same blob */
    export_to(home_c, fc, path("c.asc"));
    gpg("cat %s %s > %s%s", path("a.asc"), path("c.asc"), path("ac.asc"), "");
    ok(import_from(home_b, path("ac.asc"), fa) == SM_PGP_REJECT && strstr(why, fc),
       "a blob with a's and c's keys refused: %s", why);
    ok(!has_key(home_b, fa) && !has_key(home_b, fc), "and neither key is left in b's keyring");

    ok(sm_pgp_import_public(home_b, "garbage", 7, fa, why, sizeof why) == SM_PGP_REJECT,
       "garbage refused: %s", why);
    ok(sm_pgp_import_public(home_b, "x", 0, fa, why, sizeof why) == SM_PGP_REJECT, "empty refused");
    ok(import_from(home_b, path("a.asc"), "not-a-fingerprint") == SM_PGP_REJECT,
       "malformed expected fingerprint refused: %s", why);
    blob = read_file(path("a.asc"), &len2);
    blob[len2 / 2] ^= 0x01;   /* damage the key material */
    ok(sm_pgp_import_public(home_b, blob, len2, fa, why, sizeof why) == SM_PGP_REJECT && !has_key(home_b, fa),
       "damaged key refused: %s", why);
    free(blob);

    /* the right one, fingerprint in lowercase as a DNS record might have it */
    for (i = 0; fa[i]; i++)
        lower[i] = (char)(fa[i] >= 'A' && fa[i] <= 'F' ? fa[i] + 32 : fa[i]);
    lower[i] = '\0';
    ok(import_from(home_b, path("a.asc"), lower) == SM_PGP_OK, "b imports a's key by fingerprint (%s)", why);
    ok(has_key(home_b, fa), "a's key is in b's keyring");
    ok(import_from(home_b, path("a.asc"), fa) == SM_PGP_OK, "importing it again is fine");
    export_to(home_b, fb, path("b.asc"));
    ok(import_from(home_a, path("b.asc"), fb) == SM_PGP_OK, "a imports b's key");
    ok(import_from(home_c, path("b.asc"), fb) == SM_PGP_OK, "c imports b's key");
}

int main(void)
{
    char again[SM_PGP_FPR_MAX + 1], sock[128];
    double t0, t_key;
    struct stat st;

    /* nothing buffered when gpgme forks: under valgrind the children flush
     * a copy of a pending stdout buffer, duplicating TAP lines */
    setvbuf(stdout, NULL, _IOLBF, 0);
    ok(sm_pgp_init() == SM_PGP_OK, "gpgme initialised");
    ok(mkdtemp(base) != NULL, "temp dir %s", base);
    snprintf(home_a, sizeof home_a, "%s/a", base);
    snprintf(home_b, sizeof home_b, "%s/b", base);
    snprintf(home_c, sizeof home_c, "%s/c", base);

    t0 = now();
    ok(sm_pgp_create_domain_key(home_a, "a.example", fa, why, sizeof why) == SM_PGP_OK,
       "domain key for a.example: %s (%s)", fa, why);
    t_key = now() - t0;
    printf("# first key creation (agent start included): %.3f s\n", t_key);
    t0 = now();
    ok(sm_pgp_create_domain_key(home_b, "B.Example", fb, why, sizeof why) == SM_PGP_OK,
       "domain key for b.example: %s (%s)", fb, why);
    printf("# second key creation (other home, new agent): %.3f s\n", now() - t0);
    ok(sm_pgp_create_domain_key(home_c, "c.example", fc, why, sizeof why) == SM_PGP_OK,
       "domain key for c.example: %s", fc);
    ok(stat(home_a, &st) == 0 && (st.st_mode & 0777) == 0700, "home created with mode 0700");
    ok(sm_pgp_fpr_valid(fa) && strlen(fa) == 40, "fingerprint is 40 hex digits");
    ok(strcmp(fa, fb) != 0 && strcmp(fb, fc) != 0, "three different keys");
    t0 = now();
    ok(sm_pgp_create_domain_key(home_a, "a.example", again, why, sizeof why) == SM_PGP_OK
       && strcmp(again, fa) == 0, "setup again: same key (%s)", why);
    printf("# existing key found: %.3f s\n", now() - t0);
    ok(sm_pgp_create_domain_key(home_b, "b.example", again, why, sizeof why) == SM_PGP_OK
       && strcmp(again, fb) == 0, "uid matched ignoring the case it was asked in");
    ok(sm_pgp_create_domain_key(home_a, "not a domain", again, why, sizeof why) == SM_PGP_REJECT
       && again[0] == '\0', "bad domain refused: %s", why);

    ok(!sm_pgp_fpr_valid("0123") && !sm_pgp_fpr_valid(NULL)
       && !sm_pgp_fpr_valid("0123456789abcdef0123456789abcdef0123456g")
       && sm_pgp_fpr_valid("0123456789abcdef0123456789ABCDEF01234567"), "fingerprint syntax");

    import_tests();
    revoked_tests();
    sign_verify_tests();

    snprintf(sock, sizeof sock, "%s/S.gpg-agent", home_a);
    ok(stat(sock, &st) == 0, "a's agent socket exists");
    ok(sm_pgp_stop_agent(home_a, why, sizeof why) == SM_PGP_OK
       && sm_pgp_stop_agent(home_b, why, sizeof why) == SM_PGP_OK
       && sm_pgp_stop_agent(home_c, why, sizeof why) == SM_PGP_OK, "agents stopped (%s)", why);
    ok(stat(sock, &st) != 0, "a's agent socket is gone");
    ok(nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "homes removed");
    return tap_done();
}
