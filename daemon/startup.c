/* daemon/startup.c — a big queue ready in about a second: the index snapshot
 * and envelopes read in idle batches.
 *
 * At start, active/ and hold/ are listed (readdir only, on a thread of their
 * own) while state/index.snap is read in one go and every record in it is
 * indexed and scheduled, without its envelope; the two are then matched in
 * ID order before the loop runs: a record whose folder is gone (or that
 * names the other folder) is dropped; a listed message without a record (new
 * since the snapshot, or no usable snapshot: missing, corrupt, written under
 * another configuration) is read from its envelope after READY=1, a batch
 * at a time at idle priority, so due mail goes out and the status endpoint
 * answers while the rest loads. incoming/ is picked up the same way.
 *
 * A record is only advice: the envelope is read before every attempt, so a
 * stale one (a crash after the last snapshot) can only make an attempt early
 * (deliver.c plans the message again when the record's destination no
 * longer matches). It can never hide a message: the folders decide what is
 * queued, the snapshot only how it is scheduled.
 *
 * The snapshot is written at a clean stop (renamed into place without an
 * fsync: a stop waits for no disk, and the checksum refuses a torn file) and
 * every [main] snapshot_interval (serialised on the loop in slices, written
 * and fsynced by the remover's thread).
 */
#include "common/cleanup.h"
#include "common/fileio.h"
#include "daemon/log.h"
#include "daemon/message.h"
#include "daemon/tarryd.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

/* Messages read per idle dispatch: small enough that the loop answers
 * between batches, big enough that the per-dispatch cost is noise. */
#define LOAD_BATCH 128
/* A snapshot larger than this is refused (1M messages take ~80 MB). */
#define SNAPSHOT_MAX ((size_t)1 << 31)

/* A listed message: its ID as the number its 16 hex digits spell (sorts as
 * the ID) and its folder. 16 bytes: a million sort in a few tens of ms. */
struct pending {
        uint64_t key;
        uint8_t dir; /* enum queue_dir */
};

struct startup {
        struct pending *list; /* listed, not yet indexed */
        size_t n, cap, next;
        size_t from_snapshot;
        sd_event_source *loader;
        sd_event_source *timer;
        uint64_t fingerprint;
        struct snap_run *run; /* a periodic snapshot being serialised, a slice at a time */
};

static int push(struct startup *s, const char *id, enum queue_dir dir)
{
        if (s->n == s->cap) {
                size_t cap = s->cap ? 2 * s->cap : 4096;
                struct pending *l = realloc(s->list, cap * sizeof(*l));
                if (!l)
                        return -ENOMEM;
                s->list = l;
                s->cap = cap;
        }
        if (!msgindex_id_key(id, &s->list[s->n].key))
                return 0; /* never: queue_scan lists queue IDs only */
        s->list[s->n++].dir = (uint8_t)dir;
        return 0;
}

static int list_cb(const char *id, void *userdata)
{
        void **a = userdata;
        return push(a[0], id, (enum queue_dir)(intptr_t)a[1]);
}

static int cmp_pending(const void *a, const void *b)
{
        const struct pending *x = a, *y = b;
        if (x->key != y->key)
                return x->key < y->key ? -1 : 1;
        return (int)x->dir - (int)y->dir;
}

/* Sort n entries by (key, dir): an LSD radix sort, a byte a pass, stable,
 * the folder first; a pass whose byte is the same in every entry (the high
 * bytes of IDs written close together) is skipped. qsort took 0.29 s of a
 * 1.4 s start at a million messages; this takes a few tens of ms. Falls
 * back to qsort when the scratch copy cannot be had. */
