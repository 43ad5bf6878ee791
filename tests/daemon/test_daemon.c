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
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

/* Waits are generous (the suite shares a slow, busy machine); timing is
 * asserted only where it is the feature, from the event that starts it. */
#define WAIT_MS 30000
/* "Promptly": far below any timer that would otherwise move the mail (a
 * retry, a rescan), far above what a loaded machine needs. */
#define PROMPT_US 10000000

static struct fixture *start_fixture(void)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        return f;
}

/* Wait until tarryd's log holds needle (at most WAIT_MS); whether it does. */
static bool wait_log(struct harness *h, const char *needle)
{
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000;
             !harness_log_contains(h, needle); harness_sleep_ms(10))
                if (harness_now_us() > end)
                        return false;
        return true;
}

/* When transaction i reached the receiver (its final dot answered). */
static int64_t txn_time(struct fixture *f, size_t i)
{
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, i, &t), 0);
        int64_t when = t.time_us;
        fixture_txn_clear(&t);
        return when;
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

/* Picked up by the start-up scan of incoming/: no event will ever announce
 * it. Timed from tarryd being ready (its status socket bound). */
Test(daemon, mail_submitted_while_stopped_is_delivered_promptly_after_start)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h); /* a first run creates the spool, as installation would */
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_send(&h, "alice@sender.test", "bob@example.test", "queued while down");
        cr_assert_eq(harness_count_queued(&h, "incoming"), 1);

        harness_start(&h);
        int64_t ready = harness_now_us();
        cr_assert_eq(fixture_wait_txns(f, 1, WAIT_MS), 0, "not delivered after start");

        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "alice@sender.test");
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "bob@example.test");
        cr_assert_str_eq(t.peer_ip, "127.0.0.2");
        int64_t took = t.time_us - ready;
        fixture_txn_clear(&t);
        cr_assert_lt(took, PROMPT_US, "delivered %.2f s after start", (double)took / 1e6);

        /* the folder leaves active/ (renamed into tmp/) before its removal is
         * synced and logged: wait for the log line, not a fixed time */
        cr_assert(wait_log(&h, ": removed"));
        cr_assert(harness_log_contains(&h, "status=sent"));
        cr_assert_eq(harness_count_queued(&h, "active"), 0, "message left in the queue");
        harness_sleep_ms(200);
        cr_assert_eq(fixture_txn_count(f), 1, "delivered more than once");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* Picked up on inotify's word: timed from sendmail's exit (the commit). */
Test(daemon, mail_submitted_while_running_is_delivered_promptly)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@example.test", "live");
        int64_t committed = harness_now_us();
        cr_assert_eq(fixture_wait_txns(f, 1, WAIT_MS), 0, "not delivered");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        int64_t took = t.time_us - committed;
        fixture_txn_clear(&t);
        cr_assert_lt(took, PROMPT_US, "delivered %.2f s after sendmail exited", (double)took / 1e6);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* Timing is the feature: the retry comes right after the hinted 2 s, timed
 * from the deferral (not the 60 s schedule). An early retry would be
 * greylisted again: a third connection. */
Test(daemon, hinted_greylisting_is_retried_right_after_the_window_from_the_same_address)
{
        struct fixture *f = start_fixture();
        fixture_set(f, "greylist", "2");
        fixture_set(f, "greylist_reply", "451 4.7.1 Greylisted, try again in 2 seconds");
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@example.test", "greylisted");
        cr_assert(wait_log(&h, "class=greylist"), "the first attempt was not deferred");
        int64_t deferred = harness_now_us(); /* at most a poll after the fact */

        cr_assert_eq(fixture_wait_txns(f, 1, WAIT_MS), 0, "greylisted mail never delivered");
        double after = (double)(txn_time(f, 0) - deferred) / 1e6;
        cr_assert_lt(after, 2.0 + 3.0, "retried %.2f s after the deferral, not right after 2 s",
                     after);

        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.peer_ip, "127.0.0.2");
        fixture_txn_clear(&t);
        cr_assert_eq(fixture_connection_count(f), 2, "expected exactly two attempts");
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 1, "delivered more than once");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* The suspension (SUSPEND_S) is timed from the deferral: the other
 * destination is served inside it, the suspended one only after it. */
