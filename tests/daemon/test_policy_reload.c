/* tests/daemon/test_policy_reload.c — the real tarryd reads the operator's
 * policy file (classifier_rules) at start and on SIGHUP; a file that does not
 * load is named in the log and the running rules stay in force.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

static void write_rules(const char *path, const char *cls, const char *text)
{
        char tmp[300];
        snprintf(tmp, sizeof(tmp), "%s.new", path);
        FILE *f = fopen(tmp, "w");
        cr_assert_not_null(f);
        fprintf(f,
                "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"acme\", \"code\": \"4??\", "
                "\"enhanced\": \"*\", \"text\": \"%s\", \"class\": \"%s\", \"reason\": \"ACME's "
                "own code\", \"source\": \"observed\"}]}\n",
                text, cls);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(rename(tmp, path), 0);
}

/* Wait (generously: the machine is shared) until the log holds needle n times. */
static bool wait_log(struct harness *h, const char *needle, size_t n)
{
        return harness_wait_log(h, needle, n, 20000);
}

Test(policy_reload, sighup_with_a_broken_policy_file_keeps_the_running_rules)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        fixture_set(f, "rcpt", "451 4.7.1 ACME-7 come back later");

        char rules[] = "/tmp/tarry-policy-reload-XXXXXX";
        int fd = mkstemp(rules);
        cr_assert_geq(fd, 0);
        close(fd);
        write_rules(rules, "mailbox_full", "ACME-7");
        char extra[1024];
        snprintf(extra, sizeof(extra),
                 "classifier_rules = %s\n"
                 "[smtp]\nconnect_timeout = 2s\ncommand_timeout = 3s\ndata_timeout = 5s\n"
                 "[transport]\nexample.test = [127.0.0.1]:%u\n"
                 /* no retry while the test runs: each class= line is one new message */
                 "[retry.mailbox_full]\ninitial = 1h\nmax = 1h\n"
                 "[retry.policy]\ninitial = 1h\nmax = 1h\n",
                 rules, fixture_port(f));
        struct harness h;
        harness_init(&h, extra);
        harness_start(&h);

        harness_send(&h, "alice@sender.test", "one@example.test", "first");
        cr_assert(wait_log(&h, "class=mailbox_full", 1), "the operator rule was not used");

        /* a broken file: named in the log, and the running rules stay */
        write_rules(rules, "mailbox_full", "ACME-(");
        kill(h.tarryd, SIGHUP);
        cr_assert(wait_log(&h, "reload failed, keeping the running configuration", 1));
        char want[400];
        snprintf(want, sizeof(want), "%s: rule 'acme': bad regular expression", rules);
        cr_assert(harness_log_contains(&h, want), "the log does not name file and rule");
        harness_send(&h, "alice@sender.test", "two@example.test", "second");
        cr_assert(wait_log(&h, "class=mailbox_full", 2), "the running rules were dropped");

        /* a good file is taken at the next SIGHUP */
        write_rules(rules, "policy", "ACME-7");
        kill(h.tarryd, SIGHUP);
        cr_assert(wait_log(&h, "configuration reloaded", 1));
        harness_send(&h, "alice@sender.test", "three@example.test", "third");
        cr_assert(wait_log(&h, "class=policy", 1), "the reloaded rules were not used");
        cr_assert_eq(harness_log_count(&h, "class=mailbox_full"), 2);

        cr_assert_eq(harness_stop(&h, SIGTERM, 5000), 0);
        harness_cleanup(&h);
        fixture_free(f);
        unlink(rules);
}
