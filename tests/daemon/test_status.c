/* tests/daemon/test_status.c — the status endpoint of a running tarryd: JSON
 * that matches the queue the test made, admin actions on the unix socket
 * only, and /metrics that a strict Prometheus parser accepts. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/status_client.h"
#include "harness.h"
#include "tests/fixture/fixture.h"
#include "tests/status/prom_parse.h"

struct setup {
        struct fixture *f;
        struct harness h;
        struct status_client *unix_c, *tcp_c;
};

/* A client on the loopback port the running tarryd logged. */
static void connect_tcp(struct setup *s)
{
        cr_assert_gt(s->h.status_port, 0, "tarryd did not log its status port");
        char t[64];
        snprintf(t, sizeof(t), "127.0.0.1:%d", s->h.status_port);
        const char *tl[] = {t, NULL};
        cr_assert_eq(status_client_new(tl, &s->tcp_c), 0);
}

/* tarryd started with extra in its config, and a client on each endpoint. */
static void start_daemon(struct setup *s, const char *extra)
{
        harness_init(&s->h, extra);
        harness_start(&s->h);
        char u[400];
        snprintf(u, sizeof(u), "unix:%s/status.sock", s->h.dir);
        const char *ul[] = {u, NULL};
        cr_assert_eq(status_client_new(ul, &s->unix_c), 0);
        connect_tcp(s);
}

/* example.test greylists for an hour: everything sent there stays deferred. */
static void start(struct setup *s)
{
        cr_assert_eq(fixture_new("127.0.0.1", &s->f), 0);
        fixture_set(s->f, "greylist", "3600");
        fixture_set(s->f, "greylist_reply",
                    "451 4.7.1 Greylisted, see "
                    "http://postgrey.schweikert.ch/help/example.test.html");
        cr_assert_eq(fixture_start(s->f, 0), 0);
        char extra[512];
        snprintf(extra, sizeof(extra), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(s->f));
        start_daemon(s, extra);
}

static void stop(struct setup *s)
{
        status_client_free(s->unix_c);
        s->unix_c = NULL;
        status_client_free(s->tcp_c);
        cr_assert_eq(harness_stop(&s->h, SIGTERM, 3000), 0);
        harness_cleanup(&s->h);
        fixture_free(s->f);
}

static json_t *get(struct status_client *c, const char *path, long want)
{
        long code = 0;
        json_t *j = NULL;
        int r = status_client_request_json(c, "GET", path, &code, &j);
        cr_assert_eq(r, 0, "GET %s: %d %s", path, r, status_client_last_error(c));
        cr_assert_eq(code, want, "GET %s answered %ld", path, code);
        return j;
}

static long call(struct status_client *c, const char *method, const char *path)
{
        long code = 0;
        char *body = NULL;
        size_t len;
        int r = status_client_request(c, method, path, &code, &body, &len);
        cr_assert_eq(r, 0, "%s %s: %d", method, path, r);
        free(body);
        return code;
}

/* Send n messages and wait until each has been deferred once. */
static void queue_deferred(struct setup *s, int n)
{
        for (int i = 0; i < n; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "user%d@example.test", i);
                harness_send(&s->h, "alice@sender.test", rcpt, "greylisted");
        }
        for (int i = 0; i < 300; i++) {
                json_t *st = get(s->unix_c, "/status", 200);
                json_int_t deferred =
                    json_integer_value(json_object_get(json_object_get(st, "queue"), "deferred"));
                json_decref(st);
                if (deferred == n)
                        return;
                harness_sleep_ms(10);
        }
        cr_assert_fail("messages were not deferred");
}

static char *first_id(struct setup *s)
{
        json_t *q = get(s->unix_c, "/queue", 200);
        json_t *m = json_array_get(json_object_get(q, "messages"), 0);
        cr_assert_not_null(m);
        char *id = strdup(json_string_value(json_object_get(m, "queue_id")));
        json_decref(q);
        return id;
}

