/* daemon/control.c — what the status endpoint shows, and its admin actions.
 *
 * The provider side of status/: JSON views built from the message index,
 * the scheduler's destinations and the envelopes in the spool; admin actions
 * applied through queue/ and scheduler/. Also keeps systemd's STATUS= line.
 */
#include "daemon/log.h"
#include "daemon/message.h"
#include "daemon/readahead.h"
#include "daemon/sitetally.h"
#include "daemon/tarryd.h"
#include "common/address.h"
#include "common/cleanup.h"
#include "common/kselect.h"
#include "common/fileio.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#define TRANSCRIPTS_KEPT 256 /* last transcripts kept in memory for GET /queue/ID */

/* ---- transcripts of recent attempts ---- */

struct transcript {
        char id[QUEUE_ID_LEN + 1];
        char *text;
};
static struct transcript transcripts[TRANSCRIPTS_KEPT];
static size_t transcript_next;

void control_note_transcript(const char *id, const char *text)
{
        struct transcript *t = &transcripts[transcript_next++ % TRANSCRIPTS_KEPT];
        free(t->text);
        memcpy(t->id, id, QUEUE_ID_LEN + 1);
        t->text = text ? strdup(text) : NULL;
}

static const char *find_transcript(const char *id)
{
        for (size_t i = 0; i < TRANSCRIPTS_KEPT; i++) {
                size_t k = (transcript_next + TRANSCRIPTS_KEPT - 1 - i) % TRANSCRIPTS_KEPT;
                if (transcripts[k].text && strcmp(transcripts[k].id, id) == 0)
                        return transcripts[k].text;
        }
        return NULL;
}

static void free_transcripts(void)
{
        for (size_t i = 0; i < TRANSCRIPTS_KEPT; i++) {
                free(transcripts[i].text);
                transcripts[i].text = NULL;
        }
}

/* ---- views ---- */

static enum status_queue_state state_of(const struct msg *m, int64_t now)
{
        if (m->dir == QUEUE_HOLD)
                return STATUS_QSTATE_HOLD;
        if (m->inflight > 0 || m->next_attempt_us <= now)
                return STATUS_QSTATE_ACTIVE;
        return STATUS_QSTATE_DEFERRED;
}

static const char *queue_name(const struct msg *m, int64_t now)
{
        return status_queue_state_name(state_of(m, now));
}

/* The scheduler item of m for route, or NULL (held, or nothing left for it). */
static struct sched_item *item_for(const struct msg *m, const char *route)
{
        for (struct work *w = m->works; w; w = w->next)
                if (w->it && strcmp(deliver_work_route(w), route) == 0)
                        return w->it;
        return NULL;
}

/* What the daemon knows beyond the envelope (a loaded copy): a recipient
 * parked behind a suspended or backed-off destination waits for its end, and
 * one not tried yet waits for its item. Returns each waiting recipient's
 * destination in dest[] (route keys; "" when unknown), in envelope order. */
static void annotate_waits(struct tarryd *d, const struct msg *m, struct envelope *env, int64_t now,
                           char (*dest)[SMTPC_DEST_MAX], size_t n_dest)
{
        size_t k = 0;
        for (size_t i = 0; i < env->n_rcpt && k < n_dest; i++) {
                struct envelope_rcpt *r = &env->rcpt[i];
                if (!queue_rcpt_waiting(r))
                        continue;
                const char *domain = addr_domain(r->address);
                struct smtpc_route route;
                char *out = dest[k++];
                out[0] = '\0';
                if (smtpc_route(d->cfg, domain ? domain : d->cfg->myorigin, &route) < 0)
                        continue;
                snprintf(out, SMTPC_DEST_MAX, "%s", route.destination);
                struct sched_item *it =
                    m->dir == QUEUE_HOLD ? NULL : item_for(m, route.destination);
                if (!it)
                        continue;
                if (r->state == RCPT_PENDING) {
                        int64_t due = sched_item_due(it);
                        r->next_attempt_us = due > now ? due : now;
                }
                int64_t until = 0;
                enum sched_why why = sched_destination_pause(d->sched, sched_item_source(it),
                                                             sched_item_route(it), now, &until);
                if (why != SCHED_WHY_NONE && until >= r->next_attempt_us) {
                        r->next_attempt_us = until;
                        free(r->next_reason);
                        r->next_reason = strdup(sched_why_name(why));
                }
        }
}

/* Has a work of m before w (which has an item) the same site? */
static bool site_seen_before(const struct msg *m, const struct work *w)
{
        const char *site = sched_item_route(w->it);
        for (const struct work *e = m->works; e != w; e = e->next)
                if (e->it && strcmp(sched_item_route(e->it), site) == 0)
                        return true;
        return false;
}

