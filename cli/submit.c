/* cli/submit.c — message lines into a queue draft; see submit.h. */
#include "cli/submit.h"
#include "cli/cli_util.h"
#include "cli/headers.h"
#include "common/cleanup.h"
#include "common/fileio.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct field {
        size_t off, len; /* in hdr; continuation lines joined with CRLF */
};

struct submit {
        const struct submit_opts *o;
        struct queue_draft *draft;
        int error;
        char why[512];

        bool in_headers;
        bool at_line_start;
        bool first_line;
        bool skipping; /* the rest of an mbox "From " line */
        size_t col;    /* bytes on the current output line */

        char *hdr;
        size_t hdr_len, hdr_cap;
        struct field *fields;
        size_t n_fields;

        char **rcpts; /* -t */
        size_t n_rcpts;
};

static int fail(struct submit *s, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct submit *s, int r, const char *fmt, ...)
{
        if (s->error)
                return s->error;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->why, sizeof(s->why), fmt, ap);
        va_end(ap);
        return s->error = r;
}

const char *submit_error(const struct submit *s)
{
        return s->why;
}

int submit_begin(struct queue *q, const struct submit_opts *o, struct submit **out)
{
        struct submit *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->o = o;
        s->in_headers = s->at_line_start = s->first_line = true;
        int r = queue_draft_begin(q, &s->draft);
        if (r < 0) {
                free(s);
                return r;
        }
        *out = s;
        return 0;
}

void submit_free(struct submit *s)
{
        if (!s)
                return;
        if (s->draft)
                queue_draft_abort(s->draft);
        for (size_t i = 0; i < s->n_rcpts; i++)
                free(s->rcpts[i]);
        free(s->rcpts);
        free(s->fields);
        free(s->hdr);
        free(s);
}

/* ---- output: CRLF lines of at most SUBMIT_LINE_MAX bytes ---- */

static int out_raw(struct submit *s, const char *p, size_t n)
{
        int r = queue_draft_write(s->draft, p, n);
        if (r < 0)
                return fail(s, r, "cannot write to the spool: %s", strerror(-r));
        uint64_t limit = s->o->cfg->message_size_limit;
        if (limit > 0 && queue_draft_size(s->draft) > limit)
                return fail(s, -EMSGSIZE, "message is larger than message_size_limit (%llu bytes)",
                            (unsigned long long)limit);
        return 0;
}

/* Part of a line; folds with CRLF SPACE when the line would pass the limit. */
static int out_text(struct submit *s, const char *p, size_t n)
{
        while (n > 0) {
                if (s->col == SUBMIT_LINE_MAX) {
                        int r = out_raw(s, "\r\n ", 3);
                        if (r < 0)
                                return r;
                        s->col = 1;
                }
                size_t k = SUBMIT_LINE_MAX - s->col;
                if (k > n)
                        k = n;
                int r = out_raw(s, p, k);
                if (r < 0)
                        return r;
                s->col += k, p += k, n -= k;
        }
        return 0;
}

static int out_eol(struct submit *s)
{
        s->col = 0;
        return out_raw(s, "\r\n", 2);
}

/* A header field as stored (lines joined with CRLF), line by line. */
static int out_field(struct submit *s, const char *p, size_t n)
{
        while (n > 0) {
                const char *crlf = memmem(p, n, "\r\n", 2);
                size_t k = crlf ? (size_t)(crlf - p) : n;
                int r = out_text(s, p, k);
                if (r == 0)
                        r = out_eol(s);
                if (r < 0)
                        return r;
                k += crlf ? 2 : 0;
                p += k, n -= k;
        }
        return 0;
}

/* ---- the header block ---- */

static int hdr_append(struct submit *s, const char *p, size_t n)
{
        if (s->hdr_len + n > SUBMIT_HEADER_MAX)
                return fail(s, -EMSGSIZE, "the message header is larger than %u bytes",
                            SUBMIT_HEADER_MAX);
        if (s->hdr_len + n > s->hdr_cap) {
                size_t cap = s->hdr_cap ? s->hdr_cap : 4096;
                while (cap < s->hdr_len + n)
                        cap *= 2;
                char *h = realloc(s->hdr, cap);
                if (!h)
                        return fail(s, -ENOMEM, "out of memory");
                s->hdr = h;
                s->hdr_cap = cap;
        }
        memcpy(s->hdr + s->hdr_len, p, n);
        s->hdr_len += n;
        if (s->n_fields > 0)
                s->fields[s->n_fields - 1].len += n;
        return 0;
}

