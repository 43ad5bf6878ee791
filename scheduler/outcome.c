/* scheduler/outcome.c — what happens after an attempt: per-recipient
 * decisions, destination pauses and recovery, greylist learning.
 *
 * Tunables (scheduler/internal.h), with their reasons:
 *   GREYLIST_MARGIN_S 5      come back just after a window, not on its edge:
 *                            the receiver counts from its first sight of us,
 *                            a little before our reply arrived, in whole seconds;
 *                            short windows get 5 % of the window (at least 1 s)
 *   GREYLIST_GAP_CEILING_S 2h  OpenBSD spamd forgets a triplet after 4 h
 *                            without a retry: never leave a longer gap than half
 *   LEARN_MAX_S 12h          an acceptance later than that is not a greylist window
 *   LEARN_RESAVE_S 1d        refresh learned.json's timestamps at most daily
 *   LEARN_RECHECK_S 1h       a lower bound older than this is not trusted after
 *                            an acceptance at the first retry: the next message
 *                            probes below, so a shortened window is found
 *   LEARN_TIGHT_DIV 10       a bracket narrower than 10 % of its upper end (at
 *                            least LEARN_TIGHT_MIN_S 2 s) is tight: aim at its
 *                            upper end instead of probing its middle
 *   JITTER_PCT 10            spread destination back-offs so many queued
 *                            messages do not return in one burst
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "scheduler/sched_private.h"

#define US 1000000LL

/* The class's geometric schedule: initial * factor^(step-1), capped. */
static int64_t schedule_delay(const struct cfg_retry *p, int step, int64_t cap)
{
        double d = (double)(p->initial_s > 0 ? p->initial_s : 1);
        double limit = (double)(cap > 0 ? cap : 1);
        for (int i = 1; i < step && d < limit; i++)
                d *= p->factor > 1.0 ? p->factor : 1.0;
        if (d > limit)
                d = limit;
        return (int64_t)d > 0 ? (int64_t)d : 1;
}

/* How long after a window to come back: a 2 s window needs 1 s, not 5. */
static int64_t margin_for(int64_t window_s)
{
        int64_t m = window_s / 20;
        return m < 1 ? 1 : m > GREYLIST_MARGIN_S ? GREYLIST_MARGIN_S : m;
}

static int64_t hinted(const struct cfg_retry *p, const struct sched_verdict *v)
{
        return p->use_hint && v->hint_s >= 0 ? v->hint_s + margin_for(v->hint_s) : -1;
}

/* Where the learned bracket says to come back, as an age since the first
 * deferral: the known-good age hi once the bracket (lo, hi] is tight, else its
 * middle (a probe: never later than hi, so learning costs attempts, never
 * delay). -1 when nothing usable is known or the message is already past hi. */
static int64_t learned_age(const struct sched *s, const struct dest *d, int64_t age, int64_t now)
{
        if (!dest_learned_fresh(s, d, now) || age >= d->learned_s)
                return -1;
        int64_t hi = d->learned_s;
        int64_t lo = d->learned_lo_s > age ? d->learned_lo_s : age;
        int64_t tight =
            hi / LEARN_TIGHT_DIV > LEARN_TIGHT_MIN_S ? hi / LEARN_TIGHT_DIV : LEARN_TIGHT_MIN_S;
        if (lo >= hi || hi - lo <= tight)
                return hi;
        return lo + (hi - lo) / 2;
}

/* Greylist-like classes: hint, else the learned bracket, else the first retry
 * from the class schedule and then the ends of the common greylister windows
 * in turn (counted from the first deferral), then the schedule capped well
 * inside greylist expiry. */
