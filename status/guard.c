/* status/guard.c — deadlines for unanswered requests and room for new
 * clients; see guard.h.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "status/guard.h"

struct conn {
        struct guard *g;
        struct MHD_Connection *c;
        uint64_t deadline_us; /* CLOCK_MONOTONIC; 0: answered, nothing is due */
        bool dropped;         /* shut down by the guard; libmicrohttpd closes it next */
        unsigned code;        /* refusal: HTTP code and reason, else 0 */
        const char *why;
        struct conn *prev, *next; /* oldest first */
};

struct guard {
        sd_event *event;
        sd_event_source *timer;
        unsigned limit;
        uint64_t timeout_us;
        void (*on_drop)(void *userdata, unsigned code);
        void *userdata;
        struct conn *head, *tail;
        unsigned n;
};

static uint64_t now_us(const struct guard *g)
{
        uint64_t t = 0;
        sd_event_now(g->event, CLOCK_MONOTONIC, &t);
        return t;
}

static struct conn *conn_of(struct MHD_Connection *c)
{
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return ci ? ci->socket_context : NULL;
}

static void rearm(struct guard *g)
{
        uint64_t next = UINT64_MAX;
        for (struct conn *k = g->head; k; k = k->next)
                if (!k->dropped && k->deadline_us && k->deadline_us < next)
                        next = k->deadline_us;
        if (next == UINT64_MAX) {
                sd_event_source_set_enabled(g->timer, SD_EVENT_OFF);
                return;
        }
        sd_event_source_set_time(g->timer, next);
        sd_event_source_set_enabled(g->timer, SD_EVENT_ONESHOT);
}

/* Nothing has been written on k yet (it is unanswered): write the error
 * ourselves, then end the connection. The write is small and the socket
 * fresh, so it fits in the socket buffer; if it does not, the client only
 * misses the reason. */
static void drop(struct conn *k, unsigned code, const char *why)
{
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(k->c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->dropped = true;
        if (!ci)
                return;
        json_t *j = json_pack("{s:s, s:i}", "error", why, "status", (int)code);
        char *body = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        json_decref(j);
        char head[256];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\n"
                         "Cache-Control: no-store\r\nConnection: close\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         code, MHD_get_reason_phrase_for(code), body ? strlen(body) + 1 : 0);
        if (n > 0 && (size_t)n < sizeof(head) &&
            send(ci->connect_fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n && body) {
                (void)send(ci->connect_fd, body, strlen(body), MSG_NOSIGNAL | MSG_DONTWAIT);
                (void)send(ci->connect_fd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        free(body);
        shutdown(ci->connect_fd, SHUT_RDWR);
        if (k->g->on_drop)
                k->g->on_drop(k->g->userdata, code);
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
        struct guard *g = userdata;
        (void)src, (void)usec;
        uint64_t now = now_us(g);
        for (struct conn *k = g->head; k; k = k->next) {
                if (k->dropped || !k->deadline_us || k->deadline_us > now)
                        continue;
                if (k->code)
                        drop(k, k->code, k->why);
                else
                        drop(k, 408, "the request did not arrive in time");
        }
        rearm(g);
        return 0;
}

int guard_new(sd_event *event, unsigned limit, uint64_t timeout_us,
              void (*on_drop)(void *userdata, unsigned code), void *userdata, struct guard **out)
{
        struct guard *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        *g = (struct guard){.event = sd_event_ref(event),
                            .limit = limit,
                            .timeout_us = timeout_us,
                            .on_drop = on_drop,
                            .userdata = userdata};
        int r = sd_event_add_time(event, &g->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, g);
        if (r < 0) {
                guard_free(g);
                return r;
        }
        sd_event_source_set_enabled(g->timer, SD_EVENT_OFF);
        *out = g;
        return 0;
}

/* Call after libmicrohttpd has closed every connection (MHD_stop_daemon). */
void guard_free(struct guard *g)
{
        if (!g)
                return;
        while (g->head) {
                struct conn *k = g->head;
                g->head = k->next;
                free(k);
        }
        sd_event_source_disable_unref(g->timer);
        sd_event_unref(g->event);
        free(g);
}

/* The listener is full: the oldest request still arriving makes room. */
static void make_room(struct guard *g, const struct conn *newcomer)
{
        for (struct conn *k = g->head; k; k = k->next)
                if (k != newcomer && !k->dropped && k->deadline_us) {
                        drop(k, 408, "dropped for a newer client: the status endpoint is full");
                        return;
                }
}

void guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                  enum MHD_ConnectionNotificationCode code)
{
        struct guard *g = cls;
        struct conn *k = *socket_context;
        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                if (!(k = calloc(1, sizeof(*k))))
                        return; /* untracked: libmicrohttpd's idle timeout still applies */
                *k = (struct conn){.g = g, .c = c, .deadline_us = now_us(g) + g->timeout_us};
                k->prev = g->tail;
                if (g->tail)
                        g->tail->next = k;
                else
                        g->head = k;
                g->tail = k;
                *socket_context = k;
                if (++g->n >= g->limit)
                        make_room(g, k);
                rearm(g);
                return;
        }
        if (!k)
                return;
        if (k->prev)
                k->prev->next = k->next;
        else
                g->head = k->next;
        if (k->next)
                k->next->prev = k->prev;
        else
                g->tail = k->prev;
        g->n--;
        free(k);
        *socket_context = NULL;
        rearm(g);
}

void guard_refuse(struct guard *g, struct MHD_Connection *c, unsigned code, const char *why)
{
        struct conn *k = conn_of(c);
        if (!k || k->dropped)
                return;
        k->code = code;
        k->why = why;
        k->deadline_us = now_us(g); /* due now: answered on this loop iteration */
        rearm(g);
}

const char *guard_refusal(struct MHD_Connection *c, unsigned *code)
{
        struct conn *k = conn_of(c);
        if (!k || !k->code)
                return NULL;
        *code = k->code;
        return k->why;
}

void guard_answered(struct MHD_Connection *c)
{
        struct conn *k = conn_of(c);
        if (k)
                k->deadline_us = 0;
}

void guard_request_done(struct guard *g, struct MHD_Connection *c)
{
        struct conn *k = conn_of(c);
        if (!k || k->dropped)
                return;
        k->code = 0;
        k->why = NULL;
        k->deadline_us = now_us(g) + g->timeout_us;
        rearm(g);
}
