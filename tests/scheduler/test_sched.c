/* tests/scheduler/test_sched.c — per-class decisions, destination states and
 * the due-time heap, all on a fake clock.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/scheduler.h"

#define S  1000000LL
#define T0 (1700000000LL * S)

static struct tarry_config *cfg;
static struct sched_classifier *cls;
static struct sched *s;

static void setup(void)
{
        char err[256];
        cr_assert_eq(cfg_load_string("test.conf", "[smtp]\ndestination_concurrency = 3\n", &cfg,
                                     err, sizeof(err)),
                     0, "%s", err);
        cr_assert_eq(sched_classifier_new(&cls), 0);
        cr_assert_eq(sched_new(cfg, cls, NULL, 42, &s), 0);
}

static void teardown(void)
{
        sched_free(s);
        sched_classifier_free(cls);
        cfg_free(cfg);
}

TestSuite(sched, .init = setup, .fini = teardown);

static struct sched_item *add(const char *route, int64_t due)
{
        struct sched_item *it;
        cr_assert_eq(sched_add(s, "192.0.2.10", route, due, T0 + 5 * 86400 * S, NULL, &it), 0);
        return it;
}

static struct sched_item *pop_one(int64_t now)
{
        struct sched_item *out[1];
        return sched_pop_due(s, now, out, 1) == 1 ? out[0] : NULL;
}

/* One recipient attempted with text; returns the decision. */
static struct sched_decision attempt(struct sched_item *it, int64_t now, const char *text,
                                     int deferrals, int64_t first_deferral, int prev_class)
{
        struct sched_reply r = {.text = text};
        struct sched_rcpt_result rr = {.reply = &r,
                                       .deferrals = deferrals,
                                       .first_deferral_us = first_deferral,
                                       .last_deferral_us = first_deferral,
                                       .prev_class = prev_class};
        struct sched_decision d;
        cr_assert_geq(sched_on_result(s, it, now, NULL, &rr, 1, &d), 0);
        return d;
}

static const char *GREY = "451 4.7.1 Greylisting in action, please come back later";
static const char *OK = "250 2.0.0 Ok: queued";

Test(sched, hinted_greylist_retries_right_after_the_window)
{
        struct sched_item *it = add("mx:a.example", T0);
        cr_assert_eq(pop_one(T0), it);
        struct sched_decision d =
            attempt(it, T0, "451 4.7.1 Greylisted, try again in 300 seconds", 0, 0, -1);
        cr_assert_eq(d.action, SCHED_RETRY);
        cr_assert_eq(d.cls, CLASS_GREYLIST);
        cr_assert_eq(d.hint_s, 300);
        cr_assert_eq(d.next_attempt_us, T0 + 305 * S);
        cr_assert_eq(d.first_deferral_us, T0);
        cr_assert_eq(sched_item_due(it), T0 + 305 * S);
}

Test(sched, unhinted_greylist_retries_aim_at_the_ends_of_common_greylister_windows)
{
        /* no hint, nothing learned: one early retry, then just after 300 s
         * (postgrey), 1500 s (spamd), 1800 s (milter-greylist), 3600 s (greylistd) */
        struct sched_item *it = add("mx:a.example", T0);
        int64_t now = T0, expect[] = {60, 305, 1505, 1805, 3605};
        enum sched_why why[] = {SCHED_WHY_BACKOFF, SCHED_WHY_GREYLIST_WINDOW,
                                SCHED_WHY_GREYLIST_WINDOW, SCHED_WHY_GREYLIST_WINDOW,
                                SCHED_WHY_GREYLIST_WINDOW};
        for (int k = 0; k < 5; k++) {
                cr_assert_eq(pop_one(now), it);
                struct sched_decision d = attempt(it, now, GREY, k, k ? T0 : 0, CLASS_GREYLIST);
                cr_assert_eq(d.next_attempt_us, T0 + expect[k] * S, "retry %d at %lld s", k + 1,
                             (long long)((d.next_attempt_us - T0) / S));
                cr_assert_str_eq(sched_why_name(d.why), sched_why_name(why[k]), "retry %d", k + 1);
                now = d.next_attempt_us;
        }
}

