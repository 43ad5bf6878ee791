/* tests/bounce/test_bounce.c — DSN decisions and reports, read back by Python's email parser.
 *
 * Every generated report goes through parse_dsn.py (email.message_from_bytes,
 * policy=default); dsn_parse_report() also asserts what must hold for any report: no
 * parser defects, CRLF only, no line over 998 bytes, multipart/report with
 * report-type=delivery-status.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bounce/bounce.h"
#include "common/cleanup.h"
#include "tests/bounce/parse.h"

#define SEC        1000000LL
#define NOW_US     (1700000000LL * SEC)
#define ARRIVAL_US (NOW_US - 3600 * SEC)
#define LIFETIME_S (5 * 86400)

static const char ORIGINAL[] = "From: App <app@sender.test>\r\n"
                               "To: rcpt@dest.test\r\n"
                               "Subject: Invoice 42\r\n"
                               "Message-ID: <orig-1@sender.test>\r\n"
                               "\r\n"
                               "Hello,\r\n"
                               "the secret body line.\r\n";

static void setup(void)
{
        setenv("TZ", "UTC", 1);
        tzset();
}

TestSuite(bounce, .init = setup);

/* ---- building envelopes ---- */

static struct dsn_policy policy(void)
{
        return (struct dsn_policy){.myhostname = "mx.tarry.test",
                                   .queue_lifetime_s = LIFETIME_S,
                                   .delay_dsn_after_retries = 2};
}

static struct dsn_original original(void)
{
        return (struct dsn_original){.fd = -1, .data = ORIGINAL, .size = sizeof ORIGINAL - 1};
}

static struct envelope *message(const char *sender)
{
        struct envelope *e = envelope_new();
        cr_assert_not_null(e);
        free(e->sender);
        e->sender = strdup(sender);
        snprintf(e->id, sizeof e->id, "0000000100000ABC");
        e->arrival_us = ARRIVAL_US;
        e->size = sizeof ORIGINAL - 1;
        return e;
}

static char *dup_or_null(const char *s)
{
        return s ? strdup(s) : NULL;
}

static struct envelope_rcpt *rcpt(struct envelope *e, const char *addr, enum rcpt_state state,
                                  int attempts, int code, const char *status, const char *reply,
                                  const char *cls)
{
        struct envelope_rcpt *r = envelope_add_rcpt(e, addr);
        cr_assert_not_null(r);
        r->state = state;
        r->attempts = attempts;
        /* every retry after the first attempt came at its scheduled time */
        r->failed_retries = state == RCPT_DEFERRED && attempts > 0 ? attempts - 1 : 0;
        r->reply_code = code;
        r->dsn_status = dup_or_null(status);
        r->last_reply = dup_or_null(reply);
        r->reply_class = dup_or_null(cls);
        r->relay = strdup("mx.dest.test[192.0.2.25]:25");
        r->first_attempt_us = ARRIVAL_US;
        r->last_attempt_us = NOW_US - 60 * SEC;
        return r;
}

static struct envelope_rcpt *greylisted(struct envelope *e, const char *addr, int attempts)
{
        return rcpt(e, addr, RCPT_DEFERRED, attempts, 451, "4.7.1",
                    "451 4.7.1 Greylisted, please try again in 300 seconds", "greylist");
}

static struct envelope_rcpt *unknown_user(struct envelope *e, const char *addr)
{
        return rcpt(e, addr, RCPT_FAILED, 1, 550, "5.1.1",
                    "550 5.1.1 <nobody@dest.test>: User unknown", "permanent");
}

/* ---- reading reports back ---- */

/* The single value of a top-level header. */
static const char *hdr(json_t *j, const char *name)
{
        json_t *v = json_object_get(json_object_get(j, "headers"), name);
        cr_assert_eq(json_array_size(v), 1, "header %s appears %zu times", name,
                     json_array_size(v));
        return json_string_value(json_array_get(v, 0));
}

static json_t *part(json_t *j, size_t i)
{
        json_t *p = json_array_get(json_object_get(j, "parts"), i);
        cr_assert_not_null(p, "no part %zu", i);
        return p;
}

static const char *part_type(json_t *j, size_t i)
{
        return json_string_value(json_object_get(part(j, i), "content_type"));
}

static const char *human(json_t *j)
{
        cr_assert_str_eq(part_type(j, 0), "text/plain");
        /* line breaks and indentation collapsed to single spaces */
        return json_string_value(json_object_get(part(j, 0), "flat"));
}

static size_t n_groups(json_t *j)
{
        cr_assert_str_eq(part_type(j, 1), "message/delivery-status");
        return json_array_size(json_object_get(part(j, 1), "groups"));
}

/* Field of delivery-status group g (0: per-message), or NULL if absent. */
static const char *field(json_t *j, size_t g, const char *name)
{
        json_t *groups = json_object_get(part(j, 1), "groups");
        cr_assert_lt(g, json_array_size(groups));
        return json_string_value(json_object_get(json_array_get(groups, g), name));
}

static void expect_date(const char *got, int64_t us)
{
        char want[64];
        time_t t = (time_t)(us / SEC);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(want, sizeof want, "%a, %d %b %Y %H:%M:%S +0000", &tm);
        cr_assert_not_null(got);
        cr_assert_str_eq(got, want);
}

static bool contains(const char *hay, const char *needle)
{
        return hay && strstr(hay, needle);
}

