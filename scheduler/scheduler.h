/* scheduler/scheduler.h — decides when each deferred recipient is tried again.
 *
 * Input: outcomes from smtpc (per-recipient replies, attempt-level failures)
 * and the clock, passed in as int64_t microseconds (CLOCK_REALTIME, the same
 * clock as the envelope times). Output: due times, destination states,
 * and "give up" decisions. Owns no I/O except persisting what it learned
 * (learned.json, through a caller-supplied write callback), so every rule
 * is testable with a fake clock.
 *
 * Three parts:
 *   classifier  reply → class + retry hint + the rule that matched. Rules,
 *               greylister windows, class traits and provider entries are
 *               data: the shipped policy file (data/tarry-policy.json,
 *               installed in /usr/share/tarry/) and an optional operator
 *               file in the same format (config key classifier_rules) whose
 *               rules are tried first and whose entries override shipped
 *               ones by name. Any 5xx is permanent; an unmatched 4xx is
 *               unknown_temp; 2xx is "accepted".
 *   policies    per class from cfg->retry[]: first retry, growth, cap, hint,
 *               scope (one recipient, or the whole destination).
 *   timing      one min-heap keyed by due time holding every pending work
 *               item; destinations (source address, route) carry their own
 *               state (suspended / throttled / backoff, concurrency) and
 *               park their items while they cannot take attempts, so a
 *               suspension never touches every message.
 *
 * A work item is one message's recipients for one destination. The daemon
 * creates it with sched_add() and keeps the returned handle (e.g. in its
 * message record); the scheduler never looks inside userdata.
 *
 * Item life cycle:
 *   sched_add ──► waiting (in the heap) ──sched_pop_due──► in flight
 *        ▲                 │ destination suspended / full      │
 *        │                 ▼                                   │
 *        │           parked on the destination                 │
 *        └──── sched_on_result (some recipient retries) ◄──────┘
 *   sched_on_result with nothing left to retry, or sched_remove: freed.
 *
 * Not thread-safe: one loop owns a struct sched.
 */
#ifndef TARRY_SCHEDULER_H
#define TARRY_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/outcome.h"
#include "common/reply_class.h"
#include "config/config.h"

#define SCHED_TEXT_MAX     8192  /* bytes of a reply looked at (the rest is ignored) */
#define SCHED_ENH_MAX      16    /* "x.yyy.zzz" + NUL */
#define SCHED_HINT_MAX_S   86400 /* hints above one day are clamped to it */
#define SCHED_LEARNED_FILE "learned.json"
#define SCHED_DESTS_FILE   "destinations.json" /* suspensions, back-offs, throttles */

/* ------------------------------------------------------------------ */
/* Classifier                                                           */
/* ------------------------------------------------------------------ */

struct sched_classifier;

/* A reply as smtpc reports it. text may carry the code prefix on every line
 * ("451-4.7.1 Greylisted\r\n451 4.7.1 try again in 300 seconds") or not
 * ("4.4.1 connect to mx[192.0.2.1]:25: Connection refused"); lines may be
 * joined by "\r\n" or "\n". code/enhanced, when given, win over the text.
 *
 * origin says whose words they are. A server's reply (OUTCOME_FROM_SERVER,
 * the zero value) is classified by the rules. tarry's own failure
 * (OUTCOME_FROM_TARRY) is classified from its typed reason alone (local,
 * table in classify.c): its text is for people, never read to decide. */
struct sched_reply {
        int code;             /* basic code; 0: parse it from text */
        const char *enhanced; /* "4.7.1"; NULL or "": parse it from text */
        const char *text;     /* NUL-terminated; NULL is treated as "" */
        enum outcome_origin origin;
        enum outcome_local local; /* FROM_TARRY: why; OUTCOME_LOCAL_NONE otherwise */
        enum outcome_phase phase; /* how far the session got (diagnostics) */
};

/* What a rule does to its destination besides classifying the reply
 * (optional; docs/scheduler.md "Rule actions"). */
