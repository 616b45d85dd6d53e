/* Unit tests of pollerd's metrics text (pollerd/pd_metrics.c): the text a
 * scrape of metrics_listen gets (pd_metrics_text) is made from the counters
 * as they are at that call, and is the text metrics_file gets (one
 * renderer), but for the lines that say when it was made. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sm_log.h"
#include "sm_proto.h"
#include "pd.h"
#include "tap.h"

/* text without the lines that hold a time (they may cross a second). */
static char *timeless(const char *text)
{
    static const char *const timed[] = {
        "stubmail_pollerd_last_poll_success_seconds{",
        "stubmail_pollerd_lag_seconds{",
        "stubmail_pollerd_metrics_written_timestamp_seconds ",
    };
    char *out = calloc(1, strlen(text) + 1), *o = out;
    const char *line = text, *end;
    size_t i, n;
    int keep;

    while (out && *line) {
        end = strchr(line, '\n');
        n = end ? (size_t)(end - line) + 1 : strlen(line);
        keep = 1;
        for (i = 0; i < sizeof(timed) / sizeof(timed[0]); i++)
            if (strncmp(line, timed[i], strlen(timed[i])) == 0)
                keep = 0;
        if (keep) {
            memcpy(o, line, n);
            o += n;
        }
        line += n;
    }
    return out;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 1 << 16);
    size_t n = 0;

    if (f && buf)
        n = fread(buf, 1, (1 << 16) - 1, f);
    if (f)
        fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

int main(void)
{
    char dir[] = "/tmp/test_pd_metrics.XXXXXX", path[4096], stored[SM_TIME_LEN + 1];
    char *text, *again, *file, *a, *b;
    size_t len;

    sm_log_open("test_pd_metrics", 1);
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof(path), "%s/pollerd.prom", dir);
    sm_time_format(time(NULL) - 5, stored, sizeof(stored));

    pd_metrics_poll("a.example", PD_POLL_LISTED);
    pd_metrics_fetched(700);
    pd_metrics_delivered("a.example", stored);
    pd_metrics_failure(PD_FAIL_ACK, 2);

    text = pd_metrics_text(&len);
    ok(text && len == strlen(text), "the text, its length with it");
    ok(text && strstr(text, "\nstubmail_pollerd_delivered_total 1\n"), "one delivered");
    ok(text && strstr(text, "\nstubmail_pollerd_fetched_bytes_total 700\n"), "its octets");
    ok(text && strstr(text, "\nstubmail_pollerd_failures_total{reason=\"ack\"} 2\n"),
       "failures by reason");
    ok(text && strstr(text, "\nstubmail_pollerd_lag_seconds{domain=\"a.example\"} "),
       "the domain's lag");

    pd_metrics_delivered("a.example", stored);
    again = pd_metrics_text(&len);
    ok(again && strstr(again, "\nstubmail_pollerd_delivered_total 2\n"),
       "a second text counts what happened since the first");

    pd_metrics_write(path);
    file = slurp(path);
    a = timeless(again);
    b = timeless(file);
    ok(a && b && b[0], "metrics_file written");
    is_str(b, a, "metrics_file holds the same text (one renderer)");

    free(text);
    free(again);
    free(file);
    free(a);
    free(b);
    unlink(path);
    rmdir(dir);
    pd_metrics_free();
    return tap_done();
}
