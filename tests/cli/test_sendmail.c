/* tests/cli/test_sendmail.c — the real sendmail binary: flags, headers, bad input, exit codes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "queue/queue.h"
#include "run.h"

static struct fixture fx;

static void setup(void)
{
        fixture_setup(&fx, "message_size_limit = 20k\n");
}

static void teardown(void)
{
        fixture_teardown(&fx);
}

TestSuite(sendmail, .init = setup, .fini = teardown, .timeout = 30);

/* sendmail -C conf ARGS... with input; returns the result. */
#define SENDMAIL(stdin_text, ...)                                                                  \
        run(&(struct run_opts){.input = (stdin_text)},                                             \
            (char *const[]){(char *)bin("sendmail"), "-C", fx.conf, __VA_ARGS__, NULL})

static struct envelope *queued_envelope(void)
{
        char *text = spool_file(&fx, "incoming", "envelope");
        cr_assert_not_null(text, "exactly one message is queued");
        struct envelope *env = NULL;
        const char *why = NULL;
        cr_assert_eq(envelope_from_json(text, strlen(text), &env, &why), 0, "%s", why);
        free(text);
        return env;
}

static char *queued_body(void)
{
        char *b = spool_file(&fx, "incoming", "body");
        cr_assert_not_null(b, "exactly one message is queued");
        return b;
}

static void expect_nothing_queued(void)
{
        cr_assert_eq(spool_count(&fx, "incoming"), 0, "nothing in incoming/");
        cr_assert_eq(spool_count(&fx, "tmp"), 0, "nothing left in tmp/");
}

static void expect_status(struct run_result *r, int status, const char *in_stderr)
{
        cr_assert_eq(r->status, status, "exit %d, expected %d; stderr: %s", r->status, status,
                     r->err);
        if (in_stderr)
                cr_assert_not_null(strstr(r->err, in_stderr), "stderr lacks '%s': %s", in_stderr,
                                   r->err);
}

Test(sendmail, a_message_is_queued_with_crlf_and_missing_headers_added)
{
        struct run_result r =
            SENDMAIL("Subject: hello\nX-A: 1\r\nX-B: 2\r\n\nbody line\nlast", "bob@example.org");
        expect_status(&r, 0, NULL);
        cr_assert_str_empty(r.err);
        char *body = queued_body();
        cr_assert(strncmp(body, "Subject: hello\r\nX-A: 1\r\nX-B: 2\r\nFrom: ", 37) == 0, "%s",
                  body);
        cr_assert_not_null(strstr(body, "\r\nDate: "));
        cr_assert_not_null(strstr(body, "\r\nMessage-ID: <"));
        cr_assert_not_null(strstr(body, "@mail.example.com>\r\n\r\nbody line\r\nlast\r\n"), "%s",
                           body);
        for (char *p = body; *p; p++)
                if (*p == '\n')
                        cr_assert(p > body && p[-1] == '\r', "every LF is part of a CRLF");
        struct envelope *env = queued_envelope();
        cr_assert_eq(env->n_rcpt, 1);
        cr_assert_str_eq(env->rcpt[0].address, "bob@example.org");
        cr_assert_eq(env->size, strlen(body));
        cr_assert_eq(env->uid, getuid());
        cr_assert_not_null(env->user);
        envelope_free(env);
        free(body);
        run_free(&r);
}

Test(sendmail, headers_already_present_are_kept_and_not_duplicated)
{
        const char *msg = "From: App <app@example.com>\nDate: Mon, 23 Nov 2020 12:00:00 +0000\n"
                          "Message-ID: <fixed@example.com>\n\nhi\n";
        struct run_result r = SENDMAIL(msg, "bob@example.org");
        expect_status(&r, 0, NULL);
        char *body = queued_body();
        cr_assert_str_eq(body, "From: App <app@example.com>\r\nDate: Mon, 23 Nov 2020 12:00:00 "
                               "+0000\r\nMessage-ID: <fixed@example.com>\r\n\r\nhi\r\n");
        free(body);
        run_free(&r);
}

Test(sendmail, F_sets_the_full_name_of_the_added_from_header)
{
        struct run_result r =
            SENDMAIL("Subject: x\n\nhi\n", "-F", "Cron Daemon", "bob@example.org");
        expect_status(&r, 0, NULL);
        char *body = queued_body();
        struct envelope *env = queued_envelope();
        char want[256];
        snprintf(want, sizeof(want), "\r\nFrom: Cron Daemon <%s@example.com>\r\n", env->user);
        cr_assert_not_null(strstr(body, want), "%s", body);
        envelope_free(env);
        free(body);
        run_free(&r);
}

