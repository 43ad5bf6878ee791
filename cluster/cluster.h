/* cluster/cluster.h — a fleet of tarry nodes sharing destination pauses
 * through Redis (docs/fleet.md).
 *
 * Input: pauses this node sets (cluster_publish_pause) and what Redis tells
 * it (other nodes' pauses, on a pub/sub channel and, at each (re)connection,
 * every pause still stored). Output: validated pauses of other nodes, through
 * a callback. Two hiredis async connections (commands, subscription) on the
 * caller's sd-event loop; nothing here ever blocks or makes mail wait: a
 * command is sent and forgotten, and Redis down, slow or restarted only
 * means nothing is shared until it is back (the loss is logged once, the
 * state resynchronised on reconnection).
 *
 * In Redis, under the prefix P ("tarry:" by default):
 *   P dest:SOURCE/ROUTE  a pause record (below), expiring with the pause
 *   P pause              channel: the same record when it is set
 *   P win:ROUTE          a window record, expiring after greylist_memory
 *   P window             channel: the same record when it is learned
 *   P rate:SOURCE/ROUTE  a shared pace (GCRA): the fleet's next free start
 *                        slot, in microseconds; expires once it is past
 *   P conn:SOURCE/SITE   connection leases (a sorted set): member NODE:RUN:N,
 *                        score the lease's expiry in ms (CLOCK_REALTIME);
 *                        renewed every CLUSTER_LEASE_RENEW_S while held
 *   P node:NAME          each node's queue summary (JSON the caller makes),
 *                        written every CLUSTER_PUBLISH_S, expiring after
 *                        CLUSTER_NODE_TTL_S: a node that stops drops out
 * A pause: "1 SOURCE ROUTE STATE UNTIL_US CLASS NODE", SOURCE "-" for the
 * kernel's choice, STATE "suspended" or "backoff", CLASS a reply class name
 * or "-". A window (per route, whatever the source address):
 * "w1 ROUTE UPPER_S LOWER_S LEARNED_AT_US NODE", the bracket (LOWER, UPPER]
 * of a greylister's delay. A stored record is only replaced by one whose
 * fifth field (end of the pause, time learned) is later: a server-side
 * script compares.
 */
#ifndef TARRY_CLUSTER_H
#define TARRY_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#define CLUSTER_PREFIX_DEFAULT "tarry:"
#define CLUSTER_NAME_MAX       64    /* node names and prefixes */
#define CLUSTER_ROUTE_MAX      255   /* a route in a record */
#define CLUSTER_RECORD_MAX     512   /* a whole record; longer is refused unread */
#define CLUSTER_PAUSE_MAX_S    86400 /* a shared pause longer than a day is refused */
#define CLUSTER_WINDOW_MAX_S   43200 /* a greylist window above 12 h is not one (LEARN_MAX_S) */
#define CLUSTER_SKEW_S         300   /* a window learned further in the future is refused */
#define CLUSTER_SUMMARY_MAX    2048  /* a node summary; longer ones are not kept */
#define CLUSTER_PUBLISH_S      5     /* how often a node publishes its summary */
#define CLUSTER_NODE_TTL_S     30    /* a summary not renewed for this long is gone */
#define CLUSTER_NODES_MAX      256   /* summaries kept from one read */
#define CLUSTER_SLOT_MAX_S     3600  /* a pace slot further away is not believed */
#define CLUSTER_LEASE_TTL_S    15    /* a connection lease not renewed for this long is gone */
#define CLUSTER_LEASE_RENEW_S  5     /* how often a node renews the leases it holds */
#define CLUSTER_LEASE_HOLD_S                                                                       \
        7 /* a lease unused this long is given back: smtpc keeps an                                \
             idle connection 5 s, then QUITs */

enum cluster_pause_state {
        CLUSTER_SUSPENDED,
        CLUSTER_BACKOFF,
};

/* One destination pause as it travels between nodes. The strings point into
 * the caller's buffers (cluster_record_parse: into the record's copy). */
struct cluster_pause {
        const char *source; /* "" when none */
        const char *route;
        enum cluster_pause_state state;
        int64_t until_us; /* CLOCK_REALTIME */
        int cls;          /* enum reply_class, -1: none */
        const char *node; /* who set it */
};

/* Encode p as a record; node is this node. 0, or -EINVAL for a pause that
 * could not be read back (a field with white space, too long...). */
int cluster_record_format(const struct cluster_pause *p, char *out, size_t outlen);

