/* tests/daemon/test_notify.c — tarryd speaks sd_notify as a Type=notify
 * service must: READY=1 after start-up, STATUS= figures, WATCHDOG=1 when the
 * unit asks for it, STOPPING=1 on SIGTERM. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* Collect datagrams for up to ms milliseconds, until one contains want. */
static bool wait_for(int fd, const char *want, int ms, char *all, size_t alllen)
{
        for (int waited = 0; waited < ms; waited += 50) {
                struct pollfd p = {fd, POLLIN, 0};
                if (poll(&p, 1, 50) <= 0)
                        continue;
                char buf[4096];
                ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
                if (n <= 0)
                        continue;
                buf[n] = '\0';
                strncat(all, buf, alllen - strlen(all) - 2);
                strcat(all, "\n");
                if (strstr(buf, want))
                        return true;
        }
        return false;
}

Test(notify, ready_status_watchdog_and_stopping_reach_systemd)
{
        struct harness h;
        harness_init(&h, NULL);
        char path[100];
        cr_assert_lt(snprintf(path, sizeof(path), "%s/notify.sock", h.dir), (int)sizeof(path));
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, path, strlen(path) + 1);
        cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

        pid_t pid = fork();
        if (pid == 0) {
                int log = open(h.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                dup2(log, 2);
                setenv("NOTIFY_SOCKET", path, 1);
                setenv("WATCHDOG_USEC", "1000000", 1);
                char p[32];
                snprintf(p, sizeof(p), "%d", (int)getpid());
                setenv("WATCHDOG_PID", p, 1);
                execl(harness_binary("daemon/tarryd"), "tarryd", "-C", h.conf, (char *)NULL);
                _exit(127);
        }
        char all[16384] = "";
        cr_assert(wait_for(fd, "READY=1", 5000, all, sizeof(all)), "no READY=1: %s", all);
        cr_assert(wait_for(fd, "STATUS=0 queued", 3000, all, sizeof(all)) ||
                      strstr(all, "STATUS=0 queued"),
                  "no STATUS=: %s", all);
        cr_assert(wait_for(fd, "WATCHDOG=1", 2000, all, sizeof(all)), "no WATCHDOG=1: %s", all);
        kill(pid, SIGTERM);
        cr_assert(wait_for(fd, "STOPPING=1", 3000, all, sizeof(all)), "no STOPPING=1: %s", all);
        int st;
        waitpid(pid, &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        close(fd);
        harness_cleanup(&h);
}
