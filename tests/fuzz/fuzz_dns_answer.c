/* Fuzz the DNS answer handling of sm_dns_lookup with hostile messages: it
 * never crashes, reports a status it defines, and whatever it calls FOUND
 * is a record that re-parses from its canonical form; it calls an answer
 * validated only when told to trust the AD bit, and never a failure. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_txt_record rec, again;
    char why[256], canon[SM_TXT_MAX + 1];
    const char *bad;
    unsigned ttl = 12345;
    sm_dns_status st;
    int len, validated = -1, trust_ad = size > 0 && (data[0] & 1);

    st = sm_dns_parse_answer(data, size, "_stubmail.b.example", trust_ad, &rec, &ttl,
                             &validated, why, sizeof why);
    if (ttl > 0x7fffffffu || (validated != 0 && validated != 1) || (validated && !trust_ad)
        || (validated && st == SM_DNS_TEMPFAIL))
        abort();
    switch (st) {
    case SM_DNS_FOUND:
        len = sm_txt_format(&rec, canon, sizeof canon);
        if (len < 0 || sm_txt_parse(canon, (size_t)len, &again, &bad) != 0
            || memcmp(&rec, &again, sizeof rec) != 0)
            abort();
        break;
    case SM_DNS_TEMPFAIL:
        if (ttl != 0 || why[0] == '\0' || rec.outbox[0] != '\0')
            abort();
        break;
    case SM_DNS_NONE:
    case SM_DNS_INVALID:
        if (why[0] == '\0' || rec.outbox[0] != '\0')
            abort();
        break;
    default:
        abort();
    }
    return 0;
}
