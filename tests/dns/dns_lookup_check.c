/* dns_lookup_check [-t] RESOLVER DOMAIN — one sm_dns_lookup, printed for
 * tests/dns/run and tests/integration/test_dnssec.py as "key=value" lines:
 * status, ttl, validated, why, and for a found record its fields and
 * canonical form. RESOLVER "-" means the system resolver; -t trusts its AD
 * bit wherever it is (resolver_trusted). Exit status 0 whatever the lookup
 * found; 2 on usage. */
#include <stdio.h>
#include <string.h>

#include "sm_dns.h"

int main(int argc, char **argv)
{
    sm_txt_record rec;
    sm_dns_status st;
    char why[512], canon[SM_TXT_MAX + 1];
    sm_dns_conf dns = { NULL, 0, NULL };
    unsigned ttl;
    int validated;

    if (argc == 4 && strcmp(argv[1], "-t") == 0) {
        dns.resolver_trusted = 1;
        argv++;
        argc--;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: dns_lookup_check [-t] RESOLVER|- DOMAIN\n");
        return 2;
    }
    dns.resolver = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
    st = sm_dns_lookup(&dns, argv[2], &rec, &ttl, &validated, why, sizeof why);
    printf("status=%s\nttl=%u\nvalidated=%d\nwhy=%s\n", sm_dns_status_name(st), ttl,
           validated, why);
    if (st == SM_DNS_FOUND) {
        if (sm_txt_format(&rec, canon, sizeof canon) < 0)
            strcpy(canon, "(does not format)");
        printf("outbox=%s\nhttps=%d\nudp=%s\nfpr=%s\npolicy=%s\nrecord=%s\n", rec.outbox,
               rec.outbox_https, rec.udp, rec.fpr, rec.policy, canon);
    }
    return 0;
}
