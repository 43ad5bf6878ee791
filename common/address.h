/* common/address.h — the one check every envelope address passes.
 *
 * Anything that becomes part of an SMTP command (MAIL FROM, RCPT TO) goes
 * through addr_check() first: curl does not filter CR/LF, so this is the
 * barrier against command injection. Shared by cli/, smtpc/ and bounce/.
 */
#ifndef TARRY_COMMON_ADDRESS_H
#define TARRY_COMMON_ADDRESS_H

#include <stddef.h>

#define ADDR_MAX 320 /* 64 local-part + '@' + 255 domain */

/* 0 if addr is a safe "local@domain" (or bare "local") mailbox, else -EINVAL and
 * *why names the problem ("contains CR or LF", "unbalanced <>", ...). */
int addr_check(const char *addr, const char **why);

/* The domain part (after the last '@' outside quotes), or NULL. */
const char *addr_domain(const char *addr);

#endif
