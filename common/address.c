/* common/address.c — envelope address validation; see address.h. */
#include "common/address.h"

#include <errno.h>
#include <string.h>

static int fail(const char **why, const char *reason)
{
        if (why)
                *why = reason;
        return -EINVAL;
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
                if (c == '\r' || c == '\n')
                        return fail(why, "contains CR or LF");
                if (c < 0x20 || c == 0x7f)
                        return fail(why, "contains a control character");
                if (c == '<' || c == '>')
                        return fail(why, "contains '<' or '>'");
                if (c == '\\' && quoted) {
                        if (i + 1 >= len)
                                return fail(why, "ends in a backslash");
                        i++;
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
