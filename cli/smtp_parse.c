/* cli/smtp_parse.c — SMTP command lines; see smtp_parse.h. */
#include "cli/smtp_parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

static const struct {
        const char *name;
        enum smtp_verb verb;
} verbs[] = {
    {"HELO", SMTP_HELO}, {"EHLO", SMTP_EHLO}, {"MAIL", SMTP_MAIL}, {"RCPT", SMTP_RCPT},
    {"DATA", SMTP_DATA}, {"RSET", SMTP_RSET}, {"NOOP", SMTP_NOOP}, {"QUIT", SMTP_QUIT},
    {"VRFY", SMTP_VRFY}, {"HELP", SMTP_HELP},
};

static size_t skip_sp(const char *s, size_t len, size_t i)
{
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
                i++;
        return i;
}

static int fail(const char **why, const char *reason)
{
        *why = reason;
        return -EINVAL;
}

/* Copy s[from..to) into out (NUL-terminated) if it fits in max. */
static int copy_out(char *out, size_t max, const char *s, size_t from, size_t to)
{
        if (to - from > max)
                return -EINVAL;
        memcpy(out, s + from, to - from);
        out[to - from] = '\0';
        return 0;
}

/* End of the path starting at s[i]: after the matching '>' for "<...>", else
 * at the first space. Quoted strings may hold '>' and spaces. */
static int path_end(const char *s, size_t len, size_t i, size_t *end)
{
        bool angle = i < len && s[i] == '<', quoted = false;
        for (size_t k = i + angle; k < len; k++) {
                char c = s[k];
                if (quoted && c == '\\') {
                        k++;
                        continue;
                }
                if (c == '"')
                        quoted = !quoted;
                else if (!quoted && angle && c == '>')
                        return *end = k + 1, 0;
                else if (!quoted && !angle && (c == ' ' || c == '\t'))
                        return *end = k, 0;
                else if (!quoted && angle && c == '<')
                        return -EINVAL;
        }
        if (angle || quoted)
                return -EINVAL;
        *end = len;
        return 0;
}

static int parse_param(const char *s, size_t from, size_t to, struct smtp_param *p)
{
        const char *eq = memchr(s + from, '=', to - from);
        size_t name_end = eq ? (size_t)(eq - s) : to;
        if (name_end == from || copy_out(p->name, SMTP_PNAME_MAX, s, from, name_end) < 0)
                return -EINVAL;
        for (char *c = p->name; *c; c++) {
                if (!isalnum((unsigned char)*c) && *c != '-')
                        return -EINVAL;
                *c = (char)toupper((unsigned char)*c);
        }
        if (!eq)
                return p->value[0] = '\0', 0;
        for (size_t k = name_end + 1; k < to; k++)
                if ((unsigned char)s[k] < 0x21 || (unsigned char)s[k] > 0x7e)
                        return -EINVAL;
        return copy_out(p->value, SMTP_PVALUE_MAX, s, name_end + 1, to);
}

/* "FROM:<path> params" or "TO:<path> params" after the verb. */
static int parse_path_cmd(const char *s, size_t len, size_t i, const char *kw, struct smtp_cmd *out,
                          const char **why)
{
        const char *syntax =
            out->verb == SMTP_MAIL ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>";
        size_t kwlen = strlen(kw);
        i = skip_sp(s, len, i);
        if (len - i < kwlen || strncasecmp(s + i, kw, kwlen) != 0)
                return fail(why, syntax);
        i = skip_sp(s, len, i + kwlen);
        size_t end;
        if (i >= len || path_end(s, len, i, &end) < 0)
                return fail(why, syntax);
        bool angle = s[i] == '<';
        if (copy_out(out->arg, SMTP_PATH_MAX, s, i + angle, end - angle) < 0)
                return fail(why, "address is too long");
        for (i = skip_sp(s, len, end); i < len; i = skip_sp(s, len, i)) {
                size_t to = i;
                while (to < len && s[to] != ' ' && s[to] != '\t')
                        to++;
                if (out->n_params == SMTP_PARAMS_MAX)
                        return fail(why, "too many parameters");
                if (parse_param(s, i, to, &out->params[out->n_params++]) < 0)
                        return fail(why, "bad parameter syntax");
                i = to;
        }
        return 0;
}

static int parse_helo(const char *s, size_t len, size_t i, struct smtp_cmd *out, const char **why)
{
        const char *syntax =
            out->verb == SMTP_EHLO ? "Syntax: EHLO hostname" : "Syntax: HELO hostname";
        i = skip_sp(s, len, i);
        size_t end = len;
        while (end > i && (s[end - 1] == ' ' || s[end - 1] == '\t'))
                end--;
        if (i == end || memchr(s + i, ' ', end - i) ||
            copy_out(out->arg, SMTP_PATH_MAX, s, i, end) < 0)
                return fail(why, syntax);
        return 0;
}

static bool printable(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
                        return false;
        return true;
}

int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *out, const char **why)
{
        const char *dummy;
        if (!why)
                why = &dummy;
        memset(out, 0, sizeof(*out));
        out->verb = SMTP_UNKNOWN;
        if (len > SMTP_LINE_MAX)
                return fail(why, "line too long");
        if (!printable(line, len))
                return fail(why, "control characters in the command");
        size_t vlen = 0;
        while (vlen < len && isalpha((unsigned char)line[vlen]))
                vlen++;
        if (vlen < len && line[vlen] != ' ' && line[vlen] != '\t')
                return 0; /* "MAIL:" and the like: not a command we know */
        for (size_t k = 0; k < sizeof(verbs) / sizeof(verbs[0]); k++)
                if (vlen == 4 && strncasecmp(line, verbs[k].name, 4) == 0)
                        out->verb = verbs[k].verb;
        size_t rest = skip_sp(line, len, vlen);
        switch (out->verb) {
        case SMTP_HELO:
        case SMTP_EHLO:
                return parse_helo(line, len, vlen, out, why);
        case SMTP_MAIL:
                return parse_path_cmd(line, len, vlen, "FROM:", out, why);
        case SMTP_RCPT:
                return parse_path_cmd(line, len, vlen, "TO:", out, why);
        case SMTP_DATA:
        case SMTP_RSET:
        case SMTP_QUIT:
                return rest == len ? 0 : fail(why, "Syntax: command takes no arguments");
        default:
                return copy_out(out->arg, SMTP_PATH_MAX, line, rest, len) < 0
                           ? fail(why, "argument too long")
                           : 0;
        }
}
