/* smtpc/reply.h — parsing SMTP replies as libcurl hands them over (private).
 *
 * The one parser for bytes a remote server sends us: fed chunk by chunk (one
 * or several lines, or part of a line), it assembles one reply at a time,
 * keeps at most SMTPC_REPLY_MAX bytes of its text and counts the rest so the
 * caller can abort a server that never stops talking.
 */
#ifndef TARRY_SMTPC_REPLY_H
#define TARRY_SMTPC_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "smtpc/smtpc.h"

struct reply_acc {
        char text[SMTPC_REPLY_MAX + 1]; /* lines joined with '\n', no CRLF */
        size_t len;                     /* bytes in text */
        size_t total;                   /* bytes received for this reply */
        char head[4];                   /* first 4 bytes of the current line */
        size_t head_len;
        bool at_line_start;
        bool garbled; /* a line did not start with the reply's 3 digits and
                       * ' ' or '-', or held a NUL (kept as '?'): the reply
                       * ends with that line */
        int code;     /* from the first line, 0 until known */
};

void reply_acc_reset(struct reply_acc *r);

/* Feed bytes. Returns the number consumed: stops right after the line that
 * completes a reply (*complete set), so the caller handles it and feeds the
 * rest after a reset. */
size_t reply_acc_feed(struct reply_acc *r, const char *buf, size_t len, bool *complete);

/* The enhanced status code ("4.7.1") at the start of the text after the
 * basic code, when its class matches the basic code's. "" otherwise. */
void reply_enhanced(const char *text, int code, char out[SMTPC_ENH_MAX]);

#endif
