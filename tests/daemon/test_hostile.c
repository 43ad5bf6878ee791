/* tests/daemon/test_hostile.c — hostile and broken SMTP peers against the real
 * tarryd (issue 8).
 *
 * Each test runs tarryd with two scripted servers: bad.test is routed to one
 * that misbehaves (a 1 MB reply line, an endless reply, 1 byte per second, a
 * hang-up, garbage, a stalled TLS handshake, silence after the final dot),
 * good.test to one that behaves. A message to bad.test is submitted first,
 * then one to good.test while the bad attempt is stuck or failing. What an
 * administrator would check: the good mail arrives promptly and once; the
 * bad one stays queued as deferred (never bounced, never dropped) after an
 * attempt that ends within the configured timeouts; tarryd and its delivery
 * workers stay small; tarryd still answers and stops cleanly on SIGTERM.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

/* Short protocol timeouts so that every scenario ends in seconds. */
#define CONNECT_TIMEOUT_S 3
#define COMMAND_TIMEOUT_S 4
#define DATA_TIMEOUT_S    5

/* Peak resident memory allowed for tarryd and for each delivery worker. A
 * small tarryd uses a few MB; ASan's shadow memory and quarantine add a lot. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_LIMIT_KB (128 * 1024)
#else
#define RSS_LIMIT_KB (64 * 1024)
#endif

/* Waits are generous (a slow, busy machine); timing is asserted only where
 * it is the feature: an attempt that must end at a timeout, timed from the
 * connection that starts it, within TIMEOUT_SLACK_S of it. */
#define WAIT_MS         30000
#define TIMEOUT_SLACK_S 5

#define BAD_RCPT  "bob@bad.test"
#define GOOD_RCPT "carol@good.test"

struct scene {
        struct fixture *bad, *good;
        struct harness h;
        char tmp[64]; /* TLS certificate of the bad server, if any */
        /* peak VmHWM seen (KB) */
        long tarryd_hwm_kb, worker_hwm_kb;
        size_t workers_seen;
};

static struct fixture *new_fixture(const char *const *kv)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        for (; kv && kv[0]; kv += 2)
                cr_assert_eq(fixture_set(f, kv[0], kv[1]), 0, "fixture key %s", kv[0]);
        return f;
}

/* Start both servers and tarryd. kv: scenario keys of the bad server;
 * tls: the bad route's TLS policy ("none", "may", "encrypt"); smtp_extra and
 * overload_extra: more keys for [smtp] and [retry.overload], or NULL. */
static void scene_start(struct scene *s, const char *const *kv, const char *tls,
                        const char *smtp_extra, const char *overload_extra)
{
        memset(s, 0, sizeof(*s));
        s->bad = new_fixture(kv);
        if (strcmp(tls, "none") != 0) {
                snprintf(s->tmp, sizeof(s->tmp), "/tmp/tarry-hostile-XXXXXX");
                cr_assert_not_null(mkdtemp(s->tmp));
                cr_assert_eq(fixture_tls_generate(s->bad, s->tmp), 0, "openssl CLI needed");
        }
        cr_assert_eq(fixture_start(s->bad, 0), 0);
        s->good = new_fixture(NULL);
        cr_assert_eq(fixture_start(s->good, 0), 0);
        char extra[2048];
        /* Temporary failures of the bad attempt are retried only after the
         * test: it checks the state after exactly one failed attempt. */
        snprintf(extra, sizeof(extra),
                 "[smtp]\nconnect_timeout = %ds\ncommand_timeout = %ds\ndata_timeout = %ds\n%s"
                 "[transport]\nbad.test = [127.0.0.1]:%u tls=%s\n"
                 "good.test = [127.0.0.1]:%u tls=none\n"
                 "[retry.routing]\ninitial = 1h\nmax = 1h\n[retry.policy]\ninitial = 1h\nmax = 1h\n"
                 "[retry.unknown_temp]\ninitial = 1h\nmax = 1h\n"
                 "[retry.overload]\ninitial = 1h\nmax = 1h\n%s",
                 CONNECT_TIMEOUT_S, COMMAND_TIMEOUT_S, DATA_TIMEOUT_S, smtp_extra ? smtp_extra : "",
                 fixture_port(s->bad), tls, fixture_port(s->good),
                 overload_extra ? overload_extra : "");
        harness_init(&s->h, extra);
        harness_start(&s->h);
}

