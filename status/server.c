/* status/server.c — libmicrohttpd daemons (one per listener) driven from the
 * caller's sd-event loop: MHD's epoll fd is one io source, and a one-shot
 * timer is re-armed from MHD_get_timeout() after every MHD_run().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/cleanup.h"
#include "common/fileio.h"
#include "status/guard.h"
#include "status/listen.h"
#include "status/request.h"
#include "status/status.h"

#define DEFAULT_MAX_CONNECTIONS 64
#define DEFAULT_PER_IP          16
#define DEFAULT_TIMEOUT_S       10
#define DEFAULT_REQUEST_MS      5000 /* a request line, headers and body arrive in this */
#define DEFAULT_MAX_BODY        4096
#define HEADER_MEMORY_LIMIT     (32 * 1024) /* request line + headers; beyond: 414/431 */
#define DISCARD_FACTOR          16          /* a body this many times over the limit: hang up */

struct listener {
        struct status_server *server;
        char *entry; /* as configured, for messages */
        struct status_listen_addr addr;
        bool created_path; /* unlink the unix socket on stop, if still this file: */
        dev_t path_dev;
        ino_t path_ino;
        int port; /* TCP: bound port */
        struct MHD_Daemon *mhd;
        struct guard *guard;
        sd_event_source *io;
        sd_event_source *timer;
};

struct status_server {
        sd_event *event;
        struct status_provider provider;
        struct status_metrics *metrics;
        uid_t admin_uid;
        size_t max_body;
        void (*log)(void *userdata, const char *msg);
        void *log_userdata;
        struct listener *l;
        size_t n;
};

/* Per request, from the first call of the access handler to completion. */
struct request_ctx {
        uint64_t body_bytes;
};

/* Provider result → HTTP code; anything not listed is a server error. */
static const struct {
        int error;
        unsigned code;
} errno_codes[] = {
    {-ENOENT, MHD_HTTP_NOT_FOUND},           /* no such message or destination */
    {-EINVAL, MHD_HTTP_BAD_REQUEST},         /* the action makes no sense for it */
    {-EBUSY, MHD_HTTP_CONFLICT},             /* being delivered right now */
    {-EPERM, MHD_HTTP_FORBIDDEN},            /* the provider refused */
    {-EAGAIN, MHD_HTTP_SERVICE_UNAVAILABLE}, /* shutting down or reloading */
    {-EHOSTDOWN, MHD_HTTP_CONFLICT},         /* its destination is suspended */
};

static unsigned errno_to_code(int r)
{
        for (size_t i = 0; i < ELEMENTSOF(errno_codes); i++)
                if (errno_codes[i].error == r)
                        return errno_codes[i].code;
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
}

/* ---- responses ---- */

static void count_request(struct status_server *s, unsigned code)
{
        char buf[8];
        if (!s->metrics)
                return;
        snprintf(buf, sizeof(buf), "%u", code);
        (void)status_counter_add(s->metrics, STATUS_M_STATUS_REQUESTS, STATUS_LABELS(buf), 1);
}

static enum MHD_Result queue_buffer(struct status_server *s, struct MHD_Connection *c,
                                    unsigned code, char *buf, size_t len, const char *type,
                                    const char *allow)
{
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(buf);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        if (allow)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        guard_answered(c);
        enum MHD_Result ret = MHD_queue_response(c, code, resp);
        MHD_destroy_response(resp);
        count_request(s, code);
        return ret;
}

/* Takes the reference to body. */
static enum MHD_Result reply_json(struct status_server *s, struct MHD_Connection *c, unsigned code,
                                  json_t *body, const char *allow)
{
        _cleanup_(json_decrefp) json_t *j = body;
        char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        if (!text)
                return MHD_NO;
        size_t len = strlen(text);
        char *buf = realloc(text, len + 2);
        if (!buf) {
                free(text);
                return MHD_NO;
        }
        buf[len] = '\n';
        buf[len + 1] = '\0';
        return queue_buffer(s, c, code, buf, len + 1, "application/json", allow);
}

