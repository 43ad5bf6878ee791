/* scheduler/classify.c — SMTP reply → class, retry hint, matching rule.
 *
 * The one parser of server replies in the scheduler: it reads at most
 * SCHED_TEXT_MAX bytes, tolerates any bytes, and does bounded work.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <regex.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileio.h"
#include "scheduler/internal.h"
#include "scheduler/scheduler.h"

/* A parsed reply: code, enhanced code, text without code prefixes. */
struct parsed {
        int code;
        char enhanced[SCHED_ENH_MAX];
        char text[SCHED_TEXT_MAX + 1];
};

#define UNIT_RE "(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)"

/* ---- parsing ---- */

static bool is_code_at(const char *p, const char *end)
{
        if (end - p < 3 || !isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1]) ||
            !isdigit((unsigned char)p[2]))
                return false;
        return end - p == 3 || p[3] == ' ' || p[3] == '-' || p[3] == '\t';
}

/* "4.7.1" at p followed by a space or the end: its length, else 0. */
static size_t enhanced_len_at(const char *p, const char *end)
{
        const char *q = p;
        if (q >= end || !strchr("245", *q))
                return 0;
        q++;
        for (int part = 0; part < 2; part++) {
                if (q >= end || *q != '.')
                        return 0;
                q++;
                int digits = 0;
                while (q < end && isdigit((unsigned char)*q) && digits < 3) {
                        q++;
                        digits++;
                }
                if (digits == 0)
                        return 0;
        }
        if (q < end && !isspace((unsigned char)*q))
                return 0;
        return (size_t)(q - p);
}

/* A vendor tag or host name before the enhanced code ("451 cuda_nsu 4.4.3
 * ...", "421 mx1.example.net 4.7.0 ..."): one token of letters, digits and
 * "_.-" with at least one of "_.-" or a digit (so a plain word is not taken
 * for a tag), then a space. Its length, else 0. */
static size_t tag_len_at(const char *p, const char *end)
{
        const char *q = p;
        bool marked = false;
        while (q < end && q - p < 32 &&
               (isalnum((unsigned char)*q) || *q == '_' || *q == '.' || *q == '-')) {
                if (!isalpha((unsigned char)*q))
                        marked = true;
                q++;
        }
        if (q == p || !marked || q >= end || *q != ' ')
                return 0;
        return (size_t)(q - p);
}

static void append_line(struct parsed *pr, size_t *len, const char *p, const char *end)
{
        while (p < end && (*p == ' ' || *p == '\t'))
                p++;
        if (p == end)
                return;
        if (*len > 0 && *len < SCHED_TEXT_MAX)
                pr->text[(*len)++] = ' ';
        for (; p < end && *len < SCHED_TEXT_MAX; p++) {
                unsigned char ch = (unsigned char)*p;
                pr->text[(*len)++] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
        }
}

/* qmail and the MTAs built on it put the enhanced code last, in "(#4.3.0)"
 * ("451 qq write error or disk full (#4.3.0)", "(#4.5.1 - chkuser)"). When no
 * line starts with one, the last such code is the reply's: it is taken, and
 * cut from the text, as a leading one is. */
static void take_trailing_enhanced(struct parsed *pr, size_t *len)
{
        char *open = NULL, *after = NULL, *end = pr->text + *len;
        size_t el = 0;
        for (char *p = strstr(pr->text, "(#"); p; p = strstr(p + 2, "(#")) {
                size_t room = (size_t)(end - (p + 2));
                char *close = memchr(p + 2, ')', room < 32 ? room : 32);
                size_t n = close ? enhanced_len_at(p + 2, close) : 0;
                if (n > 0 && n < SCHED_ENH_MAX) {
                        open = p;
                        after = close + 1;
                        el = n;
                }
        }
        if (!open)
                return;
        memcpy(pr->enhanced, open + 2, el);
        pr->enhanced[el] = '\0';
        memmove(open, after, (size_t)(end - after) + 1);
        *len -= (size_t)(after - open);
        while (*len > 0 && pr->text[*len - 1] == ' ')
                pr->text[--*len] = '\0';
}