struct sched_rule_action {
        int64_t suspend_s;          /* suspend the destination this long; 0: no */
        int max_connections;        /* cap its concurrent attempts; 0: no cap */
        int max_per_minute;         /* cap attempts started per minute; 0: no cap */
        int64_t for_s;              /* how long the caps last */
        int threshold_matches;      /* act on the Nth match (1: every match) ... */
        int64_t threshold_within_s; /* ... within this many seconds */
};

struct sched_verdict {
        bool accepted;                          /* 2xx: delivered; class is meaningless */
        enum reply_class cls;                   /* greylist ... unknown_temp, permanent */
        int64_t hint_s;                         /* explicit delay stated in the text, -1: none */
        const char *rule;                       /* name of the rule that matched; lives as
                                                 * long as the classifier */
        const char *reason;                     /* that rule's one-line reason (same lifetime) */
        const char *file;                       /* the policy file of that rule; NULL for the
                                                 * classifier's own verdicts (2xx, 5xx, no rule) */
        const struct sched_rule_action *action; /* the rule's action, or NULL */
        int code;                               /* parsed basic code, 0 when unparseable */
        char enhanced[SCHED_ENH_MAX];           /* parsed enhanced code, "" when none */
};

/* A provider's published (or observed) limit; value 0: none given. */
struct sched_provider_limit {
        int64_t value;
        char *source; /* URL or "observed"; NULL when value is 0 */
};

/* A provider: the receivers matching its MX patterns and the limits it
 * asks senders to keep. tarryd keys the destinations of MX routes by site
 * (daemon/site.h): a domain whose MX hosts match a provider's patterns is
 * the site "site:NAME", and connections and messages_per_minute are
 * enforced on it with sched_limit_destination. */
struct sched_provider {
        char *name;
        char **mx; /* fnmatch patterns on MX host names, case-insensitive */
        size_t n_mx;
        struct sched_provider_limit connections; /* per source address */
        struct sched_provider_limit messages_per_connection;
        struct sched_provider_limit messages_per_minute; /* per source address */
        char *reason;
        char *remediation; /* the page a sender blocked there should read, or NULL */
        const char *file;  /* the policy file it came from */
};

/* The shipped policy file: PREFIX/share/tarry/tarry-policy.json, or, for a
 * program running from its build tree (tests, scripts/run), the copy in the
 * source tree (data/tarry-policy.json). */
const char *sched_policy_default_path(void);

/* A classifier with the shipped policy from path (NULL: the default path).
 * 0; -ENOMEM; -ENOENT/-EACCES (unreadable, "path: why" in err); -EINVAL
 * for an invalid file ("path: where: what" in err). */
int sched_classifier_new_from(const char *path, struct sched_classifier **out, char *err,
                              size_t errlen);
/* The same with the default path and no message: tests, benches. */
int sched_classifier_new(struct sched_classifier **out);
void sched_classifier_free(struct sched_classifier *c);

/* Add an operator policy file (config key classifier_rules). Same format as
 * the shipped file (docs/scheduler.md); every part is optional. Its rules are
 * tried before the shipped ones, in file order; a rule, provider or class
 * trait with the name of a loaded one replaces it ({"name": N, "disabled":
 * true} removes rule N); greylist_windows, when given, replace the list.
 * A file whose first non-blank byte is not "{" or "[" is read in the older format,
 * one rule a line, "#" comments and blank lines ignored,
 *     CLASS  CODE  ENHANCED  TEXT
 * named "BASENAME:LINE". Returns the number of rules added. Errors: -EINVAL
 * with "file:line: what" / "file: rule 'N': what" in err (nothing changed),
 * -ENOENT/-EACCES for an unreadable file. */
int sched_classifier_load_rules(struct sched_classifier *c, const char *path, char *err,
                                size_t errlen);
/* Same from memory; name is used for rule names and messages. */
int sched_classifier_load_rules_string(struct sched_classifier *c, const char *name,
                                       const char *text, char *err, size_t errlen);

/* What tarryd and tarryq use: cfg->policy_file (or the default path), then
 * cfg->classifier_rules when set. Errors as above, with the file in err. */
int sched_classifier_for_config(const struct tarry_config *cfg, struct sched_classifier **out,
                                char *err, size_t errlen);

