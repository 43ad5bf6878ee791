/* tests/fuzz/fuzz_smtp_parse.c — one command line of sendmail -bs.
 *
 * Input: a command line without CRLF. The parser must stay inside its fixed
 * fields (NUL-terminated, within their limits), say why when it refuses, and
 * hand out a MAIL/RCPT path with no CR or LF in it.
 */
#include "fuzz.h"
#include "cli/smtp_parse.h"

#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > SMTP_LINE_MAX)
                return 0; /* the session refuses longer lines before parsing */
        /* a heap copy of exactly size bytes, so ASan sees any read past the end */
        char *line = malloc(size ? size : 1);
        FUZZ_ASSERT(line);
        memcpy(line, data, size);
        struct smtp_cmd cmd;
        const char *why = NULL;
        int r = smtp_parse_command(line, size, &cmd, &why);
        FUZZ_ASSERT(r == 0 || (r == -EINVAL && why && *why));
        if (r == 0) {
                FUZZ_ASSERT(memchr(cmd.arg, '\0', sizeof(cmd.arg)) != NULL);
                FUZZ_ASSERT(cmd.n_params <= SMTP_PARAMS_MAX);
                for (size_t i = 0; i < cmd.n_params; i++) {
                        FUZZ_ASSERT(memchr(cmd.params[i].name, '\0', sizeof(cmd.params[i].name)));
                        FUZZ_ASSERT(memchr(cmd.params[i].value, '\0', sizeof(cmd.params[i].value)));
                }
                if (cmd.verb == SMTP_MAIL || cmd.verb == SMTP_RCPT)
                        FUZZ_ASSERT(!strpbrk(cmd.arg, "\r\n"));
        }
        free(line);
        return 0;
}
