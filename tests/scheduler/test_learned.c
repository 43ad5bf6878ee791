/* tests/scheduler/test_learned.c — greylist learning persisted in
 * learned.json through the I/O callbacks, and forgotten after
 * greylist_memory.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/scheduler.h"

#define S  1000000LL
#define T0 (1700000000LL * S)

/* An in-memory "spool state" directory holding one file. */
struct memfile {
        char *data;
        size_t len;
        int writes;
};

static int mem_write(void *ud, const char *name, const void *buf, size_t len)
{
        struct memfile *m = ud;
        cr_assert_str_eq(name, SCHED_LEARNED_FILE);
        free(m->data);
        m->data = malloc(len + 1);
        memcpy(m->data, buf, len);
        m->data[len] = '\0';
        m->len = len;
        m->writes++;
        return 0;
}

static int mem_read(void *ud, const char *name, size_t limit, char **out, size_t *len)
{
        struct memfile *m = ud;
        (void)name;
        if (!m->data)
                return -ENOENT;
        if (m->len > limit)
                return -EFBIG;
        *out = strdup(m->data);
        *len = m->len;
        return 0;
}

static struct tarry_config *cfg;
static struct sched_classifier *cls;
static struct memfile file;

static void setup(void)
{
        char err[256];
        cr_assert_eq(
            cfg_load_string("t.conf", "[main]\ngreylist_memory = 1d\n", &cfg, err, sizeof(err)), 0,
            "%s", err);
        cr_assert_eq(sched_classifier_new(&cls), 0);
        memset(&file, 0, sizeof(file));
}

static void teardown(void)
{
        free(file.data);
        sched_classifier_free(cls);
        cfg_free(cfg);
}

TestSuite(learned, .init = setup, .fini = teardown);

static struct sched *new_sched(void)
{
        struct sched_io io = {mem_write, mem_read, &file};
        struct sched *s;
        cr_assert_eq(sched_new(cfg, cls, &io, 1, &s), 0);
        return s;
}

static struct sched_decision run(struct sched *s, int64_t now, const char *text, int deferrals,
                                 int64_t first, int prev)
{
        struct sched_item *it, *out[1];
        cr_assert_eq(sched_add(s, "192.0.2.10", "mx:grey.example", now, 0, NULL, &it), 0);
        cr_assert_eq(sched_pop_due(s, now, out, 1), 1);
        struct sched_reply r = {.text = text};
        struct sched_rcpt_result rr = {.reply = &r,
                                       .deferrals = deferrals,
                                       .first_deferral_us = first,
                                       .last_deferral_us = first,
                                       .prev_class = prev};
        struct sched_decision d;
        cr_assert_geq(sched_on_result(s, it, now, NULL, &rr, 1, &d), 0);
        if (d.action == SCHED_RETRY)
                sched_remove(s, it);
        return d;
}

static const char *GREY = "450 4.2.0 <a@grey.example>: Recipient address rejected: Greylisted";

Test(learned, acceptance_after_greylisting_is_written_atomically_through_io)
{
        struct sched *s = new_sched();
        run(s, T0 + 1505 * S, "250 ok", 4, T0, CLASS_GREYLIST);
        cr_assert_eq(file.writes, 1);
        cr_assert_not_null(strstr(file.data, "\"greylist_s\": 1505"), "%s", file.data);
        cr_assert_not_null(strstr(file.data, "mx:grey.example"));
        sched_free(s);
}

Test(learned, what_was_learned_survives_a_restart)
{
        struct sched *s = new_sched();
        run(s, T0 + 1505 * S, "250 ok", 4, T0, CLASS_GREYLIST);
        sched_free(s);

        s = new_sched();
        cr_assert_eq(sched_load_learned(s, T0 + 3600 * S), 1);
        struct sched_decision d = run(s, T0 + 3600 * S, GREY, 0, 0, -1);
        /* known: accepted at 1505 s, nothing refused after the first try: probe the middle */
        cr_assert_eq(d.next_attempt_us, T0 + (3600 + 752) * S);
        cr_assert_eq(d.why, SCHED_WHY_LEARNED_WINDOW);
        sched_free(s);
}

Test(learned, the_whole_bracket_survives_a_restart)
{
        struct sched *s = new_sched();
        /* refused at 280 s, accepted at 300 s: a tight bracket, aimed at its top */
        struct sched_item *it, *out[1];
        cr_assert_eq(sched_add(s, "192.0.2.10", "mx:grey.example", T0, 0, NULL, &it), 0);
        cr_assert_eq(sched_pop_due(s, T0 + 300 * S, out, 1), 1);
        struct sched_reply ok = {.text = "250 ok"};
        struct sched_rcpt_result rr = {.reply = &ok,
                                       .deferrals = 2,
                                       .first_deferral_us = T0,
                                       .last_deferral_us = T0 + 280 * S,
                                       .prev_class = CLASS_GREYLIST};
        struct sched_decision d;
        cr_assert_eq(sched_on_result(s, it, T0 + 300 * S, NULL, &rr, 1, &d), 0);
        cr_assert_not_null(strstr(file.data, "\"lower_s\": 280"), "%s", file.data);
        sched_free(s);

        s = new_sched();
        cr_assert_eq(sched_load_learned(s, T0 + 1800 * S), 1);
        d = run(s, T0 + 1800 * S, GREY, 0, 0, -1);
        cr_assert_eq(d.next_attempt_us, T0 + (1800 + 300) * S);
        sched_free(s);
}

Test(learned, learned_delay_is_forgotten_after_greylist_memory)
{
        struct sched *s = new_sched();
        run(s, T0 + 1505 * S, "250 ok", 4, T0, CLASS_GREYLIST);
        int64_t later = T0 + 2 * 86400 * S;
        struct sched_decision d = run(s, later, GREY, 0, 0, -1);
        cr_assert_eq(d.next_attempt_us, later + 60 * S, "back to the schedule");
        sched_free(s);

        s = new_sched();
        cr_assert_eq(sched_load_learned(s, later), 0);
        sched_free(s);
}

Test(learned, acceptance_without_greylisting_teaches_nothing)
{
        struct sched *s = new_sched();
        run(s, T0 + 3600 * S, "250 ok", 1, T0, CLASS_MAILBOX_FULL);
        cr_assert_eq(file.writes, 0);
        sched_free(s);
}

Test(learned, corrupt_state_file_is_reported_and_ignored)
{
        file.data = strdup("{not json");
        file.len = strlen(file.data);
        struct sched *s = new_sched();
        cr_assert_eq(sched_load_learned(s, T0), -EBADMSG);
        struct sched_decision d = run(s, T0, GREY, 0, 0, -1);
        cr_assert_eq(d.next_attempt_us, T0 + 60 * S);
        sched_free(s);
}

Test(learned, no_state_file_means_nothing_learned)
{
        struct sched *s = new_sched();
        cr_assert_eq(sched_load_learned(s, T0), 0);
        sched_free(s);
}
