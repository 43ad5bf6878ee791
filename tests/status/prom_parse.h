/* tests/status/prom_parse.h — a strict parser of the Prometheus text
 * exposition format 0.0.4, to check what GET /metrics serves.
 *
 * Checks: line syntax (names, label escapes, float values), HELP/TYPE at most
 * once per family and before its samples, families not interleaved, no
 * duplicate series, counters non-negative, histogram buckets with "le",
 * cumulative and ending in +Inf equal to _count, and a final newline.
 */
#ifndef TARRY_TESTS_PROM_PARSE_H
#define TARRY_TESTS_PROM_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* 0 when text is valid; else -1 with "line N: why" in err. */
int prom_parse(const char *text, char *err, size_t errlen);

/* The value of the sample written exactly as series ("name{a=\"b\"}"), as
 * found in text by a plain line match; false if absent. */
bool prom_value(const char *text, const char *series, double *out);

#endif
