/* tests/daemon/test_paging.c — GET /queue?after=ID pages with a cursor.
 *
 * A listing of a big queue takes many pages; meanwhile messages leave (here:
 * deleted by the administrator) and arrive. Paging on from the last ID of
 * the page before, every message that was queued throughout is listed once:
 * none twice, none skipped (an offset would skip as many as left before it).
 *
 * A page is streamed a few messages per turn of tarryd's loop, so /status
 * is answered while a big page goes out; tarryq -j prints pages as they come.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "status_helpers.h"

#define QUEUED 250
#define PAGE   100

/* A spool of n deferred messages (bench/spool-gen), tarryd started on it and
 * every envelope read (start-up reads them after READY). */
static struct status_client *start_with_queue_conf(struct harness *h, int n, const char *extra)
{
        harness_init(h, extra);
        harness_spool_deferred(h, n);
        harness_start(h);
        struct status_client *c = status_connect(h);
        wait_until_indexed(c, (size_t)n);
        return c;
}

static struct status_client *start_with_queue(struct harness *h, int n)
{
        return start_with_queue_conf(h, n, NULL);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

Test(paging, a_listing_pages_on_while_messages_arrive_and_leave, .timeout = 240)
{
        struct harness h;
        struct status_client *c = start_with_queue(&h, QUEUED);

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

/* A filtered page from a cursor says "total": null, so a client (tarryq,
 * mailq) takes a page short of its limit for the last: a message chosen for
 * the page that cannot be listed (here: its envelope damaged after start)
 * makes room for the next match, not a short page. */
Test(paging, a_filtered_page_stays_full_when_one_of_its_messages_cannot_be_read, .timeout = 120)
{
        enum { N = 30, LIMIT = 10 };
        struct harness h;
        struct status_client *c = start_with_queue(&h, N);
        json_t *first = get_json(c, "/queue?limit=2&after=0000000000000000");
        const char *victim = json_string_value(
            json_object_get(json_array_get(json_object_get(first, "messages"), 1), "queue_id"));
        cr_assert_not_null(victim);
        char path[700];
        struct stat st;
        snprintf(path, sizeof(path), "%s/active/%s", h.spool, victim);
        cr_assert_eq(stat(path, &st), 0, "%s", path);
        if (S_ISDIR(st.st_mode))
                strcat(path, "/envelope");
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f, "%s", path);
        fputs("{not an envelope", f);
        fclose(f);
        json_decref(first);

        char q[128];
        snprintf(q, sizeof(q), "/queue?limit=%d&after=0000000000000000&state=deferred", LIMIT);
        json_t *page = get_json(c, q);
        cr_assert(json_is_null(json_object_get(page, "total")));
        cr_assert_eq(json_array_size(json_object_get(page, "messages")), LIMIT,
                     "a page of %zu where %d match",
                     json_array_size(json_object_get(page, "messages")), N - 1);
        json_decref(page);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}

/* ---- /status during a big page ---- */

#define BIG 6000

struct ticker {
        struct status_client *c;
        atomic_bool stop;
        int64_t worst_us;
        int answered;
};

/* GET /status over and over until told to stop; the slowest answer. */
static void *tick(void *userdata)
{
        struct ticker *t = userdata;
        while (!atomic_load(&t->stop)) {
                int64_t t0 = harness_now_us();
                long code = 0;
                char *body = NULL;
                size_t len = 0;
                int r = status_client_request(t->c, "GET", "/status", &code, &body, &len);
                free(body);
                if (r < 0 || code != 200)
                        return (void *)1;
                int64_t took = harness_now_us() - t0;
                if (took > t->worst_us)
                        t->worst_us = took;
                t->answered++;
                harness_sleep_ms(2);
        }
        return NULL;
}

struct collected {
        char *data;
        size_t len, cap;
};

static int collect(const char *data, size_t len, void *userdata)
{
        struct collected *b = userdata;
        if (b->len + len + 1 > b->cap) {
                b->cap = 2 * (b->len + len + 1);
                b->data = realloc(b->data, b->cap);
                cr_assert_not_null(b->data);
        }
        memcpy(b->data + b->len, data, len);
        b->len += len;
        b->data[b->len] = '\0';
        return 0;
}

Test(paging, status_is_answered_while_a_big_page_is_being_listed, .timeout = 300)
{
        struct harness h;
        struct status_client *c = start_with_queue(&h, BIG);
        struct ticker t = {.stop = false, .c = status_connect(&h)};

        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, tick, &t), 0);
        harness_sleep_ms(50); /* the ticker is asking */
        struct collected b = {0};
        long code = 0;
        char *err_body = NULL;
        int64_t t0 = harness_now_us();
        int r = status_client_request_stream(c, "GET", "/queue?limit=10000&after=0000000000000000",
                                             &code, collect, &b, &err_body, NULL);
        int64_t listing_us = harness_now_us() - t0;
        atomic_store(&t.stop, true);
        void *ticker_failed = NULL;
        pthread_join(th, &ticker_failed);
        cr_assert_eq(r, 0);
        cr_assert_eq(code, 200, "%s", err_body ? err_body : "");
        free(err_body);

        /* the whole page, valid JSON, every message once */
        json_t *page = json_loadb(b.data, b.len, 0, NULL);
        cr_assert_not_null(page, "not JSON: %.200s", b.data);
        cr_assert_eq(json_integer_value(json_object_get(page, "total")), BIG);
        cr_assert_eq(json_array_size(json_object_get(page, "messages")), BIG);
        json_decref(page);
        free(b.data);

        /* /status kept being answered while the page went out: no answer
         * waited for the page (that would take about as long as the listing) */
        cr_assert_null(ticker_failed, "a GET /status failed during the listing");
        cr_assert_geq(t.answered, 3, "%d /status answers during a %.2f s listing", t.answered,
                      listing_us / 1e6);
        cr_assert_lt(t.worst_us, listing_us / 4,
                     "the slowest /status took %.3f s of the listing's %.3f s", t.worst_us / 1e6,
                     listing_us / 1e6);
        status_client_free(t.c);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}

