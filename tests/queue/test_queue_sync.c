/* tests/queue/test_queue_sync.c — batched folder syncs: a folder whose fsync
 * failed stays due and is synced by the next queue_sync.
 *
 * Linked with -Wl,--wrap=fsync, so every fsync in the queue goes through
 * __wrap_fsync below, which counts the calls (on folders too) and can fail them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue/queue.h"
#include "spool_fixture.h"

int __real_fsync(int fd);
int __wrap_fsync(int fd);

static int all_fsyncs;                /* fsync calls on anything */
static int folder_fsyncs;             /* fsync calls on directories */
static int fail_folder_fsync;         /* fail this many of them with EIO */
static void (*on_folder_fsync)(void); /* called at each folder fsync, if set */

int __wrap_fsync(int fd)
{
        struct stat st;
        all_fsyncs++;
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
                folder_fsyncs++;
                if (on_folder_fsync)
                        on_folder_fsync();
                if (fail_folder_fsync > 0) {
                        fail_folder_fsync--;
                        errno = EIO;
                        return -1;
                }
        }
        return __real_fsync(fd);
}

static void setup(void)
{
        spool_fixture_open("queue-sync");
}

static void teardown(void)
{
        spool_fixture_close();
}

TestSuite(queue_sync, .init = setup, .fini = teardown);

static char *enqueue_one(void)
{
        static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
        struct envelope *env = envelope_new();
        cr_assert_not_null(env);
        cr_assert_not_null(envelope_add_rcpt(env, "alice@example.org"));
        cr_assert_eq(queue_enqueue(q, QUEUE_INCOMING, env, body, strlen(body)), 0);
        char *id = strdup(env->id);
        envelope_free(env);
        return id;
}

Test(queue_sync, a_move_leaves_both_folders_to_queue_sync)
{
        char *id = enqueue_one();
        queue_set_batched_dirsync(q, true);
        folder_fsyncs = 0;
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        cr_assert_eq(folder_fsyncs, 0, "a batched move synced at once");
        cr_assert_eq(queue_sync(q), 0);
        cr_assert_eq(folder_fsyncs, 2, "incoming/ and active/");
        cr_assert_eq(queue_sync(q), 0);
        cr_assert_eq(folder_fsyncs, 2, "nothing left to sync");
        free(id);
}

Test(queue_sync, a_failed_folder_sync_is_tried_again)
{
        char *id = enqueue_one();
        queue_set_batched_dirsync(q, true);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        folder_fsyncs = 0;
        fail_folder_fsync = 2;
        cr_assert_eq(queue_sync(q), -EIO);
        cr_assert_eq(folder_fsyncs, 2);
        /* both folders are still due: the next call syncs them */
        cr_assert_eq(queue_sync(q), 0);
        cr_assert_eq(folder_fsyncs, 4);
        cr_assert_eq(queue_sync(q), 0);
        cr_assert_eq(folder_fsyncs, 4);
        free(id);
}

Test(queue_sync, a_submission_is_durable_after_two_fsyncs)
{
        /* issue 19: one message file (body, envelope, trailer): its fsync and
         * incoming/'s; the folder of two files took four */
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(q, &d), 0);
        cr_assert_eq(queue_draft_write(d, "Subject: x\r\n\r\nbody\r\n", 20), 0);
        struct envelope *env = envelope_new();
        cr_assert_not_null(envelope_add_rcpt(env, "alice@example.org"));
        all_fsyncs = folder_fsyncs = 0;
        cr_assert_eq(queue_draft_commit(d, env), 0);
        cr_assert_eq(all_fsyncs, 2, "the message file and incoming/");
        cr_assert_eq(folder_fsyncs, 1);
        struct envelope *back = NULL;
        cr_assert_eq(queue_load(q, QUEUE_INCOMING, env->id, &back, NULL), 0);
        envelope_free(back);
        envelope_free(env);
}

Test(queue_sync, pickups_fsync_nothing_until_queue_sync)
{
        char *id[3] = {enqueue_one(), enqueue_one(), enqueue_one()};
        queue_set_batched_dirsync(q, true);
        all_fsyncs = 0;
        for (int i = 0; i < 3; i++)
                cr_assert_eq(queue_move(q, id[i], QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        cr_assert_eq(all_fsyncs, 0, "nothing synced per message on the loop");
        cr_assert_eq(queue_sync(q), 0);
        cr_assert_eq(all_fsyncs, 2, "incoming/ and active/, once for the three");
        for (int i = 0; i < 3; i++)
                free(id[i]);
}

/* A delivered message file leaves active/ with one unlink while tarryd
 * holds its descriptor; its blocks are freed only when that is closed, and
 * queue_purge_unlinked closes it only after active/ is fsynced: a machine
 * crash can bring the whole message back, never leave a name whose file
 * was freed (and maybe reused). */
static int held_fd = -1;
static bool held_open_at_folder_fsync;

static void note_held(void)
{
        held_open_at_folder_fsync = fcntl(held_fd, F_GETFD) >= 0;
}

Test(queue_sync, an_unlinked_message_file_is_freed_only_after_its_folder_is_synced)
{
        char *id = enqueue_one();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        struct envelope *env = NULL;
        uint64_t size = 0;
        cr_assert_eq(queue_load_body(q, QUEUE_ACTIVE, id, &env, &held_fd, &size, NULL), 0);
        envelope_free(env);
        cr_assert_eq(queue_discard_file(q, QUEUE_ACTIVE, id, held_fd), 0);
        cr_assert_eq(count_entries("active"), 0, "out of the queue at once");
        cr_assert_eq(count_entries("tmp"), 0, "nothing renamed into tmp/");
        struct stat st;
        cr_assert_eq(fstat(held_fd, &st), 0);
        cr_assert_eq(st.st_nlink, 0);
        char buf[64] = "";
        cr_assert_eq(pread(held_fd, buf, size, 0), (ssize_t)size, "the file is whole while held");

        on_folder_fsync = note_held;
        folder_fsyncs = 0;
        int fds[] = {held_fd};
        cr_assert_eq(queue_purge_unlinked(q, QUEUE_ACTIVE, fds, 1), 0);
        cr_assert_eq(folder_fsyncs, 1, "active/ once for the batch");
        cr_assert(held_open_at_folder_fsync, "the file was freed before the unlink was durable");
        cr_assert_eq(fcntl(held_fd, F_GETFD), -1, "the purge closes the file");
        free(id);
}

Test(queue_sync, a_folder_is_not_unlinked_as_a_message_file)
{
        char *id = enqueue_one();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        char path[512];
        snprintf(path, sizeof(path), "%s/active/%s", spool, id);
        int fd = open(path, O_RDONLY);
        cr_assert_geq(fd, 0);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        env->rcpt[0].attempts = 1;
        cr_assert_eq(queue_update(q, QUEUE_ACTIVE, env), 0); /* a folder now */
        envelope_free(env);
        cr_assert_eq(queue_discard_file(q, QUEUE_ACTIVE, id, fd), -EISDIR);
        cr_assert_eq(count_entries("active"), 1, "left for queue_discard");
        close(fd);
        free(id);
}