Test(sendmail, F_with_specials_or_non_ascii_is_quoted_or_encoded)
{
        struct run_result r =
            SENDMAIL("\nhi\n", "-F", "Doe, John", "-f", "j@example.com", "b@x.org");
        expect_status(&r, 0, NULL);
        char *body = queued_body();
        cr_assert_not_null(strstr(body, "From: \"Doe, John\" <j@example.com>\r\n"), "%s", body);
        free(body);
        run_free(&r);
        fixture_teardown(&fx); /* a fresh spool for the second submission */
        setup();
        r = SENDMAIL("\nhi\n", "-F", "Jürgen", "-f", "j@example.com", "b@x.org");
        expect_status(&r, 0, NULL);
        body = queued_body();
        cr_assert_not_null(strstr(body, "From: =?UTF-8?B?SsO8cmdlbg==?= <j@example.com>\r\n"), "%s",
                           body);
        free(body);
        run_free(&r);
}

Test(sendmail, F_with_a_newline_is_refused_as_usage_error)
{
        struct run_result r = SENDMAIL("hi\n", "-F", "Evil\nBcc: x@y", "bob@example.org");
        expect_status(&r, EX_USAGE, "-F full name");
        expect_nothing_queued();
        run_free(&r);
}

Test(sendmail, f_sets_the_envelope_sender_and_bare_names_get_myorigin)
{
        struct run_result r = SENDMAIL("hi\n", "-f", "bounces", "bob", "Carol <carol@x.org>");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        cr_assert_str_eq(env->sender, "bounces@example.com");
        cr_assert_eq(env->n_rcpt, 2);
        cr_assert_str_eq(env->rcpt[0].address, "bob@example.com");
        cr_assert_str_eq(env->rcpt[1].address, "carol@x.org");
        char *body = queued_body();
        cr_assert_not_null(strstr(body, "From: bounces@example.com\r\n"), "%s", body);
        free(body);
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, r_is_the_old_spelling_of_f_and_angle_brackets_give_the_null_sender)
{
        struct run_result r = SENDMAIL("hi\n", "-r", "<>", "bob@example.org");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        cr_assert_str_eq(env->sender, "");
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, without_f_the_sender_is_the_user_at_myorigin)
{
        struct run_result r = SENDMAIL("hi\n", "bob@example.org");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        char want[300];
        snprintf(want, sizeof(want), "%s@example.com", env->user);
        cr_assert_str_eq(env->sender, want);
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, a_dot_line_ends_the_message_unless_i_is_given)
{
        struct run_result r = SENDMAIL("Subject: x\n\nbefore\n.\nafter\n", "bob@example.org");
        expect_status(&r, 0, NULL);
        char *body = queued_body();
        cr_assert_not_null(strstr(body, "\r\n\r\nbefore\r\n"));
        cr_assert_null(strstr(body, "after"));
        free(body);
        run_free(&r);
}

Test(sendmail, with_i_or_oi_a_dot_line_is_part_of_the_message)
{
        const char *flags[] = {"-i", "-oi"};
        for (int i = 0; i < 2; i++) {
                struct run_result r = SENDMAIL("Subject: x\n\nbefore\n.\nafter\n", (char *)flags[i],
                                               "bob@example.org");
                expect_status(&r, 0, NULL);
                char *body = queued_body();
                cr_assert_not_null(strstr(body, "\r\n\r\nbefore\r\n.\r\nafter\r\n"), "%s: %s",
                                   flags[i], body);
                free(body);
                run_free(&r);
                fixture_teardown(&fx);
                setup();
        }
}

Test(sendmail, t_takes_recipients_from_to_cc_and_bcc_and_removes_bcc)
{
        const char *msg = "To: Bob Example <bob@example.org>, \"Doe, Jane\" <jane@example.org>\n"
                          "Cc: friends: carol@example.net,\n"
                          "\tdave@example.net; (a comment) erin@example.net\n"
                          "Bcc: hidden@example.com,\n  secret\n"
                          "Subject: t\n\nbody\n";
        struct run_result r = SENDMAIL(msg, "-t");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        const char *want[] = {"bob@example.org",   "jane@example.org", "carol@example.net",
                              "dave@example.net",  "erin@example.net", "hidden@example.com",
                              "secret@example.com"};
        cr_assert_eq(env->n_rcpt, 7);
        for (size_t i = 0; i < 7; i++)
                cr_assert_str_eq(env->rcpt[i].address, want[i]);
        char *body = queued_body();
        cr_assert_null(strstr(body, "Bcc"), "%s", body);
        cr_assert_null(strstr(body, "secret"), "%s", body);
        cr_assert_not_null(strstr(body, "Cc: friends: carol@example.net,\r\n\tdave@example.net;"));
        free(body);
        envelope_free(env);
        run_free(&r);
}