Test(status_e2e, status_counts_match_the_queue)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 3);
        json_t *st = get(s.tcp_c, "/status", 200);
        json_t *q = json_object_get(st, "queue");
        cr_assert_eq(json_integer_value(json_object_get(q, "total")), 3);
        cr_assert_eq(json_integer_value(json_object_get(q, "deferred")), 3);
        cr_assert_eq(json_integer_value(json_object_get(q, "hold")), 0);
        cr_assert_eq(
            json_integer_value(json_object_get(json_object_get(st, "by_class"), "greylist")), 3);
        cr_assert_eq(
            json_integer_value(json_object_get(json_object_get(st, "attempts"), "deferred")), 3);
        /* over TCP, destinations are only counted per state */
        cr_assert_null(json_object_get(st, "destinations"));
        cr_assert_eq(
            json_integer_value(json_object_get(json_object_get(st, "destination_states"), "ok")),
            1);
        json_decref(st);
        st = get(s.unix_c, "/status", 200);
        json_t *dests = json_object_get(st, "destinations");
        cr_assert_eq(json_array_size(dests), 1);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(dests, 0), "state")),
                         "ok");
        json_decref(st);
        stop(&s);
}

static char *body_of(struct status_client *c, const char *path)
{
        long code = 0;
        char *body = NULL;
        size_t len;
        cr_assert_eq(status_client_request(c, "GET", path, &code, &body, &len), 0);
        cr_assert_eq(code, 200, "GET %s answered %ld", path, code);
        return body;
}

Test(status_e2e, the_tcp_port_shows_no_address_domain_or_reply_text)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 2);
        /* the unix socket (root, tarry, status_group) shows the destination and
         * its last reply, which names the recipient domain */
        char *full = body_of(s.unix_c, "/status");
        cr_assert_not_null(strstr(full, "example.test"), "%s", full);
        free(full);
        /* any local user reaches the TCP port: counts only */
        char *paths[] = {"/status", "/metrics"};
        for (size_t i = 0; i < 2; i++) {
                char *b = body_of(s.tcp_c, paths[i]);
                cr_assert_null(strstr(b, "example.test"), "%s shows a domain: %s", paths[i], b);
                cr_assert_null(strstr(b, "user0"), "%s shows an address: %s", paths[i], b);
                cr_assert_null(strstr(b, "sender.test"), "%s shows a sender: %s", paths[i], b);
                cr_assert_null(strstr(b, "127.0.0.1"), "%s shows a next hop: %s", paths[i], b);
                cr_assert_null(strstr(b, "Greylisted"), "%s shows a reply: %s", paths[i], b);
                free(b);
        }
        stop(&s);
}

Test(status_e2e, a_greylisted_message_shows_its_class_and_a_future_retry)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 1);
        json_t *q = get(s.unix_c, "/queue?class=greylist", 200);
        cr_assert_eq(json_integer_value(json_object_get(q, "total")), 1);
        json_t *m = json_array_get(json_object_get(q, "messages"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(m, "class")), "greylist");
        cr_assert_gt(json_integer_value(json_object_get(m, "next_attempt")),
                     (json_int_t)time(NULL));
        cr_assert_str_eq(json_string_value(json_object_get(m, "sender")), "alice@sender.test");
        char path[64];
        snprintf(path, sizeof(path), "/queue/%s",
                 json_string_value(json_object_get(m, "queue_id")));
        json_t *one = get(s.unix_c, path, 200);
        cr_assert_not_null(
            strstr(json_string_value(json_object_get(one, "transcript")), "451 4.7.1 Greylisted"));
        json_decref(one);
        json_decref(q);
        json_t *none = get(s.unix_c, "/queue?class=reputation", 200);
        cr_assert_eq(json_integer_value(json_object_get(none, "total")), 0);
        json_decref(none);
        stop(&s);
}

