/* tests/daemon/test_submit_crash.c — kill -9 sendmail in the middle of a
 * submission, 200 times, while tarryd runs: no partial message is ever queued
 * or delivered, every submission that sendmail confirmed (exit 0) is
 * delivered exactly once, and a killed sendmail leaves no name anywhere in
 * the spool (its draft is an unnamed O_TMPFILE inode, freed by the kernel).
 * Also: kill -9 tarryd while it picks up a full incoming/ (every message
 * still arrives whole), and a spool whose incoming/ holds the two-file
 * folders of the previous version is delivered.
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
#include "queue/msgfile.h"
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
static void check_delivered(const char *path, void *arg)
{
        struct submission *subs = arg;
        int lines;
        bool ended;
        int n = harness_numbered_read(path, &lines, &ended);
        cr_assert(n >= 0 && n < SUBMISSIONS, "%s: no X-Kill header", path);
        cr_assert(ended, "%s: message %d delivered without its end", path, n);
        cr_assert_eq(lines, subs[n].lines, "%s: message %d has %d of %d lines", path, n, lines,
                     subs[n].lines);
        subs[n].delivered++;
}

/* Call check on each message the fixture saved into saved; how many there were. */
static size_t for_each_saved(const char *saved, void (*check)(const char *path, void *arg),
                             void *arg)
{
        DIR *d = opendir(saved);
        cr_assert_not_null(d, "%s", saved);
        struct dirent *e;
        size_t n = 0;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char path[700];
                snprintf(path, sizeof(path), "%s/%s", saved, e->d_name);
                check(path, arg);
                n++;
        }
        closedir(d);
        return n;
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

/* Regular files in h's spool folder dir. */
static size_t count_files(struct harness *h, const char *dir)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", h->spool, dir);
        DIR *d = opendir(path);
        cr_assert_not_null(d, "%s", path);
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
                struct stat st;
                n += e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, 0) == 0 &&
                     S_ISREG(st.st_mode);
        }
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

        size_t delivered = for_each_saved(saved, check_delivered, subs);
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

        /* a killed writer's draft had no name: nothing is left for a clean-up */
        size_t drafts = count_entries(&h, "tmp");
        cr_assert_eq(drafts, 0, "killed sendmails left %zu draft(s) in tmp/", drafts);
        cr_assert_eq(count_entries(&h, "incoming"), 0);
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
                "%zu delivered, 0 partial, 0 duplicates, %zu drafts left in tmp/\n",
                SUBMISSIONS, killed, fates[MID_WRITE], killed_after_eof, committed_before_kill,
                confirmed, delivered, drafts);
        cr_assert_gt(killed, 0, "no sendmail was killed");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* The fixture saving bodies into DIR/delivered, and tarryd routed to it. */
static struct fixture *routed(struct harness *h, char *saved, size_t len)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        char extra[512];
        snprintf(extra, sizeof(extra), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(f));
        harness_init(h, extra);
        snprintf(saved, len, "%s/delivered", h->dir);
        cr_assert_eq(mkdir(saved, 0755), 0);
        cr_assert_eq(fixture_set(f, "save_dir", saved), 0);
        harness_start(h); /* a first run lays out the spool */
        cr_assert_eq(harness_stop(h, SIGTERM, 3000), 0);
        return f;
}

/* Submit messages 0..n-1 (lines each) while tarryd is stopped. */
static void submit_stopped(struct harness *h, int n, int lines)
{
        for (int i = 0; i < n; i++) {
                size_t len;
                char *text = harness_numbered_message(i, lines, &len);
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "k%d@example.test", i);
                const char *args[] = {"-f", "alice@sender.test", rcpt, NULL};
                cr_assert_eq(harness_sendmail(h, text, args), 0);
                free(text);
        }
}

struct arrivals {
        int n;
        int *times;
};

static void count_arrival(const char *path, void *arg)
{
        struct arrivals *a = arg;
        int lines;
        bool ended;
        int k = harness_numbered_read(path, &lines, &ended);
        cr_assert(k >= 0 && k < a->n && ended, "%s: not a whole message", path);
        a->times[k]++;
}

/* How often each of messages 0..n-1 arrived (whole: asserted) in saved. */
static void count_arrivals(const char *saved, int n, int *times)
{
        memset(times, 0, (size_t)n * sizeof(int));
        for_each_saved(saved, count_arrival, &(struct arrivals){n, times});
}

