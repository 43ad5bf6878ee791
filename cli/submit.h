/* cli/submit.h — one message from a submitter into a queue draft.
 *
 * Shared by `sendmail` (stdin) and `sendmail -bs` (DATA). Input: the
 * message's lines, terminators already removed (the caller handles "." and
 * dot-unstuffing). Output, in the draft: the header block with Bcc removed
 * and Date, Message-ID and From added when missing, a blank line, the body;
 * every line ends in CRLF and none is longer than 998 bytes (longer ones are
 * folded with CRLF SPACE, as Postfix's smtp_line_length_limit does). With -t,
 * the recipients of To/Cc/Bcc (or of Resent-To/Cc/Bcc when present).
 * Errors are sticky: after the first one every call returns it, and
 * submit_error() says what happened in a sentence for the user.
 */
#ifndef TARRY_CLI_SUBMIT_H
#define TARRY_CLI_SUBMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "queue/queue.h"

#define SUBMIT_HEADER_MAX (1u << 20) /* the whole header block */
#define SUBMIT_LINE_MAX   998        /* RFC 5322 2.1.1, without CRLF */

struct submit_opts {
        const struct tarry_config *cfg;
        bool extract_rcpts;    /* -t */
        const char *from_addr; /* for an added From: */
        const char *full_name; /* display name for an added From:, or NULL */
};

struct submit;

/* -errno from the spool on failure. */
int submit_begin(struct queue *q, const struct submit_opts *o, struct submit **out);

/* One piece of a line (eol: the line ends after it). Returns 0, -EMSGSIZE
 * (over message_size_limit or the header limit), -EBADMSG (a bad address in
 * a -t header) or a spool error. */
int submit_line(struct submit *s, const char *p, size_t len, bool eol);

/* End of input: finish the header if still open; add -t recipients to env. */
int submit_finish(struct submit *s, struct envelope *env);

/* Commit the draft with env (after submit_finish). Only 0 means durable. */
int submit_commit(struct submit *s, struct envelope *env);
/* Free s; a draft not committed is aborted: nothing is left half-queued. */
void submit_free(struct submit *s);

/* What went wrong, for the user ("" when nothing did). */
const char *submit_error(const struct submit *s);

/* The header values we add, exposed for tests. */
int submit_format_date(long long t, char *buf, size_t len);
int submit_format_from(const char *addr, const char *full_name, char *buf, size_t len);

#endif