Test(status_e2e, admin_actions_work_on_the_unix_socket_and_are_refused_over_tcp)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 1);
        char *id = first_id(&s);
        char path[96];
        snprintf(path, sizeof(path), "/queue/%s/hold", id);
        cr_assert_eq(call(s.tcp_c, "POST", path), 403);
        cr_assert_eq(harness_count_queued(&s.h, "hold"), 0);
        cr_assert_eq(call(s.unix_c, "POST", path), 200);
        cr_assert_eq(harness_count_queued(&s.h, "hold"), 1);

        snprintf(path, sizeof(path), "/queue/%s/release", id);
        cr_assert_eq(call(s.unix_c, "POST", path), 200);
        cr_assert_eq(harness_count_queued(&s.h, "active"), 1);

        snprintf(path, sizeof(path), "/queue/%s", id);
        cr_assert_eq(call(s.tcp_c, "DELETE", path), 403);
        cr_assert_eq(call(s.unix_c, "DELETE", path), 200);
        cr_assert_eq(harness_count_queued(&s.h, "active"), 0);
        cr_assert_eq(call(s.unix_c, "DELETE", path), 404);
        free(id);
        stop(&s);
}

Test(status_e2e, retry_now_attempts_the_message_at_once)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 1);
        size_t before = fixture_connection_count(s.f);
        char *id = first_id(&s);
        char path[96];
        snprintf(path, sizeof(path), "/queue/%s/retry", id);
        cr_assert_eq(call(s.unix_c, "POST", path), 200);
        for (int i = 0; i < 100 && fixture_connection_count(s.f) == before; i++)
                harness_sleep_ms(10);
        cr_assert_eq(fixture_connection_count(s.f), before + 1, "retry did not attempt");
        cr_assert_eq(call(s.unix_c, "POST", "/flush"), 200);
        free(id);
        stop(&s);
}

Test(status_e2e, metrics_are_valid_prometheus_text)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 2);
        long code = 0;
        char *body = NULL;
        size_t len;
        cr_assert_eq(status_client_request(s.tcp_c, "GET", "/metrics", &code, &body, &len), 0);
        cr_assert_eq(code, 200);
        char err[256];
        cr_assert_eq(prom_parse(body, err, sizeof(err)), 0, "invalid metrics: %s", err);
        double v = 0;
        cr_assert(prom_value(
            body, "tarry_delivery_attempts_total{class=\"greylist\",outcome=\"deferred\"}", &v));
        cr_assert_eq(v, 2);
        free(body);
        stop(&s);
}

Test(status_e2e, tarryq_p_live_matches_the_offline_listing_byte_for_byte)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 2);
        char *live, *live_err, *off, *off_err;
        const char *p[] = {"-p", NULL};
        cr_assert_eq(harness_tarryq(&s.h, p, &live, &live_err), 0, "%s", live_err);
        cr_assert_str_empty(live_err, "the live listing warned: %s", live_err);
        cr_assert_not_null(strstr(live, "-- 0 Kbytes in 2 Requests."), "%s", live);
        cr_assert_not_null(strstr(live, "Greylisted, see http://postgrey"), "%s", live);

        status_client_free(s.unix_c);
        status_client_free(s.tcp_c);
        s.unix_c = s.tcp_c = NULL;
        cr_assert_eq(harness_stop(&s.h, SIGTERM, 3000), 0);
        cr_assert_eq(harness_tarryq(&s.h, p, &off, &off_err), 0, "%s", off_err);
        cr_assert_not_null(strstr(off_err, "reading the spool directly"), "%s", off_err);
        cr_assert_str_eq(live, off);
        free(live);
        free(live_err);
        free(off);
        free(off_err);
        harness_cleanup(&s.h);
        fixture_free(s.f);
}

/* Run a built binary (path relative to the build dir) under the name argv0
 * with -C conf; its stdout and stderr in malloc'd strings, its exit code. */
