/* tests/status/prom_parse.c — strict Prometheus text-format checker. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prom_parse.h"

#define MAX_SERIES 4096
#define MAX_LINE   4096

struct family {
        char name[256];
        char type[16];
        bool help, typed, has_samples;
};

struct state {
        struct family fam[256];
        size_t n_fam;
        struct family *cur; /* family of the last sample */
        char *series[MAX_SERIES];
        size_t n_series;
        /* histogram being checked: labels without le → last cumulative count */
        double last_bucket;
        bool saw_inf;
        double inf_count;
        char hist_key[MAX_LINE + 300];
        int line;
        char *err;
        size_t errlen;
};

static int fail(struct state *st, const char *fmt, ...)
{
        va_list ap;
        int n = snprintf(st->err, st->errlen, "line %d: ", st->line);
        va_start(ap, fmt);
        vsnprintf(st->err + n, st->errlen - n, fmt, ap);
        va_end(ap);
        return -1;
}

static bool is_name(const char *s, size_t n, bool colon)
{
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                          (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
                if (!ok)
                        return false;
        }
        return true;
}

static bool parse_float(const char *s, double *out)
{
        if (strcmp(s, "NaN") == 0) {
                *out = NAN;
                return true;
        }
        if (strcmp(s, "+Inf") == 0 || strcmp(s, "Inf") == 0) {
                *out = INFINITY;
                return true;
        }
        if (strcmp(s, "-Inf") == 0) {
                *out = -INFINITY;
                return true;
        }
        if (!*s || strspn(s, "0123456789.eE+-") != strlen(s))
                return false;
        char *end;
        *out = strtod(s, &end);
        return *end == '\0';
}

static struct family *family(struct state *st, const char *name)
{
        for (size_t i = 0; i < st->n_fam; i++)
                if (strcmp(st->fam[i].name, name) == 0)
                        return &st->fam[i];
        if (st->n_fam == 256)
                return NULL;
        struct family *f = &st->fam[st->n_fam++];
        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", name);
        return f;
}

static int parse_comment(struct state *st, const char *line)
{
        char kw[8], name[256];
        int off = 0;
        if (sscanf(line, "# %7s %255s %n", kw, name, &off) < 2 ||
            (strcmp(kw, "HELP") != 0 && strcmp(kw, "TYPE") != 0))
                return 0; /* a plain comment */
        if (!is_name(name, strlen(name), true))
                return fail(st, "bad metric name '%s'", name);
        struct family *f = family(st, name);
        if (!f)
                return fail(st, "too many families");
        if (f->has_samples)
                return fail(st, "%s after samples of %s", kw, name);
        if (strcmp(kw, "HELP") == 0) {
                if (f->help)
                        return fail(st, "second HELP for %s", name);
                f->help = true;
                for (const char *p = line + off; *p; p++)
                        if (*p == '\\' && p[1] != '\\' && p[1] != 'n')
                                return fail(st, "bad escape in HELP");
                        else if (*p == '\\')
                                p++;
                return 0;
        }
        static const char *const types[] = {"counter", "gauge", "histogram", "summary", "untyped"};
        const char *t = line + off;
        bool known = false;
        for (size_t i = 0; i < 5; i++)
                known |= strcmp(t, types[i]) == 0;
        if (!known)
                return fail(st, "unknown type '%s'", t);
        if (f->typed)
                return fail(st, "second TYPE for %s", name);
        f->typed = true;
        snprintf(f->type, sizeof(f->type), "%s", t);
        return 0;
}

/* name{labels} → family name, with histogram suffixes taken off when the base
 * family is a histogram. */
