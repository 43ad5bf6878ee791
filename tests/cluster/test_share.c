/* tests/cluster/test_share.c — the scheduler's side of a fleet: every pause
 * it sets is told to the sharer, a pause another node set holds this node's
 * mail for that destination, and nothing told to it is told back. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "scheduler/scheduler.h"

#define S  1000000LL
#define T0 (1700000000LL * S)

static struct tarry_config *cfg;
static struct sched_classifier *cls;

static void setup(void)
{
        char err[256];
        cr_assert_eq(cfg_load_string("t.conf", "", &cfg, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(sched_classifier_new(&cls), 0);
}

static void teardown(void)
{
        sched_classifier_free(cls);
        cfg_free(cfg);
}

TestSuite(share, .init = setup, .fini = teardown);

struct told {
        int n;
        char source[64], route[64];
        enum sched_dest_state state;
        int64_t until_us;
        int cls;
        int windows;
        struct sched_shared_window w;
};

static void on_pause(void *ud, const struct sched_shared_pause *p)
{
        struct told *t = ud;
        t->n++;
        snprintf(t->source, sizeof(t->source), "%s", p->source);
        snprintf(t->route, sizeof(t->route), "%s", p->route);
        t->state = p->state;
        t->until_us = p->until_us;
        t->cls = p->cls;
}

static void on_window(void *ud, const struct sched_shared_window *w)
{
        struct told *t = ud;
        t->windows++;
        t->w = *w;
        t->w.route = NULL;
}

static const char *GREYLISTED = "451 4.7.1 Greylisted, please try again later";

static const char *REPUTATION = "451 4.7.650 The mail server [192.0.2.10] has been temporarily "
                                "rate limited due to IP reputation.";

Test(share, a_reputation_deferral_is_told_with_its_end_and_cause)
{
        struct sched *s;
        cr_assert_eq(sched_new(cfg, cls, NULL, 1, &s), 0);
        struct told t = {0};
        sched_set_share(s, &(struct sched_share){.pause_set = on_pause, .userdata = &t});
        struct sched_item *it, *out[1];
        cr_assert_eq(sched_add(s, "192.0.2.10", "mx:example.com", T0, 0, NULL, &it), 0);
        cr_assert_eq(sched_pop_due(s, T0, out, 1), 1);
        struct sched_reply r = {.text = REPUTATION};
        struct sched_rcpt_result rr = {.reply = &r, .prev_class = -1};
        struct sched_decision d;
        cr_assert_eq(sched_on_result(s, it, T0, NULL, &rr, 1, &d), 1);
        cr_assert_eq(t.n, 1);
        cr_assert_str_eq(t.source, "192.0.2.10");
        cr_assert_str_eq(t.route, "mx:example.com");
        cr_assert_eq(t.state, SCHED_DEST_SUSPENDED);
        cr_assert_eq(t.cls, CLASS_REPUTATION);
        int64_t until = 0;
        cr_assert_eq(sched_destination_pause(s, "192.0.2.10", "mx:example.com", T0, &until),
                     SCHED_WHY_DEST_SUSPENDED);
        cr_assert_eq(t.until_us, until);
        sched_free(s);
}

Test(share, another_nodes_suspension_holds_mail_here_until_it_ends_and_is_not_told_back)
{
        struct sched *s;
        cr_assert_eq(sched_new(cfg, cls, NULL, 1, &s), 0);
        struct told t = {0};
        sched_set_share(s, &(struct sched_share){.pause_set = on_pause, .userdata = &t});
        struct sched_shared_pause p = {.source = "192.0.2.10",
                                       .route = "mx:example.com",
                                       .state = SCHED_DEST_SUSPENDED,
                                       .until_us = T0 + 600 * S,
                                       .cls = CLASS_REPUTATION};
        cr_assert_eq(sched_apply_shared_pause(s, &p, T0), 1);
        cr_assert_eq(t.n, 0, "a pause learned from another node was told back");
        /* mail queued here afterwards waits for the end of it */
        struct sched_item *it, *out[1];
        cr_assert_eq(sched_add(s, "192.0.2.10", "mx:example.com", T0, 0, NULL, &it), 0);
        cr_assert_eq(sched_pop_due(s, T0 + 1 * S, out, 1), 0);
        cr_assert_eq(sched_next_due(s, T0 + 1 * S), T0 + 600 * S);
        cr_assert(sched_item_held_back(s, it, T0 + 1 * S));
        /* another source address is another destination: not held */
        struct sched_item *other;
        cr_assert_eq(sched_add(s, "192.0.2.11", "mx:example.com", T0, 0, NULL, &other), 0);
        cr_assert_eq(sched_pop_due(s, T0 + 1 * S, out, 1), 1);
        cr_assert_eq(out[0], other);
        /* and at the end, the held one goes */
        cr_assert_eq(sched_pop_due(s, T0 + 601 * S, out, 1), 1);
        cr_assert_eq(out[0], it);
        sched_free(s);
}

