/* tests/bounce/parse.h — a generated DSN read back by parse_dsn.py (Python's
 * email parser, policy=default), asserting what must hold for any report: no
 * parser defects, CRLF only, no line over 998 bytes, multipart/report with
 * report-type=delivery-status. */
#ifndef TARRY_TESTS_BOUNCE_PARSE_H
#define TARRY_TESTS_BOUNCE_PARSE_H

#include <jansson.h>

#include "bounce/bounce.h"

json_t *dsn_parse_report(const struct dsn_report *rep);

#endif
