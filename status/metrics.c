/* status/metrics.c — a small Prometheus metrics registry: counters, gauges
 * and histograms by name and label values, rendered in text format 0.0.4.
 * Families are few (tens) and series per family small, so lookups are linear.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "status/status.h"

#define MAX_LABELS      8
#define MAX_NAME_LEN    128
#define MAX_LABEL_VALUE 1024

struct series {
        char **values;     /* n_labels label values */
        double value;      /* counter, gauge */
        uint64_t *buckets; /* histogram: per-bucket (not cumulative) counts, +Inf last */
        double sum;
        uint64_t count;
};

struct family {
        char *name;
        char *help;
        enum status_metric_type type;
        char **labels;
        size_t n_labels;
        double *bounds; /* histogram upper bounds, +Inf implied */
        size_t n_bounds;
        struct series *series;
        size_t n_series;
};

struct status_metrics {
        struct family *fam;
        size_t n_fam;
};

static const char *const type_names[] = {
    [STATUS_METRIC_COUNTER] = "counter",
    [STATUS_METRIC_GAUGE] = "gauge",
    [STATUS_METRIC_HISTOGRAM] = "histogram",
};

int status_metrics_new(struct status_metrics **out)
{
        struct status_metrics *m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        *out = m;
        return 0;
}

static void strv_free(char **v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static void series_free(struct series *s, size_t n_labels)
{
        strv_free(s->values, n_labels);
        free(s->buckets);
}

static void family_free(struct family *f)
{
        for (size_t i = 0; i < f->n_series; i++)
                series_free(&f->series[i], f->n_labels);
        free(f->series);
        free(f->name);
        free(f->help);
        strv_free(f->labels, f->n_labels);
        free(f->bounds);
}

void status_metrics_free(struct status_metrics *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->n_fam; i++)
                family_free(&m->fam[i]);
        free(m->fam);
        free(m);
}

static bool name_valid(const char *s, bool colon_ok)
{
        size_t n = strlen(s);
        if (n == 0 || n > MAX_NAME_LEN)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                             (colon_ok && c == ':');
                if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
                        return false;
        }
        return true;
}

/* "class,outcome" → {"class","outcome"}; label names may not start with "__"
 * and "le" is reserved for histogram buckets. */
static int split_labels(const char *labels, char ***out, size_t *n_out)
{
        *out = NULL;
        *n_out = 0;
        if (!labels || !*labels)
                return 0;
        _cleanup_free_ char *copy = strdup(labels);
        char **v = calloc(MAX_LABELS, sizeof(char *));
        if (!copy || !v) {
                free(v);
                return -ENOMEM;
        }
        size_t n = 0;
        char *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (n == MAX_LABELS || !name_valid(tok, false) || strncmp(tok, "__", 2) == 0 ||
                    strcmp(tok, "le") == 0) {
                        strv_free(v, n);
                        return -EINVAL;
                }
                for (size_t i = 0; i < n; i++)
                        if (strcmp(v[i], tok) == 0) {
                                strv_free(v, n);
                                return -EINVAL;
                        }
                v[n] = strdup(tok);
                if (!v[n]) {
                        strv_free(v, n);
                        return -ENOMEM;
                }
                n++;
        }
        *out = v;
        *n_out = n;
        return 0;
}

static int new_series(struct family *f, const char *const *values, struct series **out);

static struct family *find_family(const struct status_metrics *m, const char *name)
{
        for (size_t i = 0; i < m->n_fam; i++)
                if (strcmp(m->fam[i].name, name) == 0)
                        return &m->fam[i];
        return NULL;
}

static int add_family(struct status_metrics *m, const struct family *f)
{
        struct family *nf = realloc(m->fam, (m->n_fam + 1) * sizeof(*nf));
        if (!nf)
                return -ENOMEM;
        m->fam = nf;
        m->fam[m->n_fam++] = *f;
        return 0;
}

