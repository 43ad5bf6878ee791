/* bench/greylist-sim — tarry's real classifier and scheduler on a virtual
 * clock against modelled greylisting receivers, next to Postfix's and Exim's
 * default retry behaviour.
 *
 * Each receiver defers a new (IP, sender, recipient) triplet with its real
 * default reply and accepts it once D seconds have passed since it first saw
 * it, unless more than `window` seconds passed (then it starts over).
 * For tarry: first message to a destination, then a second message (new
 * recipient) an hour later, after learning. Postfix: backoff = queue age
 * clamped to 300..4000 s, acted on at 300 s queue scans. Exim: retry rule
 * "F,2h,15m; G,16h,1h,1.5; F,4d,6h" with 5-minute queue runs. The anchors
 * depend on where the first attempt falls between two scans: every phase
 * 0..299 s is run, the mean and the best case are shown.
 *
 * Usage: greylist-sim [-C tarry.conf] [--markdown]
 * Exit status 1 when a target of the issue is missed.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/scheduler.h"

#define S   1000000LL
#define T0  (1700000000LL * S)
#define DAY 86400

struct receiver {
        const char *name;
        int64_t delay_s, window_s;
        const char *reply; /* %R: remaining time hh:mm:ss (milter-greylist) */
        bool hinted;
};

static const struct receiver receivers[] = {
    {"postgrey", 300, 2 * DAY,
     "450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see "
     "http://postgrey.schweikert.ch/help/example.com.html",
     false},
    {"rspamd", 300, 1 * DAY, "451 4.7.1 Try again later", false},
    {"OpenBSD spamd", 1500, 4 * 3600, "451 Temporary failure, please try again later.", false},
    {"milter-greylist", 1800, 5 * DAY, "451 4.7.1 Greylisting in action, please come back in %R",
     true},
    {"greylistd", 3600, 8 * 3600,
     "451 192.0.2.10 is not yet authorized to deliver mail from <app@example.net> to "
     "<bob@example.com>. Please try later.",
     false},
    {"generic hinted", 90, 1 * DAY, "451 4.7.1 Greylisted, try again in 90 seconds", true},
};

/* ---- the receiver model ---- */

struct triplet {
        bool seen;
        int64_t first_us;
};

/* true: accepted. Otherwise the reply text goes to buf. */
static bool receiver_answer(const struct receiver *rc, struct triplet *tr, int64_t now, char *buf,
                            size_t len)
{
        if (!tr->seen || now - tr->first_us > rc->window_s * S) {
                tr->seen = true;
                tr->first_us = now;
        }
        int64_t waited = (now - tr->first_us) / S;
        if (waited >= rc->delay_s)
                return true;
        const char *r = strstr(rc->reply, "%R");
        if (!r) {
                snprintf(buf, len, "%s", rc->reply);
        } else {
                int64_t left = rc->delay_s - waited;
                snprintf(buf, len, "%.*s%02lld:%02lld:%02lld%s", (int)(r - rc->reply), rc->reply,
                         (long long)(left / 3600), (long long)(left / 60 % 60),
                         (long long)(left % 60), r + 2);
        }
        return false;
}

/* ---- tarry ---- */

struct result {
        double seconds;
        int attempts;
        bool delivered;
};

static struct result tarry_message(struct sched *s, const struct receiver *rc, int64_t start)
{
        struct triplet tr = {0};
        struct sched_item *it;
        struct result res = {0};
        if (sched_add(s, "192.0.2.10", "mx:example.com", start, start + 5LL * DAY * S, NULL, &it) <
            0)
                return res;
        struct sched_rcpt_result rr = {.prev_class = -1};
        int64_t now = start;
        for (;;) {
                now = sched_next_due(s, now);
                struct sched_item *out[1];
                if (now == INT64_MAX || sched_pop_due(s, now, out, 1) != 1)
                        break;
                res.attempts++;
                char text[512];
                bool ok = receiver_answer(rc, &tr, now, text, sizeof(text));
                struct sched_reply reply = {.text = ok ? "250 2.0.0 Ok: queued" : text};
                rr.reply = &reply;
                struct sched_decision d;
                int r = sched_on_result(s, it, now, NULL, &rr, 1, &d);
                if (d.action == SCHED_DELIVERED) {
                        res.delivered = true;
                        res.seconds = (double)(now - start) / S;
                        break;
                }
                if (r <= 0)
                        break;
                rr.deferrals++;
                rr.first_deferral_us = d.first_deferral_us;
                rr.last_deferral_us = now;
                rr.prev_class = (int)d.cls;
        }
        return res;
}

/* ---- the anchors ---- */

static int64_t next_scan(int64_t due, int64_t phase, int64_t every)
{
        /* scans at phase + k*every (relative to the first attempt at 0) */
        int64_t k = (due - phase + every - 1) / every;
        return phase + (k < 0 ? 0 : k) * every;
}

static int64_t postfix_next(int64_t t)
{
        int64_t backoff = t < 300 ? 300 : t > 4000 ? 4000 : t; /* age = t (arrival at 0) */
        return t + backoff;
}

static int64_t exim_next(int64_t t)
{
        if (t < 2 * 3600)
                return t + 15 * 60;
        if (t < 16 * 3600) {
                /* G,16h,1h,1.5: intervals 1h, 1.5h, 2.25h … from the end of the F rule */
                double iv = 3600;
                double at = 2 * 3600;
                while (at + iv <= t)
                        at += iv, iv *= 1.5;
                return t + (int64_t)iv;
        }
        return t + 6 * 3600;
}