/* The tarryq -j object, with tarryd's live view of state and next attempt. */
static json_t *message_json(struct tarryd *d, const struct msg *m, struct envelope *env,
                            int64_t now)
{
        size_t n_wait = 0;
        for (size_t i = 0; i < env->n_rcpt; i++)
                n_wait += queue_rcpt_waiting(&env->rcpt[i]);
        _cleanup_free_ char(*dest)[SMTPC_DEST_MAX] = calloc(n_wait ? n_wait : 1, sizeof(*dest));
        if (!dest)
                return NULL;
        annotate_waits(d, m, env, now, dest, n_wait);
        json_t *o = queue_listing_json(queue_name(m, now), env);
        if (!o)
                return NULL;
        size_t i;
        json_t *r;
        json_array_foreach (json_object_get(o, "recipients"), i, r)
                if (i < n_wait)
                        json_object_set_new(r, "destination",
                                            dest[i][0] ? json_string(dest[i]) : json_null());
        json_t *first = json_array_get(json_object_get(o, "recipients"), 0);
        json_object_set(o, "destination",
                        first ? json_object_get(first, "destination") : json_null());
        if (env->source_address)
                json_object_set_new(o, "source_address", json_string(env->source_address));
        json_t *sites = m->works ? json_array() : NULL;
        for (const struct work *w = m->works; sites && w; w = w->next) {
                if (!w->it)
                        continue;
                if (!site_seen_before(m, w))
                        json_array_append_new(sites, json_string(sched_item_route(w->it)));
        }
        if (sites)
                json_object_set_new(o, "sites", sites);
        return o;
}

/* ---- /status: counts kept as messages change (message.c, sitetally.c) ---- */

struct counts {
        int64_t now;
        size_t state[STATUS_QSTATE__MAX];
        size_t by_class[CLASS__MAX];
        int64_t oldest;
};

/* The counts of the index at now, without visiting its messages. */
static struct counts counts_now(struct tarryd *d, int64_t now)
{
        const struct message_tally *t = message_tally_at(d, now);
        struct counts c = {.now = now, .oldest = message_oldest_arrival(d)};
        c.state[STATUS_QSTATE_ACTIVE] = t->n_due;
        c.state[STATUS_QSTATE_DEFERRED] = t->n_ready - t->n_due;
        c.state[STATUS_QSTATE_HOLD] = t->n_hold;
        /* a held message is held, whatever deferred it before (docs/status.md) */
        memcpy(c.by_class, t->by_class, sizeof(c.by_class));
        return c;
}

struct site_row {
        const char *site;
        size_t messages, domains;
};

struct site_rows {
        struct site_row *rows;
        size_t n;
};

static int site_row_cb(const char *site, size_t domains, size_t messages, void *userdata)
{
        struct site_rows *r = userdata;
        r->rows[r->n++] = (struct site_row){.site = site, .domains = domains, .messages = messages};
        return 0;
}

static int by_site(const void *a, const void *b)
{
        return strcmp(((const struct site_row *)a)->site, ((const struct site_row *)b)->site);
}

/* FULL: [{"site", "domains", "messages"}] sorted by site; AGGREGATE (no
 * names): {"sites", "domains", "messages"} totals. NULL: no memory. */
static json_t *sites_json(struct tarryd *d, enum status_view view)
{
        size_t n = d->site_tally ? site_tally_count(d->site_tally) : 0;
        _cleanup_free_ struct site_row *rows = calloc(n ? n : 1, sizeof(*rows));
        if (!rows)
                return NULL;
        struct site_rows t = {.rows = rows};
        if (n)
                site_tally_foreach(d->site_tally, site_row_cb, &t);
        if (t.n)
                qsort(rows, t.n, sizeof(*rows), by_site);
        json_int_t n_domains = 0, n_messages = 0;
        json_t *out = view == STATUS_VIEW_FULL ? json_array() : json_object();
        for (size_t i = 0; out && i < t.n; i++) {
                const struct site_row *r = &rows[i];
                n_domains += (json_int_t)r->domains;
                n_messages += (json_int_t)r->messages;
                if (view == STATUS_VIEW_FULL &&
                    json_array_append_new(out, json_pack("{s:s, s:I, s:I}", "site", r->site,
                                                         "domains", (json_int_t)r->domains,
                                                         "messages", (json_int_t)r->messages)) <
                        0) {
                        json_decref(out);
                        return NULL;
                }
        }
        if (view != STATUS_VIEW_FULL && out) {
                json_object_set_new(out, "sites", json_integer((json_int_t)t.n));
                json_object_set_new(out, "domains", json_integer(n_domains));
                json_object_set_new(out, "messages", json_integer(n_messages));
        }
        return out;
}

static int count_file(const char *id, void *userdata)
{
        (void)id;
        (*(size_t *)userdata)++;
        return 0;
}

/* How many messages folder dir holds: counted again (readdir) only when
 * its mtime changed since the last count, or the last count was taken
 * within a second of that mtime (a change in the same clock tick would
 * not move it). A quiet folder costs one fstat a request however many
 * entries it once had (ext4 folders do not shrink). */
