/* common/fileio.h — durable file commits and bounded reads.
 *
 * The one place that knows the commit protocol of DESIGN.md: write to a
 * temporary name, fsync the file, rename into place, fsync the directory.
 * Every function returns 0 (or a count) on success and a negative errno.
 */
#ifndef TARRY_COMMON_FILEIO_H
#define TARRY_COMMON_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Write all of buf to fd, retrying on short writes and EINTR. */
int fd_write_all(int fd, const void *buf, size_t len);

/* Durably replace dirfd/name with buf: dirfd/.name.tmp, fsync, rename, fsync dirfd. */
int file_replace_durable(int dirfd, const char *name, const void *buf, size_t len);
/* The same, the new file given to uid:gid before it is written ((uid_t)-1 and
 * (gid_t)-1 leave them): root writing a spool that another user owns. */
int file_replace_durable_owned(int dirfd, const char *name, const void *buf, size_t len, uid_t uid,
                               gid_t gid);

/* Read a whole file (at most limit bytes: -EFBIG beyond). *out is NUL-terminated. */
int file_read_all_at(int dirfd, const char *name, size_t limit, char **out, size_t *len);
/* The same for a file in the spool: a symbolic link is refused (-ELOOP). */
int file_read_all_nofollow_at(int dirfd, const char *name, size_t limit, char **out, size_t *len);

/* fsync a directory by fd or path. */
int dir_fsync(int dirfd);

/* mkdir -p with mode for each created component. */
int mkdir_p(const char *path, unsigned mode);

/* Microseconds since the epoch (CLOCK_REALTIME) and on CLOCK_MONOTONIC. */
int64_t now_realtime_us(void);
int64_t now_monotonic_us(void);

#endif
