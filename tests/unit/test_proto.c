/* Unit tests: the JSON bodies of docs/PROTOCOL.md. */
#include <stdlib.h>
#include <string.h>

#include "sm_proto.h"
#include "tap.h"

static const char *poll_code(const char *body, size_t max_pairs)
{
    static char code[64];
    sm_parse_error err = { 0 };
    sm_pair *pairs;
    size_t n;

    if (sm_poll_request_parse(body, strlen(body), "b.example", max_pairs, &pairs, &n, &err) == 0) {
        free(pairs);
        return "ok";
    }
    snprintf(code, sizeof code, "%s", err.code);
    return code;
}

static const struct {
    const char *body;
    const char *code;
} poll_cases[] = {
    { "{\"pairs\":[{\"from\":\"alice@a.example\",\"to\":\"bob@b.example\"}]}", "ok" },
    { "{\"pairs\":[{\"from\":\"*@a.example\",\"to\":\"BOB@b.example\",\"x\":1}],\"y\":2}", "ok" },
    { "", "bad_json" },
    { "{", "bad_json" },
    { "[]", "bad_json" },
    { "\"pairs\"", "bad_json" },
    { "{\"pairs\":1,\"pairs\":2}", "bad_json" },
    { "{\"pairs\":[{\"from\":\"\xff\xfe@a.example\",\"to\":\"bob@b.example\"}]}", "bad_json" },
    { "{\"pairs\":[{\"from\":\"a\\u0000b@a.example\",\"to\":\"bob@b.example\"}]}", "bad_json" },
    { "{}", "bad_request" },
    { "{\"pairs\":{}}", "bad_request" },
    { "{\"pairs\":[]}", "bad_request" },
    { "{\"pairs\":[1]}", "bad_request" },
    { "{\"pairs\":[{\"from\":\"alice@a.example\"}]}", "bad_request" },
    { "{\"pairs\":[{\"from\":5,\"to\":\"bob@b.example\"}]}", "bad_request" },
    { "{\"pairs\":[{\"from\":\"x'; DROP TABLE outbox;--@a.example\",\"to\":\"bob@b.example\"}]}", "bad_request" },
    { "{\"pairs\":[{\"from\":\"alice@a.example\",\"to\":\"bob@c.example\"}]}", "foreign_recipient" },
    { "{\"pairs\":[{\"from\":\"alice@a.example\",\"to\":\"bob@b.example.evil\"}]}", "foreign_recipient" },
    { "{\"pairs\":[{\"from\":\"alice@a.example\",\"to\":\"*@b.example\"}]}", "bad_request" },
    { "{\"pairs\":[{\"from\":\"alice@a.example\",\"to\":\"<bob@b.example>\"}]}", "bad_request" },
    { "{\"pairs\":[{\"from\":\" alice@a.example\",\"to\":\"bob@b.example\"}]}", "bad_request" },
    { "{\"pairs\":[{\"from\":\"a@a.example\",\"to\":\"b@b.example\"},{\"from\":\"a@a.example\",\"to\":\"c@b.example\"},{\"from\":\"a@a.example\",\"to\":\"d@b.example\"}]}", "too_many_pairs" },
};

/* ---- login (docs/PROTOCOL.md, "POST /v1/login") and ack with a status ---- */

#define KEY_ARMOR "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----\n"
#define SIG_ARMOR "-----BEGIN PGP SIGNATURE-----\n\niHUEABYK...\n-----END PGP SIGNATURE-----\n"
#define NONCE "5f0c2b6e9d1a4c7f8e3b2a1d0c9f8e7d"

/* A login body with member name's value replaced by raw JSON value (NULL:
 * member left out); a name that is not a login member is added. */
