/* daemon/fleet.c — tarryd's side of a fleet: the scheduler's pauses go to
 * cluster/, the other nodes' pauses come back into the scheduler.
 *
 * Only wiring: what is shared and how it is checked lives in cluster/ and
 * scheduler/share.c. Without [cluster] redis nothing here runs.
 */
#include <errno.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "common/fileio.h"
#include "daemon/log.h"
#include "daemon/site.h"
#include "daemon/tarryd.h"

static void on_sched_pause(void *userdata, const struct sched_shared_pause *p)
{
        struct tarryd *d = userdata;
        struct cluster_pause cp = {.source = p->source,
                                   .route = p->route,
                                   .state = p->state == SCHED_DEST_SUSPENDED ? CLUSTER_SUSPENDED
                                                                             : CLUSTER_BACKOFF,
                                   .until_us = p->until_us,
                                   .cls = p->cls};
        cluster_publish_pause(d->cluster, &cp);
}

static void on_cluster_pause(void *userdata, const struct cluster_pause *p)
{
        struct tarryd *d = userdata;
        struct sched_shared_pause sp = {
            .source = p->source,
            .route = p->route,
            .state = p->state == CLUSTER_SUSPENDED ? SCHED_DEST_SUSPENDED : SCHED_DEST_BACKOFF,
            .until_us = p->until_us,
            .cls = p->cls};
        int64_t now = now_realtime_us();
        if (sched_apply_shared_pause(d->sched, &sp, now) <= 0)
                return;
        char when[32];
        time_t t = (time_t)(p->until_us / 1000000);
        struct tm tm;
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S%z", localtime_r(&t, &tm));
        log_info("cluster: node %s %s %s%s%s until %s%s%s", p->node,
                 p->state == CLUSTER_SUSPENDED ? "suspended" : "backs off from", p->route,
                 p->source[0] ? " from " : "", p->source, when, p->cls >= 0 ? ", class=" : "",
                 p->cls >= 0 ? reply_class_name(p->cls) : "");
        (void)sched_save_learned(d->sched, now); /* a restart without Redis keeps it */
        deliver_arm_timer(d);
}

/* Another node's operator resumed a destination: resumed here too, for
 * every source address (or the one named). */
static void on_cluster_resume(void *userdata, const struct cluster_resume *r)
{
        struct tarryd *d = userdata;
        int64_t now = now_realtime_us();
        const char *source = strcmp(r->source, "*") == 0 ? NULL : r->source;
        if (sched_resume_destination(d->sched, r->route, source, now) <= 0)
                return;
        log_info("cluster: node %s resumed %s", r->node, r->route);
        deliver_run_due(d);
}

void fleet_resumed(struct tarryd *d, const char *route)
{
        if (!d->cluster)
                return;
        if (cluster_publish_resume(d->cluster, route))
                log_info("cluster: resumed %s across the fleet", route);
        else
                log_warn("cluster: resumed %s on this node only: redis %s is not connected; "
                         "the other nodes keep their pauses",
                         route, d->cfg->cluster_redis);
}

static void on_sched_window(void *userdata, const struct sched_shared_window *w)
{
        struct tarryd *d = userdata;
        struct cluster_window cw = {.route = w->route,
                                    .upper_s = w->upper_s,
                                    .lower_s = w->lower_s,
                                    .learned_at_us = w->learned_at_us};
        cluster_publish_window(d->cluster, &cw, d->cfg->greylist_memory_s);
}

/* A window is per destination host, whatever the source address: it is
 * taken for each of this node's own addresses. */
static void on_cluster_window(void *userdata, const struct cluster_window *w)
{
        struct tarryd *d = userdata;
        struct sched_shared_window sw = {.route = w->route,
                                         .upper_s = w->upper_s,
                                         .lower_s = w->lower_s,
                                         .learned_at_us = w->learned_at_us};
        int64_t now = now_realtime_us();
        size_t n = d->cfg->n_source_addresses;
        int taken = 0;
        for (size_t i = 0; i < (n ? n : 1); i++)
                taken |= sched_apply_shared_window(d->sched, n ? d->cfg->source_addresses[i] : "",
                                                   &sw, now) > 0;
        if (!taken)
                return;
        log_info("cluster: node %s learned the greylist window of %s: %llds (refused at %llds)",
                 w->node, w->route, (long long)w->upper_s, (long long)w->lower_s);
        (void)sched_save_learned(d->sched, now);
}

