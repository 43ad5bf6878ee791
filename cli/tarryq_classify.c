/* cli/tarryq_classify.c — `tarryq classify`, see tarryq_classify.h. */
#include "cli/tarryq_classify.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "config/config.h"
#include "scheduler/scheduler.h"

#define JSONL_LINE_MAX (1u << 20)

static int usage(void)
{
        fprintf(stderr, "usage: tarryq classify [-C FILE] 'REPLY TEXT'\n"
                        "       tarryq classify [-C FILE] --jsonl [FILE]   (default: stdin)\n"
                        "       tarryq rules check [-C FILE] POLICY-FILE\n");
        return EX_USAGE;
}

/* The config, if there is one to read: -C FILE or $TARRY_CONFIG must load;
 * the default path only if it exists. *cfg stays NULL without one. */
static int load_config(const char *cli_path, struct tarry_config **cfg)
{
        const char *path = cfg_path(cli_path);
        bool required = cli_path || getenv("TARRY_CONFIG");
        char err[512];
        *cfg = NULL;
        if (!required && access(path, F_OK) != 0)
                return 0;
        if (cfg_load(path, cfg, err, sizeof(err)) < 0) {
                fprintf(stderr, "tarryq: %s\n", err);
                return EX_CONFIG;
        }
        return 0;
}

/* The classifier tarryd would build from the same config, and that config
 * (the defaults when there is none) for the retry plan. */
static int load_classifier(const char *cli_path, struct tarry_config **cfg_out,
                           struct sched_classifier **out)
{
        struct tarry_config *cfg = NULL;
        char err[512];
        int r = load_config(cli_path, &cfg);
        if (r != 0)
                return r;
        if (cfg)
                r = sched_classifier_for_config(cfg, out, err, sizeof(err));
        else
                r = sched_classifier_new_from(NULL, out, err, sizeof(err));
        if (r == 0 && !cfg && cfg_load_string("(defaults)", "", &cfg, err, sizeof(err)) < 0) {
                sched_classifier_free(*out);
                r = -EINVAL;
        }
        if (r < 0) {
                fprintf(stderr, "tarryq: %s\n", err);
                cfg_free(cfg);
                return EX_CONFIG;
        }
        *cfg_out = cfg;
        return 0;
}

/* The retry plan tarryq(1) promises: the next three attempts if the
 * receiver keeps answering text, under this config, on a fresh destination
 * (nothing learned, not suspended). Times are from now, local with zone. */
static void print_retry_plan(const struct tarry_config *cfg, const struct sched_classifier *c,
                             const char *text)
{
        struct sched *s = NULL;
        struct sched_item *it = NULL, *popped[1];
        if (sched_new(cfg, c, NULL, 1, &s) < 0)
                return;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t start = (int64_t)ts.tv_sec * 1000000, now = start, first = 0, last = 0;
        int prev = -1;
        if (sched_add(s, "", "plan", now, now + cfg->queue_lifetime_s * 1000000, NULL, &it) < 0) {
                sched_free(s);
                return;
        }
        for (int k = 0; k < 3; k++) {
                if (sched_pop_due(s, now, popped, 1) != 1)
                        break;
                struct sched_reply r = {.text = text};
                struct sched_rcpt_result rr = {.reply = &r,
                                               .deferrals = k,
                                               .first_deferral_us = first,
                                               .last_deferral_us = last,
                                               .prev_class = prev};
                struct sched_decision d;
                int left = sched_on_result(s, it, now, NULL, &rr, 1, &d);
                if (d.action != SCHED_RETRY) {
                        printf("retry %d: none (%s)\n", k + 1,
                               d.action == SCHED_FAILED ? sched_fail_name(d.fail) : "delivered");
                        if (left > 0)
                                sched_remove(s, it);
                        sched_free(s);
                        return;
                }
                char when[64];
                time_t t = (time_t)(d.next_attempt_us / 1000000);
                struct tm tm;
                localtime_r(&t, &tm);
                strftime(when, sizeof(when), "%H:%M:%S %z", &tm);
                printf("retry %d: +%llds (%s, %s)\n", k + 1,
                       (long long)((d.next_attempt_us - start) / 1000000), when,
                       sched_why_name(d.why));
                if (!first)
                        first = now;
                last = now;
                prev = (int)d.cls;
                now = d.next_attempt_us;
        }
        sched_remove(s, it);
        sched_free(s);
}

static const char *class_of(const struct sched_verdict *v)
{
        return v->accepted ? "accepted" : reply_class_name(v->cls);
}

static int classify_one(const struct tarry_config *cfg, const struct sched_classifier *c,
                        const char *text)
{
        struct sched_verdict v;
        sched_classify_text(c, text, &v);
        printf("class: %s\n", class_of(&v));
        if (v.hint_s >= 0)
                printf("hint: %llds\n", (long long)v.hint_s);
        else
                printf("hint: none\n");
        printf("rule: %s (%s)\n", v.rule, v.reason);
        printf("file: %s\n", v.file ? v.file : "(built in)");
        if (!v.accepted && v.cls != CLASS_PERMANENT)
                print_retry_plan(cfg, c, text);
        return fflush(stdout) == 0 ? 0 : EX_IOERR;
}

static void print_json(json_t *o)
{
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
        if (s)
                puts(s);
        free(s);
}