static int run_listing(struct setup *s, const char *rel, const char *argv0, const char *flag,
                       char **out, char **err)
{
        char outpath[400], errpath[400];
        snprintf(outpath, sizeof(outpath), "%s/listing.out", s->h.dir);
        snprintf(errpath, sizeof(errpath), "%s/listing.err", s->h.dir);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                cr_assert_not_null(freopen(outpath, "w", stdout));
                cr_assert_not_null(freopen(errpath, "w", stderr));
                execl(harness_binary(rel), argv0, "-C", s->h.conf, flag, (char *)NULL);
                _exit(127);
        }
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        FILE *f = fopen(outpath, "r");
        size_t n;
        cr_assert_not_null(f);
        cr_assert_geq(getdelim(out, &n, '\0', f), 0);
        fclose(f);
        cr_assert_not_null(f = fopen(errpath, "r"));
        if (getdelim(err, &n, '\0', f) < 0) { /* empty: the buffer it made is ours too */
                free(*err);
                *err = strdup("");
        }
        fclose(f);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* sendmail links no HTTP client: mailq and sendmail -bp hand the listing to
 * tarryq, and the user sees the live queue as before, not the spool. */
Test(status_e2e, mailq_and_sendmail_bp_list_the_live_queue_as_tarryq_p_does)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 2);
        char *want, *want_err;
        const char *p[] = {"-p", NULL};
        cr_assert_eq(harness_tarryq(&s.h, p, &want, &want_err), 0, "%s", want_err);
        cr_assert_str_empty(want_err, "the live listing warned: %s", want_err);
        cr_assert_not_null(strstr(want, "-- 0 Kbytes in 2 Requests."), "%s", want);

        struct {
                const char *rel, *argv0, *flag;
        } ways[] = {{"cli/mailq", "mailq", NULL}, {"cli/sendmail", "sendmail", "-bp"}};
        for (size_t i = 0; i < sizeof(ways) / sizeof(ways[0]); i++) {
                char *out = NULL, *err = NULL;
                int ex = run_listing(&s, ways[i].rel, ways[i].argv0, ways[i].flag, &out, &err);
                cr_assert_eq(ex, 0, "%s exited %d: %s", ways[i].argv0, ex, err);
                cr_assert_str_empty(err, "%s did not ask tarryd: %s", ways[i].argv0, err);
                cr_assert_str_eq(out, want, "%s listed:\n%s", ways[i].argv0, out);
                free(out);
                free(err);
        }
        free(want);
        free(want_err);
        stop(&s);
}

