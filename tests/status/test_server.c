/* tests/status/test_server.c — the status endpoint over HTTP: a server on an
 * sd-event loop in a thread, a fake provider, and libcurl / the status client
 * on a unix socket in a temp dir and a 127.0.0.1 port chosen at run time. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "cli/status_client.h"
#include "prom_parse.h"
#include "status/status.h"

/* ---- the fake daemon ---- */

struct fake_msg {
        const char *id, *state, *class, *destination;
};

static const struct fake_msg fake_queue[] = {
    {"0000000000000001", "deferred", "greylist", "example.com"},
    {"0000000000000002", "deferred", "greylist", "example.org"},
    {"0000000000000003", "deferred", "reputation", "gmail.com"},
    {"0000000000000004", "active", NULL, "example.com"},
    {"0000000000000005", "hold", "policy", "example.net"},
};

struct fake {
        pthread_mutex_t lock;
        int calls;
        enum status_action last_action;
        char last_target[64];
        int action_result; /* what action() returns */
};

static json_t *msg_json(const struct fake_msg *m)
{
        return json_pack(
            "{s:s, s:s, s:s?, s:s, s:I}", "queue_id", m->id, "queue_name", m->state, "class",
            m->class, "destination", m->destination, "next_attempt",
            (json_int_t)(m->class && strcmp(m->class, "greylist") == 0 ? time(NULL) + 300 : 0));
}

static int fake_status(void *userdata, enum status_view view, json_t **out)
{
        (void)userdata;
        *out = json_pack("{s:s, s:i, s:{s:i, s:i, s:i, s:i, s:i}, s:s}", "version", "0.1.0",
                         "uptime_s", 5, "queue", "total", 5, "active", 1, "deferred", 3, "hold", 1,
                         "corrupt", 0, "view", view == STATUS_VIEW_FULL ? "full" : "aggregate");
        return *out ? 0 : -ENOMEM;
}

static bool matches(const struct fake_msg *m, const struct status_queue_filter *f)
{
        if (f->has_class && (!m->class || strcmp(m->class, reply_class_name(f->class)) != 0))
                return false;
        if (f->destination && strcmp(f->destination, m->destination) != 0)
                return false;
        return f->state == STATUS_QSTATE_ANY ||
               strcmp(status_queue_state_name(f->state), m->state) == 0;
}

/* A page: the indexes of its messages in fake_queue, handed out in turn. */
struct fake_page {
        size_t idx[sizeof(fake_queue) / sizeof(fake_queue[0])];
        size_t n, next;
};

static int fake_open(void *userdata, const struct status_queue_filter *f, void **out, size_t *total)
{
        (void)userdata;
        struct fake_page *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        *total = 0;
        for (size_t i = 0; i < sizeof(fake_queue) / sizeof(fake_queue[0]); i++) {
                if (!matches(&fake_queue[i], f))
                        continue;
                if (*total >= f->offset && *total < f->offset + f->limit)
                        p->idx[p->n++] = i;
                (*total)++;
        }
        *out = p;
        return 0;
}

static int fake_next(void *userdata, void *page, json_t **out)
{
        struct fake_page *p = page;
        (void)userdata;
        if (p->next == p->n)
                return 0;
        *out = msg_json(&fake_queue[p->idx[p->next++]]);
        return *out ? 1 : -ENOMEM;
}

static void fake_close(void *userdata, void *page)
{
        (void)userdata;
        free(page);
}

static int fake_message(void *userdata, const char *id, json_t **out)
{
        (void)userdata;
        for (size_t i = 0; i < sizeof(fake_queue) / sizeof(fake_queue[0]); i++)
                if (strcmp(fake_queue[i].id, id) == 0) {
                        *out = msg_json(&fake_queue[i]);
                        json_object_set_new(
                            *out, "transcript",
                            json_string("S: 220 mx ESMTP\nC: EHLO h\n...\nS: 451 4.7.1 "
                                        "greylisted, try again in 300 seconds"));
                        return 0;
                }
        return -ENOENT;
}

static int fake_refresh(void *userdata, struct status_metrics *m)
{
        (void)userdata;
        status_metric_clear(m, STATUS_M_QUEUE_MESSAGES);
        for (size_t i = 0; i < sizeof(fake_queue) / sizeof(fake_queue[0]); i++) {
                const struct fake_msg *q = &fake_queue[i];
                double v = 0;
                const char *const *labels = STATUS_LABELS(q->state, q->class ? q->class : "none");
                status_metric_value(m, STATUS_M_QUEUE_MESSAGES, labels, &v);
                status_gauge_set(m, STATUS_M_QUEUE_MESSAGES, labels, v + 1);
        }
        return 0;
}

static int fake_action(void *userdata, enum status_action a, const char *target)
{
        struct fake *f = userdata;
        pthread_mutex_lock(&f->lock);
        f->calls++;
        f->last_action = a;
        snprintf(f->last_target, sizeof(f->last_target), "%s", target ? target : "");
        int r = f->action_result;
        pthread_mutex_unlock(&f->lock);
        if (r != 0)
                return r;
        if (a == STATUS_ACTION_FLUSH)
                return 3;
        if (a == STATUS_ACTION_RESUME)
                return strcmp(target, "gmail.com") == 0 ? 1 : -ENOENT;
        return fake_message(NULL, target, &(json_t *){NULL}) == 0 ? 1 : -ENOENT;
}

