/* status/status.h — tarryd's HTTP status endpoint: JSON status, queue listing,
 * Prometheus metrics and admin actions, served by libmicrohttpd from the
 * caller's sd-event loop (no threads of its own).
 *
 * Input: HTTP requests on the `status_listen` sockets ("unix:/path" and
 * loopback "host:port"), possibly handed over by systemd socket activation.
 * Output: JSON bodies built by a provider (the daemon) and Prometheus text
 * rendered from a metrics registry the daemon keeps up to date.
 * Trust: every request is parsed by one function with length limits; admin
 * actions (POST/DELETE) are accepted only on a unix socket, from a peer whose
 * SO_PEERCRED uid is 0 or the daemon's uid; anywhere else they answer 403.
 * Changes nothing itself: admin actions are forwarded to the provider.
 *
 * Endpoints:
 *   GET  /status                         provider->get_status
 *   GET  /queue?class=&destination=&state=&offset=&limit=&after=
 *                                        provider->list_open/next/close, streamed as
 *                                        {"total","offset","limit","messages":[…]};
 *                                        after=ID: only IDs above it (a cursor:
 *                                        page on from the last ID of the page
 *                                        before; total counts what is left)
 *   GET  /queue/ID                       provider->get_message (404 if -ENOENT)
 *   GET  /metrics                        provider->refresh_metrics, then the registry
 *   POST /queue/ID/retry | /hold | /release, DELETE /queue/ID,
 *   POST /flush, POST /destinations/NAME/resume
 *                                        provider->action → {"ok":true,"action","target","count"}
 * A "mailq:/path" listener (mode 0666) answers GET /queue only, with the
 * messages whose envelope uid is the peer's SO_PEERCRED uid (ordinary users'
 * mailq); everything else there is 403.
 * /queue and /queue/ID (senders, recipients) are served on unix sockets only:
 * any local user can reach a loopback port; over TCP they answer 403, and
 * /status there is the aggregate view (STATUS_VIEW_AGGREGATE). On TCP a Host
 * header other than the listening address or localhost is refused (421).
 * A request must arrive within request_timeout_ms and carry at most 16 query
 * arguments (414), whatever the listener.
 * Errors are JSON {"error": "why", "status": code}: 400 bad ID or query value,
 * 403 admin refused, 404 unknown path or object, 405 wrong method (with Allow),
 * 409 provider -EBUSY, 413 request body too large, 500 provider failure.
 */
#ifndef TARRY_STATUS_H
#define TARRY_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <jansson.h>
#include <systemd/sd-event.h>

#include "common/reply_class.h"

/* ---- the metrics registry (rendered by GET /metrics) ---- */

enum status_metric_type {
        STATUS_METRIC_COUNTER,   /* only goes up; name should end in _total */
        STATUS_METRIC_GAUGE,     /* set to the current value */
        STATUS_METRIC_HISTOGRAM, /* observations counted into fixed buckets */
};

struct status_metrics;

/* Label values in the order the family declared its label names:
 * STATUS_LABELS("greylist", "deferred"). Pass NULL for a family without labels. */
#define STATUS_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

int status_metrics_new(struct status_metrics **out);
void status_metrics_free(struct status_metrics *m);

/* Declare a family. name must match [a-zA-Z_:][a-zA-Z0-9_:]*, labels is a
 * comma-separated list of label names ("class,outcome") or NULL. A histogram
 * takes its bucket upper bounds, strictly ascending, +Inf implied.
 * Returns 0, -EEXIST if the name is taken, -EINVAL for a bad name or buckets. */
int status_metric_declare(struct status_metrics *m, const char *name, enum status_metric_type type,
                          const char *help, const char *labels);
int status_metric_declare_histogram(struct status_metrics *m, const char *name, const char *help,
                                    const char *labels, const double *buckets, size_t n_buckets);

