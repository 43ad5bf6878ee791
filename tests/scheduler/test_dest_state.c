/* tests/scheduler/test_dest_state.c — suspensions, back-offs and concurrency
 * windows persisted in destinations.json, and dropped once over.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/scheduler.h"

#define S  1000000LL
#define T0 (1700000000LL * S)

/* An in-memory spool state/ directory. */
struct memdir {
        char *name[4];
        char *data[4];
        size_t len[4];
};

static int slot(struct memdir *m, const char *name, bool create)
{
        for (int i = 0; i < 4; i++)
                if (m->name[i] && strcmp(m->name[i], name) == 0)
                        return i;
        for (int i = 0; create && i < 4; i++)
                if (!m->name[i]) {
                        m->name[i] = strdup(name);
                        return i;
                }
        return -1;
}

static int mem_write(void *ud, const char *name, const void *buf, size_t len)
{
        struct memdir *m = ud;
        int i = slot(m, name, true);
        cr_assert_geq(i, 0);
        free(m->data[i]);
        m->data[i] = strndup(buf, len);
        m->len[i] = len;
        return 0;
}

static int mem_read(void *ud, const char *name, size_t limit, char **out, size_t *len)
{
        struct memdir *m = ud;
        int i = slot(m, name, false);
        if (i < 0)
                return -ENOENT;
        if (m->len[i] > limit)
                return -EFBIG;
        *out = strdup(m->data[i]);
        *len = m->len[i];
        return 0;
}

static struct tarry_config *cfg;
static struct sched_classifier *cls;
static struct memdir dir;

static void setup(void)
{
        char err[256];
        cr_assert_eq(cfg_load_string("t.conf", "[smtp]\ndestination_concurrency = 4\n", &cfg, err,
                                     sizeof(err)),
                     0, "%s", err);
        cr_assert_eq(sched_classifier_new(&cls), 0);
        memset(&dir, 0, sizeof(dir));
}

static void teardown(void)
{
        for (int i = 0; i < 4; i++) {
                free(dir.name[i]);
                free(dir.data[i]);
        }
        sched_classifier_free(cls);
        cfg_free(cfg);
}

TestSuite(dest_state, .init = setup, .fini = teardown);

static struct sched *new_sched(void)
{
        struct sched_io io = {mem_write, mem_read, &dir};
        struct sched *s;
        cr_assert_eq(sched_new(cfg, cls, &io, 1, &s), 0);
        return s;
}

/* One attempt to route at now answered with text. */
static void answer(struct sched *s, const char *route, int64_t now, const char *text)
{
        struct sched_item *it, *out[1];
        cr_assert_eq(sched_add(s, "192.0.2.10", route, now, 0, NULL, &it), 0);
        cr_assert_eq(sched_pop_due(s, now, out, 1), 1);
        struct sched_reply r = {.text = text};
        struct sched_rcpt_result rr = {.reply = &r, .prev_class = -1};
        struct sched_decision d;
        int left = sched_on_result(s, it, now, NULL, &rr, 1, &d);
        cr_assert_geq(left, 0);
        if (left > 0)
                sched_remove(s, it);
}

struct found {
        const char *route;
        struct sched_dest_info info;
        char cause[32];
        bool seen;
};

static int find_cb(const struct sched_dest_info *d, void *ud)
{
        struct found *f = ud;
        if (strcmp(d->route, f->route) != 0)
                return 0;
        f->info = *d;
        f->info.route = NULL;
        f->info.source_address = NULL;
        f->info.last_reply = NULL;
        snprintf(f->cause, sizeof(f->cause), "%s",
                 d->pause_class >= 0 ? reply_class_name(d->pause_class) : "");
        f->seen = true;
        return 0;
}

static struct found find(struct sched *s, const char *route, int64_t now)
{
        struct found f = {.route = route};
        sched_foreach_destination(s, now, find_cb, &f);
        return f;
}

static const char *REPUTATION = "451 4.7.650 The mail server [192.0.2.10] has been temporarily "
                                "rate limited due to IP reputation.";

