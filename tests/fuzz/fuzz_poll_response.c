/* Fuzz the poll answer parser (what pollerd reads from a remote outbox):
 * every accepted entry has a valid id and normalised addresses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_parse_error err;
    sm_listing *items = NULL;
    const char *why;
    char out[SM_ADDR_MAX + 1];
    size_t n, i;
    int more;

    if (sm_poll_response_parse((const char *)data, size, &items, &n, &more, &err) != 0)
        return 0;
    for (i = 0; i < n; i++)
        if (!sm_id_valid(items[i].id) || items[i].size < 0
            || sm_addr_normalize(items[i].to, out, sizeof out, &why) != 0
            || strcmp(out, items[i].to) != 0)
            abort();
    free(items);
    return 0;
}
