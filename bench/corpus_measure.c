/* bench/corpus-measure — how well the compiled-in classifier labels a corpus.
 *
 * Usage: corpus-measure [--misses] [--min-accuracy PCT] [--min-deferral-accuracy PCT]
 *                       [--policy POLICY.json] FILE.jsonl
 * FILE is one JSON object a line with "reply", "class", "hint_seconds" and
 * "source" (tests/data/corpus/README.md). Prints class accuracy (all replies,
 * and the deferrals: replies labelled other than permanent), per-class
 * precision and recall, and how many explicit hints were found, found with a
 * wrong value, missed, or given where the reply states none ("false").
 * --misses also lists every reply whose class or hint is wrong; it refuses a
 * file whose name contains "heldout": the held-out split is read only to
 * report its figures (docs/corpus.md).
 * --min-accuracy / --min-deferral-accuracy: exit 1 when the figure is below PCT.
 * --policy: classify with that policy file instead of the shipped one (the
 * cross-validation of tests/data/corpus/cv.py measures pruned copies).
 * A line is bad when it is not such an object, names an unknown class, has no
 * source, or labels a 5xx reply other than permanent (the convention).
 * Exit: 0; 1 below a floor; 64 usage; 65 a bad line (named); 66 FILE
 * unreadable; 71 no memory; 78 the policy file does not load (named).
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <jansson.h>

#include "common/reply_class.h"
#include "scheduler/scheduler.h"

struct tally {
        long n;                 /* labelled replies */
        long label[CLASS__MAX]; /* replies labelled with a class */
        long got[CLASS__MAX];   /* replies the classifier gave a class */
        long hit[CLASS__MAX];   /* both agree */
        long hints, found, wrong_value, missed, false_hint;
        long temp, temp_ok; /* replies labelled with a deferral class (not permanent) */
};

static void pct(long a, long b)
{
        if (b == 0)
                printf("     -");
        else
                printf(" %5.1f", 100.0 * (double)a / (double)b);
}

static void report(const char *path, const struct tally *t)
{
        long ok = 0;
        for (int c = 0; c < CLASS__MAX; c++)
                ok += t->hit[c];
        printf("%s: %ld replies, class accuracy %.1f %% (%ld/%ld)\n", path, t->n,
               t->n ? 100.0 * (double)ok / (double)t->n : 0.0, ok, t->n);
        printf("deferrals (labelled other than permanent): %ld, class accuracy %.1f %% (%ld/%ld)\n",
               t->temp, t->temp ? 100.0 * (double)t->temp_ok / (double)t->temp : 0.0, t->temp_ok,
               t->temp);
        printf("%-13s %6s %6s %6s %6s %6s\n", "class", "label", "got", "right", "prec%", "rec%");
        for (int c = 0; c < CLASS__MAX; c++) {
                printf("%-13s %6ld %6ld %6ld", reply_class_name(c), t->label[c], t->got[c],
                       t->hit[c]);
                pct(t->hit[c], t->got[c]);
                pct(t->hit[c], t->label[c]);
                printf("\n");
        }
        printf("hints: %ld stated, %ld found, %ld wrong value, %ld missed, %ld false\n", t->hints,
               t->found, t->wrong_value, t->missed, t->false_hint);
}

/* One corpus line; 0, or -EINVAL with *what saying why. */
static int measure_line(const struct sched_classifier *c, const char *line, bool misses,
                        struct tally *t, const char **what)
{
        json_error_t jerr;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
        if (!o || !json_is_object(o)) {
                json_decref(o);
                *what = "not a JSON object";
                return -EINVAL;
        }
        const char *reply = json_string_value(json_object_get(o, "reply"));
        const char *label = json_string_value(json_object_get(o, "class"));
        const char *source = json_string_value(json_object_get(o, "source"));
        json_t *h = json_object_get(o, "hint_seconds");
        int want = label ? reply_class_from_name(label) : -EINVAL;
        if (!reply || want < 0 || !source || !*source || !h ||
            !(json_is_null(h) || json_is_integer(h))) {
                json_decref(o);
                *what = "needs \"reply\", a known \"class\", a \"source\" and \"hint_seconds\" "
                        "(integer or null)";
                return -EINVAL;
        }
        if (reply[0] == '5' && want != CLASS_PERMANENT) {
                json_decref(o);
                *what = "a 5xx reply must be labelled permanent (tests/data/corpus/README.md)";
                return -EINVAL;
        }
        long long want_hint = json_is_null(h) ? -1 : json_integer_value(h);