static enum MHD_Result reply_error(struct status_server *s, struct MHD_Connection *c, unsigned code,
                                   const char *why, const char *allow)
{
        return reply_json(s, c, code, json_pack("{s:s, s:i}", "error", why, "status", code), allow);
}

static enum MHD_Result reply_errno(struct status_server *s, struct MHD_Connection *c, int r)
{
        const char *why = r == -EHOSTDOWN ? "its destination is suspended or backing off; "
                                            "POST /queue/ID/force tries anyway"
                                          : strerror(-r);
        return reply_error(s, c, errno_to_code(r), why, NULL);
}

/* ---- admin checks ---- */

static int peer_uid(struct MHD_Connection *c, uid_t *out)
{
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (!ci)
                return -EBADF;
        if (getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        *out = cred.uid;
        return 0;
}

/* NULL when the peer may run admin actions, else why not. */
static const char *admin_refusal(struct listener *l, struct MHD_Connection *c)
{
        uid_t uid = (uid_t)-1;
        if (!l->addr.is_unix)
                return "admin actions are only accepted on the unix socket";
        if (peer_uid(c, &uid) < 0)
                return "cannot tell who is asking (SO_PEERCRED failed)";
        if (uid != 0 && uid != l->server->admin_uid)
                return "admin actions need root or tarryd's user";
        return NULL;
}

/* ---- endpoints ---- */

static enum MHD_Result handle_status(struct status_server *s, struct MHD_Connection *c,
                                     enum status_view view, bool fleet)
{
        json_t *out = NULL, *nodes = NULL;
        if (!s->provider.get_status)
                return reply_error(s, c, MHD_HTTP_NOT_IMPLEMENTED, "no status provider", NULL);
        int r = s->provider.get_status(s->provider.userdata, view, &out);
        if (r < 0)
                return reply_errno(s, c, r);
        if (fleet) {
                r = s->provider.get_fleet ? s->provider.get_fleet(s->provider.userdata, &nodes) : 0;
                if (r < 0) {
                        json_decref(out);
                        return reply_errno(s, c, r);
                }
                json_object_set_new(out, "fleet", nodes ? nodes : json_null());
        }
        return reply_json(s, c, MHD_HTTP_OK, out, NULL);
}

/* /status takes one query parameter, fleet=1. */
static enum MHD_Result status_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
        int *fleet = cls;
        (void)kind;
        if (strcmp(key, "fleet") != 0 || !value || strcmp(value, "1") != 0 || *fleet) {
                *fleet = -1;
                return MHD_NO;
        }
        *fleet = 1;
        return MHD_YES;
}

struct qargs {
        struct status_queue_filter filter;
        unsigned seen;
        const char *why;
        int r;
};

static enum MHD_Result collect_qarg(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
        struct qargs *q = cls;
        (void)kind;
        q->r = status_parse_queue_arg(&q->filter, &q->seen, key, value, &q->why);
        return q->r < 0 ? MHD_NO : MHD_YES;
}

/* ---- GET /queue, streamed ---- */

/* A slice of the listing per call of the reader, which libmicrohttpd makes
 * once per turn of the loop (measured: one call per MHD_run): up to 16
 * messages, fewer once 2 ms have gone by (the provider reads an envelope
 * for each; from disk, 16 can hold the loop for tens of milliseconds). At
 * least one message is rendered per call, so the listing always advances. */
#define STREAM_BATCH    16          /* messages rendered per call of the reader, at most */
#define STREAM_SLICE_US 2000        /* ... and no more once this much time went into them */
#define STREAM_BLOCK    (32 * 1024) /* what libmicrohttpd may ask for at once */

struct qstream {
        struct status_server *s;
        void *page;
        char *buf; /* rendered, not sent yet: buf[pos, len) */
        size_t len, pos, cap;
        size_t n;  /* messages rendered so far */
        bool done; /* the closing "]}" is in buf */
};

/* Room in buf for want bytes in all. */
static int grow(struct qstream *q, size_t want)
{
        if (want <= q->cap)
                return 0;
        size_t cap = q->cap ? q->cap : 4096;
        while (cap < want)
                cap *= 2;
        char *b = realloc(q->buf, cap);
        if (!b)
                return -ENOMEM;
        q->buf = b;
        q->cap = cap;
        return 0;
}

