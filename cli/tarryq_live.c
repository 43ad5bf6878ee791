/* cli/tarryq_live.c — tarryq against the running daemon; see tarryq_live.h.
 *
 * Listings come from GET /queue (the same objects tarryq -j prints offline),
 * admin actions go to the unix socket. When tarryd does not answer, listings
 * and delete/hold/release work on the spool directly, as postqueue and
 * postsuper do; flush, retry and status need the daemon.
 */
#include "cli/tarryq_live.h"
#include "cli/cli_util.h"
#include "cli/qlist.h"
#include "cli/status_client.h"
#include "common/cleanup.h"
#include "status/status.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#define PAGE 1000

static struct status_client *client_for(const struct tarry_config *cfg)
{
        struct status_client *c = NULL;
        if (status_client_new((const char *const *)cfg->status_listen, &c) < 0)
                return NULL;
        return c;
}

static void warn_offline(struct status_client *c)
{
        fprintf(stderr,
                "tarryq: warning: tarryd is not answering (%s) -- reading the spool "
                "directly\n",
                c ? status_client_last_error(c) : "no status_listen configured");
}

/* A page's "unread": messages tarryd listed at start and has not read yet,
 * so no page shows them; the most any page said. */
static void note_unread(const json_t *head, size_t *unread)
{
        json_t *u = json_object_get(head, "unread");
        if (json_is_integer(u) && json_integer_value(u) > 0 &&
            (size_t)json_integer_value(u) > *unread)
                *unread = (size_t)json_integer_value(u);
}

/* On stderr, after a listing or an ALL action: made while tarryd was still
 * reading its queue after a start, it lacks (left alone) what it had not
 * read; what follows says which. */
static void warn_unread(size_t unread, const char *so)
{
        if (unread)
                fprintf(stderr,
                        "tarryq: warning: tarryd is still reading its queue after a start (%zu "
                        "message(s) not read yet): %s\n",
                        unread, so);
}

/* An envelope good enough for the postqueue -p printer, from a -j object. */
static struct envelope *envelope_from_listing(json_t *o)
{
        struct envelope *env = envelope_new();
        if (!env)
                return NULL;
        const char *id = json_string_value(json_object_get(o, "queue_id"));
        const char *sender = json_string_value(json_object_get(o, "sender"));
        if (!id || strlen(id) != QUEUE_ID_LEN || !sender) {
                envelope_free(env);
                return NULL;
        }
        memcpy(env->id, id, QUEUE_ID_LEN + 1);
        free(env->sender);
        env->sender = strdup(strcmp(sender, "MAILER-DAEMON") == 0 ? "" : sender);
        env->arrival_us = json_integer_value(json_object_get(o, "arrival_time")) * 1000000;
        env->size = (uint64_t)json_integer_value(json_object_get(o, "message_size"));
        size_t i;
        json_t *r;
        json_array_foreach (json_object_get(o, "recipients"), i, r) {
                const char *addr = json_string_value(json_object_get(r, "address"));
                const char *why = json_string_value(json_object_get(r, "delay_reason"));
                struct envelope_rcpt *rc = addr ? envelope_add_rcpt(env, addr) : NULL;
                if (!rc)
                        continue;
                const char *reason = json_string_value(json_object_get(r, "next_attempt_reason"));
                rc->state = why || json_integer_value(json_object_get(r, "attempts")) > 0
                                ? RCPT_DEFERRED
                                : RCPT_PENDING;
                rc->last_reply = why ? strdup(why) : NULL;
                rc->next_reason = reason ? strdup(reason) : NULL;
                rc->next_attempt_us =
                    json_integer_value(json_object_get(r, "next_attempt")) * 1000000;
        }
        return env;
}

/* Every message the daemon lists, page by page. Each page starts after the
 * last ID of the one before (a cursor, not an offset): messages that arrive
 * or leave meanwhile shift nothing, so none is listed twice or skipped. */