static struct dsn_report *build(enum dsn_kind kind, const struct envelope *e,
                                const struct dsn_policy *p)
{
        struct dsn_original o = original();
        struct dsn_report *rep = NULL;
        int r = kind == DSN_DELAYED ? dsn_build_delayed(e, &o, p, NOW_US, &rep)
                                    : dsn_build_failed(e, &o, p, NOW_US, &rep);
        cr_assert_eq(r, 1, "expected a report, got %d", r);
        cr_assert_not_null(rep);
        return rep;
}

static void expect_no_report(enum dsn_kind kind, const struct envelope *e,
                             const struct dsn_policy *p)
{
        struct dsn_original o = original();
        struct dsn_report *rep = (void *)1;
        int r = kind == DSN_DELAYED ? dsn_build_delayed(e, &o, p, NOW_US, &rep)
                                    : dsn_build_failed(e, &o, p, NOW_US, &rep);
        cr_assert_eq(r, 0);
        cr_assert_null(rep);
}

/* ---- delayed reports ---- */

Test(bounce, greylisted_recipient_after_second_failed_retry_gets_a_delayed_report)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 3);
        struct dsn_policy p = policy();
        cr_assert(dsn_delay_due(e, &p, NOW_US));
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        json_t *j = dsn_parse_report(rep);

        cr_assert(contains(hdr(j, "from"), "MAILER-DAEMON@mx.tarry.test"));
        cr_assert(contains(hdr(j, "from"), "Mail Delivery System"));
        cr_assert_str_eq(hdr(j, "to"), "app@sender.test");
        cr_assert_str_eq(hdr(j, "subject"), "Delayed Mail (still being retried)");
        cr_assert_str_eq(hdr(j, "auto-submitted"), "auto-replied");
        cr_assert_str_eq(hdr(j, "mime-version"), "1.0");
        cr_assert(contains(hdr(j, "message-id"), "@mx.tarry.test>"));
        expect_date(hdr(j, "date"), NOW_US);

        cr_assert_str_eq(part_type(j, 0), "text/plain");
        cr_assert_str_eq(part_type(j, 1), "message/delivery-status");
        cr_assert_str_eq(part_type(j, 2), "text/rfc822-headers");
        cr_assert_null(json_array_get(json_object_get(j, "parts"), 3));

        cr_assert_eq(n_groups(j), 2);
        cr_assert_str_eq(field(j, 0, "reporting-mta"), "dns; mx.tarry.test");
        expect_date(field(j, 0, "arrival-date"), ARRIVAL_US);
        cr_assert_null(field(j, 0, "original-envelope-id"));
        cr_assert_str_eq(field(j, 1, "final-recipient"), "rfc822; rcpt@dest.test");
        cr_assert_str_eq(field(j, 1, "action"), "delayed");
        cr_assert_str_eq(field(j, 1, "status"), "4.7.1");
        cr_assert_str_eq(field(j, 1, "remote-mta"), "dns; mx.dest.test");
        cr_assert_str_eq(field(j, 1, "diagnostic-code"),
                         "smtp; 451 4.7.1 Greylisted, please try again in 300 seconds");
        cr_assert_str_eq(field(j, 1, "x-tarry-class"), "greylist");
        expect_date(field(j, 1, "last-attempt-date"), NOW_US - 60 * SEC);
        expect_date(field(j, 1, "will-retry-until"), ARRIVAL_US + LIFETIME_S * SEC);
        cr_assert_null(field(j, 1, "original-recipient"));

        const char *text = human(j);
        cr_assert(contains(text, "The receiving server asked us to wait"), "%s", text);
        cr_assert(contains(text, "Nothing to do"), "%s", text);
        cr_assert(contains(text, "YOU DO NOT NEED TO RESEND"), "%s", text);
        cr_assert(contains(text, "rcpt@dest.test"));

        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, delayed_report_goes_to_the_sender_from_the_null_sender)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 3);
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);

        cr_assert_eq(rep->kind, DSN_DELAYED);
        cr_assert_str_eq(rep->env->sender, "");
        cr_assert(rep->env->is_dsn);
        cr_assert_eq(rep->env->n_rcpt, 1);
        cr_assert_str_eq(rep->env->rcpt[0].address, "app@sender.test");
        cr_assert_eq(rep->env->rcpt[0].notify, NOTIFY_NEVER);
        cr_assert_eq(rep->len, strlen(rep->message));
        /* a report about the report is impossible */
        cr_assert_not(dsn_may_report(rep->env));

        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, no_delayed_report_before_the_second_retry_has_failed)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 2); /* first attempt + retry 1 */
        struct dsn_policy p = policy();
        cr_assert_not(dsn_delay_due(e, &p, NOW_US));
        expect_no_report(DSN_DELAYED, e, &p);
        envelope_free(e);
}