/* Issue 14.3: a bare CR does not end a header line, so it cannot start a
 * Bcc field that -t would read; the CR stays in the Subject, as in Postfix. */
Test(sendmail, a_bare_cr_in_a_header_does_not_start_a_field_that_t_reads)
{
        struct run_result r = SENDMAIL("To: bob@example.org\n"
                                       "Subject: hello\rBcc: injected@victim.test\n\nbody\n",
                                       "-t");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        cr_assert_eq(env->n_rcpt, 1);
        cr_assert_str_eq(env->rcpt[0].address, "bob@example.org");
        char *body = queued_body();
        cr_assert_not_null(strstr(body, "\r\nSubject: hello\rBcc: injected@victim.test\r\n"), "%s",
                           body);
        free(body);
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, t_adds_header_recipients_to_command_line_ones_once_each)
{
        struct run_result r =
            SENDMAIL("To: bob@example.org\n\nx\n", "-t", "bob@example.org", "al@example.org");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        cr_assert_eq(env->n_rcpt, 2);
        cr_assert_str_eq(env->rcpt[0].address, "bob@example.org");
        cr_assert_str_eq(env->rcpt[1].address, "al@example.org");
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, t_uses_resent_headers_when_present)
{
        struct run_result r = SENDMAIL(
            "To: old@example.org\nResent-To: new@example.org\nResent-Bcc: b@example.org\n\nx\n",
            "-t");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        cr_assert_eq(env->n_rcpt, 2);
        cr_assert_str_eq(env->rcpt[0].address, "new@example.org");
        cr_assert_str_eq(env->rcpt[1].address, "b@example.org");
        char *body = queued_body();
        cr_assert_null(strstr(body, "Resent-Bcc"));
        free(body);
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, bcc_never_leaves_even_without_t)
{
        struct run_result r = SENDMAIL("Bcc: x@example.org\nSubject: s\n\nx\n", "bob@example.org");
        expect_status(&r, 0, NULL);
        char *body = queued_body();
        cr_assert_null(strstr(body, "Bcc"));
        free(body);
        run_free(&r);
}

Test(sendmail, t_without_recipients_in_the_header_exits_64)
{
        struct run_result r = SENDMAIL("To: undisclosed-recipients:;\nSubject: s\n\nx\n", "-t");
        expect_status(&r, EX_USAGE, "No recipient addresses found in message header");
        expect_nothing_queued();
        run_free(&r);
}

Test(sendmail, no_recipients_at_all_exits_64)
{
        struct run_result r = SENDMAIL("x\n", "-i");
        expect_status(&r, EX_USAGE, "Recipient addresses must be specified");
        run_free(&r);
}

Test(sendmail, N_sets_notify_for_every_recipient)
{
        struct run_result r = SENDMAIL("x\n", "-N", "success,delay", "a@x.org", "b@x.org");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        for (size_t i = 0; i < env->n_rcpt; i++)
                cr_assert_eq(env->rcpt[i].notify, NOTIFY_SUCCESS | NOTIFY_DELAY);
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, N_never_asks_for_no_notification_and_bad_values_are_ignored_with_a_warning)
{
        struct run_result r = SENDMAIL("x\n", "-N", "never", "a@x.org");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        cr_assert_eq(env->rcpt[0].notify, NOTIFY_NEVER);
        envelope_free(env);
        run_free(&r);
        fixture_teardown(&fx);
        setup();
        r = SENDMAIL("x\n", "-N", "never,success", "a@x.org");
        expect_status(&r, 0, "bad -N option value -- ignored");
        env = queued_envelope();
        cr_assert_eq(env->rcpt[0].notify, 0);
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, R_and_V_set_the_dsn_return_and_envelope_id)
{
        struct run_result r = SENDMAIL("x\n", "-R", "hdrs", "-V", "job 42+x", "a@x.org");
        expect_status(&r, 0, NULL);
        struct envelope *env = queued_envelope();
        cr_assert_eq(env->ret, DSN_RET_HDRS);
        cr_assert_str_eq(env->envid, "job+2042+2Bx", "stored as xtext");
        envelope_free(env);
        run_free(&r);
        fixture_teardown(&fx);
        setup();
        r = SENDMAIL("x\n", "-R", "full", "a@x.org");
        expect_status(&r, 0, NULL);
        env = queued_envelope();
        cr_assert_eq(env->ret, DSN_RET_FULL);
        envelope_free(env);
        run_free(&r);
}

