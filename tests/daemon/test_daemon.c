/* tests/daemon/test_daemon.c — tarryd end to end: real sendmail, real tarryd,
 * the scripted SMTP server. Each test asserts what an administrator would
 * check: the mail arrived, exactly once, from the right address, in time. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

static struct fixture *start_fixture(void)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        return f;
}

/* Config routing example.test (and other.test) to fixtures, sending from 127.0.0.2. */
static void init_with(struct harness *h, struct fixture *f, struct fixture *other, const char *more)
{
        char extra[4096];
        char other_row[128] = "";
        if (other)
                snprintf(other_row, sizeof(other_row), "other.test = [127.0.0.1]:%u\n",
                         fixture_port(other));
        snprintf(extra, sizeof(extra),
                 "source_address = 127.0.0.2\n"
                 "[smtp]\nconnect_timeout = 2s\ncommand_timeout = 3s\ndata_timeout = 5s\n"
                 "[transport]\nexample.test = [127.0.0.1]:%u\n%s%s",
                 fixture_port(f), other_row, more ? more : "");
        harness_init(h, extra);
}

Test(daemon, mail_submitted_while_stopped_is_delivered_within_a_second_of_start)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h); /* a first run creates the spool, as installation would */
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_send(&h, "alice@sender.test", "bob@example.test", "queued while down");
        cr_assert_eq(harness_count_queued(&h, "incoming"), 1);

        int64_t t0 = harness_now_us();
        harness_start(&h);
        cr_assert_eq(fixture_wait_txns(f, 1, 1000), 0, "not delivered within 1 s of start");
        int64_t took = harness_now_us() - t0;

        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "alice@sender.test");
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "bob@example.test");
        cr_assert_str_eq(t.peer_ip, "127.0.0.2");
        fixture_txn_clear(&t);
        cr_assert_lt(took, 1000000);

        /* the folder leaves active/ (renamed into tmp/) before its removal is
         * synced and logged: wait for the log line, not a fixed time */
        for (int i = 0; i < 300 && !harness_log_contains(&h, ": removed"); i++)
                harness_sleep_ms(10);
        cr_assert(harness_log_contains(&h, ": removed"));
        cr_assert(harness_log_contains(&h, "status=sent"));
        cr_assert_eq(harness_count_queued(&h, "active"), 0, "message left in the queue");
        harness_sleep_ms(200);
        cr_assert_eq(fixture_txn_count(f), 1, "delivered more than once");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(daemon, mail_submitted_while_running_is_delivered_within_a_second)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h);
        int64_t t0 = harness_now_us();
        harness_send(&h, "alice@sender.test", "bob@example.test", "live");
        cr_assert_eq(fixture_wait_txns(f, 1, 1000), 0, "not delivered within 1 s");
        cr_assert_lt(harness_now_us() - t0, 1000000);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(daemon, hinted_greylisting_is_retried_right_after_the_window_from_the_same_address)
{
        struct fixture *f = start_fixture();
        fixture_set(f, "greylist", "2");
        fixture_set(f, "greylist_reply", "451 4.7.1 Greylisted, try again in 2 seconds");
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h);
        int64_t t0 = harness_now_us();
        harness_send(&h, "alice@sender.test", "bob@example.test", "greylisted");

        cr_assert_eq(fixture_wait_txns(f, 1, 6000), 0, "greylisted mail never delivered");
        double after = (double)(harness_now_us() - t0) / 1e6;
        cr_assert_geq(after, 2.0, "retried before the greylist window ended (%.2f s)", after);
        cr_assert_lt(after, 4.0, "retried too late: %.2f s after the first attempt", after);

        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.peer_ip, "127.0.0.2");
        fixture_txn_clear(&t);
        cr_assert_eq(fixture_connection_count(f), 2, "expected exactly two attempts");
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 1, "delivered more than once");
        cr_assert(harness_log_contains(&h, "class=greylist"));
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(daemon, reputation_deferral_suspends_the_destination_but_not_others)
{
        struct fixture *ms = start_fixture(), *other = start_fixture();
        fixture_set(ms, "rcpt",
                    "451 4.7.650 The mail server [127.0.0.2] has been temporarily rate "
                    "limited due to IP reputation.");
        struct harness h;
        init_with(&h, ms, other, "[retry.reputation]\ninitial = 3s\nmax = 3s\n");
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "one@example.test", "first");
        for (int i = 0; i < 100 && !harness_log_contains(&h, "class=reputation"); i++)
                harness_sleep_ms(20);
        cr_assert(harness_log_contains(&h, "class=reputation"));
        size_t conns = fixture_connection_count(ms);

        /* The receiver would now accept, but tarry must wait out the suspension. */
        fixture_set(ms, "rcpt", "250 2.1.5 Ok");
        int64_t t0 = harness_now_us();
        harness_send(&h, "alice@sender.test", "two@example.test", "second");
        harness_send(&h, "alice@sender.test", "carol@other.test", "elsewhere");
        cr_assert_eq(fixture_wait_txns(other, 1, 1000), 0, "other destination was held up");
        harness_sleep_ms(1000);
        cr_assert_eq(fixture_connection_count(ms), conns,
                     "the suspended destination was contacted again");

        cr_assert_eq(fixture_wait_txns(ms, 2, 6000), 0, "suspended mail never delivered");
        double after = (double)(harness_now_us() - t0) / 1e6;
        cr_assert_geq(after, 2.0, "suspension ended early (%.2f s)", after);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(ms);
        fixture_free(other);
}

