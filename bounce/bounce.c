/* bounce/bounce.c — DSN decisions and the multipart/report builder; see bounce.h. */
#include "bounce/bounce.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bounce/explain.h"
#include "bounce/text.h"
#include "common/address.h"
#include "common/cleanup.h"

#define READ_CHUNK        (16u * 1024u)
#define TEXT_WIDTH        76
#define ADDR_SHOWN        400 /* addresses in a report are cut beyond this */
#define HOST_MAX          255
#define ENVID_MAX         100 /* RFC 3461 §4.4: ENVID is at most 100 characters */
#define ORCPT_MAX         500 /* RFC 3461 §4.2: ORCPT is at most 500 characters */
#define BOUNDARY_LEN      48
#define REPLY_LINES_SHOWN 20 /* lines of a multi-line reply shown in the text part */

/* ---- decisions ---- */

void dsn_policy_from_config(struct dsn_policy *p, const struct tarry_config *cfg)
{
        *p = (struct dsn_policy){
            .myhostname = cfg->myhostname,
            .postmaster = cfg->postmaster,
            .queue_lifetime_s = cfg->queue_lifetime_s,
            .delay_dsn_after_retries = cfg->delay_dsn_after_retries,
            .delay_dsn_min_age_s = cfg->delay_dsn_min_age_s,
            .return_full_limit = DSN_RETURN_FULL_LIMIT_DEFAULT,
        };
}

bool dsn_may_report(const struct envelope *env)
{
        const char *why;
        if (!env || env->is_dsn || !env->sender || env->sender[0] == '\0')
                return false;
        /* the sender becomes a RCPT TO: it must be a safe address */
        return addr_check(env->sender, &why) == 0;
}

bool dsn_rcpt_wants(const struct envelope_rcpt *r, enum dsn_kind kind)
{
        unsigned bits = r->notify ? r->notify : NOTIFY_FAILURE | NOTIFY_DELAY;
        if (bits & NOTIFY_NEVER)
                return false;
        if (kind == DSN_RELAYED)
                return bits & NOTIFY_SUCCESS;
        return bits & (kind == DSN_DELAYED ? NOTIFY_DELAY : NOTIFY_FAILURE);
}

bool dsn_delay_lists_rcpt(const struct envelope *env, const struct envelope_rcpt *r)
{
        return dsn_may_report(env) && r->state == RCPT_DEFERRED && dsn_rcpt_wants(r, DSN_DELAYED);
}

bool dsn_delay_due(const struct envelope *env, const struct dsn_policy *p, int64_t now_us)
{
        int n = p->delay_dsn_after_retries;
        if (n <= 0 || !env || env->delay_dsn_sent)
                return false;
        if (p->delay_dsn_min_age_s > 0 &&
            now_us - env->arrival_us < p->delay_dsn_min_age_s * 1000000)
                return false; /* ordinary greylisting must not alarm the sender */
        for (size_t i = 0; i < env->n_rcpt; i++)
                if (dsn_delay_lists_rcpt(env, &env->rcpt[i]) && env->rcpt[i].failed_retries >= n)
                        return true;
        return false;
}

bool dsn_failure_needed(const struct envelope *env, const struct envelope_rcpt *r)
{
        return dsn_may_report(env) && r->state == RCPT_FAILED && !r->failure_dsn_sent &&
               dsn_rcpt_wants(r, DSN_FAILED);
}

/* How many of env's recipients pred holds for (env NULL: none). */
static size_t count_rcpts(const struct envelope *env,
                          bool (*pred)(const struct envelope *, const struct envelope_rcpt *))
{
        size_t n = 0;
        for (size_t i = 0; env && i < env->n_rcpt; i++)
                n += pred(env, &env->rcpt[i]);
        return n;
}

size_t dsn_failures_pending(const struct envelope *env)
{
        return count_rcpts(env, dsn_failure_needed);
}

static bool undeliverable(const struct envelope *env, const struct envelope_rcpt *r)
{
        return env->is_dsn && r->state == RCPT_FAILED && !r->failure_dsn_sent;
}

