/* daemon/deliver.c — from due scheduler items to smtpc attempts and back.
 *
 * A message's waiting recipients are grouped by destination (smtpc's route
 * key); each group is one scheduler item. When an item falls due, the
 * envelope is loaded, the recipients whose own retry is due are handed to
 * smtpc, and the outcome is applied recipient by recipient: scheduler
 * decision, envelope update, log record, DSNs. The envelope is persisted
 * before anything else is decided about the message; it leaves the spool
 * when no recipient is left to deliver.
 */
#include "daemon/log.h"
#include "daemon/message.h"
#include "daemon/sitetally.h"
#include "daemon/tarryd.h"
#include "common/address.h"
#include "common/cleanup.h"
#include "common/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define POP_BATCH 64
/* An item waiting for its domain's MX set is looked at again after this at
 * the latest (the lookup's own end wakes it sooner: deliver_site_ready). */
#define SITE_WAIT_US (30 * 1000000LL)

/* A message whose item waits for the MX set of domain. */
struct site_waiter {
        char id[QUEUE_ID_LEN + 1];
        char domain[256];
};

static void work_free(struct tarryd *d, struct work *w)
{
        msgindex_work_free(d->index, w);
}

/* The smtpc route key of w's recipients (the scheduler knows w by its site). */
static const char *work_route(const struct work *w)
{
        return w->route ? w->route : sched_item_route(w->it);
}

/* One running attempt. */
struct attempt {
        struct tarryd *d;
        struct work *w;
        int64_t start_us;
        size_t n;
        size_t *idx; /* indices into env->rcpt */
        bool forced; /* tarryq -f / -i: recipients not yet due were tried too */
        int body_fd; /* the body as sent: a message file delivered is unlinked with it held */
};

static bool waiting(const struct envelope_rcpt *r)
{
        return r->state == RCPT_PENDING || r->state == RCPT_DEFERRED;
}

static int route_of(struct tarryd *d, const struct envelope_rcpt *r, struct smtpc_route *out)
{
        const char *domain = addr_domain(r->address);
        return smtpc_route(d->cfg, domain ? domain : d->cfg->myorigin, out);
}

/* The source address this message leaves from: the one pinned at its first
 * attempt while it is still configured, else the pool's pick (NULL: none
 * configured, the kernel chooses). start_attempt re-pins the envelope. */
static const char *source_for(struct tarryd *d, struct envelope *env, const char *destination)
{
        if (env->source_address && smtpc_source_configured(d->cfg, env->source_address))
                return env->source_address;
        return smtpc_pick_source(d->cfg, destination);
}

/* The item was made under a configuration that had its source address; a
 * reload took it away. Replace the item with one from the current pick, due
 * now (the pin follows at its attempt). False when it cannot be replaced. */
static int new_item(struct tarryd *d, struct work *w, const char *source, const char *site,
                    const char *route, int64_t due);

static bool move_off_stale_source(struct tarryd *d, struct work *w, int64_t now)
{
        const char *source = sched_item_source(w->it);
        if (!*source || smtpc_source_configured(d->cfg, source))
                return false;
        /* copies: new_item frees the item and the route they live in */
        char site[SMTPC_DEST_MAX], route[SMTPC_DEST_MAX];
        snprintf(site, sizeof(site), "%s", sched_item_route(w->it));
        snprintf(route, sizeof(route), "%s", work_route(w));
        const char *pick = source_for(d, w->m->env, route);
        /* new_item, so the site's provider limits hold for the new source too */
        return new_item(d, w, pick ? pick : "", site, route, now) == 0;
}

/* Pin the envelope to the source its attempt leaves from: at the first
 * attempt, or again when the pinned address is no longer configured (logged
 * once: the new pin is persisted with the attempt's outcome). */
static void pin_source(struct tarryd *d, struct envelope *env, const char *source, const char *site)
{
        const char *old = env->source_address;
        if (old && strcmp(old, source) != 0 && smtpc_source_configured(d->cfg, old) && *source) {
                /* only [retry.reputation] move_source gives an item another address */
                log_info("%s: moved from source address %s to %s: %s is suspended for %s", env->id,
                         old, source, site, old);
                free(env->source_address);
                env->source_address = strdup(source);
                return;
        }
        if (old && (strcmp(old, source) == 0 || smtpc_source_configured(d->cfg, old)))
                return;
        if (!old && !*source)
                return;
        if (old)
                log_info("%s: pinned source address %s is no longer configured; re-pinned to %s",
                         env->id, old, *source ? source : "the kernel's choice");
        free(env->source_address);
        env->source_address = *source ? strdup(source) : NULL;
}

/* Has m a work other than w whose item is at site? */
static bool other_work_at(const struct msg *m, const struct work *w, const char *site)
{
        for (const struct work *e = m->works; e; e = e->next)
                if (e != w && e->it && strcmp(sched_item_route(e->it), site) == 0)
                        return true;
        return false;
}

/* w (its item at site, its recipients' route) no longer waits there
 * (/status "sites", daemon/sitetally.h). */
static void tally_drop(struct tarryd *d, const struct work *w, const char *site, const char *route)
{
        if (d->site_tally)
                site_tally_drop(d->site_tally, site, route, !other_work_at(w->m, w, site));
}

static void untally_work(struct tarryd *d, const struct work *w)
{
        if (w->it)
                tally_drop(d, w, sched_item_route(w->it), work_route(w));
}

static void drop_works(struct tarryd *d, struct msg *m)
{
        while (m->works) {
                struct work *w = m->works;
                m->works = w->next;
                untally_work(d, w);
                if (w->it)
                        sched_remove(d->sched, w->it);
                work_free(d, w);
        }
}

static void forget_work(struct tarryd *d, struct work *w)
{
        for (struct work **p = &w->m->works; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        break;
                }
        untally_work(d, w);
        if (w->it)
                sched_remove(d->sched, w->it);
        work_free(d, w);
}

void deliver_forget_message(struct tarryd *d, struct msg *m)
{
        drop_works(d, m);
}

/* The site of route (daemon/site.h) in key: 1 known, 0 its MX set is being
 * looked up (key: the route's own), negative errno. */
