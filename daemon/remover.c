/* daemon/remover.c — delivered messages' files are deleted on a thread of their own.
 *
 * Removing a message inline (open, flock, rename to tmp/, readdir, two
 * unlinks, rmdir, and on some filesystems a synchronous discard) was about
 * 40 % of the loop's time in a drain. Now the loop only renames the message
 * out of active/ into tmp/ (queue_discard: one syscall, no fsync) and hands
 * the name over (remover_remove); this thread takes whatever has gathered as
 * one batch, fsyncs active/ and tmp/ once, and only then deletes the files
 * (queue_purge_discarded).
 *
 * A message file never rewritten (delivered at its first attempt: nearly
 * every message of a drain) is cheaper still: the loop unlinks active/ID
 * (queue_discard_file; an unlink is about half a cross-folder rename) while
 * it still holds the attempt's descriptor of the file, and hands that over;
 * this thread fsyncs active/ once for the batch and then closes the
 * descriptors, so freeing the blocks (and the discard) is its work, after
 * the unlinks are durable (queue_purge_unlinked).
 *
 * Once renamed or unlinked, a message is out of the queue: kill -9 at any
 * point leaves it in tmp/, where recovery removes it at the next start, or
 * nowhere, and it is never sent again. Failures are only counted here; the loop logs them (an
 * eventfd wakes it) and recovery removes whatever was left in tmp/.
 *
 * The same thread writes the periodic index snapshot (startup.c), so that
 * its fsync does not hold the loop either.
 */
#include "common/cleanup.h"
#include "daemon/log.h"
#include "daemon/tarryd.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* At most this many messages in one batch (one pair of folder fsyncs). */
#define PURGE_BATCH 1024

struct job {
        char name[QUEUE_DISCARD_NAME_MAX]; /* in tmp/, renamed there; "" when unlinked */
        int fd;                            /* unlinked: the file's last reference, else -1 */
        struct job *next;
};

struct remover {
        struct tarryd *d;
        struct queue *q;
        pthread_t thread;
        bool running;
        int efd;
        sd_event_source *source;
        pthread_mutex_t lock;
        pthread_cond_t wake;
        /* under lock */
        bool stop;
        struct job *todo, **todo_tail;
        char *state_buf; /* a state file to write (the newest only), or NULL */
        size_t state_len;
        char state_name[64];
        int state_error;  /* its write failed: -errno, 0: none */
        int error;        /* the first error since the loop last looked, 0: none */
        unsigned n_error; /* batches that failed since then */
};

/* From the thread: have the loop report a failure (on_error). */
static void wake_loop(struct remover *rm)
{
        uint64_t one = 1;
        while (write(rm->efd, &one, sizeof(one)) < 0 && errno == EINTR)
                ;
}

static void purge(struct remover *rm, struct job *batch)
{
        const char *names[PURGE_BATCH];
        int fds[PURGE_BATCH];
        while (batch) {
                size_t n = 0, n_fds = 0;
                struct job *next = batch;
                for (; next && n + n_fds < PURGE_BATCH; next = next->next)
                        if (next->fd >= 0)
                                fds[n_fds++] = next->fd;
                        else
                                names[n++] = next->name;
                int r = n_fds ? queue_purge_unlinked(rm->q, QUEUE_ACTIVE, fds, n_fds) : 0;
                int r2 = n ? queue_purge_discarded(rm->q, QUEUE_ACTIVE, names, n) : 0;
                if (r == 0)
                        r = r2;
                while (batch != next) {
                        struct job *j = batch;
                        batch = j->next;
                        free(j);
                }
                if (r < 0) {
                        pthread_mutex_lock(&rm->lock);
                        if (rm->error == 0)
                                rm->error = r;
                        rm->n_error++;
                        pthread_mutex_unlock(&rm->lock);
                        wake_loop(rm);
                }
        }
}

static void *run(void *userdata)
{
        struct remover *rm = userdata;
        pthread_mutex_lock(&rm->lock);
        for (;;) {
                while (!rm->todo && !rm->state_buf && !rm->stop)
                        pthread_cond_wait(&rm->wake, &rm->lock);
                if (rm->state_buf) {
                        char *buf = rm->state_buf, name[sizeof(rm->state_name)];
                        size_t len = rm->state_len;
                        memcpy(name, rm->state_name, sizeof(name));
                        rm->state_buf = NULL;
                        pthread_mutex_unlock(&rm->lock);
                        int r = queue_state_write(rm->q, name, buf, len);
                        free(buf);
                        pthread_mutex_lock(&rm->lock);
                        if (r < 0) {
                                rm->state_error = r;
                                wake_loop(rm);
                        }
                        continue;
                }
                if (!rm->todo || rm->stop)
                        break; /* stopping: what is left in tmp/ is recovery's */
                struct job *batch = rm->todo;
                rm->todo = NULL;
                rm->todo_tail = &rm->todo;
                pthread_mutex_unlock(&rm->lock);
                purge(rm, batch);
                pthread_mutex_lock(&rm->lock);
        }
        pthread_mutex_unlock(&rm->lock);
        return NULL;
}