static size_t dir_messages(struct tarryd *d, enum queue_dir dir, struct dir_count *c)
{
        struct stat st;
        int fd = queue_dir_fd(d->queue, dir);
        int64_t now = now_realtime_us();
        if (fd >= 0 && fstat(fd, &st) == 0 && c->counted_us &&
            st.st_mtim.tv_sec == c->mtime.tv_sec && st.st_mtim.tv_nsec == c->mtime.tv_nsec &&
            c->counted_us - (st.st_mtim.tv_sec * 1000000LL + st.st_mtim.tv_nsec / 1000) > 1000000)
                return c->n;
        size_t n = 0;
        if (queue_scan(d->queue, dir, count_file, &n) < 0 || fd < 0 || fstat(fd, &st) < 0) {
                c->counted_us = 0; /* not cached */
                return n;
        }
        *c = (struct dir_count){.mtime = st.st_mtim, .counted_us = now, .n = n};
        return n;
}

static json_t *iso_time_or_null(int64_t us)
{
        char buf[40];
        return us > 0 && *queue_iso_time(us, buf, sizeof(buf)) ? json_string(buf) : json_null();
}

static int dest_cb(const struct sched_dest_info *di, void *userdata)
{
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:i, s:I}", "destination", di->route, "source_address",
                      di->source_address, "state", sched_dest_state_name(di->state), "concurrency",
                      di->concurrency, "queued", (json_int_t)di->queued);
        if (!o)
                return -ENOMEM;
        json_object_set_new(o, "until",
                            di->until_us ? json_integer(di->until_us / 1000000) : json_null());
        json_object_set_new(o, "until_time", iso_time_or_null(di->until_us));
        const char *cause = di->pause_class >= 0 ? reply_class_name(di->pause_class) : NULL;
        json_object_set_new(o, "cause", cause ? json_string(cause) : json_null());
        json_object_set_new(o, "last_reply",
                            di->last_reply ? json_string(di->last_reply) : json_null());
        json_object_set_new(o, "learned_greylist_s",
                            di->learned_greylist_s >= 0 ? json_integer(di->learned_greylist_s)
                                                        : json_null());
        json_object_set_new(o, "learned_lower_s",
                            di->learned_upper_s >= 0 ? json_integer(di->learned_lower_s)
                                                     : json_null());
        json_object_set_new(o, "learned_upper_s",
                            di->learned_upper_s >= 0 ? json_integer(di->learned_upper_s)
                                                     : json_null());
        json_array_append_new(userdata, o);
        return 0;
}

/* The aggregate view: how many destinations are in each state, no names. */
static int dest_count_cb(const struct sched_dest_info *di, void *userdata)
{
        json_t *o = userdata;
        const char *state = sched_dest_state_name(di->state);
        json_object_set_new(o, state,
                            json_integer(json_integer_value(json_object_get(o, state)) + 1));
        return 0;
}

static json_t *destinations_json(struct tarryd *d, int64_t now, enum status_view view)
{
        json_t *v = view == STATUS_VIEW_FULL ? json_array() : json_object();
        if (v)
                sched_foreach_destination(d->sched, now,
                                          view == STATUS_VIEW_FULL ? dest_cb : dest_count_cb, v);
        return v;
}

/* The typed /status (status.h) as view may show it. view FULL (unix
 * socket): "destinations" lists each one with its last reply, which can
 * quote recipient addresses; AGGREGATE (TCP, any local user):
 * "destination_states" counts them per state instead. */
static void fill_report(struct tarryd *d, enum status_view view, struct status_report *rep)
{
        const struct counts c = counts_now(d, now_realtime_us());
        size_t corrupt = dir_messages(d, QUEUE_CORRUPT, &d->n_corrupt_dir);
        size_t incoming = dir_messages(d, QUEUE_INCOMING, &d->n_incoming);
        *rep = (struct status_report){
            .uptime_s = (c.now - d->start_us) / 1000000,
            .queue =
                {
                    .total = msgindex_count(d->index) + incoming,
                    .incoming = incoming,
                    .active = c.state[STATUS_QSTATE_ACTIVE],
                    .deferred = c.state[STATUS_QSTATE_DEFERRED],
                    .hold = c.state[STATUS_QSTATE_HOLD],
                    .corrupt = corrupt,
                    .unread = startup_unread(d),
                },
            .attempts =
                {
                    .total = d->n_attempts,
                    .delivered = d->n_delivered,
                    .deferred = d->n_deferred,
                    .failed = d->n_failed,
                },
            .oldest_arrival_s = c.oldest ? c.oldest / 1000000 : -1,
            .destinations = destinations_json(d, c.now, view),
            .sites = sites_json(d, view),
            .diagnoses = diagnoses_json(d, view),
        };
        snprintf(rep->version, sizeof(rep->version), "%s", TARRY_VERSION);
        for (int i = 0; i < CLASS__MAX; i++)
                rep->by_class[i] = c.by_class[i];
}