static void scene_end(struct scene *s)
{
        harness_cleanup(&s->h);
        fixture_free(s->bad);
        fixture_free(s->good);
        if (s->tmp[0]) {
                char cmd[128];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->tmp);
                cr_assert_eq(system(cmd), 0);
        }
}

/* ---- memory of tarryd and its workers, from /proc ---- */

/* VmHWM of pid in KB (0 if gone). */
static long hwm_kb(pid_t pid)
{
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        FILE *f = fopen(path, "r");
        long kb = 0;
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, "VmHWM:", 6) == 0)
                        kb = atol(line + 6);
        if (f)
                fclose(f);
        return kb;
}

/* Parent pid from /proc/PID/stat (the comm field may hold spaces: skip past ')'). */
static pid_t ppid_of(pid_t pid)
{
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return 0;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        int ppid = 0;
        if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
                return 0;
        return (pid_t)ppid;
}

/* Record the peak memory of tarryd and of each of its children (workers). */
static void sample_memory(struct scene *s)
{
        if (!s->h.tarryd)
                return;
        long t = hwm_kb(s->h.tarryd);
        if (t > s->tarryd_hwm_kb)
                s->tarryd_hwm_kb = t;
        DIR *d = opendir("/proc");
        cr_assert_not_null(d);
        struct dirent *e;
        size_t workers = 0;
        while ((e = readdir(d))) {
                pid_t pid = (pid_t)atoi(e->d_name);
                if (pid <= 0 || ppid_of(pid) != s->h.tarryd)
                        continue;
                workers++;
                long w = hwm_kb(pid);
                if (w > s->worker_hwm_kb)
                        s->worker_hwm_kb = w;
        }
        closedir(d);
        if (workers > s->workers_seen)
                s->workers_seen = workers;
}

/* ---- what the log says about the bad recipient ---- */

/* A line of tarryd's log holding both a and b. */
static bool log_line_with(struct harness *h, const char *a, const char *b)
{
        FILE *f = fopen(h->log, "r");
        if (!f)
                return false;
        char line[8192];
        bool found = false;
        while (!found && fgets(line, sizeof(line), f))
                found = strstr(line, a) && strstr(line, b);
        fclose(f);
        return found;
}

static bool bad_deferred(struct scene *s)
{
        return log_line_with(&s->h, "to=<" BAD_RCPT ">", "status=deferred");
}

/* Wait (sampling memory) until cond holds or timeout_ms passes; true if it held. */
static bool wait_for(struct scene *s, bool (*cond)(struct scene *), int timeout_ms)
{
        int64_t end = harness_now_us() + (int64_t)timeout_ms * 1000;
        for (;;) {
                sample_memory(s);
                if (cond(s))
                        return true;
                if (harness_now_us() > end)
                        return false;
                harness_sleep_ms(20);
        }
}

static bool bad_connected(struct scene *s)
{
        return fixture_connection_count(s->bad) > 0;
}

/* Does the JSON text hold "key": value (with or without the space)? */
static bool json_field(const char *json, const char *key, const char *value)
{
        char a[256], b[256];
        snprintf(a, sizeof(a), "\"%s\":%s", key, value);
        snprintf(b, sizeof(b), "\"%s\": %s", key, value);
        return strstr(json, a) || strstr(json, b);
}

static void print_log(struct scene *s)
{
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "cat '%s' >&2", s->h.log);
        if (system(cmd) != 0)
                fprintf(stderr, "cannot show %s\n", s->h.log);
}

/* ---- the scenario ---- */

struct expect {
        /* the bad attempt is still running when the good mail is submitted */
        bool stuck;
        /* the timeout that must end the attempt (s), 0 if none does: it ends
         * at once, and the reason says how */
        int timeout_s;
        /* text the deferral's log line must contain (the reason) */
        const char *reason;
        /* the bad message is delivered after all (TLS stall with tls=may) */
        bool delivered;
};