static int stream_put(struct qstream *q, const char *text, size_t n)
{
        if (grow(q, q->len + n) < 0)
                return -ENOMEM;
        memcpy(q->buf + q->len, text, n);
        q->len += n;
        return 0;
}

/* o, compact, rendered straight into buf (no string of its own). */
static int dump_into(struct qstream *q, const json_t *o)
{
        for (;;) {
                size_t room = q->cap - q->len;
                size_t n = json_dumpb(o, q->buf + q->len, room, JSON_COMPACT);
                if (n == 0)
                        return -ENOMEM;
                if (n <= room) {
                        q->len += n;
                        return 0;
                }
                if (grow(q, q->len + n) < 0)
                        return -ENOMEM;
        }
}

/* The next slice of the page into buf (emptied first). */
static int stream_fill(struct qstream *q)
{
        q->len = q->pos = 0;
        int64_t start = now_monotonic_us();
        for (int i = 0;
             i < STREAM_BATCH && (i == 0 || now_monotonic_us() - start < STREAM_SLICE_US); i++) {
                json_t *o = NULL;
                int r = q->s->provider.list_next(q->s->provider.userdata, q->page, &o);
                if (r == STATUS_LIST_LATER)
                        return 0; /* maybe nothing: libmicrohttpd calls again next turn */
                if (r <= 0) {
                        json_decref(o);
                        if (r < 0)
                                return r;
                        q->done = true;
                        return stream_put(q, "\n]}\n", 4);
                }
                if ((q->n++ > 0 && stream_put(q, ",", 1) < 0) || stream_put(q, "\n", 1) < 0 ||
                    dump_into(q, o) < 0) {
                        json_decref(o);
                        return -ENOMEM;
                }
                json_decref(o);
        }
        return 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
        struct qstream *q = cls;
        (void)pos;
        if (q->pos == q->len) {
                if (q->done)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                if (stream_fill(q) < 0)
                        return MHD_CONTENT_READER_END_WITH_ERROR; /* the client sees it cut short */
        }
        size_t n = q->len - q->pos < max ? q->len - q->pos : max;
        memcpy(out, q->buf + q->pos, n);
        q->pos += n;
        return (ssize_t)n;
}

static void stream_free(void *cls)
{
        struct qstream *q = cls;
        q->s->provider.list_close(q->s->provider.userdata, q->page);
        free(q->buf);
        free(q);
}

static enum MHD_Result stream_queue(struct status_server *s, struct MHD_Connection *c,
                                    const struct status_queue_filter *f)
{
        void *page = NULL;
        size_t total = 0;
        int r = s->provider.list_open(s->provider.userdata, f, &page, &total);
        if (r < 0)
                return reply_errno(s, c, r);
        struct qstream *q = calloc(1, sizeof(*q));
        char head[192], count[24] = "null"; /* a filtered page from a cursor is not counted */
        if (total != STATUS_TOTAL_UNKNOWN)
                snprintf(count, sizeof(count), "%zu", total);
        size_t unread =
            s->provider.queue_unread ? s->provider.queue_unread(s->provider.userdata) : 0;
        int n = snprintf(head, sizeof(head),
                         "{\"total\":%s,\"unread\":%zu,\"offset\":%zu,\"limit\":%zu,\"messages\":[",
                         count, unread, f->offset, f->limit);
        if (!q || stream_put(q, head, (size_t)n) < 0) {
                if (q)
                        free(q->buf);
                free(q);
                s->provider.list_close(s->provider.userdata, page);
                return MHD_NO;
        }
        q->s = s;
        q->page = page;
        struct MHD_Response *resp = MHD_create_response_from_callback(
            MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, q, stream_free);
        if (!resp) {
                stream_free(q);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        guard_answered(c);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        count_request(s, MHD_HTTP_OK);
        return ret;
}

static enum MHD_Result handle_queue(struct listener *l, struct MHD_Connection *c)
{
        struct status_server *s = l->server;
        struct qargs q = {.r = 0};

        status_queue_filter_init(&q.filter);
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_qarg, &q);
        if (q.r < 0)
                return reply_error(s, c, MHD_HTTP_BAD_REQUEST, q.why, NULL);
        if (l->addr.owner_view) {
                /* whoever connected sees what they submitted, nothing else */
                if (peer_uid(c, &q.filter.owner) < 0)
                        return reply_error(s, c, MHD_HTTP_FORBIDDEN,
                                           "cannot tell who is asking (SO_PEERCRED failed)", NULL);
                q.filter.by_owner = true;
        }
        if (!s->provider.list_open || !s->provider.list_next || !s->provider.list_close)
                return reply_error(s, c, MHD_HTTP_NOT_IMPLEMENTED, "no queue provider", NULL);
        return stream_queue(s, c, &q.filter);
}

