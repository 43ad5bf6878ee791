/* tests/cluster/test_record.c — what one node reads from Redis is validated
 * like any outside input: a record another node wrote is taken whole, and
 * anything else (wrong fields, absurd times, hostile text) is refused with a
 * reason instead of becoming a pause. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/reply_class.h"

#define S   1000000LL
#define NOW (1700000000LL * S)

static int parse(const char *rec, struct cluster_pause *p, char *work, char *why)
{
        return cluster_record_parse(rec, strlen(rec), NOW, work, CLUSTER_RECORD_MAX + 1, p, why,
                                    64);
}

Test(record, a_pause_written_by_one_node_reads_back_the_same_at_another)
{
        struct cluster_pause in = {.source = "192.0.2.10",
                                   .route = "[127.0.0.1]:2525",
                                   .state = CLUSTER_SUSPENDED,
                                   .until_us = NOW + 900 * S,
                                   .cls = CLASS_REPUTATION,
                                   .node = "mx1"};
        char rec[CLUSTER_RECORD_MAX + 1], work[CLUSTER_RECORD_MAX + 1], why[64] = "";
        cr_assert_eq(cluster_record_format(&in, rec, sizeof(rec)), 0);
        cr_assert_str_eq(rec, "1 192.0.2.10 [127.0.0.1]:2525 suspended 1700000900000000 "
                              "reputation mx1");
        struct cluster_pause out;
        cr_assert_eq(parse(rec, &out, work, why), 0, "%s", why);
        cr_assert_str_eq(out.source, "192.0.2.10");
        cr_assert_str_eq(out.route, "[127.0.0.1]:2525");
        cr_assert_eq(out.state, CLUSTER_SUSPENDED);
        cr_assert_eq(out.until_us, NOW + 900 * S);
        cr_assert_eq(out.cls, CLASS_REPUTATION);
        cr_assert_str_eq(out.node, "mx1");
}

Test(record, no_source_address_and_no_class_travel_as_dashes)
{
        struct cluster_pause in = {.source = "",
                                   .route = "mx:example.com",
                                   .state = CLUSTER_BACKOFF,
                                   .until_us = NOW + 60 * S,
                                   .cls = -1,
                                   .node = "b"};
        char rec[CLUSTER_RECORD_MAX + 1], work[CLUSTER_RECORD_MAX + 1], why[64] = "";
        cr_assert_eq(cluster_record_format(&in, rec, sizeof(rec)), 0);
        struct cluster_pause out;
        cr_assert_eq(parse(rec, &out, work, why), 0, "%s", why);
        cr_assert_str_eq(out.source, "");
        cr_assert_eq(out.cls, -1);
        cr_assert_eq(out.state, CLUSTER_BACKOFF);
}

Test(record, a_route_or_node_that_could_not_be_read_back_is_not_written)
{
        struct cluster_pause in = {.source = "192.0.2.10",
                                   .route = "mx:exa mple.com",
                                   .state = CLUSTER_BACKOFF,
                                   .until_us = NOW + 60 * S,
                                   .cls = -1,
                                   .node = "mx1"};
        char rec[CLUSTER_RECORD_MAX + 1];
        cr_assert_eq(cluster_record_format(&in, rec, sizeof(rec)), -EINVAL);
        in.route = "mx:example.com";
        in.node = "mx 1";
        cr_assert_eq(cluster_record_format(&in, rec, sizeof(rec)), -EINVAL);
}

/* Each row: a record and the reason it is refused. */
static const struct {
        const char *rec, *why;
} bad[] = {
    {"", "not 7 fields"},
    {"1 192.0.2.10 mx:a.example suspended 1700000900000000 reputation", "not 7 fields"},
    {"1 192.0.2.10 mx:a.example suspended 1700000900000000 reputation mx1 extra", "not 7 fields"},
    {"2 192.0.2.10 mx:a.example suspended 1700000900000000 reputation mx1", "unknown version"},
    {"1 evil.example mx:a.example suspended 1700000900000000 reputation mx1",
     "source is not an address"},
    {"1 192.0.2.10 mx:a.example frozen 1700000900000000 reputation mx1",
     "state is not suspended or backoff"},
    {"1 192.0.2.10 mx:a.example suspended soon reputation mx1", "end time is not a number"},
    {"1 192.0.2.10 mx:a.example suspended -5 reputation mx1", "end time is not a number"},
    {"1 192.0.2.10 mx:a.example suspended 99999999999999999999999 reputation mx1",
     "end time is not a number"},
    /* ten years from now: never trusted into a suspension of years */
    {"1 192.0.2.10 mx:a.example suspended 2015360000000000 reputation mx1",
     "ends more than a day away"},
    {"1 192.0.2.10 mx:a.example suspended 1699999999000000 reputation mx1", "already over"},
    {"1 192.0.2.10 mx:a.example suspended 1700000900000000 permanent mx1", "unknown class"},
    {"1 192.0.2.10 mx:a.example suspended 1700000900000000 nosuch mx1", "unknown class"},
    {"1 192.0.2.10 mx:a.example suspended 1700000900000000 reputation m/x", "node name is not one"},
    {"1 192.0.2.10 mx:a.\x01xample suspended 1700000900000000 reputation mx1", "route is not one"},
};

