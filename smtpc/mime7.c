/* smtpc/mime7.c — 8-bit MIME to quoted-printable; see mime7.h. */
#include "smtpc/mime7.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/utf8.h"

#define QP_LINE_MAX 76 /* RFC 2045 6.7 (5) */

struct out {
        char *p;
        size_t len, cap;
        int err;
};

static void add(struct out *o, const char *s, size_t n)
{
        if (o->err || n == 0)
                return;
        if (o->len + n > o->cap) {
                size_t cap = o->cap ? o->cap : 4096;
                while (cap < o->len + n)
                        cap *= 2;
                char *p = realloc(o->p, cap);
                if (!p) {
                        o->err = -ENOMEM;
                        return;
                }
                o->p = p;
                o->cap = cap;
        }
        memcpy(o->p + o->len, s, n);
        o->len += n;
}

static void adds(struct out *o, const char *s)
{
        add(o, s, strlen(s));
}

static bool utf8_valid(const char *s, size_t n)
{
        for (size_t i = 0; i < n;) {
                if ((unsigned char)s[i] < 0x80) {
                        i++;
                        continue;
                }
                size_t k = utf8_seq_len((const unsigned char *)s + i, n - i);
                if (k == 0)
                        return false;
                i += k;
        }
        return true;
}

static bool has_8bit(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] >= 0x80)
                        return true;
        return false;
}

/* ---- one entity: headers and body ---- */

struct entity {
        const char *head; /* header block, each field ending in CRLF */
        size_t head_len;
        const char *body;
        size_t body_len;
};

static void split(const char *s, size_t n, struct entity *e)
{
        *e = (struct entity){.head = s};
        if (n >= 2 && s[0] == '\r' && s[1] == '\n') { /* no headers */
                e->body = s + 2;
                e->body_len = n - 2;
                return;
        }
        const char *sep = memmem(s, n, "\r\n\r\n", 4);
        if (!sep) {
                e->head_len = n;
                e->body = s + n;
                return;
        }
        e->head_len = (size_t)(sep - s) + 2;
        e->body = sep + 4;
        e->body_len = n - e->head_len - 2;
}

/* Length of the field starting at s (its continuation lines included). */
static size_t field_len(const char *s, const char *end)
{
        const char *p = s;
        for (;;) {
                const char *nl = memmem(p, (size_t)(end - p), "\r\n", 2);
                if (!nl)
                        return (size_t)(end - s);
                p = nl + 2;
                if (p >= end || (*p != ' ' && *p != '\t'))
                        return (size_t)(p - s);
        }
}

static bool field_is(const char *f, size_t n, const char *name)
{
        size_t k = strlen(name);
        return n > k && strncasecmp(f, name, k) == 0 && f[k] == ':';
}

/* The unfolded, trimmed value of the first field called name, or NULL. */
static char *header(const struct entity *e, const char *name)
{
        const char *end = e->head + e->head_len;
        for (const char *f = e->head; f < end;) {
                size_t n = field_len(f, end);
                if (field_is(f, n, name)) {
                        size_t k = strlen(name) + 1;
                        char *v = malloc(n - k + 1);
                        if (!v)
                                return NULL;
                        size_t o = 0;
                        for (size_t i = k; i < n; i++)
                                if (f[i] != '\r' && f[i] != '\n')
                                        v[o++] = f[i] == '\t' ? ' ' : f[i];
                        while (o > 0 && v[o - 1] == ' ')
                                o--;
                        v[o] = '\0';
                        char *s = v;
                        while (*s == ' ')
                                s++;
                        memmove(v, s, strlen(s) + 1);
                        return v;
                }
                f += n;
        }
        return NULL;
}

/* The header block without the fields called drop. */
static void copy_head_without(struct out *o, const struct entity *e, const char *drop)
{
        const char *end = e->head + e->head_len;
        for (const char *f = e->head; f < end;) {
                size_t n = field_len(f, end);
                if (!field_is(f, n, drop))
                        add(o, f, n);
                f += n;
        }
}

