/* tests/queue/test_queue_commit.c — a submission's commit: an unnamed draft
 * linked in under its ID, the fallback through tmp/ where O_TMPFILE is
 * refused, crashes before the commit, and an ID already taken.
 *
 * Linked with --wrap=openat64 (refuse O_TMPFILE with EOPNOTSUPP, as a
 * filesystem without it does), --wrap=linkat (refuse AT_EMPTY_PATH with
 * ENOENT, as kernels before 6.10 do without CAP_DAC_READ_SEARCH) and
 * --wrap=now_realtime_us (pin the clock a queue ID is made from).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileio.h"
#include "queue/queue.h"
#include "spool_fixture.h"

/* ---- the wrapped calls ---- */

static bool refuse_tmpfile;    /* openat(O_TMPFILE) fails with EOPNOTSUPP */
static int tmpfile_opens;      /* openat(O_TMPFILE) calls seen */
static bool refuse_empty_path; /* linkat(AT_EMPTY_PATH) fails with ENOENT */
static int proc_links;         /* linkat through /proc/self/fd seen */
static int64_t pinned_us;      /* now_realtime_us returns this ... */
static int pinned_left;        /* ... this many more times */

int __real_openat64(int dirfd, const char *path, int flags, ...);
int __wrap_openat64(int dirfd, const char *path, int flags, ...)
{
        mode_t mode = 0;
        if (flags & (O_CREAT | __O_TMPFILE)) {
                va_list ap;
                va_start(ap, flags);
                mode = (mode_t)va_arg(ap, int);
                va_end(ap);
        }
        if ((flags & O_TMPFILE) == O_TMPFILE) {
                tmpfile_opens++;
                if (refuse_tmpfile) {
                        errno = EOPNOTSUPP;
                        return -1;
                }
        }
        return __real_openat64(dirfd, path, flags, mode);
}

int __real_linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags);
int __wrap_linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
        if ((flags & AT_EMPTY_PATH) && refuse_empty_path) {
                errno = ENOENT;
                return -1;
        }
        proc_links += strncmp(oldpath, "/proc/self/fd/", 14) == 0;
        return __real_linkat(olddirfd, oldpath, newdirfd, newpath, flags);
}

int64_t __real_now_realtime_us(void);
int64_t __wrap_now_realtime_us(void)
{
        if (pinned_left > 0) {
                pinned_left--;
                return pinned_us;
        }
        return __real_now_realtime_us();
}

/* ---- fixture ---- */

static void setup(void)
{
        refuse_tmpfile = refuse_empty_path = false;
        tmpfile_opens = proc_links = pinned_left = 0;
        spool_fixture_open("commit-test");
}

static void teardown(void)
{
        spool_fixture_close();
}

TestSuite(commit, .init = setup, .fini = teardown);

/* A handle as sendmail opens it. */
static struct queue *open_submit(void)
{
        struct queue *s = NULL;
        cr_assert_eq(queue_open(spool, QUEUE_OPEN_SUBMIT, &s), 0);
        return s;
}

static struct envelope *sample_envelope(void)
{
        struct envelope *env = envelope_new();
        cr_assert_not_null(env);
        free(env->sender);
        env->sender = strdup("app@example.com");
        env->uid = 1000;
        env->user = strdup("app");
        cr_assert_not_null(envelope_add_rcpt(env, "alice@example.org"));
        return env;
}

static const char body[] = "Subject: hi\r\n\r\nhello\r\n";

/* The whole file incoming/id, malloc'd; *len its size. */
static char *read_incoming(const char *id, size_t *len)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/incoming/%s", spool, id);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "%s", path);
        char *buf = malloc(1 << 20);
        cr_assert_not_null(buf);
        *len = fread(buf, 1, 1 << 20, f);
        fclose(f);
        return buf;
}

/* Submit body through s; returns the committed envelope. */
static struct envelope *submit(struct queue *s, const void *text, size_t len)
{
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(s, &d), 0);
        cr_assert_eq(queue_draft_write(d, text, len), 0);
        struct envelope *env = sample_envelope();
        cr_assert_eq(queue_draft_commit(d, env), 0);
        return env;
}

/* The body bytes queued under id, checked through the queue's own reader. */
static void assert_queued_body(const char *id, const void *text, size_t len)
{
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_INCOMING, id, &env, NULL), 0);
        cr_assert_str_eq(env->rcpt[0].address, "alice@example.org");
        envelope_free(env);
        int fd;
        uint64_t size;
        cr_assert_eq(queue_open_body(q, QUEUE_INCOMING, id, &fd, &size), 0);
        cr_assert_eq(size, len);
        char *got = malloc(len + 1);
        cr_assert_eq(pread(fd, got, len + 1, 0) >= (ssize_t)len, true);
        cr_assert_eq(memcmp(got, text, len), 0, "the queued body differs");
        free(got);
        close(fd);
}