static int64_t greylist_time(struct sched *s, const struct dest *d,
                             const struct sched_rcpt_result *r, const struct sched_verdict *v,
                             int64_t now, enum sched_why *why)
{
        const struct cfg_retry *p = &s->cfg->retry[v->cls];
        int64_t h = hinted(p, v);
        if (h >= 0) {
                *why = SCHED_WHY_HINT;
                return now + h * US;
        }
        int64_t first = r->first_deferral_us > 0 ? r->first_deferral_us : now;
        int64_t age = (now - first) / US;
        int64_t aim = learned_age(s, d, age, now);
        if (aim >= 0) {
                *why = SCHED_WHY_LEARNED_WINDOW;
                return first + aim * US;
        }
        /* the first retry: the class's first step, or a window end it nearly meets */
        int64_t limit = r->deferrals == 0
                            ? now + (schedule_delay(p, 1, p->max_s) + GREYLIST_MARGIN_S) * US
                            : INT64_MAX;
        for (size_t i = 0; i < s->cls->n_windows; i++) {
                int64_t w = s->cls->windows[i].seconds;
                int64_t t = first + (w + margin_for(w)) * US;
                if (t > now && t <= limit) {
                        *why = SCHED_WHY_GREYLIST_WINDOW;
                        return t;
                }
        }
        *why = SCHED_WHY_BACKOFF;
        if (r->deferrals == 0)
                return now + schedule_delay(p, 1, p->max_s) * US;
        int64_t cap = p->max_s < GREYLIST_GAP_CEILING_S ? p->max_s : GREYLIST_GAP_CEILING_S;
        return now + schedule_delay(p, r->deferrals + 1, cap) * US;
}

static int64_t recipient_time(struct sched *s, const struct dest *d,
                              const struct sched_rcpt_result *r, const struct sched_verdict *v,
                              int64_t now, enum sched_why *why)
{
        if (s->cls->traits[v->cls].greylist_like)
                return greylist_time(s, d, r, v, now, why);
        const struct cfg_retry *p = &s->cfg->retry[v->cls];
        int64_t h = hinted(p, v);
        *why = h >= 0                       ? SCHED_WHY_HINT
               : v->cls == CLASS_RATE_LIMIT ? SCHED_WHY_RATE_LIMIT
                                            : SCHED_WHY_BACKOFF;
        if (h >= 0)
                return now + h * US;
        return now + schedule_delay(p, r->deferrals + 1, p->max_s) * US;
}

/* ---- destination-wide effects ---- */

static bool pauses_destination(const struct sched *s, enum reply_class c, bool any_delivered)
{
        const struct class_trait *t = &s->cls->traits[c];
        return t->pause != PAUSE_NONE && s->cfg->retry[c].scope == CFG_SCOPE_DESTINATION &&
               (t->pause_even_if_delivered || !any_delivered);
}

static int64_t jittered(struct sched *s, int64_t delay_s)
{
        int64_t span = 2 * JITTER_PCT + 1;
        int64_t pct = 100 + (int64_t)(sched_rand(s) % (uint64_t)span) - JITTER_PCT;
        return delay_s * US * pct / 100;
}

/* Pause the destination for class c (once per attempt and class). */
static void apply_pause(struct sched *s, struct dest *d, const struct sched_verdict *v, int64_t now)
{
        const struct cfg_retry *p = &s->cfg->retry[v->cls];
        /* Several attempts in flight report the same trouble: one strike. */
        if (!(d->in_dheap && d->until_us > now) || d->strikes[v->cls] == 0)
                d->strikes[v->cls]++;
        int64_t h = hinted(p, v);
        int64_t delay_s = h >= 0 ? h : schedule_delay(p, d->strikes[v->cls], p->max_s);
        int64_t delay_us =
            s->cls->traits[v->cls].jitter && h < 0 ? jittered(s, delay_s) : delay_s * US;
        if (!d->in_dheap || d->until_us < now + delay_us)
                d->pause_class = (int)v->cls;
        sched_pause(s, d, s->cls->traits[v->cls].pause, now + delay_us);
}

static void on_delivery(struct sched *s, struct dest *d)
{
        memset(d->strikes, 0, sizeof(d->strikes));
        if (d->state != SCHED_DEST_THROTTLED)
                return;
        int full = sched_full_concurrency(s);
        s->dests_dirty = true;
        d->concurrency = d->probe_full ? full : d->concurrency + 1;
        if (d->concurrency >= full) {
                d->concurrency = full;
                d->state = SCHED_DEST_OK;
        }
}

