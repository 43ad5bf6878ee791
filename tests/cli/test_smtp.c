/* tests/cli/test_smtp.c — sendmail -bs: SMTP sessions on stdin/stdout, and the command parser. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/smtp_parse.h"
#include "cli/smtp_server.h"
#include "queue/queue.h"
#include "run.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

static struct fixture fx;

static void setup(void)
{
        fixture_setup(&fx, "message_size_limit = 2k\n");
}

static void teardown(void)
{
        fixture_teardown(&fx);
}

TestSuite(smtp, .init = setup, .fini = teardown, .timeout = 30);

static struct run_result session(const char *input)
{
        return run(&(struct run_opts){.input = input},
                   (char *const[]){(char *)bin("sendmail"), "-C", fx.conf, "-bs", NULL});
}

/* Replace the 16-character queue ID after "queued as " with QUEUEID. */
static void mask_ids(char *s)
{
        for (char *p = s; (p = strstr(p, "queued as ")); p += 10)
                if (strlen(p + 10) >= 16)
                        memcpy(p + 10, "QUEUEID_________", 16);
}

Test(smtp, a_whole_session_gives_the_expected_transcript_and_queues_the_message)
{
        struct run_result r =
            session("EHLO client.example.org\r\n"
                    "MAIL FROM:<app@example.com> SIZE=100 RET=HDRS ENVID=job+2B1\r\n"
                    "RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE "
                    "ORCPT=rfc822;bob@example.org\r\n"
                    "RCPT TO:<carol>\r\n"
                    "DATA\r\n"
                    "Subject: hi\r\n"
                    "\r\n"
                    "..leading dot\r\n"
                    ".\r\n"
                    "QUIT\r\n");
        cr_assert_eq(r.status, 0, "%s", r.err);
        mask_ids(r.out);
        cr_assert_str_eq(r.out, "220 mail.example.com ESMTP tarry\r\n"
                                "250-mail.example.com\r\n"
                                "250-PIPELINING\r\n"
                                "250-SIZE 2048\r\n"
                                "250-8BITMIME\r\n"
                                "250-DSN\r\n"
                                "250 ENHANCEDSTATUSCODES\r\n"
                                "250 2.1.0 Ok\r\n"
                                "250 2.1.5 Ok\r\n"
                                "250 2.1.5 Ok\r\n"
                                "354 End data with <CR><LF>.<CR><LF>\r\n"
                                "250 2.0.0 Ok: queued as QUEUEID_________\r\n"
                                "221 2.0.0 Bye\r\n");
        char *text = spool_file(&fx, "incoming", "envelope");
        struct envelope *env = NULL;
        cr_assert_eq(envelope_from_json(text, strlen(text), &env, NULL), 0);
        cr_assert_str_eq(env->sender, "app@example.com");
        cr_assert_eq(env->ret, DSN_RET_HDRS);
        cr_assert_str_eq(env->envid, "job+2B1");
        cr_assert_eq(env->n_rcpt, 2);
        cr_assert_eq(env->rcpt[0].notify, NOTIFY_SUCCESS | NOTIFY_FAILURE);
        cr_assert_str_eq(env->rcpt[0].orcpt, "rfc822;bob@example.org");
        cr_assert_str_eq(env->rcpt[1].address, "carol@example.com");
        char *body = spool_file(&fx, "incoming", "body");
        cr_assert(strncmp(body, "Subject: hi\r\nFrom: app@example.com\r\nDate: ", 42) == 0, "%s",
                  body);
        cr_assert_not_null(strstr(body, "\r\n\r\n.leading dot\r\n"), "dot-unstuffed: %s", body);
        cr_assert_eq(env->size, strlen(body));
        free(body);
        free(text);
        envelope_free(env);
        run_free(&r);
}

