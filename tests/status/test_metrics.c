/* tests/status/test_metrics.c — the metrics registry and its text format. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prom_parse.h"
#include "status/status.h"

static char *render(const struct status_metrics *m)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        cr_assert_eq(status_metrics_render(m, f), 0);
        fclose(f);
        return buf;
}

static void assert_valid(const char *text)
{
        char err[256] = "";
        cr_assert_eq(prom_parse(text, err, sizeof(err)), 0, "%s\n%s", err, text);
}

Test(metrics, tarry_families_render_as_valid_prometheus_text_before_any_update)
{
        struct status_metrics *m;
        cr_assert_eq(status_metrics_new(&m), 0);
        cr_assert_eq(status_metrics_declare_tarry(m), 0);
        char *text = render(m);
        assert_valid(text);
        cr_assert(strstr(text, "# TYPE tarry_delivery_latency_seconds histogram\n"));
        cr_assert(strstr(text, "tarry_destinations_suspended 0\n"));
        free(text);
        status_metrics_free(m);
}

Test(metrics, counters_accumulate_per_label_set)
{
        struct status_metrics *m;
        double v;
        status_metrics_new(&m);
        status_metrics_declare_tarry(m);
        status_counter_add(m, STATUS_M_ATTEMPTS, STATUS_LABELS("greylist", "deferred"), 1);
        status_counter_add(m, STATUS_M_ATTEMPTS, STATUS_LABELS("greylist", "deferred"), 2);
        status_counter_add(m, STATUS_M_ATTEMPTS, STATUS_LABELS("greylist", "delivered"), 1);
        cr_assert_eq(
            status_metric_value(m, STATUS_M_ATTEMPTS, STATUS_LABELS("greylist", "deferred"), &v),
            0);
        cr_assert_eq(v, 3);
        char *text = render(m);
        assert_valid(text);
        cr_assert(prom_value(
            text, "tarry_delivery_attempts_total{class=\"greylist\",outcome=\"deferred\"}", &v));
        cr_assert_eq(v, 3);
        free(text);
        status_metrics_free(m);
}

Test(metrics, histogram_buckets_are_cumulative_and_end_in_inf)
{
        struct status_metrics *m;
        double v;
        status_metrics_new(&m);
        status_metrics_declare_tarry(m);
        status_histogram_observe(m, STATUS_M_LATENCY, NULL, 0.5);
        status_histogram_observe(m, STATUS_M_LATENCY, NULL, 320);
        status_histogram_observe(m, STATUS_M_LATENCY, NULL, 10 * 86400);
        char *text = render(m);
        assert_valid(text);
        cr_assert(prom_value(text, "tarry_delivery_latency_seconds_bucket{le=\"1\"}", &v));
        cr_assert_eq(v, 1);
        cr_assert(prom_value(text, "tarry_delivery_latency_seconds_bucket{le=\"900\"}", &v));
        cr_assert_eq(v, 2);
        cr_assert(prom_value(text, "tarry_delivery_latency_seconds_bucket{le=\"+Inf\"}", &v));
        cr_assert_eq(v, 3);
        cr_assert(prom_value(text, "tarry_delivery_latency_seconds_count", &v));
        cr_assert_eq(v, 3);
        cr_assert(prom_value(text, "tarry_delivery_latency_seconds_sum", &v));
        cr_assert_float_eq(v, 320.5 + 864000, 1e-9);
        free(text);
        status_metrics_free(m);
}

Test(metrics, label_values_are_escaped)
{
        struct status_metrics *m;
        status_metrics_new(&m);
        cr_assert_eq(
            status_metric_declare(m, "x_total", STATUS_METRIC_COUNTER, "a \\ help\nline", "kind"),
            0);
        status_counter_add(m, "x_total", STATUS_LABELS("quote\" back\\ nl\n"), 1);
        char *text = render(m);
        assert_valid(text);
        cr_assert(strstr(text, "x_total{kind=\"quote\\\" back\\\\ nl\\n\"} 1\n"), "%s", text);
        cr_assert(strstr(text, "# HELP x_total a \\\\ help\\nline\n"), "%s", text);
        free(text);
        status_metrics_free(m);
}

Test(metrics, misuse_is_refused)
{
        struct status_metrics *m;
        status_metrics_new(&m);
        status_metrics_declare_tarry(m);
        cr_assert_eq(status_metric_declare(m, "9bad", STATUS_METRIC_GAUGE, "", NULL), -EINVAL);
        cr_assert_eq(status_metric_declare(m, "ok", STATUS_METRIC_GAUGE, "", "a,a"), -EINVAL);
        cr_assert_eq(status_metric_declare(m, "ok2", STATUS_METRIC_GAUGE, "", "le"), -EINVAL);
        cr_assert_eq(status_metric_declare(m, STATUS_M_ATTEMPTS, STATUS_METRIC_GAUGE, "", NULL),
                     -EEXIST);
        double down[] = {5, 1};
        cr_assert_eq(status_metric_declare_histogram(m, "h", "", NULL, down, 2), -EINVAL);
        cr_assert_eq(status_counter_add(m, STATUS_M_ATTEMPTS, STATUS_LABELS("greylist"), 1),
                     -EINVAL, "wrong number of labels");
        cr_assert_eq(status_counter_add(m, STATUS_M_SPOOL_ERRORS, STATUS_LABELS("io"), -1), -EINVAL,
                     "counters only go up");
        cr_assert_eq(status_gauge_set(m, STATUS_M_ATTEMPTS, STATUS_LABELS("a", "b"), 1), -EINVAL,
                     "wrong type");
        cr_assert_eq(status_gauge_set(m, "nope", NULL, 1), -ENOENT);
        status_metrics_free(m);
}

Test(metrics, cleared_gauges_disappear_until_set_again)
{
        struct status_metrics *m;
        double v;
        status_metrics_new(&m);
        status_metrics_declare_tarry(m);
        status_gauge_set(m, STATUS_M_QUEUE_MESSAGES, STATUS_LABELS("deferred", "greylist"), 4);
        cr_assert_eq(status_metric_clear(m, STATUS_M_QUEUE_MESSAGES), 0);
        cr_assert_eq(status_metric_value(m, STATUS_M_QUEUE_MESSAGES,
                                         STATUS_LABELS("deferred", "greylist"), &v),
                     -ENOENT);
        status_gauge_set(m, STATUS_M_QUEUE_MESSAGES, STATUS_LABELS("hold", "none"), 2);
        char *text = render(m);
        assert_valid(text);
        cr_assert_null(strstr(text, "greylist"));
        free(text);
        status_metrics_free(m);
}

/* The checker itself must catch what a scraper would reject. */
Test(metrics, strict_parser_rejects_malformed_exposition)
{
        char err[256];
        cr_assert_eq(prom_parse("a 1", err, sizeof(err)), -1, "no final newline");
        cr_assert_eq(prom_parse("a{b=\"c} 1\n", err, sizeof(err)), -1);
        cr_assert_eq(prom_parse("a 1\nb 1\na 2\n", err, sizeof(err)), -1, "interleaved");
        cr_assert_eq(prom_parse("a 1\na 1\n", err, sizeof(err)), -1, "duplicate");
        cr_assert_eq(prom_parse("# TYPE a counter\na -1\n", err, sizeof(err)), -1);
        cr_assert_eq(prom_parse("a one\n", err, sizeof(err)), -1);
        cr_assert_eq(
            prom_parse("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                       "h_count 1\n",
                       err, sizeof(err)),
            -1, "not cumulative");
        cr_assert_eq(
            prom_parse("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n", err, sizeof(err)),
            -1, "no +Inf");
        cr_assert_eq(prom_parse("# TYPE a counter\n# TYPE a gauge\n", err, sizeof(err)), -1);
        cr_assert_eq(
            prom_parse("# TYPE a counter\na{x=\"1\"} 1\na{x=\"2\"} 2.5e3\n", err, sizeof(err)), 0,
            "%s", err);
}
