/* tests/common/test_pool.c — a pool hands out zeroed objects, reuses freed
 * ones before carving new ones, and keeps every live object intact. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "common/pool.h"

struct obj {
        uint64_t a, b, c;
};

Test(pool, freed_objects_are_reused_zeroed_and_live_ones_keep_their_contents)
{
        struct pool p;
        pool_init(&p, sizeof(struct obj), 4); /* small slabs: several of them */
        struct obj *o[10];
        for (int i = 0; i < 10; i++) {
                o[i] = pool_alloc(&p);
                cr_assert_not_null(o[i]);
                cr_assert_eq(o[i]->a | o[i]->b | o[i]->c, 0);
                *o[i] = (struct obj){.a = (uint64_t)i, .b = 2, .c = 3};
        }
        for (int i = 0; i < 10; i++)
                for (int j = i + 1; j < 10; j++)
                        cr_assert_neq(o[i], o[j]);
        pool_release(&p, o[3]);
        pool_release(&p, o[7]);
        cr_assert_eq(p.n_live, 8);
        struct obj *x = pool_alloc(&p), *y = pool_alloc(&p);
        cr_assert(x == o[7] && y == o[3], "the freed objects come back first");
        cr_assert_eq(x->a | x->b | x->c | y->a | y->b | y->c, 0);
        for (int i = 0; i < 10; i++)
                if (i != 3 && i != 7)
                        cr_assert(o[i]->a == (uint64_t)i && o[i]->b == 2 && o[i]->c == 3);
        pool_release(&p, NULL);
        pool_finish(&p);
        cr_assert_eq(p.n_live, 0);
}