static int site_of(struct tarryd *d, const struct smtpc_route *route, char *key, size_t len)
{
        if (!d->sites) {
                snprintf(key, len, "%s", route->destination);
                return 1;
        }
        return site_lookup(d->sites, d->classifier, route, now_realtime_us(), key, len);
}

/* Give w a scheduler item for (source, site) whose recipients take route
 * (replacing the one it has); a provider's limits apply to the site. */
static int new_item(struct tarryd *d, struct work *w, const char *source, const char *site,
                    const char *route, int64_t due)
{
        bool same = strcmp(site, route) == 0;
        const char *copy = same ? NULL : msgindex_route_get(d->index, route);
        if (!same && !copy)
                return -ENOMEM;
        int64_t expires = w->m->arrival_us + d->cfg->queue_lifetime_s * 1000000LL;
        struct sched_item *it = NULL;
        int r = sched_add(d->sched, source, site, due, expires, w, &it);
        if (r < 0) {
                msgindex_route_put(d->index, copy);
                return r;
        }
        if (d->site_tally &&
            site_tally_add(d->site_tally, site, route, !other_work_at(w->m, w, site)) < 0) {
                sched_remove(d->sched, it);
                msgindex_route_put(d->index, copy);
                return -ENOMEM;
        }
        const struct sched_provider *p = site_provider(d->classifier, site);
        if (p)
                sched_limit_destination(d->sched, source, site, (int)p->connections.value,
                                        (int)p->messages_per_minute.value);
        untally_work(d, w);
        if (w->it)
                sched_remove(d->sched, w->it);
        w->it = it;
        msgindex_route_put(d->index, w->route);
        w->route = copy;
        return 0;
}

static struct work *add_work(struct tarryd *d, struct msg *m, const char *source,
                             const struct smtpc_route *route, int64_t due)
{
        char site[SITE_KEY_MAX];
        struct work *w = msgindex_work_new(d->index, m);
        if (!w || site_of(d, route, site, sizeof(site)) < 0) {
                work_free(d, w);
                return NULL;
        }
        if (new_item(d, w, source, site, route->destination, due) < 0) {
                work_free(d, w);
                return NULL;
        }
        w->next = m->works;
        m->works = w;
        return w;
}

static bool has_work_for(struct msg *m, const char *destination)
{
        for (struct work *w = m->works; w; w = w->next)
                if (strcmp(work_route(w), destination) == 0)
                        return true;
        return false;
}

static void finish_message(struct tarryd *d, struct msg *m, int *body_fd);

/* A work item for each destination of m's waiting recipients that has none,
 * due when its first recipient is, or at not_after if that is earlier. */
static int add_works(struct tarryd *d, struct msg *m, int64_t not_after)
{
        struct envelope *env = m->env;
        const char *source = NULL;
        for (size_t i = 0; i < env->n_rcpt; i++) {
                struct smtpc_route route;
                if (!waiting(&env->rcpt[i]) || route_of(d, &env->rcpt[i], &route) < 0 ||
                    has_work_for(m, route.destination))
                        continue;
                if (!source)
                        source = source_for(d, env, route.destination);
                int64_t due = not_after;
                for (size_t j = i; j < env->n_rcpt; j++) {
                        struct smtpc_route other;
                        if (waiting(&env->rcpt[j]) && route_of(d, &env->rcpt[j], &other) == 0 &&
                            strcmp(other.destination, route.destination) == 0 &&
                            env->rcpt[j].next_attempt_us < due)
                                due = env->rcpt[j].next_attempt_us;
                }
                if (!add_work(d, m, source, &route, due))
                        return -ENOMEM;
        }
        return 0;
}

int deliver_schedule_message(struct tarryd *d, struct msg *m)
{
        drop_works(d, m);
        int r = add_works(d, m, INT64_MAX);
        if (r < 0)
                return r;
        if (!m->works)
                finish_message(d, m, NULL);
        deliver_arm_timer(d);
        return 0;
}

/* No waiting recipient of m goes to w's destination any more: a reload
 * changed [transport] or relayhost (a typo fixed, say). Without this the
 * item would wait for ever. Work for the new destinations replaces it.
 * False (nothing changed) when m has no waiting recipient at all. */
static bool reroute(struct tarryd *d, struct msg *m, struct work *w, int64_t now)
{
        size_t waiting_n = 0;
        for (size_t i = 0; i < m->env->n_rcpt; i++)
                waiting_n += waiting(&m->env->rcpt[i]);
        if (waiting_n == 0)
                return false;
        forget_work(d, w);
        if (add_works(d, m, m->forced ? now : INT64_MAX) < 0) /* flushed: due now */
                log_error("%s: cannot schedule the new next hop: %s; will retry at restart", m->id,
                          strerror(ENOMEM));
        deliver_arm_timer(d);
        return true;
}

const char *deliver_work_route(const struct work *w)
{
        return work_route(w);
}

/* A route rebuilt from its key, as a snapshot record holds it ("mx:DOMAIN",
 * or a relayhost/[transport] key, a site of its own): enough to find the
 * site. The envelope, read before each attempt, decides the real next hop
 * (reroute() moves the work if the configuration changed meanwhile). */
static void route_from_key(const char *key, struct smtpc_route *out)
{
        memset(out, 0, sizeof(*out));
        snprintf(out->destination, sizeof(out->destination), "%s", key);
        if (strncmp(key, "mx:", 3) == 0) {
                out->kind = SMTPC_ROUTE_MX;
                snprintf(out->host, sizeof(out->host), "%s", key + 3);
        } else {
                out->kind = SMTPC_ROUTE_RELAYHOST;
        }
}

int deliver_schedule_from(struct tarryd *d, struct msg *m, const struct queue_snap_rec *r)
{
        drop_works(d, m);
        for (unsigned i = 0; i < r->n_works; i++) {
                struct smtpc_route route;
                route_from_key(r->works[i].destination, &route);
                if (!add_work(d, m, r->works[i].source, &route, r->works[i].due_us)) {
                        drop_works(d, m);
                        return -ENOMEM;
                }
        }
        return 0; /* the caller arms the due timer once for all it scheduled */
}