static void run_hostile(const char *name, const char *const *kv, const char *tls, struct expect ex)
{
        struct scene s;
        scene_start(&s, kv, tls, NULL, NULL);
        struct harness *h = &s.h;

        harness_send(h, "alice@sender.test", BAD_RCPT, "to the hostile server");
        cr_assert(wait_for(&s, bad_connected, WAIT_MS), "%s: tarryd never connected to bad.test",
                  name);
        int64_t connected = harness_now_us(); /* at most a poll after the fact */
        if (ex.stuck)
                harness_sleep_ms(300); /* well inside the hostile step */

        /* A healthy destination is served while the hostile one is stuck. */
        int64_t t1 = harness_now_us();
        harness_send(h, "alice@sender.test", GOOD_RCPT, "to the healthy server");
        int r = fixture_wait_txns(s.good, 1, WAIT_MS);
        double good_s = (double)(harness_now_us() - t1) / 1e6;
        /* no outcome of the bad attempt logged yet */
        bool still_stuck = !log_line_with(h, "to=<" BAD_RCPT ">", "status=");
        if (r != 0)
                print_log(&s);
        cr_assert_eq(r, 0, "%s: the healthy destination got nothing", name);
        if (ex.stuck) {
                cr_assert(still_stuck,
                          "%s: the bad attempt ended before the good mail arrived (%.2f s)", name,
                          good_s);
                /* tarryd answers its status endpoint meanwhile: before the bad
                 * attempt ends, not after it */
                char *out = NULL, *err = NULL;
                const char *args[] = {"-s", NULL};
                cr_assert_eq(harness_tarryq(h, args, &out, &err), 0, "%s: tarryq -s: %s", name,
                             err);
                cr_assert(!log_line_with(h, "to=<" BAD_RCPT ">", "status="),
                          "%s: tarryq -s was answered only once the bad attempt ended", name);
                cr_assert_not_null(strstr(out, "queue: "), "%s: %s", name, out);
                free(out);
                free(err);
        }

        /* The hostile attempt ends, within its timeout, as a temporary failure. */
        double attempt_s;
        int limit_ms = (ex.timeout_s + TIMEOUT_SLACK_S) * 1000 + WAIT_MS;
        if (ex.delivered) {
                cr_assert_eq(fixture_wait_txns(s.bad, 1, limit_ms), 0, "%s: never delivered", name);
                attempt_s = (double)(harness_now_us() - connected) / 1e6;
        } else {
                bool ended = wait_for(&s, bad_deferred, limit_ms);
                attempt_s = (double)(harness_now_us() - connected) / 1e6;
                if (!ended)
                        print_log(&s);
                cr_assert(ended, "%s: no deferral logged within %.0f s", name, limit_ms / 1000.0);
        }
        if (ex.timeout_s)
                cr_assert_leq(attempt_s, ex.timeout_s + TIMEOUT_SLACK_S,
                              "%s: the attempt took %.2f s with a %d s timeout", name, attempt_s,
                              ex.timeout_s);
        harness_sleep_ms(300);
        sample_memory(&s);

        /* The good mail once; the bad one queued, never bounced. */
        cr_assert_eq(fixture_txn_count(s.good), 1, "%s: good mail delivered more than once", name);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(s.good, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], GOOD_RCPT);
        fixture_txn_clear(&t);
        cr_assert_not(harness_log_contains(h, "status=bounced"), "%s: bounced", name);
        cr_assert_eq(harness_count_queued(h, "incoming"), 0, "%s: a DSN was queued", name);
        if (ex.delivered) {
                cr_assert_eq(fixture_txn_count(s.bad), 1, "%s", name);
                cr_assert_eq(harness_count_queued(h, "active"), 0, "%s", name);
        } else {
                cr_assert_eq(harness_count_queued(h, "active"), 1,
                             "%s: the bad message left the queue", name);
                cr_assert(log_line_with(h, "to=<" BAD_RCPT ">", ex.reason),
                          "%s: the deferral does not say '%s'", name, ex.reason);
                char *out = NULL, *err = NULL;
                const char *args[] = {"-j", NULL};
                cr_assert_eq(harness_tarryq(h, args, &out, &err), 0, "%s: %s", name, err);
                cr_assert(json_field(out, "address", "\"" BAD_RCPT "\""), "%s: %s", name, out);
                cr_assert(json_field(out, "queue_name", "\"deferred\""), "%s: %s", name, out);
                cr_assert(json_field(out, "attempts", "1"), "%s: %s", name, out);
                cr_assert_not_null(strstr(out, ex.reason), "%s: %s", name, out);
                /* every reason here is tarry's own, not words the server said */
                cr_assert_null(strstr(out, " said: "), "%s: %s", name, out);
                cr_assert_not(log_line_with(h, "to=<" BAD_RCPT ">", " said: "),
                              "%s: the log quotes the server for tarry's own reason", name);
                cr_assert_null(strstr(out, GOOD_RCPT), "%s: %s", name, out);
                free(out);
                free(err);
        }

        /* Still alive and answering; stops cleanly. */
        char *out = NULL, *err = NULL;
        const char *args[] = {"-s", NULL};
        cr_assert_eq(harness_tarryq(h, args, &out, &err), 0, "%s: tarryq -s: %s", name, err);
        free(out);
        free(err);
        fprintf(stderr,
                "hostile %-22s attempt %5.2f s, good mail after %4.2f s, peak RSS tarryd %ld KB, "
                "worker %ld KB (%zu workers)\n",
                name, attempt_s, good_s, s.tarryd_hwm_kb, s.worker_hwm_kb, s.workers_seen);
        cr_assert_gt(s.tarryd_hwm_kb, 0);
        cr_assert_gt(s.worker_hwm_kb, 0, "%s: no delivery worker seen", name);
        cr_assert_lt(s.tarryd_hwm_kb, RSS_LIMIT_KB, "%s: tarryd peaked at %ld KB", name,
                     s.tarryd_hwm_kb);
        cr_assert_lt(s.worker_hwm_kb, RSS_LIMIT_KB, "%s: a worker peaked at %ld KB", name,
                     s.worker_hwm_kb);
        int st = harness_stop(h, SIGTERM, 5000);
        cr_assert_eq(st, 0, "%s: tarryd exited with %d on SIGTERM", name, st);
        scene_end(&s);
}