Test(sendmail, harmless_sendmail_flags_are_accepted)
{
        struct run_result r = SENDMAIL("x\n", "-odb", "-odi", "-odq", "-v", "-oem", "-oee", "-om",
                                       "-o7", "-Am", "-B", "8BITMIME", "-L", "label", "-h", "10",
                                       "-G", "-U", "-m", "-x", "-c", "-oi", "-i", "a@x.org");
        expect_status(&r, 0, NULL);
        cr_assert_str_empty(r.out, "a single -v prints nothing");
        cr_assert_eq(spool_count(&fx, "incoming"), 1);
        run_free(&r);
}

Test(sendmail, vv_reports_the_queue_id)
{
        struct run_result r = SENDMAIL("x\n", "-v", "-v", "a@x.org");
        expect_status(&r, 0, "queued for 1 recipient");
        run_free(&r);
}

Test(sendmail, refused_flags_exit_64_with_a_message)
{
        static const struct {
                const char *flag, *arg, *says;
        } cases[] = {
            {"-bd", NULL, "tarryd"},
            {"-bi", NULL, "alias"},
            {"-I", NULL, "alias"},
            {"-bv", NULL, "verification"},
            {"-bz", NULL, "unsupported: -bz"},
            {"-n", NULL, "-n option not supported"},
            {"-XV", NULL, "VERP"},
            {"-qRexample.com", NULL, "tarryq"},
            {"-q", NULL, "tarryq -f"},
            {"-k", NULL, "unknown option -k"},
            {"-B", "9BIT", "8BITMIME or 7BIT"},
            {"-oA", NULL, "-oA requires pathname"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct run_result r =
                    cases[i].arg
                        ? SENDMAIL("x\n", (char *)cases[i].flag, (char *)cases[i].arg, "a@x.org")
                        : SENDMAIL("x\n", (char *)cases[i].flag, "a@x.org");
                expect_status(&r, EX_USAGE, cases[i].says);
                run_free(&r);
        }
        expect_nothing_queued();
}

Test(sendmail, a_missing_option_argument_exits_64)
{
        struct run_result r = run(NULL, (char *const[]){(char *)bin("sendmail"), "-f", NULL});
        expect_status(&r, EX_USAGE, "option -f requires an argument");
        run_free(&r);
}

Test(sendmail, t_is_refused_outside_delivery_mode)
{
        struct run_result r = SENDMAIL("", "-t", "-bp");
        expect_status(&r, EX_USAGE, "-t can be used only in delivery mode");
        run_free(&r);
}

Test(sendmail, queue_interval_and_host_status_modes_do_nothing_and_succeed)
{
        struct run_result r = SENDMAIL("", "-q15m");
        expect_status(&r, 0, NULL);
        run_free(&r);
        r = SENDMAIL("", "-bh");
        expect_status(&r, 0, NULL);
        run_free(&r);
        expect_nothing_queued();
}

Test(sendmail, bp_and_mailq_list_the_queue)
{
        struct run_result r = SENDMAIL("", "-bp");
        expect_status(&r, 0, NULL);
        cr_assert_str_eq(r.out, "Mail queue is empty\n");
        run_free(&r);
        r = run(&(struct run_opts){.argv0 = "mailq"},
                (char *const[]){(char *)bin("sendmail"), "-C", fx.conf, NULL});
        expect_status(&r, 0, NULL);
        cr_assert_str_eq(r.out, "Mail queue is empty\n");
        run_free(&r);
        r = run(NULL, (char *const[]){(char *)bin("mailq"), "-C", fx.conf, NULL});
        expect_status(&r, 0, NULL);
        cr_assert_str_eq(r.out, "Mail queue is empty\n");
        run_free(&r);
}

/* Each submission maps every library sendmail links: libcurl and its TLS,
 * LDAP and Kerberos libraries once made up two thirds of a submission's
 * time. The listing that needs them is tarryq's. */
Test(sendmail, maps_no_libcurl_nor_its_tls_libraries)
{
        struct run_result r =
            run(NULL, (char *const[]){"/usr/bin/ldd", (char *)bin("sendmail"), NULL});
        cr_assert_eq(r.status, 0, "ldd failed: %s", r.err);
        cr_assert_not_null(strstr(r.out, "libc.so"), "ldd said: %s", r.out);
        static const char *const unwanted[] = {"libcurl", "libssl",    "libgnutls",    "libcrypto",
                                               "libldap", "libgssapi", "libmicrohttpd"};
        for (size_t i = 0; i < sizeof(unwanted) / sizeof(unwanted[0]); i++)
                cr_assert_null(strstr(r.out, unwanted[i]), "sendmail maps %s:\n%s", unwanted[i],
                               r.out);
        run_free(&r);
}

/* A copy of sendmail in a folder of its own, with a stand-in tarryq next to
 * it that prints how it was called and exits 3. */
static void sendmail_beside_fake_tarryq(char *copy, size_t len)
{
        char dir[400], tarryq[450];
        snprintf(dir, sizeof(dir), "%s/bin", fx.dir);
        cr_assert_eq(mkdir(dir, 0755), 0);
        size_t n = 0;
        char *image = read_whole(bin("sendmail"), &n);
        cr_assert_not_null(image);
        snprintf(copy, len, "%s/sendmail", dir);
        FILE *f = fopen(copy, "we");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(image, 1, n, f), n);
        cr_assert_eq(fclose(f), 0);
        free(image);
        snprintf(tarryq, sizeof(tarryq), "%s/tarryq", dir);
        write_file(tarryq, "#!/bin/sh\necho \"tarryq $*\"\nexit 3\n");
        cr_assert_eq(chmod(copy, 0755), 0);
        cr_assert_eq(chmod(tarryq, 0755), 0);
}

