/* bench/sched-scale — the scheduler's heap at scale: enqueue N deferred
 * entries (default 1,000,000) spread over 10,000 destinations and 5 days,
 * then reschedule, pop and remove them; prints memory per entry (heap bytes
 * in use from mallinfo2) and time per operation.
 *
 * Usage: sched-scale [N]
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "scheduler/scheduler.h"

#define S  1000000LL
#define T0 (1700000000LL * S)

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void)
{
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
}

int main(int argc, char **argv)
{
        size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
        struct tarry_config *cfg;
        struct sched_classifier *cls;
        struct sched *s;
        char err[256];
        if (cfg_load_string("bench", "[smtp]\ndestination_concurrency = 1000000\n", &cfg, err,
                            sizeof(err)) < 0 ||
            sched_classifier_new(&cls) < 0 || sched_new(cfg, cls, NULL, 1, &s) < 0)
                return fprintf(stderr, "sched-scale: setup failed: %s\n", err), 1;
        struct sched_item **items = malloc(n * sizeof(*items));
        char route[64];

        size_t before = mallinfo2().uordblks;
        double t = now_s();
        for (size_t i = 0; i < n; i++) {
                snprintf(route, sizeof(route), "mx:d%u.example", (unsigned)(i % 10000));
                int64_t due = T0 + (int64_t)(rnd() % (5ULL * 86400 * S));
                if (sched_add(s, "192.0.2.10", route, due, due + 5LL * 86400 * S, NULL, &items[i]) <
                    0)
                        return fprintf(stderr, "sched-scale: out of memory at %zu\n", i), 1;
        }
        double t_add = now_s() - t;
        size_t used = mallinfo2().uordblks - before;

        t = now_s();
        for (size_t i = 0; i < n; i++)
                sched_reschedule(s, items[rnd() % n], T0 + (int64_t)(rnd() % (5ULL * 86400 * S)));
        double t_resched = now_s() - t;

        t = now_s();
        int64_t probe = 0;
        for (size_t i = 0; i < n; i++)
                probe += sched_next_due(s, T0) & 1;
        double t_next = now_s() - t;

        t = now_s();
        size_t popped = 0;
        struct sched_item *out[256];
        int64_t end = T0 + 5LL * 86400 * S;
        while (popped < n) {
                size_t k = sched_pop_due(s, end, out, 256);
                if (k == 0)
                        break;
                for (size_t j = 0; j < k; j++)
                        sched_remove(s, out[j]);
                popped += k;
        }
        double t_pop = now_s() - t;

        printf("entries:                 %zu (10000 destinations)\n", n);
        printf("memory per entry:        %.1f bytes (malloc'd, heap array included)\n",
               (double)used / (double)n);
        printf("add:                     %.0f ns/op\n", t_add / (double)n * 1e9);
        printf("reschedule (random):     %.0f ns/op\n", t_resched / (double)n * 1e9);
        printf("next_due:                %.0f ns/op\n", t_next / (double)n * 1e9);
        printf("pop + remove (in order): %.0f ns/op (%zu popped)\n", t_pop / (double)popped * 1e9,
               popped);
        (void)probe;
        free(items);
        sched_free(s);
        sched_classifier_free(cls);
        cfg_free(cfg);
        return popped == n ? 0 : 1;
}
