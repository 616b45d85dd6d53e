/* sm_seal_impl — what sm_seal.c and sm_seal_keys.c share: the seal's
 * structure and the slot and key calls. Internal to lib's seal; callers
 * use sm_seal.h. */
#ifndef SM_SEAL_IMPL_H
#define SM_SEAL_IMPL_H

#include <pthread.h>
#include <stddef.h>
#include <time.h>

#include <rnp/rnp.h>

#include "sm_pgp.h"
#include "sm_seal.h"

typedef struct key_blob {
    char fpr[SM_PGP_FPR_MAX + 1];
    int secret;                 /* the transferable secret key, else public */
    unsigned char *data;
    size_t len;
    time_t fetched;
} key_blob;

typedef struct slot {
    rnp_ffi_t ffi;              /* NULL until first use or after a refresh */
    int busy;
    unsigned gen;               /* s->gen when the ffi was made */
    time_t oldest;              /* fetch time of the oldest key loaded; 0: none */
    int own;                    /* made for one operation outside the pool
                                   (seal_slot_own): freed when given back */
} slot;

struct sm_seal {
    char *home;
    char own[SM_PGP_FPR_MAX + 1];
    char also[SM_SEAL_DECRYPT_MAX][SM_PGP_FPR_MAX + 1];   /* our other keys: decrypt only */
    size_t nalso;
    pthread_mutex_t lock;       /* guards everything below but a busy slot's ffi */
    pthread_cond_t idle;
    unsigned gen;               /* bumped when a key must be exported again */
    unsigned nslots;
    slot slots[SM_SEAL_SLOTS_MAX];
    key_blob *keys;
    size_t nkeys, capkeys;
};

/* A free slot, its context current (rebuilt when a key in it is older than
 * SM_SEAL_KEY_TTL or was forgotten): waits while all are busy. NULL with
 * why if a context cannot be made. */
slot *seal_slot_take(sm_seal *s, char *why, size_t whylen);
/* A context of its own, outside the pool and never waited for, for one
 * operation whose input comes at another party's pace: it would hold a
 * pool slot that long. Keys come from the shared cache all the same.
 * seal_slot_give frees it. NULL with why. */
slot *seal_slot_own(sm_seal *s, char *why, size_t whylen);
void seal_slot_give(sm_seal *s, slot *sl);

/* fpr's key (the secret one if secret) in the slot's context, *key to
 * destroy, loaded from the cache or exported on first use: SM_PGP_OK;
 * SM_PGP_REJECT if the home does not have it; SM_PGP_ERROR. */
int seal_slot_key(sm_seal *s, slot *sl, const char *fpr, int secret, rnp_key_handle_t *key,
                  char *why, size_t whylen);

/* A key that may be used now: valid, neither revoked nor expired. */
int seal_key_valid(rnp_key_handle_t key);

/* why = "what: librnp's reason"; SM_PGP_ERROR. */
int seal_rnp_fail(char *why, size_t whylen, const char *what, rnp_result_t r);

#endif
