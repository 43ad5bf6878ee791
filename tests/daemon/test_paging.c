/* tests/daemon/test_paging.c — GET /queue?after=ID pages with a cursor.
 *
 * A listing of a big queue takes many pages; meanwhile messages leave (here:
 * deleted by the administrator) and arrive. Paging on from the last ID of
 * the page before, every message that was queued throughout is listed once:
 * none twice, none skipped (an offset would skip as many as left before it).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/status_client.h"
#include "harness.h"

#define QUEUED 250
#define PAGE   100

static json_t *get_json(struct status_client *c, const char *path)
{
        long code = 0;
        json_t *j = NULL;
        cr_assert_eq(status_client_request_json(c, "GET", path, &code, &j), 0, "%s", path);
        cr_assert_eq(code, 200, "%s: %ld", path, code);
        return j;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

Test(paging, a_listing_pages_on_while_messages_arrive_and_leave, .timeout = 240)
{
        struct harness h;
        harness_init(&h, NULL);
        harness_layout_spool(&h);
        char gen[700];
        snprintf(gen, sizeof(gen), "%s --spool %s --messages %d --defer 3600 >/dev/null",
                 harness_binary("bench/spool-gen"), h.spool, QUEUED);
        cr_assert_eq(system(gen), 0, "%s", gen);
        harness_give_spool(&h);
        harness_start(&h);
        char u[400];
        snprintf(u, sizeof(u), "unix:%s/status.sock", h.dir);
        const char *ul[] = {u, NULL};
        struct status_client *c = NULL;
        cr_assert_eq(status_client_new(ul, &c), 0);
        /* everything read (start-up reads envelopes after READY) */
        for (int waited = 0; waited < 120000; waited += 10) {
                json_t *j = get_json(c, "/queue?limit=1");
                size_t total = (size_t)json_integer_value(json_object_get(j, "total"));
                json_decref(j);
                if (total == QUEUED)
                        break;
                harness_sleep_ms(10);
        }

        char *seen[2 * QUEUED];
        size_t n_seen = 0, pages = 0;
        char after[17] = "";
        for (;;) {
                char path[96];
                snprintf(path, sizeof(path), "/queue?limit=%d%s%s", PAGE, *after ? "&after=" : "",
                         after);
                json_t *page = get_json(c, path);
                json_t *msgs = json_object_get(page, "messages");
                size_t n = json_array_size(msgs);
                for (size_t i = 0; i < n; i++) {
                        const char *id =
                            json_string_value(json_object_get(json_array_get(msgs, i), "queue_id"));
                        cr_assert(id && n_seen < 2 * QUEUED);
                        seen[n_seen++] = strdup(id);
                }
                size_t total = (size_t)json_integer_value(json_object_get(page, "total"));
                json_decref(page);
                pages++;
                if (n == 0 || n >= total)
                        break;
                snprintf(after, sizeof(after), "%s", seen[n_seen - 1]);
                if (pages == 1) {
                        /* 10 messages already listed leave, 3 new ones arrive */
                        for (size_t i = 0; i < 10; i++) {
                                char del[64];
                                snprintf(del, sizeof(del), "/queue/%s", seen[i]);
                                long code = 0;
                                char *body = NULL;
                                size_t len = 0;
                                cr_assert_eq(
                                    status_client_request(c, "DELETE", del, &code, &body, &len), 0);
                                cr_assert_eq(code, 200, "DELETE %s: %ld %s", del, code, body);
                                free(body);
                        }
                        for (int i = 0; i < 3; i++)
                                harness_send(&h, "alice@sender.test", "bob@nowhere.invalid",
                                             "arrives");
                }
        }
        cr_assert_geq(pages, 3);
        /* every one of the queued messages once, in ID order; the new ones after */
        qsort(seen, n_seen, sizeof(*seen), cmp_str);
        for (size_t i = 1; i < n_seen; i++)
                cr_assert_str_neq(seen[i], seen[i - 1], "%s listed twice", seen[i]);
        cr_assert_geq(n_seen, QUEUED, "%zu listed of the %d queued throughout", n_seen, QUEUED);
        for (size_t i = 0; i < n_seen; i++)
                free(seen[i]);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}