Test(smtp, commands_out_of_order_and_unknown_ones_get_5xx)
{
        struct run_result r = session("DATA\r\n"
                                      "RCPT TO:<a@b.org>\r\n"
                                      "MAIL FROM:<a@b.org>\r\n"
                                      "MAIL FROM:<a@b.org>\r\n"
                                      "DATA\r\n"
                                      "FOO bar\r\n"
                                      "MAIL FROM:a@b.org\r\n"
                                      "HELO\r\n"
                                      "VRFY root\r\n"
                                      "RSET\r\n"
                                      "NOOP\r\n"
                                      "QUIT\r\n");
        cr_assert_str_eq(r.out, "220 mail.example.com ESMTP tarry\r\n"
                                "503 5.5.1 Error: need RCPT command\r\n"
                                "503 5.5.1 Error: need MAIL command\r\n"
                                "250 2.1.0 Ok\r\n"
                                "503 5.5.1 Error: nested MAIL command\r\n"
                                "554 5.5.1 Error: no valid recipients\r\n"
                                "500 5.5.2 Error: command not recognized\r\n"
                                "503 5.5.1 Error: nested MAIL command\r\n"
                                "501 5.5.4 Syntax: HELO hostname\r\n"
                                "502 5.5.1 VRFY command is disabled\r\n"
                                "250 2.0.0 Ok\r\n"
                                "250 2.0.0 Ok\r\n"
                                "221 2.0.0 Bye\r\n");
        cr_assert_eq(spool_count(&fx, "incoming"), 0);
        run_free(&r);
}

Test(smtp, bad_addresses_and_parameters_are_refused_with_501_or_555)
{
        struct run_result r = session("MAIL FROM:<a b@example.org>\r\n"
                                      "MAIL FROM:<a@example.org> RET=MAYBE\r\n"
                                      "MAIL FROM:<a@example.org> FOO=1\r\n"
                                      "MAIL FROM:<> ENVID=a+zz\r\n"
                                      "MAIL FROM:<>\r\n"
                                      "RCPT TO:<x@y.org> NOTIFY=NEVER,DELAY\r\n"
                                      "RCPT TO:<x@y.org> ORCPT=bad\r\n"
                                      "RCPT TO:<x\"@y.org>\r\n"
                                      "RCPT TO:<>\r\n"
                                      "QUIT\r\n");
        cr_assert_str_eq(r.out, "220 mail.example.com ESMTP tarry\r\n"
                                "501 5.1.7 Bad sender address syntax\r\n"
                                "501 5.5.4 Bad RET parameter syntax\r\n"
                                "555 5.5.4 Unsupported option\r\n"
                                "501 5.5.4 Bad ENVID parameter syntax\r\n"
                                "250 2.1.0 Ok\r\n"
                                "501 5.5.4 Error: Bad NOTIFY parameter syntax\r\n"
                                "501 5.5.4 Error: Bad ORCPT parameter syntax\r\n"
                                "501 5.5.4 Syntax: RCPT TO:<address>\r\n"
                                "501 5.1.3 Bad recipient address syntax\r\n"
                                "221 2.0.0 Bye\r\n");
        run_free(&r);
}

Test(smtp, an_oversize_message_gets_552_and_nothing_is_queued)
{
        char *in = malloc(8000);
        strcpy(in, "MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n");
        size_t o = strlen(in);
        for (int i = 0; i < 50; i++, o += 72) {
                memset(in + o, 'x', 70);
                memcpy(in + o + 70, "\r\n", 2);
        }
        strcpy(in + o, ".\r\nMAIL FROM:<a@b.org> SIZE=999999\r\nQUIT\r\n");
        struct run_result r = session(in);
        cr_assert_str_eq(r.out, "220 mail.example.com ESMTP tarry\r\n"
                                "250 2.1.0 Ok\r\n"
                                "250 2.1.5 Ok\r\n"
                                "354 End data with <CR><LF>.<CR><LF>\r\n"
                                "552 5.3.4 Error: message is larger than message_size_limit "
                                "(2048 bytes)\r\n"
                                "552 5.3.4 Message size exceeds fixed limit\r\n"
                                "221 2.0.0 Bye\r\n");
        cr_assert_eq(spool_count(&fx, "incoming"), 0);
        cr_assert_eq(spool_count(&fx, "tmp"), 0);
        free(in);
        run_free(&r);
}