static int get_status(void *userdata, enum status_view view, json_t **out)
{
        struct status_report rep;
        fill_report(userdata, view, &rep);
        *out = status_report_json(&rep, view);
        return *out ? 0 : -ENOMEM;
}

/* This node's line in the fleet view (docs/fleet.md): the same counts as
 * /status, every CLUSTER_PUBLISH_S. */
int control_fleet_summary(struct tarryd *d, char *buf, size_t len)
{
        struct counts c = counts_now(d, now_realtime_us());
        json_t *by_class = json_object();
        for (int i = 0; i < CLASS__MAX; i++)
                if (i != CLASS_PERMANENT && c.by_class[i])
                        json_object_set_new(by_class, reply_class_name(i),
                                            json_integer((json_int_t)c.by_class[i]));
        _cleanup_(json_decrefp) json_t *o =
            json_pack("{s:s, s:I, s:I, s:I, s:I, s:o}", "node", cluster_node(d->cluster), "seen",
                      (json_int_t)(c.now / 1000000), "queue", (json_int_t)msgindex_count(d->index),
                      "deferred", (json_int_t)c.state[STATUS_QSTATE_DEFERRED], "hold",
                      (json_int_t)c.state[STATUS_QSTATE_HOLD], "by_class", by_class);
        if (!o)
                return -ENOMEM;
        size_t n = json_dumpb(o, buf, len, JSON_COMPACT);
        if (n == 0 || n >= len)
                return -ENOSPC;
        buf[n] = '\0';
        return 0;
}

/* One node's summary as it came from Redis (outside input): kept only with
 * the fields and types this version writes. */
static json_t *fleet_node(const char *text, int64_t now)
{
        json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        const char *node = json_string_value(json_object_get(o, "node"));
        json_t *seen = json_object_get(o, "seen"), *queue = json_object_get(o, "queue"),
               *deferred = json_object_get(o, "deferred"), *hold = json_object_get(o, "hold"),
               *by_class = json_object_get(o, "by_class");
        bool ok = json_is_object(o) && cluster_node_name_ok(node) && json_is_integer(seen) &&
                  json_is_integer(queue) && json_integer_value(queue) >= 0 &&
                  json_is_integer(deferred) && json_is_integer(hold) && json_is_object(by_class);
        const char *k;
        json_t *v;
        json_object_foreach (by_class, k, v)
                ok = ok && reply_class_from_name(k) >= 0 && json_is_integer(v);
        if (!ok) {
                json_decref(o);
                return NULL;
        }
        json_t *out =
            json_pack("{s:s, s:I, s:I, s:I, s:I, s:O, s:I}", "node", node, "last_seen",
                      json_integer_value(seen), "queue", json_integer_value(queue), "deferred",
                      json_integer_value(deferred), "hold", json_integer_value(hold), "by_class",
                      by_class, "age_s", (json_int_t)(now / 1000000 - json_integer_value(seen)));
        json_decref(o);
        return out;
}

static int get_fleet(void *userdata, json_t **out)
{
        struct tarryd *d = userdata;
        *out = NULL;
        if (!d->cluster)
                return 0;
        struct cluster_stats st;
        cluster_get_stats(d->cluster, &st);
        const char *const *rec;
        size_t n = cluster_fleet(d->cluster, &rec);
        int64_t now = now_realtime_us();
        json_t *nodes = json_array();
        for (size_t i = 0; nodes && i < n; i++) {
                json_t *node = fleet_node(rec[i], now);
                if (node)
                        json_array_append_new(nodes, node);
        }
        *out = json_pack("{s:s, s:b, s:o}", "node", cluster_node(d->cluster), "redis_connected",
                         st.connected, "nodes", nodes);
        return *out ? 0 : -ENOMEM;
}

static int load_any(struct tarryd *d, const struct msg *m, struct envelope **env)
{
        const char *why;
        return queue_load(d->queue, m->dir, m->id, env, &why);
}

/* Does any waiting recipient of env go to destination (its domain or route key)? */
static bool goes_to(struct tarryd *d, const struct envelope *env, const char *destination)
{
        for (size_t i = 0; i < env->n_rcpt; i++) {
                const struct envelope_rcpt *r = &env->rcpt[i];
                const char *domain = addr_domain(r->address);
                struct smtpc_route route;
                if (r->state != RCPT_PENDING && r->state != RCPT_DEFERRED)
                        continue;
                if (domain && strcasecmp(domain, destination) == 0)
                        return true;
                if (domain && smtpc_route(d->cfg, domain, &route) == 0 &&
                    strcmp(route.destination, destination) == 0)
                        return true;
        }
        return false;
}

