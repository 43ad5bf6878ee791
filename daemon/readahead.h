/* daemon/readahead.h — envelopes of a listing read ahead on a thread.
 *
 * A live listing (GET /queue) reads one envelope per message; reading and
 * parsing it was about half of tarryd's time in a listing. The loop hands
 * the IDs it will list next to this thread, which reads and parses their
 * envelopes while the loop renders the ones before, on the other core.
 *
 * The thread only reads: it opens a message folder and its envelope file
 * with O_NOFOLLOW, parses it and checks its body's size (fstatat, no
 * follow). Anything else (a message file, a body that still carries its
 * trailer, a damaged message, one that left) is handed back without an
 * envelope, and the loop loads it with queue_load as before: what a listing
 * shows is what queue_load would have given. The thread touches no
 * scheduler or index state; the loop checks that a message is still where
 * it was before it uses an envelope read ahead.
 */
#ifndef TARRY_DAEMON_READAHEAD_H
#define TARRY_DAEMON_READAHEAD_H

#include <stdbool.h>

#include "queue/queue.h"

/* Envelopes read ahead at most (the loop renders up to 16 per turn). */
#define READAHEAD_SLOTS 64

struct readahead;

/* A thread reading ahead in q's folders (q outlives it). */
int readahead_new(struct queue *q, struct readahead **out);
/* Stops the thread (after the envelope it is reading) and frees what is left. */
void readahead_free(struct readahead *ra);

/* Room for another ID? */
bool readahead_has_room(const struct readahead *ra);
/* id in folder d is to be listed after those handed over before; -ENOSPC when full. */
int readahead_add(struct readahead *ra, const char *id, enum queue_dir d);
/* The oldest ID handed over, its folder and its envelope (yours), or *env
 * NULL when the thread could not read it (or had not started on it: then
 * the loop reads it, rather than waiting). Waits only while the thread is
 * reading that very envelope. 1: one taken, 0: none left. */
int readahead_take(struct readahead *ra, char id[QUEUE_ID_LEN + 1], enum queue_dir *d,
                   struct envelope **env);

/* The thread's read, without the thread (what it does for each ID): 0 and
 * *out, or -errno when the loop must load it itself. buf/cap: a buffer kept
 * from one call to the next. */
int readahead_load(struct queue *q, enum queue_dir d, const char *id, char **buf, size_t *cap,
                   struct envelope **out);

#endif