Test(share, a_shorter_or_finished_pause_from_another_node_changes_nothing)
{
        struct sched *s;
        cr_assert_eq(sched_new(cfg, cls, NULL, 1, &s), 0);
        struct sched_shared_pause p = {.source = "",
                                       .route = "mx:example.com",
                                       .state = SCHED_DEST_BACKOFF,
                                       .until_us = T0 + 600 * S,
                                       .cls = CLASS_OVERLOAD};
        cr_assert_eq(sched_apply_shared_pause(s, &p, T0), 1);
        p.until_us = T0 + 60 * S;
        cr_assert_eq(sched_apply_shared_pause(s, &p, T0), 0);
        int64_t until = 0;
        cr_assert_eq(sched_destination_pause(s, "", "mx:example.com", T0, &until),
                     SCHED_WHY_DEST_BACKOFF);
        cr_assert_eq(until, T0 + 600 * S);
        p.until_us = T0 - 1;
        cr_assert_eq(sched_apply_shared_pause(s, &p, T0), -EINVAL);
        p.until_us = T0 + 60 * S;
        p.state = SCHED_DEST_OK;
        cr_assert_eq(sched_apply_shared_pause(s, &p, T0), -EINVAL);
        sched_free(s);
}

/* One attempt of it at now answered with text; the decision. */
static struct sched_decision attempt(struct sched *s, struct sched_item *it, int64_t now,
                                     const char *text, const struct sched_rcpt_result *prev)
{
        struct sched_item *out[1];
        cr_assert_eq(sched_pop_due(s, now, out, 1), 1);
        cr_assert_eq(out[0], it);
        struct sched_reply r = {.text = text};
        struct sched_rcpt_result rr = *prev;
        rr.reply = &r;
        struct sched_decision d;
        cr_assert_geq(sched_on_result(s, it, now, NULL, &rr, 1, &d), 0);
        return d;
}

Test(share, a_greylist_window_learned_here_is_told_with_its_bracket)
{
        struct sched *s;
        cr_assert_eq(sched_new(cfg, cls, NULL, 1, &s), 0);
        struct told t = {0};
        sched_set_share(s, &(struct sched_share){.window_set = on_window, .userdata = &t});
        struct sched_item *it;
        cr_assert_eq(sched_add(s, "192.0.2.10", "mx:example.com", T0, 0, NULL, &it), 0);
        struct sched_rcpt_result r0 = {.prev_class = -1};
        struct sched_decision d = attempt(s, it, T0, GREYLISTED, &r0);
        cr_assert_eq(d.action, SCHED_RETRY);
        cr_assert_eq(t.windows, 0);
        /* refused once more at 60 s, accepted at 180 s: the window is in (60, 180] */
        struct sched_rcpt_result r1 = {.deferrals = 1,
                                       .first_deferral_us = T0,
                                       .last_deferral_us = T0,
                                       .prev_class = CLASS_GREYLIST};
        sched_reschedule(s, it, T0 + 60 * S);
        d = attempt(s, it, T0 + 60 * S, GREYLISTED, &r1);
        struct sched_rcpt_result r2 = {.deferrals = 2,
                                       .first_deferral_us = T0,
                                       .last_deferral_us = T0 + 60 * S,
                                       .prev_class = CLASS_GREYLIST};
        sched_reschedule(s, it, T0 + 180 * S);
        d = attempt(s, it, T0 + 180 * S, "250 2.1.5 Ok", &r2);
        cr_assert_eq(d.action, SCHED_DELIVERED);
        cr_assert_eq(t.windows, 1);
        cr_assert_eq(t.w.upper_s, 180);
        cr_assert_eq(t.w.lower_s, 60);
        cr_assert_eq(t.w.learned_at_us, T0 + 180 * S);
        sched_free(s);
}