Test(bounce, delayed_report_lists_every_recipient_still_deferred)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "a@dest.test", 3);
        rcpt(e, "b@other.test", RCPT_DEFERRED, 1, 421, "4.7.0",
             "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected "
             "volume or user complaints",
             "reputation");
        rcpt(e, "c@dest.test", RCPT_DELIVERED, 1, 250, "2.0.0", "250 2.0.0 Ok", NULL);
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        json_t *j = dsn_parse_report(rep);

        cr_assert_eq(n_groups(j), 3);
        cr_assert_str_eq(field(j, 1, "final-recipient"), "rfc822; a@dest.test");
        cr_assert_str_eq(field(j, 2, "final-recipient"), "rfc822; b@other.test");
        cr_assert_str_eq(field(j, 2, "status"), "4.7.0");
        cr_assert_str_eq(field(j, 2, "x-tarry-class"), "reputation");
        cr_assert(contains(field(j, 2, "diagnostic-code"), "smtp; 421 4.7.0 [TSS04]"));
        cr_assert(contains(human(j), "reputation"));
        cr_assert_not(contains(human(j), "c@dest.test"));
        cr_assert_eq(rep->n_reported, 2);
        cr_assert_eq(rep->reported[0], 0);
        cr_assert_eq(rep->reported[1], 1);

        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, second_delayed_report_is_never_due)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 3);
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        cr_assert_eq(dsn_mark_sent(e, rep), 0);
        cr_assert(e->delay_dsn_sent);

        e->rcpt[0].attempts = 7; /* further deferrals */
        cr_assert_not(dsn_delay_due(e, &p, NOW_US));
        expect_no_report(DSN_DELAYED, e, &p);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, delayed_report_flag_survives_a_restart)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 3);
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        cr_assert_eq(dsn_mark_sent(e, rep), 0);

        /* what queue_update writes and queue_load reads after a restart */
        char *text = json_dumps(envelope_to_json(e), 0);
        cr_assert_not_null(text);
        struct envelope *reloaded = NULL;
        const char *why = NULL;
        cr_assert_eq(envelope_from_json(text, strlen(text), &reloaded, &why), 0, "%s", why);
        reloaded->rcpt[0].attempts = 5;
        cr_assert_not(dsn_delay_due(reloaded, &p, NOW_US));

        free(text);
        envelope_free(reloaded);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, threshold_zero_turns_delayed_reports_off)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 10);
        struct dsn_policy p = policy();
        p.delay_dsn_after_retries = 0;
        cr_assert_not(dsn_delay_due(e, &p, NOW_US));
        expect_no_report(DSN_DELAYED, e, &p);
        envelope_free(e);
}

Test(bounce, threshold_counts_retries_after_the_first_attempt)
{
        struct envelope *e = message("app@sender.test");
        struct envelope_rcpt *r = greylisted(e, "rcpt@dest.test", 1);
        struct dsn_policy p = policy();
        p.delay_dsn_after_retries = 1;
        cr_assert_not(dsn_delay_due(e, &p, NOW_US));
        r->attempts = 2;
        r->failed_retries = 1;
        cr_assert(dsn_delay_due(e, &p, NOW_US));
        envelope_free(e);
}

Test(bounce, retries_forced_by_the_administrator_do_not_count)
{
        /* five attempts, but three were tarryq -f / -i / a release: one scheduled retry failed */
        struct envelope *e = message("app@sender.test");
        struct envelope_rcpt *r = greylisted(e, "rcpt@dest.test", 5);
        r->failed_retries = 1;
        struct dsn_policy p = policy();
        cr_assert_not(dsn_delay_due(e, &p, NOW_US));
        expect_no_report(DSN_DELAYED, e, &p);
        r->failed_retries = 2;
        cr_assert(dsn_delay_due(e, &p, NOW_US));
        envelope_free(e);
}

Test(bounce, no_delayed_report_before_delay_dsn_min_age)
{
        /* two failed retries within 6 minutes (a 300 s greylister that also
         * refused the 305 s retry): too early to alarm the sender */
        struct envelope *e = message("app@sender.test");
        e->arrival_us = NOW_US - 6 * 60 * SEC;
        greylisted(e, "rcpt@dest.test", 3);
        struct dsn_policy p = policy();
        p.delay_dsn_min_age_s = 30 * 60;
        cr_assert_not(dsn_delay_due(e, &p, NOW_US));
        cr_assert_not(dsn_delay_due(e, &p, e->arrival_us + 30 * 60 * SEC - 1));
        cr_assert(dsn_delay_due(e, &p, e->arrival_us + 30 * 60 * SEC));
        p.delay_dsn_min_age_s = 0; /* 0: the retry count alone */
        cr_assert(dsn_delay_due(e, &p, NOW_US));
        envelope_free(e);
}

Test(bounce, policy_comes_from_the_configuration)
{
        struct tarry_config cfg = {.myhostname = "relay.example.org",
                                   .queue_lifetime_s = 3600,
                                   .delay_dsn_after_retries = 4,
                                   .delay_dsn_min_age_s = 1800};
        struct dsn_policy p;
        dsn_policy_from_config(&p, &cfg);
        cr_assert_str_eq(p.myhostname, "relay.example.org");
        cr_assert_eq(p.queue_lifetime_s, 3600);
        cr_assert_eq(p.delay_dsn_after_retries, 4);
        cr_assert_eq(p.delay_dsn_min_age_s, 1800);
        cr_assert_eq(p.return_full_limit, DSN_RETURN_FULL_LIMIT_DEFAULT);
}

/* ---- loops ---- */

Test(bounce, message_from_the_null_sender_gets_no_report)
{
        struct envelope *e = message("");
        greylisted(e, "rcpt@dest.test", 3);
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        cr_assert_not(dsn_may_report(e));
        cr_assert_eq(dsn_failures_pending(e), 0);
        expect_no_report(DSN_DELAYED, e, &p);
        expect_no_report(DSN_FAILED, e, &p);
        envelope_free(e);
}

Test(bounce, report_about_a_report_is_never_made)
{
        struct envelope *e = message("app@sender.test");
        e->is_dsn = true;
        greylisted(e, "rcpt@dest.test", 3);
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        expect_no_report(DSN_DELAYED, e, &p);
        expect_no_report(DSN_FAILED, e, &p);
        envelope_free(e);
}

Test(bounce, sender_unfit_for_rcpt_to_gets_no_report)
{
        struct envelope *e = message("app@sender.test\r\nRCPT TO:<victim@x.test>");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        cr_assert_not(dsn_may_report(e));
        expect_no_report(DSN_FAILED, e, &p);
        envelope_free(e);
}

