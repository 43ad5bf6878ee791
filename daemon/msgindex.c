/* daemon/msgindex.c — chained hash of queued messages, plus their IDs in
 * order (a sorted array with tombstones) for paged listings; the records
 * live in slabs; see msgindex.h. */
#include "daemon/msgindex.h"

#include "common/fnv.h"
#include "common/pool.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* docs/benchmarks.md counts on this size (memory per queued message) */
_Static_assert(sizeof(struct msg) == 88, "struct msg grew: pack the new field");

/* A removed record stays in its slab: under ASan it is poisoned until
 * reused (POOL_POISON), so a use after removal is still reported. */

/* One queued ID in order, as the number its 16 hex digits spell (IDs sort
 * the same as numbers); m is NULL once the message is removed (the key stays
 * for the binary search until the array is compacted). 16 bytes a message. */
struct slot {
        uint64_t key;
        struct msg *m;
};

/* Records come from slabs of this many (96 KB), not one malloc each: no
 * header or rounding per message. A removed record is reused by the next
 * add; slabs are given back when the index is freed. */
#define SLAB_MSGS 1024

struct slab {
        struct slab *next;
        struct msg m[SLAB_MSGS];
};

/* Live slots are counted per block of the order array, so "how many after
 * this cursor" costs a sum over the blocks, not a walk of the queue. */
#define BLOCK_SHIFT 10

struct msgindex {
        struct msg **buckets;
        size_t n_buckets;
        size_t count;
        struct slot *order; /* sorted by key */
        size_t n_order, cap_order, n_dead;
        uint32_t *live;     /* live slots per block of 1 << BLOCK_SHIFT; cap_order >> BLOCK_SHIFT */
        struct slab *slabs; /* every record lives in one of these */
        size_t slab_used;   /* records handed out of the newest slab */
        struct msg *free_msgs;     /* removed records, chained by hnext, for reuse */
        struct pool works;         /* every struct work of the records */
        struct route_str **routes; /* interned routes, chained hash */
        size_t n_routes, n_route_buckets;
};

/* An interned route: refs works point to s. */
struct route_str {
        struct route_str *next;
        size_t refs;
        uint64_t hash;
        char s[];
};

bool msgindex_id_key(const char *id, uint64_t *out)
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