static void sort_pending(struct pending *l, size_t n)
{
        if (n < 2)
                return;
        struct pending *tmp = malloc(n * sizeof(*tmp));
        if (!tmp) {
                qsort(l, n, sizeof(*l), cmp_pending);
                return;
        }
        size_t(*count)[256] = calloc(9, sizeof(*count));
        if (!count) {
                free(tmp);
                qsort(l, n, sizeof(*l), cmp_pending);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                count[0][l[i].dir]++;
                for (unsigned b = 0; b < 8; b++)
                        count[b + 1][(l[i].key >> (8 * b)) & 0xff]++;
        }
        struct pending *from = l, *to = tmp;
        for (unsigned pass = 0; pass < 9; pass++) {
                size_t *c = count[pass], sum = 0;
                bool one = false;
                for (unsigned v = 0; v < 256 && !one; v++)
                        one = c[v] == n;
                if (one)
                        continue;
                for (unsigned v = 0; v < 256; v++) {
                        size_t k = c[v];
                        c[v] = sum;
                        sum += k;
                }
                for (size_t i = 0; i < n; i++) {
                        unsigned v = pass == 0 ? from[i].dir
                                               : (unsigned)(from[i].key >> (8 * (pass - 1))) & 0xff;
                        to[c[v]++] = from[i];
                }
                struct pending *t = from;
                from = to;
                to = t;
        }
        if (from != l)
                memcpy(l, from, n * sizeof(*l));
        free(count);
        free(tmp);
}

/* ---- listing the folders, beside the snapshot ---- */

/* active/ and hold/ are listed and sorted on a thread of their own while
 * the loop's thread reads and applies the snapshot: at a million messages
 * the readdir (0.3 s warm, seconds cold) and the snapshot (0.5 s) overlap
 * on two cores, and so do the two reads of a cold disk. The thread owns
 * s->list until it is joined and touches nothing else but the folders. */
struct lister {
        struct queue *queue;
        struct startup *s;
        int r;
        int64_t took_us;
};

static void *list_folders(void *arg)
{
        struct lister *l = arg;
        int64_t t0 = now_monotonic_us();
        void *a[2] = {l->s, (void *)(intptr_t)QUEUE_ACTIVE};
        l->r = queue_scan(l->queue, QUEUE_ACTIVE, list_cb, a);
        a[1] = (void *)(intptr_t)QUEUE_HOLD;
        if (l->r == 0)
                l->r = queue_scan(l->queue, QUEUE_HOLD, list_cb, a);
        if (l->r == 0)
                sort_pending(l->s->list, l->s->n);
        l->took_us = now_monotonic_us() - t0;
        return NULL;
}

/* ---- the snapshot ---- */

/* Every record is indexed and scheduled as it comes, before the listing is
 * known (nothing can run on them: the loop has not started); reconcile()
 * then drops the records whose folder is gone. */
static int apply_record(const struct queue_snap_rec *r, void *userdata)
{
        struct tarryd *d = userdata;
        if (r->dir == QUEUE_ACTIVE && r->n_works == 0)
                return 0; /* nothing scheduled: finishing it needs its envelope */
        struct msg *m;
        if (message_index_snap(d, r, &m) < 0)
                return 0; /* a duplicate, or no memory: read from its envelope instead */
        if (r->dir == QUEUE_ACTIVE && deliver_schedule_from(d, m, r) < 0) {
                message_free(d, m);
                return 0;
        }
        d->startup->from_snapshot++;
        return 0;
}

static void read_snapshot(struct tarryd *d, struct startup *s)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = queue_state_read(d->queue, QUEUE_SNAP_FILE, SNAPSHOT_MAX, &buf, &len);
        if (r == -ENOENT) {
                log_info("start-up: no index snapshot; reading every envelope");
                return;
        }
        if (r < 0) {
                log_error("start-up: cannot read state/%s: %s; reading every envelope",
                          QUEUE_SNAP_FILE, strerror(-r));
                return;
        }
        msgindex_reserve(d->index, queue_snap_count(buf, len));
        const char *why = "";
        r = queue_snap_parse(buf, len, s->fingerprint, apply_record, d, &why);
        if (r == -ESTALE)
                log_info("start-up: state/%s was %s; reading every envelope", QUEUE_SNAP_FILE, why);
        else if (r < 0)
                log_error("start-up: state/%s is unusable (%s); reading the envelopes it "
                          "does not cover",
                          QUEUE_SNAP_FILE, why);
}

/* ---- matching the two ---- */

#define DROP_BATCH 256

struct match {
        struct startup *s;
        size_t at, kept;              /* s->list: where the merge is, how many still to read */
        char last[QUEUE_ID_LEN + 1];  /* the last message matched: the walk goes on after it */
        struct msg *drop[DROP_BATCH]; /* indexed from a record, no such folder listed */
        size_t n_drop;
};

/* One indexed message (they come in ID order, as the list): the listed
 * entries before it have no record and stay to be read; the one with its
 * ID and folder is taken; without one, its folder is gone or it moved
 * (then read from the listed entry, if any), and the record is dropped.
 * A full drop batch stops the walk: the index is not changed under it. */