/* ---- NOTIFY ---- */

Test(bounce, notify_never_suppresses_every_report)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 3)->notify = NOTIFY_NEVER;
        unknown_user(e, "nobody@dest.test")->notify = NOTIFY_NEVER;
        struct dsn_policy p = policy();
        expect_no_report(DSN_DELAYED, e, &p);
        expect_no_report(DSN_FAILED, e, &p);
        envelope_free(e);
}

Test(bounce, notify_without_delay_suppresses_the_delayed_report_only)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 3)->notify = NOTIFY_FAILURE;
        unknown_user(e, "nobody@dest.test")->notify = NOTIFY_FAILURE;
        struct dsn_policy p = policy();
        expect_no_report(DSN_DELAYED, e, &p);
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, notify_without_failure_suppresses_the_failed_report_only)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 3)->notify = NOTIFY_DELAY | NOTIFY_SUCCESS;
        unknown_user(e, "nobody@dest.test")->notify = NOTIFY_DELAY;
        struct dsn_policy p = policy();
        expect_no_report(DSN_FAILED, e, &p);
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, delayed_report_leaves_out_recipients_that_refused_delay_notices)
{
        struct envelope *e = message("app@sender.test");
        greylisted(e, "quiet@dest.test", 3)->notify = NOTIFY_FAILURE;
        greylisted(e, "loud@dest.test", 3);
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_eq(n_groups(j), 2);
        cr_assert_str_eq(field(j, 1, "final-recipient"), "rfc822; loud@dest.test");
        cr_assert_not(contains(human(j), "quiet@dest.test"));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

/* ---- failed reports ---- */

Test(bounce, unknown_user_gets_a_failed_report)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        cr_assert_eq(dsn_failures_pending(e), 1);
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);

        cr_assert_str_eq(hdr(j, "subject"), "Undelivered Mail Returned to Sender");
        cr_assert_str_eq(hdr(j, "to"), "app@sender.test");
        cr_assert_eq(n_groups(j), 2);
        cr_assert_str_eq(field(j, 0, "reporting-mta"), "dns; mx.tarry.test");
        cr_assert_str_eq(field(j, 1, "final-recipient"), "rfc822; nobody@dest.test");
        cr_assert_str_eq(field(j, 1, "action"), "failed");
        cr_assert_str_eq(field(j, 1, "status"), "5.1.1");
        cr_assert_str_eq(field(j, 1, "remote-mta"), "dns; mx.dest.test");
        cr_assert_str_eq(field(j, 1, "diagnostic-code"),
                         "smtp; 550 5.1.1 <nobody@dest.test>: User unknown");
        expect_date(field(j, 1, "last-attempt-date"), NOW_US - 60 * SEC);
        cr_assert_null(field(j, 1, "will-retry-until"));
        const char *text = human(j);
        cr_assert(contains(text, "does not exist (unknown user)"), "%s", text);
        cr_assert(contains(text, "Check the address"), "%s", text);
        cr_assert_not(contains(text, "WARNING ONLY"));

        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, recipient_expired_at_queue_lifetime_is_reported_as_4_4_7)
{
        struct envelope *e = message("app@sender.test");
        rcpt(e, "slow@dest.test", RCPT_FAILED, 40, 451, "4.7.1",
             "451 4.7.1 Greylisted, please try again later", "greylist");
        struct dsn_policy p = policy();
        cr_assert(dsn_rcpt_expired(&e->rcpt[0]));
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);

        cr_assert_str_eq(field(j, 1, "action"), "failed");
        cr_assert_str_eq(field(j, 1, "status"), "4.4.7");
        cr_assert_str_eq(field(j, 1, "diagnostic-code"),
                         "smtp; 451 4.7.1 Greylisted, please try again later");
        const char *text = human(j);
        cr_assert(contains(text, "We gave up"), "%s", text);
        cr_assert(contains(text, "The last problem was: The receiving server asked us to wait"),
                  "%s", text);

        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, unreachable_recipient_without_reply_is_reported_without_smtp_diagnostic)
{
        struct envelope *e = message("app@sender.test");
        struct envelope_rcpt *r = rcpt(e, "x@nowhere.test", RCPT_FAILED, 30, 0, NULL,
                                       "connect to mx.nowhere.test: Connection refused", NULL);
        free(r->relay);
        r->relay = NULL;
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(field(j, 1, "status"), "4.4.7");
        cr_assert_str_eq(field(j, 1, "diagnostic-code"),
                         "X-Tarry; connect to mx.nowhere.test: Connection refused");
        cr_assert_null(field(j, 1, "remote-mta"));
        cr_assert_str_eq(field(j, 1, "x-tarry-class"), "routing");
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, failures_in_the_same_attempt_share_one_report)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "a@dest.test");
        greylisted(e, "still@dest.test", 1);
        unknown_user(e, "b@dest.test");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_eq(n_groups(j), 3);
        cr_assert_str_eq(field(j, 1, "final-recipient"), "rfc822; a@dest.test");
        cr_assert_str_eq(field(j, 2, "final-recipient"), "rfc822; b@dest.test");

        cr_assert_eq(dsn_mark_sent(e, rep), 0);
        cr_assert(e->rcpt[0].failure_dsn_sent);
        cr_assert_not(e->rcpt[1].failure_dsn_sent);
        cr_assert(e->rcpt[2].failure_dsn_sent);
        cr_assert_eq(dsn_failures_pending(e), 0);
        expect_no_report(DSN_FAILED, e, &p);
        json_decref(j);
        dsn_report_free(rep);

        /* a later failure gets a report of its own */
        e->rcpt[1].state = RCPT_FAILED;
        e->rcpt[1].reply_code = 550;
        rep = build(DSN_FAILED, e, &p);
        j = dsn_parse_report(rep);
        cr_assert_eq(n_groups(j), 2);
        cr_assert_str_eq(field(j, 1, "final-recipient"), "rfc822; still@dest.test");
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, mark_sent_refuses_a_report_that_does_not_fit_the_envelope)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "a@dest.test");
        unknown_user(e, "b@dest.test");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        struct envelope *other = message("app@sender.test");
        unknown_user(other, "a@dest.test");
        cr_assert_eq(dsn_mark_sent(other, rep), -EINVAL);
        cr_assert_not(other->rcpt[0].failure_dsn_sent);
        envelope_free(other);
        dsn_report_free(rep);
        envelope_free(e);
}

