/* sm_dnssec — which domains must have a DNSSEC-validated _stubmail record
 * (the milter's and pollerd's dnssec_require, mod_stubmail's
 * StubmailDNSSECRequire).
 *
 * A requirement is "none", "all", or a list of domain names separated by
 * blanks or commas; a listed name covers that domain exactly, not its
 * subdomains (each pulling domain publishes its own record). */
#ifndef SM_DNSSEC_H
#define SM_DNSSEC_H

/* 0 if spec is a requirement by the rule above, else -1 with *bad saying
 * why (for configuration checks). */
int sm_dnssec_require_check(const char *spec, const char **bad);

/* 1 if spec (already checked; NULL means "none") requires a validated
 * record for domain (lowercase), else 0. */
int sm_dnssec_required(const char *spec, const char *domain);

#endif