/* ---- fixture: server on a loop in a thread ---- */

static struct {
        char dir[64];
        char sock[128];
        char unix_entry[160];
        char tcp_entry[64];
        const char *listen[3];
        sd_event *event;
        struct status_server *srv;
        struct status_metrics *metrics;
        struct fake fake;
        struct status_options opt;
        int stop[2];
        pthread_t thread;
        bool running;
        int port;
        char base[64];
} fx;

static int on_stop(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        (void)s, (void)fd, (void)revents, (void)userdata;
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static void *run_loop(void *arg)
{
        (void)arg;
        sd_event_loop(fx.event);
        return NULL;
}

static void fx_init(void)
{
        memset(&fx, 0, sizeof(fx));
        pthread_mutex_init(&fx.fake.lock, NULL);
        snprintf(fx.dir, sizeof(fx.dir), "/tmp/tarry-status-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir));
        chmod(fx.dir, 0755); /* another uid must reach the socket */
        snprintf(fx.sock, sizeof(fx.sock), "%s/status.sock", fx.dir);
        snprintf(fx.unix_entry, sizeof(fx.unix_entry), "unix:%s", fx.sock);
        snprintf(fx.tcp_entry, sizeof(fx.tcp_entry), "127.0.0.1:0");
        fx.listen[0] = fx.unix_entry;
        fx.listen[1] = fx.tcp_entry;
        fx.opt.listen = fx.listen;
        fx.opt.admin_uid = 0;
        cr_assert_eq(status_metrics_new(&fx.metrics), 0);
        cr_assert_eq(status_metrics_declare_tarry(fx.metrics), 0);
        cr_assert_eq(sd_event_new(&fx.event), 0);
}

static const struct status_provider *provider(void)
{
        static struct status_provider p;
        p = (struct status_provider){
            .userdata = &fx.fake,
            .get_status = fake_status,
            .list_open = fake_open,
            .list_next = fake_next,
            .list_close = fake_close,
            .get_message = fake_message,
            .refresh_metrics = fake_refresh,
            .action = fake_action,
        };
        return &p;
}

static void fx_run(void)
{
        char err[256] = "";
        int r = status_start(fx.event, &fx.opt, provider(), fx.metrics, &fx.srv, err, sizeof(err));
        cr_assert_eq(r, 0, "status_start: %d %s", r, err);
        fx.port = status_tcp_port(fx.srv);
        snprintf(fx.base, sizeof(fx.base), "http://127.0.0.1:%d", fx.port);
        cr_assert_eq(pipe2(fx.stop, O_CLOEXEC), 0);
        cr_assert_eq(sd_event_add_io(fx.event, NULL, fx.stop[0], EPOLLIN, on_stop, NULL), 0);
        cr_assert_eq(pthread_create(&fx.thread, NULL, run_loop, NULL), 0);
        fx.running = true;
}

static void setup(void)
{
        fx_init();
        fx_run();
}

static void teardown(void)
{
        if (fx.running) {
                cr_assert_eq(write(fx.stop[1], "x", 1), 1);
                pthread_join(fx.thread, NULL);
                close(fx.stop[0]);
                close(fx.stop[1]);
        }
        status_stop(fx.srv);
        sd_event_unref(fx.event);
        status_metrics_free(fx.metrics);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", fx.dir);
        cr_assert_eq(system(cmd), 0);
}

/* ---- HTTP helpers ---- */

struct reply {
        long code;
        char *body;
        size_t len;
        char ctype[128];
        char allow[64];
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
        struct reply *r = ud;
        r->body = realloc(r->body, r->len + sz * n + 1);
        memcpy(r->body + r->len, p, sz * n);
        r->len += sz * n;
        r->body[r->len] = '\0';
        return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
        struct reply *r = ud;
        if (strncasecmp(p, "Allow: ", 7) == 0)
                snprintf(r->allow, sizeof(r->allow), "%.*s", (int)strcspn(p + 7, "\r\n"), p + 7);
        return sz * n;
}

/* method, over unix (via=NULL → the socket) or TCP; body_len bytes of 'x' uploaded. */
static struct reply http(const char *method, const char *path, bool tcp, size_t body_len)
{
        struct reply r = {0};
        char url[512];
        char *upload = NULL;
        CURL *h = curl_easy_init();
        snprintf(url, sizeof(url), "%s%s", tcp ? fx.base : "http://localhost", path);
        curl_easy_setopt(h, CURLOPT_URL, url);
        if (!tcp)
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, fx.sock);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (body_len) {
                upload = malloc(body_len);
                memset(upload, 'x', body_len);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, upload);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body_len);
        } else if (strcmp(method, "POST") == 0) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        }
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
        CURLcode rc = curl_easy_perform(h);
        cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
        char *ct = NULL;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.code);
        curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(r.ctype, sizeof(r.ctype), "%s", ct ? ct : "");
        curl_easy_cleanup(h);
        free(upload);
        if (!r.body)
                r.body = strdup("");
        return r;
}

/* Expect code and a JSON body; returns the parsed body. */
static json_t *http_json(const char *method, const char *path, bool tcp, long code)
{
        struct reply r = http(method, path, tcp, 0);
        cr_assert_eq(r.code, code, "%s %s → %ld: %s", method, path, r.code, r.body);
        cr_assert_str_eq(r.ctype, "application/json");
        json_t *j = json_loads(r.body, 0, NULL);
        cr_assert_not_null(j, "not JSON: %s", r.body);
        free(r.body);
        return j;
}

