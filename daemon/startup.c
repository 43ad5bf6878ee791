/* daemon/startup.c — a big queue ready in about a second: the index snapshot
 * applied, and envelopes read, in idle batches after READY.
 *
 * At start, active/ and hold/ are listed (readdir only, on a thread of their
 * own) while state/index.snap is read in one go and checked whole; its
 * records are gone through once, applying none but the ones due within a
 * minute (the listing then says whether their folders are there). After
 * READY=1 an idle-priority source, a batch at a time, so that due mail goes
 * out and the status endpoint answers meanwhile, reads the listed messages
 * after the snapshot's last record (new since it: the likeliest to be due)
 * and incoming/ from their envelopes, then merges the listing with the
 * records in ID order: a listed message with its record is indexed and
 * scheduled from the record, one without (or whose record names the other
 * folder) is read from its envelope, a record without a listed folder is
 * dropped. A missing, corrupt or foreign snapshot means every envelope is
 * read.
 *
 * A record is only advice: the envelope is read before every attempt, so a
 * stale one (a crash after the last snapshot) can only make an attempt early
 * (deliver.c plans the message again when the record's destination no
 * longer matches). It can never hide a message: the folders decide what is
 * queued, the snapshot only how it is scheduled.
 *
 * The snapshot is written at a clean stop (renamed into place without an
 * fsync: a stop waits for no disk, and the checksum refuses a torn file;
 * records the merge had not reached yet are written too) and every [main]
 * snapshot_interval once the start is done (serialised on the loop in
 * slices, written and fsynced by the remover's thread).
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

/* Envelopes read per idle dispatch: small enough that the loop answers
 * between batches, big enough that the per-dispatch cost is noise. */
#define LOAD_BATCH 128
/* Records applied per idle dispatch are bounded by time (about a microsecond
 * each; the clock is read every 256). */
#define LOAD_SLICE_US 2000
/* A snapshot larger than this is refused (1M messages take ~80 MB). */
#define SNAPSHOT_MAX ((size_t)1 << 31)
/* Records due this soon are applied before READY (at most EARLY_MAX, the
 * first in ID order); the others when the merge reaches them, which at a
 * million records takes about a second after READY. */
#define EARLY_HORIZON_US (60 * 1000000LL)
#define EARLY_MAX        4096
/* A listed entry whose record was applied before READY (pending.dir) */
#define PENDING_DONE 0x80

/* A listed message: its ID as the number its 16 hex digits spell (sorts as
 * the ID) and its folder. 16 bytes: a million sort in a few tens of ms. */
struct pending {
        uint64_t key;
        uint8_t dir; /* enum queue_dir, | PENDING_DONE */
};

struct startup {
        /* list[0..n_listed): active/ and hold/ in ID order, then incoming/'s.
         * Read in this order: list[tail..n) (the listed messages after the
         * snapshot's last record, then incoming/) from their envelopes, at1
         * the next; then list[0..tail) merged with the records, at2 the next. */
        struct pending *list;
        size_t n, cap, n_listed, tail, at1, at2;
        bool loading; /* until everything listed at start is read */
        /* the snapshot, until the merge is done */
        char *snap;
        struct queue_snap_cursor cur;      /* the next record not yet matched */
        struct queue_snap_cursor past_rec; /* past it, when read (have_rec) */
        struct queue_snap_rec *rec;        /* 8 KB: not on the stack of every caller */
        bool have_rec;
        uint64_t rec_key, last_key;      /* the record at cur; the snapshot's last */
        size_t n_records;                /* usable records */
        struct queue_snap_cursor *early; /* records due soon, before READY */
        size_t n_early, n_applied_early;
        size_t early_ahead; /* of those applied, the entries the merge has not passed */
        /* what start-up made of it all (the log's last start-up line) */
        size_t from_snapshot, from_envelopes, from_incoming, dropped;
        sd_event_source *loader;
        sd_event_source *timer;
        uint64_t fingerprint;
        struct snap_run *run; /* a periodic snapshot being serialised, a slice at a time */
};

/* Entries read or matched so far. */
static size_t startup_done(const struct startup *s)
{
        return (s->at1 - s->tail) + s->at2;
}

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

/* Indexes and schedules one record without its envelope; false when it is
 * not (a record with nothing scheduled, a duplicate, no memory): its
 * message is read from its envelope instead. */