/* Update one series, created on first use. -ENOENT: undeclared name;
 * -EINVAL: wrong type, wrong number of label values, negative counter step. */
int status_counter_add(struct status_metrics *m, const char *name, const char *const *label_values,
                       double delta);
int status_gauge_set(struct status_metrics *m, const char *name, const char *const *label_values,
                     double value);
int status_histogram_observe(struct status_metrics *m, const char *name,
                             const char *const *label_values, double value);
/* Drop every series of a family (for gauges recomputed from scratch). */
int status_metric_clear(struct status_metrics *m, const char *name);
/* Current value of a counter or gauge series (for tests and summaries). */
int status_metric_value(const struct status_metrics *m, const char *name,
                        const char *const *label_values, double *out);

/* Prometheus text exposition format 0.0.4, families in declaration order. */
int status_metrics_render(const struct status_metrics *m, FILE *f);

/* tarry's standard families (declared by status_metrics_declare_tarry): */
#define STATUS_M_QUEUE_MESSAGES "tarry_queue_messages"           /* gauge {state,class} */
#define STATUS_M_ATTEMPTS       "tarry_delivery_attempts_total"  /* counter {class,outcome} */
#define STATUS_M_LATENCY        "tarry_delivery_latency_seconds" /* histogram, arrival→250 */
#define STATUS_M_DEST_SUSPENDED "tarry_destinations_suspended"   /* gauge */
#define STATUS_M_DIAGNOSES      "tarry_diagnoses"                /* gauge {code} */
#define STATUS_M_DSN_SENT       "tarry_dsn_sent_total"           /* counter {type} delayed|failed */
#define STATUS_M_SPOOL_ERRORS   "tarry_spool_errors_total"       /* counter {kind} */
#define STATUS_M_LISTING_FILTER_READS                                                              \
        "tarry_queue_listing_filter_reads_total" /* counter: envelopes read to decide a            \
                                                  * GET /queue filter */
#define STATUS_M_STATUS_REQUESTS                                                                   \
        "tarry_status_requests_total" /* counter {code}, kept by status/                           \
                                       */
int status_metrics_declare_tarry(struct status_metrics *m);

/* ---- what the daemon provides ---- */

enum status_queue_state {
        STATUS_QSTATE_ANY,
        STATUS_QSTATE_INCOMING, /* committed, not yet picked up */
        STATUS_QSTATE_ACTIVE,   /* being delivered or due now */
        STATUS_QSTATE_DEFERRED, /* waiting for a retry */
        STATUS_QSTATE_HOLD,
        STATUS_QSTATE_CORRUPT,
        STATUS_QSTATE__MAX,
};
const char *status_queue_state_name(enum status_queue_state s); /* "active"…; "any" */

#define STATUS_DEFAULT_LIMIT   100
#define STATUS_MAX_LIMIT       10000
#define STATUS_MAX_DESTINATION 255

#define STATUS_TOTAL_UNKNOWN SIZE_MAX /* list_open: how many match is not known */
#define STATUS_LIST_LATER    2        /* list_next: no message this turn, not done */

/* GET /queue filters, already validated. */
struct status_queue_filter {
        bool has_class;
        enum reply_class class;
        const char *destination; /* recipient domain or next hop; NULL: any */
        enum status_queue_state state;
        size_t offset;
        size_t limit; /* 1..STATUS_MAX_LIMIT, default STATUS_DEFAULT_LIMIT */
        /* Set by the server on a "mailq:" socket, never from the query: only
         * messages submitted by this uid (the peer's SO_PEERCRED uid). */
        bool by_owner;
        uid_t owner;
        char after[17]; /* a queue ID (16 upper-case hex digits), or "": from the first */
};