size_t dsn_undeliverable(const struct envelope *env)
{
        return count_rcpts(env, undeliverable);
}

bool dsn_postmaster_may_report(const struct envelope *env, const struct dsn_policy *p)
{
        const char *why;
        return env && p && env->is_dsn && !env->postmaster_notice && p->postmaster &&
               p->postmaster[0] && addr_check(p->postmaster, &why) == 0;
}

bool dsn_relayed_needed(const struct envelope *env, const struct envelope_rcpt *r)
{
        return dsn_may_report(env) && r->state == RCPT_DELIVERED && r->relayed_dsn_owed &&
               dsn_rcpt_wants(r, DSN_RELAYED);
}

size_t dsn_relayed_pending(const struct envelope *env)
{
        return count_rcpts(env, dsn_relayed_needed);
}

bool dsn_rcpt_expired(const struct envelope_rcpt *r)
{
        /* a local permanent failure carries a 5.x.x status without a reply code */
        bool permanent_status = explain_status_valid(r->dsn_status) && r->dsn_status[0] == '5';
        return r->state == RCPT_FAILED && r->reply_code < 500 && !permanent_status;
}

/* ---- the original message ---- */

/* The original's length: the header lines sent ahead of the body, and the body. */
static uint64_t total_size(const struct dsn_original *o)
{
        return (o->prefix ? o->prefix_len : 0) + o->size;
}

static int read_at(const struct dsn_original *o, uint64_t off, void *dst, size_t n, size_t *got)
{
        *got = 0;
        size_t pre = o->prefix ? o->prefix_len : 0;
        if (off < pre) {
                *got = n < pre - off ? n : pre - (size_t)off;
                memcpy(dst, o->prefix + off, *got);
                return 0;
        }
        off -= pre;
        if (off >= o->size)
                return 0;
        if (n > o->size - off)
                n = (size_t)(o->size - off);
        if (o->fd < 0) {
                memcpy(dst, (const char *)o->data + off, n);
                *got = n;
                return 0;
        }
        ssize_t r;
        do
                r = pread(o->fd, dst, n, (off_t)off);
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return -errno;
        *got = (size_t)r;
        return 0;
}

/* Offset just past the last header line (before the empty line), or -1. */
static ssize_t header_end(const char *s, size_t len)
{
        if (len >= 1 && s[0] == '\n')
                return 0;
        if (len >= 2 && s[0] == '\r' && s[1] == '\n')
                return 0;
        for (size_t i = 0; i + 1 < len; i++) {
                if (s[i] != '\n')
                        continue;
                if (s[i + 1] == '\n' || (s[i + 1] == '\r' && i + 2 < len && s[i + 2] == '\n'))
                        return (ssize_t)i + 1;
        }
        return -1;
}

/* Read up to limit bytes into raw; with stop_at_headers, stop once the header
 * block is complete. */
static int read_prefix(const struct dsn_original *o, size_t limit, bool stop_at_headers,
                       struct buf *raw)
{
        char chunk[READ_CHUNK];
        while (raw->len < limit) {
                size_t got, want = limit - raw->len < READ_CHUNK ? limit - raw->len : READ_CHUNK;
                int r = read_at(o, raw->len, chunk, want, &got);
                if (r < 0)
                        return r;
                if (got == 0)
                        break;
                buf_add(raw, chunk, got);
                if (raw->err)
                        return raw->err;
                if (stop_at_headers && header_end(raw->p, raw->len) >= 0)
                        break;
        }
        return 0;
}

struct returned {
        struct buf content; /* CRLF text of the part */
        bool full;          /* message/rfc822 (else text/rfc822-headers) */
        bool too_big;       /* RET=FULL asked, headers returned for size */
        bool cut;           /* the header block was cut at DSN_HEADERS_LIMIT */
};

