/* scheduler/diagnose.c — diagnoses for deferrals that do not clear.
 *
 * Per destination (source, route) a small record keeps the open streaks:
 * greylist deferrals after their window, reputation/rate-limit deferrals,
 * connection-level routing failures. A streak past its threshold raises its
 * diagnosis once; an accepted message clears everything at its destination,
 * any server reply clears destination_unreachable. Messages greylisted are
 * remembered (bounded) so that the same message deferred again from another
 * source address raises source_changed_mid_greylist.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "scheduler/diagnose.h"

static const char *const code_names[DIAG__MAX] = {
    [DIAG_GREYLIST_NOT_CLEARING] = "greylist_not_clearing",
    [DIAG_SOURCE_CHANGED_MID_GREYLIST] = "source_changed_mid_greylist",
    [DIAG_REPUTATION_PERSISTENT] = "reputation_persistent",
    [DIAG_AUTHENTICATION_SUSPECTED] = "authentication_suspected",
    [DIAG_DESTINATION_UNREACHABLE] = "destination_unreachable",
};

/* What to do about each; the likely causes first (docs/scheduler.md). */
static const char *const advice_text[DIAG__MAX] = {
    [DIAG_GREYLIST_NOT_CLEARING] =
        "likely causes, in order: the receiver sees another address than the one tarry binds "
        "(NAT, a pool: compare the source address with what the receiver logs); the retry gap "
        "exceeds the receiver's memory of the first attempt; it is not greylisting",
    [DIAG_SOURCE_CHANGED_MID_GREYLIST] =
        "the message was retried from another source address while greylisted, so the "
        "receiver's triplet was reset and the greylist window starts again; keep "
        "source_address stable while mail is deferred",
    [DIAG_REPUTATION_PERSISTENT] =
        "the receiver keeps refusing this source address for its reputation or rate; check "
        "blocklists, volume and complaints, run `tarryq check-sender`",
    [DIAG_AUTHENTICATION_SUSPECTED] =
        "the receiver names sender authentication; run `tarryq check-sender` to see which "
        "checks fail",
    [DIAG_DESTINATION_UNREACHABLE] =
        "no MX of this destination could be reached (refused, timed out or TLS failed); "
        "check the route, the firewall and port 25 outbound from the source address",
};

/* Words in a policy deferral that name sender authentication, and the
 * record to look at for each. Matched case-insensitively. */
static const struct {
        const char *word;
        const char *record;
} auth_words[] = {
    {"SPF", "the SPF (TXT) record of the envelope sender's domain must list the source address"},
    {"DKIM", "the DKIM signature: the selector's TXT record and the signing key"},
    {"DMARC", "the DMARC record (_dmarc.DOMAIN TXT) and SPF/DKIM alignment with From:"},
    {"reverse DNS", "the PTR record of the source address, and its forward match"},
    {"rDNS", "the PTR record of the source address, and its forward match"},
    {"PTR", "the PTR record of the source address, and its forward match"},
};

struct raised {
        bool on;
        int64_t since_us;
        char evidence[DIAG_EVIDENCE_MAX];
        char advice[DIAG_ADVICE_MAX];
};

struct dstate {
        char *source, *route;
        struct raised r[DIAG__MAX];
        int64_t window_s; /* largest greylist window seen, -1: none */
        int late;         /* greylist deferrals after the window (distinct times) */
        int64_t last_late_us;
        int64_t rep_first_us; /* 0: no streak */
        int rep_count;
        int64_t unreach_first_us; /* 0: no streak */
        int unreach_count;
};

struct tracked {
        char *queue_id, *route, *source;
};

struct diag {
        struct diag_limits lim;
        diag_note_fn note;
        void *userdata;
        struct dstate **d;
        size_t n, cap;
        struct tracked t[DIAG_TRACKED_MAX];
        size_t n_t; /* entries used, oldest first */
};

const char *diag_code_name(enum diag_code c)
{
        return c < DIAG__MAX ? code_names[c] : NULL;
}

int diag_new(const struct diag_limits *lim, diag_note_fn note, void *userdata, struct diag **out)
{
        struct diag *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->lim = *lim;
        g->note = note;
        g->userdata = userdata;
        *out = g;
        return 0;
}

static void tracked_free(struct tracked *t)
{
        free(t->queue_id);
        free(t->route);
        free(t->source);
}

