/* tests/smtpc/test_pool.c — delivery attempts through worker processes (smtpc_pool_*). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "common/fileio.h"
#include "smtpc/ipc.h"
#include "tests/fixture/fixture.h"
#include "tests/smtpc/harness.h"

#define BODY "From: a@example.org\r\nTo: b@x.test\r\nSubject: t\r\n\r\nhello\r\n"

/* One pool on its own loop, with the config in a file the workers read. */
struct rig {
        sd_event *e;
        struct smtpc_pool *pool;
        struct tarry_config *cfg;
        char path[64];
        char worker[PATH_MAX];
};

/* pool-worker sits next to this test binary. */
static void worker_path(char *out)
{
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        cr_assert_gt(n, 0);
        self[n] = '\0';
        snprintf(out, PATH_MAX, "%s/pool-worker", dirname(self));
        cr_assert_eq(access(out, X_OK), 0, "%s not built", out);
}

static void write_cfg(struct rig *r, const char *text)
{
        int fd = open(r->path, O_WRONLY | O_TRUNC);
        cr_assert_geq(fd, 0);
        cr_assert_eq(fd_write_all(fd, text, strlen(text)), 0);
        close(fd);
        char err[512];
        struct tarry_config *cfg = NULL;
        cr_assert_eq(cfg_load(r->path, &cfg, err, sizeof(err)), 0, "%s", err);
        r->cfg = cfg;
}

/* Config: smtp settings (smtp_extra) and transport rows (transport). */
static char *cfg_text(const char *main_extra, const char *smtp_extra, const char *transport)
{
        char *s = NULL;
        cr_assert_geq(asprintf(&s,
                               "[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n%s\n"
                               "[smtp]\ntls = none\nconnect_timeout = 2\ncommand_timeout = 5\n"
                               "data_timeout = 10\n%s\n[transport]\n%s\n",
                               main_extra ? main_extra : "", smtp_extra ? smtp_extra : "",
                               transport),
                      0);
        return s;
}

static char *to_fixture(struct fixture *f, const char *smtp_extra)
{
        char row[128];
        snprintf(row, sizeof(row), "* = [%s]:%u tls=none", fixture_ip(f), fixture_port(f));
        return cfg_text(NULL, smtp_extra, row);
}

static void rig_start_with(struct rig *r, char *text, const char *const *argv, uint64_t deadline_us,
                           uint64_t idle_us)
{
        memset(r, 0, sizeof(*r));
        snprintf(r->path, sizeof(r->path), "/tmp/smtpc-pool-XXXXXX");
        int fd = mkstemp(r->path);
        cr_assert_geq(fd, 0);
        close(fd);
        write_cfg(r, text);
        free(text);
        worker_path(r->worker);
        const char *def[] = {r->worker, NULL};
        struct smtpc_pool_options opt = {
            .worker_argv = argv ? argv : def,
            .config_path = r->path,
            .idle_timeout_us = idle_us,
            .deadline_us = deadline_us,
        };
        cr_assert_eq(sd_event_new(&r->e), 0);
        cr_assert_eq(smtpc_pool_new(r->e, r->cfg, &opt, &r->pool), 0);
}

static void rig_start(struct rig *r, char *text)
{
        rig_start_with(r, text, NULL, 0, 0);
}

static void rig_stop(struct rig *r)
{
        smtpc_pool_free(r->pool);
        sd_event_unref(r->e);
        cfg_free(r->cfg);
        unlink(r->path);
}

/* Starts an attempt; prefix (or NULL): header lines sent ahead of body. */
static void submit_prefixed(struct rig *r, const char *const *rcpts, size_t n, const char *prefix,
                            const char *body, struct outcome *o)
{
        int fd = test_body(body, strlen(body));
        struct smtpc_request req = {
            .queue_id = "POOLTEST",
            .sender = "a@example.org",
            .rcpts = rcpts,
            .n_rcpts = n,
            .body_fd = fd,
            .body_size = strlen(body),
            .prefix = prefix,
            .done = outcome_capture,
            .userdata = o,
        };
        memset(o, 0, sizeof(*o));
        cr_assert_eq(smtpc_pool_attempt_start(r->pool, &req), 0);
        close(fd);
        cr_assert(!o->called, "done() must not be called from inside smtpc_pool_attempt_start");
}