static int return_headers(const struct dsn_original *o, struct returned *ret)
{
        struct buf raw = {0};
        int r = read_prefix(o, DSN_HEADERS_LIMIT, true, &raw);
        if (r < 0) {
                buf_done(&raw);
                return r;
        }
        ssize_t end = raw.len ? header_end(raw.p, raw.len) : 0;
        if (end < 0 && raw.len < total_size(o)) {
                /* no end of headers within the limit: cut at the last line end */
                const char *nl = memrchr(raw.p, '\n', raw.len);
                end = nl ? nl - raw.p + 1 : 0;
                ret->cut = true;
        } else if (end < 0)
                end = (ssize_t)raw.len; /* headers only, no body */
        text_crlf(&ret->content, raw.p, (size_t)end);
        buf_done(&raw);
        return ret->content.err;
}

static int return_original(const struct envelope *env, enum dsn_kind kind,
                           const struct dsn_original *o, const struct dsn_policy *p,
                           struct returned *ret)
{
        uint64_t cap = p->return_full_limit ? p->return_full_limit : DSN_RETURN_FULL_LIMIT_DEFAULT;
        if (!o)
                return 0;
        if (o->fd < 0 && !o->data && o->size > 0)
                return -EINVAL;
        if ((env->ret != DSN_RET_FULL && !env->is_dsn) ||
            kind == DSN_RELAYED) /* RFC 3461 4.3: FULL is for failures */
                return return_headers(o, ret);
        if (total_size(o) > cap && !env->is_dsn) {
                ret->too_big = true;
                return return_headers(o, ret);
        }
        /* a DSN goes to the postmaster whole: it is small by construction */
        struct buf raw = {0};
        int r = read_prefix(o, (size_t)total_size(o), false, &raw);
        if (r == 0) {
                text_crlf(&ret->content, raw.p ? raw.p : "", raw.len);
                ret->full = true;
                r = ret->content.err;
        }
        buf_done(&raw);
        return r;
}

/* ---- the report ---- */

struct build {
        const struct envelope *env;
        const struct dsn_original *orig;
        const struct dsn_policy *p;
        int64_t now_us;
        enum dsn_kind kind;
        bool postmaster; /* a notice to the postmaster about an undeliverable DSN */
        size_t *idx;     /* reported recipients */
        size_t n;
        char *host; /* cleaned myhostname */
        struct returned ret;
        struct buf text;   /* human-readable part, raw UTF-8 with CRLF */
        struct buf status; /* message/delivery-status body */
};

static void build_done(struct build *b)
{
        free(b->idx);
        free(b->host);
        buf_done(&b->ret.content);
        buf_done(&b->text);
        buf_done(&b->status);
}

static int select_rcpts(struct build *b)
{
        b->idx = calloc(b->env->n_rcpt ? b->env->n_rcpt : 1, sizeof *b->idx);
        if (!b->idx)
                return -ENOMEM;
        for (size_t i = 0; i < b->env->n_rcpt; i++) {
                const struct envelope_rcpt *r = &b->env->rcpt[i];
                bool in = b->postmaster            ? undeliverable(b->env, r)
                          : b->kind == DSN_DELAYED ? dsn_delay_lists_rcpt(b->env, r)
                          : b->kind == DSN_RELAYED ? dsn_relayed_needed(b->env, r)
                                                   : dsn_failure_needed(b->env, r);
                if (in)
                        b->idx[b->n++] = i;
        }
        return 0;
}

static int64_t retry_until_us(const struct build *b)
{
        return b->env->arrival_us + b->p->queue_lifetime_s * 1000000;
}

/* "smtp; 451 4.7.1 text", "X-Tarry; text" for a local problem, or NULL. */
static char *diagnostic(const struct envelope_rcpt *r)
{
        _cleanup_free_ char *text = text_clean_ascii(r->last_reply, DSN_DIAGNOSTIC_MAX);
        char *out = NULL;
        if (!text)
                return NULL;
        char code[8];
        bool has_code = r->reply_code >= 200 && r->reply_code <= 599;
        snprintf(code, sizeof code, "%d", r->reply_code);
        bool text_has_code = has_code && strncmp(text, code, 3) == 0;
        if (has_code && text_has_code)
                return asprintf(&out, "smtp; %s", text) < 0 ? NULL : out;
        if (has_code)
                return asprintf(&out, "smtp; %d %s", r->reply_code, text) < 0 ? NULL : out;
        if (text[0])
                return asprintf(&out, "X-Tarry; %s", text) < 0 ? NULL : out;
        return strdup("");
}

