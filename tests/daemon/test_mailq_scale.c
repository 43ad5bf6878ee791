/* tests/daemon/test_mailq_scale.c — an ordinary user's mailq against a big queue.
 *
 * A mailq: socket lets any local user list the messages they submitted.
 * tarryd answers it from its index: the submitter's uid is in each record,
 * so listing a user's five messages out of thousands reads no one else's
 * envelope (tarry_queue_listing_filter_reads_total stays 0), the walk to
 * the next match is made in bounded slices on the loop, and a filtered
 * page's total is not counted ("total": null): tarryq stops at a short page.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
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

#define QUEUED      5000 /* root's, but for: */
#define OTHER_EVERY 100  /* one in a hundred from the first ... */
#define OTHER_COUNT 5    /* ... five of them: the ordinary user's; then 4,600 root's to the end */
#define READS       "tarry_queue_listing_filter_reads_total"

static uid_t user_uid(void)
{
        struct passwd *pw = getpwnam("nobody");
        cr_assert_not_null(pw, "no user nobody");
        return pw->pw_uid;
}

/* QUEUED deferred messages by spool-gen, OTHER_COUNT of them submitted by
 * nobody; tarryd with a mailq: socket started on them, every one indexed. */
static struct status_client *start(struct harness *h)
{
        if (!harness_can_switch_user())
                cr_skip_test("needs root to act as an ordinary user");
        harness_init(h, NULL);
        char text[2048];
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = %s\n"
                 "status_listen = unix:%s/status.sock, 127.0.0.1:0, mailq:%s/mailq.sock\n"
                 "shutdown_timeout = 2s\n",
                 h->spool, HARNESS_DAEMON_USER, h->dir, h->dir);
        harness_write_config(h, text);
        cr_assert_eq(chmod(h->conf, 0644), 0);
        harness_layout_spool(h);
        char gen[900];
        snprintf(gen, sizeof(gen),
                 "%s --spool %s --messages %d --defer 3600 --other-uid %u --other-every %d "
                 "--other-count %d >/dev/null",
                 harness_binary("bench/spool-gen"), h->spool, QUEUED, (unsigned)user_uid(),
                 OTHER_EVERY, OTHER_COUNT);
        cr_assert_eq(system(gen), 0, "%s", gen);
        harness_give_spool(h);
        harness_start(h);
        cr_assert_eq(chmod(h->dir, 0711), 0); /* like /run/tarry: users reach mailq.sock */
        struct status_client *c = status_connect(h);
        wait_until_indexed(c, QUEUED);
        return c;
}

/* tarryq -C conf -j as nobody: its exit code, stdout and stderr. */
static int tarryq_j_as_user(struct harness *h, char **out, char **err)
{
        const char *args[] = {"-j", NULL};
        return harness_tarryq_as(h, user_uid(), args, out, err);
}

/* The recipients of the user's messages, as spool-gen names them. */
static void assert_lists_exactly_the_users_messages(const char *out)
{
        size_t lines = 0;
        for (const char *l = out; *l;) {
                const char *nl = strchr(l, '\n');
                size_t n = nl ? (size_t)(nl - l) : strlen(l);
                json_t *o = json_loadb(l, n, 0, NULL);
                cr_assert_not_null(o, "not a JSON line: %.*s", (int)n, l);
                const char *rcpt = json_string_value(json_object_get(
                    json_array_get(json_object_get(o, "recipients"), 0), "address"));
                cr_assert_not_null(rcpt, "%.*s", (int)n, l);
                char want[64];
                snprintf(want, sizeof(want), "user%zu@", lines * OTHER_EVERY);
                cr_assert_eq(strncmp(rcpt, want, strlen(want)), 0, "line %zu lists %s, not %s…",
                             lines + 1, rcpt, want);
                json_decref(o);
                lines++;
                l += n + (nl ? 1 : 0);
        }
        cr_assert_eq(lines, OTHER_COUNT, "listed %zu messages, the user submitted %d", lines,
                     OTHER_COUNT);
}

