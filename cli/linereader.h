/* cli/linereader.h — lines from a file descriptor, LF or CRLF ends.
 *
 * Hands out a line in pieces of at most a caller-chosen size, so no input can
 * make it buffer without bound. LF and CRLF end a line; the terminator is
 * never part of the piece, and crlf says which one it was. A bare CR (one not
 * followed by LF) is data and never ends a line: "Subject: a\rBcc: b" is one
 * header field, as Postfix reads it. A last line without a terminator is
 * still a line.
 */
#ifndef TARRY_CLI_LINEREADER_H
#define TARRY_CLI_LINEREADER_H

#include <stdbool.h>
#include <stddef.h>

#define LR_BUF   65536
#define LR_PIECE (LR_BUF / 2)

struct line_reader {
        int fd;
        size_t start, end;
        bool eof;
        bool crlf; /* the last line handed out (eol) ended with CRLF, not a bare LF */
        char buf[LR_BUF];
        char piece[LR_PIECE];
};

void lr_init(struct line_reader *r, int fd);

/* Next piece of the current line: at most max bytes (1 .. LR_PIECE) at *line.
 * *eol is true when the line ended after this piece; r->crlf then says whether
 * its terminator was CRLF (false: a bare LF, or the end of input). Returns 1
 * for a piece, 0 at end of input, a negative errno on a read error. */
int lr_next(struct line_reader *r, size_t max, const char **line, size_t *len, bool *eol);

#endif
