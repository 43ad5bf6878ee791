/* cluster/cluster.c — the Redis connections of a fleet node on sd-event.
 *
 * Two hiredis async connections: `cmd` sends the records this node sets (one
 * server-side script: store if longer, expire with the pause, publish) and
 * reads every stored record once per (re)connection; `sub` listens on the
 * channel. A small adapter gives hiredis its descriptor events from the
 * loop; one half-second tick reconnects, and drops a connection that is not
 * made, or not answering, within CONNECT_TIMEOUT_US / REPLY_TIMEOUT_US —
 * hiredis 0.14's async API has no timeouts of its own. Nothing waits for a
 * reply: a pause not shared is counted and the node goes on.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <syslog.h>
#include <time.h>

#include "cluster/cluster.h"

#define US                 1000000LL
#define TICK_US            (US / 2)
#define CONNECT_TIMEOUT_US (2 * US)  /* a connection not made by then is given up */
#define REPLY_TIMEOUT_US   (2 * US)  /* a command unanswered this long: Redis is stalled */
#define RETRY_US           (1 * US)  /* between connection attempts while Redis is away */
#define MAX_PENDING        10000     /* commands in flight; more are dropped */
#define RESYNC_MAX         10000     /* records read back per reconnection */
#define REFUSAL_LOG_US     (60 * US) /* refused records: one log line per minute */

/* Store a record unless a longer pause is stored; expire it with the pause;
 * tell the others. A key of another type (not ours) is replaced. */
static const char set_script[] =
    "local t = redis.call('TYPE', KEYS[1]).ok\n"
    "if t == 'string' then\n"
    "  local u = tonumber(string.match(redis.call('GET', KEYS[1]), '^%S+ %S+ %S+ %S+ (%d+) '))\n"
    "  if u and u >= tonumber(ARGV[2]) then return 0 end\n"
    "elseif t ~= 'none' then redis.call('DEL', KEYS[1]) end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])\n"
    "redis.call('PUBLISH', ARGV[4], ARGV[1])\n"
    "return 1\n";

/* An operator's resume of a route (ARGV[5]): every stored pause of it
 * (keys matching ARGV[1], P dest:SOURCE/ROUTE, ARGV[7] being "P dest:")
 * becomes a tombstone "r1 SOURCE ROUTE AT NODE" for ARGV[6] ms; the
 * others hear "r1 * ROUTE AT NODE". A later pause replaces a tombstone
 * (set_script finds no end time in it). */
static const char resume_script[] =
    "local n, cursor = 0, '0'\n"
    "local tail = '/' .. ARGV[5]\n"
    "repeat\n"
    "  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)\n"
    "  cursor = r[1]\n"
    "  for _, k in ipairs(r[2]) do\n"
    "    local src = string.sub(k, #ARGV[7] + 1, #k - #tail)\n"
    "    if string.sub(k, -#tail) == tail and #src > 0 and not string.find(src, '/', 1, true) "
    "then\n"
    "      redis.call('DEL', k)\n"
    "      redis.call('SET', k, 'r1 ' .. src .. ' ' .. ARGV[5] .. ' ' .. ARGV[2] .. ' ' .. "
    "ARGV[3],\n"
    "                 'PX', ARGV[6])\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "until cursor == '0'\n"
    "redis.call('PUBLISH', ARGV[4], 'r1 * ' .. ARGV[5] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])\n"
    "return n\n";

/* Every stored record (strings only), at most ARGV[2]: one round trip. */
static const char scan_script[] =
    "local out, cursor = {}, '0'\n"
    "repeat\n"
    "  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)\n"
    "  cursor = r[1]\n"
    "  for _, k in ipairs(r[2]) do\n"
    "    if redis.call('TYPE', k).ok == 'string' then out[#out + 1] = redis.call('GET', k) end\n"
    "  end\n"
    "until cursor == '0' or #out >= tonumber(ARGV[2])\n"
    "return out\n";

/* Renew this node's summary and read every node's: one round trip. */
static const char fleet_script[] =
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "local out, cursor = {}, '0'\n"
    "repeat\n"
    "  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[3], 'COUNT', 1000)\n"
    "  cursor = r[1]\n"
    "  for _, k in ipairs(r[2]) do\n"
    "    if redis.call('TYPE', k).ok == 'string' then out[#out + 1] = redis.call('GET', k) end\n"
    "  end\n"
    "until cursor == '0' or #out >= tonumber(ARGV[4])\n"
    "return out\n";

/* GCRA, one start per gap: the caller's slot and the next one stored. A key
 * of another type is replaced. */
static const char slot_script[] =
    "local now, gap = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local tat = 0\n"
    "if redis.call('TYPE', KEYS[1]).ok == 'string' then\n"
    "  tat = tonumber(redis.call('GET', KEYS[1])) or 0\n"
    "else redis.call('DEL', KEYS[1]) end\n"
    "local slot = math.max(tat, now + gap)\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', slot + gap), 'PX',\n"
    "           math.floor((slot + 2 * gap - now) / 1000) + 1000)\n"
    "return string.format('%.0f', slot)\n";

/* One connection lease, if under the limit: expired leases dropped, the
 * live ones counted. 1 granted, 0 at the limit. A key of another type is
 * replaced. KEYS[1] the set; ARGV: now ms, limit, expiry ms, member, ttl ms. */
static const char lease_script[] =
    "if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then redis.call('DEL', KEYS[1]) end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])\n"
    "if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end\n"
    "redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[5])\n"
    "return 1\n";

/* Renew leases held (also after a Redis restart: they are added again).
 * ARGV: expiry ms, ttl ms, members... */