static int match_one(struct msg *m, void *userdata)
{
        struct match *mt = userdata;
        struct startup *s = mt->s;
        uint64_t key = 0;
        msgindex_id_key(m->id, &key); /* an indexed ID is a queue ID */
        memcpy(mt->last, m->id, sizeof(mt->last));
        while (mt->at < s->n && s->list[mt->at].key < key)
                s->list[mt->kept++] = s->list[mt->at++];
        bool found = false;
        for (; mt->at < s->n && s->list[mt->at].key == key; mt->at++) {
                if (!found && s->list[mt->at].dir == (uint8_t)m->dir)
                        found = true;
                else
                        s->list[mt->kept++] = s->list[mt->at];
        }
        if (!found)
                mt->drop[mt->n_drop++] = m;
        return mt->n_drop == DROP_BATCH;
}

/* Leaves in s->list the listed messages without a usable record, in ID
 * order; drops the records without a listed folder. Returns how many. */
static size_t reconcile(struct tarryd *d, struct startup *s)
{
        struct match mt = {.s = s};
        size_t dropped = 0;
        bool more = msgindex_count(d->index) > 0;
        while (more) {
                more = msgindex_foreach_after(d->index, mt.last[0] ? mt.last : NULL, match_one,
                                              &mt) != 0;
                for (size_t i = 0; i < mt.n_drop; i++)
                        message_free(d, mt.drop[i]);
                dropped += mt.n_drop;
                mt.n_drop = 0;
        }
        while (mt.at < s->n)
                s->list[mt.kept++] = s->list[mt.at++];
        s->n = mt.kept;
        s->from_snapshot -= dropped;
        return dropped;
}

/* ---- reading the rest at idle priority ---- */

static void loaded_all(struct tarryd *d, struct startup *s)
{
        log_info("start-up: every queued message read (%zu from the snapshot, %zu from their "
                 "envelopes); %zu queued",
                 s->from_snapshot, s->n, msgindex_count(d->index));
        sd_event_source_set_enabled(s->loader, SD_EVENT_OFF);
        free(s->list);
        s->list = NULL;
        s->n = s->cap = s->next = 0;
        control_update_status_line(d);
}

static int on_load(sd_event_source *src, void *userdata)
{
        (void)src;
        struct tarryd *d = userdata;
        struct startup *s = d->startup;
        size_t end = s->next + LOAD_BATCH < s->n ? s->next + LOAD_BATCH : s->n;
        for (; s->next < end; s->next++) {
                const struct pending *p = &s->list[s->next];
                char id[QUEUE_ID_LEN + 1];
                msgindex_key_id(p->key, id);
                if (p->dir == QUEUE_INCOMING) {
                        pickup_incoming_one(d, id);
                        continue;
                }
                if (msgindex_get(d->index, id))
                        continue;
                int r = pickup_index_message(d, (enum queue_dir)p->dir, id);
                if (r < 0)
                        log_error("%s: cannot load: %s", id, strerror(-r));
        }
        if (s->next / STARTUP_NOTE_EVERY != (end - LOAD_BATCH) / STARTUP_NOTE_EVERY ||
            s->next >= s->n)
                sd_notifyf(0, "STATUS=reading the queue: %zu of %zu message(s) read", s->next,
                           s->n);
        if (s->next >= s->n)
                loaded_all(d, s);
        deliver_run_due(d);
        return 0;
}

static uint64_t config_fingerprint(const char *path)
{
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        if (file_read_all_at(AT_FDCWD, path, 1 << 24, &text, &len) < 0)
                return 0; /* no usable snapshot then: every envelope is read */
        return queue_snap_fingerprint(text, len) | 1;
}

static void snapshot_start(struct tarryd *d);

static int on_snapshot_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
        (void)usec;
        struct tarryd *d = userdata;
        snapshot_start(d);
        if (d->cfg->snapshot_every_s > 0) /* a reload may have changed it */
                sd_event_source_set_time_relative(src, d->cfg->snapshot_every_s * 1000000);
        return 0;
}

