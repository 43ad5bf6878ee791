/* scheduler/dest.c — destinations: lookup by (source address, route),
 * status listing, and the learned greylist delays persisted in learned.json.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/fnv.h"
#include "scheduler/sched_private.h"

#define LEARNED_VERSION   1
#define LEARNED_MAX_BYTES (64u << 20)
#define DESTS_VERSION     1
/* a throttled destination (resumed after a pause, concurrency still being
 * raised) is remembered across a restart for this long after the save */
#define DESTS_THROTTLE_KEEP_S 3600

static uint64_t hash_key(const char *source, const char *route)
{
        uint64_t h = fnv1a_str(FNV1A_BASIS_SHORT, source);
        return fnv1a_str(fnv1a_step(h, 0xff), route); /* 0xff: no byte of a name */
}

static int grow(struct sched *s)
{
        size_t nb = s->n_buckets ? s->n_buckets * 2 : 64;
        struct dest **b = calloc(nb, sizeof(*b));
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_buckets; i++) {
                struct dest *d = s->buckets[i];
                while (d) {
                        struct dest *next = d->hnext;
                        d->hnext = b[d->hash & (nb - 1)];
                        b[d->hash & (nb - 1)] = d;
                        d = next;
                }
        }
        free(s->buckets);
        s->buckets = b;
        s->n_buckets = nb;
        return 0;
}

static struct dest *dest_new(struct sched *s, const char *source, const char *route, uint64_t h)
{
        size_t ls = strlen(source) + 1, lr = strlen(route) + 1;
        struct dest *d = calloc(1, sizeof(*d) + ls + lr);
        if (!d)
                return NULL;
        d->source = (char *)(d + 1);
        d->route = d->source + ls;
        memcpy(d->source, source, ls);
        memcpy(d->route, route, lr);
        d->hash = h;
        d->state = SCHED_DEST_OK;
        d->concurrency = sched_full_concurrency(s);
        d->last_class = -1;
        d->pause_class = -1;
        d->learned_s = -1;
        d->learned_lo_s = 0;
        return d;
}

struct dest *dest_get(struct sched *s, const char *source, const char *route, bool create)
{
        uint64_t h = hash_key(source, route);
        if (s->n_buckets) {
                for (struct dest *d = s->buckets[h & (s->n_buckets - 1)]; d; d = d->hnext)
                        if (d->hash == h && strcmp(d->route, route) == 0 &&
                            strcmp(d->source, source) == 0)
                                return d;
        }
        if (!create)
                return NULL;
        if (s->n_dests >= s->n_buckets && grow(s) < 0)
                return NULL;
        struct dest *d = dest_new(s, source, route, h);
        if (!d)
                return NULL;
        d->hnext = s->buckets[h & (s->n_buckets - 1)];
        s->buckets[h & (s->n_buckets - 1)] = d;
        s->n_dests++;
        return d;
}

void dest_clear_actions(struct dest *d)
{
        while (d->hits) {
                struct hitlog *n = d->hits->next;
                free(d->hits->t);
                free(d->hits);
                d->hits = n;
        }
        d->cap_connections = 0;
        d->cap_connections_until_us = 0;
        d->pace_gap_us = 0;
        d->pace_until_us = 0;
}

void dest_free(struct dest *d)
{
        if (!d)
                return;
        dest_clear_actions(d);
        free(d->last_reply);
        free(d);
}

/* Forget a destination that holds nothing worth keeping (a rule action's
 * caps and threshold counts are worth keeping: the next message to it must
 * meet them too). */
void dest_gc(struct sched *s, struct dest *d)
{
        if (d->queued > 0 || d->in_dheap || d->state != SCHED_DEST_OK || d->learned_s >= 0 ||
            d->runnable || d->in_flight > 0 || d->cap_connections || d->pace_gap_us || d->hits)
                return;
        struct dest **pp = &s->buckets[d->hash & (s->n_buckets - 1)];
        while (*pp && *pp != d)
                pp = &(*pp)->hnext;
        if (*pp)
                *pp = d->hnext;
        s->n_dests--;
        dest_free(d);
}

bool dest_learned_fresh(const struct sched *s, const struct dest *d, int64_t now)
{
        return d->learned_s >= 0 &&
               now - d->learned_at_us <= s->cfg->greylist_memory_s * (int64_t)1000000;
}