Test(sendmail, mailq_and_bp_run_the_tarryq_next_to_sendmail_with_its_config)
{
        char copy[500], want[600];
        sendmail_beside_fake_tarryq(copy, sizeof(copy));
        snprintf(want, sizeof(want), "tarryq -p -C %s\n", fx.conf);
        struct run_result r =
            run(&(struct run_opts){.argv0 = "mailq"}, (char *const[]){copy, "-C", fx.conf, NULL});
        cr_assert_eq(r.status, 3, "mailq exited %d, not tarryq's 3: %s", r.status, r.err);
        cr_assert_str_eq(r.out, want);
        run_free(&r);
        r = run(NULL, (char *const[]){copy, "-C", fx.conf, "-bp", NULL});
        cr_assert_eq(r.status, 3, "sendmail -bp exited %d, not tarryq's 3: %s", r.status, r.err);
        cr_assert_str_eq(r.out, want);
        run_free(&r);
}

Test(sendmail, cr_or_lf_in_a_command_line_address_exits_64_naming_it)
{
        struct run_result r = SENDMAIL("x\n", "bob@example.org\r\nRCPT TO:<x@y>");
        expect_status(&r, EX_USAGE, "bad recipient address 'bob@example.org\\r\\nRCPT TO:<x@y>'");
        expect_nothing_queued();
        run_free(&r);
        r = SENDMAIL("x\n", "-f", "a\nb@example.org", "bob@example.org");
        expect_status(&r, EX_USAGE, "bad sender address 'a\\nb@example.org'");
        run_free(&r);
}

Test(sendmail, malformed_command_line_addresses_exit_64)
{
        const char *bad[] = {"bob smith@example.org", "<bob@example.org", "bob@", "\"bob@x.org"};
        for (size_t i = 0; i < 4; i++) {
                struct run_result r = SENDMAIL("x\n", (char *)bad[i]);
                expect_status(&r, EX_USAGE, "bad recipient address");
                cr_assert_not_null(strstr(r.err, bad[i]), "%s", r.err);
                run_free(&r);
        }
        expect_nothing_queued();
}

Test(sendmail, a_bad_address_in_a_t_header_exits_65_naming_it)
{
        struct run_result r = SENDMAIL("To: bob smith@example.org\n\nx\n", "-t");
        expect_status(&r, EX_DATAERR, "bad address 'bob smith@example.org' in the To: header");
        expect_nothing_queued();
        run_free(&r);
        const char nul_msg[] = "Cc: a\0b@example.org\n\nx\n";
        r = run(&(struct run_opts){.input = nul_msg, .input_len = sizeof(nul_msg) - 1},
                (char *const[]){(char *)bin("sendmail"), "-C", fx.conf, "-t", NULL});
        expect_status(&r, EX_DATAERR, "'a\\0b@example.org' in the Cc: header: contains a NUL");
        expect_nothing_queued();
        run_free(&r);
        r = SENDMAIL("To: <bob@example.org\n\nx\n", "-t");
        expect_status(&r, EX_DATAERR, "unbalanced <>");
        expect_nothing_queued();
        run_free(&r);
}

