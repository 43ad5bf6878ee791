/* cli/headers.c — header field names and address lists; see headers.h. */
#include "cli/headers.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

size_t hdr_field_name_len(const char *line, size_t len)
{
        for (size_t i = 0; i < len && i <= HDR_NAME_MAX; i++) {
                unsigned char c = (unsigned char)line[i];
                if (c == ':')
                        return i;
                if (c <= ' ' || c >= 0x7f)
                        return 0;
        }
        return 0;
}

bool hdr_is(const char *field, size_t len, const char *name)
{
        size_t n = strlen(name);
        return hdr_field_name_len(field, len) == n && strncasecmp(field, name, n) == 0;
}

/* One mailbox being collected: the text outside <> and the text inside. */
struct unit {
        char text[HDR_UNIT_MAX];
        size_t tlen;
        char angle[HDR_UNIT_MAX];
        size_t alen;
        bool has_angle, in_angle, overflow;
};

static void unit_put(struct unit *u, char c)
{
        char *buf = u->in_angle ? u->angle : u->text;
        size_t *n = u->in_angle ? &u->alen : &u->tlen;
        if (*n >= HDR_UNIT_MAX) {
                u->overflow = true;
                return;
        }
        buf[(*n)++] = c;
}

static bool is_wsp(char c)
{
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Trim whitespace; a leading source route "@a,@b:" of an angle address is dropped too. */
static const char *trim(const char *s, size_t *n, bool route)
{
        while (*n > 0 && is_wsp(s[0]))
                s++, (*n)--;
        while (*n > 0 && is_wsp(s[*n - 1]))
                (*n)--;
        if (route && *n > 0 && s[0] == '@') {
                const char *colon = memchr(s, ':', *n);
                if (colon) {
                        *n -= (size_t)(colon + 1 - s);
                        s = colon + 1;
                }
        }
        return s;
}

typedef int (*addr_cb)(const char *addr, size_t alen, void *userdata);

static int unit_emit(struct unit *u, addr_cb cb, void *userdata, const char **why)
{
        size_t n = u->has_angle ? u->alen : u->tlen;
        const char *a = trim(u->has_angle ? u->angle : u->text, &n, u->has_angle);
        int r = 0;
        if (u->overflow && (!u->has_angle || u->alen >= HDR_UNIT_MAX)) {
                *why = "an address is longer than 2048 characters";
                r = -EBADMSG;
        } else if (n > 0) {
                r = cb(a, n, userdata);
        }
        u->tlen = u->alen = 0;
        u->has_angle = u->in_angle = u->overflow = false;
        return r;
}

/* Copy a quoted string starting at s[*i] == '"' into u; *i ends on the closing quote. */
static int take_quoted(const char *s, size_t len, size_t *i, struct unit *u)
{
        unit_put(u, s[(*i)++]);
        for (; *i < len; (*i)++) {
                unit_put(u, s[*i]);
                if (s[*i] == '\\' && *i + 1 < len)
                        unit_put(u, s[++(*i)]);
                else if (s[*i] == '"')
                        return 0;
        }
        return -EBADMSG;
}

/* Skip a (possibly nested) comment starting at s[*i] == '('; *i ends on its ')'. */
static int skip_comment(const char *s, size_t len, size_t *i)
{
        int depth = 0;
        for (; *i < len; (*i)++) {
                if (s[*i] == '\\')
                        (*i)++;
                else if (s[*i] == '(')
                        depth++;
                else if (s[*i] == ')' && --depth == 0)
                        return 0;
        }
        return -EBADMSG;
}

/* Handle a structural character c at top level (or inside <>). */
static int structural(char c, struct unit *u, bool *in_group, addr_cb cb, void *userdata,
                      const char **why)
{
        switch (c) {
        case '<':
                if (u->in_angle || u->has_angle)
                        return *why = "unbalanced <> in an address", -EBADMSG;
                u->in_angle = u->has_angle = true;
                return 0;
        case '>':
                if (!u->in_angle)
                        return *why = "unbalanced <> in an address", -EBADMSG;
                u->in_angle = false;
                return 0;
        case ':':
                if (u->in_angle) { /* source route "<@a:b@c>" */
                        unit_put(u, c);
                        return 0;
                }
                *in_group = true; /* "Group name:" — the name is not an address */
                u->tlen = 0;
                u->overflow = false;
                return 0;
        case ';':
                if (!*in_group)
                        return *why = "';' outside an address group", -EBADMSG;
                *in_group = false;
                return unit_emit(u, cb, userdata, why);
        default: /* ',' */
                if (u->in_angle) {
                        unit_put(u, c);
                        return 0;
                }
                return unit_emit(u, cb, userdata, why);
        }
}

int hdr_parse_addresses(const char *s, size_t len, addr_cb cb, void *userdata, const char **why)
{
        static struct unit zero;
        struct unit u = zero;
        bool in_group = false;
        const char *dummy;
        if (!why)
                why = &dummy;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                int r = 0;
                if (c == '"') {
                        if (take_quoted(s, len, &i, &u) < 0)
                                return *why = "unbalanced quotes in an address", -EBADMSG;
                } else if (c == '(' && !u.in_angle) {
                        if (skip_comment(s, len, &i) < 0)
                                return *why = "unbalanced parentheses in an address", -EBADMSG;
                        unit_put(&u, ' ');
                } else if (c == ')') {
                        return *why = "unbalanced parentheses in an address", -EBADMSG;
                } else if (strchr("<>:;,", c) && c != '\0') {
                        r = structural(c, &u, &in_group, cb, userdata, why);
                } else {
                        unit_put(&u, c);
                }
                if (r != 0)
                        return r;
        }
        if (u.in_angle)
                return *why = "unbalanced <> in an address", -EBADMSG;
        return unit_emit(&u, cb, userdata, why);
}