static int on_due(sd_event_source *s, uint64_t usec, void *userdata)
{
        (void)s;
        (void)usec;
        deliver_run_due(userdata);
        return 0;
}

void deliver_arm_timer(struct tarryd *d)
{
        int64_t now = now_realtime_us();
        int64_t next = sched_next_due(d->sched, now);
        if (d->stopping || next == INT64_MAX) {
                if (d->due_timer)
                        sd_event_source_set_enabled(d->due_timer, SD_EVENT_OFF);
                return;
        }
        if (next < now)
                next = now;
        if (!d->due_timer) {
                sd_event_add_time(d->loop, &d->due_timer, CLOCK_REALTIME, (uint64_t)next, 1000,
                                  on_due, d);
                return;
        }
        sd_event_source_set_time(d->due_timer, (uint64_t)next);
        sd_event_source_set_enabled(d->due_timer, SD_EVENT_ONESHOT);
}

static void on_attempt_done(const struct smtpc_result *res, void *userdata);

/* Recipients of w's destination whose own retry is due; returns how many. */
static size_t select_rcpts(struct tarryd *d, struct work *w, int64_t now, size_t *idx,
                           int64_t *next_due)
{
        struct envelope *env = w->m->env;
        const char *dest = work_route(w);
        size_t n = 0;
        *next_due = INT64_MAX;
        for (size_t i = 0; i < env->n_rcpt; i++) {
                struct smtpc_route route;
                if (!waiting(&env->rcpt[i]) || route_of(d, &env->rcpt[i], &route) < 0 ||
                    strcmp(route.destination, dest) != 0)
                        continue;
                if (w->m->forced || env->rcpt[i].next_attempt_us <= now)
                        idx[n++] = i;
                else if (env->rcpt[i].next_attempt_us < *next_due)
                        *next_due = env->rcpt[i].next_attempt_us;
        }
        return n;
}

static void wait_for_site(struct tarryd *d, struct msg *m, const char *domain)
{
        for (size_t i = 0; i < d->n_site_waiters; i++)
                if (strcmp(d->site_waiters[i].id, m->id) == 0 &&
                    strcasecmp(d->site_waiters[i].domain, domain) == 0)
                        return;
        if (d->n_site_waiters == d->cap_site_waiters) {
                size_t cap = d->cap_site_waiters ? 2 * d->cap_site_waiters : 16;
                struct site_waiter *n = realloc(d->site_waiters, cap * sizeof(*n));
                if (!n)
                        return; /* SITE_WAIT_US brings it back anyway */
                d->site_waiters = n;
                d->cap_site_waiters = cap;
        }
        struct site_waiter *wt = &d->site_waiters[d->n_site_waiters++];
        snprintf(wt->id, sizeof(wt->id), "%s", m->id);
        snprintf(wt->domain, sizeof(wt->domain), "%s", domain);
}

/* Is w's item keyed by the site its recipients (r is one) go to now? An
 * item made while the domain's MX set was being looked up, or whose site
 * changed (the cached MX set expired and the answer differs), is replaced by
 * one for the current site, due now: if that site is suspended, the item
 * waits with it. An item whose MX set is still being looked up waits for
 * the answer (deliver_site_ready). False when w was not attempted now. */
static bool settle_site(struct tarryd *d, struct work *w, const struct envelope_rcpt *r,
                        int64_t now)
{
        struct smtpc_route route;
        char site[SITE_KEY_MAX];
        if (route_of(d, r, &route) < 0)
                return true;
        int k = site_of(d, &route, site, sizeof(site));
        if (k == 0) {
                wait_for_site(d, w->m, route.host);
                sched_reschedule(d->sched, w->it, now + SITE_WAIT_US);
                return false;
        }
        if (k < 0 || strcmp(site, sched_item_route(w->it)) == 0)
                return true; /* without memory for a new item: attempt it as it is */
        char source[SMTPC_DEST_MAX];
        snprintf(source, sizeof(source), "%s", sched_item_source(w->it));
        if (new_item(d, w, source, site, route.destination, now) < 0)
                return true;
        return false;
}

void deliver_site_ready(void *userdata, const char *domain)
{
        struct tarryd *d = userdata;
        int64_t now = now_realtime_us();
        char route[SMTPC_DEST_MAX];
        snprintf(route, sizeof(route), "mx:%s", domain);
        size_t kept = 0;
        for (size_t i = 0; i < d->n_site_waiters; i++) {
                struct site_waiter *wt = &d->site_waiters[i];
                if (strcasecmp(wt->domain, domain) != 0) {
                        d->site_waiters[kept++] = *wt;
                        continue;
                }
                struct msg *m = msgindex_get(d->index, wt->id);
                for (struct work *w = m ? m->works : NULL; w; w = w->next)
                        if (sched_item_due(w->it) != 0 &&
                            strcasecmp(sched_item_route(w->it), route) == 0)
                                sched_reschedule(d->sched, w->it, now);
        }
        d->n_site_waiters = kept;
        if (d->n_site_waiters == 0) {
                free(d->site_waiters);
                d->site_waiters = NULL;
                d->cap_site_waiters = 0;
        }
        deliver_run_due(d);
}

/* The envelope's NOTIFY bits as smtpc's (0: not given, nothing is sent). */
static unsigned notify_for_smtpc(unsigned n)
{
        if (n & NOTIFY_NEVER)
                return SMTPC_NOTIFY_NEVER;
        return (n & NOTIFY_SUCCESS ? SMTPC_NOTIFY_SUCCESS : 0u) |
               (n & NOTIFY_FAILURE ? SMTPC_NOTIFY_FAILURE : 0u) |
               (n & NOTIFY_DELAY ? SMTPC_NOTIFY_DELAY : 0u);
}