Test(dest_state, a_suspension_survives_a_restart_with_its_end_and_cause)
{
        struct sched *s = new_sched();
        answer(s, "mx:outlook.example", T0, REPUTATION);
        struct found before = find(s, "mx:outlook.example", T0 + S);
        cr_assert_eq(before.info.state, SCHED_DEST_SUSPENDED);
        cr_assert_gt(before.info.until_us, T0);
        sched_free(s);

        s = new_sched();
        cr_assert_eq(sched_load_destinations(s, T0 + 60 * S), 1);
        struct found after = find(s, "mx:outlook.example", T0 + 60 * S);
        cr_assert(after.seen, "the suspension was forgotten");
        cr_assert_eq(after.info.state, SCHED_DEST_SUSPENDED);
        cr_assert_eq(after.info.until_us, before.info.until_us);
        cr_assert_str_eq(after.cause, "reputation");

        /* a message queued after the restart waits for the end, not "ok now" */
        struct sched_item *it, *out[1];
        cr_assert_eq(sched_add(s, "192.0.2.10", "mx:outlook.example", T0 + 60 * S, 0, NULL, &it),
                     0);
        cr_assert_eq(sched_pop_due(s, T0 + 61 * S, out, 1), 0);
        cr_assert_eq(sched_next_due(s, T0 + 61 * S), before.info.until_us);
        cr_assert_eq(sched_pop_due(s, before.info.until_us, out, 1), 1);
        sched_free(s);
}

Test(dest_state, a_suspension_over_while_down_is_dropped_at_load)
{
        struct sched *s = new_sched();
        answer(s, "mx:outlook.example", T0, REPUTATION);
        struct found before = find(s, "mx:outlook.example", T0 + S);
        sched_free(s);

        s = new_sched();
        cr_assert_eq(sched_load_destinations(s, before.info.until_us + S), 0);
        cr_assert_not(find(s, "mx:outlook.example", before.info.until_us + S).seen);
        sched_free(s);
}

Test(dest_state, a_backoff_survives_a_restart)
{
        struct sched *s = new_sched();
        answer(s, "mx:busy.example", T0, "421 4.3.2 Service not available, too busy");
        struct found b = find(s, "mx:busy.example", T0 + S);
        cr_assert_eq(b.info.state, SCHED_DEST_BACKOFF);
        sched_free(s);

        s = new_sched();
        cr_assert_eq(sched_load_destinations(s, T0 + 10 * S), 1);
        struct found a = find(s, "mx:busy.example", T0 + 10 * S);
        cr_assert_eq(a.info.state, SCHED_DEST_BACKOFF);
        cr_assert_eq(a.info.until_us, b.info.until_us);
        cr_assert_str_eq(a.cause, "overload");
        sched_free(s);
}

Test(dest_state, a_reduced_concurrency_window_survives_a_restart)
{
        struct sched *s = new_sched();
        answer(s, "mx:rep.example", T0, REPUTATION);
        struct found r = find(s, "mx:rep.example", T0 + S);
        /* the suspension ends: back at concurrency 1, raised one per success */
        (void)sched_next_due(s, r.info.until_us);
        answer(s, "mx:rep.example", r.info.until_us, "250 ok");
        struct found t = find(s, "mx:rep.example", r.info.until_us);
        cr_assert_eq(t.info.state, SCHED_DEST_THROTTLED);
        cr_assert_eq(t.info.concurrency, 2);
        sched_free(s);

        s = new_sched();
        int64_t later = r.info.until_us + 60 * S;
        cr_assert_eq(sched_load_destinations(s, later), 1);
        struct found t2 = find(s, "mx:rep.example", later);
        cr_assert_eq(t2.info.state, SCHED_DEST_THROTTLED);
        cr_assert_eq(t2.info.concurrency, 2);
        sched_free(s);
}

Test(dest_state, a_corrupt_file_is_reported)
{
        static const char *const bad[] = {
            "{\"version\": 1, \"destinations\": 7}",
            "{\"version\": 1, \"saved_at\": 1, \"destinations\": 7}",  /* not an array */
            "{\"version\": 2, \"saved_at\": 1, \"destinations\": []}", /* a later version */
            "{\"version\": 1, \"destinations\": []}",                  /* no saved_at */
            "not json",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                mem_write(&dir, SCHED_DESTS_FILE, bad[i], strlen(bad[i]));
                struct sched *s = new_sched();
                cr_assert_eq(sched_load_destinations(s, T0), -EBADMSG, "%s", bad[i]);
                sched_free(s);
        }
}

Test(dest_state, no_file_or_an_empty_one_is_no_destinations)
{
        const char *empty = "{\"version\": 1, \"saved_at\": 1, \"destinations\": []}";
        struct sched *s = new_sched();
        cr_assert_eq(sched_load_destinations(s, T0), 0);
        mem_write(&dir, SCHED_DESTS_FILE, empty, strlen(empty));
        cr_assert_eq(sched_load_destinations(s, T0), 0);
        sched_free(s);
}

Test(dest_state, resuming_a_destination_is_persisted)
{
        struct sched *s = new_sched();
        answer(s, "mx:outlook.example", T0, REPUTATION);
        cr_assert_eq(sched_resume_destination(s, "mx:outlook.example", NULL, T0 + S), 1);
        sched_free(s);
        s = new_sched();
        cr_assert_eq(sched_load_destinations(s, T0 + 2 * S), 0);
        sched_free(s);
}
