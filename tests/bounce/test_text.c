/* tests/bounce/test_text.c — the text helpers behind every DSN: sanitising,
 * folding, wrapping, quoted-printable, line ends, dates, xtext. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounce/text.h"

static size_t longest_line(const char *s, size_t len)
{
        size_t best = 0, cur = 0;
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '\r' && i + 1 < len && s[i + 1] == '\n') {
                        best = cur > best ? cur : best;
                        cur = 0;
                        i++;
                } else
                        cur++;
        }
        return cur > best ? cur : best;
}

/* RFC 5322 unfolding: drop each CRLF that is followed by whitespace. */
static char *unfold(const char *s)
{
        char *out = strdup(s), *o = out;
        for (; *s; s++) {
                if (s[0] == '\r' && s[1] == '\n' && (s[2] == ' ' || s[2] == '\t')) {
                        s++;
                        continue;
                }
                *o++ = *s;
        }
        *o = '\0';
        return out;
}

Test(text, clean_ascii_flattens_line_breaks_and_replaces_8bit)
{
        char *s = text_clean_ascii("  451-first\r\n451 second\t\x01 caf\xc3\xa9  ", 100);
        cr_assert_str_eq(s, "451-first 451 second caf??");
        free(s);
}

Test(text, clean_utf8_keeps_valid_characters_and_replaces_broken_ones)
{
        char *s = text_clean_utf8("caf\xc3\xa9 \xff \xe2\x82 \xed\xa0\x80 \xc0\xaf ok", 100);
        cr_assert_str_eq(s, "caf\xc3\xa9 \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd "
                            "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd ok");
        free(s);
}

Test(text, clean_cuts_long_text_with_an_ellipsis_on_a_character_boundary)
{
        char in[64];
        memset(in, 0, sizeof in);
        for (int i = 0; i < 20; i++)
                memcpy(in + 2 * i, "\xc3\xa9", 2);
        char *s = text_clean_utf8(in, 10);
        cr_assert_str_eq(s, "\xc3\xa9\xc3\xa9\xc3\xa9...");
        free(s);
        s = text_clean_ascii("abcdefghijklmnop", 10);
        cr_assert_str_eq(s, "abcdefg...");
        free(s);
}

Test(text, null_text_cleans_to_empty)
{
        char *s = text_clean_ascii(NULL, 10);
        cr_assert_str_eq(s, "");
        free(s);
}

Test(text, header_is_folded_under_78_columns_and_unfolds_to_the_same_value)
{
        const char *v = "smtp; 550-5.7.1 [192.0.2.1] Our system has detected that this message "
                        "is likely unsolicited mail. To reduce the amount of spam sent to Gmail, "
                        "this message has been blocked.";
        struct buf b = {0};
        text_header(&b, "Diagnostic-Code", v);
        cr_assert_eq(b.err, 0);
        cr_assert_leq(longest_line(b.p, b.len), 78);
        char *u = unfold(b.p);
        cr_assert_eq(strncmp(u, "Diagnostic-Code: ", 17), 0);
        cr_assert_eq(strncmp(u + 17, v, strlen(v)), 0, "%s", u);
        cr_assert_str_eq(u + 17 + strlen(v), "\r\n");
        free(u);
        buf_done(&b);
}

Test(text, long_word_keeps_a_line_of_its_own_and_a_giant_one_is_split_under_998)
{
        char url[200], giant[3001];
        snprintf(url, sizeof url, "see https://example.com/%0150d end", 0);
        struct buf b = {0};
        text_header(&b, "X", url);
        char *u = unfold(b.p);
        cr_assert_eq(strncmp(u, "X: ", 3), 0);
        cr_assert_eq(strncmp(u + 3, url, strlen(url)), 0, "a URL must survive whole: %s", u);
        free(u);
        buf_done(&b);

        memset(giant, 'A', 3000);
        giant[3000] = '\0';
        text_header(&b, "X", giant);
        cr_assert_leq(longest_line(b.p, b.len), 998);
        buf_done(&b);
}

Test(text, wrap_keeps_lines_short_and_indents_continuations)
{
        struct buf b = {0};
        text_wrap(&b, "    ", "one two three four five six seven eight nine ten", 20);
        cr_assert_str_eq(b.p, "    one two three\r\n    four five six\r\n    seven eight nine\r\n"
                              "    ten\r\n");
        buf_done(&b);
}

Test(text, quoted_printable_encodes_8bit_equals_and_trailing_space)
{
        struct buf b = {0};
        static const char in[] = "caf\xc3\xa9 = x \r\nplain\r\n";
        text_qp(&b, in, sizeof in - 1);
        cr_assert_str_eq(b.p, "caf=C3=A9 =3D x=20\r\nplain\r\n");
        buf_done(&b);
}

Test(text, quoted_printable_soft_breaks_long_lines_at_76)
{
        char line[300];
        memset(line, 'x', 250);
        memcpy(line + 250, "\xc3\xa9\r\n", 4);
        struct buf b = {0};
        text_qp(&b, line, 254);
        cr_assert_leq(longest_line(b.p, b.len), 76);
        /* remove soft breaks: the encoded line comes back */
        char *joined = calloc(1, b.len + 1), *o = joined;
        for (size_t i = 0; i < b.len; i++) {
                if (b.p[i] == '=' && b.p[i + 1] == '\r') {
                        i += 2;
                        continue;
                }
                *o++ = b.p[i];
        }
        cr_assert_eq(strlen(joined), 250 + 6 + 2);
        cr_assert_str_eq(joined + 250, "=C3=A9\r\n");
        free(joined);
        buf_done(&b);
}

Test(text, line_ends_become_crlf_and_nul_bytes_are_dropped)
{
        static const char in[] = "a\nb\r\nc\rd\0e";
        struct buf b = {0};
        text_crlf(&b, in, sizeof in - 1);
        cr_assert_str_eq(b.p, "a\r\nb\r\nc\r\nde\r\n");
        buf_done(&b);
}

Test(text, date_is_rfc5322_in_the_local_zone)
{
        char d[40];
        setenv("TZ", "UTC", 1);
        tzset();
        text_date(1700000000LL * 1000000, d);
        cr_assert_str_eq(d, "Tue, 14 Nov 2023 22:13:20 +0000");
        setenv("TZ", "CET-1", 1); /* POSIX form: no tzdata needed */
        tzset();
        text_date(1700000000LL * 1000000, d);
        cr_assert_str_eq(d, "Tue, 14 Nov 2023 23:13:20 +0100");
}

Test(text, xtext_is_decoded)
{
        char *s = text_xtext_decode("a+2Bb+3Dc+zz+4");
        cr_assert_str_eq(s, "a+b=c+zz+4");
        free(s);
}
