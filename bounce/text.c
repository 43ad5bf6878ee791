/* bounce/text.c — buffers, sanitising, folding, wrapping, QP, dates; see text.h. */
#include "bounce/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/fileio.h"

#define HEADER_WIDTH      78  /* RFC 5322 §2.1.1: SHOULD be no more than 78 characters */
#define HEADER_HARD_WIDTH 980 /* well inside the 998-byte line limit of §2.1.1 */
#define QP_WIDTH          76  /* RFC 2045 §6.7 rule 5 */
#define WRAP_HARD_WIDTH   240 /* characters (at most 4 bytes each): a line stays < 998 bytes */

/* ---- buffer ---- */

static int buf_reserve(struct buf *b, size_t extra)
{
        if (b->err)
                return b->err;
        if (extra > SIZE_MAX / 2 - b->len)
                return (b->err = -ENOMEM);
        if (b->len + extra + 1 <= b->cap)
                return 0;
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + extra + 1)
                cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
                return (b->err = -ENOMEM);
        b->p = p;
        b->cap = cap;
        return 0;
}

void buf_add(struct buf *b, const void *data, size_t len)
{
        if (len == 0 || buf_reserve(b, len) < 0)
                return;
        memcpy(b->p + b->len, data, len);
        b->len += len;
        b->p[b->len] = '\0';
}

void buf_adds(struct buf *b, const char *s)
{
        buf_add(b, s, strlen(s));
}

void buf_addf(struct buf *b, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
                if (!b->err)
                        b->err = -EINVAL;
                return;
        }
        if (buf_reserve(b, (size_t)n) < 0)
                return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t)n;
}

void buf_done(struct buf *b)
{
        free(b->p);
        *b = (struct buf){0};
}

/* ---- sanitising ---- */

/* Length of the valid UTF-8 sequence at s (2..4), or 0: overlong forms,
 * surrogates, code points above U+10FFFF and C1 controls are invalid here. */
