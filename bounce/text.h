/* bounce/text.h — private to bounce/: a growable byte buffer and the text
 * transformations a DSN needs (sanitising untrusted text, header folding,
 * word wrapping, quoted-printable, RFC 5322 dates, xtext decoding).
 * Everything that came from a remote server or a submitter passes through
 * text_clean_ascii() or text_clean_utf8() before it is written anywhere.
 */
#ifndef TARRY_BOUNCE_TEXT_H
#define TARRY_BOUNCE_TEXT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A byte buffer with a sticky error: after a failed allocation every further
 * append is a no-op and err stays -ENOMEM, so builders check once at the end. */
struct buf {
        char *p;
        size_t len;
        size_t cap;
        int err;
};

void buf_add(struct buf *b, const void *data, size_t len);
void buf_adds(struct buf *b, const char *s);
void buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_done(struct buf *b);

/* Untrusted text → one line of printable US-ASCII: controls (CR, LF, NUL,
 * TAB…) become spaces, runs of spaces collapse, ends are trimmed, 8-bit bytes
 * become '?', and the result is cut to max bytes (ending in "..."). Malloc'd. */
char *text_clean_ascii(const char *in, size_t max);

/* Same, but valid UTF-8 sequences are kept; invalid bytes become U+FFFD and
 * the cut never splits a character. Malloc'd. */
char *text_clean_utf8(const char *in, size_t max);

/* Is there any byte >= 0x80 in s[0..len)? */
bool text_has_8bit(const char *s, size_t len);

/* Append "Name: value" CRLF, folding value (clean ASCII, single spaces) at
 * spaces so no line exceeds 78 columns; a word longer than a line is split. */
void text_header(struct buf *b, const char *name, const char *value);

/* Append text word-wrapped to width columns, every line prefixed by indent
 * (continuation lines by indent too), each ended by CRLF. Long words are split
 * on UTF-8 character boundaries. */
void text_wrap(struct buf *b, const char *indent, const char *text, size_t width);

/* Append the CRLF text in[0..len) quoted-printable encoded (RFC 2045 §6.7). */
void text_qp(struct buf *b, const char *in, size_t len);

/* Append in[0..len) with every line end made CRLF (bare LF or CR) and NUL
 * bytes dropped; the result ends with CRLF unless it is empty. */
void text_crlf(struct buf *b, const char *in, size_t len);

/* RFC 5322 date-time of a CLOCK_REALTIME time in microseconds, local zone:
 * "Tue, 02 Jan 2024 15:04:05 +0100". out needs 40 bytes. */
void text_date(int64_t us, char out[40]);

/* Decode RFC 3461 xtext ("+2B" → '+'); invalid escapes pass through. Malloc'd. */
char *text_xtext_decode(const char *in);

/* Fill out with n random bytes (getrandom, falling back to clock and pid mixing
 * when the pool is not ready: these only need to be unique, not secret). */
void text_random(void *out, size_t n);

#endif