static void start_attempt(struct tarryd *d, struct work *w, int64_t now)
{
        struct msg *m = w->m;
        _cleanup_close_ int fd = -1; /* the body, opened with the envelope when it is loaded */
        uint64_t size = 0;
        int lr = message_load_with_body(d, m, &fd, &size);
        if (lr == -ENOENT || lr == -EBADMSG) {
                /* Forget only this work: the message's other works may sit later in
                 * the same batch of popped items (deliver_run_due), or be in flight;
                 * each finds the envelope gone by itself, and the last one frees m. */
                forget_work(d, w);
                if (!m->works && m->inflight == 0)
                        message_free(d, m);
                return;
        }
        if (lr < 0) {
                /* EMFILE, ENOMEM, EIO…: the message is still queued; try it again later
                 * (every 5 s: logged once per run of the same error, counted each time) */
                if (m->read_error != lr)
                        log_error("%s: cannot read the envelope: %s; will retry", m->id,
                                  strerror(-lr));
                m->read_error = (int16_t)lr;
                deliver_count_spool_error(d, "read");
                sched_reschedule(d->sched, w->it, now + SPOOL_RETRY_US);
                return;
        }
        if (m->read_error) {
                log_info("%s: envelope read again", m->id);
                m->read_error = 0;
        }
        struct envelope *env = m->env;
        _cleanup_free_ size_t *idx = calloc(env->n_rcpt, sizeof(size_t));
        _cleanup_free_ const char **rcpts = calloc(env->n_rcpt, sizeof(char *));
        _cleanup_free_ const char **orcpt = calloc(env->n_rcpt, sizeof(char *));
        _cleanup_free_ unsigned *notify = calloc(env->n_rcpt, sizeof(unsigned));
        int64_t next_due = INT64_MAX;
        size_t n = idx && rcpts ? select_rcpts(d, w, now, idx, &next_due) : 0;
        if (n == 0 && idx && rcpts && next_due == INT64_MAX && reroute(d, m, w, now)) {
                message_release_envelope(m);
                return;
        }
        if (n == 0) {
                sched_reschedule(d->sched, w->it, idx ? next_due : now + SPOOL_RETRY_US);
                message_release_envelope(m);
                return;
        }
        if (!settle_site(d, w, &env->rcpt[idx[0]], now) || move_off_stale_source(d, w, now)) {
                message_release_envelope(m);
                return;
        }
        bool forced = m->forced;
        message_force(m, false);
        const char *source = sched_item_source(w->it);
        pin_source(d, env, source, sched_item_route(w->it)); /* persisted with the outcome */
        for (size_t i = 0; i < n; i++) {
                rcpts[i] = env->rcpt[idx[i]].address;
                orcpt[i] = env->rcpt[idx[i]].orcpt;
                notify[i] = notify_for_smtpc(env->rcpt[idx[i]].notify);
        }

        /* the MX set the site was chosen by, while its TTL lasts */
        struct smtpc_route route;
        struct smtpc_mx mx[SMTPC_MX_MAX];
        size_t n_mx = route_of(d, &env->rcpt[idx[0]], &route) == 0
                          ? site_mx(d->sites, &route, now_realtime_us(), mx, SMTPC_MX_MAX)
                          : 0;
        struct attempt *a = calloc(1, sizeof(*a));
        int r = a && orcpt && notify && fd < 0
                    ? queue_open_body(d->queue, QUEUE_ACTIVE, m->id, &fd, &size)
                    : 0;
        if (!a || !orcpt || !notify)
                r = -ENOMEM;
        if (r == 0) /* persisted with the outcome */
                r = pickup_sign(d, env, fd, size);
        /* the header lines added at pickup go as the prefix: the worker joins
         * them and the body, not this loop */
        if (r == 0) {
                *a = (struct attempt){d, w, now, n, TAKE_PTR(idx), forced, -1};
                const char *site = sched_item_route(w->it);
                const struct sched_provider *prov = site_provider(d->classifier, site);
                struct smtpc_request req = {
                    .queue_id = m->id,
                    .sender = env->sender,
                    .rcpts = rcpts,
                    .n_rcpts = n,
                    .body_fd = fd,
                    .body_size = size,
                    .prefix = env->headers,
                    .source_address = *source ? source : NULL,
                    .site = site,
                    .site_connections = prov ? (unsigned)prov->connections.value : 0,
                    .messages_per_connection =
                        prov ? (unsigned)prov->messages_per_connection.value : 0,
                    .mx = mx,
                    .n_mx = n_mx,
                    /* the sender's RFC 3461 request travels on (smtpc sends it
                     * where DSN is offered) */
                    .dsn_ret = env->ret == DSN_RET_FULL   ? SMTPC_RET_FULL
                               : env->ret == DSN_RET_HDRS ? SMTPC_RET_HDRS
                                                          : SMTPC_RET_NONE,
                    .envid = env->envid,
                    .notify = notify,
                    .orcpt = orcpt,
                    .body_signed = env->dkim == ENVELOPE_DKIM_SIGNED,
                    .done = on_attempt_done,
                    .userdata = a,
                };
                r = smtpc_pool_attempt_start(d->pool, &req);
        }
        if (r < 0) {
                log_error("%s: cannot start a delivery attempt: %s", m->id, strerror(-r));
                if (a)
                        free(a->idx);
                free(a);
                sched_reschedule(d->sched, w->it, now + SPOOL_RETRY_US);
                message_release_envelope(m);
                return;
        }
        a->body_fd = TAKE_FD(fd); /* the pool has its own copy */
        message_attempt_begin(d, m);
        d->inflight++;
}

void deliver_run_due(struct tarryd *d)
{
        struct sched_item *items[POP_BATCH];
        for (;;) {
                if (d->stopping)
                        return;
                /* the scheduler owns concurrency: it returns only what may
                 * connect now (max_connections, destination windows), so the
                 * pool never queues and no envelope is loaded ahead */
                int64_t now = now_realtime_us();
                size_t n = sched_pop_due(d->sched, now, items, POP_BATCH);
                for (size_t i = 0; i < n; i++)
                        start_attempt(d, sched_item_userdata(items[i]), now);
                if (n < POP_BATCH)
                        break;
        }
        deliver_arm_timer(d);
}

/* ---- outcomes ---- */

static void set_str(char **field, const char *value)
{
        char *copy = value ? strdup(value) : NULL;
        if (value && !copy)
                return; /* keep the old text rather than lose the field */
        free(*field);
        *field = copy;
}

