/* tests/common/test_kselect.c — a page picked by kselect is the same as the
 * same page of a fully sorted copy, whatever the input's order. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/kselect.h"

static int cmp_int(const void *a, const void *b)
{
        int x = *(const int *)a, y = *(const int *)b;
        return (x > y) - (x < y);
}

static int cmp_int_ptr(const void *a, const void *b)
{
        return cmp_int(*(void *const *)a, *(void *const *)b);
}

/* v holds pointers into keys; every page must match the sorted order. */
static void check_pages(int *keys, size_t n, size_t page)
{
        void **v = malloc(n * sizeof(*v)), **sorted = malloc(n * sizeof(*v));
        for (size_t i = 0; i < n; i++)
                sorted[i] = &keys[i];
        qsort(sorted, n, sizeof(*sorted), cmp_int_ptr);
        for (size_t from = 0; from <= n + page; from += page) {
                for (size_t i = 0; i < n; i++)
                        v[i] = &keys[i];
                size_t got = kselect_page(v, n, from, page, cmp_int);
                size_t want = from >= n ? 0 : (n - from < page ? n - from : page);
                cr_assert_eq(got, want, "from %zu", from);
                for (size_t i = 0; i < got; i++)
                        cr_assert_eq(*(int *)v[from + i], *(int *)sorted[from + i],
                                     "n %zu from %zu: element %zu", n, from, i);
        }
        free(v);
        free(sorted);
}

Test(kselect, pages_of_random_input_match_a_full_sort)
{
        srand(3);
        for (size_t n = 0; n < 300; n += 7) {
                int *keys = malloc((n + 1) * sizeof(*keys));
                for (size_t i = 0; i < n; i++)
                        keys[i] = rand() % 1000;
                check_pages(keys, n, 1 + (size_t)rand() % 40);
                free(keys);
        }
}

Test(kselect, sorted_reversed_and_equal_keys)
{
        enum { N = 5000 };
        static int keys[N];
        for (int i = 0; i < N; i++)
                keys[i] = i;
        check_pages(keys, N, 700);
        for (int i = 0; i < N; i++)
                keys[i] = N - i;
        check_pages(keys, N, 700);
        for (int i = 0; i < N; i++)
                keys[i] = 42;
        check_pages(keys, N, 700);
}

Test(kselect, the_k_smallest_come_first)
{
        int keys[] = {9, 3, 7, 1, 8, 2, 6, 4, 5, 0};
        void *v[10];
        for (int i = 0; i < 10; i++)
                v[i] = &keys[i];
        kselect_smallest(v, 10, 4, cmp_int);
        for (int i = 0; i < 4; i++)
                cr_assert_lt(*(int *)v[i], 4);
        for (int i = 4; i < 10; i++)
                cr_assert_geq(*(int *)v[i], 4);
}
