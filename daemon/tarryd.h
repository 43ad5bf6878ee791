/* daemon/tarryd.h — the state of one tarryd process, shared by daemon/ files.
 *
 * main.c    start-up, signals, reload, sd_notify, shutdown
 * message.c one message's lifecycle: its index record and summary, hold,
 *           release, quarantine, removal (message.h)
 * pickup.c  inotify on incoming/, start-up scan, loading messages into the index
 * deliver.c turning due scheduler items into smtpc attempts, and outcomes into
 *           envelope updates, log records, DSNs and scheduler decisions
 * control.c the status endpoint's provider: JSON views and admin actions
 * remover.c deleting removed messages' files on a thread, in batches
 * startup.c the index snapshot; reading the queue at idle priority after READY
 */
#ifndef TARRY_DAEMON_TARRYD_H
#define TARRY_DAEMON_TARRYD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "bounce/bounce.h"
#include "cluster/cluster.h"
#include "config/config.h"
#include "daemon/message.h"
#include "daemon/msgindex.h"
#include "dkim/dkim.h"
#include "daemon/site.h"
#include "queue/queue.h"
#include "scheduler/diagnose.h"
#include "scheduler/scheduler.h"
#include "smtpc/smtpc.h"
#include "status/status.h"

/* A spool write that failed (a full disk…) is tried again after this. */
#define SPOOL_RETRY_US (5 * 1000000LL)
/* While the spool is read at start, every this many messages systemd is
 * asked for STARTUP_EXTEND_US more (a big queue takes longer than the unit's
 * TimeoutStartSec; cold, ~10,000 messages take ~15 s) and STATUS= says how far. */
#define STARTUP_NOTE_EVERY 10000
#define STARTUP_EXTEND_US  (90 * 1000000ULL)
/* Abandoned drafts in tmp/ are removed at start, on reload and this often. */
#define TMP_SWEEP_US (3600 * 1000000ULL)

/* How many messages a folder tarryd does not own alone holds (incoming/,
 * corrupt/), as /status last counted them (control.c). */
struct dir_count {
        struct timespec mtime; /* the folder's when counted */
        int64_t counted_us;    /* CLOCK_REALTIME of the count, 0: never */
        size_t n;
};

struct tarryd {
        sd_event *loop;
        char *config_path;
        struct tarry_config *cfg;
        struct queue *queue;
        struct msgindex *index;
        struct message_tally tally;    /* /status's counts of the index (message.c) */
        struct site_tally *site_tally; /* /status's per-site counts (deliver.c keeps them) */
        struct smtpc_pool *pool; /* delivery workers: curl's blocking waits stay out of this loop */
        struct remover *remover; /* deletes removed messages' files on a thread of its own */
        struct startup *startup; /* the index snapshot, and what is still to be read */
        struct sched *sched;
        struct sched_classifier *classifier;
        struct diag *diag; /* diagnoses of deferrals that do not clear (diagnoses.c) */
        struct status_server *status;
        struct status_metrics *metrics;
        struct dsn_policy dsn_policy;
        struct dkim_signer *dkim;         /* the keys of cfg's [dkim] rows */
        struct site_cache *sites;         /* recipient domain → site (MX set, provider) */
        struct site_waiter *site_waiters; /* messages waiting for a domain's MX set */
        size_t n_site_waiters, cap_site_waiters;
        struct cluster *cluster; /* [cluster] redis set: the fleet's shared state (fleet.c) */

        sd_event_source *incoming_watch;
        sd_event_source *due_timer;
        sd_event_source *status_timer;
        sd_event_source *retry_timer; /* one pending visit after spool write failures */

        uid_t uid; /* the user tarryd runs as (after dropping root) */
        int64_t status_line_us;
        struct dir_count n_incoming, n_corrupt_dir; /* for /status (control.c) */
        bool stopping;                              /* SIGTERM seen: start no new attempts */
        bool state_unsaved;     /* state/ (learned.json) could not be written: retry */
        bool pickup_failed;     /* incoming/ could not be picked up: rescan */
        bool sync_failing;      /* the last queue_sync failed (logged once) */
        bool starting;          /* reading the spool, before READY=1 */
        size_t n_read_at_start; /* messages indexed so far while starting */
        int64_t start_us;       /* CLOCK_REALTIME at start, for uptime */
        int inflight;           /* attempts running */

