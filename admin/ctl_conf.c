/* ctl_conf.c — stubmailctl's configuration keys: one table, printed by -h
 * and -K (tests/docs/t-man-pages compares it with stubmailctl(8)).
 *
 * stubmailctl has a file of its own rather than reading the milter's or
 * pollerd's: it needs keys of both (the database, our domain and its key,
 * the resolver and CA file its checks use) and each of their parsers
 * refuses keys it does not know; and an admin's tool should not need the
 * read access the daemons' files are given. */
#include <stdio.h>
#include <string.h>

#include "sm_conf.h"
#include "sm_pgp.h"
#include "ctl.h"

static ctl_conf cfg;

static const sm_conf_key ctl_keys[] = {
    { "database", SM_CONF_STRING, &cfg.database, NULL, "libpq conninfo of the stubmail database" },
    { "domain", SM_CONF_STRING, &cfg.domain, NULL,
      "our own domain (book, intro, key and check need it)" },
    { "gnupg_home", SM_CONF_STRING, &cfg.gnupg_home, NULL,
      "GnuPG home with our domain key (key, check's login)" },
    { "domain_key", SM_CONF_STRING, &cfg.domain_key, NULL,
      "fingerprint of the domain key in use (key, check's login)" },
    { "outbox_url", SM_CONF_STRING, &cfg.outbox_url, NULL,
      "outbox= of the record key show prints; unset: the one published now" },
    { "record_udp", SM_CONF_STRING, &cfg.record_udp, NULL,
      "udp= of the record key show prints; unset: the one published now" },
    { "resolver", SM_CONF_STRING, &cfg.resolver, NULL,
      "DNS server IP:PORT for _stubmail records; unset: the system's" },
    { "ca_file", SM_CONF_STRING, &cfg.ca_file, NULL,
      "CA certificates outboxes are checked against; unset: the system's" },
    { "allow_http", SM_CONF_BOOL, &cfg.allow_http, "no",
      "accept http:// outboxes at loopback addresses" },
    { "pollerd_udp", SM_CONF_STRING, &cfg.pollerd_udp, NULL,
      "pollerd's udp_listen: told by a stub after intro accept; unset: its next cycle" },
    { NULL, 0, NULL, NULL, NULL }
};

void ctl_conf_print_keys(FILE *fp)
{
    const sm_conf_key *k;

    for (k = ctl_keys; k->name; k++)
        fprintf(fp, "%s\t%s\t%s\n", k->name, k->dflt ? k->dflt : "", k->help);
}

int ctl_conf_load(const char *path, ctl_conf *conf, char *err, size_t errlen)
{
    char sub[512];
    int rc = -1;

    if (sm_conf_load(path, ctl_keys, err, errlen) != 0)
        goto leave;
    if (sm_conf_require(ctl_keys, "database", sub, sizeof sub) != 0) {
        snprintf(err, errlen, "%s: %s", path, sub);
        goto leave;
    }
    if (cfg.domain && !sm_domain_valid(cfg.domain)) {
        snprintf(err, errlen, "%s: domain: \"%s\" is not a domain name", path, cfg.domain);
        goto leave;
    }
    if (cfg.domain_key && !sm_pgp_fpr_valid(cfg.domain_key)) {
        snprintf(err, errlen, "%s: domain_key: \"%s\" is not a fingerprint (40 or 64 hex digits)",
                 path, cfg.domain_key);
        goto leave;
    }
    *conf = cfg;
    rc = 0;
leave:
    return rc;
}

void ctl_conf_free(void)
{
    sm_conf_free(ctl_keys);
}
