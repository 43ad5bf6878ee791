/* tests/daemon/harness.c — see harness.h. */
#include "harness.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/prctl.h>
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

/* The initial user namespace maps all 2^32 ids. */
static bool in_user_namespace(void);

static void ensure(const char *what, const char *cmd, bool exists)
{
        if (exists)
                return;
        cr_assert_eq(system(cmd), 0, "cannot create %s: %s", what, cmd);
}

bool harness_can_switch_user(void)
{
        if (geteuid() != 0 || in_user_namespace())
                return false;
        /* like the package: a system group tarrydrop, a system user with its own group */
        ensure(HARNESS_DROP_GROUP,
               "groupadd --system " HARNESS_DROP_GROUP " 2>/dev/null || "
               "getent group " HARNESS_DROP_GROUP " >/dev/null",
               getgrnam(HARNESS_DROP_GROUP) != NULL);
        ensure(HARNESS_DAEMON_USER,
               "useradd --system --user-group --no-create-home --home-dir /nonexistent "
               "--shell /usr/sbin/nologin " HARNESS_DAEMON_USER
               " 2>/dev/null || getent passwd " HARNESS_DAEMON_USER " >/dev/null",
               getpwnam(HARNESS_DAEMON_USER) != NULL);
        return true;
}

/* Who tarryd will run as: h->daemon_uid/gid. */
static void pick_daemon_user(struct harness *h)
{
        if (!h->as_root && harness_can_switch_user()) {
                struct passwd *pw = getpwnam(HARNESS_DAEMON_USER);
                cr_assert_not_null(pw, "no user " HARNESS_DAEMON_USER);
                h->daemon_uid = pw->pw_uid;
                h->daemon_gid = pw->pw_gid;
        } else {
                h->daemon_uid = geteuid();
                h->daemon_gid = getegid();
        }
}

void harness_give(const struct harness *h, const char *path)
{
        if (h->daemon_uid != geteuid())
                cr_assert_eq(lchown(path, h->daemon_uid, h->daemon_gid), 0, "chown %s: %s", path,
                             strerror(errno));
}

void harness_give_spool(const struct harness *h)
{
        if (h->daemon_uid == geteuid())
                return;
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "chown -R %u:%u '%s'", (unsigned)h->daemon_uid,
                 (unsigned)h->daemon_gid, h->spool);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void layout_dir(const struct harness *h, const char *name, mode_t mode, gid_t gid)
{
        char path[400];
        snprintf(path, sizeof(path), "%s%s%s", h->spool, name[0] ? "/" : "", name);
        cr_assert(mkdir(path, mode) == 0 || errno == EEXIST, "mkdir %s: %s", path, strerror(errno));
        struct stat st;
        cr_assert_eq(lstat(path, &st), 0);
        if (!S_ISDIR(st.st_mode))
                return; /* a test planted something else here: leave it for tarryd to refuse */
        cr_assert_eq(chmod(path, mode), 0, "chmod %s: %s", path, strerror(errno));
        cr_assert_eq(chown(path, h->daemon_uid, gid), 0, "chown %s: %s", path, strerror(errno));
}

void harness_layout_spool(struct harness *h)
{
        pick_daemon_user(h);
        /* searchable, like /var/spool: a tarryd started as root reaches its
         * spool here after switching to its user */
        if (harness_can_switch_user())
                cr_assert_eq(chmod(h->dir, 0711), 0);
        if (h->daemon_uid == geteuid())
                return; /* tarryd creates the spool itself */
        struct group *gr = getgrnam(HARNESS_DROP_GROUP);
        cr_assert_not_null(gr);
        gid_t drop_gid = gr->gr_gid;
        /* the temp dir plays /run/tarry: the status socket is made there */
        cr_assert_eq(chown(h->dir, h->daemon_uid, h->daemon_gid), 0);
        cr_assert_eq(chmod(h->dir, 0711), 0);
        layout_dir(h, "", 0711, h->daemon_gid);
        static const char *const folders[] = {"tmp",  "incoming", "active",
                                              "hold", "corrupt",  "state"};
        for (size_t i = 0; i < sizeof(folders) / sizeof(folders[0]); i++)
                layout_dir(h, folders[i], 0750, h->daemon_gid);
        layout_dir(h, "maildrop", 01730, drop_gid);
}

