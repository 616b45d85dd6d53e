/* Fuzz the ack request parsers, one ack and a batch: an accepted ack names
 * a recipient at the polling domain (every item of a batch too), and a
 * batch encoded again parses to the same items. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_parse_error err;
    sm_ack_request ack;
    sm_ack_item *items = NULL, *again = NULL;
    size_t n = 0, m = 0, i;
    char *text;

    if (sm_ack_request_parse_status((const char *)data, size, "b.example", &ack, &err) == 0
        && strcmp(sm_addr_domain(ack.to), "b.example") != 0)
        abort();
    if (sm_acks_request_parse((const char *)data, size, "b.example", &items, &n, &err) != 0)
        return 0;
    for (i = 0; i < n; i++)
        if (strcmp(sm_addr_domain(items[i].ack.to), "b.example") != 0 || !sm_id_valid(items[i].id))
            abort();
    text = sm_acks_request_encode(items, n);
    if (!text || sm_acks_request_parse(text, strlen(text), "b.example", &again, &m, &err) != 0
        || m != n || memcmp(items, again, n * sizeof(*items)) != 0)
        abort();
    free(text);
    free(items);
    free(again);
    return 0;
}
