/* tests/cli/test_tarryq.c — tarryq -p / -j on a fixed spool, compared byte for byte. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "run.h"

static struct fixture fx;

static void setup(void)
{
        fixture_setup(&fx, NULL);
}

static void teardown(void)
{
        fixture_teardown(&fx);
}

TestSuite(tarryq, .init = setup, .fini = teardown, .timeout = 30);

struct fixed_msg {
        const char *dir, *id;
        size_t size;
        const char *envelope;
};

/* Times are fixed: 1606132800 is Mon Nov 23 12:00:00 2020 UTC (the tests run with TZ=UTC). */
static const struct fixed_msg fixed[] = {
    {"active", "5FBBA44000000001", 4321,
     "{\"version\": 1, \"id\": \"5FBBA44000000001\", \"sender\": \"app@example.com\", "
     "\"arrival_us\": 1606132800000000, \"size\": 4321, \"recipients\": [{\"address\": "
     "\"alice@example.org\", \"state\": \"deferred\", \"attempts\": 2, \"reply_code\": 451, "
     "\"dsn_status\": \"4.7.1\", \"last_reply\": \"Greylisted, try again in 300 seconds\", "
     "\"relay\": \"mx.example.org[192.0.2.1]:25\", \"class\": \"greylist\", \"next_attempt_us\": "
     "1606133400000000}, {\"address\": \"bob@example.org\", \"state\": \"deferred\", \"attempts\": "
     "2, \"reply_code\": 451, \"dsn_status\": \"4.7.1\", \"last_reply\": \"Greylisted, try again "
     "in 300 seconds\", \"relay\": \"mx.example.org[192.0.2.1]:25\", \"class\": \"greylist\", "
     "\"next_attempt_us\": 1606133700000000}, {\"address\": \"carol@example.net\", \"state\": "
     "\"deferred\", \"attempts\": 1, \"reply_code\": 421, \"dsn_status\": \"4.7.0\", "
     "\"last_reply\": \"Our system has detected an unusual rate of unsolicited mail originating "
     "from your IP address\", \"relay\": \"mx.example.net[198.51.100.7]:25\", \"class\": "
     "\"reputation\", \"next_attempt_us\": 1606136400000000}, {\"address\": \"dave@example.net\", "
     "\"state\": \"pending\"}, {\"address\": \"eve@example.com\", \"state\": \"delivered\", "
     "\"attempts\": 1, \"reply_code\": 250}]}"},
    {"hold", "5FBBA48100000001", 1000,
     "{\"version\": 1, \"id\": \"5FBBA48100000001\", \"sender\": \"\", \"arrival_us\": "
     "1606132865000000, \"size\": 1000, \"recipients\": [{\"address\": \"root@example.com\", "
     "\"state\": \"pending\"}]}"},
    {"incoming", "5FBBB25500000001", 2048,
     "{\"version\": 1, \"id\": \"5FBBB25500000001\", \"sender\": \"cron@example.com\", "
     "\"arrival_us\": 1606136405000000, \"size\": 2048, \"recipients\": [{\"address\": "
     "\"ops@example.com\", \"state\": \"pending\"}]}"},
    {"active", "5FBF98C700000001", 500,
     "{\"version\": 1, \"id\": \"5FBF98C700000001\", \"sender\": \"app@example.com\", "
     "\"arrival_us\": 1606392007000000, \"size\": 500, \"recipients\": [{\"address\": "
     "\"x@example.org\", \"state\": \"pending\"}]}"},
};
static const char expected_j[] =
    "{\"queue_name\": \"deferred\", \"queue_id\": \"5FBBA44000000001\", \"arrival_time\": "
    "1606132800, \"message_size\": 4321, \"forced_expire\": false, \"sender\": "
    "\"app@example.com\", "
    "\"recipients\": [{\"address\": \"alice@example.org\", \"delay_reason\": \"host "
    "mx.example.org[192.0.2.1] said: 451 4.7.1 Greylisted, try again in 300 seconds\", \"class\": "
    "\"greylist\", \"next_attempt\": 1606133400, \"next_attempt_time\": "
    "\"2020-11-23T12:10:00+00:00\", \"next_attempt_reason\": \"backoff\", \"attempts\": 2}, "
    "{\"address\": \"bob@example.org\", \"delay_reason\": \"host mx.example.org[192.0.2.1] said: "
    "451 "
    "4.7.1 Greylisted, try again in 300 seconds\", \"class\": \"greylist\", \"next_attempt\": "
    "1606133700, \"next_attempt_time\": \"2020-11-23T12:15:00+00:00\", \"next_attempt_reason\": "
    "\"backoff\", \"attempts\": 2}, {\"address\": \"carol@example.net\", \"delay_reason\": \"host "
    "mx.example.net[198.51.100.7] said: 421 4.7.0 Our system has detected an unusual rate of "
    "unsolicited mail originating from your IP address\", \"class\": \"reputation\", "
    "\"next_attempt\": 1606136400, \"next_attempt_time\": \"2020-11-23T13:00:00+00:00\", "
    "\"next_attempt_reason\": \"backoff\", \"attempts\": 1}, {\"address\": \"dave@example.net\", "
    "\"class\": null, \"next_attempt\": null, \"next_attempt_time\": null, "
    "\"next_attempt_reason\": "
    "\"first_attempt\", \"attempts\": 0}], \"class\": \"greylist\", \"next_attempt\": 1606133400, "
    "\"next_attempt_time\": \"2020-11-23T12:10:00+00:00\", \"next_attempt_reason\": \"backoff\", "
    "\"attempts\": 2}\n"
    "{\"queue_name\": \"hold\", \"queue_id\": \"5FBBA48100000001\", \"arrival_time\": 1606132865, "
    "\"message_size\": 1000, \"forced_expire\": false, \"sender\": \"MAILER-DAEMON\", "
    "\"recipients\": [{\"address\": \"root@example.com\", \"class\": null, \"next_attempt\": null, "
    "\"next_attempt_time\": null, \"next_attempt_reason\": \"manual_hold\", \"attempts\": 0}], "
    "\"class\": null, \"next_attempt\": null, \"next_attempt_time\": null, "
    "\"next_attempt_reason\": "
    "\"manual_hold\", \"attempts\": 0}\n"
    "{\"queue_name\": \"incoming\", \"queue_id\": \"5FBBB25500000001\", \"arrival_time\": "
    "1606136405, \"message_size\": 2048, \"forced_expire\": false, \"sender\": "
    "\"cron@example.com\", "
    "\"recipients\": [{\"address\": \"ops@example.com\", \"class\": null, \"next_attempt\": null, "
    "\"next_attempt_time\": null, \"next_attempt_reason\": \"first_attempt\", \"attempts\": 0}], "
    "\"class\": null, \"next_attempt\": null, \"next_attempt_time\": null, "
    "\"next_attempt_reason\": "
    "\"first_attempt\", \"attempts\": 0}\n"
    "{\"queue_name\": \"active\", \"queue_id\": \"5FBF98C700000001\", \"arrival_time\": "
    "1606392007, "
    "\"message_size\": 500, \"forced_expire\": false, \"sender\": \"app@example.com\", "
    "\"recipients\": [{\"address\": \"x@example.org\", \"class\": null, \"next_attempt\": null, "
    "\"next_attempt_time\": null, \"next_attempt_reason\": \"first_attempt\", \"attempts\": 0}], "
    "\"class\": null, \"next_attempt\": null, \"next_attempt_time\": null, "
    "\"next_attempt_reason\": "
    "\"first_attempt\", \"attempts\": 0}\n";