Test(smtp, end_of_input_in_the_middle_of_data_queues_nothing)
{
        struct run_result r = session("MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n"
                                      "Subject: cut\r\n\r\nhalf a mess");
        cr_assert_eq(r.status, 0);
        cr_assert_eq(spool_count(&fx, "incoming"), 0);
        cr_assert_eq(spool_count(&fx, "tmp"), 0);
        run_free(&r);
}

Test(smtp, two_transactions_in_one_session_queue_two_messages)
{
        struct run_result r =
            session("HELO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n"
                    "x\r\n.\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<e@d.org>\r\n"
                    "DATA\r\ny\r\n.\r\nQUIT\r\n");
        cr_assert_eq(r.status, 0, "%s", r.err);
        /* each transaction is acknowledged with its own queue ID */
        const char *q = "250 2.0.0 Ok: queued as ";
        char *first = strstr(r.out, q);
        cr_assert_not_null(first, "%s", r.out);
        char *second = strstr(first + strlen(q), q);
        cr_assert_not_null(second, "%s", r.out);
        cr_assert_neq(strncmp(first + strlen(q), second + strlen(q), 16), 0, "%s", r.out);
        cr_assert_eq(spool_count(&fx, "incoming"), 2);
        run_free(&r);
}

Test(smtp, an_overlong_command_line_is_refused_and_the_session_goes_on)
{
        char *in = malloc(6000);
        memset(in, 'A', 5000);
        strcpy(in + 5000, "\r\nNOOP\r\n");
        struct run_result r = session(in);
        cr_assert_str_eq(r.out, "220 mail.example.com ESMTP tarry\r\n"
                                "500 5.5.2 Error: line too long\r\n"
                                "250 2.0.0 Ok\r\n");
        free(in);
        run_free(&r);
}

Test(smtp, too_many_errors_end_the_session_with_421)
{
        char in[2000] = "";
        for (int i = 0; i < 25; i++)
                strcat(in, "BOGUS\r\n");
        struct run_result r = session(in);
        cr_assert_not_null(strstr(r.out, "421 4.7.0 mail.example.com Error: too many errors\r\n"));
        int lines = 0;
        for (char *p = r.out; *p; p++)
                lines += *p == '\n';
        cr_assert_eq(lines, 1 + 20 + 1, "greeting, 20 errors, 421");
        run_free(&r);
}

/* ---- SMTP smuggling (issue 14.3, the CVE-2023-51764 family) ---- */

struct smuggle {
        const char *name, *seq; /* what the client sends after "hello" */
        const char *kept;       /* what the queued body holds there instead */
};

static const struct smuggle smuggles[] = {
    {"<LF>.<LF>", "\n.\n", "hello\r\n.\r\nMAIL FROM:<ceo@example.com>\r\n"},
    {"<CR>.<CR>", "\r.\r", "hello\r.\rMAIL FROM:<ceo@example.com>\r\n"},
    {"<LF>.<CR><LF>", "\n.\r\n", "hello\r\n.\r\nMAIL FROM:<ceo@example.com>\r\n"},
    {"<CR><LF>.<LF>", "\r\n.\n", "hello\r\n\r\nMAIL FROM:<ceo@example.com>\r\n"},
    {"<CR>.<CR><LF>", "\r.\r\n", "hello\r.\r\nMAIL FROM:<ceo@example.com>\r\n"},
};

/* Only <CRLF>.<CRLF> ends DATA: each other "end" is message text, so the
 * second transaction behind it is part of the first message, never queued
 * on its own (a bare LF ends a stored line, a bare CR is data). */
