/* tests/fuzz/fuzz_smtp_session.c — a whole sendmail -bs session from a buffer.
 *
 * Input: what a client sends on stdin (commands, DATA, dot-stuffing, garbage,
 * end of input at any point). The session runs against a scratch spool with
 * replies to /dev/null; every message it queues must have an envelope whose
 * addresses pass addr_check and a body with no bare LF (CRLF lines only: a
 * bare LF passed on is how a message smuggles another past the next hop),
 * and is removed again afterwards.
 */
#include "fuzz.h"
#include "cli/smtp_server.h"
#include "common/address.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct tarry_config *cfg;
static struct queue *q;
static FILE *out;

static void setup(void)
{
        char text[512], err[256];
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = fuzz.example.org\n"
                 "message_size_limit = 64k\n",
                 fuzz_spool_dir());
        FUZZ_ASSERT(cfg_load_string("fuzz.conf", text, &cfg, err, sizeof(err)) == 0);
        FUZZ_ASSERT(queue_open(cfg->spool_dir, QUEUE_OPEN_CREATE, &q) == 0);
        out = fopen("/dev/null", "w");
        FUZZ_ASSERT(out);
}

static int check_and_remove(const char *id, void *userdata)
{
        (void)userdata;
        struct envelope *env = NULL;
        const char *why = NULL;
        FUZZ_ASSERT(queue_load(q, QUEUE_INCOMING, id, &env, &why) == 0);
        FUZZ_ASSERT(env->n_rcpt > 0);
        FUZZ_ASSERT(env->sender[0] == '\0' || addr_check(env->sender, &why) == 0);
        for (size_t i = 0; i < env->n_rcpt; i++)
                FUZZ_ASSERT(addr_check(env->rcpt[i].address, &why) == 0);
        envelope_free(env);
        int fd = -1;
        uint64_t size = 0;
        FUZZ_ASSERT(queue_open_body(q, QUEUE_INCOMING, id, &fd, &size) == 0);
        char *body = malloc(size + 1);
        FUZZ_ASSERT(body && pread(fd, body, size, 0) == (ssize_t)size);
        close(fd);
        for (uint64_t i = 0; i < size; i++)
                FUZZ_ASSERT(body[i] != '\n' || (i > 0 && body[i - 1] == '\r'));
        free(body);
        FUZZ_ASSERT(queue_remove(q, QUEUE_INCOMING, id) == 0);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (!q)
                setup();
        int fd = fuzz_memfd(data, size);
        FUZZ_ASSERT(fd >= 0);
        int ex = smtp_server_run(cfg, q, fd, out);
        close(fd);
        FUZZ_ASSERT(ex == 0);
        FUZZ_ASSERT(queue_scan(q, QUEUE_INCOMING, check_and_remove, NULL) == 0);
        return 0;
}
