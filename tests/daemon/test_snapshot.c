/* tests/daemon/test_snapshot.c — the periodic index snapshot, serialised in
 * slices between the loop's other work ([main] snapshot_interval; issue 19).
 *
 * A queue larger than a few slices, tarryd killed with SIGKILL after a
 * periodic write (no clean stop to write one): the next start finds every
 * message in state/index.snap and reads no envelope. Slices that lost
 * records at their boundaries would leave some to read; a cursor that did
 * not move on would never finish a write.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "cli/status_client.h"
#include "harness.h"

#define QUEUED 10000 /* spool-gen's, due in an hour: about three slices of 4096 */

static size_t queue_total(struct status_client *c)
{
        long code = 0;
        json_t *j = NULL;
        cr_assert_eq(status_client_request_json(c, "GET", "/queue?limit=1", &code, &j), 0);
        cr_assert_eq(code, 200);
        size_t total = (size_t)json_integer_value(json_object_get(j, "total"));
        json_decref(j);
        return total;
}

/* state/index.snap's modification time in ns, 0: none yet. */
static long long snap_mtime(struct harness *h)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/state/index.snap", h->spool);
        struct stat st;
        if (stat(path, &st) < 0)
                return 0;
        return st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

Test(snapshot, a_periodic_snapshot_written_in_slices_covers_the_whole_queue, .timeout = 300)
{
        struct harness h;
        harness_init(&h, "[main]\nsnapshot_interval = 1s\n");
        harness_spool_deferred(&h, QUEUED);
        harness_start(&h);
        char u[400];
        snprintf(u, sizeof(u), "unix:%s/status.sock", h.dir);
        const char *ul[] = {u, NULL};
        struct status_client *c = NULL;
        cr_assert_eq(status_client_new(ul, &c), 0);
        size_t total = 0;
        for (int i = 0; i < 9000 && total != QUEUED; i++) {
                harness_sleep_ms(20);
                total = queue_total(c);
        }
        cr_assert_eq(total, QUEUED, "tarryd indexed %zu of %d messages", total, QUEUED);

        /* two writes after everything was indexed: the second was begun after */
        long long seen = snap_mtime(&h);
        int writes = 0;
        for (int i = 0; i < 6000 && writes < 2; i++) {
                harness_sleep_ms(20);
                long long now = snap_mtime(&h);
                if (now != seen) {
                        seen = now;
                        writes++;
                }
        }
        cr_assert_eq(writes, 2, "state/index.snap was not written every second");
        status_client_free(c);

        harness_kill9(&h);
        harness_start(&h);
        char want[128];
        snprintf(want, sizeof(want), "read: %d from state/index.snap, 0 from their envelopes",
                 QUEUED);
        cr_assert(harness_wait_log(&h, want, 1, 60000),
                  "not every message was in the snapshot; see %s", h.log);
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
}