/* "host" of a relay written "host[ip]:port", or the ip when there is no name. */
static char *remote_mta(const char *relay)
{
        if (!relay)
                return NULL;
        size_t n = strcspn(relay, "[:");
        const char *s = relay;
        if (n == 0 && relay[0] == '[') {
                s = relay + 1;
                n = strcspn(s, "]");
        }
        _cleanup_free_ char *name = strndup(s, n);
        return name ? text_clean_ascii(name, HOST_MAX) : NULL;
}

/* ---- human-readable part ---- */

static void text_para(struct build *b, const char *s)
{
        text_wrap(&b->text, "", s, TEXT_WIDTH);
        buf_adds(&b->text, "\r\n");
}

static void text_intro(struct build *b)
{
        char until[40];
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, "This is the mail system at host %s.", b->host) < 0)
                line = NULL;
        text_para(b, line ? line : "This is the mail system.");
        if (b->postmaster) {
                text_para(b, "A delivery status notification (a bounce or a delay warning) "
                             "that this mail system sent could not be delivered to the "
                             "address listed below. Nobody else has been told: the "
                             "notification is attached below.");
                return;
        }
        if (b->kind == DSN_FAILED) {
                text_para(b, "Your message could not be delivered to the recipients listed "
                             "below, and we have stopped trying.");
                return;
        }
        if (b->kind == DSN_RELAYED) {
                text_para(b, "Your message was delivered to the mail servers listed below, "
                             "as you asked to be told. Those servers do not offer delivery "
                             "notifications, so this is the last notice you will get: "
                             "whether the message reaches each mailbox from there is not "
                             "reported.");
                return;
        }
        buf_adds(&b->text,
                 "####################################################################\r\n"
                 "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
                 "####################################################################\r\n\r\n");
        text_date(retry_until_us(b), until);
        free(line);
        if (asprintf(&line,
                     "Your message could not be delivered yet to the recipients listed below. "
                     "It is still in our queue and we will keep trying until %s.",
                     until) < 0)
                line = NULL;
        text_para(b, line ? line : "Your message is still in our queue.");
}

static void text_labelled(struct build *b, const char *label, const char *value)
{
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, "%s %s", label, value) < 0) {
                b->text.err = -ENOMEM;
                return;
        }
        text_wrap(&b->text, "    ", line, TEXT_WIDTH);
}

/* The reply as the server wrote it: one cleaned, wrapped line per reply line. */
static void text_reply(struct build *b, const struct envelope_rcpt *r)
{
        size_t budget = DSN_DIAGNOSTIC_MAX, lines = 0;
        for (const char *s = r->last_reply; s && *s && budget > 0 && lines < REPLY_LINES_SHOWN;) {
                size_t n = strcspn(s, "\r\n");
                _cleanup_free_ char *raw = strndup(s, n);
                _cleanup_free_ char *line = raw ? text_clean_utf8(raw, budget) : NULL;
                if (!line) {
                        b->text.err = -ENOMEM;
                        return;
                }
                if (line[0]) {
                        text_wrap(&b->text, "        ", line, TEXT_WIDTH);
                        budget -= strlen(line) < budget ? strlen(line) : budget;
                        lines++;
                }
                s += n + strspn(s + n, "\r\n");
        }
}

static void text_relayed(struct build *b, const struct envelope_rcpt *r)
{
        _cleanup_free_ char *addr = text_clean_utf8(r->address, ADDR_SHOWN);
        _cleanup_free_ char *mta = remote_mta(r->relay);
        if (!addr || (r->relay && !mta)) {
                b->text.err = -ENOMEM;
                return;
        }
        text_wrap(&b->text, "", addr, TEXT_WIDTH);
        if (r->last_reply && mta && mta[0])
                buf_addf(&b->text, "    Relayed to %s, which said:\r\n", mta);
        else if (r->last_reply)
                buf_adds(&b->text, "    The server said:\r\n");
        text_reply(b, r);
        buf_adds(&b->text, "\r\n");
}