/* tarryq -j pages through the live queue (1,000 a page) and prints each
 * message once, in ID order, as valid JSON lines. */
Test(paging, tarryq_j_lists_a_queue_of_several_pages_once_in_id_order, .timeout = 300)
{
        enum { QUEUE = 2500 };
        struct harness h;
        struct status_client *c = start_with_queue(&h, QUEUE);
        char *out = NULL, *err = NULL;
        const char *args[] = {"-j", NULL};
        cr_assert_eq(harness_tarryq(&h, args, &out, &err), 0, "tarryq -j: %s", err);
        cr_assert_str_empty(err, "the live listing warned: %s", err);
        size_t lines = 0;
        char prev[16 + 1] = "";
        for (char *line = out, *nl; *line; line = nl + 1) {
                nl = strchr(line, '\n');
                cr_assert_not_null(nl, "the listing ends in the middle of a line");
                json_t *o = json_loadb(line, (size_t)(nl - line), 0, NULL);
                cr_assert(json_is_object(o), "line %zu is not a JSON object: %.200s", lines + 1,
                          line);
                const char *id = json_string_value(json_object_get(o, "queue_id"));
                cr_assert(id && strlen(id) == 16, "line %zu", lines + 1);
                cr_assert_gt(strcmp(id, prev), 0, "%s listed after %s", id, prev);
                memcpy(prev, id, sizeof(prev));
                cr_assert_not_null(json_object_get(o, "recipients"));
                json_decref(o);
                lines++;
        }
        cr_assert_eq(lines, QUEUE);
        free(out);
        free(err);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}

/* tarryq -j into a pipe nobody reads for longer than tarryd keeps an idle
 * connection (10 s): tarryq waits on its output between pages, never with
 * a page half read, so the listing is whole once the reader comes back. */
Test(paging, tarryq_j_into_a_stalled_reader_still_lists_everything, .timeout = 300)
{
        enum { QUEUE = 3000 };
        struct harness h;
        struct status_client *c = start_with_queue(&h, QUEUE);
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                dup2(fds[1], 1);
                close(fds[0]);
                close(fds[1]);
                execl(harness_binary("cli/tarryq"), "tarryq", "-C", h.conf, "-j", (char *)NULL);
                _exit(127);
        }
        close(fds[1]);
        harness_sleep_ms(13000); /* the pipe (64 KB) fills at once: ~3 MB to come */
        FILE *f = fdopen(fds[0], "r");
        cr_assert_not_null(f);
        size_t lines = 0, cap = 0;
        char *line = NULL;
        while (getline(&line, &cap, f) > 0)
                lines++;
        free(line);
        fclose(f);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tarryq -j: status %d", st);
        cr_assert_eq(lines, QUEUE);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}