/* Strip "451-" / "451 " and a leading enhanced code from each line; join. */
static void parse_reply(const struct sched_reply *r, struct parsed *pr)
{
        const char *text = r->text ? r->text : "";
        size_t tl = strnlen(text, SCHED_TEXT_MAX);
        const char *p = text, *end = text + tl;
        size_t len = 0;
        bool first = true;

        memset(pr, 0, offsetof(struct parsed, text));
        pr->code = r->code;
        if (r->enhanced && *r->enhanced)
                snprintf(pr->enhanced, sizeof(pr->enhanced), "%s", r->enhanced);
        while (p < end) {
                const char *eol = memchr(p, '\n', (size_t)(end - p));
                const char *le = eol ? eol : end;
                if (le > p && le[-1] == '\r')
                        le--;
                if (is_code_at(p, le)) {
                        if (first && pr->code == 0)
                                pr->code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
                        p += le - p > 3 ? 4 : 3;
                }
                size_t el = enhanced_len_at(p, le);
                if (el > 0) {
                        if (first && pr->enhanced[0] == '\0' && el < SCHED_ENH_MAX)
                                memcpy(pr->enhanced, p, el);
                        p += el;
                } else if (first && pr->enhanced[0] == '\0') {
                        /* the code after a vendor tag: taken, and cut from the
                         * text as a leading one is; the tag stays */
                        size_t tag = tag_len_at(p, le);
                        size_t te = tag ? enhanced_len_at(p + tag + 1, le) : 0;
                        if (te > 0 && te < SCHED_ENH_MAX) {
                                memcpy(pr->enhanced, p + tag + 1, te);
                                append_line(pr, &len, p, p + tag);
                                p += tag + 1 + te;
                        }
                }
                append_line(pr, &len, p, le);
                first = false;
                p = eol ? eol + 1 : end;
        }
        pr->text[len] = '\0';
        if (pr->enhanced[0] == '\0')
                take_trailing_enhanced(pr, &len);
}

/* ---- pattern matching ---- */

/* fnmatch against each '|'-separated alternative of pat. */
static bool alt_match(const char *pat, const char *s)
{
        char buf[128];
        while (*pat) {
                size_t n = strcspn(pat, "|");
                if (n < sizeof(buf)) {
                        memcpy(buf, pat, n);
                        buf[n] = '\0';
                        if (fnmatch(buf, s, 0) == 0)
                                return true;
                }
                pat += n;
                if (*pat == '|')
                        pat++;
        }
        return false;
}

static bool rule_matches(const struct rule *ru, const struct parsed *pr, const char *code)
{
        if (!alt_match(ru->code, code))
                return false;
        if (strcmp(ru->enhanced, "-") == 0) {
                if (pr->enhanced[0])
                        return false;
        } else if (strcmp(ru->enhanced, "*") != 0) {
                if (!pr->enhanced[0] || !alt_match(ru->enhanced, pr->enhanced))
                        return false;
        }
        return regexec(&ru->re, pr->text, 0, NULL, 0) == 0;
}

/* ---- hints ---- */

static int64_t unit_seconds(const char *u)
{
        switch (tolower((unsigned char)u[0])) {
        case 'h':
                return 3600;
        case 'm':
                return 60;
        default:
                return 1;
        }
}

static int64_t num_at(const char *s, const regmatch_t *m)
{
        int64_t v = 0;
        for (regoff_t i = m->rm_so; i < m->rm_eo && v < 100000000; i++)
                v = v * 10 + (s[i] - '0');
        return v;
}

static int64_t clamp_hint(int64_t v)
{
        return v > SCHED_HINT_MAX_S ? SCHED_HINT_MAX_S : v;
}

static int64_t find_hint(const struct sched_classifier *c, const char *t)
{
        regmatch_t m[10];
        if (regexec(&c->hint_clock, t, 10, m, 0) == 0)
                return clamp_hint(num_at(t, &m[4]) * 3600 + num_at(t, &m[5]) * 60 +
                                  num_at(t, &m[6]));
        if (regexec(&c->hint_rel, t, 10, m, 0) == 0) {
                /* a compound delay ("1 hour(s) 25 minute(s)") adds up its
                 * parts; a few at most, each right after the one before */
                int64_t v = num_at(t, &m[7]) * unit_seconds(t + m[8].rm_so);
                const char *p = t + m[0].rm_eo;
                for (int i = 0; i < 3 && regexec(&c->hint_more, p, 10, m, 0) == 0; i++) {
                        v += num_at(p, &m[3]) * unit_seconds(p + m[4].rm_so);
                        p += m[0].rm_eo;
                }
                return clamp_hint(v);
        }
        if (regexec(&c->hint_later, t, 10, m, 0) == 0)
                return clamp_hint(num_at(t, &m[1]) * unit_seconds(t + m[2].rm_so));
        return -1;
}