/* ---- status ---- */

static const char *const why_names[SCHED__WHY_MAX] = {
    [SCHED_WHY_NONE] = "",
    [SCHED_WHY_FIRST_ATTEMPT] = "first_attempt",
    [SCHED_WHY_HINT] = "hint",
    [SCHED_WHY_LEARNED_WINDOW] = "learned_window",
    [SCHED_WHY_GREYLIST_WINDOW] = "greylist_window",
    [SCHED_WHY_BACKOFF] = "backoff",
    [SCHED_WHY_RATE_LIMIT] = "rate_limit",
    [SCHED_WHY_DEST_SUSPENDED] = "destination_suspended",
    [SCHED_WHY_DEST_BACKOFF] = "destination_backoff",
    [SCHED_WHY_MANUAL_HOLD] = "manual_hold",
    [SCHED_WHY_QUEUE_LIFETIME] = "queue_lifetime",
    [SCHED_WHY_ADMIN] = "admin",
};

const char *sched_why_name(enum sched_why w)
{
        return (unsigned)w < SCHED__WHY_MAX && why_names[w] ? why_names[w] : "";
}

int sched_why_from_name(const char *name)
{
        for (int i = 1; name && i < SCHED__WHY_MAX; i++)
                if (why_names[i] && strcmp(why_names[i], name) == 0)
                        return i;
        return -1;
}

/* in the pause heap for a suspension or back-off, not only for pacing
 * (max_per_minute) */
static bool dest_pause_not_pacing(const struct dest *d)
{
        return d->in_dheap && (d->state == SCHED_DEST_SUSPENDED || d->state == SCHED_DEST_BACKOFF);
}

bool dest_held(const struct dest *d, int64_t now)
{
        return dest_pause_not_pacing(d) && d->until_us > now;
}

enum sched_why dest_pause_why(const struct dest *d)
{
        return d->state == SCHED_DEST_SUSPENDED ? SCHED_WHY_DEST_SUSPENDED : SCHED_WHY_DEST_BACKOFF;
}

enum sched_why sched_destination_pause(struct sched *s, const char *source, const char *route,
                                       int64_t now, int64_t *until)
{
        struct dest *d = route ? dest_get(s, source ? source : "", route, false) : NULL;
        if (!d || !d->in_dheap || d->until_us <= now)
                return SCHED_WHY_NONE;
        *until = d->until_us;
        return dest_pause_why(d);
}

const char *sched_dest_state_name(enum sched_dest_state st)
{
        static const char *const names[] = {"ok", "suspended", "throttled", "backoff"};
        return (unsigned)st < ELEMENTSOF(names) ? names[st] : "ok";
}

int sched_foreach_destination(struct sched *s, int64_t now,
                              int (*cb)(const struct sched_dest_info *d, void *userdata),
                              void *userdata)
{
        for (size_t b = 0; b < s->n_buckets; b++) {
                for (struct dest *d = s->buckets[b]; d; d = d->hnext) {
                        bool paused = dest_pause_not_pacing(d);
                        bool fresh = dest_learned_fresh(s, d, now);
                        struct sched_dest_info info = {
                            .route = d->route,
                            .source_address = d->source,
                            .state = d->state,
                            .until_us = paused ? d->until_us : 0,
                            .concurrency = d->concurrency,
                            .in_flight = d->in_flight,
                            .queued = d->queued,
                            .last_reply = d->last_reply,
                            .last_class = d->last_class,
                            .learned_greylist_s = dest_learned_estimate(s, d, now),
                            .learned_lower_s = fresh ? d->learned_lo_s : 0,
                            .learned_upper_s = fresh ? d->learned_s : -1,
                            .pause_class = paused ? d->pause_class : -1,
                            .learned_at_us = fresh ? d->learned_at_us : 0,
                        };
                        if (paused && d->until_us <= now) {
                                /* pause over, not yet processed: it resumes throttled */
                                info.state = SCHED_DEST_THROTTLED;
                                info.until_us = 0;
                        }
                        int r = cb(&info, userdata);
                        if (r != 0)
                                return r;
                }
        }
        return 0;
}

/* ---- destinations.json: pauses and concurrency windows ---- */

/* Write root to the state file name, indented with sorted keys. */
static int write_json(struct sched *s, const char *name, json_t *root)
{
        _cleanup_free_ char *text = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
        if (!text)
                return -ENOMEM;
        return s->io.write(s->io.userdata, name, text, strlen(text));
}

