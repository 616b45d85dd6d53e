/* ctl.h — stubmailctl, the administrator's command over the database.
 *
 *   stubmailctl.c   options, configuration, the subcommand table
 *   ctl_conf.c      the configuration keys (one table, sm_conf)
 *   ctl_db.c        the connection and one statement at a time
 *   ctl_out.c       rows as an aligned table or as JSON (--json)
 *   ctl_peer.c      peer list|pin|optout|remove, dns list|flush
 *   ctl_book.c      book list|add|remove|block|unblock, book site ...
 *   ctl_intro.c     intro list|accept|drop
 *   ctl_outbox.c    outbox [USER|--domain D]
 *   ctl_key.c       key show|rotate
 *   ctl_check.c     check DOMAIN
 *
 * Exit statuses (sysexits): 0 done; 1 nothing to do it to (no such row) or
 * a check failed; EX_USAGE bad command line or argument; EX_CONFIG bad
 * configuration; EX_TEMPFAIL the database (or DNS, gpg) failed. */
#ifndef CTL_H
#define CTL_H

#include <stdio.h>
#include <sysexits.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "sm_addr.h"

#define CTL_NAME "stubmailctl"
#define CTL_DEFAULT_CONF "/etc/stubmail/stubmailctl.conf"

typedef struct ctl_conf {
    char *database;     /* libpq conninfo (required) */
    char *domain;       /* our own domain */
    char *gnupg_home;   /* GnuPG home with our domain key(s) */
    char *domain_key;   /* fingerprint of the key in use */
    char *outbox_url;   /* the record's outbox=; unset: the published one */
    char *record_udp;   /* the record's udp=; unset: the published one */
    char *resolver;     /* DNS server IP:PORT; unset: the system's */
    char *ca_file;      /* CA certificates for HTTPS; unset: the system's */
    int allow_http;     /* accept http:// outboxes at loopback addresses */
    char *pollerd_udp;  /* pollerd's udp_listen, poked after intro accept */
} ctl_conf;

typedef struct ctl {
    ctl_conf conf;
    const char *conf_path;
    int json;           /* --json */
    PGconn *db;
} ctl;

/* ctl_conf.c */
int ctl_conf_load(const char *path, ctl_conf *conf, char *err, size_t errlen);
void ctl_conf_print_keys(FILE *fp);
void ctl_conf_free(void);

/* ctl_db.c: run sql with n text parameters; NULL (said on stderr, naming
 * what) unless it returned rows or a command status. */
int ctl_db_connect(ctl *c);
PGresult *ctl_db_exec(ctl *c, const char *what, const char *sql, int n,
                      const char *const *params);
/* A statement that changes rows (ctl_db_exec's error handling): 0 with
 * *count the rows it changed, or -1. */
int ctl_db_change(ctl *c, const char *what, const char *sql, int n, const char *const *p,
                  long *count);
void ctl_db_close(ctl *c);

/* ctl_out.c */
void ctl_out_rows(ctl *c, PGresult *res, const char *title);
/* A finished change: human text, or {"ok": true, "KEY": ...} built from
 * the pairs given (NULL-terminated, values strings). */
void ctl_out_done(ctl *c, const char *text, ...);
void ctl_out_json(json_t *v);   /* prints and releases v */
int ctl_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* argument checks: print why and return -1 */
int ctl_arg_addr(const char *what, const char *in, char out[SM_ADDR_MAX + 1]);
int ctl_arg_pattern(const char *what, const char *in, char out[SM_ADDR_MAX + 1]);
int ctl_arg_domain(const char *what, const char *in, char out[256]);

/* the subcommands: argv[0] is the subcommand's name */
int ctl_peer_main(ctl *c, int argc, char **argv);
int ctl_dns_main(ctl *c, int argc, char **argv);
int ctl_book_main(ctl *c, int argc, char **argv);
int ctl_intro_main(ctl *c, int argc, char **argv);
int ctl_outbox_main(ctl *c, int argc, char **argv);
int ctl_key_main(ctl *c, int argc, char **argv);
int ctl_check_main(ctl *c, int argc, char **argv);

#endif
