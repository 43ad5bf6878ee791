/* tests/scheduler/test_policy.c — policy files: the shipped data file, an
 * operator's file that extends and overrides it by name, load-time
 * validation that names file and entry, providers, and rule actions applied
 * to destinations on a fake clock.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/scheduler.h"

#define S  1000000LL
#define T0 (1700000000LL * S)

static struct tarry_config *cfg;
static struct sched_classifier *c;
static struct sched *s;
static char err[1024];

static void setup(void)
{
        cr_assert_eq(cfg_load_string("test.conf", "[smtp]\ndestination_concurrency = 3\n", &cfg,
                                     err, sizeof(err)),
                     0, "%s", err);
        cr_assert_eq(sched_classifier_new_from(NULL, &c, err, sizeof(err)), 0, "%s", err);
        err[0] = '\0';
}

static void teardown(void)
{
        sched_free(s);
        s = NULL;
        sched_classifier_free(c);
        cfg_free(cfg);
}

TestSuite(policy, .init = setup, .fini = teardown);

static struct sched_verdict classify(const char *text)
{
        struct sched_verdict v;
        sched_classify_text(c, text, &v);
        return v;
}

/* A one-rule operator file around the given rule fields. */
static int load_rule(const char *fields)
{
        char doc[2048];
        snprintf(doc, sizeof(doc),
                 "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"acme\", \"code\": \"4??\", "
                 "\"enhanced\": \"*\", \"text\": \"ACME-7\", \"reason\": \"ACME's own code\", "
                 "\"source\": \"observed\"%s}]}",
                 fields);
        return sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err));
}

static bool ends_with(const char *s, const char *tail)
{
        size_t a = strlen(s), b = strlen(tail);
        return a >= b && strcmp(s + a - b, tail) == 0;
}

/* ---- the shipped file ---- */

Test(policy, the_shipped_file_is_found_from_the_build_tree_and_describes_everything)
{
        cr_assert(ends_with(sched_policy_default_path(), "/data/tarry-policy.json"), "%s",
                  sched_policy_default_path());
        struct sched_policy_info info;
        sched_classifier_info(c, &info);
        cr_assert_geq(info.rules, 50);
        cr_assert_eq(info.operator_rules, 0);
        cr_assert_geq(info.providers, 4);
        cr_assert_eq(info.greylist_windows, 4);
}

Test(policy, a_verdict_names_the_rule_and_the_file_it_came_from)
{
        struct sched_verdict v = classify("451 4.7.1 Greylisted, try again in 300 seconds");
        cr_assert_str_eq(v.rule, "greylist-word");
        cr_assert(ends_with(v.file, "/data/tarry-policy.json"), "%s", v.file);
        cr_assert_null(v.action);
        v = classify("550 5.1.1 no such user");
        cr_assert_null(v.file, "the classifier's own verdicts have no file");
}

Test(policy, a_shipped_file_that_leaves_a_class_undescribed_is_refused)
{
        char path[] = "/tmp/tarry-policy-XXXXXX";
        int fd = mkstemp(path);
        dprintf(fd, "{\"tarry_policy\": 1, \"greylist_windows\": [{\"seconds\": 300, \"who\": "
                    "\"postgrey\", \"source\": \"observed\"}], \"class_traits\": {}}");
        close(fd);
        struct sched_classifier *other = NULL;
        cr_assert_eq(sched_classifier_new_from(path, &other, err, sizeof(err)), -EINVAL);
        cr_assert_not_null(strstr(err, "class_traits: class 'greylist' is not described"), "%s",
                           err);
        cr_assert(strstr(err, path) == err, "%s", err);
        unlink(path);
        cr_assert_eq(sched_classifier_new_from(path, &other, err, sizeof(err)), -ENOENT);
}

/* ---- operator files: extend and override by name ---- */

Test(policy, operator_rules_are_tried_first_and_name_their_file)
{
        cr_assert_eq(load_rule(", \"class\": \"policy\""), 1, "%s", err);
        struct sched_verdict v = classify("451 4.7.1 Greylisted ACME-7");
        cr_assert_eq(v.cls, CLASS_POLICY);
        cr_assert_str_eq(v.rule, "acme");
        cr_assert_str_eq(v.file, "local.json");
        cr_assert_str_eq(v.reason, "ACME's own code");
        cr_assert_eq(classify("451 4.7.1 Greylisted").cls, CLASS_GREYLIST);
}