static bool apply_record(struct tarryd *d, const struct queue_snap_rec *r)
{
        if (r->dir == QUEUE_ACTIVE && r->n_works == 0)
                return false; /* nothing scheduled: finishing it needs its envelope */
        struct msg *m;
        if (message_index_snap(d, r, &m) < 0)
                return false;
        if (r->dir == QUEUE_ACTIVE && deliver_schedule_from(d, m, r) < 0) {
                message_free(d, m);
                return false;
        }
        d->startup->from_snapshot++;
        return true;
}

static bool due_by(const struct queue_snap_rec *r, int64_t when_us)
{
        if (r->dir != QUEUE_ACTIVE)
                return false;
        for (unsigned i = 0; i < r->n_works; i++)
                if (r->works[i].due_us <= when_us)
                        return true;
        return false;
}

static void snapshot_unusable(const char *why)
{
        log_error("start-up: state/%s is unusable (%s); reading the envelopes it does not cover",
                  QUEUE_SNAP_FILE, why);
}

/* Reads state/index.snap, checks it whole and goes through its records
 * once (~0.1 s at a million), applying none: how many are usable (well
 * formed and in ID order; a file that breaks off is used up to there), the
 * last one's ID, and where the ones due within EARLY_HORIZON_US are. */
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
        const char *why = "";
        r = queue_snap_open(buf, len, s->fingerprint, &s->cur, &why);
        if (r == -ESTALE) {
                log_info("start-up: state/%s was %s; reading every envelope", QUEUE_SNAP_FILE, why);
                return;
        }
        if (r < 0) {
                snapshot_unusable(why);
                return;
        }
        struct queue_snap_cursor c = s->cur;
        uint64_t usable = 0;
        int64_t soon = now_realtime_us() + EARLY_HORIZON_US;
        for (;;) {
                struct queue_snap_cursor at = c;
                r = queue_snap_next(&c, s->rec, &why);
                if (r == 0)
                        break;
                uint64_t key = 0;
                if (r > 0 && (!msgindex_id_key(s->rec->id, &key) || (usable && key <= s->last_key)))
                        why = "its records are out of order", r = -EBADMSG;
                if (r < 0) {
                        snapshot_unusable(why);
                        break;
                }
                s->last_key = key;
                usable++;
                if (s->n_early < EARLY_MAX && due_by(s->rec, soon)) {
                        if (!s->early && !(s->early = malloc(EARLY_MAX * sizeof(*s->early))))
                                continue; /* no memory: the merge applies it, a moment later */
                        s->early[s->n_early++] = at;
                }
        }
        if (usable == 0)
                return;
        s->cur.left = usable; /* the merge stops there */
        s->snap = buf;
        buf = NULL;
        s->n_records = usable;
        msgindex_reserve(d->index, usable);
}

