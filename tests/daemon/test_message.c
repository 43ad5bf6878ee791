/* tests/daemon/test_message.c — a message's lifecycle in a running tarryd
 * (daemon/message.c): quarantined the same way whenever its envelope turns
 * out unreadable (at pickup, at a retry, at release from hold), and counted
 * in /status and /metrics as the listing shows it (a held message is held,
 * not deferred). Before message.c these paths were written twice and had
 * drifted.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/status_client.h"
#include "harness.h"
#include "queue/msgfile.h"
#include "tests/fixture/fixture.h"

#define WAIT_MS 30000

struct setup {
        struct fixture *f;
        struct harness h;
        struct status_client *c; /* the unix socket: every view, admin actions */
};

/* example.test greylists for an hour: whatever is sent there stays deferred. */
static void init(struct setup *s)
{
        cr_assert_eq(fixture_new("127.0.0.1", &s->f), 0);
        fixture_set(s->f, "greylist", "3600");
        cr_assert_eq(fixture_start(s->f, 0), 0);
        char extra[512];
        snprintf(extra, sizeof(extra), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(s->f));
        harness_init(&s->h, extra);
}

static void start(struct setup *s)
{
        harness_start(&s->h);
        char u[400];
        snprintf(u, sizeof(u), "unix:%s/status.sock", s->h.dir);
        const char *ul[] = {u, NULL};
        cr_assert_eq(status_client_new(ul, &s->c), 0);
}

static void stop(struct setup *s)
{
        status_client_free(s->c);
        cr_assert_eq(harness_stop(&s->h, SIGTERM, 5000), 0);
        harness_cleanup(&s->h);
        fixture_free(s->f);
}

static json_t *get(struct setup *s, const char *path)
{
        long code = 0;
        json_t *j = NULL;
        int r = status_client_request_json(s->c, "GET", path, &code, &j);
        cr_assert_eq(r, 0, "GET %s: %d %s", path, r, status_client_last_error(s->c));
        cr_assert_eq(code, 200, "GET %s answered %ld", path, code);
        return j;
}

static long post(struct setup *s, const char *path)
{
        long code = 0;
        char *body = NULL;
        size_t len;
        cr_assert_eq(status_client_request(s->c, "POST", path, &code, &body, &len), 0);
        free(body);
        return code;
}

/* /status queue.FIELD */
static json_int_t queue_count(struct setup *s, const char *field)
{
        json_t *st = get(s, "/status");
        json_int_t n = json_integer_value(json_object_get(json_object_get(st, "queue"), field));
        json_decref(st);
        return n;
}

static json_int_t by_class(struct setup *s, const char *cls)
{
        json_t *st = get(s, "/status");
        json_int_t n = json_integer_value(json_object_get(json_object_get(st, "by_class"), cls));
        json_decref(st);
        return n;
}

/* Wait until /status says queue.FIELD is n. */
static void wait_count(struct setup *s, const char *field, json_int_t n)
{
        json_int_t got = -1;
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000; harness_now_us() < end;
             harness_sleep_ms(20))
                if ((got = queue_count(s, field)) == n)
                        return;
        cr_assert_fail("queue.%s stayed %lld, not %lld", field, (long long)got, (long long)n);
}

/* The ID of the only message in spool/DIR. */
static void only_id(struct setup *s, const char *dir, char *id, size_t len)
{
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "ls %s/%s", s->h.spool, dir);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        id[0] = '\0';
        cr_assert_not_null(fgets(id, (int)len, p), "nothing in %s/", dir);
        pclose(p);
        id[strcspn(id, "\n")] = '\0';
}

/* A message file (incoming/ since issue 19: body, envelope, trailer) whose
 * envelope's first byte is changed, atomically: its checksum refuses it. */
