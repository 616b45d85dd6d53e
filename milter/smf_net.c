/* smf_net — the trusted_networks list: clients inside it send outbound mail;
 * and the UDP stubs the milter sends after storing mail: to whom (smf_stubs)
 * and how (smf_stub_send), at the end.
 *
 * A list is "ADDR[/PREFIX]" items separated by blanks or commas, IPv4 and
 * IPv6 mixed ("127.0.0.1/32 ::1/128 192.0.2.0/24"). An item without a prefix
 * is one host. Host bits below the prefix are ignored. A client that reaches
 * us over IPv6 with an IPv4-mapped address (::ffff:192.0.2.1) is matched
 * against the IPv4 networks. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "sm_stub.h"
#include "smf.h"

static void mask_host_bits(unsigned char *addr, size_t len, unsigned prefix)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (prefix >= 8) {
            prefix -= 8;
            continue;
        }
        addr[i] &= (unsigned char)(0xff << (8 - prefix));
        prefix = 0;
    }
}

static int parse_one(const char *item, smf_net *net, char *err, size_t errlen)
{
    char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
    unsigned long prefix;
    size_t len;

    if (strlen(item) >= sizeof buf) {
        snprintf(err, errlen, "\"%s\" is not an address or network", item);
        return -1;
    }
    strcpy(buf, item);
    memset(net, 0, sizeof *net);
    if ((slash = strchr(buf, '/')) != NULL)
        *slash++ = '\0';
    if (inet_pton(AF_INET, buf, net->addr) == 1) {
        net->family = AF_INET;
        len = 4;
    } else if (inet_pton(AF_INET6, buf, net->addr) == 1) {
        net->family = AF_INET6;
        len = 16;
    } else {
        snprintf(err, errlen, "\"%s\" is not an IPv4 or IPv6 address", buf);
        return -1;
    }
    prefix = len * 8;
    if (slash) {
        errno = 0;
        prefix = strtoul(slash, &end, 10);
        if (*slash < '0' || *slash > '9' || *end != '\0' || errno || prefix > len * 8) {
            snprintf(err, errlen, "\"%s\": prefix length must be 0..%zu", item, len * 8);
            return -1;
        }
    }
    net->prefix = (unsigned)prefix;
    mask_host_bits(net->addr, len, net->prefix);
    return 0;
}

int smf_netlist_parse(const char *spec, smf_netlist *out, char *err, size_t errlen)
{
    char *copy = NULL, *tok, *save = NULL;
    smf_net *nets = NULL, *grown;
    size_t n = 0;
    int rc = -1;

    out->nets = NULL;
    out->n = 0;
    if ((copy = strdup(spec ? spec : "")) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto leave;
    }
    for (tok = strtok_r(copy, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
        if ((grown = realloc(nets, (n + 1) * sizeof *nets)) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto leave;
        }
        nets = grown;
        if (parse_one(tok, &nets[n], err, errlen) != 0)
            goto leave;
        n++;
    }
    out->nets = nets;
    out->n = n;
    nets = NULL;
    rc = 0;
leave:
    free(nets);
    free(copy);
    return rc;
}

void smf_netlist_free(smf_netlist *list)
{
    free(list->nets);
    list->nets = NULL;
    list->n = 0;
}

static int prefix_equal(const unsigned char *a, const unsigned char *b, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;
    unsigned char mask;

    if (memcmp(a, b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

int smf_netlist_match(const smf_netlist *list, const struct sockaddr *sa)
{
    static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    const unsigned char *addr;
    int family;
    size_t i;

    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        family = AF_INET;
        addr = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        addr = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        family = AF_INET6;
        if (memcmp(addr, v4mapped, sizeof v4mapped) == 0) {
            family = AF_INET;
            addr += 12;
        }
    } else {
        return 0;
    }
    for (i = 0; i < list->n; i++)
        if (list->nets[i].family == family
            && prefix_equal(addr, list->nets[i].addr, list->nets[i].prefix))
            return 1;
    return 0;
}

/* ---- UDP stubs -------------------------------------------------------- */

/* A stub is a hint: any failure here is logged and forgotten, the
 * recipient domain polls at its next interval anyway. The address is the
 * udp= that discovery gave at RCPT (no second lookup after the commit, when
 * the MTA waits for our answer), and sendto() on a non-blocking socket
 * never waits. */
void smf_stub_send(const char *qid, const char *sender, const char *domain, const char *udp,
                   const char *const *to, size_t nto)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *bad = "";
    char why[512];
    int sent;

    if (sm_dns_resolver_parse(udp, &ss, &sslen, &bad) != 0) {
        sm_info("%s: no stub to %s: udp=%s: %s", qid, domain, udp, bad);
        return;
    }
    if ((sent = sm_stub_send((struct sockaddr *)&ss, sslen, sender, to, nto, why,
                             sizeof why)) < 0) {
        sm_info("%s: stub to %s at %s not sent: %s", qid, domain, udp, why);
        return;
    }
    sm_debug("%s: stub to %s at %s: from=<%s>, %zu recipients, %d datagrams", qid, domain,
             udp, sender, nto, sent);
}

/* After the commit: a stub to each pulling domain that publishes udp=, so
 * that it polls us now (smf_stub_send); outbox is what was stored. */
void smf_stubs(const char *qid, const smf_msg *msg, const smf_db_rcpt *outbox, size_t n)
{
    const smf_domain *d;
    const char **to;
    size_t i, j, k, nto;

    if (n == 0)
        return;
    if ((to = calloc(n, sizeof *to)) == NULL) {
        sm_info("%s: no stubs sent: out of memory", qid);
        return;
    }
    for (i = 0; i < msg->ndomains; i++) {
        d = &msg->domains[i];
        if (!d->pulling)
            continue;
        if (d->udp[0] == '\0') {
            sm_debug("%s: no stub to %s: it publishes no udp=", qid, d->name);
            continue;
        }
        for (nto = 0, j = 0; j < n; j++) {
            if (strcmp(outbox[j].domain, d->name) != 0)
                continue;
            /* the parser refuses a recipient named twice */
            for (k = 0; k < nto && strcmp(to[k], outbox[j].addr) != 0; k++)
                ;
            if (k == nto)
                to[nto++] = outbox[j].addr;
        }
        if (nto)
            smf_stub_send(qid, msg->sender, d->name, d->udp, to, nto);
    }
    free(to);
}