static void remember_reply(struct dest *d, const struct sched_reply *r,
                           const struct sched_verdict *v)
{
        const char *t = r->text ? r->text : "";
        size_t n = strnlen(t, LAST_REPLY_MAX);
        char *copy = malloc(n + 1);
        if (!copy)
                return;
        memcpy(copy, t, n);
        copy[n] = '\0';
        free(d->last_reply);
        d->last_reply = copy;
        d->last_class = (int)v->cls;
}

/* ---- rule actions (policy file) ---- */

/* Count a match of rule on d; true when its threshold (N within W) is met,
 * which starts the count again. */
static bool threshold_met(struct dest *d, const char *rule, const struct sched_rule_action *a,
                          int64_t now)
{
        if (a->threshold_matches <= 1)
                return true;
        struct hitlog *h = d->hits;
        while (h && strcmp(h->rule, rule) != 0)
                h = h->next;
        if (!h) {
                size_t len = strlen(rule) + 1;
                h = calloc(1, sizeof(*h) + len);
                int64_t *t = calloc((size_t)a->threshold_matches, sizeof(*t));
                if (!h || !t) {
                        free(h);
                        free(t);
                        return false;
                }
                memcpy(h->rule, rule, len);
                h->t = t;
                h->next = d->hits;
                d->hits = h;
        }
        int64_t since = now - a->threshold_within_s * US;
        int keep = 0;
        for (int i = 0; i < h->n; i++)
                if (h->t[i] > since && keep < a->threshold_matches - 1)
                        h->t[keep++] = h->t[i];
        h->n = keep;
        h->t[h->n++] = now;
        if (h->n < a->threshold_matches)
                return false;
        h->n = 0;
        return true;
}

static void apply_action(struct sched *s, struct dest *d, const struct sched_rule_action *a,
                         int64_t now)
{
        if (a->suspend_s)
                sched_pause(s, d, PAUSE_SUSPEND, now + a->suspend_s * US);
        if (a->max_connections) {
                d->cap_connections = a->max_connections;
                d->cap_connections_until_us = now + a->for_s * US;
        }
        if (a->max_per_minute) {
                d->pace_gap_us = 60 * US / a->max_per_minute;
                d->pace_until_us = now + a->for_s * US;
        }
}

/* Each matching rule with an action counts once per attempt. */
static void apply_actions(struct sched *s, struct dest *d, const struct sched_verdict *v,
                          const bool *attempted, size_t n, int64_t now)
{
        if (d->cap_connections && now >= d->cap_connections_until_us)
                d->cap_connections = 0;
        if (d->pace_gap_us && now >= d->pace_until_us)
                d->pace_gap_us = 0;
        for (size_t i = 0; i < n; i++) {
                if (!attempted[i] || v[i].accepted || !v[i].action)
                        continue;
                bool seen = false;
                for (size_t j = 0; j < i && !seen; j++)
                        seen = attempted[j] && v[j].action == v[i].action;
                if (!seen && threshold_met(d, v[i].rule, v[i].action, now))
                        apply_action(s, d, v[i].action, now);
        }
}

/* ---- learning ---- */

/* A greylist-like deferral at age (seconds since the first deferral): a
 * refusal below the known-good age raises the lower bound; one at or past it
 * means the window grew, and what was known is dropped (the message goes on
 * to the greylister windows and the next acceptance teaches again). */
static void note_refusal(struct sched *s, struct dest *d, const struct sched_rcpt_result *r,
                         int64_t now)
{
        if (r->first_deferral_us <= 0 || !dest_learned_fresh(s, d, now))
                return;
        int64_t age = (now - r->first_deferral_us) / US;
        if (age <= 0)
                return;
        if (age >= d->learned_s) {
                d->learned_s = -1;
                d->learned_lo_s = age;
                s->learned_dirty = true;
        } else if (age > d->learned_lo_s) {
                d->learned_lo_s = age;
                d->learned_lo_at_us = now;
        }
}

