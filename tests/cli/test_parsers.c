/* tests/cli/test_parsers.c — the stdin parsers of sendmail on their own: address lists,
 * header field names and the line reader. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/headers.h"
#include "cli/linereader.h"
#include "cli/submit.h"

struct list {
        char out[2048];
        int n;
};

static int collect(const char *addr, size_t len, void *userdata)
{
        struct list *l = userdata;
        if (l->n++)
                strcat(l->out, "|");
        strncat(l->out, addr, len);
        return 0;
}

static const char *parse(const char *s)
{
        static struct list l;
        memset(&l, 0, sizeof(l));
        const char *why = NULL;
        int r = hdr_parse_addresses(s, strlen(s), collect, &l, &why);
        if (r < 0)
                return why;
        return l.out;
}

Test(addresses, display_names_quotes_comments_and_groups_give_the_bare_addresses)
{
        cr_assert_str_eq(parse(" Bob <bob@x.org>, carol@y.org"), "bob@x.org|carol@y.org");
        cr_assert_str_eq(parse("\"Doe, Jane\" <jane@x.org>"), "jane@x.org");
        cr_assert_str_eq(parse("dave@x.org (Dave, the boss)"), "dave@x.org");
        cr_assert_str_eq(parse("team: a@x.org, b@x.org;, c@x.org"), "a@x.org|b@x.org|c@x.org");
        cr_assert_str_eq(parse("undisclosed-recipients:;"), "");
        cr_assert_str_eq(parse("<@relay.example:route@x.org>"), "route@x.org");
        cr_assert_str_eq(parse("\"quoted local\"@x.org"), "\"quoted local\"@x.org");
        cr_assert_str_eq(parse("a@x.org,\r\n\tb@x.org"), "a@x.org|b@x.org");
        cr_assert_str_eq(parse("<>, ,a@x.org"), "a@x.org");
}

Test(addresses, malformed_lists_are_refused_with_a_reason)
{
        cr_assert_str_eq(parse("<a@x.org"), "unbalanced <> in an address");
        cr_assert_str_eq(parse("a@x.org>"), "unbalanced <> in an address");
        cr_assert_str_eq(parse("<a@x.org> <b@x.org>"), "unbalanced <> in an address");
        cr_assert_str_eq(parse("\"open@x.org"), "unbalanced quotes in an address");
        cr_assert_str_eq(parse("a@x.org (open"), "unbalanced parentheses in an address");
        cr_assert_str_eq(parse("a@x.org)"), "unbalanced parentheses in an address");
        cr_assert_str_eq(parse("a@x.org;"), "';' outside an address group");
}

Test(addresses, a_huge_address_is_refused_not_overflowed)
{
        static char big[10000];
        memset(big, 'a', sizeof(big) - 1);
        cr_assert_str_eq(parse(big), "an address is longer than 2048 characters");
        big[0] = '<';
        cr_assert_str_eq(parse(big), "unbalanced <> in an address");
}

Test(headers, field_names_are_recognised_case_insensitively)
{
        cr_assert_eq(hdr_field_name_len("Subject: x", 10), 7);
        cr_assert_eq(hdr_field_name_len("Not a header", 12), 0);
        cr_assert_eq(hdr_field_name_len(": empty", 7), 0);
        cr_assert(hdr_is("bcc: x@y", 8, "Bcc"));
        cr_assert_not(hdr_is("Bcc-Extra: x", 12, "Bcc"));
}

Test(headers, added_from_quotes_or_encodes_the_full_name)
{
        char buf[256];
        submit_format_from("a@x.org", NULL, buf, sizeof(buf));
        cr_assert_str_eq(buf, "a@x.org");
        submit_format_from("a@x.org", "Plain Name", buf, sizeof(buf));
        cr_assert_str_eq(buf, "Plain Name <a@x.org>");
        submit_format_from("a@x.org", "Say \"hi\", ok", buf, sizeof(buf));
        cr_assert_str_eq(buf, "\"Say \\\"hi\\\", ok\" <a@x.org>");
        submit_format_from("a@x.org", "Zoë", buf, sizeof(buf));
        cr_assert_str_eq(buf, "=?UTF-8?B?Wm/Dqw==?= <a@x.org>");
}

Test(headers, added_date_is_rfc5322)
{
        char buf[64];
        setenv("TZ", "UTC", 1);
        tzset();
        cr_assert_eq(submit_format_date(1606132800, buf, sizeof(buf)), 0);
        cr_assert_str_eq(buf, "Mon, 23 Nov 2020 12:00:00 +0000");
}

static struct line_reader lr;

static void feed(const char *text)
{
        int p[2];
        cr_assert_eq(pipe(p), 0);
        cr_assert_eq(write(p[1], text, strlen(text)), (ssize_t)strlen(text));
        close(p[1]);
        lr_init(&lr, p[0]);
}

Test(linereader, lf_and_crlf_end_lines_and_say_which_one_it_was)
{
        feed("a\nb\r\nc");
        const char *want[] = {"a", "b", "c"};
        bool crlf[] = {false, true, false};
        for (int i = 0; i < 3; i++) {
                const char *p;
                size_t n;
                bool eol;
                cr_assert_eq(lr_next(&lr, 0, &p, &n, &eol), 1);
                cr_assert_eq(n, 1);
                cr_assert_eq(p[0], want[i][0]);
                cr_assert(eol);
                cr_assert_eq(lr.crlf, crlf[i], "line %d", i);
        }
        const char *p;
        size_t n;
        bool eol;
        cr_assert_eq(lr_next(&lr, 0, &p, &n, &eol), 0);
}

Test(linereader, a_bare_cr_is_data_and_never_ends_a_line)
{
        /* the header injection of issue 14: one field, not two */
        feed("Subject: hello\rBcc: injected@victim.test\r\nx\r.\r\n");
        const char *p;
        size_t n;
        bool eol;
        cr_assert_eq(lr_next(&lr, 0, &p, &n, &eol), 1);
        cr_assert(eol && lr.crlf);
        cr_assert_eq(n, 40);
        cr_assert(memcmp(p, "Subject: hello\rBcc: injected@victim.test", 40) == 0);
        cr_assert_eq(lr_next(&lr, 0, &p, &n, &eol), 1);
        cr_assert(eol && n == 3 && memcmp(p, "x\r.", 3) == 0);
        cr_assert_eq(lr_next(&lr, 0, &p, &n, &eol), 0);
}