/* ---- tarry's own failures ----
 *
 * A failure of tarry's own (origin OUTCOME_FROM_TARRY) is classified from its
 * typed reason, one row each; its synthesized text is for people and is never
 * matched against the rules (an "out of memory" of ours is not the
 * receiver's "system trouble", which would back off the destination). A
 * permanent one (5xx: no such domain, null MX, a refused address) is
 * permanent like any 5xx. Rows follow what the reason says about the
 * destination: the path (routing: backed off, probed), the receiver's state
 * (overload), or nothing at all (unknown_temp: no pause, cautious retries). */
struct local_rule {
        enum reply_class cls;
        const char *name;
        const char *reason;
};

static const struct local_rule local_rules[] = {
    [OUTCOME_LOCAL_NONE] = {CLASS_UNKNOWN_TEMP, "tarry-unknown",
                            "tarry's own failure without a reason: retry conservatively"},
    [OUTCOME_LOCAL_DNS] = {CLASS_ROUTING, "tarry-dns",
                           "our lookup of the next hop failed for now: the path, not the message"},
    [OUTCOME_LOCAL_CONNECT] = {CLASS_ROUTING, "tarry-connect",
                               "the next hop does not accept connections"},
    [OUTCOME_LOCAL_TIMEOUT] = {CLASS_OVERLOAD, "tarry-timeout",
                               "the receiver stopped answering (connect, command or DATA timeout)"},
    [OUTCOME_LOCAL_DROPPED] = {CLASS_OVERLOAD, "tarry-dropped",
                               "the receiver dropped the connection during the session"},
    [OUTCOME_LOCAL_TLS] = {CLASS_ROUTING, "tarry-tls",
                           "TLS to this route failed (handshake, certificate): the path"},
    [OUTCOME_LOCAL_POLICY] = {CLASS_ROUTING, "tarry-mta-sts",
                              "the domain's MTA-STS policy allows none of its MX hosts now"},
    [OUTCOME_LOCAL_PROTOCOL] = {CLASS_UNKNOWN_TEMP, "tarry-protocol",
                                "a garbled or endless reply: a broken server, not a busy one"},
    [OUTCOME_LOCAL_REFUSAL] = {CLASS_UNKNOWN_TEMP, "tarry-refusal",
                               "tarry would not send it there (normally permanent)"},
    [OUTCOME_LOCAL_RESOURCE] = {CLASS_UNKNOWN_TEMP, "tarry-local-problem",
                                "a problem on our side (memory, body file, auth file): nothing "
                                "is known about the destination"},
    [OUTCOME_LOCAL_WORKER] = {CLASS_UNKNOWN_TEMP, "tarry-worker",
                              "our delivery worker failed: nothing is known about the destination"},
    [OUTCOME_LOCAL_SHUTDOWN] = {CLASS_UNKNOWN_TEMP, "tarry-shutdown",
                                "aborted by our own shutdown: nothing is known about the "
                                "destination"},
};
_Static_assert(sizeof(local_rules) / sizeof(local_rules[0]) == OUTCOME__LOCAL_MAX,
               "a row per local reason");

const char *sched_local_rule_name(enum outcome_local l)
{
        return (unsigned)l < OUTCOME__LOCAL_MAX ? local_rules[l].name : NULL;
}

/* ---- classification ---- */

static void set_verdict(struct sched_verdict *out, enum reply_class cls, const char *rule,
                        const char *reason)
{
        out->cls = cls;
        out->rule = rule;
        out->reason = reason;
}

static void set_rule_verdict(struct sched_verdict *out, const struct rule *ru)
{
        set_verdict(out, ru->cls, ru->name, ru->reason);
        out->file = ru->file;
        out->action = ru->has_action ? &ru->action : NULL;
}

/* Word families: rules with a weight. A run of them in the rule order (the
 * shipped file has one, after its rules; an operator file may have its own)
 * is tried where it stands, all at once: each family whose code, enhanced
 * code and text match adds its weight to its class. The class with the
 * highest score wins (on a tie, the one whose first matching family comes
 * first); its first matching family is the verdict's rule. No family of the
 * run matching: false, and the rules after the run are tried. So a text that
 * uses words many servers use for one cause ("too many", "quota", "load",
 * "resolve") gets that cause although no rule was written for its wording,
 * and a named cause outweighs a bare verdict ("denied"). *end: the index
 * after the run. */