void msgindex_key_id(uint64_t key, char id[QUEUE_ID_LEN + 1])
{
        for (size_t i = QUEUE_ID_LEN; i-- > 0; key >>= 4)
                id[i] = "0123456789ABCDEF"[key & 15];
        id[QUEUE_ID_LEN] = '\0';
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

/* The live slots of each block from block b0 on, counted again. */
static void recount_from(struct msgindex *ix, size_t b0)
{
        memset(ix->live + b0, 0, ((ix->cap_order >> BLOCK_SHIFT) - b0) * sizeof(*ix->live));
        for (size_t i = b0 << BLOCK_SHIFT; i < ix->n_order; i++)
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
        recount_from(ix, 0);
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

/* An insert that moves slots up moves them this much further when the
 * array has room to spare, leaving removed slots (keyed as the first moved
 * one) between the new key and them; the next inserts that sort there take
 * one of those without moving anything. At start, tarryd indexes the mail
 * new since the snapshot (and the records due soon, often the newest)
 * first and then merges the other records below it in ID order: without
 * the gap each of a million such inserts moved every newer slot again (a
 * million below 10,000: 5 s). */
#define GAP_SLOTS ((size_t)1 << BLOCK_SHIFT)

/* Mostly an append: IDs grow with arrival time. One that sorts earlier (a
 * submission that took longer than the next one's) goes in its place: into
 * a removed slot there if there is one, else the tail is moved up a slot
 * (or GAP_SLOTS): the tail is short, and the array is always sorted, so no
 * lookup ever sorts the queue on the loop. */
static int order_insert(struct msgindex *ix, struct msg *m, uint64_t key)
{
        if (ix->n_order == ix->cap_order) {
                if (ix->n_dead > 0)
                        compact(ix);
                if (ix->n_order == ix->cap_order && order_grow(ix) < 0)
                        return -ENOMEM;
        }
        size_t at = ix->n_order, gap = 1;
        if (at > 0 && ix->order[at - 1].key > key) {
                at = upper_bound(ix, key);
                if (!ix->order[at].m) { /* below its key, above the one before: still sorted */
                        ix->order[at] = (struct slot){.key = key, .m = m};
                        ix->n_dead--;
                        ix->live[at >> BLOCK_SHIFT]++;
                        return 0;
                }
                if (ix->cap_order - ix->n_order >= 2 * GAP_SLOTS)
                        gap = GAP_SLOTS; /* a full array compacts rather than fills with gaps */
                memmove(ix->order + at + gap, ix->order + at,
                        (ix->n_order - at) * sizeof(*ix->order));
                for (size_t j = at + 1; j < at + gap; j++)
                        ix->order[j] = (struct slot){.key = ix->order[at + gap].key, .m = NULL};
        }
        ix->order[at] = (struct slot){.key = key, .m = m};
        ix->n_order += gap;
        ix->n_dead += gap - 1;
        if (gap > 1) {
                recount_from(ix, at >> BLOCK_SHIFT); /* paid once for the gap's inserts */
                return 0;
        }
        ix->live[at >> BLOCK_SHIFT]++;
        /* the moved slots went up one: the one now first in each later block
         * came from the block before (a count per block, not a recount of
         * the blocks: an insert just below the last ID, the start's usual
         * case once new mail is indexed before the snapshot's records, took
         * a fifth of the start scanning 1,024 slots each) */
        for (size_t j = ((at >> BLOCK_SHIFT) + 1) << BLOCK_SHIFT; j < ix->n_order;
             j += (size_t)1 << BLOCK_SHIFT)
                if (ix->order[j].m) {
                        ix->live[(j >> BLOCK_SHIFT) - 1]--;
                        ix->live[j >> BLOCK_SHIFT]++;
                }
        return 0;
}

static void order_remove(struct msgindex *ix, const struct msg *m)
{
        uint64_t key;
        if (!msgindex_id_key(m->id, &key))
                return;
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
        return (size_t)(fnv1a_str(FNV1A_BASIS_SHORT, id) % n_buckets);
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
        pool_init(&ix->works, sizeof(struct work), 0);
        *out = ix;
        return 0;
}

static struct msg *alloc_msg(struct msgindex *ix)
{
        struct msg *m = ix->free_msgs;
        if (m) {
                POOL_UNPOISON(m, sizeof(*m));
                ix->free_msgs = m->hnext;
        } else {
                if (!ix->slabs || ix->slab_used == SLAB_MSGS) {
                        struct slab *sl = malloc(sizeof(*sl));
                        if (!sl)
                                return NULL;
                        sl->next = ix->slabs;
                        ix->slabs = sl;
                        ix->slab_used = 0;
                }
                m = &ix->slabs->m[ix->slab_used++];
        }
        memset(m, 0, sizeof(*m));
        return m;
}

struct work *msgindex_work_new(struct msgindex *ix, struct msg *m)
{
        struct work *w = pool_alloc(&ix->works);
        if (w)
                w->m = m;
        return w;
}

void msgindex_work_free(struct msgindex *ix, struct work *w)
{
        if (!w)
                return;
        msgindex_route_put(ix, w->route);
        pool_release(&ix->works, w);
}

static uint64_t hash_str(const char *s)
{
        return fnv1a_str(FNV1A_BASIS_SHORT, s);
}

static void routes_grow(struct msgindex *ix)
{
        size_t n = ix->n_route_buckets ? 2 * ix->n_route_buckets : 64;
        struct route_str **b = calloc(n, sizeof(*b));
        if (!b)
                return; /* longer chains, still correct */
        for (size_t i = 0; i < ix->n_route_buckets; i++)
                for (struct route_str *r = ix->routes[i], *next; r; r = next) {
                        next = r->next;
                        r->next = b[r->hash % n];
                        b[r->hash % n] = r;
                }
        free(ix->routes);
        ix->routes = b;
        ix->n_route_buckets = n;
}

const char *msgindex_route_get(struct msgindex *ix, const char *route)
{
        uint64_t h = hash_str(route);
        if (ix->n_routes >= ix->n_route_buckets)
                routes_grow(ix);
        if (!ix->routes)
                return NULL;
        struct route_str **head = &ix->routes[h % ix->n_route_buckets];
        for (struct route_str *r = *head; r; r = r->next)
                if (r->hash == h && strcmp(r->s, route) == 0) {
                        r->refs++;
                        return r->s;
                }
        size_t len = strlen(route) + 1;
        struct route_str *r = malloc(sizeof(*r) + len);
        if (!r)
                return NULL;
        memcpy(r->s, route, len);
        r->refs = 1;
        r->hash = h;
        r->next = *head;
        *head = r;
        ix->n_routes++;
        return r->s;
}

void msgindex_route_put(struct msgindex *ix, const char *route)
{
        if (!route)
                return;
        struct route_str *r = (struct route_str *)(void *)(route - offsetof(struct route_str, s));
        if (--r->refs > 0)
                return;
        for (struct route_str **p = &ix->routes[r->hash % ix->n_route_buckets]; *p; p = &(*p)->next)
                if (*p == r) {
                        *p = r->next;
                        break;
                }
        ix->n_routes--;
        free(r);
}

/* What a record owns; the record itself stays in its slab. */
static void release_msg(struct msgindex *ix, struct msg *m)
{
        while (m->works) {
                struct work *w = m->works;
                m->works = w->next;
                msgindex_work_free(ix, w);
        }
        envelope_free(m->env);
        m->env = NULL;
}

static void free_msg(struct msgindex *ix, struct msg *m)
{
        release_msg(ix, m);
        m->id[0] = '\0'; /* free: msgindex_foreach skips it */
        m->hnext = ix->free_msgs;
        ix->free_msgs = m;
        /* all but the free-list link and the ID (id is the last field) */
        size_t link = offsetof(struct msg, hnext), after_link = link + sizeof(m->hnext);
        POOL_POISON((char *)m, link);
        POOL_POISON((char *)m + after_link, offsetof(struct msg, id) - after_link);
}

void msgindex_free(struct msgindex *ix)
{
        if (!ix)
                return;
        for (size_t i = 0; i < ix->n_buckets; i++)
                for (struct msg *m = ix->buckets[i], *n; m; m = n) {
                        n = m->hnext;
                        release_msg(ix, m);
                }
        pool_finish(&ix->works);
        for (size_t i = 0; i < ix->n_route_buckets; i++)
                for (struct route_str *r = ix->routes[i], *n; r; r = n) {
                        n = r->next;
                        free(r);
                }
        free(ix->routes);
        while (ix->slabs) {
                struct slab *sl = ix->slabs;
                ix->slabs = sl->next;
                POOL_UNPOISON(sl, sizeof(*sl));
                free(sl);
        }
        free(ix->buckets);
        free(ix->order);
        free(ix->live);
        free(ix);
}

static void rehash(struct msgindex *ix, size_t n);

/* Chains of two on average (a bucket is 8 bytes a message at load 1, 4 at
 * load 2; a lookup is rare next to the work it finds); never shrinks. */
#define LOAD 2

/* Keep chains short as the queue grows; never shrinks. */
static void grow(struct msgindex *ix)
{
        rehash(ix, ix->n_buckets * 2);
}

void msgindex_reserve(struct msgindex *ix, size_t n)
{
        size_t b = ix->n_buckets;
        while (b * LOAD < n)
                b *= 2;
        if (b > ix->n_buckets)
                rehash(ix, b);
        while (ix->cap_order < n && order_grow(ix) == 0)
                ;
}

static void rehash(struct msgindex *ix, size_t n)
{
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
        if (!msgindex_id_key(id, &key))
                return -EINVAL;
        /* an ID above every key in the order array (live or removed) cannot be
         * indexed yet: appends in ID order (the snapshot's million) skip the
         * hash walk, a cache miss or two each */
        bool append = ix->n_order == 0 || ix->order[ix->n_order - 1].key < key;
        /* otherwise the order array, not the hash, says whether it is there:
         * its slots near the insert are in the cache (a start merges a
         * million records just below the newest ID), where a bucket is a
         * cache miss the lookup waits for (half of this function's time) */
        for (size_t at = append ? 0 : upper_bound(ix, key); at > 0 && ix->order[at - 1].key == key;
             at--)
                if (ix->order[at - 1].m)
                        return -EEXIST;
        if (ix->count >= ix->n_buckets * LOAD)
                grow(ix);
        struct msg *m = alloc_msg(ix);
        if (!m)
                return -ENOMEM;
        memcpy(m->id, id, QUEUE_ID_LEN + 1);
        m->reply_class = -1;
        m->dir = QUEUE_ACTIVE;
        if (order_insert(ix, m, key) < 0) {
                free_msg(ix, m);
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
                        free_msg(ix, m);
                        return;
                }
}

size_t msgindex_count(const struct msgindex *ix)
{
        return ix->count;
}

/* Slab by slab: the records are read in memory order (no pointer chase per
 * message), which is what a walk of a million costs. */
int msgindex_foreach(const struct msgindex *ix, int (*cb)(struct msg *m, void *ud), void *ud)
{
        size_t used = ix->slab_used;
        for (struct slab *sl = ix->slabs; sl; sl = sl->next, used = SLAB_MSGS)
                for (size_t i = 0; i < used; i++) {
                        struct msg *m = &sl->m[i];
                        if (!m->id[0])
                                continue;
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
        return after && msgindex_id_key(after, &key) ? upper_bound(ix, key) : 0;
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

struct msg *msgindex_first(const struct msgindex *ix)
{
        for (size_t b = 0; (b << BLOCK_SHIFT) < ix->n_order; b++) {
                if (ix->live[b] == 0)
                        continue;
                size_t end = (b + 1) << BLOCK_SHIFT;
                for (size_t i = b << BLOCK_SHIFT; i < ix->n_order && i < end; i++)
                        if (ix->order[i].m)
                                return ix->order[i].m;
        }
        return NULL;
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
