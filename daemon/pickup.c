/* daemon/pickup.c — new mail from incoming/ and maildrop/, and the queue at start-up.
 *
 * sendmail renames each committed message into incoming/; inotify tells us
 * at once (IN_MOVED_TO), and a full scan runs at start and after an inotify
 * queue overflow. Each message moves to active/ before it is indexed, so a
 * message is in exactly one folder and listed exactly once.
 *
 * Users who cannot write the spool submit through maildrop/ (queue.h): a
 * drop file is taken when its sendmail closes it (IN_CLOSE_WRITE), at start,
 * and by a rescan every MAILDROP_RESCAN_S (which also catches a writer whose
 * close was seen a moment before its lock went). Each drop file is untrusted:
 * queue_maildrop_take checks it and copies its records into incoming/, where
 * the watch above picks them up; the submitter is the file's owner, and
 * allow_sender_override is enforced again here.
 *
 * Taking a message in (cleanup/cleanup.h): when a message in active/ is
 * indexed and its envelope has no added headers yet, local recipients go to
 * adminaddr, the Received: header is made and the hop count checked (a loop
 * bounces at once). The result is a function of the envelope, the body and
 * the config (the Received: date is the arrival), so it is not written
 * here, which would cost an fsync per pickup: the envelope write after the
 * first attempt keeps it, and until then every load of the envelope
 * (pickup_take_in from deliver.c) derives the same again. The body file is
 * never touched.
 */
#include "cleanup/cleanup.h"
#include "common/cleanup.h"
#include "common/fileio.h"
#include "daemon/log.h"
#include "daemon/message.h"
#include "daemon/tarryd.h"

#include <systemd/sd-daemon.h>

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <stdio.h>
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/inotify.h>

/* Every recipient of a looping message bounced at pickup, as delivery logs it. */
static void log_loop(const struct envelope *env, const struct cleanup_result *res)
{
        for (size_t i = 0; i < env->n_rcpt; i++)
                if (env->rcpt[i].state == RCPT_FAILED)
                        log_record(LOG_INFO,
                                   &(struct log_fields){.queue_id = env->id,
                                                        .rcpt = env->rcpt[i].address,
                                                        .status = "bounced",
                                                        .dsn = "5.4.6"},
                                   "%s: to=<%s>, relay=none, delay=0, dsn=5.4.6, status=bounced "
                                   "(%s)",
                                   env->id, env->rcpt[i].address, res->loop_text);
}

int pickup_take_in(struct tarryd *d, struct envelope *env, bool indexing, int body_fd,
                   uint64_t body_size)
{
        if (env->headers)
                return 0;
        _cleanup_close_ int fd = -1;
        uint64_t size = body_size;
        int hops = 0, r = 0;
        if (indexing) {
                if (body_fd < 0)
                        r = queue_open_body(d->queue, QUEUE_ACTIVE, env->id, &fd, &size);
                if (r == 0)
                        r = cleanup_count_hops(body_fd < 0 ? fd : body_fd, size, &hops);
        }
        struct cleanup_result res;
        if (r == 0)
                r = cleanup_message(env, hops, &(struct cleanup_policy){d->cfg}, &res);
        if (r < 0)
                return r;
        if (indexing && res.n_rewritten > 0)
                log_info("%s: %zu local recipient(s) sent to adminaddr", env->id, res.n_rewritten);
        if (res.loop)
                log_loop(env, &res);
        return 0;
}