Test(smtp, only_crlf_dot_crlf_ends_data_so_nothing_is_smuggled_behind_another_ending)
{
        for (size_t i = 0; i < sizeof(smuggles) / sizeof(smuggles[0]); i++) {
                const struct smuggle *m = &smuggles[i];
                char in[1024];
                snprintf(in, sizeof(in),
                         "MAIL FROM:<app@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
                         "Subject: s\r\n\r\nhello%sMAIL FROM:<ceo@example.com>\r\n"
                         "RCPT TO:<victim@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\n"
                         "x\r\n.\r\nQUIT\r\n",
                         m->seq);
                struct run_result r = session(in);
                mask_ids(r.out);
                cr_assert_str_eq(r.out,
                                 "220 mail.example.com ESMTP tarry\r\n"
                                 "250 2.1.0 Ok\r\n"
                                 "250 2.1.5 Ok\r\n"
                                 "354 End data with <CR><LF>.<CR><LF>\r\n"
                                 "250 2.0.0 Ok: queued as QUEUEID_________\r\n"
                                 "221 2.0.0 Bye\r\n",
                                 "%s: %s", m->name, r.out);
                cr_assert_eq(spool_count(&fx, "incoming"), 1, "%s", m->name);
                char *text = spool_file(&fx, "incoming", "envelope");
                struct envelope *env = NULL;
                cr_assert_eq(envelope_from_json(text, strlen(text), &env, NULL), 0);
                cr_assert_eq(env->n_rcpt, 1, "%s", m->name);
                cr_assert_str_eq(env->rcpt[0].address, "bob@example.org", "%s", m->name);
                char *body = spool_file(&fx, "incoming", "body");
                cr_assert_not_null(strstr(body, m->kept), "%s: %s", m->name, body);
                cr_assert_not_null(strstr(body, "\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
                                                "Subject: smuggled\r\n\r\nx\r\n"),
                                   "%s: %s", m->name, body);
                for (char *p = body; *p; p++)
                        if (*p == '\n')
                                cr_assert(p > body && p[-1] == '\r', "%s: a bare LF was stored",
                                          m->name);
                envelope_free(env);
                free(text);
                free(body);
                run_free(&r);
                fixture_teardown(&fx);
                fixture_setup(&fx, "message_size_limit = 2k\n");
        }
}

Test(smtp, a_bare_lf_line_still_ends_a_line_and_is_stored_as_crlf)
{
        struct run_result r = session("MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n"
                                      "Subject: lf\n\nline one\nline two\r\n.\r\nQUIT\r\n");
        mask_ids(r.out);
        cr_assert_not_null(strstr(r.out, "250 2.0.0 Ok: queued as QUEUEID_________\r\n221"), "%s",
                           r.out);
        char *body = spool_file(&fx, "incoming", "body");
        cr_assert(strncmp(body, "Subject: lf\r\n", 13) == 0, "%s", body);
        cr_assert_not_null(strstr(body, "\r\n\r\nline one\r\nline two\r\n"), "%s", body);
        free(body);
        run_free(&r);
}

/* ---- through the maildrop (an ordinary user's sendmail) ---- */

/* Run a -bs session on a maildrop handle of fx's spool, as sendmail does for
 * a user who cannot write the spool; the replies come back malloc'd. */
static char *maildrop_session(const char *extra_conf, const char *input)
{
        char text[1024], err[256];
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = mail.example.com\nmyorigin = "
                 "example.com\n%s",
                 fx.spool, extra_conf);
        struct tarry_config *cfg = NULL;
        cr_assert_eq(cfg_load_string("test.conf", text, &cfg, err, sizeof(err)), 0, "%s", err);
        struct queue *m = NULL;
        cr_assert_eq(queue_open_maildrop(fx.spool, &m), 0);
        int in = memfd_create("smtp-in", 0);
        cr_assert_eq(write(in, input, strlen(input)), (ssize_t)strlen(input));
        lseek(in, 0, SEEK_SET);
        char *out = NULL;
        size_t out_len = 0;
        FILE *f = open_memstream(&out, &out_len);
        cr_assert_eq(smtp_server_run(cfg, m, in, f), 0);
        fclose(f);
        close(in);
        queue_close(m);
        cfg_free(cfg);
        return out;
}