/* ---- words per class ---- */

static const char *delayed_text_for(const char *cls, int code, const char *status,
                                    const char *reply, char **keep)
{
        struct envelope *e = message("app@sender.test");
        rcpt(e, "rcpt@dest.test", RCPT_DEFERRED, 3, code, status, reply, cls);
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        json_t *j = dsn_parse_report(rep);
        *keep = strdup(human(j));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
        return *keep;
}

Test(bounce, each_deferral_class_is_explained_in_its_own_words)
{
        static const struct {
                const char *cls, *status, *reply, *words;
        } rows[] = {
            {"greylist", "4.7.1", "451 4.7.1 greylisted", "asked us to wait"},
            {"reputation", "4.7.0", "421 4.7.0 IP reputation", "reputation"},
            {"rate_limit", "4.7.0", "450 4.7.0 too many messages", "rate limit"},
            {"overload", "4.3.2", "421 4.3.2 system busy", "overloaded"},
            {"mailbox_full", "4.2.2", "452 4.2.2 Mailbox full", "mailbox is full"},
            {"routing", NULL, "connect: Connection timed out", "could not reach"},
            {"policy", "4.7.1", "450 4.7.1 policy", "local policy"},
            {"unknown_temp", NULL, "451 local error", "temporary problem"},
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                _cleanup_free_ char *text = NULL;
                delayed_text_for(rows[i].cls, rows[i].status ? 450 : 0, rows[i].status,
                                 rows[i].reply, &text);
                cr_assert(contains(text, rows[i].words), "%s: %s", rows[i].cls, text);
        }
}

Test(bounce, full_mailbox_keeps_the_servers_status_code)
{
        struct envelope *e = message("app@sender.test");
        rcpt(e, "full@dest.test", RCPT_DEFERRED, 3, 452, "4.2.2",
             "452 4.2.2 The email account that you tried to reach is over quota", "mailbox_full");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(field(j, 1, "status"), "4.2.2");
        cr_assert_str_eq(field(j, 1, "x-tarry-class"), "mailbox_full");
        cr_assert(contains(human(j), "The recipient's mailbox is full"));
        cr_assert(contains(human(j), "over quota"));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, status_is_derived_when_the_server_sent_no_enhanced_code)
{
        struct envelope *e = message("app@sender.test");
        rcpt(e, "a@dest.test", RCPT_DEFERRED, 3, 450, NULL, "450 mailbox full", "mailbox_full");
        rcpt(e, "b@dest.test", RCPT_DEFERRED, 3, 451, "5.7.1", "451 odd status", "unknown_temp");
        unknown_user(e, "c@dest.test");
        rcpt(e, "d@dest.test", RCPT_FAILED, 1, 554, NULL, "554 no", "permanent");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(field(j, 1, "status"), "4.2.2");
        cr_assert_str_eq(field(j, 2, "status"), "4.0.0"); /* 5.x.x cannot describe a delay */
        json_decref(j);
        dsn_report_free(rep);

        rep = build(DSN_FAILED, e, &p);
        j = dsn_parse_report(rep);
        cr_assert_str_eq(field(j, 2, "status"), "5.0.0");
        cr_assert_str_eq(field(j, 2, "diagnostic-code"), "smtp; 554 no");
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, reply_text_without_its_code_gets_the_code_prefixed)
{
        struct envelope *e = message("app@sender.test");
        rcpt(e, "a@dest.test", RCPT_FAILED, 1, 550, "5.7.1", "5.7.1 rejected by policy",
             "permanent");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(field(j, 1, "diagnostic-code"), "smtp; 550 5.7.1 rejected by policy");
        cr_assert(contains(human(j), "policy reasons"));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

/* ---- RET, ENVID, ORCPT ---- */

Test(bounce, ret_hdrs_returns_the_header_block_only)
{
        struct envelope *e = message("app@sender.test");
        e->ret = DSN_RET_HDRS;
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(part_type(j, 2), "text/rfc822-headers");
        const char *h = json_string_value(json_object_get(part(j, 2), "text"));
        cr_assert(contains(h, "Subject: Invoice 42"), "%s", h);
        cr_assert(contains(h, "Message-ID: <orig-1@sender.test>"), "%s", h);
        cr_assert_not(contains(h, "secret body"), "%s", h);
        cr_assert(contains(human(j), "headers of your message are attached"));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, ret_not_given_returns_headers)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(part_type(j, 2), "text/rfc822-headers");
        cr_assert_not(contains(rep->message, "secret body"));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, ret_full_returns_the_whole_message)
{
        struct envelope *e = message("app@sender.test");
        e->ret = DSN_RET_FULL;
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(part_type(j, 2), "message/rfc822");
        json_t *inner = json_object_get(part(j, 2), "inner");
        json_t *subj = json_object_get(json_object_get(inner, "headers"), "subject");
        cr_assert_str_eq(json_string_value(json_array_get(subj, 0)), "Invoice 42");
        cr_assert(
            contains(json_string_value(json_object_get(inner, "body")), "the secret body line."));
        cr_assert(contains(human(j), "A copy of your message is attached"));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, ret_full_above_the_size_cap_returns_headers_with_a_note)
{
        struct envelope *e = message("app@sender.test");
        e->ret = DSN_RET_FULL;
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        p.return_full_limit = 100;
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(part_type(j, 2), "text/rfc822-headers");
        cr_assert_not(contains(rep->message, "secret body"));
        cr_assert(contains(human(j), "more than the 100 bytes we return whole"), "%s", human(j));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, original_is_read_from_a_file_descriptor_without_loading_the_body)
{
        char path[] = "/tmp/tarry-orig-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        unlink(path);
        cr_assert_eq(write(fd, ORIGINAL, sizeof ORIGINAL - 1), (ssize_t)sizeof ORIGINAL - 1);
        /* a 64 MiB body (sparse), with the fd's offset left at the end */
        cr_assert_eq(ftruncate(fd, 64 << 20), 0);
        struct envelope *e = message("app@sender.test");
        e->ret = DSN_RET_FULL;
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_original o = {.fd = fd, .size = 64 << 20};
        struct dsn_report *rep = NULL;
        cr_assert_eq(dsn_build_failed(e, &o, &p, NOW_US, &rep), 1);
        cr_assert_lt(rep->len, 20000);
        cr_assert_eq(lseek(fd, 0, SEEK_CUR), (off_t)sizeof ORIGINAL - 1);
        json_t *j = dsn_parse_report(rep);
        const char *h = json_string_value(json_object_get(part(j, 2), "text"));
        cr_assert(contains(h, "Subject: Invoice 42"), "%s", h);
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
        close(fd);
}