static const char expected_p[] =
    "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"
    "5FBBA44000000001      4321 Mon Nov 23 12:00:00 app@example.com\n"
    "(host mx.example.org[192.0.2.1] said: 451 4.7.1 Greylisted, try again in 300 seconds)\n"
    "                                               alice@example.org\n"
    "                                               bob@example.org\n"
    "(host mx.example.net[198.51.100.7] said: 421 4.7.0 Our system has detected an unusual rate of "
    "unsolicited mail originating from your IP address)\n"
    "                                               carol@example.net\n"
    "                                                               (not tried yet)\n"
    "                                               dave@example.net\n"
    "\n"
    "5FBBA48100000001!     1000 Mon Nov 23 12:01:05 MAILER-DAEMON\n"
    "                                              (on hold: tarryq -H releases it)\n"
    "                                               root@example.com\n"
    "\n"
    "5FBBB25500000001      2048 Mon Nov 23 13:00:05 cron@example.com\n"
    "                                                               (not tried yet)\n"
    "                                               ops@example.com\n"
    "\n"
    "5FBF98C700000001*      500 Thu Nov 26 12:00:07 app@example.com\n"
    "                                                               (not tried yet)\n"
    "                                               x@example.org\n"
    "\n"
    "-- 7 Kbytes in 4 Requests.\n";

static void put_message(const struct fixed_msg *m)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/%s/%s", fx.spool, m->dir, m->id);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/%s/%s/envelope", fx.spool, m->dir, m->id);
        write_file(path, m->envelope);
        char *body = malloc(m->size + 1);
        memset(body, 'x', m->size);
        body[m->size] = '\0';
        snprintf(path, sizeof(path), "%s/%s/%s/body", fx.spool, m->dir, m->id);
        write_file(path, body);
        free(body);
}

static void put_fixed_spool(void)
{
        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
                put_message(&fixed[i]);
}