static void text_rcpt(struct build *b, const struct envelope_rcpt *r)
{
        if (b->kind == DSN_RELAYED) {
                text_relayed(b, r);
                return;
        }
        struct explanation ex = explain_rcpt(r, b->kind);
        _cleanup_free_ char *addr = text_clean_utf8(r->address, ADDR_SHOWN);
        _cleanup_free_ char *mta = remote_mta(r->relay);
        char when[40];
        if (!addr || (r->relay && !mta)) {
                b->text.err = -ENOMEM;
                return;
        }
        text_wrap(&b->text, "", addr, TEXT_WIDTH);
        text_wrap(&b->text, "    ", ex.what, TEXT_WIDTH);
        if (b->kind == DSN_FAILED && dsn_rcpt_expired(r))
                text_labelled(b, "The last problem was:", explain_rcpt(r, DSN_DELAYED).what);
        text_wrap(&b->text, "    ", ex.todo, TEXT_WIDTH);
        if (r->last_reply && r->reply_code && mta && mta[0])
                buf_addf(&b->text, "    The server %s said:\r\n", mta);
        else if (r->last_reply)
                buf_addf(&b->text, "    %s:\r\n",
                         r->reply_code ? "The server said" : "The problem was");
        text_reply(b, r);
        text_date(r->last_attempt_us, when);
        if (r->attempts > 0)
                buf_addf(&b->text, "    Attempts: %d, the last on %s.\r\n", r->attempts, when);
        buf_adds(&b->text, "\r\n");
}

static void text_returned(struct build *b)
{
        char line[200];
        if (!b->orig || b->postmaster)
                return;
        if (b->ret.too_big) {
                snprintf(line, sizeof line,
                         "Your message is %llu bytes, more than the %llu bytes we return whole, "
                         "so only its headers are attached below.",
                         (unsigned long long)total_size(b->orig),
                         (unsigned long long)(b->p->return_full_limit
                                                  ? b->p->return_full_limit
                                                  : DSN_RETURN_FULL_LIMIT_DEFAULT));
                text_para(b, line);
        } else
                text_para(b, b->ret.full ? "A copy of your message is attached below."
                                         : "The headers of your message are attached below.");
        if (b->ret.cut)
                text_para(b, "Its header block was very long and has been shortened.");
}

static void human_part(struct build *b)
{
        text_intro(b);
        for (size_t i = 0; i < b->n; i++)
                text_rcpt(b, &b->env->rcpt[b->idx[i]]);
        text_returned(b);
}

/* ---- message/delivery-status part ---- */

static void field(struct buf *s, const char *name, const char *fmt_value, const char *value)
{
        _cleanup_free_ char *v = NULL;
        if (asprintf(&v, fmt_value, value) < 0) {
                s->err = -ENOMEM;
                return;
        }
        text_header(s, name, v);
}

static void field_clean(struct buf *s, const char *name, const char *prefix, const char *raw,
                        size_t max, bool xtext)
{
        _cleanup_free_ char *decoded = xtext ? text_xtext_decode(raw) : strdup(raw);
        _cleanup_free_ char *v = decoded ? text_clean_ascii(decoded, max) : NULL;
        if (!v) {
                s->err = -ENOMEM;
                return;
        }
        field(s, name, prefix, v);
}

static void status_message(struct build *b)
{
        char date[40];
        field(&b->status, "Reporting-MTA", "dns; %s", b->host);
        if (b->env->id[0])
                field_clean(&b->status, "X-Tarry-Queue-ID", "%s", b->env->id, QUEUE_ID_LEN, false);
        field_clean(&b->status, "X-Tarry-Sender", "rfc822; %s", b->env->sender, ADDR_SHOWN, false);
        if (b->env->envid)
                field_clean(&b->status, "Original-Envelope-Id", "%s", b->env->envid, ENVID_MAX,
                            true);
        text_date(b->env->arrival_us, date);
        field(&b->status, "Arrival-Date", "%s", date);
}