#define SUSPEND_S 10
Test(daemon, reputation_deferral_suspends_the_destination_but_not_others)
{
        struct fixture *ms = start_fixture(), *other = start_fixture();
        fixture_set(ms, "rcpt",
                    "451 4.7.650 The mail server [127.0.0.2] has been temporarily rate "
                    "limited due to IP reputation.");
        struct harness h;
        char retry[128];
        snprintf(retry, sizeof(retry), "[retry.reputation]\ninitial = %ds\nmax = %ds\n", SUSPEND_S,
                 SUSPEND_S);
        init_with(&h, ms, other, retry);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "one@example.test", "first");
        cr_assert(wait_log(&h, "class=reputation"), "the first attempt was not deferred");
        int64_t suspended = harness_now_us(); /* at most a poll after the fact */
        size_t conns = fixture_connection_count(ms);

        /* The receiver would now accept, but tarry must wait out the suspension. */
        fixture_set(ms, "rcpt", "250 2.1.5 Ok");
        harness_send(&h, "alice@sender.test", "two@example.test", "second");
        harness_send(&h, "alice@sender.test", "carol@other.test", "elsewhere");
        cr_assert_eq(fixture_wait_txns(other, 1, WAIT_MS), 0, "other destination got nothing");
        double other_s = (double)(txn_time(other, 0) - suspended) / 1e6;
        cr_assert_lt(other_s, SUSPEND_S, "other destination waited for the suspension (%.2f s)",
                     other_s);
        cr_assert_eq(fixture_connection_count(ms), conns,
                     "the suspended destination was contacted again");

        cr_assert_eq(fixture_wait_txns(ms, 2, SUSPEND_S * 1000 + WAIT_MS), 0,
                     "suspended mail never delivered");
        for (size_t i = 0; i < 2; i++) {
                double after = (double)(txn_time(ms, i) - suspended) / 1e6;
                /* the deferral was logged up to a poll (10 ms) before we saw it */
                cr_assert_geq(after, SUSPEND_S - 1.0, "suspension ended early (%.2f s)", after);
        }
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(ms);
        fixture_free(other);
}

/* tarryq ARGS…: exit status, stdout and stderr (freed by the caller). */
static int tarryq(struct harness *h, char **out, char **err, const char *const *args)
{
        return harness_tarryq(h, args, out, err);
}

/* The recipient object of tarryq -j for address (a new reference), NULL if absent. */
static json_t *listed_rcpt(struct harness *h, const char *address)
{
        char *out = NULL, *err = NULL;
        cr_assert_eq(tarryq(h, &out, &err, (const char *[]){"-j", NULL}), 0, "%s", err);
        json_t *found = NULL;
        for (char *save = NULL, *line = strtok_r(out, "\n", &save); line && !found;
             line = strtok_r(NULL, "\n", &save)) {
                json_t *m = json_loads(line, 0, NULL);
                size_t i;
                json_t *r;
                json_array_foreach (json_object_get(m, "recipients"), i, r)
                        if (!found &&
                            strcmp(json_string_value(json_object_get(r, "address")), address) == 0)
                                found = json_incref(r);
                json_decref(m);
        }
        free(out);
        free(err);
        return found;
}