Test(policy, an_operator_rule_with_a_shipped_name_replaces_the_shipped_rule)
{
        cr_assert_eq(classify("451 4.3.2 Server busy").cls, CLASS_OVERLOAD);
        const char *doc = "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"busy\", \"code\": "
                          "\"4??\", \"enhanced\": \"*\", \"text\": \"\\\\bbusy\\\\b\", \"class\": "
                          "\"rate_limit\", \"reason\": \"here busy means slow down\", \"source\": "
                          "\"observed\"}]}";
        struct sched_policy_info before, after;
        sched_classifier_info(c, &before);
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)), 1,
                     "%s", err);
        sched_classifier_info(c, &after);
        cr_assert_eq(after.rules, before.rules, "replaced, not added");
        struct sched_verdict v = classify("451 4.3.2 Server busy");
        cr_assert_eq(v.cls, CLASS_RATE_LIMIT);
        cr_assert_str_eq(v.file, "local.json");
}

Test(policy, a_disabled_entry_removes_a_shipped_rule_and_a_typo_in_it_is_an_error)
{
        cr_assert_str_eq(classify("451 4.7.1 Greylisted").rule, "greylist-word");
        const char *doc = "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"greylist-word\", "
                          "\"disabled\": true}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)), 0,
                     "%s", err);
        cr_assert_str_neq(classify("451 4.7.1 Greylisted").rule, "greylist-word");
        doc =
            "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"greylist-wrod\", \"disabled\": true}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)),
                     -EINVAL);
        cr_assert_str_eq(err,
                         "local.json: rule 'greylist-wrod': disabled, but no rule has that name");
}

Test(policy, the_older_one_rule_a_line_format_still_loads)
{
        cr_assert_eq(sched_classifier_load_rules_string(c, "/etc/tarry/rules",
                                                        "# local\npolicy 4?? 4.7.1 ACME-7\n", err,
                                                        sizeof(err)),
                     1, "%s", err);
        struct sched_verdict v = classify("451 4.7.1 ACME-7");
        cr_assert_eq(v.cls, CLASS_POLICY);
        cr_assert_str_eq(v.rule, "rules:2");
        cr_assert_str_eq(v.file, "/etc/tarry/rules");
}

Test(policy, operator_greylist_windows_replace_the_shipped_ones)
{
        const char *doc = "{\"tarry_policy\": 1, \"greylist_windows\": [{\"seconds\": 200, "
                          "\"who\": \"our own greylister\", \"source\": \"observed\"}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)), 0,
                     "%s", err);
        cr_assert_eq(sched_new(cfg, c, NULL, 42, &s), 0);
        struct sched_item *it;
        cr_assert_eq(sched_add(s, "", "mx:a.example", T0, 0, NULL, &it), 0);
        /* the first retry from the schedule, then the end of the one window (200 s + 5 s,
         * not the shipped 305 s), then the schedule again (issue 16.2) */
        int64_t now = T0, expect[] = {60, 205, 445};
        for (int k = 0; k < 3; k++) {
                struct sched_item *out[1];
                cr_assert_eq(sched_pop_due(s, now, out, 1), 1);
                struct sched_reply r = {.text = "451 4.7.1 Greylisted"};
                struct sched_rcpt_result rr = {.reply = &r,
                                               .deferrals = k,
                                               .first_deferral_us = k ? T0 : 0,
                                               .last_deferral_us = k ? T0 : 0,
                                               .prev_class = k ? CLASS_GREYLIST : -1};
                struct sched_decision d;
                cr_assert_eq(sched_on_result(s, it, now, NULL, &rr, 1, &d), 1);
                cr_assert_eq(d.next_attempt_us, T0 + expect[k] * S, "retry %d at %lld s", k + 1,
                             (long long)((d.next_attempt_us - T0) / S));
                now = d.next_attempt_us;
        }
}

/* ---- validation names the file and the entry; nothing changes ---- */

static void refused(const char *fields, const char *want)
{
        struct sched_policy_info before, after;
        sched_classifier_info(c, &before);
        cr_assert_eq(load_rule(fields), -EINVAL, "accepted: %s", fields);
        cr_assert_not_null(strstr(err, want), "error '%s' lacks '%s'", err, want);
        cr_assert(strstr(err, "local.json:") == err, "%s", err);
        sched_classifier_info(c, &after);
        cr_assert_eq(after.rules, before.rules);
        cr_assert_eq(classify("451 ACME-7").cls, CLASS_UNKNOWN_TEMP);
}