struct ticker {
        struct status_client *c;
        atomic_bool stop;
        int answered, failed;
};

static void *tick(void *userdata)
{
        struct ticker *t = userdata;
        while (!atomic_load(&t->stop)) {
                long code = 0;
                char *body = NULL;
                size_t len = 0;
                int r = status_client_request(t->c, "GET", "/status", &code, &body, &len);
                free(body);
                if (r < 0 || code != 200)
                        t->failed++;
                else
                        t->answered++;
                harness_sleep_ms(5);
        }
        return NULL;
}

/* tarryq -j as the ordinary user lists exactly his messages, and tarryd
 * read not one more envelope for it than reads_before. */
static void assert_users_listing_reads_nothing(struct harness *h, long reads_before)
{
        char *out, *err;
        int ex = tarryq_j_as_user(h, &out, &err);
        cr_assert_eq(ex, 0, "tarryq -j as an ordinary user exited %d: %s", ex, err);
        assert_lists_exactly_the_users_messages(out);
        long reads = harness_metric(h, READS) - reads_before;
        cr_assert_eq(reads, 0, "tarryd read %ld envelopes to filter one user's listing", reads);
        free(out);
        free(err);
}

Test(mailq_scale, an_ordinary_users_mailq_reads_no_one_elses_envelope, .timeout = 300)
{
        struct harness h;
        struct status_client *c = start(&h);
        long reads_before = harness_metric(&h, READS);

        struct ticker t = {.stop = false, .c = status_connect(&h)};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, tick, &t), 0);
        /* the uid is in the index: not one of root's 4,995 envelopes is read
         * to leave it out (before: every envelope after the cursor, twice) */
        assert_users_listing_reads_nothing(&h, reads_before);
        atomic_store(&t.stop, true);
        pthread_join(th, NULL);
        cr_assert_eq(t.failed, 0, "GET /status failed %d times during the listing", t.failed);
        status_client_free(t.c);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}

/* The uid travels in the index snapshot: after a clean restart (every
 * record from state/index.snap, no envelope read at start) the user's
 * listing still reads no other envelope. */
Test(mailq_scale, the_owner_is_still_known_after_a_restart_from_the_snapshot, .timeout = 300)
{
        struct harness h;
        struct status_client *c = start(&h);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 20000), 0);
        char snap[400];
        snprintf(snap, sizeof(snap), "%s/state/index.snap", h.spool);
        struct stat st;
        cr_assert_eq(stat(snap, &st), 0, "no snapshot written at a clean stop");
        harness_start(&h);
        char want[128];
        snprintf(want, sizeof(want), "read: %d from state/index.snap, 0 from their envelopes",
                 QUEUED);
        cr_assert(harness_wait_log(&h, want, 1, 120000), "not a start from the snapshot; see %s",
                  h.log);
        cr_assert_eq(chmod(h.dir, 0711), 0);

        assert_users_listing_reads_nothing(&h, 0);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}

/* An administrator's filtered listing from a cursor: the page is whole, its
 * total is not counted (null); an unfiltered one keeps its exact total. */
Test(mailq_scale, a_filtered_page_from_a_cursor_says_its_total_is_not_known, .timeout = 300)
{
        struct harness h;
        struct status_client *c = start(&h);
        json_t *j = get_json(c, "/queue?state=deferred&limit=50&after=0000000000000000");
        cr_assert(json_is_null(json_object_get(j, "total")), "total is not null");
        cr_assert_eq(json_array_size(json_object_get(j, "messages")), 50);
        json_decref(j);
        j = get_json(c, "/queue?state=deferred&limit=50&offset=4990&after=0000000000000000");
        cr_assert_eq(json_array_size(json_object_get(j, "messages")), 10, "a short last page");
        json_decref(j);
        j = get_json(c, "/queue?limit=50&after=0000000000000000");
        cr_assert_eq(json_integer_value(json_object_get(j, "total")), QUEUED);
        json_decref(j);
        status_client_free(c);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}
