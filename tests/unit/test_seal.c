/* Unit tests: sm_seal, the in-process OpenPGP engine (librnp), against gpg.
 *
 * a.example seals, b.example opens, c.example is the stranger; keys are made
 * by sm_pgp (gpg) in throwaway homes, as stubmail-keygen makes them. What
 * matters is that either side may be gpg: a body sealed here opens with the
 * gpg command line, a body the gpg command line sealed opens here, and the
 * seal refuses what a peer must not get through: forged, tampered,
 * truncated, unsigned, wrongly or twice signed bodies, bodies without
 * integrity protection, compressed bodies (gpg's default, and a
 * decompression bomb), and signatures by a signing subkey that has since
 * expired (d.example signs, e.example opens: keys made in the past with gpg
 * --faked-system-time). A seal fed through a socket as a client sends (the
 * milter's big messages) holds no slot of the pool while it waits for
 * input, and refuses keys before it reads any. Timings are printed, not
 * asserted (tests/bench measures). */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
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

static int seal_file(sm_seal *s, const char *const *to, const char *in, const char *out)
{
    int ifd = open(in, O_RDONLY), ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600), rc;

    rc = sm_seal_encrypt_sign_fd(s, to, NULL, ifd, ofd, why, sizeof why);
    close(ifd);
    close(ofd);
    return rc;
}

static int open_file(sm_seal *s, const char *in, const char *out, const char *signer,
                     sm_pgp_result *res)
{
    int ifd = open(in, O_RDONLY), ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600), rc;

    rc = sm_seal_decrypt_verify_fd(s, ifd, ofd, signer, res, why, sizeof why);
    close(ifd);
    close(ofd);
    return rc;
}

static int __attribute__((format(printf, 1, 2))) sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* The gpg command line seals in for to as signer (a stubmail peer's stored
 * form: signed, encrypted, uncompressed, binary). 0 if gpg did. */
static int gpg_seal(const char *home, const char *signer, const char *to, const char *in,
                    const char *out)
{
    return sh("gpg --homedir %s --batch --quiet --yes --trust-model always --compress-algo none"
              " -u %s -r %s --sign --encrypt -o %s %s 2>/dev/null", home, signer, to, out, in);
}

/* The gpg command line opens in into out: 0 if it decrypted with integrity
 * protection and found exactly one good signature, whose primary key's
 * fingerprint goes to signer; else -1. */
static int gpg_open(const char *home, const char *in, const char *out,
                    char signer[SM_PGP_FPR_MAX + 1])
{
    char cmd[1024], line[1024], *tok, *last;
    FILE *p;
    int okay = 0, good = 0, sigs = 0, rc = -1;

    signer[0] = '\0';
    snprintf(cmd, sizeof cmd, "gpg --homedir %s --batch --quiet --yes --status-fd 1 -o %s "
             "--decrypt %s 2>/dev/null", home, out, in);
    if ((p = popen(cmd, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "[GNUPG:] NEWSIG", 15) == 0)
            sigs++;
        else if (strncmp(line, "[GNUPG:] GOODSIG ", 17) == 0)
            good++;
        else if (strcmp(line, "[GNUPG:] DECRYPTION_OKAY") == 0)
            okay = 1;
        else if (strncmp(line, "[GNUPG:] VALIDSIG ", 18) == 0) {
            /* its last field is the primary key's fingerprint */
            for (last = NULL, tok = strtok(line + 18, " "); tok; tok = strtok(NULL, " "))
                last = tok;
            if (last && strlen(last) <= SM_PGP_FPR_MAX)
                strcpy(signer, last);
        }
    }
    if (pclose(p) == 0 && okay && sigs == 1 && good == 1 && signer[0])
        rc = 0;
    return rc;
}