/* Read the state file name: 0 and *rootp NULL when there is none, 1 with
 * *rootp and its "destinations" array in *arrp when it is of this version,
 * -EBADMSG when it is not. */
static int read_json(struct sched *s, const char *name, int version, json_t **rootp, json_t **arrp)
{
        *rootp = NULL;
        if (!s->io.read)
                return 0;
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = s->io.read(s->io.userdata, name, LEARNED_MAX_BYTES, &text, &len);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        json_t *root = json_loadb(text, len, 0, NULL);
        json_t *arr = root ? json_object_get(root, "destinations") : NULL;
        json_t *ver = root ? json_object_get(root, "version") : NULL;
        if (!json_is_array(arr) || !json_is_integer(ver) || json_integer_value(ver) != version) {
                json_decref(root);
                return -EBADMSG;
        }
        *rootp = root;
        *arrp = arr;
        return 1;
}

static json_t *dest_state_json(const struct dest *d)
{
        bool paused = dest_pause_not_pacing(d);
        return json_pack("{s:s, s:s, s:s, s:I, s:i, s:s, s:s?}", "source", d->source, "route",
                         d->route, "state", sched_dest_state_name(d->state), "until",
                         (json_int_t)(paused ? d->until_us : 0), "concurrency", d->concurrency,
                         "cause",
                         paused && d->pause_class >= 0 ? reply_class_name(d->pause_class) : "",
                         "last_reply", d->last_reply);
}

static int save_destinations(struct sched *s, int64_t now)
{
        _cleanup_(json_decrefp) json_t *arr = json_array();
        if (!arr)
                return -ENOMEM;
        for (size_t b = 0; b < s->n_buckets; b++)
                for (struct dest *d = s->buckets[b]; d; d = d->hnext) {
                        if (!dest_held(d, now) && d->state != SCHED_DEST_THROTTLED)
                                continue;
                        json_t *o = dest_state_json(d);
                        if (!o || json_array_append_new(arr, o) < 0)
                                return -ENOMEM;
                }
        _cleanup_(json_decrefp) json_t *root =
            json_pack("{s:i, s:I, s:O}", "version", DESTS_VERSION, "saved_at", (json_int_t)now,
                      "destinations", arr);
        if (!root)
                return -ENOMEM;
        int r = write_json(s, SCHED_DESTS_FILE, root);
        if (r == 0)
                s->dests_dirty = false;
        return r;
}

static int load_dest_entry(struct sched *s, json_t *o, int64_t now, int64_t saved_at)
{
        const char *source, *route, *state, *cause = "", *last = NULL;
        json_int_t until;
        int conc;
        if (json_unpack(o, "{s:s, s:s, s:s, s:I, s:i, s?s, s?s}", "source", &source, "route",
                        &route, "state", &state, "until", &until, "concurrency", &conc, "cause",
                        &cause, "last_reply", &last) < 0 ||
            until < 0 || conc < 1)
                return -EBADMSG;
        enum sched_dest_state st;
        if (strcmp(state, "suspended") == 0)
                st = SCHED_DEST_SUSPENDED;
        else if (strcmp(state, "backoff") == 0)
                st = SCHED_DEST_BACKOFF;
        else if (strcmp(state, "throttled") == 0)
                st = SCHED_DEST_THROTTLED;
        else
                return -EBADMSG;
        bool paused = st != SCHED_DEST_THROTTLED;
        if (paused && until <= now)
                return 0; /* over while tarryd was down */
        if (!paused && now - saved_at > DESTS_THROTTLE_KEEP_S * 1000000LL)
                return 0; /* long ago: come back at full concurrency */
        struct dest *d = dest_get(s, source, route, true);
        if (!d)
                return -ENOMEM;
        int full = sched_full_concurrency(s);
        d->concurrency = conc < full ? conc : full;
        d->pause_class = reply_class_from_name(cause);
        if (last && !d->last_reply) {
                d->last_reply = strndup(last, LAST_REPLY_MAX);
                d->last_class = d->pause_class;
        }
        if (paused) {
                sched_pause(s, d, st == SCHED_DEST_SUSPENDED ? PAUSE_SUSPEND : PAUSE_BACKOFF,
                            until);
                d->state = st;
        } else {
                d->state = d->concurrency < full ? SCHED_DEST_THROTTLED : SCHED_DEST_OK;
        }
        return 1;
}

