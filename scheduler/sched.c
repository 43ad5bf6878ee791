/* scheduler/sched.c — work items, destinations, the due-time heap, and the
 * per-class decisions taken on each attempt's result.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/internal.h"
#include "scheduler/sched_private.h"

#define US 1000000LL

/* ---- small helpers ---- */

static int full_concurrency(const struct sched *s)
{
        return s->cfg->destination_concurrency > 0 ? s->cfg->destination_concurrency : 1;
}

/* ---- concurrency: the scheduler is its one owner ----
 *
 * An item in flight is one connection in use (new or kept). At most
 * max_connections items are in flight in all, at most the destination's
 * window each (dest_limit), and a connection gate (the fleet's leases), when
 * installed, is asked once per start and told when the flight ends. */

static size_t global_room(const struct sched *s)
{
        size_t max = s->cfg->max_connections > 0 ? (size_t)s->cfg->max_connections : 100;
        return s->n_in_flight < max ? max - s->n_in_flight : 0;
}

/* The gate's word for one more connection to d; OPEN without a gate. */
static enum sched_gate gate_open(struct sched *s, struct dest *d)
{
        if (!s->gate.may_open)
                return SCHED_GATE_OPEN;
        return s->gate.may_open(s->gate.userdata, d->source, d->route);
}

static void gate_closed(struct sched *s, struct sched_item *it)
{
        if (it->gated && s->gate.closed)
                s->gate.closed(s->gate.userdata, it->dest->source, it->dest->route);
        it->gated = false;
}

static uint64_t rng_next(struct sched *s)
{
        /* xorshift64*: deterministic for a given seed, good enough for jitter */
        s->rng ^= s->rng >> 12;
        s->rng ^= s->rng << 25;
        s->rng ^= s->rng >> 27;
        return s->rng * 2685821657736338717ULL;
}

static void item_set_idx(void *p, size_t idx)
{
        ((struct sched_item *)p)->heap_idx = (uint32_t)idx;
}

static void dest_set_idx(void *p, size_t idx)
{
        ((struct dest *)p)->dheap_idx = idx;
}

static bool dest_paused(const struct dest *d, int64_t now)
{
        return d->in_dheap && d->until_us > now;
}

/* Concurrency now: the destination's, or a rule action's cap while it lasts. */
static int dest_limit(const struct dest *d, int64_t now)
{
        int limit = d->concurrency;
        if (d->cap_connections && now < d->cap_connections_until_us && d->cap_connections < limit)
                limit = d->cap_connections;
        if (d->limit_connections && d->limit_connections < limit)
                limit = d->limit_connections;
        return limit;
}

static bool dest_can_start(const struct dest *d, int64_t now)
{
        return !dest_paused(d, now) && d->in_flight < dest_limit(d, now);
}

/* A forced item ignores a pause, not the concurrency limit. */
static bool item_can_start(const struct sched_item *it, int64_t now)
{
        const struct dest *d = it->dest;
        return it->force ? d->in_flight < dest_limit(d, now) : dest_can_start(d, now);
}

static void make_runnable(struct sched *s, struct dest *d)
{
        if (d->runnable || !d->park_head)
                return;
        d->runnable = true;
        d->run_next = s->run_head;
        s->run_head = d;
}

/* ---- parked lists ---- */

static void park(struct sched *s, struct sched_item *it)
{
        struct dest *d = it->dest;
        it->where = W_PARKED;
        it->next = NULL;
        it->prev = d->park_tail;
        if (d->park_tail)
                d->park_tail->next = it;
        else
                d->park_head = it;
        d->park_tail = it;
        d->n_parked++;
        s->n_parked++;
}

static void unpark(struct sched *s, struct sched_item *it)
{
        struct dest *d = it->dest;
        if (it->prev)
                it->prev->next = it->next;
        else
                d->park_head = it->next;
        if (it->next)
                it->next->prev = it->prev;
        else
                d->park_tail = it->prev;
        it->prev = it->next = NULL;
        d->n_parked--;
        s->n_parked--;
}

/* ---- item states ---- */

static int wait_at(struct sched *s, struct sched_item *it, int64_t due)
{
        it->where = W_WAITING;
        it->due_us = due;
        return heap_push(&s->items, due, it);
}

static void pace(struct sched *s, struct dest *d, int64_t until);