/* The providers loaded (shipped and operator), in load order. */
size_t sched_classifier_providers(const struct sched_classifier *c,
                                  const struct sched_provider **out);
/* The provider one of whose MX patterns matches host, or NULL. */
const struct sched_provider *sched_provider_for_mx(const struct sched_classifier *c,
                                                   const char *host);

struct sched_policy_info {
        size_t rules, operator_rules, providers, greylist_windows, files;
};
void sched_classifier_info(const struct sched_classifier *c, struct sched_policy_info *out);

/* Classify one reply. Bounded work for any input: at most SCHED_TEXT_MAX
 * bytes are examined. Unparseable text is a temporary failure
 * (unknown_temp, rule "unparseable"): a garbled reply never loses mail. */
void sched_classify(const struct sched_classifier *c, const struct sched_reply *r,
                    struct sched_verdict *out);
/* The rule name a failure of tarry's own is classified under ("tarry-connect",
 * "tarry-worker", …); NULL out of range. */
const char *sched_local_rule_name(enum outcome_local l);
/* Convenience: classify a reply given as one string. */
void sched_classify_text(const struct sched_classifier *c, const char *text,
                         struct sched_verdict *out);

/* ------------------------------------------------------------------ */
/* Scheduler                                                            */
/* ------------------------------------------------------------------ */

struct sched;
struct sched_item;

/* How the scheduler persists learned.json. write must replace the file
 * atomically and durably (queue_state_write does); read returns -ENOENT when
 * there is none yet. Both return 0 or a negative errno. Either may be NULL
 * (nothing persisted / nothing loaded). */
struct sched_io {
        int (*write)(void *userdata, const char *name, const void *buf, size_t len);
        int (*read)(void *userdata, const char *name, size_t limit, char **out, size_t *len);
        void *userdata;
};

/* cfg and cls must outlive the scheduler (or be replaced with
 * sched_set_config). io may be NULL. rng_seed seeds the jitter of
 * destination back-off (tests pass a constant; tarryd passes something
 * random). 0 or -ENOMEM. */
int sched_new(const struct tarry_config *cfg, const struct sched_classifier *cls,
              const struct sched_io *io, uint64_t rng_seed, struct sched **out);
/* Frees every item too, in flight or not: their handles become invalid. */
void sched_free(struct sched *s);

/* Reload: new policies and limits apply to decisions made from now on. */
void sched_set_config(struct sched *s, const struct tarry_config *cfg,
                      const struct sched_classifier *cls);

/* Load learned.json through io (at start-up, before adding items). Entries
 * older than cfg->greylist_memory_s are dropped. Returns the number of
 * destinations loaded, 0 when there is no file, -EBADMSG for a corrupt file
 * (the scheduler then starts with nothing learned). */
int sched_load_learned(struct sched *s, int64_t now_us);
/* Load destinations.json through io (at start-up, before adding items):
 * suspensions and back-offs with their end times, and the reduced
 * concurrency of destinations still being raised after one. Entries whose
 * pause has ended are dropped. Returns the number loaded, 0 when there is no
 * file, -EBADMSG for a corrupt file (then nothing more is loaded). */
int sched_load_destinations(struct sched *s, int64_t now_us);
/* Write learned.json now, and destinations.json when a pause or a
 * concurrency window changed since the last save (sched_on_result and
 * sched_resume_destination already do it on a change; call this at shutdown
 * and to retry a failed write). 0 or the write callback's error. */
int sched_save_learned(struct sched *s, int64_t now_us);

/* ---- work items ---- */

/* Add a work item for destination (source_address, route) — source_address
 * is the message's pinned address ("" or NULL: kernel's choice), route the
 * smtpc route key ("mx:example.com", "[127.0.0.1]:2525"). due_us: first
 * possible attempt (0 or the past: now). expires_us: when its recipients
 * give up ("expired"), normally arrival + queue_lifetime; 0: never.
 * 0 or -ENOMEM / -EINVAL (NULL route). */
