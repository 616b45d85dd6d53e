/* stubmail_login — who is polling: GET v1/key (this domain's public key),
 * GET v1/key/{fpr} (it, or the other key of a rotation, by fingerprint),
 * POST v1/login (a polling domain proves itself with its OpenPGP key and
 * gets a bearer token), and what they need at startup (the key file, the
 * GnuPG home) and in each child (gpgme, the memory of imported keys). */
#ifndef STUBMAIL_LOGIN_H
#define STUBMAIL_LOGIN_H

#include "httpd.h"

#include "stubmail_config.h"
#include "stubmail_req.h"

/* The largest login body (docs/PROTOCOL.md, "POST /v1/login"): its key
 * (SM_LOGIN_KEY_MAX) and signature (SM_LOGIN_SIGNATURE_MAX) with their
 * JSON escapes fit with room to spare; a bigger one is padding, or members
 * a later version adds, which cannot need that much. */
#define STUBMAIL_LOGIN_BODY_MAX (128 * 1024)

int stubmail_key(stubmail_req *q);
/* q->fpr is the path's segment, unchecked: anything but one of our keys'
 * fingerprints is 404 not_found. */
int stubmail_key_by_fpr(stubmail_req *q);

/* The body (q->body) is read already, within STUBMAIL_LOGIN_BODY_MAX. */
int stubmail_login(stubmail_req *q);

/* check_config (so apachectl configtest runs it too), per server: with
 * StubmailDomain set, check the directives login needs, read
 * StubmailPublicKey's files into c->public_key and c->other_key (pconf)
 * and check StubmailGnupgHome. OK, or HTTP_INTERNAL_SERVER_ERROR (logged). */
int stubmail_login_check_config(server_rec *s, stubmail_srv_conf *c, apr_pool_t *pconf,
                                apr_pool_t *ptemp);

/* post_config, per server taking logins: give StubmailGnupgHome its
 * gpg.conf (not at configtest: a check writes nothing). */
int stubmail_login_post_config(server_rec *s, const stubmail_srv_conf *c, apr_pool_t *ptemp);

/* child_init: gpgme and the imported-key memory, if any server takes
 * logins. */
void stubmail_login_child_init(apr_pool_t *pchild, server_rec *s);

#endif
