/* tests/daemon/test_concurrency.c — one owner of concurrency (issue 17): the
 * scheduler alone decides how many attempts run. With the real binaries and
 * slow scripted receivers, what the receivers see never exceeds
 * max_connections in all nor destination_concurrency at one, and a freed
 * connection goes to the next due message at once. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define DESTS     3
#define PER_DEST  4
#define DOT_MS    700 /* each receiver answers the final dot this late */
#define SLACK_US  50000LL
#define PROMPT_US (DOT_MS * 1000LL + 8000000LL) /* a freed slot is reused well before this */

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

/* The times the receiver answered each final dot, sorted. */
static size_t dot_times(struct fixture *f, int64_t *out, size_t max)
{
        size_t n = fixture_txn_count(f);
        cr_assert_leq(n, max);
        for (size_t i = 0; i < n; i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                out[i] = t.time_us;
                fixture_txn_clear(&t);
        }
        qsort(out, n, sizeof(*out), cmp_i64);
        return n;
}

Test(concurrency, slow_receivers_never_see_more_than_the_limits_and_freed_slots_are_reused_at_once,
     .timeout = 240)
{
        struct fixture *f[DESTS];
        char extra[1024];
        int len = snprintf(extra, sizeof(extra),
                           "[smtp]\nmax_connections = 2\ndestination_concurrency = 1\n"
                           "[transport]\n");
        for (int d = 0; d < DESTS; d++) {
                cr_assert_eq(fixture_new("127.0.0.1", &f[d]), 0);
                char ms[16];
                snprintf(ms, sizeof(ms), "%d", DOT_MS);
                cr_assert_eq(fixture_set(f[d], "delay:dot", ms), 0);
                cr_assert_eq(fixture_start(f[d], 0), 0);
                len += snprintf(extra + len, sizeof(extra) - (size_t)len,
                                "%c.test = [127.0.0.1]:%u\n", 'a' + d, fixture_port(f[d]));
        }
        struct harness h;
        harness_init(&h, extra);
        harness_start(&h); /* creates the spool */
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        /* every message is due at the next start */
        for (int i = 0; i < DESTS * PER_DEST; i++) {
                char rcpt[64], subject[32];
                snprintf(rcpt, sizeof(rcpt), "u%d@%c.test", i, 'a' + i % DESTS);
                snprintf(subject, sizeof(subject), "conc %d", i);
                harness_send(&h, "alice@sender.test", rcpt, subject);
        }
        harness_start(&h);
        for (int d = 0; d < DESTS; d++)
                cr_assert_eq(fixture_wait_txns(f[d], PER_DEST, 120000), 0,
                             "%c.test: %zu of %d messages arrived", 'a' + d,
                             fixture_txn_count(f[d]), PER_DEST);
        cr_assert(harness_wait_log(&h, "status=sent", DESTS * PER_DEST, 30000));

        int64_t all[DESTS * PER_DEST + 8];
        size_t n_all = 0;
        for (int d = 0; d < DESTS; d++) {
                int64_t t[PER_DEST + 8];
                size_t n = dot_times(f[d], t, PER_DEST + 8);
                cr_assert_eq(n, PER_DEST, "%c.test: each message exactly once", 'a' + d);
                /* destination_concurrency = 1: one transaction at a time there */
                for (size_t i = 1; i < n; i++)
                        cr_assert_geq(t[i] - t[i - 1], DOT_MS * 1000LL - SLACK_US,
                                      "%c.test: transactions %zu and %zu overlapped", 'a' + d,
                                      i - 1, i);
                memcpy(all + n_all, t, n * sizeof(*t));
                n_all += n;
        }
        qsort(all, n_all, sizeof(*all), cmp_i64);
        /* max_connections = 2: no three transactions overlap anywhere (each
         * holds its connection for DOT_MS before its dot is answered) */
        for (size_t i = 2; i < n_all; i++)
                cr_assert_geq(all[i] - all[i - 2], DOT_MS * 1000LL - SLACK_US,
                              "three transactions at once around %zu", i);
        /* and a connection that frees goes to the next due message at once:
         * no gap waits for a timer */
        for (size_t i = 1; i < n_all; i++)
                cr_assert_leq(all[i] - all[i - 1], PROMPT_US, "%lld ms between dots %zu and %zu",
                              (long long)((all[i] - all[i - 1]) / 1000), i - 1, i);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
        for (int d = 0; d < DESTS; d++)
                fixture_free(f[d]);
}