static const char renew_script[] =
    "if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then redis.call('DEL', KEYS[1]) end\n"
    "for i = 3, #ARGV do redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i]) end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return 1\n";

#define LEASE_REASK_US     (US / 4) /* a refused lease is asked again no sooner: */
#define LEASE_REASK_MAX_US (2 * US) /* doubling per refusal in a row, up to this */

/* The leases of one (source, site) at this node. */
struct lease_site {
        struct lease_site *next;
        struct cluster *c;
        char *key; /* P conn:SOURCE/SITE */
        char *source, *site;
        int limit;
        unsigned busy;   /* connections open (cluster_conn_opened) */
        unsigned n_held; /* leases held: ids[0..n_held) */
        unsigned cap;
        uint64_t *ids;
        bool asking;         /* a lease request without its answer yet */
        uint64_t asking_id;  /* its lease id */
        bool wanted;         /* told WAIT, not yet told to ask again (ops.on_lease) */
        int64_t reask_us;    /* the back-off after the latest refusal; 0: none */
        int64_t next_ask_us; /* monotonic: no request before (refused: back-off) */
        int64_t idle_us;     /* monotonic: latest close (or grant) leaving one unused; 0: none */
};

struct rconn {
        struct cluster *c;
        redisAsyncContext *ac;
        sd_event_source *io;
        uint32_t events;
        bool up;         /* connected */
        bool subscribed; /* sub: SUBSCRIBE confirmed */
        int64_t since_us;
        int64_t next_try_us;
};

struct cluster {
        sd_event *loop;
        char host[INET6_ADDRSTRLEN + 2];
        int port;
        char *unix_path;
        char *addr; /* as configured, for messages */
        char *node, *prefix, *channel, *pattern;
        char *win_channel, *win_pattern;
        char *node_key, *node_pattern;
        char *dest_prefix, *dest_pattern_head; /* "P dest:", the same glob-escaped */
        char **fleet;                          /* summaries from the latest read */
        size_t n_fleet;
        int64_t published_us;
        struct cluster_ops ops;
        struct rconn cmd, sub;
        sd_event_source *tick;
        bool healthy;       /* both connections up and subscribed */
        bool loss_reported; /* "lost" logged; "back" is logged next */
        unsigned pending;   /* commands without a reply yet */
        int64_t last_progress_us;
        int64_t refusal_logged_us;
        uint64_t refusals_unlogged;
        struct cluster_stats st;
        struct lease_site *leases;
        uint64_t lease_seq;
        int64_t lease_run; /* this run's start (CLOCK_REALTIME), part of lease members */
        int64_t leases_renewed_us;
        sd_event_source *lease_timer; /* the end of the earliest back-off a caller waits for */
};

static void leases_tend(struct cluster *c, int64_t now);
static void leases_free(struct cluster *c);
static int on_lease_timer(sd_event_source *src, uint64_t usec, void *userdata);

static int64_t mono_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * US + ts.tv_nsec / 1000;
}

static int64_t real_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * US + ts.tv_nsec / 1000;
}