        struct sched_verdict v;
        sched_classify_text(c, reply, &v);
        int got = v.accepted ? -1 : (int)v.cls;
        t->n++;
        t->label[want]++;
        if (got >= 0)
                t->got[got]++;
        if (got == want)
                t->hit[want]++;
        if (want != CLASS_PERMANENT) {
                t->temp++;
                t->temp_ok += got == want;
        }
        bool hint_ok = true;
        if (want_hint >= 0) {
                t->hints++;
                if (v.hint_s == want_hint)
                        t->found++;
                else if (v.hint_s >= 0)
                        t->wrong_value++, hint_ok = false;
                else
                        t->missed++, hint_ok = false;
        } else if (v.hint_s >= 0) {
                t->false_hint++;
                hint_ok = false;
        }
        if (misses && (got != want || !hint_ok)) {
                json_t *m = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "want", label, "got",
                                      got >= 0 ? reply_class_name(got) : "accepted", "want_hint",
                                      want_hint, "got_hint", (long long)v.hint_s, "rule",
                                      v.rule ? v.rule : "", "reply", reply);
                char *s = m ? json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
                if (s)
                        printf("MISS %s\n", s);
                free(s);
                json_decref(m);
        }
        json_decref(o);
        return 0;
}

/* a/b in tenths of a percent, rounded as printf("%.1f") would; 1000 when b is 0. */
static long tenths(long a, long b)
{
        return b ? (2000 * a + b) / (2 * b) : 1000;
}

static int parse_pct(const char *arg, double *out)
{
        char *end;
        errno = 0;
        double v = strtod(arg, &end);
        if (errno || end == arg || *end || v < 0 || v > 100)
                return -EINVAL;
        *out = v;
        return 0;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"misses", no_argument, NULL, 'm'},
            {"min-accuracy", required_argument, NULL, 'a'},
            {"min-deferral-accuracy", required_argument, NULL, 'd'},
            {"policy", required_argument, NULL, 'p'},
            {0},
        };
        bool misses = false;
        double min_all = -1, min_temp = -1;
        const char *policy = NULL;
        int opt;
        while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                if (opt == 'm')
                        misses = true;
                else if (opt == 'p')
                        policy = optarg;
                else if ((opt == 'a' && parse_pct(optarg, &min_all) == 0) ||
                         (opt == 'd' && parse_pct(optarg, &min_temp) == 0))
                        continue;
                else
                        goto usage;
        }
        if (optind != argc - 1) {
        usage:
                fprintf(stderr, "usage: corpus-measure [--misses] [--min-accuracy PCT] "
                                "[--min-deferral-accuracy PCT] [--policy POLICY.json] "
                                "FILE.jsonl\n");
                return EX_USAGE;
        }
        const char *path = argv[optind];
        if (misses && strstr(path, "heldout")) {
                fprintf(stderr,
                        "corpus-measure: %s: the held-out split is measured, never "
                        "searched for misses\n",
                        path);
                return EX_USAGE;
        }
        FILE *f = fopen(path, "re");
        if (!f) {
                fprintf(stderr, "corpus-measure: %s: %s\n", path, strerror(errno));
                return EX_NOINPUT;
        }
        struct sched_classifier *c;
        char err[512] = "";
        int r = sched_classifier_new_from(policy, &c, err, sizeof(err));
        if (r < 0) {
                fclose(f);
                if (r == -ENOMEM) {
                        fprintf(stderr, "corpus-measure: out of memory\n");
                        return EX_OSERR;
                }
                fprintf(stderr, "corpus-measure: %s\n", err[0] ? err : strerror(-r));
                return EX_CONFIG;
        }
        struct tally t = {0};
        char *line = NULL;
        size_t cap = 0;
        long lineno = 0;
        int rc = 0;
        while (getline(&line, &cap, f) > 0) {
                lineno++;
                if (line[strspn(line, " \t\r\n")] == '\0')
                        continue;
                const char *what = NULL;
                if (measure_line(c, line, misses, &t, &what) < 0) {
                        fprintf(stderr, "corpus-measure: %s:%ld: %s\n", path, lineno, what);
                        rc = EX_DATAERR;
                        break;
                }
        }
        free(line);
        fclose(f);
        sched_classifier_free(c);
        if (rc != 0)
                return rc;
        report(path, &t);
        long ok = 0;
        for (int i = 0; i < CLASS__MAX; i++)
                ok += t.hit[i];
        /* Figures are printed in tenths of a percent: compare those. */
        if (min_all >= 0 && tenths(ok, t.n) < (long)(min_all * 10 + 0.5)) {
                fprintf(stderr, "corpus-measure: %s: class accuracy is below %.1f %%\n", path,
                        min_all);
                rc = 1;
        }
        if (min_temp >= 0 && tenths(t.temp_ok, t.temp) < (long)(min_temp * 10 + 0.5)) {
                fprintf(stderr, "corpus-measure: %s: deferral class accuracy is below %.1f %%\n",
                        path, min_temp);
                rc = 1;
        }
        return rc;
}