/* Reply text on one line, for logs. */
static void one_line(const char *text, char *out, size_t outlen)
{
        size_t j = 0;
        for (size_t i = 0; text && text[i] && j + 1 < outlen; i++)
                out[j++] = (text[i] == '\r' || text[i] == '\n') ? ' ' : text[i];
        out[j] = '\0';
}

static const char *status_word(const struct sched_decision *dec)
{
        switch (dec->action) {
        case SCHED_DELIVERED:
                return "sent";
        case SCHED_RETRY:
                return "deferred";
        case SCHED_FAILED:
                return dec->fail == SCHED_FAIL_EXPIRED ? "expired" : "bounced";
        default:
                return "skipped";
        }
}

static void log_outcome(struct attempt *a, const struct smtpc_result *res,
                        const struct envelope_rcpt *r, const struct sched_decision *dec,
                        const char *text, bool theirs, const char *relay, int64_t now)
{
        char line[1024], next[32] = "", cls[48] = "";
        one_line(text, line, sizeof(line));
        if (dec->action == SCHED_RETRY) {
                /* next=2026-12-07T14:05:00+01:00: local time with its zone */
                queue_iso_time(dec->next_attempt_us, next, sizeof(next));
                snprintf(cls, sizeof(cls), " class=%s", reply_class_name(dec->cls));
        } else if (dec->action == SCHED_FAILED) {
                snprintf(cls, sizeof(cls), " class=%s", reply_class_name(dec->cls));
        }
        const struct envelope *env = a->w->m->env;
        double delay = (double)(now - env->arrival_us) / 1e6;
        double wait = (double)(a->start_us - env->arrival_us) / 1e6;
        double conn = (double)res->connect_us / 1e6;
        double xfer = (double)(res->total_us - res->connect_us) / 1e6;
        char host[300] = "";
        if (res->mx_host && theirs) /* the server's words, not tarry's */
                snprintf(host, sizeof(host), "host %s[%s] said: ", res->mx_host,
                         res->mx_ip ? res->mx_ip : "?");
        log_record(LOG_INFO,
                   &(struct log_fields){.queue_id = env->id,
                                        .rcpt = r->address,
                                        .status = status_word(dec),
                                        .dsn = r->dsn_status,
                                        .relay = relay,
                                        .reply_class = dec->action == SCHED_DELIVERED
                                                           ? NULL
                                                           : reply_class_name(dec->cls)},
                   "%s: to=<%s>, relay=%s, delay=%.2f, delays=%.2f/0/%.2f/%.2f, dsn=%s, "
                   "status=%s (%s%s)%s%s%s",
                   env->id, r->address, relay, delay, wait < 0 ? 0 : wait, conn,
                   xfer < 0 ? 0 : xfer, r->dsn_status ? r->dsn_status : "4.0.0", status_word(dec),
                   host, line, cls, *next ? " next=" : "", next);
}

static void count_outcome(struct tarryd *d, const struct sched_decision *dec,
                          const struct envelope *env, int64_t now)
{
        const char *outcome = dec->action == SCHED_DELIVERED ? "delivered"
                              : dec->action == SCHED_RETRY   ? "deferred"
                                                             : "failed";
        d->n_attempts++;
        if (dec->action == SCHED_DELIVERED)
                d->n_delivered++;
        else if (dec->action == SCHED_RETRY)
                d->n_deferred++;
        else
                d->n_failed++;
        if (!d->metrics)
                return;
        const char *cls = dec->action == SCHED_DELIVERED ? "none" : reply_class_name(dec->cls);
        status_counter_add(d->metrics, STATUS_M_ATTEMPTS, STATUS_LABELS(cls, outcome), 1);
        if (dec->action == SCHED_DELIVERED)
                status_histogram_observe(d->metrics, STATUS_M_LATENCY, NULL,
                                         (double)(now - env->arrival_us) / 1e6);
}

/* Are the words of this reply the server's own, or tarry's (a timeout, a lost
 * connection, DNS, a refusal of ours)? Only the former is "host … said" and
 * "smtp;" in a DSN. A 5xx greeting is the server's verdict (classified by its
 * words) in a sentence of tarry's ("host … refused to talk to me: …"). */
static bool server_words(const struct smtpc_result *res, const struct sched_reply *reply)
{
        if (reply->origin != OUTCOME_FROM_SERVER)
                return false;
        return res->status == SMTPC_ATTEMPT_DONE || res->failure != SMTPC_FAIL_REFUSED;
}

static struct sched_reply typed_reply(int code, const char *enhanced, const char *text,
                                      enum outcome_origin origin, enum outcome_local local,
                                      enum outcome_phase phase)
{
        return (struct sched_reply){.code = code,
                                    .enhanced = enhanced,
                                    .text = text,
                                    .origin = origin,
                                    .local = local,
                                    .phase = phase};
}

/* Record one recipient's outcome. A reason of tarry's own (!from_server)
 * keeps no reply code: it is shown and reported as tarry's words. */
static void apply_decision(struct envelope_rcpt *r, const struct sched_decision *dec,
                           const char *text, bool from_server, const char *relay, int64_t start,
                           int64_t now)
{
        r->attempts++;
        if (!r->first_attempt_us)
                r->first_attempt_us = start;
        r->last_attempt_us = now;
        r->reply_code = from_server ? dec->code : 0;
        set_str(&r->dsn_status, dec->enhanced[0] ? dec->enhanced : NULL);
        set_str(&r->last_reply, text);
        set_str(&r->relay, relay);
        set_str(&r->rule, dec->rule);
        set_str(&r->reply_class,
                dec->action == SCHED_DELIVERED ? NULL : reply_class_name(dec->cls));
        r->first_deferral_us = dec->first_deferral_us;
        set_str(&r->next_reason, NULL);
        switch (dec->action) {
        case SCHED_DELIVERED:
                r->state = RCPT_DELIVERED;
                break;
        case SCHED_RETRY:
                r->state = RCPT_DEFERRED;
                r->next_attempt_us = dec->next_attempt_us;
                set_str(&r->next_reason, sched_why_name(dec->why));
                break;
        case SCHED_FAILED:
                r->state = RCPT_FAILED;
                if (!r->dsn_status || r->dsn_status[0] != '5')
                        set_str(&r->dsn_status, dec->fail == SCHED_FAIL_EXPIRED
                                                    ? "4.4.7"
                                                    : (r->dsn_status ? r->dsn_status : "5.0.0"));
                break;
        case SCHED_NOT_ATTEMPTED:
                break;
        }
}

