/* tests/smtpc/test_mime7.c — 8-bit messages made 7-bit for servers without
 * 8BITMIME; every output is also read back by Python's email parser, which
 * must find the original bytes of each part again. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "smtpc/mime7.h"

static char *convert(const char *in, const char **why)
{
        char *out = NULL;
        size_t len = 0;
        int r = mime7_convert(in, strlen(in), &out, &len, why);
        if (r < 0)
                return NULL;
        cr_assert_eq(strlen(out), len, "a NUL in the output");
        for (size_t i = 0; i < len; i++)
                cr_assert_lt((unsigned char)out[i], 0x80, "8-bit byte left at %zu:\n%s", i, out);
        return out;
}

/* Python decodes part n (walk order, leaves only) of text: its bytes, hex. */
static void expect_part_bytes(const char *text, int n, const char *want)
{
        char path[] = "/tmp/tarry-mime7-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        char cmd[1024];
        snprintf(cmd, sizeof(cmd),
                 "python3 -c 'import email,sys,email.policy\n"
                 "m=email.message_from_bytes(open(sys.argv[1],\"rb\").read(),"
                 "policy=email.policy.compat32)\n"
                 "assert not m.defects, m.defects\n"
                 "p=[x for x in m.walk() if not x.is_multipart() and "
                 "x.get_content_type()!=\"message/rfc822\"][%d]\n"
                 "sys.stdout.write(p.get_payload(decode=True).hex())' '%s'",
                 n, path);
        FILE *p = popen(cmd, "r");
        char got[4096] = "";
        size_t k = fread(got, 1, sizeof(got) - 1, p);
        got[k] = '\0';
        int st = pclose(p);
        unlink(path);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "python failed on:\n%s", text);
        char hex[4096];
        for (size_t i = 0; want[i]; i++)
                snprintf(hex + 2 * i, 3, "%02x", (unsigned char)want[i]);
        cr_assert_str_eq(got, hex, "part %d of:\n%s", n, text);
}

Test(mime7, a_plain_8bit_message_becomes_quoted_printable_utf8_text)
{
        const char *in = "From: a@x.test\r\nSubject: hi\r\n\r\ngr\xc3\xbc\xc3\x9f dich\r\n= ok\r\n";
        char *out = convert(in, NULL);
        cr_assert_not_null(out);
        cr_assert_str_eq(out, "From: a@x.test\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
                              "Content-Type: text/plain; charset=utf-8\r\n"
                              "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                              "gr=C3=BC=C3=9F dich\r\n=3D ok\r\n");
        expect_part_bytes(out, 0, "gr\xc3\xbc\xc3\x9f dich\r\n= ok\r\n");
        free(out);
}

Test(mime7, only_the_8bit_part_of_a_multipart_is_reencoded)
{
        const char *in = "MIME-Version: 1.0\r\n"
                         "Content-Type: multipart/alternative; boundary=\"b1\"\r\n"
                         "Content-Transfer-Encoding: 8bit\r\n\r\n"
                         "preamble\r\n--b1\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Transfer-Encoding: 8bit\r\n\r\n"
                         "caf\xc3\xa9\r\n"
                         "--b1\r\nContent-Type: text/html\r\n\r\n<p>cafe</p>\r\n"
                         "--b1--\r\nepilogue\r\n";
        char *out = convert(in, NULL);
        cr_assert_not_null(out);
        cr_assert(strstr(out, "Content-Transfer-Encoding: 7bit\r\n"), "%s", out);
        cr_assert(strstr(out, "Content-Type: text/plain; charset=utf-8\r\n"
                              "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
                              "--b1\r\n"),
                  "%s", out);
        cr_assert(strstr(out, "--b1\r\nContent-Type: text/html\r\n\r\n<p>cafe</p>\r\n--b1--\r\n"
                              "epilogue\r\n"),
                  "%s", out);
        expect_part_bytes(out, 0, "caf\xc3\xa9");
        expect_part_bytes(out, 1, "<p>cafe</p>");
        free(out);
}

Test(mime7, a_long_8bit_line_gets_soft_breaks_within_76_columns)
{
        char in[2048] = "Subject: long\r\n\r\n";
        size_t n = strlen(in);
        for (int i = 0; i < 300; i++)
                in[n++] = i % 7 == 0 ? '\xe9' : 'a';
        memcpy(in + n, "\r\n", 3);
        char *out = convert(in, NULL);
        cr_assert_not_null(out);
        for (const char *l = out; *l;) {
                size_t len = strcspn(l, "\r");
                cr_assert_leq(len, 76, "line of %zu: %.*s", len, (int)len, l);
                l += len + (l[len] ? 2 : 0);
        }
        cr_assert(strstr(out, "charset=unknown-8bit"), "Latin-1 is not UTF-8: %s", out);
        free(out);
}

Test(mime7, an_attached_message_is_converted_inside)
{
        const char *in = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n"
                         "--X\r\nContent-Type: message/rfc822\r\n\r\n"
                         "Subject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                         "\xc3\xa9t\xc3\xa9\r\n--X--\r\n";
        char *out = convert(in, NULL);
        cr_assert_not_null(out);
        cr_assert(strstr(out, "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit"),
                  "%s", out);
        cr_assert(strstr(out, "=C3=A9t=C3=A9\r\n--X--"), "%s", out);
        free(out);
}

Test(mime7, what_cannot_be_converted_is_refused_with_the_reason)
{
        static const struct {
                const char *msg, *why;
        } cases[] = {
            {"Subject: gr\xc3\xbc\xc3\x9f\r\n\r\nhi\r\n", "8-bit header"},
            {"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\xc3\xa9\r\n",
             "base64"},
            {"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\n\xc3\xa9\r\n",
             "binary"},
            {"Content-Type: message/global\r\n\r\nSubject: x\r\n\r\n\xc3\xa9\r\n",
             "message/global"},
            {"Content-Type: multipart/mixed\r\n\r\n\xc3\xa9\r\n", "boundary"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const char *why = NULL;
                char *out = NULL;
                size_t len;
                cr_assert_eq(mime7_convert(cases[i].msg, strlen(cases[i].msg), &out, &len, &why),
                             -EMEDIUMTYPE, "case %zu", i);
                cr_assert(why && strstr(why, cases[i].why), "case %zu: %s", i, why);
        }
}

Test(mime7, nesting_beyond_the_limit_is_refused_not_recursed)
{
        char *in = malloc(64 * 1024);
        size_t n = 0;
        for (int i = 0; i < MIME7_DEPTH_MAX + 5; i++)
                n += (size_t)sprintf(
                    in + n, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
        n += (size_t)sprintf(in + n, "\r\n\xc3\xa9\r\n");
        const char *why = NULL;
        char *out = NULL;
        size_t len;
        cr_assert_eq(mime7_convert(in, n, &out, &len, &why), -EMEDIUMTYPE);
        cr_assert(why && (strstr(why, "deep") || strstr(why, "boundary")), "%s", why);
        free(in);
}
