/* Unit tests: sm_seal, the in-process OpenPGP engine (librnp), against gpg.
 *
 * a.example seals, b.example opens, c.example is the stranger; keys are made
 * by sm_pgp (gpg) in throwaway homes, as stubmail-keygen makes them. What
 * matters is that either side may be gpg: a body sealed here opens with gpg
 * (sm_pgp_decrypt_verify_fd, and the gpg command line), a body gpg sealed
 * opens here, and the verdicts on forged, tampered, unsigned and wrongly
 * signed bodies are the ones sm_pgp gives. Timings are printed, not
 * asserted (tests/bench measures). */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sm_pgp.h"
#include "sm_seal.h"
#include "tap.h"

#define BIG (3 * 1024 * 1024)
#define ROUNDS 200
#define THREADS 4

static char base[] = "/tmp/smseXXXXXX";
#include "testfiles.h"
static char home_a[64], home_b[64], home_c[64];
static char fa[SM_PGP_FPR_MAX + 1], fb[SM_PGP_FPR_MAX + 1], fc[SM_PGP_FPR_MAX + 1];
static char why[SM_PGP_WHY_MAX];

/* in → out through one of the four engines */
enum { SEAL, GPG };

static int seal_file(int engine, sm_seal *s, const char *home, const char *signer,
                     const char *const *to, const char *in, const char *out)
{
    int ifd = open(in, O_RDONLY), ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600), rc;

    if (engine == SEAL)
        rc = sm_seal_encrypt_sign_fd(s, to, ifd, ofd, why, sizeof why);
    else
        rc = sm_pgp_encrypt_sign_fd(home, signer, to, ifd, ofd, why, sizeof why);
    close(ifd);
    close(ofd);
    return rc;
}

static int open_file(int engine, sm_seal *s, const char *home, const char *in, const char *out,
                     const char *signer, sm_pgp_result *res)
{
    int ifd = open(in, O_RDONLY), ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600), rc;

    if (engine == SEAL)
        rc = sm_seal_decrypt_verify_fd(s, ifd, ofd, signer, res, why, sizeof why);
    else
        rc = sm_pgp_decrypt_verify_fd(home, ifd, ofd, signer, res, why, sizeof why);
    close(ifd);
    close(ofd);
    return rc;
}

static int sh(const char *fmt, const char *a1, const char *a2, const char *a3, const char *a4)
{
    char cmd[2048];

    snprintf(cmd, sizeof cmd, fmt, a1, a2, a3, a4);
    return system(cmd);
}

/* Give home the public key fpr of other (gpg on both ends). */
static int give_key(const char *other, const char *fpr, const char *home)
{
    return sh("gpg --homedir %s --batch --quiet --export %s | gpg --homedir %s --batch --quiet "
              "--import 2>/dev/null%s", other, fpr, home, "");
}

