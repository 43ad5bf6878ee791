/* tests/cleanup/test_cleanup.c — taking a message in: Received:, hops, adminaddr. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup/cleanup.h"

#define ARRIVAL_US (1796644800LL * 1000000) /* Mon, 07 Dec 2026 12:00:00 +0000 */

static void setup(void)
{
        setenv("TZ", "UTC", 1);
        tzset();
}

TestSuite(cleanup, .init = setup);

static struct tarry_config *config(const char *extra)
{
        char text[1024], err[256] = "";
        snprintf(text, sizeof text, "[main]\nmyhostname = host.example.net\n%s",
                 extra ? extra : "");
        struct tarry_config *cfg = NULL;
        cr_assert_eq(cfg_load_string("tarry.conf", text, &cfg, err, sizeof err), 0, "%s", err);
        return cfg;
}

static struct envelope *message(uid_t uid, const char *const *rcpts)
{
        struct envelope *e = envelope_new();
        cr_assert_not_null(e);
        snprintf(e->id, sizeof e->id, "0123456789ABCDEF");
        e->uid = uid;
        e->arrival_us = ARRIVAL_US; /* the Received: date */
        for (; *rcpts; rcpts++)
                cr_assert_not_null(envelope_add_rcpt(e, *rcpts));
        return e;
}

static int hops_in(const char *text)
{
        int hops = -1;
        cr_assert_eq(cleanup_count_hops_mem(text, strlen(text), &hops), 0);
        return hops;
}

Test(cleanup, received_header_is_written_as_postfix_does_for_a_local_submission)
{
        struct tarry_config *cfg = config(NULL);
        struct envelope *e = message(1000, (const char *const[]){"bob@example.com", NULL});
        struct cleanup_result res;
        cr_assert_eq(cleanup_message(e, 0, &(struct cleanup_policy){cfg}, &res), 0);
        cr_assert_str_eq(e->headers,
                         "Received: by host.example.net (tarry, from userid 1000)\r\n"
                         "\tid 0123456789ABCDEF\r\n"
                         "\tfor <bob@example.com>; Mon, 07 Dec 2026 12:00:00 +0000\r\n");
        cr_assert_eq(e->n_rcpt, 1);
        cr_assert_str_eq(e->rcpt[0].address, "bob@example.com");
        cr_assert_null(e->rcpt[0].orcpt);
        envelope_free(e);
        cfg_free(cfg);
}

Test(cleanup, received_header_names_no_recipient_when_there_are_several_nor_a_user_for_a_dsn)
{
        struct tarry_config *cfg = config(NULL);
        struct envelope *e =
            message((uid_t)-1, (const char *const[]){"a@x.test", "b@x.test", NULL});
        e->is_dsn = true;
        struct cleanup_result res;
        cr_assert_eq(cleanup_message(e, 0, &(struct cleanup_policy){cfg}, &res), 0);
        cr_assert_str_eq(e->headers, "Received: by host.example.net (tarry)\r\n"
                                     "\tid 0123456789ABCDEF; Mon, 07 Dec 2026 12:00:00 +0000\r\n");
        envelope_free(e);
        cfg_free(cfg);
}

Test(cleanup, taking_a_message_in_twice_changes_nothing)
{
        struct tarry_config *cfg = config("adminaddr = admin@example.com\n");
        struct envelope *e = message(0, (const char *const[]){"root@host.example.net", NULL});
        struct cleanup_result res;
        cr_assert_eq(cleanup_message(e, 0, &(struct cleanup_policy){cfg}, &res), 0);
        char *first = strdup(e->headers);
        cr_assert_eq(cleanup_message(e, 60, &(struct cleanup_policy){cfg}, &res), 0);
        cr_assert_str_eq(e->headers, first);
        cr_assert_eq(e->n_rcpt, 1);
        cr_assert_str_eq(e->rcpt[0].address, "admin@example.com");
        cr_assert_not(res.loop);
        free(first);
        envelope_free(e);
        cfg_free(cfg);
}

Test(cleanup, hops_are_the_received_fields_of_the_header_block_only)
{
        cr_assert_eq(hops_in("Received: a\r\nreceived : b\r\n\tfolded\r\nX-Received: c\r\n"
                             "Subject: x\r\n\r\nReceived: in the body\r\n"),
                     2);
        cr_assert_eq(hops_in("Received: a\nReceived: b\n\nReceived: c\n"), 2);
        cr_assert_eq(hops_in(""), 0);
        cr_assert_eq(hops_in("Subject: no body and no end"), 0);
}