int sched_add(struct sched *s, const char *source_address, const char *route, int64_t due_us,
              int64_t expires_us, void *userdata, struct sched_item **out);

/* Forget an item whatever its state (message deleted, held, or done); the
 * handle is invalid afterwards. An in-flight item gives its slot back. */
void sched_remove(struct sched *s, struct sched_item *it);

/* Move an item's due time (waiting or parked: to the heap at due_us; in
 * flight: the attempt did not happen after all — slot returned, no result
 * counted). O(log n). */
void sched_reschedule(struct sched *s, struct sched_item *it, int64_t due_us);

void *sched_item_userdata(const struct sched_item *it);
int64_t sched_item_due(const struct sched_item *it);        /* 0 while in flight */
const char *sched_item_route(const struct sched_item *it);  /* lives with the item */
const char *sched_item_source(const struct sched_item *it); /* "" when none */
/* The greylist delay learned at the item's destination, -1 when none (or
 * forgotten). */
int64_t sched_item_learned_greylist_s(const struct sched *s, const struct sched_item *it,
                                      int64_t now_us);

/* ---- the daemon's loop ---- */

/* Earliest time the daemon must call sched_pop_due: the first due item whose
 * destination can take it, or the end of a suspension/back-off that releases
 * parked items; INT64_MAX when nothing is pending. May park items (not const). */
int64_t sched_next_due(struct sched *s, int64_t now_us);

/* Up to max items that may be attempted now, respecting destination
 * suspensions and concurrency. Each returned item is in flight until
 * sched_on_result / sched_reschedule / sched_remove. Attempt those of its
 * recipients whose own next attempt is due (<= now_us). Returns the count. */
size_t sched_pop_due(struct sched *s, int64_t now_us, struct sched_item **out, size_t max);

/* ---- concurrency: one owner ----
 *
 * The scheduler alone decides how many attempts run: an item in flight is
 * one connection in use (a new one, or one kept from an earlier message).
 * At most cfg->max_connections items are in flight in all (sched_pop_due
 * returns no more; sched_next_due is INT64_MAX while they are, since the
 * next result frees one), and at most its destination's window each:
 * destination_concurrency, lowered after a pause and raised on success, a
 * rule action's cap, a provider's connections (sched_limit_destination).
 * The delivery pool runs what it is given; docs/architecture.md says why
 * the scheduler owns this.
 *
 * A connection gate extends the answer beyond this process (the fleet's
 * connection leases, cluster/): may_open is asked once for each start,
 * after the local limits (and a pace) allow it — "may I open one more
 * connection to site from source?" SCHED_GATE_TAKEN: start it, and closed
 * is told exactly once when that item's flight ends (result, reschedule or
 * removal); SCHED_GATE_OPEN: start it, nothing to give back (closed is not
 * told); SCHED_GATE_WAIT: the item is not started (no pace slot is used)
 * and parks on its destination until sched_conn_wake (or another of its
 * items ends its flight). Both run inside sched_pop_due / sched_on_result /
 * sched_reschedule / sched_remove and must not call back into the
 * scheduler. */
enum sched_gate {
        SCHED_GATE_WAIT,  /* not now: parked until sched_conn_wake */
        SCHED_GATE_OPEN,  /* start it; closed is not told */
        SCHED_GATE_TAKEN, /* start it; closed is told when its flight ends */
};
struct sched_conn_gate {
        enum sched_gate (*may_open)(void *userdata, const char *source, const char *site);
        void (*closed)(void *userdata, const char *source, const char *site);
        void *userdata;
};

/* Install (or with NULL remove) the gate. An item that started with a
 * gate's leave tells the gate in place when it ends ("closed"). */
void sched_set_conn_gate(struct sched *s, const struct sched_conn_gate *gate);

/* The gate may now allow (source, site) what it refused: its parked items
 * are tried at the next sched_pop_due (call sched_next_due to re-arm). */
void sched_conn_wake(struct sched *s, const char *source, const char *site);

/* The local answer, without asking the gate and without starting anything:
 * may one more connection to site from source ("" or NULL: none) open now? */
bool sched_conn_may_open(struct sched *s, const char *source, const char *site, int64_t now_us);

