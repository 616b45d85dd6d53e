/*
 * NAME
 *	pd_metrics - pollerd's metrics in Prometheus text format
 *
 * DESCRIPTION
 *	Counters since pollerd started (polls by result, messages fetched and
 *	their octets, delivered, rejected, failures by reason) and per remote
 *	domain the time of its last good poll and the lag of its last
 *	delivered message (delivery time minus the time its outbox stored it).
 *	One renderer makes their text, in the Prometheus text exposition
 *	format 0.0.4, from the counters as they are at that moment; it is read
 *	two ways. With metrics_file set the text is written there after every
 *	cycle, to a temporary file renamed over it: a reader (node_exporter's
 *	textfile collector, or any scraper that reads files) never sees half a
 *	file. With metrics_listen set, pd_metrics_http.c serves it at each
 *	scrape (pd_metrics_text). A domain's entry lives as long as the
 *	process: domains come and go per cycle (pd_cycle.c), what was learned
 *	of them must not.
 *
 * DIAGNOSTICS
 *	A file that cannot be written: error, once until it can again (the
 *	next cycle tries anew). Out of memory for a domain's entry: that
 *	domain goes uncounted, said once; for the text of a scrape: the caller
 *	answers 500.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sm_log.h"
#include "sm_proto.h"
#include "pd.h"

static const char *const pd_metrics_reasons[PD_FAIL_N] = {
    "fetch", "verify", "delivery", "deferred", "database", "quarantine", "ack", "protocol"
};
static const char *const pd_metrics_poll_results[PD_POLL_N] = { "listed", "idle", "failed" };

typedef struct pd_metrics_domain {
    struct pd_metrics_domain *next;
    char name[SM_DOMAIN_MAX + 1];
    time_t last_poll_ok;            /* 0: never */
    long long lag;                  /* seconds, the last delivered message; -1: none */
} pd_metrics_domain;

static struct {
    unsigned long long polls[PD_POLL_N];
    unsigned long long fetched, fetched_bytes, delivered, rejected;
    unsigned long long failures[PD_FAIL_N];
    pd_metrics_domain *domains;
    int write_failed;               /* said once until a write works */
    int nomem_said;
} pd_m;