static enum MHD_Result handle_message(struct status_server *s, struct MHD_Connection *c,
                                      const char *id)
{
        json_t *out = NULL;
        if (!s->provider.get_message)
                return reply_error(s, c, MHD_HTTP_NOT_IMPLEMENTED, "no queue provider", NULL);
        int r = s->provider.get_message(s->provider.userdata, id, &out);
        if (r == -ENOENT)
                return reply_error(s, c, MHD_HTTP_NOT_FOUND, "no such message in the queue", NULL);
        if (r < 0)
                return reply_errno(s, c, r);
        return reply_json(s, c, MHD_HTTP_OK, out, NULL);
}

static enum MHD_Result handle_metrics(struct status_server *s, struct MHD_Connection *c)
{
        char *buf = NULL;
        size_t len = 0;
        if (!s->metrics)
                return reply_error(s, c, MHD_HTTP_NOT_FOUND, "metrics are not enabled", NULL);
        if (s->provider.refresh_metrics) {
                int r = s->provider.refresh_metrics(s->provider.userdata, s->metrics);
                if (r < 0)
                        return reply_errno(s, c, r);
        }
        /* Count this scrape before rendering so it sees itself, like other exporters. */
        count_request(s, MHD_HTTP_OK);
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return MHD_NO;
        int r = status_metrics_render(s->metrics, f);
        if (fclose(f) != 0 || r < 0) {
                free(buf);
                return reply_errno(s, c, r < 0 ? r : -EIO);
        }
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(buf);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        guard_answered(c);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ret;
}

static enum MHD_Result handle_action(struct listener *l, struct MHD_Connection *c,
                                     const struct status_request *req)
{
        struct status_server *s = l->server;
        const char *refusal = admin_refusal(l, c);
        if (refusal)
                return reply_error(s, c, MHD_HTTP_FORBIDDEN, refusal, NULL);
        if (!s->provider.action)
                return reply_error(s, c, MHD_HTTP_NOT_IMPLEMENTED, "no action provider", NULL);
        const char *target = req->target[0] ? req->target : NULL;
        int r = s->provider.action(s->provider.userdata, req->action, target);
        if (r < 0)
                return reply_errno(s, c, r);
        return reply_json(s, c, MHD_HTTP_OK,
                          json_pack("{s:b, s:s, s:s?, s:i}", "ok", 1, "action",
                                    status_action_name(req->action), "target", target, "count", r),
                          NULL);
}

static enum MHD_Result count_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
        (void)kind, (void)key, (void)value;
        (*(unsigned *)cls)++;
        return MHD_YES;
}