int startup_begin(struct tarryd *d)
{
        struct startup *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        d->startup = s;
        s->fingerprint = config_fingerprint(d->config_path);
        int64_t t0 = now_monotonic_us();
        struct lister l = {.queue = d->queue, .s = s};
        pthread_t th;
        bool threaded = pthread_create(&th, NULL, list_folders, &l) == 0;
        if (!threaded)
                list_folders(&l);
        if (s->fingerprint)
                read_snapshot(d, s);
        int64_t t1 = now_monotonic_us();
        if (threaded)
                pthread_join(th, NULL);
        if (l.r < 0)
                return l.r;
        int64_t t2 = now_monotonic_us();
        size_t listed = s->n, applied = s->from_snapshot;
        size_t dropped = reconcile(d, s);
        deliver_arm_timer(d); /* once, not per record */
        log_info("start-up: %zu message(s) listed and sorted in %.3f s; beside that, %zu "
                 "record(s) of state/%s applied in %.3f s; matched in %.3f s: %zu record(s) "
                 "dropped (folder gone or moved), %zu message(s) without one",
                 listed, (double)l.took_us / 1e6, applied, QUEUE_SNAP_FILE, (double)(t1 - t0) / 1e6,
                 (double)(now_monotonic_us() - t2) / 1e6, dropped, s->n);
        void *a[2] = {s, (void *)(intptr_t)QUEUE_INCOMING};
        /* then new mail: incoming/, oldest first as the IDs sort */
        size_t before = s->n;
        int r = queue_scan(d->queue, QUEUE_INCOMING, list_cb, a);
        if (r < 0) {
                log_error("cannot read incoming/: %s; will retry", strerror(-r));
                pickup_retry_later(d);
        }
        if (s->n > before)
                sort_pending(s->list + before, s->n - before);
        r = sd_event_add_defer(d->loop, &s->loader, on_load, d);
        if (r >= 0)
                r = sd_event_source_set_priority(s->loader, SD_EVENT_PRIORITY_IDLE);
        if (r >= 0) /* a defer source is one-shot unless told otherwise */
                r = sd_event_source_set_enabled(s->loader, s->n ? SD_EVENT_ON : SD_EVENT_OFF);
        if (r >= 0 && d->cfg->snapshot_every_s > 0)
                r = sd_event_add_time_relative(d->loop, &s->timer, CLOCK_MONOTONIC,
                                               d->cfg->snapshot_every_s * 1000000, 1000000,
                                               on_snapshot_timer, d);
        if (r >= 0 && s->timer)
                r = sd_event_source_set_enabled(s->timer, SD_EVENT_ON);
        return r < 0 ? r : 0;
}

size_t startup_unread(const struct tarryd *d)
{
        return d->startup ? d->startup->n - d->startup->next : 0;
}

size_t startup_from_snapshot(const struct tarryd *d)
{
        return d->startup ? d->startup->from_snapshot : 0;
}

/* ---- writing it ----
 *
 * At a clean stop in one go. Every [main] snapshot_interval in slices, one per
 * loop iteration (a defer source), of at most SNAP_SLICE_RECORDS records
 * or SNAP_SLICE_US, in ID order from a cursor (the last ID written): at a
 * million queued messages the whole serialisation holds the loop for
 * hundreds of milliseconds, and /status, deliveries and timers would wait
 * for it (docs/benchmarks.md). A message that arrives meanwhile with an ID
 * above the cursor is written too; one that leaves after its record was
 * written leaves a stale record, dropped at start (its folder is gone); one
 * whose ID sorts below the cursor is read from its envelope at start. The
 * snapshot is advice either way ("Start-up" in docs/architecture.md). */

#define SNAP_SLICE_RECORDS 4096
#define SNAP_SLICE_US      2000

struct collect {
        struct queue_snap_writer *w;
        struct queue_snap_rec rec;
        char after[QUEUE_ID_LEN + 1]; /* the last ID visited, "": none yet */
        size_t left;                  /* records this slice may still take */
        int64_t until_us;             /* CLOCK_MONOTONIC end of this slice, 0: none */
};

struct snap_run {
        struct collect c;
        sd_event_source *slicer;
};

