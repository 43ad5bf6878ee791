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
                        "       tarryq classify [-C FILE] --jsonl < replies.jsonl\n");
        return EX_USAGE;
}

/* Classifier with the operator rules of the config, if there is one to read:
 * -C FILE or $TARRY_CONFIG must load; the default path only if it exists. */
static int load_classifier(const char *cli_path, struct sched_classifier **out)
{
        struct sched_classifier *c;
        if (sched_classifier_new(&c) < 0) {
                fprintf(stderr, "tarryq: out of memory\n");
                return EX_OSERR;
        }
        const char *path = cfg_path(cli_path);
        bool required = cli_path || getenv("TARRY_CONFIG");
        if (required || access(path, F_OK) == 0) {
                struct tarry_config *cfg = NULL;
                char err[512];
                if (cfg_load(path, &cfg, err, sizeof(err)) < 0) {
                        fprintf(stderr, "tarryq: %s\n", err);
                        sched_classifier_free(c);
                        return EX_CONFIG;
                }
                int r = 0;
                if (cfg->classifier_rules)
                        r = sched_classifier_load_rules(c, cfg->classifier_rules, err, sizeof(err));
                cfg_free(cfg);
                if (r < 0) {
                        fprintf(stderr, "tarryq: %s\n", err);
                        sched_classifier_free(c);
                        return EX_CONFIG;
                }
        }
        *out = c;
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
        out = json_pack("{s:s, s:o, s:s}", "class", class_of(&v), "hint_seconds",
                        v.hint_s >= 0 ? json_integer(v.hint_s) : json_null(), "rule", v.rule);
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