Test(daemon, sigterm_with_attempts_in_flight_exits_in_time_and_loses_nothing)
{
        struct fixture *f = start_fixture();
        fixture_set(f, "hang", "dot");
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@example.test", "in flight");
        for (int i = 0; i < 100 && fixture_connection_count(f) == 0; i++)
                harness_sleep_ms(20);
        harness_sleep_ms(200);
        int64_t t0 = harness_now_us();
        int st = harness_stop(&h, SIGTERM, 5000);
        double took = (double)(harness_now_us() - t0) / 1e6;
        cr_assert_eq(st, 0, "tarryd exited with %d", st);
        cr_assert_lt(took, 4.0, "shutdown took %.2f s with shutdown_timeout = 2s", took);
        cr_assert_eq(harness_count_queued(&h, "active"), 1, "the message must still be queued");

        /* A healthy receiver: the message goes out after the restart. */
        struct fixture *g = start_fixture();
        char extra[2048];
        snprintf(extra, sizeof(extra),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = root\n"
                 "status_listen = unix:%s/status.sock\nsource_address = 127.0.0.2\n"
                 "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 h.spool, h.dir, fixture_port(g));
        harness_write_config(&h, extra);
        harness_start(&h);
        cr_assert_eq(fixture_wait_txns(g, 1, 5000), 0, "message lost across shutdown");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
        fixture_free(g);
}

Test(daemon, sighup_with_a_broken_config_keeps_running_on_the_old_one)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h);
        char good[4096];
        FILE *cf = fopen(h.conf, "r");
        size_t n = fread(good, 1, sizeof(good) - 1, cf);
        good[n] = '\0';
        fclose(cf);
        harness_write_config(&h, "[main]\nspool_dir = relative/oops\nbogus_key = 1\n");
        kill(h.tarryd, SIGHUP);
        for (int i = 0; i < 100 && !harness_log_contains(&h, "reload failed"); i++)
                harness_sleep_ms(20);
        cr_assert(harness_log_contains(&h, "reload failed, keeping the running configuration"));
        cr_assert(harness_log_contains(&h, "tarry.conf:3: unknown key 'bogus_key' in [main]"));
        harness_write_config(&h, good); /* for sendmail; tarryd is not told */
        harness_send(&h, "alice@sender.test", "bob@example.test", "after reload");
        cr_assert_eq(fixture_wait_txns(f, 1, 2000), 0, "tarryd stopped delivering after SIGHUP");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(daemon, mixed_replies_deliver_accepted_recipients_only_once)
{
        struct fixture *f = start_fixture();
        fixture_set(f, "rcpt:bad@*", "550 5.1.1 <bad@example.test>: Recipient address rejected");
        fixture_set(f, "rcpt:later@*", "452 4.2.2 Mailbox full");
        struct harness h;
        init_with(&h, f, NULL, "[retry.mailbox_full]\ninitial = 1h\n");
        harness_start(&h);
        const char *args[] = {"-f",
                              "alice@sender.test",
                              "good@example.test",
                              "bad@example.test",
                              "later@example.test",
                              NULL};
        cr_assert_eq(harness_sendmail(&h, "Subject: mixed\n\nhi\n", args), 0);
        cr_assert_eq(fixture_wait_txns(f, 1, 2000), 0);
        harness_sleep_ms(300);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "good@example.test");
        fixture_txn_clear(&t);
        /* the full mailbox is still queued; the 550 is not */
        cr_assert_eq(harness_count_queued(&h, "active"), 1);
        cr_assert(harness_log_contains(&h, "status=bounced"));
        cr_assert(harness_log_contains(&h, "class=mailbox_full"));
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* Run tarryd with args; returns its exit code, with stdout+stderr in out. */
static int run_tarryd(const char *const *args, char *out, size_t outlen)
{
        char cmd[2048] = "";
        size_t n = (size_t)snprintf(cmd, sizeof(cmd), "%s", harness_binary("daemon/tarryd"));
        for (size_t i = 0; args[i]; i++)
                n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, " '%s'", args[i]);
        snprintf(cmd + n, sizeof(cmd) - n, " 2>&1");
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        size_t len = fread(out, 1, outlen - 1, p);
        out[len] = '\0';
        int st = pclose(p);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(daemon, started_as_root_it_refuses_a_user_that_does_not_exist)
{
        struct harness h;
        harness_init(&h, NULL);
        /* the config names no user: the default is "tarry", which this test expects missing */
        harness_write_config(&h, "[main]\nspool_dir = /tmp/tarry-no-such-spool\n"
                                 "user = tarry-test-no-such-user\n");
        char out[4096];
        const char *args[] = {"-C", h.conf, NULL};
        int code = run_tarryd(args, out, sizeof(out));
        if (geteuid() == 0) {
                cr_assert_eq(code, 67, "exit %d: %s", code, out);
                cr_assert_not_null(strstr(out, "user 'tarry-test-no-such-user' does not exist"),
                                   "%s", out);
        }
        harness_cleanup(&h);
}