static void status_orcpt(struct build *b, const char *orcpt)
{
        /* RFC 3464 §2.3.1: "addr-type;address", decoded from xtext */
        const char *fmt = strchr(orcpt, ';') ? "%s" : "rfc822;%s";
        field_clean(&b->status, "Original-Recipient", fmt, orcpt, ORCPT_MAX, true);
}

static void status_rcpt(struct build *b, const struct envelope_rcpt *r)
{
        char st[DSN_STATUS_MAX], date[40];
        _cleanup_free_ char *diag = diagnostic(r);
        _cleanup_free_ char *mta = remote_mta(r->relay);
        if (!diag || (r->relay && !mta)) {
                b->status.err = -ENOMEM;
                return;
        }
        buf_adds(&b->status, "\r\n");
        if (r->orcpt)
                status_orcpt(b, r->orcpt);
        field_clean(&b->status, "Final-Recipient", "rfc822; %s", r->address, ADDR_SHOWN, false);
        field(&b->status, "Action", "%s",
              b->kind == DSN_DELAYED   ? "delayed"
              : b->kind == DSN_RELAYED ? "relayed"
                                       : "failed");
        if (b->kind == DSN_RELAYED) /* the server's own 2.x.x, if it gave one */
                snprintf(st, sizeof st, "%s",
                         explain_status_valid(r->dsn_status) && r->dsn_status[0] == '2'
                             ? r->dsn_status
                             : "2.0.0");
        else
                explain_status(r, b->kind, st);
        field(&b->status, "Status", "%s", st);
        if (mta && mta[0])
                field(&b->status, "Remote-MTA", "dns; %s", mta);
        if (diag[0])
                field(&b->status, "Diagnostic-Code", "%s", diag);
        if (b->kind != DSN_RELAYED)
                field(&b->status, "X-Tarry-Class", "%s", reply_class_name(explain_class(r)));
        if (r->last_attempt_us) {
                text_date(r->last_attempt_us, date);
                field(&b->status, "Last-Attempt-Date", "%s", date);
        }
        if (b->kind == DSN_DELAYED) {
                text_date(retry_until_us(b), date);
                field(&b->status, "Will-Retry-Until", "%s", date);
        }
}

static void status_part(struct build *b)
{
        status_message(b);
        for (size_t i = 0; i < b->n; i++)
                status_rcpt(b, &b->env->rcpt[b->idx[i]]);
}

/* ---- assembly ---- */

static bool boundary_free(const struct build *b, const char *bnd)
{
        size_t n = strlen(bnd);
        const struct buf *parts[] = {&b->text, &b->status, &b->ret.content};
        for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                if (parts[i]->len && memmem(parts[i]->p, parts[i]->len, bnd, n))
                        return false;
        return true;
}

static void make_boundary(const struct build *b, char out[BOUNDARY_LEN])
{
        do {
                unsigned char rnd[16];
                text_random(rnd, sizeof rnd);
                int o = snprintf(out, BOUNDARY_LEN, "=_tarry_");
                for (size_t i = 0; i < sizeof rnd; i++)
                        o += snprintf(out + o, (size_t)(BOUNDARY_LEN - o), "%02x", rnd[i]);
        } while (!boundary_free(b, out));
}