static struct family *sample_family(struct state *st, const char *name, const char **suffix)
{
        static const char *const sfx[] = {"_bucket", "_sum", "_count"};
        size_t n = strlen(name);
        *suffix = "";
        for (size_t i = 0; i < 3; i++) {
                size_t k = strlen(sfx[i]);
                if (n > k && strcmp(name + n - k, sfx[i]) == 0) {
                        char base[256];
                        snprintf(base, sizeof(base), "%.*s", (int)(n - k), name);
                        for (size_t j = 0; j < st->n_fam; j++)
                                if (strcmp(st->fam[j].name, base) == 0 &&
                                    strcmp(st->fam[j].type, "histogram") == 0) {
                                        *suffix = sfx[i];
                                        return &st->fam[j];
                                }
                }
        }
        return family(st, name);
}

/* Parse {a="x",b="y"} starting at *p; writes the canonical label string
 * without le into key, le's value into le. */
static int parse_labels(struct state *st, const char **pp, char *key, size_t keylen, char *le,
                        size_t lelen)
{
        const char *p = *pp;
        size_t kl = 0;
        char names[32][128];
        size_t n_names = 0;
        le[0] = key[0] = '\0';
        if (*p != '{')
                return 0;
        p++;
        while (*p != '}') {
                const char *ns = p;
                while (*p && *p != '=')
                        p++;
                if (*p != '=' || !is_name(ns, p - ns, false) || p - ns >= 128)
                        return fail(st, "bad label name");
                char lname[128];
                snprintf(lname, sizeof(lname), "%.*s", (int)(p - ns), ns);
                for (size_t i = 0; i < n_names; i++)
                        if (strcmp(names[i], lname) == 0)
                                return fail(st, "label %s repeated", lname);
                if (n_names < 32)
                        snprintf(names[n_names++], 128, "%s", lname);
                if (*++p != '"')
                        return fail(st, "label value not quoted");
                char val[MAX_LINE];
                size_t vl = 0;
                for (p++; *p != '"'; p++) {
                        if (!*p || *p == '\n')
                                return fail(st, "unterminated label value");
                        if (*p == '\\') {
                                p++;
                                if (*p != '\\' && *p != '"' && *p != 'n')
                                        return fail(st, "bad escape in label value");
                        }
                        if (vl < sizeof(val) - 1)
                                val[vl++] = *p;
                }
                val[vl] = '\0';
                p++;
                if (strcmp(lname, "le") == 0) {
                        if (vl >= lelen)
                                return fail(st, "le value too long");
                        memcpy(le, val, vl + 1);
                } else {
                        kl += snprintf(key + kl, keylen - kl, "%s=%s,", lname, val);
                        if (kl >= keylen)
                                return fail(st, "labels too long");
                }
                if (*p == ',')
                        p++;
                else if (*p != '}')
                        return fail(st, "expected , or }");
        }
        *pp = p + 1;
        return 0;
}

static int check_histogram(struct state *st, const char *suffix, const char *key, const char *le,
                           double v)
{
        if (strcmp(key, st->hist_key) != 0) {
                if (st->hist_key[0] && !st->saw_inf)
                        return fail(st, "histogram series without +Inf bucket");
                snprintf(st->hist_key, sizeof(st->hist_key), "%s", key);
                st->last_bucket = 0;
                st->saw_inf = false;
        }
        if (strcmp(suffix, "_bucket") == 0) {
                double b;
                if (!le[0] || !parse_float(le, &b))
                        return fail(st, "bucket without a valid le");
                if (v < st->last_bucket)
                        return fail(st, "buckets not cumulative");
                st->last_bucket = v;
                if (isinf(b)) {
                        st->saw_inf = true;
                        st->inf_count = v;
                }
                return 0;
        }
        if (le[0])
                return fail(st, "le label outside _bucket");
        if (strcmp(suffix, "_count") == 0 && (!st->saw_inf || v != st->inf_count))
                return fail(st, "_count differs from the +Inf bucket");
        if (!suffix[0])
                return fail(st, "histogram sample without _bucket/_sum/_count");
        return 0;
}