static int republish(const struct sched_dest_info *di, void *userdata)
{
        struct tarryd *d = userdata;
        if (di->learned_upper_s > 0 && di->learned_at_us > 0) {
                struct cluster_window cw = {.route = di->route,
                                            .upper_s = di->learned_upper_s,
                                            .lower_s = di->learned_lower_s,
                                            .learned_at_us = di->learned_at_us};
                cluster_publish_window(d->cluster, &cw, d->cfg->greylist_memory_s);
        }
        if ((di->state != SCHED_DEST_SUSPENDED && di->state != SCHED_DEST_BACKOFF) ||
            di->until_us <= 0)
                return 0;
        struct sched_shared_pause sp = {.source = di->source_address,
                                        .route = di->route,
                                        .state = di->state,
                                        .until_us = di->until_us,
                                        .cls = di->pause_class};
        on_sched_pause(d, &sp);
        return 0;
}

/* (Re)connected: a restarted Redis has forgotten what this node knows:
 * its pauses and windows are published again. */
static void on_connected(void *userdata)
{
        struct tarryd *d = userdata;
        (void)sched_foreach_destination(d->sched, now_realtime_us(), republish, d);
}

static bool on_pace_reserve(void *userdata, const char *source, const char *route, int64_t gap_us)
{
        struct tarryd *d = userdata;
        return cluster_reserve_slot(d->cluster, source, route, gap_us);
}

static void on_cluster_slot(void *userdata, const char *source, const char *route, int64_t slot_us)
{
        struct tarryd *d = userdata;
        if (!d->sched)
                return;
        sched_shared_pace_slot(d->sched, source, route, slot_us, now_realtime_us());
        deliver_arm_timer(d);
}

/* ---- connection leases: the scheduler's gate ----
 *
 * A site with a provider `connections` limit holds across the fleet as
 * leases (cluster_conn_*). The scheduler asks the gate once per start,
 * after its local limits and pace allow it; the answer comes from a lease
 * held here, or is WAIT while one request is out (cluster/ sends at most one
 * per (source, site), and backs off after a refusal). When the request is
 * answered (or the back-off is over, or Redis went away), on_lease wakes
 * the site's parked items and the scheduler asks again. */

/* The provider's connection limit of site, 0: none. */
static int conn_limit(struct tarryd *d, const char *site)
{
        const struct sched_provider *p = site_provider(d->classifier, site);
        return p ? (int)p->connections.value : 0;
}

static enum sched_gate gate_may_open(void *userdata, const char *source, const char *site)
{
        struct tarryd *d = userdata;
        int limit = d->cluster ? conn_limit(d, site) : 0;
        if (limit <= 0)
                return SCHED_GATE_OPEN;
        if (cluster_conn_ask(d->cluster, source, site, limit) != CLUSTER_CONN_OPEN)
                return SCHED_GATE_WAIT;
        cluster_conn_opened(d->cluster, source, site); /* the lease held, or none without Redis */
        return SCHED_GATE_TAKEN;
}

/* Only for a start the gate took (TAKEN); a cluster that does not know
 * (source, site) — after a reload that joined another — ignores it. */
static void gate_closed(void *userdata, const char *source, const char *site)
{
        struct tarryd *d = userdata;
        if (d->cluster)
                cluster_conn_closed(d->cluster, source, site);
}

static void on_cluster_lease(void *userdata, const char *source, const char *site, bool granted)
{
        struct tarryd *d = userdata;
        (void)granted;
        if (!d->sched)
                return;
        sched_conn_wake(d->sched, source, site);
        deliver_arm_timer(d);
}

static int on_summary(void *userdata, char *buf, size_t len)
{
        return control_fleet_summary(userdata, buf, len);
}

static void on_log(void *userdata, int priority, const char *msg)
{
        (void)userdata;
        log_msg(priority, "%s", msg);
}

