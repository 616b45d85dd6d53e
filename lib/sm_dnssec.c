/* sm_dnssec — the dnssec_require list: "none", "all" or domain names. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sm_addr.h"
#include "sm_dnssec.h"

#define SEPARATORS " \t,"

/* The next word of *p (advanced past it) into word; 0 at the end. */
static int next_word(const char **p, char *word, size_t wordlen)
{
    size_t n;
    int rc = 0;

    *p += strspn(*p, SEPARATORS);
    n = strcspn(*p, SEPARATORS);
    if (n == 0)
        goto leave;
    /* an overlong word cannot be a domain: cut so that it fails the check */
    snprintf(word, wordlen, "%.*s", (int)n, *p);
    *p += n;
    rc = 1;
leave:
    return rc;
}

int sm_dnssec_require_check(const char *spec, const char **bad)
{
    char word[SM_DOMAIN_MAX + 2];
    const char *p = spec;
    int rc = -1, words = 0;

    *bad = NULL;
    while (next_word(&p, word, sizeof word)) {
        words++;
        if (strcasecmp(word, "none") == 0 || strcasecmp(word, "all") == 0) {
            if (words > 1 || next_word(&p, word, sizeof word)) {
                *bad = "\"none\" and \"all\" stand alone, not in a list of domains";
                goto leave;
            }
        } else if (!sm_domain_valid(word)) {
            *bad = "not a domain name (expected none, all, or domain names)";
            goto leave;
        }
    }
    if (words == 0) {
        *bad = "empty (expected none, all, or domain names)";
        goto leave;
    }
    rc = 0;
leave:
    return rc;
}

int sm_dnssec_required(const char *spec, const char *domain)
{
    char word[SM_DOMAIN_MAX + 2];
    const char *p = spec;
    int rc = 0;

    if (spec == NULL)
        goto leave;
    while (next_word(&p, word, sizeof word)) {
        if (strcasecmp(word, "all") == 0 || strcasecmp(word, domain) == 0) {
            rc = 1;
            goto leave;
        }
    }
leave:
    return rc;
}
