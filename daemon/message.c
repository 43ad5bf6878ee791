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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the counts /status shows (message.h, struct message_tally) ----
 *
 * Every change to a record's dir, class, next attempt, arrival or attempts
 * in flight happens in this file, between untally (the record as it was)
 * and tally (as it is now). Deferred messages wait in a min-heap by next
 * attempt; an entry says "this message became due at this time" and is
 * believed only if the record still says so when it comes up (the record
 * exists, is not held, not counted due, nothing in flight, same next
 * attempt), so a change never has to find its old entry. Entries no longer
 * true are dropped when they come up, and all of them at once when they
 * outnumber the deferred messages (a walk of the index, rebuilding the
 * heap: at most once per as many changes as there are messages). */

static uint64_t id_number(const char *id)
{
        uint64_t key = 0;
        msgindex_id_key(id, &key); /* an indexed ID is a queue ID */
        return key;
}

/* Does m's arrival time say what its ID says (queue_new_id: seconds, then
 * microseconds in hex)? Then the first ID in the index is the oldest. */
static bool arrival_is_id_time(const struct msg *m)
{
        return m->arrival_us == queue_id_time_us(m->id);
}

static void heap_up(struct message_due *h, size_t i)
{
        struct message_due e = h[i];
        while (i > 0 && h[(i - 1) / 2].at > e.at) {
                h[i] = h[(i - 1) / 2];
                i = (i - 1) / 2;
        }
        h[i] = e;
}

static void heap_down(struct message_due *h, size_t n, size_t i)
{
        struct message_due e = h[i];
        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= n)
                        break;
                if (c + 1 < n && h[c + 1].at < h[c].at)
                        c++;
                if (h[c].at >= e.at)
                        break;
                h[i] = h[c];
                i = c;
        }
        h[i] = e;
}

static int heap_push(struct message_tally *t, int64_t at, uint64_t key)
{
        if (t->n_heap == t->cap_heap) {
                size_t cap = t->cap_heap ? t->cap_heap * 2 : 1024;
                struct message_due *h = realloc(t->heap, cap * sizeof(*h));
                if (!h)
                        return -ENOMEM;
                t->heap = h;
                t->cap_heap = cap;
        }
        t->heap[t->n_heap] = (struct message_due){.at = at, .key = key};
        heap_up(t->heap, t->n_heap++);
        return 0;
}

static int push_deferred_cb(struct msg *m, void *userdata)
{
        struct message_tally *t = userdata;
        if (m->id[0] && m->dir != QUEUE_HOLD && !m->due_counted &&
            t->n_heap < t->cap_heap) /* room was made: no allocation, no failure */
                t->heap[t->n_heap++] =
                    (struct message_due){.at = m->next_attempt_us, .key = id_number(m->id)};
        return 0;
}

/* The heap again with one entry per deferred message, none stale. */
static void heap_rebuild(struct tarryd *d)
{
        struct message_tally *t = &d->tally;
        t->n_heap = 0;
        msgindex_foreach(d->index, push_deferred_cb, t);
        for (size_t i = t->n_heap / 2; i-- > 0;)
                heap_down(t->heap, t->n_heap, i);
}

/* Without memory for the heap the message is counted due at once (active
 * a little early); the count of messages stays right. */
static void tally(struct tarryd *d, struct msg *m)
{
        struct message_tally *t = &d->tally;
        if (!arrival_is_id_time(m))
                t->n_odd_arrival++;
        m->due_counted = false;
        if (m->dir == QUEUE_HOLD) {
                t->n_hold++;
                return;
        }
        t->n_ready++;
        if (m->reply_class >= 0 && m->reply_class < CLASS__MAX)
                t->by_class[m->reply_class]++;
        if (m->inflight > 0 || m->next_attempt_us <= t->due_mark ||
            heap_push(t, m->next_attempt_us, id_number(m->id)) < 0) {
                m->due_counted = true;
                t->n_due++;
                return;
        }
        if (t->n_heap > 2 * (t->n_ready - t->n_due) + 4096)
                heap_rebuild(d);
}