static int declare(struct status_metrics *m, const char *name, enum status_metric_type type,
                   const char *help, const char *labels, const double *bounds, size_t n_bounds)
{
        if (!m || !name || !name_valid(name, true) || (unsigned)type > STATUS_METRIC_HISTOGRAM)
                return -EINVAL;
        if (find_family(m, name))
                return -EEXIST;
        struct family f = {.type = type};
        int r = split_labels(labels, &f.labels, &f.n_labels);
        if (r < 0)
                return r;
        f.name = strdup(name);
        f.help = strdup(help ? help : "");
        if (n_bounds) {
                f.bounds = malloc(n_bounds * sizeof(double));
                if (f.bounds)
                        memcpy(f.bounds, bounds, n_bounds * sizeof(double));
                f.n_bounds = n_bounds;
        }
        if (!f.name || !f.help || (n_bounds && !f.bounds)) {
                family_free(&f);
                return -ENOMEM;
        }
        r = add_family(m, &f);
        if (r < 0) {
                family_free(&f);
                return r;
        }
        /* A family without labels has exactly one series: show it from the start, at 0. */
        if (f.n_labels == 0) {
                struct series *s;
                r = new_series(&m->fam[m->n_fam - 1], NULL, &s);
        }
        return r;
}

int status_metric_declare(struct status_metrics *m, const char *name, enum status_metric_type type,
                          const char *help, const char *labels)
{
        if (type == STATUS_METRIC_HISTOGRAM)
                return -EINVAL; /* needs buckets */
        return declare(m, name, type, help, labels, NULL, 0);
}

int status_metric_declare_histogram(struct status_metrics *m, const char *name, const char *help,
                                    const char *labels, const double *buckets, size_t n_buckets)
{
        if (!buckets || n_buckets == 0 || n_buckets > 64)
                return -EINVAL;
        for (size_t i = 0; i < n_buckets; i++)
                if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
                        return -EINVAL;
        return declare(m, name, STATUS_METRIC_HISTOGRAM, help, labels, buckets, n_buckets);
}

static int count_values(const struct family *f, const char *const *values)
{
        size_t n = 0;
        while (values && values[n]) {
                if (strlen(values[n]) > MAX_LABEL_VALUE)
                        return -EINVAL;
                n++;
        }
        return n == f->n_labels ? 0 : -EINVAL;
}

static struct series *find_series(const struct family *f, const char *const *values)
{
        for (size_t i = 0; i < f->n_series; i++) {
                size_t j = 0;
                while (j < f->n_labels && strcmp(f->series[i].values[j], values[j]) == 0)
                        j++;
                if (j == f->n_labels)
                        return &f->series[i];
        }
        return NULL;
}

static int new_series(struct family *f, const char *const *values, struct series **out)
{
        struct series s = {0};
        s.values = calloc(f->n_labels ? f->n_labels : 1, sizeof(char *));
        if (!s.values)
                return -ENOMEM;
        for (size_t i = 0; i < f->n_labels; i++)
                if (!(s.values[i] = strdup(values[i]))) {
                        series_free(&s, f->n_labels);
                        return -ENOMEM;
                }
        if (f->type == STATUS_METRIC_HISTOGRAM &&
            !(s.buckets = calloc(f->n_bounds + 1, sizeof(uint64_t)))) {
                series_free(&s, f->n_labels);
                return -ENOMEM;
        }
        struct series *ns = realloc(f->series, (f->n_series + 1) * sizeof(*ns));
        if (!ns) {
                series_free(&s, f->n_labels);
                return -ENOMEM;
        }
        f->series = ns;
        f->series[f->n_series] = s;
        *out = &f->series[f->n_series++];
        return 0;
}

/* The series of family name with these label values, created if new. */
static int lookup(struct status_metrics *m, const char *name, enum status_metric_type type,
                  const char *const *values, struct family **fam, struct series **out)
{
        if (!m || !name)
                return -EINVAL;
        struct family *f = find_family(m, name);
        if (!f)
                return -ENOENT;
        if (f->type != type || count_values(f, values) < 0)
                return -EINVAL;
        *fam = f;
        *out = find_series(f, values);
        return *out ? 0 : new_series(f, values, out);
}