static size_t utf8_len(const unsigned char *s)
{
        unsigned cp;
        size_t n;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2, cp = s[0] & 0x1f;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3, cp = s[0] & 0x0f;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4, cp = s[0] & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        if (cp < 0xa0 || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
                return 0;
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                return 0;
        return n;
}

static bool is_space_or_control(unsigned char c)
{
        return c <= 0x20 || c == 0x7f;
}

/* Drop the last character (UTF-8 aware) of b. */
static void buf_drop_char(struct buf *b)
{
        while (b->len > 0 && ((unsigned char)b->p[b->len - 1] & 0xc0) == 0x80)
                b->len--;
        if (b->len > 0)
                b->len--;
}

static void finish_cut(struct buf *b, size_t max)
{
        while (b->len > 0 && (b->len > max - 3 || b->p[b->len - 1] == ' '))
                buf_drop_char(b);
        b->p[b->len] = '\0';
        buf_adds(b, "...");
}

static char *clean(const char *in, size_t max, bool utf8)
{
        static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
        const unsigned char *s = (const unsigned char *)(in ? in : "");
        struct buf b = {0};
        bool space = false, cut = false;

        if (buf_reserve(&b, 0) == 0)
                b.p[0] = '\0';
        if (max < 4)
                max = 4;
        while (*s && !cut) {
                if (is_space_or_control(*s)) {
                        space = b.len > 0;
                        s++;
                        continue;
                }
                size_t n = *s < 0x80 ? 1 : utf8 ? utf8_len(s) : 0;
                const char *out = n ? (const char *)s : utf8 ? replacement : "?";
                size_t outlen = n ? n : strlen(out);
                if (b.len + space + outlen > max) {
                        cut = true;
                        break;
                }
                if (space)
                        buf_add(&b, " ", 1);
                buf_add(&b, out, outlen);
                space = false;
                s += n ? n : 1;
        }
        if (cut && !b.err)
                finish_cut(&b, max);
        if (b.err) {
                buf_done(&b);
                return NULL;
        }
        return b.p;
}

char *text_clean_ascii(const char *in, size_t max)
{
        return clean(in, max, false);
}

char *text_clean_utf8(const char *in, size_t max)
{
        return clean(in, max, true);
}

bool text_has_8bit(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if ((unsigned char)s[i] >= 0x80)
                        return true;
        return false;
}

/* ---- header folding ---- */

static void fold(struct buf *b, size_t *col)
{
        buf_adds(b, "\r\n ");
        *col = 1;
}

/* Put one word at *col after a space, folding before it when the line would
 * pass 78 columns. A longer word keeps a line of its own (a URL stays whole);
 * only one that would pass the 998-byte limit is split. */
static void header_word(struct buf *b, const char *w, size_t wlen, size_t *col, bool first)
{
        if (!first && *col > 1 && *col + 1 + wlen > HEADER_WIDTH)
                fold(b, col);
        else {
                buf_add(b, " ", 1);
                (*col)++;
        }
        while (*col + wlen > HEADER_HARD_WIDTH) {
                size_t n = HEADER_HARD_WIDTH - *col;
                buf_add(b, w, n);
                w += n;
                wlen -= n;
                fold(b, col);
        }
        buf_add(b, w, wlen);
        *col += wlen;
}

void text_header(struct buf *b, const char *name, const char *value)
{
        size_t col = strlen(name) + 1;
        bool first = true;
        buf_adds(b, name);
        buf_add(b, ":", 1);
        for (const char *p = value; *p;) {
                while (*p == ' ')
                        p++;
                size_t wlen = strcspn(p, " ");
                if (wlen == 0)
                        break;
                header_word(b, p, wlen, &col, first);
                first = false;
                p += wlen;
        }
        buf_adds(b, "\r\n");
}

/* ---- word wrap ---- */

static size_t n_chars(const char *s, size_t len)
{
        size_t n = 0;
        for (size_t i = 0; i < len; i++)
                n += ((unsigned char)s[i] & 0xc0) != 0x80;
        return n;
}

/* Byte length of the first `chars` characters of s[0..len). */
static size_t chars_prefix(const char *s, size_t len, size_t chars)
{
        size_t i = 0;
        while (i < len && chars > 0) {
                i++;
                while (i < len && ((unsigned char)s[i] & 0xc0) == 0x80)
                        i++;
                chars--;
        }
        return i;
}

static void wrap_newline(struct buf *b, const char *indent, size_t *col)
{
        buf_adds(b, "\r\n");
        buf_adds(b, indent);
        *col = strlen(indent);
}

/* Put one word after a space, or on a new line when it would pass width. A
 * longer word keeps a line of its own (a URL stays whole) and is split only
 * when it would pass WRAP_HARD_WIDTH characters. */
static void wrap_word(struct buf *b, const char *indent, const char *w, size_t wlen, size_t width,
                      size_t *col, bool first)
{
        size_t wchars = n_chars(w, wlen);
        if (!first && *col + 1 + wchars > width)
                wrap_newline(b, indent, col);
        else if (!first) {
                buf_add(b, " ", 1);
                (*col)++;
        }
        while (*col + wchars > WRAP_HARD_WIDTH) {
                size_t room = WRAP_HARD_WIDTH - *col;
                size_t nb = chars_prefix(w, wlen, room);
                buf_add(b, w, nb);
                w += nb;
                wlen -= nb;
                wchars -= room;
                wrap_newline(b, indent, col);
        }
        buf_add(b, w, wlen);
        *col += wchars;
}

void text_wrap(struct buf *b, const char *indent, const char *text, size_t width)
{
        size_t col = strlen(indent);
        if (width < col + 16)
                width = col + 16; /* always room for progress on a line */
        bool first = true;
        buf_adds(b, indent);
        for (const char *p = text; *p;) {
                while (*p == ' ')
                        p++;
                size_t wlen = strcspn(p, " ");
                if (wlen == 0)
                        break;
                wrap_word(b, indent, p, wlen, width, &col, first);
                first = false;
                p += wlen;
        }
        buf_adds(b, "\r\n");
}

/* ---- quoted-printable ---- */

static void qp_line(struct buf *b, const unsigned char *s, size_t len)
{
        size_t col = 0;
        for (size_t i = 0; i < len; i++) {
                char tok[4];
                bool last = i + 1 == len;
                bool literal = (s[i] >= 33 && s[i] <= 126 && s[i] != '=') ||
                               ((s[i] == ' ' || s[i] == '\t') && !last);
                size_t n = literal ? 1 : 3;
                if (literal)
                        tok[0] = (char)s[i];
                else
                        snprintf(tok, sizeof tok, "=%02X", s[i]);
                /* keep room for the soft break "=" unless this ends the line */
                if (col + n > (last ? QP_WIDTH : QP_WIDTH - 1)) {
                        buf_adds(b, "=\r\n");
                        col = 0;
                }
                buf_add(b, tok, n);
                col += n;
        }
        buf_adds(b, "\r\n");
}

void text_qp(struct buf *b, const char *in, size_t len)
{
        const char *end = in + len;
        while (in < end) {
                const char *nl = memmem(in, (size_t)(end - in), "\r\n", 2);
                size_t l = nl ? (size_t)(nl - in) : (size_t)(end - in);
                qp_line(b, (const unsigned char *)in, l);
                in += l + (nl ? 2 : 0);
        }
}

/* ---- line ends ---- */

void text_crlf(struct buf *b, const char *in, size_t len)
{
        size_t start = 0;
        if (len == 0)
                return;
        for (size_t i = 0; i < len; i++) {
                if (in[i] != '\r' && in[i] != '\n' && in[i] != '\0')
                        continue;
                buf_add(b, in + start, i - start);
                if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
                        i++;
                if (in[i] != '\0')
                        buf_adds(b, "\r\n");
                start = i + 1;
        }
        buf_add(b, in + start, len - start);
        if (start < len)
                buf_adds(b, "\r\n");
}

/* ---- dates ---- */

void text_date(int64_t us, char out[40])
{
        static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        time_t t = (time_t)(us / 1000000);
        struct tm tm;
        if (!localtime_r(&t, &tm)) {
                t = 0;
                gmtime_r(&t, &tm);
        }
        long off = tm.tm_gmtoff / 60;
        char sign = off < 0 ? '-' : '+';
        if (off < 0)
                off = -off;
        snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, sign, (off / 60) % 100, off % 60);
}

/* ---- xtext ---- */

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

char *text_xtext_decode(const char *in)
{
        size_t len = strlen(in);
        char *out = malloc(len + 1);
        if (!out)
                return NULL;
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
                /* in is NUL-terminated, so in[i + 1] and in[i + 2] are readable */
                int hi = in[i] == '+' ? hexval(in[i + 1]) : -1;
                int lo = hi >= 0 ? hexval(in[i + 2]) : -1;
                if (lo >= 0) {
                        out[o++] = (char)(hi * 16 + lo);
                        i += 2;
                } else
                        out[o++] = in[i];
        }
        out[o] = '\0';
        return out;
}

/* ---- randomness for unique names ---- */

static uint64_t splitmix64(uint64_t *x)
{
        uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

void text_random(void *out, size_t n)
{
        ssize_t got = getrandom(out, n, GRND_NONBLOCK);
        if (got == (ssize_t)n)
                return;
        uint64_t seed = (uint64_t)now_realtime_us() ^ ((uint64_t)now_monotonic_us() << 20) ^
                        ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)out;
        unsigned char *p = out;
        for (size_t i = 0; i < n; i++)
                p[i] = (unsigned char)splitmix64(&seed);
}
