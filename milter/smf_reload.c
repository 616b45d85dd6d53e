/* smf_reload — the settings in use, and SIGUSR1, which loads the
 * configuration file again without dropping a message.
 *
 * libmilter owns SIGHUP, SIGTERM and SIGINT: its own thread sigwaits for
 * them and stops the milter at any of the three. So the reload is SIGUSR1,
 * as OpenDKIM's: blocked in every thread (smf_reload_block_signal, before
 * any thread is made) and sigwaited by a thread of our own, which loads
 * and checks the file as -n does, makes the new seal, and only then swaps
 * the pointer that new connections take. The load runs in that thread, not
 * in a connection's first step: no SMTP session waits for gpg, and the
 * outcome is logged as soon as the signal came.
 *
 * Every connection holds the settings it started with (smf_settings_hold
 * in smf_conn_new) until it closes: a message in flight finishes under
 * them, its seal and spool included, whatever reloads happen meanwhile.
 * The settings in use hold one reference of their own; the last release
 * of replaced settings frees them (their seal too), and says so. A file
 * that does not load is refused with its error (file, line, key) and
 * nothing changes. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_log.h"
#include "smf.h"

static struct {
    pthread_mutex_t lock;               /* over current and its references */
    smf_settings *current;
    unsigned long reloads;              /* the last one's number */
    char *path;
    pthread_t thread;
    int started;
    atomic_int stopping;
} reload = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void describe(const smf_settings *set, char *out, size_t outlen)
{
    if (set->reload == 0)
        snprintf(out, outlen, "the settings of the start");
    else
        snprintf(out, outlen, "the settings of reload %lu", set->reload);
}

const smf_settings *smf_settings_hold(void)
{
    smf_settings *set;

    pthread_mutex_lock(&reload.lock);
    if ((set = reload.current) != NULL)
        atomic_fetch_add(&set->refs, 1);
    pthread_mutex_unlock(&reload.lock);
    return set;
}

void smf_settings_release(const smf_settings *set)
{
    /* only this file makes settings, and none of them read-only */
    smf_settings *s = (smf_settings *)set;
    char which[64];

    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    if (!atomic_load(&reload.stopping)) {
        describe(s, which, sizeof which);
        sm_info("%s are freed: the last connection that started under them has closed",
                which);
    }
    smf_conf_free(s);
    free(s);
}

int smf_reload(void)
{
    smf_settings *next = NULL, *old;
    const smf_settings *now;
    char err[1024], changed[512], which[64];
    int rc = -1;

    now = smf_settings_hold();
    if ((next = calloc(1, sizeof *next)) == NULL) {
        sm_err("reload of %s refused, the settings in use stay: out of memory", reload.path);
        goto leave;
    }
    if (smf_conf_load(next, reload.path, 1, err, sizeof err) != 0
        || smf_conf_keep_restart_only(next, now, reload.path, err, sizeof err) != 0
        || smf_conf_seal(next, err, sizeof err) != 0) {
        sm_err("reload of %s refused, the settings in use stay: %s", reload.path, err);
        goto leave;
    }
    smf_conf_changed(now, next, changed, sizeof changed);
    describe(now, which, sizeof which);
    atomic_store(&next->refs, 1);       /* the reference of the settings in use */
    pthread_mutex_lock(&reload.lock);
    next->reload = ++reload.reloads;
    old = reload.current;
    reload.current = next;
    pthread_mutex_unlock(&reload.lock);
    sm_log_setup(next->log_facility_value, next->log_level_value);
    /* a verdict or key read under the old resolver, dnssec_require or
     * keyring is not kept for the new ones */
    smf_cache_forget_all();
    sm_info("reload %lu of %s: %s%s; new connections start under it, open ones finish under "
            "%s", next->reload, reload.path, changed[0] ? "changed " : "nothing changed",
            changed, which);
    next = NULL;
    smf_settings_release(old);
    rc = 0;
leave:
    if (next) {
        smf_conf_free(next);
        free(next);
    }
    smf_settings_release(now);
    return rc;
}

int smf_reload_block_signal(void)
{
    sigset_t usr1;

    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    return pthread_sigmask(SIG_BLOCK, &usr1, NULL) == 0 ? 0 : -1;
}

static void *reload_main(void *unused)
{
    sigset_t usr1;
    int sig;

    (void)unused;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    for (;;) {
        if (sigwait(&usr1, &sig) != 0)
            continue;
        if (atomic_load(&reload.stopping))
            break;
        smf_reload();
    }
    return NULL;
}

int smf_reload_start(smf_settings *first, const char *path)
{
    sigset_t all, was;
    int rc = -1, err;

    atomic_store(&first->refs, 1);
    first->reload = 0;
    reload.current = first;             /* smf_reload_stop's from here on */
    if ((reload.path = strdup(path)) == NULL)
        goto leave;
    /* every signal blocked in our thread: libmilter's thread, made later,
     * is the one that takes SIGTERM and SIGHUP */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &was);
    err = pthread_create(&reload.thread, NULL, reload_main, NULL);
    pthread_sigmask(SIG_SETMASK, &was, NULL);
    if (err != 0) {
        errno = err;
        goto leave;
    }
    reload.started = 1;
    rc = 0;
leave:
    return rc;
}

void smf_reload_stop(void)
{
    smf_settings *last;

    atomic_store(&reload.stopping, 1);
    if (reload.started) {
        pthread_kill(reload.thread, SIGUSR1);
        pthread_join(reload.thread, NULL);
        reload.started = 0;
    }
    pthread_mutex_lock(&reload.lock);
    last = reload.current;
    reload.current = NULL;
    pthread_mutex_unlock(&reload.lock);
    smf_settings_release(last);
    free(reload.path);
    reload.path = NULL;
}