int pickup_sign(struct tarryd *d, struct envelope *env, int body_fd, uint64_t body_size)
{
        if (env->dkim != ENVELOPE_DKIM_UNDECIDED)
                return 0;
        if (dkim_signer_count(d->dkim) == 0) {
                env->dkim = ENVELOPE_DKIM_UNSIGNED;
                return 0;
        }
        _cleanup_close_ int fd = -1;
        uint64_t size = body_size;
        _cleanup_free_ char *sig = NULL;
        struct dkim_outcome out;
        int r = body_fd < 0 ? queue_open_body(d->queue, QUEUE_ACTIVE, env->id, &fd, &size) : 0;
        if (r == 0)
                r = dkim_sign_message(d->dkim, env->id, body_fd < 0 ? fd : body_fd, size,
                                      env->arrival_us / 1000000, &sig, &out);
        if (r == -EPROTO) { /* libopendkim refused this message: it goes out unsigned */
                log_warn("%s: cannot DKIM-sign the message (%s): sent unsigned", env->id,
                         out.domain[0] ? out.domain : "no From: domain");
                env->dkim = ENVELOPE_DKIM_UNSIGNED;
                return 0;
        }
        if (r < 0)
                return r;
        if (!sig) {
                env->dkim = ENVELOPE_DKIM_UNSIGNED;
                return 0;
        }
        char *headers = NULL;
        if (asprintf(&headers, "%s%s", sig, env->headers ? env->headers : "") < 0)
                return -ENOMEM;
        free(env->headers);
        env->headers = headers;
        env->dkim = ENVELOPE_DKIM_SIGNED;
        log_info("%s: DKIM-signed for %s (%zu signature%s)", env->id, out.domain, out.n_signed,
                 out.n_signed == 1 ? "" : "s");
        return 0;
}

/* Load id's envelope and index it; fresh: just picked up (log its arrival). */
static int index_message(struct tarryd *d, enum queue_dir dir, const char *id, bool fresh)
{
        struct envelope *env = NULL;
        const char *why = NULL;
        _cleanup_close_ int fd = -1; /* active/: the body, for the hop count */
        uint64_t size = 0;
        int r = dir == QUEUE_ACTIVE ? queue_load_body(d->queue, dir, id, &env, &fd, &size, &why)
                                    : queue_load(d->queue, dir, id, &env, &why);
        if (r == -EBADMSG) {
                message_quarantine(d, dir, id, why);
                struct msg *old = msgindex_get(d->index, id); /* released from hold */
                if (old && old->inflight == 0)
                        message_free(d, old);
                return 0;
        }
        if (r < 0)
                return r == -ENOENT ? 0 : r;

        if (fresh)
                log_record(LOG_INFO, &(struct log_fields){.queue_id = id},
                           "%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)", id, env->sender,
                           (unsigned long long)env->size, env->n_rcpt);
        struct msg *m;
        bool added;
        if ((r = message_index(d, dir, env, &m, &added)) < 0) {
                envelope_free(env);
                return r;
        }
        if (dir != QUEUE_ACTIVE) {
                envelope_free(env);
                return 0;
        }
        int taken = pickup_take_in(d, env, true, fd, size);
        if (taken < 0) {
                log_error("%s: cannot take the message in: %s", id, strerror(-taken));
                if (added) /* a new pickup goes back to incoming/ for a rescan; else it
                            * stays listed and is read again at the next start */
                        message_free(d, m);
                envelope_free(env);
                return taken;
        }
        message_attach_envelope(m, env);
        r = deliver_schedule_message(d, m);
        /* dirty: its newest state could not be written (a DSN owed on a full disk) */
        if (msgindex_get(d->index, id) == m)
                message_release_envelope(m);
        return r;
}

int pickup_index_message(struct tarryd *d, enum queue_dir dir, const char *id)
{
        return index_message(d, dir, id, false);
}

/* A pickup failed (a full disk, too many open files): the message stays in
 * incoming/, and the retry timer rescans it. */
void pickup_retry_later(struct tarryd *d)
{
        d->pickup_failed = true;
        deliver_count_spool_error(d, "pickup");
        deliver_retry_later(d);
}

