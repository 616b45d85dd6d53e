/* Fuzz the ack request parser: an accepted ack names a recipient at the
 * polling domain. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_parse_error err;
    char to[SM_ADDR_MAX + 1];

    if (sm_ack_request_parse((const char *)data, size, "b.example", to, sizeof to, &err) == 0
        && strcmp(sm_addr_domain(to), "b.example") != 0)
        abort();
    return 0;
}
