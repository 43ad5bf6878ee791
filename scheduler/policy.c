/* scheduler/policy.c — policy files: the shipped data/tarry-policy.json and
 * the operator's classifier_rules file (same format), parsed with Jansson
 * and validated before anything changes.
 *
 * A document is one JSON object: "tarry_policy": 1, and optionally "about",
 * "rules", "greylist_windows", "class_traits", "providers" (docs/scheduler.md
 * has the fields). Validation names the file and the entry: patterns compile,
 * names are unique, a rule's provider exists and has MX patterns, numbers are
 * in range, unknown keys are errors (a misspelt key would otherwise be
 * silently ignored). Operator entries override loaded ones by name.
 */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "scheduler/internal.h"

#define POLICY_FORMAT      1
#define NAME_MAX_LEN       100
#define PATTERN_MAX_LEN    2048
#define TEXT_MAX_LEN       500
#define MAX_ENTRIES        10000
#define DAY_S              86400
#define ACTION_MAX_S       (7 * DAY_S)
#define MAX_CONNECTIONS    1000
#define MAX_PER_MINUTE     1000000
#define MAX_PER_CONNECTION 100000
#define MAX_THRESHOLD      1000

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
        if (err && errlen) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return -EINVAL;
}

int policy_compile(regex_t *re, const char *pattern, char *err, size_t errlen)
{
        int r = regcomp(re, pattern, REG_EXTENDED | REG_ICASE | REG_NEWLINE);
        if (r != 0) {
                if (err && errlen)
                        regerror(r, re, err, errlen);
                return -EINVAL;
        }
        return 0;
}

const char *policy_file_name(struct sched_classifier *c, const char *name)
{
        for (size_t i = 0; i < c->n_files; i++)
                if (strcmp(c->files[i], name) == 0)
                        return c->files[i];
        char **v = realloc(c->files, (c->n_files + 1) * sizeof(*v));
        if (!v)
                return NULL;
        c->files = v;
        if (!(v[c->n_files] = strdup(name)))
                return NULL;
        return v[c->n_files++];
}

void policy_rule_free(struct rule *ru)
{
        regfree(&ru->re);
        free(ru->name);
        free(ru->code);
        free(ru->enhanced);
        free(ru->reason);
        free(ru->source);
        free(ru->provider);
}

void policy_provider_free(struct sched_provider *p)
{
        free(p->name);
        for (size_t i = 0; i < p->n_mx; i++)
                free(p->mx[i]);
        free(p->mx);
        free(p->connections.source);
        free(p->messages_per_connection.source);
        free(p->messages_per_minute.source);
        free(p->reason);
        free(p->remediation);
}

/* ---- field checks ---- */

static bool valid_name(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > NAME_MAX_LEN)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("-_.:", *p))
                        return false;
        return true;
}

static bool valid_code_pattern(const char *s)
{
        for (const char *p = s; *p; p++)
                if (!isdigit((unsigned char)*p) && !strchr("?*[]-|!", *p))
                        return false;
        return *s != '\0' && strlen(s) < 128;
}

static bool valid_enhanced_pattern(const char *s)
{
        if (strcmp(s, "-") == 0 || strcmp(s, "*") == 0)
                return true;
        for (const char *p = s; *p; p++)
                if (!isdigit((unsigned char)*p) && !strchr(".?*[]-|!", *p))
                        return false;
        return *s != '\0' && strlen(s) < 128;
}

static bool valid_source(const char *s)
{
        return strcmp(s, "observed") == 0 ||
               ((strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0) &&
                strlen(s) <= TEXT_MAX_LEN && !strpbrk(s, " \t\r\n"));
}

/* A provider's remediation page: an http(s) URL ("observed" is no page). */
static bool valid_url(const char *s)
{
        return strcmp(s, "observed") != 0 && valid_source(s);
}

static bool valid_mx_pattern(const char *s)
{
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("-.*?[]", *p))
                        return false;
        return *s != '\0' && strlen(s) <= 255 && strchr(s, '.');
}

static bool valid_text(const char *s)
{
        for (const char *p = s; *p; p++)
                if ((unsigned char)*p < 0x20)
                        return false;
        return *s != '\0' && strlen(s) <= TEXT_MAX_LEN;
}

/* Only the listed keys: a typo is an error, not a silently ignored field. */
static int check_keys(json_t *o, const char *const *keys, const char *file, const char *what,
                      char *err, size_t errlen)
{
        const char *k;
        json_t *v;
        json_object_foreach (o, k, v) {
                bool known = false;
                for (const char *const *p = keys; *p && !known; p++)
                        known = strcmp(*p, k) == 0;
                if (!known)
                        return fail(err, errlen, "%s: %s: unknown key '%s'", file, what, k);
        }
        return 0;
}

