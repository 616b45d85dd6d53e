/* Fuzz the ack request parser: an accepted ack names a recipient at the
 * polling domain. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_parse_error err;
    sm_ack_request ack;

    if (sm_ack_request_parse_status((const char *)data, size, "b.example", &ack, &err) == 0
        && strcmp(sm_addr_domain(ack.to), "b.example") != 0)
        abort();
    return 0;
}