Test(bounce, envid_and_orcpt_are_echoed_decoded)
{
        struct envelope *e = message("app@sender.test");
        e->envid = strdup("QQ314159+2Bx");
        greylisted(e, "rcpt@dest.test", 3)->orcpt = strdup("rfc822;First+2BLast@example.org");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_DELAYED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(field(j, 0, "original-envelope-id"), "QQ314159+x");
        cr_assert_str_eq(field(j, 1, "original-recipient"), "rfc822;First+Last@example.org");
        cr_assert_str_eq(field(j, 1, "final-recipient"), "rfc822; rcpt@dest.test");
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, report_without_a_readable_original_has_two_parts)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_report *rep = NULL;
        cr_assert_eq(dsn_build_failed(e, NULL, &p, NOW_US, &rep), 1);
        json_t *j = dsn_parse_report(rep);
        cr_assert_eq(json_array_size(json_object_get(j, "parts")), 2);
        cr_assert_str_eq(field(j, 1, "action"), "failed");
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, empty_original_returns_an_empty_header_block)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_original o = {.fd = -1, .data = NULL, .size = 0};
        struct dsn_report *rep = NULL;
        cr_assert_eq(dsn_build_failed(e, &o, &p, NOW_US, &rep), 1);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(part_type(j, 2), "text/rfc822-headers");
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, bad_arguments_are_refused)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_report *rep = NULL;
        struct dsn_original o = {.fd = -1, .data = NULL, .size = 10};
        cr_assert_eq(dsn_build_failed(e, &o, &p, NOW_US, &rep), -EINVAL);
        p.myhostname = NULL;
        cr_assert_eq(dsn_build_failed(e, NULL, &p, NOW_US, &rep), -EINVAL);
        cr_assert_eq(dsn_mark_sent(e, NULL), -EINVAL);
        envelope_free(e);
}

/* ---- hostile input ---- */

Test(bounce, hostile_reply_text_yields_a_well_formed_report)
{
        size_t big = 10 * 1024;
        char *reply = malloc(big + 256);
        cr_assert_not_null(reply);
        int n = snprintf(reply, 256,
                         "550 5.1.1 no\r\nSubject: pwned\r\nBcc: victim@x.test\r\n\r\n"
                         "--=_tarry_\r\n\xff\xfe bad \xc3\xa9t\xc3\xa9 \xe2\x82 ");
        memset(reply + n, 'A', big);
        reply[n + big] = '\0';

        struct envelope *e = message("app@sender.test");
        e->ret = DSN_RET_FULL;
        struct envelope_rcpt *r = rcpt(e, "nobody@dest.test", RCPT_FAILED, 1, 550, "5.1.1\r\nX: y",
                                       reply, "permanent\r\nInjected: 1");
        free(r->relay);
        r->relay = strdup("evil\r\nX-Evil: 1[192.0.2.1]:25");
        r->orcpt = strdup("rfc822;a@b.test+0D+0AX-Orcpt: injected");
        e->envid = strdup("id+0D+0AX-Envid: injected");
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep); /* no defects, CRLF only, lines <= 998 */

        cr_assert_str_eq(hdr(j, "subject"), "Undelivered Mail Returned to Sender");
        cr_assert_null(json_object_get(json_object_get(j, "headers"), "bcc"));
        cr_assert_eq(json_array_size(json_object_get(j, "parts")), 3);
        cr_assert_eq(n_groups(j), 2);
        json_t *g1 = json_array_get(json_object_get(part(j, 1), "groups"), 1);
        cr_assert_null(json_object_get(g1, "subject"));
        cr_assert_null(json_object_get(g1, "x-evil"));
        cr_assert_null(json_object_get(g1, "x-orcpt"));
        cr_assert_null(
            json_object_get(json_array_get(json_object_get(part(j, 1), "groups"), 0), "x-envid"));
        cr_assert_str_eq(field(j, 1, "status"), "5.0.0");
        cr_assert_str_eq(field(j, 1, "x-tarry-class"), "permanent");
        const char *diag = field(j, 1, "diagnostic-code");
        cr_assert(contains(diag, "smtp; 550 5.1.1 no Subject: pwned Bcc:"), "%s", diag);
        cr_assert(contains(diag, "?? bad ??t?? ?? AAAA"), "%s", diag);
        cr_assert_leq(strlen(diag), DSN_DIAGNOSTIC_MAX + 20);
        cr_assert(contains(diag, "..."), "%s", diag);
        /* the human part keeps valid UTF-8 and replaces the rest */
        cr_assert(contains(human(j), "bad \xc3\xa9t\xc3\xa9 \xef\xbf\xbd"), "%s", human(j));
        cr_assert_str_eq(json_string_value(json_object_get(part(j, 0), "charset")), "utf-8");
        cr_assert_str_eq(part_type(j, 2), "message/rfc822");

        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
        free(reply);
}