/* A required string (or optional when opt), checked by ok. */
static int get_string(json_t *o, const char *key, bool opt, bool (*ok)(const char *),
                      const char *file, const char *what, const char **out, char *err,
                      size_t errlen)
{
        json_t *v = json_object_get(o, key);
        *out = NULL;
        if (!v) {
                if (opt)
                        return 0;
                return fail(err, errlen, "%s: %s: missing \"%s\"", file, what, key);
        }
        if (!json_is_string(v))
                return fail(err, errlen, "%s: %s: \"%s\" must be a string", file, what, key);
        const char *s = json_string_value(v);
        if (ok && !ok(s))
                return fail(err, errlen, "%s: %s: bad \"%s\" '%.200s'", file, what, key, s);
        *out = s;
        return 0;
}

/* An optional integer in [lo, hi]; 0 when absent. */
static int get_int(json_t *o, const char *key, int64_t lo, int64_t hi, const char *file,
                   const char *what, int64_t *out, char *err, size_t errlen)
{
        json_t *v = json_object_get(o, key);
        *out = 0;
        if (!v)
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
                return fail(err, errlen, "%s: %s: \"%s\" must be an integer from %lld to %lld",
                            file, what, key, (long long)lo, (long long)hi);
        *out = json_integer_value(v);
        return 0;
}

static int get_bool(json_t *o, const char *key, const char *file, const char *what, bool *out,
                    char *err, size_t errlen)
{
        json_t *v = json_object_get(o, key);
        if (!json_is_boolean(v))
                return fail(err, errlen, "%s: %s: \"%s\" must be true or false", file, what, key);
        *out = json_is_true(v);
        return 0;
}

/* ---- rules ---- */

static int parse_action(json_t *a, json_t *th, const char *file, const char *what,
                        struct sched_rule_action *out, char *err, size_t errlen)
{
        static const char *const akeys[] = {"suspend_seconds", "max_connections", "max_per_minute",
                                            "for_seconds", NULL};
        static const char *const tkeys[] = {"matches", "within_seconds", NULL};
        int64_t v;
        int r;
        *out = (struct sched_rule_action){.threshold_matches = 1};
        if (!json_is_object(a))
                return fail(err, errlen, "%s: %s: \"action\" must be an object", file, what);
        if ((r = check_keys(a, akeys, file, what, err, errlen)) < 0 ||
            (r = get_int(a, "suspend_seconds", 1, ACTION_MAX_S, file, what, &out->suspend_s, err,
                         errlen)) < 0 ||
            (r = get_int(a, "for_seconds", 1, ACTION_MAX_S, file, what, &out->for_s, err, errlen)) <
                0)
                return r;
        if ((r = get_int(a, "max_connections", 1, MAX_CONNECTIONS, file, what, &v, err, errlen)) <
            0)
                return r;
        out->max_connections = (int)v;
        if ((r = get_int(a, "max_per_minute", 1, MAX_PER_MINUTE, file, what, &v, err, errlen)) < 0)
                return r;
        out->max_per_minute = (int)v;
        bool caps = out->max_connections || out->max_per_minute;
        if (!out->suspend_s && !caps)
                return fail(err, errlen,
                            "%s: %s: an action needs suspend_seconds, max_connections or "
                            "max_per_minute",
                            file, what);
        if (caps != (out->for_s > 0))
                return fail(err, errlen,
                            "%s: %s: max_connections and max_per_minute need for_seconds "
                            "(and for_seconds needs one of them)",
                            file, what);
        if (!th)
                return 0;
        if (!json_is_object(th))
                return fail(err, errlen, "%s: %s: \"threshold\" must be an object", file, what);
        if ((r = check_keys(th, tkeys, file, what, err, errlen)) < 0 ||
            (r = get_int(th, "matches", 1, MAX_THRESHOLD, file, what, &v, err, errlen)) < 0 ||
            (r = get_int(th, "within_seconds", 1, ACTION_MAX_S, file, what,
                         &out->threshold_within_s, err, errlen)) < 0)
                return r;
        if (!v || !out->threshold_within_s)
                return fail(err, errlen, "%s: %s: a threshold needs matches and within_seconds",
                            file, what);
        out->threshold_matches = (int)v;
        return 0;
}

static char *dup_or_null(const char *s, bool *oom)
{
        if (!s)
                return NULL;
        char *d = strdup(s);
        if (!d)
                *oom = true;
        return d;
}

