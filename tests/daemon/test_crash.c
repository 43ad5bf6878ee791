/* tests/daemon/test_crash.c — kill -9 tarryd in the middle of a run of
 * deliveries, again and again: every message still arrives, none is lost,
 * and duplicates stay within what was in flight at each kill. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define MESSAGES        2000
#define KILLS           5
#define MAX_CONNECTIONS 10
/* tarryd starts at most 2 × max_connections attempts ahead of completion */
#define MAX_IN_FLIGHT (2 * MAX_CONNECTIONS)

Test(crash, kill_9_during_deliveries_loses_nothing, .timeout = 240)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        char extra[512];
        snprintf(extra, sizeof(extra),
                 "[smtp]\nmax_connections = %d\n[transport]\nexample.test = [127.0.0.1]:%u\n",
                 MAX_CONNECTIONS, fixture_port(f));
        harness_init(&h, extra);
        harness_start(&h); /* creates the spool */
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);

        /* one recipient per message: the recipient names the message */
        for (int i = 0; i < MESSAGES; i++) {
                char rcpt[64], subject[32];
                snprintf(rcpt, sizeof(rcpt), "u%d@example.test", i);
                snprintf(subject, sizeof(subject), "crash %d", i);
                harness_send(&h, "alice@sender.test", rcpt, subject);
        }

        srand(42);
        size_t kills_done = 0;
        for (int k = 0; k < KILLS; k++) {
                harness_start(&h);
                size_t before = fixture_txn_count(f);
                /* let a few hundred deliveries happen, then kill at a random moment */
                size_t target = before + 100 + (size_t)(rand() % 200);
                for (int i = 0; i < 2000 && fixture_txn_count(f) < target; i++)
                        harness_sleep_ms(1);
                harness_sleep_ms(rand() % 20);
                harness_kill9(&h);
                kills_done++;
                if (fixture_txn_count(f) >= MESSAGES)
                        break;
        }
        harness_start(&h);
        for (int i = 0; i < 3000; i++) {
                if (harness_count_queued(&h, "active") + harness_count_queued(&h, "incoming") == 0)
                        break;
                harness_sleep_ms(10);
        }
        cr_assert_eq(harness_count_queued(&h, "active") + harness_count_queued(&h, "incoming"), 0,
                     "mail left in the queue");
        harness_sleep_ms(200);

        static int seen[MESSAGES];
        memset(seen, 0, sizeof(seen));
        size_t n = fixture_txn_count(f), dups = 0;
        for (size_t i = 0; i < n; i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                for (size_t r = 0; r < t.n_rcpts; r++) {
                        int idx = atoi(t.rcpts[r] + 1);
                        cr_assert(idx >= 0 && idx < MESSAGES);
                        if (seen[idx]++)
                                dups++;
                }
                fixture_txn_clear(&t);
        }
        size_t lost = 0;
        for (int i = 0; i < MESSAGES; i++)
                lost += seen[i] == 0;
        fprintf(stderr,
                "crash test: %d messages, %zu kills, %zu deliveries, %zu duplicates, %zu lost\n",
                MESSAGES, kills_done, n, dups, lost);
        cr_assert_eq(lost, 0, "%zu messages lost", lost);
        cr_assert_leq(dups, kills_done * MAX_IN_FLIGHT, "%zu duplicates after %zu kills", dups,
                      kills_done);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
