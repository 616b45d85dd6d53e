/* Unit tests: a key rotation on the receiving side (docs/PROTOCOL.md "Key
 * rotation"). b.example has switched from its old key O to the new key N
 * while a.example still encrypts to O: b's seal, whose own key is N, opens
 * that body only with O added by sm_seal_decrypt_also, and not in a home
 * that has lost O's secret half. Also sm_keyfpr, mod_stubmail's reading of
 * its key files: the fingerprint of an armored export is the one gpg made. */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sm_keyfpr.h"
#include "sm_pgp.h"
#include "sm_seal.h"
#include "tap.h"

static char base[] = "/tmp/smsrXXXXXX";
#include "testfiles.h"
static char why[SM_PGP_WHY_MAX];

static int __attribute__((format(printf, 1, 2))) sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
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

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* sm_keyfpr on the armored export of fpr from home. */
static void keyfpr_is(const char *home, const char *fpr, const char *name)
{
    char got[SM_KEYFPR_MAX + 1] = "", *text = NULL;
    size_t len = 0;

    if (sm_pgp_export_public(home, fpr, &text, &len, why, sizeof why) != SM_PGP_OK
        || sm_keyfpr_armored(text, len, got, why, sizeof why) != 0)
        got[0] = '\0';
    is_str(got, fpr, "sm_keyfpr: %s's fingerprint from its armored export (%s)", name, why);
    free(text);
}

static void keyfpr_refuses(void)
{
    static const char not_armored[] = "mDMEaXx0ZRYJKwYBBAHaRw8BAQdA";
    static const char no_key[] = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n"
                                 "iQ==\n-----END PGP PUBLIC KEY BLOCK-----\n";
    char got[SM_KEYFPR_MAX + 1];

    ok(sm_keyfpr_armored(not_armored, sizeof not_armored - 1, got, why, sizeof why) != 0,
       "sm_keyfpr: not armored is refused: %s", why);
    ok(sm_keyfpr_armored(no_key, sizeof no_key - 1, got, why, sizeof why) != 0,
       "sm_keyfpr: a block without a key packet is refused: %s", why);
}