static enum MHD_Result dispatch(struct listener *l, struct MHD_Connection *c, const char *url,
                                const char *method)
{
        struct status_server *s = l->server;
        struct status_request req;
        const char *allow, *why;
        unsigned n_args = 0;

        /* DNS rebinding: a web page whose name now points at 127.0.0.1 can
         * make a browser send requests here, with its own name as Host */
        if (!l->addr.is_unix && !status_host_allowed(MHD_lookup_connection_value(
                                                         c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST),
                                                     &l->addr, l->port))
                return reply_error(s, c, MHD_HTTP_MISDIRECTED_REQUEST,
                                   "the Host header must be this listener's address or localhost",
                                   NULL);
        int r = status_parse_request(method, url, &req, &allow, &why);
        if (r == -ENOENT)
                return reply_error(s, c, MHD_HTTP_NOT_FOUND, why, NULL);
        if (r == -EOPNOTSUPP)
                return reply_error(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, why, allow);
        if (r < 0)
                return reply_error(s, c, MHD_HTTP_BAD_REQUEST, why, NULL);
        int fleet = 0;
        if (req.route == ROUTE_STATUS) {
                MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, status_arg, &fleet);
                if (fleet < 0)
                        return reply_error(s, c, MHD_HTTP_BAD_REQUEST,
                                           "/status takes one query parameter: fleet=1", NULL);
        } else if (req.route != ROUTE_QUEUE) {
                MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, count_arg, &n_args);
        }
        if (n_args > 0)
                return reply_error(s, c, MHD_HTTP_BAD_REQUEST,
                                   "this resource takes no query parameters", NULL);
        /* Listings show senders and recipients: any local user can reach a
         * loopback port, so they are served on the unix socket only. */
        if ((req.route == ROUTE_QUEUE || req.route == ROUTE_MESSAGE) && !l->addr.is_unix)
                return reply_error(s, c, MHD_HTTP_FORBIDDEN,
                                   "message listings are only served on the unix socket", NULL);
        if (l->addr.owner_view && req.route != ROUTE_QUEUE)
                return reply_error(s, c, MHD_HTTP_FORBIDDEN,
                                   "this socket lists the caller's own messages only (GET /queue)",
                                   NULL);
        switch (req.route) {
        case ROUTE_STATUS:
                return handle_status(
                    s, c, l->addr.is_unix ? STATUS_VIEW_FULL : STATUS_VIEW_AGGREGATE, fleet == 1);
        case ROUTE_QUEUE:
                return handle_queue(l, c);
        case ROUTE_MESSAGE:
                return handle_message(s, c, req.target);
        case ROUTE_METRICS:
                return handle_metrics(s, c);
        case ROUTE_ACTION:
                return handle_action(l, c, &req);
        }
        return reply_errno(s, c, -EINVAL);
}

/* True when the declared Content-Length is over the limit (or unreadable). */
static bool declared_too_large(struct MHD_Connection *c, size_t max)
{
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!cl)
                return false;
        size_t n = strlen(cl);
        if (n == 0 || n > 18 || strspn(cl, "0123456789") != n)
                return true;
        return strtoull(cl, NULL, 10) > max;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
        struct listener *l = cls;
        struct status_server *s = l->server;
        struct request_ctx *ctx = *con_cls;
        (void)version, (void)upload_data;

        if (!ctx) {
                unsigned code;
                const char *refusal = guard_refusal(c, &code);
                if (!(ctx = calloc(1, sizeof(*ctx))))
                        return MHD_NO;
                *con_cls = ctx;
                if (refusal)
                        return reply_error(s, c, code, refusal, NULL);
                if (declared_too_large(c, s->max_body))
                        return reply_error(s, c, MHD_HTTP_CONTENT_TOO_LARGE,
                                           "request body too large", NULL);
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                ctx->body_bytes += *upload_data_size;
                *upload_data_size = 0; /* bodies are read and dropped: no endpoint takes one */
                return ctx->body_bytes > (uint64_t)s->max_body * DISCARD_FACTOR ? MHD_NO : MHD_YES;
        }
        if (ctx->body_bytes > s->max_body)
                return reply_error(s, c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large",
                                   NULL);
        return dispatch(l, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        struct listener *l = cls;
        free(*con_cls);
        *con_cls = NULL;
        if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
                guard_request_done(l->guard, c); /* kept alive: the next request's clock */
}

/* The request line as sent, before libmicrohttpd splits its arguments. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
        struct listener *l = cls;
        const char *why;
        if (status_check_uri(uri, &why) < 0)
                guard_refuse(l->guard, c, MHD_HTTP_URI_TOO_LONG, why);
        return NULL;
}

static void count_drop(void *userdata, unsigned code)
{
        count_request(userdata, code);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
        struct status_server *s = cls;
        char msg[512];
        if (!s->log)
                return;
        vsnprintf(msg, sizeof(msg), fmt, ap);
        msg[strcspn(msg, "\n")] = '\0';
        s->log(s->log_userdata, msg);
}

/* ---- the loop ---- */

