/* tests/daemon/test_takein.c — what tarryd does to a message as it takes it in
 * (issue 13, points 3 and 8), seen on the wire of a fixture receiver:
 * the Received: header, adminaddr with X-Original-To: and ORCPT, the hop
 * limit, and an MX that is this host itself. */
#include <criterion/criterion.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/dnsmasq.h"
#include "tests/fixture/fixture.h"

struct setup {
        struct fixture *f;
        struct harness h;
        char saved[300];
};

/* One fixture receives every domain ([transport] *), saving each body. */
static void start(struct setup *s, const char *main_extra)
{
        cr_assert_eq(fixture_new("127.0.0.1", &s->f), 0);
        snprintf(s->saved, sizeof(s->saved), "/tmp/tarry-takein-XXXXXX");
        cr_assert_not_null(mkdtemp(s->saved));
        fixture_set(s->f, "save_dir", s->saved);
        cr_assert_eq(fixture_start(s->f, 0), 0);
        char extra[2048];
        snprintf(extra, sizeof(extra), "%s\n[transport]\n* = [127.0.0.1]:%u\n",
                 main_extra ? main_extra : "", fixture_port(s->f));
        harness_init(&s->h, extra);
        harness_start(&s->h);
}

static void stop(struct setup *s)
{
        cr_assert_eq(harness_stop(&s->h, SIGTERM, 5000), 0);
        harness_cleanup(&s->h);
        fixture_free(s->f);
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->saved);
        cr_assert_eq(system(cmd), 0);
}

/* The bytes of the n-th message the fixture saved (malloc'd). */
static char *saved_message(struct setup *s, int n)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/%d.eml", s->saved, n);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "no saved message %s", path);
        char *buf = calloc(1, 1 << 20);
        cr_assert_not_null(buf);
        size_t len = fread(buf, 1, (1 << 20) - 1, f);
        buf[len] = '\0';
        fclose(f);
        return buf;
}

static bool matches(const char *text, const char *pattern)
{
        regex_t re;
        cr_assert_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0, "%s", pattern);
        bool ok = regexec(&re, text, 0, NULL, 0) == 0;
        regfree(&re);
        return ok;
}

static void wait_log(struct setup *s, const char *needle, int timeout_ms)
{
        for (int i = 0; i < timeout_ms / 20 && !harness_log_contains(&s->h, needle); i++)
                harness_sleep_ms(20);
        cr_assert(harness_log_contains(&s->h, needle), "no '%s' in the log", needle);
}

#define DATE_RE                                                                                    \
        "[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [-+][0-9]{4}"

Test(takein, a_received_header_goes_on_the_wire_ahead_of_the_message_as_submitted)
{
        struct setup s;
        start(&s, NULL);
        const char *args[] = {"-f", "alice@example.test", "bob@example.test", NULL};
        cr_assert_eq(harness_sendmail(&s.h, "Subject: hello\nTo: bob@example.test\n\nhi\n", args),
                     0);
        cr_assert_eq(fixture_wait_txns(s.f, 1, 10000), 0, "nothing delivered");
        char *m = saved_message(&s, 1);
        /* Postfix's form for a local submission (tests run as root: userid 0) */
        cr_assert(matches(m, "^Received: by tarry\\.test \\(tarry, from userid 0\\)\r\n"
                             "\tid [0-9A-F]{16}\r\n"
                             "\tfor <bob@example\\.test>; " DATE_RE "\r\n"
                             "Subject: hello\r\nTo: bob@example.test\r\n"
                             "(.*\r\n)*\r\nhi\r\n$"),
                  "%s", m);
        free(m);
        stop(&s);
}

Test(takein, mail_to_local_names_goes_to_adminaddr_with_x_original_to)
{
        struct setup s;
        start(&s, "adminaddr = admin@admin.test\n");
        const char *args[] = {
            "-f", "alice@example.test", "root", "ops@localhost", "carol@example.test", NULL};
        cr_assert_eq(harness_sendmail(&s.h, "Subject: cron\n\nout\n", args), 0);
        cr_assert_eq(fixture_wait_txns(s.f, 1, 10000), 0, "nothing delivered");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(s.f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 2, "RCPTs: %zu", t.n_rcpts);
        cr_assert_str_eq(t.rcpts[0], "admin@admin.test"); /* root and ops, once */
        cr_assert_str_eq(t.rcpts[1], "carol@example.test");
        fixture_txn_clear(&t);
        char *m = saved_message(&s, 1);
        /* bare "root" is qualified with myhostname when adminaddr is set */
        cr_assert(matches(m, "^Received: by tarry\\.test \\(tarry, from userid 0\\)\r\n"
                             "\tid [0-9A-F]{16}; " DATE_RE "\r\n"
                             "X-Original-To: root@tarry\\.test\r\n"
                             "X-Original-To: ops@localhost\r\n"
                             "Subject: cron\r\n"),
                  "%s", m);
        free(m);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(s.f), 1);
        stop(&s);
}