static int fetch_all(struct status_client *c, json_t *all, size_t *unread)
{
        char after[32] = "0000000000000000"; /* below every queue ID: the first page */
        for (;;) {
                char path[96];
                snprintf(path, sizeof(path), "/queue?limit=%d&after=%s", PAGE, after);
                long code = 0;
                _cleanup_(json_decrefp) json_t *page = NULL;
                int r = status_client_request_json(c, "GET", path, &code, &page);
                if (r < 0)
                        return r;
                if (code != 200)
                        return -EPROTO;
                note_unread(page, unread);
                json_t *msgs = json_object_get(page, "messages");
                size_t n = json_array_size(msgs);
                json_array_extend(all, msgs);
                const char *last =
                    n ? json_string_value(json_object_get(json_array_get(msgs, n - 1), "queue_id"))
                      : NULL;
                /* a filtered listing (a mailq: socket's) has "total": null: a
                 * page short of PAGE is the last */
                json_t *total = json_object_get(page, "total");
                if (!last || strlen(last) >= sizeof(after) ||
                    (json_is_integer(total) ? n >= (size_t)json_integer_value(total) : n < PAGE))
                        return 0;
                snprintf(after, sizeof(after), "%s", last);
        }
}

static int print_listing(json_t *all, bool json)
{
        size_t i;
        json_t *o;
        if (json) {
                json_array_foreach (all, i, o) {
                        _cleanup_free_ char *line = json_dumps(o, JSON_COMPACT);
                        if (line)
                                printf("%s\n", line);
                }
                return fflush(stdout) == 0 ? 0 : EX_IOERR;
        }
        size_t n = json_array_size(all);
        struct qentry *v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return EX_OSERR;
        size_t k = 0;
        json_array_foreach (all, i, o) {
                const char *qn = json_string_value(json_object_get(o, "queue_name"));
                struct envelope *env = envelope_from_listing(o);
                if (!env)
                        continue;
                v[k++] = (struct qentry){.queue_name = qn ? qn : "active", .env = env};
        }
        int r = qlist_print_postqueue(stdout, v, k);
        for (size_t j = 0; j < k; j++)
                envelope_free(v[j].env);
        free(v);
        return r < 0 ? EX_IOERR : 0;
}

/* tarryq -j: each page printed as it arrives, its message lines as the
 * server wrote them (one per line, status.h: no parse and re-serialisation),
 * so the listing starts at once, memory stays flat and tarryd renders while
 * tarryq reads. A page is kept until it is whole, then printed: a reader
 * that stops reading (a pager) holds up tarryq, never tarryd's connection,
 * which it would close after its idle timeout. */
struct jstream {
        char *line; /* the line being put together */
        size_t len, cap;
        size_t lines;                /* of this page, the head included */
        size_t n;                    /* messages of this page */
        size_t total;                /* left from the cursor, says the head (SIZE_MAX: null) */
        size_t unread;               /* the most a head said (note_unread) */
        bool ended;                  /* "]}" seen */
        char last[QUEUE_ID_LEN + 1]; /* queue ID of the page's last message */
        char *out;                   /* the page's message lines, printed once it is whole */
        size_t out_len, out_cap;
        size_t printed; /* in all */
};

static int keep(char **buf, size_t *cap, size_t *len, const char *p, size_t n)
{
        if (*len + n + 1 > *cap) {
                size_t c = *cap ? *cap : 1024;
                while (c < *len + n + 1)
                        c *= 2;
                char *b = realloc(*buf, c);
                if (!b)
                        return -ENOMEM;
                *buf = b;
                *cap = c;
        }
        memcpy(*buf + *len, p, n);
        *len += n;
        (*buf)[*len] = '\0';
        return 0;
}

