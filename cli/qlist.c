/* cli/qlist.c — reading the spool for a listing and printing it; see qlist.h. */
#include "cli/qlist.h"
#include "cli/cli_util.h"
#include "common/cleanup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

/* Postfix showq_compat.c, long queue ID layout. */
#define L_STRING_FORMAT "%-17s %8s %-19s %s\n"
#define L_SENDER_FORMAT "%-17s %8llu %19.19s %s\n"
#define EMPTY_SENDER    "MAILER-DAEMON" /* Postfix's empty_address_recipient */

const char *qlist_queue_name(enum queue_dir d, const struct envelope *env)
{
        switch (d) {
        case QUEUE_INCOMING:
                return "incoming";
        case QUEUE_HOLD:
                return "hold";
        case QUEUE_CORRUPT:
                return "corrupt";
        default:
                break;
        }
        for (size_t i = 0; i < env->n_rcpt; i++)
                if (env->rcpt[i].state == RCPT_DEFERRED)
                        return "deferred";
        return "active";
}

void qlist_free(struct qlist *l)
{
        for (size_t i = 0; i < l->n; i++)
                envelope_free(l->v[i].env);
        free(l->v);
        l->v = NULL;
        l->n = 0;
}

struct scan_ctx {
        struct queue *q;
        enum queue_dir d;
        struct qlist *list;
        FILE *warn;
};

static int scan_one(const char *id, void *userdata)
{
        struct scan_ctx *c = userdata;
        struct envelope *env = NULL;
        const char *why = NULL;
        int r = queue_load(c->q, c->d, id, &env, &why);
        if (r == -ENOENT)
                return 0; /* delivered or moved while we looked */
        if (r < 0) {
                if (c->warn)
                        fprintf(c->warn, "warning: %s/%s: cannot read the envelope: %s\n",
                                queue_dir_name(c->d), id, r == -EBADMSG ? why : strerror(-r));
                return 0;
        }
        struct qentry *v = realloc(c->list->v, (c->list->n + 1) * sizeof(*v));
        if (!v) {
                envelope_free(env);
                return -ENOMEM;
        }
        c->list->v = v;
        v[c->list->n++] = (struct qentry){.queue_name = qlist_queue_name(c->d, env), .env = env};
        return 0;
}

static int by_id(const void *a, const void *b)
{
        const struct qentry *x = a, *y = b;
        return strcmp(x->env->id, y->env->id);
}

int qlist_read_spool(struct queue *q, struct qlist *out, FILE *warn)
{
        static const enum queue_dir dirs[] = {QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_HOLD};
        *out = (struct qlist){0};
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                struct scan_ctx c = {.q = q, .d = dirs[i], .list = out, .warn = warn};
                int r = queue_scan(q, dirs[i], scan_one, &c);
                if (r < 0) {
                        qlist_free(out);
                        return r;
                }
        }
        if (out->n > 1)
                qsort(out->v, out->n, sizeof(out->v[0]), by_id);
        return 0;
}

/* Recipients a listing shows: those still to be delivered. */
static bool shown(const struct envelope_rcpt *r)
{
        return r->state == RCPT_PENDING || r->state == RCPT_DEFERRED;
}

/* The relay without a ":port" after its "[ip]". */
static int relay_len(const char *relay)
{
        const char *end = strrchr(relay, ']');
        if (end && end[1] == ':')
                return (int)(end + 1 - relay);
        return (int)strlen(relay);
}

const char *qlist_delay_reason(const struct envelope_rcpt *r, char *buf, size_t len)
{
        buf[0] = '\0';
        if (r->state != RCPT_DEFERRED)
                return buf;
        const char *text = r->last_reply ? r->last_reply : "";
        char code[32] = "";
        if (r->reply_code > 0) {
                char c3[16];
                snprintf(c3, sizeof(c3), "%d", r->reply_code);
                if (strncmp(text, c3, 3) != 0) /* the text may carry its code already */
                        snprintf(code, sizeof(code), "%d %s%s", r->reply_code,
                                 r->dsn_status ? r->dsn_status : "", r->dsn_status ? " " : "");
        }
        if (!*text && !*code)
                return buf;
        if (r->relay) /* "host[ip]:port" is shown as Postfix does: "host[ip]" */
                snprintf(buf, len, "host %.*s said: %s%s", relay_len(r->relay), r->relay, code,
                         text);
        else
                snprintf(buf, len, "%s%s", code, text);
        size_t n = strlen(buf);
        while (n > 0 && buf[n - 1] == ' ')
                buf[--n] = '\0';
        return buf;
}

static const char *sender_shown(const struct envelope *env)
{
        return env->sender && *env->sender ? env->sender : EMPTY_SENDER;
}