/* Accepted after greylist-like deferrals: the window lies in the bracket
 * (last refused age, accepted age]. The accepted age becomes the known-good
 * upper bound (down as well as up); the message's own last refusal, when it
 * had one, the lower bound. Accepted at the first retry, nothing is known
 * below: a probe accepted there, or a lower bound older than LEARN_RECHECK_S,
 * is dropped, so the next message probes lower and a shortened window is
 * found within a few deliveries. */
static void learn(struct sched *s, struct dest *d, const struct sched_rcpt_result *r, int64_t now)
{
        if (r->prev_class < 0 || r->prev_class >= CLASS__MAX ||
            !s->cls->traits[r->prev_class].greylist_like || r->first_deferral_us <= 0)
                return;
        int64_t hi = (now - r->first_deferral_us) / US;
        if (hi <= 0 || hi > LEARN_MAX_S)
                return;
        int64_t lo = r->last_deferral_us > r->first_deferral_us
                         ? (r->last_deferral_us - r->first_deferral_us) / US
                         : 0;
        bool fresh = dest_learned_fresh(s, d, now);
        int64_t old_hi = fresh ? d->learned_s : -1, old_lo = d->learned_lo_s;
        if (lo > 0) {
                d->learned_lo_s = lo < hi ? lo : 0;
                d->learned_lo_at_us = now;
        } else if (!fresh || hi < d->learned_s ||
                   now - d->learned_lo_at_us >= LEARN_RECHECK_S * US) {
                d->learned_lo_s = 0;
        }
        if (d->learned_lo_s >= hi)
                d->learned_lo_s = 0;
        d->learned_s = hi;
        d->learned_at_us = now;
        if (hi != old_hi || d->learned_lo_s != old_lo ||
            now - d->saved_at_us >= LEARN_RESAVE_S * US)
                s->learned_dirty = true;
        if (hi != old_hi || d->learned_lo_s != old_lo)
                share_window_set(s, d);
}

int64_t dest_learned_estimate(const struct sched *s, const struct dest *d, int64_t now)
{
        if (!dest_learned_fresh(s, d, now))
                return -1;
        if (d->learned_lo_s <= 0 || d->learned_lo_s >= d->learned_s)
                return d->learned_s;
        return d->learned_lo_s + (d->learned_s - d->learned_lo_s) / 2;
}

/* ---- the result of one attempt ---- */

const char *sched_fail_name(enum sched_fail f)
{
        switch (f) {
        case SCHED_FAIL_PERMANENT:
                return "permanent";
        case SCHED_FAIL_EXPIRED:
                return "expired";
        case SCHED_FAIL_NONE:
                break;
        }
        return "";
}

static const struct sched_reply *reply_of(const struct sched_rcpt_result *r,
                                          const struct sched_reply *attempt)
{
        return r->reply ? r->reply : attempt;
}

static void decide_temp(struct sched *s, struct sched_item *it, const struct sched_rcpt_result *r,
                        const struct sched_verdict *v, bool paused_by_us, int64_t now,
                        struct sched_decision *o)
{
        struct dest *d = it->dest;
        o->first_deferral_us = r->first_deferral_us > 0 ? r->first_deferral_us : now;
        if (it->expires_us > 0 && now >= it->expires_us) {
                o->action = SCHED_FAILED;
                o->fail = SCHED_FAIL_EXPIRED;
                return;
        }
        if (s->cls->traits[v->cls].greylist_like)
                note_refusal(s, d, r, now);
        enum sched_why why = SCHED_WHY_BACKOFF;
        int64_t t = recipient_time(s, d, r, v, now, &why);
        if (paused_by_us || (d->in_dheap && d->until_us > t)) {
                t = d->until_us;
                if (paused_by_us || dest_held(d, now))
                        why = dest_pause_why(d);
        }
        if (it->expires_us > 0 && t > it->expires_us) {
                t = it->expires_us;
                why = SCHED_WHY_QUEUE_LIFETIME;
        }
        o->action = SCHED_RETRY;
        o->next_attempt_us = t;
        o->why = why;
}

