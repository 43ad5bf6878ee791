/* tests/daemon/test_crash.c — kill -9 tarryd at random moments during a run
 * of deliveries, again and again: every message still arrives, none is lost,
 * and the duplicates each kill causes stay within what was in flight.
 *
 * The suite runs a short form (2,000 messages, 5 kills). bench/crash runs the
 * issue's figures (10,000 messages, 20 kills) through the same test:
 *   TARRY_CRASH_MESSAGES=10000 TARRY_CRASH_KILLS=20 build/tests/daemon/test_crash
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define DEFAULT_MESSAGES 2000
#define DEFAULT_KILLS    5
#define MAX_KILLS        100
#define MAX_CONNECTIONS  10
/* What a kill can cost: the max_connections attempts in flight (the scheduler
 * owns concurrency, docs/architecture.md). Typically 9-10 per kill here, but
 * CI's ASan run under load saw 17 once (2026-12-07) and the cause is not
 * established (a dot reply that came after data_timeout would also count as
 * a duplicate of the next kill), so the bound stays the earlier 2 x. */
#define MAX_IN_FLIGHT (2 * MAX_CONNECTIONS)
/* Bound for the final drain of the queue: generous (a 2,000-message drain
 * takes seconds), and well inside meson's timeout for crash-e2e (900 s). */
#define DRAIN_S 300

static int env_int(const char *name, int def, int max)
{
        const char *v = getenv(name);
        int n = v ? atoi(v) : def;
        return n > 0 && n <= max ? n : def;
}

/* Submit messages through sendmail, one recipient each: the recipient
 * u<i>@example.test names message i. */
static void submit_all(struct harness *h, int messages)
{
        for (int i = 0; i < messages; i++) {
                char rcpt[64], subject[32];
                snprintf(rcpt, sizeof(rcpt), "u%d@example.test", i);
                snprintf(subject, sizeof(subject), "crash %d", i);
                harness_send(h, "alice@sender.test", rcpt, subject);
        }
}

/* Wait until tarryd has delivered `target` in all, or has run for max_ms. */
static void run_until(struct fixture *f, size_t target, int max_ms)
{
        for (int waited = 0; waited < max_ms && fixture_txn_count(f) < target; waited++)
                harness_sleep_ms(1);
}

Test(crash, kill_9_during_deliveries_loses_nothing, .timeout = 1800)
{
        int messages = env_int("TARRY_CRASH_MESSAGES", DEFAULT_MESSAGES, 1000000);
        int kills = env_int("TARRY_CRASH_KILLS", DEFAULT_KILLS, MAX_KILLS);
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        harness_init_routed(&h, fixture_port(f), MAX_CONNECTIONS);
        submit_all(&h, messages);

        /* deliveries recorded before kill k (boundary[k]) */
        size_t boundary[MAX_KILLS];
        size_t per_kill = (size_t)messages / (size_t)(kills + 1);
        srand(42);
        int kills_done = 0, early_kills = 0;
        for (int k = 0; k < kills && fixture_txn_count(f) < (size_t)messages; k++) {
                harness_start(&h);
                if (rand() % 5 == 0) {
                        /* during start-up and pickup, before or at the first deliveries */
                        harness_sleep_ms(rand() % 300);
                        early_kills++;
                } else {
                        size_t got = fixture_txn_count(f);
                        run_until(f, got + per_kill / 2 + (size_t)rand() % (per_kill / 2 + 1),
                                  20000);
                        harness_sleep_ms(rand() % 20);
                }
                harness_kill9(&h);
                boundary[kills_done++] = fixture_txn_count(f);
        }
        /* the test is about kills during deliveries: all of them happened */
        cr_assert_eq(kills_done, kills,
                     "stopped after %d of %d kills: every message was delivered before (%zu "
                     "deliveries); fewer messages per kill would be needed",
                     kills_done, kills, fixture_txn_count(f));
        harness_start(&h);
        for (int64_t end = harness_now_us() + DRAIN_S * 1000000LL;
             harness_count_queued(&h, "active") + harness_count_queued(&h, "incoming") > 0 &&
             harness_now_us() < end;)
                harness_sleep_ms(10);
        cr_assert_eq(harness_count_queued(&h, "active") + harness_count_queued(&h, "incoming"), 0,
                     "mail left in the queue %d s after the last start", DRAIN_S);
        harness_sleep_ms(200);

        /* first delivery of each message (its index), duplicates per kill: a
         * duplicate belongs to the first kill after the message's first delivery */
        size_t *first = calloc((size_t)messages, sizeof(*first));
        int *seen = calloc((size_t)messages, sizeof(*seen));
        size_t dups_by_kill[MAX_KILLS + 1] = {0};
        size_t n = fixture_txn_count(f), dups = 0;
        for (size_t i = 0; i < n; i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                for (size_t r = 0; r < t.n_rcpts; r++) {
                        int idx = atoi(t.rcpts[r] + 1);
                        cr_assert(idx >= 0 && idx < messages, "unknown recipient %s", t.rcpts[r]);
                        if (seen[idx]++ == 0) {
                                first[idx] = i;
                                continue;
                        }
                        dups++;
                        int k = 0;
                        while (k < kills_done && boundary[k] <= first[idx])
                                k++;
                        dups_by_kill[k]++;
                }
                fixture_txn_clear(&t);
        }
        size_t lost = 0, worst = 0;
        for (int i = 0; i < messages; i++)
                lost += seen[i] == 0;
        for (int k = 0; k <= kills_done; k++)
                worst = dups_by_kill[k] > worst ? dups_by_kill[k] : worst;
        fprintf(stderr,
                "crash test: %d messages, %d kills (%d during start-up), %zu deliveries, "
                "%zu duplicates (at most %zu per kill, bound %d), %zu lost\n",
                messages, kills_done, early_kills, n, dups, worst, MAX_IN_FLIGHT, lost);
        cr_assert_eq(lost, 0, "%zu messages lost", lost);
        /* without a kill after it, a first delivery is never repeated */
        cr_assert_eq(dups_by_kill[kills_done], 0, "duplicates without a kill");
        for (int k = 0; k < kills_done; k++)
                cr_assert_leq(dups_by_kill[k], MAX_IN_FLIGHT, "kill %d: %zu duplicates", k + 1,
                              dups_by_kill[k]);
        free(first);
        free(seen);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