Test(sched, unknown_temp_retries_aim_at_greylister_windows_too)
{
        struct sched_item *it = add("mx:a.example", T0);
        int64_t now = T0, expect[] = {305, 1505, 1805, 3605};
        for (int k = 0; k < 4; k++) {
                cr_assert_eq(pop_one(now), it);
                struct sched_decision d = attempt(it, now, "450 4.0.0 Temporary failure", k,
                                                  k ? T0 : 0, k ? CLASS_UNKNOWN_TEMP : -1);
                cr_assert_eq(d.cls, CLASS_UNKNOWN_TEMP);
                cr_assert_eq(d.next_attempt_us, T0 + expect[k] * S, "retry %d at %lld s", k + 1,
                             (long long)((d.next_attempt_us - T0) / S));
                now = d.next_attempt_us;
        }
}

Test(sched, greylist_gaps_stay_far_below_spamd_expiry)
{
        cfg->retry[CLASS_GREYLIST].max_s = 10 * 3600;
        struct sched_item *it = add("mx:a.example", T0);
        int64_t now = T0;
        for (int k = 0; k < 20; k++) {
                cr_assert_eq(pop_one(now), it);
                struct sched_decision d = attempt(it, now, GREY, k, T0, CLASS_GREYLIST);
                cr_assert_leq(d.next_attempt_us - now, 2 * 3600 * S);
                now = d.next_attempt_us;
        }
}

struct estimate_query {
        const char *route;
        int64_t value;
};

static int estimate_cb(const struct sched_dest_info *d, void *ud)
{
        struct estimate_query *q = ud;
        if (strcmp(d->route, q->route) == 0)
                q->value = d->learned_greylist_s;
        return 0;
}

/* The learned window tarryq -s shows for route, -1 for none. */
static int64_t learned_estimate(const char *route, int64_t now)
{
        struct estimate_query q = {route, -1};
        (void)sched_foreach_destination(s, now, estimate_cb, &q);
        return q.value;
}

/* One message to a greylister that accepts from window_s after its first
 * sight of the triplet; the scheduler's own retries, the envelope facts kept
 * as tarryd keeps them. Returns how long the message took; *attempts counts. */
static int64_t deliver_through_greylister(const char *route, int64_t start, int64_t window_s,
                                          int *attempts)
{
        struct sched_item *it = add(route, start);
        int64_t now = start, first = 0, last = 0;
        int k = 0;
        for (;;) {
                cr_assert_eq(pop_one(now), it);
                const char *r = first && now - first >= window_s * S ? OK : GREY;
                struct sched_reply rep = {.text = r};
                struct sched_rcpt_result rr = {.reply = &rep,
                                               .deferrals = k,
                                               .first_deferral_us = first,
                                               .last_deferral_us = last,
                                               .prev_class = k ? CLASS_GREYLIST : -1};
                struct sched_decision d;
                cr_assert_geq(sched_on_result(s, it, now, NULL, &rr, 1, &d), 0);
                k++;
                if (d.action == SCHED_DELIVERED)
                        break;
                cr_assert_eq(d.action, SCHED_RETRY);
                cr_assert_leq(k, 20, "message never delivered");
                if (!first)
                        first = now;
                last = now;
                now = d.next_attempt_us;
        }
        if (attempts)
                *attempts = k;
        return now - start;
}

static void assert_within_10pct(int64_t got, int64_t want, const char *what)
{
        cr_assert(got >= want - want / 10 && got <= want + want / 10,
                  "%s: learned %lld s, want %lld s +-10%%", what, (long long)got, (long long)want);
}

Test(sched, learned_window_follows_a_receiver_that_shortens_it)
{
        /* 300 s learned over a few messages an hour apart, then the receiver
         * shortens its window to 90 s: three deliveries bring it within 10 % */
        int64_t now = T0;
        for (int m = 0; m < 4; m++, now += 3600 * S)
                deliver_through_greylister("mx:c.example", now, 300, NULL);
        assert_within_10pct(learned_estimate("mx:c.example", now), 300, "at 300 s");
        for (int m = 0; m < 3; m++, now += 3600 * S)
                deliver_through_greylister("mx:c.example", now, 90, NULL);
        assert_within_10pct(learned_estimate("mx:c.example", now), 90, "shortened to 90 s");
}

Test(sched, learned_window_follows_a_receiver_that_lengthens_it)
{
        int64_t now = T0;
        for (int m = 0; m < 4; m++, now += 3600 * S)
                deliver_through_greylister("mx:c.example", now, 90, NULL);
        assert_within_10pct(learned_estimate("mx:c.example", now), 90, "at 90 s");
        for (int m = 0; m < 3; m++, now += 3600 * S)
                deliver_through_greylister("mx:c.example", now, 300, NULL);
        assert_within_10pct(learned_estimate("mx:c.example", now), 300, "lengthened to 300 s");
}