/* "type/subtype" lower-cased into out; the boundary parameter into bnd. */
static void content_type(const char *ct, char out[128], char bnd[128])
{
        size_t n = strcspn(ct, ";");
        while (n > 0 && ct[n - 1] == ' ')
                n--;
        snprintf(out, 128, "%.*s", (int)n, ct);
        for (char *p = out; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        bnd[0] = '\0';
        for (const char *p = ct + strcspn(ct, ";"); *p; p++) {
                if (strncasecmp(p, "boundary=", 9) != 0 || (p[-1] != ';' && p[-1] != ' '))
                        continue;
                p += 9;
                if (*p == '"')
                        snprintf(bnd, 128, "%.*s", (int)strcspn(p + 1, "\""), p + 1);
                else
                        snprintf(bnd, 128, "%.*s", (int)strcspn(p, "; "), p);
                return;
        }
}

/* ---- quoted-printable ---- */

static void qp_line(struct out *o, const unsigned char *s, size_t n)
{
        size_t col = 0;
        char enc[4];
        for (size_t i = 0; i < n; i++) {
                unsigned char c = s[i];
                bool last = i + 1 == n;
                bool plain =
                    (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last);
                /* a leading '.' is fine (dot-stuffing is the sender's job) */
                size_t w = plain ? 1 : 3;
                if (col + w > QP_LINE_MAX - 1) { /* room for the soft break's '=' */
                        adds(o, "=\r\n");
                        col = 0;
                }
                if (plain) {
                        add(o, (const char *)&c, 1);
                } else {
                        snprintf(enc, sizeof(enc), "=%02X", c);
                        add(o, enc, 3);
                }
                col += w;
        }
}

static void qp(struct out *o, const char *s, size_t n)
{
        const char *end = s + n;
        while (s < end) {
                const char *nl = memmem(s, (size_t)(end - s), "\r\n", 2);
                size_t l = nl ? (size_t)(nl - s) : (size_t)(end - s);
                qp_line(o, (const unsigned char *)s, l);
                if (nl)
                        adds(o, "\r\n");
                s += l + (nl ? 2 : 0);
        }
}

/* ---- the walk ---- */

struct walk {
        struct out *o;
        const char *why;
};

static int entity(struct walk *w, const char *s, size_t n, bool top, const char *dflt, int depth);

static int fail(struct walk *w, const char *why)
{
        w->why = why;
        return -EMEDIUMTYPE;
}

static bool identity_cte(const char *cte)
{
        return !cte || strcasecmp(cte, "7bit") == 0 || strcasecmp(cte, "8bit") == 0;
}

/* Headers with Content-Transfer-Encoding replaced by cte, then the blank line. */
static void head_with_cte(struct walk *w, const struct entity *e, const char *extra,
                          const char *cte)
{
        copy_head_without(w->o, e, "Content-Transfer-Encoding");
        adds(w->o, extra);
        adds(w->o, "Content-Transfer-Encoding: ");
        adds(w->o, cte);
        adds(w->o, "\r\n\r\n");
}

static int leaf(struct walk *w, const struct entity *e, const char *cte, bool top, bool has_ct)
{
        if (!has_8bit(e->body, e->body_len)) {
                add(w->o, e->head, e->head_len);
                adds(w->o, "\r\n");
                add(w->o, e->body, e->body_len);
                return 0;
        }
        if (!identity_cte(cte))
                return fail(w, strcasecmp(cte, "binary") == 0
                                   ? "a part is binary"
                                   : "8-bit bytes inside a base64 or quoted-printable part");
        const char *extra = "";
        if (top && !has_ct) { /* a plain RFC 5322 message: say what it is */
                bool utf8 = utf8_valid(e->body, e->body_len);
                char *mv = header(e, "MIME-Version");
                extra =
                    utf8
                        ? "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        : "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n";
                if (mv) /* only the Content-Type was missing */
                        extra = strstr(extra, "Content-Type");
                free(mv);
        }
        head_with_cte(w, e, extra, "quoted-printable");
        qp(w->o, e->body, e->body_len);
        return 0;
}

static int multipart(struct walk *w, const struct entity *e, const char *cte, const char *bnd,
                     bool digest, int depth)
{
        if (!bnd[0])
                return fail(w, "a multipart without a boundary");
        if (!identity_cte(cte) && strcasecmp(cte, "binary") != 0)
                return fail(w, "a multipart with a content transfer encoding");
        head_with_cte(w, e, "", "7bit");
        char delim[132];
        int dl = snprintf(delim, sizeof(delim), "--%s", bnd);
        const char *p = e->body, *end = e->body + e->body_len;
        /* the preamble, up to the first delimiter at a line start */
        const char *d = p;
        for (;;) {
                d = memmem(d, (size_t)(end - d), delim, (size_t)dl);
                if (!d || d == e->body || (d[-1] == '\n' && d[-2] == '\r'))
                        break;
                d += dl;
        }
        if (!d)
                return fail(w, "a multipart without its first boundary");
        if (has_8bit(p, (size_t)(d - p)))
                return fail(w, "8-bit bytes in a multipart preamble");
        add(w->o, p, (size_t)(d - p));
        for (;;) { /* d: at a delimiter line */
                const char *eol = memmem(d, (size_t)(end - d), "\r\n", 2);
                bool close =
                    (size_t)(end - d) >= (size_t)dl + 2 && d[dl] == '-' && d[dl + 1] == '-';
                const char *next = eol ? eol + 2 : end;
                add(w->o, d, (size_t)(next - d));
                if (close || !eol) {
                        if (has_8bit(next, (size_t)(end - next)))
                                return fail(w, "8-bit bytes in a multipart epilogue");
                        add(w->o, next, (size_t)(end - next));
                        return 0;
                }
                /* the part runs to the CRLF before the next delimiter */
                const char *q = next;
                const char *nd = NULL;
                for (;;) {
                        q = memmem(q, (size_t)(end - q), delim, (size_t)dl);
                        if (!q)
                                break;
                        if (q >= next + 2 && q[-1] == '\n' && q[-2] == '\r') {
                                nd = q;
                                break;
                        }
                        q += dl;
                }
                if (!nd)
                        return fail(w, "a multipart without its closing boundary");
                int r = entity(w, next, (size_t)(nd - 2 - next), false,
                               digest ? "message/rfc822" : "text/plain", depth + 1);
                if (r < 0)
                        return r;
                adds(w->o, "\r\n");
                d = nd;
        }
}

static int entity(struct walk *w, const char *s, size_t n, bool top, const char *dflt, int depth)
{
        if (depth > MIME7_DEPTH_MAX)
                return fail(w, "MIME parts nested too deep");
        struct entity e;
        split(s, n, &e);
        if (has_8bit(e.head, e.head_len))
                return fail(w, "an 8-bit header (raw non-ASCII text in a header field)");
        char *ct_raw = header(&e, "Content-Type");
        char *cte = header(&e, "Content-Transfer-Encoding");
        char type[128], bnd[128];
        content_type(ct_raw ? ct_raw : dflt, type, bnd);
        int r;
        if (strncmp(type, "multipart/", 10) == 0) {
                r = multipart(w, &e, cte, bnd, strcmp(type, "multipart/digest") == 0, depth);
        } else if (strcmp(type, "message/rfc822") == 0 && has_8bit(e.body, e.body_len)) {
                if (!identity_cte(cte) && strcasecmp(cte, "binary") != 0)
                        r = fail(w, "an encoded message/rfc822 part");
                else {
                        head_with_cte(w, &e, "", "7bit");
                        r = entity(w, e.body, e.body_len, false, "text/plain", depth + 1);
                }
        } else if (strncmp(type, "message/", 8) == 0 && has_8bit(e.body, e.body_len)) {
                r = fail(w, strcmp(type, "message/global") == 0
                                ? "an internationalized message/global part"
                                : "8-bit bytes in a message part that must stay 7-bit");
        } else {
                r = leaf(w, &e, cte, top, ct_raw != NULL);
        }
        free(ct_raw);
        free(cte);
        return r;
}

int mime7_convert(const char *msg, size_t len, char **out, size_t *out_len, const char **why)
{
        struct out o = {0};
        struct walk w = {.o = &o};
        int r = entity(&w, msg, len, true, "text/plain", 0);
        add(&o, "", 1); /* NUL-terminated for the caller's convenience */
        o.len--;
        if (r == 0 && o.err)
                r = o.err;
        if (r < 0) {
                free(o.p);
                if (why)
                        *why = w.why ? w.why : "out of memory";
                return r;
        }
        *out = o.p ? o.p : strdup("");
        *out_len = o.len;
        return *out ? 0 : -ENOMEM;
}