        /* counters for STATUS= and /status */
        uint64_t n_attempts, n_delivered, n_deferred, n_failed, n_dsn_sent;
        uint64_t n_corrupt;
        uint64_t n_spool_errors; /* spool reads and writes that failed */
};

/* pickup.c */
int pickup_start(struct tarryd *d);
int pickup_scan_incoming(struct tarryd *d);
/* Register a message already in active/ (or hold/) with the index and scheduler. */
int pickup_index_message(struct tarryd *d, enum queue_dir dir, const char *id);
/* After a failed pickup: rescan incoming/ (called by the retry timer). */
/* Take env in (cleanup/cleanup.h) unless its envelope already has the added
 * headers; indexing: also count its hops (reading the body: body_fd of
 * body_size bytes, or opened here when body_fd < 0) and log what was done.
 * In memory only: the result is the same every time. 0 or -errno. */
int pickup_take_in(struct tarryd *d, struct envelope *env, bool indexing, int body_fd,
                   uint64_t body_size);
/* The last step of taking env in, just before its first attempt: sign it
 * with the DKIM keys of its From: domain (dkim/dkim.h), the DKIM-Signature:
 * lines put ahead of env->headers, and record env->dkim. Nothing once
 * env->dkim is decided: retries send the signature made for the first
 * attempt. 0 or -errno (the body could not be read: try again later). The
 * body is read through body_fd (body_size bytes), or opened when it is < 0. */
int pickup_sign(struct tarryd *d, struct envelope *env, int body_fd, uint64_t body_size);
/* Start-up: one more message read; tells systemd now and then. */
void pickup_note_startup(struct tarryd *d);
void pickup_retry(struct tarryd *d);

/* Pick up incoming/id (start-up's idle batches). */
int pickup_incoming_one(struct tarryd *d, const char *id);
/* incoming/ could not be read: the retry timer rescans it. */
void pickup_retry_later(struct tarryd *d);

/* deliver.c */
/* A domain's MX set is known now (site_cache's ready callback): messages
 * that waited for it are scheduled by their site. */
void deliver_site_ready(void *userdata, const char *domain);
/* The scheduler's move_source question: may this item (a struct work)
 * leave from another source address? Not when a recipient was greylisted. */
bool deliver_may_move(void *item_userdata, void *arg);
/* Schedule m from a snapshot record's items, without its envelope; the
 * caller arms the due timer (deliver_arm_timer) once it has done them all. */
int deliver_schedule_from(struct tarryd *d, struct msg *m, const struct queue_snap_rec *r);
/* The route (next-hop key) of a work, as a snapshot records it; the
 * scheduler knows the work by its site. */
const char *deliver_work_route(const struct work *w);
/* Schedule every destination of m whose recipients are waiting. */
int deliver_schedule_message(struct tarryd *d, struct msg *m);
/* Re-arm the one timer at the scheduler's earliest due time. */
void deliver_arm_timer(struct tarryd *d);
/* Start whatever is due now (respecting stopping). */
void deliver_run_due(struct tarryd *d);
/* Forget a message (deleted, held): drop its scheduler items. */
void deliver_forget_message(struct tarryd *d, struct msg *m);
/* Something could not be written to the spool (or read): visit dirty
 * messages, unsaved state and failed pickups again in SPOOL_RETRY_US. One
 * timer, however many failures. */
void deliver_retry_later(struct tarryd *d);
/* Try once more to write every envelope whose newest state is only in memory
 * (the retry timer does this; main does it once more at shutdown). */
void deliver_write_dirty(struct tarryd *d);
/* Count a spool error of this kind (write, remove, dsn, read, state, pickup). */
void deliver_count_spool_error(struct tarryd *d, const char *kind);

