/* cli/headers.h — message header fields and RFC 5322 address lists.
 *
 * The parsers sendmail runs on untrusted input (stdin, the command line):
 * header field names, and address lists as found in To/Cc/Bcc or given as
 * recipients ("Name <a@b>, c@d, Group: e@f;"). Each takes explicit lengths,
 * allocates nothing it does not free, and never reads past len: these are the
 * fuzz targets of cli/.
 */
#ifndef TARRY_CLI_HEADERS_H
#define TARRY_CLI_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#define HDR_NAME_MAX 128  /* longest field name we recognise as one */
#define HDR_UNIT_MAX 2048 /* longest single mailbox text (display name included) */

/* Length of the field name if line starts a header field ("Name:"), else 0.
 * A name is 1..HDR_NAME_MAX printable characters other than ':' (RFC 5322 2.2). */
size_t hdr_field_name_len(const char *line, size_t len);

/* Does the field (name and colon, then the value) have this name? Case-insensitive. */
bool hdr_is(const char *field, size_t len, const char *name);

/* Call cb once per address of the RFC 5322 address-list in s[0..len): angle
 * addresses win over display names, comments and group names are dropped,
 * "<>" and empty members are skipped, folding (CRLF + WSP) is whitespace.
 * The address handed to cb is not NUL-terminated and not yet validated. A
 * non-zero return from cb stops the walk and is returned. Malformed lists
 * (unbalanced quotes, parentheses or <>) give -EBADMSG and *why. */
int hdr_parse_addresses(const char *s, size_t len,
                        int (*cb)(const char *addr, size_t alen, void *userdata), void *userdata,
                        const char **why);

#endif
