/* Unit tests: the UDP stub datagram (docs/PROTOCOL.md, "UDP stubs"). */
#include <stdio.h>
#include <string.h>

#include "sm_stub.h"
#include "tap.h"

#define GOOD "stubmail-stub-v1\nfrom:alice@a.example\nto:bob@b.example\nto:carol@b.example\n"

static const struct {
    const char *pkt;
    const char *name;
} bad[] = {
    { "", "empty" },
    { "stubmail-stub-v1\r\nfrom:alice@a.example\r\nto:bob@b.example\r\n", "CRLF" },
    { "stubmail-stub-v2\nfrom:alice@a.example\nto:bob@b.example\n", "other version" },
    { "STUBMAIL-STUB-V1\nfrom:alice@a.example\nto:bob@b.example\n", "magic in uppercase" },
    { "stubmail-stub-v1\nfrom:alice@a.example\nto:bob@b.example", "no final LF" },
    { "stubmail-stub-v1\nfrom:alice@a.example\nto:bob@b.example\n\n", "empty line at the end" },
    { "stubmail-stub-v1\nfrom:alice@a.example\n", "no recipient" },
    { "stubmail-stub-v1\nto:bob@b.example\n", "no sender" },
    { "stubmail-stub-v1\nto:bob@b.example\nfrom:alice@a.example\n", "to before from" },
    { "stubmail-stub-v1\nfrom:alice@a.example\nfrom:eve@a.example\nto:bob@b.example\n",
      "two senders" },
    { "stubmail-stub-v1\nfrom:Alice@a.example\nto:bob@b.example\n", "uppercase sender" },
    { "stubmail-stub-v1\nfrom:<alice@a.example>\nto:bob@b.example\n", "angle brackets" },
    { "stubmail-stub-v1\nfrom:*@a.example\nto:bob@b.example\n", "sender pattern" },
    { "stubmail-stub-v1\nfrom:\nto:bob@b.example\n", "empty sender" },
    { "stubmail-stub-v1\nfrom: alice@a.example\nto:bob@b.example\n", "blank after colon" },
    { "stubmail-stub-v1\nfrom:alice@a.example\nto:bob@b.example\nto:bob@b.example\n",
      "recipient twice" },
    { "stubmail-stub-v1\nfrom:alice@a.example\nto:bob@b.example\nto:dave@c.example\n",
      "recipients at two domains" },
    { "stubmail-stub-v1\nfrom:alice@a.example\nto:bob@b.example\nx-y:z\n", "unknown line" },
    { "stubmail-stub-v1\nfrom:alice@a.example\nto:bob@b..example\n", "bad domain" },
    { "stubmail-stub-v1\nfrom:alice@a.example\nto:b\xc3\xb6" "b@b.example\n", "8-bit octet" },
    { "stubmail-stub-v1\nfrom:alice@a.example\tto:bob@b.example\n", "tab" },
};