static void rearm(struct listener *l)
{
        MHD_UNSIGNED_LONG_LONG ms;
        uint64_t now;
        if (MHD_get_timeout(l->mhd, &ms) != MHD_YES) {
                sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
                return;
        }
        if (ms > 86400000ULL)
                ms = 86400000ULL;
        if (sd_event_now(l->server->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        sd_event_source_set_time(l->timer, now + ms * 1000);
        sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
}

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
        struct listener *l = userdata;
        (void)src, (void)fd, (void)revents;
        MHD_run(l->mhd);
        rearm(l);
        return 0;
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
        struct listener *l = userdata;
        (void)src, (void)usec;
        MHD_run(l->mhd);
        rearm(l);
        return 0;
}

/* ---- start / stop ---- */

static int open_socket(struct status_server *s, struct listener *l,
                       const struct status_options *opt, int *fd, const char **why)
{
        int afd = listen_activated(&l->addr, opt->activated_fds, opt->n_activated_fds);
        int r;
        (void)s;
        if (afd >= 0) {
                *fd = fcntl(afd, F_DUPFD_CLOEXEC, 3);
                if (*fd < 0)
                        return -errno;
                return fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK) < 0 ? -errno : 0;
        }
        if (l->addr.is_unix) {
                r = listen_unix(&l->addr, opt->group, fd, why);
                l->created_path =
                    r >= 0 && listen_path_identity(l->addr.path, &l->path_dev, &l->path_ino) == 0;
                return r;
        }
        r = listen_tcp(&l->addr, fd);
        if (r == -EADDRINUSE)
                *why = "address in use (another tarryd, or another program, listens there)";
        return r;
}

static int start_mhd(struct listener *l, const struct status_options *opt, int fd)
{
        struct status_server *s = l->server;
        unsigned flags = MHD_USE_EPOLL | (s->log ? MHD_USE_ERROR_LOG : 0);
        unsigned limit = opt->max_connections ? opt->max_connections : DEFAULT_MAX_CONNECTIONS;
        unsigned request_ms =
            opt->request_timeout_ms ? opt->request_timeout_ms : DEFAULT_REQUEST_MS;
        int r = guard_new(s->event, limit, (uint64_t)request_ms * 1000, count_drop, s, &l->guard);
        if (r < 0) {
                close(fd);
                return r;
        }
        struct MHD_OptionItem items[] = {
            {MHD_OPTION_LISTEN_SOCKET, fd, NULL},
            {MHD_OPTION_CONNECTION_LIMIT, limit, NULL},
            {MHD_OPTION_CONNECTION_TIMEOUT,
             opt->connection_timeout_s ? opt->connection_timeout_s : DEFAULT_TIMEOUT_S, NULL},
            {MHD_OPTION_CONNECTION_MEMORY_LIMIT, HEADER_MEMORY_LIMIT, NULL},
            /* per-address limits mean nothing on a unix socket */
            {l->addr.is_unix ? MHD_OPTION_END : MHD_OPTION_PER_IP_CONNECTION_LIMIT,
             opt->per_ip_connections ? opt->per_ip_connections : DEFAULT_PER_IP, NULL},
            {MHD_OPTION_END, 0, NULL},
        };
        l->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER,
                                  on_mhd_log, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
                                  MHD_OPTION_NOTIFY_CONNECTION, guard_notify, l->guard,
                                  MHD_OPTION_URI_LOG_CALLBACK, on_uri, l, MHD_OPTION_ARRAY, items,
                                  MHD_OPTION_END);
        if (!l->mhd) {
                close(fd);
                return -EIO;
        }
        return 0;
}

static int attach(struct listener *l)
{
        sd_event *e = l->server->event;
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!di)
                return -EIO;
        int r = sd_event_add_io(e, &l->io, di->epoll_fd, EPOLLIN, on_io, l);
        if (r < 0)
                return r;
        r = sd_event_add_time(e, &l->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, l);
        if (r < 0)
                return r;
        sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
        rearm(l);
        return 0;
}