/* One rule object. *disabled: a {"name", "disabled": true} entry. */
static int parse_rule(json_t *o, size_t idx, const char *file, struct rule *ru, bool *disabled,
                      char *err, size_t errlen)
{
        static const char *const keys[] = {"name",      "group",    "code",   "enhanced", "text",
                                           "class",     "reason",   "source", "provider", "action",
                                           "threshold", "disabled", "weight", NULL};
        char what[160];
        const char *name, *code, *enh, *text, *cls, *reason, *source, *provider, *group;
        int r;
        memset(ru, 0, sizeof(*ru));
        *disabled = false;
        snprintf(what, sizeof(what), "rules[%zu]", idx);
        if (!json_is_object(o))
                return fail(err, errlen, "%s: %s: must be an object", file, what);
        if ((r = get_string(o, "name", false, valid_name, file, what, &name, err, errlen)) < 0)
                return r;
        snprintf(what, sizeof(what), "rule '%s'", name);
        if ((r = check_keys(o, keys, file, what, err, errlen)) < 0)
                return r;
        json_t *dis = json_object_get(o, "disabled");
        if (dis) {
                if (!json_is_true(dis) || json_object_size(o) != 2)
                        return fail(err, errlen,
                                    "%s: %s: \"disabled\" is true and comes with \"name\" only",
                                    file, what);
                *disabled = true;
                ru->name = strdup(name);
                return ru->name ? 0 : -ENOMEM;
        }
        if ((r = get_string(o, "code", false, valid_code_pattern, file, what, &code, err, errlen)) <
                0 ||
            (r = get_string(o, "enhanced", false, valid_enhanced_pattern, file, what, &enh, err,
                            errlen)) < 0 ||
            (r = get_string(o, "text", false, NULL, file, what, &text, err, errlen)) < 0 ||
            (r = get_string(o, "class", false, NULL, file, what, &cls, err, errlen)) < 0 ||
            (r = get_string(o, "reason", false, valid_text, file, what, &reason, err, errlen)) <
                0 ||
            (r = get_string(o, "source", false, valid_source, file, what, &source, err, errlen)) <
                0 ||
            (r = get_string(o, "provider", true, valid_name, file, what, &provider, err, errlen)) <
                0 ||
            (r = get_string(o, "group", true, valid_text, file, what, &group, err, errlen)) < 0)
                return r;
        int k = reply_class_from_name(cls);
        if (k < 0)
                return fail(err, errlen, "%s: %s: unknown class '%.100s'", file, what, cls);
        if (strlen(text) > PATTERN_MAX_LEN || !*text)
                return fail(err, errlen, "%s: %s: \"text\" must be a pattern of 1 to %d bytes",
                            file, what, PATTERN_MAX_LEN);
        json_t *act = json_object_get(o, "action"), *th = json_object_get(o, "threshold");
        if (th && !act)
                return fail(err, errlen, "%s: %s: a threshold without an action", file, what);
        int64_t weight = 0;
        if (json_object_get(o, "weight")) {
                if ((r = get_int(o, "weight", 1, 100, file, what, &weight, err, errlen)) < 0)
                        return r;
                if (act)
                        return fail(err, errlen,
                                    "%s: %s: a word family (\"weight\") takes no action", file,
                                    what);
        }
        if (act) {
                if ((r = parse_action(act, th, file, what, &ru->action, err, errlen)) < 0)
                        return r;
                ru->has_action = true;
        }
        char rerr[128];
        if (policy_compile(&ru->re, text, rerr, sizeof(rerr)) < 0)
                return fail(err, errlen, "%s: %s: bad regular expression: %s", file, what, rerr);
        bool oom = false;
        ru->name = dup_or_null(name, &oom);
        ru->code = dup_or_null(code, &oom);
        ru->enhanced = dup_or_null(enh, &oom);
        ru->reason = dup_or_null(reason, &oom);
        ru->source = dup_or_null(source, &oom);
        ru->provider = dup_or_null(provider, &oom);
        ru->cls = (enum reply_class)k;
        ru->weight = (int)weight;
        if (oom) {
                policy_rule_free(ru);
                return -ENOMEM;
        }
        return 0;
}

/* ---- providers ---- */

static int parse_limit(json_t *lims, const char *key, int64_t hi, const char *file,
                       const char *what, struct sched_provider_limit *out, char *err, size_t errlen)
{
        static const char *const keys[] = {"value", "source", NULL};
        json_t *l = json_object_get(lims, key);
        char w[200];
        const char *src;
        int r;
        if (!l)
                return 0;
        snprintf(w, sizeof(w), "%s: limit %s", what, key);
        if (!json_is_object(l))
                return fail(err, errlen, "%s: %s: must be {\"value\": N, \"source\": URL}", file,
                            w);
        if ((r = check_keys(l, keys, file, w, err, errlen)) < 0 ||
            (r = get_int(l, "value", 1, hi, file, w, &out->value, err, errlen)) < 0 ||
            (r = get_string(l, "source", false, valid_source, file, w, &src, err, errlen)) < 0)
                return r;
        if (!out->value)
                return fail(err, errlen, "%s: %s: missing \"value\"", file, w);
        return (out->source = strdup(src)) ? 0 : -ENOMEM;
}