static void submit(struct rig *r, const char *const *rcpts, size_t n, const char *body,
                   struct outcome *o)
{
        submit_prefixed(r, rcpts, n, NULL, body, o);
}

/* Run the loop until every outcome is called or timeout_ms passes. */
static bool run_until(struct rig *r, struct outcome *const *os, size_t n, int timeout_ms)
{
        int64_t end = now_monotonic_us() + (int64_t)timeout_ms * 1000;
        for (;;) {
                size_t called = 0;
                for (size_t i = 0; i < n; i++)
                        called += os[i]->called;
                if (called == n)
                        return true;
                if (now_monotonic_us() >= end)
                        return false;
                sd_event_run(r->e, 50000);
        }
}

static void run_for(struct rig *r, int ms)
{
        int64_t end = now_monotonic_us() + (int64_t)ms * 1000;
        while (now_monotonic_us() < end)
                sd_event_run(r->e, 20000);
}

static void deliver_one(struct rig *r, const char *const *rcpts, size_t n, const char *body,
                        struct outcome *o)
{
        submit(r, rcpts, n, body, o);
        struct outcome *os[] = {o};
        cr_assert(run_until(r, os, 1, 15000), "attempt did not finish within 15 s");
}

Test(smtpc_pool, attempts_through_the_pool_reach_the_server_byte_exact)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        const char *body = "Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nlast line "
                           "without dot\r\n\xc3\xa9t\xe9\r\n";
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        deliver_one(&r, rcpts, 1, body, &o);
        cr_assert_eq(o.calls, 1);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE, "%s", o.text);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED);
        cr_assert_str_eq(o.r[0].address, "user@x.test");
        struct fixture_txn t;
        test_received(f, body, strlen(body), &t);
        fixture_txn_clear(&t);
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

/* tarryd's added header lines (Received:, DKIM-Signature:) travel as the
 * request's prefix; the worker sends them ahead of the body file: the server
 * gets prefix + body byte exact, a dot opening a body line stuffed, and
 * SIZE= counts both. */
