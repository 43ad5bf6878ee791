/* tests/daemon/test_start_race.c — mail committed while tarryd starts.
 *
 * Its own program, not startup-e2e's: the race shim is preloaded into the
 * tarryd it starts, and criterion's parallel runner (-j2 there) reports a
 * leak of its own under ASan when this test joins the others.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

/* A message committed into incoming/ while tarryd starts, after the start's
 * scan of incoming/ and before its watch there, was never seen: nothing
 * but the watch (or a restart) looks at incoming/ again. The watch is set
 * before the scan now. The instant is made to happen every time by
 * race_watch_shim.so, preloaded into tarryd: it renames the message into
 * incoming/ right before the watch is made. */
Test(start_race, mail_committed_while_tarryd_starts_is_picked_up, .timeout = 120)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        harness_init_routed(&h, fixture_port(f), 2); /* the spool laid out, tarryd stopped */
        harness_send(&h, "alice@sender.test", "u0@example.test", "raced");
        cr_assert_eq(harness_count_queued(&h, "incoming"), 1);
        char incoming[400], id[17] = "";
        snprintf(incoming, sizeof(incoming), "%s/incoming", h.spool);
        DIR *dir = opendir(incoming);
        for (struct dirent *e; dir && (e = readdir(dir));)
                if (strlen(e->d_name) == 16)
                        memcpy(id, e->d_name, sizeof(id));
        if (dir)
                closedir(dir);
        char aside[400], from[500], to[500];
        snprintf(aside, sizeof(aside), "%s/aside", h.dir);
        snprintf(from, sizeof(from), "%s/%s", aside, id);
        snprintf(to, sizeof(to), "%s/incoming/%s", h.spool, id);
        cr_assert_eq(mkdir(aside, 0700), 0);
        cr_assert_eq(rename(to, from), 0);
        harness_give(&h, aside); /* tarryd renames it back */
        harness_give_spool(&h);

        const char *asan = getenv("ASAN_OPTIONS");
        char asan_opts[512];
        snprintf(asan_opts, sizeof(asan_opts), "%s%sverify_asan_link_order=0", asan ? asan : "",
                 asan ? ":" : "");
        setenv("LD_PRELOAD", harness_binary("tests/daemon/race_watch_shim.so"), 1);
        setenv("TARRY_TEST_RACE_FROM", from, 1);
        setenv("TARRY_TEST_RACE_TO", to, 1);
        setenv("ASAN_OPTIONS", asan_opts, 1);
        harness_start(&h);
        unsetenv("LD_PRELOAD");
        unsetenv("TARRY_TEST_RACE_FROM");
        unsetenv("TARRY_TEST_RACE_TO");
        if (asan)
                setenv("ASAN_OPTIONS", asan, 1);
        else
                unsetenv("ASAN_OPTIONS");

        for (int waited = 0; waited < 20000 && fixture_txn_count(f) < 1; waited += 10)
                harness_sleep_ms(10);
        struct stat st;
        cr_assert_neq(stat(from, &st), 0, "the shim did not move the message in; see %s", h.log);
        cr_assert_eq(fixture_txn_count(f), 1,
                     "the message that arrived while tarryd started was not delivered (%s in "
                     "incoming/: %s); see %s",
                     id, stat(to, &st) == 0 ? "still there" : "gone", h.log);
        cr_assert_eq(harness_stop(&h, SIGTERM, 30000), 0, "see %s", h.log);
        harness_cleanup(&h);
        fixture_free(f);
}