static int parse_provider(json_t *o, size_t idx, const char *file, struct sched_provider *p,
                          char *err, size_t errlen)
{
        static const char *const keys[] = {"name", "mx", "limits", "reason", "remediation", NULL};
        static const char *const lkeys[] = {"connections", "messages_per_connection",
                                            "messages_per_minute", NULL};
        char what[160];
        const char *name, *reason, *remediation;
        int r;
        memset(p, 0, sizeof(*p));
        snprintf(what, sizeof(what), "providers[%zu]", idx);
        if (!json_is_object(o))
                return fail(err, errlen, "%s: %s: must be an object", file, what);
        if ((r = get_string(o, "name", false, valid_name, file, what, &name, err, errlen)) < 0)
                return r;
        snprintf(what, sizeof(what), "provider '%s'", name);
        if ((r = check_keys(o, keys, file, what, err, errlen)) < 0 ||
            (r = get_string(o, "reason", true, valid_text, file, what, &reason, err, errlen)) < 0 ||
            (r = get_string(o, "remediation", true, valid_url, file, what, &remediation, err,
                            errlen)) < 0)
                return r;
        if (!(p->name = strdup(name)) || (reason && !(p->reason = strdup(reason))) ||
            (remediation && !(p->remediation = strdup(remediation))))
                return -ENOMEM;
        json_t *mx = json_object_get(o, "mx");
        if (mx && !json_is_array(mx))
                return fail(err, errlen, "%s: %s: \"mx\" must be a list of host patterns", file,
                            what);
        size_t n = json_array_size(mx);
        if (n > 0 && !(p->mx = calloc(n, sizeof(*p->mx))))
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *pat = json_string_value(json_array_get(mx, i));
                if (!pat || !valid_mx_pattern(pat))
                        return fail(err, errlen, "%s: %s: bad MX pattern mx[%zu]", file, what, i);
                if (!(p->mx[p->n_mx] = strdup(pat)))
                        return -ENOMEM;
                p->n_mx++;
        }
        json_t *lims = json_object_get(o, "limits");
        if (!lims)
                return 0;
        if (!json_is_object(lims))
                return fail(err, errlen, "%s: %s: \"limits\" must be an object", file, what);
        if ((r = check_keys(lims, lkeys, file, what, err, errlen)) < 0 ||
            (r = parse_limit(lims, "connections", MAX_CONNECTIONS, file, what, &p->connections, err,
                             errlen)) < 0 ||
            (r = parse_limit(lims, "messages_per_connection", MAX_PER_CONNECTION, file, what,
                             &p->messages_per_connection, err, errlen)) < 0 ||
            (r = parse_limit(lims, "messages_per_minute", MAX_PER_MINUTE, file, what,
                             &p->messages_per_minute, err, errlen)) < 0)
                return r;
        return 0;
}

/* ---- windows and traits ---- */

static int parse_windows(json_t *arr, const char *file, struct greylist_window **out, size_t *n_out,
                         char *err, size_t errlen)
{
        static const char *const keys[] = {"seconds", "who", "source", NULL};
        size_t n = json_array_size(arr);
        if (!json_is_array(arr) || n == 0 || n > 64)
                return fail(err, errlen, "%s: \"greylist_windows\" must be a list of 1 to 64",
                            file);
        struct greylist_window *v = calloc(n, sizeof(*v));
        if (!v)
                return -ENOMEM;
        int r = 0;
        for (size_t i = 0; i < n && r == 0; i++) {
                json_t *o = json_array_get(arr, i);
                char what[64];
                const char *who, *src;
                snprintf(what, sizeof(what), "greylist_windows[%zu]", i);
                if (!json_is_object(o)) {
                        r = fail(err, errlen, "%s: %s: must be an object", file, what);
                        break;
                }
                if ((r = check_keys(o, keys, file, what, err, errlen)) < 0 ||
                    (r = get_int(o, "seconds", 1, LEARN_MAX_S, file, what, &v[i].seconds, err,
                                 errlen)) < 0 ||
                    (r = get_string(o, "who", false, valid_text, file, what, &who, err, errlen)) <
                        0 ||
                    (r = get_string(o, "source", false, valid_source, file, what, &src, err,
                                    errlen)) < 0)
                        break;
                if (!v[i].seconds)
                        r = fail(err, errlen, "%s: %s: missing \"seconds\"", file, what);
                else if (i > 0 && v[i].seconds <= v[i - 1].seconds)
                        r = fail(err, errlen, "%s: %s: windows must be in ascending order", file,
                                 what);
                else if (!(v[i].who = strdup(who)) || !(v[i].source = strdup(src)))
                        r = -ENOMEM;
        }
        if (r < 0) {
                for (size_t i = 0; i < n; i++) {
                        free(v[i].who);
                        free(v[i].source);
                }
                free(v);
                return r;
        }
        *out = v;
        *n_out = n;
        return 0;
}