/* One recipient of an attempt, with what the envelope knows about it. */
struct sched_rcpt_result {
        /* The recipient's own reply; NULL: not attempted this time (its
         * next_attempt_us is kept and counts for the item's due time). */
        const struct sched_reply *reply;
        int deferrals;             /* temporary failures so far (before this one) */
        int64_t first_deferral_us; /* 0: never deferred */
        int64_t last_deferral_us;  /* time of the latest deferral, 0: none */
        int prev_class;            /* enum reply_class of the latest deferral, -1: none */
        int64_t next_attempt_us;   /* only read when reply is NULL */
};

/* Where a next-attempt time came from (tarryq -j next_attempt_reason). */
enum sched_why {
        SCHED_WHY_NONE,            /* "": nothing scheduled (delivered, failed) */
        SCHED_WHY_FIRST_ATTEMPT,   /* not tried yet */
        SCHED_WHY_HINT,            /* the reply said when ("try again in 300 seconds") */
        SCHED_WHY_LEARNED_WINDOW,  /* the destination's learned greylist window */
        SCHED_WHY_GREYLIST_WINDOW, /* the end of a common greylister window */
        SCHED_WHY_BACKOFF,         /* the class's retry schedule */
        SCHED_WHY_RATE_LIMIT,      /* the rate_limit class's schedule */
        SCHED_WHY_DEST_SUSPENDED,  /* parked until the destination's suspension ends */
        SCHED_WHY_DEST_BACKOFF,    /* parked until the destination's back-off ends */
        SCHED_WHY_MANUAL_HOLD,     /* in hold/: only a release sends it */
        SCHED_WHY_QUEUE_LIFETIME,  /* the end of the queue lifetime (then: expired) */
        SCHED_WHY_ADMIN,           /* tarryq -i / -f made it due now */
        SCHED__WHY_MAX
};

/* "first_attempt", "hint", "learned_window", ... (docs/status.md); "" for NONE. */
const char *sched_why_name(enum sched_why w);
/* The reverse; -1 for an unknown name. */
int sched_why_from_name(const char *name);

enum sched_action {
        SCHED_DELIVERED, /* 2xx: mark delivered */
        SCHED_RETRY,     /* temporary: retry at next_attempt_us */
        SCHED_FAILED,    /* permanent (5xx, or expired): failure DSN */
        SCHED_NOT_ATTEMPTED,
};

/* Why a recipient failed (SCHED_FAILED). */
enum sched_fail {
        SCHED_FAIL_NONE,      /* not failed */
        SCHED_FAIL_PERMANENT, /* a permanent reply (5xx), the server's or tarry's own */
        SCHED_FAIL_EXPIRED,   /* a temporary one after the queue lifetime: 4.4.7 */
};

/* "", "permanent", "expired". */
const char *sched_fail_name(enum sched_fail f);

struct sched_decision {
        enum sched_action action;
        enum reply_class cls;      /* RETRY/FAILED: the class; DELIVERED: CLASS__MAX */
        int64_t hint_s;            /* -1: none */
        const char *rule;          /* classifier rule (classifier lifetime), or NULL */
        enum sched_fail fail;      /* FAILED: permanent or expired; else SCHED_FAIL_NONE */
        int64_t next_attempt_us;   /* RETRY (and NOT_ATTEMPTED: unchanged) */
        enum sched_why why;        /* RETRY: where next_attempt_us came from */
        int64_t first_deferral_us; /* for the envelope (kept, or set to now) */
        int code;                  /* parsed basic code of the reply (envelope reply_code) */
        char enhanced[SCHED_ENH_MAX];
};

/* The outcome of an attempt of item it (popped earlier). attempt_reply,
 * when not NULL, is an attempt-level failure (smtpc's reply or synthesized
 * "4.4.1 connect to …: Connection refused") that applies to every recipient
 * whose reply is NULL. Fills out[i] for each rcpt[i]; updates the
 * destination (suspension, back-off, concurrency, last reply) and greylist
 * learning (persisted through io when a learned delay changes).
 * Returns 1 when the item is waiting again (due at the earliest retry),
 * 0 when no recipient is left to retry: the item has been freed and the
 * handle is invalid. -EINVAL when it was not in flight (nothing changed). */