Test(sendmail, an_oversize_message_exits_65_and_queues_nothing)
{
        size_t n = 30000;
        char *big = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
                big[i] = (i % 70 == 69) ? '\n' : 'x';
        big[n] = '\0';
        struct run_result r = SENDMAIL(big, "bob@example.org");
        expect_status(&r, EX_DATAERR, "message is larger than message_size_limit (20480 bytes)");
        expect_nothing_queued();
        free(big);
        run_free(&r);
}

Test(sendmail, a_missing_spool_exits_75)
{
        fixture_teardown(&fx);
        setup();
        char path[400];
        snprintf(path, sizeof(path), "%s/incoming", fx.spool);
        cr_assert_eq(rmdir(path), 0);
        struct run_result r = SENDMAIL("x\n", "bob@example.org");
        expect_status(&r, EX_TEMPFAIL, "cannot open the spool");
        run_free(&r);
}

Test(sendmail, a_full_disk_exits_75_and_leaves_nothing_behind)
{
        size_t n = 12000;
        char *msg = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
                msg[i] = (i % 70 == 69) ? '\n' : 'y';
        msg[n] = '\0';
        struct run_result r =
            run(&(struct run_opts){.input = msg, .fsize_limit = 4096},
                (char *const[]){(char *)bin("sendmail"), "-C", fx.conf, "bob@example.org", NULL});
        expect_status(&r, EX_TEMPFAIL, "to the spool: File too large");
        expect_nothing_queued();
        free(msg);
        run_free(&r);
}

Test(sendmail, a_config_error_exits_78_naming_file_and_line)
{
        write_file(fx.conf, "[main]\nspool_dir = /tmp\nbogus_key = 1\n");
        struct run_result r = SENDMAIL("x\n", "bob@example.org");
        expect_status(&r, EX_CONFIG, "tarry.conf:3: unknown key 'bogus_key' in [main]");
        run_free(&r);
        r = run(NULL, (char *const[]){(char *)bin("sendmail"), "-C", "/nonexistent/tarry.conf",
                                      "a@b.org", NULL});
        expect_status(&r, EX_CONFIG, "/nonexistent/tarry.conf");
        run_free(&r);
}

Test(sendmail, lines_longer_than_998_bytes_are_folded)
{
        char msg[3000];
        strcpy(msg, "Subject: long\n\n");
        size_t o = strlen(msg);
        memset(msg + o, 'z', 2500);
        strcpy(msg + o + 2500, "\n");
        struct run_result r = SENDMAIL(msg, "bob@example.org");
        expect_status(&r, 0, NULL);
        char *body = queued_body();
        size_t run_len = 0, max = 0;
        for (char *p = body; *p; p++) {
                run_len = (*p == '\r' || *p == '\n') ? 0 : run_len + 1;
                if (run_len > max)
                        max = run_len;
        }
        cr_assert_eq(max, 998);
        cr_assert_not_null(strstr(body, "zzz\r\n zzz"));
        free(body);
        run_free(&r);
}

Test(sendmail, an_mbox_from_line_at_the_top_is_dropped)
{
        struct run_result r =
            SENDMAIL("From app Mon Nov 23 12:00:00 2020\nSubject: s\n\nx\n", "bob@example.org");
        expect_status(&r, 0, NULL);
        char *body = queued_body();
        cr_assert(strncmp(body, "Subject: s\r\n", 12) == 0, "%s", body);
        free(body);
        run_free(&r);
}

Test(sendmail, a_body_without_a_header_gets_the_added_headers_and_a_blank_line)
{
        struct run_result r = SENDMAIL("just text\nmore\n", "bob@example.org");
        expect_status(&r, 0, NULL);
        char *body = queued_body();
        cr_assert(strncmp(body, "From: ", 6) == 0, "%s", body);
        cr_assert_not_null(strstr(body, ">\r\n\r\njust text\r\nmore\r\n"), "%s", body);
        free(body);
        run_free(&r);
}