Test(share, another_nodes_window_makes_the_first_retry_here_land_after_it)
{
        struct sched *s;
        cr_assert_eq(sched_new(cfg, cls, NULL, 1, &s), 0);
        struct told t = {0};
        sched_set_share(s, &(struct sched_share){.window_set = on_window, .userdata = &t});
        struct sched_shared_window w = {
            .route = "mx:example.com", .upper_s = 300, .lower_s = 290, .learned_at_us = T0};
        cr_assert_eq(sched_apply_shared_window(s, "192.0.2.10", &w, T0 + 10 * S), 1);
        cr_assert_eq(t.windows, 0, "a window learned from another node was told back");
        struct sched_item *it;
        cr_assert_eq(sched_add(s, "192.0.2.10", "mx:example.com", T0 + 10 * S, 0, NULL, &it), 0);
        struct sched_rcpt_result r0 = {.prev_class = -1};
        struct sched_decision d = attempt(s, it, T0 + 10 * S, GREYLISTED, &r0);
        cr_assert_eq(d.action, SCHED_RETRY);
        cr_assert_eq(d.why, SCHED_WHY_LEARNED_WINDOW);
        cr_assert_eq(d.next_attempt_us, T0 + 10 * S + 300 * S);
        /* an older one changes nothing; a bracket that is not one is refused */
        w.learned_at_us = T0 - S;
        w.upper_s = 30;
        w.lower_s = 0;
        cr_assert_eq(sched_apply_shared_window(s, "192.0.2.10", &w, T0 + 10 * S), 0);
        w.learned_at_us = T0 + S;
        w.lower_s = 30;
        cr_assert_eq(sched_apply_shared_window(s, "192.0.2.10", &w, T0 + 10 * S), -EINVAL);
        w.lower_s = 0;
        w.upper_s = 0;
        cr_assert_eq(sched_apply_shared_window(s, "192.0.2.10", &w, T0 + 10 * S), -EINVAL);
        sched_free(s);
}

struct asked {
        int n;
        int64_t gap_us;
        bool answer;
};

static bool on_reserve(void *ud, const char *source, const char *route, int64_t gap_us)
{
        struct asked *a = ud;
        (void)source;
        (void)route;
        a->n++;
        a->gap_us = gap_us;
        return a->answer;
}

/* A rule paces example.com to 60 starts a minute (one a second). */
static struct sched *paced(struct sched_classifier **c, struct asked *a, struct sched_item **it)
{
        char err[256];
        cr_assert_eq(sched_classifier_new(c), 0);
        cr_assert_geq(sched_classifier_load_rules_string(
                          *c, "pace.json",
                          "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"slow\", \"code\": "
                          "\"4??\", \"enhanced\": \"*\", \"text\": \"SLOW-DOWN\", \"class\": "
                          "\"unknown_temp\", \"reason\": \"test\", \"source\": \"observed\", "
                          "\"action\": {\"max_per_minute\": 60, \"for_seconds\": 600}}]}",
                          err, sizeof(err)),
                      0, "%s", err);
        struct sched *s;
        cr_assert_eq(sched_new(cfg, *c, NULL, 1, &s), 0);
        sched_set_share(s, &(struct sched_share){.pace_reserve = on_reserve, .userdata = a});
        struct sched_item *first;
        cr_assert_eq(sched_add(s, "", "mx:example.com", T0, 0, NULL, &first), 0);
        struct sched_rcpt_result r0 = {.prev_class = -1};
        (void)attempt(s, first, T0, "451 4.7.0 SLOW-DOWN", &r0);
        cr_assert_eq(sched_add(s, "", "mx:example.com", T0, 0, NULL, it), 0);
        return s;
}

