/* stubmail_poke — the stub to pollerd after an accept (stubmail_poke.h). */

#include "httpd.h"
#include "http_log.h"

#include "sm_dns.h"
#include "sm_stub.h"
#include "stubmail_poke.h"

APLOG_USE_MODULE(stubmail);

void stubmail_poke_pollerd(stubmail_req *q, const char *user, const char *sender)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *bad = "", *to[1] = { user };
    char why[256] = "";

    if (q->conf->user_stub == NULL)
        return;
    if (sm_dns_resolver_parse(q->conf->user_stub, &ss, &sslen, &bad) != 0
        || sm_stub_send((struct sockaddr *)&ss, sslen, sender, to, 1, why, sizeof(why)) != 1)
        SMLOG(q, APLOG_WARNING, 0, "no stub to pollerd at %s (%s): the mail of <%s> for "
              "<%s> is pulled at its next cycle", q->conf->user_stub, *bad ? bad : why, sender,
              user);
}