int sched_on_result(struct sched *s, struct sched_item *it, int64_t now_us,
                    const struct sched_reply *attempt_reply, const struct sched_rcpt_result *rcpt,
                    size_t n, struct sched_decision *out);

/* A receiving provider's published limits on destination (source_address,
 * route), which must exist (an item was added for it): at most
 * max_connections attempts at once, and attempt starts at least
 * 60/max_per_minute s apart (0: no such limit). They hold for as long as the
 * destination is known, on top of its own concurrency window and any rule
 * action's caps; calling again replaces them (a reload changed the
 * provider). 0 or -ENOENT. */
int sched_limit_destination(struct sched *s, const char *source_address, const char *route,
                            int max_connections, int max_per_minute);

/* [retry.reputation] move_source: an item that falls due (or waits) while
 * its destination (A, route) is suspended for reputation or rate limit goes
 * to (B, route) instead, B the next address of cfg->source_addresses whose
 * destination for that route is not paused, when may_move (set here; NULL:
 * any item) says the item may leave from another address — the daemon
 * refuses messages whose recipients were greylisted (greylist,
 * unknown_temp). sched_item_source then names B. */
void sched_set_mover(struct sched *s, bool (*may_move)(void *item_userdata, void *arg), void *arg);
/* The address it would move to now, or NULL (move_source off, its
 * destination not suspended for reputation / rate limit, may_move refuses,
 * no other address free). */
const char *sched_move_target(struct sched *s, const struct sched_item *it, int64_t now);

/* ---- admin actions ---- */

/* Make the item due now (tarryq -i). A suspended destination stays
 * suspended: resume it to force. -EINVAL when in flight (already trying). */
int sched_retry_now(struct sched *s, struct sched_item *it, int64_t now_us);

/* Make the item due now and let it start although its destination is
 * suspended or backing off (tarryq -i --force); the concurrency limit still
 * holds, and the pause stays for every other item. -EINVAL when in flight. */
int sched_force_now(struct sched *s, struct sched_item *it, int64_t now_us);

/* Would the item wait for its destination's pause (suspended or backing
 * off, and not forced)? */
bool sched_item_held_back(struct sched *s, const struct sched_item *it, int64_t now_us);

/* Every waiting item due now and every back-off (overload/routing) lifted;
 * reputation/rate-limit suspensions stay (tarryq -f). O(n), no re-sort.
 * Returns the number of items made due. */
size_t sched_flush(struct sched *s, int64_t now_us);

/* End the suspension/back-off of route (for one source address, or every
 * source when source_address is NULL) now, at full concurrency. Returns
 * the number of destinations resumed, -ENOENT when none is known. */
int sched_resume_destination(struct sched *s, const char *route, const char *source_address,
                             int64_t now_us);

/* ---- status ---- */

enum sched_dest_state {
        SCHED_DEST_OK,
        SCHED_DEST_SUSPENDED, /* reputation / rate_limit: no attempts until `until` */
        SCHED_DEST_THROTTLED, /* resumed at reduced concurrency, raised on success */
        SCHED_DEST_BACKOFF,   /* overload / routing: no attempts until `until` */
};

struct sched_dest_info {
        const char *route;
        const char *source_address; /* "" when none */
        enum sched_dest_state state;
        int64_t until_us; /* end of suspension/back-off; 0 when none */
        int concurrency;  /* current limit */
        int in_flight;
        size_t queued;              /* items for it: waiting, parked or in flight */
        const char *last_reply;     /* latest deferral's text, or NULL */
        int last_class;             /* its class, -1 when none */
        int64_t learned_greylist_s; /* estimate: -1 when nothing learned (or forgotten) */
        int64_t learned_lower_s;    /* the bracket behind it: highest refused age, 0: none */
        int64_t learned_upper_s;    /* lowest accepted age, -1: none */
        int pause_class;            /* class that paused it (enum reply_class), -1: none */
        int64_t learned_at_us;      /* when the bracket was learned, 0: nothing fresh */
};