/* One bit of the file at off turned over. */
static int flip_bit(const char *p, off_t off)
{
    unsigned char c;
    int fd = open(p, O_RDWR), rc = -1;

    if (fd >= 0 && pread(fd, &c, 1, off) == 1) {
        c ^= 0x01;
        rc = pwrite(fd, &c, 1, off) == 1 ? 0 : -1;
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

struct worker {
    sm_seal *a, *b;
    int id, failures;
};

/* Seal and open in a loop from several threads over two shared seals. */
static void *work(void *arg)
{
    struct worker *w = arg;
    const char *to[] = { fb, NULL };
    char in[128], mid[128], out[128], lwhy[SM_PGP_WHY_MAX];
    sm_pgp_result res;
    int i, ifd, ofd;

    snprintf(in, sizeof in, "%s/plain1k", base);
    snprintf(mid, sizeof mid, "%s/t%d.pgp", base, w->id);
    snprintf(out, sizeof out, "%s/t%d.out", base, w->id);
    for (i = 0; i < 50; i++) {
        ifd = open(in, O_RDONLY);
        ofd = open(mid, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (sm_seal_encrypt_sign_fd(w->a, to, ifd, ofd, lwhy, sizeof lwhy) != SM_PGP_OK)
            w->failures++;
        close(ifd);
        close(ofd);
        ifd = open(mid, O_RDONLY);
        ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (sm_seal_decrypt_verify_fd(w->b, ifd, ofd, fa, &res, lwhy, sizeof lwhy) != SM_PGP_OK)
            w->failures++;
        close(ifd);
        close(ofd);
        if (!same_files(in, out))
            w->failures++;
    }
    return NULL;
}

int main(void)
{
    static char big[BIG];
    const char *to_b[] = { fb, NULL }, *to_bc[] = { fb, fc, NULL }, *to_none[] = { NULL };
    sm_seal *sa = NULL, *sb = NULL, *sc = NULL, *sx = NULL;
    sm_pgp_result res;
    char plain1k[1024];
    struct worker w[THREADS];
    pthread_t th[THREADS];
    double t0, t_seal, t_gpg;
    int i, failures;
    size_t off;

    if (!mkdtemp(base)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    snprintf(home_a, sizeof home_a, "%s/a", base);
    snprintf(home_b, sizeof home_b, "%s/b", base);
    snprintf(home_c, sizeof home_c, "%s/c", base);
    if (sm_pgp_create_domain_key(home_a, "a.example", fa, why, sizeof why) != SM_PGP_OK
        || sm_pgp_create_domain_key(home_b, "b.example", fb, why, sizeof why) != SM_PGP_OK
        || sm_pgp_create_domain_key(home_c, "c.example", fc, why, sizeof why) != SM_PGP_OK) {
        printf("Bail out! keys: %s\n", why);
        return 1;
    }
    /* a knows b's and c's keys; b knows a's and c's; c knows a's and b's */
    ok(give_key(home_b, fb, home_a) == 0 && give_key(home_c, fc, home_a) == 0
       && give_key(home_a, fa, home_b) == 0 && give_key(home_c, fc, home_b) == 0
       && give_key(home_a, fa, home_c) == 0 && give_key(home_b, fb, home_c) == 0,
       "public keys exchanged with gpg");
    for (i = 0; i < (int)sizeof plain1k; i++)
        plain1k[i] = (char)(' ' + i % 90);
    for (off = 0; off < BIG; off += 256)
        if (getrandom(big + off, 256, 0) != 256)
            return 1;
    ok(write_file(path("plain1k"), plain1k, sizeof plain1k) == 0
       && write_file(path("big"), big, sizeof big) == 0, "plaintexts written");

    ok(sm_seal_new(home_a, fa, 4, &sa, why, sizeof why) == SM_PGP_OK, "a's seal (%s)", why);
    ok(sm_seal_new(home_b, fb, 4, &sb, why, sizeof why) == SM_PGP_OK, "b's seal (%s)", why);
    ok(sm_seal_new(home_c, fc, 1, &sc, why, sizeof why) == SM_PGP_OK, "c's seal (%s)", why);
    ok(sm_seal_new(home_a, fb, 1, &sx, why, sizeof why) == SM_PGP_ERROR && sx == NULL,
       "no seal without our secret key: %s", why);
    ok(sm_seal_new(home_a, "nonsense", 1, &sx, why, sizeof why) != SM_PGP_OK && sx == NULL,
       "no seal with a malformed fingerprint");
    if (!sa || !sb || !sc) {
        printf("Bail out! no seal\n");
        return 1;
    }

    /* the per-message key checks */
    ok(sm_seal_key_check(sa, fb, NULL, why, sizeof why) == SM_PGP_OK, "b's key usable in a (%s)", why);
    ok(sm_seal_key_check(sa, fb, "Stubmail@B.example", why, sizeof why) == SM_PGP_OK,
       "b's key has the address stubmail@b.example (%s)", why);
    ok(sm_seal_key_check(sa, fb, "bob@b.example", why, sizeof why) == SM_PGP_REJECT
       && strstr(why, "no user id"), "but not bob@b.example: %s", why);
    ok(sm_seal_key_check(sc, fb, NULL, why, sizeof why) == SM_PGP_OK, "c has b's key too");
    ok(sm_seal_key_check(sb, "0123456789ABCDEF0123456789ABCDEF01234567", NULL, why, sizeof why)
       == SM_PGP_REJECT && strstr(why, "not in the keyring"), "an absent key: %s", why);
    ok(sm_seal_key_check(sb, "12345", NULL, why, sizeof why) == SM_PGP_REJECT,
       "a malformed fingerprint refused");

    /* sealed here, opened by gpg */
    ok(seal_file(SEAL, sa, NULL, NULL, to_b, path("plain1k"), path("s1.pgp")) == SM_PGP_OK,
       "a seals 1 KiB for b (%s)", why);
    ok(open_file(GPG, NULL, home_b, path("s1.pgp"), path("s1.out"), fa, &res) == SM_PGP_OK
       && res.decrypted && res.sig == SM_PGP_SIG_VALID && same_files(path("plain1k"), path("s1.out")),
       "gpg (gpgme) opens it: decrypted, a's signature valid, same text (%s)", why);
    is_str(res.signer_fpr, fa, "gpg names a's key as the signer");
    ok(sh("gpg --homedir %s --batch --quiet --status-fd 1 --decrypt %s 2>/dev/null "
          "| grep -q '^\\[GNUPG:\\] VALIDSIG %s'%s", home_b, path("s1.pgp"), fa, "") == 0,
       "the gpg command line says VALIDSIG by a's key");
    ok(sh("gpg --homedir %s --batch --list-packets %s 2>/dev/null | grep -q 'compressed packet'"
          "%s%s", home_b, path("s1.pgp"), "", "") != 0
       && sh("gpg --homedir %s --batch --list-packets %s 2>/dev/null | grep -q 'mdc_method: 2'"
             "%s%s", home_b, path("s1.pgp"), "", "") == 0,
       "stored form: no compression, SEIPD with MDC");

    /* sealed from memory (the milter's path for a message that fits its
     * buffer): the same OpenPGP, gpg opens it to the same text */
    {
        int ofd = open(path("m1.pgp"), O_WRONLY | O_CREAT | O_TRUNC, 0600), rc, full;

        rc = sm_seal_encrypt_sign_mem(sa, to_b, plain1k, sizeof plain1k, ofd, why, sizeof why);
        close(ofd);
        ok(rc == SM_PGP_OK, "a seals 1 KiB from memory for b (%s)", why);
        ok(open_file(GPG, NULL, home_b, path("m1.pgp"), path("m1.out"), fa, &res) == SM_PGP_OK
           && res.decrypted && res.sig == SM_PGP_SIG_VALID
           && same_files(path("plain1k"), path("m1.out")),
           "gpg opens it: decrypted, a's signature valid, same text (%s)", why);
        full = open("/dev/full", O_WRONLY);
        rc = sm_seal_encrypt_sign_mem(sa, to_b, plain1k, sizeof plain1k, full, why, sizeof why);
        close(full);
        ok(rc == SM_PGP_ERROR, "from memory into a full disk: ERROR: %s", why);
        ok(sm_seal_encrypt_sign_mem(sa, to_none, plain1k, sizeof plain1k, 1, why, sizeof why)
           == SM_PGP_REJECT, "from memory, no recipients: REJECT");
    }

    /* sealed by gpg, opened here */
    ok(seal_file(GPG, NULL, home_a, fa, to_b, path("big"), path("g1.pgp")) == SM_PGP_OK,
       "gpg seals 3 MiB for b");
    ok(open_file(SEAL, sb, NULL, path("g1.pgp"), path("g1.out"), fa, &res) == SM_PGP_OK
       && res.decrypted && res.sig == SM_PGP_SIG_VALID && same_files(path("big"), path("g1.out")),
       "the seal opens gpg's 3 MiB: valid, byte-identical (%s)", why);

    /* two recipients; each opens it */
    ok(seal_file(SEAL, sa, NULL, NULL, to_bc, path("big"), path("s2.pgp")) == SM_PGP_OK,
       "a seals 3 MiB for b and c (%s)", why);
    ok(open_file(SEAL, sb, NULL, path("s2.pgp"), path("s2b.out"), fa, &res) == SM_PGP_OK
       && same_files(path("big"), path("s2b.out")), "b opens it");
    ok(open_file(SEAL, sc, NULL, path("s2.pgp"), path("s2c.out"), fa, &res) == SM_PGP_OK
       && same_files(path("big"), path("s2c.out")), "c opens it");
    ok(open_file(SEAL, sc, NULL, path("s1.pgp"), path("s1c.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "c cannot open what was sealed for b alone: %s", why);

    /* verdicts */
    ok(open_file(SEAL, sb, NULL, path("s1.pgp"), path("x.out"), fc, &res) == SM_PGP_REJECT
       && res.decrypted && res.sig == SM_PGP_SIG_WRONG_SIGNER && strcmp(res.signer_fpr, fa) == 0,
       "expecting c's signature on a's: WRONG_SIGNER (%s)", why);
    ok(sh("cp %s %s%s%s", path("s1.pgp"), path("t.pgp"), "", "") == 0 && flip_bit(path("t.pgp"), 200) == 0
       && open_file(SEAL, sb, NULL, path("t.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "one octet changed: REJECT, not decrypted: %s", why);
    ok(sh("gpg --homedir %s --batch --quiet --trust-model always -r %s --encrypt -o %s %s",
          home_a, fb, path("u.pgp"), path("plain1k")) == 0
       && open_file(SEAL, sb, NULL, path("u.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && res.decrypted && res.sig == SM_PGP_SIG_MISSING, "encrypted, unsigned: MISSING");
    ok(sh("gpg --homedir %s --batch --quiet --yes --trust-model always -r %s --sign --encrypt "
          "-o %s %s", home_c, fb, path("cs.pgp"), path("plain1k")) == 0
       && open_file(SEAL, sb, NULL, path("cs.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && res.decrypted && (res.sig == SM_PGP_SIG_NO_KEY || res.sig == SM_PGP_SIG_WRONG_SIGNER)
       && res.signer_fpr[0] && strstr(fc, res.signer_fpr),
       "signed by c with a's expected: refused, c's key named (%s)", why);
    ok(sh("printf 'not openpgp at all' > %s%s%s%s", path("j.pgp"), "", "", "") == 0
       && open_file(SEAL, sb, NULL, path("j.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "junk: REJECT: %s", why);
    ok(seal_file(SEAL, sa, NULL, NULL, to_none, path("plain1k"), path("x.pgp")) == SM_PGP_REJECT,
       "no recipients: REJECT");
    {
        const char *to_x[] = { "0123456789ABCDEF0123456789ABCDEF01234567", NULL };
        ok(seal_file(SEAL, sa, NULL, NULL, to_x, path("plain1k"), path("x.pgp")) == SM_PGP_REJECT
           && strstr(why, "not in the keyring"), "a recipient key not in the keyring: %s", why);
    }
    ok(open_file(SEAL, sb, NULL, path("s1.pgp"), "/dev/full", fa, &res) == SM_PGP_ERROR,
       "output that cannot be written: ERROR (retry), not a verdict: %s", why);
    ok(seal_file(SEAL, sa, NULL, NULL, to_b, path("plain1k"), "/dev/full") == SM_PGP_ERROR,
       "sealing into a full disk: ERROR: %s", why);
    {
        /* the disk fills during librnp's last write, after it has encrypted
         * everything: the file-size limit just below the sealed size */
        struct rlimit old, lim;
        struct stat st;
        int rc = -1;

        signal(SIGXFSZ, SIG_IGN);
        if (stat(path("s2.pgp"), &st) == 0 && getrlimit(RLIMIT_FSIZE, &old) == 0) {
            lim = old;
            lim.rlim_cur = (rlim_t)st.st_size - 100;
            if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
                rc = seal_file(SEAL, sa, NULL, NULL, to_bc, path("big"), path("late.pgp"));
                setrlimit(RLIMIT_FSIZE, &old);
            }
        }
        ok(rc == SM_PGP_ERROR, "a write that fails at the very end: ERROR, not a short body: %s",
           why);
    }
    {
        char sub_fpr[SM_PGP_FPR_MAX + 2] = "";
        const char *to_sub[] = { sub_fpr, NULL };
        FILE *p;
        char cmd[256];

        snprintf(cmd, sizeof cmd, "gpg --homedir %s --batch --with-colons --list-keys %s "
                 "| awk -F: '/^sub/{s=1} s && /^fpr/{print $10; exit}'", home_a, fb);
        if ((p = popen(cmd, "r")) != NULL) {
            if (!fgets(sub_fpr, sizeof sub_fpr, p))
                sub_fpr[0] = '\0';
            sub_fpr[strcspn(sub_fpr, "\n")] = '\0';
            pclose(p);
        }
        ok(sub_fpr[0] && seal_file(SEAL, sa, NULL, NULL, to_sub, path("plain1k"), path("x.pgp"))
                         == SM_PGP_REJECT && strstr(why, "subkey"),
           "a recipient named by its subkey's fingerprint: REJECT (%s)", why);
    }

    /* c's key revoked in a's keyring: after sm_seal_forget, a no longer
     * encrypts to it */
    ok(sh("sed 's/^:-----/-----/' %s/openpgp-revocs.d/%s.rev | gpg --homedir %s --batch --quiet "
          "--import 2>/dev/null%s", home_c, fc, home_a, "") == 0, "c's key revoked in a's keyring");
    ok(seal_file(SEAL, sa, NULL, NULL, to_bc, path("plain1k"), path("x.pgp")) == SM_PGP_OK,
       "until forgotten, the seal still holds the key it loaded");
    ok(sm_seal_key_check(sa, fc, NULL, why, sizeof why) == SM_PGP_OK,
       "so does the key check");
    sm_seal_forget(sa, fc);
    ok(seal_file(SEAL, sa, NULL, NULL, to_bc, path("plain1k"), path("x.pgp")) == SM_PGP_REJECT
       && strstr(why, fc), "after sm_seal_forget: REJECT (%s)", why);
    ok(sm_seal_key_check(sa, fc, NULL, why, sizeof why) == SM_PGP_REJECT && strstr(why, "revoked"),
       "and the key check says revoked: %s", why);

    /* threads share the seals */
    for (i = 0; i < THREADS; i++) {
        w[i].a = sa;
        w[i].b = sb;
        w[i].id = i;
        w[i].failures = 0;
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    failures = 0;
    for (i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += w[i].failures;
    }
    ok(failures == 0, "%d threads x 50 seal+open over 4 slots: %d failures", THREADS, failures);

    /* what it costs: printed, not asserted */
    t0 = now();
    for (i = 0; i < ROUNDS; i++)
        seal_file(SEAL, sa, NULL, NULL, to_b, path("plain1k"), path("r.pgp"));
    t_seal = (now() - t0) / ROUNDS;
    t0 = now();
    for (i = 0; i < ROUNDS / 10; i++)
        seal_file(GPG, NULL, home_a, fa, to_b, path("plain1k"), path("r.pgp"));
    t_gpg = (now() - t0) / (ROUNDS / 10);
    printf("# seal 1 KiB: in process %.3f ms, gpgme %.3f ms (%.0fx)\n", t_seal * 1e3,
           t_gpg * 1e3, t_gpg / t_seal);
    t0 = now();
    for (i = 0; i < ROUNDS; i++)
        open_file(SEAL, sb, NULL, path("s1.pgp"), path("r.out"), fa, &res);
    printf("# open 1 KiB in process: %.3f ms\n", (now() - t0) / ROUNDS * 1e3);

    sm_seal_free(sa);
    sm_seal_free(sb);
    sm_seal_free(sc);
    sm_pgp_stop_agent(home_a, why, sizeof why);
    sm_pgp_stop_agent(home_b, why, sizeof why);
    sm_pgp_stop_agent(home_c, why, sizeof why);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
