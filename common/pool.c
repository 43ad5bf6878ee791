/* common/pool.c — fixed-size objects carved from slabs; see pool.h. */
#include "common/pool.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SLAB_BYTES (64 * 1024)

struct pool_slab {
        struct pool_slab *next;
        alignas(max_align_t) unsigned char obj[];
};

void pool_init(struct pool *p, size_t size, size_t per_slab)
{
        size_t a = alignof(void *);
        if (size < sizeof(void *))
                size = sizeof(void *);
        size = (size + a - 1) / a * a;
        *p = (struct pool){.size = size,
                           .per_slab = per_slab ? per_slab : DEFAULT_SLAB_BYTES / size};
        if (p->per_slab == 0)
                p->per_slab = 1;
}

void *pool_alloc(struct pool *p)
{
        void *obj = p->free_list;
        if (obj) {
                POOL_UNPOISON(obj, p->size);
                memcpy(&p->free_list, obj, sizeof(void *));
        } else {
                if (!p->slabs || p->slab_used == p->per_slab) {
                        struct pool_slab *sl = malloc(sizeof(*sl) + p->per_slab * p->size);
                        if (!sl)
                                return NULL;
                        sl->next = p->slabs;
                        p->slabs = sl;
                        p->slab_used = 0;
                        POOL_POISON(sl->obj, p->per_slab * p->size);
                }
                obj = p->slabs->obj + p->slab_used++ * p->size;
                POOL_UNPOISON(obj, p->size);
        }
        memset(obj, 0, p->size);
        p->n_live++;
        return obj;
}

void pool_release(struct pool *p, void *obj)
{
        if (!obj)
                return;
        memcpy(obj, &p->free_list, sizeof(void *));
        p->free_list = obj;
        p->n_live--;
        /* all but the free-list link */
        POOL_POISON((unsigned char *)obj + sizeof(void *), p->size - sizeof(void *));
}

void pool_finish(struct pool *p)
{
        while (p->slabs) {
                struct pool_slab *sl = p->slabs;
                p->slabs = sl->next;
                POOL_UNPOISON(sl->obj, p->per_slab * p->size);
                free(sl);
        }
        p->slab_used = 0;
        p->free_list = NULL;
        p->n_live = 0;
}