Test(policy, invalid_rules_are_refused_with_file_and_rule_named)
{
        refused(", \"class\": \"greylst\"", "rule 'acme': unknown class 'greylst'");
        refused(", \"class\": \"policy\", \"clas\": 1", "rule 'acme': unknown key 'clas'");
        refused(", \"class\": \"policy\", \"code\": \"4x?\"", "duplicate object key");
        refused(", \"class\": \"policy\", \"provider\": \"nobody\"",
                "rule 'acme': no provider 'nobody'");
        refused(", \"class\": \"policy\", \"action\": {\"max_connections\": 2}",
                "rule 'acme': max_connections and max_per_minute need for_seconds");
        refused(", \"class\": \"policy\", \"action\": {\"max_connections\": 0, \"for_seconds\": 9}",
                "\"max_connections\" must be an integer from 1 to 1000");
        refused(", \"class\": \"policy\", \"action\": {\"suspend_seconds\": 60}, \"threshold\": "
                "{\"matches\": 3}",
                "a threshold needs matches and within_seconds");
}

Test(policy, a_bad_pattern_and_a_bad_source_are_refused)
{
        const char *bad_re = "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"x\", \"code\": "
                             "\"4??\", \"enhanced\": \"*\", \"text\": \"(\", \"class\": "
                             "\"policy\", \"reason\": \"r\", \"source\": \"observed\"}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", bad_re, err, sizeof(err)),
                     -EINVAL);
        cr_assert(strstr(err, "local.json: rule 'x': bad regular expression") == err, "%s", err);
        const char *bad_source =
            "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"acme\", \"code\": \"4??\", "
            "\"enhanced\": \"*\", \"text\": \"x\", \"class\": \"policy\", \"reason\": \"r\", "
            "\"source\": \"my friend said so\"}]}";
        cr_assert_eq(
            sched_classifier_load_rules_string(c, "local.json", bad_source, err, sizeof(err)),
            -EINVAL);
        cr_assert_str_eq(err, "local.json: rule 'acme': bad \"source\" 'my friend said so'");
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json",
                                                        "{\"tarry_policy\": 1,\n"
                                                        "\"rules\": [,]}",
                                                        err, sizeof(err)),
                     -EINVAL);
        cr_assert(strstr(err, "local.json:2:") == err, "JSON errors give line and column: %s", err);
}

Test(policy, names_must_be_unique_within_a_file)
{
        const char *doc = "{\"tarry_policy\": 1, \"rules\": ["
                          "{\"name\": \"x\", \"code\": \"4??\", \"enhanced\": \"*\", \"text\": "
                          "\"a\", \"class\": \"policy\", \"reason\": \"r\", \"source\": "
                          "\"observed\"},"
                          "{\"name\": \"x\", \"code\": \"4??\", \"enhanced\": \"*\", \"text\": "
                          "\"b\", \"class\": \"policy\", \"reason\": \"r\", \"source\": "
                          "\"observed\"}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)),
                     -EINVAL);
        cr_assert_str_eq(err, "local.json: rule 'x' is defined twice");
}

Test(policy, a_rule_for_a_provider_without_mx_patterns_can_never_attach_and_is_refused)
{
        const char *doc =
            "{\"tarry_policy\": 1, \"providers\": [{\"name\": \"acme-mail\"}], \"rules\": "
            "[{\"name\": \"acme\", \"code\": \"4??\", \"enhanced\": \"*\", \"text\": \"ACME\", "
            "\"class\": \"policy\", \"provider\": \"acme-mail\", \"reason\": \"r\", \"source\": "
            "\"observed\"}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)),
                     -EINVAL);
        cr_assert_str_eq(err, "local.json: rule 'acme': provider 'acme-mail' has no MX patterns, "
                              "so the rule could never attach to a site");
        /* Emptying a shipped provider strands the shipped rules that name it. */
        doc = "{\"tarry_policy\": 1, \"providers\": [{\"name\": \"google\"}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)),
                     -EINVAL);
        cr_assert_not_null(strstr(err, "provider 'google' has no MX patterns"), "%s", err);
}

Test(policy, provider_limits_out_of_range_are_refused)
{
        const char *doc = "{\"tarry_policy\": 1, \"providers\": [{\"name\": \"acme-mail\", \"mx\": "
                          "[\"*.acme.example\"], \"limits\": {\"connections\": {\"value\": 5000, "
                          "\"source\": \"observed\"}}}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)),
                     -EINVAL);
        cr_assert_str_eq(err, "local.json: provider 'acme-mail': limit connections: \"value\" "
                              "must be an integer from 1 to 1000");
}

