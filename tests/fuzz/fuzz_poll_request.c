/* Fuzz the poll request parser: an accepted request names only recipients
 * at the polling domain, and re-encoding it parses to the same pairs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_parse_error err;
    sm_pair *pairs = NULL, *again = NULL;
    size_t n, m, i;
    char *text;

    if (sm_poll_request_parse((const char *)data, size, "b.example", 64, &pairs, &n, &err) != 0) {
        if (err.code == NULL)
            abort();
        return 0;
    }
    for (i = 0; i < n; i++)
        if (strcmp(sm_addr_domain(pairs[i].to), "b.example") != 0)
            abort();
    text = sm_poll_request_encode(pairs, n);
    if (text == NULL
        || sm_poll_request_parse(text, strlen(text), "b.example", 64, &again, &m, &err) != 0
        || m != n || memcmp(pairs, again, n * sizeof *pairs) != 0)
        abort();
    free(text);
    free(pairs);
    free(again);
    return 0;
}
