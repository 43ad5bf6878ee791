/* bounce/explain.h — private to bounce/: what a recipient's outcome means, in
 * RFC 3463 status codes for machines and plain words for the sender.
 * The wording and the fallback codes are tables in explain.c, one row each.
 */
#ifndef TARRY_BOUNCE_EXPLAIN_H
#define TARRY_BOUNCE_EXPLAIN_H

#include <stdbool.h>

#include "bounce/bounce.h"

#define DSN_STATUS_MAX 16 /* "5.123.123" and a NUL fit easily */

struct explanation {
        const char *what; /* what happened, one or two sentences */
        const char *todo; /* what the sender should do, if anything */
};

/* Is s an RFC 3463 status "c.sss.ddd" with class c in "245"? */
bool explain_status_valid(const char *s);

/* The Status: field for r in a report of kind (the server's enhanced code when
 * it fits the report, else derived from class and reply code; expiry: 4.4.7). */
void explain_status(const struct envelope_rcpt *r, enum dsn_kind kind, char out[DSN_STATUS_MAX]);

/* The class of r's last deferral: its reply_class name if known, else guessed
 * from the reply code (none: routing, 4xx: unknown_temp, 5xx: permanent). */
enum reply_class explain_class(const struct envelope_rcpt *r);

/* Plain words for r in a report of kind. */
struct explanation explain_rcpt(const struct envelope_rcpt *r, enum dsn_kind kind);

#endif