static struct run_result tarryq(const char *flag)
{
        return run(NULL, (char *const[]){(char *)bin("tarryq"), "-C", fx.conf, (char *)flag, NULL});
}

Test(tarryq, p_prints_the_postqueue_layout_byte_for_byte)
{
        put_fixed_spool();
        struct run_result r = tarryq("-p");
        cr_assert_eq(r.status, 0, "%s", r.err);
        cr_assert_str_eq(r.out, expected_p);
        /* tarryd is not running: said on stderr, as postqueue does */
        cr_assert_not_null(strstr(r.err, "reading the spool directly"), "%s", r.err);
        run_free(&r);
}

Test(tarryq, j_prints_one_postqueue_json_object_per_message)
{
        put_fixed_spool();
        struct run_result r = tarryq("-j");
        cr_assert_eq(r.status, 0, "%s", r.err);
        cr_assert_str_eq(r.out, expected_j);
        run_free(&r);
}

Test(tarryq, mailq_and_sendmail_bp_print_the_same_as_p)
{
        put_fixed_spool();
        struct run_result r = run(NULL, (char *const[]){(char *)bin("mailq"), "-C", fx.conf, NULL});
        cr_assert_str_eq(r.out, expected_p);
        run_free(&r);
        r = run(NULL, (char *const[]){(char *)bin("sendmail"), "-C", fx.conf, "-bp", NULL});
        cr_assert_str_eq(r.out, expected_p);
        run_free(&r);
}

Test(tarryq, an_empty_queue_says_so)
{
        struct run_result r = tarryq("-p");
        cr_assert_eq(r.status, 0);
        cr_assert_str_eq(r.out, "Mail queue is empty\n");
        run_free(&r);
        r = tarryq("-j");
        cr_assert_eq(r.status, 0);
        cr_assert_str_empty(r.out);
        run_free(&r);
}

Test(tarryq, one_request_is_singular)
{
        put_message(&fixed[2]);
        struct run_result r = tarryq("-p");
        cr_assert_str_eq(
            r.out,
            "----Queue ID----- --Size-- ---Arrival Time---- "
            "--Sender/Recipient------\n"
            "5FBBB25500000001      2048 Mon Nov 23 13:00:05 cron@example.com\n"
            "                                                               (not tried yet)\n"
            "                                               ops@example.com\n"
            "\n"
            "-- 2 Kbytes in 1 Request.\n");
        run_free(&r);
}

Test(tarryq, an_unreadable_envelope_is_reported_and_skipped)
{
        put_message(&fixed[2]);
        struct fixed_msg broken = {"active", "5FBBA44000000002", 10, "{\"version\": 1, \"id\": "};
        put_message(&broken);
        struct run_result r = tarryq("-p");
        cr_assert_eq(r.status, 0);
        cr_assert_not_null(strstr(r.err, "active/5FBBA44000000002: cannot read the envelope: "
                                         "the envelope is not valid JSON"),
                           "%s", r.err);
        cr_assert_not_null(strstr(r.out, "-- 2 Kbytes in 1 Request.\n"));
        run_free(&r);
}

Test(tarryq, usage_errors_exit_64_and_a_missing_spool_75)
{
        struct run_result r = run(NULL, (char *const[]){(char *)bin("tarryq"), NULL});
        cr_assert_eq(r.status, EX_USAGE);
        cr_assert_not_null(strstr(r.err, "usage: tarryq"));
        run_free(&r);
        r = tarryq("-z");
        cr_assert_eq(r.status, EX_USAGE);
        cr_assert_not_null(strstr(r.err, "unknown option -z"));
        run_free(&r);
        fixture_teardown(&fx);
        r = tarryq("-p");
        cr_assert_eq(r.status, EX_CONFIG, "the config file went with the fixture");
        run_free(&r);
        setup();
        char spool[400];
        snprintf(spool, sizeof(spool), "%s/hold", fx.spool);
        rmdir(spool);
        r = tarryq("-p");
        cr_assert_eq(r.status, EX_TEMPFAIL);
        cr_assert_not_null(strstr(r.err, "cannot open the spool"));
        run_free(&r);
}

Test(tarryq, a_silent_unix_socket_is_named_with_the_reason_not_as_localhost_port_80)
{
        char line[600];
        snprintf(line, sizeof(line), "status_listen = unix:%s/none.sock\n", fx.dir);
        FILE *f = fopen(fx.conf, "a");
        cr_assert_not_null(f);
        fputs(line, f);
        fclose(f);
        struct run_result r = tarryq("-s");
        cr_assert_eq(r.status, EX_UNAVAILABLE, "%s", r.err);
        cr_assert_not_null(strstr(r.err, "none.sock: no such socket"), "%s", r.err);
        cr_assert_null(strstr(r.err, "port 80"), "%s", r.err);
        run_free(&r);
}