/* One input line → one output line; false for a bad line. */
static bool classify_line(const struct sched_classifier *c, const char *line, const char *name,
                          size_t lineno)
{
        json_error_t jerr;
        _cleanup_(json_decrefp) json_t *in = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
        const char *reply = in ? json_string_value(json_object_get(in, "reply")) : NULL;
        _cleanup_(json_decrefp) json_t *out = NULL;
        if (!reply) {
                char msg[300];
                snprintf(msg, sizeof(msg), "%s:%zu: %s", name, lineno,
                         in ? "no string field \"reply\"" : jerr.text);
                fprintf(stderr, "tarryq: %s\n", msg);
                out = json_pack("{s:n, s:n, s:n, s:s}", "class", "hint_seconds", "rule", "error",
                                msg);
                print_json(out);
                return false;
        }
        struct sched_verdict v;
        sched_classify_text(c, reply, &v);
        out = json_pack("{s:s, s:o, s:s, s:o}", "class", class_of(&v), "hint_seconds",
                        v.hint_s >= 0 ? json_integer(v.hint_s) : json_null(), "rule", v.rule,
                        "file", v.file ? json_string(v.file) : json_null());
        print_json(out);
        return true;
}

static int classify_jsonl(const struct sched_classifier *c, FILE *in, const char *name)
{
        _cleanup_free_ char *line = NULL;
        size_t cap = 0, lineno = 0;
        ssize_t n;
        bool all_good = true;
        while ((n = getline(&line, &cap, in)) >= 0) {
                lineno++;
                if (n == 0 || strspn(line, " \t\r\n") == (size_t)n)
                        continue;
                if ((size_t)n > JSONL_LINE_MAX) {
                        fprintf(stderr, "tarryq: %s:%zu: line longer than %u bytes\n", name, lineno,
                                JSONL_LINE_MAX);
                        all_good = false;
                        continue;
                }
                all_good &= classify_line(c, line, name, lineno);
        }
        if (fflush(stdout) != 0)
                return EX_IOERR;
        return all_good ? 0 : EX_DATAERR;
}

int tarryq_classify_main(int argc, char **argv, const char *config_path)
{
        static const struct option opts[] = {
            {"jsonl", no_argument, NULL, 'J'},
            {"config", required_argument, NULL, 'C'},
            {"help", no_argument, NULL, 'h'},
            {},
        };
        const char *config = config_path;
        bool jsonl = false;
        int ch;
        optind = 1;
        opterr = 0;
        while ((ch = getopt_long(argc, argv, "+C:h", opts, NULL)) != -1) {
                switch (ch) {
                case 'C':
                        config = optarg;
                        break;
                case 'J':
                        jsonl = true;
                        break;
                default:
                        return usage();
                }
        }
        if (jsonl ? optind < argc - 1 : optind != argc - 1)
                return usage();
        const char *file = jsonl && optind == argc - 1 ? argv[optind] : NULL;
        FILE *in = stdin;
        if (file && strcmp(file, "-") != 0 && !(in = fopen(file, "re"))) {
                fprintf(stderr, "tarryq: cannot read %s: %s\n", file, strerror(errno));
                return EX_NOINPUT;
        }
        struct sched_classifier *c = NULL;
        struct tarry_config *cfg = NULL;
        int r = load_classifier(config, &cfg, &c);
        if (r == 0) {
                r = jsonl ? classify_jsonl(c, in, file && in != stdin ? file : "stdin")
                          : classify_one(cfg, c, argv[optind]);
                sched_classifier_free(c);
                cfg_free(cfg);
        }
        if (in != stdin)
                fclose(in);
        return r;
}

/* ---- tarryq rules check ---- */

static bool same_file(const char *a, const char *b)
{
        _cleanup_free_ char *ra = realpath(a, NULL);
        _cleanup_free_ char *rb = realpath(b, NULL);
        return ra && rb && strcmp(ra, rb) == 0;
}

/* FILE on top of the shipped policy (so its references to shipped providers
 * and rules resolve), or alone when it is the shipped file itself. */
static int rules_check(const char *config, const char *file)
{
        struct tarry_config *cfg = NULL;
        struct sched_classifier *c = NULL;
        char err[1024];
        int r = load_config(config, &cfg);
        if (r != 0)
                return r;
        const char *base = cfg && cfg->policy_file ? cfg->policy_file : sched_policy_default_path();
        bool is_base = same_file(file, base);
        if (access(file, R_OK) != 0) {
                fprintf(stderr, "tarryq: %s: %s\n", file, strerror(errno));
                cfg_free(cfg);
                return EX_NOINPUT;
        }
        r = sched_classifier_new_from(is_base ? file : base, &c, err, sizeof(err));
        cfg_free(cfg);
        if (r < 0) {
                fprintf(stderr, "tarryq: %s\n", err);
                return is_base ? EX_DATAERR : EX_CONFIG;
        }
        if (!is_base && (r = sched_classifier_load_rules(c, file, err, sizeof(err))) < 0) {
                fprintf(stderr, "tarryq: %s\n", err);
                sched_classifier_free(c);
                return r == -EINVAL ? EX_DATAERR : EX_NOINPUT;
        }
        struct sched_policy_info info;
        sched_classifier_info(c, &info);
        if (is_base)
                printf("%s: ok: %zu rules, %zu providers, %zu greylister windows\n", file,
                       info.rules, info.providers, info.greylist_windows);
        else
                printf("%s: ok: %d rules tried first, %zu rules in all, %zu providers\n", file, r,
                       info.rules, info.providers);
        sched_classifier_free(c);
        return fflush(stdout) == 0 ? 0 : EX_IOERR;
}

int tarryq_rules_main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"config", required_argument, NULL, 'C'},
            {"help", no_argument, NULL, 'h'},
            {},
        };
        const char *config = NULL;
        int ch;
        if (argc < 2 || strcmp(argv[1], "check") != 0)
                return usage();
        optind = 1;
        opterr = 0;
        argc--, argv++;
        while ((ch = getopt_long(argc, argv, "+C:h", opts, NULL)) != -1) {
                if (ch != 'C')
                        return usage();
                config = optarg;
        }
        if (optind != argc - 1)
                return usage();
        return rules_check(config, argv[optind]);
}
