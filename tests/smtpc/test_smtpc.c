/* tests/smtpc/test_smtpc.c — delivery attempts against the scripted SMTP server. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "tests/fixture/fixture.h"
#include "tests/smtpc/harness.h"

#define BODY "From: a@example.org\r\nTo: b@x.test\r\nSubject: t\r\n\r\nhello\r\n"

/* Everything to the fixture, short timeouts. */
static struct tarry_config *cfg_to(struct fixture *f, const char *tls, const char *extra)
{
        return test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n%s\n"
                        "[smtp]\ntls = none\nconnect_timeout = 2\ncommand_timeout = 2\n"
                        "data_timeout = 3\n"
                        "[transport]\n* = [%s]:%u tls=%s\n",
                        extra ? extra : "", fixture_ip(f), fixture_port(f), tls);
}

Test(smtpc, mixed_recipient_replies_are_each_reported_and_only_accepted_ones_delivered)
{
        const char *kv[] = {"rcpt:grey@x.test", "451 4.7.1 Greylisted, try again in 300 seconds",
                            "rcpt:nobody@x.test", "550 5.1.1 <nobody@x.test>: User unknown", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"ok@x.test", "grey@x.test", "nobody@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 3, BODY, NULL, &o, 10);

        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED);
        cr_assert_eq(o.r[0].code, 250);
        cr_assert_eq(o.r[1].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_eq(o.r[1].code, 451);
        cr_assert_str_eq(o.r[1].enhanced, "4.7.1");
        cr_assert_str_eq(o.r[1].text, "451 4.7.1 Greylisted, try again in 300 seconds");
        cr_assert_eq(o.r[2].outcome, SMTPC_RCPT_FAILED);
        cr_assert_eq(o.r[2].code, 550);
        cr_assert_str_eq(o.r[2].enhanced, "5.1.1");

        cr_assert_eq(fixture_wait_txns(f, 1, 2000), 0);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "ok@x.test");
        cr_assert_str_eq(t.mail_from, "a@example.org");
        cr_assert_str_eq(t.helo, "client.test");
        fixture_txn_clear(&t);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, multi_line_replies_are_joined_with_newlines_as_sent)
{
        const char *kv[] = {"rcpt", "452-4.2.2 Mailbox full\n452 4.2.2 try later", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"full@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_str_eq(o.r[0].text, "452-4.2.2 Mailbox full\n452 4.2.2 try later");
        cr_assert_str_eq(o.r[0].enhanced, "4.2.2");
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

/* smtpc leaves from the address it is given, each attempt: the greylister
 * (its triplet holds the client IP) sees a new client when it changes.
 * Keeping a retry on the first attempt's address is tarryd's job (the pin in
 * the envelope): tests/daemon/test_daemon.c,
 * a_retry_leaves_from_the_first_attempts_address_across_a_restart. */
Test(smtpc, each_attempt_leaves_from_the_source_address_it_is_given)
{
        const char *kv[] = {"greylist", "1", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", "source_address = 127.0.0.2, 127.0.0.3");
        const char *rcpts[] = {"user@x.test"};
        struct outcome o[3];
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, "127.0.0.2", &o[0], 10);
        cr_assert_eq(o[0].r[0].outcome, SMTPC_RCPT_DEFERRED, "%s", o[0].r[0].text);
        cr_assert_str_eq(o[0].source, "127.0.0.2");
        usleep(1200000); /* past the greylist window of 127.0.0.2's triplet */
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, "127.0.0.3", &o[1], 10);
        cr_assert_eq(o[1].r[0].outcome, SMTPC_RCPT_DEFERRED, "a new client IP is greylisted");
        cr_assert_str_eq(o[1].source, "127.0.0.3");
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, "127.0.0.2", &o[2], 10);
        cr_assert_eq(o[2].r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o[2].r[0].text);
        cr_assert_eq(fixture_wait_txns(f, 1, 10000), 0);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.peer_ip, "127.0.0.2");
        fixture_txn_clear(&t);
        cr_assert_eq(fixture_connection_count(f), 3);
        for (int i = 0; i < 3; i++)
                outcome_clear(&o[i]);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, next_mx_is_tried_after_a_refused_connection)
{
        struct fixture *f = test_fixture("127.0.0.1", NULL);
        const char *dns[] = {"--mx-host=example.test,mx1.example.test,10",
                             "--mx-host=example.test,mx2.example.test,20",
                             "--host-record=mx1.example.test,127.0.0.3",
                             "--host-record=mx2.example.test,127.0.0.1"};
        uint16_t dport;
        int pid = test_dnsmasq(dns, 4, &dport);
        if (pid == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\ntls = none\nport = %u\nconnect_timeout = 2\ncommand_timeout = 2\n"
                     "dns_servers = 127.0.0.1:%u\n",
                     fixture_port(f), dport);
        const char *rcpts[] = {"user@example.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert_str_eq(o.mx_host, "mx2.example.test");
        cr_assert_str_eq(o.mx_ip, "127.0.0.1");
        cr_assert_eq(fixture_txn_count(f), 1);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, null_mx_is_a_permanent_failure_without_connecting)
{
        const char *dns[] = {"--dns-rr=nullmx.test,15,000000"};
        uint16_t dport;
        int pid = test_dnsmasq(dns, 1, &dport);
        if (pid == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\ndns_servers = 127.0.0.1:%u\n",
                     dport);
        const char *rcpts[] = {"user@nullmx.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_PERMFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_NULL_MX);
        cr_assert_str_eq(o.enhanced, "5.1.10");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_FAILED);
        outcome_clear(&o);
        cfg_free(cfg);
}

Test(smtpc, dns_server_failure_is_a_temporary_routing_failure)
{
        uint16_t dport = 9; /* nothing answers DNS there */
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\ndns_servers = 127.0.0.1:%u\n",
                     dport);
        const char *rcpts[] = {"user@example.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_DNS);
        cr_assert_str_eq(o.enhanced, "4.4.3");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        outcome_clear(&o);
        cfg_free(cfg);
}

Test(smtpc, refused_connection_reports_a_postfix_like_reason)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[transport]\n* = [127.0.0.1]:%u tls=none\n",
                     fixture_port(f) == 1 ? 2 : 1);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert_eq(o.failure, SMTPC_FAIL_CONNECT);
        cr_assert_str_eq(o.enhanced, "4.4.1");
        cr_assert(strstr(o.text, "connect to 127.0.0.1[127.0.0.1]:1: Connection refused"), "%s",
                  o.text);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, server_stalling_mid_data_times_out_as_temporary_failure)
{
        const char *kv[] = {"hang", "body", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        int64_t t0 = now_monotonic_us();
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 20);
        int64_t took = now_monotonic_us() - t0;
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_TIMEOUT, "%s", o.text);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_lt(took, 8000000, "took %lld us", (long long)took);
        cr_assert_eq(fixture_txn_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

static long rss_kb(void)
{
        FILE *fp = fopen("/proc/self/statm", "r");
        long pages = 0, resident = 0;
        if (fp) {
                if (fscanf(fp, "%ld %ld", &pages, &resident) != 2)
                        resident = 0;
                fclose(fp);
        }
        return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

#define HOSTILE_TIMEOUT_S 20

static void check_hostile_reply(const char *key, const char *step)
{
        const char *kv[] = {key, step, NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        /* cut off by size, not by a timeout: FAIL_PROTOCOL says which, and a
         * long timeout leaves the cut-off room on a slow or ASan build */
        cfg->command_timeout_s = HOSTILE_TIMEOUT_S;
        cfg->data_timeout_s = HOSTILE_TIMEOUT_S;
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        long before = rss_kb();
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, HOSTILE_TIMEOUT_S + 20);
        long grown = rss_kb() - before;
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        /* an oversized reply, not a lost connection (libcurl itself stops
         * reading a line at 300 KB; SMTPC_REPLY_ABORT stops the endless one) */
        cr_assert_eq(o.failure, SMTPC_FAIL_PROTOCOL, "%s", o.text);
        cr_assert_null(strstr(o.text, "QUIT"), "%s", o.text);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_leq(strlen(o.text), SMTPC_REPLY_MAX + 256);
        cr_assert_leq(strlen(o.r[0].text), SMTPC_REPLY_MAX + 256);
        cr_assert_leq(strlen(o.transcript), SMTPC_TRANSCRIPT_MAX);
        /* cut off at SMTPC_REPLY_ABORT, before the command timeout; the
         * fixture buffers the 1 MB line in this process too (and ASan quarantines) */
        cr_assert_lt(o.total_us, HOSTILE_TIMEOUT_S * 1000000LL, "took %lld us",
                     (long long)o.total_us);
        cr_assert_lt(grown, 32 * 1024, "RSS grew by %ld KB", grown);
        /* at the dot the server has the message (it records it as it answers) */
        if (strcmp(step, "dot") != 0)
                cr_assert_eq(fixture_txn_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, one_megabyte_reply_line_is_bounded_and_a_temporary_failure)
{
        check_hostile_reply("huge", "rcpt");
}

Test(smtpc, endless_multi_line_reply_is_cut_off_as_a_temporary_failure)
{
        check_hostile_reply("endless", "mail");
}

/* libcurl waits for the final dot's reply in a blocking poll: the same limits
 * must hold there. */
Test(smtpc, one_megabyte_reply_to_the_final_dot_is_bounded_and_a_temporary_failure)
{
        check_hostile_reply("huge", "dot");
}

/* An endless reply to the final dot that starts with 250 is cut off too, but
 * delivered: test_nexthop.c, endless_continuation_after_250_to_the_final_dot… */

Test(smtpc, dot_stuffing_and_crlf_reach_the_server_byte_exact)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *body = "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
                           "middle . dot\r\n. space\r\n\r\n.\r\nend \xc3\xa9\t\r\n";
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, body, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[0].text);
        struct fixture_txn t;
        test_received(f, body, strlen(body), &t);
        fixture_txn_clear(&t);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

/* The body is read and stuffed 16 KB at a time: a line's CR and LF on either
 * side of a read, and a dot starting the first byte of the next read, must
 * still be stuffed (and only there). */
Test(smtpc, dot_stuffing_across_the_body_read_boundaries_is_byte_exact)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        size_t n = 3 * 16384 + 100;
        char *body = malloc(n + 1);
        cr_assert(body);
        memset(body, 'a', n);
        memcpy(body, "Subject: chunks\r\n\r\n", 19);
        for (size_t i = 100; i + 2 < n; i += 100) /* CRLF every 100 bytes, dots after some */
                memcpy(body + i, i % 300 == 0 ? "\r\n." : "\r\na", 3);
        memcpy(body + 16382, "\r\n.", 3); /* LF last of the first read, dot first of the next */
        memcpy(body + 32767, "\r\n..\r\n", 6); /* CR last of a read, LF first of the next */
        memcpy(body + 49151, "\r\n.", 3);      /* CR LF and the dot straddle the third boundary */
        memcpy(body + n - 5, "\r\n.\r\n", 5);  /* a lone dot as the last line */
        body[n] = '\0';
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, body, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[0].text);
        struct fixture_txn t;
        test_received(f, body, n, &t);
        fixture_txn_clear(&t);
        outcome_clear(&o);
        free(body);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, null_sender_is_sent_as_empty_reverse_path)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED);
        cr_assert(strstr(o.transcript, "> MAIL FROM:<>"), "%s", o.transcript);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "");
        fixture_txn_clear(&t);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, cr_lf_in_an_address_never_reaches_the_wire)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"ok@x.test", "evil@x.test>\r\nRCPT TO:<victim@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 2, BODY, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED);
        cr_assert_eq(o.r[1].outcome, SMTPC_RCPT_FAILED);
        cr_assert_eq(o.r[1].code, 553);
        cr_assert_null(strstr(o.transcript, "victim"), "%s", o.transcript);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "ok@x.test");
        fixture_txn_clear(&t);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, attempt_with_only_bad_addresses_never_connects)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"bad\n@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_FAILED);
        cr_assert_eq(o.calls, 1);
        cr_assert_eq(fixture_connection_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, starttls_may_works_with_a_self_signed_certificate)
{
        struct fixture *f;
        char dir[] = "/tmp/smtpc-tls-XXXXXX";
        cr_assert_not_null(mkdtemp(dir));
        cr_assert_eq(fixture_new(NULL, &f), 0);
        cr_assert_eq(fixture_tls_generate(f, dir), 0, "openssl CLI needed");
        cr_assert_eq(fixture_start(f, 0), 0);
        struct tarry_config *cfg = cfg_to(f, "may", NULL);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert(o.tls, "%s", o.transcript);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert(t.tls);
        fixture_txn_clear(&t);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        cr_assert_eq(system(cmd), 0);
}