/* An error that may go away by itself (a full disk, too many open files)
 * rather than one that will repeat for ever (a DSN that cannot be serialised). */
static bool transient(int r)
{
        return r != -EINVAL && r != -E2BIG && r != -EBADMSG;
}

/* The notifications tarryd sends about a message. */
enum notice {
        NOTICE_DELAY,      /* the one delayed DSN */
        NOTICE_FAILURE,    /* failed DSN to the sender */
        NOTICE_POSTMASTER, /* a DSN of ours failed: the postmaster gets it */
        NOTICE_RELAYED,    /* NOTIFY=SUCCESS delivered to a server without DSN */
};

static const char *const notice_words[] = {
    [NOTICE_DELAY] = "delay",
    [NOTICE_FAILURE] = "failure",
    [NOTICE_POSTMASTER] = "postmaster",
    [NOTICE_RELAYED] = "relayed",
};

static int build_notice(struct tarryd *d, struct msg *m, enum notice kind, struct dsn_report **rep)
{
        _cleanup_close_ int fd = -1;
        uint64_t size = 0;
        if (queue_open_body(d->queue, QUEUE_ACTIVE, m->id, &fd, &size) < 0)
                fd = -1;
        const char *pre = m->env->headers;
        struct dsn_original orig = {
            .fd = fd, .size = size, .prefix = pre, .prefix_len = pre ? strlen(pre) : 0};
        int64_t now = now_realtime_us();
        switch (kind) {
        case NOTICE_DELAY:
                return dsn_build_delayed(m->env, &orig, &d->dsn_policy, now, rep);
        case NOTICE_FAILURE:
                return dsn_build_failed(m->env, &orig, &d->dsn_policy, now, rep);
        case NOTICE_POSTMASTER:
                return dsn_build_postmaster(m->env, &orig, &d->dsn_policy, now, rep);
        case NOTICE_RELAYED:
                return dsn_build_relayed(m->env, &orig, &d->dsn_policy, now, rep);
        }
        return -EINVAL;
}

/* Queue a DSN and mark it on the original; the caller persists the original.
 * Returns 0, or a negative errno when the DSN could not be queued yet and is
 * still owed: the original must then stay queued until it can be. */
static int send_dsn(struct tarryd *d, struct msg *m, enum notice kind)
{
        struct envelope *env = m->env;
        struct dsn_report *rep = NULL;
        int r = build_notice(d, m, kind, &rep);
        if (r <= 0) {
                if (r < 0)
                        log_error("%s: cannot build a %s DSN: %s", m->id, notice_words[kind],
                                  strerror(-r));
                return kind == NOTICE_POSTMASTER ? r : 0;
        }
        r = queue_enqueue(d->queue, QUEUE_INCOMING, rep->env, rep->message, rep->len);
        if (r < 0) {
                bool owed = transient(r);
                if (m->dsn_error != r)
                        log_error("%s: cannot queue a %s DSN: %s%s", m->id, notice_words[kind],
                                  strerror(-r), owed ? "; keeping the message until it can" : "");
                deliver_count_spool_error(d, "dsn");
                m->dsn_error = r;
                if (!owed && kind != NOTICE_POSTMASTER)
                        r = 0;
        } else {
                m->dsn_error = 0;
                dsn_mark_sent(env, rep);
                d->n_dsn_sent++;
                if (d->metrics)
                        status_counter_add(d->metrics, STATUS_M_DSN_SENT,
                                           STATUS_LABELS(kind == NOTICE_DELAY     ? "delayed"
                                                         : kind == NOTICE_RELAYED ? "relayed"
                                                                                  : "failed"),
                                           1);
                if (kind == NOTICE_POSTMASTER)
                        log_info("%s: undeliverable notification: postmaster %s notified: %s",
                                 m->id, d->dsn_policy.postmaster, rep->env->id);
                else
                        log_info("%s: sender %s notification: %s", m->id,
                                 kind == NOTICE_DELAY     ? "delay"
                                 : kind == NOTICE_RELAYED ? "success (relayed)"
                                                          : "non-delivery",
                                 rep->env->id);
        }
        dsn_report_free(rep);
        return r;
}

/* Note the outcome of a spool write for m (the envelope's, or the removal's):
 * the first failure of a run (and a change of error) is logged, every one is
 * counted; the write that succeeds after failures says so. Returns true when
 * m must be visited again. */
static bool note_write(struct tarryd *d, struct msg *m, int r, bool removal)
{
        if (r == 0) {
                if (m->write_failures > 0)
                        log_info("%s: %s after %u failed attempt(s)", m->id,
                                 removal ? "spool writes work again" : "envelope written",
                                 (unsigned)m->write_failures);
                m->write_failures = 0;
                m->write_error = 0;
                return false;
        }
        if (m->write_error != r)
                log_error("%s: cannot %s: %s; will retry", m->id,
                          removal ? "remove the finished message" : "write the envelope",
                          strerror(-r));
        m->write_error = r;
        if (m->write_failures < UINT16_MAX)
                m->write_failures++;
        deliver_count_spool_error(d, removal ? "remove" : "write");
        return true;
}

/* The last word on a DSN of ours that could not be delivered and that the
 * postmaster cannot be told about (none set, or this is the postmaster's
 * notice): persisted, then moved to hold/ with the reason logged. Never
 * deleted. 0 when m is in hold/ now, else a negative errno (the caller
 * keeps it dirty and comes back). */
