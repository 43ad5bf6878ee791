/* cli/cli_util.h — small helpers shared by sendmail and tarryq.
 *
 * Exit codes (sysexits.h), configuration loading with the message printed,
 * address qualification (bare local names get @myorigin) and printing of
 * untrusted strings with their control characters made visible.
 */
#ifndef TARRY_CLI_UTIL_H
#define TARRY_CLI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config.h"
#include "queue/queue.h"

/* _cleanup_(envelope_freep) struct envelope *env = … */
static inline void envelope_freep(struct envelope **env)
{
        envelope_free(*env);
}

/* Load the configuration (-C path or NULL); on failure print "prog: message"
 * to stderr and return EX_CONFIG, else 0. */
int cli_load_config(const char *prog, const char *cli_path, struct tarry_config **out);

/* Open the spool of cfg for submission or reading; on failure print why and
 * return EX_TEMPFAIL, else 0. */
int cli_open_spool(const char *prog, const struct tarry_config *cfg, struct queue **out);

/* The sysexits code for a negative errno from the spool: EX_TEMPFAIL for
 * every "cannot take it now" (full disk, quota, file size limit, I/O),
 * EX_OSERR for out of memory. */
int cli_exit_for_spool_error(int r);

/* Turn addr[0..len) into a checked envelope address in *out (malloc'ed):
 * a bare local name gets "@origin". -EINVAL with *why when it is unsafe
 * (CR, LF, NUL, spaces outside quotes, unbalanced <> …). */
int cli_qualify(const char *addr, size_t len, const char *origin, char **out, const char **why);

/* Add a recipient unless env has it already. 0, or -ENOMEM, or -E2BIG past the limit. */
int cli_add_rcpt(struct envelope *env, const char *addr);

/* Write s[0..len) with control characters shown as \r, \n, \0, \xNN. */
void cli_print_escaped(FILE *f, const char *s, size_t len);

/* xtext (RFC 3461 4) of s: '+', '=' and characters outside 0x21..0x7e as "+XX". */
char *cli_xtext_encode(const char *s);
bool cli_xtext_valid(const char *s);

#endif
