/* tests/daemon/test_msgindex.c — tarryd's index lists its messages in ID order
 * from any cursor, whatever was added (in or out of order) and removed. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "daemon/msgindex.h"

#define N 5000

struct walk {
        char ids[N][QUEUE_ID_LEN + 1];
        size_t n;
};

static int record(struct msg *m, void *ud)
{
        struct walk *w = ud;
        memcpy(w->ids[w->n++], m->id, QUEUE_ID_LEN + 1);
        return 0;
}

static void id_of(unsigned i, char out[QUEUE_ID_LEN + 1])
{
        snprintf(out, QUEUE_ID_LEN + 1, "6B16AC12%08X", i * 7);
}

Test(msgindex, pages_in_id_order_from_any_cursor_after_adds_and_removals)
{
        struct msgindex *ix = NULL;
        cr_assert_eq(msgindex_new(&ix), 0);
        char id[QUEUE_ID_LEN + 1];
        struct msg *m;
        /* odd ones first (appends), then the even ones (inserts in between) */
        for (unsigned i = 1; i < N; i += 2) {
                id_of(i, id);
                cr_assert_eq(msgindex_add(ix, id, &m), 0);
        }
        for (unsigned i = 0; i < N; i += 2) {
                id_of(i, id);
                cr_assert_eq(msgindex_add(ix, id, &m), 0);
        }
        /* remove three in four: the order array is compacted on the way */
        for (unsigned i = 0; i < N; i++)
                if (i % 4 != 0) {
                        id_of(i, id);
                        msgindex_remove(ix, msgindex_get(ix, id));
                }
        cr_assert_eq(msgindex_count(ix), N / 4);
        static struct walk w;
        w.n = 0;
        cr_assert_eq(msgindex_foreach_after(ix, NULL, record, &w), 0);
        cr_assert_eq(w.n, N / 4);
        for (size_t k = 0; k < w.n; k++) {
                id_of((unsigned)(4 * k), id);
                cr_assert_str_eq(w.ids[k], id);
        }
        /* from a cursor: an ID still there, and one that was removed */
        id_of(400, id);
        w.n = 0;
        msgindex_foreach_after(ix, id, record, &w);
        cr_assert_eq(w.n, N / 4 - 101);
        id_of(404, id);
        cr_assert_str_eq(w.ids[0], id);
        id_of(401, id); /* removed */
        w.n = 0;
        msgindex_foreach_after(ix, id, record, &w);
        id_of(404, id);
        cr_assert_str_eq(w.ids[0], id);
        msgindex_free(ix);
}

/* The total a listing after a cursor reports comes from per-block counts,
 * not a walk: it must match a walk whatever was removed, compacted or added
 * out of order. */
static int count_one(struct msg *m, void *ud)
{
        (void)m;
        (*(size_t *)ud)++;
        return 0;
}

Test(msgindex, counts_after_a_cursor_match_a_walk_of_the_index)
{
        struct msgindex *ix = NULL;
        cr_assert_eq(msgindex_new(&ix), 0);
        char id[QUEUE_ID_LEN + 1];
        struct msg *m;
        for (unsigned i = 0; i < N; i += 2) {
                id_of(i, id);
                cr_assert_eq(msgindex_add(ix, id, &m), 0);
        }
        for (unsigned i = 1; i < N; i += 2) { /* out of order: the next lookup sorts */
                id_of(i, id);
                cr_assert_eq(msgindex_add(ix, id, &m), 0);
        }
        for (int round = 0; round < 3; round++) {
                for (unsigned c = 0; c < N; c += 97) {
                        id_of(c, id);
                        size_t walked = 0;
                        msgindex_foreach_after(ix, id, count_one, &walked);
                        cr_assert_eq(msgindex_count_after(ix, id), walked, "round %d, after %u",
                                     round, c);
                }
                cr_assert_eq(msgindex_count_after(ix, NULL), msgindex_count(ix));
                /* remove a third of what is left (compactions on the way) */
                for (unsigned i = (unsigned)round; i < N; i += 3) {
                        id_of(i, id);
                        struct msg *gone = msgindex_get(ix, id);
                        if (gone)
                                msgindex_remove(ix, gone);
                }
                /* and put some back in their places, among removed slots, from
                 * the top down: each insert moves slots across block ends */
                for (unsigned i = N - 1 - (unsigned)round; i > 0 && i >= N - 2000; i -= 3) {
                        id_of(i, id);
                        if (!msgindex_get(ix, id))
                                cr_assert_eq(msgindex_add(ix, id, &m), 0);
                }
        }
        cr_assert_eq(msgindex_count_after(ix, "FFFFFFFFFFFFFFFF"), 0);
        cr_assert_eq(msgindex_add(ix, "not-a-queue-id!!", &m), -EINVAL);
        msgindex_free(ix);
}

/* A walk in no particular order still visits every record once, removed
 * ones never, whatever was reused. */
static int remove_odd(struct msg *m, void *ud)
{
        struct msgindex *ix = ud;
        if ((m->id[QUEUE_ID_LEN - 1] - '0') % 2 == 1)
                msgindex_remove(ix, m); /* the walk may remove what it is given */
        return 0;
}

