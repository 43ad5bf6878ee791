/* tests/daemon/test_remove.c — delivered messages leave the spool off the loop.
 *
 * tarryd takes a delivered message out of active/ with one rename into tmp/
 * (a message file it holds open: one unlink) and deletes its files (frees
 * its blocks) on a thread of its own, a batch at a time. A kill -9
 * while removals are under way must resend nothing that had been removed and
 * leave nothing behind once tarryd has started again.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define MESSAGES        400
#define KILLS           3
#define MAX_CONNECTIONS 4
/* Only outcomes of attempts in flight (max_connections) can be lost to a
 * kill (at-least-once); the bound is 2 x max_connections as in test_crash.c,
 * where 17 for max_connections = 10 was seen once under ASan */
#define MAX_IN_FLIGHT (2 * MAX_CONNECTIONS)
#define DRAIN_S       300

/* Entries of spool/tmp (drafts, and messages being removed: del-ID-XXX). */
static size_t count_tmp(struct harness *h, const char *prefix)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/tmp", h->spool);
        DIR *d = opendir(path);
        cr_assert(d, "cannot open %s", path);
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
                if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, strlen(prefix)) == 0)
                        n++;
        closedir(d);
        return n;
}

static void wait_drained(struct harness *h)
{
        for (int64_t end = harness_now_us() + DRAIN_S * 1000000LL;
             harness_count_queued(h, "active") + harness_count_queued(h, "incoming") > 0 &&
             harness_now_us() < end;)
                harness_sleep_ms(10);
        cr_assert_eq(harness_count_queued(h, "active") + harness_count_queued(h, "incoming"), 0,
                     "mail left in the queue %d s after the last start", DRAIN_S);
}

Test(remove, kill_9_during_removals_resends_nothing_and_leaves_nothing_behind, .timeout = 900)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        harness_init_routed(&h, fixture_port(f), MAX_CONNECTIONS);
        for (int i = 0; i < MESSAGES; i++) {
                char rcpt[64], subject[32];
                snprintf(rcpt, sizeof(rcpt), "u%d@example.test", i);
                snprintf(subject, sizeof(subject), "remove %d", i);
                harness_send(&h, "alice@sender.test", rcpt, subject);
        }

        /* kill k lands after a quarter more of the messages went out: removals
         * run all the time by then */
        size_t boundary[KILLS];
        size_t removing = 0;
        for (int k = 0; k < KILLS; k++) {
                harness_start(&h);
                size_t target = fixture_txn_count(f) + MESSAGES / (KILLS + 2);
                for (int waited = 0; waited < 60000 && fixture_txn_count(f) < target; waited++)
                        harness_sleep_ms(1);
                cr_assert_geq(fixture_txn_count(f), target, "kill %d: deliveries stalled", k + 1);
                harness_kill9(&h);
                boundary[k] = fixture_txn_count(f);
                removing += count_tmp(&h, "del-");
        }
        harness_start(&h);
        wait_drained(&h);
        /* recovery at start removed what the kills left in tmp/, and the
         * remover finished its own batches */
        for (int waited = 0; waited < 30000 && count_tmp(&h, "") > 0; waited += 10)
                harness_sleep_ms(10);
        cr_assert_eq(count_tmp(&h, ""), 0, "%zu entries left in tmp/", count_tmp(&h, ""));

        /* each message arrived; a duplicate is only an attempt in flight at a kill */
        int seen[MESSAGES] = {0};
        size_t first[MESSAGES] = {0}, dups_by_kill[KILLS + 1] = {0};
        size_t n = fixture_txn_count(f);
        for (size_t i = 0; i < n; i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                for (size_t r = 0; r < t.n_rcpts; r++) {
                        int idx = atoi(t.rcpts[r] + 1);
                        cr_assert(idx >= 0 && idx < MESSAGES, "unknown recipient %s", t.rcpts[r]);
                        if (seen[idx]++ == 0) {
                                first[idx] = i;
                                continue;
                        }
                        int k = 0;
                        while (k < KILLS && boundary[k] <= first[idx])
                                k++;
                        dups_by_kill[k]++;
                }
                fixture_txn_clear(&t);
        }
        fprintf(stderr, "remove test: %zu deliveries, %zu removals caught in tmp/ by the kills\n",
                n, removing);
        for (int i = 0; i < MESSAGES; i++)
                cr_assert_eq(seen[i] > 0, true, "message %d was lost", i);
        cr_assert_eq(dups_by_kill[KILLS], 0, "duplicates without a kill");
        for (int k = 0; k < KILLS; k++)
                cr_assert_leq(dups_by_kill[k], MAX_IN_FLIGHT, "kill %d: %zu duplicates", k + 1,
                              dups_by_kill[k]);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* A kill right after the rename leaves the message as tmp/del-ID-XXX: it is
 * out of the queue. The next start removes it and sends nothing. */
Test(remove, a_message_caught_mid_removal_is_not_sent_again, .timeout = 120)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        char extra[256];
        snprintf(extra, sizeof(extra), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(f));
        harness_init(&h, extra);
        harness_start(&h);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_send(&h, "alice@sender.test", "u1@example.test", "caught");
        /* as the loop's rename leaves it: the whole message folder, now in tmp/ */
        char cmd[1200];
        snprintf(cmd, sizeof(cmd),
                 "set -e; cd %s; id=$(ls incoming); mv incoming/$id tmp/del-$id-ABC", h.spool);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        harness_give_spool(&h);
        harness_start(&h);
        for (int waited = 0; waited < 30000 && count_tmp(&h, "") > 0; waited += 10)
                harness_sleep_ms(10);
        cr_assert_eq(count_tmp(&h, ""), 0, "tmp/ not emptied at start");
        /* a message sent after the start arrives, and only it */
        harness_send(&h, "alice@sender.test", "u2@example.test", "after");
        for (int waited = 0; waited < 60000 && fixture_txn_count(f) < 1; waited += 10)
                harness_sleep_ms(10);
        cr_assert_eq(fixture_txn_count(f), 1, "nothing delivered after the start");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "u2@example.test", "a removed message was sent again");
        fixture_txn_clear(&t);
        wait_drained(&h);
        cr_assert_eq(fixture_txn_count(f), 1, "a removed message was sent again");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