static char *login_body(const char *name, const char *value)
{
    static const char *const names[] = { "domain", "server", "time", "nonce", "key", "signature" };
    static const char *const good[] = {
        "\"b.example\"", "\"a.example\"", "\"2026-11-26T19:04:05Z\"", "\"" NONCE "\"",
        "\"-----BEGIN PGP PUBLIC KEY BLOCK-----\\n\\nmDMEZ...\\n-----END PGP PUBLIC KEY BLOCK-----\\n\"",
        "\"-----BEGIN PGP SIGNATURE-----\\n\\niHUEABYK...\\n-----END PGP SIGNATURE-----\\n\"" };
    static char body[SM_LOGIN_KEY_MAX + 4096];   /* room for the largest key */
    size_t i, n = 0;
    int known = 0;

    n += snprintf(body + n, sizeof body - n, "{");
    for (i = 0; i < 6; i++) {
        const char *v = good[i];

        if (name && strcmp(name, names[i]) == 0) {
            v = value;
            known = 1;
        }
        if (v)
            n += snprintf(body + n, sizeof body - n, "%s\"%s\":%s", n > 1 ? "," : "", names[i], v);
    }
    if (name && !known)
        n += snprintf(body + n, sizeof body - n, ",\"%s\":%s", name, value);
    snprintf(body + n, sizeof body - n, "}");
    return body;
}

static const char *login_code(const char *body)
{
    static char code[64];
    sm_login_request req;
    sm_parse_error err = { 0 };

    if (sm_login_request_parse(body, strlen(body), &req, &err) == 0) {
        sm_login_request_free(&req);
        return "ok";
    }
    snprintf(code, sizeof code, "%s", err.code);
    return code;
}

static const struct {
    const char *name, *value, *code;
} login_cases[] = {
    { NULL, NULL, "ok" },
    { "domain", NULL, "bad_request" },
    { "server", NULL, "bad_request" },
    { "time", NULL, "bad_request" },
    { "nonce", NULL, "bad_request" },
    { "key", NULL, "bad_request" },
    { "signature", NULL, "bad_request" },
    { "domain", "1", "bad_request" },
    { "domain", "[\"b.example\"]", "bad_request" },
    { "domain", "null", "bad_request" },
    { "domain", "\"B.example\"", "bad_request" },
    { "domain", "\"b.example.\"", "bad_request" },
    { "domain", "\"b example\"", "bad_request" },
    { "domain", "\"b.example\\nserver:x\"", "bad_request" },
    { "domain", "\"\"", "bad_request" },
    { "server", "\"a.example:8080\"", "bad_request" },
    { "time", "1795719845", "bad_request" },
    { "time", "\"2026-11-26T19:04:05z\"", "bad_request" },
    { "time", "\"2026-11-26t19:04:05Z\"", "bad_request" },
    { "time", "\"2026-11-26T19:04:05\"", "bad_request" },
    { "time", "\"2026-11-26T19:04:05+00:00\"", "bad_request" },
    { "time", "\"2026-11-26T19:04:05.5Z\"", "bad_request" },
    { "time", "\"2026-02-30T19:04:05Z\"", "bad_request" },
    { "time", "\"2026-11-26T24:00:00Z\"", "bad_request" },
    { "time", "\"2016-12-31T23:59:60Z\"", "bad_request" },
    { "time", "\"1969-12-31T23:59:59Z\"", "bad_request" },
    { "time", "\"+026-11-26T19:04:05Z\"", "bad_request" },
    { "nonce", "\"5F0C2B6E9D1A4C7F8E3B2A1D0C9F8E7D\"", "bad_request" },
    { "nonce", "\"5f0c2b6e9d1a4c7f8e3b2a1d0c9f8e7\"", "bad_request" },
    { "nonce", "\"5f0c2b6e9d1a4c7f8e3b2a1d0c9f8e7d0\"", "bad_request" },
    { "nonce", "\"5f0c2b6e9d1a4c7f8e3b2a1d0c9f8e7g\"", "bad_request" },
    { "key", "\"mDMEZ...\"", "bad_request" },
    { "key", "\"-----BEGIN PGP PRIVATE KEY BLOCK-----\\n\"", "bad_request" },
    { "key", "{}", "bad_request" },
    { "signature", "\"-----BEGIN PGP MESSAGE-----\\n\"", "bad_request" },
    { "signature", "\"\"", "bad_request" },
};

