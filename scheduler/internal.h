/* scheduler/internal.h — private to scheduler/: loaded policy, tunables, heap.
 */
#ifndef TARRY_SCHEDULER_INTERNAL_H
#define TARRY_SCHEDULER_INTERNAL_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/reply_class.h"
#include "scheduler/scheduler.h"

/* One classification rule, loaded from a policy file (scheduler/policy.c). */
struct rule {
        char *name;
        char *code;     /* fnmatch on "451"; '|' separates alternatives */
        char *enhanced; /* fnmatch on "4.7.1", "*" any, "-" none; '|' alternatives */
        char *reason;
        char *source;     /* URL or "observed" */
        char *provider;   /* provider the rule belongs to, or NULL */
        const char *file; /* the file it came from (owned by the classifier) */
        enum reply_class cls;
        int weight; /* 0: a rule (first match wins); 1..100: a word family, scored */
        bool has_action;
        struct sched_rule_action action;
        regex_t re; /* POSIX ERE, case-insensitive, on the reply text */
};

/* A greylister's default window, aimed at just after it ends. */
struct greylist_window {
        int64_t seconds;
        char *who;
        char *source;
};

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

/* Everything a policy file describes, plus the compiled hint patterns. */
struct sched_classifier {
        struct rule *rules; /* operator rules first, then the shipped ones */
        size_t n_rules, n_operator;
        struct greylist_window *windows; /* ascending */
        size_t n_windows;
        struct class_trait traits[CLASS__MAX];
        struct sched_provider *providers;
        size_t n_providers;
        char **files; /* every file loaded, in order: rules point at these */
        size_t n_files;
        regex_t hint_rel;   /* "try again in 5 minutes" */
        regex_t hint_clock; /* "come back in 00:04:59" */
        regex_t hint_later; /* "15min later", "287s left" */
        regex_t hint_more;  /* the rest of "1 hour(s) 25 minute(s)" */
};

/* policy.c: parse one policy document into c (base: the shipped file, which
 * must describe every class; else an overlay). Nothing changes on error. */
int policy_load(struct sched_classifier *c, const char *name, const char *text, bool base,
                char *err, size_t errlen);
/* The legacy one-rule-a-line operator format (before policy files). */
int policy_load_lines(struct sched_classifier *c, const char *name, const char *text, char *err,
                      size_t errlen);
void policy_rule_free(struct rule *ru);
void policy_provider_free(struct sched_provider *p);
/* name kept in c->files (once): its stable copy, or NULL. */
const char *policy_file_name(struct sched_classifier *c, const char *name);
int policy_compile(regex_t *re, const char *pattern, char *err, size_t errlen);

/* Tunables (scheduler/policy.c has the reasons). */
#define GREYLIST_MARGIN_S      5
#define GREYLIST_GAP_CEILING_S (2 * 3600)
#define LEARN_MAX_S            (12 * 3600)
#define LEARN_RESAVE_S         86400
#define LEARN_RECHECK_S        3600
#define LEARN_TIGHT_DIV        10
#define LEARN_TIGHT_MIN_S      2
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
