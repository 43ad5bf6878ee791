/* scheduler/internal.h — private to scheduler/: rule rows, tunables, heap.
 */
#ifndef TARRY_SCHEDULER_INTERNAL_H
#define TARRY_SCHEDULER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/reply_class.h"

/* One classification rule as written (compiled-in table or operator file). */
struct rule_def {
        const char *name;
        const char *code;     /* fnmatch on "451"; '|' separates alternatives */
        const char *enhanced; /* fnmatch on "4.7.1", "*" any, "-" none; '|' alternatives */
        const char *text;     /* POSIX ERE, case-insensitive */
        enum reply_class cls;
        const char *reason;
};

extern const struct rule_def sched_default_rules[];
extern const size_t sched_n_default_rules;

/* A greylister's default window, aimed at just after it ends. */
struct greylist_window {
        int64_t seconds;
        const char *who;
};
extern const struct greylist_window sched_greylist_windows[];
extern const size_t sched_n_greylist_windows;

/* What each class does beyond its cfg_retry numbers. */
enum pause_kind {
        PAUSE_NONE,    /* never pauses the destination */
        PAUSE_SUSPEND, /* state "suspended", resume at concurrency 1, +1 per success */
        PAUSE_BACKOFF, /* state "backoff", resume with one probe, full after a success */
};

struct class_trait {
        bool greylist_like; /* schedule snaps to greylister windows; learned delay applies */
        enum pause_kind pause;
        bool pause_even_if_delivered; /* pause although other recipients got through */
        bool jitter;                  /* spread destination back-off (+-JITTER_PCT) */
};
extern const struct class_trait sched_class_traits[CLASS__MAX];

/* Tunables (scheduler/policy.c has the reasons). */
#define GREYLIST_MARGIN_S      5
#define GREYLIST_GAP_CEILING_S (2 * 3600)
#define LEARN_MAX_S            (12 * 3600)
#define LEARN_RESAVE_S         86400
#define JITTER_PCT             10
#define LAST_REPLY_MAX         512

/* ---- binary min-heap of (key, pointer); each object remembers its index ---- */
struct hent {
        int64_t key;
        void *p;
};
struct heap {
        struct hent *v;
        size_t n, cap;
        void (*set_idx)(void *p, size_t idx);
};
int heap_push(struct heap *h, int64_t key, void *p);
void *heap_pop(struct heap *h);
void heap_remove(struct heap *h, size_t idx);
void heap_update(struct heap *h, size_t idx, int64_t key);
void heap_free(struct heap *h);
static inline const struct hent *heap_top(const struct heap *h)
{
        return h->n ? &h->v[0] : NULL;
}

#endif
