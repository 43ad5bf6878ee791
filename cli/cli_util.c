/* cli/cli_util.c — see cli_util.h. */
#include "cli/cli_util.h"
#include "common/address.h"
#include "common/cleanup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#define RCPT_LIMIT 100000 /* as the envelope parser allows */

int cli_load_config(const char *prog, const char *cli_path, struct tarry_config **out)
{
        char err[512] = "";
        int r = cfg_load(cfg_path(cli_path), out, err, sizeof(err));
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", prog, err[0] ? err : strerror(-r));
                return EX_CONFIG;
        }
        return 0;
}

int cli_exit_for_spool_error(int r)
{
        return r == -ENOMEM ? EX_OSERR : EX_TEMPFAIL;
}

int cli_open_spool(const char *prog, const struct tarry_config *cfg, struct queue **out)
{
        int r = queue_open(cfg->spool_dir, 0, out);
        if (r < 0) {
                fprintf(stderr, "%s: cannot open the spool %s: %s\n", prog, cfg->spool_dir,
                        strerror(-r));
                return cli_exit_for_spool_error(r);
        }
        return 0;
}

int cli_qualify(const char *addr, size_t len, const char *origin, char **out, const char **why)
{
        if (memchr(addr, '\0', len))
                return *why = "contains a NUL byte", -EINVAL;
        if (len > ADDR_MAX)
                return *why = "address longer than 320 characters", -EINVAL;
        _cleanup_free_ char *a = strndup(addr, len);
        if (!a)
                return *why = "out of memory", -ENOMEM;
        int r = addr_check(a, why);
        if (r < 0)
                return r;
        if (!addr_domain(a)) {
                size_t n = len + 1 + strlen(origin) + 1;
                char *q = malloc(n);
                if (!q)
                        return *why = "out of memory", -ENOMEM;
                snprintf(q, n, "%s@%s", a, origin);
                free(a);
                a = q;
                if ((r = addr_check(a, why)) < 0)
                        return r;
        }
        *out = TAKE_PTR(a);
        return 0;
}

int cli_add_rcpt(struct envelope *env, const char *addr)
{
        for (size_t i = 0; i < env->n_rcpt; i++)
                if (strcmp(env->rcpt[i].address, addr) == 0)
                        return 0;
        if (env->n_rcpt >= RCPT_LIMIT)
                return -E2BIG;
        return envelope_add_rcpt(env, addr) ? 0 : -ENOMEM;
}

void cli_print_escaped(FILE *f, const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c == '\r')
                        fputs("\\r", f);
                else if (c == '\n')
                        fputs("\\n", f);
                else if (c == '\0')
                        fputs("\\0", f);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\x%02X", c);
                else
                        fputc(c, f);
        }
}

static bool xchar_plain(unsigned char c)
{
        return c >= 0x21 && c <= 0x7e && c != '+' && c != '=';
}

char *cli_xtext_encode(const char *s)
{
        size_t n = strlen(s);
        char *out = malloc(n * 3 + 1), *p = out;
        if (!out)
                return NULL;
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (xchar_plain(c))
                        *p++ = (char)c;
                else
                        p += sprintf(p, "+%02X", c);
        }
        *p = '\0';
        return out;
}

bool cli_xtext_valid(const char *s)
{
        for (; *s; s++) {
                if (*s == '+') {
                        if (!strchr("0123456789ABCDEF", s[1]) || !s[1] ||
                            !strchr("0123456789ABCDEF", s[2]) || !s[2])
                                return false;
                        s += 2;
                } else if (!xchar_plain((unsigned char)*s)) {
                        return false;
                }
        }
        return true;
}