static void expect_error(const char *method, const char *path, bool tcp, long code)
{
        json_t *j = http_json(method, path, tcp, code);
        cr_assert(json_is_string(json_object_get(j, "error")), "no error text");
        cr_assert_eq(json_integer_value(json_object_get(j, "status")), code);
        json_decref(j);
}

static size_t count_messages(const char *query)
{
        char path[256];
        snprintf(path, sizeof(path), "/queue%s", query);
        json_t *j = http_json("GET", path, false, 200);
        size_t n = json_array_size(json_object_get(j, "messages"));
        json_decref(j);
        return n;
}

/* ---- read-only endpoints ---- */

TestSuite(server, .init = setup, .fini = teardown, .timeout = 30);

Test(server, status_returns_the_provider_object_on_the_unix_socket)
{
        json_t *j = http_json("GET", "/status", false, 200);
        cr_assert_str_eq(json_string_value(json_object_get(j, "version")), "0.1.0");
        cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "queue"), "deferred")),
                     3);
        json_decref(j);
}

Test(server, status_is_served_on_a_loopback_port_chosen_at_run_time)
{
        cr_assert_gt(fx.port, 0);
        json_t *j = http_json("GET", "/status", true, 200);
        cr_assert_not_null(json_object_get(j, "queue"));
        json_decref(j);
}

Test(server, queue_lists_every_message_with_total_and_paging)
{
        json_t *j = http_json("GET", "/queue", false, 200);
        cr_assert_eq(json_integer_value(json_object_get(j, "total")), 5);
        cr_assert_eq(json_integer_value(json_object_get(j, "offset")), 0);
        cr_assert_eq(json_integer_value(json_object_get(j, "limit")), STATUS_DEFAULT_LIMIT);
        cr_assert_eq(json_array_size(json_object_get(j, "messages")), 5);
        json_decref(j);
}

Test(server, queue_filters_by_class_destination_and_state)
{
        cr_assert_eq(count_messages("?class=greylist"), 2);
        cr_assert_eq(count_messages("?destination=example.com"), 2);
        cr_assert_eq(count_messages("?state=hold"), 1);
        cr_assert_eq(count_messages("?class=greylist&destination=example.org&state=deferred"), 1);
        cr_assert_eq(count_messages("?class=mailbox_full"), 0);
}

Test(server, greylisted_message_shows_its_class_and_a_future_next_attempt)
{
        json_t *j = http_json("GET", "/queue?class=greylist&limit=1", false, 200);
        json_t *m = json_array_get(json_object_get(j, "messages"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(m, "class")), "greylist");
        cr_assert_gt(json_integer_value(json_object_get(m, "next_attempt")), time(NULL));
        json_decref(j);
}

Test(server, queue_pages_with_offset_and_limit)
{
        json_t *j = http_json("GET", "/queue?offset=3&limit=1", false, 200);
        cr_assert_eq(json_integer_value(json_object_get(j, "total")), 5);
        json_t *msgs = json_object_get(j, "messages");
        cr_assert_eq(json_array_size(msgs), 1);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(msgs, 0), "queue_id")),
                         "0000000000000004");
        json_decref(j);
}