static void test_login(void)
{
    static const char statement[] =
        "stubmail-login-v1\n"
        "server:a.example\n"
        "domain:b.example\n"
        "time:2026-11-26T19:04:05Z\n"
        "nonce:5f0c2b6e9d1a4c7f8e3b2a1d0c9f8e7d\n";
    char buf[SM_LOGIN_STATEMENT_MAX], tbuf[SM_TIME_LEN + 1], *text, *big;
    sm_login_request req;
    sm_parse_error err = { 0 };
    time_t t = 0;
    size_t i;

    /* the worked example of docs/PROTOCOL.md */
    ok(sm_login_statement("a.example", "b.example", "2026-11-26T19:04:05Z", NONCE, buf,
                          sizeof buf) == (int)strlen(statement), "statement length");
    is_str(buf, statement, "statement text as in PROTOCOL.md");
    ok(sm_login_statement("a.example", "b.example", "2026-11-26T19:04:05Z", NONCE, buf,
                          strlen(statement)) == -1, "statement: buffer one short refused");
    ok(sm_login_statement("a.example\nx", "b.example", "2026-11-26T19:04:05Z", NONCE, buf,
                          sizeof buf) == -1, "statement: line break in server refused");
    ok(sm_login_statement("a.example", "B.example", "2026-11-26T19:04:05Z", NONCE, buf,
                          sizeof buf) == -1, "statement: uppercase domain refused");
    ok(sm_login_statement("a.example", "b.example", "2026-11-26 19:04:05", NONCE, buf,
                          sizeof buf) == -1, "statement: malformed time refused");
    ok(sm_login_statement("a.example", "b.example", "2026-11-26T19:04:05Z", "00", buf,
                          sizeof buf) == -1, "statement: malformed nonce refused");
    {
        char longest[SM_DOMAIN_MAX + 1];

        /* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 octets */
        memset(longest, 'a', SM_DOMAIN_MAX);
        longest[63] = longest[127] = longest[191] = '.';
        longest[SM_DOMAIN_MAX] = '\0';
        ok(sm_login_statement(longest, longest, "9999-12-31T23:59:59Z", NONCE, buf,
                              sizeof buf) > 0, "statement: longest fields fit SM_LOGIN_STATEMENT_MAX");
    }

    for (i = 0; i < sizeof login_cases / sizeof login_cases[0]; i++)
        is_str(login_code(login_body(login_cases[i].name, login_cases[i].value)),
               login_cases[i].code, "login case %zu (%s)", i,
               login_cases[i].name ? login_cases[i].name : "good");
    is_str(login_code("{\"domain\":\"b.example\",\"domain\":\"b.example\"}"), "bad_json",
           "login: duplicate member");
    is_str(login_code("[]"), "bad_json", "login: not an object");
    is_str(login_code("{\"domain\":\"b.\xff\"}"), "bad_json", "login: invalid UTF-8");
    big = malloc(SM_LOGIN_KEY_MAX + 100);
    if (big) {
        snprintf(big, 64, "\"-----BEGIN PGP PUBLIC KEY BLOCK-----");
        memset(big + strlen(big), 'A', SM_LOGIN_KEY_MAX);
        strcpy(big + SM_LOGIN_KEY_MAX, "\"");
        is_str(login_code(login_body("key", big)), "ok", "login: key of the largest size");
        strcpy(big + SM_LOGIN_KEY_MAX, "AA\"");
        is_str(login_code(login_body("key", big)), "bad_request", "login: key above the limit");
        free(big);
    }

    text = login_body("x-unknown", "1");
    ok(sm_login_request_parse(text, strlen(text), &req, &err) == 0, "good login parses");
    is_str(req.domain, "b.example", "login domain");
    is_str(req.server, "a.example", "login server");
    is_str(req.time, "2026-11-26T19:04:05Z", "login time as sent");
    ok(req.when == 1795719845, "login time parsed");
    is_str(req.nonce, NONCE, "login nonce");
    is_str(req.key, KEY_ARMOR, "login key unescaped");
    ok(req.key_len == strlen(KEY_ARMOR), "login key length");
    is_str(req.signature, SIG_ARMOR, "login signature unescaped");
    sm_login_request_free(&req);
    ok(req.key == NULL && req.signature == NULL, "login request freed and cleared");

    text = sm_login_request_encode("b.example", "a.example", "2026-11-26T19:04:05Z", NONCE,
                                   KEY_ARMOR, SIG_ARMOR);
    ok(text && sm_login_request_parse(text, strlen(text), &req, &err) == 0,
       "encoded login parses");
    if (text && req.key) {
        is_str(req.signature, SIG_ARMOR, "encoded login round trip");
        sm_login_request_free(&req);
    }
    free(text);

    ok(sm_time_parse("1970-01-01T00:00:00Z", &t) == 0 && t == 0, "time: the epoch");
    ok(sm_time_parse("2024-02-29T00:00:00Z", &t) == 0 && t == 1709164800, "time: leap day");
    ok(sm_time_parse("2023-02-29T00:00:00Z", &t) == -1, "time: no leap day in 2023");
    ok(sm_time_parse("9999-12-31T23:59:59Z", &t) == 0 && t == 253402300799LL, "time: last second");
    ok(sm_time_format(1795719845, tbuf, sizeof tbuf) == 0, "time formats");
    is_str(tbuf, "2026-11-26T19:04:05Z", "time formatted");
    ok(sm_time_format(-1, tbuf, sizeof tbuf) == -1, "time before 1970 refused");
    ok(sm_time_format(253402300800LL, tbuf, sizeof tbuf) == -1, "time after 9999 refused");
    ok(sm_time_format(0, tbuf, SM_TIME_LEN) == -1, "time: buffer too small refused");
}