int main(void)
{
    static sm_stub st;
    static char pkt[2048];
    const char *to[40], *why = "";
    char out[SM_STUB_MAX], addrs[40][32];
    size_t i, used, len, done, parts;
    int n;

    ok(sm_stub_parse((const unsigned char *)GOOD, strlen(GOOD), &st, &why) == 0,
       "the PROTOCOL.md example parses");
    is_str(st.from, "alice@a.example", "its sender");
    ok(st.nto == 2, "two recipients");
    is_str(st.to[1], "carol@b.example", "the second one");
    ok(strlen(GOOD) == 74, "74 octets, as the example says");

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = "";
        ok(sm_stub_parse((const unsigned char *)bad[i].pkt, strlen(bad[i].pkt), &st, &why) == -1
           && st.nto == 0 && st.from[0] == '\0', "refused: %s (%s)", bad[i].name, why);
    }
    memcpy(pkt, GOOD, sizeof GOOD);
    pkt[20] = '\0';
    ok(sm_stub_parse((const unsigned char *)pkt, sizeof GOOD - 1, &st, &why) == -1,
       "refused: a NUL inside (%s)", why);

    /* 32 recipients is the limit, 33 is not */
    len = (size_t)snprintf(pkt, sizeof pkt, "stubmail-stub-v1\nfrom:a@a.example\n");
    for (i = 0; i < 33; i++)
        len += (size_t)snprintf(pkt + len, sizeof pkt - len, "to:u%zu@b.co\n", i);
    ok(len <= SM_STUB_MAX, "33 short recipients fit in 512 octets (%zu)", len);
    ok(sm_stub_parse((const unsigned char *)pkt, len, &st, &why) == -1, "33 recipients refused");
    len -= strlen("to:u32@b.co\n");
    ok(sm_stub_parse((const unsigned char *)pkt, len, &st, &why) == 0 && st.nto == 32,
       "32 recipients accepted");
    /* longer than 512 octets */
    len = (size_t)snprintf(pkt, sizeof pkt, "stubmail-stub-v1\nfrom:a@a.example\n");
    for (i = 0; len < 520; i++)
        len += (size_t)snprintf(pkt + len, sizeof pkt - len, "to:user%zu@b.example\n", i);
    ok(sm_stub_parse((const unsigned char *)pkt, len, &st, &why) == -1, "over 512 octets refused");

    /* the encoder makes the example, and splits what does not fit */
    to[0] = "bob@b.example";
    to[1] = "carol@b.example";
    n = sm_stub_encode("alice@a.example", to, 2, &used, out, sizeof out, &why);
    ok(n == 74 && used == 2 && memcmp(out, GOOD, 74) == 0, "encodes the example");
    for (i = 0; i < 40; i++) {
        snprintf(addrs[i], sizeof addrs[i], "recipient-%02zu@b.example", i);
        to[i] = addrs[i];
    }
    n = sm_stub_encode("alice@a.example", to, 40, &used, out, sizeof out, &why);
    ok(n > 0 && n <= SM_STUB_MAX && used > 0 && used < 40, "40 recipients: %zu in the first", used);
    ok(n > 0 && sm_stub_parse((const unsigned char *)out, (size_t)n, &st, &why) == 0
       && st.nto == used, "the first part parses");
    for (i = 0; i < used && i < st.nto && strcmp(st.to[i], to[i]) == 0; i++)
        ;
    ok(i == used, "the first part names the first %zu recipients, in order (differs at %zu)",
       used, i);
    /* as full as it can be: one datagram per recipient would be "split"
     * too, and flood the receiver */
    ok(n > 0 && used < 40 && (size_t)n + 3 + strlen(to[used]) + 1 > SM_STUB_MAX,
       "the next recipient would not have fitted (%d octets)", n);
    /* the rest, part after part, names every recipient exactly once */
    done = used;
    parts = 1;
    while (n > 0 && done < 40 && parts < 40) {
        n = sm_stub_encode("alice@a.example", to + done, 40 - done, &used, out, sizeof out, &why);
        if (n <= 0 || used == 0 || sm_stub_parse((const unsigned char *)out, (size_t)n, &st,
                                                 &why) != 0 || st.nto != used)
            break;
        for (i = 0; i < used && strcmp(st.to[i], to[done + i]) == 0; i++)
            ;
        if (i != used)
            break;
        done += used;
        parts++;
    }
    /* 38 octets of head, 26 per recipient: 18 to a datagram */
    ok(done == 40 && parts == 3, "40 recipients: all sent, in %zu datagrams", parts);
    /* each refused for its own reason (why is read after the call: the
     * order in which ok()'s arguments are evaluated is unspecified) */
    to[0] = "Bob@b.example";
    why = "";
    n = sm_stub_encode("alice@a.example", to, 1, &used, out, sizeof out, &why);
    ok(n == -1 && strstr(why, "recipient is not a normalised"),
       "a recipient not normalised is refused (%s)", why);
    to[0] = "bob@b.example";
    to[1] = "dave@c.example";
    why = "";
    n = sm_stub_encode("alice@a.example", to, 2, &used, out, sizeof out, &why);
    ok(n == -1 && strstr(why, "more than one domain"), "recipients at two domains are refused "
       "(%s)", why);
    why = "";
    n = sm_stub_encode("*@a.example", to, 1, &used, out, sizeof out, &why);
    ok(n == -1 && *why != '\0' && !strstr(why, "recipient"),
       "a pattern as sender is refused (%s)", why);
    return tap_done();
}
