/* bench/page-select — the cost of one /queue page of a big queue: sorting the
 * whole index by queue ID (qsort, as tarryd did) against selecting the page
 * (kselect_page, as it does now). CPU only: the envelopes of the page, which
 * tarryd then reads, cost the same either way.
 *
 * Usage: page-select [MESSAGES] [PAGE]   (defaults 1000000, 10000)
 * For offsets 0, the middle and the last page: milliseconds per page, best
 * of 5, and whether both give the same page.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/kselect.h"

struct rec {
        char id[17]; /* as queue IDs: 16 hex digits */
};

static int by_id(const void *a, const void *b)
{
        return strcmp(((const struct rec *)a)->id, ((const struct rec *)b)->id);
}

static int by_id_ptr(const void *a, const void *b)
{
        return by_id(*(void *const *)a, *(void *const *)b);
}

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
        size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
        size_t page = argc > 2 ? strtoul(argv[2], NULL, 10) : 10000;
        if (n == 0 || page == 0)
                return 64;
        struct rec *recs = malloc(n * sizeof(*recs));
        void **order = malloc(n * sizeof(*order)), **v = malloc(n * sizeof(*v)),
             **w = malloc(n * sizeof(*w));
        if (!recs || !order || !v || !w)
                return 71;
        uint64_t x = 88172645463325252ULL;
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift: IDs in hash order */
                snprintf(recs[i].id, sizeof(recs[i].id), "%016llX", (unsigned long long)x);
                order[i] = &recs[i];
        }
        printf("%zu messages, pages of %zu\n", n, page);
        size_t offsets[] = {0, (n / 2 / page) * page, ((n - 1) / page) * page};
        for (size_t o = 0; o < 3; o++) {
                double best_sort = 1e18, best_select = 1e18;
                int same = 1;
                for (int round = 0; round < 5; round++) {
                        memcpy(v, order, n * sizeof(*v));
                        double t0 = now_ms();
                        qsort(v, n, sizeof(*v), by_id_ptr);
                        double t1 = now_ms();
                        memcpy(w, order, n * sizeof(*w));
                        double t2 = now_ms();
                        size_t got = kselect_page(w, n, offsets[o], page, by_id);
                        double t3 = now_ms();
                        best_sort = t1 - t0 < best_sort ? t1 - t0 : best_sort;
                        best_select = t3 - t2 < best_select ? t3 - t2 : best_select;
                        same &= memcmp(v + offsets[o], w + offsets[o], got * sizeof(*v)) == 0;
                }
                printf(
                    "offset %zu: qsort all %.1f ms, kselect_page %.1f ms (%.1fx), same page: %s\n",
                    offsets[o], best_sort, best_select, best_sort / best_select,
                    same ? "yes" : "NO");
                if (!same)
                        return 1;
        }
        free(recs);
        free(order);
        free(v);
        free(w);
        return 0;
}