static bool score_families(const struct sched_classifier *c, size_t from, size_t *end,
                           const struct parsed *pr, const char *code, struct sched_verdict *out)
{
        int score[CLASS__MAX] = {0};
        const struct rule *first[CLASS__MAX] = {0};
        size_t i = from;
        for (; i < c->n_rules && c->rules[i].weight > 0; i++) {
                const struct rule *ru = &c->rules[i];
                if (!rule_matches(ru, pr, code))
                        continue;
                score[ru->cls] += ru->weight;
                if (!first[ru->cls])
                        first[ru->cls] = ru;
        }
        const struct rule *best = NULL;
        for (int k = 0; k < CLASS__MAX; k++) {
                if (!first[k])
                        continue;
                if (!best || score[k] > score[best->cls] ||
                    (score[k] == score[best->cls] && first[k] < best))
                        best = first[k];
        }
        *end = i;
        if (!best)
                return false;
        set_rule_verdict(out, best);
        return true;
}

void sched_classify(const struct sched_classifier *c, const struct sched_reply *r,
                    struct sched_verdict *out)
{
        /* on the stack: its 8 KB, allocated per reply, were a large-bin
         * request, and each ran malloc_consolidate on tarryd's loop */
        struct parsed parsed;
        struct parsed *pr = &parsed;
        memset(out, 0, sizeof(*out));
        out->hint_s = -1;
        parse_reply(r, pr);
        out->code = pr->code;
        memcpy(out->enhanced, pr->enhanced, sizeof(out->enhanced));
        if (r->origin == OUTCOME_FROM_TARRY && (pr->code < 500 || pr->code >= 600)) {
                const struct local_rule *lr = (unsigned)r->local < OUTCOME__LOCAL_MAX
                                                  ? &local_rules[r->local]
                                                  : &local_rules[OUTCOME_LOCAL_NONE];
                set_verdict(out, lr->cls, lr->name, lr->reason);
                return;
        }
        out->hint_s = find_hint(c, pr->text);

        if (pr->code >= 200 && pr->code < 300) {
                out->accepted = true;
                set_verdict(out, CLASS__MAX, "accepted", "2xx: the receiver took it");
                return;
        }
        if (pr->code >= 500 && pr->code < 600) {
                set_verdict(out, CLASS_PERMANENT, "5xx-permanent",
                            "any 5xx is permanent, whatever its words (RFC 5321 4.2.1)");
                return;
        }
        if (pr->code < 400 || pr->code >= 500) {
                set_verdict(out, CLASS_UNKNOWN_TEMP, pr->code ? "unexpected-code" : "unparseable",
                            "not a 4xx/5xx reply: treated as temporary so nothing is lost");
                return;
        }
        char code[8];
        snprintf(code, sizeof(code), "%03d", pr->code);
        for (size_t i = 0; i < c->n_rules;) {
                const struct rule *ru = &c->rules[i];
                if (ru->weight > 0) {
                        if (score_families(c, i, &i, pr, code, out))
                                return;
                        continue;
                }
                i++;
                if (rule_matches(ru, pr, code)) {
                        set_rule_verdict(out, ru);
                        return;
                }
        }
        set_verdict(out, CLASS_UNKNOWN_TEMP, "no-rule-matched",
                    "a 4xx no rule recognises: conservative default");
}

void sched_classify_text(const struct sched_classifier *c, const char *text,
                         struct sched_verdict *out)
{
        struct sched_reply r = {.text = text};
        sched_classify(c, &r, out);
}

/* ---- construction ---- */

void sched_classifier_free(struct sched_classifier *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->n_rules; i++)
                policy_rule_free(&c->rules[i]);
        free(c->rules);
        for (size_t i = 0; i < c->n_providers; i++)
                policy_provider_free(&c->providers[i]);
        free(c->providers);
        for (size_t i = 0; i < c->n_windows; i++) {
                free(c->windows[i].who);
                free(c->windows[i].source);
        }
        free(c->windows);
        for (size_t i = 0; i < c->n_files; i++)
                free(c->files[i]);
        free(c->files);
        regfree(&c->hint_rel);
        regfree(&c->hint_clock);
        regfree(&c->hint_later);
        regfree(&c->hint_more);
        free(c);
}

