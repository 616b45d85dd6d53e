/* ctl_key.c — our domain key and the _stubmail record that publishes it;
 * rotation with the old and the new key both valid during the switch
 * (docs/PROTOCOL.md "Key rotation": the record's fpr-alt).
 *
 * The record to publish is a function of the keyring and domain_key: fpr
 * is domain_key, the key in use; fpr-alt the other domain key in
 * gnupg_home, while there is one. So `key show` is right at every step:
 *
 *   key rotate start   one key O in use: makes the new key N;
 *                      record fpr=O; fpr-alt=N
 *   key rotate switch  once caches have the start record (its TTL, and a
 *                      day at most for stubmail's dns_cache): says to put
 *                      N in domain_key everywhere and N's public key where
 *                      mod_stubmail serves it (-o FILE writes it), with
 *                      O's after it for GET v1/key/{fpr} (--old-key-file
 *                      FILE writes it);
 *                      record fpr=N; fpr-alt=O
 *   key rotate finish  domain_key is N: once no mail encrypted to O can
 *                      still wait at peers' outboxes (their expire_after)
 *                      and no mail of ours signed by O waits in ours: the
 *                      record fpr=N and the gpg command that removes O.
 *
 * The outbox= and udp= of the record are outbox_url and record_udp, else
 * the ones published now. policy changes whenever the record does. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "sm_dns.h"
#include "sm_pgp.h"
#include "ctl.h"

typedef struct key_state {
    char keys[SM_PGP_DOMAIN_KEYS_MAX][SM_PGP_FPR_MAX + 1];  /* oldest first */
    size_t nkeys;
    const char *alt;                    /* the other key, or NULL */
    sm_txt_record published;            /* what DNS says now */
    int have_published;
    int up_to_date;                     /* the published record is this one */
    sm_txt_record want;                 /* what to publish */
    char record[SM_TXT_MAX + 1];        /* ... as text */
} key_state;

static int key_config(const ctl *c)
{
    const char *missing = !c->conf.domain ? "domain" : !c->conf.gnupg_home ? "gnupg_home"
                          : !c->conf.domain_key ? "domain_key" : NULL;

    if (missing)
        return ctl_fail(EX_CONFIG, "%s: %s is not set: the key commands need domain, "
                        "gnupg_home and domain_key", c->conf_path, missing);
    return 0;
}

/* The next policy id: today's date and a counter, one up from a published
 * id of today. */
static void next_policy(const key_state *k, char out[SM_TXT_POLICY_MAX + 1])
{
    char today[16];
    int nn = 1;

    strftime(today, sizeof today, "%Y%m%d", gmtime(&(time_t){ time(NULL) }));
    if (k->have_published && strlen(k->published.policy) == 10
        && !strncmp(k->published.policy, today, 8))
        nn = atoi(k->published.policy + 8) + 1;
    snprintf(out, SM_TXT_POLICY_MAX + 1, "%s%02d", today, nn > 99 ? 99 : nn);
}

/* Read the keyring and DNS; make the record to publish (keeping the
 * published policy when nothing else differs). retire_alt: the record
 * without the other key, which is still held (key rotate finish). */