static void print_message(FILE *f, const struct qentry *e)
{
        const struct envelope *env = e->env;
        char id_status[QUEUE_ID_LEN + 3];
        const char *mark = strcmp(e->queue_name, "active") == 0 ? "*"
                           : strcmp(e->queue_name, "hold") == 0 ? "!"
                                                                : "";
        snprintf(id_status, sizeof(id_status), "%s%s", env->id, mark);
        time_t t = (time_t)(env->arrival_us / 1000000);
        struct tm tm;
        char when[64] = "";
        if (localtime_r(&t, &tm))
                asctime_r(&tm, when);
        fprintf(f, L_SENDER_FORMAT, id_status, (unsigned long long)env->size, when,
                sender_shown(env));
        char saved[9000] = "", why[9000];
        for (size_t i = 0; i < env->n_rcpt; i++) {
                if (!shown(&env->rcpt[i]))
                        continue;
                qlist_delay_reason(&env->rcpt[i], why, sizeof(why));
                if (strcmp(saved, why) != 0) {
                        snprintf(saved, sizeof(saved), "%s", why);
                        const char *show = *why ? why : "reason unavailable";
                        int padding = 76 - (int)strlen(show);
                        fprintf(f, "%*s(%s)\n", padding < 0 ? 0 : padding, "", show);
                }
                fprintf(f, L_STRING_FORMAT, "", "", "", env->rcpt[i].address);
        }
}

int qlist_print_postqueue(FILE *f, const struct qentry *v, size_t n)
{
        unsigned long long total = 0;
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        fputc('\n', f);
                else
                        fprintf(f, L_STRING_FORMAT, "----Queue ID-----", "--Size--",
                                "---Arrival Time----", "--Sender/Recipient------");
                print_message(f, &v[i]);
                total += v[i].env->size;
        }
        if (n == 0)
                fprintf(f, "Mail queue is empty\n");
        else
                fprintf(f, "\n-- %llu Kbytes in %zu Request%s.\n", total / 1024, n,
                        n == 1 ? "" : "s");
        return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

static json_t *time_or_null(int64_t us)
{
        return us > 0 ? json_integer(us / 1000000) : json_null();
}

static json_t *rcpt_json(const struct envelope_rcpt *r)
{
        char why[9000];
        json_t *o = json_object();
        json_object_set_new(o, "address", json_string(r->address));
        if (*qlist_delay_reason(r, why, sizeof(why)))
                json_object_set_new(o, "delay_reason", json_string(why));
        json_object_set_new(o, "class", r->reply_class ? json_string(r->reply_class) : json_null());
        json_object_set_new(o, "next_attempt",
                            time_or_null(r->state == RCPT_DEFERRED ? r->next_attempt_us : 0));
        json_object_set_new(o, "attempts", json_integer(r->attempts));
        return o;
}

/* The message-level tarry fields: the recipient due first sets class and next_attempt. */
static void add_summary(json_t *o, const struct envelope *env)
{
        const struct envelope_rcpt *first = NULL;
        int attempts = 0;
        for (size_t i = 0; i < env->n_rcpt; i++) {
                const struct envelope_rcpt *r = &env->rcpt[i];
                if (!shown(r))
                        continue;
                if (r->attempts > attempts)
                        attempts = r->attempts;
                if (r->state == RCPT_DEFERRED &&
                    (!first || r->next_attempt_us < first->next_attempt_us))
                        first = r;
        }
        json_object_set_new(o, "class",
                            first && first->reply_class ? json_string(first->reply_class)
                                                        : json_null());
        json_object_set_new(o, "next_attempt", time_or_null(first ? first->next_attempt_us : 0));
        json_object_set_new(o, "attempts", json_integer(attempts));
}

static json_t *message_json(const struct qentry *e)
{
        const struct envelope *env = e->env;
        json_t *o = json_object();
        json_object_set_new(o, "queue_name", json_string(e->queue_name));
        json_object_set_new(o, "queue_id", json_string(env->id));
        json_object_set_new(o, "arrival_time", json_integer(env->arrival_us / 1000000));
        json_object_set_new(o, "message_size", json_integer((json_int_t)env->size));
        json_object_set_new(o, "forced_expire", json_false());
        json_object_set_new(o, "sender", json_string(sender_shown(env)));
        json_t *rcpts = json_array();
        for (size_t i = 0; i < env->n_rcpt; i++)
                if (shown(&env->rcpt[i]))
                        json_array_append_new(rcpts, rcpt_json(&env->rcpt[i]));
        json_object_set_new(o, "recipients", rcpts);
        add_summary(o, env);
        return o;
}

int qlist_print_json(FILE *f, const struct qentry *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                _cleanup_(json_decrefp) json_t *o = message_json(&v[i]);
                _cleanup_free_ char *line = o ? json_dumps(o, 0) : NULL;
                if (!line)
                        return -ENOMEM;
                fprintf(f, "%s\n", line);
        }
        return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

int qlist_main(const char *prog, const char *config_path, bool json)
{
        struct tarry_config *cfg = NULL;
        int ex = cli_load_config(prog, config_path, &cfg);
        if (ex)
                return ex;
        struct queue *q = NULL;
        ex = cli_open_spool(prog, cfg, &q);
        cfg_free(cfg);
        if (ex)
                return ex;
        struct qlist list;
        int r = qlist_read_spool(q, &list, stderr);
        queue_close(q);
        if (r < 0) {
                fprintf(stderr, "%s: cannot read the spool: %s\n", prog, strerror(-r));
                return EX_TEMPFAIL;
        }
        r = json ? qlist_print_json(stdout, list.v, list.n)
                 : qlist_print_postqueue(stdout, list.v, list.n);
        qlist_free(&list);
        return r < 0 ? EX_IOERR : 0;
}
