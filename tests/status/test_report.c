/* tests/status/test_report.c — GET /status as a typed report (status.h):
 * what the daemon renders is what tarryq reads back, field by field, in
 * both views, and docs/status.md names every field the report has. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "doc_fields.h"
#include "status/status.h"

/* Every field set, each to a value of its own. */
static void fill(struct status_report *r)
{
        *r = (struct status_report){
            .uptime_s = 86461,
            .queue =
                {.total = 21, .incoming = 2, .active = 3, .deferred = 11, .hold = 5, .corrupt = 7},
            .attempts = {.total = 101, .delivered = 61, .deferred = 31, .failed = 9},
            .oldest_arrival_s = 1796643662,
        };
        snprintf(r->version, sizeof(r->version), "9.8.7");
        for (int c = 0; c < CLASS__MAX; c++)
                r->by_class[c] = c == CLASS_PERMANENT ? 0 : 1000u + (unsigned)c;
}

static void lists(struct status_report *r, enum status_view view)
{
        if (view == STATUS_VIEW_FULL) {
                r->destinations = json_pack("[{s:s}]", "destination", "site:example");
                r->sites = json_pack("[{s:s}]", "site", "site:example");
                r->diagnoses = json_array();
        } else {
                r->destinations = json_pack("{s:i}", "ok", 1);
                r->sites = json_pack("{s:i, s:i, s:i}", "sites", 1, "domains", 2, "messages", 3);
                r->diagnoses = json_object();
        }
}

Test(status_report, what_is_rendered_reads_back_the_same_in_both_views)
{
        for (int view = STATUS_VIEW_FULL; view <= STATUS_VIEW_AGGREGATE; view++) {
                struct status_report in, out;
                fill(&in);
                lists(&in, view);
                json_t *o = status_report_json(&in, view);
                cr_assert_not_null(o);
                cr_assert_null(in.destinations, "the lists are the object's now");
                cr_assert_eq(status_report_read(o, &out), 0);
                cr_assert_str_eq(out.version, "9.8.7");
                cr_assert_eq(out.uptime_s, 86461);
                cr_assert_eq(memcmp(&out.queue, &in.queue, sizeof(in.queue)), 0);
                cr_assert_eq(memcmp(&out.attempts, &in.attempts, sizeof(in.attempts)), 0);
                cr_assert_eq(memcmp(out.by_class, in.by_class, sizeof(in.by_class)), 0);
                cr_assert_eq(out.oldest_arrival_s, 1796643662);
                cr_assert(view == STATUS_VIEW_FULL ? json_is_array(out.destinations)
                                                   : json_is_object(out.destinations));
                cr_assert_not_null(out.sites);
                cr_assert_not_null(out.diagnoses);
                cr_assert_null(json_object_get(json_object_get(o, "by_class"), "permanent"));
                json_decref(o);
        }
}

Test(status_report, an_empty_queue_has_no_oldest_arrival)
{
        struct status_report in = {.oldest_arrival_s = -1}, out;
        json_t *o = status_report_json(&in, STATUS_VIEW_AGGREGATE);
        cr_assert(json_is_null(json_object_get(o, "oldest_arrival")));
        cr_assert_null(json_object_get(o, "destination_states"), "no list, no field");
        cr_assert_eq(status_report_read(o, &out), 0);
        cr_assert_eq(out.oldest_arrival_s, -1);
        json_decref(o);
}

Test(status_report, what_is_not_a_status_is_refused)
{
        struct status_report out;
        json_t *o = json_pack("{s:s, s:i}", "error", "Not Found", "status", 404);
        cr_assert_eq(status_report_read(o, &out), -EBADMSG);
        json_decref(o);
}

Test(status_report, docs_status_md_names_every_field_of_the_report)
{
        for (int view = STATUS_VIEW_FULL; view <= STATUS_VIEW_AGGREGATE; view++) {
                struct status_report r;
                fill(&r);
                lists(&r, view);
                json_t *o = status_report_json(&r, view);
                char missing[2048] = "";
                cr_assert_eq(doc_fields_missing(o, missing, sizeof(missing)), 0,
                             "docs/status.md does not name: %s", missing);
                json_decref(o);
        }
        cr_assert_not(doc_names("no_such_field_anywhere"), "the check checks nothing");
}