Test(record, stale_or_hostile_records_are_refused_with_the_reason)
{
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char work[CLUSTER_RECORD_MAX + 1], why[64] = "";
                struct cluster_pause p;
                cr_expect_eq(parse(bad[i].rec, &p, work, why), -EINVAL, "accepted: %s", bad[i].rec);
                cr_expect_str_eq(why, bad[i].why, "'%s'", bad[i].rec);
        }
}

Test(record, a_record_longer_than_the_limit_or_with_a_nul_is_refused_unread)
{
        char big[CLUSTER_RECORD_MAX + 64], work[CLUSTER_RECORD_MAX + 1], why[64] = "";
        memset(big, 'x', sizeof(big));
        struct cluster_pause p;
        cr_assert_eq(cluster_record_parse(big, sizeof(big), NOW, work, sizeof(work), &p, why, 64),
                     -EINVAL);
        cr_assert_str_eq(why, "too long");
        static const char nul[] = "1 - mx:a\0 suspended 1700000900000000 - mx1";
        cr_assert_eq(
            cluster_record_parse(nul, sizeof(nul) - 1, NOW, work, sizeof(work), &p, why, 64),
            -EINVAL);
        cr_assert_str_eq(why, "a NUL byte");
}

Test(record, node_names_and_prefixes_are_checked)
{
        cr_assert(cluster_node_name_ok("mx1.example-a_b"));
        cr_assert_not(cluster_node_name_ok(""));
        cr_assert_not(cluster_node_name_ok("a b"));
        cr_assert_not(cluster_node_name_ok("a/b"));
        cr_assert(cluster_prefix_ok("tarry:"));
        cr_assert(cluster_prefix_ok("fleet{1}:"));
        cr_assert_not(cluster_prefix_ok("tar ry:"));
        cr_assert_not(cluster_prefix_ok(""));
}

Test(record, a_greylist_window_reads_back_the_same_at_another_node)
{
        struct cluster_window in = {.route = "mx:example.com",
                                    .upper_s = 180,
                                    .lower_s = 60,
                                    .learned_at_us = NOW - 5 * S,
                                    .node = "mx1"};
        char rec[CLUSTER_RECORD_MAX + 1], work[CLUSTER_RECORD_MAX + 1], why[64] = "";
        cr_assert_eq(cluster_window_format(&in, rec, sizeof(rec)), 0);
        cr_assert_str_eq(rec, "w1 mx:example.com 180 60 1699999995000000 mx1");
        struct cluster_window out;
        cr_assert_eq(cluster_window_parse(rec, strlen(rec), NOW, work, sizeof(work), &out, why, 64),
                     0, "%s", why);
        cr_assert_str_eq(out.route, "mx:example.com");
        cr_assert_eq(out.upper_s, 180);
        cr_assert_eq(out.lower_s, 60);
        cr_assert_eq(out.learned_at_us, NOW - 5 * S);
        cr_assert_str_eq(out.node, "mx1");
}