/* A queue ID from tarryq -j whose recipient is address. */
static void queue_id_of(struct harness *h, const char *address, char id[17])
{
        char *out = NULL, *err = NULL;
        cr_assert_eq(tarryq(h, &out, &err, (const char *[]){"-j", NULL}), 0, "%s", err);
        id[0] = '\0';
        for (char *save = NULL, *line = strtok_r(out, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
                json_t *m = json_loads(line, 0, NULL);
                if (strstr(line, address))
                        snprintf(id, 17, "%s", json_string_value(json_object_get(m, "queue_id")));
                json_decref(m);
        }
        cr_assert_eq(strlen(id), 16, "%s not listed", address);
        free(out);
        free(err);
}

/* A 4.7.650 suspends the destination; tarryd restarts (SIGTERM, start):
 * the suspension is still there, with its end and cause, mail queued to it
 * after the restart waits and says why, -i refuses with 75, --force tries,
 * and tarryq resume lifts it. SUSPEND_LONG_S is never waited out. */
#define SUSPEND_LONG_S 600
Test(daemon, a_suspension_survives_a_restart_and_every_waiting_recipient_says_why, .timeout = 120)
{
        struct fixture *ms = start_fixture();
        fixture_set(ms, "rcpt",
                    "451 4.7.650 The mail server [127.0.0.2] has been temporarily rate "
                    "limited due to IP reputation.");
        struct harness h;
        char retry[128];
        snprintf(retry, sizeof(retry), "[retry.reputation]\ninitial = %ds\nmax = %ds\n",
                 SUSPEND_LONG_S, SUSPEND_LONG_S);
        init_with(&h, ms, NULL, retry);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "one@example.test", "first");
        cr_assert(wait_log(&h, "class=reputation"), "the first attempt was not deferred");
        /* log lines carry the time zone (tarryd inherits ours) */
        char zone[8], stamp[32], next[32];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(zone, sizeof(zone), "%z", &tm);
        snprintf(stamp, sizeof(stamp), " %s tarryd[", zone);
        snprintf(next, sizeof(next), "%.3s:%.2s\n", zone, zone + 3); /* next=… ends the line */
        cr_assert(harness_log_contains(&h, stamp), "no '%s' in the log", stamp);
        cr_assert(harness_log_contains(&h, next), "next= has no zone ('%s')", next);
        cr_assert_eq(harness_stop(&h, SIGTERM, 5000), 0);

        harness_start(&h);
        size_t conns = fixture_connection_count(ms);
        fixture_set(ms, "rcpt", "250 2.1.5 Ok");
        harness_send(&h, "alice@sender.test", "two@example.test", "second");
        char *out = NULL, *err = NULL;
        /* tarryq -s: still suspended, with a local time and zone, and its cause */
        cr_assert_eq(tarryq(&h, &out, &err, (const char *[]){"-s", NULL}), 0, "%s", err);
        cr_assert_not_null(strstr(out, ": suspended,"), "restart forgot the suspension: %s", out);
        cr_assert_not_null(strstr(out, "after a reputation deferral"), "%s", out);
        cr_assert_not_null(strstr(out, " +0000"), "no time zone: %s", out);
        free(out);
        free(err);

        /* -j: both recipients wait for the destination, with time, reason, destination */
        json_t *two = NULL;
        for (int i = 0; i < 3000 && !two; i++) {
                two = listed_rcpt(&h, "two@example.test");
                if (!two)
                        harness_sleep_ms(10);
        }
        cr_assert_not_null(two, "the second message is not listed");
        json_t *one = listed_rcpt(&h, "one@example.test");
        cr_assert_not_null(one);
        char dest[64];
        snprintf(dest, sizeof(dest), "[127.0.0.1]:%u", fixture_port(ms));
        json_t *rs[] = {one, two};
        for (int k = 0; k < 2; k++) {
                cr_assert_str_eq(json_string_value(json_object_get(rs[k], "next_attempt_reason")),
                                 "destination_suspended");
                cr_assert_str_eq(json_string_value(json_object_get(rs[k], "destination")), dest);
                cr_assert(json_is_integer(json_object_get(rs[k], "next_attempt")));
                const char *iso = json_string_value(json_object_get(rs[k], "next_attempt_time"));
                cr_assert(iso && strlen(iso) == 25 && strcmp(iso + 19, "+00:00") == 0, "%s",
                          iso ? iso : "null");
        }
        json_decref(one);
        json_decref(two);

        /* -p: a (reason) line for the mail never tried too */
        cr_assert_eq(tarryq(&h, &out, &err, (const char *[]){"-p", NULL}), 0, "%s", err);
        char *second = strstr(out, "two@example.test");
        cr_assert_not_null(second);
        char *reason = strstr(out, "destination suspended until ");
        cr_assert(reason && reason < second, "%s", out);
        free(out);
        free(err);

        /* -i on it: says so, exit 75, nothing tried */
        char id[17];
        queue_id_of(&h, "two@example.test", id);
        int rc = tarryq(&h, &out, &err, (const char *[]){"-i", id, NULL});
        cr_assert_eq(rc, 75, "tarryq -i exit %d: %s", rc, err);
        cr_assert_not_null(strstr(err, "suspended"), "%s", err);
        cr_assert_null(strstr(err, "{"), "raw JSON: %s", err);
        free(out);
        free(err);
        /* -f: the suspension stays, and tarryq says so */
        cr_assert_eq(tarryq(&h, &out, &err, (const char *[]){"-f", NULL}), 0, "%s", err);
        cr_assert_not_null(strstr(err, "1 destination stays suspended"), "%s", err);
        free(out);
        free(err);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_connection_count(ms), conns,
                     "the suspended destination was contacted after the restart");

        /* --force tries this one message anyway */
        cr_assert_eq(tarryq(&h, &out, &err, (const char *[]){"-i", id, "--force", NULL}), 0, "%s",
                     err);
        free(out);
        free(err);
        cr_assert_eq(fixture_wait_txns(ms, 1, WAIT_MS), 0, "--force did not deliver");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(ms, 0, &t), 0);
        cr_assert_str_eq(t.rcpts[0], "two@example.test");
        fixture_txn_clear(&t);

        /* tarryq resume DESTINATION lets the rest go */
        cr_assert_eq(tarryq(&h, &out, &err, (const char *[]){"resume", dest, NULL}), 0, "%s", err);
        free(out);
        free(err);
        cr_assert_eq(fixture_wait_txns(ms, 2, WAIT_MS), 0, "resume did not release the first");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(ms);
}

