/* sm_id — 128-bit random message ids, as 32 lowercase hex digits. */
#ifndef SM_ID_H
#define SM_ID_H

#define SM_ID_LEN 32

/* Fill out (SM_ID_LEN + 1 bytes) with a fresh id from getrandom(2).
 * Returns 0, or -1 with errno set. */
int sm_id_new(char *out);

/* 1 if s is exactly 32 lowercase hex digits, else 0. */
int sm_id_valid(const char *s);

#endif