Test(hostile, one_megabyte_reply_line_is_cut_off_and_the_message_stays_queued)
{
        const char *kv[] = {"huge", "rcpt", NULL};
        run_hostile("1 MB reply line", kv, "none", (struct expect){.reason = "reply too long"});
}

Test(hostile, endless_multi_line_reply_is_cut_off_and_the_message_stays_queued)
{
        const char *kv[] = {"endless", "mail", NULL};
        run_hostile("endless reply", kv, "none", (struct expect){.reason = "reply exceeds 64 KB"});
}

Test(hostile, greeting_at_one_byte_per_second_gives_up_at_the_connect_timeout)
{
        const char *kv[] = {"drip:greeting", "1000", NULL};
        run_hostile("slowloris greeting", kv, "none",
                    (struct expect){.stuck = true,
                                    .timeout_s = CONNECT_TIMEOUT_S,
                                    .reason = "timed out while receiving the initial server "
                                              "greeting"});
}

Test(hostile, rcpt_reply_at_one_byte_per_second_gives_up_at_the_command_timeout)
{
        const char *kv[] = {"drip:rcpt", "1000", NULL};
        run_hostile("slowloris RCPT reply", kv, "none",
                    (struct expect){.stuck = true,
                                    .timeout_s = COMMAND_TIMEOUT_S,
                                    .reason = "timed out while sending RCPT TO"});
}

Test(hostile, final_dot_reply_at_one_byte_per_second_gives_up_at_the_data_timeout)
{
        const char *kv[] = {"drip:dot", "1000", NULL};
        run_hostile("slowloris dot reply", kv, "none",
                    (struct expect){.stuck = true,
                                    .timeout_s = DATA_TIMEOUT_S,
                                    .reason = "timed out while sending end of data"});
}

Test(hostile, hang_up_at_rcpt_before_data_is_a_temporary_failure)
{
        const char *kv[] = {"disconnect", "rcpt", NULL};
        run_hostile("hang-up at RCPT", kv, "none",
                    (struct expect){.reason = "lost connection with 127.0.0.1[127.0.0.1]"});
}

Test(hostile, hang_up_during_data_is_a_temporary_failure)
{
        const char *kv[] = {"disconnect", "body", NULL};
        run_hostile("hang-up during DATA", kv, "none",
                    (struct expect){.reason = "lost connection with 127.0.0.1[127.0.0.1]"});
}

