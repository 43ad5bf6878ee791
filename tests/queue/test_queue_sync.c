/* tests/queue/test_queue_sync.c — batched folder syncs: a folder whose fsync
 * failed stays due and is synced by the next queue_sync.
 *
 * Linked with -Wl,--wrap=fsync, so every fsync in the queue goes through
 * __wrap_fsync below, which counts the calls on folders and can fail them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue/queue.h"

int __real_fsync(int fd);
int __wrap_fsync(int fd);

static int folder_fsyncs;     /* fsync calls on directories */
static int fail_folder_fsync; /* fail this many of them with EIO */

int __wrap_fsync(int fd)
{
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
                folder_fsyncs++;
                if (fail_folder_fsync > 0) {
                        fail_folder_fsync--;
                        errno = EIO;
                        return -1;
                }
        }
        return __real_fsync(fd);
}

static char spool[256];
static struct queue *q;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

static void setup(void)
{
        snprintf(spool, sizeof(spool), "/tmp/tarry-queue-sync-XXXXXX");
        cr_assert_not_null(mkdtemp(spool));
        cr_assert_eq(queue_open(spool, QUEUE_OPEN_CREATE, &q), 0);
}

static void teardown(void)
{
        queue_close(q);
        nftw(spool, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
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
