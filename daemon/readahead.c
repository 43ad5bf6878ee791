/* daemon/readahead.c — envelopes of a listing read ahead on a thread; see readahead.h. */
#include "daemon/readahead.h"
#include "common/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum slot_state {
        SLOT_QUEUED,  /* handed over, not started */
        SLOT_READING, /* the thread reads it */
        SLOT_DONE,    /* read (env, or NULL: the loop loads it) */
};

struct slot {
        char id[QUEUE_ID_LEN + 1];
        enum queue_dir dir;
        enum slot_state state;
        struct envelope *env;
};

/* A ring: slots [head, tail) are handed over, the thread's next is at
 * next (head <= next <= tail); indexes count up, taken modulo the size.
 * While the loop waits for the slot at head, it reads queued slots from the
 * tail end itself; the thread passes over slots no longer queued. */
struct readahead {
        struct queue *q;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t work, done;
        /* under lock */
        struct slot slots[READAHEAD_SLOTS];
        size_t head, next, tail;
        bool stop;
        /* the thread's own, and the loop's (when it reads one itself) */
        char *buf, *loop_buf;
        size_t cap, loop_cap;
};

/* Read the whole of fd into buf (grown as needed, NUL-terminated): one read
 * for an envelope that fits, no fstat. */
static int read_fd(int fd, char **buf, size_t *cap, size_t *len)
{
        size_t used = 0;
        for (;;) {
                if (used + 1 >= *cap) {
                        if (*cap > ENVELOPE_MAX_BYTES)
                                return -EFBIG;
                        size_t c = *cap ? *cap * 2 : 16384;
                        char *b = realloc(*buf, c);
                        if (!b)
                                return -ENOMEM;
                        *buf = b;
                        *cap = c;
                }
                ssize_t n = read(fd, *buf + used, *cap - used - 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                used += (size_t)n;
                if (used > ENVELOPE_MAX_BYTES) /* queue_load's limit, not the buffer's */
                        return -EFBIG;
        }
        (*buf)[used] = '\0';
        *len = used;
        return 0;
}

int readahead_load(struct queue *q, enum queue_dir d, const char *id, char **buf, size_t *cap,
                   struct envelope **out)
{
        if (!queue_id_valid(id))
                return -EINVAL;
        int dfd = queue_dir_fd(q, d);
        if (dfd < 0)
                return dfd;
        /* a message file (not a folder) or a symlink fails here: the loop's */
        _cleanup_close_ int mfd = openat(dfd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (mfd < 0)
                return -errno;
        _cleanup_close_ int fd =
            openat(mfd, "envelope", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        size_t len = 0;
        int r = read_fd(fd, buf, cap, &len);
        if (r < 0)
                return r;
        struct envelope *env = NULL;
        const char *why = NULL;
        if ((r = envelope_from_json(*buf, len, &env, &why)) < 0)
                return r;
        struct stat st;
        if (strcmp(env->id, id) != 0 || fstatat(mfd, "body", &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode) || (uint64_t)st.st_size != env->size) {
                /* damaged, or a body with its trailer still on: queue_load's case */
                envelope_free(env);
                return -EAGAIN;
        }
        *out = env;
        return 0;
}

/* Read s (queued) with the lock held on entry and on return. */
static void read_slot(struct readahead *ra, struct slot *s, char **buf, size_t *cap)
{
        s->state = SLOT_READING;
        char id[QUEUE_ID_LEN + 1];
        memcpy(id, s->id, sizeof(id));
        enum queue_dir dir = s->dir;
        pthread_mutex_unlock(&ra->lock);

        struct envelope *env = NULL;
        if (readahead_load(ra->q, dir, id, buf, cap, &env) < 0)
                env = NULL;

        pthread_mutex_lock(&ra->lock);
        s->env = env;
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&ra->done);
}

static void *run(void *userdata)
{
        struct readahead *ra = userdata;
        pthread_mutex_lock(&ra->lock);
        for (;;) {
                while (!ra->stop && ra->next == ra->tail)
                        pthread_cond_wait(&ra->work, &ra->lock);
                if (ra->stop)
                        break;
                struct slot *s = &ra->slots[ra->next++ % READAHEAD_SLOTS];
                if (s->state != SLOT_QUEUED)
                        continue; /* the loop took it (from the far end) */
                read_slot(ra, s, &ra->buf, &ra->cap);
        }
        pthread_mutex_unlock(&ra->lock);
        return NULL;
}

int readahead_new(struct queue *q, struct readahead **out)
{
        struct readahead *ra = calloc(1, sizeof(*ra));
        if (!ra)
                return -ENOMEM;
        ra->q = q;
        pthread_mutex_init(&ra->lock, NULL);
        pthread_cond_init(&ra->work, NULL);
        pthread_cond_init(&ra->done, NULL);
        int r = pthread_create(&ra->thread, NULL, run, ra);
        if (r != 0) {
                pthread_cond_destroy(&ra->done);
                pthread_cond_destroy(&ra->work);
                pthread_mutex_destroy(&ra->lock);
                free(ra);
                return -r;
        }
        *out = ra;
        return 0;
}

void readahead_free(struct readahead *ra)
{
        if (!ra)
                return;
        pthread_mutex_lock(&ra->lock);
        ra->stop = true;
        pthread_cond_signal(&ra->work);
        pthread_mutex_unlock(&ra->lock);
        pthread_join(ra->thread, NULL);
        for (size_t i = ra->head; i < ra->tail; i++)
                envelope_free(ra->slots[i % READAHEAD_SLOTS].env);
        pthread_cond_destroy(&ra->done);
        pthread_cond_destroy(&ra->work);
        pthread_mutex_destroy(&ra->lock);
        free(ra->buf);
        free(ra->loop_buf);
        free(ra);
}

bool readahead_has_room(const struct readahead *ra)
{
        /* head and tail move on the loop alone: no lock needed to read them */
        return ra->tail - ra->head < READAHEAD_SLOTS;
}

int readahead_add(struct readahead *ra, const char *id, enum queue_dir d)
{
        if (!readahead_has_room(ra))
                return -ENOSPC;
        pthread_mutex_lock(&ra->lock);
        struct slot *s = &ra->slots[ra->tail % READAHEAD_SLOTS];
        *s = (struct slot){.dir = d, .state = SLOT_QUEUED};
        memcpy(s->id, id, QUEUE_ID_LEN);
        s->id[QUEUE_ID_LEN] = '\0';
        ra->tail++;
        pthread_cond_signal(&ra->work);
        pthread_mutex_unlock(&ra->lock);
        return 0;
}

/* The slot queued last that the thread has not started, or NULL (lock held). */
static struct slot *last_queued(struct readahead *ra)
{
        for (size_t i = ra->tail; i > ra->next; i--) {
                struct slot *s = &ra->slots[(i - 1) % READAHEAD_SLOTS];
                if (s->state == SLOT_QUEUED)
                        return s;
        }
        return NULL;
}

int readahead_take(struct readahead *ra, char id[QUEUE_ID_LEN + 1], enum queue_dir *d,
                   struct envelope **env)
{
        pthread_mutex_lock(&ra->lock);
        if (ra->head == ra->tail) {
                pthread_mutex_unlock(&ra->lock);
                return 0;
        }
        struct slot *s = &ra->slots[ra->head % READAHEAD_SLOTS];
        if (s->state == SLOT_QUEUED) {
                ra->next++; /* the thread is behind: the loop reads this one */
        } else {
                /* while the thread reads this one, the loop reads the last one
                 * not started (the thread comes to it last), then looks again */
                while (s->state != SLOT_DONE) {
                        struct slot *last = last_queued(ra);
                        if (last)
                                read_slot(ra, last, &ra->loop_buf, &ra->loop_cap);
                        else
                                pthread_cond_wait(&ra->done, &ra->lock);
                }
        }
        memcpy(id, s->id, QUEUE_ID_LEN + 1);
        *d = s->dir;
        *env = s->env;
        s->env = NULL;
        ra->head++;
        pthread_mutex_unlock(&ra->lock);
        return 1;
}