Test(server, bad_query_values_are_400)
{
        const char *bad[] = {"/queue?class=grey",
                             "/queue?state=sleeping",
                             "/queue?limit=0",
                             "/queue?limit=abc",
                             "/queue?offset=-1",
                             "/queue?foo=1",
                             "/queue?class=greylist&class=policy",
                             "/queue?destination=a%2Fb",
                             "/status?verbose=1"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                expect_error("GET", bad[i], false, 400);
}

Test(server, message_includes_the_last_transcript)
{
        json_t *j = http_json("GET", "/queue/0000000000000001", false, 200);
        cr_assert_str_eq(json_string_value(json_object_get(j, "queue_id")), "0000000000000001");
        cr_assert(strstr(json_string_value(json_object_get(j, "transcript")), "451 4.7.1"));
        json_decref(j);
}

Test(server, listings_are_refused_over_tcp_where_any_local_user_can_connect)
{
        expect_error("GET", "/queue", true, 403);
        expect_error("GET", "/queue/0000000000000001", true, 403);
        json_decref(http_json("GET", "/status", true, 200));
}

Test(server, unknown_message_is_404_and_bad_ids_are_400)
{
        expect_error("GET", "/queue/00000000000000FF", false, 404);
        expect_error("GET", "/queue/00000000000000ff", false, 400);
        expect_error("GET", "/queue/123", false, 400);
        expect_error("POST", "/queue/123/retry", false, 400);
}

Test(server, unknown_paths_are_404_json)
{
        expect_error("GET", "/", false, 404);
        expect_error("GET", "/etc/passwd", true, 404);
        expect_error("GET", "/status/extra", false, 404);
}

Test(server, wrong_method_is_405_with_allow)
{
        struct reply r = http("POST", "/status", false, 0);
        cr_assert_eq(r.code, 405);
        cr_assert_str_eq(r.allow, "GET, HEAD");
        free(r.body);
        r = http("GET", "/flush", false, 0);
        cr_assert_eq(r.code, 405);
        cr_assert_str_eq(r.allow, "POST");
        free(r.body);
        expect_error("PUT", "/queue/0000000000000001", false, 405);
}

Test(server, oversized_body_is_413)
{
        struct reply r = http("POST", "/flush", false, 64 * 1024);
        cr_assert_eq(r.code, 413, "%ld %s", r.code, r.body);
        free(r.body);
        cr_assert_eq(fx.fake.calls, 0, "the action must not run");
        r = http("POST", "/flush", false, 100);
        cr_assert_eq(r.code, 200, "a small body is fine");
        free(r.body);
}

Test(server, oversized_headers_are_refused)
{
        char path[40000];
        memset(path, 'a', sizeof(path));
        memcpy(path, "/status?x=", 10);
        path[sizeof(path) - 1] = '\0';
        struct reply r = http("GET", path, false, 0);
        cr_assert_geq(r.code, 400);
        cr_assert_lt(r.code, 500);
        free(r.body);
}

/* ---- metrics ---- */

Test(server, metrics_parse_strictly_and_show_queue_sizes)
{
        struct reply r = http("GET", "/metrics", true, 0);
        char err[256] = "";
        double v;
        cr_assert_eq(r.code, 200);
        cr_assert_str_eq(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
        cr_assert_eq(prom_parse(r.body, err, sizeof(err)), 0, "%s\n%s", err, r.body);
        cr_assert(
            prom_value(r.body, "tarry_queue_messages{state=\"deferred\",class=\"greylist\"}", &v));
        cr_assert_eq(v, 2);
        cr_assert(prom_value(r.body, "tarry_status_requests_total{code=\"200\"}", &v));
        cr_assert_geq(v, 1);
        free(r.body);
}

Test(server, requests_are_counted_by_code)
{
        expect_error("GET", "/nope", false, 404);
        expect_error("GET", "/nope", false, 404);
        struct reply r = http("GET", "/metrics", false, 0);
        double v;
        cr_assert(prom_value(r.body, "tarry_status_requests_total{code=\"404\"}", &v), "%s",
                  r.body);
        cr_assert_eq(v, 2);
        free(r.body);
}

/* ---- admin actions ---- */

static void expect_action(const char *method, const char *path, enum status_action a,
                          const char *target)
{
        json_t *j = http_json(method, path, false, 200);
        cr_assert(json_is_true(json_object_get(j, "ok")));
        cr_assert_str_eq(json_string_value(json_object_get(j, "action")), status_action_name(a));
        cr_assert_eq(fx.fake.last_action, a);
        cr_assert_str_eq(fx.fake.last_target, target);
        json_decref(j);
}

Test(server, root_runs_every_admin_action_on_the_unix_socket)
{
        expect_action("POST", "/queue/0000000000000001/retry", STATUS_ACTION_RETRY,
                      "0000000000000001");
        expect_action("POST", "/queue/0000000000000002/hold", STATUS_ACTION_HOLD,
                      "0000000000000002");
        expect_action("POST", "/queue/0000000000000005/release", STATUS_ACTION_RELEASE,
                      "0000000000000005");
        expect_action("DELETE", "/queue/0000000000000003", STATUS_ACTION_DELETE,
                      "0000000000000003");
        expect_action("POST", "/destinations/gmail.com/resume", STATUS_ACTION_RESUME, "gmail.com");
        expect_action("POST", "/flush", STATUS_ACTION_FLUSH, "");
        cr_assert_eq(fx.fake.calls, 6);
}

Test(server, flush_reports_how_many_messages_it_touched)
{
        json_t *j = http_json("POST", "/flush", false, 200);
        cr_assert_eq(json_integer_value(json_object_get(j, "count")), 3);
        cr_assert(json_is_null(json_object_get(j, "target")));
        json_decref(j);
}

Test(server, admin_actions_over_tcp_are_403)
{
        expect_error("POST", "/queue/0000000000000001/retry", true, 403);
        expect_error("POST", "/flush", true, 403);
        expect_error("DELETE", "/queue/0000000000000001", true, 403);
        expect_error("POST", "/destinations/gmail.com/resume", true, 403);
        cr_assert_eq(fx.fake.calls, 0);
}

/* In a child running as nobody (gid stays 0, so the 0660 socket is reachable). */
static long code_as_nobody(const char *method, const char *path)
{
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setuid(65534) < 0)
                        _exit(1);
                CURL *h = curl_easy_init();
                char url[256];
                long code = 0;
                snprintf(url, sizeof(url), "http://localhost%s", path);
                curl_easy_setopt(h, CURLOPT_URL, url);
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, fx.sock);
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
                curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
                struct reply r = {0};
                curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
                if (curl_easy_perform(h) != CURLE_OK)
                        _exit(2);
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
                _exit(code == 403 ? 43 : code == 200 ? 20 : 3);
        }
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st));
        return WEXITSTATUS(st) == 43 ? 403 : WEXITSTATUS(st) == 20 ? 200 : -WEXITSTATUS(st);
}

Test(server, admin_actions_from_another_uid_are_403_but_reads_work)
{
        cr_assert_eq(code_as_nobody("POST", "/flush"), 403);
        cr_assert_eq(code_as_nobody("DELETE", "/queue/0000000000000001"), 403);
        cr_assert_eq(code_as_nobody("GET", "/status"), 200);
        cr_assert_eq(fx.fake.calls, 0);
}

