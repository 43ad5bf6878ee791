/* common/utf8.h — one well-formedness check for UTF-8 (RFC 3629), shared by
 * the address check and the envelope writer. */
#ifndef TARRY_COMMON_UTF8_H
#define TARRY_COMMON_UTF8_H

#include <stddef.h>

/* Length (2..4) of the well-formed UTF-8 sequence at s, or 0 (also for ASCII,
 * overlong forms, surrogates and code points past U+10FFFF). */
size_t utf8_seq_len(const unsigned char *s, size_t left);

#endif
