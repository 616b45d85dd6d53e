/* Fuzz the address and pattern syntax: whatever is accepted is normalised,
 * stays normalised, fits the limits and has a valid domain. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[1024], out[SM_ADDR_MAX + 1], again[SM_ADDR_MAX + 1];
    const char *why;
    int pattern;

    if (size == 0 || size >= sizeof in)
        return 0;
    pattern = data[0] & 1;
    memcpy(in, data + 1, size - 1);
    in[size - 1] = '\0';
    if ((pattern ? sm_pattern_normalize(in, out, sizeof out, &why)
                 : sm_addr_normalize(in, out, sizeof out, &why)) != 0)
        return 0;
    if (strlen(out) > SM_ADDR_MAX || !sm_domain_valid(sm_addr_domain(out)))
        abort();
    if ((pattern ? sm_pattern_normalize(out, again, sizeof again, &why)
                 : sm_addr_normalize(out, again, sizeof again, &why)) != 0
        || strcmp(out, again) != 0)
        abort();
    return 0;
}
