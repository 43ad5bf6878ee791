/* tests/common/test_address.c — addr_check, the barrier before every SMTP command.
 * Includes the regressions the fuzzers found (tests/fuzz/corpus/address/). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "common/address.h"

static const char *refused(const char *addr)
{
        const char *why = NULL;
        return addr_check(addr, &why) == -EINVAL ? why : NULL;
}

Test(address, plain_quoted_and_utf8_mailboxes_pass)
{
        cr_assert_eq(addr_check("user@example.com", NULL), 0);
        cr_assert_eq(addr_check("\"john smith\"@example.com", NULL), 0);
        cr_assert_eq(addr_check("\"a\\\"b\"@example.com", NULL), 0);
        cr_assert_eq(addr_check("j\xc3\xb6rg@b\xc3\xbc"
                                "cher.example",
                                NULL),
                     0);
        cr_assert_eq(addr_check("postmaster", NULL), 0);
}

Test(address, cr_or_lf_is_refused_even_escaped_inside_quotes)
{
        /* found by fuzz_address: "\<LF>" inside quotes was skipped unchecked, so
         * `sendmail -f` could smuggle a second SMTP command into MAIL FROM */
        cr_assert_str_eq(refused("\"a\\\nRCPT TO:evil@example.net\"@example.com"),
                         "contains CR or LF");
        cr_assert_str_eq(refused("\"a\\\r\"@example.com"), "contains CR or LF");
        cr_assert_str_eq(refused("\"a\nb\"@example.com"), "contains CR or LF");
}

Test(address, escaped_controls_and_angle_brackets_are_refused)
{
        cr_assert_str_eq(refused("\"a\\\x01\"@example.com"), "contains a control character");
        cr_assert_str_eq(refused("\"a\\>\"@example.com"), "contains '<' or '>'");
        cr_assert_str_eq(refused("\"a\\"), "ends in a backslash");
}

Test(address, bytes_that_are_not_utf8_are_refused)
{
        /* found by fuzz_submit: a Latin-1 byte in a -t recipient passed the check,
         * then the envelope could not be written as JSON and sendmail failed late */
        cr_assert_str_eq(refused("j\xf6rg@example.com"), "contains bytes that are not UTF-8");
        cr_assert_str_eq(refused("a@\xc0\xaf.example"), "contains bytes that are not UTF-8");
        cr_assert_str_eq(refused("a@\xed\xa0\x80.example"), "contains bytes that are not UTF-8");
        cr_assert_str_eq(refused("a@b\xe2\x82"), "contains bytes that are not UTF-8");
}

Test(address, domain_is_after_the_last_unquoted_at)
{
        cr_assert_str_eq(addr_domain("\"a@b\"@example.com"), "example.com");
        cr_assert_null(addr_domain("postmaster"));
        cr_assert_str_eq(refused("user@"), "empty domain after '@'");
        cr_assert_str_eq(refused("a@b@c"), "more than one '@' outside quotes");
}
