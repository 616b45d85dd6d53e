/* sm_log — daemon logging: to stderr (foreground, tests) or syslog.
 * sm_warn/sm_err append nothing; sm_syserr appends ": strerror(errno)". */
#ifndef SM_LOG_H
#define SM_LOG_H

#include <stddef.h>
#include <syslog.h>

/* ident names the program; to_stderr = 1 writes "time ident[pid]: level: msg"
 * lines to stderr instead of syslog (the facility of sm_log_setup, LOG_MAIL
 * unless set). */
void sm_log_open(const char *ident, int to_stderr);
void sm_log_set_debug(int on);

/* The configuration keys log_facility and log_level: 0 with *facility or
 * *level set, or -1 with why ("mail", "daemon", "local0".."local7",
 * "user"; "debug", "info", "notice", "warning", "error"). */
int sm_log_facility_parse(const char *name, int *facility, char *why, size_t whylen);
int sm_log_level_parse(const char *name, int *level, char *why, size_t whylen);
/* Before sm_log_open: the syslog facility, and the least severe level
 * logged (debug lines also when sm_log_set_debug is on). Again at any time
 * after (a reload): the next line follows them, whatever thread logs it. */
void sm_log_setup(int facility, int level);

void sm_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define sm_debug(...) sm_log(LOG_DEBUG, __VA_ARGS__)
#define sm_info(...)  sm_log(LOG_INFO, __VA_ARGS__)
#define sm_warn(...)  sm_log(LOG_WARNING, __VA_ARGS__)
#define sm_err(...)   sm_log(LOG_ERR, __VA_ARGS__)
void sm_syserr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Put a reason into a caller's "why" buffer; nothing if why is NULL or
 * whylen 0. The lib's functions say why they failed this way, not by logging:
 * the caller knows the context (domain, message id) the log line needs. */
void sm_why(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