static pd_metrics_domain *pd_metrics_domain_of(const char *name)
{
    pd_metrics_domain *m;

    for (m = pd_m.domains; m; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    if ((m = calloc(1, sizeof(*m))) == NULL) {
        if (!pd_m.nomem_said++)
            sm_err("%s: out of memory for its metrics: not counted per domain", name);
        return NULL;
    }
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->lag = -1;
    m->next = pd_m.domains;
    pd_m.domains = m;
    return m;
}

void pd_metrics_poll(const char *domain, pd_poll_result result)
{
    pd_metrics_domain *m;

    pd_m.polls[result]++;
    if (result != PD_POLL_FAILED && (m = pd_metrics_domain_of(domain)) != NULL)
        m->last_poll_ok = time(NULL);
}

void pd_metrics_fetched(long long octets)
{
    pd_m.fetched++;
    pd_m.fetched_bytes += (unsigned long long)octets;
}

void pd_metrics_delivered(const char *domain, const char *stored_at)
{
    pd_metrics_domain *m;
    time_t t;

    pd_m.delivered++;
    if (sm_time_parse(stored_at, &t) == 0 && (m = pd_metrics_domain_of(domain)) != NULL)
        m->lag = (long long)(time(NULL) - t);
}

void pd_metrics_rejected(void)
{
    pd_m.rejected++;
}

void pd_metrics_failure(pd_fail_reason reason, unsigned n)
{
    pd_m.failures[reason] += n;
}

/* The one renderer: the text of every metric, as of now. */
static void pd_metrics_render(FILE *f)
{
    time_t now = time(NULL);
    pd_metrics_domain *m;
    int i;

    fputs("# HELP stubmail_pollerd_polls_total HTTP polls of remote outboxes by result "
          "(listed: messages listed, idle: nothing new).\n"
          "# TYPE stubmail_pollerd_polls_total counter\n", f);
    for (i = 0; i < PD_POLL_N; i++)
        fprintf(f, "stubmail_pollerd_polls_total{result=\"%s\"} %llu\n",
                pd_metrics_poll_results[i], pd_m.polls[i]);
    fprintf(f, "# HELP stubmail_pollerd_fetched_total Message bodies fetched whole.\n"
            "# TYPE stubmail_pollerd_fetched_total counter\n"
            "stubmail_pollerd_fetched_total %llu\n"
            "# HELP stubmail_pollerd_fetched_bytes_total Octets of the bodies fetched whole.\n"
            "# TYPE stubmail_pollerd_fetched_bytes_total counter\n"
            "stubmail_pollerd_fetched_bytes_total %llu\n"
            "# HELP stubmail_pollerd_delivered_total Recipients delivered to the local MTA.\n"
            "# TYPE stubmail_pollerd_delivered_total counter\n"
            "stubmail_pollerd_delivered_total %llu\n"
            "# HELP stubmail_pollerd_rejected_total Recipients rejected for good (quarantined, "
            "refused by the MTA), acked as rejected.\n"
            "# TYPE stubmail_pollerd_rejected_total counter\n"
            "stubmail_pollerd_rejected_total %llu\n",
            pd_m.fetched, pd_m.fetched_bytes, pd_m.delivered, pd_m.rejected);
    fputs("# HELP stubmail_pollerd_failures_total Messages (or acks) that failed and are "
          "retried next cycle, by reason.\n"
          "# TYPE stubmail_pollerd_failures_total counter\n", f);
    for (i = 0; i < PD_FAIL_N; i++)
        fprintf(f, "stubmail_pollerd_failures_total{reason=\"%s\"} %llu\n",
                pd_metrics_reasons[i], pd_m.failures[i]);
    fputs("# HELP stubmail_pollerd_last_poll_success_seconds Seconds since the last good "
          "poll of a remote domain, when these metrics were made.\n"
          "# TYPE stubmail_pollerd_last_poll_success_seconds gauge\n", f);
    for (m = pd_m.domains; m; m = m->next)
        if (m->last_poll_ok)
            fprintf(f, "stubmail_pollerd_last_poll_success_seconds{domain=\"%s\"} %lld\n",
                    m->name, (long long)(now - m->last_poll_ok));
    fputs("# HELP stubmail_pollerd_lag_seconds From storage in the remote outbox to "
          "delivery here, of the last message delivered from a domain.\n"
          "# TYPE stubmail_pollerd_lag_seconds gauge\n", f);
    for (m = pd_m.domains; m; m = m->next)
        if (m->lag >= 0)
            fprintf(f, "stubmail_pollerd_lag_seconds{domain=\"%s\"} %lld\n", m->name, m->lag);
    fprintf(f, "# HELP stubmail_pollerd_metrics_written_timestamp_seconds When these "
            "metrics were made (metrics_file written, or metrics_listen scraped).\n# TYPE stubmail_pollerd_metrics_written_timestamp_seconds gauge\n"
            "stubmail_pollerd_metrics_written_timestamp_seconds %lld\n", (long long)now);
}

void pd_metrics_write(const char *path)
{
    char tmp[4096] = "";
    FILE *f = NULL;
    int ok = 0;

    if (path == NULL)
        goto leave;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        goto leave;
    }
    if ((f = fopen(tmp, "w")) == NULL)
        goto leave;
    pd_metrics_render(f);
    if (fflush(f) != 0 || ferror(f))
        goto leave;
    if (fclose(f) != 0) {
        f = NULL;
        goto leave;
    }
    f = NULL;
    ok = rename(tmp, path) == 0;
leave:
    if (f)
        fclose(f);
    if (path && !ok) {
        int e = errno;

        unlink(tmp);
        if (!pd_m.write_failed)
            sm_err("metrics_file %s: cannot write it: %s (said once until it works)", path,
                   strerror(e));
    }
    if (path)
        pd_m.write_failed = !ok;
}

char *pd_metrics_text(size_t *len)
{
    char *text = NULL;
    FILE *f;
    int ok;

    *len = 0;
    if ((f = open_memstream(&text, len)) == NULL)
        goto leave;
    pd_metrics_render(f);
    /* the flush sets text and len; what it could not grow is an error */
    ok = fflush(f) == 0 && !ferror(f);
    fclose(f);
    if (!ok) {
        free(text);
        text = NULL;
    }
leave:
    if (text == NULL)
        *len = 0;
    return text;
}

void pd_metrics_free(void)
{
    pd_metrics_domain *m, *next;

    for (m = pd_m.domains; m; m = next) {
        next = m->next;
        free(m);
    }
    pd_m.domains = NULL;
}