/* Rewrite incoming/ID, a message file (queue/msgfile.h), as the previous
 * version wrote it: a folder incoming/ID/ with body and envelope. */
static void to_previous_layout(struct harness *h, const char *id)
{
        char path[600], dir[600], file[700];
        snprintf(path, sizeof(path), "%s/incoming/%s", h->spool, id);
        FILE *in = fopen(path, "r");
        cr_assert_not_null(in, "%s", path);
        unsigned long long body_len, env_len;
        cr_assert_eq(fseek(in, -MSGFILE_TRAILER_LEN, SEEK_END), 0);
        cr_assert_eq(fscanf(in, MSGFILE_MAGIC "%*16s %20llu %10llu", &body_len, &env_len), 2);
        rewind(in);
        char *buf = malloc(body_len + env_len);
        cr_assert_eq(fread(buf, 1, body_len + env_len, in), body_len + env_len);
        fclose(in);
        snprintf(dir, sizeof(dir), "%s/incoming/.old-%s", h->spool, id);
        cr_assert_eq(mkdir(dir, 0770), 0);
        static const char *const names[] = {"body", "envelope"};
        for (int i = 0; i < 2; i++) {
                snprintf(file, sizeof(file), "%s/%s", dir, names[i]);
                FILE *out = fopen(file, "w");
                cr_assert_not_null(out);
                size_t n = i ? env_len : body_len;
                cr_assert_eq(fwrite(buf + (i ? body_len : 0), 1, n, out), n);
                fclose(out);
        }
        free(buf);
        cr_assert_eq(unlink(path), 0);
        cr_assert_eq(rename(dir, path), 0);
}

Test(submit_crash, a_spool_the_previous_version_wrote_is_delivered, .timeout = 90)
{
        struct harness h;
        char saved[320];
        struct fixture *f = routed(&h, saved, sizeof(saved));
        enum { N = 3 };
        submit_stopped(&h, N, 200);
        char incoming[400];
        snprintf(incoming, sizeof(incoming), "%s/incoming", h.spool);
        DIR *d = opendir(incoming);
        cr_assert_not_null(d);
        struct dirent *e;
        while ((e = readdir(d)))
                if (strlen(e->d_name) == 16)
                        to_previous_layout(&h, e->d_name);
        closedir(d);
        harness_give_spool(&h);
        cr_assert_eq(count_files(&h, "incoming"), 0);
        cr_assert_eq(count_entries(&h, "incoming"), N, "two-file folders, as 0.1 left them");

        harness_start(&h);
        cr_assert_eq(fixture_wait_txns(f, N, 30000), 0, "not delivered");
        cr_assert(harness_wait_log(&h, ": removed", N, 30000));
        int times[N];
        count_arrivals(saved, N, times);
        for (int i = 0; i < N; i++)
                cr_assert_eq(times[i], 1, "message %d arrived %d times", i, times[i]);
        cr_assert_eq(harness_count_queued(&h, "corrupt"), 0);
        cr_assert_eq(count_entries(&h, "incoming"), 0);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* While tarryd is killed again and again, its mail goes to a server that
 * answers 421 to every connection (nothing is delivered, so no attempt in
 * flight can be the reason for a second copy); then it is routed to the
 * fixture that counts, and flushed: every message must arrive exactly once.
 * A pickup cut short leaves an empty folder in active/ and the file in
 * incoming/, or the file as active/ID/body with its trailer: either way
 * the message must go out once, whole. */
Test(submit_crash, kill_9_tarryd_while_it_picks_up_loses_nothing_and_sends_nothing_twice,
     .timeout = 240)
{
        struct harness h;
        char saved[320];
        struct fixture *f = routed(&h, saved, sizeof(saved));
        struct fixture *busy = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &busy), 0);
        cr_assert_eq(fixture_set(busy, "greeting", "421 4.3.2 busy"), 0);
        cr_assert_eq(fixture_start(busy, 0), 0);
        char conf[1024];
        snprintf(conf, sizeof(conf),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = %s\n"
                 "status_listen = unix:%s/status.sock, 127.0.0.1:0\nshutdown_timeout = 2s\n"
                 "[transport]\nexample.test = [127.0.0.1]:%%u\n",
                 h.spool, harness_can_switch_user() ? HARNESS_DAEMON_USER : "root", h.dir);
        char text[1200];
        snprintf(text, sizeof(text), conf, fixture_port(busy));
        harness_write_config(&h, text);

        enum { N = 300, KILLS = 6 };
        submit_stopped(&h, N, 16);
        cr_assert_eq(count_files(&h, "incoming"), N);
        for (int k = 0; k < KILLS; k++) {
                harness_start(&h);
                /* somewhere in the start-up pickup of a full incoming/ (128 a dispatch) */
                harness_sleep_ms(5 + 20 * k);
                harness_kill9(&h); /* and started again at once */
        }
        snprintf(text, sizeof(text), conf, fixture_port(f));
        harness_write_config(&h, text);
        harness_start(&h);
        const char *flush[] = {"-f", NULL};
        size_t queued = 1;
        for (int i = 0; i < 3000 && queued; i++) {
                if (i % 50 == 0) {
                        char *out = NULL, *err = NULL;
                        harness_tarryq(&h, flush, &out, &err);
                        free(out);
                        free(err);
                }
                harness_sleep_ms(20);
                queued = harness_count_queued(&h, "incoming") + harness_count_queued(&h, "active");
        }
        cr_assert_eq(queued, 0, "mail left in the queue");
        cr_assert_eq(harness_count_queued(&h, "corrupt"), 0, "a pickup copy was taken for corrupt");
        harness_sleep_ms(200);
        int times[N];
        count_arrivals(saved, N, times);
        for (int i = 0; i < N; i++)
                cr_assert_eq(times[i], 1, "message %d arrived %d times", i, times[i]);
        fprintf(stderr,
                "tarryd kill test: %d messages, %d kills during pickup, each delivered once\n", N,
                KILLS);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(busy);
        fixture_free(f);
}

