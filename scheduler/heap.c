/* scheduler/heap.c — binary min-heap keyed by int64_t, O(log n) push, pop,
 * remove and key change. Each stored object is told its index (set_idx) so
 * it can be removed or moved without a search.
 */
#include <errno.h>
#include <stdlib.h>

#include "scheduler/internal.h"

static void place(struct heap *h, size_t i, struct hent e)
{
        h->v[i] = e;
        h->set_idx(e.p, i);
}

static void sift_up(struct heap *h, size_t i)
{
        struct hent e = h->v[i];
        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (h->v[parent].key <= e.key)
                        break;
                place(h, i, h->v[parent]);
                i = parent;
        }
        place(h, i, e);
}

static void sift_down(struct heap *h, size_t i)
{
        struct hent e = h->v[i];
        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= h->n)
                        break;
                if (c + 1 < h->n && h->v[c + 1].key < h->v[c].key)
                        c++;
                if (e.key <= h->v[c].key)
                        break;
                place(h, i, h->v[c]);
                i = c;
        }
        place(h, i, e);
}

int heap_push(struct heap *h, int64_t key, void *p)
{
        if (h->n == h->cap) {
                size_t cap = h->cap ? h->cap * 2 : 64;
                struct hent *v = realloc(h->v, cap * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                h->v = v;
                h->cap = cap;
        }
        h->v[h->n] = (struct hent){key, p};
        sift_up(h, h->n++);
        return 0;
}

void heap_remove(struct heap *h, size_t idx)
{
        if (idx >= h->n)
                return;
        h->n--;
        if (idx == h->n)
                return;
        int64_t old = h->v[idx].key;
        place(h, idx, h->v[h->n]);
        if (h->v[idx].key < old)
                sift_up(h, idx);
        else
                sift_down(h, idx);
}

void *heap_pop(struct heap *h)
{
        if (h->n == 0)
                return NULL;
        void *p = h->v[0].p;
        heap_remove(h, 0);
        return p;
}

void heap_update(struct heap *h, size_t idx, int64_t key)
{
        if (idx >= h->n)
                return;
        int64_t old = h->v[idx].key;
        h->v[idx].key = key;
        if (key < old)
                sift_up(h, idx);
        else
                sift_down(h, idx);
}

void heap_free(struct heap *h)
{
        free(h->v);
        h->v = NULL;
        h->n = h->cap = 0;
}
