/* Fuzz the _stubmail TXT record parser: an accepted record has the fields
 * the grammar promises (lib/sm_txt.h), and its canonical form parses back
 * to the same struct. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_dns.h"

static int all_hex_upper(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'F')))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_txt_record rec, again;
    char canon[SM_TXT_MAX + 1];
    const char *why = NULL;
    size_t n;
    int len;

    if (sm_txt_parse((const char *)data, size, &rec, &why) != 0) {
        if (why == NULL || rec.outbox[0] != '\0')
            abort();
        return 0;
    }
    /* what was accepted is a stubmail record by the lookup's rule */
    if (!sm_txt_is_stubmail((const char *)data, size) || size > SM_TXT_MAX)
        abort();
    n = strlen(rec.fpr);
    if ((n != 40 && n != 64) || !all_hex_upper(rec.fpr))
        abort();
    n = strlen(rec.policy);
    if (n == 0 || n > SM_TXT_POLICY_MAX)
        abort();
    if (strncmp(rec.outbox, rec.outbox_https ? "https://" : "http://",
                rec.outbox_https ? 8 : 7) != 0
        || strlen(rec.outbox) > SM_TXT_URL_MAX || strchr(rec.outbox, '#')
        || strchr(rec.outbox, ' ') || strchr(rec.outbox, ';'))
        abort();
    if ((rec.udp[0] != '\0') != (rec.udp_addrlen != 0))
        abort();
    len = sm_txt_format(&rec, canon, sizeof canon);
    if (len < 0 || sm_txt_parse(canon, (size_t)len, &again, &why) != 0
        || memcmp(&rec, &again, sizeof rec) != 0)
        abort();
    return 0;
}
