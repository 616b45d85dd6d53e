/* Unit tests: the milter's quota words and numbers (milter/smf_quota.c):
 * SIZE= among MAIL FROM's ESMTP parameters, over or not, octets for
 * people, and the text of the 552 refusal. */
#include <string.h>

#include "smf.h"
#include "tap.h"

int main(void)
{
    char *with_size[] = { "<alice@a.example>", "BODY=8BITMIME", "size=2048", NULL };
    char *no_size[] = { "<alice@a.example>", "BODY=8BITMIME", NULL };
    char *bad_size[] = { "<alice@a.example>", "SIZE=12x", NULL };
    char *neg_size[] = { "<alice@a.example>", "SIZE=-1", NULL };
    char *huge_size[] = { "<alice@a.example>", "SIZE=99999999999999999999", NULL };
    char *only_sender[] = { "<alice@a.example>", NULL };
    smf_quota q = { 9, 1258291, 10, 1048576 * 2 };
    long long size = -1;
    char buf[400];

    ok(smf_quota_size_arg(with_size, &size) == 1 && size == 2048, "SIZE= in any case");
    ok(smf_quota_size_arg(no_size, &size) == 0, "no SIZE=");
    ok(smf_quota_size_arg(only_sender, &size) == 0, "no parameters");
    ok(smf_quota_size_arg(bad_size, &size) == 0, "SIZE=12x is not a size");
    ok(smf_quota_size_arg(neg_size, &size) == 0, "SIZE=-1 is not a size");
    ok(smf_quota_size_arg(huge_size, &size) == 0, "SIZE= beyond long long is not a size");

    /* 1.2 MiB of 2 MiB used, 9 of 10 messages */
    ok(!smf_quota_over(&q, 838861, 1), "the last message that fits both: 2 MiB exactly");
    ok(smf_quota_over(&q, 838862, 0), "one octet over");
    q.messages = 10;
    ok(smf_quota_over(&q, 1, 1), "an 11th message is over");
    ok(!smf_quota_over(&q, 1, 0), "SIZE= speaks for the octets alone");
    q.max_messages = 0;
    q.max_bytes = 0;
    ok(!smf_quota_over(&q, 1LL << 40, 1), "0 is no limit");

    smf_quota_human(0, buf, sizeof buf);
    is_str(buf, "0 bytes", "0 bytes");
    smf_quota_human(1, buf, sizeof buf);
    is_str(buf, "1 byte", "1 byte");
    smf_quota_human(1023, buf, sizeof buf);
    is_str(buf, "1023 bytes", "1023 bytes");
    smf_quota_human(1024, buf, sizeof buf);
    is_str(buf, "1 KiB", "1 KiB");
    smf_quota_human(1258291, buf, sizeof buf);
    is_str(buf, "1.2 MiB", "1.2 MiB");
    smf_quota_human(100LL << 20, buf, sizeof buf);
    is_str(buf, "100 MiB", "100 MiB");
    smf_quota_human(3LL << 40, buf, sizeof buf);
    is_str(buf, "3 TiB", "3 TiB");
    smf_quota_human(5LL << 50, buf, sizeof buf);
    is_str(buf, "5120 TiB", "past the last unit: TiB");

    q = (smf_quota){ 9, 1258291, 10, 1048576 };
    smf_quota_text("alice@a.example", &q, 300 * 1024, buf, sizeof buf);
    is_str(buf, "alice@a.example has 9 messages, 1.2 MiB waiting to be retrieved; the quota is "
           "10 messages, 1 MiB; this message is 300 KiB", "the refusal names use and quota");
    q = (smf_quota){ 1, 10, 0, 1048576 };
    smf_quota_text("bob@a.example", &q, 2 << 20, buf, sizeof buf);
    is_str(buf, "bob@a.example has 1 message, 10 bytes waiting to be retrieved; the quota is "
           "1 MiB; this message is 2 MiB", "no message limit: octets alone");
    q = (smf_quota){ 3, 2048, 3, 0 };
    smf_quota_text("carol@a.example", &q, 1, buf, sizeof buf);
    is_str(buf, "carol@a.example has 3 messages, 2 KiB waiting to be retrieved; the quota is "
           "3 messages; this message is 1 byte", "no octet limit: messages alone");
    return tap_done();
}