static void top_headers(struct build *b, struct buf *m, const char *bnd)
{
        char date[40], id[24];
        unsigned char rnd[8];
        _cleanup_free_ char *to =
            text_clean_ascii(b->postmaster ? b->p->postmaster : b->env->sender, ADDR_SHOWN);
        bool eight = text_has_8bit(b->ret.content.p, b->ret.content.len);

        text_date(b->now_us, date);
        text_random(rnd, sizeof rnd);
        for (size_t i = 0; i < sizeof rnd; i++)
                snprintf(id + 2 * i, sizeof id - 2 * i, "%02X", rnd[i]);
        field(m, "Date", "%s", date);
        field(m, "From", "\"Mail Delivery System\" <MAILER-DAEMON@%s>", b->host);
        field(m, "To", "%s", to ? to : "");
        field(m, "Subject", "%s",
              b->postmaster            ? "Undeliverable delivery status notification"
              : b->kind == DSN_DELAYED ? "Delayed Mail (still being retried)"
              : b->kind == DSN_RELAYED ? "Successful Mail Delivery Report"
                                       : "Undelivered Mail Returned to Sender");
        buf_addf(m, "Message-ID: <%lld.%s@%s>\r\n", (long long)(b->now_us / 1000000), id, b->host);
        buf_adds(m, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
        field(m, "Content-Type", "multipart/report; report-type=delivery-status; boundary=\"%s\"",
              bnd);
        buf_adds(m, eight ? "Content-Transfer-Encoding: 8bit\r\n" : "");
        buf_adds(m, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");
        if (!to)
                m->err = -ENOMEM;
}

static void part_text(struct build *b, struct buf *m)
{
        bool eight = text_has_8bit(b->text.p, b->text.len);
        buf_addf(m,
                 "Content-Description: Notification\r\n"
                 "Content-Type: text/plain; charset=%s\r\n",
                 eight ? "utf-8" : "us-ascii");
        if (!eight) {
                buf_adds(m, "\r\n");
                buf_add(m, b->text.p, b->text.len);
                return;
        }
        buf_adds(m, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        text_qp(m, b->text.p, b->text.len);
}

static void part_returned(struct build *b, struct buf *m)
{
        const struct buf *c = &b->ret.content;
        if (b->ret.full)
                buf_adds(m, "Content-Description: Undelivered Message\r\n"
                            "Content-Type: message/rfc822\r\n");
        else
                buf_adds(m, "Content-Description: Undelivered Message Headers\r\n"
                            "Content-Type: text/rfc822-headers\r\n");
        if (text_has_8bit(c->p, c->len))
                buf_adds(m, "Content-Transfer-Encoding: 8bit\r\n");
        buf_adds(m, "\r\n");
        buf_add(m, c->p ? c->p : "", c->len);
}

static int assemble(struct build *b, struct buf *m)
{
        char bnd[BOUNDARY_LEN];
        make_boundary(b, bnd);
        top_headers(b, m, bnd);
        buf_addf(m, "--%s\r\n", bnd);
        part_text(b, m);
        buf_addf(m, "\r\n--%s\r\n", bnd);
        buf_adds(m, "Content-Description: Delivery report\r\n"
                    "Content-Type: message/delivery-status\r\n\r\n");
        buf_add(m, b->status.p, b->status.len);
        if (b->orig) {
                buf_addf(m, "\r\n--%s\r\n", bnd);
                part_returned(b, m);
        }
        buf_addf(m, "\r\n--%s--\r\n", bnd);
        return m->err;
}

static int dsn_envelope(const struct build *b, struct envelope **out)
{
        struct envelope *e = envelope_new();
        if (!e)
                return -ENOMEM;
        free(e->sender);
        e->sender = strdup("");
        e->is_dsn = true;
        e->postmaster_notice = b->postmaster;
        e->ret = DSN_RET_DEFAULT;
        const char *to = b->postmaster ? b->p->postmaster : b->env->sender;
        struct envelope_rcpt *r = e->sender ? envelope_add_rcpt(e, to) : NULL;
        if (!r) {
                envelope_free(e);
                return -ENOMEM;
        }
        r->notify = NOTIFY_NEVER; /* a report about a report would be a loop */
        *out = e;
        return 0;
}

static int finish(struct build *b, struct dsn_report **out)
{
        struct buf m = {0};
        struct dsn_report *rep = calloc(1, sizeof *rep);
        int r = rep ? assemble(b, &m) : -ENOMEM;
        if (r == 0)
                r = dsn_envelope(b, &rep->env);
        if (r < 0) {
                buf_done(&m);
                free(rep);
                return r;
        }
        rep->kind = b->kind;
        rep->message = m.p;
        rep->len = m.len;
        rep->reported = TAKE_PTR(b->idx);
        rep->n_reported = b->n;
        *out = rep;
        return 1;
}

static int build(struct build *b, struct dsn_report **out)
{
        int r = select_rcpts(b);
        if (r < 0 || b->n == 0)
                return r;
        b->host = text_clean_ascii(b->p->myhostname, HOST_MAX);
        if (!b->host)
                return -ENOMEM;
        r = return_original(b->env, b->kind, b->orig, b->p, &b->ret);
        if (r < 0)
                return r;
        human_part(b);
        status_part(b);
        if (b->text.err || b->status.err)
                return -ENOMEM;
        return finish(b, out);
}

static int build_kind(enum dsn_kind kind, bool postmaster, const struct envelope *env,
                      const struct dsn_original *orig, const struct dsn_policy *p, int64_t now_us,
                      struct dsn_report **out)
{
        if (!env || !p || !out || !p->myhostname || !p->myhostname[0])
                return -EINVAL;
        *out = NULL;
        if (postmaster ? !dsn_postmaster_may_report(env, p) || dsn_undeliverable(env) == 0
            : kind == DSN_DELAYED ? !dsn_delay_due(env, p, now_us)
            : kind == DSN_RELAYED ? dsn_relayed_pending(env) == 0
                                  : dsn_failures_pending(env) == 0)
                return 0;
        struct build b = {.env = env,
                          .orig = orig,
                          .p = p,
                          .now_us = now_us,
                          .kind = kind,
                          .postmaster = postmaster};
        int r = build(&b, out);
        build_done(&b);
        return r;
}

int dsn_build_delayed(const struct envelope *env, const struct dsn_original *orig,
                      const struct dsn_policy *p, int64_t now_us, struct dsn_report **out)
{
        return build_kind(DSN_DELAYED, false, env, orig, p, now_us, out);
}

int dsn_build_failed(const struct envelope *env, const struct dsn_original *orig,
                     const struct dsn_policy *p, int64_t now_us, struct dsn_report **out)
{
        return build_kind(DSN_FAILED, false, env, orig, p, now_us, out);
}

int dsn_build_postmaster(const struct envelope *env, const struct dsn_original *orig,
                         const struct dsn_policy *p, int64_t now_us, struct dsn_report **out)
{
        return build_kind(DSN_FAILED, true, env, orig, p, now_us, out);
}

int dsn_build_relayed(const struct envelope *env, const struct dsn_original *orig,
                      const struct dsn_policy *p, int64_t now_us, struct dsn_report **out)
{
        return build_kind(DSN_RELAYED, false, env, orig, p, now_us, out);
}

void dsn_report_free(struct dsn_report *r)
{
        if (!r)
                return;
        free(r->message);
        free(r->reported);
        envelope_free(r->env);
        free(r);
}

int dsn_mark_sent(struct envelope *env, const struct dsn_report *r)
{
        if (!env || !r)
                return -EINVAL;
        for (size_t i = 0; i < r->n_reported; i++)
                if (r->reported[i] >= env->n_rcpt)
                        return -EINVAL;
        if (r->kind == DSN_DELAYED) {
                env->delay_dsn_sent = true;
                return 0;
        }
        if (r->kind == DSN_RELAYED) {
                for (size_t i = 0; i < r->n_reported; i++)
                        env->rcpt[r->reported[i]].relayed_dsn_owed = false;
                return 0;
        }
        for (size_t i = 0; i < r->n_reported; i++)
                env->rcpt[r->reported[i]].failure_dsn_sent = true;
        return 0;
}

int dsn_commit(struct queue *q, enum queue_dir dir, struct dsn_report *r, struct envelope *env,
               enum queue_dir env_dir)
{
        if (!q || !r || !env)
                return -EINVAL;
        int ret = queue_enqueue(q, dir, r->env, r->message, r->len);
        if (ret < 0)
                return ret;
        ret = dsn_mark_sent(env, r);
        if (ret < 0)
                return ret;
        return queue_update(q, env_dir, env);
}