/* The first listed entry in [lo, hi) whose ID is key or above. */
static size_t lower_bound(const struct startup *s, size_t lo, size_t hi, uint64_t key)
{
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (s->list[mid].key < key)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

/* The records due soon, before READY and before the merge reaches them:
 * each whose message is listed in its folder is applied and its entry
 * marked, so that the merge neither applies it again (it may have been
 * delivered meanwhile) nor reads its envelope. */
static void apply_early(struct tarryd *d, struct startup *s)
{
        const char *why;
        for (size_t e = 0; e < s->n_early; e++) {
                struct queue_snap_cursor c = s->early[e];
                uint64_t key = 0;
                if (queue_snap_next(&c, s->rec, &why) != 1 || !msgindex_id_key(s->rec->id, &key))
                        continue; /* never: read once already */
                for (size_t i = lower_bound(s, 0, s->n_listed, key);
                     i < s->n_listed && s->list[i].key == key; i++)
                        if (s->list[i].dir == (uint8_t)s->rec->dir) {
                                if (apply_record(d, s->rec)) {
                                        s->list[i].dir |= PENDING_DONE;
                                        s->n_applied_early++;
                                }
                                break;
                        }
        }
        free(s->early);
        s->early = NULL;
        s->n_early = 0;
        s->early_ahead = s->n_applied_early;
}

/* ---- the merge: listed entries and records, both in ID order ---- */

/* The record at s->cur, read once (s->rec); false when there is none left. */
static bool peek_record(struct startup *s)
{
        if (s->have_rec)
                return true;
        if (!s->snap)
                return false;
        const char *why;
        s->past_rec = s->cur;
        if (queue_snap_next(&s->past_rec, s->rec, &why) != 1 ||
            !msgindex_id_key(s->rec->id, &s->rec_key))
                return false; /* the end (the skim logged a file that broke off) */
        s->have_rec = true;
        return true;
}

static void next_record(struct startup *s)
{
        s->cur = s->past_rec;
        s->have_rec = false;
}

/* Whether the listed entry p is indexed from its record (now or before
 * READY). The records before it have no listed folder and are dropped. */
static bool from_record(struct tarryd *d, struct startup *s, const struct pending *p)
{
        while (peek_record(s) && s->rec_key < p->key) {
                s->dropped++;
                next_record(s);
        }
        if (!peek_record(s) || s->rec_key != p->key ||
            (uint8_t)s->rec->dir != (p->dir & (uint8_t)~PENDING_DONE))
                return false; /* no record, or one that names the other folder */
        next_record(s);
        return (p->dir & PENDING_DONE) || apply_record(d, s->rec);
}

/* ---- reading the rest at idle priority ---- */

static void loaded_all(struct tarryd *d, struct startup *s)
{
        while (peek_record(s)) { /* after the last listed ID: no folder */
                s->dropped++;
                next_record(s);
        }
        log_info("start-up: every queued message read: %zu from state/%s, %zu from their "
                 "envelopes, %zu picked up from incoming/; %zu record(s) dropped (folder gone or "
                 "moved); %zu queued",
                 s->from_snapshot, QUEUE_SNAP_FILE, s->from_envelopes, s->from_incoming, s->dropped,
                 msgindex_count(d->index));
        sd_event_source_set_enabled(s->loader, SD_EVENT_OFF);
        free(s->list);
        s->list = NULL;
        s->n = s->cap = s->n_listed = s->tail = s->at1 = s->at2 = 0;
        free(s->snap);
        s->snap = NULL;
        s->loading = false;
        control_update_status_line(d);
}

static void read_envelope(struct tarryd *d, struct startup *s, const struct pending *p)
{
        char id[QUEUE_ID_LEN + 1];
        msgindex_key_id(p->key, id);
        if (p->dir == QUEUE_INCOMING) {
                pickup_incoming_one(d, id);
                s->from_incoming++;
                return;
        }
        if (msgindex_get(d->index, id))
                return;
        int r = pickup_index_message(d, (enum queue_dir)(p->dir & (uint8_t)~PENDING_DONE), id);
        if (r < 0)
                log_error("%s: cannot load: %s", id, strerror(-r));
        else
                s->from_envelopes++;
}

/* One dispatch: at most LOAD_BATCH envelopes, or LOAD_SLICE_US of records.
 * First the listed messages after the snapshot's last record (new since
 * it: the most likely to be due), then incoming/, then the merge. */
static int on_load(sd_event_source *src, void *userdata)
{
        (void)src;
        struct tarryd *d = userdata;
        struct startup *s = d->startup;
        size_t before = startup_done(s);
        int64_t until = now_monotonic_us() + LOAD_SLICE_US;
        unsigned reads = 0;
        for (size_t steps = 1; reads < LOAD_BATCH; steps++) {
                if (s->at1 < s->n) {
                        read_envelope(d, s, &s->list[s->at1++]);
                        reads++;
                } else if (s->at2 < s->tail) {
                        const struct pending *p = &s->list[s->at2++];
                        if (p->dir & PENDING_DONE)
                                s->early_ahead--;
                        if (!from_record(d, s, p)) {
                                read_envelope(d, s, p);
                                reads++;
                        }
                } else {
                        break;
                }
                if (steps % 256 == 0 && now_monotonic_us() >= until)
                        break;
        }
        size_t done = startup_done(s);
        bool all = s->at1 >= s->n && s->at2 >= s->tail;
        if (done / STARTUP_NOTE_EVERY != before / STARTUP_NOTE_EVERY || all)
                sd_notifyf(0, "STATUS=reading the queue: %zu of %zu message(s) read", done, s->n);
        if (all)
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
        if (!s || !(s->rec = malloc(sizeof(*s->rec)))) {
                free(s);
                return -ENOMEM;
        }
        d->startup = s;
        s->loading = true;
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
        s->n_listed = s->n;
        /* the listed messages after the last record are new since the
         * snapshot was written: read first, the rest merged in ID order */
        s->tail = s->snap ? lower_bound(s, 0, s->n_listed, s->last_key + 1) : 0;
        if (s->snap && s->last_key == UINT64_MAX)
                s->tail = s->n_listed;
        s->at1 = s->tail;
        apply_early(d, s);
        deliver_arm_timer(d); /* once, not per record */
        log_info("start-up: %zu message(s) listed and sorted in %.3f s; beside that, %zu "
                 "record(s) of state/%s read in %.3f s; %zu due within %lld s applied in %.3f s; "
                 "%zu message(s) after the last record",
                 s->n_listed, (double)l.took_us / 1e6, s->n_records, QUEUE_SNAP_FILE,
                 (double)(t1 - t0) / 1e6, s->n_applied_early,
                 (long long)(EARLY_HORIZON_US / 1000000), (double)(now_monotonic_us() - t2) / 1e6,
                 s->n_listed - s->tail);
        void *a[2] = {s, (void *)(intptr_t)QUEUE_INCOMING};
        /* then new mail: incoming/, oldest first as the IDs sort */
        int r = queue_scan(d->queue, QUEUE_INCOMING, list_cb, a);
        if (r < 0) {
                log_error("cannot read incoming/: %s; will retry", strerror(-r));
                pickup_retry_later(d);
        }
        if (s->n > s->n_listed)
                sort_pending(s->list + s->n_listed, s->n - s->n_listed);
        r = sd_event_add_defer(d->loop, &s->loader, on_load, d);
        if (r >= 0)
                r = sd_event_source_set_priority(s->loader, SD_EVENT_PRIORITY_IDLE);
        if (r >= 0) /* a defer source is one-shot unless told otherwise */
                r = sd_event_source_set_enabled(s->loader, SD_EVENT_ON);
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
        const struct startup *s = d->startup;
        /* the ones applied before READY are indexed (and counted) already */
        return s && s->loading ? s->n - startup_done(s) - s->early_ahead : 0;
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
        /* at a stop before the merge is done: the records it has not
         * reached, written too, in ID order among the index's messages */
        struct queue_snap_cursor rest;
        struct queue_snap_rec *rest_rec; /* NULL: none */
        bool rest_have;
        uint64_t rest_key;
};

static bool rest_peek(struct collect *c)
{
        const char *why;
        if (!c->rest_have && c->rest_rec && queue_snap_next(&c->rest, c->rest_rec, &why) == 1)
                c->rest_have = msgindex_id_key(c->rest_rec->id, &c->rest_key);
        return c->rest_have;
}

/* The records not yet merged up to key (all of them: NULL); a message in
 * the index has its own, newer record, and a record whose message left
 * meanwhile is dropped at the next start (its folder is gone). */
static void rest_until(struct collect *c, const uint64_t *key)
{
        while (rest_peek(c) && (!key || c->rest_key <= *key)) {
                if (!key || c->rest_key != *key)
                        queue_snap_add(c->w, c->rest_rec); /* -EINVAL: never, it was read */
                c->rest_have = false;
        }
}

struct snap_run {
        struct collect c;
        sd_event_source *slicer;
};

static int add_cb(struct msg *m, void *userdata)
{
        struct collect *c = userdata;
        memcpy(c->after, m->id, sizeof(c->after));
        if (c->rest_rec) {
                uint64_t key = 0;
                msgindex_id_key(m->id, &key);
                rest_until(c, &key);
        }
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
        /* not while the start is still reading: most of the queue would be
         * missing from it (the timer comes again) */
        if (!s || !s->fingerprint || s->run || s->loading)
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
        struct startup *s = d->startup;
        snapshot_end(s); /* a periodic one under way: this one replaces it */
        struct collect c = {0};
        if (s->snap) { /* stopped before the merge was done */
                c.rest = s->cur;
                c.rest_rec = s->rec;
        }
        int r = queue_snap_begin(s->fingerprint, msgindex_count(d->index) + c.rest.left, &c.w);
        if (r < 0)
                return r;
        msgindex_foreach_after(d->index, NULL, add_cb, &c); /* in ID order: read back as appends */
        rest_until(&c, NULL);
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
        free(s->snap);
        free(s->early);
        free(s->rec);
        free(s);
        d->startup = NULL;
}