static int parse_traits(json_t *obj, bool base, const char *file, struct class_trait *traits,
                        bool *given, char *err, size_t errlen)
{
        static const char *const keys[] = {"greylist_like", "pause",  "pause_even_if_delivered",
                                           "jitter",        "reason", NULL};
        if (!json_is_object(obj))
                return fail(err, errlen, "%s: \"class_traits\" must be an object", file);
        const char *cname;
        json_t *o;
        int r;
        json_object_foreach (obj, cname, o) {
                char what[80];
                int k = reply_class_from_name(cname);
                snprintf(what, sizeof(what), "class_traits '%.40s'", cname);
                if (k < 0)
                        return fail(err, errlen, "%s: %s: unknown class", file, what);
                if (!json_is_object(o))
                        return fail(err, errlen, "%s: %s: must be an object", file, what);
                struct class_trait *t = &traits[k];
                const char *pause, *reason;
                if ((r = check_keys(o, keys, file, what, err, errlen)) < 0 ||
                    (r = get_bool(o, "greylist_like", file, what, &t->greylist_like, err, errlen)) <
                        0 ||
                    (r = get_bool(o, "pause_even_if_delivered", file, what,
                                  &t->pause_even_if_delivered, err, errlen)) < 0 ||
                    (r = get_bool(o, "jitter", file, what, &t->jitter, err, errlen)) < 0 ||
                    (r = get_string(o, "pause", false, NULL, file, what, &pause, err, errlen)) <
                        0 ||
                    (r = get_string(o, "reason", false, valid_text, file, what, &reason, err,
                                    errlen)) < 0)
                        return r;
                if (strcmp(pause, "none") == 0)
                        t->pause = PAUSE_NONE;
                else if (strcmp(pause, "suspend") == 0)
                        t->pause = PAUSE_SUSPEND;
                else if (strcmp(pause, "backoff") == 0)
                        t->pause = PAUSE_BACKOFF;
                else
                        return fail(err, errlen, "%s: %s: \"pause\" is none, suspend or backoff",
                                    file, what);
                if (k == CLASS_PERMANENT && (t->pause != PAUSE_NONE || t->greylist_like))
                        return fail(err, errlen, "%s: %s: permanent failures are never retried",
                                    file, what);
                given[k] = true;
        }
        for (int k = 0; base && k < CLASS__MAX; k++)
                if (!given[k])
                        return fail(err, errlen, "%s: class_traits: class '%s' is not described",
                                    file, reply_class_name(k));
        return 0;
}

/* ---- one document ---- */

struct staged {
        struct rule *rules;
        bool *disabled;
        size_t n_rules;
        struct sched_provider *providers;
        size_t n_providers;
        struct greylist_window *windows;
        size_t n_windows;
        struct class_trait traits[CLASS__MAX];
        bool traits_given[CLASS__MAX];
};

static void staged_free(struct staged *st)
{
        for (size_t i = 0; i < st->n_rules; i++)
                policy_rule_free(&st->rules[i]);
        free(st->rules);
        free(st->disabled);
        for (size_t i = 0; i < st->n_providers; i++)
                policy_provider_free(&st->providers[i]);
        free(st->providers);
        for (size_t i = 0; i < st->n_windows; i++) {
                free(st->windows[i].who);
                free(st->windows[i].source);
        }
        free(st->windows);
}

static int parse_list(json_t *root, const char *key, const char *file, json_t **out, char *err,
                      size_t errlen)
{
        *out = json_object_get(root, key);
        if (*out && (!json_is_array(*out) || json_array_size(*out) > MAX_ENTRIES))
                return fail(err, errlen, "%s: \"%s\" must be a list of at most %d", file, key,
                            MAX_ENTRIES);
        return 0;
}

