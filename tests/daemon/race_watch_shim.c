/* tests/daemon/race_watch_shim.c — preloaded into tarryd by test_start_race.c
 * (LD_PRELOAD): right before tarryd sets its inotify watch on incoming/,
 * the file TARRY_TEST_RACE_FROM is renamed to TARRY_TEST_RACE_TO (a
 * committed message arriving in incoming/), so that a message committed
 * in the instant between a scan of incoming/ and the watch is made, which
 * no test could otherwise hit, happens every time. */
#include <dlfcn.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int inotify_add_watch(int fd, const char *path, uint32_t mask);

int inotify_add_watch(int fd, const char *path, uint32_t mask)
{
        int (*real)(int, const char *, uint32_t) =
            (int (*)(int, const char *, uint32_t))dlsym(RTLD_NEXT, "inotify_add_watch");
        const char *from = getenv("TARRY_TEST_RACE_FROM"), *to = getenv("TARRY_TEST_RACE_TO");
        /* libsystemd may watch /proc/self/fd/N of a descriptor it opened */
        char target[PATH_MAX] = "";
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        const char *p = n > 0 ? (target[n] = '\0', target) : path;
        size_t len = strlen(p);
        if (from && to && len >= 9 && strcmp(p + len - 9, "/incoming") == 0)
                rename(from, to); /* the first time only: from is gone after */
        return real(fd, path, mask);
}
