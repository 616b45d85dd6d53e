/* stubmail_route — a request path against a route's path pattern
 * (stubmail_route.h). */

#include <string.h>

#include "stubmail_route.h"

int stubmail_path_match(const char *pattern, const char *path, size_t *id_off,
                        size_t *id_len)
{
    const char *hole = strchr(pattern, '{'), *hole_end = hole ? strchr(hole, '}') : NULL;
    size_t before, n;

    *id_off = *id_len = 0;
    if (hole_end == NULL)
        return strcmp(pattern, path) == 0;
    before = (size_t)(hole - pattern);
    if (strncmp(path, pattern, before) != 0)
        return 0;
    n = strcspn(path + before, "/");
    if (n == 0 || strcmp(path + before + n, hole_end + 1) != 0)
        return 0;
    *id_off = before;
    *id_len = n;
    return 1;
}