/* The walks to the next matches visit at most this many records per call
 * of list_next, and stop sooner once one has read an envelope (destination
 * filter) and this much time went by: one call never holds the loop long,
 * whatever the queue holds or the filter passes (a user's mailq over a
 * million messages), read ahead or not. */
#define NEXT_VISITS   4096
#define NEXT_SLICE_US 2000

/* An envelope read only to decide a filter: counted, so that an operator
 * (and a test) sees what listings cost. */
static int load_for_filter(struct tarryd *d, const struct msg *m, struct envelope **env)
{
        if (d->metrics)
                status_counter_add(d->metrics, STATUS_M_LISTING_FILTER_READS, NULL, 1);
        return load_any(d, m, env);
}

/* Does m pass the filter? The index record answers the state, the class
 * and the owner (the uid is learnt with the envelope: at pickup, at start
 * without a snapshot, or from a TARRYIX3 snapshot). The envelope is read
 * only for the destination filter, or for the owner of a record from an
 * older snapshot, once: its uid is then kept in the record. *read says
 * whether an envelope was read. */
static bool matches(struct tarryd *d, const struct status_queue_filter *f, struct msg *m,
                    int64_t now, bool *read)
{
        if (f->state != STATUS_QSTATE_ANY && state_of(m, now) != f->state)
                return false;
        if (f->has_class && m->reply_class != (int)f->class)
                return false;
        /* the owner is the envelope's uid: the submitter the kernel named
         * (SO_PEERCRED / the maildrop file's owner), not a sender address
         * anyone may be allowed to write */
        if (f->by_owner && m->uid_known && m->uid != (uint32_t)f->owner)
                return false;
        if (!f->destination && (!f->by_owner || m->uid_known))
                return true;
        struct envelope *env = NULL;
        if (read)
                *read = true;
        if (load_for_filter(d, m, &env) < 0)
                return false;
        if (!m->uid_known) {
                m->uid = (uint32_t)env->uid;
                m->uid_known = true;
        }
        bool ok = (!f->destination || goes_to(d, env, f->destination)) &&
                  (!f->by_owner || env->uid == f->owner);
        envelope_free(env);
        return ok;
}

static bool filter_is_empty(const struct status_queue_filter *f)
{
        return f->state == STATUS_QSTATE_ANY && !f->has_class && !f->destination && !f->by_owner;
}

/* A GET /queue page on its way out (status/ streams it). It holds IDs, never
 * a struct msg: a message may leave between two slices. */
struct page {
        struct tarryd *d;
        struct status_queue_filter f; /* f.destination: destination below */
        char *destination;
        int64_t now;
        size_t left;                   /* after=: messages still to hand out */
        size_t skip;                   /* after=: matches still to pass over (offset=) */
        bool paused;                   /* after=: the last walk stopped for this turn */
        size_t visits;                 /* after=: records visited in this call of list_next */
        int64_t call_start_us;         /* ... since this time */
        bool call_read;                /* ... and an envelope was read on the way */
        char cursor[QUEUE_ID_LEN + 1]; /* after=: the last one handed out (or passed) */
        char (*ids)[QUEUE_ID_LEN + 1]; /* offset: the page, chosen at once */
        size_t n_ids, next;
        struct readahead *ra; /* reads the page's next envelopes (NULL: each is read here) */
};

struct walk {
        struct page *p;
        struct msg *found;
};

/* The next matching message after the cursor, past p->skip matching ones;
 * every record passed moves the cursor. Stops (2) when its budget for the
 * call is spent. */
static int next_cb(struct msg *m, void *userdata)
{
        struct walk *w = userdata;
        struct page *p = w->p;
        if (p->visits >= NEXT_VISITS ||
            (p->call_read && now_monotonic_us() - p->call_start_us >= NEXT_SLICE_US)) {
                p->paused = true;
                return 2;
        }
        p->visits++;
        memcpy(p->cursor, m->id, QUEUE_ID_LEN + 1);
        if (!matches(p->d, &p->f, m, p->now, &p->call_read))
                return 0;
        if (p->skip > 0) {
                p->skip--;
                return 0;
        }
        w->found = m;
        return 1;
}

struct selection {
        struct page *p;
        struct msg **v;
        size_t n, cap;
};

static int select_cb(struct msg *m, void *userdata)
{
        struct selection *l = userdata;
        if (!matches(l->p->d, &l->p->f, m, l->p->now, NULL))
                return 0;
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 64;
                struct msg **v = realloc(l->v, cap * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                l->v = v;
                l->cap = cap;
        }
        l->v[l->n++] = m;
        return 0;
}

static int by_id(const void *a, const void *b)
{
        return strcmp(((const struct msg *)a)->id, ((const struct msg *)b)->id);
}

/* offset= without a cursor: every match, and the page picked out of them
 * (only the page is sorted: a linear selection, not a sort of the queue). */