static int key_state_load(ctl *c, key_state *k, int retire_alt)
{
    char why[512] = "", text[SM_TXT_MAX + 1];
    const char *bad = "", *outbox, *udp, *alt;
    sm_dns_conf dns = { c->conf.resolver, 0, NULL };
    unsigned ttl;
    size_t i;
    int in_use = 0, validated = 0, rc = EX_TEMPFAIL;

    memset(k, 0, sizeof *k);
    if ((rc = key_config(c)) != 0)
        goto leave;
    rc = EX_TEMPFAIL;
    if (sm_pgp_domain_keys(c->conf.gnupg_home, c->conf.domain, k->keys, SM_PGP_DOMAIN_KEYS_MAX,
                           &k->nkeys, why, sizeof why) != SM_PGP_OK) {
        rc = ctl_fail(EX_TEMPFAIL, "%s: listing the keys of stubmail@%s: %s",
                      c->conf.gnupg_home, c->conf.domain, why);
        goto leave;
    }
    for (i = 0; i < k->nkeys; i++) {
        if (!strcasecmp(k->keys[i], c->conf.domain_key))
            in_use = 1;
        else
            k->alt = k->keys[i];
    }
    if (!in_use) {
        rc = ctl_fail(EX_CONFIG, "domain_key %s is not a usable key of stubmail@%s in %s",
                      c->conf.domain_key, c->conf.domain, c->conf.gnupg_home);
        goto leave;
    }
    if (k->nkeys > 2) {
        rc = ctl_fail(EX_CONFIG, "%s holds %zu keys of stubmail@%s: a record names two at "
                      "most; remove the retired ones", c->conf.gnupg_home, k->nkeys,
                      c->conf.domain);
        goto leave;
    }
    k->have_published = sm_dns_lookup(&dns, c->conf.domain, &k->published, &ttl, &validated,
                                      why, sizeof why) == SM_DNS_FOUND;
    outbox = c->conf.outbox_url ? c->conf.outbox_url
             : k->have_published ? k->published.outbox : NULL;
    udp = c->conf.record_udp ? c->conf.record_udp : k->have_published ? k->published.udp : "";
    if (!outbox) {
        rc = ctl_fail(EX_CONFIG, "no outbox for the record: set outbox_url in %s (nothing "
                      "valid is published for %s: %s)", c->conf_path, c->conf.domain, why);
        goto leave;
    }
    alt = retire_alt ? NULL : k->alt;
    /* through the parser: what does not parse here, peers would refuse */
    snprintf(text, sizeof text, "v=stubmail1; outbox=%s; %s%s%sfpr=%s; %s%s%spolicy=1", outbox,
             udp[0] ? "udp=" : "", udp, udp[0] ? "; " : "", c->conf.domain_key,
             alt ? "fpr-alt=" : "", alt ? alt : "", alt ? "; " : "");
    if (sm_txt_parse(text, strlen(text), &k->want, &bad) != 0) {
        rc = ctl_fail(EX_CONFIG, "the record would be invalid (%s; outbox_url and record_udp "
                      "in %s): %s", bad, c->conf_path, text);
        goto leave;
    }
    k->up_to_date = k->have_published && !strcmp(k->want.outbox, k->published.outbox)
                    && !strcmp(k->want.udp, k->published.udp)
                    && !strcmp(k->want.fpr, k->published.fpr)
                    && !strcmp(k->want.fpr_alt, k->published.fpr_alt);
    if (k->up_to_date)
        memcpy(k->want.policy, k->published.policy, sizeof k->want.policy);
    else
        next_policy(k, k->want.policy);
    sm_txt_format(&k->want, k->record, sizeof k->record);
    rc = EX_OK;
leave:
    return rc;
}

/* What to do: the record, whether it is published, and the step's advice. */
static void key_report(ctl *c, const key_state *k, const char *step, const char *const *todo)
{
    json_t *o, *t;
    size_t i;

    if (c->json) {
        o = json_object();
        json_object_set_new(o, "domain", json_string(c->conf.domain));
        json_object_set_new(o, "fpr", json_string(k->want.fpr));
        json_object_set_new(o, "fpr_alt", k->want.fpr_alt[0] ? json_string(k->want.fpr_alt)
                                                           : json_null());
        json_object_set_new(o, "step", json_string(step));
        json_object_set_new(o, "record", json_string(k->record));
        json_object_set_new(o, "published", json_boolean(k->up_to_date));
        t = json_array();
        for (i = 0; todo && todo[i]; i++)
            json_array_append_new(t, json_string(todo[i]));
        json_object_set_new(o, "todo", t);
        ctl_out_json(o);
        return;
    }
    printf("domain key  %s (in use)\n", k->want.fpr);
    if (k->want.fpr_alt[0])
        printf("also valid  %s (fpr-alt: a rotation is under way)\n", k->want.fpr_alt);
    printf("step        %s\n", step);
    printf("publish     _stubmail.%s. IN TXT \"%s\"\n", c->conf.domain, k->record);
    printf("published   %s\n", k->up_to_date ? "yes, this record is in DNS"
                                             : "no: DNS does not say this yet");
    for (i = 0; todo && todo[i]; i++)
        printf("then        %s\n", todo[i]);
}

