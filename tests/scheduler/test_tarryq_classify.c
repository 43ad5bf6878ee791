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

/* The same, with arguments placed before "classify" (tarryq -C FILE classify …). */
static char *run_tarryq(const char *args, int *status)
{
        char cmd[8192];
        snprintf(cmd, sizeof(cmd), "cd '%s' && '%s/cli/tarryq' %s 2>&1", getenv("TARRY_SOURCE_DIR"),
                 getenv("TARRY_BUILD_DIR"), args);
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

Test(tarryq_classify, prints_the_next_three_retries_under_the_config)
{
        /* no hint, nothing learned: 60 s, then the ends of the 300 s and 1500 s windows */
        int st;
        char *out = run("-C /dev/null '451 4.7.1 Greylisted, please come back later'", &st);
        cr_assert_eq(WEXITSTATUS(st), 0, "%s", out);
        cr_assert_not_null(strstr(out, "retry 1: +60s ("), "%s", out);
        cr_assert_not_null(strstr(out, "retry 2: +305s ("), "%s", out);
        cr_assert_not_null(strstr(out, "retry 3: +1505s ("), "%s", out);
        cr_assert_not_null(strstr(out, ", greylist_window)"), "%s", out);
        free(out);
        /* a hint is followed, under this config's greylist policy */
        out = run("-C /dev/null '451 4.7.1 Greylisted, try again in 120 seconds'", &st);
        cr_assert_not_null(strstr(out, "retry 1: +125s ("), "%s", out);
        cr_assert_not_null(strstr(out, ", hint)"), "%s", out);
        free(out);
        /* a permanent reply has no retries */
        out = run("-C /dev/null '550 5.1.1 User unknown'", &st);
        cr_assert_null(strstr(out, "retry"), "%s", out);
        free(out);
}

Test(tarryq_classify, config_may_come_before_the_subcommand)
{
        int st;
        char *out = run_tarryq("-C /dev/null classify '450 4.2.0 Greylisted'", &st);
        cr_assert_eq(WEXITSTATUS(st), 0, "%s", out);
        cr_assert_not_null(strstr(out, "class: greylist\n"), "%s", out);
        free(out);
}

Test(tarryq_classify, jsonl_reads_a_file_named_on_the_command_line)
{
        char path[] = "/tmp/tarry-classify-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        const char *text = "{\"reply\": \"450 4.2.0 Greylisted\"}\nnot json\n";
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        char args[256];
        snprintf(args, sizeof(args), "-C /dev/null --jsonl %s", path);
        int st;
        char *out = run(args, &st);
        cr_assert_eq(WEXITSTATUS(st), 65, "a bad line is exit 65");
        cr_assert_not_null(strstr(out, "{\"class\":\"greylist\""), "%s", out);
        free(out);
        snprintf(args, sizeof(args), "-C /dev/null classify --jsonl %s 2>&1", path);
        out = run_tarryq(args, &st);
        cr_assert_not_null(strstr(out, path), "the error names the file: %s", out);
        cr_assert_not_null(strstr(out, ":2:"), "and the line: %s", out);
        free(out);
        unlink(path);
}

Test(tarryq_classify, help_prints_usage_and_succeeds)
{
        int st;
        char *out = run_tarryq("--help", &st);
        cr_assert_eq(WEXITSTATUS(st), 0);
        cr_assert_not_null(strstr(out, "resume DESTINATION"), "%s", out);
        cr_assert_not_null(strstr(out, "--force"), "%s", out);
        free(out);
}
