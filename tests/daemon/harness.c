/* tests/daemon/harness.c — see harness.h. */
#include "harness.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *harness_binary(const char *rel)
{
        static char path[4][512];
        static int n;
        const char *build = getenv("TARRY_BUILD_DIR");
        char *p = path[n++ % 4];
        snprintf(p, sizeof(path[0]), "%s/%s", build ? build : "build", rel);
        return p;
}

int64_t harness_now_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void harness_sleep_ms(int ms)
{
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f, "cannot write %s", path);
        fputs(text, f);
        fclose(f);
}

void harness_write_config(struct harness *h, const char *text)
{
        write_file(h->conf, text);
}

void harness_init(struct harness *h, const char *extra)
{
        memset(h, 0, sizeof(*h));
        snprintf(h->dir, sizeof(h->dir), "/tmp/tarry-test-XXXXXX");
        cr_assert_not_null(mkdtemp(h->dir));
        snprintf(h->conf, sizeof(h->conf), "%s/tarry.conf", h->dir);
        snprintf(h->log, sizeof(h->log), "%s/tarryd.log", h->dir);
        snprintf(h->spool, sizeof(h->spool), "%s/spool", h->dir);
        char text[8192];
        /* Tests run as root: say so explicitly, as the config must. */
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = root\n"
                 "status_listen = unix:%s/status.sock, 127.0.0.1:0\nshutdown_timeout = 2s\n"
                 "%s%s",
                 h->spool, h->dir, extra ? "" : "", extra ? extra : "");
        write_file(h->conf, text);
}

/* The loopback status port tarryd chose ("status endpoint on loopback port N"). */
static void read_port(struct harness *h)
{
        FILE *f = fopen(h->log, "r");
        char line[8192];
        while (f && fgets(line, sizeof(line), f)) {
                const char *p = strstr(line, "status endpoint on loopback port ");
                if (p)
                        h->status_port = atoi(p + strlen("status endpoint on loopback port "));
        }
        if (f)
                fclose(f);
}

void harness_start(struct harness *h)
{
        size_t starts = harness_log_count(h, "started:");
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                int fd = open(h->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                dup2(fd, 2);
                int devnull = open("/dev/null", O_RDWR);
                dup2(devnull, 0);
                dup2(devnull, 1);
                unsetenv("NOTIFY_SOCKET");
                unsetenv("JOURNAL_STREAM");
                execl(harness_binary("daemon/tarryd"), "tarryd", "-C", h->conf, (char *)NULL);
                _exit(127);
        }
        h->tarryd = pid;
        /* ready once the status socket exists (it is bound during start-up) */
        char sock[320];
        snprintf(sock, sizeof(sock), "%s/status.sock", h->dir);
        for (int i = 0; i < 500; i++) {
                if (access(sock, F_OK) == 0 && harness_log_count(h, "started:") > starts) {
                        read_port(h);
                        return;
                }
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        h->tarryd = 0;
                        cr_assert_fail("tarryd exited at start-up (status %d); see %s", st, h->log);
                }
                harness_sleep_ms(10);
        }
        cr_assert_fail("tarryd did not start within 5 s; see %s", h->log);
}

int harness_stop(struct harness *h, int sig, int timeout_ms)
{
        if (!h->tarryd)
                return 0;
        kill(h->tarryd, sig);
        for (int waited = 0; waited <= timeout_ms; waited += 10) {
                int st;
                if (waitpid(h->tarryd, &st, WNOHANG) == h->tarryd) {
                        h->tarryd = 0;
                        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                }
                harness_sleep_ms(10);
        }
        return -1;
}

void harness_kill9(struct harness *h)
{
        if (!h->tarryd)
                return;
        kill(h->tarryd, SIGKILL);
        waitpid(h->tarryd, NULL, 0);
        h->tarryd = 0;
}

void harness_cleanup(struct harness *h)
{
        if (h->tarryd)
                harness_kill9(h);
        if (getenv("TARRY_KEEP_TEST_DIRS"))
                return;
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
        if (system(cmd) != 0)
                fprintf(stderr, "cannot remove %s\n", h->dir);
}

int harness_sendmail(struct harness *h, const char *body, const char *const *args)
{
        int in[2];
        cr_assert_eq(pipe(in), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                dup2(in[0], 0);
                close(in[0]);
                close(in[1]);
                const char *argv[32] = {"sendmail", "-C", h->conf};
                size_t n = 3;
                for (size_t i = 0; args && args[i] && n < 31; i++)
                        argv[n++] = args[i];
                argv[n] = NULL;
                execv(harness_binary("cli/sendmail"), (char *const *)argv);
                _exit(127);
        }
        close(in[0]);
        size_t len = strlen(body);
        for (size_t off = 0; off < len;) {
                ssize_t w = write(in[1], body + off, len - off);
                if (w <= 0)
                        break;
                off += (size_t)w;
        }
        close(in[1]);
        int st;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void harness_send(struct harness *h, const char *sender, const char *rcpt, const char *subject)
{
        char body[1024];
        snprintf(body, sizeof(body), "Subject: %s\nTo: <%s>\n\nbody of %s\n", subject, rcpt,
                 subject);
        const char *args[] = {"-f", sender, rcpt, NULL};
        int r = harness_sendmail(h, body, args);
        cr_assert_eq(r, 0, "sendmail exited %d", r);
}

size_t harness_count_queued(struct harness *h, const char *dir)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", h->spool, dir);
        DIR *d = opendir(path);
        if (!d)
                return 0;
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
                if (strlen(e->d_name) == 16)
                        n++;
        closedir(d);
        return n;
}

size_t harness_log_count(struct harness *h, const char *needle)
{
        FILE *f = fopen(h->log, "r");
        if (!f)
                return 0;
        char line[8192];
        size_t n = 0;
        while (fgets(line, sizeof(line), f))
                n += strstr(line, needle) != NULL;
        fclose(f);
        return n;
}

bool harness_log_contains(struct harness *h, const char *needle)
{
        return harness_log_count(h, needle) > 0;
}

static char *slurp_fd(int fd)
{
        size_t cap = 4096, len = 0;
        char *buf = malloc(cap);
        for (;;) {
                if (len + 1 >= cap)
                        buf = realloc(buf, cap *= 2);
                ssize_t n = read(fd, buf + len, cap - len - 1);
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        return buf;
}

int harness_tarryq(struct harness *h, const char *const *args, char **out, char **err)
{
        char outpath[400], errpath[400];
        snprintf(outpath, sizeof(outpath), "%s/tarryq.out", h->dir);
        snprintf(errpath, sizeof(errpath), "%s/tarryq.err", h->dir);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                int o = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                int e = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                dup2(o, 1);
                dup2(e, 2);
                const char *argv[32] = {"tarryq", "-C", h->conf};
                size_t n = 3;
                for (size_t i = 0; args && args[i] && n < 31; i++)
                        argv[n++] = args[i];
                argv[n] = NULL;
                execv(harness_binary("cli/tarryq"), (char *const *)argv);
                _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        int fd = open(outpath, O_RDONLY);
        *out = slurp_fd(fd);
        close(fd);
        fd = open(errpath, O_RDONLY);
        *err = slurp_fd(fd);
        close(fd);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