static int hold_undeliverable(struct tarryd *d, struct msg *m, int why_err)
{
        const struct envelope *env = m->env;
        const char *addr = env->n_rcpt ? env->rcpt[0].address : "?";
        char why[200];
        if (why_err < 0)
                snprintf(why, sizeof why, "the postmaster notice cannot be built: %s",
                         strerror(-why_err));
        else
                snprintf(why, sizeof why, "%s",
                         env->postmaster_notice      ? "it is the postmaster's notice itself"
                         : !d->dsn_policy.postmaster ? "no postmaster is set"
                                                     : "the postmaster cannot be told");
        int r = queue_update(d->queue, QUEUE_ACTIVE, env);
        if (r == 0)
                r = message_park(d, m);
        if (r < 0)
                return r;
        note_write(d, m, 0, false);
        log_error("%s: undeliverable notification to <%s> moved to hold/ (%s); read it and "
                  "remove it with tarryq -d",
                  m->id, addr, why);
        return 0;
}

/* Persist the envelope, or remove the message when nothing is left to do.
 * Whatever fails (a full disk…) leaves the message queued and marked dirty:
 * its envelope stays in memory and the retry timer comes back to it.
 * body_fd (may be NULL): the last attempt's descriptor of the body, taken
 * over (-1 after) when the message file is removed with it (remover.c). */
static void finish_message(struct tarryd *d, struct msg *m, int *body_fd)
{
        struct envelope *env = m->env;
        int owed = 0; /* a DSN that could not be queued yet: keep the original */
        bool hold = false;
        if (dsn_failures_pending(env) > 0)
                owed = send_dsn(d, m, NOTICE_FAILURE);
        if (dsn_delay_due(env, &d->dsn_policy, now_realtime_us())) {
                int r = send_dsn(d, m, NOTICE_DELAY);
                if (owed == 0)
                        owed = r;
        }
        if (dsn_relayed_pending(env) > 0) {
                int r = send_dsn(d, m, NOTICE_RELAYED);
                if (owed == 0)
                        owed = r;
        }
        int pm_err = 0;
        if (dsn_undeliverable(env) > 0 && dsn_postmaster_may_report(env, &d->dsn_policy)) {
                int r = send_dsn(d, m, NOTICE_POSTMASTER);
                if (r < 0 && transient(r) && owed == 0)
                        owed = r;
                else if (r < 0)
                        pm_err = r;
        }
        hold = dsn_undeliverable(env) > 0 && owed == 0;
        message_summarise(d, m, env);
        size_t pending = m->n_pending;
        bool again;
        if (hold && pending == 0 && !m->works && m->inflight == 0) {
                int r = hold_undeliverable(d, m, pm_err);
                if (r == 0) {
                        m->dirty = false;
                        return;
                }
                again = note_write(d, m, r, false);
        } else if (pending == 0 && !m->works && m->inflight == 0 && owed == 0 && !hold) {
                /* one rename or unlink here; the rest is done off the loop (remover.c) */
                int r = message_discard(d, m, body_fd);
                if (r == 0) {
                        note_write(d, m, 0, true);
                        message_removed(d, m);
                        return;
                }
                again = note_write(d, m, r, true);
        } else {
                int r = queue_update(d->queue, QUEUE_ACTIVE, env);
                again = note_write(d, m, r, false) || owed < 0;
        }
        m->dirty = again;
        if (again)
                deliver_retry_later(d);
}

/* finish_message, then drop the envelope from memory unless m is gone.
 * body_fd: as finish_message's; closed here unless it was taken over. */
static void finish_and_release(struct tarryd *d, struct msg *m, int body_fd)
{
        _cleanup_close_ int fd = body_fd;
        char id[QUEUE_ID_LEN + 1];
        memcpy(id, m->id, sizeof(id));
        finish_message(d, m, &fd); /* may remove and free m */
        m = msgindex_get(d->index, id);
        if (m)
                message_release_envelope(m);
}

static int write_retry_cb(struct msg *m, void *userdata)
{
        struct tarryd *d = userdata;
        if (!m->dirty || m->inflight > 0 || m->dir != QUEUE_ACTIVE)
                return 0;
        if (!m->env && message_load_envelope(d, m) < 0)
                return 0; /* gone or quarantined meanwhile: nothing to write */
        finish_and_release(d, m, -1);
        return 0;
}

static int on_retry_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        (void)s;
        (void)usec;
        struct tarryd *d = userdata;
        deliver_write_dirty(d);
        if (d->state_unsaved)
                sched_save_learned(d->sched, now_realtime_us()); /* re-arms on failure */
        pickup_retry(d);
        deliver_run_due(d);
        return 0;
}

void deliver_write_dirty(struct tarryd *d)
{
        msgindex_foreach(d->index, write_retry_cb, d);
}

void deliver_retry_later(struct tarryd *d)
{
        if (d->retry_timer) {
                int on = SD_EVENT_OFF;
                if (sd_event_source_get_enabled(d->retry_timer, &on) >= 0 && on != SD_EVENT_OFF)
                        return; /* one pending visit covers every failure so far */
                if (sd_event_source_set_time_relative(d->retry_timer, SPOOL_RETRY_US) >= 0)
                        sd_event_source_set_enabled(d->retry_timer, SD_EVENT_ONESHOT);
                return;
        }
        int r = sd_event_add_time_relative(d->loop, &d->retry_timer, CLOCK_MONOTONIC,
                                           SPOOL_RETRY_US, 100000, on_retry_timer, d);
        if (r < 0)
                log_error("cannot arm the spool retry timer: %s", strerror(-r));
}

void deliver_count_spool_error(struct tarryd *d, const char *kind)
{
        d->n_spool_errors++;
        if (d->metrics)
                status_counter_add(d->metrics, STATUS_M_SPOOL_ERRORS, STATUS_LABELS(kind), 1);
}

static void unlink_work(struct tarryd *d, struct msg *m, struct work *w)
{
        for (struct work **p = &m->works; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        work_free(d, w);
                        return;
                }
}

bool deliver_may_move(void *item_userdata, void *arg)
{
        const struct work *w = item_userdata;
        (void)arg;
        return !w->m->same_source;
}

/* [retry.reputation] move_source: this attempt's deferrals were all for
 * reputation or rate limit, they suspended the site for w's address, and
 * another address of the pool may take the message there now. */