/* gate: the gate's answer (TAKEN: tell it "closed" when the flight ends). */
static void start(struct sched *s, struct sched_item *it, int64_t now, enum sched_gate gate)
{
        it->prev = NULL;
        it->next = s->flight_head;
        if (s->flight_head)
                s->flight_head->prev = it;
        s->flight_head = it;
        it->where = W_IN_FLIGHT;
        it->gated = gate == SCHED_GATE_TAKEN;
        it->due_us = 0;
        it->dest->in_flight++;
        s->n_in_flight++;
        int64_t gap =
            it->dest->pace_gap_us && now < it->dest->pace_until_us ? it->dest->pace_gap_us : 0;
        if (it->dest->limit_gap_us > gap)
                gap = it->dest->limit_gap_us;
        if (gap)
                pace(s, it->dest, now + share_paced_start(s, it->dest, gap));
}

static void end_flight(struct sched *s, struct sched_item *it, int64_t now)
{
        if (it->prev)
                it->prev->next = it->next;
        else
                s->flight_head = it->next;
        if (it->next)
                it->next->prev = it->prev;
        it->prev = it->next = NULL;
        it->dest->in_flight--;
        s->n_in_flight--;
        gate_closed(s, it);
        if (dest_can_start(it->dest, now))
                make_runnable(s, it->dest);
}

/* Take an item out of wherever it is (heap, parked list, flight). */
static void detach(struct sched *s, struct sched_item *it, int64_t now)
{
        switch (it->where) {
        case W_WAITING:
                heap_remove(&s->items, it->heap_idx);
                break;
        case W_PARKED:
                unpark(s, it);
                break;
        case W_IN_FLIGHT:
                end_flight(s, it, now);
                break;
        }
}

/* ---- destination pauses ---- */

static void pause_dest(struct sched *s, struct dest *d, enum pause_kind kind, int64_t until)
{
        s->dests_dirty = true;
        if (d->in_dheap && d->until_us >= until) {
                if (kind == PAUSE_SUSPEND)
                        d->state = SCHED_DEST_SUSPENDED;
                else if (d->state == SCHED_DEST_OK || d->state == SCHED_DEST_THROTTLED)
                        d->state = SCHED_DEST_BACKOFF; /* it was only pacing */
                return;
        }
        d->until_us = until;
        if (kind == PAUSE_SUSPEND || d->state != SCHED_DEST_SUSPENDED)
                d->state = kind == PAUSE_SUSPEND ? SCHED_DEST_SUSPENDED : SCHED_DEST_BACKOFF;
        if (d->in_dheap) {
                heap_update(&s->dests, d->dheap_idx, until);
        } else if (heap_push(&s->dests, until, d) == 0) {
                d->in_dheap = true;
        }
}

/* A rule's max_per_minute: no start before until. The destination sits in
 * the pause heap, its state unchanged, so its parked items wake on time. */
static void pace(struct sched *s, struct dest *d, int64_t until)
{
        if (d->in_dheap)
                return; /* paused for longer already */
        d->until_us = until;
        if (heap_push(&s->dests, until, d) == 0)
                d->in_dheap = true;
}

/* A pause ended: come back with one connection; raise it on success. */
static void resume_dest(struct sched *s, struct dest *d)
{
        if (d->state == SCHED_DEST_OK || d->state == SCHED_DEST_THROTTLED) {
                /* the end of a pacing gap, not of a suspension */
                d->until_us = 0;
                d->in_dheap = false;
                make_runnable(s, d);
                return;
        }
        s->dests_dirty = true;
        d->probe_full = d->state == SCHED_DEST_BACKOFF;
        d->until_us = 0;
        d->in_dheap = false;
        d->concurrency = 1;
        d->state = d->concurrency < full_concurrency(s) ? SCHED_DEST_THROTTLED : SCHED_DEST_OK;
        if (d->queued == 0 && d->probe_full) {
                d->concurrency = full_concurrency(s);
                d->state = SCHED_DEST_OK;
        }
        make_runnable(s, d);
}

static void process_resumes(struct sched *s, int64_t now)
{
        const struct hent *top;
        while ((top = heap_top(&s->dests)) && top->key <= now) {
                struct dest *d = heap_pop(&s->dests);
                resume_dest(s, d);
                dest_gc(s, d);
        }
}

/* ---- move_source ---- */

/* Is d held by a suspension for reputation or rate limit (not a back-off,
 * not a greylist: those never move a message to another address)? */
static bool suspended_by_reputation(const struct dest *d, int64_t now)
{
        return d->state == SCHED_DEST_SUSPENDED && dest_paused(d, now) &&
               (d->last_class == CLASS_REPUTATION || d->last_class == CLASS_RATE_LIMIT);
}