static int parse_doc(json_t *root, const char *file, bool base, struct staged *st, char *err,
                     size_t errlen)
{
        static const char *const keys[] = {"tarry_policy", "about",     "rules", "greylist_windows",
                                           "class_traits", "providers", NULL};
        json_t *rules, *provs, *v;
        int r;
        if (!json_is_object(root))
                return fail(err, errlen, "%s: not a policy file (a JSON object)", file);
        if ((r = check_keys(root, keys, file, "top level", err, errlen)) < 0)
                return r;
        v = json_object_get(root, "tarry_policy");
        if (!json_is_integer(v) || json_integer_value(v) != POLICY_FORMAT)
                return fail(err, errlen, "%s: \"tarry_policy\": %d is the format this tarry reads",
                            file, POLICY_FORMAT);
        if ((r = parse_list(root, "rules", file, &rules, err, errlen)) < 0 ||
            (r = parse_list(root, "providers", file, &provs, err, errlen)) < 0)
                return r;
        size_t nr = json_array_size(rules), np = json_array_size(provs);
        st->rules = calloc(nr ? nr : 1, sizeof(*st->rules));
        st->disabled = calloc(nr ? nr : 1, sizeof(*st->disabled));
        st->providers = calloc(np ? np : 1, sizeof(*st->providers));
        if (!st->rules || !st->disabled || !st->providers)
                return -ENOMEM;
        for (size_t i = 0; i < np; i++) {
                r = parse_provider(json_array_get(provs, i), i, file, &st->providers[i], err,
                                   errlen);
                st->n_providers++;
                if (r < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(st->providers[j].name, st->providers[i].name) == 0)
                                return fail(err, errlen, "%s: provider '%s' is defined twice", file,
                                            st->providers[i].name);
        }
        for (size_t i = 0; i < nr; i++) {
                r = parse_rule(json_array_get(rules, i), i, file, &st->rules[i], &st->disabled[i],
                               err, errlen);
                if (r < 0)
                        return r;
                st->n_rules++;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(st->rules[j].name, st->rules[i].name) == 0)
                                return fail(err, errlen, "%s: rule '%s' is defined twice", file,
                                            st->rules[i].name);
        }
        if ((v = json_object_get(root, "greylist_windows")) &&
            (r = parse_windows(v, file, &st->windows, &st->n_windows, err, errlen)) < 0)
                return r;
        if (base && !v)
                return fail(err, errlen, "%s: missing \"greylist_windows\"", file);
        v = json_object_get(root, "class_traits");
        if (base && !v)
                return fail(err, errlen, "%s: missing \"class_traits\"", file);
        if (v && (r = parse_traits(v, base, file, st->traits, st->traits_given, err, errlen)) < 0)
                return r;
        return 0;
}

/* ---- merging into the classifier ---- */

static ssize_t find_rule(const struct rule *v, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (v[i].name && strcmp(v[i].name, name) == 0)
                        return (ssize_t)i;
        return -1;
}

static const struct sched_provider *find_provider(const struct sched_classifier *c,
                                                  const struct staged *st, const char *name)
{
        for (size_t i = 0; i < st->n_providers; i++)
                if (strcmp(st->providers[i].name, name) == 0)
                        return &st->providers[i];
        for (size_t i = 0; i < c->n_providers; i++)
                if (strcmp(c->providers[i].name, name) == 0)
                        return &c->providers[i];
        return NULL;
}

/* Every rule must attach: its provider exists and has MX patterns. Checked
 * over the merged set, so an overlay that empties a provider's MX list is
 * caught for the shipped rules that name it too. */
static int check_attach(const struct sched_classifier *c, const struct staged *st, const char *file,
                        char *err, size_t errlen)
{
        for (size_t pass = 0; pass < 2; pass++) {
                const struct rule *v = pass ? c->rules : st->rules;
                size_t n = pass ? c->n_rules : st->n_rules;
                for (size_t i = 0; i < n; i++) {
                        if (!v[i].provider || (!pass && st->disabled[i]))
                                continue;
                        if (pass && (find_rule(st->rules, st->n_rules, v[i].name) >= 0))
                                continue; /* replaced or removed */
                        const struct sched_provider *p = find_provider(c, st, v[i].provider);
                        if (!p)
                                return fail(err, errlen, "%s: rule '%s': no provider '%s'", file,
                                            v[i].name, v[i].provider);
                        if (p->n_mx == 0 && !pass)
                                return fail(err, errlen,
                                            "%s: rule '%s': provider '%s' has no MX patterns, so "
                                            "the rule could never attach to a site",
                                            file, v[i].name, v[i].provider);
                        if (p->n_mx == 0)
                                return fail(err, errlen,
                                            "%s: provider '%s' has no MX patterns, so rule '%s' "
                                            "of %s could never attach to a site",
                                            file, v[i].provider, v[i].name, v[i].file);
                }
        }
        return 0;
}

