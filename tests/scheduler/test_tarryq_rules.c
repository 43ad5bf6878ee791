/* tests/scheduler/test_tarryq_rules.c — `tarryq rules check FILE` and the
 * file that `tarryq classify` names, as an operator runs them.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *run(const char *args, int *status)
{
        char cmd[8192];
        snprintf(cmd, sizeof(cmd), "cd '%s' && '%s/cli/tarryq' %s 2>&1", getenv("TARRY_SOURCE_DIR"),
                 getenv("TARRY_BUILD_DIR"), args);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        size_t cap = 1 << 16, len = 0, n;
        char *out = malloc(cap);
        while ((n = fread(out + len, 1, cap - 1 - len, p)) > 0)
                len += n;
        out[len] = '\0';
        *status = pclose(p);
        return out;
}

static void write_file(char *path, const char *text)
{
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
}

static const char *RULE = "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"acme\", \"code\": "
                          "\"4??\", \"enhanced\": \"*\", \"text\": \"ACME-7\", \"class\": "
                          "\"policy\", \"provider\": \"google\", \"reason\": \"ACME's code\", "
                          "\"source\": \"observed\"}]}";

Test(tarryq_rules, check_accepts_the_shipped_file)
{
        int st;
        char *out = run("rules check -C /dev/null data/tarry-policy.json", &st);
        cr_assert_eq(WEXITSTATUS(st), 0, "%s", out);
        cr_assert_not_null(strstr(out, "data/tarry-policy.json: ok: "), "%s", out);
        free(out);
}

Test(tarryq_rules, check_accepts_an_operator_file_naming_a_shipped_provider)
{
        char path[] = "/tmp/tarry-rules-XXXXXX", args[256];
        write_file(path, RULE);
        snprintf(args, sizeof(args), "rules check -C /dev/null %s", path);
        int st;
        char *out = run(args, &st);
        cr_assert_eq(WEXITSTATUS(st), 0, "%s", out);
        cr_assert_not_null(strstr(out, ": ok: 1 rules tried first"), "%s", out);
        free(out);
        unlink(path);
}

Test(tarryq_rules, check_names_file_and_rule_of_an_error_with_exit_65)
{
        char path[] = "/tmp/tarry-rules-XXXXXX", args[256], want[256];
        write_file(path, "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"acme\", \"code\": "
                         "\"4??\", \"enhanced\": \"*\", \"text\": \"ACME-(\", \"class\": "
                         "\"policy\", \"reason\": \"r\", \"source\": \"observed\"}]}");
        snprintf(args, sizeof(args), "rules check -C /dev/null %s", path);
        int st;
        char *out = run(args, &st);
        cr_assert_eq(WEXITSTATUS(st), 65, "%s", out);
        snprintf(want, sizeof(want), "tarryq: %s: rule 'acme': bad regular expression", path);
        cr_assert(strstr(out, want) == out, "%s", out);
        free(out);
        unlink(path);
        out = run(args, &st);
        cr_assert_eq(WEXITSTATUS(st), 66, "a missing file: %s", out);
        free(out);
        out = run("rules check", &st);
        cr_assert_eq(WEXITSTATUS(st), 64, "%s", out);
        free(out);
}

Test(tarryq_rules, classify_names_the_rule_and_the_file_it_came_from)
{
        char rules[] = "/tmp/tarry-rules-XXXXXX", conf[] = "/tmp/tarry-conf-XXXXXX", args[512];
        write_file(rules, RULE);
        snprintf(args, sizeof(args), "[main]\nclassifier_rules = %s\n", rules);
        write_file(conf, args);
        snprintf(args, sizeof(args), "classify -C %s '451 4.7.1 ACME-7 please wait'", conf);
        int st;
        char *out = run(args, &st);
        cr_assert_eq(WEXITSTATUS(st), 0, "%s", out);
        cr_assert_not_null(strstr(out, "class: policy\n"), "%s", out);
        cr_assert_not_null(strstr(out, "rule: acme (ACME's code)\n"), "%s", out);
        char want[300];
        snprintf(want, sizeof(want), "file: %s\n", rules);
        cr_assert_not_null(strstr(out, want), "%s", out);
        free(out);

        snprintf(args, sizeof(args), "classify -C %s '451 4.7.1 Greylisted'", conf);
        out = run(args, &st);
        cr_assert_not_null(strstr(out, "rule: greylist-word"), "%s", out);
        cr_assert_not_null(strstr(out, "/data/tarry-policy.json\n"), "%s", out);
        free(out);
        unlink(rules);
        unlink(conf);
}

Test(tarryq_rules, a_policy_file_key_naming_a_broken_file_is_a_config_error)
{
        char pol[] = "/tmp/tarry-policy-XXXXXX", conf[] = "/tmp/tarry-conf-XXXXXX", args[512];
        write_file(pol, "{\"tarry_policy\": 1}");
        snprintf(args, sizeof(args), "[main]\npolicy_file = %s\n", pol);
        write_file(conf, args);
        snprintf(args, sizeof(args), "classify -C %s '451 x'", conf);
        int st;
        char *out = run(args, &st);
        cr_assert_eq(WEXITSTATUS(st), 78, "%s", out);
        cr_assert_not_null(strstr(out, "missing \"greylist_windows\""), "%s", out);
        free(out);
        unlink(pol);
        unlink(conf);
}