/* ---- providers ---- */

Test(policy, providers_are_found_by_mx_host_and_carry_their_limits_and_sources)
{
        const struct sched_provider *p = sched_provider_for_mx(c, "ASPMX.L.GOOGLE.COM");
        cr_assert_not_null(p);
        cr_assert_str_eq(p->name, "google");
        cr_assert_gt(p->connections.value, 0);
        cr_assert_not_null(p->connections.source);
        p = sched_provider_for_mx(c, "example-com.mail.protection.outlook.com");
        cr_assert_not_null(p);
        cr_assert_str_eq(p->name, "microsoft-365");
        cr_assert_null(sched_provider_for_mx(c, "mx.example.org"));

        const char *doc = "{\"tarry_policy\": 1, \"providers\": [{\"name\": \"acme-mail\", \"mx\": "
                          "[\"mx?.acme.example\"], \"limits\": {\"messages_per_minute\": "
                          "{\"value\": 30, \"source\": \"https://acme.example/postmaster\"}}}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)), 0,
                     "%s", err);
        p = sched_provider_for_mx(c, "mx2.acme.example");
        cr_assert_not_null(p);
        cr_assert_eq(p->messages_per_minute.value, 30);
        cr_assert_str_eq(p->file, "local.json");
}

Test(policy, shipped_providers_name_a_remediation_page_and_a_bad_one_is_refused)
{
        const struct sched_provider *p = sched_provider_for_mx(c, "mta5.am0.yahoodns.net");
        cr_assert_not_null(p);
        cr_assert_str_eq(p->remediation, "https://senders.yahooinc.com/");
        p = sched_provider_for_mx(c, "example-com.mail.protection.outlook.com");
        cr_assert_str_eq(p->remediation, "https://sender.office.com/");
        const char *doc = "{\"tarry_policy\": 1, \"providers\": [{\"name\": \"acme-mail\", \"mx\": "
                          "[\"*.acme.example\"], \"remediation\": \"observed\"}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)),
                     -EINVAL);
        cr_assert_str_eq(err, "local.json: provider 'acme-mail': bad \"remediation\" 'observed'");
        doc = "{\"tarry_policy\": 1, \"providers\": [{\"name\": \"acme-mail\", \"mx\": "
              "[\"*.acme.example\"]}]}";
        cr_assert_eq(sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)), 0,
                     "%s", err);
        cr_assert_null(sched_provider_for_mx(c, "mx.acme.example")->remediation, "optional");
}

/* ---- rule actions on destinations ---- */

static struct sched_item *add(const char *route, int64_t due)
{
        struct sched_item *it;
        cr_assert_eq(sched_add(s, "192.0.2.10", route, due, T0 + 5 * 86400 * S, NULL, &it), 0);
        return it;
}

static size_t pop(int64_t now, struct sched_item **out, size_t max)
{
        return sched_pop_due(s, now, out, max);
}

static void answer(struct sched_item *it, int64_t now, const char *text)
{
        struct sched_reply r = {.text = text};
        struct sched_rcpt_result rr = {.reply = &r, .prev_class = -1};
        struct sched_decision d;
        cr_assert_geq(sched_on_result(s, it, now, NULL, &rr, 1, &d), 0);
}

Test(policy, a_suspend_action_holds_the_whole_destination_for_its_time)
{
        cr_assert_eq(load_rule(", \"class\": \"policy\", \"action\": {\"suspend_seconds\": 600}"),
                     1, "%s", err);
        cr_assert_eq(sched_new(cfg, c, NULL, 42, &s), 0);
        struct sched_item *a = add("mx:a.example", T0), *b = add("mx:a.example", T0 + 10 * S);
        struct sched_item *out[3];
        cr_assert_eq(pop(T0, out, 3), 1);
        answer(a, T0, "451 4.7.1 ACME-7 go away for a while");
        cr_assert_eq(pop(T0 + 10 * S, out, 3), 0, "the other message went while suspended");
        cr_assert_eq(sched_next_due(s, T0 + 10 * S), T0 + 600 * S);
        cr_assert_eq(pop(T0 + 600 * S, out, 3), 1);
        cr_assert_eq(out[0], b);
}

