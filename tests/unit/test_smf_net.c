/* Unit tests: the milter's trusted_networks lists (milter/smf_net.c):
 * parsing "ADDR[/PREFIX]" items, and which client addresses match. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "smf.h"
#include "tap.h"

/* A client address as libmilter hands it to xxfi_connect. */
static const struct sockaddr *client(const char *ip, struct sockaddr_storage *ss)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(25);
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(25);
    } else {
        return NULL;
    }
    return (const struct sockaddr *)ss;
}

static const struct {
    const char *list;
    const char *ip;
    int want;
} matches[] = {
    /* the default */
    { "127.0.0.1/32 ::1/128", "127.0.0.1", 1 },
    { "127.0.0.1/32 ::1/128", "::1", 1 },
    { "127.0.0.1/32 ::1/128", "127.0.0.2", 0 },
    { "127.0.0.1/32 ::1/128", "::2", 0 },
    /* byte-aligned prefixes, both ends of the network */
    { "192.0.2.0/24", "192.0.2.0", 1 },
    { "192.0.2.0/24", "192.0.2.255", 1 },
    { "192.0.2.0/24", "192.0.3.0", 0 },
    { "192.0.2.0/24", "192.0.1.255", 0 },
    /* prefixes inside a byte */
    { "192.0.2.128/25", "192.0.2.200", 1 },
    { "192.0.2.128/25", "192.0.2.127", 0 },
    { "10.0.0.0/9", "10.127.255.255", 1 },
    { "10.0.0.0/9", "10.128.0.0", 0 },
    { "198.51.100.7/31", "198.51.100.6", 1 },
    { "198.51.100.7/31", "198.51.100.8", 0 },
    /* host bits below the prefix are ignored */
    { "10.1.2.3/8", "10.200.0.1", 1 },
    { "10.1.2.3/8", "11.1.2.3", 0 },
    /* no prefix: one host */
    { "203.0.113.5", "203.0.113.5", 1 },
    { "203.0.113.5", "203.0.113.4", 0 },
    { "2001:db8::25", "2001:db8::25", 1 },
    { "2001:db8::25", "2001:db8::26", 0 },
    /* /0: every address of its family, none of the other */
    { "0.0.0.0/0", "203.0.113.9", 1 },
    { "0.0.0.0/0", "2001:db8::1", 0 },
    { "::/0", "2001:db8::1", 1 },
    { "::/0", "203.0.113.9", 0 },
    /* IPv6 prefixes */
    { "2001:db8::/32", "2001:db8:ffff:ffff::1", 1 },
    { "2001:db8::/32", "2001:db9::1", 0 },
    { "2001:db8:8000::/33", "2001:db8:ffff::1", 1 },
    { "2001:db8:8000::/33", "2001:db8:7fff::1", 0 },
    /* an IPv4-mapped IPv6 client is matched as IPv4 */
    { "192.0.2.0/24", "::ffff:192.0.2.1", 1 },
    { "192.0.2.0/24", "::ffff:192.0.3.1", 0 },
    { "::ffff:0:0/96", "::ffff:192.0.2.1", 0 },
    /* separators: blanks, tabs, commas; later items count too */
    { "127.0.0.1/32, ::1/128,\t2001:db8::/32", "2001:db8::1", 1 },
    { "127.0.0.1/32, ::1/128,\t2001:db8::/32", "192.0.2.1", 0 },
    { " , 192.0.2.1 ,, ", "192.0.2.1", 1 },
    /* an empty list trusts nobody */
    { "", "127.0.0.1", 0 },
    { " ,\t", "::1", 0 },
};

static const char *const refused[] = {
    "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-1", "10.0.0.0/+8",
    "10.0.0.0/8x", "10.0.0.256", "bogus", "192.0.2.1 nonsense",
    "10.0.0.0/99999999999999999999",
    "2001:0db8:0000:0000:0000:0000:0000:0001/128/128/128",
    "2001:0db8:0000:0000:0000:0000:0000:0001/128/128/128/128/128",
};

int main(void)
{
    struct sockaddr_storage ss;
    struct sockaddr_un un;
    smf_netlist list;
    char err[256];
    size_t i;

    for (i = 0; i < sizeof matches / sizeof matches[0]; i++) {
        err[0] = '\0';
        if (smf_netlist_parse(matches[i].list, &list, err, sizeof err) != 0) {
            ok(0, "\"%s\" parses (%s)", matches[i].list, err);
            continue;
        }
        ok(smf_netlist_match(&list, client(matches[i].ip, &ss)) == matches[i].want,
           "\"%s\" %s %s", matches[i].list, matches[i].want ? "matches" : "does not match",
           matches[i].ip);
        smf_netlist_free(&list);
    }

    for (i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        err[0] = '\0';
        ok(smf_netlist_parse(refused[i], &list, err, sizeof err) == -1 && err[0] != '\0'
           && list.nets == NULL && list.n == 0,
           "\"%s\" is refused with a reason (%s)", refused[i], err);
    }
    smf_netlist_parse("10.0.0.0/33", &list, err, sizeof err);
    is_str(err, "\"10.0.0.0/33\": prefix length must be 0..32", "the reason names the item");
    smf_netlist_parse("fe80::1/200", &list, err, sizeof err);
    is_str(err, "\"fe80::1/200\": prefix length must be 0..128", "IPv6: 0..128");
    smf_netlist_parse("127.0.0.1 host.example", &list, err, sizeof err);
    is_str(err, "\"host.example\" is not an IPv4 or IPv6 address", "a name is not an address");

    ok(smf_netlist_parse(NULL, &list, err, sizeof err) == 0 && list.n == 0,
       "a NULL list is an empty one");
    smf_netlist_free(&list);

    smf_netlist_parse("0.0.0.0/0 ::/0", &list, err, sizeof err);
    ok(list.n == 2, "two items, two networks");
    ok(smf_netlist_match(&list, NULL) == 0, "no client address: not trusted");
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    ok(smf_netlist_match(&list, (const struct sockaddr *)&un) == 0,
       "a unix-socket client is not in any network");
    smf_netlist_free(&list);
    ok(list.nets == NULL && list.n == 0, "smf_netlist_free empties the list");
    smf_netlist_free(&list);
    ok(1, "freeing twice is harmless");
    return tap_done();
}