Test(status_e2e, tarryq_controls_the_running_daemon)
{
        struct setup s;
        start(&s);
        queue_deferred(&s, 2);
        char *out, *err;
        const char *st[] = {"-s", NULL};
        cr_assert_eq(harness_tarryq(&s.h, st, &out, &err), 0, "%s", err);
        cr_assert_not_null(strstr(out, "queue: 2 total"), "%s", out);
        cr_assert_not_null(strstr(out, "greylist 2"), "%s", out);
        free(out);
        free(err);

        const char *hold[] = {"-h", "ALL", NULL};
        cr_assert_eq(harness_tarryq(&s.h, hold, &out, &err), 0, "%s", err);
        cr_assert_eq(harness_count_queued(&s.h, "hold"), 2);
        free(out);
        free(err);
        const char *release[] = {"-H", "ALL", NULL};
        cr_assert_eq(harness_tarryq(&s.h, release, &out, &err), 0, "%s", err);
        cr_assert_eq(harness_count_queued(&s.h, "hold"), 0);
        free(out);
        free(err);

        size_t before = fixture_connection_count(s.f);
        const char *flush[] = {"-f", NULL};
        cr_assert_eq(harness_tarryq(&s.h, flush, &out, &err), 0, "%s", err);
        free(out);
        free(err);
        for (int i = 0; i < 200 && fixture_connection_count(s.f) < before + 2; i++)
                harness_sleep_ms(10);
        cr_assert_geq(fixture_connection_count(s.f), before + 2, "flush did not attempt both");

        const char *del[] = {"-d", "ALL", NULL};
        cr_assert_eq(harness_tarryq(&s.h, del, &out, &err), 0, "%s", err);
        cr_assert_eq(harness_count_queued(&s.h, "active"), 0);
        free(out);
        free(err);
        const char *bad[] = {"-i", "0123456789ABCDEF", NULL};
        cr_assert_eq(harness_tarryq(&s.h, bad, &out, &err), 66, "%s", err);
        free(out);
        free(err);
        stop(&s);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Pages of /queue, whatever their offset and size, are consecutive runs of
 * the queue sorted by ID: together exactly the queue, each ID once. */
Test(status_e2e, queue_pages_are_runs_of_the_queue_in_id_order)
{
        enum { N = 23 };
        struct setup s;
        start(&s);
        queue_deferred(&s, N);
        json_t *all = get(s.unix_c, "/queue?limit=1000", 200);
        json_t *msgs = json_object_get(all, "messages");
        cr_assert_eq(json_array_size(msgs), N);
        char *ids[N];
        for (size_t i = 0; i < N; i++)
                ids[i] =
                    strdup(json_string_value(json_object_get(json_array_get(msgs, i), "queue_id")));
        json_decref(all);
        char *sorted[N];
        memcpy(sorted, ids, sizeof(ids));
        qsort(sorted, N, sizeof(*sorted), cmp_str);
        for (size_t i = 0; i < N; i++)
                cr_assert_str_eq(ids[i], sorted[i], "the full listing is not in ID order");
        for (size_t limit = 1; limit <= 10; limit += 3) {
                for (size_t offset = 0; offset < N + 2; offset += limit) {
                        char path[64];
                        snprintf(path, sizeof(path), "/queue?offset=%zu&limit=%zu", offset, limit);
                        json_t *page = get(s.unix_c, path, 200);
                        json_t *pm = json_object_get(page, "messages");
                        size_t want = offset >= N ? 0 : (N - offset < limit ? N - offset : limit);
                        cr_assert_eq(json_array_size(pm), want, "%s", path);
                        cr_assert_eq(json_integer_value(json_object_get(page, "total")), N);
                        for (size_t i = 0; i < want; i++)
                                cr_assert_str_eq(json_string_value(json_object_get(
                                                     json_array_get(pm, i), "queue_id")),
                                                 sorted[offset + i], "%s, item %zu", path, i);
                        json_decref(page);
                }
        }
        for (size_t i = 0; i < N; i++)
                free(ids[i]);
        stop(&s);
}

/* A remote reply is quoted in tarryd's log lines: its control characters and
 * stray bytes are escaped, so it cannot repaint a terminal or forge a line. */
Test(status_e2e, remote_escape_sequences_and_stray_bytes_are_escaped_in_the_log)
{
        struct setup s;
        cr_assert_eq(fixture_new("127.0.0.1", &s.f), 0);
        fixture_set(s.f, "greylist", "3600");
        fixture_set(s.f, "greylist_reply", "451 4.7.1 \x1b[2J\x1b[31mwiped\xff\xfe caf\xc3\xa9");
        cr_assert_eq(fixture_start(s.f, 0), 0);
        char extra[512];
        snprintf(extra, sizeof(extra), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(s.f));
        harness_init(&s.h, extra);
        harness_start(&s.h);
        harness_send(&s.h, "alice@sender.test", "bob@example.test", "hostile reply");
        for (int i = 0; i < 3000 && !harness_log_contains(&s.h, "wiped"); i++)
                harness_sleep_ms(10);
        cr_assert(harness_log_contains(&s.h, "\\x1b[2J\\x1b[31mwiped\\xff\\xfe caf\xc3\xa9"),
                  "the reply is logged, escaped, with its UTF-8 kept");
        cr_assert_not(harness_log_contains(&s.h, "\x1b"), "a raw ESC reached the log");
        cr_assert_not(harness_log_contains(&s.h, "\xff"), "a raw 0xFF reached the log");
        cr_assert_eq(harness_stop(&s.h, SIGTERM, 3000), 0);
        harness_cleanup(&s.h);
        fixture_free(s.f);
}

Test(status_e2e, a_reload_that_moves_the_status_endpoint_says_it_waits_for_a_restart)
{
        struct setup s;
        start(&s);
        char text[2048];
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = root\n"
                 "status_listen = unix:%s/other.sock, 127.0.0.1:0\nshutdown_timeout = 2s\n",
                 s.h.spool, s.h.dir);
        harness_write_config(&s.h, text);
        kill(s.h.tarryd, SIGHUP);
        for (int i = 0; i < 500 && !harness_log_contains(&s.h, "configuration reloaded"); i++)
                harness_sleep_ms(10);
        cr_assert(harness_log_contains(&s.h, "configuration reloaded"));
        cr_assert(harness_log_contains(
            &s.h, "reload: status_listen changed; it takes effect at restart"));
        /* and the endpoint it has is still there */
        json_decref(get(s.unix_c, "/status", 200));
        json_decref(get(s.tcp_c, "/status", 200));
        stop(&s);
}

