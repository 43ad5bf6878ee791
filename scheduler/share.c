/* scheduler/share.c — pauses shared with the other nodes of a fleet.
 *
 * The scheduler tells its sharer (cluster/ through the daemon) every pause it
 * sets, and takes the pauses other nodes set as if it had set them itself,
 * without telling them back. What crosses is validated by cluster/.
 */
#include <errno.h>

#include "scheduler/sched_private.h"

void sched_set_share(struct sched *s, const struct sched_share *share)
{
        s->share = share ? *share : (struct sched_share){0};
}

void share_pause_set(struct sched *s, const struct dest *d)
{
        if (!s->share.pause_set || s->applying_shared)
                return;
        if (d->state != SCHED_DEST_SUSPENDED && d->state != SCHED_DEST_BACKOFF)
                return;
        struct sched_shared_pause p = {.source = d->source,
                                       .route = d->route,
                                       .state = d->state,
                                       .until_us = d->until_us,
                                       .cls = d->pause_class};
        s->share.pause_set(s->share.userdata, &p);
}

void share_window_set(struct sched *s, const struct dest *d)
{
        if (!s->share.window_set || s->applying_shared || d->learned_s <= 0)
                return;
        struct sched_shared_window w = {.route = d->route,
                                        .upper_s = d->learned_s,
                                        .lower_s = d->learned_lo_s,
                                        .learned_at_us = d->learned_at_us};
        s->share.window_set(s->share.userdata, &w);
}

/* Until the fleet answers, no start: the answer comes within the cluster's
 * reply deadline, or the connection is dropped and the local gap applies. */
#define PACE_HOLD_US (3 * 1000000LL)

int64_t share_paced_start(struct sched *s, struct dest *d, int64_t gap)
{
        if (s->share.pace_reserve &&
            s->share.pace_reserve(s->share.userdata, d->source, d->route, gap))
                return gap > PACE_HOLD_US ? gap : PACE_HOLD_US;
        return gap;
}

/* The gap pacing d now, 0: none. */
static int64_t pace_gap(const struct dest *d, int64_t now)
{
        int64_t gap = d->pace_gap_us && now < d->pace_until_us ? d->pace_gap_us : 0;
        return d->limit_gap_us > gap ? d->limit_gap_us : gap;
}

void sched_shared_pace_slot(struct sched *s, const char *source, const char *route, int64_t slot,
                            int64_t now)
{
        struct dest *d = dest_get(s, source ? source : "", route, false);
        int64_t gap = d ? pace_gap(d, now) : 0;
        if (!gap)
                return;
        sched_pace_until(s, d, slot >= 0 ? slot : now + gap);
}

int sched_apply_shared_window(struct sched *s, const char *source,
                              const struct sched_shared_window *w, int64_t now)
{
        if (!w->route || !w->route[0] || w->upper_s <= 0 || w->upper_s > LEARN_MAX_S ||
            w->lower_s < 0 || w->lower_s >= w->upper_s ||
            now - w->learned_at_us > s->cfg->greylist_memory_s * 1000000LL)
                return -EINVAL;
        struct dest *d = dest_get(s, source ? source : "", w->route, true);
        if (!d)
                return -ENOMEM;
        if (dest_learned_fresh(s, d, now) && d->learned_at_us >= w->learned_at_us) {
                dest_gc(s, d);
                return 0;
        }
        d->learned_s = w->upper_s;
        d->learned_lo_s = w->lower_s;
        d->learned_at_us = w->learned_at_us;
        d->learned_lo_at_us = w->learned_at_us;
        s->learned_dirty = true;
        return 1;
}

int sched_apply_shared_pause(struct sched *s, const struct sched_shared_pause *p, int64_t now)
{
        if (!p->route || !p->route[0] || p->until_us <= now ||
            (p->state != SCHED_DEST_SUSPENDED && p->state != SCHED_DEST_BACKOFF))
                return -EINVAL;
        struct dest *d = dest_get(s, p->source ? p->source : "", p->route, true);
        if (!d)
                return -ENOMEM;
        if (dest_held(d, now) && d->until_us >= p->until_us) {
                dest_gc(s, d);
                return 0;
        }
        if (p->cls >= 0 && p->cls < CLASS__MAX)
                d->pause_class = p->cls;
        s->applying_shared = true;
        sched_pause(s, d, p->state == SCHED_DEST_SUSPENDED ? PAUSE_SUSPEND : PAUSE_BACKOFF,
                    p->until_us);
        s->applying_shared = false;
        return 1;
}