static int start_listener(struct status_server *s, struct listener *l,
                          const struct status_options *opt, const char **why)
{
        int fd = -1;
        int r = status_parse_listen(l->entry, &l->addr, why);
        if (r < 0)
                return r;
        *why = NULL; /* the parser may leave a message on success */
        if (!l->addr.is_unix && !opt->allow_remote && !status_addr_is_loopback(l->addr.host)) {
                *why = "not a loopback address; set status_allow_remote = yes to serve it";
                return -EPERM;
        }
        if ((r = open_socket(s, l, opt, &fd, why)) < 0)
                return r;
        l->port = l->addr.is_unix ? 0 : listen_port(fd);
        if ((r = start_mhd(l, opt, fd)) < 0) {
                *why = "libmicrohttpd refused to start";
                return r;
        }
        return attach(l);
}

static void listener_stop(struct listener *l)
{
        l->io = sd_event_source_disable_unref(l->io);
        l->timer = sd_event_source_disable_unref(l->timer);
        if (l->mhd)
                MHD_stop_daemon(l->mhd);
        l->mhd = NULL;
        guard_free(l->guard); /* after MHD: stopping it closes (and untracks) every connection */
        l->guard = NULL;
        /* Only the socket this listener made: never one that replaced it. */
        dev_t dev;
        ino_t ino;
        if (l->created_path && listen_path_identity(l->addr.path, &dev, &ino) == 0 &&
            dev == l->path_dev && ino == l->path_ino)
                unlink(l->addr.path);
        free(l->entry);
}

void status_stop(struct status_server *s)
{
        if (!s)
                return;
        for (size_t i = 0; i < s->n; i++)
                listener_stop(&s->l[i]);
        free(s->l);
        sd_event_unref(s->event);
        free(s);
}

static size_t count_entries(const char *const *listen)
{
        size_t n = 0;
        while (listen && listen[n])
                n++;
        return n;
}

static void report(char *err, size_t errlen, const char *entry, const char *why, int r)
{
        if (err && errlen)
                snprintf(err, errlen, "status_listen '%s': %s", entry ? entry : "",
                         why ? why : strerror(-r));
}

int status_start(sd_event *event, const struct status_options *opt,
                 const struct status_provider *provider, struct status_metrics *metrics,
                 struct status_server **out, char *err, size_t errlen)
{
        if (!event || !opt || !provider || !out)
                return -EINVAL;
        struct status_server *s = calloc(1, sizeof(*s));
        size_t n = count_entries(opt->listen);
        if (!s || !(s->l = calloc(n ? n : 1, sizeof(struct listener)))) {
                free(s);
                return -ENOMEM;
        }
        s->event = sd_event_ref(event);
        s->provider = *provider;
        s->metrics = metrics;
        s->admin_uid = opt->admin_uid;
        s->max_body = opt->max_body ? opt->max_body : DEFAULT_MAX_BODY;
        s->log = opt->log;
        s->log_userdata = opt->log_userdata;
        for (size_t i = 0; i < n; i++) {
                const char *why = NULL;
                struct listener *l = &s->l[s->n++];
                l->server = s;
                l->entry = strdup(opt->listen[i]);
                int r = l->entry ? start_listener(s, l, opt, &why) : -ENOMEM;
                if (r < 0) {
                        report(err, errlen, opt->listen[i], why, r);
                        status_stop(s);
                        return r;
                }
        }
        *out = s;
        return 0;
}

int status_tcp_port(const struct status_server *s)
{
        for (size_t i = 0; s && i < s->n; i++)
                if (!s->l[i].addr.is_unix)
                        return s->l[i].port;
        return -ENOENT;
}

static const char *const action_names[] = {
    [STATUS_ACTION_RETRY] = "retry",   [STATUS_ACTION_FLUSH] = "flush",
    [STATUS_ACTION_HOLD] = "hold",     [STATUS_ACTION_RELEASE] = "release",
    [STATUS_ACTION_DELETE] = "delete", [STATUS_ACTION_RESUME] = "resume",
    [STATUS_ACTION_FORCE] = "force",
};

const char *status_action_name(enum status_action a)
{
        return (unsigned)a < STATUS_ACTION__MAX ? action_names[a] : NULL;
}
