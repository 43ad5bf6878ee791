/* status/report.c — GET /status as a typed struct and back; see status.h.
 *
 * The field names are written here once, for the daemon's rendering and for
 * tarryq's reading: docs/status.md, "GET /status", describes each, and
 * tests/status/test_report.c checks that it does.
 */
#include "status/status.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/reply_class.h"

static json_t *count(uint64_t n)
{
        return json_integer(n > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)n);
}

static const char *list_name(const char *full, const char *aggregate, enum status_view view)
{
        return view == STATUS_VIEW_FULL ? full : aggregate;
}

json_t *status_report_json(struct status_report *r, enum status_view view)
{
        json_t *o = json_object(), *q = json_object(), *a = json_object(),
               *by_class = json_object();
        bool ok = o && q && a && by_class;
        ok = ok && json_object_set_new(o, "version", json_string(r->version)) == 0;
        ok = ok && json_object_set_new(o, "uptime_s", json_integer(r->uptime_s)) == 0;
        ok = ok && json_object_set_new(q, "total", count(r->queue.total)) == 0 &&
             json_object_set_new(q, "incoming", count(r->queue.incoming)) == 0 &&
             json_object_set_new(q, "active", count(r->queue.active)) == 0 &&
             json_object_set_new(q, "deferred", count(r->queue.deferred)) == 0 &&
             json_object_set_new(q, "hold", count(r->queue.hold)) == 0 &&
             json_object_set_new(q, "corrupt", count(r->queue.corrupt)) == 0 &&
             json_object_set_new(q, "unread", count(r->queue.unread)) == 0;
        for (int i = 0; ok && i < CLASS__MAX; i++)
                if (i != CLASS_PERMANENT)
                        ok = json_object_set_new(by_class, reply_class_name(i),
                                                 count(r->by_class[i])) == 0;
        ok = ok && json_object_set_new(a, "total", count(r->attempts.total)) == 0 &&
             json_object_set_new(a, "delivered", count(r->attempts.delivered)) == 0 &&
             json_object_set_new(a, "deferred", count(r->attempts.deferred)) == 0 &&
             json_object_set_new(a, "failed", count(r->attempts.failed)) == 0;
        ok = ok && json_object_set(o, "queue", q) == 0 &&
             json_object_set(o, "by_class", by_class) == 0 &&
             json_object_set(o, "attempts", a) == 0;
        ok = ok && json_object_set_new(o, "oldest_arrival",
                                       r->oldest_arrival_s >= 0 ? json_integer(r->oldest_arrival_s)
                                                                : json_null()) == 0;
        struct {
                json_t **v;
                const char *name;
        } lists[] = {
            {&r->destinations, list_name("destinations", "destination_states", view)},
            {&r->sites, list_name("sites", "site_totals", view)},
            {&r->diagnoses, "diagnoses"},
        };
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
                if (ok && *lists[i].v)
                        ok = json_object_set(o, lists[i].name, *lists[i].v) == 0;
                json_decref(*lists[i].v);
                *lists[i].v = NULL;
        }
        json_decref(q);
        json_decref(a);
        json_decref(by_class);
        if (!ok) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static uint64_t count_of(const json_t *o, const char *key)
{
        json_int_t n = json_integer_value(json_object_get(o, key));
        return n > 0 ? (uint64_t)n : 0;
}

static json_t *either(const json_t *o, const char *full, const char *aggregate)
{
        json_t *v = json_object_get(o, full);
        return v ? v : json_object_get(o, aggregate);
}

int status_report_read(const json_t *o, struct status_report *out)
{
        memset(out, 0, sizeof(*out));
        const char *version = json_string_value(json_object_get(o, "version"));
        const json_t *q = json_object_get(o, "queue"), *a = json_object_get(o, "attempts"),
                     *by_class = json_object_get(o, "by_class");
        if (!json_is_object(o) || !version || !json_is_object(q) || !json_is_object(a))
                return -EBADMSG;
        snprintf(out->version, sizeof(out->version), "%s", version);
        out->uptime_s = json_integer_value(json_object_get(o, "uptime_s"));
        out->queue = (struct status_report_queue){
            .total = count_of(q, "total"),
            .incoming = count_of(q, "incoming"),
            .active = count_of(q, "active"),
            .deferred = count_of(q, "deferred"),
            .hold = count_of(q, "hold"),
            .corrupt = count_of(q, "corrupt"),
            .unread = count_of(q, "unread"),
        };
        for (int i = 0; i < CLASS__MAX; i++)
                if (i != CLASS_PERMANENT)
                        out->by_class[i] = count_of(by_class, reply_class_name(i));
        out->attempts = (struct status_report_attempts){
            .total = count_of(a, "total"),
            .delivered = count_of(a, "delivered"),
            .deferred = count_of(a, "deferred"),
            .failed = count_of(a, "failed"),
        };
        json_t *oldest = json_object_get(o, "oldest_arrival");
        out->oldest_arrival_s = json_is_integer(oldest) ? json_integer_value(oldest) : -1;
        out->destinations = either(o, "destinations", "destination_states");
        out->sites = either(o, "sites", "site_totals");
        out->diagnoses = json_object_get(o, "diagnoses");
        return 0;
}
