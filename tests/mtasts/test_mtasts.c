/* tests/mtasts/test_mtasts.c — the TXT record, the policy file and MX
 * matching of RFC 8461, and the cache when nothing can be looked up. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mtasts/mtasts.h"

static int parse(const char *text, struct mtasts_policy *p, char *why)
{
        return mtasts_parse_policy(text, strlen(text), p, why, MTASTS_WHY_MAX);
}

Test(mtasts, txt_record_gives_its_id)
{
        char id[MTASTS_ID_MAX], why[MTASTS_WHY_MAX];
        cr_assert_eq(mtasts_parse_txt("v=STSv1; id=20260101T000000;", id, why, sizeof(why)), 0);
        cr_assert_str_eq(id, "20260101T000000");
        cr_assert_eq(mtasts_parse_txt("v=STSv1;id=abc", id, why, sizeof(why)), 0);
        cr_assert_str_eq(id, "abc");
        cr_assert_eq(mtasts_parse_txt("v=STSv1; ext=1; id=x1 ", id, why, sizeof(why)), 0);
        cr_assert_str_eq(id, "x1");
}

Test(mtasts, txt_records_that_are_not_sts_are_ignored_and_broken_ones_named)
{
        char id[MTASTS_ID_MAX], why[MTASTS_WHY_MAX] = "";
        cr_assert_eq(mtasts_parse_txt("v=spf1 -all", id, why, sizeof(why)), -ENOENT);
        cr_assert_eq(mtasts_parse_txt("v=STSv10; id=1", id, why, sizeof(why)), -ENOENT);
        cr_assert_eq(mtasts_parse_txt("v=STSv1;", id, why, sizeof(why)), -EINVAL);
        cr_assert_str_eq(why, "TXT record has no id");
        cr_assert_eq(mtasts_parse_txt("v=STSv1; id=a-b", id, why, sizeof(why)), -EINVAL);
        cr_assert_not_null(strstr(why, "\"a-b\""), "%s", why);
        cr_assert_eq(
            mtasts_parse_txt("v=STSv1; id=123456789012345678901234567890123", id, why, sizeof(why)),
            -EINVAL);
}

Test(mtasts, policy_with_lf_or_crlf_lines_parses)
{
        struct mtasts_policy p;
        char why[MTASTS_WHY_MAX] = "";
        cr_assert_eq(parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                           "mx: *.example.net\r\nmax_age: 604800\r\n",
                           &p, why),
                     0, "%s", why);
        cr_assert_eq(p.mode, MTASTS_MODE_ENFORCE);
        cr_assert_eq(p.n_mx, 2);
        cr_assert_eq(p.max_age_s, 604800);
        cr_assert_eq(
            parse("version: STSv1\nmode: testing\nmx: MX.Example.COM\nmax_age: 0\nx: y\n", &p, why),
            0, "%s", why);
        cr_assert_eq(p.mode, MTASTS_MODE_TESTING);
        cr_assert_str_eq(p.mx[0], "mx.example.com");
        cr_assert_eq(parse("version: STSv1\nmode: none\nmax_age: 86400", &p, why), 0, "%s", why);
        cr_assert_eq(p.mode, MTASTS_MODE_NONE);
}

Test(mtasts, broken_policies_are_refused_naming_the_line)
{
        struct mtasts_policy p;
        char why[MTASTS_WHY_MAX] = "";
        cr_assert_eq(parse("mode: enforce\nversion: STSv1\nmx: a.b\nmax_age: 1\n", &p, why),
                     -EINVAL);
        cr_assert_str_eq(why, "policy line 1: \"version: STSv1\" must come first");
        cr_assert_eq(parse("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", &p, why),
                     -EINVAL);
        cr_assert_str_eq(why, "policy line 2: mode \"strict\" is not enforce, testing or none");
        cr_assert_eq(parse("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n", &p, why),
                     -EINVAL);
        cr_assert_not_null(strstr(why, "policy line 4: max_age"), "%s", why);
        cr_assert_eq(parse("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", &p, why),
                     -EINVAL);
        cr_assert_eq(parse("version: STSv1\nmode: enforce\nmax_age: 5\n", &p, why), -EINVAL);
        cr_assert_str_eq(why, "policy in mode enforce lists no mx");
        cr_assert_eq(parse("version: STSv1\nmode: enforce\nmx: a.b\n", &p, why), -EINVAL);
        cr_assert_str_eq(why, "policy lacks max_age");
        cr_assert_eq(parse("version: STSv1\nmode: enforce\nmx: a/b\nmax_age: 5\n", &p, why),
                     -EINVAL);
        cr_assert_eq(parse("<html>hello</html>\n", &p, why), -EINVAL);
}

Test(mtasts, policy_sizes_are_bounded)
{
        struct mtasts_policy p;
        char why[MTASTS_WHY_MAX];
        size_t len = MTASTS_FETCH_MAX + 1;
        char *big = malloc(len);
        memset(big, '\n', len);
        cr_assert_eq(mtasts_parse_policy(big, len, &p, why, sizeof(why)), -EINVAL);
        free(big);
        char text[8192] = "version: STSv1\nmode: enforce\nmax_age: 5\n";
        for (int i = 0; i <= MTASTS_MX_MAX; i++)
                snprintf(text + strlen(text), sizeof(text) - strlen(text), "mx: m%d.example\n", i);
        cr_assert_eq(parse(text, &p, why), -EINVAL);
        cr_assert_not_null(strstr(why, "more than 32 mx lines"), "%s", why);
}

Test(mtasts, a_wildcard_matches_exactly_one_more_label)
{
        struct mtasts_policy p;
        char why[MTASTS_WHY_MAX];
        cr_assert_eq(parse("version: STSv1\nmode: enforce\nmx: mail.example.com\n"
                           "mx: *.example.net\nmax_age: 5\n",
                           &p, why),
                     0);
        cr_assert(mtasts_mx_matches(&p, "mail.example.com"));
        cr_assert(mtasts_mx_matches(&p, "MAIL.example.com."));
        cr_assert(mtasts_mx_matches(&p, "mx1.example.net"));
        cr_assert_not(mtasts_mx_matches(&p, "example.net"));
        cr_assert_not(mtasts_mx_matches(&p, "a.b.example.net"));
        cr_assert_not(mtasts_mx_matches(&p, "xmail.example.com"));
        cr_assert_not(mtasts_mx_matches(&p, "mail.example.com.evil.test"));
}

/* No DNS answers at all (a server that does not exist): without a cache,
 * no policy; with a valid cached one, that one, said in the note. */
