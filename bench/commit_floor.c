/* bench/commit_floor.c — the disk's floor for a durable submission: exactly
 * the file-system work of sendmail's commit (queue/queue.c), nothing else.
 *
 * Per message, in a spool-like folder (LAYOUT "file", the default: sendmail's
 * commit since issue 19): write a 4 KB body and a ~400-byte envelope into one
 * file in tmp/, fsync it, rename it into incoming/ (RENAME_NOREPLACE), fsync
 * incoming/. With LAYOUT "spool", the commit before issue 19: mkdir tmp/NAME,
 * the body and the envelope as two files, fsync the envelope, fsync the body,
 * fsync the draft folder, rename it into incoming/, fsync incoming/. No
 * process start, no configuration, no parsing: what sendmail's time cannot
 * go below on this disk. P processes run side by side, as P submitters would.
 *
 * usage: commit-floor DIR [MESSAGES] [PROCESSES] [file|spool] [keep]
 *   (defaults 500, 1, file)
 * Prints one line: messages, seconds, commits/s, ms per commit. DIR is made
 * (it must not exist) and removed, unless "keep" is given: a bench that runs
 * other submitters after this one keeps the files until its end, as freeing
 * inodes makes the next creations on ext4 slower for a while (they skip
 * recently deleted inodes), which would penalise whoever runs next. Put DIR
 * on the disk you mean to measure.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
        fprintf(stderr, "commit-floor: %s: %s\n", what, strerror(errno));
        exit(1);
}

static void write_file(int dir, const char *name, const char *buf, size_t len, int *fd)
{
        *fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
        if (*fd < 0 || write(*fd, buf, len) != (ssize_t)len)
                die(name);
}

/* One submission's commit, as queue_draft_begin + queue_draft_commit do it. */
static void commit_one(int tmp, int incoming, const char *name, const char *body,
                       const char *envelope)
{
        if (mkdirat(tmp, name, 0770) < 0)
                die("mkdir");
        int dir = openat(tmp, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
                die("open draft");
        int b, e;
        write_file(dir, "body", body, 4096, &b);
        write_file(dir, "envelope", envelope, strlen(envelope), &e);
        if (fsync(e) < 0 || fsync(b) < 0 || fsync(dir) < 0)
                die("fsync");
        if (renameat2(tmp, name, incoming, name, RENAME_NOREPLACE) < 0)
                die("rename");
        if (fsync(incoming) < 0)
                die("fsync incoming");
        close(e);
        close(b);
        close(dir);
}

/* The same bytes as one file: the least a durable submission can do. */
static void commit_one_file(int tmp, int incoming, const char *name, const char *body,
                            const char *envelope)
{
        int f;
        write_file(tmp, name, body, 4096, &f);
        if (write(f, envelope, strlen(envelope)) != (ssize_t)strlen(envelope))
                die("write");
        if (fsync(f) < 0)
                die("fsync");
        if (renameat2(tmp, name, incoming, name, RENAME_NOREPLACE) < 0)
                die("rename");
        if (fsync(incoming) < 0)
                die("fsync incoming");
        close(f);
}

static void submitter(const char *root, int p, int n, bool one_file)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/tmp", root);
        int tmp = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        snprintf(path, sizeof(path), "%s/incoming", root);
        int incoming = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (tmp < 0 || incoming < 0)
                die("open spool");
        static char body[4096];
        memset(body, 'x', sizeof(body));
        char envelope[512];
        memset(envelope, 'e', 400);
        envelope[400] = '\0';
        for (int i = 0; i < n; i++) {
                char name[32];
                snprintf(name, sizeof(name), "%04X%012X", p, i);
                (one_file ? commit_one_file : commit_one)(tmp, incoming, name, body, envelope);
        }
}

int main(int argc, char **argv)
{
        if (argc < 2) {
                fprintf(stderr,
                        "usage: commit-floor DIR [MESSAGES] [PROCESSES] [file|spool] [keep]\n");
                return 64;
        }
        const char *root = argv[1];
        int n = argc > 2 ? atoi(argv[2]) : 500, procs = argc > 3 ? atoi(argv[3]) : 1;
        const char *layout = argc > 4 ? argv[4] : "file";
        bool one_file = strcmp(layout, "file") == 0;
        bool keep = argc > 5 && strcmp(argv[5], "keep") == 0;
        if (n < 1 || procs < 1 || procs > 64 || (!one_file && strcmp(layout, "spool") != 0) ||
            (argc > 5 && !keep)) {
                fprintf(stderr, "commit-floor: MESSAGES >= 1, 1 <= PROCESSES <= 64, LAYOUT spool "
                                "or file, and only \"keep\" after it\n");
                return 64;
        }
        char path[4096];
        if (mkdir(root, 0755) < 0)
                die(root);
        snprintf(path, sizeof(path), "%s/tmp", root);
        if (mkdir(path, 0770) < 0)
                die(path);
        snprintf(path, sizeof(path), "%s/incoming", root);
        if (mkdir(path, 0770) < 0)
                die(path);
        sync();
        double t0 = now_s();
        for (int p = 0; p < procs; p++) {
                pid_t pid = fork();
                if (pid < 0)
                        die("fork");
                if (pid == 0) {
                        submitter(root, p, n / procs, one_file);
                        _exit(0);
                }
        }
        int failed = 0, st;
        while (wait(&st) > 0)
                failed |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        double t = now_s() - t0;
        int total = n / procs * procs;
        printf("commit floor (%s), %d process%s: %d commits in %.2f s: %.1f commits/s, %.3f ms "
               "each\n",
               layout, procs, procs == 1 ? "" : "es", total, t, total / t, t * 1000 / total);
        snprintf(path, sizeof(path), "rm -rf '%s'", root);
        if (!keep && strchr(root, '\'') == NULL && system(path) != 0)
                fprintf(stderr, "commit-floor: could not remove %s\n", root);
        return failed;
}