int pickup_incoming_one(struct tarryd *d, const char *id)
{
        if (!queue_id_valid(id))
                return 0; /* not ours (an editor's temp file, say) */
        int r = queue_move(d->queue, id, QUEUE_INCOMING, QUEUE_ACTIVE);
        if (r == -ENOENT)
                return 0;
        if (r == -EBADMSG) {
                message_quarantine(d, QUEUE_INCOMING, id,
                                   "neither a message file nor a message folder (a link?)");
                return 0;
        }
        if (r < 0) {
                log_error("%s: cannot move from incoming/ to active/: %s; will retry", id,
                          strerror(-r));
                pickup_retry_later(d);
                return r;
        }
        r = index_message(d, QUEUE_ACTIVE, id, true);
        if (r < 0 && !msgindex_get(d->index, id)) {
                /* Not indexed, so nothing would ever deliver it: back to incoming/,
                 * where the rescan finds it again. */
                int back = queue_move(d->queue, id, QUEUE_ACTIVE, QUEUE_INCOMING);
                if (back < 0)
                        log_error("%s: cannot load the new message: %s; left in active/ for "
                                  "the next start (moving it back failed: %s)",
                                  id, strerror(-r), strerror(-back));
                else
                        log_error("%s: cannot load the new message: %s; will retry", id,
                                  strerror(-r));
                pickup_retry_later(d);
        }
        return r;
}

void pickup_note_startup(struct tarryd *d)
{
        if (!d->starting || ++d->n_read_at_start % STARTUP_NOTE_EVERY != 0)
                return;
        sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu\nSTATUS=starting: %zu message(s) read",
                   (unsigned long long)STARTUP_EXTEND_US, d->n_read_at_start);
        if (d->n_read_at_start % (10 * STARTUP_NOTE_EVERY) == 0)
                log_info("start-up: %zu message(s) read", d->n_read_at_start);
}

static int scan_cb(const char *id, void *userdata)
{
        pickup_incoming_one(userdata, id);
        pickup_note_startup(userdata);
        return 0;
}

int pickup_scan_incoming(struct tarryd *d)
{
        int r = queue_scan(d->queue, QUEUE_INCOMING, scan_cb, d);
        if (r < 0) {
                log_error("cannot read incoming/: %s; will retry", strerror(-r));
                pickup_retry_later(d);
        }
        deliver_run_due(d);
        return r;
}

void pickup_retry(struct tarryd *d)
{
        if (!d->pickup_failed)
                return;
        d->pickup_failed = false;
        pickup_scan_incoming(d);
}

static int on_incoming(sd_event_source *s, const struct inotify_event *ev, void *userdata)
{
        (void)s;
        struct tarryd *d = userdata;
        if (ev->mask & IN_Q_OVERFLOW) {
                log_warn("inotify queue overflow: rescanning incoming/");
                return pickup_scan_incoming(d);
        }
        if (ev->len > 0)
                pickup_incoming_one(d, ev->name);
        deliver_run_due(d);
        return 0;
}

/* ---- maildrop/ ---- */

#define MAILDROP_RESCAN_S 60
#define MAILDROP_RETRY_US (200 * 1000) /* a drop file closed but still locked: look again */

static sd_event_source *maildrop_timer; /* floating: the loop owns it */

/* Fill in the submitter's name and enforce allow_sender_override. */
static int check_drop(struct envelope *env, void *userdata, const char **why)
{
        struct tarryd *d = userdata;
        struct passwd *pw = getpwuid(env->uid);
        char num[32];
        snprintf(num, sizeof(num), "%u", (unsigned)env->uid);
        if (!(env->user = strdup(pw ? pw->pw_name : num)))
                return -ENOMEM;
        if (!cfg_sender_allowed(d->cfg, env->uid, pw ? pw->pw_name : NULL, env->sender)) {
                *why = "its owner may not set the envelope sender (allow_sender_override)";
                return -EPERM;
        }
        return 0;
}

static void note_corrupt_drop(struct tarryd *d, const char *name, const struct maildrop_result *res)
{
        d->n_corrupt++;
        if (d->metrics)
                status_counter_add(d->metrics, STATUS_M_SPOOL_ERRORS, STATUS_LABELS("corrupt"), 1);
        if (res->quarantine_error)
                log_error("maildrop/%s: refused (%s) and cannot move it to corrupt/: %s", name,
                          res->why ? res->why : "invalid", strerror(-res->quarantine_error));
        else
                log_error("maildrop/%s: refused (%s); %d message(s) before it queued; moved to "
                          "corrupt/maildrop-%s",
                          name, res->why ? res->why : "invalid", res->queued, name);
}

