/* cli/tarryq_classify.c — `tarryq classify`, see tarryq_classify.h. */
#include "cli/tarryq_classify.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "config/config.h"
#include "scheduler/scheduler.h"

#define JSONL_LINE_MAX (1u << 20)

static int usage(void)
{
        fprintf(stderr, "usage: tarryq classify [-C FILE] 'REPLY TEXT'\n"
                        "       tarryq classify [-C FILE] --jsonl < replies.jsonl\n"
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

/* The classifier tarryd would build from the same config. */
static int load_classifier(const char *cli_path, struct sched_classifier **out)
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
        cfg_free(cfg);
        if (r < 0) {
                fprintf(stderr, "tarryq: %s\n", err);
                return EX_CONFIG;
        }
        return 0;
}

static const char *class_of(const struct sched_verdict *v)
{
        return v->accepted ? "accepted" : reply_class_name(v->cls);
}

static int classify_one(const struct sched_classifier *c, const char *text)
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
static bool classify_line(const struct sched_classifier *c, const char *line, size_t lineno)
{
        json_error_t jerr;
        _cleanup_(json_decrefp) json_t *in = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
        const char *reply = in ? json_string_value(json_object_get(in, "reply")) : NULL;
        _cleanup_(json_decrefp) json_t *out = NULL;
        if (!reply) {
                char msg[300];
                snprintf(msg, sizeof(msg), "stdin:%zu: %s", lineno,
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

static int classify_jsonl(const struct sched_classifier *c)
{
        _cleanup_free_ char *line = NULL;
        size_t cap = 0, lineno = 0;
        ssize_t n;
        bool all_good = true;
        while ((n = getline(&line, &cap, stdin)) >= 0) {
                lineno++;
                if (n == 0 || strspn(line, " \t\r\n") == (size_t)n)
                        continue;
                if ((size_t)n > JSONL_LINE_MAX) {
                        fprintf(stderr, "tarryq: stdin:%zu: line longer than %u bytes\n", lineno,
                                JSONL_LINE_MAX);
                        all_good = false;
                        continue;
                }
                all_good &= classify_line(c, line, lineno);
        }
        if (fflush(stdout) != 0)
                return EX_IOERR;
        return all_good ? 0 : EX_DATAERR;
}

int tarryq_classify_main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"jsonl", no_argument, NULL, 'J'},
            {"config", required_argument, NULL, 'C'},
            {"help", no_argument, NULL, 'h'},
            {},
        };
        const char *config = NULL;
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
        if (jsonl ? optind != argc : optind != argc - 1)
                return usage();
        struct sched_classifier *c = NULL;
        int r = load_classifier(config, &c);
        if (r != 0)
                return r;
        r = jsonl ? classify_jsonl(c) : classify_one(c, argv[optind]);
        sched_classifier_free(c);
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