static const char *ack_code(const char *body, sm_ack_request *ack)
{
    static char code[64];
    sm_parse_error err = { 0 };

    if (sm_ack_request_parse_status(body, strlen(body), "b.example", ack, &err) == 0)
        return "ok";
    snprintf(code, sizeof code, "%s", err.code);
    return code;
}

static void test_ack_status(void)
{
    sm_ack_request ack;
    sm_parse_error err = { 0 };
    char body[512], *text;

    is_str(ack_code("{\"to\":\"bob@b.example\"}", &ack), "ok", "ack without status");
    ok(!ack.rejected && ack.reason[0] == '\0', "ack without status is a delivery");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"status\":\"delivered\"}", &ack), "ok",
           "ack with status delivered");
    ok(!ack.rejected, "status delivered is a delivery");
    is_str(ack_code("{\"to\":\"Bob@b.example\",\"status\":\"rejected\",\"reason\":\"bad signature\"}",
                    &ack), "ok", "rejecting ack");
    ok(ack.rejected, "rejecting ack says so");
    is_str(ack.to, "bob@b.example", "rejecting ack: recipient normalised");
    is_str(ack.reason, "bad signature", "rejecting ack: reason");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"status\":\"rejected\"}", &ack), "bad_request",
           "rejection without reason");
    ok(ack.to[0] == '\0' && !ack.rejected, "refused ack leaves nothing filled in");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"status\":\"rejected\",\"reason\":\"\"}", &ack),
           "bad_request", "empty reason");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"status\":\"rejected\",\"reason\":7}", &ack),
           "bad_request", "reason not a string");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"status\":\"rejected\",\"reason\":\"a\\nb\"}", &ack),
           "bad_request", "reason with a line break");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"status\":\"rejected\",\"reason\":\"caf\xc3\xa9\"}",
                    &ack), "bad_request", "reason not ASCII");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"reason\":\"bad signature\"}", &ack), "bad_request",
           "reason without rejection");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"status\":\"lost\"}", &ack), "bad_request",
           "unknown status");
    is_str(ack_code("{\"to\":\"bob@b.example\",\"status\":true}", &ack), "bad_request",
           "status not a string");
    is_str(ack_code("{\"to\":\"bob@c.example\",\"status\":\"rejected\",\"reason\":\"x\"}", &ack),
           "foreign_recipient", "rejection for another domain");
    snprintf(body, sizeof body, "{\"to\":\"bob@b.example\",\"status\":\"rejected\",\"reason\":\"%0*d\"}",
             SM_ACK_REASON_MAX, 0);
    is_str(ack_code(body, &ack), "ok", "reason of the largest size");
    snprintf(body, sizeof body, "{\"to\":\"bob@b.example\",\"status\":\"rejected\",\"reason\":\"%0*d\"}",
             SM_ACK_REASON_MAX + 1, 0);
    is_str(ack_code(body, &ack), "bad_request", "reason above the limit");

    text = sm_ack_request_encode("bob@b.example", NULL, NULL);
    is_str(text, "{\"to\":\"bob@b.example\"}", "ack encoded");
    free(text);
    text = sm_ack_request_encode("bob@b.example", "bad signature", NULL);
    is_str(text, "{\"to\":\"bob@b.example\",\"status\":\"rejected\",\"reason\":\"bad signature\"}",
           "rejecting ack encoded");
    ok(text && sm_ack_request_parse_status(text, strlen(text), "b.example", &ack, &err) == 0
       && ack.rejected && strcmp(ack.reason, "bad signature") == 0,
       "a rejecting ack parses back");
    free(text);
}