static void fill_common(struct sched_decision *o, const struct sched_verdict *v)
{
        o->cls = v->accepted ? CLASS__MAX : v->cls;
        o->hint_s = v->hint_s;
        o->rule = v->rule;
        o->code = v->code;
        memcpy(o->enhanced, v->enhanced, sizeof(o->enhanced));
}

/* Destination-wide pauses this attempt causes; returns a bitmask of classes. */
static unsigned apply_pauses(struct sched *s, struct dest *d, const struct sched_verdict *v,
                             const bool *attempted, size_t n, bool any_delivered, int64_t now)
{
        unsigned done = 0;
        for (size_t i = 0; i < n; i++) {
                if (!attempted[i] || v[i].accepted || v[i].cls == CLASS_PERMANENT)
                        continue;
                if (!pauses_destination(s, v[i].cls, any_delivered) || (done & (1u << v[i].cls)))
                        continue;
                apply_pause(s, d, &v[i], now);
                done |= 1u << v[i].cls;
        }
        return done;
}

int sched_on_result(struct sched *s, struct sched_item *it, int64_t now,
                    const struct sched_reply *attempt, const struct sched_rcpt_result *rcpt,
                    size_t n, struct sched_decision *out)
{
        if (it->where != W_IN_FLIGHT)
                return -EINVAL;
        _cleanup_free_ struct sched_verdict *v = calloc(n ? n : 1, sizeof(*v));
        _cleanup_free_ bool *attempted = calloc(n ? n : 1, sizeof(*attempted));
        if (!v || !attempted)
                return -ENOMEM;
        struct dest *d = it->dest;
        bool any_delivered = false, remembered = false;
        for (size_t i = 0; i < n; i++) {
                const struct sched_reply *r = reply_of(&rcpt[i], attempt);
                attempted[i] = r != NULL;
                if (!r)
                        continue;
                sched_classify(s->cls, r, &v[i]);
                any_delivered |= v[i].accepted;
                if (!v[i].accepted && v[i].cls != CLASS_PERMANENT && !remembered) {
                        remember_reply(d, r, &v[i]);
                        remembered = true;
                }
        }
        sched_item_done_flight(s, it, now);
        if (any_delivered)
                on_delivery(s, d);
        unsigned paused = apply_pauses(s, d, v, attempted, n, any_delivered, now);
        apply_actions(s, d, v, attempted, n, now);

        int64_t due = INT64_MAX;
        for (size_t i = 0; i < n; i++) {
                struct sched_decision *o = &out[i];
                memset(o, 0, sizeof(*o));
                o->hint_s = -1;
                o->cls = CLASS__MAX;
                if (!attempted[i]) {
                        o->action = SCHED_NOT_ATTEMPTED;
                        o->next_attempt_us = rcpt[i].next_attempt_us;
                        o->first_deferral_us = rcpt[i].first_deferral_us;
                } else if (v[i].accepted) {
                        fill_common(o, &v[i]);
                        o->action = SCHED_DELIVERED;
                        o->first_deferral_us = rcpt[i].first_deferral_us;
                        learn(s, d, &rcpt[i], now);
                } else if (v[i].cls == CLASS_PERMANENT) {
                        fill_common(o, &v[i]);
                        o->action = SCHED_FAILED;
                        o->fail = SCHED_FAIL_PERMANENT;
                        o->first_deferral_us = rcpt[i].first_deferral_us;
                } else {
                        fill_common(o, &v[i]);
                        decide_temp(s, it, &rcpt[i], &v[i], paused & (1u << v[i].cls), now, o);
                }
                if (o->action == SCHED_RETRY || o->action == SCHED_NOT_ATTEMPTED)
                        if (o->next_attempt_us < due)
                                due = o->next_attempt_us;
        }
        if (s->learned_dirty || s->dests_dirty)
                (void)sched_save_learned(s, now); /* retried at the next change if it fails */
        if (due == INT64_MAX) {
                sched_item_free(s, it);
                return 0;
        }
        if (sched_item_wait(s, it, due) < 0)
                return -ENOMEM;
        return 1;
}