int main(void)
{
    char home_a[64], home_b[64], home_n[64];
    char fa[SM_PGP_FPR_MAX + 1], fo[SM_PGP_FPR_MAX + 1], fn[SM_PGP_FPR_MAX + 1];
    const char *to_o[] = { fo, NULL };
    sm_seal *sa = NULL, *sb = NULL, *sn = NULL, *sx = NULL;
    sm_pgp_result res;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!mkdtemp(base)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    snprintf(home_a, sizeof home_a, "%s/a", base);
    snprintf(home_b, sizeof home_b, "%s/b", base);
    snprintf(home_n, sizeof home_n, "%s/n", base);
    if (sm_pgp_create_domain_key(home_a, "a.example", fa, why, sizeof why) != SM_PGP_OK
        || sm_pgp_create_domain_key(home_b, "b.example", fo, why, sizeof why) != SM_PGP_OK
        || sm_pgp_new_domain_key(home_b, "b.example", fn, why, sizeof why) != SM_PGP_OK) {
        printf("Bail out! keys: %s\n", why);
        return 1;
    }
    /* a holds b's old key only (its record still said fpr=O); b holds a's.
     * home_n is b after the finish: N's secret, O's public half only. */
    ok(sh("gpg --homedir %s --batch --quiet --export %s | gpg --homedir %s --batch --quiet "
          "--import 2>/dev/null", home_b, fo, home_a) == 0
       && sh("gpg --homedir %s --batch --quiet --export %s | gpg --homedir %s --batch --quiet "
             "--import 2>/dev/null", home_a, fa, home_b) == 0
       && sh("mkdir -m 700 %s && gpg --homedir %s --batch --quiet --export-secret-keys %s "
             "| gpg --homedir %s --batch --quiet --import 2>/dev/null && gpg --homedir %s "
             "--batch --quiet --export %s %s | gpg --homedir %s --batch --quiet --import "
             "2>/dev/null", home_n, home_b, fn, home_n, home_b, fo, fa, home_n) == 0,
       "keys exchanged with gpg");
    ok(write_file(path("plain"), "Subject: waiting\r\n\r\nsealed to the old key\r\n", 44) == 0,
       "plaintext written");

    ok(sm_seal_new(home_a, fa, 1, &sa, why, sizeof why) == SM_PGP_OK, "a's seal (%s)", why);
    ok(sa && sm_seal_encrypt_sign_fd(sa, to_o, NULL, open(path("plain"), O_RDONLY),
                                     open(path("sealed"), O_WRONLY | O_CREAT | O_TRUNC, 0600),
                                     why, sizeof why) == SM_PGP_OK,
       "a seals to b's old key O (%s)", why);

    ok(sm_seal_new(home_b, fn, 1, &sb, why, sizeof why) == SM_PGP_OK, "b's seal, own key N");
    ok(sb && open_file(sb, path("sealed"), path("out1"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "N alone does not open a body sealed to O: %s", why);
    ok(sb && sm_seal_decrypt_also(sb, fo, why, sizeof why) == SM_PGP_OK,
       "O added for decryption (%s)", why);
    ok(sb && open_file(sb, path("sealed"), path("out2"), fa, &res) == SM_PGP_OK
       && res.decrypted && res.sig == SM_PGP_SIG_VALID
       && same_files(path("plain"), path("out2")), "with O added it opens, signed by a (%s)",
       why);
    /* every context made again, as after a key's TTL: O comes back too */
    if (sb)
        sm_seal_forget(sb, NULL);
    ok(sb && open_file(sb, path("sealed"), path("out2"), fa, &res) == SM_PGP_OK
       && res.decrypted && same_files(path("plain"), path("out2")),
       "and again in a context made afresh (%s)", why);
    ok(sb && sm_seal_decrypt_also(sb, fn, why, sizeof why) == SM_PGP_OK
       && sm_seal_decrypt_also(sb, fo, why, sizeof why) == SM_PGP_REJECT,
       "at most %d further keys: %s", SM_SEAL_DECRYPT_MAX, why);

    /* the finish: O's secret deleted while b's seal runs. The body stays
     * closed (a refusal, not local trouble), and O is dropped from the
     * keys that decrypt: asked for again, it would cost a gpg export per
     * message. Twice, so the second open meets the shorter list. */
    ok(sb && sh("gpg --homedir %s --batch --yes --quiet --delete-secret-keys %s 2>/dev/null",
                home_b, fo) == 0, "O's secret deleted from b's home");
    if (sb)
        sm_seal_forget(sb, NULL);
    ok(sb && open_file(sb, path("sealed"), path("out4"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "after the finish a body sealed to O stays closed: %s", why);
    ok(sb && open_file(sb, path("sealed"), path("out4"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "and again, without O in the list: %s", why);

    ok(sm_seal_new(home_n, fn, 1, &sn, why, sizeof why) == SM_PGP_OK, "seal without O's secret");
    ok(sn && sm_seal_decrypt_also(sn, fo, why, sizeof why) != SM_PGP_OK,
       "O's public half alone cannot be added: %s", why);
    ok(sn && open_file(sn, path("sealed"), path("out3"), fa, &res) == SM_PGP_REJECT
       && !res.decrypted, "and the body stays closed: %s", why);
    ok(sm_seal_new(home_b, fn, 1, &sx, why, sizeof why) == SM_PGP_OK
       && sm_seal_decrypt_also(sx, "nonsense", why, sizeof why) == SM_PGP_REJECT,
       "a malformed fingerprint is refused: %s", why);

    keyfpr_is(home_b, fo, "O");
    keyfpr_is(home_b, fn, "N");
    keyfpr_refuses();

    sm_seal_free(sa);
    sm_seal_free(sb);
    sm_seal_free(sn);
    sm_seal_free(sx);
    sm_pgp_stop_agent(home_a, why, sizeof why);
    sm_pgp_stop_agent(home_b, why, sizeof why);
    sm_pgp_stop_agent(home_n, why, sizeof why);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