Test(smtpc_pool, the_prefix_goes_ahead_of_the_body_and_counts_in_size)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        const char *prefix = "Received: from client by tarry; Mon, 7 Dec 2026 19:00:00 +0000\r\n"
                             "X-Original-To: user@x.test\r\n";
        const char *body = "Subject: prefixed\r\n\r\n.dot line\r\nend\r\n";
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        submit_prefixed(&r, rcpts, 1, prefix, body, &o);
        struct outcome *os[] = {&o};
        cr_assert(run_until(&r, os, 1, 15000), "attempt did not finish within 15 s");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.text);
        char whole[512];
        snprintf(whole, sizeof(whole), "%s%s", prefix, body);
        struct fixture_txn t;
        test_received(f, whole, strlen(whole), &t);
        char size[32];
        snprintf(size, sizeof(size), "SIZE=%zu", strlen(whole));
        cr_assert(strstr(t.mail_params, size), "%s", t.mail_params);
        fixture_txn_clear(&t);
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, per_recipient_results_and_attempt_details_survive_the_worker_boundary)
{
        const char *kv[] = {"rcpt:grey@x.test",
                            "451-4.7.1 Greylisted\n451 4.7.1 try again in 300 seconds \xe9\x01",
                            "rcpt:nobody@x.test", "550 5.1.1 <nobody@x.test>: User unknown", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        const char *rcpts[] = {"ok@x.test", "grey@x.test", "nobody@x.test"};
        struct outcome o;
        deliver_one(&r, rcpts, 3, BODY, &o);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE);
        cr_assert_eq(o.n, 3);
        cr_assert_str_eq(o.r[0].address, "ok@x.test");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED);
        cr_assert_eq(o.r[0].code, 250);
        cr_assert_eq(o.r[1].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_eq(o.r[1].code, 451);
        cr_assert_str_eq(o.r[1].enhanced, "4.7.1");
        cr_assert_str_eq(o.r[1].text,
                         "451-4.7.1 Greylisted\n451 4.7.1 try again in 300 seconds \xe9\x01");
        cr_assert_eq(o.r[2].outcome, SMTPC_RCPT_FAILED);
        cr_assert_str_eq(o.r[2].text, "550 5.1.1 <nobody@x.test>: User unknown");
        cr_assert_str_eq(o.mx_ip, "127.0.0.1");
        cr_assert_eq(o.port, fixture_port(f));
        char dest[64];
        snprintf(dest, sizeof(dest), "[127.0.0.1]:%u", fixture_port(f));
        cr_assert_str_eq(o.destination, dest);
        cr_assert(strstr(o.transcript, "> RCPT TO:<grey@x.test>"), "%s", o.transcript);
        cr_assert(strstr(o.transcript, "< 550 5.1.1"), "%s", o.transcript);
        cr_assert_gt(o.total_us, 0);
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, whose_words_and_how_far_cross_the_worker_boundary_typed)
{
        /* RCPT refused, DATA accepted, the final dot deferred: each recipient
         * says the words are the server's and at which command they came */
        const char *kv[] = {"rcpt:nobody@x.test", "550 5.1.1 <nobody@x.test>: User unknown", "dot",
                            "451 4.3.0 queue file write error", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        const char *rcpts[] = {"ok@x.test", "nobody@x.test"};
        struct outcome o;
        deliver_one(&r, rcpts, 2, BODY, &o);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED, "%s", o.r[0].text);
        cr_assert_eq(o.r[0].origin, OUTCOME_FROM_SERVER);
        cr_assert_eq(o.r[0].local, OUTCOME_LOCAL_NONE);
        cr_assert_eq(o.r[0].phase, OUTCOME_PHASE_DOT, "%s", outcome_phase_name(o.r[0].phase));
        cr_assert_eq(o.r[1].origin, OUTCOME_FROM_SERVER);
        cr_assert_eq(o.r[1].phase, OUTCOME_PHASE_RCPT, "%s", outcome_phase_name(o.r[1].phase));
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, a_refused_connection_is_tarrys_own_connect_failure_not_a_reply)
{
        struct fixture *f = test_fixture(NULL, NULL);
        char row[128];
        snprintf(row, sizeof(row), "* = [127.0.0.1]:%u tls=none", fixture_port(f) == 1 ? 2 : 1);
        struct rig r;
        rig_start(&r, cfg_text(NULL, NULL, row));
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        deliver_one(&r, rcpts, 1, BODY, &o);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.origin, OUTCOME_FROM_TARRY);
        cr_assert_eq(o.local, OUTCOME_LOCAL_CONNECT, "%s", outcome_local_name(o.local));
        cr_assert_eq(o.phase, OUTCOME_PHASE_CONNECT, "%s", outcome_phase_name(o.phase));
        cr_assert_eq(o.r[0].origin, OUTCOME_FROM_TARRY);
        cr_assert_eq(o.r[0].local, OUTCOME_LOCAL_CONNECT);
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, many_long_replies_cross_the_socket_intact)
{
        /* 40 recipients × a ~3.9 KB reply each: a result of ~160 KB plus the transcript */
        char reply[4000];
        memset(reply, 'z', sizeof(reply));
        memcpy(reply, "452 4.2.2 ", 10);
        reply[sizeof(reply) - 1] = '\0';
        const char *kv[] = {"rcpt", reply, NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        char addr[40][32];
        const char *rcpts[40];
        for (int i = 0; i < 40; i++) {
                snprintf(addr[i], sizeof(addr[i]), "u%d@x.test", i);
                rcpts[i] = addr[i];
        }
        struct outcome o;
        deliver_one(&r, rcpts, 40, BODY, &o);
        cr_assert_eq(o.n, 40);
        for (int i = 0; i < 8; i++) {
                cr_assert_eq(o.r[i].outcome, SMTPC_RCPT_DEFERRED);
                cr_assert_str_eq(o.r[i].text, reply);
                cr_assert_str_eq(o.r[i].address, addr[i]);
        }
        cr_assert_geq(strlen(o.transcript), SMTPC_TRANSCRIPT_MAX - 4096);
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, receiver_hanging_after_the_final_dot_does_not_delay_a_healthy_one)
{
        const char *hang[] = {"hang", "dot", NULL};
        struct fixture *bad = test_fixture(NULL, hang);
        struct fixture *good = test_fixture(NULL, NULL);
        char rows[256];
        snprintf(rows, sizeof(rows),
                 "hung.test = [127.0.0.1]:%u tls=none\n"
                 "ok.test = [127.0.0.1]:%u tls=none",
                 fixture_port(bad), fixture_port(good));
        struct rig r;
        rig_start(&r, cfg_text(NULL, NULL, rows));
        const char *to_bad[] = {"user@hung.test"}, *to_good[] = {"user@ok.test"};
        struct outcome ob, og;
        submit(&r, to_bad, 1, BODY, &ob);
        run_for(&r, 500); /* the hung attempt is now waiting for the dot's reply */
        cr_assert_not(ob.called);
        int64_t t0 = now_monotonic_us();
        submit(&r, to_good, 1, BODY, &og);
        struct outcome *os[] = {&og};
        cr_assert(run_until(&r, os, 1, 3000));
        int64_t took = now_monotonic_us() - t0;
        cr_assert_lt(took, 1000000, "healthy delivery took %lld us", (long long)took);
        cr_assert_eq(og.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", og.r[0].text);
        cr_assert_not(ob.called, "the hung attempt must still be pending");
        cr_assert_eq(smtpc_pool_pending(r.pool), 1);
        outcome_clear(&og);
        rig_stop(&r);
        fixture_free(bad);
        fixture_free(good);
}

/* The pid of this process's child running prog (comm), or 0. */
static pid_t child_named(const char *prog)
{
        DIR *d = opendir("/proc");
        pid_t found = 0;
        struct dirent *de;
        while (d && !found && (de = readdir(d))) {
                char path[300], buf[512];
                snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
                FILE *fp = fopen(path, "r");
                if (!fp)
                        continue;
                int pid, ppid;
                char comm[64];
                if (fgets(buf, sizeof(buf), fp) &&
                    sscanf(buf, "%d (%63[^)]) %*c %d", &pid, comm, &ppid) == 3 &&
                    ppid == getpid() && strcmp(comm, prog) == 0)
                        found = pid;
                fclose(fp);
        }
        if (d)
                closedir(d);
        return found;
}

Test(smtpc_pool, killed_worker_yields_a_temporary_failure_never_a_lost_callback)
{
        const char *kv[] = {"delay:dot", "3000", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        submit(&r, rcpts, 1, BODY, &o);
        run_for(&r, 500);
        pid_t pid = child_named("pool-worker");
        cr_assert_gt(pid, 0, "no worker running");
        kill(pid, SIGKILL);
        struct outcome *os[] = {&o};
        cr_assert(run_until(&r, os, 1, 2000));
        cr_assert_eq(o.calls, 1);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_str_eq(o.text, "451 4.3.0 delivery worker died: signal 9");
        cr_assert_eq(o.origin, OUTCOME_FROM_TARRY);
        cr_assert_eq(o.local, OUTCOME_LOCAL_WORKER);
        cr_assert_eq(o.r[0].local, OUTCOME_LOCAL_WORKER);
        run_for(&r, 200);
        cr_assert_eq(smtpc_pool_workers(r.pool), 0, "the dead worker is reaped");
        cr_assert_eq(smtpc_pool_pending(r.pool), 0);
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, worker_sending_garbage_yields_a_temporary_failure)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        const char *argv[] = {"/bin/sh", "-c", "printf 'not json' >&3; sleep 10", "sh", NULL};
        rig_start_with(&r, to_fixture(f, NULL), argv, 0, 0);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        deliver_one(&r, rcpts, 1, BODY, &o);
        cr_assert_eq(o.calls, 1);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert_str_eq(o.text, "451 4.3.0 delivery worker sent an invalid result");
        run_for(&r, 300);
        cr_assert_eq(smtpc_pool_workers(r.pool), 0, "the lying worker is killed and reaped");
        rig_stop(&r);
        outcome_clear(&o);
        fixture_free(f);
}

Test(smtpc_pool, worker_past_its_hard_deadline_is_killed_with_a_temporary_failure)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        const char *argv[] = {"/bin/sh", "-c", "exec sleep 30", "sh", NULL};
        rig_start_with(&r, to_fixture(f, NULL), argv, 1000000, 0);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        int64_t t0 = now_monotonic_us();
        deliver_one(&r, rcpts, 1, BODY, &o);
        int64_t took = now_monotonic_us() - t0;
        cr_assert_geq(took, 900000);
        cr_assert_lt(took, 3000000);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert(strstr(o.text, "hard deadline"), "%s", o.text);
        run_for(&r, 300);
        cr_assert_eq(smtpc_pool_workers(r.pool), 0);
        rig_stop(&r);
        outcome_clear(&o);
        fixture_free(f);
}

Test(smtpc_pool, worker_that_cannot_read_its_config_fails_the_attempt_temporarily)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        cr_assert_eq(truncate(r.path, 0), 0);
        int fd = open(r.path, O_WRONLY);
        cr_assert_eq(fd_write_all(fd, "[main]\nbogus key\n", 17), 0);
        close(fd);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        deliver_one(&r, rcpts, 1, BODY, &o);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert_str_eq(o.text, "451 4.3.0 delivery worker exited with status 78");
        rig_stop(&r);
        outcome_clear(&o);
        fixture_free(f);
}