static int select_page(struct page *p, size_t *total)
{
        struct selection l = {.p = p};
        int r = msgindex_foreach(p->d->index, select_cb, &l);
        size_t count = r < 0 ? 0 : kselect_page((void **)l.v, l.n, p->f.offset, p->f.limit, by_id);
        p->ids = r < 0 ? NULL : calloc(count ? count : 1, sizeof(*p->ids));
        for (size_t i = 0; p->ids && i < count; i++)
                memcpy(p->ids[i], l.v[p->f.offset + i]->id, QUEUE_ID_LEN + 1);
        p->n_ids = count;
        *total = l.n;
        free(l.v);
        return r < 0 ? r : p->ids ? 0 : -ENOMEM;
}

static void list_close(void *userdata, void *page)
{
        struct page *p = page;
        (void)userdata;
        if (!p)
                return;
        readahead_free(p->ra);
        free(p->destination);
        free(p->ids);
        free(p);
}

/* after=ID: a cursor walk from it, made in bounded slices by next_of. What
 * is left is counted from the index's per-block counts when nothing is
 * filtered; with a filter it is not known without a walk of the rest of the
 * queue (per page: quadratic over a listing), so it is not counted
 * (STATUS_TOTAL_UNKNOWN: "total": null, docs/status.md). */
static int list_open(void *userdata, const struct status_queue_filter *f, void **out_page,
                     size_t *out_total)
{
        struct page *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        *p = (struct page){.d = userdata, .f = *f, .now = now_realtime_us(), .left = f->limit};
        if (f->destination && !(p->f.destination = p->destination = strdup(f->destination))) {
                list_close(userdata, p);
                return -ENOMEM;
        }
        int r = 0;
        if (!f->after[0]) {
                r = select_page(p, out_total);
        } else {
                memcpy(p->cursor, f->after, sizeof(p->cursor));
                p->skip = f->offset; /* passed over by next_of, a slice at a time */
                *out_total = filter_is_empty(f) ? msgindex_count_after(p->d->index, f->after)
                                                : STATUS_TOTAL_UNKNOWN;
        }
        if (r < 0) {
                list_close(userdata, p);
                return r;
        }
        /* the destination filter reads envelopes in next_of: nothing to read ahead (the
         * owner filter reads none: the uid is in the index); without the thread (it
         * could not start), each envelope is read here */
        if (!f->destination && readahead_new(p->d->queue, &p->ra) < 0)
                p->ra = NULL;
        *out_page = p;
        return 0;
}

/* The page's next message; NULL when the page is done, or (p->paused) when
 * this call's walk spent its budget before finding one: call again. */
static struct msg *next_of(struct page *p)
{
        p->paused = false;
        if (p->ids) {
                while (p->next < p->n_ids) {
                        struct msg *m = msgindex_get(p->d->index, p->ids[p->next++]);
                        if (m)
                                return m;
                }
                return NULL;
        }
        if (p->left == 0)
                return NULL;
        struct walk w = {.p = p};
        if (msgindex_foreach_after(p->d->index, p->cursor, next_cb, &w) != 1 || !w.found)
                return NULL;
        p->left--;
        return w.found;
}

/* A message next_of chose is not listed after all (it left, or cannot be
 * read): an after= page finds another in its place, so that a page short
 * of its limit still means the end (a filtered one says "total": null). */
static void not_listed(struct page *p)
{
        if (!p->ids)
                p->left++;
}

/* The page's next message as next_of chooses it, and its envelope when the
 * thread read it ahead (else *env is NULL). The thread is kept up to
 * READAHEAD_SLOTS messages ahead; a message that left meanwhile is passed
 * over, one that moved (held, released) is read where it is now. */
static struct msg *next_read_ahead(struct page *p, struct envelope **env)
{
        char id[QUEUE_ID_LEN + 1];
        enum queue_dir dir;
        for (;;) {
                for (struct msg *m; readahead_has_room(p->ra) && (m = next_of(p));)
                        if (readahead_add(p->ra, m->id, m->dir) < 0)
                                break;
                if (readahead_take(p->ra, id, &dir, env) <= 0)
                        return NULL;
                struct msg *m = msgindex_get(p->d->index, id);
                if (m && (enum queue_dir)m->dir == dir)
                        return m;
                envelope_free(*env);
                *env = NULL;
                if (m)
                        return m;
                not_listed(p);
        }
}

static int list_next(void *userdata, void *page, json_t **out)
{
        struct page *p = page;
        (void)userdata;
        p->visits = 0; /* next_of's budget: for this call, however often it runs */
        p->call_read = false;
        p->call_start_us = now_monotonic_us();
        for (;;) {
                struct envelope *env = NULL;
                struct msg *m = p->ra ? next_read_ahead(p, &env) : next_of(p);
                if (!m)
                        break;
                if (!env && load_any(p->d, m, &env) < 0) {
                        not_listed(p); /* gone meanwhile, or unreadable */
                        continue;
                }
                *out = message_json(p->d, m, env, p->now);
                envelope_free(env);
                return *out ? 1 : -ENOMEM;
        }
        return p->paused ? STATUS_LIST_LATER : 0;
}

