/* daemon/msgindex.h — tarryd's in-memory index of queued messages.
 *
 * One small record per message in active/ (or hold/): enough to answer
 * status queries and to find the message when its retry falls due. The
 * envelope itself is loaded from the spool only while the message is being
 * worked on, so a large queue costs little memory. The IDs are also kept in
 * order (16 bytes each) so that a listing pages on from a cursor without
 * sorting the queue.
 */
#ifndef TARRY_DAEMON_MSGINDEX_H
#define TARRY_DAEMON_MSGINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/queue.h"

struct sched_item;

/* One scheduler item: the recipients of a message that share a route. The
 * scheduler knows the item by its site (daemon/site.h); route is then the
 * smtpc route key of its recipients ("mx:example.com"), NULL when the two
 * are the same (relayhost, [transport], a domain not resolved yet). 32 bytes,
 * from the index's pool (msgindex_work_new): no malloc header per work. */
struct work {
        struct msg *m;
        struct sched_item *it;
        struct work *next;
        const char *route; /* interned by the index (msgindex_route_get), shared */
};

/* Fields by size, so the record has no padding: 88 bytes (checked in
 * msgindex.c), allocated in slabs by the index (no malloc header per message). */
struct msg {
        uint64_t size;
        int64_t arrival_us;
        int64_t next_attempt_us; /* earliest retry of any recipient (0: now) */
        struct envelope *env;    /* loaded while inflight > 0 or dirty, else NULL */
        struct work *works;      /* scheduler items, one per destination */
        struct msg *hnext;       /* hash chain (the free list, once removed) */
        int inflight;            /* attempts running for this message */
        uint32_t n_pending;      /* recipients not yet delivered or failed */
        uint32_t uid;            /* the submitter (envelope's uid), once uid_known */
        int16_t write_error;     /* the last failed spool write's -errno, 0: none (logged
                                  * once per run) */
        int16_t dsn_error;       /* likewise for queueing a DSN */
        int16_t read_error; /* -errno of the last failed envelope read (logged once), 0: none */
        uint16_t write_failures; /* failed spool writes in a row (for the log) */
        uint8_t dir;             /* enum queue_dir: QUEUE_ACTIVE or QUEUE_HOLD */
        int8_t reply_class;      /* class of the latest deferral, -1: none */
        bool forced : 1;         /* admin retry/flush: ignore the recipients' retry times */
        bool same_source : 1;    /* a waiting recipient was greylisted (greylist, unknown_temp):
                                  * its retries leave from the same address (move_source) */
        bool dirty : 1;          /* env changed but could not be written yet (or a DSN is owed) */
        bool due_counted : 1;    /* counted active in struct message_tally (message.c) */
        bool uid_known : 1;      /* uid is set: read from the envelope, or the snapshot had it
                                  * (a TARRYIX2 record has none until the envelope is read) */
        char id[QUEUE_ID_LEN + 1];
};

struct msgindex;

int msgindex_new(struct msgindex **out);
void msgindex_free(struct msgindex *ix);

/* Add a record for id (copied; a queue ID: 16 upper-case hex digits, else
 * -EINVAL); -EEXIST if present. */
int msgindex_add(struct msgindex *ix, const char *id, struct msg **out);
struct msg *msgindex_get(const struct msgindex *ix, const char *id);
/* A queue ID as the number its 16 hex digits spell (IDs sort as their
 * keys); false when id is not a queue ID. */
bool msgindex_id_key(const char *id, uint64_t *out);
/* The reverse: the queue ID of key. */
void msgindex_key_id(uint64_t key, char id[QUEUE_ID_LEN + 1]);
/* Make room for n records at once (start-up knows how many it lists): no
 * rehash or regrowth on the way. Only a hint: nothing fails. */
void msgindex_reserve(struct msgindex *ix, size_t n);
/* Remove and free the record (and its envelope, if loaded). */
void msgindex_remove(struct msgindex *ix, struct msg *m);
size_t msgindex_count(const struct msgindex *ix);

/* A zeroed work for m from the index's pool (not linked into m->works: the
 * caller does that); NULL when out of memory. */
struct work *msgindex_work_new(struct msgindex *ix, struct msg *m);
/* Free w and its route (NULL: nothing); the caller has unlinked it and
 * removed its scheduler item. */
void msgindex_work_free(struct msgindex *ix, struct work *w);

/* route as one string shared by every work that takes it (a million works
 * to a thousand MX routes keep a thousand copies), counted: each get is
 * matched by a put. NULL when out of memory. */
const char *msgindex_route_get(struct msgindex *ix, const char *route);
/* Drop one reference (NULL: nothing); the last frees the string. */
void msgindex_route_put(struct msgindex *ix, const char *route);

/* Visit every record, in no particular order (cb may remove the one it is
 * given); stop when cb returns non-zero (and return that). */
int msgindex_foreach(const struct msgindex *ix, int (*cb)(struct msg *m, void *ud), void *ud);
/* The same in ID order, from the first ID above after (NULL or "": from the
 * first). cb must not add or remove records. */
int msgindex_foreach_after(struct msgindex *ix, const char *after,
                           int (*cb)(struct msg *m, void *ud), void *ud);
/* The record with the lowest ID (the oldest arrival, if every ID says when
 * its message arrived), NULL: none. Skips empty blocks of IDs. */
struct msg *msgindex_first(const struct msgindex *ix);
/* How many records have an ID above after (NULL or "": all of them), without
 * visiting them: a sum over blocks of a thousand IDs. */
size_t msgindex_count_after(struct msgindex *ix, const char *after);

#endif
