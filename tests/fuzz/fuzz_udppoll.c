/* Fuzz target: sm_udppoll, the datagrams of the UDP lightweight poll that a
 * responder takes from anyone. The whole input is one datagram: checked as
 * a request under a fixed keyring (the parse must stay inside the grammar's
 * limits), then as a reply to a fixed request. A request that verifies must
 * round-trip: encoding its fields again gives the same octets. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_udppoll.h"

#define EX_MAC "BouJcvFR09mIflcxA6KgGFWXqjgeOp27e1OZ6G5iMEI"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sm_token_keyring kr;
    static int ready;
    unsigned char secret[32], key[SM_UDPPOLL_KEY_LEN];
    char again[SM_UDPPOLL_REQUEST_MAX + 64], mac[SM_UDPPOLL_B64_LEN + 1];
    sm_udppoll_request req;
    sm_udppoll_session info;
    sm_udppoll_status st;
    const char *why;
    size_t i;
    long n;

    if (!ready) {
        for (i = 0; i < sizeof secret; i++)
            secret[i] = (unsigned char)i;
        sm_token_keyring_init(&kr);
        if (sm_token_keyring_add(&kr, "k1", secret, sizeof secret, &why) != 0)
            abort();
        ready = 1;
    }
    if (sm_udppoll_request_parse(data, size, &req, &why) == 0) {
        if (strlen(req.session) > SM_UDPPOLL_SESSION_MAX || !sm_udppoll_cursor_valid(req.cursor,
            strlen(req.cursor)) || strlen(req.mac) != SM_UDPPOLL_B64_LEN || req.signed_len >= size)
            abort();
    }
    /* any time: the fuzzer cannot forge a MAC, but the seed corpus holds
     * the worked example, whose time is 1799990000 */
    if (sm_udppoll_request_verify(&kr, data, size, (time_t)1799990000, &req, &info, key,
                                  &why) == 0) {
        n = sm_udppoll_request_encode(key, req.session, req.cursor, req.time, again,
                                      sizeof again, mac);
        if (n != (long)size || memcmp(again, data, size) != 0 || strcmp(mac, req.mac) != 0)
            abort();
    }
    memset(key, 7, sizeof key);
    if (sm_udppoll_reply_parse(key, EX_MAC, data, size, &st, &why) == 0
        && st != SM_UDPPOLL_IDLE && st != SM_UDPPOLL_POLL)
        abort();
    return 0;
}