/* On the loop: say what failed (once per run of failures). */
static void report(struct remover *rm)
{
        pthread_mutex_lock(&rm->lock);
        int err = rm->error;
        unsigned n = rm->n_error;
        int state_error = rm->state_error;
        rm->error = 0;
        rm->n_error = 0;
        rm->state_error = 0;
        pthread_mutex_unlock(&rm->lock);
        if (state_error) {
                deliver_count_spool_error(rm->d, "state");
                log_error("cannot write state/%s: %s; the next one is due in %llds", rm->state_name,
                          strerror(-state_error), (long long)rm->d->cfg->snapshot_every_s);
        }
        if (n == 0)
                return;
        for (unsigned i = 0; i < n; i++)
                deliver_count_spool_error(rm->d, "remove");
        log_error("cannot delete the files of %u batch(es) of removed messages: %s; they stay "
                  "in tmp/ until recovery removes them",
                  n, strerror(-err));
}

static int on_error(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        (void)s;
        (void)revents;
        uint64_t n;
        while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
                ;
        report(userdata);
        return 0;
}

int remover_new(struct tarryd *d, struct remover **out)
{
        struct remover *rm = calloc(1, sizeof(*rm));
        if (!rm)
                return -ENOMEM;
        rm->d = d;
        rm->q = d->queue;
        rm->todo_tail = &rm->todo;
        pthread_mutex_init(&rm->lock, NULL);
        pthread_cond_init(&rm->wake, NULL);
        rm->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        int r = rm->efd < 0 ? -errno : 0;
        if (r == 0)
                r = sd_event_add_io(d->loop, &rm->source, rm->efd, EPOLLIN, on_error, rm);
        if (r >= 0) {
                r = -pthread_create(&rm->thread, NULL, run, rm);
                rm->running = r == 0;
        }
        if (r < 0) {
                remover_free(rm);
                return r;
        }
        *out = rm;
        return 0;
}

int remover_remove(struct remover *rm, const char *id, int *fd)
{
        struct job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->fd = -1;
        /* a message file whose descriptor the loop holds: one unlink, and the
         * blocks are freed here when the thread closes it; else a rename */
        int r = fd && *fd >= 0 ? queue_discard_file(rm->q, QUEUE_ACTIVE, id, *fd) : -EISDIR;
        if (r == 0)
                j->fd = TAKE_FD(*fd);
        else if (r == -EISDIR)
                r = queue_discard(rm->q, QUEUE_ACTIVE, id, j->name);
        if (r < 0) {
                free(j);
                return r;
        }
        pthread_mutex_lock(&rm->lock);
        *rm->todo_tail = j;
        rm->todo_tail = &j->next;
        pthread_cond_signal(&rm->wake);
        pthread_mutex_unlock(&rm->lock);
        return 0;
}

int remover_write_state(struct remover *rm, const char *name, char *buf, size_t len)
{
        if (strlen(name) >= sizeof(rm->state_name)) {
                free(buf);
                return -EINVAL;
        }
        pthread_mutex_lock(&rm->lock);
        free(rm->state_buf); /* not written yet: the newer one replaces it */
        rm->state_buf = buf;
        rm->state_len = len;
        snprintf(rm->state_name, sizeof(rm->state_name), "%s", name);
        pthread_cond_signal(&rm->wake);
        pthread_mutex_unlock(&rm->lock);
        return 0;
}

void remover_free(struct remover *rm)
{
        if (!rm)
                return;
        if (rm->running) {
                /* the batch under way is finished; a backlog (a slow disk) is
                 * left in tmp/ for recovery at the next start: a stop waits for
                 * one batch at most */
                pthread_mutex_lock(&rm->lock);
                rm->stop = true;
                pthread_cond_signal(&rm->wake);
                pthread_mutex_unlock(&rm->lock);
                pthread_join(rm->thread, NULL);
                report(rm);
        }
        /* the backlog's unlinked files: one fsync of active/, then their last close */
        int fds[PURGE_BATCH];
        size_t n_fds = 0;
        while (rm->todo) {
                struct job *j = rm->todo;
                rm->todo = j->next;
                if (j->fd >= 0)
                        fds[n_fds++] = j->fd;
                if (n_fds == PURGE_BATCH || (!rm->todo && n_fds > 0)) {
                        queue_purge_unlinked(rm->q, QUEUE_ACTIVE, fds, n_fds);
                        n_fds = 0;
                }
                free(j);
        }
        sd_event_source_disable_unref(rm->source);
        if (rm->efd >= 0)
                close(rm->efd);
        free(rm->state_buf);
        pthread_mutex_destroy(&rm->lock);
        pthread_cond_destroy(&rm->wake);
        free(rm);
}