/* GET /queue/ID renders one message as the listing did before its envelopes
 * were read ahead on a thread (load, annotate, render, all on the loop). */
static char *one_message_line(struct status_client *c, const char *id)
{
        char path[64];
        snprintf(path, sizeof(path), "/queue/%s", id);
        json_t *o = get_json(c, path);
        json_object_del(o, "all_recipients"); /* GET /queue/ID's own */
        json_object_del(o, "transcript");
        char *line = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        cr_assert_not_null(line);
        return line;
}

/* The lines of tarryq -j (tarryd's listing, envelopes read ahead) are, byte
 * for byte, what tarryd renders of each message on its own: deferred ones
 * written by spool-gen, held ones (another folder), and messages tried and
 * deferred by tarryd itself (a reply, a destination, sites). */
Test(paging, a_listed_line_is_byte_for_byte_the_message_tarryd_shows_alone, .timeout = 300)
{
        enum { SPOOLED = 300, SENT = 3, HELD_EVERY = 7 }; /* SENT: as many d*.test below */
        struct harness h;
        /* every attempt is refused (nothing listens on port 9), each message
         * to a destination of its own (no back-off holds one behind another) */
        struct status_client *c = start_with_queue_conf(&h, SPOOLED,
                                                        "[transport]\n"
                                                        "d0.test = [127.0.0.1]:9\n"
                                                        "d1.test = [127.0.0.2]:9\n"
                                                        "d2.test = [127.0.0.3]:9\n");
        for (int i = 0; i < SENT; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "bob@d%d.test", i);
                harness_send(&h, "alice@sender.test", rcpt, "deferred");
        }
        cr_assert(harness_wait_log(&h, "status=deferred", SENT, 120000), "not every message tried");
        /* and none due or in flight any more: nothing changes while we compare */
        size_t due = 1;
        for (int waited = 0; due > 0 && waited < 120000; waited += 50) {
                json_t *j = get_json(c, "/queue?state=active&limit=1&after=0000000000000000");
                due = (size_t)json_integer_value(json_object_get(j, "total"));
                json_decref(j);
                if (due > 0)
                        harness_sleep_ms(50);
        }
        cr_assert_eq(due, 0, "messages still due or in flight");

        json_t *first = get_json(c, "/queue?limit=500&after=0000000000000000");
        json_t *msgs = json_object_get(first, "messages");
        cr_assert_eq(json_array_size(msgs), SPOOLED + SENT);
        for (size_t i = 0; i < json_array_size(msgs); i += HELD_EVERY) {
                char path[64];
                snprintf(path, sizeof(path), "/queue/%s/hold",
                         json_string_value(json_object_get(json_array_get(msgs, i), "queue_id")));
                long code = 0;
                char *body = NULL;
                size_t len = 0;
                cr_assert_eq(status_client_request(c, "POST", path, &code, &body, &len), 0);
                cr_assert_eq(code, 200, "POST %s: %ld %s", path, code, body);
                free(body);
        }
        json_decref(first);

        char *out = NULL, *err = NULL;
        const char *args[] = {"-j", NULL};
        cr_assert_eq(harness_tarryq(&h, args, &out, &err), 0, "tarryq -j: %s", err);
        cr_assert_str_empty(err, "the live listing warned: %s", err);
        size_t lines = 0, held = 0, tried = 0;
        for (char *line = out, *nl; *line; line = nl + 1) {
                nl = strchr(line, '\n');
                cr_assert_not_null(nl, "the listing ends in the middle of a line");
                *nl = '\0';
                json_t *o = json_loads(line, 0, NULL);
                cr_assert_not_null(o, "line %zu: %.200s", lines + 1, line);
                const char *id = json_string_value(json_object_get(o, "queue_id"));
                cr_assert_not_null(id);
                char *alone = one_message_line(c, id);
                cr_assert_str_eq(line, alone, "%s listed differs from its own rendering", id);
                held += strcmp(json_string_value(json_object_get(o, "queue_name")), "hold") == 0;
                tried += strcmp(json_string_value(json_object_get(o, "sender")),
                                "alice@sender.test") == 0;
                free(alone);
                json_decref(o);
                lines++;
        }
        cr_assert_eq(lines, SPOOLED + SENT);
        cr_assert_eq(held, (SPOOLED + SENT + HELD_EVERY - 1) / HELD_EVERY);
        cr_assert_eq(tried, SENT, "not every message tried by tarryd was listed");
        free(out);
        free(err);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}