void diag_free(struct diag *g)
{
        if (!g)
                return;
        for (size_t i = 0; i < g->n; i++) {
                free(g->d[i]->source);
                free(g->d[i]->route);
                free(g->d[i]);
        }
        free(g->d);
        for (size_t i = 0; i < g->n_t; i++)
                tracked_free(&g->t[i]);
        free(g);
}

void diag_set_limits(struct diag *g, const struct diag_limits *lim)
{
        g->lim = *lim;
}

static struct dstate *find(struct diag *g, const char *source, const char *route, size_t *idx)
{
        for (size_t i = 0; i < g->n; i++)
                if (strcmp(g->d[i]->route, route) == 0 && strcmp(g->d[i]->source, source) == 0) {
                        if (idx)
                                *idx = i;
                        return g->d[i];
                }
        return NULL;
}

static struct dstate *get(struct diag *g, const char *source, const char *route)
{
        struct dstate *s = find(g, source, route, NULL);
        if (s)
                return s;
        if (g->n == g->cap) {
                size_t nc = g->cap ? g->cap * 2 : 16;
                struct dstate **v = realloc(g->d, nc * sizeof(*v));
                if (!v)
                        return NULL;
                g->d = v;
                g->cap = nc;
        }
        s = calloc(1, sizeof(*s));
        if (!s || !(s->source = strdup(source)) || !(s->route = strdup(route))) {
                if (s)
                        free(s->source);
                free(s);
                return NULL;
        }
        s->window_s = -1;
        g->d[g->n++] = s;
        return s;
}

static void info_of(const struct dstate *s, enum diag_code c, struct diag_info *out)
{
        *out = (struct diag_info){
            c, s->source, s->route, s->r[c].since_us, s->r[c].evidence, s->r[c].advice};
}

/* Raise c at s (once), or refresh its evidence when already raised. */
static void raise_diag(struct diag *g, struct dstate *s, enum diag_code c, int64_t now,
                       const char *evidence, const char *advice_extra)
{
        struct raised *r = &s->r[c];
        snprintf(r->evidence, sizeof(r->evidence), "%s", evidence);
        if (r->on)
                return;
        r->on = true;
        r->since_us = now;
        snprintf(r->advice, sizeof(r->advice), "%s%s%s", advice_text[c],
                 advice_extra && *advice_extra ? "; " : "", advice_extra ? advice_extra : "");
        if (g->note) {
                struct diag_info di;
                info_of(s, c, &di);
                g->note(&di, true, g->userdata);
        }
}

static void clear_diag(struct diag *g, struct dstate *s, enum diag_code c)
{
        if (!s->r[c].on)
                return;
        if (g->note) {
                struct diag_info di;
                info_of(s, c, &di);
                g->note(&di, false, g->userdata);
        }
        s->r[c].on = false;
}

static bool anything_open(const struct dstate *s)
{
        for (int c = 0; c < DIAG__MAX; c++)
                if (s->r[c].on)
                        return true;
        /* the window comes with every event: alone it keeps nothing open */
        return s->late || s->rep_first_us || s->unreach_first_us;
}

static void forget(struct diag *g, size_t idx)
{
        free(g->d[idx]->source);
        free(g->d[idx]->route);
        free(g->d[idx]);
        g->d[idx] = g->d[--g->n];
}

/* A short one-line copy of a reply for evidence. */
static void one_line(const char *text, char *out, size_t len)
{
        snprintf(out, len, "%s", text ? text : "");
        for (char *p = out; *p; p++)
                if (*p == '\r' || *p == '\n' || *p == '\t')
                        *p = ' ';
}

static const char *src_name(const char *s)
{
        return *s ? s : "the kernel's choice";
}

/* ---- source changed: the messages currently greylisted ---- */

static struct tracked *tracked_find(struct diag *g, const char *id, const char *route)
{
        for (size_t i = 0; i < g->n_t; i++)
                if (strcmp(g->t[i].queue_id, id) == 0 && strcmp(g->t[i].route, route) == 0)
                        return &g->t[i];
        return NULL;
}

static void tracked_drop(struct diag *g, struct tracked *t)
{
        tracked_free(t);
        size_t i = (size_t)(t - g->t);
        memmove(&g->t[i], &g->t[i + 1], (g->n_t - i - 1) * sizeof(g->t[0]));
        g->n_t--;
}