static struct result anchor_message(const struct receiver *rc, int64_t phase,
                                    int64_t (*next)(int64_t))
{
        struct triplet tr = {0};
        struct result res = {0};
        char buf[512];
        int64_t t = 0;
        while (t < 5LL * DAY) {
                res.attempts++;
                if (receiver_answer(rc, &tr, T0 + t * S, buf, sizeof(buf))) {
                        res.delivered = true;
                        res.seconds = (double)t;
                        return res;
                }
                t = next_scan(next(t), phase, 300);
        }
        return res;
}

struct anchor {
        double mean_s, best_s, mean_attempts;
};

static struct anchor anchor(const struct receiver *rc, int64_t (*next)(int64_t))
{
        struct anchor a = {0, 1e18, 0};
        for (int64_t p = 0; p < 300; p++) {
                struct result r = anchor_message(rc, p, next);
                a.mean_s += r.seconds / 300;
                a.mean_attempts += (double)r.attempts / 300;
                if (r.seconds < a.best_s)
                        a.best_s = r.seconds;
        }
        return a;
}

/* ---- report ---- */

static bool check(const struct receiver *rc, const struct result *first,
                  const struct result *second, const struct anchor *pf, const struct anchor *ex,
                  char *why, size_t len)
{
        double d = (double)rc->delay_s;
        why[0] = '\0';
        if (!first->delivered || !second->delivered)
                return snprintf(why, len, "not delivered"), false;
        if (rc->hinted && (first->seconds > d + 15 || first->attempts > 2))
                return snprintf(why, len, "hinted: > D+15 s or > 2 attempts"), false;
        if (!rc->hinted && (first->seconds > 1.25 * d + 60 || first->attempts > 10))
                return snprintf(why, len, "> 1.25 D + 60 s or > 10 attempts"), false;
        if (first->seconds > (double)rc->window_s)
                return snprintf(why, len, "after the window closed"), false;
        if (second->seconds > d + 15 || second->attempts > 2)
                return snprintf(why, len, "learned: > D+15 s or > 2 attempts"), false;
        if (first->seconds > pf->mean_s || first->seconds > ex->mean_s)
                return snprintf(why, len, "later than an anchor"), false;
        return true;
}

static void fmt_time(char *buf, size_t len, double s)
{
        if (s < 600)
                snprintf(buf, len, "%.0f s", s);
        else
                snprintf(buf, len, "%.0f s = %.1f min", s, s / 60);
}

int main(int argc, char **argv)
{
        const char *conf = NULL;
        bool markdown = false;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "-C") == 0 && i + 1 < argc)
                        conf = argv[++i];
                else if (strcmp(argv[i], "--markdown") == 0)
                        markdown = true;
                else
                        return fprintf(stderr, "usage: greylist-sim [-C FILE] [--markdown]\n"), 64;
        }
        struct tarry_config *cfg;
        struct sched_classifier *cls;
        char err[512];
        int r = conf ? cfg_load(conf, &cfg, err, sizeof(err))
                     : cfg_load_string("defaults", "", &cfg, err, sizeof(err));
        if (r < 0 || sched_classifier_new(&cls) < 0)
                return fprintf(stderr, "greylist-sim: %s\n", err), 78;

        const char *sep = markdown ? " | " : "  ";
        printf("%s%-16s%s%6s%s%-18s%s%-18s%s%-22s%s%-22s%s%s\n", markdown ? "| " : "", "receiver",
               sep, "D", sep, "tarry 1st (att.)", sep, "tarry 2nd (att.)", sep,
               "Postfix mean/best (att.)", sep, "Exim mean/best (att.)", sep, "targets");
        if (markdown)
                printf("|---|---:|---|---|---|---|---|\n");
        bool all_ok = true;
        for (size_t i = 0; i < sizeof(receivers) / sizeof(receivers[0]); i++) {
                const struct receiver *rc = &receivers[i];
                struct sched *s;
                if (sched_new(cfg, cls, NULL, 1, &s) < 0)
                        return 1;
                struct result first = tarry_message(s, rc, T0);
                struct result second =
                    tarry_message(s, rc, T0 + (int64_t)(first.seconds + 3600) * S);
                sched_free(s);
                struct anchor pf = anchor(rc, postfix_next), ex = anchor(rc, exim_next);
                char why[128], a[32], b[32], c[32], d[32], e[32], f[32], dd[32];
                bool ok = check(rc, &first, &second, &pf, &ex, why, sizeof(why));
                all_ok &= ok;
                fmt_time(a, sizeof(a), first.seconds);
                fmt_time(b, sizeof(b), second.seconds);
                fmt_time(c, sizeof(c), pf.mean_s);
                fmt_time(d, sizeof(d), pf.best_s);
                fmt_time(e, sizeof(e), ex.mean_s);
                fmt_time(f, sizeof(f), ex.best_s);
                fmt_time(dd, sizeof(dd), (double)rc->delay_s);
                char t1[96], t2[96], t3[200], t4[200];
                snprintf(t1, sizeof(t1), "%s (%d)", a, first.attempts);
                snprintf(t2, sizeof(t2), "%s (%d)", b, second.attempts);
                snprintf(t3, sizeof(t3), "%s / %s (%.1f)", c, d, pf.mean_attempts);
                snprintf(t4, sizeof(t4), "%s / %s (%.1f)", e, f, ex.mean_attempts);
                printf("%s%-16s%s%6s%s%-18s%s%-18s%s%-22s%s%-22s%s%s%s\n", markdown ? "| " : "",
                       rc->name, sep, dd, sep, t1, sep, t2, sep, t3, sep, t4, sep,
                       ok ? "met" : "MISSED: ", why);
        }
        sched_classifier_free(cls);
        cfg_free(cfg);
        return all_ok ? 0 : 1;
}