/* Is destination (source_address, route) paused at now_us? Returns
 * SCHED_WHY_DEST_SUSPENDED or SCHED_WHY_DEST_BACKOFF and its end in *until_us,
 * or SCHED_WHY_NONE (unknown destination, or not paused). */
enum sched_why sched_destination_pause(struct sched *s, const char *source_address,
                                       const char *route, int64_t now_us, int64_t *until_us);

/* "ok", "suspended", "throttled", "backoff". */
const char *sched_dest_state_name(enum sched_dest_state st);

/* Call cb for every known destination (strings valid during the call only).
 * A non-zero return stops the walk and is returned. */
int sched_foreach_destination(struct sched *s, int64_t now_us,
                              int (*cb)(const struct sched_dest_info *d, void *userdata),
                              void *userdata);

/* ---- sharing with other nodes (cluster/, docs/fleet.md) ---- */

/* A destination pause as other nodes learn it: (source, route) is the
 * destination key, state SCHED_DEST_SUSPENDED or SCHED_DEST_BACKOFF. */
struct sched_shared_pause {
        const char *source; /* "" when none */
        const char *route;
        enum sched_dest_state state;
        int64_t until_us;
        int cls; /* enum reply_class behind it, -1: none (a rule action) */
};

/* A learned greylist window (the bracket (lower_s, upper_s]) of a route:
 * per destination host, whatever the source address. */
struct sched_shared_window {
        const char *route;
        int64_t upper_s;       /* known-good age, > 0 */
        int64_t lower_s;       /* highest refused age below it, 0: none */
        int64_t learned_at_us; /* when it was learned */
};

/* Told whenever this node pauses a destination (or lengthens a pause), or
 * learns a greylist window that differs from what it knew; not for what was
 * applied with sched_apply_shared_*, so nothing echoes. Either may be NULL. */
struct sched_share {
        void (*pause_set)(void *userdata, const struct sched_shared_pause *p);
        void (*window_set)(void *userdata, const struct sched_shared_window *w);
        /* A rule's max_per_minute paces (source, route) to one start per
         * gap_us: this node just started one; ask for its next slot (answer
         * with sched_shared_pace_slot). true: asked; false: no fleet now
         * (the local gap applies). May be NULL. */
        bool (*pace_reserve)(void *userdata, const char *source, const char *route, int64_t gap_us);
        void *userdata;
};

/* Install (or with NULL remove) the sharing callbacks. */
void sched_set_share(struct sched *s, const struct sched_share *share);

/* Apply a pause another node learned: the destination is paused until
 * p->until_us unless it is already paused as long. Validated by the caller
 * (cluster/); a pause already over, a state that is not a pause or an empty
 * route is -EINVAL. 1 when it changed something, 0 when not, -ENOMEM. */
int sched_apply_shared_pause(struct sched *s, const struct sched_shared_pause *p, int64_t now_us);

/* The answer to pace_reserve: this node's next start on (source, route) is
 * not before slot_us; slot_us < 0: no answer (the local gap from now
 * applies). Nothing when the destination is no longer paced. */
void sched_shared_pace_slot(struct sched *s, const char *source, const char *route, int64_t slot_us,
                            int64_t now_us);

/* Take a greylist window another node learned for (source, w->route) unless
 * what is known here is as recent: the next message's first retry aims at
 * it. -EINVAL for a bracket that is not one (upper_s <= 0, lower_s outside
 * [0, upper_s)) or older than greylist_memory; else 1 (taken) or 0, -ENOMEM. */
int sched_apply_shared_window(struct sched *s, const char *source,
                              const struct sched_shared_window *w, int64_t now_us);

/* Counters for status/metrics. */
struct sched_stats {
        size_t items;   /* all items */
        size_t waiting; /* in the heap */
        size_t parked;  /* held by a suspended / full destination */
        size_t in_flight;
        size_t destinations;
        size_t suspended; /* destinations suspended or backing off */
};
void sched_get_stats(const struct sched *s, struct sched_stats *out);

#endif
