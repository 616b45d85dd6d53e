/* Fuzz target: sm_authres, the scan for forged Authentication-Results in a
 * message pollerd delivers. The first octet picks the piece size, so that
 * the fields are cut across feed calls; the ranges must be ascending,
 * disjoint and inside the message. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "sm_authres.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_authres_scan s;
    size_t piece, off, i;
    long long pos = 0;

    if (size == 0)
        return 0;
    piece = (size_t)data[0] + 1;
    data++;
    size--;
    sm_authres_init(&s, "b.example");
    for (off = 0; off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        if (sm_authres_feed(&s, (const char *)data + off, n) != 0)
            break;
    }
    sm_authres_end(&s);
    for (i = 0; i < s.n; i++) {
        if (s.ranges[i].from < pos || s.ranges[i].to <= s.ranges[i].from
            || s.ranges[i].to > (long long)size)
            abort();
        pos = s.ranges[i].to;
    }
    sm_authres_free(&s);
    return 0;
}