static int add_cb(struct msg *m, void *userdata)
{
        struct collect *c = userdata;
        memcpy(c->after, m->id, sizeof(c->after));
        struct queue_snap_rec *r = &c->rec;
        message_snap_fields(m, r);
        r->n_works = 0;
        bool whole = true;
        for (struct work *w = m->works; w; w = w->next) {
                if (r->n_works == QUEUE_SNAP_WORKS_MAX) {
                        whole = false; /* read from its envelope at the next start */
                        break;
                }
                int64_t due = sched_item_due(w->it);
                r->works[r->n_works].due_us = due > 0 ? due : 0; /* in flight: at once */
                snprintf(r->works[r->n_works].destination, sizeof(r->works[0].destination), "%s",
                         deliver_work_route(w));
                snprintf(r->works[r->n_works].source, sizeof(r->works[0].source), "%s",
                         sched_item_source(w->it));
                r->n_works++;
        }
        if (whole)
                queue_snap_add(c->w, r); /* -EINVAL: left out, read from its envelope */
        if (c->left && --c->left == 0)
                return 1;
        if (c->until_us && c->left % 256 == 0 && now_monotonic_us() >= c->until_us)
                return 1;
        return 0;
}

static void snapshot_end(struct startup *s)
{
        if (!s->run)
                return;
        sd_event_source_disable_unref(s->run->slicer);
        queue_snap_abort(s->run->c.w);
        free(s->run);
        s->run = NULL;
}

static int on_slice(sd_event_source *src, void *userdata)
{
        (void)src;
        struct tarryd *d = userdata;
        struct collect *c = &d->startup->run->c;
        c->left = SNAP_SLICE_RECORDS;
        c->until_us = now_monotonic_us() + SNAP_SLICE_US;
        if (msgindex_foreach_after(d->index, c->after, add_cb, c) != 0)
                return 0; /* more at the next iteration */
        char *buf;
        size_t len;
        int r = queue_snap_finish(c->w, &buf, &len);
        c->w = NULL; /* finished: nothing to abort */
        snapshot_end(d->startup);
        if (r < 0)
                log_error("cannot write state/%s: %s", QUEUE_SNAP_FILE, strerror(-r));
        else if (d->remover)
                remover_write_state(d->remover, QUEUE_SNAP_FILE, buf, len);
        else
                free(buf);
        return 0;
}

/* The periodic snapshot, in slices (one at a time: a run still going when
 * the timer comes again goes on). */
static void snapshot_start(struct tarryd *d)
{
        struct startup *s = d->startup;
        if (!s || !s->fingerprint || s->run)
                return;
        struct snap_run *run = calloc(1, sizeof(*run));
        if (!run)
                return;
        int r = queue_snap_begin(s->fingerprint, msgindex_count(d->index), &run->c.w);
        if (r >= 0)
                r = sd_event_add_defer(d->loop, &run->slicer, on_slice, d);
        /* below the loop's other sources: a defer source stays pending, and
         * among equals the oldest pending one wins, so at their priority the
         * slices alone would run (measured: /status waited 400-650 ms) */
        if (r >= 0)
                r = sd_event_source_set_priority(run->slicer, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r >= 0) /* a defer source is one-shot unless told otherwise */
                r = sd_event_source_set_enabled(run->slicer, SD_EVENT_ON);
        s->run = run;
        if (r < 0) {
                log_error("cannot write state/%s: %s", QUEUE_SNAP_FILE, strerror(-r));
                snapshot_end(s);
        }
}

int startup_write_snapshot(struct tarryd *d)
{
        if (!d->startup || !d->startup->fingerprint)
                return 0;
        snapshot_end(d->startup); /* a periodic one under way: this one replaces it */
        struct collect c = {0};
        int r = queue_snap_begin(d->startup->fingerprint, msgindex_count(d->index), &c.w);
        if (r < 0)
                return r;
        msgindex_foreach_after(d->index, NULL, add_cb, &c); /* in ID order: read back as appends */
        char *buf;
        size_t len;
        if ((r = queue_snap_finish(c.w, &buf, &len)) < 0)
                return r;
        r = queue_state_replace(d->queue, QUEUE_SNAP_FILE, buf, len); /* a stop waits for no disk */
        free(buf);
        if (r < 0)
                log_error("cannot write state/%s: %s", QUEUE_SNAP_FILE, strerror(-r));
        return r;
}

void startup_free(struct tarryd *d)
{
        struct startup *s = d->startup;
        if (!s)
                return;
        snapshot_end(s);
        sd_event_source_disable_unref(s->loader);
        sd_event_source_disable_unref(s->timer);
        free(s->list);
        free(s);
        d->startup = NULL;
}
