/* daemon/msgindex.c — chained hash of queued messages; see msgindex.h. */
#include "daemon/msgindex.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct msgindex {
        struct msg **buckets;
        size_t n_buckets;
        size_t count;
};

static size_t hash_id(const char *id, size_t n_buckets)
{
        uint64_t h = 1469598103934665603ull; /* FNV-1a */
        for (; *id; id++)
                h = (h ^ (unsigned char)*id) * 1099511628211ull;
        return (size_t)(h % n_buckets);
}

int msgindex_new(struct msgindex **out)
{
        struct msgindex *ix = calloc(1, sizeof(*ix));
        if (!ix)
                return -ENOMEM;
        ix->n_buckets = 1024;
        ix->buckets = calloc(ix->n_buckets, sizeof(*ix->buckets));
        if (!ix->buckets) {
                free(ix);
                return -ENOMEM;
        }
        *out = ix;
        return 0;
}

static void free_msg(struct msg *m)
{
        while (m->works) {
                struct work *w = m->works;
                m->works = w->next;
                free(w->route);
                free(w);
        }
        envelope_free(m->env);
        free(m);
}

void msgindex_free(struct msgindex *ix)
{
        if (!ix)
                return;
        for (size_t i = 0; i < ix->n_buckets; i++)
                for (struct msg *m = ix->buckets[i], *n; m; m = n) {
                        n = m->hnext;
                        free_msg(m);
                }
        free(ix->buckets);
        free(ix);
}

/* Keep chains short as the queue grows; never shrinks. */
static void grow(struct msgindex *ix)
{
        size_t n = ix->n_buckets * 2;
        struct msg **b = calloc(n, sizeof(*b));
        if (!b)
                return; /* longer chains, still correct */
        for (size_t i = 0; i < ix->n_buckets; i++)
                for (struct msg *m = ix->buckets[i], *next; m; m = next) {
                        next = m->hnext;
                        size_t h = hash_id(m->id, n);
                        m->hnext = b[h];
                        b[h] = m;
                }
        free(ix->buckets);
        ix->buckets = b;
        ix->n_buckets = n;
}

int msgindex_add(struct msgindex *ix, const char *id, struct msg **out)
{
        if (strlen(id) != QUEUE_ID_LEN)
                return -EINVAL;
        if (msgindex_get(ix, id))
                return -EEXIST;
        if (ix->count >= ix->n_buckets)
                grow(ix);
        struct msg *m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        memcpy(m->id, id, QUEUE_ID_LEN + 1);
        m->reply_class = -1;
        m->dir = QUEUE_ACTIVE;
        size_t h = hash_id(id, ix->n_buckets);
        m->hnext = ix->buckets[h];
        ix->buckets[h] = m;
        ix->count++;
        *out = m;
        return 0;
}

struct msg *msgindex_get(const struct msgindex *ix, const char *id)
{
        for (struct msg *m = ix->buckets[hash_id(id, ix->n_buckets)]; m; m = m->hnext)
                if (strcmp(m->id, id) == 0)
                        return m;
        return NULL;
}

void msgindex_remove(struct msgindex *ix, struct msg *m)
{
        struct msg **p = &ix->buckets[hash_id(m->id, ix->n_buckets)];
        for (; *p; p = &(*p)->hnext)
                if (*p == m) {
                        *p = m->hnext;
                        ix->count--;
                        free_msg(m);
                        return;
                }
}

size_t msgindex_count(const struct msgindex *ix)
{
        return ix->count;
}

int msgindex_foreach(const struct msgindex *ix, int (*cb)(struct msg *m, void *ud), void *ud)
{
        for (size_t i = 0; i < ix->n_buckets; i++)
                for (struct msg *m = ix->buckets[i], *n; m; m = n) {
                        n = m->hnext;
                        int r = cb(m, ud);
                        if (r)
                                return r;
                }
        return 0;
}
