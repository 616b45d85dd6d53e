/* sm_log — one logging call for the daemons: syslog (facility mail) in
 * production, timestamped lines on stderr in the foreground and in tests,
 * where no syslog daemon runs. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sm_log.h"

static const char *log_ident = "stubmail";
static int log_stderr = 1;
static int log_debug;

void sm_log_open(const char *ident, int to_stderr)
{
    log_ident = ident;
    log_stderr = to_stderr;
    if (!to_stderr)
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
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

    if (prio == LOG_DEBUG && !log_debug)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (!log_stderr) {
        syslog(prio, "%s%s%s", msg, suffix ? ": " : "", suffix ? suffix : "");
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
