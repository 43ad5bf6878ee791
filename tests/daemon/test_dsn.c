/* tests/daemon/test_dsn.c — DSNs end to end: tarryd queues them and delivers
 * them to the sender's domain (routed by [transport] to a second fixture). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

struct setup {
        struct fixture *rcpt, *sender;
        struct harness h;
        char saved[300];
};

/* Every temporary class retries after retry_s, so three attempts take
 * ~2 retry_s. min_age: delay_dsn_min_age; main_extra: more [main] keys. */
static void start_full(struct setup *s, const char *retry_s, const char *min_age,
                       const char *main_extra)
{
        cr_assert_eq(fixture_new("127.0.0.1", &s->rcpt), 0);
        cr_assert_eq(fixture_new("127.0.0.1", &s->sender), 0);
        cr_assert_eq(fixture_start(s->rcpt, 0), 0);
        snprintf(s->saved, sizeof(s->saved), "/tmp/tarry-dsn-XXXXXX");
        cr_assert_not_null(mkdtemp(s->saved));
        fixture_set(s->sender, "save_dir", s->saved);
        cr_assert_eq(fixture_start(s->sender, 0), 0);
        char extra[4096];
        int n = snprintf(extra, sizeof(extra),
                         "%sdelay_dsn_after_retries = 2\ndelay_dsn_min_age = %s\n"
                         "[transport]\nexample.test = [127.0.0.1]:%u\n"
                         "sender.test = [127.0.0.1]:%u\n",
                         main_extra ? main_extra : "", min_age, fixture_port(s->rcpt),
                         fixture_port(s->sender));
        const char *classes[] = {"greylist",     "reputation", "rate_limit", "overload",
                                 "mailbox_full", "routing",    "policy",     "unknown_temp"};
        for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
                n += snprintf(extra + n, sizeof(extra) - (size_t)n,
                              "[retry.%s]\ninitial = %s\nfactor = 1\nmax = %s\nuse_hint = no\n",
                              classes[i], retry_s, retry_s);
        harness_init(&s->h, extra);
        harness_start(&s->h);
}

/* The retry count alone decides (delay_dsn_min_age = 0); retries after 1 s. */
static void start_with(struct setup *s, const char *main_extra)
{
        start_full(s, "1s", "0", main_extra);
}

static void start(struct setup *s)
{
        start_with(s, NULL);
}

static void stop(struct setup *s)
{
        cr_assert_eq(harness_stop(&s->h, SIGTERM, 3000), 0);
        harness_cleanup(&s->h);
        fixture_free(s->rcpt);
        fixture_free(s->sender);
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->saved);
        cr_assert_eq(system(cmd), 0);
}

/* The text of the n-th message saved by the sender's fixture. */
static char *saved_message(struct setup *s, int n)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/%d.eml", s->saved, n);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "no saved message %s", path);
        static char buf[65536];
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        buf[len] = '\0';
        fclose(f);
        return buf;
}

Test(dsn, three_deferrals_send_exactly_one_delayed_dsn_to_the_sender)
{
        struct setup s;
        start(&s);
        fixture_set(s.rcpt, "rcpt", "451 4.3.0 Temporary system problem, try later");
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "slow one");

        cr_assert_eq(fixture_wait_txns(s.sender, 1, 8000), 0, "no delayed DSN arrived");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(s.sender, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "", "a DSN must have the null sender");
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "alice@sender.test");
        fixture_txn_clear(&t);
        /* the DSN came after the first attempt and two failed retries */
        cr_assert_geq(fixture_connection_count(s.rcpt), 3);
        const char *dsn = saved_message(&s, 1);
        cr_assert_not_null(strstr(dsn, "Action: delayed"));
        cr_assert_not_null(strstr(dsn, "Final-Recipient: rfc822; bob@example.test"));
        cr_assert_not_null(strstr(dsn, "report-type=delivery-status"));

        /* more deferrals: still only the one warning */
        size_t attempts = fixture_connection_count(s.rcpt);
        for (int i = 0; i < 400 && fixture_connection_count(s.rcpt) < attempts + 2; i++)
                harness_sleep_ms(10);
        cr_assert_geq(fixture_connection_count(s.rcpt), attempts + 2);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(s.sender), 1, "a second delayed DSN was sent");
        stop(&s);
}

Test(dsn, a_550_sends_one_failed_dsn)
{
        struct setup s;
        start(&s);
        fixture_set(s.rcpt, "rcpt",
                    "550 5.1.1 <bob@example.test>: Recipient address rejected: "
                    "User unknown");
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "to nobody");
        cr_assert_eq(fixture_wait_txns(s.sender, 1, 3000), 0, "no failure DSN arrived");
        const char *dsn = saved_message(&s, 1);
        cr_assert_not_null(strstr(dsn, "Action: failed"));
        cr_assert_not_null(strstr(dsn, "Status: 5.1.1"));
        cr_assert_not_null(strstr(dsn, "Diagnostic-Code: smtp; 550 5.1.1"));
        harness_sleep_ms(500);
        cr_assert_eq(fixture_txn_count(s.sender), 1, "more than one failure DSN");
        cr_assert_eq(harness_count_queued(&s.h, "active"), 0, "the bounced message stayed queued");
        stop(&s);
}

