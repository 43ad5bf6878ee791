/* tests/scheduler/test_class_tables.c — every reply class has a row in every
 * per-class table: its name, its [retry.CLASS] defaults, the scheduler's
 * traits (through what they do), and the words a DSN uses for it. A class
 * added to enum reply_class without its rows fails here, not in production.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "bounce/explain.h"
#include "common/reply_class.h"
#include "config/config.h"
#include "queue/queue.h"
#include "scheduler/scheduler.h"

Test(class_tables, every_class_has_a_name_that_reads_back)
{
        for (int c = 0; c < CLASS__MAX; c++) {
                const char *n = reply_class_name(c);
                cr_assert_not_null(n, "class %d has no name", c);
                cr_assert_eq(reply_class_from_name(n), c, "%s", n);
        }
}

Test(class_tables, every_temporary_class_has_retry_defaults)
{
        struct tarry_config *cfg;
        char err[256];
        cr_assert_eq(cfg_load_string("t.conf", "", &cfg, err, sizeof(err)), 0, "%s", err);
        for (int c = 0; c < CLASS__MAX; c++) {
                if (c == CLASS_PERMANENT)
                        continue;
                const struct cfg_retry *r = &cfg->retry[c];
                cr_assert_gt(r->initial_s, 0, "[retry.%s] has no initial", reply_class_name(c));
                cr_assert_geq(r->factor, 1.0, "[retry.%s] factor", reply_class_name(c));
                cr_assert_geq(r->max_s, r->initial_s, "[retry.%s] max", reply_class_name(c));
        }
        cfg_free(cfg);
}

Test(class_tables, every_class_has_dsn_words_and_a_status)
{
        for (int c = 0; c < CLASS__MAX; c++) {
                struct envelope_rcpt r = {.state =
                                              c == CLASS_PERMANENT ? RCPT_FAILED : RCPT_DEFERRED,
                                          .reply_class = (char *)reply_class_name(c)};
                enum dsn_kind k = c == CLASS_PERMANENT ? DSN_FAILED : DSN_DELAYED;
                cr_assert_eq(explain_class(&r), c, "%s", reply_class_name(c));
                struct explanation e = explain_rcpt(&r, k);
                cr_assert(e.what && *e.what, "no DSN words for %s", reply_class_name(c));
                char status[DSN_STATUS_MAX];
                explain_status(&r, k, status);
                cr_assert(explain_status_valid(status), "%s: status '%s'", reply_class_name(c),
                          status);
        }
}

Test(class_tables, every_next_attempt_reason_has_a_name)
{
        for (int w = 1; w < SCHED__WHY_MAX; w++) {
                const char *n = sched_why_name(w);
                cr_assert(n && *n, "reason %d has no name", w);
                cr_assert_eq(sched_why_from_name(n), w, "%s", n);
        }
}