Test(policy, without_the_action_the_same_class_holds_nothing)
{
        cr_assert_eq(load_rule(", \"class\": \"policy\""), 1, "%s", err);
        cr_assert_eq(sched_new(cfg, c, NULL, 42, &s), 0);
        struct sched_item *a = add("mx:a.example", T0);
        add("mx:a.example", T0 + 10 * S);
        struct sched_item *out[3];
        cr_assert_eq(pop(T0, out, 3), 1);
        answer(a, T0, "451 4.7.1 ACME-7 go away for a while");
        cr_assert_eq(pop(T0 + 10 * S, out, 3), 1);
}

Test(policy, a_threshold_acts_on_the_nth_match_within_the_window_only)
{
        cr_assert_eq(load_rule(", \"class\": \"policy\", \"action\": {\"suspend_seconds\": 600}, "
                               "\"threshold\": {\"matches\": 2, \"within_seconds\": 60}"),
                     1, "%s", err);
        cr_assert_eq(sched_new(cfg, c, NULL, 42, &s), 0);
        struct sched_item *out[3];
        struct sched_item *a = add("mx:a.example", T0);
        cr_assert_eq(pop(T0, out, 3), 1);
        answer(a, T0, "451 ACME-7");
        /* a second match 100 s later is outside the 60 s window: still no action */
        struct sched_item *b = add("mx:a.example", T0 + 100 * S);
        cr_assert_eq(pop(T0 + 100 * S, out, 3), 1, "suspended after one match");
        answer(b, T0 + 100 * S, "451 ACME-7");
        /* the next one, 30 s later, is the second within 60 s: suspended */
        struct sched_item *c2 = add("mx:a.example", T0 + 130 * S);
        cr_assert_eq(pop(T0 + 130 * S, out, 3), 1);
        answer(c2, T0 + 130 * S, "451 ACME-7");
        add("mx:a.example", T0 + 140 * S);
        cr_assert_eq(pop(T0 + 140 * S, out, 3), 0, "not suspended after two matches in 30 s");
        cr_assert_eq(pop(T0 + 730 * S, out, 3), 1);
}

Test(policy, a_connection_cap_limits_attempts_in_flight_until_it_ends)
{
        cr_assert_eq(load_rule(", \"class\": \"mailbox_full\", \"action\": {\"max_connections\": "
                               "1, \"for_seconds\": 600}"),
                     1, "%s", err);
        cr_assert_eq(sched_new(cfg, c, NULL, 42, &s), 0);
        struct sched_item *out[4];
        struct sched_item *a = add("mx:a.example", T0);
        cr_assert_eq(pop(T0, out, 4), 1);
        answer(a, T0, "452 4.2.2 ACME-7 mailbox full");
        for (int i = 0; i < 3; i++)
                add("mx:a.example", T0 + 10 * S);
        cr_assert_eq(pop(T0 + 10 * S, out, 4), 1, "more than one connection under the cap");
        cr_assert_eq(pop(T0 + 11 * S, out, 4), 0);
        /* after the cap's time the destination's own concurrency (3) applies again */
        sched_remove(s, out[0]);
        cr_assert_eq(pop(T0 + 601 * S, out, 4), 2);
}

Test(policy, a_rate_cap_spaces_the_starts_of_attempts)
{
        cr_assert_eq(load_rule(", \"class\": \"mailbox_full\", \"action\": {\"max_per_minute\": 2, "
                               "\"for_seconds\": 600}"),
                     1, "%s", err);
        cr_assert_eq(sched_new(cfg, c, NULL, 42, &s), 0);
        struct sched_item *out[4];
        struct sched_item *a = add("mx:a.example", T0);
        cr_assert_eq(pop(T0, out, 4), 1);
        answer(a, T0, "452 4.2.2 ACME-7 mailbox full");
        for (int i = 0; i < 3; i++)
                add("mx:a.example", T0 + 10 * S);
        cr_assert_eq(pop(T0 + 10 * S, out, 4), 1, "two starts at once under 2 per minute");
        cr_assert_eq(sched_next_due(s, T0 + 10 * S), T0 + 40 * S, "next start 30 s later");
        cr_assert_eq(pop(T0 + 39 * S, out, 4), 0);
        cr_assert_eq(pop(T0 + 40 * S, out, 4), 1);
        struct sched_stats st;
        sched_get_stats(s, &st);
        cr_assert_eq(st.suspended, 0, "pacing is not a suspension");
        cr_assert_eq(pop(T0 + 70 * S, out, 4), 1);
}
