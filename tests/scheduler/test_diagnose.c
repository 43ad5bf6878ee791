/* tests/scheduler/test_diagnose.c — diagnoses on a fake clock (issue 21). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/diagnose.h"

/* seconds after a realistic start (the clock is CLOCK_REALTIME) */
#define S(x) (1700000000000000LL + (int64_t)(x)*1000000)

struct notes {
        int raised[DIAG__MAX], cleared[DIAG__MAX];
        char evidence[DIAG_EVIDENCE_MAX], advice[DIAG_ADVICE_MAX];
};

static void note(const struct diag_info *di, bool raised, void *userdata)
{
        struct notes *n = userdata;
        (raised ? n->raised : n->cleared)[di->code]++;
        if (raised) {
                snprintf(n->evidence, sizeof(n->evidence), "%s", di->evidence);
                snprintf(n->advice, sizeof(n->advice), "%s", di->advice);
        }
}

static struct diag *g;
static struct notes n;

static void setup(void)
{
        memset(&n, 0, sizeof(n));
        struct diag_limits lim = {
            .greylist_no_window_s = 3600, .reputation_s = 6 * 3600, .unreachable_s = 3600};
        cr_assert_eq(diag_new(&lim, note, &n, &g), 0);
}

static void teardown(void)
{
        diag_free(g);
}

static void deferred(const char *id, const char *source, enum reply_class cls, int64_t first,
                     int64_t window, const char *text, int64_t now)
{
        struct diag_event ev = {.source = source,
                                .route = "mx:example.com",
                                .queue_id = id,
                                .outcome = DIAG_DEFERRED,
                                .cls = cls,
                                .reached = true,
                                .first_deferral_us = first,
                                .window_s = window,
                                .text = text,
                                .remediation = "https://senders.example/"};
        cr_assert_eq(diag_on_event(g, &ev, now), 0);
}

static void unreachable(int64_t now)
{
        struct diag_event ev = {.source = "192.0.2.1",
                                .route = "mx:example.com",
                                .queue_id = "Q1",
                                .outcome = DIAG_DEFERRED,
                                .cls = CLASS_ROUTING,
                                .reached = false,
                                .window_s = -1,
                                .text = "4.4.1 connect to mx[192.0.2.9]:25: Connection refused"};
        cr_assert_eq(diag_on_event(g, &ev, now), 0);
}

static void accepted(const char *id, const char *source, int64_t now)
{
        struct diag_event ev = {.source = source,
                                .route = "mx:example.com",
                                .queue_id = id,
                                .outcome = DIAG_ACCEPTED,
                                .reached = true,
                                .window_s = -1};
        cr_assert_eq(diag_on_event(g, &ev, now), 0);
}

TestSuite(diagnose, .init = setup, .fini = teardown);

Test(diagnose, greylister_that_accepts_after_its_window_raises_nothing)
{
        const char *t = "451 4.7.1 Greylisted, try again in 300 seconds";
        deferred("Q1", "192.0.2.1", CLASS_GREYLIST, 0, 300, t, S(0));
        deferred("Q2", "192.0.2.1", CLASS_GREYLIST, 0, 300, t, S(60));
        accepted("Q1", "192.0.2.1", S(301));
        accepted("Q2", "192.0.2.1", S(361));
        for (int c = 0; c < DIAG__MAX; c++)
                cr_assert_eq(n.raised[c], 0, "%s raised", diag_code_name(c));
        cr_assert_eq(diag_count(g, DIAG_GREYLIST_NOT_CLEARING), 0);
}

Test(diagnose, greylist_past_its_window_and_two_more_attempts_is_raised_once)
{
        const char *t = "451 4.7.1 Greylisted, try again in 300 seconds";
        deferred("Q1", "192.0.2.1", CLASS_GREYLIST, 0, 300, t, S(0));
        deferred("Q1", "192.0.2.1", CLASS_GREYLIST, S(0), 300, t, S(301));
        deferred("Q1", "192.0.2.1", CLASS_GREYLIST, S(0), 300, t, S(900));
        cr_assert_eq(n.raised[DIAG_GREYLIST_NOT_CLEARING], 0, "only one attempt beyond the first");
        deferred("Q1", "192.0.2.1", CLASS_GREYLIST, S(0), 300, t, S(2000));
        deferred("Q1", "192.0.2.1", CLASS_GREYLIST, S(0), 300, t, S(4000));
        cr_assert_eq(n.raised[DIAG_GREYLIST_NOT_CLEARING], 1);
        cr_assert(strstr(n.evidence, "after the 300s greylist window"), "%s", n.evidence);
        cr_assert(strstr(n.evidence, "192.0.2.1"), "%s", n.evidence);
        cr_assert(strstr(n.advice, "NAT"), "%s", n.advice);
        accepted("Q1", "192.0.2.1", S(5000));
        cr_assert_eq(n.cleared[DIAG_GREYLIST_NOT_CLEARING], 1);
        cr_assert_eq(diag_count(g, DIAG_GREYLIST_NOT_CLEARING), 0);
}

