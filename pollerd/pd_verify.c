/* pd_verify.c — the OpenPGP side of stubmail-pollerd: the check of a
 * fetched body before anything of it reaches the MTA, and the quarantine of
 * one that fails it.
 *
 * It also finds the Authentication-Results fields a sender forged in our
 * name (sm_authres), which delivery leaves out.
 *
 * The body is opened in process (sm_seal, librnp), but still blocks the
 * event loop while it decrypts: a big body holds the other domains back.
 * See BUGS in stubmail-pollerd(8). */
#define _GNU_SOURCE 1   /* linkat via /proc */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sm_authres.h"
#include "sm_log.h"
#include "sm_spool.h"
#include "pd.h"

/* The reason a rejection ack gives (docs/PROTOCOL.md, "Fail"). */
static const char *reject_reason(const sm_pgp_result *res)
{
    if (res->compressed)
        return "compressed";
    if (!res->decrypted)
        return "cannot decrypt";
    switch (res->sig) {
    case SM_PGP_SIG_BAD:          return "bad signature";
    case SM_PGP_SIG_MISSING:      return "no signature";
    case SM_PGP_SIG_WRONG_SIGNER:
    case SM_PGP_SIG_NO_KEY:       return "wrong signer";
    default:                      return "invalid signature";
    }
}

int pd_verify(pd_ctx *ctx, const char *signer_fpr, int *fd, long long *size,
              char *reason, char *receipt, char *detail, size_t detaillen)
{
    const pd_conf *c = &ctx->conf;
    sm_pgp_result res;
    struct stat st;
    int out = -1, rc = SM_PGP_ERROR;

    reason[0] = '\0';
    receipt[0] = '\0';
    detail[0] = '\0';
    if (lseek(*fd, 0, SEEK_SET) != 0) {
        sm_why(detail, detaillen, "rewinding the fetched body: %s", strerror(errno));
        goto leave;
    }
    /* plaintext comes out before it is known to be authentic: into a file
     * of its own, used only after a pass */
    if ((out = pd_spool_tmpfile(c->spool_dir)) < 0) {
        sm_why(detail, detaillen, "cannot create a file in %s: %s", c->spool_dir, strerror(errno));
        goto leave;
    }
    rc = sm_seal_decrypt_verify_fd(ctx->seal, *fd, out, signer_fpr, &res, detail, detaillen);
    /* what we opened can be acked, also as a rejection: the receipt proves
     * we hold a key the body was sealed to, even when the body then failed
     * its integrity check or was compressed (its literal data header came
     * out first); a body sealed before receipts has none */
    sm_receipt_from_name(res.literal_name, receipt);
    if (rc == SM_PGP_REJECT)
        snprintf(reason, SM_ACK_REASON_MAX + 1, "%s", reject_reason(&res));
    if (rc != SM_PGP_OK)
        goto leave;
    if (fstat(out, &st) != 0) {
        sm_why(detail, detaillen, "fstat of the decrypted text: %s", strerror(errno));
        rc = SM_PGP_ERROR;
        goto leave;
    }
    close(*fd);
    *fd = out;
    out = -1;
    *size = (long long)st.st_size;
leave:
    if (out >= 0)
        close(out);
    return rc;
}

int pd_forged_results(int fd, const char *authserv_id, sm_range **skips, size_t *nskips,
                      char *why, size_t whylen)
{
    char buf[65536];
    sm_authres_scan scan;
    long long off = 0;
    ssize_t got;
    int r = 0, rc = -1;

    sm_authres_init(&scan, authserv_id);
    /* beyond this, MTAs take the rest as body anyway (Postfix: 100 kB) */
    while (r == 0 && off < PD_HEADER_SCAN_MAX) {
        if ((got = pread(fd, buf, sizeof(buf), off)) < 0) {
            if (errno == EINTR)
                continue;
            sm_why(why, whylen, "reading the message headers: %s", strerror(errno));
            goto leave;
        }
        if (got == 0) {
            r = sm_authres_end(&scan);
            break;
        }
        r = sm_authres_feed(&scan, buf, (size_t)got);
        off += got;
    }
    if (r < 0) {
        sm_why(why, whylen, "out of memory");
        goto leave;
    }
    *skips = scan.ranges;
    *nskips = scan.n;
    scan.ranges = NULL;
    rc = 0;
leave:
    sm_authres_free(&scan);
    return rc;
}

/* Copy fd from its start into a new file path (another file system). */
static int copy_to(int fd, const char *path, char *why, size_t whylen)
{
    char buf[65536];
    off_t off = 0;
    ssize_t n, w, done;
    int out, rc = -1;

    if ((out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
        if (errno == EEXIST)
            return 0;           /* kept already, for another recipient */
        sm_why(why, whylen, "creating %s: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        n = pread(fd, buf, sizeof(buf), off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (done = 0; done < n; done += w) {
            if ((w = write(out, buf + done, (size_t)(n - done))) < 0) {
                if (errno == EINTR) {
                    w = 0;
                    continue;
                }
                sm_why(why, whylen, "writing %s: %s", path, strerror(errno));
                goto leave;
            }
        }
        off += n;
    }
    if (n < 0) {
        sm_why(why, whylen, "reading the fetched body: %s", strerror(errno));
        goto leave;
    }
    if (fsync(out) != 0) {
        sm_why(why, whylen, "fsync %s: %s", path, strerror(errno));
        goto leave;
    }
    rc = 0;
leave:
    close(out);
    if (rc != 0)
        unlink(path);
    return rc;
}

int pd_quarantine(pd_ctx *ctx, const char *domain, const char *id, int fd,
                  char *why, size_t whylen)
{
    const char *dir = ctx->conf.quarantine_dir;
    char path[PATH_MAX], self[64];
    int n;

    n = snprintf(path, sizeof(path), "%s/%s-%s", dir, domain, id);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        sm_why(why, whylen, "quarantine path too long");
        return -1;
    }
    /* the evidence must outlive a crash once the rejection is acked */
    if (fsync(fd) != 0) {
        sm_why(why, whylen, "fsync of the fetched body: %s", strerror(errno));
        return -1;
    }
    /* another name for the fetched file (same file system), else a copy */
    snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) != 0 && errno != EEXIST
        && copy_to(fd, path, why, whylen) != 0)
        return -1;
    if (sm_fsync_dir(dir) != 0) {
        sm_why(why, whylen, "fsync %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}
