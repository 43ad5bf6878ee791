/* tests/bounce/parse.c — a generated DSN read back by parse_dsn.py. */
#include "tests/bounce/parse.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

json_t *dsn_parse_report(const struct dsn_report *rep)
{
        char path[] = "/tmp/tarry-dsn-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, rep->message, rep->len), (ssize_t)rep->len);
        close(fd);
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "python3 '%s/parse_dsn.py' '%s'", BOUNCE_TEST_DIR, path);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        json_error_t err;
        json_t *j = json_loadf(p, 0, &err);
        int status = pclose(p);
        unlink(path);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "parse_dsn.py failed");
        cr_assert_not_null(j, "parse_dsn.py output: %s", err.text);

        json_t *raw = json_object_get(j, "raw");
        cr_assert_eq(json_array_size(json_object_get(j, "defects")), 0, "MIME defects: %s",
                     json_dumps(json_object_get(j, "defects"), 0));
        cr_assert_leq(json_integer_value(json_object_get(raw, "max_line")), 998);
        cr_assert_eq(json_integer_value(json_object_get(raw, "bare_lf")), 0);
        cr_assert_eq(json_integer_value(json_object_get(raw, "bare_cr")), 0);
        cr_assert_eq(json_integer_value(json_object_get(raw, "nul")), 0);
        cr_assert(json_is_true(json_object_get(raw, "ends_with_crlf")));
        cr_assert_str_eq(json_string_value(json_object_get(j, "content_type")), "multipart/report");
        cr_assert_str_eq(
            json_string_value(json_object_get(json_object_get(j, "params"), "report-type")),
            "delivery-status");
        return j;
}