Test(diagnose, greylist_with_no_window_is_raised_after_the_threshold)
{
        const char *t = "451 4.3.0 try later";
        deferred("Q1", "", CLASS_UNKNOWN_TEMP, 0, -1, t, S(0));
        deferred("Q1", "", CLASS_UNKNOWN_TEMP, S(0), -1, t, S(3599));
        cr_assert_eq(n.raised[DIAG_GREYLIST_NOT_CLEARING], 0);
        deferred("Q1", "", CLASS_UNKNOWN_TEMP, S(0), -1, t, S(3600));
        cr_assert_eq(n.raised[DIAG_GREYLIST_NOT_CLEARING], 1);
        cr_assert(strstr(n.evidence, "no window known"), "%s", n.evidence);
}

Test(diagnose, a_message_retried_from_another_source_while_greylisted_is_raised)
{
        const char *t = "451 4.7.1 Greylisted";
        deferred("Q1", "192.0.2.1", CLASS_GREYLIST, 0, -1, t, S(0));
        deferred("Q1", "192.0.2.2", CLASS_GREYLIST, S(0), -1, t, S(60));
        cr_assert_eq(n.raised[DIAG_SOURCE_CHANGED_MID_GREYLIST], 1);
        cr_assert(strstr(n.evidence, "Q1 was greylisted from 192.0.2.1, then deferred again from "
                                     "192.0.2.2"),
                  "%s", n.evidence);
        deferred("Q1", "192.0.2.2", CLASS_GREYLIST, S(0), -1, t, S(120));
        cr_assert_eq(n.raised[DIAG_SOURCE_CHANGED_MID_GREYLIST], 1, "raised once");
        accepted("Q1", "192.0.2.2", S(400));
        cr_assert_eq(n.cleared[DIAG_SOURCE_CHANGED_MID_GREYLIST], 1);
}

Test(diagnose, reputation_for_longer_than_the_threshold_names_the_providers_page)
{
        const char *t = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred";
        deferred("Q1", "192.0.2.1", CLASS_REPUTATION, 0, -1, t, S(0));
        deferred("Q1", "192.0.2.1", CLASS_REPUTATION, S(0), -1, t, S(3 * 3600));
        cr_assert_eq(n.raised[DIAG_REPUTATION_PERSISTENT], 0);
        deferred("Q1", "192.0.2.1", CLASS_RATE_LIMIT, S(0), -1, t, S(6 * 3600));
        cr_assert_eq(n.raised[DIAG_REPUTATION_PERSISTENT], 1);
        cr_assert(strstr(n.advice, "https://senders.example/"), "%s", n.advice);
        cr_assert(strstr(n.advice, "tarryq check-sender"), "%s", n.advice);
        cr_assert(strstr(n.evidence, "3 "), "%s", n.evidence);
        accepted("Q2", "192.0.2.1", S(7 * 3600));
        cr_assert_eq(n.cleared[DIAG_REPUTATION_PERSISTENT], 1);
}

Test(diagnose, policy_deferral_naming_spf_suspects_authentication)
{
        deferred("Q1", "192.0.2.1", CLASS_POLICY, 0, -1,
                 "451 4.7.26 Unauthenticated email: SPF check failed", S(0));
        cr_assert_eq(n.raised[DIAG_AUTHENTICATION_SUSPECTED], 1);
        cr_assert(strstr(n.evidence, "naming SPF"), "%s", n.evidence);
        cr_assert(strstr(n.advice, "SPF (TXT) record"), "%s", n.advice);
        cr_assert(strstr(n.advice, "tarryq check-sender"), "%s", n.advice);
}

Test(diagnose, policy_deferral_without_those_words_suspects_nothing)
{
        deferred("Q1", "192.0.2.1", CLASS_POLICY, 0, -1,
                 "451 4.7.1 transfer interrupted by content policy", S(0));
        cr_assert_eq(n.raised[DIAG_AUTHENTICATION_SUSPECTED], 0);
}

Test(diagnose, no_mx_reached_for_an_hour_is_unreachable_until_a_server_replies)
{
        unreachable(S(0));
        unreachable(S(1800));
        cr_assert_eq(n.raised[DIAG_DESTINATION_UNREACHABLE], 0);
        unreachable(S(3600));
        cr_assert_eq(n.raised[DIAG_DESTINATION_UNREACHABLE], 1);
        cr_assert(strstr(n.evidence, "3 attempts reached no MX"), "%s", n.evidence);
        unreachable(S(4000));
        cr_assert_eq(n.raised[DIAG_DESTINATION_UNREACHABLE], 1, "raised once");
        /* the server answers, even with a deferral: reachable again */
        deferred("Q1", "192.0.2.1", CLASS_OVERLOAD, 0, -1, "421 4.3.2 busy", S(4100));
        cr_assert_eq(n.cleared[DIAG_DESTINATION_UNREACHABLE], 1);
        cr_assert_eq(diag_count(g, DIAG_DESTINATION_UNREACHABLE), 0);
}

Test(diagnose, each_destination_is_diagnosed_on_its_own)
{
        const char *t = "451 4.7.26 DKIM signature missing";
        deferred("Q1", "192.0.2.1", CLASS_POLICY, 0, -1, t, S(0));
        deferred("Q2", "192.0.2.2", CLASS_POLICY, 0, -1, t, S(0));
        cr_assert_eq(diag_count(g, DIAG_AUTHENTICATION_SUSPECTED), 2);
        accepted("Q3", "192.0.2.1", S(10));
        cr_assert_eq(diag_count(g, DIAG_AUTHENTICATION_SUSPECTED), 1);
}
