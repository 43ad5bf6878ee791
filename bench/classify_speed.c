/* bench/classify-speed — the classifier's cost per reply: every reply of a
 * labelled corpus (default tests/data/replies-dev.jsonl) classified ROUNDS
 * times (default 200) with the shipped rules; prints CPU ns per reply (process
 * CPU time, so a busy shared machine disturbs it less than wall time) and the
 * time to build the classifier (load, validate and compile the rules).
 *
 * Usage: classify-speed [CORPUS.jsonl] [ROUNDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "scheduler/scheduler.h"

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
        const char *path = argc > 1 ? argv[1] : "tests/data/replies-dev.jsonl";
        long rounds = argc > 2 ? strtol(argv[2], NULL, 10) : 200;
        FILE *f = fopen(path, "r");
        if (!f)
                return perror(path), 1;
        char **replies = NULL, *line = NULL;
        size_t n = 0, cap = 0;
        while (getline(&line, &cap, f) > 0) {
                json_t *o = json_loads(line, 0, NULL);
                const char *r = o ? json_string_value(json_object_get(o, "reply")) : NULL;
                if (r) {
                        replies = realloc(replies, (n + 1) * sizeof(*replies));
                        replies[n++] = strdup(r);
                }
                json_decref(o);
        }
        free(line);
        fclose(f);

        struct sched_classifier *c;
        double t = now_s();
        const int builds = 20;
        for (int i = 0; i < builds; i++) {
                if (sched_classifier_new(&c) < 0)
                        return fprintf(stderr, "classify-speed: no classifier\n"), 1;
                if (i + 1 < builds)
                        sched_classifier_free(c);
        }
        double t_new = (now_s() - t) / builds;

        unsigned long sink = 0;
        t = now_s();
        for (long k = 0; k < rounds; k++)
                for (size_t i = 0; i < n; i++) {
                        struct sched_verdict v;
                        sched_classify_text(c, replies[i], &v);
                        sink += (unsigned long)v.cls;
                }
        double el = now_s() - t;
        printf("replies %zu x %ld rounds: %.0f ns/reply (checksum %lu)\n", n, rounds,
               el * 1e9 / ((double)n * (double)rounds), sink);
        printf("classifier construction: %.2f ms\n", t_new * 1e3);
        sched_classifier_free(c);
        for (size_t i = 0; i < n; i++)
                free(replies[i]);
        free(replies);
        return 0;
}
