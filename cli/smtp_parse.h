/* cli/smtp_parse.h — one SMTP command line of `sendmail -bs`, parsed.
 *
 * Input: a command line without its CRLF, untrusted, with explicit length.
 * Output: the verb and its argument: the domain of HELO/EHLO, or the path and
 * ESMTP parameters of MAIL FROM / RCPT TO. Nothing is allocated; every field
 * has a fixed limit, and anything beyond it is a syntax error. A fuzz target.
 */
#ifndef TARRY_CLI_SMTP_PARSE_H
#define TARRY_CLI_SMTP_PARSE_H

#include <stddef.h>

#define SMTP_LINE_MAX   2048 /* command line, without CRLF (RFC 5321 says 512; be lenient) */
#define SMTP_PATH_MAX   512
#define SMTP_PARAMS_MAX 16
#define SMTP_PNAME_MAX  32
#define SMTP_PVALUE_MAX 512

enum smtp_verb {
        SMTP_UNKNOWN,
        SMTP_HELO,
        SMTP_EHLO,
        SMTP_MAIL,
        SMTP_RCPT,
        SMTP_DATA,
        SMTP_RSET,
        SMTP_NOOP,
        SMTP_QUIT,
        SMTP_VRFY,
        SMTP_HELP,
};

struct smtp_param {
        char name[SMTP_PNAME_MAX + 1];   /* upper-cased */
        char value[SMTP_PVALUE_MAX + 1]; /* "" when the parameter has no "=value" */
};

struct smtp_cmd {
        enum smtp_verb verb;
        char arg[SMTP_PATH_MAX + 1]; /* HELO/EHLO domain; MAIL/RCPT path without <> */
        size_t n_params;
        struct smtp_param params[SMTP_PARAMS_MAX];
};

/* 0 on success (verb SMTP_UNKNOWN for an unrecognised command); -EINVAL for
 * a syntax error, with *why suitable for a 501 reply ("Syntax: MAIL FROM:<address>"). */
int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *out, const char **why);

#endif