static int check_disabled(const struct sched_classifier *c, const struct staged *st,
                          const char *file, char *err, size_t errlen)
{
        for (size_t i = 0; i < st->n_rules; i++)
                if (st->disabled[i] && find_rule(c->rules, c->n_rules, st->rules[i].name) < 0)
                        return fail(err, errlen,
                                    "%s: rule '%s': disabled, but no rule has that name", file,
                                    st->rules[i].name);
        return 0;
}

/* Merge: [operator rules kept] + [new rules] + [shipped rules kept]. */
static int merge(struct sched_classifier *c, struct staged *st, const char *file, bool base)
{
        const char *fname = policy_file_name(c, file);
        size_t cap = c->n_rules + st->n_rules;
        struct rule *all = malloc((cap ? cap : 1) * sizeof(*all));
        struct sched_provider *provs =
            malloc((c->n_providers + st->n_providers + 1) * sizeof(*provs));
        if (!fname || !all || !provs) {
                free(all);
                free(provs);
                return -ENOMEM;
        }
        size_t n = 0, n_op = 0;
        for (size_t i = 0; i < c->n_rules; i++) {
                if (i == c->n_operator && !base) {
                        for (size_t j = 0; j < st->n_rules; j++)
                                if (!st->disabled[j]) {
                                        all[n] = st->rules[j];
                                        all[n++].file = fname;
                                        n_op++;
                                }
                }
                if (find_rule(st->rules, st->n_rules, c->rules[i].name) >= 0) {
                        policy_rule_free(&c->rules[i]);
                        continue;
                }
                all[n++] = c->rules[i];
                if (i < c->n_operator)
                        n_op++;
        }
        if (c->n_operator == c->n_rules || base)
                for (size_t j = 0; j < st->n_rules; j++)
                        if (!st->disabled[j]) {
                                all[n] = st->rules[j];
                                all[n++].file = fname;
                                n_op += !base;
                        }
        for (size_t j = 0; j < st->n_rules; j++)
                if (st->disabled[j])
                        policy_rule_free(&st->rules[j]);
        free(c->rules);
        c->rules = all;
        c->n_rules = n;
        c->n_operator = n_op;
        free(st->rules);
        free(st->disabled);
        st->rules = NULL;
        st->disabled = NULL;
        st->n_rules = 0;

        size_t np = 0;
        for (size_t i = 0; i < c->n_providers; i++) {
                bool replaced = false;
                for (size_t j = 0; j < st->n_providers && !replaced; j++)
                        replaced = strcmp(st->providers[j].name, c->providers[i].name) == 0;
                if (replaced)
                        policy_provider_free(&c->providers[i]);
                else
                        provs[np++] = c->providers[i];
        }
        for (size_t j = 0; j < st->n_providers; j++) {
                provs[np] = st->providers[j];
                provs[np++].file = fname;
        }
        free(c->providers);
        c->providers = provs;
        c->n_providers = np;
        free(st->providers);
        st->providers = NULL;
        st->n_providers = 0;

        if (st->windows) {
                for (size_t i = 0; i < c->n_windows; i++) {
                        free(c->windows[i].who);
                        free(c->windows[i].source);
                }
                free(c->windows);
                c->windows = st->windows;
                c->n_windows = st->n_windows;
                st->windows = NULL;
                st->n_windows = 0;
        }
        for (int k = 0; k < CLASS__MAX; k++)
                if (st->traits_given[k])
                        c->traits[k] = st->traits[k];
        return 0;
}

int policy_load(struct sched_classifier *c, const char *name, const char *text, bool base,
                char *err, size_t errlen)
{
        json_error_t jerr;
        _cleanup_(json_decrefp) json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return fail(err, errlen, "%s:%d:%d: %s", name, jerr.line, jerr.column, jerr.text);
        struct staged st = {0};
        int r = parse_doc(root, name, base, &st, err, errlen);
        if (r == 0)
                r = check_disabled(c, &st, name, err, errlen);
        if (r == 0)
                r = check_attach(c, &st, name, err, errlen);
        size_t added = 0;
        for (size_t i = 0; i < st.n_rules; i++)
                added += !st.disabled[i];
        if (r == 0)
                r = merge(c, &st, name, base);
        staged_free(&st);
        if (r == -ENOMEM && err && errlen)
                snprintf(err, errlen, "%s: out of memory", name);
        return r < 0 ? r : (int)added;
}

/* ---- the older line format ---- */