static int remember_series(struct state *st, const char *name, const char *key, const char *le)
{
        char buf[MAX_LINE * 2];
        snprintf(buf, sizeof(buf), "%s{%s|%s}", name, key, le);
        for (size_t i = 0; i < st->n_series; i++)
                if (strcmp(st->series[i], buf) == 0)
                        return fail(st, "duplicate series %s", buf);
        if (st->n_series == MAX_SERIES)
                return fail(st, "too many series");
        st->series[st->n_series++] = strdup(buf);
        return 0;
}

static int parse_sample(struct state *st, const char *line)
{
        const char *p = line;
        while (*p && *p != '{' && *p != ' ')
                p++;
        char name[256];
        if (!is_name(line, p - line, true) || p - line >= 256)
                return fail(st, "bad metric name");
        snprintf(name, sizeof(name), "%.*s", (int)(p - line), line);
        char key[MAX_LINE], le[64];
        if (parse_labels(st, &p, key, sizeof(key), le, sizeof(le)) < 0)
                return -1;
        if (*p != ' ')
                return fail(st, "expected one space before the value");
        char val[64];
        const char *vs = ++p;
        while (*p && *p != ' ')
                p++;
        snprintf(val, sizeof(val), "%.*s", (int)(p - vs), vs);
        double v;
        if (!parse_float(val, &v))
                return fail(st, "bad value '%s'", val);
        if (*p == ' ' && (!p[1] || strspn(p + 1, "-0123456789") != strlen(p + 1)))
                return fail(st, "bad timestamp");

        const char *suffix;
        struct family *f = sample_family(st, name, &suffix);
        if (!f)
                return fail(st, "too many families");
        if (st->cur != f && f->has_samples)
                return fail(st, "samples of %s are not contiguous", f->name);
        st->cur = f;
        f->has_samples = true;
        if (strcmp(f->type, "counter") == 0 && !(v >= 0))
                return fail(st, "negative or NaN counter");
        char hkey[MAX_LINE + 300];
        snprintf(hkey, sizeof(hkey), "%s{%s}", f->name, key);
        if (strcmp(f->type, "histogram") == 0 && check_histogram(st, suffix, hkey, le, v) < 0)
                return -1;
        if (strcmp(f->type, "histogram") != 0 && le[0] && strcmp(f->type, "untyped") != 0)
                return fail(st, "le label on a %s", f->type);
        return remember_series(st, name, key, le);
}

int prom_parse(const char *text, char *err, size_t errlen)
{
        struct state *st = calloc(1, sizeof(*st));
        int r = 0;
        st->err = err;
        st->errlen = errlen;
        size_t len = strlen(text);
        if (len > 0 && text[len - 1] != '\n') {
                snprintf(err, errlen, "no final newline");
                r = -1;
        }
        for (const char *p = text; r == 0 && *p;) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                char line[MAX_LINE];
                st->line++;
                if (n >= sizeof(line)) {
                        r = fail(st, "line too long");
                        break;
                }
                memcpy(line, p, n);
                line[n] = '\0';
                if (strchr(line, '\r') || (n && (line[n - 1] == ' ' || line[n - 1] == '\t')))
                        r = fail(st, "stray CR or trailing blank");
                else if (line[0] == '#')
                        r = parse_comment(st, line);
                else if (n > 0)
                        r = parse_sample(st, line);
                p += n + (nl ? 1 : 0);
        }
        if (r == 0 && st->hist_key[0] && !st->saw_inf)
                r = fail(st, "histogram series without +Inf bucket");
        for (size_t i = 0; i < st->n_series; i++)
                free(st->series[i]);
        free(st);
        return r;
}

bool prom_value(const char *text, const char *series, double *out)
{
        size_t n = strlen(series);
        for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
                if (strncmp(p, series, n) == 0 && p[n] == ' ') {
                        char val[64];
                        sscanf(p + n + 1, "%63s", val);
                        return parse_float(val, out);
                }
        }
        return false;
}