Test(smtpc_pool, consecutive_messages_to_one_destination_reuse_one_worker_and_connection)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        rig_start(&r, to_fixture(f, "destination_concurrency = 1"));
        const char *rcpts[] = {"user@x.test"};
        for (int i = 0; i < 5; i++) {
                struct outcome o;
                deliver_one(&r, rcpts, 1, BODY, &o);
                cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[0].text);
                outcome_clear(&o);
        }
        cr_assert_eq(fixture_connection_count(f), 1);
        cr_assert_eq(smtpc_pool_workers(r.pool), 1);
        rig_stop(&r);
        fixture_free(f);
}

/* Submit n attempts at once; run to completion sampling the worker count. */
static void run_batch(struct rig *r, const char *const *rcpts, int n, size_t *max_workers,
                      int64_t *took_us)
{
        struct outcome o[16];
        cr_assert_leq(n, 16);
        int64_t t0 = now_monotonic_us();
        for (int i = 0; i < n; i++) {
                submit(r, &rcpts[i], 1, BODY, &o[i]);
        }
        cr_assert_eq(smtpc_pool_pending(r->pool), (size_t)n);
        *max_workers = 0;
        int64_t end = t0 + 20000000;
        size_t called;
        do {
                sd_event_run(r->e, 10000);
                size_t w = smtpc_pool_workers(r->pool);
                *max_workers = w > *max_workers ? w : *max_workers;
                called = 0;
                for (int i = 0; i < n; i++)
                        called += o[i].called;
        } while (called < (size_t)n && now_monotonic_us() < end);
        *took_us = now_monotonic_us() - t0;
        for (int i = 0; i < n; i++) {
                cr_assert_eq(o[i].calls, 1);
                cr_assert_eq(o[i].r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o[i].r[0].text);
                outcome_clear(&o[i]);
        }
        cr_assert_eq(smtpc_pool_pending(r->pool), 0);
}

