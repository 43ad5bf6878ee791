/* daemon/spoollock.h — taking the spool's lock at start (state/tarryd.lock).
 *
 * One tarryd per spool: queue_lock flock()s the file and writes the taker's
 * pid into it. When it is held and that pid is a running tarryd (not this
 * one), the spool is in use and the answer comes at once. Otherwise the
 * holder is what a dead tarryd left: after kill -9, a process it was
 * spawning (a delivery worker between posix_spawn's clone and its exec)
 * still has a copy of its descriptors, the lock's among them, for a moment
 * (docs/reliability.md, "Restart after kill -9"). Then the lock is waited for,
 * up to a bound, and the processes holding it are named.
 */
#ifndef TARRY_DAEMON_SPOOLLOCK_H
#define TARRY_DAEMON_SPOOLLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "queue/queue.h"

/* How long a start waits for a lock a dead tarryd's leftovers hold. */
#define SPOOL_LOCK_WAIT_US (10 * 1000000LL)

struct spool_lock_report {
        pid_t named;        /* the pid the lock file names, 0: none */
        bool named_running; /* that pid is a running tarryd other than this process */
        bool waited;        /* it was held at first, by no running tarryd */
        int64_t waited_us;  /* how long this start waited for the lock */
        char holders[256];  /* "pid 123 (tarryd, parent 1)…" of those seen holding it, or "" */
};

/* Take the lock of q (spool is its path, for finding the holders): 0, or
 * -EBUSY (in use by a running tarryd, or still held after wait_us), or
 * another negative errno from queue_lock. *rep says what was seen. */
int spool_lock_take(struct queue *q, const char *spool, int64_t wait_us,
                    struct spool_lock_report *rep);

#endif
