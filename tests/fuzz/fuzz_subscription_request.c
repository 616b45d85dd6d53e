/* Fuzz the subscription change parser: an accepted change names only
 * recipients at the polling domain and at most the pair limit, a reset
 * carries no removals and no base, and re-encoding it parses to the same
 * change. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_proto.h"

#define MAX_PAIRS 64

static int same_pairs(const sm_pair *a, const sm_pair *b, size_t n)
{
    return n == 0 || memcmp(a, b, n * sizeof *a) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_parse_error err;
    sm_subscription_request req, again;
    size_t i;
    char *text;

    if (sm_subscription_request_parse((const char *)data, size, "b.example", MAX_PAIRS, &req,
                                      &err) != 0) {
        if (err.code == NULL)
            abort();
        return 0;
    }
    if (req.nadd + req.nremove > MAX_PAIRS || (req.reset && (req.nremove || req.base != -1))
        || (!req.reset && req.base < 0))
        abort();
    for (i = 0; i < req.nadd; i++)
        if (strcmp(sm_addr_domain(req.add[i].to), "b.example") != 0)
            abort();
    for (i = 0; i < req.nremove; i++)
        if (strcmp(sm_addr_domain(req.remove[i].to), "b.example") != 0)
            abort();
    text = sm_subscription_request_encode(req.reset, req.base, req.add, req.nadd, req.remove,
                                          req.nremove);
    if (text == NULL
        || sm_subscription_request_parse(text, strlen(text), "b.example", MAX_PAIRS, &again,
                                         &err) != 0
        || again.reset != req.reset || again.base != req.base || again.nadd != req.nadd
        || again.nremove != req.nremove || !same_pairs(req.add, again.add, req.nadd)
        || !same_pairs(req.remove, again.remove, req.nremove))
        abort();
    free(text);
    sm_subscription_request_free(&req);
    sm_subscription_request_free(&again);
    return 0;
}