Test(bounce, original_with_bare_line_feeds_and_8bit_is_returned_with_crlf)
{
        static const char orig[] = "Subject: caf\xc3\xa9\nFrom: a@b.test\n\nbody \xc3\xa9\nline2";
        struct envelope *e = message("app@sender.test");
        e->ret = DSN_RET_FULL;
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_original o = {.fd = -1, .data = orig, .size = sizeof orig - 1};
        struct dsn_report *rep = NULL;
        cr_assert_eq(dsn_build_failed(e, &o, &p, NOW_US, &rep), 1);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(part_type(j, 2), "message/rfc822");
        cr_assert_str_eq(json_string_value(json_object_get(part(j, 2), "cte")), "8bit");
        json_t *inner = json_object_get(part(j, 2), "inner");
        cr_assert(contains(json_string_value(json_object_get(inner, "body")), "line2"));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, endless_header_block_is_cut_at_a_line_end)
{
        size_t len = DSN_HEADERS_LIMIT * 2;
        char *orig = malloc(len);
        cr_assert_not_null(orig);
        for (size_t i = 0; i < len; i += 32)
                memcpy(orig + i, "X-Filler: 0123456789abcdefghi\r\n", 32);
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_original o = {.fd = -1, .data = orig, .size = len};
        struct dsn_report *rep = NULL;
        cr_assert_eq(dsn_build_failed(e, &o, &p, NOW_US, &rep), 1);
        cr_assert_lt(rep->len, DSN_HEADERS_LIMIT + 10000);
        json_t *j = dsn_parse_report(rep);
        cr_assert(contains(human(j), "shortened"));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
        free(orig);
}

Test(bounce, boundary_differs_between_reports)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        struct dsn_report *a = build(DSN_FAILED, e, &p), *b = build(DSN_FAILED, e, &p);
        json_t *ja = dsn_parse_report(a), *jb = dsn_parse_report(b);
        const char *ba =
            json_string_value(json_object_get(json_object_get(ja, "params"), "boundary"));
        const char *bb =
            json_string_value(json_object_get(json_object_get(jb, "params"), "boundary"));
        cr_assert_str_neq(ba, bb);
        cr_assert_str_neq(hdr(ja, "message-id"), hdr(jb, "message-id"));
        json_decref(ja);
        json_decref(jb);
        dsn_report_free(a);
        dsn_report_free(b);
        envelope_free(e);
}

