/* tests/daemon/test_log.c — tarryd's stderr log: what each record says,
 * and when it leaves.
 *
 * The loop's records are buffered until log_flush (one write per loop
 * iteration) and share one time stamp per second; another thread's leave at
 * once. Every record carries tarryd's pid and the local time with its zone.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"

static char path[] = "/tmp/tarry-log-XXXXXX";

static void setup(void)
{
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_geq(dup2(fd, STDERR_FILENO), 0);
        close(fd);
        unsetenv("JOURNAL_STREAM");
        log_open();
}

static void teardown(void)
{
        unlink(path);
}

TestSuite(log, .init = setup, .fini = teardown);

static char *written(void)
{
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        static char buf[8192];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        return buf;
}

static void *from_another_thread(void *arg)
{
        (void)arg;
        log_info("from the sender check");
        return NULL;
}

Test(log, loop_records_leave_at_the_flush_and_another_threads_at_once)
{
        log_info("first on the loop");
        cr_assert_null(strstr(written(), "first on the loop"), "written before log_flush");
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, from_another_thread, NULL), 0);
        pthread_join(t, NULL);
        cr_assert_not_null(strstr(written(), "from the sender check"),
                           "another thread's record waited for the loop");
        log_flush();
        cr_assert_not_null(strstr(written(), "first on the loop"));
}

Test(log, every_record_carries_the_pid_and_the_local_time_with_its_zone)
{
        for (int i = 0; i < 3; i++) {
                log_info("record %d", i);
                if (i == 1)
                        sleep(1); /* the next record is in another second */
        }
        log_flush();
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char stamp[32], want[64];
        strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S %z", &tm);
        snprintf(want, sizeof(want), "%s tarryd[%d]: record 2\n", stamp, (int)getpid());
        const char *log = written();
        if (!strstr(log, want)) { /* the clock may have moved on by a second */
                now--;
                localtime_r(&now, &tm);
                strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S %z", &tm);
                snprintf(want, sizeof(want), "%s tarryd[%d]: record 2\n", stamp, (int)getpid());
        }
        cr_assert_not_null(strstr(log, want), "no '%s' in:\n%s", want, log);
        char pid[32];
        snprintf(pid, sizeof(pid), " tarryd[%d]: record 0\n", (int)getpid());
        const char *first = strstr(log, pid);
        cr_assert_not_null(first, "%s", log);
        const char *line0 = first; /* record 0's line starts after the previous newline */
        while (line0 > log && line0[-1] != '\n')
                line0--;
        cr_assert_neq(strncmp(line0, stamp, strlen(stamp)), 0,
                      "a second later, the stamp of the first second:\n%s", log);
}
