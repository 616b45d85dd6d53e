/* Unit tests: message ids are 32 lowercase hex digits and do not repeat. */
#include <string.h>

#include "sm_id.h"
#include "tap.h"

int main(void)
{
    char a[SM_ID_LEN + 1], b[SM_ID_LEN + 1];

    ok(sm_id_new(a) == 0 && sm_id_new(b) == 0, "two ids made");
    ok(sm_id_valid(a), "a fresh id is valid: %s", a);
    ok(strcmp(a, b) != 0, "two fresh ids differ");
    ok(sm_id_valid("0123456789abcdef0123456789abcdef"), "lowercase hex accepted");
    ok(!sm_id_valid("0123456789ABCDEF0123456789abcdef"), "uppercase refused");
    ok(!sm_id_valid("0123456789abcdef0123456789abcde"), "31 digits refused");
    ok(!sm_id_valid("0123456789abcdef0123456789abcdef0"), "33 digits refused");
    ok(!sm_id_valid("../../../../etc/passwd0000000000"), "path refused");
    ok(!sm_id_valid(""), "empty refused");
    return tap_done();
}