/* smtpc_pick_source's hash (FNV-1a of the destination), to order a pool so
 * that a new message to a destination would leave from a chosen address. */
static uint32_t fnv1a(const char *s)
{
        uint32_t h = 2166136261u;
        for (; *s; s++) {
                h ^= (unsigned char)*s;
                h *= 16777619u;
        }
        return h;
}

/* The greylist triplet is (client IP, sender, recipient): a retry from
 * another address starts the wait again. The first attempt leaves from
 * 127.0.0.3; tarryd restarts with a pool in which a new message to the same
 * destination leaves from 127.0.0.2 (a control message shows it does); the
 * retry must still leave from 127.0.0.3, pinned in the envelope. */
Test(daemon, a_retry_leaves_from_the_first_attempts_address_across_a_restart)
{
        struct fixture *f = start_fixture();
        fixture_set(f, "greylist", "2");
        fixture_set(f, "greylist_reply", "451 4.7.1 Greylisted, try again in 2 seconds");
        char transport[128], dest[64], text[1024];
        snprintf(transport, sizeof(transport), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(f));
        snprintf(dest, sizeof(dest), "[127.0.0.1]:%u", fixture_port(f));
        struct harness h;
        snprintf(text, sizeof(text), "source_address = 127.0.0.3\n%s", transport);
        harness_init(&h, text);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@example.test", "pinned");
        cr_assert(wait_log(&h, "class=greylist"), "the first attempt was not greylisted");
        cr_assert_eq(harness_stop(&h, SIGTERM, 5000), 0);

        const char *pool = fnv1a(dest) % 2 == 0 ? "127.0.0.2, 127.0.0.3" : "127.0.0.3, 127.0.0.2";
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = root\n"
                 "status_listen = unix:%s/status.sock\nshutdown_timeout = 2s\n"
                 "source_address = %s\n%s",
                 h.spool, h.dir, pool, transport);
        harness_write_config(&h, text);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "control@example.test", "new");
        cr_assert_eq(fixture_wait_txns(f, 2, WAIT_MS), 0, "not both delivered");
        for (size_t i = 0; i < 2; i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                if (strcmp(t.rcpts[0], "control@example.test") == 0)
                        cr_assert_str_eq(t.peer_ip, "127.0.0.2",
                                         "the pool would not move a new message: no test");
                else
                        cr_assert_str_eq(t.peer_ip, "127.0.0.3",
                                         "the retry left from another "
                                         "address than the first attempt");
                fixture_txn_clear(&t);
        }
        /* bob's retry passed the greylister at once: two connections for him,
         * two for the control message */
        cr_assert_eq(fixture_connection_count(f), 4);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(daemon, sigterm_with_attempts_in_flight_exits_in_time_and_loses_nothing)
{
        struct fixture *f = start_fixture();
        fixture_set(f, "hang", "dot");
        struct harness h;
        init_with(&h, f, NULL, NULL);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@example.test", "in flight");
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000;
             fixture_connection_count(f) == 0 && harness_now_us() < end;)
                harness_sleep_ms(20);
        cr_assert_gt(fixture_connection_count(f), 0, "no attempt started");
        harness_sleep_ms(200); /* on to the final dot, which is never answered */
        int64_t t0 = harness_now_us();
        int st = harness_stop(&h, SIGTERM, 5000);
        double took = (double)(harness_now_us() - t0) / 1e6;
        cr_assert_eq(st, 0, "tarryd exited with %d", st);
        /* tarryd says what it stopped with: the attempt was in flight, and
         * shutdown_timeout (not the attempt's end) ended it */
        cr_assert(harness_log_contains(&h, "stopping (1 attempt(s) running)"),
                  "no attempt was in flight at SIGTERM");
        cr_assert(harness_log_contains(&h, "shutdown: 1 attempt(s) still running after 2s"),
                  "the attempt ended before the shutdown timeout");
        cr_assert_eq(fixture_txn_count(f), 0);
        /* timing is the feature: shutdown_timeout = 2s, the dot's data_timeout 5s */
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
        cr_assert_eq(fixture_wait_txns(g, 1, WAIT_MS), 0, "message lost across shutdown");
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
        cr_assert(wait_log(&h, "reload failed, keeping the running configuration"));
        cr_assert(harness_log_contains(&h, "tarry.conf:3: unknown key 'bogus_key' in [main]"));
        harness_write_config(&h, good); /* for sendmail; tarryd is not told */
        harness_send(&h, "alice@sender.test", "bob@example.test", "after reload");
        cr_assert_eq(fixture_wait_txns(f, 1, WAIT_MS), 0, "tarryd stopped delivering after SIGHUP");
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
        cr_assert_eq(fixture_wait_txns(f, 1, WAIT_MS), 0);
        cr_assert(wait_log(&h, "status=bounced"), "the 550 was not bounced");
        cr_assert(wait_log(&h, "class=mailbox_full"), "the 452 was not deferred");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "good@example.test");
        fixture_txn_clear(&t);
        /* the full mailbox is still queued (the message's folder stays in
         * active/; the DSN about the 550 is a message of its own) */
        char id[17] = "";
        FILE *log = fopen(h.log, "r");
        cr_assert_not_null(log);
        char line[2048];
        while (fgets(line, sizeof(line), log))
                if (strstr(line, "to=<later@example.test>") && strstr(line, "class=mailbox_full")) {
                        const char *colon = strstr(line, ": to=<later");
                        cr_assert(colon && colon - line >= 16);
                        memcpy(id, colon - 16, 16);
                }
        fclose(log);
        cr_assert_eq(strlen(id), 16, "no deferral line for later@example.test");
        char path[512];
        snprintf(path, sizeof(path), "%s/active/%s", h.spool, id);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "%s is no longer queued", id);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 1, "delivered more than once");
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
        /* started by anyone else, tarryd runs as that user and ignores user =
         * (it would start and run): the claim needs root */
        if (geteuid() != 0)
                cr_skip_test("needs root: only root switches to the configured user");
        struct harness h;
        harness_init(&h, NULL);
        /* the config names no user: the default is "tarry", which this test expects missing */
        harness_write_config(&h, "[main]\nspool_dir = /tmp/tarry-no-such-spool\n"
                                 "user = tarry-test-no-such-user\n");
        char out[4096];
        const char *args[] = {"-C", h.conf, NULL};
        int code = run_tarryd(args, out, sizeof(out));
        cr_assert_eq(code, 67, "exit %d: %s", code, out);
        cr_assert_not_null(strstr(out, "user 'tarry-test-no-such-user' does not exist"), "%s", out);
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
Test(daemon, an_unreadable_envelope_is_retried_logged_once_and_delivered_later, .timeout = 120)
{
        struct fixture *f = start_fixture();
        fixture_set(f, "rcpt", "451 4.3.0 try again later");
        struct harness h;
        init_with(&h, f, NULL, "[retry.unknown_temp]\ninitial = 1s\nmax = 1s\n");
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@example.test", "unreadable");
        cr_assert(wait_log(&h, "status=deferred"));

        char dir[600], env[700], saved[700];
        only_active(&h, dir, sizeof(dir));
        snprintf(env, sizeof(env), "%s/envelope", dir);
        snprintf(saved, sizeof(saved), "%s/envelope.saved", dir);
        /* the deferral is logged before the envelope that records it is written
         * (atomically, by rename): wait for that write, or the test's rename
         * races it */
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000;; harness_sleep_ms(10)) {
                char buf[8192] = "";
                FILE *e = fopen(env, "r");
                if (e) {
                        buf[fread(buf, 1, sizeof(buf) - 1, e)] = '\0';
                        fclose(e);
                }
                if (strstr(buf, "try again later"))
                        break;
                cr_assert_lt(harness_now_us(), end, "the deferral never reached the envelope");
        }
        cr_assert_eq(rename(env, saved), 0);
        cr_assert_eq(mkdir(env, 0755), 0); /* readable by tarryd: EISDIR, not EACCES */
        /* the 1 s retry fails to read, then again 5 s later */
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000;
             harness_metric(&h, "tarry_spool_errors_total{kind=\"read\"}") < 2 &&
             harness_now_us() < end;)
                harness_sleep_ms(10);
        cr_assert_geq(harness_metric(&h, "tarry_spool_errors_total{kind=\"read\"}"), 2);
        cr_assert_eq(harness_log_count(&h, "cannot read the envelope: Is a directory"), 1);
        cr_assert_eq(harness_count_queued(&h, "active"), 1, "the message left the queue");

        cr_assert_eq(rmdir(env), 0);
        cr_assert_eq(rename(saved, env), 0);
        fixture_set(f, "rcpt", "250 2.1.5 Ok");
        cr_assert_eq(fixture_wait_txns(f, 1, WAIT_MS), 0, "not delivered once readable again");
        cr_assert(harness_log_contains(&h, "envelope read again"));
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000;
             harness_count_queued(&h, "active") > 0 && harness_now_us() < end;)
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
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000;
             harness_log_count(&h, warning) < 2 && harness_now_us() < end;)
                harness_sleep_ms(10);
        cr_assert_eq(harness_log_count(&h, warning), 2);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
}