Test(server, provider_errors_map_to_http_codes)
{
        expect_error("POST", "/queue/00000000000000AA/retry", false, 404);
        expect_error("POST", "/destinations/example.invalid/resume", false, 404);
        fx.fake.action_result = -EINVAL;
        expect_error("POST", "/queue/0000000000000001/release", false, 400);
        fx.fake.action_result = -EBUSY;
        expect_error("DELETE", "/queue/0000000000000001", false, 409);
        fx.fake.action_result = -EIO;
        expect_error("POST", "/flush", false, 500);
}

/* Tests that start the server themselves, with their own options. */
TestSuite(listeners, .fini = teardown, .timeout = 30);

/* ---- hostile clients ---- */

static int connect_tcp(void)
{
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(fx.port)};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        return fd;
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(server, a_silent_client_does_not_block_others)
{
        int silent = connect_tcp();
        int partial = connect_tcp();
        cr_assert_eq(write(partial, "GET /sta", 8), 8);
        double t0 = now_s();
        json_t *j = http_json("GET", "/status", true, 200);
        json_decref(j);
        j = http_json("GET", "/status", false, 200);
        json_decref(j);
        cr_assert_lt(now_s() - t0, 1.0, "others were served at once");
        close(silent);
        close(partial);
}

Test(listeners, idle_connections_are_closed_after_the_timeout, .init = fx_init)
{
        fx.opt.connection_timeout_s = 1;
        fx_run();
        int fd = connect_tcp();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        double t0 = now_s();
        cr_assert_eq(poll(&p, 1, 5000), 1, "server never hung up");
        char c;
        cr_assert_eq(read(fd, &c, 1), 0);
        cr_assert_lt(now_s() - t0, 3.5);
        close(fd);
}

/* ---- listeners ---- */

Test(listeners, unix_socket_is_0660_and_replaced_when_stale, .init = fx_init)
{
        /* a stale socket from an earlier run */
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%.100s", fx.sock);
        cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
        close(fd);
        struct group *g = getgrnam("nogroup");
        cr_assert_not_null(g);
        fx.opt.group = "nogroup";
        fx_run();
        struct stat st;
        cr_assert_eq(stat(fx.sock, &st), 0);
        cr_assert(S_ISSOCK(st.st_mode));
        cr_assert_eq(st.st_mode & 07777, 0660);
        cr_assert_eq(st.st_gid, g->gr_gid);
        json_t *j = http_json("GET", "/status", false, 200);
        json_decref(j);
}

Test(listeners, the_socket_is_removed_on_stop, .init = fx_init)
{
        fx_run();
        cr_assert_eq(access(fx.sock, F_OK), 0);
        cr_assert_eq(write(fx.stop[1], "x", 1), 1);
        pthread_join(fx.thread, NULL);
        fx.running = false;
        status_stop(fx.srv);
        fx.srv = NULL;
        cr_assert_eq(access(fx.sock, F_OK), -1);
}

Test(listeners, start_errors_name_the_entry, .init = fx_init)
{
        char err[256];
        const char *remote[] = {"0.0.0.0:0", NULL};
        fx.opt.listen = remote;
        cr_assert_eq(status_start(fx.event, &fx.opt, provider(), NULL, &fx.srv, err, sizeof(err)),
                     -EPERM);
        cr_assert(strstr(err, "0.0.0.0:0") && strstr(err, "status_allow_remote"), "%s", err);

        /* allowed: the check is skipped and the bind itself is what fails here */
        const char *unroutable[] = {"192.0.2.1:0", NULL};
        fx.opt.listen = unroutable;
        fx.opt.allow_remote = true;
        cr_assert_eq(status_start(fx.event, &fx.opt, provider(), NULL, &fx.srv, err, sizeof(err)),
                     -EADDRNOTAVAIL, "%s", err);

        const char *garbage[] = {"unix:relative/path", NULL};
        fx.opt.listen = garbage;
        cr_assert_eq(status_start(fx.event, &fx.opt, provider(), NULL, &fx.srv, err, sizeof(err)),
                     -EINVAL);
        cr_assert(strstr(err, "unix:relative/path"), "%s", err);

        /* a regular file where the socket should go is not removed */
        FILE *f = fopen(fx.sock, "w");
        fclose(f);
        const char *onfile[] = {fx.unix_entry, NULL};
        fx.opt.listen = onfile;
        cr_assert_eq(status_start(fx.event, &fx.opt, provider(), NULL, &fx.srv, err, sizeof(err)),
                     -EEXIST);
        cr_assert_eq(access(fx.sock, F_OK), 0);
        fx.srv = NULL;
}

