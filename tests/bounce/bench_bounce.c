/* tests/bounce/bench_bounce.c — how long building a DSN takes.
 *
 * Run: meson test -C BUILD --benchmark bounce-build   (or the binary directly)
 * Prints one line per case: microseconds per report and the report's size.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bounce/bounce.h"
#include "common/fileio.h"

#define ITERATIONS 2000

static struct envelope *message(int n_rcpt, enum rcpt_state state, enum dsn_ret ret)
{
        struct envelope *e = envelope_new();
        free(e->sender);
        e->sender = strdup("app@sender.test");
        e->ret = ret;
        e->arrival_us = now_realtime_us() - 3600LL * 1000000;
        for (int i = 0; i < n_rcpt; i++) {
                char addr[64];
                snprintf(addr, sizeof addr, "user%d@dest%d.test", i, i % 7);
                struct envelope_rcpt *r = envelope_add_rcpt(e, addr);
                r->state = state;
                r->attempts = 3;
                r->reply_code = state == RCPT_FAILED ? 550 : 451;
                r->dsn_status = strdup(state == RCPT_FAILED ? "5.1.1" : "4.7.1");
                r->last_reply =
                    strdup(state == RCPT_FAILED ? "550-5.1.1 The email account that you tried "
                                                  "to reach does not exist.\n550 5.1.1 Please "
                                                  "try double-checking the recipient's address."
                                                : "451 4.7.1 Greylisted, try again in 300 s");
                r->reply_class = strdup(state == RCPT_FAILED ? "permanent" : "greylist");
                r->relay = strdup("mx.dest.test[192.0.2.25]:25");
                r->last_attempt_us = now_realtime_us();
        }
        return e;
}

static char *original(size_t size)
{
        static const char head[] = "From: App <app@sender.test>\r\nTo: x@dest.test\r\n"
                                   "Subject: benchmark\r\nMessage-ID: <b@sender.test>\r\n\r\n";
        char *m = malloc(size);
        memset(m, 'x', size);
        memcpy(m, head, sizeof head - 1);
        for (size_t i = sizeof head + 76; i + 1 < size; i += 78)
                memcpy(m + i, "\r\n", 2);
        return m;
}

static void run(const char *name, const struct envelope *e, const struct dsn_original *o,
                enum dsn_kind kind)
{
        struct dsn_policy p = {.myhostname = "mx.tarry.test",
                               .queue_lifetime_s = 5 * 86400,
                               .delay_dsn_after_retries = 2};
        size_t len = 0;
        int64_t t0 = now_monotonic_us();
        for (int i = 0; i < ITERATIONS; i++) {
                struct dsn_report *rep = NULL;
                int r = kind == DSN_DELAYED ? dsn_build_delayed(e, o, &p, now_realtime_us(), &rep)
                                            : dsn_build_failed(e, o, &p, now_realtime_us(), &rep);
                if (r != 1) {
                        fprintf(stderr, "%s: build returned %d\n", name, r);
                        exit(1);
                }
                len = rep->len;
                dsn_report_free(rep);
        }
        double us = (double)(now_monotonic_us() - t0) / ITERATIONS;
        printf("%-52s %8.1f us/report %8zu bytes\n", name, us, len);
}

int main(void)
{
        size_t big = 10u << 20;
        char *m = original(big);
        char path[] = "/tmp/tarry-bench-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0 || write(fd, m, big) != (ssize_t)big)
                return 1;
        unlink(path);

        struct envelope *d1 = message(1, RCPT_DEFERRED, DSN_RET_DEFAULT);
        struct dsn_original ofd = {.fd = fd, .size = big};
        run("delayed, 1 rcpt, headers of a 10 MiB message (fd)", d1, &ofd, DSN_DELAYED);

        struct envelope *f1 = message(1, RCPT_FAILED, DSN_RET_FULL);
        struct dsn_original o48 = {.fd = -1, .data = m, .size = 48000};
        run("failed, 1 rcpt, RET=FULL 48 kB (buffer)", f1, &o48, DSN_FAILED);
        run("failed, 1 rcpt, RET=FULL 10 MiB -> headers (fd)", f1, &ofd, DSN_FAILED);

        struct envelope *f100 = message(100, RCPT_FAILED, DSN_RET_HDRS);
        run("failed, 100 rcpts, RET=HDRS (fd)", f100, &ofd, DSN_FAILED);

        envelope_free(d1);
        envelope_free(f1);
        envelope_free(f100);
        close(fd);
        free(m);
        return 0;
}