int status_counter_add(struct status_metrics *m, const char *name, const char *const *label_values,
                       double delta)
{
        if (!(delta >= 0) || isinf(delta))
                return -EINVAL;
        struct family *f;
        struct series *s;
        int r = lookup(m, name, STATUS_METRIC_COUNTER, label_values, &f, &s);
        if (r < 0)
                return r;
        s->value += delta;
        return 0;
}

int status_gauge_set(struct status_metrics *m, const char *name, const char *const *label_values,
                     double value)
{
        struct family *f;
        struct series *s;
        int r = lookup(m, name, STATUS_METRIC_GAUGE, label_values, &f, &s);
        if (r < 0)
                return r;
        s->value = value;
        return 0;
}

int status_histogram_observe(struct status_metrics *m, const char *name,
                             const char *const *label_values, double value)
{
        if (isnan(value))
                return -EINVAL;
        struct family *f;
        struct series *s;
        int r = lookup(m, name, STATUS_METRIC_HISTOGRAM, label_values, &f, &s);
        if (r < 0)
                return r;
        size_t b = 0;
        while (b < f->n_bounds && value > f->bounds[b])
                b++;
        s->buckets[b]++;
        s->sum += value;
        s->count++;
        return 0;
}

int status_metric_clear(struct status_metrics *m, const char *name)
{
        struct family *f = m && name ? find_family(m, name) : NULL;
        if (!f)
                return -ENOENT;
        for (size_t i = 0; i < f->n_series; i++)
                series_free(&f->series[i], f->n_labels);
        free(f->series);
        f->series = NULL;
        f->n_series = 0;
        return 0;
}

int status_metric_value(const struct status_metrics *m, const char *name,
                        const char *const *label_values, double *out)
{
        const struct family *f = m && name ? find_family(m, name) : NULL;
        if (!f)
                return -ENOENT;
        if (f->type == STATUS_METRIC_HISTOGRAM || count_values(f, label_values) < 0)
                return -EINVAL;
        const struct series *s = find_series(f, label_values);
        if (!s)
                return -ENOENT;
        *out = s->value;
        return 0;
}

/* ---- text format ---- */

static void put_number(FILE *f, double v)
{
        if (isnan(v))
                fputs("NaN", f);
        else if (isinf(v))
                fputs(v > 0 ? "+Inf" : "-Inf", f);
        else if (v == floor(v) && fabs(v) < 9007199254740992.0)
                fprintf(f, "%.0f", v);
        else
                fprintf(f, "%.17g", v);
}

/* Escape \ and newline (help) and also " (label values). */
static void put_escaped(FILE *f, const char *s, bool quote)
{
        for (; *s; s++) {
                if (*s == '\\')
                        fputs("\\\\", f);
                else if (*s == '\n')
                        fputs("\\n", f);
                else if (quote && *s == '"')
                        fputs("\\\"", f);
                else
                        fputc(*s, f);
        }
}

/* {a="x",b="y"[,le="…"]} or nothing without labels. */
static void put_labels(FILE *f, const struct family *fam, const struct series *s, const double *le)
{
        if (fam->n_labels == 0 && !le)
                return;
        fputc('{', f);
        for (size_t i = 0; i < fam->n_labels; i++) {
                fprintf(f, "%s%s=\"", i ? "," : "", fam->labels[i]);
                put_escaped(f, s->values[i], true);
                fputc('"', f);
        }
        if (le) {
                fprintf(f, "%sle=\"", fam->n_labels ? "," : "");
                put_number(f, *le);
                fputc('"', f);
        }
        fputc('}', f);
}

