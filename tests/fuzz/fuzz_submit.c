/* tests/fuzz/fuzz_submit.c — a message on sendmail's stdin, -t included.
 *
 * Input: the first byte picks the options (bit 0: -t, bit 1: a -F full name,
 * bit 2: commit when there are recipients), the rest is the message. It is
 * read with sendmail's line reader and fed to cli/submit into a draft of a
 * scratch spool. A committed body must keep submit.h's promise: every line
 * ends in CRLF (no bare LF; a bare CR is data, as the line reader keeps it)
 * and none is longer than 998 bytes; -t recipients pass addr_check. The message is removed again so
 * the spool stays empty.
 */
#include "fuzz.h"
#include "cli/cli_util.h"
#include "cli/linereader.h"
#include "cli/submit.h"
#include "common/address.h"

#include <string.h>
#include <unistd.h>

static struct tarry_config *cfg;
static struct queue *q;
static struct line_reader lr;

static void setup(void)
{
        char text[512], err[256];
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = fuzz.example.org\n"
                 "message_size_limit = 1M\n",
                 fuzz_spool_dir());
        FUZZ_ASSERT(cfg_load_string("fuzz.conf", text, &cfg, err, sizeof(err)) == 0);
        FUZZ_ASSERT(queue_open(cfg->spool_dir, QUEUE_OPEN_CREATE, &q) == 0);
}

static void check_body(const char *id)
{
        int fd = -1;
        uint64_t size = 0;
        FUZZ_ASSERT(queue_open_body(q, QUEUE_INCOMING, id, &fd, &size) == 0);
        char *body = malloc(size + 1);
        FUZZ_ASSERT(body);
        FUZZ_ASSERT(pread(fd, body, size, 0) == (ssize_t)size);
        close(fd);
        size_t col = 0;
        for (uint64_t i = 0; i < size; i++) {
                if (body[i] == '\r' && i + 1 < size && body[i + 1] == '\n') {
                        i++;
                        col = 0;
                        continue;
                }
                FUZZ_ASSERT(body[i] != '\n');          /* no bare LF */
                FUZZ_ASSERT(++col <= SUBMIT_LINE_MAX); /* a bare CR is data, and counts */
        }
        FUZZ_ASSERT(col == 0); /* the last line is terminated too */
        free(body);
}

static int feed(struct submit *sub, int fd)
{
        lr_init(&lr, fd);
        for (;;) {
                const char *p;
                size_t n;
                bool eol;
                int got = lr_next(&lr, 0, &p, &n, &eol);
                if (got <= 0)
                        return got;
                int r = submit_line(sub, p, n, eol);
                if (r < 0)
                        return r;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (!q)
                setup();
        if (size == 0)
                return 0;
        unsigned flags = data[0];
        int fd = fuzz_memfd(data + 1, size - 1);
        FUZZ_ASSERT(fd >= 0);
        struct submit_opts o = {
            .cfg = cfg,
            .extract_rcpts = flags & 1,
            .from_addr = "fuzz@example.org",
            .full_name = (flags & 2) ? "Fuzz \"Tester\" Ünïcode" : NULL,
        };
        struct envelope *env = envelope_new();
        FUZZ_ASSERT(env);
        struct submit *sub = NULL;
        FUZZ_ASSERT(submit_begin(q, &o, &sub) == 0);
        int r = feed(sub, fd);
        close(fd);
        if (r == 0)
                r = submit_finish(sub, env);
        if (r < 0)
                FUZZ_ASSERT(submit_error(sub)[0] != '\0');
        for (size_t i = 0; r == 0 && i < env->n_rcpt; i++) {
                const char *why;
                FUZZ_ASSERT(addr_check(env->rcpt[i].address, &why) == 0);
        }
        if (r == 0 && (flags & 4) && env->n_rcpt > 0) {
                env->user = strdup("fuzz");
                FUZZ_ASSERT(submit_commit(sub, env) == 0);
                check_body(env->id);
                FUZZ_ASSERT(queue_remove(q, QUEUE_INCOMING, env->id) == 0);
        }
        submit_free(sub);
        envelope_free(env);
        return 0;
}
