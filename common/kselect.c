/* common/kselect.c — see kselect.h. */
#include "common/kselect.h"

#include <stdlib.h>

static void swap(void **v, size_t a, size_t b)
{
        void *t = v[a];
        v[a] = v[b];
        v[b] = t;
}

/* The median of v[lo], v[mid], v[hi]: a pivot that sorted input cannot defeat. */
static void *median_of_three(void **v, size_t lo, size_t hi, kselect_cmp cmp)
{
        void *a = v[lo], *b = v[lo + (hi - lo) / 2], *c = v[hi];
        if (cmp(a, b) < 0)
                return cmp(b, c) < 0 ? b : cmp(a, c) < 0 ? c : a;
        return cmp(a, c) < 0 ? a : cmp(b, c) < 0 ? c : b;
}

void kselect_smallest(void **v, size_t n, size_t k, kselect_cmp cmp)
{
        if (k == 0 || k >= n)
                return;
        /* Three-way partitions around a pivot (smaller | equal | larger) until
         * position k falls among the equal ones: then v[0..k) are the k smallest. */
        size_t lo = 0, hi = n - 1;
        while (lo < hi) {
                void *pivot = median_of_three(v, lo, hi, cmp);
                size_t lt = lo, i = lo, gt = hi + 1;
                while (i < gt) {
                        int c = cmp(v[i], pivot);
                        if (c < 0)
                                swap(v, lt++, i++);
                        else if (c > 0)
                                swap(v, i, --gt);
                        else
                                i++;
                }
                if (k < lt)
                        hi = lt - 1;
                else if (k >= gt)
                        lo = gt;
                else
                        return;
        }
}

static int by_cmp(const void *a, const void *b, void *cmp)
{
        return ((kselect_cmp)cmp)(*(void *const *)a, *(void *const *)b);
}

size_t kselect_page(void **v, size_t n, size_t from, size_t len, kselect_cmp cmp)
{
        if (from >= n)
                return 0;
        size_t count = len < n - from ? len : n - from;
        kselect_smallest(v, n, from + count, cmp);
        kselect_smallest(v, from + count, from, cmp);
        qsort_r(v + from, count, sizeof(*v), by_cmp, (void *)cmp);
        return count;
}