/* Give home the public key fpr of other (gpg on both ends). */
static int give_key(const char *other, const char *fpr, const char *home)
{
    return sh("gpg --homedir %s --batch --quiet --export %s | gpg --homedir %s --batch --quiet "
              "--import 2>/dev/null", other, fpr, home);
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

static long long file_size(const char *p)
{
    struct stat st;

    return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* gpg's sign+encrypt with its own compression (compress_opt: "" for the
 * default, else e.g. "--compress-algo zip") is refused as compressed, and no
 * more plaintext came out than the body's size. in's gpg-made body must
 * hold a compressed-data packet of algorithm algo (gpg --list-packets
 * decrypts with b's key to see it). */
static void refused_compressed(sm_seal *sb, const char *compress_opt, int algo, const char *in,
                               const char *what)
{
    sm_pgp_result res;
    long long body, out;
    int made, rc = -1;

    made = sh("gpg --homedir %s --batch --quiet --yes --trust-model always %s -u %s -r %s "
              "--sign --encrypt -o %s %s 2>/dev/null", home_a, compress_opt, fa, fb,
              path("z.pgp"), in) == 0
           && sh("gpg --homedir %s --batch --list-packets %s 2>/dev/null "
                 "| grep -q 'compressed packet: algo=%d'", home_b, path("z.pgp"), algo) == 0;
    if (made)
        rc = open_file(sb, path("z.pgp"), path("z.out"), fa, &res);
    body = file_size(path("z.pgp"));
    out = file_size(path("z.out"));
    ok(made && rc == SM_PGP_REJECT && res.compressed && !res.decrypted
       && strncmp(why, "compressed", 10) == 0 && out >= 0 && out <= body,
       "%s (%lld octets): REJECT as compressed, %lld octets out (%s)", what, body, out,
       made ? why : "gpg did not make a compressed body");
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

/* d.example signs with subkeys, e.example opens. Both keys are made on
 * 2020-01-01 (gpg --faked-system-time), so that d can have a signing subkey
 * that expired on 2020-01-02 and a body it signed with it on the day it
 * was good; its other signing subkey is made now and good for a year.
 * Either subkey's signature counts for d's primary key, if it counts. */
static void subkey_tests(void)
{
    char home_d[64], home_e[64], fd[SM_PGP_FPR_MAX + 2] = "", fe[SM_PGP_FPR_MAX + 2] = "";
    sm_seal *se = NULL;
    sm_pgp_result res;
    FILE *f;

    snprintf(home_d, sizeof home_d, "%s/d", base);
    snprintf(home_e, sizeof home_e, "%s/e", base);
    ok(sh("set -e; cd %s; mkdir -m 700 d e;"
          " G='gpg --batch --quiet --yes --pinentry-mode loopback --passphrase \"\""
          " --trust-model always'; PAST='--faked-system-time 20200101T000000';"
          " fpr() { $G --homedir $1 --with-colons --list-keys | awk -F: '/^fpr/{print $10}'"
          " | sed -n $2p; };"
          " $G --homedir d $PAST --quick-gen-key stubmail@d.example future-default default never;"
          /* e's secret key unprotected, as stubmail-keygen makes it: the seal exports it */
          " $G --homedir e $PAST --gen-key <<EOF\nKey-Type: eddsa\nKey-Curve: ed25519\n"
          "Subkey-Type: ecdh\nSubkey-Curve: cv25519\nName-Email: stubmail@e.example\n"
          "Expire-Date: 0\n%%no-protection\nEOF\n"
          " D=$(fpr d 1); E=$(fpr e 1);"
          " $G --homedir d $PAST --quick-add-key $D ed25519 sign 1d;"
          " $G --homedir d --quick-add-key $D ed25519 sign 1y;"
          " OLD=$(fpr d 3); NOW=$(fpr d 4);"
          " $G --homedir e --export $E | $G --homedir d --import;"
          " $G --homedir d --export $D | $G --homedir e --import;"
          " S='--compress-algo none --sign --encrypt';"
          " $G --homedir d -u $NOW! -r $E $S -o now.pgp plain1k;"
          " $G --homedir d --faked-system-time 20200101T120000 -u $OLD! -r $E $S -o old.pgp plain1k;"
          " $G --homedir d -u $D! -u $NOW! -r $E $S -o twice.pgp plain1k;"
          " echo $D > d.fpr; echo $E > e.fpr", base) == 0
       && (f = fopen(path("d.fpr"), "r")) != NULL && fgets(fd, sizeof fd, f) && fclose(f) == 0
       && (f = fopen(path("e.fpr"), "r")) != NULL && fgets(fe, sizeof fe, f) && fclose(f) == 0,
       "d's key with an expired and a current signing subkey, e's key (gpg, made in 2020)");
    fd[strcspn(fd, "\n")] = '\0';
    fe[strcspn(fe, "\n")] = '\0';
    ok(sm_seal_new(home_e, fe, 1, &se, why, sizeof why) == SM_PGP_OK, "e's seal (%s)", why);
    if (!se)
        goto leave;     /* the agents gpg started in d and e still go */
    ok(open_file(se, path("now.pgp"), path("x.out"), fd, &res) == SM_PGP_OK
       && res.sig == SM_PGP_SIG_VALID && strcmp(res.signer_fpr, fd) == 0
       && same_files(path("plain1k"), path("x.out")),
       "signed by d's current signing subkey: valid, d's primary named (%s)", why);
    ok(open_file(se, path("old.pgp"), path("x.out"), fd, &res) == SM_PGP_REJECT
       && res.decrypted && res.sig == SM_PGP_SIG_INVALID && strstr(why, "expired"),
       "signed by d's signing subkey while it was good, expired since: REJECT (%s)", why);
    ok(open_file(se, path("twice.pgp"), path("x.out"), fd, &res) == SM_PGP_REJECT
       && res.decrypted && res.sig == SM_PGP_SIG_INVALID && strstr(why, "exactly one"),
       "signed twice, by d's primary and its subkey: REJECT (%s)", why);
leave:
    sm_seal_free(se);
    sm_pgp_stop_agent(home_d, why, sizeof why);
    sm_pgp_stop_agent(home_e, why, sizeof why);
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
        if (sm_seal_encrypt_sign_fd(w->a, to, NULL, ifd, ofd, lwhy, sizeof lwhy) != SM_PGP_OK)
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

/* A seal fed through a socket, run in a thread of its own (as the
 * milter's stream runs it). */
struct stream_job {
    sm_seal *s;
    const char *const *to;
    int in_fd, out_fd, rc;
    char why[SM_PGP_WHY_MAX];
};

static void *stream_run(void *arg)
{
    struct stream_job *j = arg;

    j->rc = sm_seal_encrypt_sign_stream(j->s, j->to, NULL, j->in_fd, j->out_fd, j->why,
                                        sizeof j->why);
    return NULL;
}

static int write_all(int fd, const char *p, size_t len)
{
    ssize_t n;

    while (len > 0) {
        if ((n = write(fd, p, len)) <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* What c (one slot) seals for b as it is fed through a socket. */
static void stream_tests(sm_seal *sb, sm_seal *sc, const char *plain1k, const char *big)
{
    const char *to_b[] = { fb, NULL };
    const char *to_bx[] = { fb, "0123456789ABCDEF0123456789ABCDEF01234567", NULL };
    struct stream_job job = { sc, to_b, -1, -1, -1, "" };
    sm_pgp_result res;
    struct stat st;
    pthread_t th;
    int pair[2], ofd, unread = -1, rc, started;

    /* a key refused: nothing read, nothing written, the same input serves
     * a second try to the other keys (the milter's fallback) */
    ok(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0 && write_all(pair[1], plain1k, 1024) == 0,
       "1 KiB waits in a socket");
    ofd = open(path("st1.pgp"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    rc = sm_seal_encrypt_sign_stream(sc, to_bx, NULL, pair[0], ofd, why, sizeof why);
    ok(rc == SM_PGP_REJECT && ioctl(pair[0], FIONREAD, &unread) == 0 && unread == 1024
       && fstat(ofd, &st) == 0 && st.st_size == 0,
       "fed, to b and a key c lacks: REJECT with the 1 KiB unread and nothing written (%s)",
       why);
    close(pair[1]);
    rc = sm_seal_encrypt_sign_stream(sc, to_b, NULL, pair[0], ofd, why, sizeof why);
    close(pair[0]);
    close(ofd);
    ok(rc == SM_PGP_OK && open_file(sb, path("st1.pgp"), path("st1.out"), fc, &res) == SM_PGP_OK
       && same_files(path("plain1k"), path("st1.out")),
       "then to b alone from the same socket: b opens the 1 KiB, c's signature good (%s)",
       why);

    /* c's seal has one slot. A seal that took it while waiting for its
     * input would keep the key check below waiting for ever: the alarm
     * ends the test then (a hang guard, not a timing). */
    ok(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0, "a socket to feed 3 MiB through");
    job.in_fd = pair[0];
    job.out_fd = ofd = open(path("st2.pgp"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    started = pthread_create(&th, NULL, stream_run, &job) == 0;
    ok(started && write_all(pair[1], big, 65536) == 0, "the seal runs, 64 KiB fed");
    /* the seal has read it all: it is inside librnp's run, waiting for more */
    while (ioctl(pair[0], FIONREAD, &unread) == 0 && unread > 0)
        nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
    alarm(300);
    ok(sm_seal_key_check(sc, fb, NULL, why, sizeof why) == SM_PGP_OK,
       "while it waits for more input, the one slot is free: a key check runs (%s)", why);
    alarm(0);
    ok(write_all(pair[1], big + 65536, BIG - 65536) == 0, "the rest fed");
    close(pair[1]);
    if (started)
        pthread_join(th, NULL);
    close(pair[0]);
    close(ofd);
    ok(job.rc == SM_PGP_OK && open_file(sb, path("st2.pgp"), path("st2.out"), fc, &res) == SM_PGP_OK
       && same_files(path("big"), path("st2.out")),
       "b opens the 3 MiB sealed as it came: byte-identical (%s %s)", job.why, why);
}

int main(void)
{
    static char big[BIG];
    const char *to_b[] = { fb, NULL }, *to_bc[] = { fb, fc, NULL }, *to_none[] = { NULL };
    sm_seal *sa = NULL, *sb = NULL, *sc = NULL, *sx = NULL;
    sm_pgp_result res;
    char plain1k[1024], signer[SM_PGP_FPR_MAX + 1];
    struct worker w[THREADS];
    pthread_t th[THREADS];
    double t0, t_seal, t_gpg;
    int i, failures;
    size_t off;

    /* line-buffered, as in test_pgp: gpgme's children under valgrind flush
     * a copy of a pending stdout buffer, duplicating TAP lines */
    setvbuf(stdout, NULL, _IOLBF, 0);
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
       && write_file(path("big"), big, sizeof big) == 0
       && sh("{ printf 'From: alice@a.example\\r\\nTo: bob@b.example\\r\\n"
             "Subject: minutes\\r\\n\\r\\n'; for i in $(seq 1 200); do printf 'Item %%d: "
             "the committee agreed to meet again next week.\\r\\n' $i; done; } > %s",
             path("mail")) == 0
       && file_size(path("mail")) > 8192, "plaintexts written");

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
    ok(seal_file(sa, to_b, path("plain1k"), path("s1.pgp")) == SM_PGP_OK,
       "a seals 1 KiB for b (%s)", why);
    ok(gpg_open(home_b, path("s1.pgp"), path("s1.out"), signer) == 0
       && same_files(path("plain1k"), path("s1.out")),
       "the gpg command line opens it: decrypted, one good signature, same text");
    is_str(signer, fa, "gpg names a's key as the signer");
    ok(sh("gpg --homedir %s --batch --list-packets %s 2>/dev/null | grep -q 'compressed packet'",
          home_b, path("s1.pgp")) != 0
       && sh("gpg --homedir %s --batch --list-packets %s 2>/dev/null | grep -q 'mdc_method: 2'",
             home_b, path("s1.pgp")) == 0,
       "stored form: no compression, SEIPD with MDC");

    /* sealed from memory (the milter's path for a message that fits its
     * buffer): the same OpenPGP, gpg opens it to the same text */
    {
        int ofd = open(path("m1.pgp"), O_WRONLY | O_CREAT | O_TRUNC, 0600), rc, full;

        rc = sm_seal_encrypt_sign_mem(sa, to_b, NULL, plain1k, sizeof plain1k, ofd, why, sizeof why);
        close(ofd);
        ok(rc == SM_PGP_OK, "a seals 1 KiB from memory for b (%s)", why);
        ok(gpg_open(home_b, path("m1.pgp"), path("m1.out"), signer) == 0
           && !strcmp(signer, fa) && same_files(path("plain1k"), path("m1.out")),
           "the gpg command line opens it: decrypted, a's signature good, same text (%s)",
           why);
        full = open("/dev/full", O_WRONLY);
        rc = sm_seal_encrypt_sign_mem(sa, to_b, NULL, plain1k, sizeof plain1k, full, why, sizeof why);
        close(full);
        ok(rc == SM_PGP_ERROR, "from memory into a full disk: ERROR: %s", why);
        ok(sm_seal_encrypt_sign_mem(sa, to_none, NULL, plain1k, sizeof plain1k, 1, why, sizeof why)
           == SM_PGP_REJECT, "from memory, no recipients: REJECT");
    }

    /* sealed from memory into memory (the milter's path for a body stored
     * in its row): the same OpenPGP, gpg opens it to the same text */
    {
        unsigned char *sealed = NULL;
        size_t sealed_len = 0;
        int rc, ofd;

        rc = sm_seal_encrypt_sign_mem_mem(sa, to_b, NULL, plain1k, sizeof plain1k, &sealed,
                                          &sealed_len, why, sizeof why);
        ok(rc == SM_PGP_OK && sealed && sealed_len > sizeof plain1k,
           "a seals 1 KiB from memory into memory for b: %zu octets (%s)", sealed_len, why);
        ofd = open(path("mm1.pgp"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ok(ofd >= 0 && sealed && write(ofd, sealed, sealed_len) == (ssize_t)sealed_len,
           "written out for gpg");
        close(ofd);
        ok(gpg_open(home_b, path("mm1.pgp"), path("mm1.out"), signer) == 0
           && !strcmp(signer, fa) && same_files(path("plain1k"), path("mm1.out")),
           "the gpg command line opens it: decrypted, a's signature good, same text");
        free(sealed);
        /* a receipt rides in the literal data's file name, and comes out */
        rc = sm_seal_encrypt_sign_mem_mem(sa, to_b, "stubmail-receipt.R", plain1k,
                                          sizeof plain1k, &sealed, &sealed_len, why,
                                          sizeof why);
        ofd = open(path("mm2.pgp"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ok(rc == SM_PGP_OK && ofd >= 0
           && write(ofd, sealed, sealed_len) == (ssize_t)sealed_len, "sealed with a file name");
        close(ofd);
        free(sealed);
        ok(open_file(sb, path("mm2.pgp"), path("mm2.out"), fa, &res) == SM_PGP_OK
           && !strcmp(res.literal_name, "stubmail-receipt.R")
           && same_files(path("plain1k"), path("mm2.out")),
           "opened: the file name is there, the text unchanged (%s)", res.literal_name);
        ok(sh("gpg --homedir %s --batch --list-packets %s 2>/dev/null | grep -q "
              "'name=\"stubmail-receipt.R\"'", home_b, path("mm2.pgp")) == 0,
           "gpg --list-packets shows it");
        sealed = (unsigned char *)"x";
        ok(sm_seal_encrypt_sign_mem_mem(sa, to_none, NULL, plain1k, sizeof plain1k, &sealed,
                                        &sealed_len, why, sizeof why) == SM_PGP_REJECT
           && sealed == NULL && sealed_len == 0,
           "into memory, no recipients: REJECT, nothing handed back");
    }

    stream_tests(sb, sc, plain1k, big);

    /* sealed by gpg, opened here */
    ok(gpg_seal(home_a, fa, fb, path("big"), path("g1.pgp")) == 0,
       "the gpg command line seals 3 MiB for b");
    ok(open_file(sb, path("g1.pgp"), path("g1.out"), fa, &res) == SM_PGP_OK
       && res.decrypted && res.sig == SM_PGP_SIG_VALID && same_files(path("big"), path("g1.out")),
       "the seal opens gpg's 3 MiB: valid, byte-identical (%s)", why);

    /* two recipients; each opens it */
    ok(seal_file(sa, to_bc, path("big"), path("s2.pgp")) == SM_PGP_OK,
       "a seals 3 MiB for b and c (%s)", why);
    ok(open_file(sb, path("s2.pgp"), path("s2b.out"), fa, &res) == SM_PGP_OK
       && same_files(path("big"), path("s2b.out")), "b opens it");
    ok(open_file(sc, path("s2.pgp"), path("s2c.out"), fa, &res) == SM_PGP_OK
       && same_files(path("big"), path("s2c.out")), "c opens it");
    ok(open_file(sc, path("s1.pgp"), path("s1c.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "c cannot open what was sealed for b alone: %s", why);

    /* verdicts */
    ok(open_file(sb, path("s1.pgp"), path("x.out"), fc, &res) == SM_PGP_REJECT
       && res.decrypted && res.sig == SM_PGP_SIG_WRONG_SIGNER && strcmp(res.signer_fpr, fa) == 0,
       "expecting c's signature on a's: WRONG_SIGNER (%s)", why);
    ok(sh("cp %s %s", path("s1.pgp"), path("t.pgp")) == 0 && flip_bit(path("t.pgp"), 200) == 0
       && open_file(sb, path("t.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "one octet changed: REJECT, not decrypted: %s", why);
    ok(sh("gpg --homedir %s --batch --quiet --trust-model always --compress-algo none -r %s "
          "--encrypt -o %s %s", home_a, fb, path("u.pgp"), path("plain1k")) == 0
       && open_file(sb, path("u.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && res.decrypted && res.sig == SM_PGP_SIG_MISSING, "encrypted, unsigned: MISSING");
    ok(sh("gpg --homedir %s --batch --quiet --yes --trust-model always --compress-algo none "
          "-r %s --sign --encrypt -o %s %s", home_c, fb, path("cs.pgp"), path("plain1k")) == 0
       && open_file(sb, path("cs.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && res.decrypted && (res.sig == SM_PGP_SIG_NO_KEY || res.sig == SM_PGP_SIG_WRONG_SIGNER)
       && res.signer_fpr[0] && strstr(fc, res.signer_fpr),
       "signed by c with a's expected: refused, c's key named (%s)", why);
    ok(sh("printf 'not openpgp at all' > %s", path("j.pgp")) == 0
       && open_file(sb, path("j.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "junk: REJECT: %s", why);
    ok(sh("head -c 2000000 %s > %s", path("s2.pgp"), path("h.pgp")) == 0
       && open_file(sb, path("h.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "truncated: REJECT, not decrypted: %s", why);
    ok(sh("gpg --homedir %s --batch --quiet --yes --compress-algo none -u %s --sign -o %s %s",
          home_a, fa, path("so.pgp"), path("plain1k")) == 0
       && open_file(sb, path("so.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "signed, not encrypted: REJECT, not decrypted: %s", why);
    ok(sh("gpg --homedir %s --batch --quiet --yes --trust-model always --rfc2440 --cipher-algo "
          "CAST5 --compress-algo none -u %s -r %s --sign --encrypt -o %s %s 2>/dev/null",
          home_a, fa, fb, path("nomdc.pgp"), path("plain1k")) == 0
       && open_file(sb, path("nomdc.pgp"), path("x.out"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted && strstr(why, "integrity"),
       "encrypted without integrity protection (no MDC): REJECT: %s", why);
    refused_compressed(sb, "", 2, path("mail"),
                       "gpg's default sign+encrypt of an 11 KiB mail text");
    refused_compressed(sb, "--compress-algo zip", 1, path("mail"), "compressed with zip");
    refused_compressed(sb, "--compress-algo zlib", 2, path("mail"), "compressed with zlib");
    refused_compressed(sb, "--compress-algo bzip2", 3, path("mail"), "compressed with bzip2");
    ok(sh("head -c 67108864 /dev/zero > %s", path("zeros")) == 0, "64 MiB of zeros written");
    refused_compressed(sb, "--compress-algo bzip2", 3, path("zeros"),
                       "a bomb: 64 MiB of zeros, bzip2");
    ok(open_file(sb, path("s1.pgp"), path("x.out"), "xyz", &res) == SM_PGP_REJECT
       && !res.decrypted, "an expected signer that is no fingerprint: REJECT: %s", why);
    ok(seal_file(sa, to_none, path("plain1k"), path("x.pgp")) == SM_PGP_REJECT,
       "no recipients: REJECT");
    {
        const char *to_x[] = { "0123456789ABCDEF0123456789ABCDEF01234567", NULL };
        ok(seal_file(sa, to_x, path("plain1k"), path("x.pgp")) == SM_PGP_REJECT
           && strstr(why, "not in the keyring"), "a recipient key not in the keyring: %s", why);
    }
    {
        const char *to_bad[] = { "abc", NULL };
        ok(seal_file(sa, to_bad, path("plain1k"), path("x.pgp")) == SM_PGP_REJECT
           && strstr(why, "not a fingerprint"), "a recipient that is no fingerprint: %s", why);
    }
    ok(open_file(sb, path("s1.pgp"), "/dev/full", fa, &res) == SM_PGP_ERROR,
       "output that cannot be written: ERROR (retry), not a verdict: %s", why);
    ok(seal_file(sa, to_b, path("plain1k"), "/dev/full") == SM_PGP_ERROR,
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
                rc = seal_file(sa, to_bc, path("big"), path("late.pgp"));
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
        ok(sub_fpr[0] && seal_file(sa, to_sub, path("plain1k"), path("x.pgp"))
                         == SM_PGP_REJECT && strstr(why, "subkey"),
           "a recipient named by its subkey's fingerprint: REJECT (%s)", why);
    }

    /* c's key revoked in a's keyring: after sm_seal_forget, a no longer
     * encrypts to it */
    ok(sh("sed 's/^:-----/-----/' %s/openpgp-revocs.d/%s.rev | gpg --homedir %s --batch --quiet "
          "--import 2>/dev/null", home_c, fc, home_a) == 0, "c's key revoked in a's keyring");
    ok(seal_file(sa, to_bc, path("plain1k"), path("x.pgp")) == SM_PGP_OK,
       "until forgotten, the seal still holds the key it loaded");
    ok(sm_seal_key_check(sa, fc, NULL, why, sizeof why) == SM_PGP_OK,
       "so does the key check");
    sm_seal_forget(sa, fc);
    ok(seal_file(sa, to_bc, path("plain1k"), path("x.pgp")) == SM_PGP_REJECT
       && strstr(why, fc), "after sm_seal_forget: REJECT (%s)", why);
    ok(sm_seal_key_check(sa, fc, NULL, why, sizeof why) == SM_PGP_REJECT && strstr(why, "revoked"),
       "and the key check says revoked: %s", why);

    subkey_tests();

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
        seal_file(sa, to_b, path("plain1k"), path("r.pgp"));
    t_seal = (now() - t0) / ROUNDS;
    t0 = now();
    for (i = 0; i < ROUNDS / 10; i++)
        gpg_seal(home_a, fa, fb, path("plain1k"), path("r.pgp"));
    t_gpg = (now() - t0) / (ROUNDS / 10);
    printf("# seal 1 KiB: in process %.3f ms, gpg command line %.3f ms (%.0fx)\n", t_seal * 1e3,
           t_gpg * 1e3, t_gpg / t_seal);
    t0 = now();
    for (i = 0; i < ROUNDS; i++)
        open_file(sb, path("s1.pgp"), path("r.out"), fa, &res);
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
