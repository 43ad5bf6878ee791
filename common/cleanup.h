/* common/cleanup.h — scope-bound cleanup helpers, in the style of systemd.
 *
 * Declare a variable with one of these attributes and it is released when it
 * goes out of scope, so early returns on error paths cannot leak.
 */
#ifndef TARRY_COMMON_CLEANUP_H
#define TARRY_COMMON_CLEANUP_H

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
        free(*(void **)p);
}

static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}

#define _cleanup_free_   _cleanup_(freep)
#define _cleanup_close_  _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Hand ownership out of a cleanup-managed variable. */
#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                __typeof__(p) _tmp = (p);                                                          \
                (p) = NULL;                                                                        \
                _tmp;                                                                              \
        })

#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _tmp = (fd);                                                                   \
                (fd) = -1;                                                                         \
                _tmp;                                                                              \
        })

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* Jansson >= 2.14 provides json_decrefp itself: _cleanup_(json_decrefp) json_t *j. */

#endif