Test(listeners, socket_activated_listeners_are_used, .init = fx_init)
{
        /* what systemd would hand over: a unix socket and a loopback TCP socket */
        int ufd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%.100s", fx.sock);
        cr_assert_eq(bind(ufd, (struct sockaddr *)&sun, sizeof(sun)), 0);
        cr_assert_eq(listen(ufd, 8), 0);
        int tfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(sin);
        cr_assert_eq(bind(tfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        cr_assert_eq(listen(tfd, 8), 0);
        getsockname(tfd, (struct sockaddr *)&sin, &len);
        snprintf(fx.tcp_entry, sizeof(fx.tcp_entry), "127.0.0.1:%d", ntohs(sin.sin_port));
        int fds[] = {tfd, ufd};
        fx.opt.activated_fds = fds;
        fx.opt.n_activated_fds = 2;
        fx_run();
        cr_assert_eq(fx.port, ntohs(sin.sin_port));
        json_t *j = http_json("GET", "/status", false, 200);
        json_decref(j);
        j = http_json("GET", "/status", true, 200);
        json_decref(j);
        /* the activated socket stays systemd's: not unlinked on stop */
        cr_assert_eq(write(fx.stop[1], "x", 1), 1);
        pthread_join(fx.thread, NULL);
        fx.running = false;
        status_stop(fx.srv);
        fx.srv = NULL;
        cr_assert_eq(access(fx.sock, F_OK), 0);
        cr_assert_geq(fcntl(ufd, F_GETFD), 0, "our fd is still open");
        close(ufd);
        close(tfd);
}

/* ---- the client tarryq uses ---- */

TestSuite(client, .init = setup, .fini = teardown, .timeout = 30);

Test(client, prefers_the_unix_socket_and_returns_code_and_body)
{
        struct status_client *c;
        long code;
        json_t *j;
        cr_assert_eq(status_client_new(fx.listen, &c), 0);
        cr_assert_eq(status_client_request_json(c, "GET", "/status", &code, &j), 0);
        cr_assert_eq(code, 200);
        cr_assert_str_eq(status_client_endpoint(c), fx.unix_entry);
        json_decref(j);
        cr_assert_eq(
            status_client_request_json(c, "POST", "/queue/0000000000000001/hold", &code, &j), 0);
        cr_assert_eq(code, 200);
        cr_assert_eq(fx.fake.last_action, STATUS_ACTION_HOLD);
        json_decref(j);
        cr_assert_eq(status_client_request_json(c, "GET", "/queue/00000000000000FF", &code, &j), 0,
                     "an HTTP error is still an answer");
        cr_assert_eq(code, 404);
        json_decref(j);
        status_client_free(c);
}

Test(client, falls_back_to_tcp_when_the_socket_is_missing)
{
        char missing[200], tcp[64];
        snprintf(missing, sizeof(missing), "unix:%s/nope.sock", fx.dir);
        snprintf(tcp, sizeof(tcp), "127.0.0.1:%d", fx.port);
        const char *listen[] = {tcp, missing, NULL};
        struct status_client *c;
        long code;
        char *body;
        cr_assert_eq(status_client_new(listen, &c), 0);
        cr_assert_eq(status_client_request(c, "GET", "/status", &code, &body, NULL), 0);
        cr_assert_eq(code, 200);
        cr_assert(strstr(status_client_endpoint(c), "127.0.0.1"));
        free(body);
        status_client_free(c);
}

Test(client, says_not_answering_when_nobody_listens)
{
        char missing[200];
        snprintf(missing, sizeof(missing), "unix:%s/nope.sock", fx.dir);
        /* a port that was just free: bind, read it back, close */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(sin);
        bind(fd, (struct sockaddr *)&sin, sizeof(sin));
        getsockname(fd, (struct sockaddr *)&sin, &len);
        close(fd);
        char tcp[64];
        snprintf(tcp, sizeof(tcp), "127.0.0.1:%d", ntohs(sin.sin_port));
        const char *listen[] = {missing, tcp, NULL};
        struct status_client *c;
        long code;
        char *body;
        cr_assert_eq(status_client_new(listen, &c), 0);
        cr_assert_eq(status_client_request(c, "GET", "/status", &code, &body, NULL),
                     STATUS_CLIENT_NOT_ANSWERING);
        cr_assert_null(status_client_endpoint(c));
        cr_assert(strstr(status_client_last_error(c), "127.0.0.1"), "%s",
                  status_client_last_error(c));
        status_client_free(c);
}

Test(client, refuses_bad_requests_and_empty_config)
{
        struct status_client *c;
        const char *none[] = {NULL};
        long code;
        char *body;
        cr_assert_eq(status_client_new(none, &c), -ENOENT);
        cr_assert_eq(status_client_new(fx.listen, &c), 0);
        cr_assert_eq(status_client_request(c, "PATCH", "/status", &code, &body, NULL), -EINVAL);
        cr_assert_eq(status_client_request(c, "GET", "status", &code, &body, NULL), -EINVAL);
        cr_assert_eq(status_client_request(c, "GET", "/a b", &code, &body, NULL), -EINVAL);
        status_client_free(c);
}

static int count_fds(void)
{
        int n = 0;
        DIR *d = opendir("/proc/self/fd");
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

Test(listeners, stopping_closes_every_socket_it_opened, .init = fx_init)
{
        char err[256];
        int before = -1;
        for (int i = 0; i < 3; i++) {
                if (i == 1) /* the loop keeps its own timerfd from the first timer on */
                        before = count_fds();
                cr_assert_eq(status_start(fx.event, &fx.opt, provider(), fx.metrics, &fx.srv, err,
                                          sizeof(err)),
                             0, "%s", err);
                status_stop(fx.srv);
                fx.srv = NULL;
        }
        cr_assert_eq(count_fds(), before);
}

static size_t read_xs(char *buf, size_t sz, size_t n, void *ud)
{
        size_t *left = ud, k = sz * n < *left ? sz * n : *left;
        memset(buf, 'x', k);
        *left -= k;
        return k;
}

Test(server, oversized_chunked_body_is_413)
{
        size_t left = 20000;
        struct reply r = {0};
        CURL *h = curl_easy_init();
        struct curl_slist *hdr = curl_slist_append(NULL, "Transfer-Encoding: chunked");
        curl_easy_setopt(h, CURLOPT_URL, "http://localhost/flush");
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, fx.sock);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, read_xs);
        curl_easy_setopt(h, CURLOPT_READDATA, &left);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
        cr_assert_eq(curl_easy_perform(h), CURLE_OK);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.code);
        cr_assert_eq(r.code, 413, "%s", r.body);
        cr_assert_eq(fx.fake.calls, 0);
        curl_slist_free_all(hdr);
        curl_easy_cleanup(h);
        free(r.body);
}

