/* smf_ctx — stubmail-milter's per-connection and per-message contexts, and
 * the spool file a message is written into while it arrives.
 *
 * The connection context (smf_conn) hangs off the libmilter context and is
 * reached only through smf_conn_get(); the message context (smf_msg) hangs
 * off the connection and is reached only through smf_msg_get(). The
 * callbacks free them on every exit path: a new MAIL FROM, abort, close,
 * and every callback that ends the message. Freeing a message removes the
 * spool files the database does not own yet.
 *
 * Headers and body go into one SMF_BUFSZ buffer per message. A message
 * that fits (most do) stays there and is sealed from memory: no plaintext
 * file is made, written, read back and removed, which cost more than the
 * seal itself (docs/BENCHMARKS.md). A larger one spills into a plaintext
 * spool file when the buffer first overflows, and goes on through the
 * buffer into that file: memory stays flat whatever the size. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smf.h"

#define SMF_BUFSZ   65536           /* spool write buffer per message */

/* ---- contexts ----------------------------------------------------------- */

smf_conn *smf_conn_get(SMFICTX *ctx)
{
    return smfi_getpriv(ctx);
}

smf_conn *smf_conn_new(SMFICTX *ctx)
{
    smf_conn *conn = smf_conn_get(ctx);

    if (conn)
        return conn;
    if ((conn = calloc(1, sizeof *conn)) == NULL)
        return NULL;
    strcpy(conn->client, "unknown");
    if (smfi_setpriv(ctx, conn) != MI_SUCCESS) {
        free(conn);
        return NULL;
    }
    return conn;
}

smf_msg *smf_msg_new(SMFICTX *ctx, const char *sender)
{
    smf_conn *conn = smf_conn_get(ctx);
    smf_msg *msg;

    if (conn == NULL || (msg = calloc(1, sizeof *msg)) == NULL)
        return NULL;
    snprintf(msg->sender, sizeof msg->sender, "%s", sender);
    conn->msg = msg;
    return msg;
}

smf_msg *smf_msg_get(SMFICTX *ctx)
{
    smf_conn *conn = smf_conn_get(ctx);

    return conn ? conn->msg : NULL;
}

void smf_msg_free(SMFICTX *ctx)
{
    smf_conn *conn = smf_conn_get(ctx);
    smf_msg *msg = conn ? conn->msg : NULL;
    size_t i;

    if (msg == NULL)
        return;
    if (msg->spool_open)
        sm_spool_abort(&msg->spool);
    if (msg->sealed_open)
        sm_spool_abort(&msg->sealed);
    for (i = 0; i < msg->nrcpts; i++) {
        free(msg->rcpts[i].raw);
        free(msg->rcpts[i].addr);
        free(msg->rcpts[i].orcpt);
    }
    free(msg->rcpts);
    free(msg->domains);
    free(msg->buf);
    free(msg->inline_body);
    smf_ident_free(msg);
    free(msg);
    conn->msg = NULL;
}

void smf_conn_free(SMFICTX *ctx)
{
    smf_conn *conn = smf_conn_get(ctx);

    if (conn == NULL)
        return;
    smf_msg_free(ctx);
    free(conn);
    smfi_setpriv(ctx, NULL);
}

const char *smf_qid(SMFICTX *ctx)
{
    const char *qid = smfi_getsymval(ctx, "i");

    return qid && *qid ? qid : "NOQUEUE";
}

/* ---- the spool file ------------------------------------------------------ */

/* The plaintext spool file of a message that outgrew its buffer. */
static int smf_spool_spill(smf_msg *msg)
{
    char id[SM_ID_LEN + 1];
    int saved;

    if (sm_id_new(id) != 0)
        return -1;
    if (sm_spool_create(&msg->spool, msg->spool_dir, id) != 0) {
        saved = errno;
        sm_spool_abort(&msg->spool);
        errno = saved;
        return -1;
    }
    msg->spool_open = 1;
    return 0;
}

int smf_spool_flush(smf_msg *msg)
{
    if (!msg->spool_open || msg->buflen == 0)
        return 0;
    if (sm_spool_write(&msg->spool, msg->buf, msg->buflen) != 0)
        return -1;
    msg->buflen = 0;
    return 0;
}

int smf_spool_write(smf_msg *msg, const void *p, size_t len)
{
    if (msg->buflen + len > SMF_BUFSZ) {
        if ((!msg->spool_open && smf_spool_spill(msg) != 0) || smf_spool_flush(msg) != 0)
            return -1;
        if (len >= SMF_BUFSZ)
            return sm_spool_write(&msg->spool, p, len) != 0 ? -1 : 0;
    }
    memcpy(msg->buf + msg->buflen, p, len);
    msg->buflen += len;
    return 0;
}

int smf_spool_open(smf_msg *msg, const char *spool_dir)
{
    if (msg->buf != NULL)
        return 0;
    if ((msg->buf = malloc(SMF_BUFSZ)) == NULL)
        return -1;
    msg->spool_dir = spool_dir;
    return 0;
}

/* Without SMFIP_HDR_LEADSPC the MTA dropped one space after the colon: put
 * back. Folded values arrive with bare LF line ends (Postfix): stored with
 * CRLF. */
int smf_spool_header(smf_msg *msg, int leadspc, const char *name, const char *value)
{
    const char *p = value, *nl;

    if (smf_spool_write(msg, name, strlen(name)) != 0
        || smf_spool_write(msg, leadspc ? ":" : ": ", leadspc ? 1 : 2) != 0)
        return -1;
    while ((nl = strchr(p, '\n')) != NULL) {
        if (nl > value && nl[-1] == '\r') {
            if (smf_spool_write(msg, p, (size_t)(nl + 1 - p)) != 0)
                return -1;
        } else if (smf_spool_write(msg, p, (size_t)(nl - p)) != 0
                   || smf_spool_write(msg, "\r\n", 2) != 0) {
            return -1;
        }
        p = nl + 1;
    }
    return smf_spool_write(msg, p, strlen(p)) != 0 || smf_spool_write(msg, "\r\n", 2) != 0
        ? -1 : 0;
}

/* ---- the recipients as lists ---------------------------------------------- */

smf_db_rcpt *smf_rcpt_list(const smf_msg *msg, int pulling_only, size_t *n)
{
    smf_db_rcpt *list = calloc(msg->nrcpts ? msg->nrcpts : 1, sizeof *list);
    size_t i;

    *n = 0;
    if (list == NULL)
        return NULL;
    for (i = 0; i < msg->nrcpts; i++) {
        if (msg->rcpts[i].addr == NULL || (pulling_only && !msg->rcpts[i].pulling))
            continue;
        list[*n].addr = msg->rcpts[i].addr;
        list[*n].domain = sm_addr_domain(msg->rcpts[i].addr);
        list[*n].notify = msg->rcpts[i].notify;
        list[*n].orcpt = msg->rcpts[i].orcpt ? msg->rcpts[i].orcpt : "";
        (*n)++;
    }
    return list;
}

void smf_pulling_text(const smf_msg *msg, char *out, size_t outlen)
{
    size_t i, used = 0, len;
    int first = 1;

    out[0] = '\0';
    for (i = 0; i < msg->nrcpts; i++) {
        if (!msg->rcpts[i].pulling)
            continue;
        len = strlen(msg->rcpts[i].addr) + 1;
        if (used + len + 5 >= outlen) {
            snprintf(out + used, outlen - used, ",...");
            return;
        }
        used += (size_t)snprintf(out + used, outlen - used, "%s%s", first ? "" : ",",
                                 msg->rcpts[i].addr);
        first = 0;
    }
}
