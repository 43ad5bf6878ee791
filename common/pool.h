/* common/pool.h — fixed-size objects carved from slabs.
 *
 * For the daemon's per-message structures (a million queued messages means a
 * million of each): no malloc header or size-class rounding per object, a
 * freed object is reused by the next allocation, and the slabs are given back
 * only when the pool is finished. Under ASan a free object is poisoned until
 * it is handed out again, so a use after free is still reported.
 * Not thread-safe: each pool has one owner.
 */
#ifndef TARRY_COMMON_POOL_H
#define TARRY_COMMON_POOL_H

#include <stddef.h>

/* Marking memory that must not be touched (freed slab objects) for ASan;
 * nothing in other builds. For pools and other slab owners (msgindex). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POOL_POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define POOL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POOL_POISON(p, n)   ((void)(p), (void)(n))
#define POOL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct pool_slab;

struct pool {
        size_t size;     /* object size, rounded up to a pointer's alignment */
        size_t per_slab; /* objects per slab */
        struct pool_slab *slabs;
        size_t slab_used; /* objects handed out of the newest slab */
        void *free_list;  /* freed objects, linked through their first bytes */
        size_t n_live;
};

/* An empty pool of objects of size bytes (at least a pointer's), per_slab to
 * a slab (0: a default of about 64 KB a slab). Allocates nothing yet. */
void pool_init(struct pool *p, size_t size, size_t per_slab);
/* A zeroed object, NULL when out of memory. */
void *pool_alloc(struct pool *p);
/* Back to the pool (NULL: nothing). */
void pool_release(struct pool *p, void *obj);
/* Give back every slab: every object of the pool is gone. */
void pool_finish(struct pool *p);

#endif