/* ---- what the TCP port shows, and to whom ---- */

/* A TCP connection from a chosen loopback source address. */
static int connect_from(const char *src)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        cr_assert_eq(inet_pton(AF_INET, src, &a.sin_addr), 1);
        cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind %s: %m", src);
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(fx.port)};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "connect: %m");
        return fd;
}

/* Read what the server says until it hangs up (or max_s pass); returns the text. */
static char *read_answer(int fd, double max_s)
{
        static char buf[8192];
        size_t len = 0;
        double t0 = now_s();
        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                int left = (int)((max_s - (now_s() - t0)) * 1000);
                if (left <= 0 || poll(&p, 1, left) != 1)
                        break;
                ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        return buf;
}

/* One raw request over TCP with the given Host header (NULL: none); the status code. */
static int raw_status_code(const char *path, const char *host)
{
        char req[512];
        int fd = connect_from("127.0.0.1");
        if (host)
                snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
        else
                snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
        cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
        const char *a = read_answer(fd, 10);
        close(fd);
        int code = 0;
        cr_assert_eq(sscanf(a, "HTTP/1.%*d %d", &code), 1, "no answer: '%s'", a);
        return code;
}

Test(server, tcp_status_is_the_aggregate_view_and_the_unix_socket_the_full_one)
{
        json_t *j = http_json("GET", "/status", true, 200);
        cr_assert_str_eq(json_string_value(json_object_get(j, "view")), "aggregate");
        json_decref(j);
        j = http_json("GET", "/status", false, 200);
        cr_assert_str_eq(json_string_value(json_object_get(j, "view")), "full");
        json_decref(j);
}

Test(server, a_host_header_naming_another_site_is_refused_over_tcp)
{
        char host[64];
        /* what a browser sends after rebinding evil.example to 127.0.0.1 */
        snprintf(host, sizeof(host), "evil.example:%d", fx.port);
        cr_assert_eq(raw_status_code("/status", host), 421);
        cr_assert_eq(raw_status_code("/metrics", "evil.example"), 421);
        snprintf(host, sizeof(host), "127.0.0.1:%d", fx.port + 1 == 65536 ? 1 : fx.port + 1);
        cr_assert_eq(raw_status_code("/status", host), 421, "another port");
        cr_assert_eq(raw_status_code("/status", "127.0.0.2"), 421, "another address");
        /* the listening address, localhost, and HTTP/1.0 without Host are served */
        snprintf(host, sizeof(host), "127.0.0.1:%d", fx.port);
        cr_assert_eq(raw_status_code("/status", host), 200);
        snprintf(host, sizeof(host), "LocalHost:%d", fx.port);
        cr_assert_eq(raw_status_code("/status", host), 200);
        cr_assert_eq(raw_status_code("/metrics", "localhost"), 200);
        cr_assert_eq(raw_status_code("/status", NULL), 200);
}