static size_t queue_unread(void *userdata)
{
        return startup_unread(userdata);
}

static int get_message(void *userdata, const char *id, json_t **out)
{
        struct tarryd *d = userdata;
        struct msg *m = msgindex_get(d->index, id);
        if (!m)
                return -ENOENT;
        struct envelope *env = NULL;
        int r = load_any(d, m, &env);
        if (r < 0)
                return r;
        json_t *o = message_json(d, m, env, now_realtime_us());
        if (o) {
                json_t *all = json_array();
                for (size_t i = 0; i < env->n_rcpt; i++)
                        json_array_append_new(all, json_pack("{s:s, s:s, s:i}", "address",
                                                             env->rcpt[i].address, "state",
                                                             rcpt_state_name(env->rcpt[i].state),
                                                             "attempts", env->rcpt[i].attempts));
                json_object_set_new(o, "all_recipients", all);
                const char *t = find_transcript(id);
                json_object_set_new(o, "transcript", t ? json_string(t) : json_null());
        }
        envelope_free(env);
        if (!o)
                return -ENOMEM;
        *out = o;
        return 0;
}

static int refresh_metrics(void *userdata, struct status_metrics *mt)
{
        struct tarryd *d = userdata;
        struct counts c = counts_now(d, now_realtime_us());
        status_metric_clear(mt, STATUS_M_QUEUE_MESSAGES);
        for (int s = STATUS_QSTATE_ACTIVE; s <= STATUS_QSTATE_HOLD; s++)
                status_gauge_set(mt, STATUS_M_QUEUE_MESSAGES,
                                 STATUS_LABELS(status_queue_state_name(s), "any"),
                                 (double)c.state[s]);
        for (int i = 0; i < CLASS__MAX; i++)
                if (c.by_class[i])
                        status_gauge_set(mt, STATUS_M_QUEUE_MESSAGES,
                                         STATUS_LABELS("deferred", reply_class_name(i)),
                                         (double)c.by_class[i]);
        struct sched_stats st;
        sched_get_stats(d->sched, &st);
        status_gauge_set(mt, STATUS_M_DEST_SUSPENDED, NULL, (double)st.suspended);
        diagnoses_metrics(d, mt);
        return 0;
}

/* ---- admin actions ---- */

/* tarryq -i: a message whose every destination is paused is not tried
 * (-EHOSTDOWN: the caller says so) unless forced past the pause. */
static int retry_now(struct tarryd *d, struct msg *m, bool force)
{
        if (m->dir == QUEUE_HOLD)
                return -EINVAL;
        int64_t now = now_realtime_us();
        int n = 0, held = 0, works = 0;
        for (struct work *w = m->works; w; w = w->next) {
                works++;
                if (!force && sched_item_held_back(d->sched, w->it, now)) {
                        held++;
                        continue;
                }
                if ((force ? sched_force_now(d->sched, w->it, now)
                           : sched_retry_now(d->sched, w->it, now)) == 0)
                        n++;
        }
        if (works > 0 && held == works)
                return -EHOSTDOWN;
        message_force(m, n > 0); /* the recipients' own retry times must not hold it back */
        deliver_run_due(d);
        return n;
}

static int force_cb(struct msg *m, void *userdata)
{
        (void)userdata;
        message_force(m, true);
        return 0;
}

/* resume given a recipient domain (or route key): the site it is scheduled
 * by (into site), when the domain's MX set is known. -ENOENT otherwise. */
static int resume_site_of(struct tarryd *d, const char *name, int64_t now, char *site,
                          size_t sitelen)
{
        struct smtpc_route route;
        const char *domain = strncmp(name, "mx:", 3) == 0 ? name + 3 : name;
        if (!d->sites || smtpc_route(d->cfg, domain, &route) < 0 ||
            site_lookup(d->sites, d->classifier, &route, now, site, sitelen) != 1 ||
            strcmp(site, name) == 0)
                return -ENOENT;
        return sched_resume_destination(d->sched, site, NULL, now);
}

static int action(void *userdata, enum status_action a, const char *target)
{
        struct tarryd *d = userdata;
        if (a == STATUS_ACTION_FLUSH) {
                size_t n = sched_flush(d->sched, now_realtime_us());
                msgindex_foreach(d->index, force_cb, NULL);
                deliver_run_due(d);
                return (int)n;
        }
        if (a == STATUS_ACTION_RESUME) {
                int64_t now = now_realtime_us();
                char site[SITE_KEY_MAX];
                int r = sched_resume_destination(d->sched, target, NULL, now);
                if (r == -ENOENT && (r = resume_site_of(d, target, now, site, sizeof(site))) > 0)
                        target = site;
                if (r > 0)
                        fleet_resumed(d, target); /* the pause in Redis too */
                deliver_run_due(d);
                return r;
        }
        struct msg *m = msgindex_get(d->index, target);
        if (!m)
                return -ENOENT;
        switch (a) {
        case STATUS_ACTION_RETRY:
                return retry_now(d, m, false);
        case STATUS_ACTION_FORCE:
                return retry_now(d, m, true);
        case STATUS_ACTION_HOLD:
                return message_hold(d, m);
        case STATUS_ACTION_RELEASE:
                return message_release(d, m);
        case STATUS_ACTION_DELETE:
                return message_delete(d, m);
        default:
                return -EINVAL;
        }
}

