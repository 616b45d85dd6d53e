/* stubmail_route — does a request path match a route's path? Plain C (no
 * httpd, no APR), so that a unit test can link it alone; the route table
 * itself is in mod_stubmail.c. */
#ifndef STUBMAIL_ROUTE_H
#define STUBMAIL_ROUTE_H

#include <stddef.h>

/* 1 if path is pattern, where a hole in pattern (at most one: "{id}", a
 * message id, or "{fpr}", a key fingerprint) stands for one non-empty path
 * segment (no '/'): then *id_off and *id_len say where it is in path.
 * Without a hole, *id_len is 0. */
int stubmail_path_match(const char *pattern, const char *path, size_t *id_off,
                        size_t *id_len);

#endif
