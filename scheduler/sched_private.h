/* scheduler/sched_private.h — the scheduler's structures, shared by the files
 * of scheduler/ only.
 */
#ifndef TARRY_SCHEDULER_SCHED_PRIVATE_H
#define TARRY_SCHEDULER_SCHED_PRIVATE_H

#include "common/pool.h"
#include "scheduler/internal.h"
#include "scheduler/scheduler.h"

enum item_where {
        W_WAITING, /* in the heap */
        W_PARKED,  /* on its destination's list */
        W_IN_FLIGHT,
};

/* 56 bytes, from the scheduler's item pool (no malloc header): with its
 * 16-byte heap entry, about 72 bytes per queued item. */
struct sched_item {
        int64_t due_us;
        int64_t expires_us;
        void *userdata;
        struct dest *dest;
        struct sched_item *prev, *next; /* parked list, or the in-flight list */
        uint32_t heap_idx;
        uint8_t where;
        bool force; /* tarryq -i --force: may start while its destination is paused */
        bool gated; /* in flight with the connection gate's leave: tell it "closed" */
};

/* A (source address, route) pair and what the scheduler knows about it. */
struct dest {
        struct dest *hnext;
        uint64_t hash;
        char *source; /* both point into one allocation after the struct */
        char *route;
        enum sched_dest_state state;
        int64_t until_us;
        int concurrency;
        int in_flight;
        size_t queued;
        int strikes[CLASS__MAX]; /* consecutive destination-wide deferrals per class */
        char *last_reply;
        int last_class;
        int pause_class;      /* class behind the current pause, -1: none */
        int64_t learned_s;    /* known-good greylist age (upper bound), -1: nothing learned */
        int64_t learned_lo_s; /* highest refused age below it, 0: none known */
        int64_t learned_lo_at_us;
        int64_t learned_at_us;
        int64_t saved_at_us;
        struct sched_item *park_head, *park_tail;
        size_t n_parked;
        size_t dheap_idx;
        bool in_dheap;
        bool runnable;
        bool probe_full; /* resumed from a back-off: full concurrency after one success */
        struct dest *run_next;
        /* rule actions (policy file): caps until a time, and threshold counts */
        int cap_connections; /* 0: none */
        int64_t cap_connections_until_us;
        int64_t pace_gap_us; /* max_per_minute: least time between two starts; 0: none */
        int64_t pace_until_us;
        struct hitlog *hits;
        /* a provider's published limits (sched_limit_destination), for good */
        int limit_connections; /* 0: none */
        int64_t limit_gap_us;  /* messages_per_minute: least time between two starts */
};

/* Recent matches of one rule with a threshold, on one destination. */
struct hitlog {
        struct hitlog *next;
        int n;
        int64_t *t; /* n match times, oldest first, at most the rule's threshold */
        char rule[];
};

struct sched {
        const struct tarry_config *cfg;
        const struct sched_classifier *cls;
        struct sched_io io;
        uint64_t rng;
        struct heap items; /* waiting items by due time */
        struct heap dests; /* paused destinations by end of pause */
        struct dest **buckets;
        size_t n_buckets, n_dests;
        struct dest *run_head;          /* destinations whose parked items may go */
        struct sched_item *flight_head; /* items in flight */
        size_t n_items, n_parked, n_in_flight;
        bool learned_dirty;
        bool dests_dirty; /* a pause or concurrency window changed: save destinations.json */
        /* move_source: may this item leave from another address? (sched_set_mover) */
        bool (*may_move)(void *item_userdata, void *arg);
        void *may_move_arg;
        struct pool item_pool;       /* every struct sched_item lives here */
        struct sched_conn_gate gate; /* the fleet's connection leases, or none */
        struct sched_share share;    /* share.c: pauses told to other nodes */
        bool applying_shared;        /* share.c: applying one of theirs, tell nobody */
};

/* dest.c */
struct dest *dest_get(struct sched *s, const char *source, const char *route, bool create);
void dest_gc(struct sched *s, struct dest *d);
void dest_free(struct dest *d);
bool dest_learned_fresh(const struct sched *s, const struct dest *d, int64_t now);
void dest_clear_actions(struct dest *d);
/* What tarry reports as the learned window: the middle of the bracket, or its
 * upper bound when nothing is known below; -1 when nothing fresh. */
int64_t dest_learned_estimate(const struct sched *s, const struct dest *d, int64_t now);
enum sched_why dest_pause_why(const struct dest *d);
/* Suspended or backing off at now (a pacing gap is not a pause). */
bool dest_held(const struct dest *d, int64_t now);

/* sched.c */
uint64_t sched_rand(struct sched *s);
void sched_pause(struct sched *s, struct dest *d, enum pause_kind kind, int64_t until);
void sched_item_done_flight(struct sched *s, struct sched_item *it, int64_t now);
int sched_item_wait(struct sched *s, struct sched_item *it, int64_t due);
void sched_item_free(struct sched *s, struct sched_item *it);
int sched_full_concurrency(const struct sched *s);
void sched_pace_until(struct sched *s, struct dest *d, int64_t until);

/* share.c */
void share_pause_set(struct sched *s, const struct dest *d);
void share_window_set(struct sched *s, const struct dest *d);
/* A start on a destination paced to one start per gap (a rule's
 * max_per_minute, a provider's messages_per_minute): asks the sharer for the
 * next slot; the hold to keep until it answers (gap without a sharer). */
int64_t share_paced_start(struct sched *s, struct dest *d, int64_t gap);

#endif
