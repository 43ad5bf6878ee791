/* bench/status_rps.c — requests per second of the status endpoint with a
 * large queue.
 *
 * usage: bench-status-rps [--messages 100000] [--clients 4] [--seconds 5]
 *                         [--path /status]
 * Runs status/ on one sd-event loop in its own thread (as tarryd does) with a
 * provider holding `messages` queued messages in memory. GET /status scans
 * all of them on every request (counts by state and class, per-destination
 * rows): the worst case, a daemon keeping running counters is cheaper.
 * `clients` threads each reuse one keep-alive libcurl handle and request
 * `path` for `seconds`, first over the unix socket, then over 127.0.0.1.
 * Prints one line per transport. Run by bench/status-rps.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "status/status.h"

#define N_DEST 64

struct msg {
        char id[17];
        unsigned char state; /* enum status_queue_state */
        signed char class;   /* enum reply_class, -1: none */
        unsigned short dest;
};

struct queue {
        struct msg *m;
        size_t n;
        char dest[N_DEST][32];
        time_t started;
};

static json_t *msg_json(const struct queue *q, const struct msg *m)
{
        return json_pack("{s:s, s:s, s:s?, s:s, s:I}", "queue_id", m->id, "queue_name",
                         status_queue_state_name(m->state), "class",
                         m->class >= 0 ? reply_class_name(m->class) : NULL, "destination",
                         q->dest[m->dest], "next_attempt", (json_int_t)q->started + 300);
}

static int get_status(void *userdata, enum status_view view, json_t **out)
{
        (void)view;
        const struct queue *q = userdata;
        size_t by_state[STATUS_QSTATE__MAX] = {0}, by_class[CLASS__MAX] = {0};
        size_t per_dest[N_DEST] = {0};
        for (size_t i = 0; i < q->n; i++) {
                by_state[q->m[i].state]++;
                if (q->m[i].class >= 0)
                        by_class[q->m[i].class]++;
                per_dest[q->m[i].dest]++;
        }
        json_t *classes = json_object(), *dests = json_array();
        for (int c = 0; c < CLASS__MAX; c++)
                json_object_set_new(classes, reply_class_name(c), json_integer(by_class[c]));
        for (int d = 0; d < N_DEST; d++)
                json_array_append_new(dests,
                                      json_pack("{s:s, s:s, s:s, s:I}", "destination", q->dest[d],
                                                "source_address", "192.0.2.10", "state", "ok",
                                                "queued", (json_int_t)per_dest[d]));
        *out =
            json_pack("{s:s, s:I, s:{s:I, s:I, s:I, s:I, s:I}, s:o, s:o}", "version", TARRY_VERSION,
                      "uptime_s", (json_int_t)(time(NULL) - q->started), "queue", "total",
                      (json_int_t)q->n, "active", (json_int_t)by_state[STATUS_QSTATE_ACTIVE],
                      "deferred", (json_int_t)by_state[STATUS_QSTATE_DEFERRED], "hold",
                      (json_int_t)by_state[STATUS_QSTATE_HOLD], "corrupt",
                      (json_int_t)by_state[STATUS_QSTATE_CORRUPT], "by_class", classes,
                      "destinations", dests);
        return *out ? 0 : -ENOMEM;
}

/* A page of the streamed listing: the first match and how many to hand out. */
struct page {
        size_t next, left;
        struct status_queue_filter f;
};

static bool match(const struct queue *q, const struct status_queue_filter *f, const struct msg *m)
{
        return !(f->has_class && m->class != (int)f->class) &&
               !(f->state != STATUS_QSTATE_ANY && m->state != f->state) &&
               !(f->destination && strcmp(f->destination, q->dest[m->dest]) != 0);
}

static int list_open(void *userdata, const struct status_queue_filter *f, void **out, size_t *total)
{
        const struct queue *q = userdata;
        struct page *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->f = *f;
        p->next = q->n;
        *total = 0;
        for (size_t i = 0; i < q->n; i++) {
                if (!match(q, f, &q->m[i]))
                        continue;
                if (*total == f->offset)
                        p->next = i;
                (*total)++;
        }
        p->left = *total > f->offset ? *total - f->offset : 0;
        if (p->left > f->limit)
                p->left = f->limit;
        *out = p;
        return 0;
}

static int list_next(void *userdata, void *page, json_t **out)
{
        const struct queue *q = userdata;
        struct page *p = page;
        for (; p->left > 0 && p->next < q->n; p->next++) {
                if (!match(q, &p->f, &q->m[p->next]))
                        continue;
                p->left--;
                *out = msg_json(q, &q->m[p->next++]);
                return *out ? 1 : -ENOMEM;
        }
        return 0;
}

static void list_close(void *userdata, void *page)
{
        (void)userdata;
        free(page);
}