void harness_spool_deferred(struct harness *h, int n)
{
        harness_layout_spool(h);
        char gen[700];
        snprintf(gen, sizeof(gen), "%s --spool %s --messages %d --defer 3600 >/dev/null",
                 harness_binary("bench/spool-gen"), h->spool, n);
        cr_assert_eq(system(gen), 0, "%s", gen);
        harness_give_spool(h); /* spool-gen ran as this user */
}

void harness_child_become_daemon(const struct harness *h)
{
        if (h->daemon_uid == geteuid())
                return;
        struct group *gr = getgrnam(HARNESS_DROP_GROUP);
        if (!gr)
                _exit(126);
        gid_t groups[2] = {gr->gr_gid};
        size_t n = 1;
        if (h->extra_group) {
                struct group *extra = getgrnam(h->extra_group);
                if (!extra)
                        _exit(126);
                groups[n++] = extra->gr_gid;
        }
        if (setgroups(n, groups) < 0 || setgid(h->daemon_gid) < 0 || setuid(h->daemon_uid) < 0 ||
            setuid(0) == 0)
                _exit(126);
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
        /* The user tarryd switches to when started as root; started directly
         * as that user (the default here), the key is not used. */
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = %s\n"
                 "status_listen = unix:%s/status.sock, 127.0.0.1:0\nshutdown_timeout = 2s\n"
                 "%s%s",
                 h->spool, harness_can_switch_user() ? HARNESS_DAEMON_USER : "root", h->dir,
                 extra ? "" : "", extra ? extra : "");
        write_file(h->conf, text);
}

void harness_init_routed(struct harness *h, unsigned port, int max_connections)
{
        char extra[512];
        snprintf(extra, sizeof(extra),
                 "[smtp]\nmax_connections = %d\n[transport]\nexample.test = [127.0.0.1]:%u\n",
                 max_connections, port);
        harness_init(h, extra);
        harness_start(h);
        cr_assert_eq(harness_stop(h, SIGTERM, 3000), 0);
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
        harness_layout_spool(h);
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
                harness_child_become_daemon(h);
                /* a test that fails before stopping tarryd must not leave it running
                 * (after the switch: a change of credentials clears it) */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
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

bool harness_running(struct harness *h)
{
        if (!h->tarryd)
                return false;
        int st;
        if (waitpid(h->tarryd, &st, WNOHANG) == h->tarryd) {
                h->tarryd = 0;
                return false;
        }
        return true;
}

void harness_cleanup(struct harness *h)
{
        if (h->tarryd)
                harness_kill9(h);
        if (h->spool_mounted && umount2(h->spool, MNT_DETACH) == 0)
                h->spool_mounted = false;
        if (getenv("TARRY_KEEP_TEST_DIRS"))
                return;
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
        if (system(cmd) != 0)
                fprintf(stderr, "cannot remove %s\n", h->dir);
}

pid_t harness_sendmail_start(struct harness *h, const char *const *args, const char *err_path,
                             int *stdin_fd)
{
        int in[2];
        cr_assert_eq(pipe(in), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                dup2(in[0], 0);
                close(in[0]);
                close(in[1]);
                if (err_path) {
                        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                        dup2(e, 2);
                }
                const char *argv[32] = {"sendmail", "-C", h->conf};
                size_t n = 3;
                for (size_t i = 0; args && args[i] && n < 31; i++)
                        argv[n++] = args[i];
                argv[n] = NULL;
                execv(harness_binary("cli/sendmail"), (char *const *)argv);
                _exit(127);
        }
        close(in[0]);
        *stdin_fd = in[1];
        return pid;
}

static int run_sendmail(struct harness *h, const char *body, const char *const *args,
                        const char *err_path)
{
        int fd;
        pid_t pid = harness_sendmail_start(h, args, err_path, &fd);
        /* sendmail may stop reading early (a full spool): EPIPE, not SIGPIPE */
        struct sigaction ign = {.sa_handler = SIG_IGN}, old;
        sigaction(SIGPIPE, &ign, &old);
        size_t len = strlen(body);
        for (size_t off = 0; off < len;) {
                ssize_t w = write(fd, body + off, len - off);
                if (w <= 0)
                        break;
                off += (size_t)w;
        }
        close(fd);
        sigaction(SIGPIPE, &old, NULL);
        int st;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int harness_sendmail(struct harness *h, const char *body, const char *const *args)
{
        return run_sendmail(h, body, args, NULL);
}

static char *slurp_fd(int fd);

int harness_sendmail_err(struct harness *h, const char *body, const char *const *args, char **err)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/sendmail.err", h->dir);
        int r = run_sendmail(h, body, args, path);
        int fd = open(path, O_RDONLY);
        *err = slurp_fd(fd);
        if (fd >= 0)
                close(fd);
        return r;
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

bool harness_wait_log(struct harness *h, const char *needle, size_t count, int timeout_ms)
{
        int64_t end = harness_now_us() + (int64_t)timeout_ms * 1000;
        while (harness_log_count(h, needle) < count && harness_now_us() < end)
                harness_sleep_ms(20);
        return harness_log_count(h, needle) >= count;
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

int harness_run_tarryd(struct harness *h, const char *conf, bool as_daemon, int timeout_ms,
                       char *err, size_t errlen)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/other-tarryd.err", h->dir);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
                dup2(fd, 2);
                unsetenv("NOTIFY_SOCKET");
                if (as_daemon)
                        harness_child_become_daemon(h);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                execl(harness_binary("daemon/tarryd"), "tarryd", "-C", conf, (char *)NULL);
                _exit(127);
        }
        int st = 0, code = -1;
        for (int64_t end = harness_now_us() + timeout_ms * 1000LL; harness_now_us() < end;) {
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                        break;
                }
                harness_sleep_ms(10);
        }
        if (code == -1) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(err, 1, errlen - 1, f) : 0;
        err[n] = '\0';
        if (f)
                fclose(f);
        return code;
}

