/* cli/linereader.c — see linereader.h. */
#include "cli/linereader.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

void lr_init(struct line_reader *r, int fd)
{
        r->fd = fd;
        r->start = r->end = 0;
        r->eof = false;
}

/* Move unread bytes to the front and read more. 0 on EOF, >0 bytes read, <0 error. */
static int fill(struct line_reader *r)
{
        if (r->eof)
                return 0;
        if (r->start > 0) {
                memmove(r->buf, r->buf + r->start, r->end - r->start);
                r->end -= r->start;
                r->start = 0;
        }
        for (;;) {
                ssize_t n = read(r->fd, r->buf + r->end, LR_BUF - r->end);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        r->eof = true;
                r->end += (size_t)n;
                return (int)(n > 0);
        }
}

/* Index of the first CR or LF in the unread bytes, or end. */
static size_t find_eol(const struct line_reader *r, size_t from)
{
        for (size_t i = from; i < r->end; i++)
                if (r->buf[i] == '\n' || r->buf[i] == '\r')
                        return i;
        return r->end;
}

/* Consume the terminator at r->start (CR, LF or CRLF). 0 or a negative errno. */
static int skip_eol(struct line_reader *r)
{
        char c = r->buf[r->start++];
        if (c != '\r')
                return 0;
        if (r->start == r->end) {
                int f = fill(r);
                if (f < 0)
                        return f;
        }
        if (r->start < r->end && r->buf[r->start] == '\n')
                r->start++;
        return 0;
}

int lr_next(struct line_reader *r, size_t max, const char **line, size_t *len, bool *eol)
{
        if (max == 0 || max > LR_PIECE)
                max = LR_PIECE;
        size_t i = find_eol(r, r->start);
        while (i == r->end && i - r->start < max && !r->eof) {
                size_t scanned = i - r->start;
                int f = fill(r);
                if (f < 0)
                        return f;
                i = find_eol(r, r->start + scanned);
        }
        size_t n = i - r->start;
        if (n == 0 && i == r->end)
                return 0; /* end of input, nothing pending */
        bool ends = n <= max && (i < r->end || r->eof);
        if (n > max)
                n = max;
        /* Copied out: skip_eol() may refill and move the buffer. */
        memcpy(r->piece, r->buf + r->start, n);
        r->start += n;
        if (ends && r->start < r->end) {
                int e = skip_eol(r);
                if (e < 0)
                        return e;
        }
        *line = r->piece;
        *len = n;
        *eol = ends;
        return 1;
}