Test(dsn, a_bounce_of_a_null_sender_message_produces_nothing)
{
        struct setup s;
        start(&s);
        fixture_set(s.rcpt, "rcpt", "550 5.1.1 User unknown");
        const char *args[] = {"-f", "<>", "bob@example.test", NULL};
        cr_assert_eq(harness_sendmail(&s.h, "Subject: bounce me\n\nx\n", args), 0);
        for (int i = 0; i < 200 && !harness_log_contains(&s.h, "status=bounced"); i++)
                harness_sleep_ms(10);
        cr_assert(harness_log_contains(&s.h, "status=bounced"));
        harness_sleep_ms(500);
        cr_assert_eq(fixture_txn_count(s.sender), 0, "a DSN about a <> message was sent");
        cr_assert_eq(harness_count_queued(&s.h, "incoming") + harness_count_queued(&s.h, "active"),
                     0);
        stop(&s);
}

/* ---- double bounces: a DSN that cannot be delivered (issue 13.2) ---- */

static void wait_log(struct setup *s, const char *needle, int timeout_ms)
{
        for (int i = 0; i < timeout_ms / 20 && !harness_log_contains(&s->h, needle); i++)
                harness_sleep_ms(20);
        cr_assert(harness_log_contains(&s->h, needle), "no '%s' in the log", needle);
}

static size_t wait_queued(struct setup *s, const char *dir, size_t want, int timeout_ms)
{
        for (int i = 0; i < timeout_ms / 20 && harness_count_queued(&s->h, dir) != want; i++)
                harness_sleep_ms(20);
        return harness_count_queued(&s->h, dir);
}

Test(dsn, a_dsn_the_senders_domain_refuses_goes_to_the_postmaster_once)
{
        struct setup s;
        start_with(&s, "postmaster = postmaster@sender.test\n");
        fixture_set(s.rcpt, "rcpt", "550 5.1.1 <bob@example.test>: User unknown");
        fixture_set(s.sender, "rcpt:alice@sender.test",
                    "550 5.1.1 <alice@sender.test>: no such user");
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "to nobody");

        cr_assert_eq(fixture_wait_txns(s.sender, 1, 10000), 0, "the postmaster got nothing");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(s.sender, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "");
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "postmaster@sender.test");
        fixture_txn_clear(&t);
        const char *notice = saved_message(&s, 1);
        cr_assert(strstr(notice, "To: postmaster@sender.test\r\n"), "%s", notice);
        cr_assert(strstr(notice, "Final-Recipient: rfc822; alice@sender.test\r\n"), "%s", notice);
        cr_assert(strstr(notice, "Diagnostic-Code: smtp; 550 5.1.1 <alice@sender.test>"), "%s",
                  notice);
        /* the undeliverable DSN itself is attached whole */
        cr_assert(strstr(notice, "Content-Type: message/rfc822\r\n"), "%s", notice);
        cr_assert(strstr(notice, "Subject: Undelivered Mail Returned to Sender\r\n"), "%s", notice);
        cr_assert(strstr(notice, "Final-Recipient: rfc822; bob@example.test\r\n"), "%s", notice);

        cr_assert_eq(wait_queued(&s, "active", 0, 10000), 0, "something stayed queued");
        harness_sleep_ms(500);
        cr_assert_eq(fixture_txn_count(s.sender), 1, "the postmaster was told more than once");
        cr_assert_eq(harness_count_queued(&s.h, "hold"), 0);
        stop(&s);
}

Test(dsn, an_expired_dsn_goes_to_the_postmaster)
{
        struct setup s;
        start_with(&s, "postmaster = postmaster@sender.test\nqueue_lifetime = 3s\n");
        fixture_set(s.rcpt, "rcpt", "550 5.1.1 User unknown");
        fixture_set(s.sender, "rcpt:alice@sender.test", "451 4.3.0 try later");
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "to nobody");
        cr_assert_eq(fixture_wait_txns(s.sender, 1, 20000), 0, "the postmaster got nothing");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(s.sender, 0, &t), 0);
        cr_assert_str_eq(t.rcpts[0], "postmaster@sender.test");
        fixture_txn_clear(&t);
        const char *notice = saved_message(&s, 1);
        cr_assert(strstr(notice, "Final-Recipient: rfc822; alice@sender.test\r\n"), "%s", notice);
        cr_assert(strstr(notice, "Status: 4.4.7\r\n"), "%s", notice);
        cr_assert_eq(wait_queued(&s, "active", 0, 10000), 0, "something stayed queued");
        stop(&s);
}