Test(msgindex, a_walk_visits_every_record_once_and_no_removed_one)
{
        struct msgindex *ix = NULL;
        cr_assert_eq(msgindex_new(&ix), 0);
        char id[QUEUE_ID_LEN + 1];
        struct msg *m;
        for (unsigned i = 0; i < N; i++) {
                snprintf(id, sizeof(id), "6B16AC12%07X%u", i, i % 10);
                cr_assert_eq(msgindex_add(ix, id, &m), 0);
        }
        cr_assert_eq(msgindex_foreach(ix, remove_odd, ix), 0);
        cr_assert_eq(msgindex_count(ix), N / 2);
        for (unsigned i = 0; i < N / 4; i++) { /* reuse freed records */
                snprintf(id, sizeof(id), "7B16AC12%07X%u", i, 2 * (i % 5));
                cr_assert_eq(msgindex_add(ix, id, &m), 0);
        }
        static struct walk w;
        w.n = 0;
        cr_assert_eq(msgindex_foreach(ix, record, &w), 0);
        cr_assert_eq(w.n, N / 2 + N / 4);
        for (size_t k = 0; k < w.n; k++) {
                cr_assert_eq((w.ids[k][QUEUE_ID_LEN - 1] - '0') % 2, 0, "%s", w.ids[k]);
                cr_assert_eq(msgindex_get(ix, w.ids[k])->id[0], w.ids[k][0]);
        }
        msgindex_free(ix);
}

/* Appends in ID order skip the hash walk (nothing indexed sorts after the
 * key); an ID already there is still refused, wherever it sorts, and one
 * removed can come back. */
Test(msgindex, an_id_is_indexed_once_whether_appended_or_inserted)
{
        struct msgindex *ix = NULL;
        cr_assert_eq(msgindex_new(&ix), 0);
        char id[QUEUE_ID_LEN + 1];
        struct msg *m;
        for (unsigned i = 10; i < 20; i++) {
                id_of(i, id);
                cr_assert_eq(msgindex_add(ix, id, &m), 0);
        }
        id_of(19, id); /* the last one: the boundary of an append */
        cr_assert_eq(msgindex_add(ix, id, &m), -EEXIST);
        id_of(12, id); /* in the middle */
        cr_assert_eq(msgindex_add(ix, id, &m), -EEXIST);
        id_of(5, id); /* before every one: an insert */
        cr_assert_eq(msgindex_add(ix, id, &m), 0);
        cr_assert_eq(msgindex_add(ix, id, &m), -EEXIST);
        id_of(19, id); /* removed, its key left behind in the order array */
        msgindex_remove(ix, msgindex_get(ix, id));
        cr_assert_null(msgindex_get(ix, id));
        cr_assert_eq(msgindex_add(ix, id, &m), 0);
        cr_assert_eq(msgindex_add(ix, id, &m), -EEXIST);
        cr_assert_eq(msgindex_count(ix), 11);
        static struct walk w;
        w.n = 0;
        cr_assert_eq(msgindex_foreach_after(ix, NULL, record, &w), 0);
        cr_assert_eq(w.n, 11);
        for (size_t k = 1; k < w.n; k++)
                cr_assert_lt(strcmp(w.ids[k - 1], w.ids[k]), 0);
        msgindex_free(ix);
}

static double cpu_seconds(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* IDs 5… (the snapshot's records) and 6… (mail new since it), each run in
 * ascending order; the newer first when newer_first: CPU seconds taken. */
static double index_two_runs(unsigned records, unsigned newer, bool newer_first)
{
        struct msgindex *ix = NULL;
        cr_assert_eq(msgindex_new(&ix), 0);
        msgindex_reserve(ix, records + newer);
        char id[QUEUE_ID_LEN + 1];
        struct msg *m;
        double t0 = cpu_seconds();
        for (int run = 0; run < 2; run++) {
                bool new_run = (run == 0) == newer_first;
                for (unsigned i = 0; i < (new_run ? newer : records); i++) {
                        snprintf(id, sizeof(id), "%c%015X", new_run ? '6' : '5', i);
                        cr_assert_eq(msgindex_add(ix, id, &m), 0);
                }
        }
        double took = cpu_seconds() - t0;
        cr_assert_eq(msgindex_count_after(ix, NULL), records + newer);
        msgindex_free(ix);
        return took;
}

/* tarryd's start indexes the mail new since the snapshot (and the records
 * due within a minute, often the newest) first, then merges the other
 * records below them in ID order: each of those inserts must not move the
 * newer messages again (a million records below 10,000 newer ones took
 * 5 s more than the other way round). */
Test(msgindex, records_merged_below_newer_messages_cost_what_appends_cost, .timeout = 60)
{
        double appends = index_two_runs(100000, 20000, false);
        double below = index_two_runs(100000, 20000, true);
        cr_assert_lt(below, 5 * appends + 0.05, "%.3f s below the newer ones, %.3f s as appends",
                     below, appends);
}