int harness_tarryq(struct harness *h, const char *const *args, char **out, char **err)
{
        return harness_tarryq_as(h, (uid_t)-1, args, out, err);
}

int harness_tarryq_as(struct harness *h, uid_t uid, const char *const *args, char **out, char **err)
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
                if (uid != (uid_t)-1 &&
                    (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0))
                        _exit(126);
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

char *harness_http_get(struct harness *h, const char *path)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(fd, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)h->status_port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0,
                     "cannot reach the status endpoint on port %d: %s", h->status_port,
                     strerror(errno));
        char req[512];
        int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
        cr_assert_eq(write(fd, req, (size_t)n), n);
        char *resp = slurp_fd(fd);
        close(fd);
        return resp;
}

/* ---- a spool on a small filesystem of its own ---- */

static int write_proc(const char *path, const char *text)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = write(fd, text, strlen(text));
        int r = n == (ssize_t)strlen(text) ? 0 : -errno;
        close(fd);
        return r;
}

static bool in_user_namespace(void)
{
        FILE *f = fopen("/proc/self/uid_map", "r");
        unsigned long inside = 0, outside = 0, count = 0;
        bool r =
            f && fscanf(f, "%lu %lu %lu", &inside, &outside, &count) == 3 && count != 4294967295UL;
        if (f)
                fclose(f);
        return r;
}

int harness_enter_user_namespace(void)
{
        uid_t uid = geteuid();
        gid_t gid = getegid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
                return -errno;
        char map[64];
        int r = write_proc("/proc/self/setgroups", "deny");
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
        if (r == 0)
                r = write_proc("/proc/self/uid_map", map);
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
        if (r == 0)
                r = write_proc("/proc/self/gid_map", map);
        return r;
}

/* A mount namespace of our own, as root or else as root of a new user namespace. */
static int enter_mount_namespace(const char **how)
{
        if (unshare(CLONE_NEWNS) == 0) {
                *how = in_user_namespace() ? "tmpfs in a private mount namespace, as root of a "
                                             "user namespace (unprivileged)"
                                           : "tmpfs in a private mount namespace";
        } else {
                if (errno != EPERM)
                        return *how = "unshare(CLONE_NEWNS) failed", -errno;
                int r = harness_enter_user_namespace();
                if (r < 0)
                        return *how = "no CAP_SYS_ADMIN, and no user namespace to get it in "
                                      "(call harness_enter_user_namespace from main, before "
                                      "any thread starts)",
                               r;
                *how = "tmpfs in a user and mount namespace (unprivileged)";
        }
        /* nothing mounted here may propagate back to the host */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return *how = "cannot make the mounts private", -errno;
        return 0;
}