enum status_action {
        STATUS_ACTION_RETRY,   /* POST /queue/ID/retry: attempt now */
        STATUS_ACTION_FLUSH,   /* POST /flush: every deferred message now */
        STATUS_ACTION_HOLD,    /* POST /queue/ID/hold */
        STATUS_ACTION_RELEASE, /* POST /queue/ID/release */
        STATUS_ACTION_DELETE,  /* DELETE /queue/ID */
        STATUS_ACTION_RESUME,  /* POST /destinations/NAME/resume: lift a suspension */
        STATUS_ACTION_FORCE,   /* POST /queue/ID/force: attempt now, past a suspension */
        STATUS_ACTION__MAX,
};
const char *status_action_name(enum status_action a); /* "retry", "flush", … */

/* What GET /status may show. The unix socket is reachable by root, tarryd's
 * user and status_group only; a loopback port by every local user (and by
 * web pages, through DNS rebinding, were the Host header not checked). */
enum status_view {
        STATUS_VIEW_FULL,      /* destinations by name, with their last replies */
        STATUS_VIEW_AGGREGATE, /* counts only: no address, domain or host name */
};

/* GET /status, typed: the daemon fills one (daemon/control.c), the
 * renderer names its fields once, and tarryq reads them back the same way.
 * docs/status.md describes each field. */
struct status_report_queue {
        uint64_t total; /* incoming + the index (active, deferred, hold) */
        uint64_t incoming, active, deferred, hold, corrupt;
        /* listed at start and not read yet (its envelope or its snapshot
         * record): until 0, the counts and listings leave these out */
        uint64_t unread;
};
struct status_report_attempts {
        uint64_t total, delivered, deferred, failed; /* recipient outcomes since start */
};
struct status_report {
        char version[32];
        int64_t uptime_s;
        struct status_report_queue queue;
        /* deferred messages by the class of their latest deferral; no
         * "permanent" (a permanent failure leaves the queue) */
        uint64_t by_class[CLASS__MAX];
        struct status_report_attempts attempts;
        int64_t oldest_arrival_s; /* seconds since the epoch; -1: the queue is empty (null) */
        /* Lists made by their owners. FULL: arrays "destinations", "sites",
         * "diagnoses"; AGGREGATE: counts without names, "destination_states",
         * "site_totals", "diagnoses". NULL: left out. */
        json_t *destinations, *sites, *diagnoses;
};
/* The JSON object of r as view shows it; r's lists become the object's
 * (NULL in r afterwards, freed on failure). NULL: out of memory. */
json_t *status_report_json(struct status_report *r, enum status_view view);
/* A GET /status object read back into out (what tarryq prints): the typed
 * fields, and the lists as borrowed references into o (either view's
 * name). 0, or -EBADMSG when o is not a status object. */
int status_report_read(const json_t *o, struct status_report *out);

/* Callbacks run on the loop, one at a time. Each returns 0 (or a positive count
 * for actions: messages affected) or a negative errno: -ENOENT → 404,
 * -EINVAL → 400, -EBUSY → 409, anything else → 500. Objects handed out in *out
 * become the server's (one reference). */
