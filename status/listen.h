/* status/listen.h — private to status/: creating or adopting listen sockets.
 * Every function returns a negative errno on failure; fds are non-blocking
 * and close-on-exec.
 */
#ifndef TARRY_STATUS_LISTEN_H
#define TARRY_STATUS_LISTEN_H

#include <sys/socket.h>
#include <sys/types.h>

#include "status/status.h"

/* Bind a unix socket at a->path (a stale socket there is replaced; one that a
 * live process accepts on is not: -EADDRINUSE; any other file is not:
 * -EEXIST), mode 0660, group if not NULL (one of the process's own groups
 * unless root: -EPERM), listening. */
int listen_unix(const struct status_listen_addr *a, const char *group, int *out_fd,
                const char **why);
/* Bind and listen on a->host:a->port (IPv6 sockets are v6-only). */
int listen_tcp(const struct status_listen_addr *a, int *out_fd);
int listen_sockaddr(const struct status_listen_addr *a, struct sockaddr_storage *ss,
                    socklen_t *len);
/* The file a unix socket path names now (to unlink it at stop only if it is
 * still ours); -ENOTSOCK when it is not a socket. */
int listen_path_identity(const char *path, dev_t *dev, ino_t *ino);
/* The local port of a bound TCP socket. */
int listen_port(int fd);
/* The first of fds that is a listening stream socket on a's address, or -ENOENT. */
int listen_activated(const struct status_listen_addr *a, const int *fds, size_t n);

#endif