static const char *step_name(const ctl *c, const key_state *k)
{
    if (!k->alt)
        return "no rotation";
    return !strcasecmp(c->conf.domain_key, k->keys[0]) ? "started (old key in use)"
                                                      : "switched (new key in use)";
}

static int key_show(ctl *c)
{
    key_state k;
    int rc;

    if ((rc = key_state_load(c, &k, 0)) == EX_OK)
        key_report(c, &k, step_name(c, &k), NULL);
    return rc;
}

static int write_public(ctl *c, const char *fpr, const char *path)
{
    char why[SM_PGP_WHY_MAX], tmp[4096];
    char *key = NULL;
    size_t len = 0;
    FILE *fp = NULL;
    int rc = EX_CANTCREAT;

    if (sm_pgp_export_public(c->conf.gnupg_home, fpr, &key, &len, why, sizeof why)
        != SM_PGP_OK) {
        rc = ctl_fail(EX_TEMPFAIL, "exporting %s: %s", fpr, why);
        goto leave;
    }
    /* written aside and renamed: Apache never reads half a key */
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!(fp = fopen(tmp, "w"))) {
        rc = ctl_fail(EX_CANTCREAT, "%s: %s", tmp, strerror(errno));
        goto leave;
    }
    if (fwrite(key, 1, len, fp) != len || fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        rc = ctl_fail(EX_CANTCREAT, "%s: %s", tmp, strerror(errno));
        goto leave;
    }
    if (fclose(fp) != 0 || rename(tmp, path) != 0) {
        fp = NULL;
        rc = ctl_fail(EX_CANTCREAT, "%s: %s", path, strerror(errno));
        unlink(tmp);
        goto leave;
    }
    fp = NULL;
    rc = EX_OK;
leave:
    if (fp) {
        fclose(fp);
        unlink(tmp);
    }
    free(key);
    return rc;
}

static int rotate_start(ctl *c, key_state *k)
{
    char fpr[SM_PGP_FPR_MAX + 1], why[SM_PGP_WHY_MAX], a[512];
    const char *todo[3];
    int rc;

    if (k->alt) {
        rc = ctl_fail(1, "a rotation is under way already (%s and %s): see key show",
                      k->keys[0], k->keys[1]);
        goto leave;
    }
    if (sm_pgp_new_domain_key(c->conf.gnupg_home, c->conf.domain, fpr, why, sizeof why)
        != SM_PGP_OK) {
        rc = ctl_fail(EX_TEMPFAIL, "%s: a new key for %s: %s", c->conf.gnupg_home,
                      c->conf.domain, why);
        goto leave;
    }
    if ((rc = key_state_load(c, k, 0)) != EX_OK)
        goto leave;
    snprintf(a, sizeof a, "publish this record, then wait for the old one to leave caches "
             "(its TTL, and a day for stubmail's dns_cache) before key rotate switch");
    todo[0] = a;
    todo[1] = "nothing else changes yet: the milter, pollerd and mod_stubmail go on with the "
              "old key";
    todo[2] = NULL;
    key_report(c, k, "started: new key made", todo);
leave:
    return rc;
}