static int page_line(struct jstream *js, char *line, size_t len)
{
        if (js->ended)
                return -EBADMSG;
        if (js->lines++ == 0) {
                /* {"total":N,"offset":O,"limit":L,"messages":[ */
                if (keep(&js->line, &js->cap, &js->len, "]}", 2) < 0)
                        return -ENOMEM;
                _cleanup_(json_decrefp) json_t *head = json_loadb(js->line, js->len, 0, NULL);
                note_unread(head, &js->unread);
                json_t *t = json_object_get(head, "total");
                if (json_is_null(t)) {
                        js->total = SIZE_MAX; /* not counted (a filtered listing) */
                        return 0;
                }
                if (!json_is_integer(t) || json_integer_value(t) < 0)
                        return -EBADMSG;
                js->total = (size_t)json_integer_value(t);
                return 0;
        }
        if (len == 2 && memcmp(line, "]}", 2) == 0) {
                js->ended = true;
                return 0;
        }
        if (len > 0 && line[len - 1] == ',')
                len--;
        if (len < 2 || line[0] != '{' || line[len - 1] != '}')
                return -EBADMSG;
        line[len] = '\n';
        if (keep(&js->out, &js->out_cap, &js->out_len, line, len + 1) < 0)
                return -ENOMEM;
        js->n++;
        return 0;
}

static int page_data(const char *data, size_t len, void *userdata)
{
        struct jstream *js = userdata;
        while (len > 0) {
                const char *nl = memchr(data, '\n', len);
                size_t n = nl ? (size_t)(nl - data) : len;
                if (keep(&js->line, &js->cap, &js->len, data, n) < 0)
                        return -ENOMEM;
                if (!nl)
                        return 0;
                int r = page_line(js, js->line, js->len);
                js->len = 0;
                if (r < 0)
                        return r;
                data += n + 1;
                len -= n + 1;
        }
        return 0;
}

/* The queue ID of the page's last message (the last line of js->out), the
 * next page's cursor. */
static int last_id(struct jstream *js)
{
        size_t end = js->out_len - 1; /* its '\n' */
        const char *nl = memrchr(js->out, '\n', end);
        size_t start = nl ? (size_t)(nl - js->out) + 1 : 0;
        _cleanup_(json_decrefp) json_t *o = json_loadb(js->out + start, end - start, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "queue_id"));
        if (!id || strlen(id) != QUEUE_ID_LEN)
                return -EBADMSG;
        memcpy(js->last, id, QUEUE_ID_LEN + 1);
        return 0;
}

static int stream_all(struct status_client *c, struct jstream *js)
{
        snprintf(js->last, sizeof(js->last), "0000000000000000"); /* below every queue ID */
        for (;;) {
                char path[96];
                snprintf(path, sizeof(path), "/queue?limit=%d&after=%s", PAGE, js->last);
                long code = 0;
                _cleanup_free_ char *body = NULL;
                js->lines = js->n = js->len = js->out_len = 0;
                js->ended = false;
                int r =
                    status_client_request_stream(c, "GET", path, &code, page_data, js, &body, NULL);
                if (r < 0)
                        return r;
                if (code != 200 || !js->ended)
                        return -EBADMSG;
                if (js->out_len && fwrite(js->out, 1, js->out_len, stdout) != js->out_len)
                        return -EIO;
                js->printed += js->n;
                if (js->n == 0 || js->n >= js->total || (js->total == SIZE_MAX && js->n < PAGE))
                        return fflush(stdout) == 0 ? 0 : -EIO;
                if ((r = last_id(js)) < 0)
                        return r;
        }
}

static int tarryq_list_json(struct status_client *c, const char *config_path)
{
        struct jstream js = {0};
        int r = stream_all(c, &js);
        free(js.line);
        free(js.out);
        warn_unread(js.unread, "this listing may be incomplete; list again in a moment");
        if (r == -EIO) {
                status_client_free(c);
                fprintf(stderr, "tarryq: writing the listing: %s\n", strerror(EIO));
                return EX_IOERR;
        }
        if (r < 0 && js.printed > 0) {
                /* what was printed stays printed: say that the rest is missing */
                fprintf(
                    stderr, "tarryq: the listing from tarryd stopped after %zu message(s): %s\n",
                    js.printed,
                    r == -EBADMSG ? "a malformed or cut-short page" : status_client_last_error(c));
                status_client_free(c);
                return EX_UNAVAILABLE;
        }
        if (r < 0) {
                warn_offline(c);
                status_client_free(c);
                return qlist_main("tarryq", config_path, true);
        }
        status_client_free(c);
        return 0;
}