/* A submitting process that writes a draft, flushes it to the file with a
 * large write, and dies before the commit. */
static void die_while_drafting(void)
{
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                struct queue *s = open_submit();
                struct queue_draft *d;
                if (queue_draft_begin(s, &d) < 0 || queue_draft_write(d, body, strlen(body)) < 0)
                        _exit(1);
                static char big[100000];
                memset(big, 'x', sizeof(big));
                if (queue_draft_write(d, big, sizeof(big)) < 0)
                        _exit(1);
                _exit(0);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the drafting child failed");
}

/* ---- the unnamed draft ---- */

Test(commit, a_submission_leaves_no_name_before_its_commit_and_one_after)
{
        struct queue *s = open_submit();
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(s, &d), 0);
        cr_assert_eq(queue_draft_write(d, body, strlen(body)), 0);
        cr_assert_eq(count_entries("tmp"), 0);
        cr_assert_eq(count_entries("incoming"), 0);
        struct envelope *env = sample_envelope();
        cr_assert_eq(queue_draft_commit(d, env), 0);
        cr_assert_eq(tmpfile_opens, 1);
        cr_assert_eq(count_entries("tmp"), 0);
        cr_assert_eq(count_entries("incoming"), 1);
        assert_queued_body(env->id, body, strlen(body));
        envelope_free(env);
        queue_close(s);
}

Test(commit, a_crash_before_the_commit_leaves_nothing_visible)
{
        die_while_drafting();
        cr_assert_eq(count_entries("incoming"), 0);
        cr_assert_eq(count_entries("tmp"), 0, "the dead writer's draft has a name in tmp/");
        cr_assert_eq(queue_recover_tmp(q), 0, "recovery found something to remove");
}

Test(commit, abort_leaves_nothing_and_a_later_submission_still_commits)
{
        struct queue *s = open_submit();
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(s, &d), 0);
        cr_assert_eq(queue_draft_write(d, body, strlen(body)), 0);
        queue_draft_abort(d);
        cr_assert_eq(count_entries("incoming"), 0);
        cr_assert_eq(count_entries("tmp"), 0);
        struct envelope *env = submit(s, body, strlen(body));
        assert_queued_body(env->id, body, strlen(body));
        envelope_free(env);
        queue_close(s);
}

Test(commit, where_a_descriptor_cannot_be_linked_the_link_goes_through_proc)
{
        refuse_empty_path = true;
        struct queue *s = open_submit();
        struct envelope *a = submit(s, body, strlen(body));
        struct envelope *b = submit(s, body, strlen(body));
        cr_assert_eq(proc_links, 2);
        cr_assert_eq(count_entries("tmp"), 0);
        cr_assert_eq(count_entries("incoming"), 2);
        assert_queued_body(a->id, body, strlen(body));
        assert_queued_body(b->id, body, strlen(body));
        envelope_free(a);
        envelope_free(b);
        queue_close(s);
}

/* Pins the clock at a microsecond 5 s ago (pinned_left still 0) and fills
 * folder with all 4096 IDs of it, each a file holding text; prefix gets the
 * IDs' common start (the time part). */
static void take_every_id_of_a_microsecond(const char *folder, const char *text,
                                           char prefix[QUEUE_ID_LEN + 1])
{
        pinned_us = __real_now_realtime_us() - 5000000;
        snprintf(prefix, QUEUE_ID_LEN + 1, "%08X%05X", (unsigned)(pinned_us / 1000000),
                 (unsigned)(pinned_us % 1000000));
        for (unsigned r = 0; r < 0x1000; r++) {
                char path[512];
                snprintf(path, sizeof(path), "%s/%s/%s%03X", spool, folder, prefix, r);
                FILE *f = fopen(path, "w");
                cr_assert_not_null(f);
                fputs(text, f);
                cr_assert_eq(fclose(f), 0);
        }
}

/* An ID is the time to the microsecond and 12 random bits: with the clock
 * pinned for one draw and all 4096 IDs of that microsecond taken, the first
 * ID collides whatever the random bits, and the commit must pick another. */