static void mhd_log(void *userdata, const char *msg)
{
        (void)userdata;
        log_warn("status endpoint: %s", msg);
}

int control_start(struct tarryd *d)
{
        int r = status_metrics_new(&d->metrics);
        if (r < 0 || (r = status_metrics_declare_tarry(d->metrics)) < 0)
                return r;
        if (d->cfg->n_status_listen == 0)
                return 0;
        static struct status_provider provider;
        provider = (struct status_provider){
            .userdata = d,
            .get_status = get_status,
            .get_fleet = get_fleet,
            .list_open = list_open,
            .queue_unread = queue_unread,
            .list_next = list_next,
            .list_close = list_close,
            .get_message = get_message,
            .refresh_metrics = refresh_metrics,
            .action = action,
        };
        int n_fds = sd_listen_fds(1);
        _cleanup_free_ int *fds = n_fds > 0 ? calloc((size_t)n_fds, sizeof(int)) : NULL;
        for (int i = 0; fds && i < n_fds; i++)
                fds[i] = SD_LISTEN_FDS_START + i;
        struct status_options opt = {
            .listen = (const char *const *)d->cfg->status_listen,
            .allow_remote = d->cfg->status_allow_remote,
            .group = d->cfg->status_group,
            .admin_uid = d->uid,
            .activated_fds = fds,
            .n_activated_fds = fds ? (size_t)n_fds : 0,
            .log = mhd_log,
        };
        char err[512] = "";
        r = status_start(d->loop, &opt, &provider, d->metrics, &d->status, err, sizeof(err));
        if (r < 0) {
                fprintf(stderr, "tarryd: %s: status_listen: %s\n", d->cfg->path, err);
                return r;
        }
        int port = status_tcp_port(d->status);
        if (port > 0)
                log_info("status endpoint on loopback port %d", port);
        return 0;
}

static bool same_list(char *const *a, size_t na, char *const *b, size_t nb)
{
        if (na != nb)
                return false;
        for (size_t i = 0; i < na; i++)
                if (strcmp(a[i], b[i]) != 0)
                        return false;
        return true;
}

static bool same_string(const char *a, const char *b)
{
        return a == b || (a && b && strcmp(a, b) == 0);
}

/* The status sockets are made once, before tarryd gives up root: a reload
 * cannot move them, so say so instead of seeming to accept the change. */
void control_note_reload(const struct tarry_config *now, const struct tarry_config *next)
{
        if (!same_list(now->status_listen, now->n_status_listen, next->status_listen,
                       next->n_status_listen))
                log_warn("reload: status_listen changed; it takes effect at restart");
        if (!same_string(now->status_group, next->status_group))
                log_warn("reload: status_group changed; it takes effect at restart");
        if (now->status_allow_remote != next->status_allow_remote)
                log_warn("reload: status_allow_remote changed; it takes effect at restart");
}

void control_stop(struct tarryd *d)
{
        status_stop(d->status);
        d->status = NULL;
        free_transcripts();
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        (void)s;
        (void)usec;
        struct tarryd *d = userdata;
        d->status_line_us = 0;
        control_update_status_line(d);
        return 0;
}

void control_update_status_line(struct tarryd *d)
{
        int64_t now = now_monotonic_us();
        if (now - d->status_line_us < 1000000 && !d->stopping) {
                /* at most once a second; the last change is written when the second is up */
                if (!d->status_timer)
                        sd_event_add_time(d->loop, &d->status_timer, CLOCK_MONOTONIC,
                                          (uint64_t)(d->status_line_us + 1000000), 100000,
                                          on_status_timer, d);
                else {
                        sd_event_source_set_time(d->status_timer,
                                                 (uint64_t)(d->status_line_us + 1000000));
                        sd_event_source_set_enabled(d->status_timer, SD_EVENT_ONESHOT);
                }
                return;
        }
        d->status_line_us = now;
        struct sched_stats st;
        sched_get_stats(d->sched, &st);
        sd_notifyf(0,
                   "STATUS=%zu queued, %d in flight, %zu destination(s) suspended; "
                   "%llu delivered, %llu deferred, %llu failed",
                   msgindex_count(d->index), d->inflight, st.suspended,
                   (unsigned long long)d->n_delivered, (unsigned long long)d->n_deferred,
                   (unsigned long long)d->n_failed);
}