static void log_taken(const char *name, const struct maildrop_result *res)
{
        for (int i = 0; i < res->queued && i < (int)ELEMENTSOF(res->ids); i++)
                log_record(LOG_INFO, &(struct log_fields){.queue_id = res->ids[i]},
                           "%s: picked up from maildrop/%s", res->ids[i], name);
        if (res->already)
                log_info("maildrop/%s: %d message(s) queued before a restart; not queued again",
                         name, res->already);
        if (res->unfinished)
                log_warn("maildrop/%s: dropped a message its sendmail never finished", name);
}

/* Drop files whose take stopped half-way (a full disk): where to go on, so
 * the records already queued are not queued twice. A few are plenty; when
 * the table is full the oldest is forgotten (at-least-once, as after a crash). */
#define RESUMES 16
struct resume_slot {
        char name[MAILDROP_NAME_LEN + 1];
        struct maildrop_resume at;
};
static struct resume_slot resumes[RESUMES];
static unsigned resume_next;

static struct resume_slot *resume_find(const char *name)
{
        for (size_t i = 0; i < RESUMES; i++)
                if (resumes[i].name[0] && strcmp(resumes[i].name, name) == 0)
                        return &resumes[i];
        return NULL;
}

static struct resume_slot *resume_new(const char *name)
{
        if (strlen(name) != MAILDROP_NAME_LEN)
                return NULL;
        struct resume_slot *s = &resumes[resume_next++ % RESUMES];
        snprintf(s->name, sizeof(s->name), "%s", name);
        return s;
}

/* One step of a take: at most MAILDROP_BATCH records per loop iteration, so
 * a drop file of 20,000 messages does not hold the loop (status, deliveries,
 * the watchdog) for the whole of it. */
#define MAILDROP_BATCH 32

/* Take a batch of name: 0 (done, or nothing to do now), -EBUSY when the
 * writer still holds it, -EINPROGRESS when more is left for the next step,
 * -EAGAIN when it could not be taken now (a full disk…). */
static int take_drop(struct tarryd *d, const char *name)
{
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                return 0;
        struct maildrop_take_opts o = {
            .body_max = d->cfg->message_size_limit ? d->cfg->message_size_limit : UINT64_MAX,
            .max_messages = (uint64_t)d->cfg->maildrop_message_limit,
            .batch = MAILDROP_BATCH,
            .check = check_drop,
            .userdata = d,
        };
        struct maildrop_result res;
        struct maildrop_resume at = {0, 0, 0};
        struct resume_slot *slot = resume_find(name);
        if (slot)
                at = slot->at;
        int r = queue_maildrop_take_step(d->queue, name, &at, &o, &res);
        if (at.offset > 0 && (slot || (slot = resume_new(name))))
                slot->at = at;
        else if (slot)
                slot->name[0] = '\0';
        if (r == 0 || r == -EINPROGRESS)
                log_taken(name, &res);
        else if (r == -EBADMSG || r == -EPERM)
                note_corrupt_drop(d, name, &res);
        else if (r != -EBUSY && r != -ENOENT) {
                log_error("maildrop/%s: cannot take it: %s; will retry", name, strerror(-r));
                deliver_count_spool_error(d, "pickup");
                return -EAGAIN;
        }
        return r == -EBUSY || r == -EINPROGRESS ? r : 0;
}