/* The drop file the session left in maildrop/, taken as tarryd takes it. */
static void take_the_drop(void)
{
        struct queue *q = NULL;
        cr_assert_eq(queue_open(fx.spool, 0, &q), 0);
        char path[400];
        snprintf(path, sizeof(path), "%s/maildrop", fx.spool);
        DIR *d = opendir(path);
        struct dirent *de;
        int taken = 0;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        struct maildrop_result res;
                        cr_assert_eq(
                            queue_maildrop_take(q, de->d_name, UINT64_MAX, NULL, NULL, &res), 0);
                        taken++;
                }
        closedir(d);
        queue_close(q);
        cr_assert_eq(taken, 1);
}

Test(smtp, through_the_maildrop_queued_as_names_the_queue_id_the_message_gets)
{
        char *out = maildrop_session("", "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                                         "DATA\r\nSubject: s\r\n\r\nx\r\n.\r\nQUIT\r\n");
        const char *p = strstr(out, "250 2.0.0 Ok: queued as ");
        cr_assert_not_null(p, "%s", out);
        char id[QUEUE_ID_LEN + 1];
        memcpy(id, p + strlen("250 2.0.0 Ok: queued as "), QUEUE_ID_LEN);
        id[QUEUE_ID_LEN] = '\0';
        cr_assert(queue_id_valid(id), "%s", out);
        take_the_drop();
        char path[500];
        snprintf(path, sizeof(path), "%s/incoming/%s", fx.spool, id);
        cr_assert_eq(access(path, F_OK), 0, "no message %s in incoming/", id);
        free(out);
}

Test(smtp, through_the_maildrop_a_session_may_queue_maildrop_message_limit_messages)
{
        const char *one = "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                          "DATA\r\nx\r\n.\r\n";
        char in[1024];
        snprintf(in, sizeof(in), "%s%s%sQUIT\r\n", one, one, one);
        char *out = maildrop_session("maildrop_message_limit = 2\n", in);
        int queued = 0;
        for (const char *p = out; (p = strstr(p, "queued as")); p++)
                queued++;
        cr_assert_eq(queued, 2, "%s", out);
        cr_assert_not_null(strstr(out, "452 4.3.1 Error: 2 messages in one session is the limit "
                                       "(maildrop_message_limit); start a new session\r\n"),
                           "%s", out);
        take_the_drop();
        cr_assert_eq(spool_count(&fx, "incoming"), 2);
        free(out);
}

/* ---- the command parser on its own ---- */

Test(smtp_parse, mail_from_with_parameters)
{
        struct smtp_cmd c;
        const char *why = NULL;
        const char *line = "mail from: <\"odd > name\"@example.org> size=10 BODY=8BITMIME";
        cr_assert_eq(smtp_parse_command(line, strlen(line), &c, &why), 0, "%s", why);
        cr_assert_eq(c.verb, SMTP_MAIL);
        cr_assert_str_eq(c.arg, "\"odd > name\"@example.org");
        cr_assert_eq(c.n_params, 2);
        cr_assert_str_eq(c.params[0].name, "SIZE");
        cr_assert_str_eq(c.params[0].value, "10");
        cr_assert_str_eq(c.params[1].value, "8BITMIME");
}

Test(smtp_parse, malformed_lines_are_syntax_errors_not_crashes)
{
        const char *bad[] = {
            "MAIL FROM:<a@b",     "MAIL TO:<a@b>", "RCPT TO:<a<b>",          "DATA now",
            "MAIL FROM:<a@b> =x", "EHLO",          "MAIL FROM:<a@b> A\x01=1"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct smtp_cmd c;
                const char *why = NULL;
                cr_assert_eq(smtp_parse_command(bad[i], strlen(bad[i]), &c, &why), -EINVAL,
                             "accepted: %s", bad[i]);
                cr_assert_not_null(why);
        }
        struct smtp_cmd c;
        cr_assert_eq(smtp_parse_command("XYZZY", 5, &c, NULL), 0);
        cr_assert_eq(c.verb, SMTP_UNKNOWN);
        char params[600] = "MAIL FROM:<a@b>";
        for (int i = 0; i < 17; i++)
                strcat(params, " X=1");
        const char *why = NULL;
        cr_assert_eq(smtp_parse_command(params, strlen(params), &c, &why), -EINVAL);
        cr_assert_str_eq(why, "too many parameters");
}
