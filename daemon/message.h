/* daemon/message.h — the lifecycle of one queued message in tarryd.
 *
 * The one owner of a struct msg's state (daemon/msgindex.h): its record is
 * made here from an envelope picked up (or read at start), summarised here
 * (recipients waiting, latest class, next attempt, same_source), moved here
 * between active/, hold/ and corrupt/, and removed and freed here. pickup.c,
 * deliver.c and control.c call these functions instead of changing the
 * record's fields themselves. Delivery's own bookkeeping (attempts in
 * flight, an envelope owed to the spool) stays with deliver.c.
 *
 *   picked up ──► active ──► (deferred: active, due later) ──► removed
 *                   │  ▲                                          ▲
 *        hold (admin│  │release                   delete (admin) ─┘
 *   or undeliverable│  │
 *        DSN)       ▼  │
 *                  held
 *   any unreadable envelope ──► quarantined (corrupt/, out of the index)
 */
#ifndef TARRY_DAEMON_MESSAGE_H
#define TARRY_DAEMON_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/reply_class.h"
#include "daemon/msgindex.h"
#include "queue/queue.h"

struct tarryd;

/* What /status counts of the index, kept up to date by the functions below
 * as each message changes, so that asking costs nothing per message
 * (docs/status.md, "Counts"). A message not held is active while an
 * attempt for it runs or once its next attempt is due, deferred until then:
 * due_heap holds (next attempt, ID) of the deferred ones, and
 * message_tally_at moves those due by then to n_due. */
struct message_due {
        int64_t at;
        uint64_t key; /* the queue ID as a number (16 hex digits) */
};

struct message_tally {
        size_t n_ready; /* in active/ (not held): n_due of them active, the rest deferred */
        size_t n_due;   /* in flight, or next attempt at or before due_mark */
        size_t n_hold;  /* in hold/ */
        size_t by_class[CLASS__MAX]; /* not held, by the class of the latest deferral */
        size_t n_odd_arrival;        /* arrival time other than the ID's: oldest needs a walk */
        int64_t due_mark;            /* the latest time asked (message_tally_at) */
        struct message_due *heap;    /* a min-heap by at; entries no longer true are skipped */
        size_t n_heap, cap_heap;
};

/* The counts at now (realtime µs): the deferred messages due by now become
 * active. The clock going back does not make them deferred again. */
const struct message_tally *message_tally_at(struct tarryd *d, int64_t now);
/* The arrival of the oldest queued message (µs), 0: none. */
int64_t message_oldest_arrival(struct tarryd *d);
void message_tally_free(struct message_tally *t);

/* An attempt for m starts (m->inflight++) or ends (m->inflight--). */
void message_attempt_begin(struct tarryd *d, struct msg *m);
void message_attempt_end(struct tarryd *d, struct msg *m);

/* The index's summary of m from env: size and arrival, recipients waiting,
 * the class of the latest deferral among them (-1: none), the earliest
 * next attempt among them (INT64_MAX: none waiting), and same_source (one
 * was greylisted). A function of env alone: whatever m said before is
 * replaced. */
void message_summarise(struct tarryd *d, struct msg *m, const struct envelope *env);

/* The record of env's message in dir, made (*added true) or found, and
 * summarised from env. 0 or -errno (nothing made). */
int message_index(struct tarryd *d, enum queue_dir dir, const struct envelope *env,
                  struct msg **out, bool *added);

/* The record of r's message as state/index.snap remembers it (startup.c),
 * without reading its envelope. same_source is not in the snapshot: false
 * until the message's next attempt summarises it again. 0 or -errno
 * (-EEXIST: already indexed; nothing made). */
int message_index_snap(struct tarryd *d, const struct queue_snap_rec *r, struct msg **out);
/* The reverse: m's fields into r (id, folder, class, pending count, size,
 * arrival, next attempt); its works are the caller's (startup.c). */
void message_snap_fields(const struct msg *m, struct queue_snap_rec *r);

/* The envelope of id in dir cannot be read (why: what is wrong): move the
 * message to corrupt/, count it (tarry_spool_errors_total{kind="corrupt"}) and
 * log what happened, also when the move failed. Its index record, if any,
 * is the caller's to drop (message_free) once nothing of it is in flight. */
void message_quarantine(struct tarryd *d, enum queue_dir dir, const char *id, const char *why);

/* Load m's envelope from active/ into m->env (taken in, pickup_take_in),
 * unless it is loaded. 0, or -errno: -ENOENT gone, -EBADMSG unreadable and
 * quarantined, else a read that may work later. */
int message_load_envelope(struct tarryd *d, struct msg *m);
/* The same, and when it loads the envelope, the body opened for an attempt
 * (*fd, *size: as queue_open_body; the caller's on success): a message file
 * is opened once for both. *fd is left as it was when m->env was loaded. */
int message_load_with_body(struct tarryd *d, struct msg *m, int *fd, uint64_t *size);
/* m's envelope is env (taken over) while it is worked on. */
void message_attach_envelope(struct msg *m, struct envelope *env);
/* Drop m's envelope from memory unless an attempt uses it or its newest
 * state is not written yet (dirty). */
void message_release_envelope(struct msg *m);

/* on: try m at once (tarryq -f, -i): its recipients' own retry times do
 * not hold it back at its next attempt (held messages are left alone);
 * off: they do again. */
void message_force(struct msg *m, bool on);

/* active/ → hold/ by the administrator: its scheduler items are dropped.
 * 1 held, 0 already held, -EBUSY while an attempt runs or its newest state
 * is only in memory, else -errno from the move (nothing changed). */
int message_hold(struct tarryd *d, struct msg *m);
/* active/ → hold/ for good reason (an undeliverable DSN of ours, whose
 * envelope the caller has written): like message_hold, for the loop's own
 * use; the reason is logged by the caller. 0 or -errno (nothing changed). */
int message_park(struct tarryd *d, struct msg *m);
/* hold/ → active/: summarised again from its envelope, scheduled, and
 * whatever is due started. 1 released, 0 not held, -errno. */
int message_release(struct tarryd *d, struct msg *m);
/* Deleted by the administrator, from whichever folder it is in: 1, or
 * -EBUSY while an attempt runs, or -errno (nothing changed). m is freed. */
int message_delete(struct tarryd *d, struct msg *m);
/* Nothing left to do: out of active/ with one rename (its files are deleted
 * off the loop, remover.c), or one unlink for a message file when *body_fd
 * (may be NULL) is open on it (taken over: -1 after). 0 or -errno (still
 * queued, m kept). On 0 the caller ends with message_removed. */
int message_discard(struct tarryd *d, struct msg *m, int *body_fd);
/* Log the removal and free m. */
void message_removed(struct tarryd *d, struct msg *m);
/* Drop m's record (and envelope, scheduler items left) from the index: the
 * message is gone from the spool, or was never taken in. */
void message_free(struct tarryd *d, struct msg *m);

#endif