/* Another pool address whose destination for the same route is not paused,
 * for an item of a destination suspended for reputation / rate limit when
 * [retry.reputation] move_source is on; NULL otherwise. The pool is tried
 * in configured order, starting after the item's own address. */
static const char *move_target(struct sched *s, const struct sched_item *it, int64_t now)
{
        const struct dest *d = it->dest;
        size_t n = s->cfg->n_source_addresses;
        if (!s->cfg->retry[CLASS_REPUTATION].move_source || n < 2 ||
            !suspended_by_reputation(d, now))
                return NULL;
        size_t self = n;
        for (size_t i = 0; i < n; i++)
                if (strcmp(s->cfg->source_addresses[i], d->source) == 0)
                        self = i;
        for (size_t k = 1; k <= n; k++) {
                const char *b = s->cfg->source_addresses[(self + k) % n];
                if (strcmp(b, d->source) == 0)
                        continue;
                const struct dest *o = dest_get(s, b, d->route, false);
                if (!o || (!dest_paused(o, now) && o->state != SCHED_DEST_SUSPENDED))
                        return b;
        }
        return NULL;
}

const char *sched_move_target(struct sched *s, const struct sched_item *it, int64_t now)
{
        if (s->may_move && !s->may_move(it->userdata, s->may_move_arg))
                return NULL;
        return move_target(s, it, now);
}

void sched_set_mover(struct sched *s, bool (*may_move)(void *item_userdata, void *arg), void *arg)
{
        s->may_move = may_move;
        s->may_move_arg = arg;
}

/* An item that would be parked on a destination suspended for reputation or
 * rate limit goes to the same route from another address instead (it waits
 * in the heap at its due time for that destination). False: park it. */
static bool move_source(struct sched *s, struct sched_item *it, int64_t now)
{
        const char *b = sched_move_target(s, it, now);
        struct dest *to = b ? dest_get(s, b, it->dest->route, true) : NULL;
        if (!to)
                return false;
        struct dest *from = it->dest;
        it->dest = to;
        if (wait_at(s, it, it->due_us) < 0) {
                it->dest = from;
                return false;
        }
        from->queued--;
        to->queued++;
        return true;
}

/* ---- the daemon's loop ---- */

int64_t sched_next_due(struct sched *s, int64_t now)
{
        process_resumes(s, now);
        if (global_room(s) == 0)
                return INT64_MAX; /* a result frees a connection: ask again then */
        for (struct dest **pp = &s->run_head; *pp;) {
                struct dest *d = *pp;
                if (d->park_head && dest_can_start(d, now))
                        return now;
                d->runnable = false;
                *pp = d->run_next;
        }
        const struct hent *top;
        while ((top = heap_top(&s->items))) {
                struct sched_item *it = top->p;
                struct dest *d = it->dest;
                bool blocked = (dest_paused(d, now) && top->key <= d->until_us && !it->force) ||
                               (top->key <= now && d->in_flight >= dest_limit(d, now));
                if (!blocked)
                        break;
                heap_pop(&s->items);
                if (!move_source(s, it, now))
                        park(s, it);
        }
        int64_t t = top ? top->key : INT64_MAX;
        const struct hent *dt = heap_top(&s->dests);
        if (dt && dt->key < t)
                t = dt->key;
        return t;
}

static size_t pop_parked(struct sched *s, int64_t now, struct sched_item **out, size_t max)
{
        size_t n = 0;
        struct dest **pp = &s->run_head;
        while (*pp && n < max) {
                struct dest *d = *pp;
                bool refused = false;
                while (n < max && d->park_head && dest_can_start(d, now)) {
                        enum sched_gate g = gate_open(s, d);
                        if (g == SCHED_GATE_WAIT) {
                                refused = true; /* until sched_conn_wake */
                                break;
                        }
                        struct sched_item *it = d->park_head;
                        unpark(s, it);
                        start(s, it, now, g);
                        out[n++] = it;
                }
                if (refused || !d->park_head || !dest_can_start(d, now)) {
                        d->runnable = false;
                        *pp = d->run_next;
                } else {
                        pp = &d->run_next;
                }
        }
        return n;
}

size_t sched_pop_due(struct sched *s, int64_t now, struct sched_item **out, size_t max)
{
        process_resumes(s, now);
        if (max > global_room(s))
                max = global_room(s);
        size_t n = pop_parked(s, now, out, max);
        const struct hent *top;
        while (n < max && (top = heap_top(&s->items)) && top->key <= now) {
                struct sched_item *it = heap_pop(&s->items);
                enum sched_gate g = SCHED_GATE_WAIT;
                if (!item_can_start(it, now) || (g = gate_open(s, it->dest)) == SCHED_GATE_WAIT) {
                        if (!move_source(s, it, now))
                                park(s, it);
                        continue;
                }
                it->force = false;
                start(s, it, now, g);
                out[n++] = it;
        }
        return n;
}