Test(daemon, check_prints_the_effective_config_and_broken_ones_exit_78)
{
        struct harness h;
        harness_init(&h, "[transport]\nexample.test = [127.0.0.1]:2525\n");
        char out[16384];
        const char *args[] = {"-C", h.conf, "--check", NULL};
        cr_assert_eq(run_tarryd(args, out, sizeof(out)), 0, "%s", out);
        cr_assert_not_null(strstr(out, "queue_lifetime = 432000s"), "%s", out);
        cr_assert_not_null(strstr(out, "example.test = [127.0.0.1]:2525"), "%s", out);
        harness_write_config(&h, "[main]\nspool_dir = /x\nqueue_lifetime = forever\n");
        cr_assert_eq(run_tarryd(args, out, sizeof(out)), 78, "%s", out);
        cr_assert_not_null(strstr(out, "tarry.conf:3: bad value 'forever' for queue_lifetime"),
                           "%s", out);
        harness_cleanup(&h);
}

/* The only message folder in spool/active/ (fails the test otherwise). */
static void only_active(struct harness *h, char *path, size_t len)
{
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "ls %s/active", h->spool);
        FILE *p = popen(cmd, "r");
        char id[64] = "";
        cr_assert_not_null(fgets(id, sizeof(id), p), "nothing in active/");
        pclose(p);
        id[strcspn(id, "\n")] = '\0';
        snprintf(path, len, "%s/active/%s", h->spool, id);
}

/* An envelope that cannot be read for a while (EIO, EMFILE…; here a folder
 * where the file should be: EISDIR) keeps the message queued: tried again
 * every 5 s, logged once, counted each time, delivered once it reads again. */
Test(daemon, an_unreadable_envelope_is_retried_logged_once_and_delivered_later, .timeout = 60)
{
        struct fixture *f = start_fixture();
        fixture_set(f, "rcpt", "451 4.3.0 try again later");
        struct harness h;
        init_with(&h, f, NULL, "[retry.unknown_temp]\ninitial = 1s\nmax = 1s\n");
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@example.test", "unreadable");
        for (int i = 0; i < 300 && !harness_log_contains(&h, "status=deferred"); i++)
                harness_sleep_ms(10);
        cr_assert(harness_log_contains(&h, "status=deferred"));

        char dir[600], env[700], saved[700];
        only_active(&h, dir, sizeof(dir));
        snprintf(env, sizeof(env), "%s/envelope", dir);
        snprintf(saved, sizeof(saved), "%s/envelope.saved", dir);
        cr_assert_eq(rename(env, saved), 0);
        cr_assert_eq(mkdir(env, 0755), 0); /* readable by tarryd: EISDIR, not EACCES */
        /* the 1 s retry fails to read, then again 5 s later */
        for (int i = 0;
             i < 1000 && harness_metric(&h, "tarry_spool_errors_total{kind=\"read\"}") < 2; i++)
                harness_sleep_ms(10);
        cr_assert_geq(harness_metric(&h, "tarry_spool_errors_total{kind=\"read\"}"), 2);
        cr_assert_eq(harness_log_count(&h, "cannot read the envelope: Is a directory"), 1);
        cr_assert_eq(harness_count_queued(&h, "active"), 1, "the message left the queue");

        cr_assert_eq(rmdir(env), 0);
        cr_assert_eq(rename(saved, env), 0);
        fixture_set(f, "rcpt", "250 2.1.5 Ok");
        cr_assert_eq(fixture_wait_txns(f, 1, 8000), 0, "not delivered once readable again");
        cr_assert(harness_log_contains(&h, "envelope read again"));
        for (int i = 0; i < 300 && harness_count_queued(&h, "active") > 0; i++)
                harness_sleep_ms(10);
        cr_assert_eq(harness_count_queued(&h, "active"), 0);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 1, "delivered more than once");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* A pinned source address the machine does not have is named at start and on
 * reload (every delivery from it would fail to bind), without refusing to run:
 * a floating address may be added later. */
Test(daemon, a_source_address_this_machine_lacks_is_named_at_start_and_reload)
{
        struct harness h;
        harness_init(&h, "source_address = 127.0.0.2, 192.0.2.1\n");
        harness_start(&h);
        const char *warning = "source_address 192.0.2.1 is not usable here (Cannot assign "
                              "requested address)";
        cr_assert_eq(harness_log_count(&h, warning), 1);
        cr_assert_not(harness_log_contains(&h, "source_address 127.0.0.2"));
        kill(h.tarryd, SIGHUP);
        for (int i = 0; i < 300 && harness_log_count(&h, warning) < 2; i++)
                harness_sleep_ms(10);
        cr_assert_eq(harness_log_count(&h, warning), 2);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
}
