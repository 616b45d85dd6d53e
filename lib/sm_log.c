/* sm_log — one logging call for the daemons: syslog (facility mail unless
 * configured) in production, timestamped lines on stderr in the foreground
 * and in tests, where no syslog daemon runs; lines less severe than the
 * configured level are not written. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sm_log.h"

static const char *log_ident = "stubmail";
static int log_stderr = 1;
static int log_debug;
/* atomic: a reload (stubmail-milter's SIGUSR1) changes them while other
 * threads log */
static atomic_int log_facility = LOG_MAIL;
static atomic_int log_level = LOG_INFO;

static const struct { const char *name; int value; } log_facilities[] = {
    { "mail", LOG_MAIL }, { "daemon", LOG_DAEMON }, { "user", LOG_USER },
    { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 },
    { "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },
    { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
}, log_levels[] = {
    { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
    { "warning", LOG_WARNING }, { "error", LOG_ERR },
};

int sm_log_facility_parse(const char *name, int *facility, char *why, size_t whylen)
{
    size_t i;

    for (i = 0; i < sizeof log_facilities / sizeof log_facilities[0]; i++)
        if (strcasecmp(name, log_facilities[i].name) == 0) {
            *facility = log_facilities[i].value;
            return 0;
        }
    sm_why(why, whylen, "\"%s\" is not a syslog facility (mail, daemon, user, local0 to "
           "local7)", name);
    return -1;
}

int sm_log_level_parse(const char *name, int *level, char *why, size_t whylen)
{
    size_t i;

    for (i = 0; i < sizeof log_levels / sizeof log_levels[0]; i++)
        if (strcasecmp(name, log_levels[i].name) == 0) {
            *level = log_levels[i].value;
            return 0;
        }
    sm_why(why, whylen, "\"%s\" is not a log level (debug, info, notice, warning, error)",
           name);
    return -1;
}

void sm_log_setup(int facility, int level)
{
    atomic_store(&log_facility, facility);
    atomic_store(&log_level, level);
}

void sm_log_open(const char *ident, int to_stderr)
{
    log_ident = ident;
    log_stderr = to_stderr;
    if (!to_stderr)
        openlog(ident, LOG_PID | LOG_NDELAY, log_facility);
}

void sm_log_set_debug(int on)
{
    log_debug = on;
}

static const char *level_name(int prio)
{
    switch (prio) {
    case LOG_DEBUG: return "debug";
    case LOG_INFO: case LOG_NOTICE: return "info";
    case LOG_WARNING: return "warning";
    default: return "error";
    }
}

static void vlog(int prio, const char *fmt, va_list ap, const char *suffix)
{
    char msg[2048], stamp[32];
    struct timespec ts;
    struct tm tm;

    if (prio > atomic_load(&log_level) && !(prio == LOG_DEBUG && log_debug))
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (!log_stderr) {
        /* the facility with each line: openlog's is the one of the start */
        syslog(atomic_load(&log_facility) | prio, "%s%s%s", msg, suffix ? ": " : "",
               suffix ? suffix : "");
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s[%ld]: %s: %s%s%s\n", stamp, ts.tv_nsec / 1000000,
            log_ident, (long)getpid(), level_name(prio), msg, suffix ? ": " : "",
            suffix ? suffix : "");
}

void sm_log(int prio, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(prio, fmt, ap, NULL);
    va_end(ap);
}

void sm_syserr(const char *fmt, ...)
{
    char reason[256];
    va_list ap;

    snprintf(reason, sizeof reason, "%s", strerror(errno));
    va_start(ap, fmt);
    vlog(LOG_ERR, fmt, ap, reason);
    va_end(ap);
}

void sm_why(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || whylen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}