static const char *sub_code(const char *body, size_t max_pairs)
{
    static char code[64];
    sm_parse_error err = { 0 };
    sm_subscription_request req;

    if (sm_subscription_request_parse(body, strlen(body), "b.example", max_pairs, &req,
                                      &err) == 0) {
        sm_subscription_request_free(&req);
        return "ok";
    }
    snprintf(code, sizeof code, "%s", err.code);
    return code;
}

#define P(f, t) "{\"from\":\"" f "\",\"to\":\"" t "\"}"
static const struct {
    const char *body;
    const char *code;
} sub_cases[] = {
    { "{\"base\":0}", "ok" },
    { "{\"base\":7,\"add\":[" P("alice@a.example", "bob@b.example") "],\"remove\":[]}", "ok" },
    { "{\"reset\":true}", "ok" },
    { "{\"reset\":true,\"base\":3,\"add\":[" P("*@a.example", "Bob@B.example") "]}", "ok" },
    { "{\"reset\":false,\"base\":1,\"x\":[]}", "ok" },
    { "{\"base\":9007199254740991}", "ok" },
    { "", "bad_json" },
    { "[]", "bad_json" },
    { "{\"base\":1,\"base\":1}", "bad_json" },
    { "{\"base\":18446744073709551616}", "bad_json" },
    { "{}", "bad_request" },
    { "{\"reset\":false}", "bad_request" },
    { "{\"base\":-1}", "bad_request" },
    { "{\"base\":1.5}", "bad_request" },
    { "{\"base\":\"1\"}", "bad_request" },
    { "{\"base\":9007199254740992}", "bad_request" },
    { "{\"reset\":1}", "bad_request" },
    { "{\"reset\":true,\"base\":-1}", "bad_request" },
    { "{\"reset\":true,\"remove\":[]}", "bad_request" },
    { "{\"base\":1,\"add\":{}}", "bad_request" },
    { "{\"base\":1,\"add\":[1]}", "bad_request" },
    { "{\"base\":1,\"add\":[{\"from\":\"a@a.example\"}]}", "bad_request" },
    { "{\"base\":1,\"remove\":[" P("a@a.example", "<bob@b.example>") "]}", "bad_request" },
    { "{\"base\":1,\"add\":[" P("a@a.example", "*@b.example") "]}", "bad_request" },
    { "{\"base\":1,\"add\":[" P("a@a.example", "bob@c.example") "]}", "foreign_recipient" },
    { "{\"base\":1,\"remove\":[" P("a@a.example", "bob@c.example") "]}", "foreign_recipient" },
    { "{\"base\":1,\"add\":[" P("a@a.example", "b@b.example") "," P("c@a.example", "d@b.example")
      "," P("e@a.example", "f@b.example") "]}", "too_many_pairs" },
    { "{\"base\":1,\"add\":[" P("a@a.example", "b@b.example") "," P("c@a.example", "d@b.example")
      "],\"remove\":[" P("e@a.example", "f@b.example") "]}", "too_many_pairs" },
};

#define ID1 "0123456789abcdef0123456789abcdef"
#define ID2 "fedcba9876543210fedcba9876543210"

static const char *acks_code(const char *body, sm_ack_item **items, size_t *n)
{
    static char code[64];
    sm_parse_error err = { 0 };

    if (sm_acks_request_parse(body, strlen(body), "b.example", items, n, &err) == 0)
        return "ok";
    snprintf(code, sizeof code, "%s", err.code);
    return code;
}