/* ---- through the real spool ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

Test(bounce, report_is_queued_and_the_sent_flag_persists_in_the_spool)
{
        char spool[] = "/tmp/tarry-bounce-spool-XXXXXX";
        cr_assert_not_null(mkdtemp(spool));
        struct queue *q = NULL;
        cr_assert_eq(queue_open(spool, QUEUE_OPEN_CREATE, &q), 0);

        struct envelope *e = message("app@sender.test");
        greylisted(e, "rcpt@dest.test", 3);
        cr_assert_eq(queue_enqueue(q, QUEUE_ACTIVE, e, ORIGINAL, sizeof ORIGINAL - 1), 0);
        int fd = -1;
        uint64_t size = 0;
        cr_assert_eq(queue_open_body(q, QUEUE_ACTIVE, e->id, &fd, &size), 0);

        struct dsn_policy p = policy();
        struct dsn_original o = {.fd = fd, .size = size};
        struct dsn_report *rep = NULL;
        cr_assert_eq(dsn_build_delayed(e, &o, &p, NOW_US, &rep), 1);
        close(fd);
        cr_assert_eq(dsn_commit(q, QUEUE_INCOMING, rep, e, QUEUE_ACTIVE), 0);
        cr_assert(e->delay_dsn_sent);

        struct envelope *dsn = NULL, *again = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_INCOMING, rep->env->id, &dsn, &why), 0, "%s", why);
        cr_assert_str_eq(dsn->sender, "");
        cr_assert(dsn->is_dsn);
        cr_assert_eq(dsn->n_rcpt, 1);
        cr_assert_str_eq(dsn->rcpt[0].address, "app@sender.test");
        cr_assert_eq(dsn->rcpt[0].notify, NOTIFY_NEVER);
        cr_assert_eq(dsn->size, rep->len);

        /* after a restart: the original says its delayed DSN went out */
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, e->id, &again, &why), 0, "%s", why);
        cr_assert(again->delay_dsn_sent);
        again->rcpt[0].attempts = 9;
        cr_assert_not(dsn_delay_due(again, &p, NOW_US));

        envelope_free(again);
        envelope_free(dsn);
        dsn_report_free(rep);
        envelope_free(e);
        queue_close(q);
        nftw(spool, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

Test(bounce, report_that_cannot_be_queued_is_not_marked_sent)
{
        char spool[] = "/tmp/tarry-bounce-spool-XXXXXX", incoming[64];
        cr_assert_not_null(mkdtemp(spool));
        struct queue *q = NULL;
        cr_assert_eq(queue_open(spool, QUEUE_OPEN_CREATE, &q), 0);
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        cr_assert_eq(queue_enqueue(q, QUEUE_ACTIVE, e, ORIGINAL, sizeof ORIGINAL - 1), 0);
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);

        snprintf(incoming, sizeof incoming, "%s/incoming", spool);
        cr_assert_eq(rmdir(incoming), 0); /* the spool lost its incoming/ folder */
        cr_assert_lt(dsn_commit(q, QUEUE_INCOMING, rep, e, QUEUE_ACTIVE), 0);
        cr_assert_not(e->rcpt[0].failure_dsn_sent);
        cr_assert_eq(dsn_failures_pending(e), 1);

        dsn_report_free(rep);
        envelope_free(e);
        queue_close(q);
        nftw(spool, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- double bounces: a DSN of ours that could not be delivered ---- */

static struct envelope *undeliverable_dsn(void)
{
        struct envelope *e = message("");
        e->is_dsn = true;
        struct envelope_rcpt *r = unknown_user(e, "app@sender.test");
        r->notify = NOTIFY_NEVER;
        return e;
}

Test(bounce, an_undeliverable_dsn_is_reported_to_the_postmaster_with_the_dsn_attached)
{
        struct envelope *e = undeliverable_dsn();
        struct dsn_policy p = policy();
        p.postmaster = "postmaster@tarry.test";
        cr_assert_eq(dsn_failures_pending(e), 0, "no report to <> ever");
        cr_assert_eq(dsn_undeliverable(e), 1);
        cr_assert(dsn_postmaster_may_report(e, &p));
        struct dsn_original o = original();
        struct dsn_report *rep = NULL;
        cr_assert_eq(dsn_build_postmaster(e, &o, &p, NOW_US, &rep), 1);
        cr_assert_eq(rep->env->n_rcpt, 1);
        cr_assert_str_eq(rep->env->rcpt[0].address, "postmaster@tarry.test");
        cr_assert_str_eq(rep->env->sender, "");
        cr_assert(rep->env->is_dsn && rep->env->postmaster_notice);
        cr_assert_eq(rep->env->rcpt[0].notify, NOTIFY_NEVER);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(hdr(j, "to"), "postmaster@tarry.test");
        cr_assert_str_eq(field(j, 1, "final-recipient"), "rfc822; app@sender.test");
        cr_assert_str_eq(part_type(j, 2), "message/rfc822"); /* whole, though RET was not FULL */
        cr_assert(contains(rep->message, "the secret body line."));
        json_decref(j);
        cr_assert_eq(dsn_mark_sent(e, rep), 0);
        cr_assert_eq(dsn_undeliverable(e), 0, "reported once");
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, nobody_is_told_about_a_failed_postmaster_notice_or_without_a_postmaster)
{
        struct envelope *e = undeliverable_dsn();
        struct dsn_policy p = policy();
        cr_assert_not(dsn_postmaster_may_report(e, &p), "no postmaster set");
        p.postmaster = "postmaster@tarry.test";
        e->postmaster_notice = true;
        cr_assert_not(dsn_postmaster_may_report(e, &p));
        struct dsn_original o = original();
        struct dsn_report *rep = (void *)1;
        cr_assert_eq(dsn_build_postmaster(e, &o, &p, NOW_US, &rep), 0);
        cr_assert_null(rep);
        cr_assert_eq(dsn_undeliverable(e), 1, "still undelivered: the caller holds it");
        envelope_free(e);
}

Test(bounce, the_returned_headers_include_those_added_at_pickup)
{
        struct envelope *e = message("app@sender.test");
        unknown_user(e, "nobody@dest.test");
        struct dsn_policy p = policy();
        static const char added[] = "Received: by mx.tarry.test (tarry)\r\n\tid X; date\r\n";
        struct dsn_original o = original();
        o.prefix = added;
        o.prefix_len = sizeof added - 1;
        struct dsn_report *rep = NULL;
        cr_assert_eq(dsn_build_failed(e, &o, &p, NOW_US, &rep), 1);
        cr_assert(contains(rep->message, "\r\n\r\nReceived: by mx.tarry.test (tarry)\r\n\tid X; "
                                         "date\r\nFrom: App <app@sender.test>\r\n"),
                  "%s", rep->message);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(bounce, a_mail_loop_is_explained_as_one)
{
        struct envelope *e = message("app@sender.test");
        rcpt(e, "nobody@dest.test", RCPT_FAILED, 0, 0, "5.4.6",
             "message has 51 Received: headers, hopcount_limit is 50: mail forwarding loop", NULL);
        struct dsn_policy p = policy();
        struct dsn_report *rep = build(DSN_FAILED, e, &p);
        json_t *j = dsn_parse_report(rep);
        cr_assert_str_eq(field(j, 1, "status"), "5.4.6");
        cr_assert(contains(human(j), "a mail loop"), "%s", human(j));
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}
