/* test_log.c — the log_facility and log_level keys' values (sm_log). */
#include <string.h>
#include <syslog.h>

#include "tap.h"
#include "sm_log.h"

int main(void)
{
    char why[128];
    int v = -1;

    ok(sm_log_facility_parse("mail", &v, why, sizeof why) == 0 && v == LOG_MAIL, "mail");
    ok(sm_log_facility_parse("LOCAL3", &v, why, sizeof why) == 0 && v == LOG_LOCAL3,
       "local3, any case");
    ok(sm_log_facility_parse("daemon", &v, why, sizeof why) == 0 && v == LOG_DAEMON, "daemon");
    v = -1;
    ok(sm_log_facility_parse("local8", &v, why, sizeof why) == -1 && v == -1,
       "local8 refused, nothing set");
    ok(strstr(why, "\"local8\" is not a syslog facility") != NULL, "why names the value");
    ok(sm_log_level_parse("warning", &v, why, sizeof why) == 0 && v == LOG_WARNING, "warning");
    ok(sm_log_level_parse("debug", &v, why, sizeof why) == 0 && v == LOG_DEBUG, "debug");
    ok(sm_log_level_parse("error", &v, why, sizeof why) == 0 && v == LOG_ERR, "error");
    ok(sm_log_level_parse("verbose", &v, why, sizeof why) == -1, "verbose refused");
    ok(strstr(why, "debug, info, notice, warning, error") != NULL, "why gives the choices");
    ok(sm_log_level_parse("", &v, NULL, 0) == -1, "empty refused, no why buffer");
    return tap_done();
}
