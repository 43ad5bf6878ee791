/* tests/smtpc/test_esmtp.c — what tarry's own transaction puts on the wire:
 * MAIL/RCPT parameters from the envelope and the server's EHLO keywords,
 * PIPELINING, and the unit parts (EHLO parsing, xtext). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"
#include "smtpc/esmtp.h"
#include "tests/fixture/fixture.h"
#include "tests/smtpc/harness.h"

#define BODY7 "From: a@example.org\r\nSubject: t\r\n\r\nhello\r\n"
#define BODY8 "From: a@example.org\r\nSubject: t\r\n\r\ngr\xc3\xbc\xc3\x9f dich\r\n"

/* EHLO replies: the fixture's default has PIPELINING 8BITMIME SIZE SMTPUTF8. */
#define EHLO_DSN                                                                                   \
        "250-fixture.test\n250-PIPELINING\n250-8BITMIME\n250-SIZE 1000000\n250-DSN\n250 SMTPUTF8"
#define EHLO_BARE "250-fixture.test\n250 SIZE 1000000"

static struct tarry_config *cfg_to(struct fixture *f)
{
        return test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                        "[smtp]\ntls = none\nconnect_timeout = 5\ncommand_timeout = 5\n"
                        "data_timeout = 5\n"
                        "[transport]\n* = [%s]:%u tls=none\n",
                        fixture_ip(f), fixture_port(f));
}

/* Deliver one message and return the fixture's record of it. */
static void deliver(const char *const *kv, const struct smtpc_request *req, const char *body,
                    struct outcome *o, struct fixture_txn *t)
{
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        test_deliver_req(cfg, req, body, o, 20);
        for (size_t i = 0; i < req->n_rcpts && i < 8; i++)
                cr_assert_eq(o->r[i].outcome, SMTPC_RCPT_DELIVERED, "%s: %s\n%s", req->rcpts[i],
                             o->r[i].text, o->transcript);
        cr_assert_eq(fixture_wait_txns(f, 1, 5000), 0);
        cr_assert_eq(fixture_txn_get(f, 0, t), 0);
        cfg_free(cfg);
        fixture_free(f);
}

/* ---- MAIL parameters ---- */