static void test_acks(void)
{
    sm_ack_item *items = NULL, sent[2];
    sm_parse_error err = { 0 };
    size_t n = 0, i;
    int acked[2] = { -1, -1 };
    char *text, *big;

    is_str(acks_code("{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"Bob@b.example\"},"
                     "{\"id\":\"" ID2 "\",\"to\":\"carol@b.example\",\"status\":\"rejected\","
                     "\"reason\":\"bad signature\"}]}", &items, &n), "ok", "a batch of two");
    ok(n == 2 && !strcmp(items[0].id, ID1) && !strcmp(items[0].ack.to, "bob@b.example")
       && !items[0].ack.rejected, "first item: a delivery, recipient normalised");
    ok(n == 2 && !strcmp(items[1].id, ID2) && items[1].ack.rejected
       && !strcmp(items[1].ack.reason, "bad signature"), "second item: a rejection");
    memcpy(sent, items, sizeof sent);
    text = sm_acks_request_encode(items, n);
    free(items);
    items = NULL;
    is_str(text, "{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\"},{\"id\":\"" ID2
           "\",\"to\":\"carol@b.example\",\"status\":\"rejected\",\"reason\":\"bad signature\"}]}",
           "batch encoded");
    free(text);

    is_str(acks_code("{\"acks\":[]}", &items, &n), "bad_request", "empty batch");
    is_str(acks_code("{\"acks\":{}}", &items, &n), "bad_request", "acks not an array");
    is_str(acks_code("{}", &items, &n), "bad_request", "no acks");
    is_str(acks_code("[]", &items, &n), "bad_json", "not an object");
    is_str(acks_code("{\"acks\":[7]}", &items, &n), "bad_request", "item not an object");
    is_str(acks_code("{\"acks\":[{\"to\":\"bob@b.example\"}]}", &items, &n), "bad_request",
           "item without id");
    is_str(acks_code("{\"acks\":[{\"id\":\"" ID1 "\"}]}", &items, &n), "bad_request",
           "item without to");
    is_str(acks_code("{\"acks\":[{\"id\":\"0123456789ABCDEF0123456789ABCDEF\",\"to\":"
                     "\"bob@b.example\"}]}", &items, &n), "bad_request", "id in upper case");
    is_str(acks_code("{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\"},{\"id\":\"" ID2
                     "\",\"to\":\"bob@c.example\"}]}", &items, &n), "foreign_recipient",
           "one item at another domain refuses all");
    ok(items == NULL && n == 0, "a refused batch hands nothing back");
    is_str(acks_code("{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\","
                     "\"reason\":\"x\"}]}", &items, &n), "bad_request", "reason without rejection");
#define ACK_ITEM "{\"id\":\"" ID1 "\",\"to\":\"b@b.example\"}"
    big = malloc((sizeof(ACK_ITEM) + 1) * (SM_ACKS_MAX + 1) + 16);
    if (big) {
        size_t one = strlen(ACK_ITEM) + 1, head = strlen("{\"acks\":[");
        strcpy(big, "{\"acks\":[");
        for (i = 0; i <= SM_ACKS_MAX; i++)
            strcat(strcat(big, ACK_ITEM), ",");
        strcpy(big + strlen(big) - 1, "]}");
        is_str(acks_code(big, &items, &n), "too_many_acks", "one ack above the limit");
        strcpy(big + head + one * SM_ACKS_MAX - 1, "]}");
        is_str(acks_code(big, &items, &n), "ok", "acks at the limit");
        ok(n == SM_ACKS_MAX, "all of them");
        free(items);
        items = NULL;
        free(big);
    }

    text = "{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\",\"retrieved\":"
           "\"2026-11-26T19:04:09Z\",\"status\":\"delivered\"},{\"id\":\"" ID2 "\",\"to\":"
           "\"carol@b.example\",\"error\":\"not_found\"}]}";
    ok(sm_acks_response_parse(text, strlen(text), sent, 2, acked, &err) == 0
       && acked[0] == 1 && acked[1] == 0, "answer: acked, then not found");
    text = "{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\",\"status\":\"delivered\"}]}";
    ok(sm_acks_response_parse(text, strlen(text), sent, 2, acked, &err) == -1,
       "answer with one answer too few refused");
    text = "{\"acks\":[{\"id\":\"" ID2 "\",\"to\":\"carol@b.example\",\"error\":\"not_found\"},"
           "{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\",\"status\":\"delivered\"}]}";
    ok(sm_acks_response_parse(text, strlen(text), sent, 2, acked, &err) == -1,
       "answers out of order refused");
    text = "{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\"},{\"id\":\"" ID2 "\",\"to\":"
           "\"carol@b.example\",\"error\":\"not_found\"}]}";
    ok(sm_acks_response_parse(text, strlen(text), sent, 2, acked, &err) == -1,
       "answer with neither status nor error refused");
    text = "{\"acks\":[{\"id\":\"" ID1 "\",\"to\":\"bob@b.example\",\"error\":\"gone\"},{\"id\":\""
           ID2 "\",\"to\":\"carol@b.example\",\"error\":\"not_found\"}]}";
    ok(sm_acks_response_parse(text, strlen(text), sent, 2, acked, &err) == -1,
       "unknown error refused");
}