static void garble_message_file(const char *path)
{
        FILE *in = fopen(path, "r");
        cr_assert_not_null(in, "%s", path);
        static char buf[1 << 16];
        size_t n = fread(buf, 1, sizeof(buf), in);
        fclose(in);
        cr_assert_gt(n, MSGFILE_TRAILER_LEN);
        unsigned long long body_len = 0;
        cr_assert_eq(sscanf(buf + n - MSGFILE_TRAILER_LEN, MSGFILE_MAGIC "%*16s %20llu", &body_len),
                     1);
        cr_assert_eq(buf[body_len], '{');
        buf[body_len] = '[';
        char tmp[700];
        snprintf(tmp, sizeof(tmp), "%s.garbled", path);
        FILE *f = fopen(tmp, "w");
        cr_assert_not_null(f, "%s", tmp);
        cr_assert_eq(fwrite(buf, 1, n, f), n);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(rename(tmp, path), 0);
}

/* Replace spool/DIR/ID/envelope, atomically, with something that is not one. */
static void garble(struct setup *s, const char *dir, const char *id)
{
        char tmp[600], env[600];
        struct stat st;
        snprintf(env, sizeof(env), "%s/%s/%s", s->h.spool, dir, id);
        if (lstat(env, &st) == 0 && S_ISREG(st.st_mode)) {
                garble_message_file(env);
                return;
        }
        snprintf(tmp, sizeof(tmp), "%s/%s/%s/envelope.garbled", s->h.spool, dir, id);
        snprintf(env, sizeof(env), "%s/%s/%s/envelope", s->h.spool, dir, id);
        FILE *f = fopen(tmp, "w");
        cr_assert_not_null(f, "%s", tmp);
        fputs("{\"this is\": not an envelope", f);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(rename(tmp, env), 0);
}

static long corrupt_metric(struct setup *s)
{
        return harness_metric(&s->h, "tarry_spool_errors_total{kind=\"corrupt\"}");
}

/* One garbled envelope found at pickup, another found when its retry comes:
 * both end in corrupt/, counted, logged with the reason, and listed
 * nowhere. (The copy at retry time counted nothing in /metrics.) */
Test(message_e2e, a_garbled_envelope_is_quarantined_alike_at_pickup_and_at_a_retry, .timeout = 180)
{
        struct setup s;
        init(&s);
        start(&s); /* a first run creates the spool, as installation would */
        status_client_free(s.c);
        cr_assert_eq(harness_stop(&s.h, SIGTERM, 5000), 0);
        /* committed while tarryd is stopped, garbled in incoming/ */
        harness_send(&s.h, "alice@sender.test", "one@example.test", "garbled at pickup");
        char id[64];
        only_id(&s, "incoming", id, sizeof(id));
        garble(&s, "incoming", id);
        start(&s);
        wait_count(&s, "corrupt", 1);
        cr_assert_eq(corrupt_metric(&s), 1);

        harness_send(&s.h, "alice@sender.test", "two@example.test", "garbled at a retry");
        wait_count(&s, "deferred", 1);
        only_id(&s, "active", id, sizeof(id));
        garble(&s, "active", id);
        char path[200];
        snprintf(path, sizeof(path), "/queue/%s/retry", id);
        post(&s, path); /* the attempt reads the envelope */
        wait_count(&s, "corrupt", 2);
        cr_assert_eq(harness_count_queued(&s.h, "corrupt"), 2);
        cr_assert_eq(harness_count_queued(&s.h, "active"), 0);
        cr_assert_eq(corrupt_metric(&s), 2, "the quarantine at a retry was not counted");
        cr_assert_eq(harness_log_count(&s.h, "; moved to corrupt/"), 2);
        cr_assert_eq(queue_count(&s, "total"), 0);
        json_t *q = get(&s, "/queue");
        cr_assert_eq(json_integer_value(json_object_get(q, "total")), 0);
        json_decref(q);
        cr_assert(harness_running(&s.h));
        stop(&s);
}

/* A held message whose envelope is garbled while it is held: released, it
 * is quarantined, and leaves the index (it was counted in hold for good). */
