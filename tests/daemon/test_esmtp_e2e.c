/* tests/daemon/test_esmtp_e2e.c — sendmail's RFC 3461 request end to end:
 * `sendmail -N … -R … -V …` reaches a receiver that offers DSN as MAIL/RCPT
 * parameters; to a receiver without DSN, NOTIFY=SUCCESS brings the sender
 * one "relayed" DSN (and NOTIFY=NEVER nothing). Real tarryd and sendmail;
 * the sender's domain is routed to a second fixture that receives the DSNs. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define EHLO_DSN "250-rcpt.test\n250-PIPELINING\n250-SIZE 10000000\n250-DSN\n250 8BITMIME"
#define BODY     "Subject: notify me\nTo: <u@full.test>\n\nhello\n"

struct setup {
        struct fixture *rcpt, *sender;
        struct harness h;
        char saved[300];
};

static void start(struct setup *s, const char *ehlo)
{
        cr_assert_eq(fixture_new("127.0.0.1", &s->rcpt), 0);
        cr_assert_eq(fixture_new("127.0.0.1", &s->sender), 0);
        if (ehlo)
                cr_assert_eq(fixture_set(s->rcpt, "ehlo", ehlo), 0);
        cr_assert_eq(fixture_start(s->rcpt, 0), 0);
        snprintf(s->saved, sizeof(s->saved), "/tmp/tarry-relayed-XXXXXX");
        cr_assert_not_null(mkdtemp(s->saved));
        fixture_set(s->sender, "save_dir", s->saved);
        cr_assert_eq(fixture_start(s->sender, 0), 0);
        char extra[1024];
        snprintf(extra, sizeof(extra),
                 "[transport]\nfull.test = [127.0.0.1]:%u\nsender.test = [127.0.0.1]:%u\n",
                 fixture_port(s->rcpt), fixture_port(s->sender));
        harness_init(&s->h, extra);
        harness_start(&s->h);
}

static void stop(struct setup *s)
{
        cr_assert_eq(harness_stop(&s->h, SIGTERM, 5000), 0);
        harness_cleanup(&s->h);
        fixture_free(s->rcpt);
        fixture_free(s->sender);
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->saved);
        cr_assert_eq(system(cmd), 0);
}

static void submit(struct setup *s, const char *notify)
{
        const char *args[] = {"-f", "a@sender.test", "-N",          notify, "-R", "hdrs",
                              "-V", "inv-42",        "u@full.test", NULL};
        cr_assert_eq(harness_sendmail(&s->h, BODY, args), 0);
}

/* Everything (the message and any DSN it caused) has left the queue. */
static void wait_queue_empty(struct setup *s)
{
        int64_t end = harness_now_us() + 30000000;
        while (harness_now_us() < end && (harness_count_queued(&s->h, "incoming") +
                                          harness_count_queued(&s->h, "active")) > 0)
                harness_sleep_ms(50);
        cr_assert_eq(harness_count_queued(&s->h, "active"), 0, "still queued after 30 s");
}

Test(esmtp_e2e, sendmail_dsn_request_reaches_a_server_that_offers_dsn)
{
        struct setup s;
        start(&s, EHLO_DSN);
        submit(&s, "success,delay");
        cr_assert_eq(fixture_wait_txns(s.rcpt, 1, 20000), 0, "not delivered");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(s.rcpt, 0, &t), 0);
        cr_assert(strstr(t.mail_params, "RET=HDRS ENVID=inv-42"), "%s", t.mail_params);
        cr_assert_str_eq(t.rcpt_params[0], "NOTIFY=SUCCESS,DELAY");
        fixture_txn_clear(&t);
        wait_queue_empty(&s);
        cr_assert_eq(fixture_txn_count(s.sender), 0, "the next hop reports success, not tarry");
        stop(&s);
}

Test(esmtp_e2e, notify_success_to_a_server_without_dsn_brings_one_relayed_dsn)
{
        struct setup s;
        start(&s, NULL); /* the fixture's default EHLO has no DSN */
        submit(&s, "success");
        cr_assert_eq(fixture_wait_txns(s.rcpt, 1, 20000), 0, "not delivered");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(s.rcpt, 0, &t), 0);
        cr_assert_str_eq(t.rcpt_params[0], "", "NOTIFY sent to a server without DSN");
        cr_assert_null(strstr(t.mail_params, "RET="), "%s", t.mail_params);
        fixture_txn_clear(&t);
        cr_assert_eq(fixture_wait_txns(s.sender, 1, 20000), 0, "no relayed DSN arrived");
        wait_queue_empty(&s);
        cr_assert_eq(fixture_txn_count(s.sender), 1, "exactly one DSN");
        cr_assert_eq(fixture_txn_get(s.sender, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "");
        cr_assert_str_eq(t.rcpts[0], "a@sender.test");
        fixture_txn_clear(&t);
        char path[400], buf[16384];
        snprintf(path, sizeof(path), "%s/1.eml", s.saved);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        cr_assert(strstr(buf, "Action: relayed"), "%s", buf);
        cr_assert(strstr(buf, "Status: 2.0.0"), "%s", buf);
        cr_assert(strstr(buf, "Original-Envelope-Id: inv-42"), "%s", buf);
        cr_assert(strstr(buf, "Final-Recipient: rfc822; u@full.test"), "%s", buf);
        stop(&s);
}

Test(esmtp_e2e, notify_never_brings_nothing)
{
        struct setup s;
        start(&s, NULL);
        submit(&s, "never");
        cr_assert_eq(fixture_wait_txns(s.rcpt, 1, 20000), 0, "not delivered");
        wait_queue_empty(&s);
        cr_assert_eq(fixture_txn_count(s.sender), 0);
        stop(&s);
}