/* What /status should say, counted from the listing (GET /queue, which reads
 * every message): per state, per class (not in hold), the oldest arrival,
 * and per site the messages waiting for it. */
struct listed {
        json_int_t total, state[3], greylist, sites, site_messages, oldest;
};

static struct listed count_listing(struct setup *s)
{
        struct listed l = {.oldest = -1};
        json_t *q = get(s->unix_c, "/queue?limit=1000", 200);
        json_t *msgs = json_object_get(q, "messages");
        json_t *seen_sites = json_object();
        size_t i;
        json_t *m;
        json_array_foreach (msgs, i, m) {
                const char *state = json_string_value(json_object_get(m, "queue_name"));
                l.total++;
                l.state[strcmp(state, "active") == 0     ? 0
                        : strcmp(state, "deferred") == 0 ? 1
                                                         : 2]++;
                const char *cls = json_string_value(json_object_get(m, "class"));
                if (strcmp(state, "hold") != 0 && cls && strcmp(cls, "greylist") == 0)
                        l.greylist++;
                json_int_t arrival = json_integer_value(json_object_get(m, "arrival_time"));
                if (l.oldest < 0 || arrival < l.oldest)
                        l.oldest = arrival;
                size_t j;
                json_t *site;
                json_array_foreach (json_object_get(m, "sites"), j, site) {
                        l.site_messages++; /* one item per site here: one recipient each */
                        json_object_set(seen_sites, json_string_value(site), json_true());
                }
        }
        l.sites = (json_int_t)json_object_size(seen_sites);
        json_decref(seen_sites);
        json_decref(q);
        return l;
}

static json_int_t field(json_t *o, const char *a, const char *b)
{
        return json_integer_value(json_object_get(b ? json_object_get(o, a) : o, b ? b : a));
}

/* /status (both views) says what the listing shows; want: the total. */
static void assert_status_matches_listing(struct setup *s, json_int_t want, const char *when)
{
        struct listed l = count_listing(s);
        cr_assert_eq(l.total, want, "%s: %lld listed, want %lld", when, (long long)l.total,
                     (long long)want);
        json_t *st = get(s->unix_c, "/status", 200);
        cr_assert_eq(field(st, "queue", "total"), l.total, "%s: total", when);
        cr_assert_eq(field(st, "queue", "active"), l.state[0], "%s: active", when);
        cr_assert_eq(field(st, "queue", "deferred"), l.state[1], "%s: deferred", when);
        cr_assert_eq(field(st, "queue", "hold"), l.state[2], "%s: hold", when);
        cr_assert_eq(field(st, "by_class", "greylist"), l.greylist, "%s: by_class", when);
        if (l.total)
                cr_assert_eq(field(st, "oldest_arrival", NULL), l.oldest, "%s: oldest", when);
        else
                cr_assert(json_is_null(json_object_get(st, "oldest_arrival")), "%s: oldest", when);
        json_t *sites = json_object_get(st, "sites");
        cr_assert_eq((json_int_t)json_array_size(sites), l.sites, "%s: sites", when);
        json_int_t messages = 0;
        size_t i;
        json_t *site;
        json_array_foreach (sites, i, site) {
                messages += field(site, "messages", NULL);
                cr_assert_eq(field(site, "domains", NULL), 1, "%s: domains", when);
        }
        cr_assert_eq(messages, l.site_messages, "%s: messages per site", when);
        json_decref(st);
        st = get(s->tcp_c, "/status", 200);
        cr_assert_eq(field(st, "site_totals", "sites"), l.sites, "%s: site_totals", when);
        cr_assert_eq(field(st, "site_totals", "messages"), l.site_messages, "%s: site_totals",
                     when);
        json_decref(st);
}

