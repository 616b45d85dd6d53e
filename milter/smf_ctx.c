/* smf_ctx — stubmail-milter's per-connection and per-message contexts, and
 * the buffer a message is written into while it arrives.
 *
 * The connection context (smf_conn) hangs off the libmilter context and is
 * reached only through smf_conn_get(); the message context (smf_msg) hangs
 * off the connection and is reached only through smf_msg_get(). A
 * connection holds the settings in use when it came (smf_reload.c) until
 * it closes, and its messages read those: a reload meanwhile changes
 * nothing for them. The
 * callbacks free them on every exit path: a new MAIL FROM, abort, close,
 * and every callback that ends the message. Freeing a message ends its
 * seal if one is running and removes the spool files the database does not
 * own yet.
 *
 * Headers and body go into one SMF_BUFSZ buffer per message. A message
 * that fits (most do) stays there and is sealed from memory at its end
 * (smf_seal.c). When a larger one first overflows the buffer, its seal
 * starts (smf_stream.c) and the message goes on through the buffer into
 * it: the milter writes no plaintext to disk, and memory stays flat
 * whatever the size. */
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
    conn->set = smf_settings_hold();
    return conn;
}

smf_msg *smf_msg_new(SMFICTX *ctx, const char *sender)
{
    smf_conn *conn = smf_conn_get(ctx);
    smf_msg *msg;

    if (conn == NULL || (msg = calloc(1, sizeof *msg)) == NULL)
        return NULL;
    snprintf(msg->sender, sizeof msg->sender, "%s", sender);
    msg->set = conn->set;
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
    smf_stream_stop(msg);               /* first: its thread writes to sealed */
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
    smf_msg_free(ctx);              /* first: a seal still running uses the settings */
    smf_settings_release(conn->set);
    free(conn);
    smfi_setpriv(ctx, NULL);
}

const char *smf_qid(SMFICTX *ctx)
{
    const char *qid = smfi_getsymval(ctx, "i");

    return qid && *qid ? qid : "NOQUEUE";
}

/* ---- the message's buffer ------------------------------------------------ */

int smf_spool_flush(smf_msg *msg)
{
    int rc = 0;

    if (msg->stream != NULL && msg->buflen > 0) {
        if ((rc = smf_stream_write(msg, msg->buf, msg->buflen, msg->spool_why,
                                   sizeof msg->spool_why)) == 0)
            msg->buflen = 0;
    }
    return rc;
}

int smf_spool_write(smf_msg *msg, const void *p, size_t len)
{
    int rc = -1;

    if (msg->buflen + len > SMF_BUFSZ) {
        if ((msg->stream == NULL
             && smf_stream_start(msg, msg->spool_why, sizeof msg->spool_why) != 0)
            || smf_spool_flush(msg) != 0)
            goto leave;
        if (len >= SMF_BUFSZ) {
            rc = smf_stream_write(msg, p, len, msg->spool_why, sizeof msg->spool_why);
            goto leave;
        }
    }
    memcpy(msg->buf + msg->buflen, p, len);
    msg->buflen += len;
    rc = 0;
leave:
    return rc;
}

int smf_spool_open(smf_msg *msg, const char *qid)
{
    int rc = 0;

    if (msg->buf == NULL) {
        if ((msg->buf = malloc(SMF_BUFSZ)) == NULL) {
            snprintf(msg->spool_why, sizeof msg->spool_why, "out of memory for the message");
            rc = -1;
        }
        snprintf(msg->qid, sizeof msg->qid, "%s", qid);
    }
    return rc;
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
