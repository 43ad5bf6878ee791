/* scheduler/diagnose.h — says what retrying cannot fix (issue 21).
 *
 * Input: typed delivery outcomes (one diag_event per recipient outcome, as
 * the scheduler decided it) and the clock (int64_t microseconds, the same
 * CLOCK_REALTIME as the scheduler's). Output: diagnoses, each raised once per
 * destination (the scheduler's destination key: source address and site or route)
 * and code, and cleared when the cause goes away; every raise and clear is
 * reported through a callback (tarryd logs it). No I/O, no global state:
 * tests drive it with a fake clock.
 *
 * Diagnoses are evaluated when outcomes arrive, so one whose threshold is a
 * duration is raised at the first outcome past it (docs/scheduler.md,
 * "Diagnoses"). Only destinations with an open streak or a raised diagnosis
 * are kept; an accepted message forgets the rest.
 */
#ifndef TARRY_SCHEDULER_DIAGNOSE_H
#define TARRY_SCHEDULER_DIAGNOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/reply_class.h"

enum diag_code {
        DIAG_GREYLIST_NOT_CLEARING,
        DIAG_SOURCE_CHANGED_MID_GREYLIST,
        DIAG_REPUTATION_PERSISTENT,
        DIAG_AUTHENTICATION_SUSPECTED,
        DIAG_DESTINATION_UNREACHABLE,
        DIAG__MAX,
};

/* Deferrals after the greylist window ended, beyond the first retry after
 * it (the one a greylister accepts), before greylist_not_clearing is raised. */
#define DIAG_GREYLIST_EXTRA_ATTEMPTS 2
/* Messages remembered for source_changed_mid_greylist; the oldest is
 * forgotten beyond this. */
#define DIAG_TRACKED_MAX  4096
#define DIAG_EVIDENCE_MAX 512
#define DIAG_ADVICE_MAX   768

/* "greylist_not_clearing", ...; NULL for out-of-range values. */
const char *diag_code_name(enum diag_code c);

/* Thresholds (config [diagnose]). */
struct diag_limits {
        int64_t greylist_no_window_s; /* greylist deferrals with no window known */
        int64_t reputation_s;         /* reputation / rate_limit suspensions */
        int64_t unreachable_s;        /* connection-level routing failures */
};

enum diag_outcome {
        DIAG_ACCEPTED,
        DIAG_DEFERRED,
        DIAG_FAILED,
};

/* One recipient's outcome of an attempt at destination (source, route). */
struct diag_event {
        const char *source;   /* the address the attempt left from; "" or NULL: none */
        const char *route;    /* the scheduler's route key (a site key for MX delivery) */
        const char *queue_id; /* the message */
        enum diag_outcome outcome;
        enum reply_class cls;      /* DEFERRED/FAILED: the class */
        bool reached;              /* a server replied (false: connect, timeout, TLS, DNS) */
        int64_t first_deferral_us; /* the recipient's first deferral; 0: this is the first */
        int64_t window_s;          /* hinted or learned greylist window; -1: none known */
        const char *text;          /* the reply or tarry's reason; NULL: "" */
        const char *remediation;   /* the receiver's provider page, or NULL */
};

/* A raised diagnosis (strings valid during the callback only). */
struct diag_info {
        enum diag_code code;
        const char *source; /* "" when none */
        const char *route;
        int64_t since_us; /* when it was raised */
        const char *evidence;
        const char *advice;
};

/* Called once when a diagnosis is raised (raised true) and once when it is
 * cleared (false). */
typedef void (*diag_note_fn)(const struct diag_info *di, bool raised, void *userdata);

struct diag;

/* 0 or -ENOMEM. note may be NULL. */
int diag_new(const struct diag_limits *lim, diag_note_fn note, void *userdata, struct diag **out);
void diag_free(struct diag *g);
/* New thresholds (reload): apply from the next outcome on. */
void diag_set_limits(struct diag *g, const struct diag_limits *lim);

/* Feed one outcome. 0 or -ENOMEM (nothing recorded for this event). */
int diag_on_event(struct diag *g, const struct diag_event *ev, int64_t now_us);

/* Call cb for every raised diagnosis; a non-zero return stops the walk. */
int diag_foreach(const struct diag *g, int (*cb)(const struct diag_info *di, void *userdata),
                 void *userdata);
/* How many destinations have code raised. */
size_t diag_count(const struct diag *g, enum diag_code code);

#endif
