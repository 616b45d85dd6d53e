/* smf_stream — the seal of a message that outgrew its buffer, made while
 * the message arrives, so that no plaintext of it reaches the milter's
 * disk: what is at rest is the sealed body's spool file, growing.
 *
 * librnp pulls its input (sm_seal_encrypt_sign_stream reads an fd), and
 * the body comes to the callbacks as libmilter pushes it: a thread per
 * streamed message runs the seal, reading one end of a socket pair that
 * the callbacks write the message into (smf_stream_write). The socket's
 * buffer is the only one between them: a writer ahead of the seal waits,
 * so memory stays flat whatever the size. The seal takes no slot of the
 * seal's pool (SMF_SEAL_SLOTS): it lasts as long as the client takes to
 * send, and a few slow big messages must not keep every small one waiting
 * at its end.
 *
 * The seal ends only when its input does: at end of message
 * (smf_stream_finish: the file is committed), or when the message goes
 * (smf_stream_stop: abort, close, refusal; the seal finishes on what it
 * got and the message context removes the file), or on its own failure,
 * when it closes its end so that the next write fails instead of waiting
 * on a socket nobody reads (writes use MSG_NOSIGNAL: no SIGPIPE). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smf.h"

struct smf_stream {
    sm_seal *seal;
    char qid[SMF_QID_MAX + 1];
    char id[SM_ID_LEN + 1];
    char sender[SM_ADDR_MAX + 1];
    char receipt_name[SMF_RECEIPT_NAME_MAX];  /* the literal data's file name */
    char fpr[SMF_SEAL_KEYS_MAX][SM_PGP_FPR_MAX + 1];   /* copies: the thread
                                                           reads no message context */
    const char *fprs[SMF_SEAL_KEYS_MAX + 1];
    size_t n, ndom;
    int in_fd;                  /* the seal's end; the thread closes it when done */
    int feed_fd;                /* the callbacks' end; -1 once the input ended */
    int out_fd;                 /* the sealed body's spool file (msg->sealed.fd) */
    pthread_t thread;
    int running;                /* thread started and not joined yet */
    smf_seal_status rc;         /* the thread's verdict, once joined */
    char why[1024];
};

static void *smf_stream_run(void *arg)
{
    smf_stream *st = arg;

    st->rc = smf_seal_stream(st->seal, st->qid, st->id, st->sender, st->fprs, st->n, st->ndom,
                             st->receipt_name, st->in_fd, st->out_fd, st->why, sizeof st->why);
    close(st->in_fd);
    return NULL;
}

/* The input ends (EOF to the seal) and the thread is waited for: its
 * verdict. */
static smf_seal_status smf_stream_join(smf_stream *st)
{
    if (st->feed_fd >= 0) {
        close(st->feed_fd);
        st->feed_fd = -1;
    }
    if (st->running) {
        pthread_join(st->thread, NULL);
        st->running = 0;
    }
    return st->rc;
}

int smf_stream_start(smf_msg *msg, char *why, size_t whylen)
{
    const smf_settings *set = msg->set;
    smf_stream *st = NULL;
    const char **keys = NULL;
    int pair[2] = { -1, -1 }, rc = -1, err;
    size_t i;

    if (!msg->keys_ready) {
        /* not reached with a milter protocol 6 MTA, which always has one */
        snprintf(why, whylen, "no keys to seal the message with as it arrives: the MTA "
                 "skipped the DATA step");
        goto leave;
    }
    if ((st = calloc(1, sizeof *st)) == NULL
        || (keys = calloc(msg->ndomains + msg->nrcpts + 1, sizeof *keys)) == NULL) {
        snprintf(why, whylen, "out of memory for the seal of a big message");
        goto leave;
    }
    st->feed_fd = st->in_fd = -1;
    st->n = smf_seal_keys(msg->qid, msg, keys, &st->ndom);
    for (i = 0; i < st->n; i++) {
        snprintf(st->fpr[i], sizeof st->fpr[i], "%s", keys[i]);
        st->fprs[i] = st->fpr[i];
    }
    if (sm_id_new(msg->id) != 0) {
        snprintf(why, whylen, "no random message id: %s", strerror(errno));
        goto leave;
    }
    if (smf_seal_receipt(msg, st->receipt_name, sizeof st->receipt_name, why, whylen) != 0)
        goto leave;
    msg->sealed_open = 1;               /* from here smf_msg_free removes it */
    if (sm_spool_create(&msg->sealed, set->spool_dir, msg->id) != 0) {
        snprintf(why, whylen, "cannot create spool file in %s: %s", set->spool_dir,
                 strerror(errno));
        goto leave;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        snprintf(why, whylen, "no socket pair to seal message id %s through: %s", msg->id,
                 strerror(errno));
        goto leave;
    }
    st->seal = set->seal;
    snprintf(st->qid, sizeof st->qid, "%s", msg->qid);
    snprintf(st->id, sizeof st->id, "%s", msg->id);
    snprintf(st->sender, sizeof st->sender, "%s", msg->sender);
    st->in_fd = pair[0];
    st->out_fd = msg->sealed.fd;
    if ((err = pthread_create(&st->thread, NULL, smf_stream_run, st)) != 0) {
        snprintf(why, whylen, "no thread to seal message id %s in: %s", msg->id,
                 strerror(err));
        goto leave;
    }
    st->running = 1;
    st->feed_fd = pair[1];
    pair[0] = pair[1] = -1;             /* the thread's and the stream's now */
    msg->stream = st;
    st = NULL;
    rc = 0;
leave:
    if (pair[0] >= 0)
        close(pair[0]);
    if (pair[1] >= 0)
        close(pair[1]);
    free(st);
    free(keys);
    return rc;
}

int smf_stream_write(smf_msg *msg, const void *p, size_t len, char *why, size_t whylen)
{
    smf_stream *st = msg->stream;
    const char *at = p;
    ssize_t n;
    int rc = -1, err;

    while (len > 0) {
        if ((n = send(st->feed_fd, at, len, MSG_NOSIGNAL)) < 0) {
            if (errno == EINTR)
                continue;
            /* the seal closed its end: it failed, and says why */
            err = errno;
            if (smf_stream_join(st) != SMF_SEAL_OK)
                snprintf(why, whylen, "%s", st->why);
            else
                snprintf(why, whylen, "cannot hand message id %s to its seal: %s", st->id,
                         strerror(err));
            goto leave;
        }
        at += n;
        len -= (size_t)n;
    }
    rc = 0;
leave:
    return rc;
}

int smf_stream_finish(smf_msg *msg, char *why, size_t whylen)
{
    smf_stream *st = msg->stream;
    int rc = -1;

    if (smf_stream_join(st) != SMF_SEAL_OK) {
        snprintf(why, whylen, "%s", st->why);
        goto leave;
    }
    if (smf_seal_commit(msg->set, msg, why, whylen) != 0)
        goto leave;
    rc = 0;
leave:
    free(st);
    msg->stream = NULL;
    return rc;
}

void smf_stream_stop(smf_msg *msg)
{
    if (msg->stream != NULL) {
        smf_stream_join(msg->stream);
        free(msg->stream);
        msg->stream = NULL;
    }
}