/* A message the sink saved ends with the body submitted below, and nothing of
 * the message file's envelope or trailer is in it. */
static void assert_ends_with_the_body(const char *path, void *unused)
{
        (void)unused;
        FILE *in = fopen(path, "r");
        cr_assert_not_null(in);
        static char buf[8192];
        size_t len = fread(buf, 1, sizeof(buf) - 1, in);
        fclose(in);
        buf[len] = '\0';
        static const char tail[] = "\r\n\r\nfirst line\r\nlast line, no more\r\n";
        cr_assert_geq(len, strlen(tail));
        cr_assert_str_eq(buf + len - strlen(tail), tail, "%s: the body ends the message", path);
        cr_assert_null(strstr(buf, MSGFILE_MAGIC), "%s", path);
        cr_assert_null(strstr(buf, "\"recipients\""), "%s", path);
}

/* What the sink receives is the submitted body, to the byte, and nothing of
 * the message file's envelope or trailer after it: for a message delivered
 * at its first attempt (the trailer still on its body) and for one deferred
 * first (its envelope file written, the trailer cut). */
Test(submit_crash, the_sink_gets_the_body_and_not_one_byte_of_the_trailer, .timeout = 90)
{
        struct harness h;
        char saved[320];
        struct fixture *f = routed(&h, saved, sizeof(saved));
        harness_start(&h);
        static const char body[] = "Subject: exact\n\nfirst line\nlast line, no more\n";
        const char *now[] = {"-f", "alice@sender.test", "now@example.test", NULL};
        cr_assert_eq(harness_sendmail(&h, body, now), 0);
        cr_assert_eq(fixture_wait_txns(f, 1, 30000), 0, "not delivered");
        /* the second is greylisted once: deferred, its envelope file written */
        cr_assert_eq(fixture_set(f, "greylist", "1"), 0);
        const char *later[] = {"-f", "alice@sender.test", "later@example.test", NULL};
        cr_assert_eq(harness_sendmail(&h, body, later), 0);
        cr_assert(harness_wait_log(&h, "status=deferred", 1, 30000));
        harness_sleep_ms(1100);
        const char *flush[] = {"-f", NULL};
        for (int i = 0; i < 60 && fixture_wait_txns(f, 2, 500) != 0; i++) {
                char *out = NULL, *err = NULL;
                harness_tarryq(&h, flush, &out, &err);
                free(out);
                free(err);
        }
        cr_assert_eq(fixture_wait_txns(f, 2, 1000), 0, "the deferred one not delivered");
        cr_assert(harness_wait_log(&h, ": removed", 2, 30000));
        cr_assert_eq(for_each_saved(saved, assert_ends_with_the_body, NULL), 2,
                     "each message once");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