Test(esmtp, an_8bit_body_goes_with_size_and_body_8bitmime)
{
        const char *rcpts[] = {"u@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "a@example.org", .rcpts = rcpts, .n_rcpts = 1};
        struct outcome o;
        struct fixture_txn t;
        deliver(NULL, &req, BODY8, &o, &t);
        char want[64];
        snprintf(want, sizeof(want), "SIZE=%zu BODY=8BITMIME", strlen(BODY8));
        cr_assert_str_eq(t.mail_params, want);
        fixture_txn_clear(&t);
        outcome_clear(&o);
}

Test(esmtp, a_7bit_body_goes_with_size_only)
{
        const char *rcpts[] = {"u@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "a@example.org", .rcpts = rcpts, .n_rcpts = 1};
        struct outcome o;
        struct fixture_txn t;
        deliver(NULL, &req, BODY7, &o, &t);
        char want[64];
        snprintf(want, sizeof(want), "SIZE=%zu", strlen(BODY7));
        cr_assert_str_eq(t.mail_params, want);
        cr_assert_str_eq(t.rcpt_params[0], "");
        fixture_txn_clear(&t);
        outcome_clear(&o);
}

Test(esmtp, a_utf8_mailbox_goes_with_smtputf8)
{
        const char *rcpts[] = {"j\xc3\xb6rg@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "a@example.org", .rcpts = rcpts, .n_rcpts = 1};
        struct outcome o;
        struct fixture_txn t;
        deliver(NULL, &req, BODY7, &o, &t);
        cr_assert(strstr(t.mail_params, " SMTPUTF8"), "%s", t.mail_params);
        cr_assert_str_eq(t.rcpts[0], "j\xc3\xb6rg@x.test");
        fixture_txn_clear(&t);
        outcome_clear(&o);
}

/* sendmail -N success,delay -R hdrs -V envid, to a server offering DSN */
Test(esmtp, dsn_parameters_reach_a_server_that_offers_dsn_xtext_encoded)
{
        const char *kv[] = {"ehlo", EHLO_DSN, NULL};
        const char *rcpts[] = {"u@full.test", "v@full.test"};
        const unsigned notify[] = {SMTPC_NOTIFY_SUCCESS | SMTPC_NOTIFY_DELAY, SMTPC_NOTIFY_NEVER};
        const char *orcpt[] = {"rfc822;U+2B1@full.test",
                               NULL}; /* xtext, as the envelope keeps it */
        struct smtpc_request req = {.queue_id = "Q",
                                    .sender = "a@sender.test",
                                    .rcpts = rcpts,
                                    .n_rcpts = 2,
                                    .dsn_ret = SMTPC_RET_HDRS,
                                    .envid = "id+3D1+20x",
                                    .notify = notify,
                                    .orcpt = orcpt};
        struct outcome o;
        struct fixture_txn t;
        deliver(kv, &req, BODY7, &o, &t);
        char want[80];
        snprintf(want, sizeof(want), "SIZE=%zu RET=HDRS ENVID=id+3D1+20x", strlen(BODY7));
        cr_assert_str_eq(t.mail_params, want);
        cr_assert_eq(t.n_rcpts, 2);
        cr_assert_str_eq(t.rcpt_params[0], "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;U+2B1@full.test");
        cr_assert_str_eq(t.rcpt_params[1], "NOTIFY=NEVER");
        fixture_txn_clear(&t);
        outcome_clear(&o);
}

/* The fixture answers 555 to a parameter its EHLO did not offer, as Postfix. */
Test(esmtp, nothing_unoffered_goes_to_a_server_without_dsn_8bitmime_or_pipelining)
{
        const char *kv[] = {"ehlo", EHLO_BARE, NULL};
        const char *rcpts[] = {"u@full.test"};
        const unsigned notify[] = {SMTPC_NOTIFY_SUCCESS};
        const char *orcpt[] = {"rfc822;u@full.test"};
        struct smtpc_request req = {.queue_id = "Q",
                                    .sender = "a@sender.test",
                                    .rcpts = rcpts,
                                    .n_rcpts = 1,
                                    .dsn_ret = SMTPC_RET_FULL,
                                    .envid = "E1",
                                    .notify = notify,
                                    .orcpt = orcpt};
        struct outcome o;
        struct fixture_txn t;
        deliver(kv, &req, BODY7, &o, &t);
        char want[64];
        snprintf(want, sizeof(want), "SIZE=%zu", strlen(BODY7));
        cr_assert_str_eq(t.mail_params, want);
        cr_assert_str_eq(t.rcpt_params[0], "");
        cr_assert_not(t.pipelined, "pipelined to a server without PIPELINING");
        fixture_txn_clear(&t);
        outcome_clear(&o);
}

/* ---- PIPELINING ---- */

Test(esmtp, pipelining_sends_mail_rcpts_and_data_in_one_batch)
{
        const char *rcpts[] = {"a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "s@example.org", .rcpts = rcpts, .n_rcpts = 5};
        struct outcome o;
        struct fixture_txn t;
        deliver(NULL, &req, BODY7, &o, &t);
        cr_assert(t.pipelined, "MAIL was answered before RCPT was sent");
        cr_assert_eq(t.n_rcpts, 5);
        fixture_txn_clear(&t);
        outcome_clear(&o);
}

static void mixed_replies(const char *ehlo, bool want_pipelined)
{
        const char *kv[] = {"ehlo",
                            ehlo,
                            "rcpt:grey@x.test",
                            "451 4.7.1 Greylisted",
                            "rcpt:gone@x.test",
                            "550 5.1.1 unknown",
                            NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        const char *rcpts[] = {"grey@x.test", "ok@x.test", "gone@x.test", "ok2@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "s@example.org", .rcpts = rcpts, .n_rcpts = 4};
        struct outcome o;
        test_deliver_req(cfg, &req, BODY7, &o, 20);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE, "%s", o.text);
        cr_assert_str_eq(o.r[0].text, "451 4.7.1 Greylisted");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_eq(o.r[1].outcome, SMTPC_RCPT_DELIVERED);
        cr_assert_str_eq(o.r[2].text, "550 5.1.1 unknown");
        cr_assert_eq(o.r[2].outcome, SMTPC_RCPT_FAILED);
        cr_assert_eq(o.r[3].outcome, SMTPC_RCPT_DELIVERED);
        cr_assert_eq(fixture_wait_txns(f, 1, 5000), 0);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 2);
        cr_assert_eq(t.pipelined, want_pipelined);
        fixture_txn_clear(&t);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(esmtp, pipelined_rcpt_replies_pair_with_their_recipients)
{
        mixed_replies("250-fixture.test\n250 PIPELINING", true);
}

Test(esmtp, without_pipelining_each_rcpt_waits_for_the_previous_reply)
{
        mixed_replies(EHLO_BARE, false);
}

/* Pipelined DATA after every RCPT was refused gets "554 no valid
 * recipients": the recipients keep their own replies, the attempt ran. */
static void all_refused(const char *ehlo)
{
        const char *kv[] = {"ehlo", ehlo, "rcpt", "550 5.1.1 unknown", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        const char *rcpts[] = {"a@x.test", "b@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "s@example.org", .rcpts = rcpts, .n_rcpts = 2};
        struct outcome o;
        test_deliver_req(cfg, &req, BODY7, &o, 20);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE, "%s", o.text);
        for (int i = 0; i < 2; i++) {
                cr_assert_eq(o.r[i].outcome, SMTPC_RCPT_FAILED);
                cr_assert_str_eq(o.r[i].text, "550 5.1.1 unknown");
        }
        cr_assert_eq(fixture_txn_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(esmtp, every_rcpt_refused_pipelined_keeps_each_reply)
{
        all_refused("250-fixture.test\n250 PIPELINING");
}

Test(esmtp, every_rcpt_refused_without_pipelining_sends_no_data)
{
        all_refused(EHLO_BARE);
}

/* A big body goes out in chunks as the socket takes it, byte-exact. */
Test(esmtp, a_four_megabyte_body_arrives_byte_exact)
{
        size_t n = 77 * 54472; /* ~4 MB of 77-byte lines, the last one ending in CRLF */
        char *body = malloc(n + 1);
        cr_assert_not_null(body);
        for (size_t i = 0; i < n; i++)
                body[i] = (i % 77 == 75) ? '\r' : (i % 77 == 76) ? '\n' : (char)('a' + i % 26);
        for (size_t i = 0; i + 1 < n; i += 770)
                if (body[i] != '\r' && body[i] != '\n' && i > 0 && body[i - 1] == '\n')
                        body[i] = '.';
        body[n] = '\0';
        const char *rcpts[] = {"u@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "a@example.org", .rcpts = rcpts, .n_rcpts = 1};
        struct outcome o;
        struct fixture_txn t;
        deliver(NULL, &req, body, &o, &t);
        char sha[65];
        fixture_sha256_hex(body, n, sha);
        cr_assert_eq(t.size, n);
        cr_assert_str_eq(t.sha256, sha);
        fixture_txn_clear(&t);
        outcome_clear(&o);
        free(body);
}

/* ---- unit: EHLO keywords and xtext ---- */

Test(esmtp, ehlo_keywords_are_read_case_insensitively_skipping_the_greeting_line)
{
        struct esmtp_caps c;
        esmtp_parse_ehlo("250-dsn.example says hi\n250-pipelining\n250-SIZE 5000\n250-8BITMIMEX\n"
                         "250 DSN",
                         &c);
        cr_assert_eq(c.ext, ESMTP_PIPELINING | ESMTP_SIZE | ESMTP_DSN);
        cr_assert_eq(c.size_max, 5000);
}

Test(esmtp, only_valid_xtext_passes_as_envid_or_orcpt)
{
        cr_assert(esmtp_xtext_ok("a+2Bb+3Dc+20d+C3+A9", 100));
        cr_assert_not(esmtp_xtext_ok("a b", 100));
        cr_assert_not(esmtp_xtext_ok("a=b", 100));
        cr_assert_not(esmtp_xtext_ok("+0d", 100), "lower-case hex");
        cr_assert_not(esmtp_xtext_ok("ab+2", 100));
        cr_assert_not(esmtp_xtext_ok("x\r\nRSET", 100));
        cr_assert_not(esmtp_xtext_ok("\xc3\xa9", 100));
        cr_assert_not(esmtp_xtext_ok("abcdef", 5), "longer than the limit");
        cr_assert_not(esmtp_xtext_ok("", 5));
}

/* An ENVID or ORCPT that is not xtext (an envelope edited by hand, say)
 * never reaches the wire: the rest of the command goes without it. */
Test(esmtp, an_envid_or_orcpt_with_crlf_is_left_out_of_the_command)
{
        const char *kv[] = {"ehlo", EHLO_DSN, NULL};
        const char *rcpts[] = {"u@full.test"};
        const unsigned notify[] = {SMTPC_NOTIFY_FAILURE};
        const char *orcpt[] = {"rfc822;u@full.test\r\nRSET"};
        struct smtpc_request req = {.queue_id = "Q",
                                    .sender = "a@sender.test",
                                    .rcpts = rcpts,
                                    .n_rcpts = 1,
                                    .envid = "E\r\nRCPT TO:<evil@x.test>",
                                    .notify = notify,
                                    .orcpt = orcpt};
        struct outcome o;
        struct fixture_txn t;
        deliver(kv, &req, BODY7, &o, &t);
        char want[64];
        snprintf(want, sizeof(want), "SIZE=%zu", strlen(BODY7));
        cr_assert_str_eq(t.mail_params, want);
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpt_params[0], "NOTIFY=FAILURE");
        cr_assert_not(strstr(o.transcript, "evil"), "%s", o.transcript);
        fixture_txn_clear(&t);
        outcome_clear(&o);
}

Test(esmtp, an_orcpt_without_a_type_is_refused_not_sent)
{
        char out[256];
        struct esmtp_caps c = {.ext = ESMTP_DSN};
        struct esmtp_rcpt p = {.orcpt = "u@x.test"};
        cr_assert_eq(esmtp_rcpt_cmd(out, sizeof(out), "u@x.test", &p, &c), -EINVAL);
        p.orcpt = "rfc 822;u@x.test";
        cr_assert_eq(esmtp_rcpt_cmd(out, sizeof(out), "u@x.test", &p, &c), -EINVAL);
}

Test(esmtp, notify_lists_every_asked_keyword_in_rfc_order_and_a_short_buffer_is_enospc)
{
        char out[256];
        struct esmtp_caps c = {.ext = ESMTP_DSN};
        struct esmtp_rcpt p = {.notify = ESMTP_NOTIFY_SUCCESS | ESMTP_NOTIFY_FAILURE |
                                         ESMTP_NOTIFY_DELAY};
        cr_assert_eq(esmtp_rcpt_cmd(out, sizeof(out), "u@x.test", &p, &c), 0);
        cr_assert_str_eq(out, "RCPT TO:<u@x.test> NOTIFY=SUCCESS,FAILURE,DELAY\r\n");
        p.notify = ESMTP_NOTIFY_FAILURE | ESMTP_NOTIFY_DELAY;
        cr_assert_eq(esmtp_rcpt_cmd(out, sizeof(out), "u@x.test", &p, &c), 0);
        cr_assert_str_eq(out, "RCPT TO:<u@x.test> NOTIFY=FAILURE,DELAY\r\n");
        c.ext = 0; /* no DSN: no NOTIFY at all */
        cr_assert_eq(esmtp_rcpt_cmd(out, sizeof(out), "u@x.test", &p, &c), 0);
        cr_assert_str_eq(out, "RCPT TO:<u@x.test>\r\n");
        cr_assert_eq(esmtp_rcpt_cmd(out, 20, "u@x.test", &p, &c), -ENOSPC);
        struct esmtp_mail m = {0};
        cr_assert_eq(esmtp_mail_cmd(out, 22, "s@x.test", &m, &c), -ENOSPC);
        cr_assert_eq(esmtp_mail_cmd(out, 23, "s@x.test", &m, &c), 0);
        cr_assert_str_eq(out, "MAIL FROM:<s@x.test>\r\n");
}

/* ---- a server without 8BITMIME ---- */

Test(esmtp, an_8bit_body_goes_quoted_printable_to_a_server_without_8bitmime)
{
        char dir[] = "/tmp/tarry-esmtp-XXXXXX";
        cr_assert_not_null(mkdtemp(dir));
        const char *kv[] = {"ehlo", EHLO_BARE, "save_dir", dir, NULL};
        const char *rcpts[] = {"u@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "a@example.org", .rcpts = rcpts, .n_rcpts = 1};
        struct outcome o;
        struct fixture_txn t;
        deliver(kv, &req, BODY8, &o, &t);
        cr_assert_null(strstr(t.mail_params, "BODY="), "%s", t.mail_params);
        char path[300], buf[4096];
        snprintf(path, sizeof(path), "%s/1.eml", dir);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        for (size_t i = 0; i < n; i++)
                cr_assert_lt((unsigned char)buf[i], 0x80, "8-bit byte on the wire:\n%s", buf);
        cr_assert(strstr(buf, "Content-Transfer-Encoding: quoted-printable\r\n"), "%s", buf);
        cr_assert(strstr(buf, "\r\n\r\ngr=C3=BC=C3=9F dich\r\n"), "%s", buf);
        cr_assert(strstr(o.transcript, "quoted-printable"), "%s", o.transcript);
        fixture_txn_clear(&t);
        outcome_clear(&o);
        snprintf(path, sizeof(path), "rm -rf '%s'", dir);
        cr_assert_eq(system(path), 0);
}

Test(esmtp, an_8bit_message_that_cannot_be_converted_bounces_with_5_6_3)
{
        const char *kv[] = {"ehlo", EHLO_BARE, NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        const char *rcpts[] = {"u@x.test", "v@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "a@example.org", .rcpts = rcpts, .n_rcpts = 2};
        struct outcome o;
        test_deliver_req(cfg, &req, "Subject: gr\xc3\xbc\xc3\x9f\r\n\r\nhi\r\n", &o, 20);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE, "%s", o.text);
        for (int i = 0; i < 2; i++) {
                cr_assert_eq(o.r[i].outcome, SMTPC_RCPT_FAILED);
                cr_assert_eq(o.r[i].code, 554);
                cr_assert_str_eq(o.r[i].enhanced, "5.6.3");
                cr_assert(strstr(o.r[i].text, "no 8BITMIME") && strstr(o.r[i].text, "8-bit header"),
                          "%s", o.r[i].text);
        }
        cr_assert_eq(fixture_txn_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

/* ---- a server without SMTPUTF8 ---- */

Test(esmtp, idn_domains_become_a_labels_and_utf8_local_parts_have_no_ascii_form)
{
        char out[300];
        cr_assert_eq(esmtp_alabel("b\xc3\xbc"
                                  "cher.example",
                                  out, sizeof(out)),
                     0);
        cr_assert_str_eq(out, "xn--bcher-kva.example");
        cr_assert_eq(esmtp_alabel("Plain.Example", out, sizeof(out)), 0);
        cr_assert_str_eq(out, "Plain.Example");
        cr_assert_eq(esmtp_ascii_address("u@b\xc3\xbc"
                                         "cher.example",
                                         out, sizeof(out)),
                     0);
        cr_assert_str_eq(out, "u@xn--bcher-kva.example");
        cr_assert_eq(esmtp_ascii_address("j\xc3\xb6rg@x.test", out, sizeof(out)), -EILSEQ);
        cr_assert_eq(esmtp_alabel("\xff\xfe.example", out, sizeof(out)), -EINVAL);
}

/* DNS lookups and route keys use the A-label, whatever the server offers */
Test(esmtp, an_idn_recipient_domain_is_looked_up_as_its_a_label)
{
        struct tarry_config *cfg = test_cfg("[main]\nspool_dir = /nonexistent\n");
        struct smtpc_route r;
        cr_assert_eq(smtpc_route(cfg,
                                 "B\xc3\xbc"
                                 "cher.example",
                                 &r),
                     0);
        cr_assert_eq(r.kind, SMTPC_ROUTE_MX);
        cr_assert_str_eq(r.host, "xn--bcher-kva.example");
        cr_assert_str_eq(r.destination, "mx:xn--bcher-kva.example");
        cfg_free(cfg);
}

Test(esmtp, without_smtputf8_an_idn_domain_goes_as_a_label_and_a_utf8_local_part_bounces_5_6_7)
{
        const char *kv[] = {"ehlo", EHLO_BARE, NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        const char *rcpts[] = {"u@b\xc3\xbc"
                               "cher.test",
                               "j\xc3\xb6rg@x.test", "ok@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "a@example.org", .rcpts = rcpts, .n_rcpts = 3};
        struct outcome o;
        test_deliver_req(cfg, &req, BODY7, &o, 20);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE, "%s", o.text);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[0].text);
        cr_assert_eq(o.r[1].outcome, SMTPC_RCPT_FAILED);
        cr_assert_eq(o.r[1].code, 553);
        cr_assert_str_eq(o.r[1].enhanced, "5.6.7");
        cr_assert(strstr(o.r[1].text, "does not offer SMTPUTF8"), "%s", o.r[1].text);
        cr_assert_eq(o.r[2].outcome, SMTPC_RCPT_DELIVERED);
        cr_assert_eq(fixture_wait_txns(f, 1, 5000), 0);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 2);
        cr_assert_str_eq(t.rcpts[0], "u@xn--bcher-kva.test");
        cr_assert_str_eq(t.rcpts[1], "ok@x.test");
        cr_assert_null(strstr(t.mail_params, "SMTPUTF8"));
        fixture_txn_clear(&t);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(esmtp, without_smtputf8_a_utf8_sender_local_part_fails_every_recipient_5_6_7)
{
        const char *kv[] = {"ehlo", EHLO_BARE, NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        const char *rcpts[] = {"a@x.test", "b@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "j\xc3\xb6rg@example.org", .rcpts = rcpts, .n_rcpts = 2};
        struct outcome o;
        test_deliver_req(cfg, &req, BODY7, &o, 20);
        for (int i = 0; i < 2; i++) {
                cr_assert_eq(o.r[i].outcome, SMTPC_RCPT_FAILED);
                cr_assert_str_eq(o.r[i].enhanced, "5.6.7");
                cr_assert(strstr(o.r[i].text, "sender address"), "%s", o.r[i].text);
        }
        cr_assert_eq(fixture_txn_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

/* A recipient refused before sending is skipped: the replies of the others
 * still pair with the right recipients (they used to shift by one). */
static void refused_first(const char *ehlo)
{
        const char *kv[] = {"ehlo", ehlo, "rcpt:two@x.test", "550 5.1.1 unknown", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        const char *rcpts[] = {"bad\nRSET@x.test", "one@x.test", "two@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q", .sender = "a@example.org", .rcpts = rcpts, .n_rcpts = 3};
        struct outcome o;
        test_deliver_req(cfg, &req, BODY7, &o, 20);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_FAILED);
        cr_assert_str_eq(o.r[0].enhanced, "5.1.3");
        cr_assert_eq(o.r[1].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[1].text);
        cr_assert_eq(o.r[2].outcome, SMTPC_RCPT_FAILED, "%s", o.r[2].text);
        cr_assert_str_eq(o.r[2].text, "550 5.1.1 unknown");
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(esmtp, a_locally_refused_recipient_does_not_shift_the_replies_pipelined)
{
        refused_first("250-fixture.test\n250 PIPELINING");
}

Test(esmtp, a_locally_refused_recipient_does_not_shift_the_replies_without_pipelining)
{
        refused_first(EHLO_BARE);
}

/* ---- connections kept between messages ---- */

struct two {
        struct outcome o[2];
        int done;
};

static void on_two(const struct smtpc_result *res, void *userdata)
{
        struct two *t = userdata;
        outcome_capture(res, &t->o[t->done++]);
}

/* Two messages one after the other on one client. */
static void run_two(struct tarry_config *cfg, const char *rcpt0, const char *rcpt1, struct two *t)
{
        sd_event *e;
        struct smtpc *c;
        memset(t, 0, sizeof(*t));
        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(smtpc_new(e, cfg, &c), 0);
        int fd = test_body(BODY7, strlen(BODY7));
        const char *r[2][1] = {{rcpt0}, {rcpt1}};
        for (int i = 0; i < 2; i++) {
                struct smtpc_request req = {.queue_id = "Q",
                                            .sender = "a@example.org",
                                            .rcpts = r[i],
                                            .n_rcpts = 1,
                                            .body_fd = fd,
                                            .body_size = strlen(BODY7),
                                            .done = on_two,
                                            .userdata = t};
                cr_assert_eq(smtpc_attempt_start(c, &req), 0);
        }
        close(fd);
        int64_t end = now_monotonic_us() + 20000000;
        while (t->done < 2 && now_monotonic_us() < end)
                sd_event_run(e, 100000);
        cr_assert_eq(t->done, 2);
        smtpc_free(c);
        sd_event_unref(e);
}

/* After a transaction that ended before DATA (every recipient refused) the
 * connection is reset with RSET and carries the next message; the RSET's
 * reply is read in the same batch as the next MAIL's. */
Test(esmtp, after_a_refused_transaction_rset_lets_the_connection_carry_the_next_message)
{
        const char *kv[] = {"rcpt:bad@x.test", "550 5.1.1 unknown", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        cfg->destination_concurrency = 1;
        struct two t;
        run_two(cfg, "bad@x.test", "good@x.test", &t);
        cr_assert_eq(t.o[0].r[0].outcome, SMTPC_RCPT_FAILED);
        cr_assert_str_eq(t.o[0].r[0].text, "550 5.1.1 unknown");
        cr_assert(strstr(t.o[0].transcript, "> RSET"), "%s", t.o[0].transcript);
        cr_assert_eq(t.o[1].r[0].outcome, SMTPC_RCPT_DELIVERED, "%s\n%s", t.o[1].r[0].text,
                     t.o[1].transcript);
        cr_assert_eq(fixture_connection_count(f), 1);
        cr_assert_eq(fixture_wait_txns(f, 1, 5000), 0);
        for (int i = 0; i < 2; i++)
                outcome_clear(&t.o[i]);
        cfg_free(cfg);
        fixture_free(f);
}

/* A kept connection the server closed meanwhile (an idle timeout shorter
 * than ours) costs nothing: the next message gets a new connection. */
Test(esmtp, a_kept_connection_closed_by_the_server_is_replaced_for_the_next_message)
{
        const char *kv[] = {"rcpt:bad@x.test", "421 4.4.2 closing", NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        cfg->destination_concurrency = 1;
        struct two t;
        run_two(cfg, "bad@x.test", "good@x.test", &t);
        cr_assert_eq(t.o[0].r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_eq(t.o[1].r[0].outcome, SMTPC_RCPT_DELIVERED, "%s\n%s", t.o[1].r[0].text,
                     t.o[1].transcript);
        /* after a 421 the channel is the server's to close: nothing more is
         * sent on it (no RSET, no QUIT) and the next message connects anew */
        cr_assert_eq(fixture_connection_count(f), 2, "the 421 connection was used again\n%s",
                     t.o[1].transcript);
        cr_assert_null(strstr(t.o[0].transcript, "> RSET"), "%s", t.o[0].transcript);
        for (int i = 0; i < 2; i++)
                outcome_clear(&t.o[i]);
        cfg_free(cfg);
        fixture_free(f);
}

/* A DKIM-signed 8-bit message is never converted: the signature covers the
 * exact bytes (a converted copy fails DKIM, and DMARC treats it as forged). */
Test(esmtp, a_dkim_signed_8bit_message_is_not_converted_but_bounces_5_6_3)
{
        const char *kv[] = {"ehlo", EHLO_BARE, NULL};
        struct fixture *f = test_fixture(NULL, kv);
        struct tarry_config *cfg = cfg_to(f);
        const char *rcpts[] = {"u@x.test"};
        struct smtpc_request req = {.queue_id = "Q",
                                    .sender = "a@example.org",
                                    .rcpts = rcpts,
                                    .n_rcpts = 1,
                                    .body_signed = true};
        struct outcome o;
        test_deliver_req(cfg, &req, BODY8, &o, 20);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_FAILED);
        cr_assert_str_eq(o.r[0].enhanced, "5.6.3");
        cr_assert(strstr(o.r[0].text, "DKIM-signed"), "%s", o.r[0].text);
        cr_assert_eq(fixture_txn_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}