Test(linereader, a_crlf_split_across_pieces_is_still_one_terminator)
{
        feed("abc\r\nab\rX\n");
        const char *p;
        size_t n;
        bool eol;
        cr_assert_eq(lr_next(&lr, 2, &p, &n, &eol), 1);
        cr_assert(n == 2 && !eol && memcmp(p, "ab", 2) == 0);
        cr_assert_eq(lr_next(&lr, 2, &p, &n, &eol), 1);
        cr_assert(n == 1 && eol && lr.crlf && p[0] == 'c');
        cr_assert_eq(lr_next(&lr, 3, &p, &n, &eol), 1);
        cr_assert(n == 3 && !eol && memcmp(p, "ab\r", 3) == 0);
        cr_assert_eq(lr_next(&lr, 3, &p, &n, &eol), 1);
        cr_assert(n == 1 && eol && !lr.crlf && p[0] == 'X');
}

Test(linereader, long_lines_come_in_pieces_of_the_given_size)
{
        feed("abcdefghij\n\n");
        const char *p;
        size_t n;
        bool eol;
        cr_assert_eq(lr_next(&lr, 4, &p, &n, &eol), 1);
        cr_assert(n == 4 && !eol && memcmp(p, "abcd", 4) == 0);
        cr_assert_eq(lr_next(&lr, 4, &p, &n, &eol), 1);
        cr_assert(n == 4 && !eol && memcmp(p, "efgh", 4) == 0);
        cr_assert_eq(lr_next(&lr, 4, &p, &n, &eol), 1);
        cr_assert(n == 2 && eol && memcmp(p, "ij", 2) == 0);
        cr_assert_eq(lr_next(&lr, 4, &p, &n, &eol), 1);
        cr_assert(n == 0 && eol, "an empty line");
        cr_assert_eq(lr_next(&lr, 4, &p, &n, &eol), 0);
}