int fleet_check(const struct tarry_config *cfg, char *err, size_t errlen)
{
        if (!cfg->cluster_redis)
                return 0;
        return cluster_check(cfg->cluster_redis,
                             cfg->cluster_node ? cfg->cluster_node : cfg->myhostname,
                             cfg->cluster_prefix, err, errlen);
}

int fleet_start(struct tarryd *d)
{
        if (!d->cfg->cluster_redis)
                return 0;
        char err[256];
        const char *node = d->cfg->cluster_node ? d->cfg->cluster_node : d->cfg->myhostname;
        struct cluster_ops ops = {.on_pause = on_cluster_pause,
                                  .on_window = on_cluster_window,
                                  .on_resume = on_cluster_resume,
                                  .on_connected = on_connected,
                                  .summary = on_summary,
                                  .on_slot = on_cluster_slot,
                                  .on_lease = on_cluster_lease,
                                  .log = on_log,
                                  .userdata = d};
        int r = cluster_new(d->loop, d->cfg->cluster_redis, node, d->cfg->cluster_prefix, &ops,
                            &d->cluster, err, sizeof(err));
        if (r < 0) {
                log_error("%s", err);
                return r == -EINVAL ? EX_CONFIG : EX_OSERR;
        }
        struct sched_share share = {.pause_set = on_sched_pause,
                                    .window_set = on_sched_window,
                                    .pace_reserve = on_pace_reserve,
                                    .userdata = d};
        sched_set_share(d->sched, &share);
        struct sched_conn_gate gate = {
            .may_open = gate_may_open, .closed = gate_closed, .userdata = d};
        sched_set_conn_gate(d->sched, &gate);
        return 0;
}

static const char *node_of(const struct tarry_config *cfg)
{
        return cfg->cluster_node ? cfg->cluster_node : cfg->myhostname;
}

static const char *prefix_of(const struct tarry_config *cfg)
{
        return cfg->cluster_prefix && cfg->cluster_prefix[0] ? cfg->cluster_prefix
                                                             : CLUSTER_PREFIX_DEFAULT;
}

static bool same(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Items the gate parked wait for a wake from the cluster that refused
 * them: after leaving it, every destination is asked again. */
static int wake_dest(const struct sched_dest_info *di, void *userdata)
{
        struct tarryd *d = userdata;
        if (di->queued > (size_t)di->in_flight)
                sched_conn_wake(d->sched, di->source_address, di->route);
        return 0;
}

static void wake_all(struct tarryd *d)
{
        if (!d->sched)
                return;
        (void)sched_foreach_destination(d->sched, now_realtime_us(), wake_dest, d);
        deliver_arm_timer(d);
}

void fleet_reload(struct tarryd *d, const struct tarry_config *old)
{
        const struct tarry_config *cfg = d->cfg;
        bool redis = !same(old->cluster_redis, cfg->cluster_redis);
        bool node = !same(node_of(old), node_of(cfg)),
             prefix = !same(prefix_of(old), prefix_of(cfg));
        if (!redis && !node && !prefix)
                return;
        if (!cfg->cluster_redis && !d->cluster)
                return; /* no fleet before or after: node or prefix alone */
        char what[64];
        snprintf(what, sizeof(what), "%s%s%s%s%s", redis ? "redis" : "",
                 redis && (node || prefix) ? ", " : "", node ? "node" : "",
                 node && prefix ? ", " : "", prefix ? "prefix" : "");
        fleet_stop(d);
        wake_all(d);
        if (!cfg->cluster_redis) {
                log_info("reload: [cluster] redis removed; this node leaves the fleet");
                return;
        }
        log_info("reload: [cluster] %s changed; joining %s as node %s", what, cfg->cluster_redis,
                 node_of(cfg));
        if (fleet_start(d) != 0)
                log_error("reload: [cluster] cannot be applied; this node is out of the fleet "
                          "until the next reload or restart");
}

void fleet_stop(struct tarryd *d)
{
        if (d->sched)
                sched_set_share(d->sched, NULL);
        /* the gate stays (it answers OPEN without a cluster), so that starts
         * it took are still told "closed" after a reload joins another */
        cluster_free(d->cluster);
        d->cluster = NULL;
}
