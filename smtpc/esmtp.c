/* smtpc/esmtp.c — EHLO keywords and MAIL/RCPT parameters; see esmtp.h. */
#include "smtpc/esmtp.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>

#include "common/address.h"
#include "common/cleanup.h"

static const struct {
        const char *keyword;
        enum esmtp_ext bit;
} keywords[] = {
    {"PIPELINING", ESMTP_PIPELINING},
    {"8BITMIME", ESMTP_8BITMIME},
    {"SMTPUTF8", ESMTP_SMTPUTF8},
    {"DSN", ESMTP_DSN},
    {"SIZE", ESMTP_SIZE},
};

static void parse_keyword(const char *line, size_t len, struct esmtp_caps *out)
{
        for (size_t i = 0; i < ELEMENTSOF(keywords); i++) {
                size_t kl = strlen(keywords[i].keyword);
                if (len < kl || strncasecmp(line, keywords[i].keyword, kl) != 0 ||
                    (len > kl && line[kl] != ' '))
                        continue;
                out->ext |= keywords[i].bit;
                if (keywords[i].bit == ESMTP_SIZE && len > kl + 1) {
                        char num[24] = "";
                        size_t n = len - kl - 1 < sizeof(num) - 1 ? len - kl - 1 : sizeof(num) - 1;
                        memcpy(num, line + kl + 1, n);
                        out->size_max = strtoull(num, NULL, 10);
                }
        }
}

void esmtp_parse_ehlo(const char *text, struct esmtp_caps *out)
{
        memset(out, 0, sizeof(*out));
        const char *p = text;
        bool first = true;
        while (p && *p) {
                const char *end = strchr(p, '\n');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                if (!first && len > 4)
                        parse_keyword(p + 4, len - 4, out);
                first = false;
                p = end ? end + 1 : NULL;
        }
}

static bool hex_upper(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

bool esmtp_xtext_ok(const char *s, size_t max)
{
        size_t n = 0;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
                if (n >= max)
                        return false;
                if (*p == '+') {
                        if (!hex_upper((char)p[1]) || !hex_upper((char)p[2]))
                                return false;
                        p += 2;
                        n += 2;
                } else if (*p < 33 || *p > 126 || *p == '=') {
                        return false;
                }
        }
        return n > 0;
}

bool esmtp_has_8bit(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s >= 0x80)
                        return true;
        return false;
}

/* Appends fmt to out at *len; -ENOSPC when it does not fit. */
/* Append the formatted text to out (size bytes, *len used); -ENOSPC when it
 * does not fit. */
static int __attribute__((format(printf, 4, 5)))
appendf(char *out, size_t size, size_t *len, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(out + *len, size - *len, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n + 1 > size - *len)
                return -ENOSPC;
        *len += (size_t)n;
        return 0;
}

int esmtp_mail_cmd(char *out, size_t size, const char *sender, const struct esmtp_mail *m,
                   const struct esmtp_caps *caps)
{
        size_t len = 0;
        if (size == 0 || appendf(out, size, &len, "MAIL FROM:<%s>", sender) < 0)
                return -ENOSPC;
        if (m->size && (caps->ext & ESMTP_SIZE) &&
            appendf(out, size, &len, " SIZE=%llu", (unsigned long long)m->size) < 0)
                return -ENOSPC;
        if (m->eight_bit && (caps->ext & ESMTP_8BITMIME) &&
            appendf(out, size, &len, " BODY=8BITMIME") < 0)
                return -ENOSPC;
        if (m->smtputf8 && (caps->ext & ESMTP_SMTPUTF8) &&
            appendf(out, size, &len, " SMTPUTF8") < 0)
                return -ENOSPC;
        if (caps->ext & ESMTP_DSN) {
                if (m->ret && appendf(out, size, &len, m->ret == 2 ? " RET=HDRS" : " RET=FULL") < 0)
                        return -ENOSPC;
                if (m->envid && m->envid[0]) {
                        if (!esmtp_xtext_ok(m->envid, 100)) /* RFC 3461 4.4: at most 100 */
                                return -EINVAL;
                        if (appendf(out, size, &len, " ENVID=%s", m->envid) < 0)
                                return -ENOSPC;
                }
        }
        return appendf(out, size, &len, "\r\n");
}

int esmtp_rcpt_cmd(char *out, size_t size, const char *rcpt, const struct esmtp_rcpt *p,
                   const struct esmtp_caps *caps)
{
        size_t len = 0;
        if (size == 0 || appendf(out, size, &len, "RCPT TO:<%s>", rcpt) < 0)
                return -ENOSPC;
        if ((caps->ext & ESMTP_DSN) && p && p->notify) {
                if (p->notify & ESMTP_NOTIFY_NEVER) {
                        if (appendf(out, size, &len, " NOTIFY=NEVER") < 0)
                                return -ENOSPC;
                } else {
                        static const struct {
                                unsigned bit;
                                const char *name;
                        } kw[] = {{ESMTP_NOTIFY_SUCCESS, "SUCCESS"},
                                  {ESMTP_NOTIFY_FAILURE, "FAILURE"},
                                  {ESMTP_NOTIFY_DELAY, "DELAY"}};
                        const char *sep = " NOTIFY=";
                        for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++)
                                if (p->notify & kw[i].bit) {
                                        if (appendf(out, size, &len, "%s%s", sep, kw[i].name) < 0)
                                                return -ENOSPC;
                                        sep = ",";
                                }
                        if (sep[0] == ' ' && appendf(out, size, &len, "%s", sep) < 0)
                                return -ENOSPC;
                }
        }
        if ((caps->ext & ESMTP_DSN) && p && p->orcpt && p->orcpt[0]) {
                /* addr-type ";" xtext: the type is an atom, the address is encoded */
                const char *semi = strchr(p->orcpt, ';');
                if (!semi || semi == p->orcpt || semi - p->orcpt > 32)
                        return -EINVAL;
                for (const char *t = p->orcpt; t < semi; t++)
                        if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
                              (*t >= '0' && *t <= '9') || *t == '-'))
                                return -EINVAL;
                if (!esmtp_xtext_ok(semi + 1, 500)) /* RFC 3461 4.2: ORCPT is at most 500 */
                        return -EINVAL;
                if (appendf(out, size, &len, " ORCPT=%s", p->orcpt) < 0)
                        return -ENOSPC;
        }
        return appendf(out, size, &len, "\r\n");
}

int esmtp_alabel(const char *domain, char *out, size_t size)
{
        if (!esmtp_has_8bit(domain)) {
                if (strlen(domain) + 1 > size)
                        return -ENOSPC;
                memcpy(out, domain, strlen(domain) + 1);
                return 0;
        }
        char *ace = NULL;
        if (idn2_to_ascii_8z(domain, &ace, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK)
                return -EINVAL;
        int r = strlen(ace) + 1 > size ? -ENOSPC : 0;
        if (r == 0)
                memcpy(out, ace, strlen(ace) + 1);
        idn2_free(ace);
        return r;
}

int esmtp_ascii_address(const char *addr, char *out, size_t size)
{
        const char *dom = addr_domain(addr);
        size_t local = dom ? (size_t)(dom - addr) : strlen(addr); /* "local@" */
        for (size_t i = 0; i < local; i++)
                if ((unsigned char)addr[i] >= 0x80)
                        return -EILSEQ;
        if (!dom) {
                if (strlen(addr) + 1 > size)
                        return -ENOSPC;
                memcpy(out, addr, strlen(addr) + 1);
                return 0;
        }
        if (local >= size)
                return -ENOSPC;
        memcpy(out, addr, local);
        return esmtp_alabel(dom, out + local, size - local);
}