Test(commit, a_taken_id_gets_the_message_another_id)
{
        char prefix[QUEUE_ID_LEN + 1];
        take_every_id_of_a_microsecond("incoming", "someone else's message", prefix);
        struct queue *s = open_submit();
        pinned_left = 1;
        struct envelope *env = submit(s, body, strlen(body));
        cr_assert_eq(pinned_left, 0, "the commit did not draw an ID from the clock");
        cr_assert_neq(strncmp(env->id, prefix, strlen(prefix)), 0, "kept a taken ID");
        cr_assert_eq(count_entries("incoming"), 0x1000 + 1);
        assert_queued_body(env->id, body, strlen(body));
        size_t len;
        char path_id[QUEUE_ID_LEN + 1];
        snprintf(path_id, sizeof(path_id), "%s%03X", prefix, 0x7ff);
        char *other = read_incoming(path_id, &len);
        cr_assert_eq(len, strlen("someone else's message"));
        cr_assert_eq(memcmp(other, "someone else's message", len), 0, "another message changed");
        free(other);
        envelope_free(env);
        queue_close(s);
}

/* The same when the IDs are taken by messages already picked up (a clock
 * stepped back): the link into incoming/ would succeed, and pickup's move
 * to active/ would refuse the name for ever, so the message would never
 * leave incoming/. The commit must pick an ID free in every folder. */
Test(commit, an_id_taken_in_active_gets_the_message_another_id)
{
        char prefix[QUEUE_ID_LEN + 1];
        take_every_id_of_a_microsecond("active", "a queued message", prefix);
        struct queue *s = open_submit();
        pinned_left = 1;
        struct envelope *env = submit(s, body, strlen(body));
        cr_assert_eq(pinned_left, 0, "the commit did not draw an ID from the clock");
        cr_assert_neq(strncmp(env->id, prefix, strlen(prefix)), 0,
                      "took an ID a queued message has: pickup could never move it");
        cr_assert_eq(count_entries("incoming"), 1);
        assert_queued_body(env->id, body, strlen(body));
        envelope_free(env);
        queue_close(s);
}

/* ---- where O_TMPFILE is refused: the draft is tmp/NAME ---- */

Test(commit, without_o_tmpfile_the_fallback_commits_the_same_bytes)
{
        static char text[200000]; /* more than one draft buffer */
        for (size_t i = 0; i < sizeof(text); i++)
                text[i] = i % 78 == 77 ? '\n' : (char)('a' + i % 26);
        struct queue *s = open_submit();
        struct envelope *a = submit(s, text, sizeof(text));
        queue_close(s);
        refuse_tmpfile = true;
        s = open_submit();
        struct envelope *b = submit(s, text, sizeof(text));
        cr_assert_eq(tmpfile_opens, 2, "the fallback was not a refused O_TMPFILE");
        cr_assert_eq(count_entries("tmp"), 0);
        cr_assert_eq(count_entries("incoming"), 2);
        assert_queued_body(a->id, text, sizeof(text));
        assert_queued_body(b->id, text, sizeof(text));
        size_t la, lb;
        char *fa = read_incoming(a->id, &la), *fb = read_incoming(b->id, &lb);
        cr_assert_eq(la, lb, "the two message files differ in size");
        cr_assert_eq(memcmp(fa, fb, sizeof(text)), 0);
        /* a second draft on the same handle does not try O_TMPFILE again */
        envelope_free(submit(s, body, strlen(body)));
        cr_assert_eq(tmpfile_opens, 2);
        free(fa);
        free(fb);
        envelope_free(a);
        envelope_free(b);
        queue_close(s);
}

Test(commit, without_o_tmpfile_a_crash_leaves_a_draft_that_recovery_removes)
{
        refuse_tmpfile = true;
        die_while_drafting();
        cr_assert_eq(count_entries("incoming"), 0);
        cr_assert_eq(count_entries("tmp"), 1);
        cr_assert_eq(queue_recover_tmp(q), 1);
        cr_assert_eq(count_entries("tmp"), 0);
        cr_assert_eq(count_entries("incoming"), 0);
}

Test(commit, without_o_tmpfile_recovery_keeps_a_draft_whose_writer_is_alive)
{
        refuse_tmpfile = true;
        struct queue *s = open_submit();
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(s, &d), 0);
        cr_assert_eq(queue_draft_write(d, body, strlen(body)), 0);
        cr_assert_eq(queue_recover_tmp(q), 0);
        cr_assert_eq(count_entries("tmp"), 1);
        struct envelope *env = sample_envelope();
        cr_assert_eq(queue_draft_commit(d, env), 0);
        cr_assert_eq(count_entries("incoming"), 1);
        cr_assert_eq(count_entries("tmp"), 0);
        envelope_free(env);
        queue_close(s);
}