static int tracked_add(struct diag *g, const char *id, const char *route, const char *source)
{
        if (g->n_t == DIAG_TRACKED_MAX)
                tracked_drop(g, &g->t[0]);
        struct tracked t = {strdup(id), strdup(route), strdup(source)};
        if (!t.queue_id || !t.route || !t.source) {
                tracked_free(&t);
                return -ENOMEM;
        }
        g->t[g->n_t++] = t;
        return 0;
}

static int check_source_change(struct diag *g, struct dstate *s, const struct diag_event *ev,
                               const char *source, int64_t now)
{
        if (!ev->queue_id)
                return 0;
        struct tracked *t = tracked_find(g, ev->queue_id, ev->route);
        if (!t)
                return tracked_add(g, ev->queue_id, ev->route, source);
        if (strcmp(t->source, source) == 0)
                return 0;
        char ev_text[DIAG_EVIDENCE_MAX];
        snprintf(ev_text, sizeof(ev_text),
                 "message %s was greylisted from %s, then deferred again from %s", ev->queue_id,
                 src_name(t->source), src_name(source));
        raise_diag(g, s, DIAG_SOURCE_CHANGED_MID_GREYLIST, now, ev_text, NULL);
        char *dup = strdup(source);
        if (!dup)
                return -ENOMEM;
        free(t->source);
        t->source = dup;
        return 0;
}

/* ---- the streaks ---- */

static void on_greylist(struct diag *g, struct dstate *s, const struct diag_event *ev, int64_t now)
{
        if (ev->window_s > s->window_s)
                s->window_s = ev->window_s;
        int64_t first = ev->first_deferral_us ? ev->first_deferral_us : now;
        char last[200], text[DIAG_EVIDENCE_MAX];
        one_line(ev->text, last, sizeof(last));
        if (s->window_s >= 0) {
                if (now < first + s->window_s * 1000000 || now == s->last_late_us)
                        return;
                s->late++;
                s->last_late_us = now;
                if (s->late < 1 + DIAG_GREYLIST_EXTRA_ATTEMPTS)
                        return;
                snprintf(text, sizeof(text),
                         "%d deferrals from %s after the %llds greylist window; last: %s", s->late,
                         src_name(s->source), (long long)s->window_s, last);
        } else {
                if (now - first < g->lim.greylist_no_window_s * 1000000)
                        return;
                snprintf(text, sizeof(text),
                         "greylisted from %s for %llds with no window known; last: %s",
                         src_name(s->source), (long long)((now - first) / 1000000), last);
        }
        raise_diag(g, s, DIAG_GREYLIST_NOT_CLEARING, now, text, NULL);
}

static void on_reputation(struct diag *g, struct dstate *s, const struct diag_event *ev,
                          int64_t now)
{
        if (!s->rep_first_us)
                s->rep_first_us = now;
        s->rep_count++;
        if (now - s->rep_first_us < g->lim.reputation_s * 1000000)
                return;
        char last[200], text[DIAG_EVIDENCE_MAX], extra[300] = "";
        one_line(ev->text, last, sizeof(last));
        snprintf(text, sizeof(text), "%d %s deferrals from %s over %llds; last: %s", s->rep_count,
                 reply_class_name(ev->cls), src_name(s->source),
                 (long long)((now - s->rep_first_us) / 1000000), last);
        if (ev->remediation)
                snprintf(extra, sizeof(extra), "the provider's page: %s", ev->remediation);
        raise_diag(g, s, DIAG_REPUTATION_PERSISTENT, now, text, extra);
}