static void wait_deferred(struct setup *s, json_int_t n)
{
        for (int i = 0; i < 1000; i++) {
                json_t *st = get(s->unix_c, "/status", 200);
                json_int_t deferred = field(st, "queue", "deferred");
                json_decref(st);
                if (deferred == n)
                        return;
                harness_sleep_ms(20);
        }
        cr_assert_fail("%lld messages were not deferred", (long long)n);
}

/* /status's counts are kept as messages change (docs/status.md, "Counts");
 * whatever happens to a message, they stay what the listing (every message
 * read) shows, so a counter that drifts fails here: after pickup and
 * deferral, hold, release, delete, a delivery that leaves one recipient of
 * a message waiting, and a restart from the snapshot. */
Test(status_e2e, status_counts_stay_exact_through_a_message_s_whole_life, .timeout = 120)
{
        struct fixture *ok;
        cr_assert_eq(fixture_new("127.0.0.1", &ok), 0);
        cr_assert_eq(fixture_start(ok, 0), 0);
        struct setup s;
        cr_assert_eq(fixture_new("127.0.0.1", &s.f), 0);
        fixture_set(s.f, "greylist", "3600");
        cr_assert_eq(fixture_start(s.f, 0), 0);
        char extra[512];
        snprintf(extra, sizeof(extra),
                 "[transport]\nexample.test = [127.0.0.1]:%u\nok.test = [127.0.0.1]:%u\n",
                 fixture_port(s.f), fixture_port(ok));
        start_daemon(&s, extra);

        /* picked up, attempted, deferred: 4 greylisted; one to ok.test delivered */
        for (int i = 0; i < 4; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "user%d@example.test", i);
                harness_send(&s.h, "alice@sender.test", rcpt, "greylisted");
        }
        harness_send(&s.h, "alice@sender.test", "bob@ok.test", "accepted");
        cr_assert(harness_wait_log(&s.h, "status=sent", 1, 30000));
        wait_deferred(&s, 4);
        assert_status_matches_listing(&s, 4, "deferred");

        char *id = first_id(&s);
        char path[96];
        snprintf(path, sizeof(path), "/queue/%s/hold", id);
        cr_assert_eq(call(s.unix_c, "POST", path), 200);
        assert_status_matches_listing(&s, 4, "held");
        snprintf(path, sizeof(path), "/queue/%s/release", id);
        cr_assert_eq(call(s.unix_c, "POST", path), 200);
        wait_deferred(&s, 4); /* attempted again, greylisted again */
        assert_status_matches_listing(&s, 4, "released");
        snprintf(path, sizeof(path), "/queue/%s", id);
        cr_assert_eq(call(s.unix_c, "DELETE", path), 200);
        free(id);
        assert_status_matches_listing(&s, 3, "deleted");

        /* two recipients: ok.test's delivered, example.test's deferred */
        const char *both[] = {"-f", "alice@sender.test", "carol@ok.test", "dave@example.test",
                              NULL};
        cr_assert_eq(harness_sendmail(&s.h, "Subject: both\n\nhi\n", both), 0);
        cr_assert(harness_wait_log(&s.h, "status=sent", 2, 30000));
        wait_deferred(&s, 4);
        assert_status_matches_listing(&s, 4, "partly delivered");

        /* a hold that survives the restart, then tarryd starts from its snapshot */
        id = first_id(&s);
        snprintf(path, sizeof(path), "/queue/%s/hold", id);
        cr_assert_eq(call(s.unix_c, "POST", path), 200);
        free(id);
        json_t *before = get(s.unix_c, "/status", 200);
        cr_assert_eq(harness_stop(&s.h, SIGTERM, 10000), 0);
        harness_start(&s.h);
        cr_assert(harness_wait_log(&s.h, "read: 4 from state/index.snap, 0 from their envelopes", 1,
                                   30000),
                  "tarryd did not start from its snapshot; see %s", s.h.log);
        status_client_free(s.tcp_c);
        connect_tcp(&s); /* its port is new */
        json_t *after = get(s.unix_c, "/status", 200);
        cr_assert_eq(field(after, "queue", "deferred"), field(before, "queue", "deferred"));
        cr_assert_eq(field(after, "queue", "hold"), 1);
        cr_assert_eq(field(after, "oldest_arrival", NULL), field(before, "oldest_arrival", NULL));
        json_decref(before);
        json_decref(after);
        assert_status_matches_listing(&s, 4, "restarted");
        stop(&s);
        fixture_free(ok);
}