/* Parse and validate a record that came from Redis (untrusted): buf (len
 * bytes, not NUL-terminated) is copied into work (workcap bytes), and out
 * points into it. Refused with -EINVAL and a reason in why: a wrong
 * version, field count, state or class, a route or source that is not one,
 * a time that is not a number, already past at now_us, or further than
 * CLUSTER_PAUSE_MAX_S away. */
int cluster_record_parse(const char *buf, size_t len, int64_t now_us, char *work, size_t workcap,
                         struct cluster_pause *out, char *why, size_t whylen);

/* A learned greylist window as it travels between nodes (strings as above). */
struct cluster_window {
        const char *route;
        int64_t upper_s;       /* 1..CLUSTER_WINDOW_MAX_S */
        int64_t lower_s;       /* 0..upper_s - 1 */
        int64_t learned_at_us; /* CLOCK_REALTIME */
        const char *node;
};

/* The same for windows. Refused: a bracket that is not one, a time learned
 * more than CLUSTER_SKEW_S ahead of now_us. Staleness (greylist_memory) is
 * the scheduler's to judge. */
int cluster_window_format(const struct cluster_window *w, char *out, size_t outlen);
int cluster_window_parse(const char *buf, size_t len, int64_t now_us, char *work, size_t workcap,
                         struct cluster_window *out, char *why, size_t whylen);

/* An operator's resume of a destination (tarryq resume at some node), as it
 * travels between nodes: "r1 SOURCE ROUTE AT_US NODE". SOURCE "*": every
 * source address (what is published on the channel); an address or "-":
 * the tombstone stored in that destination's dest: key in place of the
 * pause it cancelled (so no node reads that pause back at its next
 * resynchronisation). A pause set later replaces the tombstone. */
struct cluster_resume {
        const char *source; /* "" none, "*" every source */
        const char *route;
        int64_t at_us; /* CLOCK_REALTIME of the resume */
        const char *node;
};

/* The same for resumes. Refused: a resume time more than CLUSTER_SKEW_S
 * ahead of now_us, or more than CLUSTER_PAUSE_MAX_S behind it (no pause
 * set before it can still be running). */
int cluster_resume_format(const struct cluster_resume *r, char *out, size_t outlen);
int cluster_resume_parse(const char *buf, size_t len, int64_t now_us, char *work, size_t workcap,
                         struct cluster_resume *out, char *why, size_t whylen);

/* A node name or key prefix as [cluster] takes it: 1..CLUSTER_NAME_MAX
 * bytes; a name of letters, digits, ".-_"; a prefix without white space. */
bool cluster_node_name_ok(const char *name);
bool cluster_prefix_ok(const char *prefix);

struct cluster;

/* Check [cluster] without connecting (tarryd --check, and cluster_new):
 * 0, or -EINVAL with "[cluster] KEY: 'VALUE' what" in err. node NULL or
 * prefix NULL/"" as in cluster_new. */
int cluster_check(const char *addr, const char *node, const char *prefix, char *err, size_t errlen);

struct cluster_ops {
        /* Another node set this pause (validated; not one of this node's). */
        void (*on_pause)(void *userdata, const struct cluster_pause *p);
        /* Another node learned this greylist window (validated). */
        void (*on_window)(void *userdata, const struct cluster_window *w);
        /* Another node's operator resumed this destination (validated; the
         * live message only, not the tombstones read at a resync). */
        void (*on_resume)(void *userdata, const struct cluster_resume *r);
        /* Connected (first time or after a loss): the caller publishes its
         * own current pauses and windows again (a restarted Redis has
         * forgotten them). */
        void (*on_connected)(void *userdata);
        /* The answer to cluster_reserve_slot: this node's next start on
         * (source, route) is not before slot_us; -1: no answer (Redis gone
         * or the reply not a time within CLUSTER_SLOT_MAX_S). */
        void (*on_slot)(void *userdata, const char *source, const char *route, int64_t slot_us);
        /* (source, site), for which cluster_conn_ask said WAIT, may be
         * asked again now: a lease was granted (granted: it answers
         * CLUSTER_CONN_OPEN from the lease now held), Redis went away (it
         * answers OPEN: the local limit alone), or the back-off after a
         * refusal is over (granted false: it asks Redis again). Called once
         * per WAIT streak, never from inside cluster_conn_ask. */
        void (*on_lease)(void *userdata, const char *source, const char *site, bool granted);
        /* This node's summary for the fleet view (a JSON object), written
         * into buf; 0, or negative to publish nothing this time. */
        int (*summary)(void *userdata, char *buf, size_t len);
        /* Something to log: the loss, the return, a refused record. */
        void (*log)(void *userdata, int priority, const char *msg);
        void *userdata;
};