static const char *auth_word_in(const char *text, size_t *which)
{
        if (!text)
                return NULL;
        for (size_t i = 0; i < sizeof(auth_words) / sizeof(auth_words[0]); i++) {
                size_t n = strlen(auth_words[i].word);
                for (const char *p = text; *p; p++) {
                        if (strncasecmp(p, auth_words[i].word, n) != 0)
                                continue;
                        /* a whole word: "PTR", not "interrupted" */
                        bool left = p == text || !((p[-1] | 0x20) >= 'a' && (p[-1] | 0x20) <= 'z');
                        char c = p[n];
                        bool right = !((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
                        if (left && right) {
                                *which = i;
                                return auth_words[i].word;
                        }
                }
        }
        return NULL;
}

static void on_policy(struct diag *g, struct dstate *s, const struct diag_event *ev, int64_t now)
{
        size_t which;
        const char *word = auth_word_in(ev->text, &which);
        if (!word)
                return;
        char last[300], text[DIAG_EVIDENCE_MAX], extra[300];
        one_line(ev->text, last, sizeof(last));
        snprintf(text, sizeof(text), "policy deferral naming %s: %s", word, last);
        snprintf(extra, sizeof(extra), "look at %s", auth_words[which].record);
        raise_diag(g, s, DIAG_AUTHENTICATION_SUSPECTED, now, text, extra);
}

static void on_unreachable(struct diag *g, struct dstate *s, const struct diag_event *ev,
                           int64_t now)
{
        if (!s->unreach_first_us)
                s->unreach_first_us = now;
        s->unreach_count++;
        if (now - s->unreach_first_us < g->lim.unreachable_s * 1000000)
                return;
        char last[200], text[DIAG_EVIDENCE_MAX];
        one_line(ev->text, last, sizeof(last));
        snprintf(text, sizeof(text), "%d attempts reached no MX over %llds; last: %s",
                 s->unreach_count, (long long)((now - s->unreach_first_us) / 1000000), last);
        raise_diag(g, s, DIAG_DESTINATION_UNREACHABLE, now, text, NULL);
}

static void on_accepted(struct diag *g, struct dstate *s)
{
        for (int c = 0; c < DIAG__MAX; c++)
                clear_diag(g, s, c);
        s->window_s = -1;
        s->late = 0;
        s->last_late_us = 0;
        s->rep_first_us = 0;
        s->rep_count = 0;
        s->unreach_first_us = 0;
        s->unreach_count = 0;
}

int diag_on_event(struct diag *g, const struct diag_event *ev, int64_t now_us)
{
        const char *source = ev->source ? ev->source : "";
        if (!ev->route)
                return 0;
        if (ev->outcome != DIAG_DEFERRED) {
                struct tracked *t = ev->queue_id ? tracked_find(g, ev->queue_id, ev->route) : NULL;
                if (t)
                        tracked_drop(g, t);
        }
        if (ev->outcome == DIAG_ACCEPTED) {
                size_t idx;
                struct dstate *s = find(g, source, ev->route, &idx);
                if (s) {
                        on_accepted(g, s);
                        forget(g, idx);
                }
                return 0;
        }
        struct dstate *s = get(g, source, ev->route);
        if (!s)
                return -ENOMEM;
        int r = 0;
        if (ev->reached) {
                s->unreach_first_us = 0;
                s->unreach_count = 0;
                clear_diag(g, s, DIAG_DESTINATION_UNREACHABLE);
        }
        if (ev->outcome == DIAG_DEFERRED) {
                switch (ev->cls) {
                case CLASS_GREYLIST:
                case CLASS_UNKNOWN_TEMP:
                        on_greylist(g, s, ev, now_us);
                        r = check_source_change(g, s, ev, source, now_us);
                        break;
                case CLASS_REPUTATION:
                case CLASS_RATE_LIMIT:
                        on_reputation(g, s, ev, now_us);
                        break;
                case CLASS_POLICY:
                        on_policy(g, s, ev, now_us);
                        break;
                case CLASS_ROUTING:
                        if (!ev->reached)
                                on_unreachable(g, s, ev, now_us);
                        break;
                default:
                        break;
                }
        }
        size_t idx;
        if (!anything_open(s) && find(g, source, ev->route, &idx))
                forget(g, idx);
        return r;
}

int diag_foreach(const struct diag *g, int (*cb)(const struct diag_info *di, void *userdata),
                 void *userdata)
{
        for (size_t i = 0; i < g->n; i++)
                for (int c = 0; c < DIAG__MAX; c++) {
                        if (!g->d[i]->r[c].on)
                                continue;
                        struct diag_info di;
                        info_of(g->d[i], c, &di);
                        int r = cb(&di, userdata);
                        if (r)
                                return r;
                }
        return 0;
}

size_t diag_count(const struct diag *g, enum diag_code code)
{
        size_t n = 0;
        for (size_t i = 0; i < g->n; i++)
                n += code < DIAG__MAX && g->d[i]->r[code].on;
        return n;
}