Test(cleanup, hopcount_limit_received_headers_bounce_every_recipient_with_5_4_6)
{
        struct tarry_config *cfg = config(NULL);
        cr_assert_eq(cfg->hopcount_limit, 50);
        struct envelope *e = message(0, (const char *const[]){"a@x.test", "b@x.test", NULL});
        struct cleanup_result res;
        cr_assert_eq(cleanup_message(e, 49, &(struct cleanup_policy){cfg}, &res), 0);
        cr_assert_not(res.loop, "49 hops are fine");
        cr_assert_eq(e->rcpt[0].state, RCPT_PENDING);
        free(e->headers);
        e->headers = NULL;
        cr_assert_eq(cleanup_message(e, 50, &(struct cleanup_policy){cfg}, &res), 0);
        cr_assert(res.loop);
        for (size_t i = 0; i < 2; i++) {
                cr_assert_eq(e->rcpt[i].state, RCPT_FAILED);
                cr_assert_str_eq(e->rcpt[i].dsn_status, "5.4.6");
                cr_assert_eq(e->rcpt[i].reply_code, 0, "tarry's words, not a server's");
                cr_assert_str_eq(e->rcpt[i].last_reply,
                                 "message has 50 Received: headers, hopcount_limit is 50: mail "
                                 "forwarding loop");
        }
        envelope_free(e);
        cfg_free(cfg);
}

Test(cleanup, local_recipients_go_to_adminaddr_with_orcpt_and_x_original_to)
{
        struct tarry_config *cfg = config("adminaddr = admin@example.com, ops@example.com\n");
        struct envelope *e =
            message(0, (const char *const[]){"root@host.example.net", "bob@example.com",
                                             "www-data@LOCALHOST", NULL});
        e->rcpt[2].orcpt = strdup("rfc822;www-data");
        e->rcpt[2].notify = NOTIFY_FAILURE;
        struct cleanup_result res;
        cr_assert_eq(cleanup_message(e, 0, &(struct cleanup_policy){cfg}, &res), 0);
        cr_assert_eq(res.n_rewritten, 2);
        cr_assert_eq(e->n_rcpt, 3, "each admin address once");
        cr_assert_str_eq(e->rcpt[0].address, "admin@example.com");
        cr_assert_str_eq(e->rcpt[0].orcpt, "rfc822;root@host.example.net");
        cr_assert_str_eq(e->rcpt[1].address, "ops@example.com");
        cr_assert_str_eq(e->rcpt[1].orcpt, "rfc822;root@host.example.net");
        cr_assert_str_eq(e->rcpt[2].address, "bob@example.com");
        cr_assert_null(e->rcpt[2].orcpt);
        cr_assert(strstr(e->headers, "\r\nX-Original-To: root@host.example.net\r\n"
                                     "X-Original-To: www-data@LOCALHOST\r\n"),
                  "%s", e->headers);
        envelope_free(e);
        cfg_free(cfg);
}

Test(cleanup, without_adminaddr_local_names_are_left_alone)
{
        struct tarry_config *cfg = config(NULL);
        struct envelope *e = message(0, (const char *const[]){"root@host.example.net", NULL});
        struct cleanup_result res;
        cr_assert_eq(cleanup_message(e, 0, &(struct cleanup_policy){cfg}, &res), 0);
        cr_assert_eq(res.n_rewritten, 0);
        cr_assert_str_eq(e->rcpt[0].address, "root@host.example.net");
        cr_assert_null(strstr(e->headers, "X-Original-To"));
        envelope_free(e);
        cfg_free(cfg);
}

Test(cleanup, the_added_headers_survive_the_envelope_file)
{
        struct tarry_config *cfg = config("adminaddr = admin@example.com\n");
        struct envelope *e = message(0, (const char *const[]){"root@localhost", NULL});
        struct cleanup_result res;
        cr_assert_eq(cleanup_message(e, 0, &(struct cleanup_policy){cfg}, &res), 0);
        json_t *j = envelope_to_json(e);
        char *text = json_dumps(j, 0);
        struct envelope *back = NULL;
        const char *why = NULL;
        cr_assert_eq(envelope_from_json(text, strlen(text), &back, &why), 0, "%s", why);
        cr_assert_str_eq(back->headers, e->headers);
        cr_assert_str_eq(back->rcpt[0].orcpt, "rfc822;root@localhost");
        envelope_free(back);
        free(text);
        json_decref(j);
        envelope_free(e);
        cfg_free(cfg);
}
