/* smtpc/mime7.h — an 8-bit message made 7-bit for a server without 8BITMIME
 * (RFC 6152 section 3 forbids sending it 8-bit), as Postfix does: every leaf
 * part holding 8-bit bytes (CTE 7bit, 8bit or none) is re-encoded as
 * quoted-printable, multiparts and message/rfc822 are walked, and their
 * Content-Transfer-Encoding becomes 7bit (private to smtpc/).
 *
 * Input: the message as spooled (CRLF). Output: the converted message, or
 * why it cannot be converted (an 8-bit header, message/global, a binary or
 * malformed part, nesting deeper than MIME7_DEPTH_MAX) — the caller bounces
 * with 5.6.3 and that reason. Pure: no I/O. A DKIM signature over the
 * original body no longer verifies after conversion.
 */
#ifndef TARRY_SMTPC_MIME7_H
#define TARRY_SMTPC_MIME7_H

#include <stddef.h>

#define MIME7_DEPTH_MAX 20

/* 0 and *out (malloc'd, *out_len bytes and a NUL), -ENOMEM, or -EMEDIUMTYPE with
 * *why naming what could not be converted. */
int mime7_convert(const char *msg, size_t len, char **out, size_t *out_len, const char **why);

#endif