int main(void)
{
    sm_pair pairs[2] = { { "alice@a.example", "bob@b.example" }, { "*@a.example", "dave@b.example" } };
    sm_pair *got;
    sm_listing *items;
    sm_parse_error err = { 0 };
    sm_ack_request ack;
    char *text;
    size_t i, n;
    int more;

    for (i = 0; i < sizeof poll_cases / sizeof poll_cases[0]; i++)
        is_str(poll_code(poll_cases[i].body, 2), poll_cases[i].code, "poll request case %zu", i);

    /* encode → parse round trip, normalised */
    text = sm_poll_request_encode(pairs, 2);
    is_str(text, "{\"pairs\":[{\"from\":\"alice@a.example\",\"to\":\"bob@b.example\"},"
                 "{\"from\":\"*@a.example\",\"to\":\"dave@b.example\"}]}", "poll request encoded");
    ok(sm_poll_request_parse(text, strlen(text), "b.example", 10, &got, &n, &err) == 0 && n == 2,
       "encoded request parses");
    if (n == 2) {
        is_str(got[1].from, "*@a.example", "wildcard kept");
        is_str(got[0].to, "bob@b.example", "recipient kept");
        free(got);
    }
    free(text);
    text = sm_pairs_sql_json(pairs, 1);
    is_str(text, "[{\"sender\":\"alice@a.example\",\"recipient\":\"bob@b.example\"}]", "SQL json");
    free(text);

    ok(sm_ack_request_parse_status("{\"to\":\"Bob@B.example\"}", 22, "b.example", &ack, &err) == 0,
       "ack parses");
    is_str(ack.to, "bob@b.example", "ack recipient normalised");
    ok(sm_ack_request_parse_status("{\"to\":\"<bob@b.example>\"}", 24, "b.example", &ack, &err) == -1
       && strcmp(err.code, "bad_request") == 0, "ack with a bracketed address refused");
    ok(sm_ack_request_parse_status("{\"to\":\"bob@c.example\"}", 22, "b.example", &ack, &err) == -1
       && strcmp(err.code, "foreign_recipient") == 0, "ack for another domain refused");
    ok(sm_ack_request_parse_status("{\"to\":[]}", 9, "b.example", &ack, &err) == -1
       && strcmp(err.code, "bad_request") == 0, "ack without a string refused");

    text = "{\"messages\":[{\"id\":\"6f1c0a9e2b7d4c3f8a5e1d2c3b4a5968\",\"from\":\"alice@a.example\","
           "\"to\":\"bob@b.example\",\"size\":1234,\"time\":\"2026-11-26T19:04:05Z\"}],\"more\":true}";
    ok(sm_poll_response_parse(text, strlen(text), &items, &n, &more, &err) == 0 && n == 1 && more,
       "poll answer parses");
    if (n == 1) {
        is_str(items[0].id, "6f1c0a9e2b7d4c3f8a5e1d2c3b4a5968", "listed id");
        ok(items[0].size == 1234, "listed size");
        is_str(items[0].time, "2026-11-26T19:04:05Z", "listed time");
        free(items);
    }
    text = "{\"messages\":[{\"id\":\"../etc/passwd\",\"from\":\"alice@a.example\",\"to\":\"bob@b.example\",\"size\":1}]}";
    ok(sm_poll_response_parse(text, strlen(text), &items, &n, &more, &err) == -1, "bad id in answer refused");
    text = "{\"messages\":[{\"id\":\"6f1c0a9e2b7d4c3f8a5e1d2c3b4a5968\",\"from\":\"alice@a.example\",\"to\":\"bob@b.example\",\"size\":-1}]}";
    ok(sm_poll_response_parse(text, strlen(text), &items, &n, &more, &err) == -1, "negative size refused");
    text = "{\"messages\":[]}";
    ok(sm_poll_response_parse(text, strlen(text), &items, &n, &more, &err) == 0 && n == 0 && !more,
       "empty answer parses");

    for (i = 0; i < sizeof sub_cases / sizeof sub_cases[0]; i++)
        is_str(sub_code(sub_cases[i].body, 2), sub_cases[i].code, "subscription case %zu", i);
    {
        sm_subscription_request req;
        long long version;

        text = sm_subscription_request_encode(0, 7, pairs, 1, pairs + 1, 1);
        is_str(text, "{\"base\":7,\"add\":[" P("alice@a.example", "bob@b.example")
               "],\"remove\":[" P("*@a.example", "dave@b.example") "]}", "change encoded");
        ok(sm_subscription_request_parse(text, strlen(text), "b.example", 2, &req, &err) == 0
           && !req.reset && req.base == 7 && req.nadd == 1 && req.nremove == 1
           && strcmp(req.remove[0].from, "*@a.example") == 0, "change parses back");
        sm_subscription_request_free(&req);
        free(text);
        text = sm_subscription_request_encode(1, 7, pairs, 2, NULL, 0);
        is_str(text, "{\"reset\":true,\"add\":[" P("alice@a.example", "bob@b.example") ","
               P("*@a.example", "dave@b.example") "]}", "reset encoded");
        ok(sm_subscription_request_parse(text, strlen(text), "b.example", 2, &req, &err) == 0
           && req.reset && req.base == -1 && req.nadd == 2 && req.nremove == 0, "reset parses back");
        sm_subscription_request_free(&req);
        free(text);
        text = sm_subscription_request_encode(1, 0, NULL, 0, NULL, 0);
        is_str(text, "{\"reset\":true,\"add\":[]}", "empty reset encoded");
        free(text);
        text = "{\"base\":1,\"add\":[" P("A@A.example", "BOB@b.example") "]}";
        ok(sm_subscription_request_parse(text, strlen(text), "b.example", 2, &req, &err) == 0
           && strcmp(req.add[0].to, "bob@b.example") == 0
           && strcmp(req.add[0].from, "a@a.example") == 0, "subscribed pair normalised");
        sm_subscription_request_free(&req);

        ok(sm_version_parse("{\"version\":8}", 13, &version, &err) == 0 && version == 8,
           "version parses");
        text = "{\"messages\":[],\"more\":false,\"version\":0}";
        ok(sm_version_parse(text, strlen(text), &version, &err) == 0 && version == 0,
           "version of a poll answer");
        ok(sm_version_parse("{\"version\":-1}", 14, &version, &err) == -1, "negative version refused");
        ok(sm_version_parse("{\"version\":\"8\"}", 15, &version, &err) == -1, "string version refused");
        ok(sm_version_parse("{}", 2, &version, &err) == -1, "missing version refused");
        text = sm_error_body_version("subscription_changed", "at 9", 9);
        is_str(text, "{\"error\":\"subscription_changed\",\"message\":\"at 9\",\"version\":9}",
               "409 body");
        ok(sm_version_parse(text, strlen(text), &version, &err) == 0 && version == 9,
           "409 body's version");
        free(text);
    }

    text = sm_error_body("bad_json", "body is not \"JSON\"");
    is_str(text, "{\"error\":\"bad_json\",\"message\":\"body is not \\\"JSON\\\"\"}", "error body");
    free(text);

    test_login();
    test_ack_status();
    test_acks();
    return tap_done();
}