int tarryq_list(const char *config_path, bool json)
{
        struct tarry_config *cfg = NULL;
        int ex = cli_load_config("tarryq", config_path, &cfg);
        if (ex)
                return ex;
        struct status_client *c = client_for(cfg);
        if (json && c) {
                cfg_free(cfg);
                return tarryq_list_json(c, config_path);
        }
        json_t *all = json_array();
        size_t unread = 0;
        int r = c && all ? fetch_all(c, all, &unread) : STATUS_CLIENT_NOT_ANSWERING;
        cfg_free(cfg);
        if (r == 0) {
                status_client_free(c);
                ex = print_listing(all, json);
                json_decref(all);
                fflush(stdout);
                warn_unread(unread, "this listing may be incomplete; list again in a moment");
                return ex;
        }
        json_decref(all);
        warn_offline(c);
        status_client_free(c);
        return qlist_main("tarryq", config_path, json);
}

/* ---- admin actions ---- */

/* The daemon's error body {"error": "words", "status": N} as words. */
static const char *error_words(const char *body, char *buf, size_t len)
{
        _cleanup_(json_decrefp) json_t *j = body ? json_loads(body, 0, NULL) : NULL;
        const char *w = json_string_value(json_object_get(j, "error"));
        snprintf(buf, len, "%s", w && *w ? w : "failed");
        return buf;
}

static int exit_for_http(long code, const char *what, const char *body)
{
        if (code >= 200 && code < 300)
                return 0;
        char words[512];
        fprintf(stderr, "tarryq: %s: %s\n", what, error_words(body, words, sizeof(words)));
        switch (code) {
        case 400:
                return EX_USAGE;
        case 403:
                return EX_NOPERM;
        case 404:
                return EX_NOINPUT;
        case 409:
        case 503:
                return EX_TEMPFAIL;
        default:
                return EX_SOFTWARE;
        }
}

static int request(struct status_client *c, const char *method, const char *path, const char *what)
{
        long code = 0;
        _cleanup_free_ char *body = NULL;
        size_t len;
        int r = status_client_request(c, method, path, &code, &body, &len);
        if (r < 0) {
                fprintf(stderr, "tarryq: %s: %s\n", what, status_client_last_error(c));
                return EX_UNAVAILABLE;
        }
        return exit_for_http(code, what, body);
}

static const char *method_of(char action)
{
        return action == 'd' ? "DELETE" : "POST";
}

static void path_of(char action, const char *id, char *path, size_t len)
{
        const char *suffix = action == 'h'   ? "/hold"
                             : action == 'H' ? "/release"
                             : action == 'i' ? "/retry"
                                             : "";
        snprintf(path, len, "/queue/%s%s", id, suffix);
}

/* -i ID refused because every destination of the message is paused: say
 * which, until when and why, from the daemon's own listing. */
static int explain_held_back(struct status_client *c, const char *id)
{
        char path[64];
        snprintf(path, sizeof(path), "/queue/%s", id);
        long code = 0;
        _cleanup_(json_decrefp) json_t *m = NULL;
        fprintf(stderr, "tarryq: %s: not tried:", id);
        size_t i;
        json_t *r;
        if (status_client_request_json(c, "GET", path, &code, &m) == 0 && code == 200)
                json_array_foreach (json_object_get(m, "recipients"), i, r) {
                        const char *why =
                            json_string_value(json_object_get(r, "next_attempt_reason"));
                        const char *dest = json_string_value(json_object_get(r, "destination"));
                        const char *when =
                            json_string_value(json_object_get(r, "next_attempt_time"));
                        if (why && strncmp(why, "destination_", 12) == 0)
                                fprintf(stderr, " destination %s is %s until %s;",
                                        dest ? dest : "?",
                                        strcmp(why, "destination_suspended") == 0 ? "suspended"
                                                                                  : "backing off",
                                        when ? when : "?");
                }
        fprintf(stderr,
                " tarryq -i %s --force tries anyway, tarryq resume DESTINATION lifts "
                "the suspension\n",
                id);
        return EX_TEMPFAIL;
}