static void fill(struct queue *q, size_t n)
{
        static const unsigned char states[] = {STATUS_QSTATE_DEFERRED, STATUS_QSTATE_DEFERRED,
                                               STATUS_QSTATE_DEFERRED, STATUS_QSTATE_ACTIVE,
                                               STATUS_QSTATE_HOLD};
        q->m = calloc(n, sizeof(*q->m));
        q->n = n;
        q->started = time(NULL);
        for (int d = 0; d < N_DEST; d++)
                snprintf(q->dest[d], sizeof(q->dest[d]), "dest%02d.example", d);
        for (size_t i = 0; i < n; i++) {
                struct msg *m = &q->m[i];
                snprintf(m->id, sizeof(m->id), "%016zX", i + 1);
                m->state = states[i % 5];
                m->class = m->state == STATUS_QSTATE_DEFERRED ? (int)(i % CLASS__MAX) : -1;
                m->dest = i % N_DEST;
        }
}

/* ---- load ---- */

struct load {
        const char *url;
        const char *unix_path; /* NULL: TCP */
        double seconds;
        long done, failed;
};

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t sink(char *p, size_t sz, size_t n, void *ud)
{
        (void)p, (void)ud;
        return sz * n;
}

static void *client(void *arg)
{
        struct load *l = arg;
        CURL *h = curl_easy_init();
        curl_easy_setopt(h, CURLOPT_URL, l->url);
        if (l->unix_path)
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, l->unix_path);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        double end = now_s() + l->seconds;
        while (now_s() < end) {
                long code = 0;
                if (curl_easy_perform(h) == CURLE_OK &&
                    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200)
                        l->done++;
                else
                        l->failed++;
        }
        curl_easy_cleanup(h);
        return NULL;
}

static void run_load(const char *name, const char *url, const char *unix_path, int clients,
                     double seconds)
{
        pthread_t t[64];
        struct load l[64];
        long done = 0, failed = 0;
        double t0 = now_s();
        for (int i = 0; i < clients; i++) {
                l[i] = (struct load){.url = url, .unix_path = unix_path, .seconds = seconds};
                pthread_create(&t[i], NULL, client, &l[i]);
        }
        for (int i = 0; i < clients; i++) {
                pthread_join(t[i], NULL);
                done += l[i].done;
                failed += l[i].failed;
        }
        double el = now_s() - t0;
        printf("%-5s %s: %ld requests in %.1f s = %.0f req/s (%d clients, %ld failed)\n", name, url,
               done, el, done / el, clients, failed);
}

/* ---- main ---- */

static int on_stop(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        (void)fd, (void)revents, (void)userdata;
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static void *loop(void *arg)
{
        sd_event_loop(arg);
        return NULL;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"messages", required_argument, NULL, 'm'},
            {"clients", required_argument, NULL, 'c'},
            {"seconds", required_argument, NULL, 's'},
            {"path", required_argument, NULL, 'p'},
            {0},
        };
        size_t messages = 100000;
        int clients = 4, c;
        double seconds = 5;
        const char *path = "/status";
        while ((c = getopt_long(argc, argv, "m:c:s:p:", opts, NULL)) != -1) {
                if (c == 'm')
                        messages = strtoul(optarg, NULL, 10);
                else if (c == 'c')
                        clients = atoi(optarg);
                else if (c == 's')
                        seconds = atof(optarg);
                else if (c == 'p')
                        path = optarg;
                else
                        return 64;
        }
        if (clients < 1 || clients > 64 || seconds <= 0 || path[0] != '/')
                return 64;

        struct queue q;
        fill(&q, messages);
        char dir[] = "/tmp/tarry-bench-XXXXXX", sock[64], unix_entry[80];
        if (!mkdtemp(dir))
                return 71;
        snprintf(sock, sizeof(sock), "%s/status.sock", dir);
        snprintf(unix_entry, sizeof(unix_entry), "unix:%s", sock);
        const char *listen[] = {unix_entry, "127.0.0.1:0", NULL};
        struct status_options opt = {.listen = listen, .max_connections = 256};
        struct status_provider p = {.userdata = &q,
                                    .get_status = get_status,
                                    .list_open = list_open,
                                    .list_next = list_next,
                                    .list_close = list_close};
        struct status_metrics *m;
        sd_event *e;
        struct status_server *srv;
        char err[256];
        int stop[2];
        status_metrics_new(&m);
        status_metrics_declare_tarry(m);
        sd_event_new(&e);
        if (status_start(e, &opt, &p, m, &srv, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench-status-rps: %s\n", err);
                return 71;
        }
        if (pipe(stop) < 0 || sd_event_add_io(e, NULL, stop[0], EPOLLIN, on_stop, NULL) < 0)
                return 71;
        pthread_t lt;
        pthread_create(&lt, NULL, loop, e);
        curl_global_init(CURL_GLOBAL_DEFAULT);

        char url[256];
        printf("queue: %zu messages, path %s\n", messages, path);
        snprintf(url, sizeof(url), "http://localhost%s", path);
        run_load("unix", url, sock, clients, seconds);
        if (strncmp(path, "/queue", 6) == 0) {
                /* listings name senders and recipients: the TCP port refuses them (403) */
                printf("tcp   %s: not served on TCP (message listings are unix-socket only)\n",
                       path);
        } else {
                snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", status_tcp_port(srv), path);
                run_load("tcp", url, NULL, clients, seconds);
        }

        if (write(stop[1], "x", 1) != 1)
                return 71;
        pthread_join(lt, NULL);
        status_stop(srv);
        sd_event_unref(e);
        status_metrics_free(m);
        free(q.m);
        rmdir(dir);
        return 0;
}
