/* tests/daemon/test_submit_crash.c — kill -9 sendmail in the middle of a
 * submission, 200 times, while tarryd runs: no partial message is ever queued
 * or delivered, every submission that sendmail confirmed (exit 0) is
 * delivered exactly once, and the abandoned drafts are cleaned up (on reload).
 *
 * Each message is harness_numbered_message's ("X-Kill: N", numbered lines,
 * "END N"), so a delivered body shows whether it is whole. Kills land while the body is
 * still being written, just after stdin closes (during the commit) or never.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define SUBMISSIONS 200

enum fate { MID_WRITE, AFTER_EOF, COMPLETED };

struct submission {
        enum fate fate;
        int exit_status; /* 0 when sendmail finished before any kill */
        int lines;
        int delivered;
};

static void write_all(int fd, const char *buf, size_t len)
{
        for (size_t off = 0; off < len;) {
                ssize_t w = write(fd, buf + off, len - off);
                if (w <= 0)
                        return;
                off += (size_t)w;
        }
}

/* Submit message n and kill sendmail per its fate; records the exit status. */
static void submit_and_kill(struct harness *h, int n, struct submission *s)
{
        size_t len;
        char *text = harness_numbered_message(n, s->lines, &len);
        int fd;
        char rcpt[64];
        snprintf(rcpt, sizeof(rcpt), "k%d@example.test", n);
        const char *args[] = {"-f", "alice@sender.test", rcpt, NULL};
        pid_t pid = harness_sendmail_start(h, args, "/dev/null", &fd);
        if (s->fate == MID_WRITE) {
                write_all(fd, text, (size_t)rand() % len);
                harness_sleep_ms(rand() % 3);
                kill(pid, SIGKILL);
                close(fd);
        } else {
                write_all(fd, text, len);
                close(fd);
                if (s->fate == AFTER_EOF) {
                        /* reading a large body and the commit (fsyncs, renames)
                         * take a few milliseconds: kill somewhere in there */
                        struct timespec ts = {0, (long)(rand() % 10000) * 1000};
                        nanosleep(&ts, NULL);
                        kill(pid, SIGKILL);
                }
        }
        int st;
        waitpid(pid, &st, 0);
        s->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        free(text);
}

/* Check one delivered body: its number, and that every line is there. */
static void check_delivered(const char *path, struct submission *subs)
{
        int lines;
        bool ended;
        int n = harness_numbered_read(path, &lines, &ended);
        cr_assert(n >= 0 && n < SUBMISSIONS, "%s: no X-Kill header", path);
        cr_assert(ended, "%s: message %d delivered without its end", path, n);
        cr_assert_eq(lines, subs[n].lines, "%s: message %d has %d of %d lines", path, n, lines,
                     subs[n].lines);
        subs[n].delivered++;
}

static size_t count_entries(struct harness *h, const char *dir)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", h->spool, dir);
        DIR *d = opendir(path);
        cr_assert_not_null(d, "%s", path);
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
                n += e->d_name[0] != '.';
        closedir(d);
        return n;
}

Test(submit_crash, kill_9_sendmail_never_queues_a_partial_message, .timeout = 240)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        struct harness h;
        char extra[512];
        cr_assert_eq(fixture_start(f, 0), 0);
        snprintf(extra, sizeof(extra), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(f));
        harness_init(&h, extra);
        char saved[320];
        snprintf(saved, sizeof(saved), "%s/delivered", h.dir);
        cr_assert_eq(mkdir(saved, 0755), 0);
        cr_assert_eq(fixture_set(f, "save_dir", saved), 0);
        harness_start(&h);

        static struct submission subs[SUBMISSIONS];
        srand(8);
        size_t fates[3] = {0}, committed_before_kill = 0, confirmed = 0;
        for (int n = 0; n < SUBMISSIONS; n++) {
                struct submission *s = &subs[n];
                int r = rand() % 10;
                s->fate = r < 6 ? MID_WRITE : r < 9 ? AFTER_EOF : COMPLETED;
                /* 4 KB to 1 MB: several writes, several draft flushes */
                s->lines = 64 << (rand() % 9);
                submit_and_kill(&h, n, s);
                fates[s->fate]++;
                confirmed += s->exit_status == 0;
        }
        /* wait for tarryd to deliver whatever was committed */
        size_t queued = 1;
        for (int i = 0; i < 1000 && queued; i++) {
                harness_sleep_ms(10);
                queued = harness_count_queued(&h, "incoming") + harness_count_queued(&h, "active");
        }
        cr_assert_eq(queued, 0, "mail left in the queue");
        harness_sleep_ms(200);

        DIR *d = opendir(saved);
        cr_assert_not_null(d);
        struct dirent *e;
        size_t delivered = 0;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char path[700];
                snprintf(path, sizeof(path), "%s/%s", saved, e->d_name);
                check_delivered(path, subs);
                delivered++;
        }
        closedir(d);
        for (int n = 0; n < SUBMISSIONS; n++) {
                cr_assert_leq(subs[n].delivered, 1, "message %d delivered %d times", n,
                              subs[n].delivered);
                if (subs[n].exit_status == 0)
                        cr_assert_eq(subs[n].delivered, 1, "confirmed message %d not delivered", n);
                else if (subs[n].delivered)
                        committed_before_kill++;
                if (subs[n].fate == MID_WRITE)
                        cr_assert_eq(subs[n].delivered, 0,
                                     "message %d delivered though its body was cut", n);
        }

        /* the killed writers' drafts stay in tmp/ until tarryd's next clean-up:
         * at start, on reload (SIGHUP) and hourly */
        size_t drafts = count_entries(&h, "tmp");
        cr_assert_gt(drafts, 0, "no sendmail was killed with a draft open");
        kill(h.tarryd, SIGHUP);
        for (int i = 0; i < 300 && !harness_log_contains(&h, "reload: removed"); i++)
                harness_sleep_ms(10);
        cr_assert_eq(count_entries(&h, "tmp"), 0, "abandoned drafts left in tmp/ after a reload");
        char removed[64];
        snprintf(removed, sizeof(removed), "reload: removed %zu abandoned submission(s)", drafts);
        cr_assert(harness_log_contains(&h, removed), "the log does not say '%s'", removed);
        cr_assert_eq(harness_count_queued(&h, "corrupt"), 0);
        size_t killed = 0, killed_after_eof = 0;
        for (int n = 0; n < SUBMISSIONS; n++) {
                killed += subs[n].exit_status == 128 + SIGKILL;
                killed_after_eof +=
                    subs[n].exit_status == 128 + SIGKILL && subs[n].fate == AFTER_EOF;
        }
        fprintf(stderr,
                "submit crash test: %d submissions, %zu killed by SIGKILL (%zu mid-body, %zu after "
                "the end of input, %zu of these had committed), %zu confirmed (exit 0), "
                "%zu delivered, 0 partial, 0 duplicates, %zu abandoned drafts removed on reload\n",
                SUBMISSIONS, killed, fates[MID_WRITE], killed_after_eof, committed_before_kill,
                confirmed, delivered, drafts);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
