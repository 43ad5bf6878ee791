/* tests/scheduler/test_tarryq_classify.c — `tarryq classify` as an operator
 * runs it: one reply on the command line, or the corpus on stdin.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *run(const char *args, int *status)
{
        char cmd[8192];
        snprintf(cmd, sizeof(cmd), "cd '%s' && '%s/cli/tarryq' classify %s",
                 getenv("TARRY_SOURCE_DIR"), getenv("TARRY_BUILD_DIR"), args);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        size_t cap = 1 << 20, len = 0;
        char *out = malloc(cap);
        size_t n;
        while ((n = fread(out + len, 1, cap - 1 - len, p)) > 0)
                len += n;
        out[len] = '\0';
        *status = pclose(p);
        return out;
}

Test(tarryq_classify, prints_class_hint_and_rule_for_one_reply)
{
        int st;
        char *out = run("-C /dev/null '451 4.7.1 Greylisted, try again in 300 seconds'", &st);
        cr_assert_eq(WEXITSTATUS(st), 0);
        cr_assert_not_null(strstr(out, "class: greylist\n"), "%s", out);
        cr_assert_not_null(strstr(out, "hint: 300s\n"), "%s", out);
        cr_assert_not_null(strstr(out, "rule: greylist-word"), "%s", out);
        free(out);
}

/* Exact on the tune split only (tests/data/split-corpus.py): the rules are
 * written against it. The held-out split is measured, not matched
 * (test_corpus.c). */
Test(tarryq_classify, jsonl_answers_every_tune_corpus_line_in_order_and_right)
{
        int st;
        char *out = run("-C /dev/null --jsonl < tests/data/replies-tune.jsonl", &st);
        cr_assert_eq(WEXITSTATUS(st), 0);
        char path[4096];
        snprintf(path, sizeof(path), "%s/tests/data/replies-tune.jsonl",
                 getenv("TARRY_SOURCE_DIR"));
        FILE *f = fopen(path, "r");
        char *line = NULL, *save = NULL;
        size_t cap = 0, lines = 0;
        char *o = strtok_r(out, "\n", &save);
        while (getline(&line, &cap, f) > 0) {
                cr_assert_not_null(o, "output ends after %zu lines", lines);
                json_t *in = json_loads(line, 0, NULL), *got = json_loads(o, 0, NULL);
                cr_assert_not_null(got, "%s", o);
                cr_assert_str_eq(json_string_value(json_object_get(got, "class")),
                                 json_string_value(json_object_get(in, "class")), "line %zu",
                                 lines + 1);
                json_t *h = json_object_get(got, "hint_seconds");
                cr_assert(json_is_null(h) || json_is_integer(h));
                cr_assert(json_equal(h, json_object_get(in, "hint_seconds")), "line %zu",
                          lines + 1);
                cr_assert(json_is_string(json_object_get(got, "rule")));
                json_decref(in);
                json_decref(got);
                lines++;
                o = strtok_r(NULL, "\n", &save);
        }
        cr_assert_null(o, "more output than input");
        cr_assert_eq(lines, 163, "the tune split has 163 replies");
        free(line);
        fclose(f);
        free(out);
}

Test(tarryq_classify, bad_input_lines_are_reported_with_exit_65)
{
        int st;
        char *out = run(
            "-C /dev/null --jsonl <<'EOF'\n{\"reply\":\"452 4.2.2 Mailbox full\"}\nnot json\nEOF",
            &st);
        cr_assert_eq(WEXITSTATUS(st), 65);
        cr_assert_not_null(
            strstr(out, "{\"class\":\"mailbox_full\",\"hint_seconds\":null,\"rule\":"), "%s", out);
        cr_assert_not_null(strstr(out, "\"error\":\"stdin:2:"), "%s", out);
        free(out);
}

Test(tarryq_classify, broken_rule_file_is_a_config_error)
{
        char rules[] = "/tmp/tarry-rules-XXXXXX", conf[] = "/tmp/tarry-conf-XXXXXX";
        int fr = mkstemp(rules), fc = mkstemp(conf);
        cr_assert(fr >= 0 && fc >= 0);
        dprintf(fr, "policy 4?? * (\n");
        dprintf(fc, "[main]\nclassifier_rules = %s\n", rules);
        close(fr);
        close(fc);
        char args[256];
        snprintf(args, sizeof(args), "-C %s '451 x' 2>&1", conf);
        int st;
        char *out = run(args, &st);
        cr_assert_eq(WEXITSTATUS(st), 78);
        cr_assert_not_null(strstr(out, ":1: bad regular expression"), "%s", out);
        free(out);
        unlink(rules);
        unlink(conf);
}
