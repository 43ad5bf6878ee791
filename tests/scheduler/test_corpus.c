/* tests/scheduler/test_corpus.c — classifier accuracy on the labelled corpus
 * (tests/data/replies-dev.jsonl): at least 97% of classes and every hint
 * right. Prints the confusion table and every miss.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/scheduler.h"

static const char *corpus_path(char *buf, size_t len)
{
        const char *src = getenv("TARRY_SOURCE_DIR");
        snprintf(buf, len, "%s/tests/data/replies-dev.jsonl", src ? src : ".");
        return buf;
}

static int class_index(const char *name)
{
        int k = reply_class_from_name(name);
        return k < 0 ? CLASS__MAX : k;
}

Test(corpus, classifies_labelled_replies_with_97_percent_accuracy_and_every_hint)
{
        struct sched_classifier *c;
        cr_assert_eq(sched_classifier_new(&c), 0);
        char path[4096];
        FILE *f = fopen(corpus_path(path, sizeof(path)), "r");
        cr_assert_not_null(f, "cannot open %s", path);

        unsigned confusion[CLASS__MAX + 1][CLASS__MAX + 1] = {{0}};
        unsigned total = 0, right = 0, hints_total = 0, hints_right = 0;
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
                json_error_t err;
                json_t *o = json_loads(line, 0, &err);
                cr_assert_not_null(o, "bad corpus line: %s", err.text);
                const char *reply = json_string_value(json_object_get(o, "reply"));
                const char *want = json_string_value(json_object_get(o, "class"));
                json_t *h = json_object_get(o, "hint_seconds");
                long long want_hint = json_is_integer(h) ? json_integer_value(h) : -1;

                struct sched_verdict v;
                sched_classify_text(c, reply, &v);
                int got = v.accepted ? CLASS__MAX : (int)v.cls;
                int exp = class_index(want);
                confusion[exp][got]++;
                total++;
                if (got == exp)
                        right++;
                else
                        printf("# MISS want=%s got=%s rule=%s: %.120s\n", want,
                               got < CLASS__MAX ? reply_class_name(got) : "?", v.rule, reply);
                hints_total++;
                if (v.hint_s == want_hint)
                        hints_right++;
                else
                        printf("# HINT want=%lld got=%lld: %.120s\n", want_hint,
                               (long long)v.hint_s, reply);
                json_decref(o);
        }
        free(line);
        fclose(f);

        printf("# confusion (rows: label, columns: classifier)\n#%13s", "");
        for (int j = 0; j < CLASS__MAX; j++)
                printf(" %5.5s", reply_class_name(j));
        printf("\n");
        for (int i = 0; i < CLASS__MAX; i++) {
                printf("# %12s", reply_class_name(i));
                for (int j = 0; j < CLASS__MAX; j++)
                        printf(" %5u", confusion[i][j]);
                printf("\n");
        }
        printf("# classes %u/%u (%.1f%%), hints %u/%u\n", right, total, 100.0 * right / total,
               hints_right, hints_total);
        fflush(stdout);
        sched_classifier_free(c);
        cr_assert_gt(total, 0);
        cr_expect_geq(right * 100, total * 97, "class accuracy %u/%u below 97%%", right, total);
        cr_expect_eq(hints_right, hints_total, "hints %u/%u", hints_right, hints_total);
}