/* After a flush: destinations it did not release (suspensions stay). */
static void say_still_suspended(struct status_client *c)
{
        long code = 0;
        _cleanup_(json_decrefp) json_t *st = NULL;
        if (status_client_request_json(c, "GET", "/status", &code, &st) < 0 || code != 200)
                return;
        size_t i, n = 0;
        json_t *d;
        json_array_foreach (json_object_get(st, "destinations"), i, d) {
                const char *state = json_string_value(json_object_get(d, "state"));
                if (state && (strcmp(state, "suspended") == 0 || strcmp(state, "backoff") == 0))
                        n++;
        }
        if (n > 0)
                fprintf(stderr,
                        "tarryq: %zu destination%s stay%s suspended (tarryq -s lists %s; tarryq "
                        "resume DESTINATION lifts one)\n",
                        n, n == 1 ? "" : "s", n == 1 ? "s" : "", n == 1 ? "it" : "them");
        else
                fprintf(stderr, "tarryq: no destination is suspended\n");
}

/* -d/-h/-H ALL: every listed message. */
static int each_listed(struct status_client *c, char action)
{
        _cleanup_(json_decrefp) json_t *all = json_array();
        size_t unread = 0;
        int r = fetch_all(c, all, &unread);
        if (r < 0)
                return EX_UNAVAILABLE;
        /* what it has not read is not listed: not touched either */
        warn_unread(unread, "those are left as they are; run again in a moment");
        size_t i, n = 0;
        json_t *o;
        json_array_foreach (all, i, o) {
                const char *id = json_string_value(json_object_get(o, "queue_id"));
                char path[64];
                path_of(action, id, path, sizeof(path));
                long code = 0;
                _cleanup_free_ char *body = NULL;
                size_t len;
                if (id &&
                    status_client_request(c, method_of(action), path, &code, &body, &len) == 0 &&
                    code == 200)
                        n++;
        }
        return (int)n;
}

static const char *verb(char action)
{
        return action == 'd' ? "Deleted" : action == 'h' ? "Placed on hold" : "Released from hold";
}

/* The daemon is down: change the spool directly, as postsuper does. */
static int offline_action(const struct tarry_config *cfg, char action, const char *target)
{
        struct queue *q = NULL;
        int ex = cli_open_spool("tarryq", cfg, &q);
        if (ex)
                return ex;
        struct qlist list;
        if (qlist_read_spool(q, &list, stderr) < 0) {
                queue_close(q);
                return EX_TEMPFAIL;
        }
        size_t n = 0;
        for (size_t i = 0; i < list.n; i++) {
                const char *id = list.v[i].env->id;
                if (strcmp(target, "ALL") != 0 && strcmp(target, id) != 0)
                        continue;
                bool held = strcmp(list.v[i].queue_name, "hold") == 0;
                enum queue_dir from = held ? QUEUE_HOLD
                                      : strcmp(list.v[i].queue_name, "incoming") == 0
                                          ? QUEUE_INCOMING
                                          : QUEUE_ACTIVE;
                int r = action == 'd'   ? queue_remove(q, from, id)
                        : action == 'h' ? (held ? 1 : queue_move(q, id, from, QUEUE_HOLD))
                                        : (held ? queue_move(q, id, QUEUE_HOLD, QUEUE_ACTIVE) : 1);
                if (r == 0)
                        n++;
        }
        qlist_free(&list);
        queue_close(q);
        fprintf(stderr, "tarryq: %s: %zu message%s\n", verb(action), n, n == 1 ? "" : "s");
        if (n == 0 && strcmp(target, "ALL") != 0)
                return EX_NOINPUT;
        return 0;
}