static const struct {
        const char *rec, *why;
} bad_windows[] = {
    {"w1 mx:example.com 180 60 1699999995000000", "not 6 fields"},
    {"w2 mx:example.com 180 60 1699999995000000 mx1", "unknown version"},
    {"w1 mx:example.com 0 0 1699999995000000 mx1", "upper bound is not 1 s to 12 h"},
    {"w1 mx:example.com 999999 0 1699999995000000 mx1", "upper bound is not 1 s to 12 h"},
    {"w1 mx:example.com 180 180 1699999995000000 mx1", "lower bound is not below the upper"},
    {"w1 mx:example.com 180 -1 1699999995000000 mx1", "lower bound is not below the upper"},
    {"w1 mx:example.com 180 60 2015360000000000 mx1",
     "learned time is not a number or in the future"},
    {"w1 mx:example.com 180 60 yesterday mx1", "learned time is not a number or in the future"},
    {"w1 mx:example.com 180 60 1699999995000000 m;x", "node name is not one"},
};

Test(record, a_window_that_is_not_a_bracket_or_comes_from_the_future_is_refused)
{
        for (size_t i = 0; i < sizeof(bad_windows) / sizeof(bad_windows[0]); i++) {
                char work[CLUSTER_RECORD_MAX + 1], why[64] = "";
                struct cluster_window w;
                const char *rec = bad_windows[i].rec;
                cr_expect_eq(
                    cluster_window_parse(rec, strlen(rec), NOW, work, sizeof(work), &w, why, 64),
                    -EINVAL, "accepted: %s", rec);
                cr_expect_str_eq(why, bad_windows[i].why, "'%s'", rec);
        }
}

static int parse_resume(const char *rec, struct cluster_resume *r, char *work, char *why)
{
        return cluster_resume_parse(rec, strlen(rec), NOW, work, CLUSTER_RECORD_MAX + 1, r, why,
                                    64);
}

Test(record, a_resume_reads_back_the_same_at_another_node)
{
        struct cluster_resume in = {
            .source = "*", .route = "site:google", .at_us = NOW - 2 * S, .node = "mx2"};
        char rec[CLUSTER_RECORD_MAX + 1], work[CLUSTER_RECORD_MAX + 1], why[64] = "";
        cr_assert_eq(cluster_resume_format(&in, rec, sizeof(rec)), 0);
        cr_assert_str_eq(rec, "r1 * site:google 1699999998000000 mx2");
        struct cluster_resume out;
        cr_assert_eq(parse_resume(rec, &out, work, why), 0, "%s", why);
        cr_assert_str_eq(out.source, "*");
        cr_assert_str_eq(out.route, "site:google");
        cr_assert_eq(out.at_us, NOW - 2 * S);
        cr_assert_str_eq(out.node, "mx2");
        /* the tombstone the script stores in a dest: key */
        cr_assert_eq(
            parse_resume("r1 192.0.2.10 site:google 1699999998000000 mx2", &out, work, why), 0,
            "%s", why);
        cr_assert_str_eq(out.source, "192.0.2.10");
        cr_assert_eq(parse_resume("r1 - site:google 1699999998000000 mx2", &out, work, why), 0);
        cr_assert_str_eq(out.source, "");
}

Test(record, a_resume_from_the_future_or_older_than_any_pause_is_refused)
{
        static const struct {
                const char *rec, *why;
        } bad[] = {
            {"r1 * site:google 1700000000000000", "not 5 fields"},
            {"r2 * site:google 1700000000000000 mx2", "unknown version"},
            {"r1 evil;host site:google 1700000000000000 mx2", "source is not an address"},
            {"r1 * site:google 1700000301000000 mx2",
             "resume time is not a number or in the future"},
            {"r1 * site:google -5 mx2", "resume time is not a number or in the future"},
            {"r1 * site:google 1699913599000000 mx2", "resumed more than a day ago"},
            {"r1 * site:google 1700000000000000 mx/2", "node name is not one"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char work[CLUSTER_RECORD_MAX + 1], why[64] = "";
                struct cluster_resume out;
                cr_expect_eq(parse_resume(bad[i].rec, &out, work, why), -EINVAL, "%s", bad[i].rec);
                cr_expect_str_eq(why, bad[i].why, "%s", bad[i].rec);
        }
        char rec[CLUSTER_RECORD_MAX + 1];
        struct cluster_resume sp = {.source = "*", .route = "a b", .at_us = NOW, .node = "x"};
        cr_assert_eq(cluster_resume_format(&sp, rec, sizeof(rec)), -EINVAL);
}
