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

int main(void)
{
    sm_pair pairs[2] = { { "alice@a.example", "bob@b.example" }, { "*@a.example", "dave@b.example" } };
    sm_pair *got;
    sm_listing *items;
    sm_parse_error err = { 0 };
    char to[SM_ADDR_MAX + 1], *text;
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

    ok(sm_ack_request_parse("{\"to\":\"Bob@B.example\"}", 22, "b.example", to, sizeof to, &err) == 0,
       "ack parses");
    is_str(to, "bob@b.example", "ack recipient normalised");
    ok(sm_ack_request_parse("{\"to\":\"<bob@b.example>\"}", 24, "b.example", to, sizeof to, &err) == -1
       && strcmp(err.code, "bad_request") == 0, "ack with a bracketed address refused");
    ok(sm_ack_request_parse("{\"to\":\"bob@c.example\"}", 22, "b.example", to, sizeof to, &err) == -1
       && strcmp(err.code, "foreign_recipient") == 0, "ack for another domain refused");
    ok(sm_ack_request_parse("{\"to\":[]}", 9, "b.example", to, sizeof to, &err) == -1
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

    text = sm_error_body("bad_json", "body is not \"JSON\"");
    is_str(text, "{\"error\":\"bad_json\",\"message\":\"body is not \\\"JSON\\\"\"}", "error body");
    free(text);
    return tap_done();
}