/* /status keeps its counts as messages change instead of walking the
 * queue (docs/status.md, "Counts"). A deferred message becomes active when
 * its retry falls due, whether or not an attempt can start then: here one
 * attempt to slow.test hangs after the body (destination_concurrency 1), so
 * the other two wait due, not in flight, and must count active as the
 * listing shows them. A message quarantined at its retry leaves the counts
 * and appears in corrupt. */
Test(status_e2e, status_counts_a_due_message_active_while_it_waits_for_a_connection, .timeout = 180)
{
        struct setup s;
        cr_assert_eq(fixture_new("127.0.0.1", &s.f), 0);
        fixture_set(s.f, "greylist", "1");
        fixture_set(s.f, "hang", "dot");
        cr_assert_eq(fixture_start(s.f, 0), 0);
        char extra[512];
        snprintf(extra, sizeof(extra),
                 "[transport]\nslow.test = [127.0.0.1]:%u\n[smtp]\ndestination_concurrency = 1\n"
                 "[retry.greylist]\ninitial = 4s\nmax = 4s\nuse_hint = no\n",
                 fixture_port(s.f));
        start_daemon(&s, extra);

        for (int i = 0; i < 4; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "user%d@slow.test", i);
                harness_send(&s.h, "alice@sender.test", rcpt, "greylisted, then slow");
        }
        cr_assert(harness_wait_log(&s.h, "status=deferred", 4, 60000));

        /* one of them garbled: its retry quarantines it */
        char *id = first_id(&s);
        char tmp[600], env[600];
        snprintf(tmp, sizeof(tmp), "%s/active/%s/envelope.garbled", s.h.spool, id);
        snprintf(env, sizeof(env), "%s/active/%s/envelope", s.h.spool, id);
        FILE *f = fopen(tmp, "w");
        cr_assert_not_null(f, "%s", tmp);
        fputs("{\"this is\": not an envelope", f);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(rename(tmp, env), 0);
        free(id);

        /* the first retry hangs after the body; the others are due behind it */
        json_int_t active = 0, corrupt = 0;
        for (int i = 0; i < 3000 && (active != 3 || corrupt != 1); i++) {
                harness_sleep_ms(20);
                json_t *st = get(s.unix_c, "/status", 200);
                active = field(st, "queue", "active");
                corrupt = field(st, "queue", "corrupt");
                json_decref(st);
        }
        cr_assert_eq(corrupt, 1, "the garbled message was not quarantined");
        cr_assert_eq(active, 3, "the due messages were not counted active");
        assert_status_matches_listing(&s, 3, "due behind a hanging attempt");
        json_t *st = get(s.unix_c, "/status", 200);
        cr_assert_eq(field(st, "queue", "deferred"), 0);
        cr_assert_eq(field(st, "queue", "total"), 3);
        json_decref(st);
        stop(&s);
}
