/* daemon/msgindex.c — chained hash of queued messages, plus their IDs in
 * order (a sorted array with tombstones) for paged listings; see msgindex.h. */
#include "daemon/msgindex.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* One queued ID in order, as the number its 16 hex digits spell (IDs sort
 * the same as numbers); m is NULL once the message is removed (the key stays
 * for the binary search until the array is compacted). 16 bytes a message. */
struct slot {
        uint64_t key;
        struct msg *m;
};

/* Live slots are counted per block of the order array, so "how many after
 * this cursor" costs a sum over the blocks, not a walk of the queue. */
#define BLOCK_SHIFT 10

struct msgindex {
        struct msg **buckets;
        size_t n_buckets;
        size_t count;
        struct slot *order; /* sorted by key, unless unsorted */
        size_t n_order, cap_order, n_dead;
        uint32_t *live; /* live slots per block of 1 << BLOCK_SHIFT; cap_order >> BLOCK_SHIFT */
        bool unsorted;
};

/* The key of a queue ID; false when id is not 16 hex digits. */
static bool id_key(const char *id, uint64_t *out)
{
        uint64_t k = 0;
        for (size_t i = 0; i < QUEUE_ID_LEN; i++) {
                unsigned char c = (unsigned char)id[i];
                unsigned v = c >= '0' && c <= '9'   ? c - '0'
                             : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                    : 16;
                if (v == 16)
                        return false;
                k = k << 4 | v;
        }
        *out = k;
        return id[QUEUE_ID_LEN] == '\0';
}

/* First slot whose key is above key (n_order if none). */
static size_t upper_bound(const struct msgindex *ix, uint64_t key)
{
        size_t lo = 0, hi = ix->n_order;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (ix->order[mid].key <= key)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static void recount(struct msgindex *ix)
{
        memset(ix->live, 0, (ix->cap_order >> BLOCK_SHIFT) * sizeof(*ix->live));
        for (size_t i = 0; i < ix->n_order; i++)
                if (ix->order[i].m)
                        ix->live[i >> BLOCK_SHIFT]++;
}

static void compact(struct msgindex *ix)
{
        size_t k = 0;
        for (size_t i = 0; i < ix->n_order; i++)
                if (ix->order[i].m)
                        ix->order[k++] = ix->order[i];
        ix->n_order = k;
        ix->n_dead = 0;
        recount(ix);
}

static int cmp_slot(const void *a, const void *b)
{
        uint64_t x = ((const struct slot *)a)->key, y = ((const struct slot *)b)->key;
        return x < y ? -1 : x > y;
}

/* Appended out of order since the last sort: sort once before the next lookup. */
static void ensure_sorted(struct msgindex *ix)
{
        if (!ix->unsorted)
                return;
        if (ix->n_order)
                qsort(ix->order, ix->n_order, sizeof(*ix->order), cmp_slot);
        ix->unsorted = false;
        recount(ix);
}

static int order_grow(struct msgindex *ix)
{
        size_t cap = ix->cap_order ? 2 * ix->cap_order : (size_t)1 << BLOCK_SHIFT;
        struct slot *o = realloc(ix->order, cap * sizeof(*o));
        if (!o)
                return -ENOMEM;
        ix->order = o;
        uint32_t *live = realloc(ix->live, (cap >> BLOCK_SHIFT) * sizeof(*live));
        if (!live)
                return -ENOMEM; /* the order array is merely bigger than it needs */
        memset(live + (ix->cap_order >> BLOCK_SHIFT), 0,
               ((cap - ix->cap_order) >> BLOCK_SHIFT) * sizeof(*live));
        ix->live = live;
        ix->cap_order = cap;
        return 0;
}

/* Always an append (IDs grow with arrival time, so almost always in order);
 * one out of order makes the next lookup sort the array. */
static int order_insert(struct msgindex *ix, struct msg *m, uint64_t key)
{
        if (ix->n_order == ix->cap_order) {
                if (ix->n_dead > 0)
                        compact(ix);
                if (ix->n_order == ix->cap_order && order_grow(ix) < 0)
                        return -ENOMEM;
        }
        if (ix->n_order > 0 && ix->order[ix->n_order - 1].key > key)
                ix->unsorted = true;
        ix->live[ix->n_order >> BLOCK_SHIFT]++;
        ix->order[ix->n_order++] = (struct slot){.key = key, .m = m};
        return 0;
}

static void order_remove(struct msgindex *ix, const struct msg *m)
{
        uint64_t key;
        if (!id_key(m->id, &key))
                return;
        ensure_sorted(ix);
        size_t at = upper_bound(ix, key);
        /* the slot is the last one at or below key holding m */
        while (at > 0 && ix->order[at - 1].key == key) {
                if (ix->order[at - 1].m == m) {
                        ix->order[at - 1].m = NULL;
                        ix->live[(at - 1) >> BLOCK_SHIFT]--;
                        if (++ix->n_dead > ix->n_order / 2)
                                compact(ix);
                        return;
                }
                at--;
        }
}

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
        free(ix->order);
        free(ix->live);
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
        uint64_t key;
        if (!id_key(id, &key))
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
        if (order_insert(ix, m, key) < 0) {
                free(m);
                return -ENOMEM;
        }
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
                        order_remove(ix, m);
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

/* Where a listing after the cursor starts: the first slot above it. */
static size_t start_after(struct msgindex *ix, const char *after)
{
        uint64_t key;
        ensure_sorted(ix);
        return after && id_key(after, &key) ? upper_bound(ix, key) : 0;
}

int msgindex_foreach_after(struct msgindex *ix, const char *after,
                           int (*cb)(struct msg *m, void *ud), void *ud)
{
        for (size_t i = start_after(ix, after); i < ix->n_order; i++) {
                struct msg *m = ix->order[i].m;
                if (!m)
                        continue;
                int r = cb(m, ud);
                if (r)
                        return r;
        }
        return 0;
}

size_t msgindex_count_after(struct msgindex *ix, const char *after)
{
        size_t i = start_after(ix, after), n = 0;
        size_t block_end = ((i >> BLOCK_SHIFT) + 1) << BLOCK_SHIFT;
        for (; i < ix->n_order && i < block_end; i++)
                n += ix->order[i].m != NULL;
        for (size_t b = i >> BLOCK_SHIFT; i < ix->n_order; b++, i += (size_t)1 << BLOCK_SHIFT)
                n += ix->live[b];
        return n;
}