static char *next_field(char **p)
{
        char *s = *p + strspn(*p, " \t");
        if (!*s)
                return NULL;
        char *e = s + strcspn(s, " \t");
        if (*e)
                *e++ = '\0';
        *p = e;
        return s;
}

static int fail_at(char *err, size_t errlen, const char *name, unsigned line, const char *what,
                   const char *arg)
{
        return fail(err, errlen, "%s:%u: %s%s%s%s", name, line, what, arg ? " '" : "",
                    arg ? arg : "", arg ? "'" : "");
}

static int parse_rule_line(char *line, const char *name, unsigned lineno, struct rule *ru,
                           char *err, size_t errlen)
{
        char *p = line;
        char *cls = next_field(&p), *code = next_field(&p), *enh = next_field(&p);
        memset(ru, 0, sizeof(*ru));
        if (!cls || !code || !enh)
                return fail_at(err, errlen, name, lineno,
                               "expected: CLASS CODE ENHANCED TEXT-REGEX", NULL);
        int k = reply_class_from_name(cls);
        if (k < 0)
                return fail_at(err, errlen, name, lineno, "unknown class", cls);
        if (!valid_code_pattern(code))
                return fail_at(err, errlen, name, lineno, "bad code pattern", code);
        if (!valid_enhanced_pattern(enh))
                return fail_at(err, errlen, name, lineno, "bad enhanced-code pattern", enh);
        char *text = p + strspn(p, " \t");
        size_t tl = strlen(text);
        while (tl > 0 && isspace((unsigned char)text[tl - 1]))
                text[--tl] = '\0';
        if (tl == 0)
                return fail_at(err, errlen, name, lineno, "missing text pattern", NULL);
        char rerr[128];
        if (policy_compile(&ru->re, text, rerr, sizeof(rerr)) < 0)
                return fail_at(err, errlen, name, lineno, "bad regular expression:", rerr);
        const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
        char rname[300];
        snprintf(rname, sizeof(rname), "%s:%u", base, lineno);
        bool oom = false;
        ru->name = dup_or_null(rname, &oom);
        ru->code = dup_or_null(code, &oom);
        ru->enhanced = dup_or_null(enh, &oom);
        ru->reason = dup_or_null("operator rule", &oom);
        ru->source = dup_or_null("observed", &oom);
        ru->cls = (enum reply_class)k;
        if (oom) {
                policy_rule_free(ru);
                return -ENOMEM;
        }
        return 0;
}

int policy_load_lines(struct sched_classifier *c, const char *name, const char *text, char *err,
                      size_t errlen)
{
        _cleanup_free_ char *copy = strdup(text);
        struct staged st = {0};
        size_t cap = 0;
        unsigned lineno = 0;
        int r = copy ? 0 : -ENOMEM;
        for (char *line = copy, *next; r == 0 && line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                lineno++;
                line[strcspn(line, "\r")] = '\0';
                char *s = line + strspn(line, " \t");
                if (*s == '\0' || *s == '#')
                        continue;
                if (st.n_rules == cap) {
                        cap = cap ? cap * 2 : 8;
                        struct rule *nv = realloc(st.rules, cap * sizeof(*nv));
                        bool *nd = realloc(st.disabled, cap * sizeof(*nd));
                        if (nv)
                                st.rules = nv;
                        if (nd)
                                st.disabled = nd;
                        if (!nv || !nd) {
                                r = -ENOMEM;
                                break;
                        }
                }
                r = parse_rule_line(s, name, lineno, &st.rules[st.n_rules], err, errlen);
                if (r == 0)
                        st.disabled[st.n_rules++] = false;
        }
        size_t added = st.n_rules;
        if (r == 0)
                r = merge(c, &st, name, false);
        staged_free(&st);
        return r < 0 ? r : (int)added;
}

/* ---- providers ---- */

size_t sched_classifier_providers(const struct sched_classifier *c,
                                  const struct sched_provider **out)
{
        *out = c->providers;
        return c->n_providers;
}

const struct sched_provider *sched_provider_for_mx(const struct sched_classifier *c,
                                                   const char *host)
{
        for (size_t i = 0; i < c->n_providers; i++)
                for (size_t j = 0; j < c->providers[i].n_mx; j++)
                        if (fnmatch(c->providers[i].mx[j], host, FNM_CASEFOLD) == 0)
                                return &c->providers[i];
        return NULL;
}

void sched_classifier_info(const struct sched_classifier *c, struct sched_policy_info *out)
{
        *out = (struct sched_policy_info){.rules = c->n_rules,
                                          .operator_rules = c->n_operator,
                                          .providers = c->n_providers,
                                          .greylist_windows = c->n_windows,
                                          .files = c->n_files};
}
