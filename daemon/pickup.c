/* daemon/pickup.c — new mail from incoming/, and the queue at start-up.
 *
 * sendmail renames each committed message into incoming/; inotify tells us
 * at once (IN_MOVED_TO), and a full scan runs at start and after an inotify
 * queue overflow. Each message moves to active/ before it is indexed, so a
 * message is in exactly one folder and listed exactly once.
 */
#include "daemon/log.h"
#include "daemon/tarryd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>

static void quarantine(struct tarryd *d, enum queue_dir dir, const char *id, const char *why)
{
        int r = queue_move(d->queue, id, dir, QUEUE_CORRUPT);
        d->n_corrupt++;
        if (d->metrics)
                status_counter_add(d->metrics, STATUS_M_SPOOL_ERRORS, STATUS_LABELS("corrupt"), 1);
        if (r < 0)
                log_error("%s: unreadable envelope (%s) and cannot move it to corrupt/: %s", id,
                          why, strerror(-r));
        else
                log_error("%s: unreadable envelope (%s); moved to corrupt/", id, why);
}

static void summarise(struct msg *m, const struct envelope *env)
{
        m->size = env->size;
        m->arrival_us = env->arrival_us;
        m->n_pending = 0;
        m->next_attempt_us = 0;
        for (size_t i = 0; i < env->n_rcpt; i++) {
                const struct envelope_rcpt *r = &env->rcpt[i];
                if (r->state != RCPT_PENDING && r->state != RCPT_DEFERRED)
                        continue;
                m->n_pending++;
                if (r->reply_class)
                        m->reply_class = (int8_t)reply_class_from_name(r->reply_class);
                if (m->n_pending == 1 || r->next_attempt_us < m->next_attempt_us)
                        m->next_attempt_us = r->next_attempt_us;
        }
}

/* Load id's envelope and index it; fresh: just picked up (log its arrival). */
static int index_message(struct tarryd *d, enum queue_dir dir, const char *id, bool fresh)
{
        struct envelope *env = NULL;
        const char *why = NULL;
        int r = queue_load(d->queue, dir, id, &env, &why);
        if (r == -EBADMSG) {
                quarantine(d, dir, id, why ? why : "invalid");
                return 0;
        }
        if (r < 0)
                return r == -ENOENT ? 0 : r;

        if (fresh)
                log_record(LOG_INFO, &(struct log_fields){.queue_id = id},
                           "%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)", id, env->sender,
                           (unsigned long long)env->size, env->n_rcpt);
        struct msg *m = msgindex_get(d->index, id);
        if (!m && (r = msgindex_add(d->index, id, &m)) < 0) {
                envelope_free(env);
                return r;
        }
        m->dir = dir;
        summarise(m, env);
        if (dir != QUEUE_ACTIVE) {
                envelope_free(env);
                return 0;
        }
        m->env = env;
        r = deliver_schedule_message(d, m);
        if (m->inflight == 0 && msgindex_get(d->index, id) == m) {
                envelope_free(m->env);
                m->env = NULL;
        }
        return r;
}

int pickup_index_message(struct tarryd *d, enum queue_dir dir, const char *id)
{
        return index_message(d, dir, id, false);
}

static int pickup_one(struct tarryd *d, const char *id)
{
        if (!queue_id_valid(id))
                return 0; /* not ours (an editor's temp file, say) */
        int r = queue_move(d->queue, id, QUEUE_INCOMING, QUEUE_ACTIVE);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                log_error("%s: cannot move from incoming/ to active/: %s", id, strerror(-r));
                return r;
        }
        return index_message(d, QUEUE_ACTIVE, id, true);
}

static int scan_cb(const char *id, void *userdata)
{
        pickup_one(userdata, id);
        return 0;
}

int pickup_scan_incoming(struct tarryd *d)
{
        int r = queue_scan(d->queue, QUEUE_INCOMING, scan_cb, d);
        deliver_run_due(d);
        return r;
}

static int load_cb(const char *id, void *userdata)
{
        struct tarryd *d = userdata;
        int r = pickup_index_message(d, QUEUE_ACTIVE, id);
        if (r < 0)
                log_error("%s: cannot load: %s", id, strerror(-r));
        return 0;
}

static int hold_cb(const char *id, void *userdata)
{
        pickup_index_message(userdata, QUEUE_HOLD, id);
        return 0;
}

int pickup_load_active(struct tarryd *d)
{
        int r = queue_scan(d->queue, QUEUE_ACTIVE, load_cb, d);
        if (r < 0)
                return r;
        return queue_scan(d->queue, QUEUE_HOLD, hold_cb, d);
}

static int on_incoming(sd_event_source *s, const struct inotify_event *ev, void *userdata)
{
        (void)s;
        struct tarryd *d = userdata;
        if (ev->mask & IN_Q_OVERFLOW) {
                log_warn("inotify queue overflow: rescanning incoming/");
                return pickup_scan_incoming(d);
        }
        if (ev->len > 0)
                pickup_one(d, ev->name);
        deliver_run_due(d);
        return 0;
}

int pickup_start(struct tarryd *d)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", d->cfg->spool_dir, queue_dir_name(QUEUE_INCOMING));
        int r = sd_event_add_inotify(d->loop, &d->incoming_watch, path,
                                     IN_MOVED_TO | IN_CREATE | IN_ONLYDIR, on_incoming, d);
        if (r < 0)
                return r;
        return pickup_scan_incoming(d);
}
