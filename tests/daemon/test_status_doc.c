/* tests/daemon/test_status_doc.c — docs/status.md describes every field a
 * running tarryd puts in /status (both views, and ?fleet=1), /queue,
 * /queue/ID and /metrics: the fields tarryq and the tests read. A field
 * added to the JSON without its line in the page fails here. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/status_client.h"
#include "harness.h"
#include "tests/fixture/fixture.h"
#include "tests/status/doc_fields.h"

#define WAIT_MS 30000

static json_t *get(struct status_client *c, const char *path)
{
        long code = 0;
        json_t *j = NULL;
        int r = status_client_request_json(c, "GET", path, &code, &j);
        cr_assert_eq(r, 0, "GET %s: %d %s", path, r, status_client_last_error(c));
        cr_assert_eq(code, 200, "GET %s answered %ld", path, code);
        return j;
}

static void check(const char *what, json_t *o)
{
        char missing[4096] = "";
        cr_assert_eq(doc_fields_missing(o, missing, sizeof(missing)), 0,
                     "docs/status.md does not name these fields of %s: %s", what, missing);
        json_decref(o);
}

/* Every family of /metrics and every label name of its series. */
static void check_metrics(const char *text)
{
        size_t families = 0;
        for (const char *line = text; line && *line; line = strchr(line, '\n'), line += !!line) {
                char name[128];
                if (sscanf(line, "# TYPE %127s", name) == 1) {
                        families++;
                        cr_assert(doc_names(name), "docs/status.md does not name %s", name);
                        continue;
                }
                if (*line == '#' || *line == '\n')
                        continue;
                const char *brace = strchr(line, '{'), *eol = strchr(line, '\n');
                if (!brace || (eol && brace > eol))
                        continue;
                for (const char *p = brace + 1; *p && *p != '}';) {
                        size_t n = strcspn(p, "=");
                        snprintf(name, sizeof(name), "%.*s", (int)n, p);
                        cr_assert(doc_names(name),
                                  "docs/status.md does not name the label %s (%.*s)", name,
                                  (int)(eol ? eol - line : 80), line);
                        p = strstr(p + n, "\",");
                        if (!p)
                                break;
                        p += 2;
                }
        }
        cr_assert_geq(families, 8, "%s", text);
}

Test(status_doc, docs_status_md_names_every_field_tarryd_serves, .timeout = 180)
{
        struct fixture *f;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        fixture_set(f, "greylist", "3600");
        cr_assert_eq(fixture_start(f, 0), 0);
        char extra[512];
        snprintf(extra, sizeof(extra), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(f));
        struct harness h;
        harness_init(&h, extra);
        harness_start(&h);
        char u[400], t[64];
        snprintf(u, sizeof(u), "unix:%s/status.sock", h.dir);
        snprintf(t, sizeof(t), "127.0.0.1:%d", h.status_port);
        const char *ul[] = {u, NULL}, *tl[] = {t, NULL};
        struct status_client *unix_c, *tcp_c;
        cr_assert_eq(status_client_new(ul, &unix_c), 0);
        cr_assert_eq(status_client_new(tl, &tcp_c), 0);

        harness_send(&h, "alice@sender.test", "bob@example.test", "deferred");
        json_int_t deferred = 0;
        for (int64_t end = harness_now_us() + (int64_t)WAIT_MS * 1000;
             deferred != 1 && harness_now_us() < end; harness_sleep_ms(20)) {
                json_t *st = get(unix_c, "/status");
                deferred =
                    json_integer_value(json_object_get(json_object_get(st, "queue"), "deferred"));
                json_decref(st);
        }
        cr_assert_eq(deferred, 1, "the message was not deferred");

        json_t *st = get(unix_c, "/status");
        cr_assert_gt(json_array_size(json_object_get(st, "destinations")), 0);
        cr_assert_gt(json_array_size(json_object_get(st, "sites")), 0);
        check("/status (unix socket)", st);
        check("/status (TCP)", get(tcp_c, "/status"));
        check("/status?fleet=1", get(unix_c, "/status?fleet=1"));
        json_t *q = get(unix_c, "/queue");
        char id[64];
        snprintf(id, sizeof(id), "%s",
                 json_string_value(json_object_get(
                     json_array_get(json_object_get(q, "messages"), 0), "queue_id")));
        check("/queue", q);
        char path[100];
        snprintf(path, sizeof(path), "/queue/%s", id);
        check(path, get(unix_c, path));

        long code = 0;
        char *body = NULL;
        size_t len = 0;
        cr_assert_eq(status_client_request(tcp_c, "GET", "/metrics", &code, &body, &len), 0);
        cr_assert_eq(code, 200);
        check_metrics(body);
        free(body);

        status_client_free(unix_c);
        status_client_free(tcp_c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 5000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
