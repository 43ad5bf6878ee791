/* status/listen.c — listening sockets for the status endpoint: a unix socket
 * created with mode 0660 and the configured group, loopback TCP sockets, or
 * a matching socket handed over by systemd.
 */
#include <errno.h>
#include <stdbool.h>
#include <grp.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "common/cleanup.h"
#include "status/listen.h"

#define BACKLOG 64

static int group_gid(const char *group, gid_t *out)
{
        char buf[4096];
        struct group gr, *res = NULL;
        int r = getgrnam_r(group, &gr, buf, sizeof(buf), &res);
        if (r != 0)
                return -r;
        if (!res)
                return -ENOENT;
        *out = gr.gr_gid;
        return 0;
}

/* Is a process accepting connections on the unix socket at path? */
static bool socket_alive(const char *path)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return false;
        /* a full backlog (EAGAIN) is a live listener too; refused means nobody */
        return connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 || errno == EAGAIN ||
               errno == EINPROGRESS;
}

/* Remove a stale socket left by an earlier run; never anything else, and
 * never one that a live process (another tarryd) still accepts on. */
static int unlink_stale(const char *path, const char **why)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode)) {
                *why = "path exists and is not a socket";
                return -EEXIST;
        }
        if (socket_alive(path)) {
                *why = "address in use: a running process accepts connections on this socket "
                       "(another tarryd?)";
                return -EADDRINUSE;
        }
        return unlink(path) < 0 ? -errno : 0;
}

/* Are we in group gid (effective or supplementary)? */
static bool in_group(gid_t gid)
{
        if (getegid() == gid)
                return true;
        gid_t groups[256];
        int n = getgroups(256, groups);
        for (int i = 0; i < n; i++)
                if (groups[i] == gid)
                        return true;
        return false;
}

int listen_unix(const struct status_listen_addr *a, const char *group, int *out_fd,
                const char **why)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        gid_t gid = (gid_t)-1;
        int r;

        *why = NULL;
        if (group && (r = group_gid(group, &gid)) < 0) {
                *why = "status_group names no existing group";
                return r;
        }
        /* Without CAP_CHOWN a socket can only be given to one of our own groups. */
        if (group && geteuid() != 0 && !in_group(gid)) {
                *why = "status_group: tarryd's user is not a member of that group (under "
                       "systemd add it to the unit: SupplementaryGroups=, systemctl edit tarryd)";
                return -EPERM;
        }
        if ((r = unlink_stale(a->path, why)) < 0)
                return r;
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", a->path);
        if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
                if (errno == EADDRINUSE)
                        *why = "address in use: the socket path was created again meanwhile";
                return -errno;
        }
        /* Nobody can connect before listen(), so fixing the mode here is race-free. */
        /* a mailq: socket is for every local user: the server filters by SO_PEERCRED */
        if (chmod(a->path, a->owner_view ? 0666 : 0660) < 0 ||
            (group && chown(a->path, (uid_t)-1, gid) < 0) || listen(fd, BACKLOG) < 0) {
                r = -errno;
                unlink(a->path);
                return r;
        }
        *out_fd = TAKE_FD(fd);
        return 0;
}

int listen_sockaddr(const struct status_listen_addr *a, struct sockaddr_storage *ss, socklen_t *len)
{
        memset(ss, 0, sizeof(*ss));
        struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET, a->host, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons(a->port);
                *len = sizeof(*in4);
                return 0;
        }
        if (inet_pton(AF_INET6, a->host, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(a->port);
                *len = sizeof(*in6);
                return 0;
        }
        return -EINVAL;
}

int listen_tcp(const struct status_listen_addr *a, int *out_fd)
{
        struct sockaddr_storage ss;
        socklen_t len;
        int one = 1;
        int r = listen_sockaddr(a, &ss, &len);
        if (r < 0)
                return r;
        _cleanup_close_ int fd =
            socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return -errno;
        if (ss.ss_family == AF_INET6 &&
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, BACKLOG) < 0)
                return -errno;
        *out_fd = TAKE_FD(fd);
        return 0;
}

int listen_path_identity(const char *path, dev_t *dev, ino_t *ino)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return -errno;
        if (!S_ISSOCK(st.st_mode))
                return -ENOTSOCK;
        *dev = st.st_dev;
        *ino = st.st_ino;
        return 0;
}

int listen_port(int fd)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                return -errno;
        if (ss.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *)&ss)->sin_port);
        if (ss.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        return -ENOENT;
}

int listen_activated(const struct status_listen_addr *a, const int *fds, size_t n)
{
        struct sockaddr_storage ss;
        socklen_t len;
        if (!a->is_unix && listen_sockaddr(a, &ss, &len) < 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int r = a->is_unix ? sd_is_socket_unix(fds[i], SOCK_STREAM, 1, a->path, 0)
                                   : sd_is_socket_sockaddr(fds[i], SOCK_STREAM,
                                                           (struct sockaddr *)&ss, len, 1);
                if (r > 0)
                        return fds[i];
        }
        return -ENOENT;
}
