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
        r->crlf = false;
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

/* Index of the first LF in the unread bytes from `from`, or end. */
static size_t find_lf(const struct line_reader *r, size_t from)
{
        const char *lf = memchr(r->buf + from, '\n', r->end - from);
        return lf ? (size_t)(lf - r->buf) : r->end;
}

int lr_next(struct line_reader *r, size_t max, const char **line, size_t *len, bool *eol)
{
        if (max == 0 || max > LR_PIECE)
                max = LR_PIECE;
        size_t i = find_lf(r, r->start);
        /* One byte beyond max is needed to know whether a CR there precedes an LF. */
        while (i == r->end && i - r->start <= max && !r->eof) {
                size_t scanned = i - r->start;
                int f = fill(r);
                if (f < 0)
                        return f;
                i = find_lf(r, r->start + scanned);
        }
        if (i == r->start && i == r->end)
                return 0; /* end of input, nothing pending */
        bool lf = i < r->end;
        bool cr = lf && i > r->start && r->buf[i - 1] == '\r';
        size_t n = i - r->start - cr;
        bool ends = n <= max && (lf || r->eof);
        if (n > max)
                n = max;
        memcpy(r->piece, r->buf + r->start, n);
        r->start += n;
        if (ends && lf) {
                r->start = i + 1;
                r->crlf = cr;
        } else if (ends) {
                r->crlf = false;
        }
        *line = r->piece;
        *len = n;
        *eol = ends;
        return 1;
}