/* ---- items ---- */

int sched_add(struct sched *s, const char *source, const char *route, int64_t due, int64_t expires,
              void *userdata, struct sched_item **out)
{
        if (!route)
                return -EINVAL;
        struct dest *d = dest_get(s, source ? source : "", route, true);
        if (!d)
                return -ENOMEM;
        struct sched_item *it = pool_alloc(&s->item_pool);
        if (!it) {
                dest_gc(s, d);
                return -ENOMEM;
        }
        it->dest = d;
        it->expires_us = expires;
        it->userdata = userdata;
        if (wait_at(s, it, due) < 0) {
                pool_release(&s->item_pool, it);
                dest_gc(s, d);
                return -ENOMEM;
        }
        d->queued++;
        s->n_items++;
        *out = it;
        return 0;
}

static void item_free(struct sched *s, struct sched_item *it)
{
        struct dest *d = it->dest;
        d->queued--;
        s->n_items--;
        pool_release(&s->item_pool, it);
        dest_gc(s, d);
}

void sched_remove(struct sched *s, struct sched_item *it)
{
        if (!it)
                return;
        detach(s, it, INT64_MIN);
        item_free(s, it);
}

void sched_reschedule(struct sched *s, struct sched_item *it, int64_t due)
{
        if (it->where == W_WAITING) {
                it->due_us = due;
                heap_update(&s->items, it->heap_idx, due);
                return;
        }
        detach(s, it, INT64_MIN);
        (void)wait_at(s, it, due);
}

void *sched_item_userdata(const struct sched_item *it)
{
        return it->userdata;
}

int64_t sched_item_due(const struct sched_item *it)
{
        return it->due_us;
}

const char *sched_item_route(const struct sched_item *it)
{
        return it->dest->route;
}

const char *sched_item_source(const struct sched_item *it)
{
        return it->dest->source;
}

int64_t sched_item_learned_greylist_s(const struct sched *s, const struct sched_item *it,
                                      int64_t now_us)
{
        return dest_learned_fresh(s, it->dest, now_us) ? it->dest->learned_s : -1;
}

/* ---- admin actions ---- */

int sched_force_now(struct sched *s, struct sched_item *it, int64_t now)
{
        if (it->where == W_IN_FLIGHT)
                return -EINVAL;
        it->force = true;
        if (it->where == W_PARKED) {
                unpark(s, it);
                return wait_at(s, it, now);
        }
        if (it->due_us > now) {
                it->due_us = now;
                heap_update(&s->items, it->heap_idx, now);
        }
        return 0;
}

bool sched_item_held_back(struct sched *s, const struct sched_item *it, int64_t now)
{
        (void)s;
        /* a suspension or back-off, not a rule's pacing gap */
        return it->where != W_IN_FLIGHT && !it->force && dest_held(it->dest, now);
}

int sched_retry_now(struct sched *s, struct sched_item *it, int64_t now)
{
        switch (it->where) {
        case W_WAITING:
                if (it->due_us > now) {
                        it->due_us = now;
                        heap_update(&s->items, it->heap_idx, now);
                }
                return 0;
        case W_PARKED:
                return 0; /* released with its destination */
        default:
                return -EINVAL;
        }
}

size_t sched_flush(struct sched *s, int64_t now)
{
        /* min(key, now) is monotonic in key: the heap order survives. */
        for (size_t i = 0; i < s->items.n; i++) {
                if (s->items.v[i].key > now) {
                        s->items.v[i].key = now;
                        ((struct sched_item *)s->items.v[i].p)->due_us = now;
                }
        }
        for (size_t i = 0; i < s->dests.n; i++) {
                struct dest *d = s->dests.v[i].p;
                if (d->state == SCHED_DEST_BACKOFF)
                        heap_update(&s->dests, d->dheap_idx, now);
        }
        return s->items.n;
}

static void resume_now(struct sched *s, struct dest *d)
{
        s->dests_dirty = true;
        if (d->in_dheap)
                heap_remove(&s->dests, d->dheap_idx);
        d->in_dheap = false;
        d->until_us = 0;
        d->state = SCHED_DEST_OK;
        d->concurrency = full_concurrency(s);
        memset(d->strikes, 0, sizeof(d->strikes));
        dest_clear_actions(d);
        make_runnable(s, d);
}

