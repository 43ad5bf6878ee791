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
                queue_sender_shown(env));
        char saved[9000] = "", why[9000];
        for (size_t i = 0; i < env->n_rcpt; i++) {
                if (!queue_rcpt_waiting(&env->rcpt[i]))
                        continue;
                queue_wait_words(&env->rcpt[i], e->queue_name, why, sizeof(why));
                if (strcmp(saved, why) != 0) {
                        snprintf(saved, sizeof(saved), "%s", why);
                        int padding = 76 - (int)strlen(why);
                        fprintf(f, "%*s(%s)\n", padding < 0 ? 0 : padding, "", why);
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

int qlist_print_json(FILE *f, const struct qentry *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                _cleanup_(json_decrefp) json_t *o = queue_listing_json(v[i].queue_name, v[i].env);
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