int tarryq_admin(const char *config_path, char action, const char *target, bool force)
{
        struct tarry_config *cfg = NULL;
        int ex = cli_load_config("tarryq", config_path, &cfg);
        if (ex)
                return ex;
        struct status_client *c = client_for(cfg);
        long code = 0;
        _cleanup_free_ char *body = NULL;
        size_t len;
        bool up = c && status_client_request(c, "GET", "/status", &code, &body, &len) == 0;
        if (up && code == 403) {
                /* only a mailq: socket (own messages, listing only) let us in */
                char words[512];
                fprintf(stderr,
                        "tarryq: not allowed: %s (%s); actions need root, tarryd's user "
                        "or the status_group\n",
                        error_words(body, words, sizeof(words)), status_client_endpoint(c));
                ex = EX_NOPERM;
        } else if (!up) {
                if (action == 'd' || action == 'h' || action == 'H') {
                        warn_offline(c);
                        ex = offline_action(cfg, action, target);
                } else {
                        fprintf(stderr, "tarryq: cannot %s: tarryd is not answering (%s)\n",
                                action == 'f' ? "flush the queue" : "retry the message",
                                c ? status_client_last_error(c) : "no status_listen configured");
                        ex = EX_UNAVAILABLE;
                }
        } else if (action == 'f') {
                ex = request(c, "POST", "/flush", "flush");
                if (ex == 0)
                        say_still_suspended(c);
        } else if (target && strcmp(target, "ALL") == 0 && action != 'i') {
                int n = each_listed(c, action);
                if (n >= 0)
                        fprintf(stderr, "tarryq: %s: %d message%s\n", verb(action), n,
                                n == 1 ? "" : "s");
                ex = n < 0 ? EX_UNAVAILABLE : 0;
        } else {
                char path[64];
                if (!target || strlen(target) != QUEUE_ID_LEN) {
                        fprintf(stderr, "tarryq: '%s' is not a queue ID\n", target ? target : "");
                        ex = EX_USAGE;
                } else if (action == 'i') {
                        snprintf(path, sizeof(path), "/queue/%s/%s", target,
                                 force ? "force" : "retry");
                        long code = 0;
                        _cleanup_free_ char *resp = NULL;
                        size_t len;
                        int r = status_client_request(c, "POST", path, &code, &resp, &len);
                        if (r < 0) {
                                fprintf(stderr, "tarryq: %s: %s\n", target,
                                        status_client_last_error(c));
                                ex = EX_UNAVAILABLE;
                        } else if (code == 409 && !force && resp && strstr(resp, "suspended")) {
                                ex = explain_held_back(c, target);
                        } else {
                                ex = exit_for_http(code, target, resp);
                        }
                } else {
                        path_of(action, target, path, sizeof(path));
                        ex = request(c, method_of(action), path, target);
                        if (ex == 0)
                                fprintf(stderr, "tarryq: %s: 1 message\n", verb(action));
                }
        }
        status_client_free(c);
        cfg_free(cfg);
        return ex;
}

int tarryq_resume(const char *config_path, const char *destination)
{
        struct tarry_config *cfg = NULL;
        int ex = cli_load_config("tarryq", config_path, &cfg);
        if (ex)
                return ex;
        struct status_client *c = client_for(cfg);
        char path[400];
        if (snprintf(path, sizeof(path), "/destinations/%s/resume", destination) >=
                (int)sizeof(path) ||
            strchr(destination, '/')) {
                fprintf(stderr, "tarryq: '%s' is not a destination name (tarryq -s lists them)\n",
                        destination);
                ex = EX_USAGE;
        } else if (!c) {
                fprintf(stderr, "tarryq: cannot resume: no status_listen configured\n");
                ex = EX_UNAVAILABLE;
        } else {
                long code = 0;
                _cleanup_free_ char *body = NULL;
                size_t len;
                int r = status_client_request(c, "POST", path, &code, &body, &len);
                if (r < 0) {
                        fprintf(stderr, "tarryq: cannot resume %s: %s\n", destination,
                                status_client_last_error(c));
                        ex = EX_UNAVAILABLE;
                } else if (code == 404) {
                        fprintf(stderr,
                                "tarryq: %s: no such destination is known (tarryq -s lists "
                                "them)\n",
                                destination);
                        ex = EX_NOINPUT;
                } else if ((ex = exit_for_http(code, destination, body)) == 0) {
                        fprintf(stderr, "tarryq: %s: resumed\n", destination);
                }
        }
        status_client_free(c);
        cfg_free(cfg);
        return ex;
}