Test(message_e2e, a_held_message_garbled_in_hold_is_quarantined_at_release, .timeout = 180)
{
        struct setup s;
        init(&s);
        start(&s);
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "held, then garbled");
        wait_count(&s, "deferred", 1);
        char id[64], path[200];
        only_id(&s, "active", id, sizeof(id));
        snprintf(path, sizeof(path), "/queue/%s/hold", id);
        cr_assert_eq(post(&s, path), 200);
        wait_count(&s, "hold", 1);
        garble(&s, "hold", id);
        snprintf(path, sizeof(path), "/queue/%s/release", id);
        post(&s, path);
        wait_count(&s, "corrupt", 1);
        cr_assert_eq(queue_count(&s, "hold"), 0, "the quarantined message is still counted");
        cr_assert_eq(queue_count(&s, "total"), 0);
        cr_assert_eq(corrupt_metric(&s), 1);
        snprintf(path, sizeof(path), "/queue/%s", id);
        long code = 0;
        json_t *j = NULL;
        cr_assert_eq(status_client_request_json(s.c, "GET", path, &code, &j), 0);
        cr_assert_eq(code, 404, "GET %s answered %ld", path, code);
        json_decref(j);
        stop(&s);
}

/* A greylisted message put on hold is held, not deferred: /status counts
 * it once (hold), by_class and the deferred series of /metrics not at all,
 * as its listing says; released, it is deferred for greylisting again. And
 * the same is read after a restart that summarises it from the spool
 * (pickup) rather than from its last attempt (delivery). */
Test(message_e2e, a_held_message_is_counted_as_held_live_and_after_a_restart, .timeout = 180)
{
        struct setup s;
        init(&s);
        start(&s);
        harness_send(&s.h, "alice@sender.test", "a@example.test", "stays deferred");
        harness_send(&s.h, "alice@sender.test", "b@example.test", "will be held");
        wait_count(&s, "deferred", 2);
        cr_assert_eq(by_class(&s, "greylist"), 2);
        json_t *q = get(&s, "/queue");
        const char *held = json_string_value(
            json_object_get(json_array_get(json_object_get(q, "messages"), 1), "queue_id"));
        char id[64], path[200];
        snprintf(id, sizeof(id), "%s", held);
        json_decref(q);
        snprintf(path, sizeof(path), "/queue/%s/hold", id);
        cr_assert_eq(post(&s, path), 200);
        wait_count(&s, "hold", 1);

        for (int round = 0; round < 2; round++) {
                const char *when = round == 0 ? "live" : "after a restart";
                cr_assert_eq(queue_count(&s, "deferred"), 1, "%s", when);
                cr_assert_eq(queue_count(&s, "hold"), 1, "%s", when);
                cr_assert_eq(by_class(&s, "greylist"), 1, "%s: the held message counted", when);
                cr_assert_eq(
                    harness_metric(&s.h,
                                   "tarry_queue_messages{state=\"deferred\",class=\"greylist\"}"),
                    1, "%s", when);
                snprintf(path, sizeof(path), "/queue/%s", id);
                json_t *m = get(&s, path);
                cr_assert_str_eq(json_string_value(json_object_get(m, "queue_name")), "hold", "%s",
                                 when);
                cr_assert_str_eq(json_string_value(json_object_get(m, "class")), "greylist", "%s",
                                 when);
                json_decref(m);
                if (round == 1)
                        break;
                /* without the snapshot, the index is made from the envelopes */
                status_client_free(s.c);
                cr_assert_eq(harness_stop(&s.h, SIGTERM, 5000), 0);
                char snap[400];
                snprintf(snap, sizeof(snap), "%s/state/index.snap", s.h.spool);
                unlink(snap);
                start(&s);
                wait_count(&s, "total", 2);
        }

        snprintf(path, sizeof(path), "/queue/%s/release", id);
        cr_assert_eq(post(&s, path), 200);
        wait_count(&s, "hold", 0);
        cr_assert_eq(by_class(&s, "greylist"), 2);
        stop(&s);
}