static bool leaves_elsewhere(struct tarryd *d, struct work *w, const struct sched_decision *dec,
                             size_t n, int64_t now)
{
        size_t retries = 0;
        for (size_t i = 0; i < n; i++) {
                if (dec[i].action != SCHED_RETRY)
                        continue;
                if (dec[i].cls != CLASS_REPUTATION && dec[i].cls != CLASS_RATE_LIMIT)
                        return false;
                retries++;
        }
        return retries > 0 && sched_move_target(d->sched, w->it, now) != NULL;
}

static void on_attempt_done(const struct smtpc_result *res, void *userdata)
{
        struct attempt *a = userdata;
        struct tarryd *d = a->d;
        struct work *w = a->w;
        struct msg *m = w->m;
        struct envelope *env = m->env;
        int64_t now = now_realtime_us();

        char relay[512] = "none";
        if (res->mx_host)
                snprintf(relay, sizeof(relay), "%s[%s]:%u", res->mx_host,
                         res->mx_ip ? res->mx_ip : "", res->port);

        /* Aborted by our own shutdown: not the receiver's doing, so no class, no
         * back-off, nothing recorded; the recipients are tried again at start. */
        if (res->status == SMTPC_ATTEMPT_TEMPFAIL && res->local == OUTCOME_LOCAL_SHUTDOWN) {
                sched_reschedule(d->sched, w->it, now);
                close(a->body_fd);
                free(a->idx);
                free(a);
                message_attempt_end(d, m);
                d->inflight--;
                message_release_envelope(m);
                if (d->stopping && d->inflight == 0)
                        sd_event_exit(d->loop, 0);
                return;
        }

        struct sched_reply attempt_reply =
            typed_reply(res->code, res->enhanced, res->text, res->origin, res->local, res->phase);
        struct sched_reply *replies = calloc(a->n, sizeof(*replies));
        struct sched_rcpt_result *rr = calloc(a->n, sizeof(*rr));
        struct sched_decision *dec = calloc(a->n, sizeof(*dec));
        if (!replies || !rr || !dec) {
                /* without memory we cannot record anything: retry the item later */
                sched_reschedule(d->sched, w->it, now + SPOOL_RETRY_US);
                goto out;
        }
        for (size_t i = 0; i < a->n; i++) {
                const struct envelope_rcpt *r = &env->rcpt[a->idx[i]];
                if (res->status == SMTPC_ATTEMPT_DONE && i < res->n_rcpts) {
                        const struct smtpc_rcpt_result *sr = &res->rcpts[i];
                        replies[i] = typed_reply(sr->code, sr->enhanced, sr->text, sr->origin,
                                                 sr->local, sr->phase);
                        rr[i].reply = &replies[i];
                }
                bool deferred = r->state == RCPT_DEFERRED;
                rr[i].deferrals = deferred ? r->attempts : 0;
                rr[i].first_deferral_us = r->first_deferral_us;
                rr[i].last_deferral_us = deferred ? r->last_attempt_us : 0;
                rr[i].prev_class =
                    deferred && r->reply_class ? reply_class_from_name(r->reply_class) : -1;
                rr[i].next_attempt_us = r->next_attempt_us;
        }
        bool attempt_level = res->status != SMTPC_ATTEMPT_DONE;
        control_note_transcript(m->id, res->transcript);
        struct diagnoses_where where;
        diagnoses_where(d, w->it, now, &where);
        /* copies: with nothing left for it, sched_on_result frees the item */
        char site[SITE_KEY_MAX], route[SMTPC_DEST_MAX];
        snprintf(site, sizeof(site), "%s", sched_item_route(w->it));
        snprintf(route, sizeof(route), "%s", work_route(w));
        int left = sched_on_result(d->sched, w->it, now, attempt_level ? &attempt_reply : NULL, rr,
                                   a->n, dec);
        bool moving = left == 1 && leaves_elsewhere(d, w, dec, a->n, now);
        for (size_t i = 0; i < a->n; i++) {
                struct envelope_rcpt *r = &env->rcpt[a->idx[i]];
                const char *text = rr[i].reply ? rr[i].reply->text : res->text;
                if (dec[i].action == SCHED_NOT_ATTEMPTED)
                        continue;
                /* only a retry that came at its own time counts towards the delay DSN */
                bool scheduled =
                    r->state == RCPT_DEFERRED && (!a->forced || r->next_attempt_us <= a->start_us);
                if (moving && dec[i].action == SCHED_RETRY)
                        dec[i].next_attempt_us = now; /* from the other address, at once */
                bool theirs = server_words(res, rr[i].reply ? rr[i].reply : &attempt_reply);
                apply_decision(r, &dec[i], text, theirs, relay, a->start_us, now);
                if (scheduled && dec[i].action == SCHED_RETRY)
                        r->failed_retries++;
                /* RFC 3461 4.1: a server without DSN got no NOTIFY; the
                 * sender who asked for SUCCESS gets "relayed" from us */
                if (dec[i].action == SCHED_DELIVERED && !res->dsn_offered &&
                    dsn_rcpt_wants(r, DSN_RELAYED))
                        r->relayed_dsn_owed = true;
                log_outcome(a, res, r, &dec[i], text, theirs, relay, now);
                count_outcome(d, &dec[i], env, now);
                diagnoses_note(d, &where, m->id, res, &rr[i], &dec[i], now);
        }
        if (left == 0) {
                tally_drop(d, w, site, route);
                w->it = NULL; /* freed by sched_on_result */
                unlink_work(d, m, w);
        } else if (moving)
                sched_reschedule(d->sched, w->it, now); /* the scheduler moves it (move_source) */
out:
        free(replies);
        free(rr);
        free(dec);
        int body_fd = a->body_fd;
        free(a->idx);
        free(a);
        message_attempt_end(d, m);
        d->inflight--;
        finish_and_release(d, m, body_fd); /* summarises m again (message.c) */
        control_update_status_line(d);
        if (d->stopping && d->inflight == 0) {
                sd_event_exit(d->loop, 0);
                return;
        }
        deliver_run_due(d);
}
