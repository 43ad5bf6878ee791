/* tests/scheduler/test_class_tables.c — every reply class has a row in every
 * per-class table: its name, its [retry.CLASS] defaults, the scheduler's
 * traits (a row in the shipped policy's class_traits, which the loader
 * requires of a base policy), the words a DSN uses for it, and the places
 * an operator reads about it (tarry.conf(5), etc/tarry.conf, the defaults
 * table of docs/scheduler.md). A class added to enum reply_class without
 * its rows fails here, not in production.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
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

static bool word_char(char c)
{
        return isalnum((unsigned char)c) || c == '_';
}

/* The text of $TARRY_SOURCE_DIR/rel (malloc'd). */
static char *source_file(const char *rel)
{
        const char *src = getenv("TARRY_SOURCE_DIR");
        cr_assert_not_null(src, "TARRY_SOURCE_DIR is not set (run through meson test)");
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", src, rel);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "%s", path);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        rewind(f);
        char *text = calloc(1, (size_t)n + 1);
        cr_assert_not_null(text);
        cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
        fclose(f);
        return text;
}

/* The shipped policy describes each class's traits (what the scheduler
 * does beyond the numbers): the file has a row for every class, and a
 * base policy without one is refused (test_policy.c checks the words). */
Test(class_tables, every_class_has_traits_in_the_shipped_policy)
{
        char *text = source_file("data/tarry-policy.json");
        json_error_t jerr;
        json_t *policy = json_loads(text, 0, &jerr);
        cr_assert_not_null(policy, "%s", jerr.text);
        json_t *traits = json_object_get(policy, "class_traits");
        for (int c = 0; c < CLASS__MAX; c++)
                cr_assert(json_is_object(json_object_get(traits, reply_class_name(c))),
                          "data/tarry-policy.json: class_traits has no row for %s",
                          reply_class_name(c));
        json_decref(policy);
        free(text);
        struct sched_classifier *cls = NULL;
        char err[512] = "";
        char path[4096];
        snprintf(path, sizeof(path), "%s/data/tarry-policy.json", getenv("TARRY_SOURCE_DIR"));
        cr_assert_eq(sched_classifier_new_from(path, &cls, err, sizeof(err)), 0, "%s", err);
        sched_classifier_free(cls);
}

/* Where an operator reads about [retry.CLASS]: the man page and the shipped
 * tarry.conf list every class, and docs/scheduler.md gives each its row of
 * defaults and behaviour. */
Test(class_tables, every_temporary_class_is_named_where_retry_is_documented)
{
        static const struct {
                const char *file, *before; /* the class's name must follow this */
        } places[] = {
            {"man/tarry.conf.5.scd", ""},
            {"etc/tarry.conf", ""},
            {"docs/scheduler.md", "\n| "},
        };
        for (size_t p = 0; p < sizeof(places) / sizeof(places[0]); p++) {
                char *text = source_file(places[p].file);
                for (int c = 0; c < CLASS__MAX; c++) {
                        if (c == CLASS_PERMANENT)
                                continue;
                        char want[128];
                        /* "| greylist | 60 s ×2 20 m" in the defaults table; a word elsewhere */
                        snprintf(want, sizeof(want), "%s%s%s", places[p].before,
                                 reply_class_name(c), *places[p].before ? " | " : "");
                        bool found = false;
                        size_t wl = strlen(want);
                        for (const char *at = strstr(text, want); at && !found;
                             at = strstr(at + 1, want)) {
                                const char *cell = at + wl, *bar = strchr(cell, '|'),
                                           *times = strstr(cell, "\u00d7"); /* "60 s ×2 20 m" */
                                if (*places[p].before) /* the defaults row, not another table's */
                                        found = bar && times && times < bar;
                                else
                                        found = (at == text || !word_char(at[-1])) &&
                                                !word_char(at[wl]);
                        }
                        cr_assert(found, "%s does not name the class %s", places[p].file,
                                  reply_class_name(c));
                }
                free(text);
        }
}