/* A message with recipients at two destinations, both waiting; an
 * administrator deletes its folder by hand, then flushes. Both of its
 * scheduler items come due in the same batch: the first finds the envelope
 * gone, and forgetting the message must not free the second item's work
 * while the batch still holds it (a use-after-free that ASan reports and
 * that could crash tarryd). tarryd keeps running and delivers the next mail. */
Test(daemon, a_message_deleted_by_hand_with_two_destinations_due_is_forgotten_safely)
{
        struct fixture *f = start_fixture(), *other = start_fixture();
        const char *wait = "451 4.7.1 Greylisted, try again in 600 seconds";
        fixture_set(f, "rcpt", wait);
        fixture_set(other, "rcpt", wait);
        struct harness h;
        init_with(&h, f, other, NULL);
        harness_start(&h);
        const char *args[] = {"-f", "alice@sender.test", "bob@example.test", "carol@other.test",
                              NULL};
        cr_assert_eq(harness_sendmail(&h, "Subject: two\n\nbody\n", args), 0);
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000;
             harness_log_count(&h, "class=greylist") < 2; harness_sleep_ms(10))
                cr_assert_lt(harness_now_us(), end, "both destinations were not deferred");
        cr_assert_eq(harness_count_queued(&h, "active"), 1);

        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf %s/active/????????????????", h.spool);
        cr_assert_eq(system(cmd), 0);
        char *out = NULL, *err = NULL;
        const char *flush[] = {"-f", NULL};
        harness_tarryq(&h, flush, &out, &err);
        free(out);
        free(err);

        fixture_set(f, "rcpt", "250 2.1.5 Ok");
        harness_send(&h, "alice@sender.test", "dave@example.test", "after");
        cr_assert_eq(fixture_wait_txns(f, 1, WAIT_MS), 0, "the next message was not delivered");
        cr_assert(harness_running(&h), "tarryd died after the flush");
        cr_assert_eq(harness_stop(&h, SIGTERM, 5000), 0, "tarryd did not stop cleanly");
        harness_cleanup(&h);
        fixture_free(f);
        fixture_free(other);
}
