/* Fuzz the login request parser: an accepted login has fields that build a
 * statement (so nothing in them can add a line to what is signed), and it
 * encodes back to a body that parses to the same fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sm_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_login_request req, again;
    sm_parse_error err;
    char statement[SM_LOGIN_STATEMENT_MAX], *text;
    int n;

    if (sm_login_request_parse((const char *)data, size, &req, &err) != 0)
        return 0;
    n = sm_login_statement(req.server, req.domain, req.time, req.nonce, statement,
                           sizeof statement);
    if (n <= 0 || memchr(statement, '\0', (size_t)n) != NULL)
        abort();
    text = sm_login_request_encode(req.domain, req.server, req.time, req.nonce, req.key,
                                   req.signature);
    if (text == NULL)
        abort();
    if (sm_login_request_parse(text, strlen(text), &again, &err) != 0
        || strcmp(again.domain, req.domain) != 0 || strcmp(again.server, req.server) != 0
        || again.when != req.when || strcmp(again.nonce, req.nonce) != 0
        || again.key_len != req.key_len || memcmp(again.key, req.key, req.key_len) != 0
        || again.signature_len != req.signature_len
        || memcmp(again.signature, req.signature, req.signature_len) != 0)
        abort();
    sm_login_request_free(&again);
    free(text);
    sm_login_request_free(&req);
    return 0;
}