Test(smtpc, tls_encrypt_without_starttls_offered_is_a_temporary_tls_failure)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "encrypt", NULL);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert_eq(o.failure, SMTPC_FAIL_TLS, "%s", o.text);
        cr_assert_str_eq(o.enhanced, "4.7.5");
        cr_assert_eq(fixture_txn_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, mail_from_rejection_applies_to_every_recipient)
{
        const char *kv[] = {"mail", "550 5.7.1 sender blocked", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"a@x.test", "b@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 2, BODY, NULL, &o, 10);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_PERMFAIL);
        cr_assert_str_eq(o.text, "550 5.7.1 sender blocked");
        for (int i = 0; i < 2; i++) {
                cr_assert_eq(o.r[i].outcome, SMTPC_RCPT_FAILED);
                cr_assert_str_eq(o.r[i].text, "550 5.7.1 sender blocked");
        }
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, end_of_data_deferral_applies_to_accepted_recipients_only)
{
        const char *kv[] = {"dot", "451 4.3.0 queue full", "rcpt:no@x.test", "550 5.1.1 unknown",
                            NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"yes@x.test", "no@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 2, BODY, NULL, &o, 10);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_str_eq(o.r[0].text, "451 4.3.0 queue full");
        cr_assert_eq(o.r[1].outcome, SMTPC_RCPT_FAILED);
        cr_assert_str_eq(o.r[1].text, "550 5.1.1 unknown");
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, greeting_421_is_an_attempt_level_temporary_failure)
{
        const char *kv[] = {"greeting", "421 4.7.0 too busy, come back later", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"a@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert_eq(o.code, 421);
        cr_assert_str_eq(o.text, "421 4.7.0 too busy, come back later");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

/* Postfix's smtp_skip_5xx_greeting: a 5xx greeting defers, it never bounces. */
Test(smtpc, greeting_554_from_the_last_host_is_deferred_not_bounced)
{
        const char *kv[] = {"greeting",
                            "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked "
                            "using zen.spamhaus.org",
                            NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        const char *rcpts[] = {"a@x.test", "b@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 2, BODY, NULL, &o, 10);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert_eq(o.failure, SMTPC_FAIL_REFUSED);
        cr_assert_eq(o.code, 454);
        cr_assert_str_eq(o.enhanced, "4.7.1");
        char want[256];
        snprintf(want, sizeof(want),
                 "host %s[%s] refused to talk to me: 554 5.7.1 Service unavailable; Client host "
                 "[127.0.0.1] blocked using zen.spamhaus.org",
                 fixture_ip(f), fixture_ip(f));
        cr_assert_str_eq(o.text, want);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_eq(o.r[1].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_eq(fixture_txn_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, relay_credentials_are_used_for_auth)
{
        const char *kv[] = {"auth", "relayuser:s3cret", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        char path[] = "/tmp/smtpc-auth-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(fd_write_all(fd, "relayuser:s3cret\n", 17), 0);
        close(fd);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "relayhost = [%s]:%u tls=none\n[smtp]\nrelay_auth_file = %s\n"
                     "relay_auth_cleartext = yes\n",
                     fixture_ip(f), fixture_port(f), path);
        const char *rcpts[] = {"user@far.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert_null(strstr(o.transcript, "s3cret"));
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.auth_user, "relayuser");
        fixture_txn_clear(&t);
        outcome_clear(&o);

        chmod(path, 0644);
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL);
        cr_assert(strstr(o.text, "accessible by group or other"), "%s", o.text);
        outcome_clear(&o);
        unlink(path);
        cfg_free(cfg);
        fixture_free(f);
}

/* ---- several attempts on one client ---- */

struct multi {
        int done, delivered;
};

static void on_multi_done(const struct smtpc_result *res, void *userdata)
{
        struct multi *m = userdata;
        m->done++;
        if (res->rcpts[0].outcome == SMTPC_RCPT_DELIVERED)
                m->delivered++;
}

static void run_many(struct tarry_config *cfg, int n, struct multi *m)
{
        sd_event *e;
        struct smtpc *c;
        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(smtpc_new(e, cfg, &c), 0);
        int fd = test_body(BODY, strlen(BODY));
        const char *rcpts[] = {"user@x.test"};
        for (int i = 0; i < n; i++) {
                struct smtpc_request req = {.queue_id = "Q",
                                            .sender = "a@example.org",
                                            .rcpts = rcpts,
                                            .n_rcpts = 1,
                                            .body_fd = fd,
                                            .body_size = strlen(BODY),
                                            .done = on_multi_done,
                                            .userdata = m};
                cr_assert_eq(smtpc_attempt_start(c, &req), 0);
        }
        close(fd);
        cr_assert_eq(smtpc_pending(c), (size_t)n);
        int64_t end = now_monotonic_us() + 20000000;
        while (m->done < n && now_monotonic_us() < end)
                sd_event_run(e, 100000);
        cr_assert_eq(smtpc_pending(c), 0);
        smtpc_free(c);
        sd_event_unref(e);
}

Test(smtpc, consecutive_messages_to_one_destination_reuse_the_connection)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "none", "");
        struct multi m = {0};
        cfg->destination_concurrency = 1;
        run_many(cfg, 5, &m);
        cr_assert_eq(m.delivered, 5);
        cr_assert_eq(fixture_connection_count(f), 1);
        cfg_free(cfg);
        fixture_free(f);
}

/* [smtp] max_deliveries_per_connection: then QUIT and a new connection. */
Test(smtpc, a_connection_carries_at_most_max_deliveries_per_connection_messages)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "none", "");
        cfg->destination_concurrency = 1;
        cfg->max_deliveries_per_connection = 2;
        struct multi m = {0};
        run_many(cfg, 5, &m);
        cr_assert_eq(m.delivered, 5);
        cr_assert_eq(fixture_wait_txns(f, 5, 5000), 0);
        cr_assert_eq(fixture_connection_count(f), 3, "2 + 2 + 1 messages");
        cfg_free(cfg);
        fixture_free(f);
}

/* A kept connection nobody needs is closed with QUIT after about 5 s. */
Test(smtpc, an_idle_kept_connection_is_quit_after_a_few_seconds)
{
        struct fixture *f = test_fixture(NULL, NULL);
        struct tarry_config *cfg = cfg_to(f, "none", "");
        sd_event *e;
        struct smtpc *c;
        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(smtpc_new(e, cfg, &c), 0);
        int fd = test_body(BODY, strlen(BODY));
        const char *rcpts[] = {"user@x.test"};
        struct outcome o = {0};
        struct smtpc_request req = {.queue_id = "Q",
                                    .sender = "a@example.org",
                                    .rcpts = rcpts,
                                    .n_rcpts = 1,
                                    .body_fd = fd,
                                    .body_size = strlen(BODY),
                                    .done = outcome_capture,
                                    .userdata = &o};
        cr_assert_eq(smtpc_attempt_start(c, &req), 0);
        close(fd);
        int64_t end = now_monotonic_us() + 20000000;
        while (!o.called && now_monotonic_us() < end)
                sd_event_run(e, 100000);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[0].text);
        int64_t delivered = now_monotonic_us();
        cr_assert_eq(fixture_open_connection_count(f), 1, "kept for the next message");
        while (fixture_open_connection_count(f) > 0 && now_monotonic_us() < end)
                sd_event_run(e, 100000);
        int64_t kept = now_monotonic_us() - delivered;
        cr_assert_eq(fixture_open_connection_count(f), 0, "still open after 20 s");
        cr_assert_eq(fixture_quit_count(f), 1);
        cr_assert_geq(kept, 4000000, "closed after %lld us", (long long)kept);
        outcome_clear(&o);
        smtpc_free(c);
        sd_event_unref(e);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, destination_concurrency_limits_simultaneous_connections)
{
        const char *kv[] = {"delay:dot", "200", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", "");
        cfg->destination_concurrency = 2;
        struct multi m = {0};
        run_many(cfg, 8, &m);
        cr_assert_eq(m.delivered, 8);
        cr_assert_leq(fixture_connection_count(f), 2);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, failed_tls_handshake_with_tls_may_retries_in_clear_text)
{
        struct fixture *f;
        char dir[] = "/tmp/smtpc-tls-XXXXXX";
        cr_assert_not_null(mkdtemp(dir));
        cr_assert_eq(fixture_new(NULL, &f), 0);
        cr_assert_eq(fixture_tls_generate(f, dir), 0, "openssl CLI needed");
        cr_assert_eq(fixture_set(f, "tls_garbage", "yes"), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct tarry_config *cfg = cfg_to(f, "may", NULL);
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 10);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert_not(o.tls);
        cr_assert(strstr(o.transcript, "retrying without STARTTLS"), "%s", o.transcript);
        cr_assert_eq(fixture_connection_count(f), 2);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        cr_assert_eq(system(cmd), 0);
}

/* ---- slow and stalled servers ---- */

/* A reply that trickles in at one byte per second (slowloris) is bound by the
 * command timeout: curl's server response timeout counts from the command,
 * not from the last byte received. The attempt then ends at once: the QUIT
 * that libcurl sends on a failed session is not waited for (that wait used
 * to take another command timeout), and the reason names the command whose
 * reply never came, not that QUIT. */
static void check_dripping_reply(const char *step, const char *stage, int timeout_s)
{
        char key[32];
        snprintf(key, sizeof(key), "drip:%s", step);
        const char *kv[] = {key, "1000", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        cfg->command_timeout_s = 3;
        cfg->data_timeout_s = 3;
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        int64_t t0 = now_monotonic_us();
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 30);
        int64_t took = now_monotonic_us() - t0;
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_TIMEOUT, "%s", o.text);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_not_null(strstr(o.text, stage), "%s", o.text);
        /* the timeout, plus at most 1 s for libcurl to notice that the QUIT
         * is not waited for; twice the timeout was the old wait */
        int64_t limit = (int64_t)timeout_s * 1000000;
        cr_assert_geq(took, limit - 100000, "took %lld us", (long long)took);
        cr_assert_lt(took, limit + 2000000, "took %lld us", (long long)took);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

/* The greeting is part of connecting: connect_timeout (2 s here) applies. */
Test(smtpc, greeting_at_one_byte_per_second_times_out_at_the_connect_timeout)
{
        check_dripping_reply("greeting", "timed out while receiving the initial server greeting",
                             2);
}

Test(smtpc, rcpt_reply_at_one_byte_per_second_times_out_at_the_command_timeout)
{
        check_dripping_reply("rcpt", "timed out while sending RCPT TO", 3);
}

Test(smtpc, final_dot_reply_at_one_byte_per_second_gives_up_at_the_data_timeout)
{
        check_dripping_reply("dot", "timed out while sending end of data", 3);
}

/* RFC 5321 4.5.3.2.6: wait (10 minutes by default) for the reply to the
 * final dot; tarry.conf(5): data_timeout covers the DATA phase, final dot
 * included. libcurl waits for that reply with its per-reply limit, which
 * used to be command_timeout. */
Test(smtpc, final_dot_reply_slower_than_the_command_timeout_is_waited_for_until_data_timeout)
{
        const char *kv[] = {"delay:dot", "3500", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        cfg->command_timeout_s = 2;
        cfg->data_timeout_s = 6;
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 20);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert_geq(o.total_us, 3400000, "took %lld us", (long long)o.total_us);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(smtpc, final_dot_never_answered_gives_up_at_a_data_timeout_shorter_than_the_command_timeout)
{
        const char *kv[] = {"hang", "dot", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        cfg->command_timeout_s = 5;
        cfg->data_timeout_s = 2;
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 20);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_TIMEOUT, "%s", o.text);
        cr_assert_not_null(strstr(o.text, "timed out while sending end of data"), "%s", o.text);
        /* checked once a second inside libcurl's wait */
        cr_assert_geq(o.total_us, 1900000, "took %lld us", (long long)o.total_us);
        cr_assert_lt(o.total_us, 4000000, "took %lld us", (long long)o.total_us);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

struct two_attempts {
        struct fixture *f;
        struct outcome o[2];
        int done;
};

static void on_second_of_two(const struct smtpc_result *res, void *userdata)
{
        struct two_attempts *t = userdata;
        outcome_capture(res, &t->o[t->done]);
        /* the server recovers: the second message gets prompt answers */
        if (t->done++ == 0) {
                cr_assert_eq(fixture_set(t->f, "delay:dot", "0"), 0);
                cr_assert_eq(fixture_set(t->f, "dot", "250 2.0.0 Ok: queued"), 0);
        }
}

/* libcurl 7.88 kept a connection whose final-dot reply timed out; the next
 * message to the destination went out on it, and read the late reply to the
 * first message's dot as the reply to its own MAIL FROM (here a 554: the
 * second message would have bounced for the first one's content). */
Test(smtpc, late_final_dot_reply_is_never_taken_as_the_next_messages_reply)
{
        const char *kv[] = {"delay:dot", "4500", "dot", "554 5.7.1 Message rejected as spam", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", "");
        cfg->destination_concurrency = 1;
        struct two_attempts t = {.f = f};
        sd_event *e;
        struct smtpc *c;
        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(smtpc_new(e, cfg, &c), 0);
        int fd = test_body(BODY, strlen(BODY));
        const char *rcpts[] = {"user@x.test"};
        struct smtpc_request req = {.queue_id = "Q",
                                    .sender = "a@example.org",
                                    .rcpts = rcpts,
                                    .n_rcpts = 1,
                                    .body_fd = fd,
                                    .body_size = strlen(BODY),
                                    .done = on_second_of_two,
                                    .userdata = &t};
        cr_assert_eq(smtpc_attempt_start(c, &req), 0);
        cr_assert_eq(smtpc_attempt_start(c, &req), 0);
        close(fd);
        int64_t end = now_monotonic_us() + 20000000;
        while (t.done < 2 && now_monotonic_us() < end)
                sd_event_run(e, 100000);
        smtpc_free(c);
        sd_event_unref(e);
        cr_assert_eq(t.done, 2);
        cr_assert_eq(t.o[0].failure, SMTPC_FAIL_TIMEOUT, "%s", t.o[0].text);
        cr_assert_eq(t.o[0].r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_eq(t.o[1].r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", t.o[1].text,
                     t.o[1].transcript);
        cr_assert_null(strstr(t.o[1].transcript, "554"), "%s", t.o[1].transcript);
        cr_assert_eq(fixture_connection_count(f), 2, "the timed-out connection was reused");
        outcome_clear(&t.o[0]);
        outcome_clear(&t.o[1]);
        cfg_free(cfg);
        fixture_free(f);
}

/* After "220 Ready to start TLS" the server sends and reads nothing. */
static void check_stalled_handshake(const char *tls, struct outcome *o, int64_t *took)
{
        struct fixture *f;
        char dir[] = "/tmp/smtpc-tls-XXXXXX";
        cr_assert_not_null(mkdtemp(dir));
        cr_assert_eq(fixture_new(NULL, &f), 0);
        cr_assert_eq(fixture_tls_generate(f, dir), 0, "openssl CLI needed");
        cr_assert_eq(fixture_set(f, "tls_stall", "yes"), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct tarry_config *cfg = cfg_to(f, tls, NULL);
        const char *rcpts[] = {"user@x.test"};
        int64_t t0 = now_monotonic_us();
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, o, 30);
        *took = now_monotonic_us() - t0;
        cfg_free(cfg);
        fixture_free(f);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        cr_assert_eq(system(cmd), 0);
}

Test(smtpc, stalled_tls_handshake_with_tls_may_times_out_and_retries_in_clear_text)
{
        struct outcome o;
        int64_t took;
        check_stalled_handshake("may", &o, &took);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert_not(o.tls);
        cr_assert(strstr(o.transcript, "retrying without STARTTLS"), "%s", o.transcript);
        cr_assert_lt(took, 6000000, "took %lld us", (long long)took);
        outcome_clear(&o);
}

Test(smtpc, stalled_tls_handshake_with_tls_encrypt_is_a_temporary_tls_failure)
{
        struct outcome o;
        int64_t took;
        check_stalled_handshake("encrypt", &o, &took);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_TLS, "%s", o.text);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_lt(took, 6000000, "took %lld us", (long long)took);
        outcome_clear(&o);
}
/* An SSH server on the SMTP port: its banner ("SSH-2.0-…", the '-' where a
 * multi-line reply has one) is garbage, not the start of a long greeting. */
Test(smtpc, ssh_banner_instead_of_a_greeting_fails_at_once_as_garbled)
{
        const char *kv[] = {"greeting", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f, "none", NULL);
        /* "at once": not at the end of the greeting's timeout, however slow the build */
        cfg->connect_timeout_s = HOSTILE_TIMEOUT_S;
        cfg->command_timeout_s = HOSTILE_TIMEOUT_S;
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, HOSTILE_TIMEOUT_S + 20);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_PROTOCOL, "%s", o.text);
        cr_assert_not_null(strstr(o.text, "garbled reply"), "%s", o.text);
        cr_assert_lt(o.total_us, HOSTILE_TIMEOUT_S * 1000000LL, "took %lld us",
                     (long long)o.total_us);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}
