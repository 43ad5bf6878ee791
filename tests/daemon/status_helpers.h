/* tests/daemon/status_helpers.h — a test's client of the tarryd it started:
 * connect to its status socket, GET a JSON answer, wait until every message
 * is indexed. Header-only; for tests linked with status_client and jansson.
 */
#pragma once

#include <criterion/criterion.h>
#include <stdio.h>

#include "cli/status_client.h"
#include "harness.h"

/* A client of h's unix:DIR/status.sock. */
static inline struct status_client *status_connect(const struct harness *h)
{
        char u[400];
        snprintf(u, sizeof(u), "unix:%s/status.sock", h->dir);
        const char *ul[] = {u, NULL};
        struct status_client *c = NULL;
        cr_assert_eq(status_client_new(ul, &c), 0);
        return c;
}

/* GET path; fails the test unless it answers 200 with JSON. */
static inline json_t *get_json(struct status_client *c, const char *path)
{
        long code = 0;
        json_t *j = NULL;
        cr_assert_eq(status_client_request_json(c, "GET", path, &code, &j), 0, "%s", path);
        cr_assert_eq(code, 200, "%s: %ld", path, code);
        return j;
}

/* Until /queue's total is n (every message indexed), at most 180 s. */
static inline void wait_until_indexed(struct status_client *c, size_t n)
{
        size_t total = 0;
        for (int waited = 0; waited < 180000 && total != n; waited += 20) {
                json_t *j = get_json(c, "/queue?limit=1&after=0000000000000000");
                total = (size_t)json_integer_value(json_object_get(j, "total"));
                json_decref(j);
                if (total != n)
                        harness_sleep_ms(20);
        }
        cr_assert_eq(total, n, "tarryd indexed %zu of %zu messages", total, n);
}