/* Every drop file gets a step; -EINPROGRESS when some have more left. */
static int scan_maildrop(struct tarryd *d)
{
        int fd = openat(queue_maildrop_fd(d->queue), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *dir = fdopendir(fd);
        if (!dir) {
                close(fd);
                return -errno;
        }
        struct dirent *de;
        int r = 0;
        while ((de = readdir(dir))) {
                int t = take_drop(d, de->d_name);
                if (t == -EAGAIN)
                        r = -EAGAIN;
                else if (t == -EINPROGRESS && r == 0)
                        r = t;
        }
        closedir(dir);
        return r;
}

/* Rescan in usec, unless a rescan is already due sooner. */
static void rescan_maildrop_in(uint64_t usec)
{
        if (!maildrop_timer)
                return;
        int on = SD_EVENT_OFF;
        uint64_t due = 0, now = 0;
        if (sd_event_source_get_enabled(maildrop_timer, &on) >= 0 && on != SD_EVENT_OFF &&
            sd_event_source_get_time(maildrop_timer, &due) >= 0 &&
            sd_event_now(sd_event_source_get_event(maildrop_timer), CLOCK_MONOTONIC, &now) >= 0 &&
            due <= now + usec)
                return;
        if (sd_event_source_set_time_relative(maildrop_timer, usec) >= 0)
                sd_event_source_set_enabled(maildrop_timer, SD_EVENT_ONESHOT);
}

static int on_maildrop_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        (void)s, (void)usec;
        int r = scan_maildrop(userdata);
        if (r < 0 && r != -EAGAIN && r != -EINPROGRESS)
                log_error("cannot read maildrop/: %s", strerror(-r));
        rescan_maildrop_in(r == -EINPROGRESS ? 0
                           : r == -EAGAIN    ? (uint64_t)SPOOL_RETRY_US
                                             : MAILDROP_RESCAN_S * 1000000ULL);
        return 0;
}

static int on_maildrop(sd_event_source *s, const struct inotify_event *ev, void *userdata)
{
        (void)s;
        struct tarryd *d = userdata;
        if (ev->mask & IN_Q_OVERFLOW) {
                log_warn("inotify queue overflow: rescanning maildrop/");
                rescan_maildrop_in(0);
                return 0;
        }
        if (ev->len == 0)
                return 0;
        int r = take_drop(d, ev->name);
        if (r == -EINPROGRESS)
                rescan_maildrop_in(0); /* the rest after whatever else is waiting */
        else if (r == -EBUSY)
                rescan_maildrop_in(MAILDROP_RETRY_US);
        else if (r == -EAGAIN)
                rescan_maildrop_in(SPOOL_RETRY_US);
        return 0;
}

static int maildrop_start(struct tarryd *d)
{
        if (queue_maildrop_fd(d->queue) < 0)
                return 0; /* an older spool: submissions by its owner only */
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", d->cfg->spool_dir, QUEUE_MAILDROP_DIR);
        int r = sd_event_add_inotify(d->loop, NULL, path, IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR,
                                     on_maildrop, d);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(d->loop, &maildrop_timer, CLOCK_MONOTONIC,
                                       MAILDROP_RESCAN_S * 1000000ULL, 0, on_maildrop_timer, d);
        if (r < 0)
                return r;
        sd_event_source_set_floating(maildrop_timer, true);
        r = scan_maildrop(d);
        if (r == -EAGAIN || r == -EINPROGRESS) {
                rescan_maildrop_in(r == -EAGAIN ? SPOOL_RETRY_US : 0);
                return 0;
        }
        return r;
}

int pickup_start(struct tarryd *d)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", d->cfg->spool_dir, queue_dir_name(QUEUE_INCOMING));
        int r = sd_event_add_inotify(d->loop, &d->incoming_watch, path,
                                     IN_MOVED_TO | IN_CREATE | IN_ONLYDIR, on_incoming, d);
        if (r < 0)
                return r;
        if ((r = maildrop_start(d)) < 0) /* local users cannot submit; root still can */
                log_error("cannot watch %s/%s: %s", d->cfg->spool_dir, QUEUE_MAILDROP_DIR,
                          strerror(-r));
        return 0; /* what incoming/ held before the watch: startup.c's idle batches */
}
