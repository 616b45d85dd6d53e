/* Fuzz the UDP stub parser: whatever is accepted has valid, lowercase
 * addresses, 1..32 recipients at one domain, and encodes back to exactly
 * the datagram it came from. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_stub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sm_stub st;
    const char *to[SM_STUB_RCPT_MAX];
    char again[SM_STUB_MAX];
    const char *why;
    size_t i, used;
    int len;

    if (sm_stub_parse(data, size, &st, &why) != 0)
        return 0;
    if (st.nto == 0 || st.nto > SM_STUB_RCPT_MAX || !st.from[0])
        abort();
    for (i = 0; i < st.nto; i++) {
        if (strcmp(sm_addr_domain(st.to[i]), sm_addr_domain(st.to[0])) != 0)
            abort();
        to[i] = st.to[i];
    }
    len = sm_stub_encode(st.from, to, st.nto, &used, again, sizeof again, &why);
    if (len < 0 || used != st.nto || (size_t)len != size || memcmp(again, data, size) != 0)
        abort();
    return 0;
}
