/* common/fileio.c — durable commits and bounded reads; see fileio.h. */
#include "common/fileio.h"
#include "common/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int fd_write_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int dir_fsync(int dirfd)
{
        if (fsync(dirfd) < 0)
                return -errno;
        return 0;
}

int file_replace_durable(int dirfd, const char *name, const void *buf, size_t len)
{
        return file_replace_durable_owned(dirfd, name, buf, len, (uid_t)-1, (gid_t)-1);
}

int file_replace_durable_owned(int dirfd, const char *name, const void *buf, size_t len, uid_t uid,
                               gid_t gid)
{
        char tmp[512];
        int r = snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
        if (r < 0 || (size_t)r >= sizeof(tmp))
                return -ENAMETOOLONG;

        /* O_NOFOLLOW: a link planted at the temporary name is refused, not written through */
        _cleanup_close_ int fd =
            openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        r = 0;
        if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) < 0)
                r = -errno;
        if (r == 0)
                r = fd_write_all(fd, buf, len);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
                r = -errno;
        if (r < 0) {
                unlinkat(dirfd, tmp, 0);
                return r;
        }
        return dir_fsync(dirfd);
}

static int read_all_at(int dirfd, const char *name, int oflags, size_t limit, char **out,
                       size_t *len)
{
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | oflags);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if ((uint64_t)st.st_size > limit)
                return -EFBIG;

        size_t cap = (size_t)st.st_size + 1, used = 0;
        _cleanup_free_ char *buf = malloc(cap);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                if (used + 1 >= cap) {
                        if (cap > limit)
                                return -EFBIG;
                        char *nb = realloc(buf, cap * 2);
                        if (!nb)
                                return -ENOMEM;
                        buf = nb;
                        cap *= 2;
                }
                ssize_t n = read(fd, buf + used, cap - used - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                used += (size_t)n;
                if (used > limit)
                        return -EFBIG;
        }
        buf[used] = '\0';
        if (len)
                *len = used;
        *out = TAKE_PTR(buf);
        return 0;
}

int file_read_all_at(int dirfd, const char *name, size_t limit, char **out, size_t *len)
{
        return read_all_at(dirfd, name, 0, limit, out, len);
}

int file_read_all_nofollow_at(int dirfd, const char *name, size_t limit, char **out, size_t *len)
{
        return read_all_at(dirfd, name, O_NOFOLLOW, limit, out, len);
}

int mkdir_p(const char *path, unsigned mode)
{
        char buf[4096];
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, path, n + 1);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int64_t clock_us(clockid_t id)
{
        struct timespec ts;
        clock_gettime(id, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t now_realtime_us(void)
{
        return clock_us(CLOCK_REALTIME);
}

int64_t now_monotonic_us(void)
{
        return clock_us(CLOCK_MONOTONIC);
}