Test(smtpc_pool, runs_attempts_for_one_destination_side_by_side_as_the_caller_asks)
{
        /* destination windows are the scheduler's (tests/scheduler, test_sched.c
         * and tests/daemon/test_concurrency.c): the pool runs what it is
         * given, bounded only by its max_connections processes */
        const char *kv[] = {"delay:dot", "600", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct rig r;
        rig_start(&r, to_fixture(f, "destination_concurrency = 1\nmax_connections = 4"));
        const char *rcpts[4];
        for (int i = 0; i < 4; i++)
                rcpts[i] = "user@x.test";
        size_t max_workers;
        int64_t took;
        run_batch(&r, rcpts, 4, &max_workers, &took);
        cr_assert_gt(fixture_max_open_connections(f), 1, "no second limit in the pool");
        cr_assert_leq(max_workers, 4);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, max_connections_limits_busy_workers_across_destinations)
{
        const char *kv[] = {"delay:dot", "300", NULL};
        struct fixture *a = test_fixture(NULL, kv), *b = test_fixture(NULL, kv);
        char rows[256];
        snprintf(rows, sizeof(rows),
                 "a.test = [127.0.0.1]:%u tls=none\n"
                 "b.test = [127.0.0.1]:%u tls=none",
                 fixture_port(a), fixture_port(b));
        struct rig r;
        rig_start(&r, cfg_text(NULL, "max_connections = 2\ndestination_concurrency = 2", rows));
        const char *rcpts[8];
        for (int i = 0; i < 8; i++)
                rcpts[i] = i % 2 ? "user@a.test" : "user@b.test";
        size_t max_workers;
        int64_t took;
        run_batch(&r, rcpts, 8, &max_workers, &took);
        cr_assert_leq(max_workers, 2);
        cr_assert_geq(took, 4 * 300000, "8 messages, 2 at a time, 300 ms each");
        cr_assert_eq(fixture_txn_count(a) + fixture_txn_count(b), 8);
        rig_stop(&r);
        fixture_free(a);
        fixture_free(b);
}

Test(smtpc_pool, reload_retires_idle_workers_and_new_ones_read_the_new_config)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        deliver_one(&r, rcpts, 1, BODY, &o);
        outcome_clear(&o);
        cr_assert_eq(smtpc_pool_workers(r.pool), 1);

        struct tarry_config *old = r.cfg;
        char row[128];
        snprintf(row, sizeof(row), "* = [%s]:%u tls=none", fixture_ip(f), fixture_port(f));
        /* the new file says another HELO name */
        char *text = cfg_text("", NULL, row);
        char *p = strstr(text, "client.test");
        memcpy(p, "reload.test", 11);
        int fd = open(r.path, O_WRONLY | O_TRUNC);
        cr_assert_eq(fd_write_all(fd, text, strlen(text)), 0);
        close(fd);
        free(text);
        char err[256];
        cr_assert_eq(cfg_load(r.path, &r.cfg, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(smtpc_pool_set_config(r.pool, r.cfg, r.path), 0);
        cfg_free(old);
        run_for(&r, 500);
        cr_assert_eq(smtpc_pool_workers(r.pool), 0, "the idle worker retired");

        deliver_one(&r, rcpts, 1, BODY, &o);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED);
        struct fixture_txn t;
        cr_assert_eq(fixture_wait_txns(f, 2, 2000), 0);
        cr_assert_eq(fixture_txn_get(f, 1, &t), 0);
        cr_assert_str_eq(t.helo, "reload.test");
        fixture_txn_clear(&t);
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, idle_workers_exit_after_the_idle_timeout)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        rig_start_with(&r, to_fixture(f, NULL), NULL, 0, 300000);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        deliver_one(&r, rcpts, 1, BODY, &o);
        outcome_clear(&o);
        cr_assert_eq(smtpc_pool_workers(r.pool), 1);
        run_for(&r, 1000);
        cr_assert_eq(smtpc_pool_workers(r.pool), 0);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, abort_all_answers_every_running_and_queued_attempt)
{
        const char *kv[] = {"hang", "dot", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct rig r;
        rig_start(&r, to_fixture(f, "destination_concurrency = 1"));
        const char *rcpts[] = {"user@x.test"};
        struct outcome o[3];
        for (int i = 0; i < 3; i++)
                submit(&r, rcpts, 1, BODY, &o[i]);
        run_for(&r, 500);
        cr_assert_eq(smtpc_pool_pending(r.pool), 3);
        smtpc_pool_abort_all(r.pool);
        for (int i = 0; i < 3; i++) {
                cr_assert_eq(o[i].calls, 1);
                cr_assert_eq(o[i].status, SMTPC_ATTEMPT_TEMPFAIL);
                cr_assert_str_eq(o[i].text, "451 4.3.0 delivery aborted: shutting down");
                cr_assert_eq(o[i].r[0].outcome, SMTPC_RCPT_DEFERRED);
                outcome_clear(&o[i]);
        }
        cr_assert_eq(smtpc_pool_pending(r.pool), 0);
        run_for(&r, 300);
        cr_assert_eq(smtpc_pool_workers(r.pool), 0, "the busy worker was killed and reaped");
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, attempt_start_rejects_requests_without_recipients_or_callback)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        const char *rcpts[] = {"user@x.test"};
        struct smtpc_request req = {
            .rcpts = rcpts, .n_rcpts = 0, .body_fd = 0, .done = outcome_capture};
        cr_assert_eq(smtpc_pool_attempt_start(r.pool, &req), -EINVAL);
        req.n_rcpts = 1;
        req.done = NULL;
        cr_assert_eq(smtpc_pool_attempt_start(r.pool, &req), -EINVAL);
        req.done = outcome_capture;
        req.body_fd = -1;
        cr_assert_eq(smtpc_pool_attempt_start(r.pool, &req), -EBADF);
        cr_assert_eq(smtpc_pool_pending(r.pool), 0);
        rig_stop(&r);
        fixture_free(f);
}