Test(share, a_paced_start_waits_for_the_fleets_slot_and_takes_it)
{
        struct sched_classifier *c;
        struct asked a = {.answer = true};
        struct sched_item *it, *next, *out[1];
        struct sched *s = paced(&c, &a, &it);
        cr_assert_eq(sched_pop_due(s, T0 + 1, out, 1), 1); /* the first start is this node's */
        cr_assert_eq(a.n, 1);
        cr_assert_eq(a.gap_us, 1 * S);
        cr_assert_eq(sched_add(s, "", "mx:example.com", T0, 0, NULL, &next), 0);
        /* held while the fleet has not answered, even past the local gap */
        cr_assert_eq(sched_pop_due(s, T0 + 2 * S, out, 1), 0);
        /* the fleet says: not before 5 s (other nodes took the slots between) */
        sched_shared_pace_slot(s, "", "mx:example.com", T0 + 5 * S, T0 + 2 * S);
        cr_assert_eq(sched_pop_due(s, T0 + 4 * S, out, 1), 0);
        cr_assert_eq(sched_pop_due(s, T0 + 5 * S, out, 1), 1);
        cr_assert_eq(out[0], next);
        sched_free(s);
        sched_classifier_free(c);
}

Test(share, a_paced_start_without_the_fleet_keeps_the_local_gap)
{
        struct sched_classifier *c;
        struct asked a = {.answer = false};
        struct sched_item *it, *next, *out[1];
        struct sched *s = paced(&c, &a, &it);
        cr_assert_eq(sched_pop_due(s, T0 + 1, out, 1), 1);
        cr_assert_eq(a.n, 1);
        cr_assert_eq(sched_add(s, "", "mx:example.com", T0, 0, NULL, &next), 0);
        cr_assert_eq(sched_pop_due(s, T0 + S / 2, out, 1), 0);
        cr_assert_eq(sched_pop_due(s, T0 + 1 + S, out, 1), 1);
        sched_free(s);
        sched_classifier_free(c);
}

Test(share, a_providers_messages_per_minute_is_paced_by_the_fleet_too)
{
        struct sched *s;
        cr_assert_eq(sched_new(cfg, cls, NULL, 1, &s), 0);
        struct asked a = {.answer = true};
        sched_set_share(s, &(struct sched_share){.pace_reserve = on_reserve, .userdata = &a});
        struct sched_item *it, *next, *out[1];
        cr_assert_eq(sched_add(s, "", "site:google", T0, 0, NULL, &it), 0);
        cr_assert_eq(sched_limit_destination(s, "", "site:google", 0, 30), 0);
        cr_assert_eq(sched_add(s, "", "site:google", T0, 0, NULL, &next), 0);
        cr_assert_eq(sched_pop_due(s, T0, out, 1), 1);
        cr_assert_eq(a.n, 1);
        cr_assert_eq(a.gap_us, 2 * S);
        sched_shared_pace_slot(s, "", "site:google", T0 + 7 * S, T0 + 1 * S);
        cr_assert_eq(sched_pop_due(s, T0 + 6 * S, out, 1), 0);
        cr_assert_eq(sched_pop_due(s, T0 + 7 * S, out, 1), 1);
        cr_assert_eq(out[0], next);
        sched_free(s);
}
