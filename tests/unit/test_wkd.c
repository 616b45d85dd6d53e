/* Unit tests: sm_wkd — the WKD hash (the draft's test vector and gpg's own
 * answer), lookup URLs on an outbox origin, and which fetched key blobs get
 * into a keyring: one live public key with an encryption subkey and a user
 * id naming the recipient, nothing else; and that the seal's check of a
 * cached key before each use (sm_seal_key_check) holds it to the same rules.
 * Keys are made with gpg in a throwaway home; the agents are stopped and the
 * homes removed at the end. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sm_seal.h"
#include "sm_wkd.h"
#include "tap.h"

static char base[] = "/tmp/smwkXXXXXX";
#include "testfiles.h"
static char pub_home[64], mil_home[64];
static char why[512];

/* gpg in the publisher's home; 0 on success. */
static int gpg(const char *args)
{
    char cmd[1024];

    snprintf(cmd, sizeof cmd, "gpg --homedir %s --batch --quiet --pinentry-mode loopback "
             "--passphrase '' %s >/dev/null 2>&1", pub_home, args);
    return system(cmd) == 0 ? 0 : -1;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

/* Import the file into the milter's home as a WKD answer for addr. */
static int import_file(const char *file, const char *addr, char fpr[SM_PGP_FPR_MAX + 1])
{
    size_t len;
    char *blob = read_file(path(file), &len);
    int rc = blob ? sm_wkd_import(mil_home, addr, blob, len, fpr, why, sizeof why)
                  : SM_WKD_ERROR;

    if (!blob)
        snprintf(why, sizeof why, "cannot read %s", file);
    free(blob);
    return rc;
}

static int keys_in_milter_home(void)
{
    char cmd[256], line[512];
    FILE *p;
    int n = 0;

    snprintf(cmd, sizeof cmd, "gpg --homedir %s --batch --with-colons --list-keys 2>/dev/null",
             mil_home);
    if (!(p = popen(cmd, "r")))
        return -1;
    while (fgets(line, sizeof line, p))
        if (strncmp(line, "pub:", 4) == 0)
            n++;
    pclose(p);
    return n;
}

static void hash_tests(void)
{
    char h[SM_WKD_HASH_LEN + 1];

    ok(sm_wkd_hash("Joe.Doe", 7, h) == 0, "hash of the draft's example local part");
    is_str(h, "iy9q119eutrkn8s1mk4r39qejnbu3n5q", "draft-koch-openpgp-webkey-service test vector");
    ok(sm_wkd_hash("joe.doe", 7, h) == 0, "lowercase local part");
    is_str(h, "iy9q119eutrkn8s1mk4r39qejnbu3n5q", "A-Z mapped to a-z before hashing");
    ok(sm_wkd_hash("bob", 3, h) == 0, "bob");
    is_str(h, "jycbiujnsxs47xrkethgtj69xuunurok", "what gpg-wks-client --print-wkd-hash says");
    ok(sm_wkd_hash("", 0, h) == -1, "empty local part refused");
}

static void url_tests(void)
{
    const sm_https_opts https = { NULL, 0, 5 }, http = { NULL, 1, 5 };
    char url[SM_WKD_URL_MAX];

    ok(sm_wkd_url("https://127.0.0.3:27443/stubmail", "Joe.Doe@Example.ORG", &https, url,
                  sizeof url, why, sizeof why) == 0, "URL for the test vector: %s", why);
    is_str(url, "https://127.0.0.3:27443/.well-known/openpgpkey/example.org/hu/"
           "iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe",
           "origin of the outbox, lowercased domain, l= the local part as given");
    ok(sm_wkd_url("https://stubmail.example.org:8443/stubmail", "joe.doe@example.org", &https,
                  url, sizeof url, why, sizeof why) == 0, "URL of the PROTOCOL.md example");
    is_str(url, "https://stubmail.example.org:8443/.well-known/openpgpkey/example.org/hu/"
           "iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=joe.doe", "docs/PROTOCOL.md, Recipient keys");
    ok(sm_wkd_url("https://outbox.b.example/x/stubmail/?v=1", "bob@b.example", &https, url,
                  sizeof url, why, sizeof why) == 0, "outbox with a path and query");
    is_str(url, "https://outbox.b.example/.well-known/openpgpkey/b.example/hu/"
           "jycbiujnsxs47xrkethgtj69xuunurok?l=bob", "the outbox's path and query dropped");
    ok(sm_wkd_url("https://[::1]:8443/stubmail", "a+tag@b.example", &https, url, sizeof url,
                  why, sizeof why) == 0, "IPv6 origin");
    ok(strncmp(url, "https://[::1]:8443/.well-known/openpgpkey/b.example/hu/", 55) == 0
       && strstr(url, "?l=a%2Btag") != NULL, "IPv6 host kept, + percent-encoded: %s", url);
    ok(sm_wkd_url("http://127.0.0.3:8080/stubmail", "bob@b.example", &https, url, sizeof url,
                  why, sizeof why) == -1, "plain http refused unless allowed: %s", why);
    ok(sm_wkd_url("http://127.0.0.3:8080/stubmail", "bob@b.example", &http, url, sizeof url,
                  why, sizeof why) == 0, "plain http to loopback when allowed");
    ok(sm_wkd_url("https://a.example/stubmail", "no-at-sign", &https, url, sizeof url, why,
                  sizeof why) == -1, "not an address refused: %s", why);
    ok(sm_wkd_url("https://a.example/stubmail", "bob@bad_domain", &https, url, sizeof url, why,
                  sizeof why) == -1, "bad domain refused: %s", why);
    ok(sm_wkd_url("https://a.example/stubmail", "bob@b.example", &https, url, 20, why,
                  sizeof why) == -1, "too small a buffer: %s", why);
}

/* Make the key blobs a WKD could serve, in the publisher's home. */
static int make_keys(void)
{
    char cmd[2048];

    if (gpg("--quick-gen-key 'Bob <bob@b.example>' future-default default never") != 0)
        return -1;
    /* in base: file names relative, the home by its full path */
    snprintf(cmd, sizeof cmd,
        "set -e; cd %s; G='gpg --homedir %s --batch --quiet --pinentry-mode loopback"
        " --passphrase \"\"';"
        " $G --export bob@b.example > bob.pgp;"
        " $G --armor --export bob@b.example > bob.asc;"
        " $G --export-secret-keys bob@b.example > bob-secret.pgp;"
        " $G --quick-gen-key 'Eve <eve@b.example>' future-default default never;"
        " $G --export eve@b.example > eve.pgp;"
        " cat bob.pgp eve.pgp > two.pgp;"
        " $G --faked-system-time 20200101T000000 --quick-gen-key 'Old <old@b.example>'"
        "   future-default default 1d 2>/dev/null;"
        " $G --export old@b.example > old.pgp;"
        " $G --quick-gen-key 'Rev <rev@b.example>' future-default default never;"
        " F=$($G --with-colons --list-keys rev@b.example | awk -F: '/^fpr/{print $10; exit}');"
        " sed 's/^:-----/-----/' %s/openpgp-revocs.d/$F.rev | $G --import 2>/dev/null;"
        " $G --export rev@b.example > rev.pgp;"
        " $G --quick-gen-key 'Sig <sig@b.example>' ed25519 sign never;"
        " $G --export sig@b.example > sig.pgp;"
        " head -c 4000 /dev/urandom > junk.pgp",
        base, pub_home, pub_home);
    return system(cmd) == 0 ? 0 : -1;
}

/* The milter's check of a cached recipient key before each use
 * (sm_seal_key_check, from memory): over the milter's home, which gets a
 * domain key of its own for the seal. Keys the import refuses are put in
 * with gpg itself, to see the check refuse them too. */
static void seal_tests(const char *bob)
{
    char own[SM_PGP_FPR_MAX + 1], fpr[SM_PGP_FPR_MAX + 2] = "";
    static const struct { const char *file, *addr, *reason; } refused[] = {
        { "sig.pgp", "sig@b.example", "no usable encryption subkey" },
        { "old.pgp", "old@b.example", "expired" },
    };
    sm_seal *seal = NULL;
    char cmd[512];
    FILE *p;
    size_t i;

    ok(sm_pgp_create_domain_key(mil_home, "a.example", own, why, sizeof why) == SM_PGP_OK
       && sm_seal_new(mil_home, own, 1, &seal, why, sizeof why) == SM_PGP_OK,
       "a seal over the milter's home: %s", why);
    if (!seal)
        return;
    ok(sm_seal_key_check(seal, bob, "bob@b.example", why, sizeof why) == SM_PGP_OK,
       "bob's key usable for bob (user id \"Bob <bob@b.example>\"): %s", why);
    ok(sm_seal_key_check(seal, bob, "carol@b.example", why, sizeof why) == SM_PGP_REJECT
       && strstr(why, "no user id"), "but not for carol: %s", why);
    ok(sm_seal_key_check(seal, "0123456789ABCDEF0123456789ABCDEF01234567", "bob@b.example",
                         why, sizeof why) == SM_PGP_REJECT, "an absent key is not usable: %s",
       why);
    for (i = 0; i < sizeof refused / sizeof *refused; i++) {
        snprintf(cmd, sizeof cmd, "gpg --homedir %s --batch --quiet --import %s 2>/dev/null && "
                 "gpg --homedir %s --batch --with-colons --list-keys %s 2>/dev/null "
                 "| awk -F: '/^fpr/{print $10; exit}'", mil_home, path(refused[i].file), mil_home,
                 refused[i].addr);
        fpr[0] = '\0';
        if ((p = popen(cmd, "r")) != NULL) {
            if (!fgets(fpr, sizeof fpr, p))
                fpr[0] = '\0';
            fpr[strcspn(fpr, "\n")] = '\0';
            pclose(p);
        }
        ok(fpr[0] && sm_seal_key_check(seal, fpr, refused[i].addr, why, sizeof why)
                     == SM_PGP_REJECT && strstr(why, refused[i].reason),
           "%s's key, put in by gpg, refused: %s", refused[i].addr, why);
    }
    sm_seal_free(seal);
}

static void import_tests(void)
{
    char fpr[SM_PGP_FPR_MAX + 1], bob[SM_PGP_FPR_MAX + 1];
    int rc;

    if (make_keys() != 0) {
        ok(0, "making the test keys with gpg");
        return;
    }
    rc = import_file("bob-secret.pgp", "bob@b.example", fpr);
    ok(rc == SM_WKD_REFUSED, "a blob with a secret key refused: %s", why);
    rc = import_file("two.pgp", "bob@b.example", fpr);
    ok(rc == SM_WKD_REFUSED && strstr(why, "more than one key"), "two keys refused: %s", why);
    rc = import_file("eve.pgp", "bob@b.example", fpr);
    ok(rc == SM_WKD_REFUSED && strstr(why, "no user id"), "user id of another address "
       "refused: %s", why);
    rc = import_file("old.pgp", "old@b.example", fpr);
    ok(rc == SM_WKD_REFUSED && strstr(why, "expired"), "expired key refused: %s", why);
    rc = import_file("rev.pgp", "rev@b.example", fpr);
    ok(rc == SM_WKD_REFUSED && strstr(why, "revoked"), "revoked key refused: %s", why);
    rc = import_file("sig.pgp", "sig@b.example", fpr);
    ok(rc == SM_WKD_REFUSED && strstr(why, "encryption"), "key without an encryption "
       "subkey refused: %s", why);
    rc = import_file("junk.pgp", "bob@b.example", fpr);
    ok(rc == SM_WKD_REFUSED, "junk refused: %s", why);
    ok(sm_wkd_import(mil_home, "bob@b.example", "x", 0, fpr, why, sizeof why)
       == SM_WKD_REFUSED, "empty answer refused: %s", why);
    ok(keys_in_milter_home() == 0, "nothing refused got into the keyring");

    rc = import_file("bob.pgp", "bob@b.example", bob);
    ok(rc == SM_WKD_FOUND && sm_pgp_fpr_valid(bob), "bob's key accepted: %s", why);
    rc = import_file("bob.asc", "Bob@B.Example", fpr);
    ok(rc == SM_WKD_FOUND && strcmp(fpr, bob) == 0, "armored too, address case ignored: %s",
       why);
    ok(keys_in_milter_home() == 1, "exactly bob's key in the keyring");
    seal_tests(bob);
}

int main(void)
{
    int rc;

    /* line-buffered, as in test_pgp: gpgme's children under valgrind flush
     * a copy of a pending stdout buffer, duplicating TAP lines */
    setvbuf(stdout, NULL, _IOLBF, 0);
    hash_tests();
    url_tests();
    if (!mkdtemp(base)) {
        ok(0, "mkdtemp");
        return tap_done();
    }
    snprintf(pub_home, sizeof pub_home, "%s/p", base);
    snprintf(mil_home, sizeof mil_home, "%s/m", base);
    mkdir(pub_home, 0700);
    mkdir(mil_home, 0700);
    import_tests();
    sm_pgp_stop_agent(pub_home, why, sizeof why);
    sm_pgp_stop_agent(mil_home, why, sizeof why);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    rc = tap_done();
    return rc;
}