Test(dsn, with_no_postmaster_an_undeliverable_dsn_is_held_not_deleted)
{
        struct setup s;
        start_with(&s, "postmaster =\n");
        fixture_set(s.rcpt, "rcpt", "550 5.1.1 User unknown");
        fixture_set(s.sender, "rcpt", "550 5.1.1 no such user");
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "to nobody");
        wait_log(&s, "moved to hold/ (no postmaster is set)", 10000);
        cr_assert_eq(wait_queued(&s, "hold", 1, 5000), 1, "the DSN is not in hold/");
        cr_assert_eq(wait_queued(&s, "active", 0, 5000), 0);
        cr_assert_eq(fixture_txn_count(s.sender), 0);
        /* listed as held, and it stays there */
        char *out = NULL, *err = NULL;
        const char *args[] = {"-p", NULL};
        cr_assert_eq(harness_tarryq(&s.h, args, &out, &err), 0, "%s", err);
        cr_assert(strstr(out, "!"), "%s", out);
        cr_assert(strstr(out, "MAILER-DAEMON"), "%s", out);
        free(out);
        free(err);
        harness_sleep_ms(1500);
        cr_assert_eq(harness_count_queued(&s.h, "hold"), 1);
        stop(&s);
}

Test(dsn, when_the_postmaster_notice_fails_too_it_is_held)
{
        struct setup s;
        start_with(&s, "postmaster = postmaster@sender.test\n");
        fixture_set(s.rcpt, "rcpt", "550 5.1.1 User unknown");
        fixture_set(s.sender, "rcpt", "550 5.1.1 no such user");
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "to nobody");
        wait_log(&s, "postmaster postmaster@sender.test notified", 10000);
        wait_log(&s, "undeliverable notification to <postmaster@sender.test> moved to hold/",
                 10000);
        cr_assert_eq(wait_queued(&s, "hold", 1, 5000), 1);
        cr_assert_eq(wait_queued(&s, "active", 0, 5000), 0);
        harness_sleep_ms(1500);
        cr_assert_eq(harness_count_queued(&s.h, "hold"), 1, "a notice about the notice?");
        cr_assert_eq(harness_log_count(&s.h, "postmaster postmaster@sender.test notified"), 1);
        stop(&s);
}

static int tarryq_flush(struct setup *s)
{
        const char *args[] = {"-f", NULL};
        char *out = NULL, *err = NULL;
        int rc = harness_tarryq(&s->h, args, &out, &err);
        free(out);
        free(err);
        return rc;
}

/* Wait (up to 20 s) until tarryd has logged n deferrals. */
static bool wait_deferred(struct setup *s, size_t n)
{
        for (int i = 0; i < 2000 && harness_log_count(&s->h, "status=deferred") < n; i++)
                harness_sleep_ms(10);
        return harness_log_count(&s->h, "status=deferred") >= n;
}

Test(dsn, flushes_do_not_count_as_failed_retries)
{
        /* retries an hour apart: every attempt after the first comes from tarryq -f */
        struct setup s;
        start_full(&s, "1h", "0", NULL);
        fixture_set(s.rcpt, "rcpt", "451 4.3.0 Temporary system problem, try later");
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "flushed");
        cr_assert(wait_deferred(&s, 1), "no first attempt");
        for (size_t k = 2; k <= 4; k++) {
                cr_assert_eq(tarryq_flush(&s), 0);
                cr_assert(wait_deferred(&s, k), "flush %zu made no attempt", k - 1);
        }
        harness_sleep_ms(500);
        cr_assert_eq(harness_log_count(&s.h, "status=deferred"), 4);
        cr_assert_eq(fixture_txn_count(s.sender), 0,
                     "a delayed DSN after three flushes and no failed scheduled retry");
        stop(&s);
}

Test(dsn, one_delayed_dsn_only_once_the_message_is_delay_dsn_min_age_old)
{
        struct setup s;
        start_full(&s, "1s", "6s", NULL);
        fixture_set(s.rcpt, "rcpt", "451 4.3.0 Temporary system problem, try later");
        int64_t t0 = harness_now_us();
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "slow one");
        cr_assert_eq(fixture_wait_txns(s.sender, 1, 30000), 0, "no delayed DSN arrived");
        int64_t took = harness_now_us() - t0;
        cr_assert_geq(took, 6000000, "the delayed DSN came %lld ms after submission",
                      (long long)(took / 1000));
        cr_assert_geq(fixture_connection_count(s.rcpt), 3);
        cr_assert_not_null(strstr(saved_message(&s, 1), "Action: delayed"));
        size_t attempts = fixture_connection_count(s.rcpt);
        for (int i = 0; i < 1000 && fixture_connection_count(s.rcpt) < attempts + 2; i++)
                harness_sleep_ms(10);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(s.sender), 1, "a second delayed DSN was sent");
        stop(&s);
}
