/* smtpc/reply.c — SMTP reply assembly with length limits; see reply.h. */
#include "smtpc/reply.h"

#include <ctype.h>
#include <string.h>

void reply_acc_reset(struct reply_acc *r)
{
        r->len = 0;
        r->total = 0;
        r->text[0] = '\0';
        r->head_len = 0;
        r->at_line_start = true;
        r->garbled = false;
        r->code = 0;
}

static void append(struct reply_acc *r, const char *p, size_t n)
{
        size_t room = SMTPC_REPLY_MAX - r->len;
        if (n > room)
                n = room;
        memcpy(r->text + r->len, p, n);
        r->len += n;
        r->text[r->len] = '\0';
}

static int head_code(const char *h)
{
        for (int i = 0; i < 3; i++)
                if (!isdigit((unsigned char)h[i]))
                        return -1;
        return (h[0] - '0') * 100 + (h[1] - '0') * 10 + (h[2] - '0');
}

/* A line ended: check its code; true when it is the reply's last line. */
static bool line_done(struct reply_acc *r)
{
        int code = r->head_len >= 3 ? head_code(r->head) : -1;
        if (code < 0 || (r->code && code != r->code))
                r->garbled = true;
        /* "250x…" or "250\0": no reply line (RFC 5321 4.2), and libcurl, not
         * seeing its end, would wait for more until the command timeout */
        if (r->head_len >= 4 && r->head[3] != ' ' && r->head[3] != '-')
                r->garbled = true;
        if (!r->code && code > 0)
                r->code = code;
        /* garbage ends the reply at once: "SSH-2.0-…" is no continuation line */
        bool last = r->garbled || r->head_len < 4 || r->head[3] != '-';
        r->head_len = 0;
        r->at_line_start = true;
        return last;
}

size_t reply_acc_feed(struct reply_acc *r, const char *buf, size_t len, bool *complete)
{
        *complete = false;
        for (size_t i = 0; i < len; i++) {
                char ch = buf[i];
                r->total++;
                if (ch == '\n') {
                        if (line_done(r)) {
                                *complete = true;
                                return i + 1;
                        }
                        continue;
                }
                if (ch == '\r')
                        continue;
                if (ch == '\0') { /* never in a reply: kept visible, not as a terminator */
                        r->garbled = true;
                        ch = '?';
                }
                if (r->at_line_start) {
                        if (r->len > 0)
                                append(r, "\n", 1);
                        r->at_line_start = false;
                }
                if (r->head_len < 4)
                        r->head[r->head_len++] = ch;
                append(r, &ch, 1);
        }
        return len;
}

/* Length of "d.ddd.ddd" at p with the given class digit, or 0. */
static size_t enh_len(const char *p, char cls)
{
        if (p[0] != cls || p[1] != '.')
                return 0;
        size_t i = 2, digits = 0;
        while (isdigit((unsigned char)p[i]) && digits < 3)
                i++, digits++;
        if (!digits || p[i] != '.')
                return 0;
        i++;
        digits = 0;
        while (isdigit((unsigned char)p[i]) && digits < 3)
                i++, digits++;
        if (!digits || isdigit((unsigned char)p[i]))
                return 0;
        return i;
}

void reply_enhanced(const char *text, int code, char out[SMTPC_ENH_MAX])
{
        out[0] = '\0';
        if (!text || strlen(text) < 5 || code < 200)
                return;
        size_t n = enh_len(text + 4, (char)('0' + code / 100));
        if (n && n < SMTPC_ENH_MAX) {
                memcpy(out, text + 4, n);
                out[n] = '\0';
        }
}