/* ---- -s ---- */

/* Local time with its zone: "Mon Dec  7 14:05:00 2026 +0100". */
static const char *local_time(json_t *v, char *buf, size_t len)
{
        buf[0] = '\0';
        if (!json_is_integer(v))
                return buf;
        time_t t = (time_t)json_integer_value(v);
        struct tm tm;
        if (localtime_r(&t, &tm))
                strftime(buf, len, "%a %b %e %H:%M:%S %Y %z", &tm);
        return buf;
}

static void print_time(const char *label, json_t *v)
{
        char buf[64];
        if (*local_time(v, buf, sizeof(buf)))
                printf("%s%s\n", label, buf);
}

static json_int_t num(json_t *o, const char *key)
{
        return json_integer_value(json_object_get(o, key));
}

/* Issue 21: what retrying cannot fix. The unix socket lists each diagnosis;
 * the TCP view only counts them per code. */
static void print_diagnoses(json_t *diags)
{
        size_t i;
        json_t *v;
        json_array_foreach (diags, i, v) {
                const char *src = json_string_value(json_object_get(v, "source_address"));
                printf("diagnosis %s: %s%s%s\n", json_string_value(json_object_get(v, "code")),
                       json_string_value(json_object_get(v, "destination")),
                       src && *src ? " from " : "", src ? src : "");
                print_time("    since: ", json_object_get(v, "since"));
                printf("    evidence: %s\n    advice: %s\n",
                       json_string_value(json_object_get(v, "evidence")),
                       json_string_value(json_object_get(v, "advice")));
        }
        if (!json_is_object(diags))
                return;
        const char *k;
        bool any = false;
        json_object_foreach (diags, k, v)
                if (json_integer_value(v)) {
                        printf("%s %s %lld", any ? "," : "diagnoses:", k, json_integer_value(v));
                        any = true;
                }
        if (any)
                printf("\n");
}

static void print_status(json_t *st)
{
        struct status_report rep;
        if (status_report_read(st, &rep) < 0) {
                printf("tarryd answered something that is not a status\n");
                return;
        }
        int64_t up = rep.uptime_s;
        printf("tarryd %s, up %lldd %02lld:%02lld:%02lld\n", rep.version, (long long)(up / 86400),
               (long long)(up % 86400 / 3600), (long long)(up % 3600 / 60), (long long)(up % 60));
        printf("queue: %llu total (%llu incoming, %llu active, %llu deferred, %llu hold, %llu "
               "corrupt)\n",
               (unsigned long long)rep.queue.total, (unsigned long long)rep.queue.incoming,
               (unsigned long long)rep.queue.active, (unsigned long long)rep.queue.deferred,
               (unsigned long long)rep.queue.hold, (unsigned long long)rep.queue.corrupt);
        if (rep.queue.unread)
                printf("still reading the queue after a start: %llu message(s) not counted yet\n",
                       (unsigned long long)rep.queue.unread);
        print_time("oldest arrival: ", json_object_get(st, "oldest_arrival"));
        printf("attempts: %llu (%llu delivered, %llu deferred, %llu failed)\n",
               (unsigned long long)rep.attempts.total, (unsigned long long)rep.attempts.delivered,
               (unsigned long long)rep.attempts.deferred, (unsigned long long)rep.attempts.failed);
        printf("deferred by class:");
        for (int c = 0; c < CLASS__MAX; c++)
                if (rep.by_class[c])
                        printf(" %s %llu", reply_class_name(c),
                               (unsigned long long)rep.by_class[c]);
        printf("\n");
        json_t *v;
        size_t i;
        json_array_foreach (json_object_get(st, "destinations"), i, v) {
                const char *src = json_string_value(json_object_get(v, "source_address"));
                printf("destination %s%s%s: %s, concurrency %lld, %lld queued",
                       json_string_value(json_object_get(v, "destination")),
                       src && *src ? " from " : "", src ? src : "",
                       json_string_value(json_object_get(v, "state")), num(v, "concurrency"),
                       num(v, "queued"));
                char when[64];
                if (*local_time(json_object_get(v, "until"), when, sizeof(when))) {
                        const char *cause = json_string_value(json_object_get(v, "cause"));
                        printf(", until %s", when);
                        if (cause)
                                printf(" after a %s deferral", cause);
                }
                printf("\n");
                json_t *learned = json_object_get(v, "learned_greylist_s");
                if (json_is_integer(learned)) {
                        printf("    learned greylist window: %llds",
                               (long long)json_integer_value(learned));
                        json_int_t lo = num(v, "learned_lower_s"), hi = num(v, "learned_upper_s");
                        if (lo > 0)
                                printf(" (refused at %llds, accepted at %llds)", (long long)lo,
                                       (long long)hi);
                        else if (hi > 0)
                                printf(" (accepted at %llds)", (long long)hi);
                        printf("\n");
                }
                const char *last = json_string_value(json_object_get(v, "last_reply"));
                if (last)
                        printf("    last reply: %s\n", last);
        }
        json_array_foreach (json_object_get(st, "sites"), i, v)
                printf("site %s: %lld domain(s), %lld message(s)\n",
                       json_string_value(json_object_get(v, "site")), num(v, "domains"),
                       num(v, "messages"));
        print_diagnoses(json_object_get(st, "diagnoses"));
}