static void untally(struct tarryd *d, struct msg *m)
{
        struct message_tally *t = &d->tally;
        if (!arrival_is_id_time(m))
                t->n_odd_arrival--;
        if (m->dir == QUEUE_HOLD) {
                t->n_hold--;
                return;
        }
        t->n_ready--;
        if (m->reply_class >= 0 && m->reply_class < CLASS__MAX)
                t->by_class[m->reply_class]--;
        if (m->due_counted)
                t->n_due--;
        m->due_counted = false; /* its heap entry, if any, is no longer believed */
}

const struct message_tally *message_tally_at(struct tarryd *d, int64_t now)
{
        struct message_tally *t = &d->tally;
        while (t->n_heap > 0 && t->heap[0].at <= now) {
                struct message_due e = t->heap[0];
                t->heap[0] = t->heap[--t->n_heap];
                heap_down(t->heap, t->n_heap, 0);
                char id[QUEUE_ID_LEN + 1];
                msgindex_key_id(e.key, id);
                struct msg *m = msgindex_get(d->index, id);
                if (m && m->dir != QUEUE_HOLD && !m->due_counted && m->inflight == 0 &&
                    m->next_attempt_us == e.at) {
                        m->due_counted = true;
                        t->n_due++;
                }
        }
        if (now > t->due_mark)
                t->due_mark = now;
        return t;
}

static int oldest_cb(struct msg *m, void *userdata)
{
        int64_t *oldest = userdata;
        if (!*oldest || (m->arrival_us && m->arrival_us < *oldest))
                *oldest = m->arrival_us;
        return 0;
}

int64_t message_oldest_arrival(struct tarryd *d)
{
        if (d->tally.n_odd_arrival == 0) { /* IDs sort by arrival: the first is the oldest */
                const struct msg *m = msgindex_first(d->index);
                return m ? m->arrival_us : 0;
        }
        int64_t oldest = 0;
        msgindex_foreach(d->index, oldest_cb, &oldest);
        return oldest;
}

void message_tally_free(struct message_tally *t)
{
        free(t->heap);
        *t = (struct message_tally){0};
}

void message_attempt_begin(struct tarryd *d, struct msg *m)
{
        untally(d, m);
        m->inflight++;
        tally(d, m);
}

void message_attempt_end(struct tarryd *d, struct msg *m)
{
        untally(d, m);
        m->inflight--;
        tally(d, m);
}

/* ---- the lifecycle ---- */

static void summarise(struct msg *m, const struct envelope *env)
{
        m->size = env->size;
        m->arrival_us = env->arrival_us;
        m->uid = (uint32_t)env->uid; /* the owner filter of GET /queue reads it here */
        m->uid_known = true;
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

void message_summarise(struct tarryd *d, struct msg *m, const struct envelope *env)
{
        untally(d, m);
        summarise(m, env);
        tally(d, m);
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
        } else {
                untally(d, m);
        }
        m->dir = dir;
        summarise(m, env);
        tally(d, m);
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
        m->uid_known = r->uid != QUEUE_SNAP_UID_UNKNOWN;
        m->uid = m->uid_known ? r->uid : 0;
        tally(d, m);
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
        r->uid = m->uid_known ? m->uid : QUEUE_SNAP_UID_UNKNOWN;
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
        return message_load_with_body(d, m, NULL, NULL);
}

int message_load_with_body(struct tarryd *d, struct msg *m, int *fd, uint64_t *size)
{
        if (m->env)
                return 0;
        const char *why = NULL;
        int r = fd ? queue_load_body(d->queue, QUEUE_ACTIVE, m->id, &m->env, fd, size, &why)
                   : queue_load(d->queue, QUEUE_ACTIVE, m->id, &m->env, &why);
        if (r == 0 && (r = pickup_take_in(d, m->env, false, -1, 0)) < 0) {
                envelope_free(m->env); /* not as it must be sent: not at all */
                m->env = NULL;
                if (fd) {
                        close(*fd);
                        *fd = -1;
                }
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
        untally(d, m);
        m->dir = QUEUE_HOLD;
        tally(d, m);
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

int message_discard(struct tarryd *d, struct msg *m, int *body_fd)
{
        int r = d->remover ? remover_remove(d->remover, m->id, body_fd)
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
        untally(d, m);
        msgindex_remove(d->index, m);
}
