/* tests/daemon/test_notify.c — tarryd speaks sd_notify as a Type=notify
 * service must: READY=1 after start-up, STATUS= figures, WATCHDOG=1 when the
 * unit asks for it, STOPPING=1 on SIGTERM, EXTEND_TIMEOUT_USEC= at start, and
 * READY=1 before a big queue's envelopes are read. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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

/* A datagram socket in the harness dir for tarryd's NOTIFY_SOCKET. */
static int notify_socket(struct harness *h, char *path, size_t len)
{
        cr_assert_lt(snprintf(path, len, "%s/notify.sock", h->dir), (int)len);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, path, strlen(path) + 1);
        cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        harness_layout_spool(h);
        harness_give(h, path); /* systemd's socket is writable by the service's user */
        return fd;
}

/* Start tarryd with NOTIFY_SOCKET (and a watchdog when watchdog_usec). */
static pid_t start_notified(struct harness *h, const char *path, const char *watchdog_usec)
{
        pid_t pid = fork();
        if (pid == 0) {
                int log = open(h->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                dup2(log, 2);
                harness_child_become_daemon(h);   /* User=, as the unit runs it */
                prctl(PR_SET_PDEATHSIG, SIGKILL); /* not left running by a failed test */
                setenv("NOTIFY_SOCKET", path, 1);
                if (watchdog_usec) {
                        setenv("WATCHDOG_USEC", watchdog_usec, 1);
                        char p[32];
                        snprintf(p, sizeof(p), "%d", (int)getpid());
                        setenv("WATCHDOG_PID", p, 1);
                }
                execl(harness_binary("daemon/tarryd"), "tarryd", "-C", h->conf, (char *)NULL);
                _exit(127);
        }
        return pid;
}

Test(notify, ready_status_watchdog_and_stopping_reach_systemd)
{
        struct harness h;
        harness_init(&h, NULL);
        char path[100];
        int fd = notify_socket(&h, path, sizeof(path));
        pid_t pid = start_notified(&h, path, "1000000");
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

/* A big queue is ready at once: READY=1 comes after the folders are listed,
 * and the envelopes are read after it, with STATUS= saying how far; a clean
 * stop leaves state/index.snap, also one before the start applied any of
 * its records, and the next start reads no envelope and applies the records
 * after READY. */
Test(notify, a_big_queue_is_ready_before_its_envelopes_are_read, .timeout = 280)
{
        struct harness h;
        harness_init(&h, NULL);
        harness_layout_spool(&h);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "%s --spool %s --messages 20000 --defer 3600 >/dev/null",
                 harness_binary("bench/spool-gen"), h.spool);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        harness_give_spool(&h); /* spool-gen ran as root */
        char path[100];
        int fd = notify_socket(&h, path, sizeof(path));
        pid_t pid = start_notified(&h, path, NULL);
        static char all[65536];
        all[0] = '\0';
        cr_assert(wait_for(fd, "READY=1", 60000, all, sizeof(all)), "no READY=1: %s", all);
        cr_assert(strstr(all, "EXTEND_TIMEOUT_USEC=90000000"), "no EXTEND_TIMEOUT_USEC: %s", all);
        cr_assert(harness_log_contains(&h, "started: 0 message(s) queued"), "see %s", h.log);
        cr_assert(harness_log_contains(&h, "0 from state/index.snap (due soon), 20000 listed"),
                  "see %s", h.log);
        /* while it reads, the status and a listing say they are partial */
        char *out = NULL, *err = NULL;
        const char *status_args[] = {"-s", NULL}, *list_args[] = {"-p", NULL};
        cr_assert_eq(harness_tarryq(&h, status_args, &out, &err), 0, "tarryq -s: %s", err);
        cr_assert(strstr(out, "still reading the queue after a start: "), "tarryq -s: %s", out);
        free(out);
        free(err);
        cr_assert_eq(harness_tarryq(&h, list_args, &out, &err), 0, "tarryq -p: %s", err);
        cr_assert(strstr(err, "this listing may be incomplete"), "tarryq -p said: %s", err);
        free(out);
        free(err);
        cr_assert(
            wait_for(fd, "STATUS=reading the queue: 20000 of 20000", 120000, all, sizeof(all)),
            "not read to the end: %s", all);
        for (int waited = 0; waited < 10000 && harness_log_count(&h, "every queued") < 1;
             waited += 10)
                harness_sleep_ms(10);
        cr_assert_eq(harness_tarryq(&h, status_args, &out, &err), 0, "tarryq -s: %s", err);
        cr_assert(!strstr(out, "still reading"), "tarryq -s: %s", out);
        free(out);
        free(err);
        cr_assert_eq(harness_tarryq(&h, list_args, &out, &err), 0, "tarryq -p: %s", err);
        cr_assert(!strstr(err, "incomplete"), "tarryq -p said: %s", err);
        cr_assert(strstr(out, "20000 Requests"), "tarryq -p: %.300s", out);
        free(out);
        free(err);
        const char *ready = strstr(all, "READY=1"), *part = strstr(all, "STATUS=reading the queue");
        cr_assert(part && part > ready &&
                      strncmp(part, "STATUS=reading the queue: 20000 ", 32) != 0,
                  "no progress before the end: %s", all);
        for (int waited = 0; waited < 10000 && !harness_log_contains(&h, "20000 queued");
             waited += 10)
                harness_sleep_ms(10);
        cr_assert(harness_log_contains(&h, "read: 0 from state/index.snap, 20000 from their "
                                           "envelopes, 0 picked up from incoming/; 0 record(s) "
                                           "dropped (folder gone or moved); 20000 queued"),
                  "see %s", h.log);
        kill(pid, SIGTERM);
        int st;
        waitpid(pid, &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);

        /* stopped before the merge of the records began: SIGTERM is sent
         * while tarryd is still starting (blocked, it waits in the signal
         * source, which runs before the idle-priority merge); the snapshot
         * written at that stop must still hold every record */
        all[0] = '\0';
        pid = start_notified(&h, path, NULL);
        cr_assert(wait_for(fd, "EXTEND_TIMEOUT_USEC", 60000, all, sizeof(all)), "no start: %s",
                  all);
        kill(pid, SIGTERM);
        cr_assert(wait_for(fd, "STOPPING=1", 30000, all, sizeof(all)), "no STOPPING=1: %s", all);
        waitpid(pid, &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        cr_assert_eq(harness_log_count(&h, "every queued message read"), 1,
                     "the merge was done before the stop; see %s", h.log);

        /* from the snapshot: READY before any record is applied (none is due),
         * every record applied after it, none read from its envelope */
        all[0] = '\0';
        pid = start_notified(&h, path, NULL);
        cr_assert(wait_for(fd, "READY=1", 60000, all, sizeof(all)), "no READY=1: %s", all);
        cr_assert_eq(harness_log_count(&h, "started: 0 message(s) queued, spool"), 3, "see %s",
                     h.log);
        cr_assert_eq(harness_log_count(&h, "0 from state/index.snap (due soon), 20000 listed"), 3,
                     "see %s", h.log);
        cr_assert(
            wait_for(fd, "STATUS=reading the queue: 20000 of 20000", 120000, all, sizeof(all)),
            "not read to the end: %s", all);
        cr_assert(harness_wait_log(&h,
                                   "read: 20000 from state/index.snap, 0 from their envelopes, 0 "
                                   "picked up from incoming/; 0 record(s) dropped",
                                   1, 30000),
                  "see %s", h.log);
        kill(pid, SIGTERM);
        waitpid(pid, &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        close(fd);
        harness_cleanup(&h);
}
