/* common/address.c — envelope address validation; see address.h. */
#include "common/address.h"
#include "common/utf8.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

static int fail(const char **why, const char *reason)
{
        if (why)
                *why = reason;
        return -EINVAL;
}

/* Why byte c may never appear in an address, quoted or escaped or not; NULL if it may. */
static const char *forbidden(unsigned char c)
{
        if (c == '\r' || c == '\n')
                return "contains CR or LF";
        if (c < 0x20 || c == 0x7f)
                return "contains a control character";
        if (c == '<' || c == '>')
                return "contains '<' or '>'";
        return NULL;
}

/* Non-ASCII is allowed only as UTF-8 (RFC 6531); the spool stores addresses as JSON text. */
static bool utf8_valid(const char *addr, size_t len)
{
        const unsigned char *s = (const unsigned char *)addr;
        for (size_t i = 0; i < len;) {
                size_t n = s[i] < 0x80 ? 1 : utf8_seq_len(s + i, len - i);
                if (n == 0)
                        return false;
                i += n;
        }
        return true;
}

int addr_check(const char *addr, const char **why)
{
        size_t len = strlen(addr);
        if (len == 0)
                return fail(why, "empty address");
        if (len > ADDR_MAX)
                return fail(why, "address longer than 320 characters");

        int quoted = 0, ats = 0;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)addr[i];
                const char *bad = forbidden(c);
                if (bad)
                        return fail(why, bad);
                if (c == '\\' && quoted) {
                        if (i + 1 >= len)
                                return fail(why, "ends in a backslash");
                        /* an escaped character is still sent as is: check it too */
                        if ((bad = forbidden((unsigned char)addr[++i])))
                                return fail(why, bad);
                        continue;
                }
                if (c == '"') {
                        quoted = !quoted;
                        continue;
                }
                if (quoted)
                        continue;
                if (c == ' ' || c == '\t')
                        return fail(why, "contains a space outside quotes");
                if (c == '@')
                        ats++;
        }
        if (quoted)
                return fail(why, "unbalanced quotes");
        if (ats > 1)
                return fail(why, "more than one '@' outside quotes");
        if (!utf8_valid(addr, len))
                return fail(why, "contains bytes that are not UTF-8");
        const char *dom = addr_domain(addr);
        if (dom && *dom == '\0')
                return fail(why, "empty domain after '@'");
        if (addr[0] == '@')
                return fail(why, "empty local part");
        return 0;
}

const char *addr_domain(const char *addr)
{
        const char *at = NULL;
        int quoted = 0;
        for (const char *p = addr; *p; p++) {
                if (*p == '\\' && quoted && p[1]) {
                        p++;
                        continue;
                }
                if (*p == '"')
                        quoted = !quoted;
                else if (*p == '@' && !quoted)
                        at = p;
        }
        return at ? at + 1 : NULL;
}
