/* smf_ident — a submission's identity: what a client's retry of a message
 * repeats, so that a message stored once is not stored again when the
 * client, told 4xx after the commit (the milter died before its reply, or
 * the reply was lost), sends it again (sql/021).
 *
 * The MTA's queue id is new at every attempt, and so is a Received header
 * that an MTA in front of the milter writes with it (sendmail hands milters
 * its own; Postfix's smtpd did not in our tests). What repeats is the
 * envelope and the content the client sends: SHA-256 over every header but
 * Received (a relaying client wrote its own once, when it took the
 * message, not per attempt: leaving all of them out costs nothing), the
 * body, the envelope sender and the recipients in the order given. Only a
 * message with a Message-ID has an identity: without one, two identical
 * sends on purpose cannot be told from a retry. */
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "smf.h"

/* The digest under way, made on first use; -1 when it cannot be made (the
 * message then has no identity: stored as before, never refused). */
static int ident_update(smf_msg *msg, const void *p, size_t len)
{
    if (msg->ident_broken)
        return -1;
    if (msg->ident == NULL
        && ((msg->ident = EVP_MD_CTX_new()) == NULL
            || EVP_DigestInit_ex(msg->ident, EVP_sha256(), NULL) != 1)) {
        msg->ident_broken = 1;
        return -1;
    }
    if (EVP_DigestUpdate(msg->ident, p, len) != 1) {
        msg->ident_broken = 1;
        return -1;
    }
    return 0;
}

void smf_ident_header(smf_msg *msg, const char *name, const char *value)
{
    if (strcasecmp(name, "Received") == 0)
        return;
    if (strcasecmp(name, "Message-ID") == 0)
        msg->ident_msgid = 1;
    /* NUL after name and value: no two headers hash alike by moving the colon */
    ident_update(msg, name, strlen(name) + 1);
    ident_update(msg, value, strlen(value) + 1);
}

void smf_ident_body(smf_msg *msg, const void *p, size_t len)
{
    /* a separator, so that a body's first octets never pass for a header */
    if (!msg->ident_body) {
        msg->ident_body = 1;
        ident_update(msg, "", 1);
    }
    ident_update(msg, p, len);
}

int smf_ident_end(smf_msg *msg, unsigned char out[SMF_IDENT_LEN])
{
    unsigned int len = 0;
    size_t i;
    int rc = -1;

    if (!msg->ident_msgid || ident_update(msg, "", 1) != 0
        || ident_update(msg, msg->sender, strlen(msg->sender) + 1) != 0)
        goto leave;
    for (i = 0; i < msg->nrcpts; i++)
        if (ident_update(msg, msg->rcpts[i].raw, strlen(msg->rcpts[i].raw) + 1) != 0)
            goto leave;
    if (EVP_DigestFinal_ex(msg->ident, out, &len) == 1 && len == SMF_IDENT_LEN)
        rc = 0;
    msg->ident_broken = 1;              /* finished: nothing more goes in */
leave:
    return rc;
}

void smf_ident_free(smf_msg *msg)
{
    EVP_MD_CTX_free(msg->ident);
    msg->ident = NULL;
}