Test(mtasts, an_unexpired_cached_policy_applies_when_dns_fails, .timeout = 30)
{
        char dir[] = "/tmp/tarry-mtasts-XXXXXX";
        cr_assert_not_null(mkdtemp(dir));
        char *servers[] = {"127.0.0.1:9", NULL}; /* discard: nothing answers */
        struct mtasts_options o = {.state_dir = dir,
                                   .dns_servers = servers,
                                   .n_dns_servers = 1,
                                   .port = 443,
                                   .timeout_ms = 400,
                                   .now_s = 1000000};
        struct mtasts_policy p;
        char note[MTASTS_WHY_MAX + 128];
        cr_assert_eq(mtasts_policy_get(&o, "example.test", &p, note, sizeof(note)), 0);

        char path[256];
        snprintf(path, sizeof(path), "%s/mta-sts", dir);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/mta-sts/example.test", dir);
        FILE *f = fopen(path, "w");
        fputs("{\"domain\":\"example.test\",\"id\":\"7\",\"fetched\":999000,\"expires\":1000500,"
              "\"policy\":\"version: STSv1\\nmode: enforce\\nmx: mx.example.test\\n"
              "max_age: 1500\\n\"}",
              f);
        fclose(f);
        cr_assert_eq(mtasts_policy_get(&o, "example.test", &p, note, sizeof(note)), 1);
        cr_assert_eq(p.mode, MTASTS_MODE_ENFORCE);
        cr_assert_str_eq(p.id, "7");
        cr_assert(p.cached);
        cr_assert_not_null(strstr(note, "the cached policy (id 7) applies"), "%s", note);

        o.now_s = 1000501; /* expired: as if there were none */
        cr_assert_eq(mtasts_policy_get(&o, "example.test", &p, note, sizeof(note)), 0);

        /* a symlink in place of the cache file is not followed */
        o.now_s = 1000000;
        char moved[300];
        snprintf(moved, sizeof(moved), "%s.real", path);
        cr_assert_eq(rename(path, moved), 0);
        cr_assert_eq(symlink(moved, path), 0);
        cr_assert_eq(mtasts_policy_get(&o, "example.test", &p, note, sizeof(note)), 0);
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        system(cmd);
}