static int field_start(struct submit *s, const char *p, size_t n)
{
        struct field *f = realloc(s->fields, (s->n_fields + 1) * sizeof(*f));
        if (!f)
                return fail(s, -ENOMEM, "out of memory");
        s->fields = f;
        f[s->n_fields++] = (struct field){.off = s->hdr_len, .len = 0};
        return hdr_append(s, p, n);
}

static bool field_is(const struct submit *s, size_t i, const char *name)
{
        return hdr_is(s->hdr + s->fields[i].off, s->fields[i].len, name);
}

static bool has_field(const struct submit *s, const char *name)
{
        for (size_t i = 0; i < s->n_fields; i++)
                if (field_is(s, i, name))
                        return true;
        return false;
}

struct rcpt_ctx {
        struct submit *s;
        const char *header;
};

static int take_rcpt(const char *addr, size_t len, void *userdata)
{
        struct rcpt_ctx *c = userdata;
        struct submit *s = c->s;
        const char *why = NULL;
        char *a = NULL;
        if (cli_qualify(addr, len, cfg_rcpt_origin(s->o->cfg), &a, &why) < 0) {
                char shown[400];
                FILE *f = fmemopen(shown, sizeof(shown), "w");
                if (f) {
                        cli_print_escaped(f, addr, len < 320 ? len : 320);
                        fclose(f);
                }
                return fail(s, -EBADMSG, "bad address '%s' in the %s: header: %s", f ? shown : "?",
                            c->header, why);
        }
        char **v = realloc(s->rcpts, (s->n_rcpts + 1) * sizeof(char *));
        if (!v) {
                free(a);
                return fail(s, -ENOMEM, "out of memory");
        }
        s->rcpts = v;
        s->rcpts[s->n_rcpts++] = a;
        return 0;
}

/* -t: the addresses of field i, if it is one of names. */
static int extract_from(struct submit *s, size_t i, const char *const *names)
{
        for (; *names; names++) {
                if (!field_is(s, i, *names))
                        continue;
                const char *p = s->hdr + s->fields[i].off;
                size_t name_len = strlen(*names) + 1;
                struct rcpt_ctx c = {.s = s, .header = *names};
                const char *why = NULL;
                int r = hdr_parse_addresses(p + name_len, s->fields[i].len - name_len, take_rcpt,
                                            &c, &why);
                if (r < 0 && !s->error)
                        return fail(s, -EBADMSG, "cannot read the %s: header: %s", *names, why);
                return r;
        }
        return 0;
}

static int extract_rcpts(struct submit *s)
{
        static const char *const plain[] = {"To", "Cc", "Bcc", NULL};
        static const char *const resent[] = {"Resent-To", "Resent-Cc", "Resent-Bcc", NULL};
        bool use_resent =
            has_field(s, "Resent-To") || has_field(s, "Resent-Cc") || has_field(s, "Resent-Bcc");
        for (size_t i = 0; i < s->n_fields; i++) {
                int r = extract_from(s, i, use_resent ? resent : plain);
                if (r < 0)
                        return r;
        }
        return 0;
}