Test(takein, a_rewritten_recipient_keeps_its_original_address_as_orcpt)
{
        struct setup s;
        start(&s, "adminaddr = admin@admin.test\n");
        fixture_set(s.f, "rcpt:admin@admin.test", "550 5.1.1 no such user");
        const char *args[] = {"-f", "alice@example.test", "root", NULL};
        cr_assert_eq(harness_sendmail(&s.h, "Subject: cron\n\nout\n", args), 0);
        /* the failure DSN to alice names both addresses */
        cr_assert_eq(fixture_wait_txns(s.f, 1, 10000), 0, "no DSN arrived");
        char *m = saved_message(&s, 1);
        cr_assert(strstr(m, "Original-Recipient: rfc822;root@tarry.test\r\n"), "%s", m);
        cr_assert(strstr(m, "Final-Recipient: rfc822; admin@admin.test\r\n"), "%s", m);
        cr_assert(strstr(m, "X-Original-To: root@tarry.test\r\n"), "%s", m);
        free(m);
        stop(&s);
}

Test(takein, a_message_with_51_received_headers_bounces_with_5_4_6_and_is_not_sent)
{
        struct setup s;
        start(&s, NULL);
        char body[8192];
        size_t n = 0;
        for (int i = 0; i < 51; i++)
                n += (size_t)snprintf(body + n, sizeof(body) - n,
                                      "Received: from hop%d.example.test by hop%d.example.test; "
                                      "Mon, 7 Dec 2026 12:00:00 +0000\n",
                                      i, i + 1);
        snprintf(body + n, sizeof(body) - n, "Subject: loop\n\nround and round\n");
        const char *args[] = {"-f", "alice@example.test", "bob@example.test", NULL};
        cr_assert_eq(harness_sendmail(&s.h, body, args), 0);
        cr_assert_eq(fixture_wait_txns(s.f, 1, 10000), 0, "no DSN arrived");
        wait_log(&s, ": removed", 10000);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(s.f), 1, "the looping message went out");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(s.f, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "");
        cr_assert_str_eq(t.rcpts[0], "alice@example.test");
        fixture_txn_clear(&t);
        char *m = saved_message(&s, 1);
        cr_assert(strstr(m, "Final-Recipient: rfc822; bob@example.test\r\n"), "%s", m);
        cr_assert(strstr(m, "Status: 5.4.6\r\n"), "%s", m);
        cr_assert(strstr(m, "message has 51 Received: headers, hopcount_limit is 50"), "%s", m);
        free(m);
        cr_assert(harness_log_contains(&s.h, "dsn=5.4.6, status=bounced"));
        stop(&s);
}

/* dnsmasq answering for loop.test: MX mx.loop.test → 127.0.0.9. 0: not installed. */
static pid_t start_dns(uint16_t *port)
{
        if (!dnsmasq_installed())
                return 0;
        static const char *const opts[] = {"--mx-host=loop.test,mx.loop.test,10",
                                           "--host-record=mx.loop.test,127.0.0.9"};
        char err[256];
        *port = 0;
        pid_t pid = dnsmasq_start(opts, 2, port, err, sizeof(err));
        cr_assert_gt(pid, 0, "%s", err);
        return pid;
}

Test(takein, an_mx_at_this_hosts_own_address_is_deferred_as_a_loop)
{
        uint16_t dport;
        pid_t dns = start_dns(&dport);
        if (dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        struct fixture *f;
        cr_assert_eq(fixture_new("127.0.0.9", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        char extra[1024];
        snprintf(extra, sizeof(extra),
                 "[smtp]\nport = %u\ntls = none\ndns_servers = 127.0.0.1:%u\n"
                 "own_addresses = 127.0.0.9\n",
                 fixture_port(f), dport);
        struct harness h;
        harness_init(&h, extra);
        harness_start(&h);
        harness_send(&h, "alice@example.test", "bob@loop.test", "loop");
        const char *needle = "status=deferred (451 4.4.6 mail for loop.test loops back to myself)";
        for (int i = 0; i < 500 && !harness_log_contains(&h, needle); i++)
                harness_sleep_ms(20);
        bool deferred = harness_log_contains(&h, needle);
        kill(dns, SIGTERM);
        waitpid(dns, NULL, 0);
        cr_assert(deferred, "no loop deferral in the log");
        cr_assert_eq(fixture_connection_count(f), 0, "tarry connected to itself");
        cr_assert_eq(harness_count_queued(&h, "active"), 1, "the message must stay queued");
        cr_assert_eq(harness_stop(&h, SIGTERM, 5000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