static int rotate_switch(ctl *c, key_state *k, const char *public_file, const char *old_file)
{
    /* outlives k, which key_state_load clears: domain_key points here */
    static char new_fpr[SM_PGP_FPR_MAX + 1];
    char a[512], b[1024];
    const char *todo[4];
    int rc = 1;

    if (!k->alt) {
        ctl_fail(rc, "no rotation is under way: key rotate start first");
        goto leave;
    }
    if (strcasecmp(c->conf.domain_key, k->keys[0])) {
        ctl_fail(rc, "domain_key is the new key %s already: the switch is done; "
                 "key rotate finish next", c->conf.domain_key);
        goto leave;
    }
    snprintf(new_fpr, sizeof new_fpr, "%s", k->alt);
    if (public_file && (rc = write_public(c, new_fpr, public_file)) != EX_OK)
        goto leave;
    if (old_file && (rc = write_public(c, c->conf.domain_key, old_file)) != EX_OK)
        goto leave;
    snprintf(a, sizeof a, "set domain_key %s in the milter's, pollerd's and this file, and "
             "reload them (pollerd decrypts with the old key %s too, while gnupg_home has it)",
             new_fpr, c->conf.domain_key);
    /* both keys served: GET v1/key the new one, GET v1/key/{fpr} either */
    snprintf(b, sizeof b, "StubmailPublicKey %s %s (the new public key%s, then the old "
             "one%s, served at v1/key/{fpr}), then apachectl graceful",
             public_file ? public_file : "NEW-FILE", old_file ? old_file : "OLD-FILE",
             public_file ? ", written" : ": -o FILE writes it",
             old_file ? ", written" : ": --old-key-file FILE writes it");
    todo[0] = a;
    todo[1] = b;
    todo[2] = "publish the record key show prints then (fpr the new key, fpr-alt the old)";
    todo[3] = NULL;
    /* the record as it will be once domain_key is the new key */
    c->conf.domain_key = new_fpr;
    if ((rc = key_state_load(c, k, 0)) != EX_OK)
        goto leave;
    key_report(c, k, "switch: the new key takes over", todo);
leave:
    return rc;
}

static int rotate_finish(ctl *c, key_state *k)
{
    char a[512], old[SM_PGP_FPR_MAX + 1];
    const char *todo[3];
    int rc = 1;

    if (!k->alt) {
        ctl_fail(rc, "no rotation is under way");
        goto leave;
    }
    if (!strcasecmp(c->conf.domain_key, k->keys[0])) {
        ctl_fail(rc, "domain_key is still the old key %s: key rotate switch first",
                 c->conf.domain_key);
        goto leave;
    }
    snprintf(old, sizeof old, "%s", k->alt);
    snprintf(a, sizeof a, "once no mail encrypted to the old key can wait at peers' outboxes "
             "(their expire_after) nor signed by it in ours: gpg --homedir %s "
             "--delete-secret-and-public-keys %s", c->conf.gnupg_home, old);
    todo[0] = "publish this record (the old key is no longer named), and give "
              "StubmailPublicKey the new key's file alone, then apachectl graceful";
    todo[1] = a;
    todo[2] = NULL;
    if ((rc = key_state_load(c, k, 1)) != EX_OK)
        goto leave;
    key_report(c, k, "finish: the old key retires", todo);
leave:
    return rc;
}

int ctl_key_main(ctl *c, int argc, char **argv)
{
    key_state k;
    const char *public_file = NULL, *old_file = NULL, *step = argc >= 3 ? argv[2] : "";
    int rc = EX_USAGE, i;

    if (argc == 2 && !strcmp(argv[1], "show")) {
        rc = key_show(c);
        goto leave;
    }
    if (argc < 3 || strcmp(argv[1], "rotate")
        || (strcmp(step, "start") && strcmp(step, "switch") && strcmp(step, "finish")))
        goto leave;
    for (i = 3; i < argc; i += 2) {
        if (i + 1 >= argc || strcmp(step, "switch"))
            goto leave;
        if (!strcmp(argv[i], "-o") && !public_file)
            public_file = argv[i + 1];
        else if (!strcmp(argv[i], "--old-key-file") && !old_file)
            old_file = argv[i + 1];
        else
            goto leave;
    }
    if ((rc = key_state_load(c, &k, 0)) != EX_OK)
        goto leave;
    if (!strcmp(step, "start"))
        rc = rotate_start(c, &k);
    else if (!strcmp(step, "switch"))
        rc = rotate_switch(c, &k, public_file, old_file);
    else
        rc = rotate_finish(c, &k);
leave:
    return rc;
}