int harness_spool_on_tmpfs(struct harness *h, const char *size, const char **how)
{
        const char *dummy;
        if (!how)
                how = &dummy;
        int r = enter_mount_namespace(how);
        if (r < 0)
                return r;
        if (mkdir(h->spool, 0755) < 0 && errno != EEXIST)
                return *how = "cannot create spool/", -errno;
        char opts[64];
        snprintf(opts, sizeof(opts), "size=%s,mode=0755", size);
        if (mount("tarry-test-spool", h->spool, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
                return *how = "mount -t tmpfs failed", -errno;
        h->spool_mounted = true;
        return 0;
}

long long harness_fill_spool(struct harness *h)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/filler", h->spool);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0, "cannot create %s: %s", path, strerror(errno));
        static char chunk[65536];
        long long total = 0;
        /* big writes, then page-sized ones for the last partial chunk */
        for (size_t len = sizeof(chunk); len >= 512; len /= 8) {
                for (;;) {
                        ssize_t n = write(fd, chunk, len);
                        if (n > 0) {
                                total += n;
                                continue;
                        }
                        cr_assert(n < 0 && errno == ENOSPC, "filling %s stopped with %s", path,
                                  n == 0 ? "a zero-byte write" : strerror(errno));
                        break;
                }
        }
        close(fd);
        return total;
}

long long harness_fill_spool_but(struct harness *h, long long free_bytes)
{
        long long total = harness_fill_spool(h);
        char path[400];
        snprintf(path, sizeof(path), "%s/filler", h->spool);
        long long keep = (total - free_bytes) & ~4095LL; /* whole pages are freed */
        cr_assert_geq(keep, 0);
        cr_assert_eq(truncate(path, keep), 0, "cannot truncate %s: %s", path, strerror(errno));
        return keep;
}

void harness_unfill_spool(struct harness *h)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/filler", h->spool);
        cr_assert(unlink(path) == 0 || errno == ENOENT, "cannot remove %s: %s", path,
                  strerror(errno));
}

long harness_metric(struct harness *h, const char *series)
{
        char *resp = harness_http_get(h, "/metrics");
        cr_assert(strstr(resp, " 200 "), "GET /metrics: %.200s", resp);
        char needle[256];
        snprintf(needle, sizeof(needle), "\n%s ", series);
        const char *p = strstr(resp, needle);
        long n = p ? strtol(p + strlen(needle), NULL, 10) : 0;
        free(resp);
        return n;
}

char *harness_numbered_message(int n, int lines, size_t *len)
{
        size_t cap = 128 + (size_t)lines * 64;
        char *buf = malloc(cap);
        cr_assert_not_null(buf);
        size_t off = (size_t)snprintf(buf, cap, "Subject: kill %d\nX-Kill: %d\n\n", n, n);
        for (int i = 0; i < lines; i++)
                off += (size_t)snprintf(buf + off, cap - off,
                                        "kill %d line %06d abcdefghijklmnopqrstuvwxyz0123456789\n",
                                        n, i);
        off += (size_t)snprintf(buf + off, cap - off, "END %d\n", n);
        *len = off;
        return buf;
}

int harness_numbered_read(const char *path, int *lines, bool *ended)
{
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "%s", path);
        char line[256];
        int n = -1, a, b;
        *lines = 0;
        *ended = false;
        while (fgets(line, sizeof(line), f)) {
                if (n < 0 && sscanf(line, "X-Kill: %d", &a) == 1)
                        n = a;
                else if (sscanf(line, "kill %d line %d", &a, &b) == 2 && a == n && b == *lines)
                        (*lines)++;
                else if (sscanf(line, "END %d", &a) == 1 && a == n)
                        *ended = true;
        }
        fclose(f);
        return n;
}