Test(server, a_request_with_hundreds_of_query_arguments_is_refused_at_once)
{
        char req[8192] = "GET /status?";
        for (int i = 0; i < 600; i++)
                strcat(req, "a=1&");
        strcat(req, "b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        int fd = connect_from("127.0.0.1");
        double t0 = now_s();
        cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
        const char *a = read_answer(fd, 9);
        double took = now_s() - t0;
        close(fd);
        /* it used to hold the connection, unanswered, for the 10 s idle timeout */
        cr_assert_lt(took, 5.0, "answered after %.1f s", took);
        cr_assert(strncmp(a, "HTTP/1.1 414", 12) == 0, "answer: '%.200s'", a);
        cr_assert_not_null(strstr(a, "too many query arguments"), "answer: '%.300s'", a);
        /* and a few more than any resource takes, on the unix socket too */
        expect_error("GET", "/queue?class=greylist&a&b&c&d&e&f&g&h&i&j&k&l&m&n&o&p&q", false, 414);
}

/* ---- slow clients ---- */

struct trickle {
        int *fds;
        size_t n;
        volatile bool stop;
};

/* One more header byte on every connection every 200 ms: never idle. */
static void *trickle_run(void *arg)
{
        struct trickle *t = arg;
        while (!t->stop) {
                for (size_t i = 0; i < t->n; i++)
                        if (t->fds[i] >= 0 && send(t->fds[i], "a", 1, MSG_NOSIGNAL) != 1) {
                                close(t->fds[i]);
                                t->fds[i] = -1;
                        }
                usleep(200 * 1000);
        }
        return NULL;
}

static double timed_status(bool tcp, const char *path)
{
        double t0 = now_s();
        struct reply r = http("GET", path, tcp, 0);
        cr_assert_eq(r.code, 200, "%s over %s: %ld %s", path, tcp ? "tcp" : "unix", r.code, r.body);
        free(r.body);
        return now_s() - t0;
}

Test(server, eighty_slow_clients_from_eight_addresses_do_not_hold_status_or_metrics)
{
        enum { N = 80 };
        int fds[N];
        struct trickle t = {.fds = fds, .n = N};
        pthread_t th;
        for (int i = 0; i < N; i++) {
                char src[32];
                snprintf(src, sizeof(src), "127.0.0.%d", 100 + i % 8);
                fds[i] = connect_from(src);
                const char *start = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
                cr_assert_eq(send(fds[i], start, strlen(start), MSG_NOSIGNAL),
                             (ssize_t)strlen(start));
        }
        cr_assert_eq(pthread_create(&th, NULL, trickle_run, &t), 0);
        usleep(500 * 1000); /* let the server take them all in */
        /* used to wait for the slow clients (for ever, as long as they trickle) */
        for (int i = 0; i < 3; i++) {
                double took = timed_status(true, "/status");
                cr_assert_lt(took, 5.0, "/status over TCP took %.1f s", took);
                took = timed_status(true, "/metrics");
                cr_assert_lt(took, 5.0, "/metrics over TCP took %.1f s", took);
                took = timed_status(false, "/status");
                cr_assert_lt(took, 5.0, "/status on the unix socket took %.1f s", took);
        }
        t.stop = true;
        pthread_join(th, NULL);
        for (int i = 0; i < N; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

Test(listeners, a_request_trickling_in_is_answered_408_after_the_request_timeout, .init = fx_init)
{
        fx.opt.request_timeout_ms = 500;
        fx_run();
        int fd = connect_from("127.0.0.1");
        const char *start = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        cr_assert_eq(send(fd, start, strlen(start), MSG_NOSIGNAL), (ssize_t)strlen(start));
        struct trickle t = {.fds = &fd, .n = 1};
        pthread_t th;
        double t0 = now_s();
        cr_assert_eq(pthread_create(&th, NULL, trickle_run, &t), 0);
        /* the idle timeout (10 s) never fires for a client that keeps sending */
        char a[512];
        snprintf(a, sizeof(a), "%s", read_answer(fd, 8));
        double took = now_s() - t0;
        t.stop = true;
        pthread_join(th, NULL);
        if (fd >= 0)
                close(fd);
        cr_assert(strncmp(a, "HTTP/1.1 408", 12) == 0, "after %.1f s: '%.200s'", took, a);
        cr_assert_lt(took, 6.0);
}

/* ---- a streamed listing whose messages are slow to read ---- */

#define SLOW_MESSAGES 48
#define SLOW_READ_US  3000 /* each envelope read: longer than a slice may take */

static struct {
        int left;
        uint64_t iteration; /* the loop's turn of the last list_next */
        int run, longest;   /* messages rendered in one turn: now, at most */
} slow;

static int slow_open(void *userdata, const struct status_queue_filter *f, void **out_page,
                     size_t *out_total)
{
        (void)userdata, (void)f;
        slow.left = SLOW_MESSAGES;
        *out_page = &slow;
        *out_total = SLOW_MESSAGES;
        return 0;
}

static int slow_next(void *userdata, void *page, json_t **out)
{
        (void)userdata, (void)page;
        if (slow.left == 0)
                return 0;
        usleep(SLOW_READ_US);
        uint64_t it = 0;
        cr_assert_eq(sd_event_get_iteration(fx.event, &it), 0);
        slow.run = it == slow.iteration ? slow.run + 1 : 1;
        slow.iteration = it;
        if (slow.run > slow.longest)
                slow.longest = slow.run;
        char id[17];
        snprintf(id, sizeof(id), "%016X", (unsigned)slow.left--);
        *out = json_pack("{s:s}", "queue_id", id);
        return 1;
}

static void slow_close(void *userdata, void *page)
{
        (void)userdata, (void)page;
}

static void slow_setup(void)
{
        fx_init();
        memset(&slow, 0, sizeof(slow));
        static struct status_provider p;
        p = *provider();
        p.list_open = slow_open;
        p.list_next = slow_next;
        p.list_close = slow_close;
        char err[256] = "";
        int r = status_start(fx.event, &fx.opt, &p, fx.metrics, &fx.srv, err, sizeof(err));
        cr_assert_eq(r, 0, "status_start: %d %s", r, err);
        cr_assert_eq(pipe2(fx.stop, O_CLOEXEC), 0);
        cr_assert_eq(sd_event_add_io(fx.event, NULL, fx.stop[0], EPOLLIN, on_stop, NULL), 0);
        cr_assert_eq(pthread_create(&fx.thread, NULL, run_loop, NULL), 0);
        fx.running = true;
}

/* Where reading a message is slow (envelopes from a cold disk), the
 * listing gives the loop back after a message or two, not after a slice of
 * 16: other requests wait for one read, not sixteen. */
Test(stream, a_slow_listing_gives_the_loop_back_after_each_slow_message, .init = slow_setup,
     .fini = teardown, .timeout = 30)
{
        cr_assert_eq(count_messages("?limit=100"), SLOW_MESSAGES);
        cr_assert_leq(slow.longest, 2,
                      "%d messages of %d ms each were read in one turn of the loop", slow.longest,
                      SLOW_READ_US / 1000);
}