Test(smtpc_pool, reload_lets_a_busy_worker_finish_its_attempt_then_retires_it)
{
        const char *kv[] = {"delay:dot", "600", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct rig r;
        rig_start(&r, to_fixture(f, NULL));
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        submit(&r, rcpts, 1, BODY, &o);
        run_for(&r, 300);
        cr_assert_eq(smtpc_pool_workers(r.pool), 1);
        cr_assert_eq(smtpc_pool_set_config(r.pool, r.cfg, NULL), 0, "NULL path: cfg->path");
        struct outcome *os[] = {&o};
        cr_assert(run_until(&r, os, 1, 5000));
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[0].text);
        run_for(&r, 300);
        cr_assert_eq(smtpc_pool_workers(r.pool), 0, "retired after its attempt");
        outcome_clear(&o);
        rig_stop(&r);
        fixture_free(f);
}

/* kill -9 of tarryd just after it spawned a worker and sent it a request,
 * before the worker set PR_SET_PDEATHSIG: the worker finds its parent is
 * not the process that made its socket, and exits without reading the
 * request (tarryd's successor sends that message; the orphan must not).
 * Before, it delivered the message while a copy of the pool's end of the
 * socket lived on elsewhere. */
Test(smtpc_pool, a_worker_whose_pool_died_before_it_started_sends_nothing, .timeout = 60)
{
        struct fixture *f = test_fixture(NULL, NULL);
        char path[64] = "/tmp/smtpc-orphan-XXXXXX";
        int cfd = mkstemp(path);
        cr_assert_geq(cfd, 0);
        char *text = to_fixture(f, NULL);
        cr_assert_eq(fd_write_all(cfd, text, strlen(text)), 0);
        free(text);
        close(cfd);
        char worker[PATH_MAX];
        worker_path(worker);
        /* the orphan is reparented to this process, which can then reap it */
        cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
        int report[2]; /* the pool's process tells us its worker's pid */
        cr_assert_eq(pipe(report), 0);
        pid_t pool = fork();
        cr_assert_geq(pool, 0);
        if (pool == 0) { /* the pool's process: socket pair, spawn, request, die */
                int sv[2], gate[2];
                if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0 || pipe(gate) < 0)
                        _exit(1);
                pid_t w = fork();
                if (w == 0) { /* the worker: starts once its parent is gone */
                        close(gate[1]);
                        char c;
                        while (read(gate[0], &c, 1) > 0)
                                ;
                        dup2(sv[1], SMTPC_WORKER_FD); /* and nothing else, as the pool */
                        close_range(SMTPC_WORKER_FD + 1, ~0U, 0);
                        execl(worker, worker, "-C", path, (char *)NULL);
                        _exit(127);
                }
                const char *rcpts[] = {"user@x.test"};
                struct smtpc_request req = {.queue_id = "ORPHAN",
                                            .sender = "a@example.org",
                                            .rcpts = rcpts,
                                            .n_rcpts = 1,
                                            .body_size = strlen(BODY)};
                struct ipc_out out = {.fd = test_body(BODY, strlen(BODY))};
                if (ipc_request_encode(&req, &out.buf, &out.len) < 0 ||
                    ipc_send(sv[0], &out) != 1 || write(report[1], &w, sizeof(w)) != sizeof(w))
                        _exit(1);
                /* another child of the pool's process keeps a copy of its end a
                 * while, as tarryd's other spawns between clone and exec do */
                if (fork() == 0) {
                        close(gate[1]);
                        close(report[1]);
                        sleep(3);
                        _exit(0);
                }
                _exit(0); /* as if killed: the request stays in the socket */
        }
        close(report[1]);
        pid_t w = 0;
        cr_assert_eq(read(report[0], &w, sizeof(w)), (ssize_t)sizeof(w));
        close(report[0]);
        int st;
        cr_assert_eq(waitpid(pool, &st, 0), pool);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the pool's process failed: %d", st);
        int64_t end = now_monotonic_us() + 30 * 1000000LL;
        while (waitpid(w, &st, WNOHANG) != w && now_monotonic_us() < end)
                usleep(10000);
        cr_assert(now_monotonic_us() < end, "the orphaned worker still runs after 30 s");
        usleep(200000);
        cr_assert_eq(fixture_connection_count(f), 0,
                     "the orphaned worker connected to the server (%zu transaction(s))",
                     fixture_txn_count(f));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == EX_UNAVAILABLE, "worker status %d", st);
        unlink(path);
        fixture_free(f);
}