int sched_load_destinations(struct sched *s, int64_t now)
{
        _cleanup_(json_decrefp) json_t *root = NULL;
        json_t *arr = NULL;
        int r = read_json(s, SCHED_DESTS_FILE, DESTS_VERSION, &root, &arr);
        if (r <= 0)
                return r;
        json_t *at = json_object_get(root, "saved_at");
        if (!json_is_integer(at))
                return -EBADMSG;
        int n = 0;
        size_t i;
        json_t *o;
        json_array_foreach (arr, i, o) {
                r = load_dest_entry(s, o, now, json_integer_value(at));
                if (r < 0)
                        return r;
                n += r;
        }
        return n;
}

/* ---- learned.json ---- */

int sched_save_learned(struct sched *s, int64_t now)
{
        if (!s->io.write)
                return 0;
        if (s->dests_dirty) {
                int r = save_destinations(s, now);
                if (r < 0)
                        return r;
        }
        _cleanup_(json_decrefp) json_t *arr = json_array();
        if (!arr)
                return -ENOMEM;
        for (size_t b = 0; b < s->n_buckets; b++)
                for (struct dest *d = s->buckets[b]; d; d = d->hnext) {
                        if (!dest_learned_fresh(s, d, now))
                                continue;
                        json_t *o =
                            json_pack("{s:s, s:s, s:I, s:I, s:I}", "source", d->source, "route",
                                      d->route, "greylist_s", (json_int_t)d->learned_s, "lower_s",
                                      (json_int_t)d->learned_lo_s, "learned_at",
                                      (json_int_t)d->learned_at_us);
                        if (!o || json_array_append_new(arr, o) < 0)
                                return -ENOMEM;
                }
        _cleanup_(json_decrefp) json_t *root =
            json_pack("{s:i, s:O}", "version", LEARNED_VERSION, "destinations", arr);
        if (!root)
                return -ENOMEM;
        int r = write_json(s, SCHED_LEARNED_FILE, root);
        if (r < 0)
                return r;
        s->learned_dirty = false;
        for (size_t b = 0; b < s->n_buckets; b++)
                for (struct dest *d = s->buckets[b]; d; d = d->hnext)
                        if (d->learned_s >= 0)
                                d->saved_at_us = now;
        return 0;
}

static int load_entry(struct sched *s, json_t *o, int64_t now)
{
        const char *source, *route;
        json_int_t delay, at, lower = 0;
        if (json_unpack(o, "{s:s, s:s, s:I, s?I, s:I}", "source", &source, "route", &route,
                        "greylist_s", &delay, "lower_s", &lower, "learned_at", &at) < 0 ||
            delay < 0 || delay > LEARN_MAX_S || lower < 0 || at > now + 86400LL * 1000000)
                return -EBADMSG;
        if (lower >= delay)
                lower = 0;
        if (now - at > s->cfg->greylist_memory_s * (int64_t)1000000)
                return 0;
        struct dest *d = dest_get(s, source, route, true);
        if (!d)
                return -ENOMEM;
        d->learned_s = delay;
        d->learned_lo_s = lower;
        d->learned_lo_at_us = at;
        d->learned_at_us = at;
        d->saved_at_us = at;
        return 1;
}

int sched_load_learned(struct sched *s, int64_t now)
{
        _cleanup_(json_decrefp) json_t *root = NULL;
        json_t *arr = NULL;
        int r = read_json(s, SCHED_LEARNED_FILE, LEARNED_VERSION, &root, &arr);
        if (r <= 0)
                return r;
        int n = 0;
        size_t i;
        json_t *o;
        json_array_foreach (arr, i, o) {
                r = load_entry(s, o, now);
                if (r < 0)
                        return r;
                n += r;
        }
        return n;
}

/* ---- provider limits ---- */

int sched_limit_destination(struct sched *s, const char *source, const char *route,
                            int max_connections, int max_per_minute)
{
        struct dest *d = dest_get(s, source ? source : "", route, false);
        if (!d)
                return -ENOENT;
        d->limit_connections = max_connections > 0 ? max_connections : 0;
        d->limit_gap_us = max_per_minute > 0 ? 60 * 1000000LL / max_per_minute : 0;
        return 0;
}