static void put_histogram(FILE *f, const struct family *fam, const struct series *s)
{
        uint64_t cumulative = 0;
        for (size_t b = 0; b <= fam->n_bounds; b++) {
                double le = b < fam->n_bounds ? fam->bounds[b] : INFINITY;
                cumulative += s->buckets[b];
                fprintf(f, "%s_bucket", fam->name);
                put_labels(f, fam, s, &le);
                fprintf(f, " %" PRIu64 "\n", cumulative);
        }
        fprintf(f, "%s_sum", fam->name);
        put_labels(f, fam, s, NULL);
        fputc(' ', f);
        put_number(f, s->sum);
        fprintf(f, "\n%s_count", fam->name);
        put_labels(f, fam, s, NULL);
        fprintf(f, " %" PRIu64 "\n", s->count);
}

static void put_family(FILE *f, const struct family *fam)
{
        fprintf(f, "# HELP %s ", fam->name);
        put_escaped(f, fam->help, false);
        fprintf(f, "\n# TYPE %s %s\n", fam->name, type_names[fam->type]);
        for (size_t i = 0; i < fam->n_series; i++) {
                const struct series *s = &fam->series[i];
                if (fam->type == STATUS_METRIC_HISTOGRAM) {
                        put_histogram(f, fam, s);
                        continue;
                }
                fputs(fam->name, f);
                put_labels(f, fam, s, NULL);
                fputc(' ', f);
                put_number(f, s->value);
                fputc('\n', f);
        }
}

int status_metrics_render(const struct status_metrics *m, FILE *f)
{
        if (!m || !f)
                return -EINVAL;
        for (size_t i = 0; i < m->n_fam; i++)
                put_family(f, &m->fam[i]);
        return ferror(f) ? -EIO : 0;
}

/* ---- tarry's standard families ---- */

/* Delivery latency spans seconds (a fast MX) to days (greylisting, backoff). */
static const double latency_buckets[] = {
    1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600,
};

static const struct {
        const char *name;
        enum status_metric_type type;
        const char *labels;
        const char *help;
} tarry_families[] = {
    /* what is in the spool now, so a stuck class or hold pile-up is visible */
    {STATUS_M_QUEUE_MESSAGES, STATUS_METRIC_GAUGE, "state,class",
     "Messages in the queue by state and last deferral class."},
    /* the classifier's verdicts over time */
    {STATUS_M_ATTEMPTS, STATUS_METRIC_COUNTER, "class,outcome",
     "Delivery attempts per recipient by reply class and outcome."},
    /* destinations paused for reputation or rate limits */
    {STATUS_M_DEST_SUSPENDED, STATUS_METRIC_GAUGE, NULL,
     "Destinations currently suspended or throttled."},
    /* deferrals retrying cannot fix (issue 21): one gauge per diagnosis code */
    {STATUS_M_DIAGNOSES, STATUS_METRIC_GAUGE, "code",
     "Destinations with a diagnosis raised, by diagnosis code."},
    /* bounces sent: a spike means mail is being lost to senders' inboxes */
    {STATUS_M_DSN_SENT, STATUS_METRIC_COUNTER, "type", "Delivery status notifications sent."},
    /* disk trouble or corrupt envelopes */
    {STATUS_M_SPOOL_ERRORS, STATUS_METRIC_COUNTER, "kind", "Spool errors by kind."},
    /* what filtered listings (an ordinary user's mailq) cost the daemon's loop */
    {STATUS_M_LISTING_FILTER_READS, STATUS_METRIC_COUNTER, NULL,
     "Envelopes read to decide whether a message passes a GET /queue filter."},
    /* the endpoint's own traffic, kept by status/ */
    {STATUS_M_STATUS_REQUESTS, STATUS_METRIC_COUNTER, "code",
     "Requests answered by the status endpoint by HTTP code."},
};

int status_metrics_declare_tarry(struct status_metrics *m)
{
        for (size_t i = 0; i < ELEMENTSOF(tarry_families); i++) {
                int r = status_metric_declare(m, tarry_families[i].name, tarry_families[i].type,
                                              tarry_families[i].help, tarry_families[i].labels);
                if (r < 0)
                        return r;
        }
        return status_metric_declare_histogram(m, STATUS_M_LATENCY,
                                               "Seconds from arrival to delivery, per recipient.",
                                               NULL, latency_buckets, ELEMENTSOF(latency_buckets));
}
