/* sm_id — message ids: 128 bits from the kernel's CSPRNG, so an id cannot be
 * guessed (docs/PROTOCOL.md, "Message id"). */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "sm_id.h"

int sm_id_new(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[SM_ID_LEN / 2];
    size_t got = 0;
    ssize_t n;
    int i;

    while (got < sizeof raw) {
        n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    for (i = 0; i < SM_ID_LEN / 2; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[SM_ID_LEN] = '\0';
    return 0;
}

int sm_id_valid(const char *s)
{
    int i;

    for (i = 0; i < SM_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[SM_ID_LEN] == '\0';
}
