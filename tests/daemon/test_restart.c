/* tests/daemon/test_restart.c — tarryd killed with -9 while its delivery
 * workers are busy, and started again at once, again and again: every start
 * succeeds (the spool lock is free, or freed within a bound the new tarryd
 * waits), and every message is delivered exactly once (a worker orphaned by
 * the kill sends nothing).
 *
 * The receiver holds each transaction at DATA for HOLD_MS, longer than a
 * cycle of start and kill: no transaction a killed tarryd started can end
 * before the kill (so no duplicate is owed to at-least-once), and a worker
 * that outlived its tarryd would finish its transaction HOLD_MS later, after
 * the new tarryd sent the same message: a duplicate the test counts.
 *
 * Also: a lock held after the tarryd it names is gone is waited for (and the
 * wait logged), and one held past the bound (10 s) ends the start with 75 and
 * a message that says what was found.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define MESSAGES        20
#define RESTARTS        40
#define MAX_CONNECTIONS 10
#define HOLD_MS         8000  /* the receiver's pause before 354 during the kills */
#define BUSY_MS         30000 /* bound for a started tarryd to open a connection */
#define DRAIN_MS        120000

Test(restart, kill_9_with_busy_workers_then_start_at_once_works_and_sends_each_message_once,
     .timeout = 600)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        char hold[32];
        snprintf(hold, sizeof(hold), "%d", HOLD_MS);
        cr_assert_eq(fixture_set(f, "delay:data", hold), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        harness_init_routed(&h, fixture_port(f), MAX_CONNECTIONS);
        for (int i = 0; i < MESSAGES; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "u%d@example.test", i);
                harness_send(&h, "alice@sender.test", rcpt, "restart");
        }

        srand(7);
        for (int k = 0; k < RESTARTS; k++) {
                size_t conns = fixture_connection_count(f);
                harness_start(&h);
                /* the first worker busy (held at DATA), the others still being
                 * spawned: a kill lands in a burst of posix_spawn calls */
                for (int64_t end = harness_now_us() + BUSY_MS * 1000LL;
                     fixture_connection_count(f) == conns && harness_now_us() < end;)
                        harness_sleep_ms(2);
                cr_assert_gt(fixture_connection_count(f), conns,
                             "start %d: no delivery began within %d ms", k + 1, BUSY_MS);
                harness_sleep_ms(rand() % 30);
                harness_kill9(&h);
                /* and at once again: the next start */
        }
        cr_assert_eq(fixture_txn_count(f), 0,
                     "a transaction ended during the kills: a worker outlived its tarryd (or a "
                     "cycle took HOLD_MS)");

        /* the receiver answers at once from its next connection on; a worker
         * that survived a kill is still held on an older one */
        cr_assert_eq(fixture_set(f, "delay:data", "0"), 0);
        harness_start(&h);
        cr_assert_eq(fixture_wait_txns(f, MESSAGES, DRAIN_MS), 0, "%zu of %d messages delivered",
                     fixture_txn_count(f), MESSAGES);
        for (int64_t end = harness_now_us() + DRAIN_MS * 1000LL;
             harness_count_queued(&h, "active") + harness_count_queued(&h, "incoming") > 0 &&
             harness_now_us() < end;)
                harness_sleep_ms(20);
        cr_assert_eq(harness_count_queued(&h, "active") + harness_count_queued(&h, "incoming"), 0,
                     "mail left in the queue");
        /* anything an orphaned worker still sends arrives within HOLD_MS */
        harness_sleep_ms(HOLD_MS + 2000);
        int times[MESSAGES] = {0};
        size_t n = fixture_txn_count(f);
        for (size_t i = 0; i < n; i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                for (size_t r = 0; r < t.n_rcpts; r++) {
                        int idx = atoi(t.rcpts[r] + 1);
                        cr_assert(idx >= 0 && idx < MESSAGES, "unknown recipient %s", t.rcpts[r]);
                        times[idx]++;
                }
                fixture_txn_clear(&t);
        }
        for (int i = 0; i < MESSAGES; i++)
                cr_assert_eq(times[i], 1, "message %d arrived %d times", i, times[i]);
        fprintf(stderr,
                "restart test: %d kills -9 with workers busy; %zu start(s) found "
                "state/tarryd.lock still held and waited; each message arrived once\n",
                RESTARTS, harness_log_count(&h, "was still locked"));
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* A process that holds state/tarryd.lock, which names `named`, until it is
 * killed or hold_ms have passed; returns once it holds it. */
static pid_t hold_lock(struct harness *h, pid_t named, int hold_ms)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/state/tarryd.lock", h->spool);
        int ready[2];
        cr_assert_eq(pipe(ready), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                close(ready[0]);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(path, O_RDWR | O_CLOEXEC);
                if (fd < 0 || flock(fd, LOCK_EX) < 0 || ftruncate(fd, 0) < 0 ||
                    dprintf(fd, "%d\n", (int)named) < 0)
                        _exit(1);
                if (write(ready[1], "x", 1) != 1)
                        _exit(1);
                harness_sleep_ms(hold_ms);
                _exit(0);
        }
        close(ready[1]);
        char c;
        cr_assert_eq(read(ready[0], &c, 1), 1, "the lock holder could not take %s", path);
        close(ready[0]);
        return pid;
}

/* The pid of a process that has exited and been reaped. */
static pid_t gone_pid(void)
{
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
                _exit(0);
        waitpid(pid, NULL, 0);
        return pid;
}

/* A spool laid out by a first run, tarryd stopped. */
static void laid_out(struct harness *h)
{
        harness_init(h, NULL);
        harness_start(h);
        cr_assert_eq(harness_stop(h, SIGTERM, 3000), 0);
}

Test(restart, a_lock_still_held_after_its_tarryd_is_gone_is_waited_for_and_said, .timeout = 60)
{
        struct harness h;
        laid_out(&h);
        pid_t dead = gone_pid();
        pid_t holder = hold_lock(&h, dead, 1000);
        harness_start(&h); /* waits for the lock, up to 10 s */
        char want[200];
        snprintf(want, sizeof(want),
                 "state/tarryd.lock was still locked (pid %d, which took it, "
                 "is no running tarryd",
                 (int)dead);
        cr_assert(harness_log_contains(&h, want), "expected '%s' in %s", want, h.log);
        cr_assert(harness_log_contains(&h, "; free after "));
        waitpid(holder, NULL, 0);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
}

Test(restart, a_lock_held_past_the_bound_gives_up_with_75_naming_what_it_found, .timeout = 90)
{
        struct harness h;
        laid_out(&h);
        pid_t dead = gone_pid();
        pid_t holder = hold_lock(&h, dead, 120000);
        int64_t t0 = harness_now_us();
        char out[2048];
        int code = harness_run_tarryd(&h, h.conf, true, 60000, out, sizeof(out));
        int64_t took_ms = (harness_now_us() - t0) / 1000;
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);
        cr_assert_eq(code, 75, "tarryd: exit %d after %lld ms: %s", code, (long long)took_ms, out);
        cr_assert_geq(took_ms, 9000, "gave up after %lld ms, before its 10 s", (long long)took_ms);
        char want[600];
        snprintf(want, sizeof(want),
                 "tarryd: spool %s: state/tarryd.lock still locked after 10 s (pid %d, which took "
                 "it, is no running tarryd",
                 h.spool, (int)dead);
        cr_assert(strstr(out, want), "expected '%s' in: %s", want, out);
        harness_cleanup(&h);
}
