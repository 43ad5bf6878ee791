/* cli/qlist.h — the queue listing of tarryq -p / -j, mailq and sendmail -bp.
 *
 * Records are (queue name, envelope) pairs, so the same printers serve the
 * offline listing read from the spool here and the live one tarryq gets
 * from tarryd's status endpoint. Layouts are Postfix's: postqueue -p
 * (showq_compat.c, long queue ID format since tarry IDs have 16 characters)
 * and postqueue -j (showq_json.c) plus tarry's class/next_attempt/attempts.
 */
#ifndef TARRY_CLI_QLIST_H
#define TARRY_CLI_QLIST_H

#include <stdio.h>

#include "queue/queue.h"

struct qentry {
        const char *queue_name; /* "incoming", "active", "deferred" or "hold" */
        struct envelope *env;
};

struct qlist {
        struct qentry *v;
        size_t n;
};

/* The Postfix queue name of a message in spool folder d. */
const char *qlist_queue_name(enum queue_dir d, const struct envelope *env);

/* Read incoming/, active/ and hold/ (sorted by queue ID, i.e. arrival).
 * Unreadable envelopes are reported on warn and skipped. */
int qlist_read_spool(struct queue *q, struct qlist *out, FILE *warn);
void qlist_free(struct qlist *l);

/* postqueue -p and postqueue -j layouts. 0, or -EIO when writing failed. */
int qlist_print_postqueue(FILE *f, const struct qentry *v, size_t n);
int qlist_print_json(FILE *f, const struct qentry *v, size_t n);

/* The offline listing command: config, spool, print. Returns an exit code. */
int qlist_main(const char *prog, const char *config_path, bool json);

#endif