int sched_resume_destination(struct sched *s, const char *route, const char *source, int64_t now)
{
        int n = 0;
        for (size_t b = 0; b < s->n_buckets; b++)
                for (struct dest *d = s->buckets[b]; d; d = d->hnext)
                        if (strcmp(d->route, route) == 0 &&
                            (!source || strcmp(d->source, source) == 0)) {
                                resume_now(s, d);
                                n++;
                        }
        if (n > 0)
                (void)sched_save_learned(s, now); /* retried at the next change if it fails */
        return n > 0 ? n : -ENOENT;
}

/* ---- construction ---- */

int sched_new(const struct tarry_config *cfg, const struct sched_classifier *cls,
              const struct sched_io *io, uint64_t seed, struct sched **out)
{
        struct sched *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->cfg = cfg;
        s->cls = cls;
        if (io)
                s->io = *io;
        s->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
        s->items.set_idx = item_set_idx;
        s->dests.set_idx = dest_set_idx;
        pool_init(&s->item_pool, sizeof(struct sched_item), 0);
        *out = s;
        return 0;
}

void sched_set_config(struct sched *s, const struct tarry_config *cfg,
                      const struct sched_classifier *cls)
{
        s->cfg = cfg;
        s->cls = cls;
        for (size_t b = 0; b < s->n_buckets; b++)
                for (struct dest *d = s->buckets[b]; d; d = d->hnext)
                        if (d->state == SCHED_DEST_OK)
                                d->concurrency = full_concurrency(s);
}

void sched_free(struct sched *s)
{
        if (!s)
                return;
        for (size_t b = 0; b < s->n_buckets; b++) {
                struct dest *d = s->buckets[b];
                while (d) {
                        struct dest *next = d->hnext;
                        dest_free(d);
                        d = next;
                }
        }
        pool_finish(&s->item_pool); /* every item, waiting, parked or in flight */
        free(s->buckets);
        heap_free(&s->items);
        heap_free(&s->dests);
        free(s);
}

void sched_get_stats(const struct sched *s, struct sched_stats *out)
{
        size_t suspended = 0;
        for (size_t i = 0; i < s->dests.n; i++) {
                const struct dest *d = s->dests.v[i].p;
                suspended += d->state == SCHED_DEST_SUSPENDED || d->state == SCHED_DEST_BACKOFF;
        }
        *out = (struct sched_stats){.items = s->n_items,
                                    .waiting = s->items.n,
                                    .parked = s->n_parked,
                                    .in_flight = s->n_in_flight,
                                    .destinations = s->n_dests,
                                    .suspended = suspended};
}

uint64_t sched_rand(struct sched *s)
{
        return rng_next(s);
}

/* A shared pace slot: no start before until (earlier or later than the
 * hold in place), unless the destination is paused for another reason. */
void sched_pace_until(struct sched *s, struct dest *d, int64_t until)
{
        if (d->state == SCHED_DEST_SUSPENDED || d->state == SCHED_DEST_BACKOFF)
                return;
        if (!d->in_dheap) {
                pace(s, d, until);
                return;
        }
        d->until_us = until;
        heap_update(&s->dests, d->dheap_idx, until);
}

void sched_pause(struct sched *s, struct dest *d, enum pause_kind kind, int64_t until)
{
        pause_dest(s, d, kind, until);
        share_pause_set(s, d);
}

void sched_set_conn_gate(struct sched *s, const struct sched_conn_gate *gate)
{
        s->gate = gate ? *gate : (struct sched_conn_gate){0};
}

void sched_conn_wake(struct sched *s, const char *source, const char *site)
{
        struct dest *d = dest_get(s, source ? source : "", site, false);
        if (d)
                make_runnable(s, d);
}

bool sched_conn_may_open(struct sched *s, const char *source, const char *site, int64_t now)
{
        if (global_room(s) == 0)
                return false;
        const struct dest *d = dest_get(s, source ? source : "", site, false);
        return !d || dest_can_start(d, now);
}

void sched_item_done_flight(struct sched *s, struct sched_item *it, int64_t now)
{
        end_flight(s, it, now);
}

int sched_item_wait(struct sched *s, struct sched_item *it, int64_t due)
{
        return wait_at(s, it, due);
}

void sched_item_free(struct sched *s, struct sched_item *it)
{
        item_free(s, it);
}

int sched_full_concurrency(const struct sched *s)
{
        return full_concurrency(s);
}