/* The hint patterns are compile-time constants: a failure is a bug the tests catch. */
static int compile_hints(struct sched_classifier *c)
{
        if (policy_compile(&c->hint_rel,
                           "(try(ing)? (it )?again|retry(ing)?|come back|resend|send (it )?again|"
                           "accepted|greylisted|wait)[^.;:0-9]{0,24}(in|after|for)? +([0-9]{1,7}) "
                           "*" UNIT_RE "\\b",
                           NULL, 0) < 0)
                return -EINVAL;
        if (policy_compile(&c->hint_clock,
                           "(come back|try (it )?again|retry|wait)[^.;0-9]{0,24}(in|after|for)? "
                           "*([0-9]{1,3}):([0-9]{2}):([0-9]{2})\\b",
                           NULL, 0) < 0) {
                regfree(&c->hint_rel);
                return -EINVAL;
        }
        if (policy_compile(&c->hint_later, "\\b([0-9]{1,7}) *" UNIT_RE " +(later|left)\\b", NULL,
                           0) < 0) {
                regfree(&c->hint_rel);
                regfree(&c->hint_clock);
                return -EINVAL;
        }
        if (policy_compile(&c->hint_more, "^(\\(s\\))?,? +(and +)?([0-9]{1,7}) *" UNIT_RE "\\b",
                           NULL, 0) < 0) {
                regfree(&c->hint_rel);
                regfree(&c->hint_clock);
                regfree(&c->hint_later);
                return -EINVAL;
        }
        return 0;
}

/* The whole file in memory (policy files are small: at most 16 MiB). */
static int read_file(const char *path, char **out, char *err, size_t errlen)
{
        int r = file_read_all_at(AT_FDCWD, path, 16u << 20, out, NULL);
        if (r < 0 && err && errlen) {
                if (r == -EFBIG)
                        snprintf(err, errlen, "%s: larger than 16 MiB", path);
                else
                        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        }
        return r;
}

int sched_classifier_new_from(const char *path, struct sched_classifier **out, char *err,
                              size_t errlen)
{
        if (!path)
                path = sched_policy_default_path();
        _cleanup_free_ char *text = NULL;
        int r = read_file(path, &text, err, errlen);
        if (r < 0)
                return r;
        struct sched_classifier *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        if ((r = compile_hints(c)) < 0) {
                free(c);
                return r;
        }
        r = policy_load(c, path, text, true, err, errlen);
        if (r < 0) {
                sched_classifier_free(c);
                return r;
        }
        *out = c;
        return 0;
}

int sched_classifier_new(struct sched_classifier **out)
{
        return sched_classifier_new_from(NULL, out, NULL, 0);
}

int sched_classifier_load_rules_string(struct sched_classifier *c, const char *name,
                                       const char *text, char *err, size_t errlen)
{
        const char *p = text + strspn(text, " \t\r\n");
        if (*p == '{' || *p == '[')
                return policy_load(c, name, text, false, err, errlen);
        return policy_load_lines(c, name, text, err, errlen);
}

int sched_classifier_load_rules(struct sched_classifier *c, const char *path, char *err,
                                size_t errlen)
{
        _cleanup_free_ char *text = NULL;
        int r = read_file(path, &text, err, errlen);
        if (r < 0)
                return r;
        return sched_classifier_load_rules_string(c, path, text, err, errlen);
}

int sched_classifier_for_config(const struct tarry_config *cfg, struct sched_classifier **out,
                                char *err, size_t errlen)
{
        struct sched_classifier *c = NULL;
        int r = sched_classifier_new_from(cfg->policy_file, &c, err, errlen);
        if (r < 0)
                return r;
        if (cfg->classifier_rules &&
            (r = sched_classifier_load_rules(c, cfg->classifier_rules, err, errlen)) < 0) {
                sched_classifier_free(c);
                return r;
        }
        *out = c;
        return 0;
}

/* ---- where the shipped file is ---- */

#ifndef TARRY_POLICY_INSTALLED
#error "meson defines TARRY_POLICY_INSTALLED, TARRY_POLICY_SOURCE and TARRY_BUILD_ROOT"
#endif

const char *sched_policy_default_path(void)
{
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        size_t lb = strlen(TARRY_BUILD_ROOT);
        if (n > 0 && (size_t)n > lb && strncmp(exe, TARRY_BUILD_ROOT, lb) == 0 && exe[lb] == '/')
                return TARRY_POLICY_SOURCE;
        return TARRY_POLICY_INSTALLED;
}