/* remover.c */
struct remover;
int remover_new(struct tarryd *d, struct remover **out);
/* Take active/id out of the queue now (a rename into tmp/; or, for a message
 * file when *fd is open on it, an unlink, the fd taken over: *fd becomes -1);
 * its files are deleted, its blocks freed, on the remover's thread. 0 or a
 * negative errno (nothing done). fd may be NULL. */
int remover_remove(struct remover *rm, const char *id, int *fd);
/* Write state/name with buf (taken over, freed) on the thread; a newer
 * one not yet written replaces it. Failures are logged by the loop. */
int remover_write_state(struct remover *rm, const char *name, char *buf, size_t len);
/* Finish the batch under way, then stop the thread (what is left in tmp/ is
 * removed by recovery at the next start). */
void remover_free(struct remover *rm);

/* startup.c */
/* List active/ and hold/, index what state/index.snap covers, and queue the
 * rest (and incoming/) to be read at idle priority once the loop runs. */
int startup_begin(struct tarryd *d);
/* Messages listed at start and not yet read. */
size_t startup_unread(const struct tarryd *d);
size_t startup_from_snapshot(const struct tarryd *d);
/* Write state/index.snap now, on the loop (a clean stop; the periodic one is
 * sliced and written by the remover's thread, see [main] snapshot_interval). */
int startup_write_snapshot(struct tarryd *d);
void startup_free(struct tarryd *d);

/* diagnoses.c: scheduler/diagnose.h fed with outcomes, and what it raised
 * shown in the log, /status and the metrics. */
struct diagnoses_where {
        char source[SMTPC_DEST_MAX];
        char route[SMTPC_DEST_MAX];
        int64_t learned_s; /* greylist delay learned there, -1: none */
};
int diagnoses_start(struct tarryd *d);
void diagnoses_reload(struct tarryd *d, const struct tarry_config *cfg);
/* Before sched_on_result (which may free the item): the destination. */
void diagnoses_where(struct tarryd *d, const struct sched_item *it, int64_t now,
                     struct diagnoses_where *out);
/* One recipient's outcome, as the scheduler decided it. */
void diagnoses_note(struct tarryd *d, const struct diagnoses_where *where, const char *queue_id,
                    const struct smtpc_result *res, const struct sched_rcpt_result *rr,
                    const struct sched_decision *dec, int64_t now);
/* /status "diagnoses": the list (FULL) or counts per code (AGGREGATE). */
json_t *diagnoses_json(struct tarryd *d, enum status_view view);
void diagnoses_metrics(struct tarryd *d, struct status_metrics *mt);

/* fleet.c */
/* With [cluster] redis: connect (on the loop; never waits) and share the
 * scheduler's pauses. 0, or an exit code (EX_CONFIG) for a bad [cluster]. */
int fleet_start(struct tarryd *d);
/* [cluster] as --check sees it, without connecting: 0 or -EINVAL (err). */
int fleet_check(const struct tarry_config *cfg, char *err, size_t errlen);
void fleet_stop(struct tarryd *d);
/* After a reload (d->cfg is the new configuration, checked with
 * fleet_check): a changed [cluster] redis, node or prefix is applied by
 * leaving the old Redis and joining the new one. */
void fleet_reload(struct tarryd *d, const struct tarry_config *old);
/* A site's provider `connections` limit holds across the fleet as leases
 * (docs/fleet.md): fleet_start installs the scheduler's connection gate
 * (sched_set_conn_gate), which asks cluster/ for a lease before a start. */
/* An operator resumed route here (tarryq resume): the fleet resumes it too,
 * and the pauses stored in Redis for it are cancelled. */
void fleet_resumed(struct tarryd *d, const char *route);

/* control.c */
int control_start(struct tarryd *d);
void control_stop(struct tarryd *d);
/* Warn about status settings a reload cannot apply (they take effect at restart). */
void control_note_reload(const struct tarry_config *now, const struct tarry_config *next);
void control_note_transcript(const char *id, const char *text);
void control_update_status_line(struct tarryd *d);
/* This node's summary for the fleet view, as JSON into buf. 0 or -errno. */
int control_fleet_summary(struct tarryd *d, char *buf, size_t len);

#endif