Test(sched, a_learned_window_never_makes_mail_wait_longer_than_known_good)
{
        /* learning probes below the known-good age; it costs attempts, never delay */
        int64_t now = T0;
        deliver_through_greylister("mx:c.example", now, 300, NULL);
        for (int m = 1; m < 8; m++) {
                now += 3600 * S;
                int64_t took = deliver_through_greylister("mx:c.example", now, 300, NULL);
                cr_assert_leq(took, 305 * S, "message %d took %lld s", m, (long long)(took / S));
        }
}

Test(sched, silent_greylister_is_learned_too)
{
        const char *silent = "451 Temporary failure, please try again later.";
        struct sched_item *a = add("mx:b.example", T0);
        pop_one(T0);
        struct sched_decision d = attempt(a, T0, silent, 0, 0, -1);
        cr_assert_eq(d.cls, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(d.next_attempt_us, T0 + 305 * S);
        pop_one(d.next_attempt_us);
        attempt(a, d.next_attempt_us, OK, 1, T0, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(learned_estimate("mx:b.example", T0 + 3600 * S), 305);
        struct sched_item *b = add("mx:b.example", T0 + 3600 * S);
        pop_one(T0 + 3600 * S);
        d = attempt(b, T0 + 3600 * S, silent, 0, 0, -1);
        /* accepted at the first retry: nothing known below, so probe the middle */
        cr_assert_eq(d.next_attempt_us, T0 + (3600 + 152) * S);
        cr_assert_eq(d.why, SCHED_WHY_LEARNED_WINDOW);
}

Test(sched, reputation_suspends_the_whole_destination)
{
        struct sched_item *a = add("mx:outlook.example", T0);
        struct sched_item *b = add("mx:outlook.example", T0 + 10 * S);
        cr_assert_eq(pop_one(T0), a);
        struct sched_decision d =
            attempt(a, T0,
                    "451 4.7.650 The mail server [192.0.2.10] has been temporarily rate "
                    "limited due to IP reputation",
                    0, 0, -1);
        cr_assert_eq(d.cls, CLASS_REPUTATION);
        cr_assert_eq(d.next_attempt_us, T0 + 15 * 60 * S);
        /* the second message is not attempted before the suspension ends */
        for (int64_t t = T0 + 10 * S; t < T0 + 15 * 60 * S; t += 30 * S)
                cr_assert_null(pop_one(t), "attempted at +%lld s", (long long)((t - T0) / S));
        cr_assert_eq(sched_next_due(s, T0 + 20 * S), T0 + 15 * 60 * S);
        /* then one connection at a time */
        struct sched_item *out[4];
        size_t n = sched_pop_due(s, T0 + 15 * 60 * S, out, 4);
        cr_assert_eq(n, 1);
        cr_assert_eq(out[0], b);
}

Test(sched, suspension_does_not_stop_other_destinations)
{
        struct sched_item *a = add("mx:outlook.example", T0);
        struct sched_item *c = add("mx:other.example", T0 + 60 * S);
        pop_one(T0);
        attempt(a, T0, "421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred", 0, 0, -1);
        cr_assert_eq(pop_one(T0 + 60 * S), c);
}

Test(sched, concurrency_is_raised_gradually_after_a_suspension)
{
        struct sched_item *items[6];
        for (int i = 0; i < 6; i++)
                items[i] = add("mx:y.example", T0);
        cr_assert_eq(pop_one(T0), items[0]);
        attempt(items[0], T0, "421 4.7.0 [TSS04] temporarily deferred due to user complaints", 0, 0,
                -1);
        int64_t t = T0 + 15 * 60 * S;
        struct sched_item *out[6];
        cr_assert_eq(sched_pop_due(s, t, out, 6), 1);
        attempt(out[0], t, OK, 0, 0, -1);
        cr_assert_eq(sched_pop_due(s, t, out, 6), 2, "concurrency 2 after one success");
        attempt(out[0], t, OK, 0, 0, -1);
        attempt(out[1], t, OK, 0, 0, -1);
        cr_assert_eq(sched_pop_due(s, t, out, 6), 3, "full concurrency (3) after two more");
}

static int find_dest(const struct sched_dest_info *d, void *ud)
{
        *(struct sched_dest_info *)ud = *d;
        return 1;
}

Test(sched, destination_listing_shows_suspension)
{
        struct sched_item *a = add("mx:outlook.example", T0);
        pop_one(T0);
        attempt(a, T0, "451 4.7.651 rate limited due to IP reputation", 0, 0, -1);
        struct sched_dest_info info;
        cr_assert_eq(sched_foreach_destination(s, T0 + S, find_dest, &info), 1);
        cr_assert_str_eq(info.route, "mx:outlook.example");
        cr_assert_str_eq(info.source_address, "192.0.2.10");
        cr_assert_str_eq(sched_dest_state_name(info.state), "suspended");
        cr_assert_eq(info.until_us, T0 + 15 * 60 * S);
        cr_assert_eq(info.queued, 1);
        cr_assert_eq(info.last_class, CLASS_REPUTATION);
        cr_assert_not_null(strstr(info.last_reply, "4.7.651"));
        cr_assert_eq(info.learned_greylist_s, -1);
}

Test(sched, per_recipient_rate_limit_does_not_pause_when_others_got_through)
{
        struct sched_item *a = add("mx:gmail.example", T0);
        struct sched_item *b = add("mx:gmail.example", T0);
        pop_one(T0);
        struct sched_reply ok = {.text = OK};
        struct sched_reply slow = {.text = "450 4.2.1 The user you are trying to contact is "
                                           "receiving mail at a rate that prevents delivery"};
        struct sched_rcpt_result rr[2] = {{.reply = &ok, .prev_class = -1},
                                          {.reply = &slow, .prev_class = -1}};
        struct sched_decision d[2];
        cr_assert_eq(sched_on_result(s, a, T0, NULL, rr, 2, d), 1);
        cr_assert_eq(d[0].action, SCHED_DELIVERED);
        cr_assert_eq(d[1].cls, CLASS_RATE_LIMIT);
        cr_assert_eq(d[1].next_attempt_us, T0 + 5 * 60 * S);
        cr_assert_eq(pop_one(T0 + S), b);
}

Test(sched, overload_backs_off_the_destination_with_growth_and_jitter)
{
        struct sched_item *a = add("mx:busy.example", T0);
        int64_t now = T0;
        int64_t base[] = {120, 240, 480, 960, 1800, 1800};
        for (int k = 0; k < 6; k++) {
                cr_assert_eq(pop_one(now), a);
                struct sched_decision d = attempt(a, now,
                                                  "421 4.3.2 System not accepting network "
                                                  "messages",
                                                  k, T0, CLASS_OVERLOAD);
                cr_assert_eq(d.cls, CLASS_OVERLOAD);
                int64_t gap = d.next_attempt_us - now;
                cr_assert_geq(gap, base[k] * S * 90 / 100, "step %d gap %lld", k, (long long)gap);
                cr_assert_leq(gap, base[k] * S * 110 / 100, "step %d gap %lld", k, (long long)gap);
                now = d.next_attempt_us;
        }
}

Test(sched, connection_refused_backs_off_every_message_of_the_destination)
{
        struct sched_item *a = add("[192.0.2.1]:25", T0);
        struct sched_item *b = add("[192.0.2.1]:25", T0 + S);
        pop_one(T0);
        struct sched_reply fail = {.code = 421,
                                   .enhanced = "4.4.1",
                                   .text = "connect to 192.0.2.1[192.0.2.1]:25: Connection "
                                           "refused"};
        struct sched_rcpt_result rr = {.prev_class = -1};
        struct sched_decision d;
        cr_assert_eq(sched_on_result(s, a, T0, &fail, &rr, 1, &d), 1);
        cr_assert_eq(d.cls, CLASS_ROUTING);
        cr_assert_null(pop_one(T0 + 60 * S));
        int64_t until = sched_next_due(s, T0 + 60 * S);
        cr_assert_geq(until, T0 + 270 * S);
        cr_assert_leq(until, T0 + 330 * S);
        struct sched_item *out[2];
        cr_assert_eq(sched_pop_due(s, until, out, 2), 1, "one probe after a back-off");
        (void)b;
}

Test(sched, tarrys_own_out_of_memory_does_not_back_off_the_destination)
{
        /* the same words from the receiver are "system trouble": it backs the
         * destination off; from tarry they say nothing about the destination */
        struct sched_item *a = add("[192.0.2.1]:25", T0);
        struct sched_item *b = add("[192.0.2.1]:25", T0 + S);
        pop_one(T0);
        struct sched_reply ours = {.code = 451,
                                   .enhanced = "4.3.0",
                                   .text = "451 4.3.0 out of memory",
                                   .origin = OUTCOME_FROM_TARRY,
                                   .local = OUTCOME_LOCAL_RESOURCE,
                                   .phase = OUTCOME_PHASE_ROUTE};
        struct sched_rcpt_result rr = {.prev_class = -1};
        struct sched_decision d;
        cr_assert_eq(sched_on_result(s, a, T0, &ours, &rr, 1, &d), 1);
        cr_assert_eq(d.cls, CLASS_UNKNOWN_TEMP, "%s", reply_class_name(d.cls));
        cr_assert_str_eq(d.rule, "tarry-local-problem");
        int64_t until = 0;
        cr_assert_eq(sched_destination_pause(s, "192.0.2.10", "[192.0.2.1]:25", T0, &until),
                     SCHED_WHY_NONE, "not paused");
        cr_assert_eq(pop_one(T0 + S), b, "the next message goes at its own time");

        struct sched_reply theirs = {
            .code = 451, .enhanced = "4.3.0", .text = "451 4.3.0 out of memory"};
        cr_assert_eq(sched_on_result(s, b, T0 + S, &theirs, &rr, 1, &d), 1);
        cr_assert_eq(d.cls, CLASS_OVERLOAD);
        cr_assert_eq(sched_destination_pause(s, "192.0.2.10", "[192.0.2.1]:25", T0 + S, &until),
                     SCHED_WHY_DEST_BACKOFF, "the receiver's trouble backs it off");
}

Test(sched, mailbox_full_waits_long)
{
        struct sched_item *a = add("mx:a.example", T0);
        pop_one(T0);
        struct sched_decision d = attempt(a, T0, "452 4.2.2 Mailbox full", 0, 0, -1);
        cr_assert_eq(d.cls, CLASS_MAILBOX_FULL);
        cr_assert_eq(d.next_attempt_us, T0 + 3600 * S);
}

Test(sched, policy_and_unknown_temp_are_conservative)
{
        struct sched_item *a = add("mx:a.example", T0);
        pop_one(T0);
        struct sched_decision d = attempt(a, T0, "451 4.7.1 local policy violation", 0, 0, -1);
        cr_assert_eq(d.cls, CLASS_POLICY);
        cr_assert_eq(d.next_attempt_us, T0 + 15 * 60 * S);
        pop_one(d.next_attempt_us);
        d = attempt(a, d.next_attempt_us, "450 4.0.0 Temporary failure", 0, 0, -1);
        cr_assert_eq(d.cls, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(d.next_attempt_us, T0 + (15 * 60 + 305) * S);
}

Test(sched, permanent_reply_fails_the_recipient_and_frees_the_item)
{
        struct sched_item *a = add("mx:a.example", T0);
        pop_one(T0);
        struct sched_reply r = {.text = "550 5.1.1 User unknown"};
        struct sched_rcpt_result rr = {.reply = &r, .prev_class = -1};
        struct sched_decision d;
        cr_assert_eq(sched_on_result(s, a, T0, NULL, &rr, 1, &d), 0);
        cr_assert_eq(d.action, SCHED_FAILED);
        cr_assert_eq(d.fail, SCHED_FAIL_PERMANENT);
        cr_assert_eq(d.code, 550);
        cr_assert_str_eq(d.enhanced, "5.1.1");
        struct sched_stats st;
        sched_get_stats(s, &st);
        cr_assert_eq(st.items, 0);
}

Test(sched, queue_lifetime_expires_recipients)
{
        struct sched_item *a;
        int64_t expires = T0 + 600 * S;
        cr_assert_eq(sched_add(s, "", "mx:a.example", T0, expires, NULL, &a), 0);
        pop_one(T0);
        struct sched_decision d = attempt(a, T0, "452 4.2.2 Mailbox full", 0, 0, -1);
        cr_assert_eq(d.next_attempt_us, expires, "last retry clamped to the lifetime");
        pop_one(expires);
        d = attempt(a, expires, "452 4.2.2 Mailbox full", 1, T0, CLASS_MAILBOX_FULL);
        cr_assert_eq(d.action, SCHED_FAILED);
        cr_assert_eq(d.fail, SCHED_FAIL_EXPIRED);
}

Test(sched, destination_concurrency_limits_pops)
{
        for (int i = 0; i < 5; i++)
                add("mx:a.example", T0);
        struct sched_item *out[5];
        cr_assert_eq(sched_pop_due(s, T0, out, 5), 3);
        cr_assert_eq(sched_pop_due(s, T0, out + 3, 5), 0);
        attempt(out[0], T0, OK, 0, 0, -1);
        cr_assert_eq(sched_next_due(s, T0), T0, "a freed slot releases a parked item");
        cr_assert_eq(sched_pop_due(s, T0, out, 5), 1);
}

Test(sched, recipients_not_attempted_keep_their_time)
{
        struct sched_item *a = add("mx:a.example", T0);
        pop_one(T0);
        struct sched_reply ok = {.text = OK};
        struct sched_rcpt_result rr[2] = {
            {.reply = &ok, .prev_class = -1},
            {.reply = NULL, .next_attempt_us = T0 + 999 * S, .prev_class = -1}};
        struct sched_decision d[2];
        cr_assert_eq(sched_on_result(s, a, T0, NULL, rr, 2, d), 1);
        cr_assert_eq(d[1].action, SCHED_NOT_ATTEMPTED);
        cr_assert_eq(sched_item_due(a), T0 + 999 * S);
}

Test(sched, admin_flush_retry_now_and_resume)
{
        struct sched_item *a = add("mx:a.example", T0 + 3600 * S);
        struct sched_item *b = add("mx:b.example", T0 + 7200 * S);
        cr_assert_eq(sched_retry_now(s, a, T0), 0);
        cr_assert_eq(sched_next_due(s, T0), T0);
        cr_assert_eq(pop_one(T0), a);
        cr_assert_eq(sched_retry_now(s, a, T0), -EINVAL);
        attempt(a, T0, "451 4.7.651 IP reputation", 0, 0, -1);
        cr_assert_eq(sched_flush(s, T0), 2);
        cr_assert_eq(pop_one(T0), b);
        cr_assert_null(pop_one(T0), "suspension survives a flush");
        cr_assert_eq(sched_resume_destination(s, "mx:a.example", NULL, T0), 1);
        cr_assert_eq(pop_one(T0), a);
        cr_assert_eq(sched_resume_destination(s, "mx:nowhere.example", NULL, T0), -ENOENT);
}

Test(sched, remove_works_in_every_state)
{
        struct sched_item *a = add("mx:a.example", T0);
        struct sched_item *b = add("mx:a.example", T0);
        struct sched_item *c = add("mx:a.example", T0 + 60 * S);
        pop_one(T0);
        sched_remove(s, a); /* in flight */
        attempt(pop_one(T0), T0, "451 4.7.651 IP reputation", 0, 0, -1);
        cr_assert_null(pop_one(T0 + 60 * S)); /* c gets parked */
        sched_remove(s, c);                   /* parked */
        sched_remove(s, b);                   /* waiting */
        struct sched_stats st;
        sched_get_stats(s, &st);
        cr_assert_eq(st.items, 0);
        cr_assert_eq(st.parked, 0);
        cr_assert_eq(st.in_flight, 0);
}

Test(sched, heap_pops_in_due_order)
{
        enum { N = 5000 };
        srand(7);
        cfg->destination_concurrency = N;
        sched_set_config(s, cfg, cls);
        for (int i = 0; i < N; i++)
                add("mx:a.example", T0 + (rand() % 100000) * S);
        int64_t last = 0;
        size_t got = 0;
        for (;;) {
                int64_t t = sched_next_due(s, T0);
                if (t == INT64_MAX)
                        break;
                struct sched_item *it = pop_one(t);
                cr_assert_not_null(it);
                cr_assert_geq(t, last);
                last = t;
                sched_remove(s, it);
                got++;
        }
        cr_assert_eq(got, N);
}

Test(sched, freeing_the_scheduler_with_work_in_every_state_releases_it)
{
        struct sched_item *a = add("mx:a.example", T0);
        add("mx:a.example", T0);
        add("mx:a.example", T0 + 3600 * S);
        cr_assert_eq(pop_one(T0), a);
        attempt(a, T0, "451 4.7.651 IP reputation", 0, 0, -1);
        cr_assert_null(pop_one(T0)); /* the second one is parked */
        add("mx:b.example", T0);
        cr_assert_not_null(pop_one(T0)); /* and one stays in flight: teardown frees all */
}

/* A provider's limits on a site (issue 15.1): at most N attempts at once,
 * whatever the destination's own window, and starts 60/R s apart. */
Test(sched, provider_connection_limit_caps_a_site_below_its_window)
{
        struct sched_item *it[5];
        for (int i = 0; i < 5; i++)
                it[i] = add("site:acme", T0);
        cr_assert_eq(sched_limit_destination(s, "192.0.2.10", "site:acme", 2, 0), 0);
        struct sched_item *out[5];
        cr_assert_eq(sched_pop_due(s, T0, out, 5), 2, "the window (3) won over the limit (2)");
        cr_assert_eq(sched_pop_due(s, T0, out + 2, 3), 0);
        attempt(out[0], T0 + S, OK, 0, 0, -1); /* one done: one more may start */
        cr_assert_eq(sched_pop_due(s, T0 + S, out + 2, 3), 1);
        (void)it;
        cr_assert_eq(sched_limit_destination(s, "192.0.2.10", "site:nowhere", 2, 0), -ENOENT);
}

Test(sched, provider_rate_limit_spaces_attempt_starts)
{
        for (int i = 0; i < 3; i++)
                add("site:acme", T0);
        cr_assert_eq(sched_limit_destination(s, "192.0.2.10", "site:acme", 0, 6), 0); /* 10 s */
        struct sched_item *out[3];
        cr_assert_eq(sched_pop_due(s, T0, out, 3), 1);
        cr_assert_eq(sched_next_due(s, T0), T0 + 10 * S);
        cr_assert_eq(sched_pop_due(s, T0 + 9 * S, out, 3), 0);
        cr_assert_eq(sched_pop_due(s, T0 + 10 * S, out, 3), 1);
}

/* The suite's scheduler again, with another config. */
static void reconfigure(const char *text)
{
        char err[256];
        sched_free(s);
        cfg_free(cfg);
        cr_assert_eq(cfg_load_string("test.conf", text, &cfg, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(sched_new(cfg, cls, NULL, 42, &s), 0);
}

static void result_ok(struct sched_item *it, int64_t now)
{
        struct sched_reply r = {.text = OK};
        struct sched_rcpt_result rr = {.reply = &r, .prev_class = -1};
        struct sched_decision d;
        cr_assert_eq(sched_on_result(s, it, now, NULL, &rr, 1, &d), 0);
}

Test(sched, max_connections_bounds_attempts_in_flight_across_destinations)
{
        reconfigure("[smtp]\nmax_connections = 2\ndestination_concurrency = 1\n");
        struct sched_item *a = add("mx:a.example", T0);
        add("mx:a.example", T0);
        add("mx:b.example", T0);
        add("mx:c.example", T0);
        struct sched_item *out[8];
        size_t n = sched_pop_due(s, T0, out, 8);
        cr_assert_eq(n, 2, "max_connections = 2: %zu started", n);
        cr_assert(out[0] != out[1]);
        cr_assert_neq(strcmp(sched_item_route(out[0]), sched_item_route(out[1])), 0,
                      "destination_concurrency = 1");
        cr_assert_eq(sched_next_due(s, T0), INT64_MAX, "nothing may start until a result");
        cr_assert_not(sched_conn_may_open(s, "192.0.2.10", "mx:c.example", T0));
        cr_assert_eq(sched_pop_due(s, T0, out, 8), 0);

        /* one finishes: the next due item may start at once */
        struct sched_item *done = out[0] == a ? out[0] : out[1];
        cr_assert_eq(done, a, "a.example's first item is the oldest");
        result_ok(done, T0 + S);
        cr_assert_leq(sched_next_due(s, T0 + S), T0 + S, "due now");
        cr_assert(sched_conn_may_open(s, "192.0.2.10", "mx:a.example", T0 + S));
        cr_assert_eq(sched_pop_due(s, T0 + S, out, 8), 1);
        cr_assert_eq(sched_pop_due(s, T0 + S, out, 8), 0);
}

struct gate_log {
        int asked, closed;
        bool refuse_b;
        bool untracked; /* OPEN (nothing to give back) rather than TAKEN */
};

static enum sched_gate gate_may_open(void *userdata, const char *source, const char *site)
{
        struct gate_log *g = userdata;
        cr_assert_str_eq(source, "192.0.2.10");
        g->asked++;
        if (g->refuse_b && strcmp(site, "mx:b.example") == 0)
                return SCHED_GATE_WAIT;
        return g->untracked ? SCHED_GATE_OPEN : SCHED_GATE_TAKEN;
}

static void gate_closed(void *userdata, const char *source, const char *site)
{
        struct gate_log *g = userdata;
        (void)source;
        (void)site;
        g->closed++;
}

Test(sched, the_connection_gate_is_asked_before_each_start_and_told_when_it_ends)
{
        struct gate_log g = {.refuse_b = true};
        struct sched_conn_gate gate = {gate_may_open, gate_closed, &g};
        sched_set_conn_gate(s, &gate);
        struct sched_item *a = add("mx:a.example", T0);
        struct sched_item *b = add("mx:b.example", T0);
        struct sched_item *out[4];
        cr_assert_eq(sched_pop_due(s, T0, out, 4), 1);
        cr_assert_eq(out[0], a, "b's site has no lease");
        cr_assert_eq(g.asked, 2);
        cr_assert_eq(sched_pop_due(s, T0 + S, out, 4), 0, "b waits for the gate");

        g.refuse_b = false;
        sched_conn_wake(s, "192.0.2.10", "mx:b.example");
        cr_assert_leq(sched_next_due(s, T0 + 2 * S), T0 + 2 * S, "due now");
        cr_assert_eq(sched_pop_due(s, T0 + 2 * S, out, 4), 1);
        cr_assert_eq(out[0], b);

        result_ok(a, T0 + 3 * S);
        cr_assert_eq(g.closed, 1);
        sched_reschedule(s, b, T0 + 60 * S); /* the attempt did not happen after all */
        cr_assert_eq(g.closed, 2, "every start the gate allowed is closed once");
        sched_remove(s, b);
        cr_assert_eq(g.closed, 2);
}

/* A start the gate allowed without taking anything (no limit there, or no
 * Redis) is not told "closed": only what it took is given back. */
Test(sched, a_start_the_gate_took_nothing_for_is_not_closed)
{
        struct gate_log g = {.untracked = true};
        struct sched_conn_gate gate = {gate_may_open, gate_closed, &g};
        sched_set_conn_gate(s, &gate);
        struct sched_item *a = add("mx:a.example", T0);
        struct sched_item *out[4];
        cr_assert_eq(sched_pop_due(s, T0, out, 4), 1);
        g.untracked = false;
        struct sched_item *b = add("mx:a.example", T0 + S);
        cr_assert_eq(sched_pop_due(s, T0 + S, out, 4), 1);
        cr_assert_eq(out[0], b);
        result_ok(a, T0 + 2 * S);
        cr_assert_eq(g.closed, 0, "a took nothing at the gate");
        result_ok(b, T0 + 3 * S);
        cr_assert_eq(g.closed, 1, "b took a lease");
}

/* A destination paced by its provider (messages_per_minute) whose items the
 * gate holds back: the refusals use no pace slot, so the first start once
 * the gate opens is at once, and the next one a full gap later. */
Test(sched, an_item_the_gate_holds_back_uses_no_pace_slot)
{
        struct gate_log g = {.refuse_b = true};
        struct sched_conn_gate gate = {gate_may_open, gate_closed, &g};
        sched_set_conn_gate(s, &gate);
        struct sched_item *b1 = add("mx:b.example", T0);
        struct sched_item *b2 = add("mx:b.example", T0);
        cr_assert_eq(sched_limit_destination(s, "192.0.2.10", "mx:b.example", 1, 6), 0);
        struct sched_item *out[4];
        for (int64_t t = T0; t < T0 + 60 * S; t += S / 4) {
                (void)sched_next_due(s, t);
                cr_assert_eq(sched_pop_due(s, t, out, 4), 0, "the gate holds b back");
                sched_conn_wake(s, "192.0.2.10", "mx:b.example"); /* asked again */
        }
        g.refuse_b = false;
        sched_conn_wake(s, "192.0.2.10", "mx:b.example");
        int64_t t = T0 + 60 * S;
        cr_assert_leq(sched_next_due(s, t), t, "the lease came: due at once, no pace slot used");
        cr_assert_eq(sched_pop_due(s, t, out, 4), 1);
        struct sched_item *first = out[0];
        cr_assert(first == b1 || first == b2);
        result_ok(first, t + S);
        cr_assert_eq(sched_pop_due(s, t + S, out, 4), 0, "6 a minute: 10 s apart");
        cr_assert_eq(sched_next_due(s, t + S), t + 10 * S);
        cr_assert_eq(sched_pop_due(s, t + 10 * S, out, 4), 1);
}