/* --fleet: one line per node, from what each published last. */
static void print_fleet(json_t *fleet)
{
        if (!json_is_object(fleet)) {
                printf("fleet: none ([cluster] redis is not set)\n");
                return;
        }
        json_t *nodes = json_object_get(fleet, "nodes");
        printf("fleet: %zu node(s), this one %s; redis %s\n", json_array_size(nodes),
               json_string_value(json_object_get(fleet, "node")),
               json_is_true(json_object_get(fleet, "redis_connected"))
                   ? "connected"
                   : "not connected (the list is the last one read)");
        size_t i;
        json_t *n;
        json_array_foreach (nodes, i, n) {
                printf("  %s: %lld queued, %lld deferred, %lld on hold, last seen %llds ago",
                       json_string_value(json_object_get(n, "node")),
                       (long long)json_integer_value(json_object_get(n, "queue")),
                       (long long)json_integer_value(json_object_get(n, "deferred")),
                       (long long)json_integer_value(json_object_get(n, "hold")),
                       (long long)json_integer_value(json_object_get(n, "age_s")));
                const char *k;
                json_t *v;
                const char *sep = "; ";
                json_object_foreach (json_object_get(n, "by_class"), k, v) {
                        printf("%s%s %lld", sep, k, (long long)json_integer_value(v));
                        sep = ", ";
                }
                printf("\n");
        }
}

int tarryq_status(const char *config_path, bool fleet)
{
        struct tarry_config *cfg = NULL;
        int ex = cli_load_config("tarryq", config_path, &cfg);
        if (ex)
                return ex;
        struct status_client *c = client_for(cfg);
        long code = 0;
        _cleanup_(json_decrefp) json_t *st = NULL;
        int r = c ? status_client_request_json(c, "GET", fleet ? "/status?fleet=1" : "/status",
                                               &code, &st)
                  : -ENOENT;
        const char *refused = json_string_value(json_object_get(st, "error"));
        if (r == 0 && code != 200 && refused) {
                fprintf(stderr, "tarryq: cannot read the status: %s (%s)\n", refused,
                        status_client_endpoint(c));
                ex = code == 403 ? EX_NOPERM : EX_UNAVAILABLE;
        } else if (r < 0 || code != 200) {
                fprintf(stderr, "tarryq: cannot read the status: tarryd is not answering (%s)\n",
                        c ? status_client_last_error(c) : "no status_listen configured");
                ex = EX_UNAVAILABLE;
        } else {
                print_status(st);
                if (fleet)
                        print_fleet(json_object_get(st, "fleet"));
        }
        status_client_free(c);
        cfg_free(cfg);
        return ex;
}