int submit_format_date(long long t, char *buf, size_t len)
{
        time_t tt = (time_t)t;
        struct tm tm;
        if (!localtime_r(&tt, &tm) || strftime(buf, len, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
                return -EINVAL;
        return 0;
}

static bool atext_only(const char *s)
{
        for (; *s; s++)
                if (!(*s == ' ' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-/=?^_`{|}~", *s)))
                        return false;
        return true;
}

static bool ascii_only(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s >= 0x80)
                        return false;
        return true;
}

/* RFC 2047 "=?UTF-8?B?...?=" of s. */
static void encoded_word(const char *s, char *out, size_t len)
{
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t n = strlen(s), o = 0;
        o += (size_t)snprintf(out, len, "=?UTF-8?B?");
        for (size_t i = 0; i < n && o + 8 < len; i += 3) {
                unsigned v = (unsigned char)s[i] << 16;
                if (i + 1 < n)
                        v |= (unsigned char)s[i + 1] << 8;
                if (i + 2 < n)
                        v |= (unsigned char)s[i + 2];
                out[o++] = b64[(v >> 18) & 63];
                out[o++] = b64[(v >> 12) & 63];
                out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
                out[o++] = i + 2 < n ? b64[v & 63] : '=';
        }
        snprintf(out + o, len - o, "?=");
}

int submit_format_from(const char *addr, const char *full_name, char *buf, size_t len)
{
        char name[1024];
        if (!full_name || !*full_name) {
                snprintf(buf, len, "%s", addr);
                return 0;
        }
        if (atext_only(full_name)) {
                snprintf(name, sizeof(name), "%s", full_name);
        } else if (ascii_only(full_name)) {
                size_t o = 0;
                name[o++] = '"';
                for (const char *p = full_name; *p && o + 3 < sizeof(name); p++) {
                        if (*p == '"' || *p == '\\')
                                name[o++] = '\\';
                        name[o++] = *p;
                }
                name[o++] = '"';
                name[o] = '\0';
        } else {
                encoded_word(full_name, name, sizeof(name));
        }
        snprintf(buf, len, "%s <%s>", name, addr);
        return 0;
}

static int out_added(struct submit *s, const char *name, const char *value)
{
        char line[2048];
        snprintf(line, sizeof(line), "%s: %s", name, value);
        return out_field(s, line, strlen(line));
}

static int add_missing(struct submit *s)
{
        char value[1400];
        int r = 0;
        long long now = now_realtime_us() / 1000000;
        if (!has_field(s, "From")) {
                submit_format_from(s->o->from_addr, s->o->full_name, value, sizeof(value));
                r = out_added(s, "From", value);
        }
        if (r == 0 && !has_field(s, "Date")) {
                submit_format_date(now, value, sizeof(value));
                r = out_added(s, "Date", value);
        }
        if (r == 0 && !has_field(s, "Message-ID")) {
                unsigned long long rnd = 0;
                if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
                        rnd = (unsigned long long)now_monotonic_us();
                struct tm tm;
                time_t t = (time_t)now;
                gmtime_r(&t, &tm);
                char stamp[32];
                strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
                snprintf(value, sizeof(value), "<%s.%016llX@%s>", stamp, rnd,
                         s->o->cfg->myhostname);
                r = out_added(s, "Message-ID", value);
        }
        return r;
}

/* The header block is complete: write it out, with the blank line after it. */
static int end_headers(struct submit *s)
{
        s->in_headers = false;
        if (s->o->extract_rcpts && extract_rcpts(s) < 0)
                return s->error;
        for (size_t i = 0; i < s->n_fields; i++) {
                if (field_is(s, i, "Bcc") || field_is(s, i, "Resent-Bcc"))
                        continue; /* never sent: that is what Bcc means */
                int r = out_field(s, s->hdr + s->fields[i].off, s->fields[i].len);
                if (r < 0)
                        return r;
        }
        int r = add_missing(s);
        if (r == 0)
                r = out_eol(s);
        return r;
}

/* A piece at the start of a line while the header is open. 1: it was header. */
static int header_line(struct submit *s, const char *p, size_t len, bool eol)
{
        if (s->first_line && len >= 5 && memcmp(p, "From ", 5) == 0) {
                s->skipping = !eol; /* an mbox separator, not part of the message */
                return 1;
        }
        if (len == 0 && eol) {
                int r = end_headers(s);
                return r < 0 ? r : 1;
        }
        if ((p[0] == ' ' || p[0] == '\t') && s->n_fields > 0) {
                int r = hdr_append(s, "\r\n", 2);
                if (r == 0)
                        r = hdr_append(s, p, len);
                return r < 0 ? r : 1;
        }
        if (hdr_field_name_len(p, len) > 0) {
                int r = field_start(s, p, len);
                return r < 0 ? r : 1;
        }
        int r = end_headers(s); /* the body starts without a blank line */
        return r < 0 ? r : 0;
}

int submit_line(struct submit *s, const char *p, size_t len, bool eol)
{
        if (s->error)
                return s->error;
        int r = 0;
        if (s->skipping) {
                s->skipping = !eol;
        } else if (s->in_headers && !s->at_line_start) {
                r = hdr_append(s, p, len);
        } else {
                int h = s->in_headers ? header_line(s, p, len, eol) : 0;
                if (h < 0)
                        return h;
                if (h == 0) {
                        r = out_text(s, p, len);
                        if (r == 0 && eol)
                                r = out_eol(s);
                }
        }
        s->first_line = false;
        s->at_line_start = eol;
        return r < 0 ? r : s->error;
}

int submit_finish(struct submit *s, struct envelope *env)
{
        if (s->error)
                return s->error;
        if (!s->at_line_start && !s->in_headers && out_eol(s) < 0)
                return s->error;
        if (s->in_headers && end_headers(s) < 0)
                return s->error;
        for (size_t i = 0; i < s->n_rcpts; i++) {
                int r = cli_add_rcpt(env, s->rcpts[i]);
                if (r == -E2BIG)
                        return fail(s, -EMSGSIZE, "more than 100000 recipients");
                if (r < 0)
                        return fail(s, r, "out of memory");
        }
        return 0;
}

int submit_commit(struct submit *s, struct envelope *env)
{
        if (s->error)
                return s->error;
        int r = queue_draft_commit(s->draft, env); /* frees the draft either way */
        s->draft = NULL;
        if (r < 0)
                return fail(s, r, "cannot commit the message to the spool: %s", strerror(-r));
        return 0;
}