/* Start connecting to addr ("host:port", "[v6]:port" or "unix:/path").
 * Returns 0 at once (connection and reconnection happen on the loop), or
 * -EINVAL with the reason in err (address, node or prefix not valid),
 * -ENOMEM. */
int cluster_new(sd_event *loop, const char *addr, const char *node, const char *prefix,
                const struct cluster_ops *ops, struct cluster **out, char *err, size_t errlen);
void cluster_free(struct cluster *c);

/* Share a pause this node set (p->node is ignored: this node's name is
 * used). Dropped when Redis is not connected now. */
void cluster_publish_pause(struct cluster *c, const struct cluster_pause *p);

/* Share an operator's resume of route (every source address): every
 * stored pause of it becomes a tombstone (a record that cancels it, kept
 * for CLUSTER_PAUSE_MAX_S unless a later pause replaces it), and the other
 * nodes resume it too (ops.on_resume). false when Redis is not connected now
 * (nothing is shared: the other nodes keep their pauses). */
bool cluster_publish_resume(struct cluster *c, const char *route);

/* Share a window this node learned; it expires from Redis after ttl_s
 * (greylist_memory). Dropped when Redis is not connected now. */
void cluster_publish_window(struct cluster *c, const struct cluster_window *w, int64_t ttl_s);

/* The fleet as last read (every CLUSTER_PUBLISH_S, this node's included):
 * each node's summary as it came from Redis, unvalidated (the caller parses
 * it as outside input). Valid until the next loop iteration. */
size_t cluster_fleet(const struct cluster *c, const char *const **out);

/* Rate across the fleet: one start on (source, route) per gap_us, whatever
 * the node (GCRA as a server-side script: slot = max(stored, now + gap),
 * stored = slot + gap). This node just started one; its next slot comes
 * back through ops.on_slot. false when Redis is not connected now (nothing
 * will come back). */
bool cluster_reserve_slot(struct cluster *c, const char *source, const char *route, int64_t gap_us);

/* Connection limits across the fleet, as leases (KumoMTA's way): a node
 * holds one lease per connection it has open to (source, site), in a sorted
 * set with an expiry per lease; a server-side script drops expired leases,
 * counts, and adds one if under the limit. Held leases are renewed every
 * CLUSTER_LEASE_RENEW_S and expire CLUSTER_LEASE_TTL_S after the last
 * renewal, so a node that dies gives its leases back by itself; a lease no
 * connection has used for CLUSTER_LEASE_HOLD_S is given back (an idle kept
 * connection still holds its lease until then). */
enum cluster_conn {
        CLUSTER_CONN_OPEN, /* open it: a lease held here, or no Redis (local limit only) */
        CLUSTER_CONN_WAIT, /* not now: the fleet is at the limit, or a lease is being
                              asked for (ops.on_lease answers) */
};

/* May this node open one more connection to site from source under a
 * fleet-wide limit of limit? Answered from the leases held here (one held
 * and not in use: OPEN), or by asking Redis: one round trip, at most one at
 * a time per (source, site) however many callers ask, and after a refusal
 * none before a back-off (250 ms, doubling per refusal in a row up to 2 s):
 * WAIT, and ops.on_lease says when to ask again. Without a connected Redis,
 * or when the request cannot be sent: OPEN (mail never waits on Redis; the
 * local limit alone holds; an unanswered request drops the connection after
 * 2 s, and then OPEN). The caller then calls cluster_conn_opened when it
 * opens the connection (taking a lease held here, or none without Redis),
 * and cluster_conn_closed once it is over. */
enum cluster_conn cluster_conn_ask(struct cluster *c, const char *source, const char *site,
                                   int limit);
void cluster_conn_opened(struct cluster *c, const char *source, const char *site);
void cluster_conn_closed(struct cluster *c, const char *source, const char *site);

struct cluster_stats {
        bool connected;
        uint64_t commands;       /* round trips sent on the command connection */
        uint64_t received;       /* records taken from other nodes */
        uint64_t refused;        /* records refused as invalid */
        uint64_t dropped;        /* pauses not shared: Redis was not there */
        uint64_t losses;         /* connections lost (or never made) */
        int64_t connected_us;    /* CLOCK_REALTIME of the latest connection, 0: never */
        uint64_t leases_held;    /* connection leases held now */
        uint64_t leases_refused; /* lease requests the fleet refused (at the limit) */
};
void cluster_get_stats(const struct cluster *c, struct cluster_stats *out);
const char *cluster_node(const struct cluster *c);

#endif
