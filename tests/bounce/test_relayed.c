/* tests/bounce/test_relayed.c — the "relayed" DSN (RFC 3461 4.1, RFC 3464
 * 2.3.3): NOTIFY=SUCCESS recipients delivered to a server without DSN.
 * Reports are read back by parse_dsn.py (Python's email parser). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bounce/bounce.h"
#include "tests/bounce/parse.h"

#define SEC    1000000LL
#define NOW_US (1700000000LL * SEC)

static const char ORIGINAL[] = "From: App <app@sender.test>\r\n"
                               "To: rcpt@dest.test\r\n"
                               "Subject: Invoice 42\r\n"
                               "\r\n"
                               "the secret body line.\r\n";

static struct dsn_policy policy(void)
{
        return (struct dsn_policy){
            .myhostname = "mx.tarry.test", .queue_lifetime_s = 86400, .delay_dsn_after_retries = 2};
}

static struct envelope *message(unsigned notify, enum dsn_ret ret)
{
        struct envelope *e = envelope_new();
        cr_assert_not_null(e);
        free(e->sender);
        e->sender = strdup("app@sender.test");
        snprintf(e->id, sizeof e->id, "0000000100000ABC");
        e->arrival_us = NOW_US - 60 * SEC;
        e->size = sizeof ORIGINAL - 1;
        e->ret = ret;
        e->envid = strdup("inv+2D42");
        struct envelope_rcpt *r = envelope_add_rcpt(e, "rcpt@dest.test");
        cr_assert_not_null(r);
        r->state = RCPT_DELIVERED;
        r->notify = notify;
        r->relayed_dsn_owed = true;
        r->attempts = 1;
        r->reply_code = 250;
        r->dsn_status = strdup("2.0.0");
        r->last_reply = strdup("250 2.0.0 Ok: queued as 4XyZ");
        r->relay = strdup("mx.dest.test[192.0.2.25]:25");
        r->last_attempt_us = NOW_US - 5 * SEC;
        return e;
}

static int build(const struct envelope *e, struct dsn_report **rep)
{
        struct dsn_policy p = policy();
        struct dsn_original o = {.fd = -1, .data = ORIGINAL, .size = sizeof ORIGINAL - 1};
        return dsn_build_relayed(e, &o, &p, NOW_US, rep);
}

static const char *group_field(json_t *j, size_t g, const char *name)
{
        json_t *p = json_array_get(json_object_get(j, "parts"), 1);
        cr_assert_str_eq(json_string_value(json_object_get(p, "content_type")),
                         "message/delivery-status");
        json_t *groups = json_object_get(p, "groups");
        cr_assert_lt(g, json_array_size(groups));
        return json_string_value(json_object_get(json_array_get(groups, g), name));
}

Test(relayed, notify_success_to_a_server_without_dsn_gets_a_relayed_report)
{
        struct envelope *e = message(NOTIFY_SUCCESS | NOTIFY_FAILURE, DSN_RET_FULL);
        struct dsn_report *rep = NULL;
        cr_assert_eq(build(e, &rep), 1);
        cr_assert_eq(rep->kind, DSN_RELAYED);
        cr_assert_str_eq(rep->env->rcpt[0].address, "app@sender.test");
        cr_assert_str_eq(rep->env->sender, "");
        json_t *j = dsn_parse_report(rep);
        json_t *h = json_object_get(j, "headers");
        cr_assert_str_eq(json_string_value(json_array_get(json_object_get(h, "subject"), 0)),
                         "Successful Mail Delivery Report");
        cr_assert_str_eq(group_field(j, 0, "original-envelope-id"), "inv-42");
        cr_assert_str_eq(group_field(j, 1, "action"), "relayed");
        cr_assert_str_eq(group_field(j, 1, "status"), "2.0.0");
        cr_assert_str_eq(group_field(j, 1, "final-recipient"), "rfc822; rcpt@dest.test");
        cr_assert_str_eq(group_field(j, 1, "remote-mta"), "dns; mx.dest.test");
        cr_assert_str_eq(group_field(j, 1, "diagnostic-code"),
                         "smtp; 250 2.0.0 Ok: queued as 4XyZ");
        /* RET=FULL is for failures: a success report carries headers only */
        cr_assert_null(strstr(rep->message, "the secret body line"));
        cr_assert_not_null(strstr(rep->message, "Subject: Invoice 42"));
        /* once queued, it is never owed again */
        cr_assert_eq(dsn_mark_sent(e, rep), 0);
        cr_assert_not(e->rcpt[0].relayed_dsn_owed);
        cr_assert_eq(dsn_relayed_pending(e), 0);
        json_decref(j);
        dsn_report_free(rep);
        envelope_free(e);
}

Test(relayed, nothing_for_notify_never_default_or_failure_only)
{
        const unsigned notify[] = {NOTIFY_NEVER, 0, NOTIFY_FAILURE | NOTIFY_DELAY};
        for (size_t i = 0; i < 3; i++) {
                struct envelope *e = message(notify[i], DSN_RET_DEFAULT);
                struct dsn_report *rep = (void *)1;
                cr_assert_eq(build(e, &rep), 0, "NOTIFY bits %u", notify[i]);
                cr_assert_null(rep);
                envelope_free(e);
        }
}

Test(relayed, nothing_when_the_next_hop_took_the_notify_itself)
{
        struct envelope *e = message(NOTIFY_SUCCESS, DSN_RET_DEFAULT);
        e->rcpt[0].relayed_dsn_owed = false; /* the server offered DSN */
        struct dsn_report *rep = (void *)1;
        cr_assert_eq(build(e, &rep), 0);
        cr_assert_null(rep);
        envelope_free(e);
}

Test(relayed, the_owed_flag_survives_a_restart)
{
        struct envelope *e = message(NOTIFY_SUCCESS, DSN_RET_DEFAULT);
        json_t *o = envelope_to_json(e);
        cr_assert_not_null(o);
        char *json = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        struct envelope *back = NULL;
        const char *why = NULL;
        cr_assert_eq(envelope_from_json(json, strlen(json), &back, &why), 0, "%s", why ? why : "");
        cr_assert(back->rcpt[0].relayed_dsn_owed);
        cr_assert_eq(dsn_relayed_pending(back), 1);
        free(json);
        envelope_free(back);
        envelope_free(e);
}