struct status_provider {
        void *userdata;
        /* GET /status: the whole status object, as much as view allows. */
        int (*get_status)(void *userdata, enum status_view view, json_t **out);
        /* GET /status?fleet=1: the same, and "fleet" set to this object (the
         * nodes of a fleet, docs/fleet.md; JSON null without one). May be NULL. */
        int (*get_fleet)(void *userdata, json_t **out);
        /* GET /queue, streamed: the page [offset, offset+limit) of matching
         * messages (`tarryq -j` objects); list_open chooses the page (no envelope read) and says
         * how many match in all; list_next hands out the page's messages one at a time (1 and *out,
         * 0: the page is done), called as the client reads, a few per turn
         * of the loop, so other requests are answered while a big page goes
         * out; list_close is called once whatever happened (the client may
         * have gone). Messages that leave meanwhile are left out. The body is
         * {"total","unread","offset","limit","messages":[…]} with each message on a
         * line of its own (UTF-8, compact), so a client can print it as it
         * comes.
         * *out_total may be STATUS_TOTAL_UNKNOWN ("total": null): a filtered
         * listing from a cursor is not counted. list_next may also return
         * STATUS_LIST_LATER: nothing this time (its walk to the next match
         * spent its budget), call again on a later turn of the loop. */
        int (*list_open)(void *userdata, const struct status_queue_filter *filter, void **out_page,
                         size_t *out_total);
        int (*list_next)(void *userdata, void *page, json_t **out);
        void (*list_close)(void *userdata, void *page);
        /* GET /queue's "unread": messages listed at start that no listing
         * shows yet (they are still being read). May be NULL: 0. */
        size_t (*queue_unread)(void *userdata);
        /* GET /queue/ID: one message object, with "transcript" of its last attempt. */
        int (*get_message)(void *userdata, const char *id, json_t **out);
        /* GET /metrics: bring gauges up to date just before rendering (may be NULL). */
        int (*refresh_metrics)(void *userdata, struct status_metrics *m);
        /* Admin action; target is the queue ID, the destination name, or NULL (flush). */
        int (*action)(void *userdata, enum status_action action, const char *target);
};

/* ---- the server ---- */

struct status_options {
        const char *const
            *listen; /* NULL-terminated "unix:/path", "ip:port", "[v6]:port", "localhost:port" */
        bool allow_remote; /* permit non-loopback TCP addresses */
        const char *group; /* group owning created unix sockets, or NULL */
        uid_t admin_uid;   /* besides root, the uid allowed to run admin actions */
        /* Sockets from systemd (sd_listen_fds): each listen entry whose address
         * matches one of these uses it (dup'ed) instead of creating its own. */
        const int *activated_fds;
        size_t n_activated_fds;
        unsigned max_connections;      /* per listener; 0: 64. When full, the oldest
                                          request still arriving is dropped (408) */
        unsigned per_ip_connections;   /* per TCP client address; 0: 16 */
        unsigned connection_timeout_s; /* idle connections closed after; 0: 10 */
        unsigned request_timeout_ms;   /* a request must arrive whole (line, headers,
                                          body) within this, else 408; 0: 5000 */
        size_t max_body;               /* request body bytes, else 413; 0: 4096 */
        /* Diagnostics from libmicrohttpd (may be NULL: dropped). */
        void (*log)(void *userdata, const char *msg);
        void *log_userdata;
};

struct status_server;

/* Bind every listener and attach to the loop. On error returns a negative
 * errno (-EPERM for a non-loopback address without allow_remote, -EINVAL for
 * an unparsable entry, -EADDRINUSE, …) and writes a one-line reason naming
 * the entry into err. metrics may be NULL (GET /metrics then 404s); it must
 * outlive the server. */
int status_start(sd_event *event, const struct status_options *opt,
                 const struct status_provider *provider, struct status_metrics *metrics,
                 struct status_server **out, char *err, size_t errlen);
/* Close every listener and connection; unlinks the unix sockets it created. */
void status_stop(struct status_server *s);
/* The bound port of the first TCP listener (useful with "127.0.0.1:0"), or -ENOENT. */
int status_tcp_port(const struct status_server *s);

/* ---- parsing (exposed for tests and fuzzing) ---- */

/* One `status_listen` entry. */
struct status_listen_addr {
        bool is_unix;
        bool owner_view; /* "mailq:/path": a unix socket anyone may connect to, serving
                          * only GET /queue filtered to the caller's own messages */
        char path[108];  /* unix */
        char host[64];   /* TCP: numeric address as written, without brackets */
        uint16_t port;   /* TCP */
};
int status_parse_listen(const char *s, struct status_listen_addr *out, const char **why);
/* True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
bool status_addr_is_loopback(const char *numeric_host);

/* Queue IDs: exactly 16 upper-case hex digits. */
bool status_id_valid(const char *id);

#endif
