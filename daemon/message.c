/* daemon/message.c — the lifecycle of one queued message; see message.h.
 *
 * Before this file the summary and the quarantine were written twice
 * (pickup.c and deliver.c) and had drifted: the copy run at pickup kept a
 * class and same_source from before when it summarised a record again (a
 * release from hold) and said "due now" for a message with no recipient
 * waiting, where the copy run after each attempt said "none"; the
 * quarantine at delivery time was not counted in
 * tarry_spool_errors_total{kind="corrupt"} and logged "moved to corrupt/"
 * before the move, whether or not it worked. What is here is the copy that
 * was right in each case: the summary after an attempt, the quarantine at
 * pickup.
 */
#include "daemon/message.h"

#include "daemon/log.h"
#include "daemon/tarryd.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

void message_summarise(struct msg *m, const struct envelope *env)
{
        m->size = env->size;
        m->arrival_us = env->arrival_us;
        m->n_pending = 0;
        m->reply_class = -1;
        m->next_attempt_us = INT64_MAX;
        m->same_source = false;
        for (size_t i = 0; i < env->n_rcpt; i++) {
                const struct envelope_rcpt *r = &env->rcpt[i];
                if (!queue_rcpt_waiting(r))
                        continue;
                m->n_pending++;
                int cls = r->reply_class ? reply_class_from_name(r->reply_class) : -1;
                if (cls >= 0)
                        m->reply_class = (int8_t)cls;
                if (cls == CLASS_GREYLIST || cls == CLASS_UNKNOWN_TEMP)
                        m->same_source = true;
                if (r->next_attempt_us < m->next_attempt_us)
                        m->next_attempt_us = r->next_attempt_us;
        }
}

int message_index(struct tarryd *d, enum queue_dir dir, const struct envelope *env,
                  struct msg **out, bool *added)
{
        struct msg *m = msgindex_get(d->index, env->id);
        *added = !m;
        if (!m) {
                int r = msgindex_add(d->index, env->id, &m);
                if (r < 0)
                        return r;
        }
        m->dir = dir;
        message_summarise(m, env);
        *out = m;
        return 0;
}

int message_index_snap(struct tarryd *d, const struct queue_snap_rec *r, struct msg **out)
{
        struct msg *m;
        int ret = msgindex_add(d->index, r->id, &m);
        if (ret < 0)
                return ret;
        m->dir = r->dir;
        m->reply_class = r->reply_class;
        m->n_pending = r->n_pending;
        m->size = r->size;
        m->arrival_us = r->arrival_us;
        m->next_attempt_us = r->next_attempt_us;
        *out = m;
        return 0;
}

void message_snap_fields(const struct msg *m, struct queue_snap_rec *r)
{
        memcpy(r->id, m->id, sizeof(r->id));
        r->dir = m->dir;
        r->reply_class = m->reply_class;
        r->n_pending = m->n_pending;
        r->size = m->size;
        r->arrival_us = m->arrival_us;
        r->next_attempt_us = m->next_attempt_us;
}

void message_quarantine(struct tarryd *d, enum queue_dir dir, const char *id, const char *why)
{
        int r = queue_move(d->queue, id, dir, QUEUE_CORRUPT);
        d->n_corrupt++;
        if (d->metrics)
                status_counter_add(d->metrics, STATUS_M_SPOOL_ERRORS, STATUS_LABELS("corrupt"), 1);
        if (!why)
                why = "invalid";
        if (r < 0)
                log_error("%s: unreadable envelope (%s) and cannot move it to corrupt/: %s", id,
                          why, strerror(-r));
        else
                log_error("%s: unreadable envelope (%s); moved to corrupt/", id, why);
}

int message_load_envelope(struct tarryd *d, struct msg *m)
{
        if (m->env)
                return 0;
        const char *why = NULL;
        int r = queue_load(d->queue, QUEUE_ACTIVE, m->id, &m->env, &why);
        if (r == 0 && (r = pickup_take_in(d, m->env, false)) < 0) {
                envelope_free(m->env); /* not as it must be sent: not at all */
                m->env = NULL;
        }
        if (r == -EBADMSG)
                message_quarantine(d, QUEUE_ACTIVE, m->id, why);
        return r;
}

void message_attach_envelope(struct msg *m, struct envelope *env)
{
        if (m->env != env)
                envelope_free(m->env);
        m->env = env;
}

void message_release_envelope(struct msg *m)
{
        if (m->inflight == 0 && !m->dirty) {
                envelope_free(m->env);
                m->env = NULL;
        }
}

void message_force(struct msg *m, bool on)
{
        if (!on || m->dir == QUEUE_ACTIVE)
                m->forced = on;
}

int message_hold(struct tarryd *d, struct msg *m)
{
        if (m->dir == QUEUE_HOLD)
                return 0;
        if (m->inflight || m->dirty) /* dirty: its newest state is only in memory */
                return -EBUSY;
        int r = message_park(d, m);
        if (r < 0)
                return r;
        log_info("%s: held by the administrator", m->id);
        return 1;
}

int message_park(struct tarryd *d, struct msg *m)
{
        int r = queue_move(d->queue, m->id, QUEUE_ACTIVE, QUEUE_HOLD);
        if (r < 0)
                return r;
        deliver_forget_message(d, m);
        m->dir = QUEUE_HOLD;
        return 0;
}

int message_release(struct tarryd *d, struct msg *m)
{
        if (m->dir != QUEUE_HOLD)
                return 0;
        int r = queue_move(d->queue, m->id, QUEUE_HOLD, QUEUE_ACTIVE);
        if (r < 0)
                return r;
        log_info("%s: released from hold", m->id);
        /* read and summarised again, and scheduled (pickup.c) */
        r = pickup_index_message(d, QUEUE_ACTIVE, m->id);
        deliver_run_due(d);
        return r < 0 ? r : 1;
}

int message_delete(struct tarryd *d, struct msg *m)
{
        if (m->inflight)
                return -EBUSY;
        int r = queue_remove(d->queue, m->dir, m->id);
        if (r < 0 && r != -ENOENT)
                return r;
        log_info("%s: removed by the administrator", m->id);
        message_free(d, m);
        return 1;
}

int message_discard(struct tarryd *d, struct msg *m)
{
        int r = d->remover ? remover_remove(d->remover, m->id)
                           : queue_remove(d->queue, QUEUE_ACTIVE, m->id);
        return r == -ENOENT ? 0 : r;
}

void message_removed(struct tarryd *d, struct msg *m)
{
        log_record(LOG_INFO, &(struct log_fields){.queue_id = m->id}, "%s: removed", m->id);
        message_free(d, m);
}

void message_free(struct tarryd *d, struct msg *m)
{
        deliver_forget_message(d, m);
        msgindex_remove(d->index, m);
}