static void say(struct cluster *c, int prio, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(struct cluster *c, int prio, const char *fmt, ...)
{
        if (!c->ops.log)
                return;
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        c->ops.log(c->ops.userdata, prio, msg);
}

/* ---- hiredis ↔ sd-event ---- */

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        (void)s;
        (void)fd;
        struct rconn *rc = userdata;
        if (rc->ac && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                redisAsyncHandleRead(rc->ac);
        if (rc->ac && (revents & EPOLLOUT))
                redisAsyncHandleWrite(rc->ac);
        return 0;
}

static void set_events(struct rconn *rc, uint32_t events)
{
        rc->events = events;
        if (!rc->ac)
                return;
        if (!rc->io) {
                if (!events ||
                    sd_event_add_io(rc->c->loop, &rc->io, rc->ac->c.fd, events, on_io, rc) < 0)
                        return;
                return;
        }
        if (events) {
                sd_event_source_set_io_events(rc->io, events);
                sd_event_source_set_enabled(rc->io, SD_EVENT_ON);
        } else {
                sd_event_source_set_enabled(rc->io, SD_EVENT_OFF);
        }
}

static void ev_add_read(void *p)
{
        struct rconn *rc = p;
        set_events(rc, rc->events | EPOLLIN);
}
static void ev_del_read(void *p)
{
        struct rconn *rc = p;
        set_events(rc, rc->events & ~(uint32_t)EPOLLIN);
}
static void ev_add_write(void *p)
{
        struct rconn *rc = p;
        set_events(rc, rc->events | EPOLLOUT);
}
static void ev_del_write(void *p)
{
        struct rconn *rc = p;
        set_events(rc, rc->events & ~(uint32_t)EPOLLOUT);
}
static void ev_cleanup(void *p)
{
        struct rconn *rc = p;
        rc->io = sd_event_source_disable_unref(rc->io);
        rc->events = 0;
        rc->ac = NULL;
        rc->up = rc->subscribed = false;
}

/* ---- health ---- */

static void resync(struct cluster *c);

static void note_down(struct cluster *c, const char *why)
{
        c->healthy = false;
        if (c->loss_reported)
                return;
        c->loss_reported = true;
        c->st.losses++;
        say(c, LOG_WARNING,
            "cluster: redis %s %s: %s; delivering on this node's own state until it is back",
            c->addr, c->st.connected_us ? "lost" : "not reachable", why);
}

static void free_fleet(struct cluster *c)
{
        for (size_t i = 0; i < c->n_fleet; i++)
                free(c->fleet[i]);
        free(c->fleet);
        c->fleet = NULL;
        c->n_fleet = 0;
}

static void on_fleet_reply(redisAsyncContext *ac, void *r, void *priv);
static bool send_cmd(struct cluster *c, redisCallbackFn *fn, int argc, const char **argv);

static void publish_summary(struct cluster *c)
{
        char buf[CLUSTER_SUMMARY_MAX], ttl[24], max[16];
        c->published_us = mono_us();
        if (!c->ops.summary || c->ops.summary(c->ops.userdata, buf, sizeof(buf)) < 0)
                return;
        snprintf(ttl, sizeof(ttl), "%d", CLUSTER_NODE_TTL_S * 1000);
        snprintf(max, sizeof(max), "%d", CLUSTER_NODES_MAX);
        const char *argv[] = {"EVAL", fleet_script,    "1", c->node_key, buf,
                              ttl,    c->node_pattern, max};
        (void)send_cmd(c, on_fleet_reply, 8, argv);
}

static void check_up(struct cluster *c)
{
        if (c->healthy || !c->cmd.up || !c->sub.subscribed)
                return;
        c->healthy = true;
        c->st.connected_us = real_us();
        if (c->loss_reported)
                say(c, LOG_INFO, "cluster: redis %s is back; resynchronising", c->addr);
        else
                say(c, LOG_INFO, "cluster: connected to redis %s as node %s", c->addr, c->node);
        c->loss_reported = false;
        resync(c);
        if (c->ops.on_connected)
                c->ops.on_connected(c->ops.userdata);
        publish_summary(c);
}

static void drop(struct rconn *rc, const char *why)
{
        struct cluster *c = rc->c;
        redisAsyncContext *ac = rc->ac;
        note_down(c, why); /* first: the reason logged is ours, not "closed" */
        if (ac) {
                /* freeing answers its pending callbacks with NULL and calls
                 * ev_cleanup, which forgets it */
                redisAsyncFree(ac);
        }
        rc->ac = NULL;
        rc->up = rc->subscribed = false;
        rc->next_try_us = mono_us() + RETRY_US;
}

/* ---- replies ---- */

static void refused(struct cluster *c, const char *why)
{
        c->st.refused++;
        int64_t now = mono_us();
        if (c->refusal_logged_us && now - c->refusal_logged_us < REFUSAL_LOG_US) {
                c->refusals_unlogged++;
                return;
        }
        say(c, LOG_WARNING, "cluster: ignored a record from redis %s: %s (%llu more since)",
            c->addr, why, (unsigned long long)c->refusals_unlogged);
        c->refusal_logged_us = now;
        c->refusals_unlogged = 0;
}

static void take_window(struct cluster *c, const char *buf, size_t len)
{
        char work[CLUSTER_RECORD_MAX + 1], why[64];
        struct cluster_window w;
        if (cluster_window_parse(buf, len, real_us(), work, sizeof(work), &w, why, sizeof(why)) <
            0) {
                refused(c, why);
                return;
        }
        if (strcmp(w.node, c->node) == 0)
                return;
        c->st.received++;
        if (c->ops.on_window)
                c->ops.on_window(c->ops.userdata, &w);
}

/* A resume: acted on when it comes live on the channel; a tombstone read at
 * a resync only stands in for the pause it cancelled (nothing to do: this
 * node heard the resume when it was given, or was away and keeps its own
 * state, docs/fleet.md). */
static void take_resume(struct cluster *c, const char *buf, size_t len, bool live)
{
        char work[CLUSTER_RECORD_MAX + 1], why[64];
        struct cluster_resume r;
        if (cluster_resume_parse(buf, len, real_us(), work, sizeof(work), &r, why, sizeof(why)) <
            0) {
                refused(c, why);
                return;
        }
        if (!live || strcmp(r.node, c->node) == 0)
                return;
        c->st.received++;
        if (c->ops.on_resume)
                c->ops.on_resume(c->ops.userdata, &r);
}

/* A record from the channel (live) or read back at a resync. */
static void take_record(struct cluster *c, const char *buf, size_t len, bool live)
{
        if (len > 1 && buf[0] == 'w') {
                take_window(c, buf, len);
                return;
        }
        if (len > 1 && buf[0] == 'r') {
                take_resume(c, buf, len, live);
                return;
        }
        char work[CLUSTER_RECORD_MAX + 1], why[64];
        struct cluster_pause p;
        if (cluster_record_parse(buf, len, real_us(), work, sizeof(work), &p, why, sizeof(why)) <
            0) {
                /* a pause already over is ordinary (it expires a moment later) */
                if (strcmp(why, "already over") != 0)
                        refused(c, why);
                return;
        }
        if (strcmp(p.node, c->node) == 0)
                return; /* our own, back from the channel */
        c->st.received++;
        if (c->ops.on_pause)
                c->ops.on_pause(c->ops.userdata, &p);
}

static void reply_done(struct cluster *c)
{
        if (c->pending)
                c->pending--;
        c->last_progress_us = mono_us();
}

static void on_cmd_reply(redisAsyncContext *ac, void *r, void *priv)
{
        (void)ac;
        struct cluster *c = priv;
        redisReply *reply = r;
        reply_done(c);
        if (reply && reply->type == REDIS_REPLY_ERROR)
                refused(c, reply->str);
}

static void on_scan_reply(redisAsyncContext *ac, void *r, void *priv)
{
        (void)ac;
        struct cluster *c = priv;
        redisReply *reply = r;
        reply_done(c);
        if (!reply)
                return;
        if (reply->type != REDIS_REPLY_ARRAY) {
                refused(c, reply->type == REDIS_REPLY_ERROR ? reply->str : "resync: not a list");
                return;
        }
        for (size_t i = 0; i < reply->elements; i++)
                if (reply->element[i]->type == REDIS_REPLY_STRING)
                        take_record(c, reply->element[i]->str, reply->element[i]->len, false);
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
        (void)ac;
        struct cluster *c = priv;
        redisReply *reply = r;
        if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
            reply->element[0]->type != REDIS_REPLY_STRING)
                return;
        const char *kind = reply->element[0]->str;
        if (strcmp(kind, "subscribe") == 0) {
                /* the second confirmation: both channels are listened to */
                if (reply->element[2]->type == REDIS_REPLY_INTEGER &&
                    reply->element[2]->integer == 2) {
                        c->sub.subscribed = true;
                        check_up(c);
                }
        } else if (strcmp(kind, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING) {
                take_record(c, reply->element[2]->str, reply->element[2]->len, true);
        }
}

static void on_fleet_reply(redisAsyncContext *ac, void *r, void *priv)
{
        (void)ac;
        struct cluster *c = priv;
        redisReply *reply = r;
        reply_done(c);
        if (!reply || reply->type != REDIS_REPLY_ARRAY)
                return;
        free_fleet(c);
        c->fleet = calloc(reply->elements ? reply->elements : 1, sizeof(*c->fleet));
        for (size_t i = 0; c->fleet && i < reply->elements && i < CLUSTER_NODES_MAX; i++) {
                redisReply *e = reply->element[i];
                if (e->type == REDIS_REPLY_STRING && e->len < CLUSTER_SUMMARY_MAX &&
                    !memchr(e->str, '\0', e->len) &&
                    (c->fleet[c->n_fleet] = strndup(e->str, e->len)))
                        c->n_fleet++;
        }
}

static void resync(struct cluster *c)
{
        char max[16];
        snprintf(max, sizeof(max), "%d", RESYNC_MAX);
        const char *pauses[] = {"EVAL", scan_script, "0", c->pattern, max};
        const char *windows[] = {"EVAL", scan_script, "0", c->win_pattern, max};
        (void)send_cmd(c, on_scan_reply, 5, pauses);
        (void)send_cmd(c, on_scan_reply, 5, windows);
}

static bool send_cmd(struct cluster *c, redisCallbackFn *fn, int argc, const char **argv)
{
        if (!c->cmd.up || c->pending >= MAX_PENDING)
                return false;
        size_t lens[12];
        if ((size_t)argc > sizeof(lens) / sizeof(lens[0]))
                return false;
        for (int i = 0; i < argc; i++)
                lens[i] = strlen(argv[i]);
        if (redisAsyncCommandArgv(c->cmd.ac, fn, c, argc, argv, lens) != REDIS_OK)
                return false;
        if (c->pending++ == 0)
                c->last_progress_us = mono_us();
        c->st.commands++;
        return true;
}

/* ---- connecting ---- */

static void on_connect(const redisAsyncContext *ac, int status)
{
        struct rconn *rc = ac->ev.data;
        if (status != REDIS_OK) {
                rc->ac = NULL; /* hiredis frees it */
                rc->next_try_us = mono_us() + RETRY_US;
                note_down(rc->c, ac->errstr[0] ? ac->errstr : "cannot connect");
                return;
        }
        rc->up = true;
        if (rc == &rc->c->sub) {
                const char *argv[] = {"SUBSCRIBE", rc->c->channel, rc->c->win_channel};
                size_t lens[] = {9, strlen(rc->c->channel), strlen(rc->c->win_channel)};
                redisAsyncCommandArgv(rc->ac, on_sub_reply, rc->c, 3, argv, lens);
        }
        check_up(rc->c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
        struct rconn *rc = ac->ev.data;
        (void)status;
        rc->ac = NULL;
        rc->up = rc->subscribed = false;
        rc->next_try_us = mono_us() + RETRY_US;
        note_down(rc->c, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void try_connect(struct rconn *rc)
{
        struct cluster *c = rc->c;
        redisAsyncContext *ac = c->unix_path ? redisAsyncConnectUnix(c->unix_path)
                                             : redisAsyncConnect(c->host, c->port);
        rc->since_us = mono_us();
        rc->next_try_us = rc->since_us + RETRY_US;
        if (!ac)
                return;
        if (ac->err) {
                note_down(c, ac->errstr);
                redisAsyncFree(ac);
                return;
        }
        rc->ac = ac;
        ac->ev.data = rc;
        ac->ev.addRead = ev_add_read;
        ac->ev.delRead = ev_del_read;
        ac->ev.addWrite = ev_add_write;
        ac->ev.delWrite = ev_del_write;
        ac->ev.cleanup = ev_cleanup;
        redisAsyncSetConnectCallback(ac, on_connect);
        redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void tend(struct rconn *rc, int64_t now)
{
        if (!rc->ac) {
                if (now >= rc->next_try_us)
                        try_connect(rc);
                return;
        }
        if (!rc->up && now - rc->since_us > CONNECT_TIMEOUT_US)
                drop(rc, "connection not made within 2 s");
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct cluster *c = userdata;
        int64_t now = mono_us();
        if (c->cmd.up && c->pending && now - c->last_progress_us > REPLY_TIMEOUT_US)
                drop(&c->cmd, "no reply within 2 s");
        tend(&c->cmd, now);
        tend(&c->sub, now);
        if (c->healthy && now - c->published_us >= CLUSTER_PUBLISH_S * US)
                publish_summary(c);
        leases_tend(c, now);
        sd_event_source_set_time(s, usec + TICK_US);
        return 0;
}

/* ---- construction ---- */

static int parse_addr(struct cluster *c, const char *addr, char *err, size_t errlen)
{
        if (strncmp(addr, "unix:", 5) == 0) {
                if (addr[5] != '/') {
                        snprintf(err, errlen, "[cluster] redis: '%s': unix: needs an absolute path",
                                 addr);
                        return -EINVAL;
                }
                c->unix_path = strdup(addr + 5);
                return c->unix_path ? 0 : -ENOMEM;
        }
        const char *colon = strrchr(addr, ':');
        char host[INET6_ADDRSTRLEN + 2];
        size_t hl = colon ? (size_t)(colon - addr) : 0;
        if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
                addr++;
                hl -= 2;
        }
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        struct in6_addr a6;
        if (!colon || hl == 0 || hl >= sizeof(host) || !end || *end || port < 1 || port > 65535) {
                snprintf(err, errlen, "[cluster] redis: '%s' is not HOST:PORT or unix:PATH",
                         c->addr);
                return -EINVAL;
        }
        memcpy(host, addr, hl);
        host[hl] = '\0';
        if (inet_pton(AF_INET, host, &a6) != 1 && inet_pton(AF_INET6, host, &a6) != 1) {
                /* a name would be resolved by a blocking call on the loop */
                snprintf(err, errlen, "[cluster] redis: '%s': the host must be an IP address",
                         c->addr);
                return -EINVAL;
        }
        snprintf(c->host, sizeof(c->host), "%s", host);
        c->port = (int)port;
        return 0;
}

static char *glob_escape(const char *s)
{
        char *out = malloc(2 * strlen(s) + 1), *o = out;
        if (!out)
                return NULL;
        for (; *s; s++) {
                if (strchr("*?[]\\", *s))
                        *o++ = '\\';
                *o++ = *s;
        }
        *o = '\0';
        return out;
}

int cluster_check(const char *addr, const char *node, const char *prefix, char *err, size_t errlen)
{
        if (!prefix || !prefix[0])
                prefix = CLUSTER_PREFIX_DEFAULT;
        if (!cluster_node_name_ok(node)) {
                snprintf(err, errlen,
                         "[cluster] node: '%s' is not a node name (1 to %d letters, digits, "
                         "'.', '-', '_')",
                         node ? node : "", CLUSTER_NAME_MAX);
                return -EINVAL;
        }
        if (!cluster_prefix_ok(prefix)) {
                snprintf(err, errlen, "[cluster] prefix: '%s' has white space or is longer than %d",
                         prefix, CLUSTER_NAME_MAX);
                return -EINVAL;
        }
        struct cluster probe = {.addr = (char *)addr};
        int r = parse_addr(&probe, addr, err, errlen);
        free(probe.unix_path);
        return r;
}

int cluster_new(sd_event *loop, const char *addr, const char *node, const char *prefix,
                const struct cluster_ops *ops, struct cluster **out, char *err, size_t errlen)
{
        int r = cluster_check(addr, node, prefix, err, errlen);
        if (r < 0)
                return r;
        if (!prefix || !prefix[0])
                prefix = CLUSTER_PREFIX_DEFAULT;
        struct cluster *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->loop = sd_event_ref(loop);
        c->ops = *ops;
        c->lease_run = real_us();
        c->cmd.c = c->sub.c = c;
        c->addr = strdup(addr);
        c->node = strdup(node);
        c->prefix = strdup(prefix);
        char *esc = glob_escape(prefix);
        if (!c->addr || !c->node || !c->prefix || !esc ||
            asprintf(&c->channel, "%spause", prefix) < 0 ||
            asprintf(&c->pattern, "%sdest:*", esc) < 0 ||
            asprintf(&c->win_channel, "%swindow", prefix) < 0 ||
            asprintf(&c->win_pattern, "%swin:*", esc) < 0 ||
            asprintf(&c->node_key, "%snode:%s", prefix, node) < 0 ||
            asprintf(&c->node_pattern, "%snode:*", esc) < 0 ||
            asprintf(&c->dest_prefix, "%sdest:", prefix) < 0 ||
            asprintf(&c->dest_pattern_head, "%sdest:*/", esc) < 0) {
                free(esc);
                cluster_free(c);
                return -ENOMEM;
        }
        free(esc);
        r = parse_addr(c, addr, err, errlen);
        if (r == 0)
                r = sd_event_add_time_relative(loop, &c->tick, CLOCK_MONOTONIC, 0, TICK_US / 10,
                                               on_tick, c);
        if (r == 0)
                r = sd_event_add_time(loop, &c->lease_timer, CLOCK_MONOTONIC, UINT64_MAX,
                                      10000 /* 10 ms */, on_lease_timer, c);
        if (r == 0)
                r = sd_event_source_set_enabled(c->lease_timer, SD_EVENT_OFF);
        if (r < 0) {
                if (r != -EINVAL)
                        snprintf(err, errlen, "cluster: %s", strerror(-r));
                cluster_free(c);
                return r;
        }
        sd_event_source_set_enabled(c->tick, SD_EVENT_ON);
        *out = c;
        return 0;
}

void cluster_free(struct cluster *c)
{
        if (!c)
                return;
        c->ops.log = NULL; /* no "lost" message at shutdown */
        c->ops.on_pause = NULL;
        c->ops.on_connected = NULL;
        c->ops.on_slot = NULL;
        c->ops.on_resume = NULL;
        c->ops.on_lease = NULL;
        if (c->cmd.ac)
                redisAsyncFree(c->cmd.ac);
        if (c->sub.ac)
                redisAsyncFree(c->sub.ac);
        sd_event_source_disable_unref(c->tick);
        sd_event_source_disable_unref(c->lease_timer);
        sd_event_unref(c->loop);
        free(c->unix_path);
        free(c->addr);
        free(c->node);
        free(c->prefix);
        free(c->channel);
        free(c->pattern);
        free(c->win_channel);
        free(c->win_pattern);
        free(c->node_key);
        free(c->node_pattern);
        free(c->dest_prefix);
        free(c->dest_pattern_head);
        leases_free(c);
        free_fleet(c);
        free(c);
}

void cluster_publish_pause(struct cluster *c, const struct cluster_pause *p)
{
        struct cluster_pause mine = *p;
        mine.node = c->node;
        char rec[CLUSTER_RECORD_MAX + 1];
        int64_t ttl_ms = (p->until_us - real_us()) / 1000;
        if (ttl_ms <= 0 || cluster_record_format(&mine, rec, sizeof(rec)) < 0)
                return;
        if (ttl_ms > CLUSTER_PAUSE_MAX_S * 1000LL)
                ttl_ms = CLUSTER_PAUSE_MAX_S * 1000LL; /* the others refuse longer */
        char *key = NULL, until[24], ttl[24];
        if (asprintf(&key, "%sdest:%s/%s", c->prefix, p->source && p->source[0] ? p->source : "-",
                     p->route) < 0)
                return;
        snprintf(until, sizeof(until), "%lld", (long long)p->until_us);
        snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
        const char *argv[] = {"EVAL", set_script, "1", key, rec, until, ttl, c->channel};
        if (!send_cmd(c, on_cmd_reply, 8, argv))
                c->st.dropped++;
        free(key);
}

bool cluster_publish_resume(struct cluster *c, const char *route)
{
        /* what the others will parse: refused here rather than there */
        char rec[CLUSTER_RECORD_MAX + 1];
        struct cluster_resume r = {
            .source = "*", .route = route, .at_us = real_us(), .node = c->node};
        if (cluster_resume_format(&r, rec, sizeof(rec)) < 0)
                return false;
        char *esc = glob_escape(route), *pattern = NULL, at[24], ttl[24];
        if (!esc || asprintf(&pattern, "%s%s", c->dest_pattern_head, esc) < 0) {
                free(esc);
                return false;
        }
        free(esc);
        snprintf(at, sizeof(at), "%lld", (long long)r.at_us);
        snprintf(ttl, sizeof(ttl), "%lld", CLUSTER_PAUSE_MAX_S * 1000LL);
        const char *argv[] = {"EVAL",  resume_script, "0",   pattern, at,
                              c->node, c->channel,    route, ttl,     c->dest_prefix};
        bool sent = send_cmd(c, on_cmd_reply, 10, argv);
        if (!sent)
                c->st.dropped++;
        free(pattern);
        return sent;
}

void cluster_publish_window(struct cluster *c, const struct cluster_window *w, int64_t ttl_s)
{
        struct cluster_window mine = *w;
        mine.node = c->node;
        char rec[CLUSTER_RECORD_MAX + 1];
        if (ttl_s <= 0 || cluster_window_format(&mine, rec, sizeof(rec)) < 0)
                return;
        char *key = NULL, at[24], ttl[24];
        if (asprintf(&key, "%swin:%s", c->prefix, w->route) < 0)
                return;
        snprintf(at, sizeof(at), "%lld", (long long)w->learned_at_us);
        snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_s * 1000);
        const char *argv[] = {"EVAL", set_script, "1", key, rec, at, ttl, c->win_channel};
        if (!send_cmd(c, on_cmd_reply, 8, argv))
                c->st.dropped++;
        free(key);
}

struct slot_ask {
        struct cluster *c;
        int64_t asked_us;
        char *route;
        char source[]; /* then route */
};

static void on_slot_reply(redisAsyncContext *ac, void *r, void *priv)
{
        (void)ac;
        struct slot_ask *a = priv;
        struct cluster *c = a->c;
        redisReply *reply = r;
        reply_done(c);
        int64_t slot = -1;
        if (reply && reply->type == REDIS_REPLY_STRING && reply->len < 24) {
                char *end = NULL;
                long long v = strtoll(reply->str, &end, 10);
                if (end && !*end && v >= a->asked_us && v <= a->asked_us + CLUSTER_SLOT_MAX_S * US)
                        slot = v;
                else
                        refused(c, "pace slot is not a time within an hour");
        } else if (reply && reply->type == REDIS_REPLY_ERROR) {
                refused(c, reply->str);
        }
        if (c->ops.on_slot)
                c->ops.on_slot(c->ops.userdata, a->source, a->route, slot);
        free(a);
}

bool cluster_reserve_slot(struct cluster *c, const char *source, const char *route, int64_t gap_us)
{
        if (!c->cmd.up || c->pending >= MAX_PENDING || gap_us <= 0)
                return false;
        source = source ? source : "";
        size_t ls = strlen(source) + 1, lr = strlen(route) + 1;
        struct slot_ask *a = malloc(sizeof(*a) + ls + lr);
        char *key = NULL, now[24], gap[24];
        if (!a || asprintf(&key, "%srate:%s/%s", c->prefix, source[0] ? source : "-", route) < 0) {
                free(a);
                return false;
        }
        a->c = c;
        a->asked_us = real_us();
        memcpy(a->source, source, ls);
        a->route = a->source + ls;
        memcpy(a->route, route, lr);
        snprintf(now, sizeof(now), "%lld", (long long)a->asked_us);
        snprintf(gap, sizeof(gap), "%lld", (long long)gap_us);
        const char *argv[] = {"EVAL", slot_script, "1", key, now, gap};
        size_t lens[6];
        for (int i = 0; i < 6; i++)
                lens[i] = strlen(argv[i]);
        bool ok = redisAsyncCommandArgv(c->cmd.ac, on_slot_reply, a, 6, argv, lens) == REDIS_OK;
        free(key);
        if (!ok) {
                free(a);
                return false;
        }
        if (c->pending++ == 0)
                c->last_progress_us = mono_us();
        c->st.commands++;
        return true;
}

/* ---- connection leases ---- */

/* Send argv (argc entries) on the command connection; priv for fn. */
static bool send_argv(struct cluster *c, redisCallbackFn *fn, void *priv, int argc,
                      const char **argv)
{
        if (!c->cmd.up || c->pending >= MAX_PENDING)
                return false;
        size_t *lens = calloc((size_t)argc, sizeof(*lens));
        if (!lens)
                return false;
        for (int i = 0; i < argc; i++)
                lens[i] = strlen(argv[i]);
        bool ok = redisAsyncCommandArgv(c->cmd.ac, fn, priv, argc, argv, lens) == REDIS_OK;
        free(lens);
        if (!ok)
                return false;
        if (c->pending++ == 0)
                c->last_progress_us = mono_us();
        c->st.commands++;
        return true;
}

static void member_of(const struct cluster *c, uint64_t id, char *out, size_t outlen)
{
        snprintf(out, outlen, "%s:%llx:%llu", c->node, (unsigned long long)c->lease_run,
                 (unsigned long long)id);
}

static struct lease_site *lease_site_get(struct cluster *c, const char *source, const char *site,
                                         bool create)
{
        for (struct lease_site *l = c->leases; l; l = l->next)
                if (strcmp(l->source, source) == 0 && strcmp(l->site, site) == 0)
                        return l;
        if (!create)
                return NULL;
        struct lease_site *l = calloc(1, sizeof(*l));
        if (!l)
                return NULL;
        l->c = c;
        if (!(l->source = strdup(source)) || !(l->site = strdup(site)) ||
            asprintf(&l->key, "%sconn:%s/%s", c->prefix, source[0] ? source : "-", site) < 0) {
                l->key = NULL;
                free(l->source);
                free(l->site);
                free(l);
                return NULL;
        }
        l->next = c->leases;
        c->leases = l;
        return l;
}

static void lease_site_free(struct lease_site *l)
{
        free(l->key);
        free(l->source);
        free(l->site);
        free(l->ids);
        free(l);
}

/* Arm the lease timer for the earliest back-off end a caller waits for. */
static void lease_timer_arm(struct cluster *c)
{
        int64_t at = INT64_MAX;
        for (struct lease_site *l = c->leases; l; l = l->next)
                if (l->wanted && !l->asking && l->next_ask_us < at)
                        at = l->next_ask_us;
        if (!c->lease_timer)
                return;
        if (at == INT64_MAX) {
                sd_event_source_set_enabled(c->lease_timer, SD_EVENT_OFF);
                return;
        }
        sd_event_source_set_time(c->lease_timer, (uint64_t)(at > 0 ? at : 1));
        sd_event_source_set_enabled(c->lease_timer, SD_EVENT_ONESHOT);
}

/* Tell the caller to ask again (it calls cluster_conn_ask, which sends the
 * request now). */
static void lease_notify(struct cluster *c, struct lease_site *l, bool granted)
{
        l->wanted = false;
        if (c->ops.on_lease)
                c->ops.on_lease(c->ops.userdata, l->source, l->site, granted);
}

static int on_lease_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
        (void)src;
        (void)usec;
        struct cluster *c = userdata;
        int64_t now = mono_us();
        /* on_lease may ask again (and so change the list's flags, never its
         * members: sites are freed only by the tick): walk it once */
        for (struct lease_site *l = c->leases; l; l = l->next)
                if (l->wanted && !l->asking && l->next_ask_us <= now)
                        lease_notify(c, l, false);
        lease_timer_arm(c);
        return 0;
}

static void on_lease_reply(redisAsyncContext *ac, void *r, void *priv)
{
        (void)ac;
        struct lease_site *l = priv;
        struct cluster *c = l->c;
        redisReply *reply = r;
        reply_done(c);
        l->asking = false;
        bool granted = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
        if (reply && reply->type == REDIS_REPLY_ERROR)
                refused(c, reply->str);
        if (granted) {
                l->ids[l->n_held++] = l->asking_id; /* room was made when asked */
                c->st.leases_held++;
                l->reask_us = 0;
                l->next_ask_us = 0;
                if (!l->idle_us)
                        l->idle_us = mono_us(); /* unused until the caller comes back */
        } else if (reply) {
                /* refused (or a script error): asked again after a back-off,
                 * when the caller still wants one then (the lease timer) */
                l->reask_us = l->reask_us ? 2 * l->reask_us : LEASE_REASK_US;
                if (l->reask_us > LEASE_REASK_MAX_US)
                        l->reask_us = LEASE_REASK_MAX_US;
                l->next_ask_us = mono_us() + l->reask_us;
                c->st.leases_refused++;
                lease_timer_arm(c);
                return;
        }
        /* granted, or no reply: Redis is gone, and cluster_conn_ask answers OPEN */
        lease_notify(c, l, true);
}

static bool ask_lease(struct cluster *c, struct lease_site *l)
{
        if (l->n_held + 1 > l->cap) {
                unsigned cap = l->cap ? 2 * l->cap : 4;
                uint64_t *ids = realloc(l->ids, cap * sizeof(*ids));
                if (!ids)
                        return false;
                l->ids = ids;
                l->cap = cap;
        }
        uint64_t id = ++c->lease_seq;
        int64_t now_ms = real_us() / 1000;
        char now[24], limit[16], expiry[24], member[CLUSTER_NAME_MAX + 48], ttl[24];
        snprintf(now, sizeof(now), "%lld", (long long)now_ms);
        snprintf(limit, sizeof(limit), "%d", l->limit);
        snprintf(expiry, sizeof(expiry), "%lld", (long long)(now_ms + CLUSTER_LEASE_TTL_S * 1000));
        snprintf(ttl, sizeof(ttl), "%d", 2 * CLUSTER_LEASE_TTL_S * 1000);
        member_of(c, id, member, sizeof(member));
        const char *argv[] = {"EVAL", lease_script, "1", l->key, now, limit, expiry, member, ttl};
        if (!send_argv(c, on_lease_reply, l, 9, argv))
                return false;
        l->asking = true;
        l->asking_id = id;
        return true;
}

enum cluster_conn cluster_conn_ask(struct cluster *c, const char *source, const char *site,
                                   int limit)
{
        if (!c->healthy || limit <= 0)
                return CLUSTER_CONN_OPEN;
        struct lease_site *l = lease_site_get(c, source ? source : "", site, true);
        if (!l)
                return CLUSTER_CONN_OPEN; /* out of memory: the local limit alone */
        l->limit = limit;
        if (l->busy < l->n_held)
                return CLUSTER_CONN_OPEN;
        if (!l->asking && mono_us() >= l->next_ask_us && !ask_lease(c, l))
                return CLUSTER_CONN_OPEN; /* cannot ask now: the local limit alone */
        l->wanted = true;
        if (!l->asking)
                lease_timer_arm(c); /* in a back-off: ask again at its end */
        return CLUSTER_CONN_WAIT;
}

void cluster_conn_opened(struct cluster *c, const char *source, const char *site)
{
        struct lease_site *l = lease_site_get(c, source ? source : "", site, true);
        if (!l)
                return;
        l->busy++;
        if (l->busy >= l->n_held)
                l->idle_us = 0;
}

void cluster_conn_closed(struct cluster *c, const char *source, const char *site)
{
        struct lease_site *l = lease_site_get(c, source ? source : "", site, false);
        if (!l || l->busy == 0)
                return;
        l->busy--;
        /* from the latest close: the connection it ended may be kept idle
         * for a while, whichever lease it counts against */
        if (l->busy < l->n_held)
                l->idle_us = mono_us();
}

static void renew(struct cluster *c, struct lease_site *l)
{
        const char **argv = calloc(6 + l->n_held, sizeof(*argv));
        char(*members)[CLUSTER_NAME_MAX + 48] = calloc(l->n_held, sizeof(*members));
        char expiry[24], ttl[24];
        if (argv && members) {
                snprintf(expiry, sizeof(expiry), "%lld",
                         (long long)(real_us() / 1000 + CLUSTER_LEASE_TTL_S * 1000));
                snprintf(ttl, sizeof(ttl), "%d", 2 * CLUSTER_LEASE_TTL_S * 1000);
                int n = 0;
                argv[n++] = "EVAL";
                argv[n++] = renew_script;
                argv[n++] = "1";
                argv[n++] = l->key;
                argv[n++] = expiry;
                argv[n++] = ttl;
                for (unsigned i = 0; i < l->n_held; i++) {
                        member_of(c, l->ids[i], members[i], sizeof(members[i]));
                        argv[n++] = members[i];
                }
                (void)send_argv(c, on_cmd_reply, c, n, argv);
        }
        free(argv);
        free(members);
}

/* Give back the leases beyond those in use (busy) */
static void give_back(struct cluster *c, struct lease_site *l)
{
        while (l->n_held > l->busy) {
                char member[CLUSTER_NAME_MAX + 48];
                member_of(c, l->ids[--l->n_held], member, sizeof(member));
                c->st.leases_held--;
                const char *argv[] = {"ZREM", l->key, member};
                (void)send_argv(c, on_cmd_reply, c, 3, argv); /* else it expires */
        }
        l->idle_us = 0;
}

static void leases_tend(struct cluster *c, int64_t now)
{
        bool renewing = c->healthy && now - c->leases_renewed_us >= CLUSTER_LEASE_RENEW_S * US;
        if (renewing)
                c->leases_renewed_us = now;
        for (struct lease_site **pl = &c->leases; *pl;) {
                struct lease_site *l = *pl;
                if (l->n_held > l->busy && l->idle_us &&
                    now - l->idle_us >= CLUSTER_LEASE_HOLD_S * US)
                        give_back(c, l);
                if (renewing && l->n_held)
                        renew(c, l);
                if (!l->n_held && !l->busy && !l->asking && !l->wanted) {
                        *pl = l->next;
                        lease_site_free(l);
                        continue;
                }
                pl = &l->next;
        }
}

static void leases_free(struct cluster *c)
{
        /* pending replies were answered (NULL) when the connections were freed */
        while (c->leases) {
                struct lease_site *l = c->leases;
                c->leases = l->next;
                lease_site_free(l);
        }
}

void cluster_get_stats(const struct cluster *c, struct cluster_stats *out)
{
        *out = c->st;
        out->connected = c->healthy;
}

size_t cluster_fleet(const struct cluster *c, const char *const **out)
{
        *out = (const char *const *)c->fleet;
        return c->n_fleet;
}

const char *cluster_node(const struct cluster *c)
{
        return c->node;
}