Test(hostile, ssh_banner_instead_of_smtp_is_a_temporary_failure)
{
        const char *kv[] = {"greeting", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", NULL};
        run_hostile("garbage greeting", kv, "none", (struct expect){.reason = "garbled reply"});
}

/* Postfix's smtp_skip_5xx_greeting: a server that will not talk to us is no
 * verdict on the message; it is deferred (here: a blocklist → reputation). */
Test(hostile, greeting_554_defers_and_never_bounces)
{
        const char *kv[] = {"greeting",
                            "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked "
                            "using zen.spamhaus.org",
                            NULL};
        run_hostile("554 greeting", kv, "none",
                    (struct expect){.reason = "host 127.0.0.1[127.0.0.1] refused to talk to me: "
                                              "554 5.7.1 Service unavailable"});
}

Test(hostile, silence_after_the_final_dot_gives_up_at_the_data_timeout)
{
        const char *kv[] = {"hang", "dot", NULL};
        run_hostile("no reply to the dot", kv, "none",
                    (struct expect){.stuck = true,
                                    .timeout_s = DATA_TIMEOUT_S,
                                    .reason = "timed out while sending end of data"});
}

/* tls = may: the stalled handshake times out, and the message goes out in
 * clear text on a new connection (smtpc's documented fallback). */
Test(hostile, stalled_tls_handshake_with_tls_may_falls_back_to_clear_text)
{
        const char *kv[] = {"tls_stall", "yes", NULL};
        run_hostile(
            "TLS stall, tls=may", kv, "may",
            (struct expect){.stuck = true, .timeout_s = CONNECT_TIMEOUT_S, .delivered = true});
}

Test(hostile, stalled_tls_handshake_with_tls_encrypt_stays_queued)
{
        const char *kv[] = {"tls_stall", "yes", NULL};
        run_hostile("TLS stall, tls=encrypt", kv, "encrypt",
                    (struct expect){
                        .stuck = true, .timeout_s = CONNECT_TIMEOUT_S, .reason = "4.7.5 TLS with"});
}

/* The receiver takes the first message's final dot, then answers it only
 * after tarry gave up: with a 554. The next message to that destination must
 * not read that late reply as its own (on the same, reused connection it
 * would answer MAIL FROM, and bounce the second message). The operator's
 * scope = recipient keeps the destination open after the timeout, so the
 * second message follows at once, to the worker that holds the connection. */
Test(hostile, late_reply_to_a_timed_out_dot_never_bounces_the_next_message)
{
        char delay[16];
        snprintf(delay, sizeof(delay), "%d", (DATA_TIMEOUT_S + 2) * 1000);
        const char *kv[] = {"delay:dot", delay, "dot", "554 5.7.1 Message rejected as spam", NULL};
        struct scene s;
        scene_start(&s, kv, "none", "destination_concurrency = 1\n", "scope = recipient\n");
        struct harness *h = &s.h;
        harness_send(h, "alice@sender.test", "first@bad.test", "first");
        cr_assert(wait_for(&s, bad_connected, WAIT_MS), "tarryd never connected to bad.test");
        harness_sleep_ms(1000); /* at the dot within milliseconds; its reply is due in 7 s */
        /* the late 554 is on its way; from now on the receiver answers at once */
        cr_assert_eq(fixture_set(s.bad, "delay:dot", "0"), 0);
        cr_assert_eq(fixture_set(s.bad, "dot", "250 2.0.0 Ok: queued"), 0);
        harness_send(h, "alice@sender.test", "second@bad.test", "second");
        /* the first message is not recorded: the server's last word was 554 */
        int r = fixture_wait_txns(s.bad, 1, (DATA_TIMEOUT_S + 6) * 1000);
        harness_sleep_ms(300);
        if (r != 0 || harness_log_contains(h, "status=bounced"))
                print_log(&s);
        cr_assert_not(harness_log_contains(h, "status=bounced"),
                      "a message was bounced for another one's reply");
        cr_assert_eq(r, 0, "the second message was not delivered");
        cr_assert(log_line_with(h, "to=<second@bad.test>", "status=sent"));
        cr_assert(log_line_with(h, "to=<first@bad.test>", "status=deferred"));
        cr_assert(log_line_with(h, "to=<first@bad.test>", "timed out while sending end of data"));
        cr_assert_eq(harness_count_queued(h, "active"), 1, "the first message must stay queued");
        cr_assert_eq(fixture_connection_count(s.bad), 2, "the timed-out connection was reused");
        cr_assert_eq(harness_stop(h, SIGTERM, 5000), 0);
        scene_end(&s);
}
