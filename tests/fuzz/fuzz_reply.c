/* tests/fuzz/fuzz_reply.c — bytes from a remote SMTP server, as tarryd sees them.
 *
 * The input is cut into chunks (sizes taken from the first byte, as libcurl
 * may hand over any split) and fed to smtpc's reply assembler; each completed
 * reply goes through reply_enhanced and then the default classifier, the path
 * a server's words take from the socket to a retry decision, and then into
 * the recipient's envelope, which must still be writable and readable.
 */
#include "fuzz.h"
#include "scheduler/scheduler.h"
#include "queue/queue.h"
#include "smtpc/reply.h"

#include <string.h>

static struct sched_classifier *cls;

/* The daemon stores the reply text as the recipient's last_reply. */
static void check_stored(const char *text, int code, const char *enh)
{
        struct envelope *env = envelope_new();
        FUZZ_ASSERT(env);
        memcpy(env->id, "0123456789ABCDEF", QUEUE_ID_LEN + 1);
        struct envelope_rcpt *r = envelope_add_rcpt(env, "rcpt@example.org");
        FUZZ_ASSERT(r);
        r->state = RCPT_DEFERRED;
        r->reply_code = code;
        r->dsn_status = enh[0] ? strdup(enh) : NULL;
        r->last_reply = strdup(text);
        json_t *j = envelope_to_json(env);
        FUZZ_ASSERT(j);
        char *s = json_dumps(j, 0);
        FUZZ_ASSERT(s);
        struct envelope *back = NULL;
        const char *why = NULL;
        int rc = envelope_from_json(s, strlen(s), &back, &why);
        if (rc < 0)
                fprintf(stderr, "stored reply does not load: %s\n%s\n", why, s);
        FUZZ_ASSERT(rc == 0);
        envelope_free(back);
        free(s);
        json_decref(j);
        envelope_free(env);
}

static void check_reply(const struct reply_acc *acc)
{
        FUZZ_ASSERT(acc->len <= SMTPC_REPLY_MAX);
        FUZZ_ASSERT(acc->text[acc->len] == '\0');
        FUZZ_ASSERT(acc->code == 0 || (acc->code >= 0 && acc->code <= 999));
        char enh[SMTPC_ENH_MAX];
        memset(enh, 'x', sizeof(enh));
        reply_enhanced(acc->text, acc->code, enh);
        FUZZ_ASSERT(memchr(enh, '\0', sizeof(enh)) != NULL);
        if (enh[0])
                FUZZ_ASSERT(enh[0] == '0' + acc->code / 100 && enh[1] == '.');
        struct sched_reply r = {.code = acc->code, .enhanced = enh, .text = acc->text};
        struct sched_verdict v;
        sched_classify(cls, &r, &v);
        FUZZ_ASSERT(v.accepted || v.rule != NULL);
        FUZZ_ASSERT(v.accepted || v.cls < CLASS__MAX); /* 2xx: class is meaningless */
        FUZZ_ASSERT(v.hint_s >= -1 && v.hint_s <= SCHED_HINT_MAX_S);
        check_stored(acc->text, v.code, v.enhanced); /* as daemon/deliver.c stores it */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (!cls)
                FUZZ_ASSERT(sched_classifier_new(&cls) == 0);
        if (size == 0)
                return 0;
        size_t chunk = (size_t)data[0] % 64 + 1;
        const char *p = (const char *)data + 1;
        size_t left = size - 1;
        struct reply_acc acc;
        reply_acc_reset(&acc);
        while (left > 0) {
                size_t n = left < chunk ? left : chunk;
                while (n > 0) {
                        bool complete = false;
                        size_t used = reply_acc_feed(&acc, p, n, &complete);
                        FUZZ_ASSERT(used <= n);
                        FUZZ_ASSERT(complete || used == n);
                        if (complete) {
                                check_reply(&acc);
                                reply_acc_reset(&acc);
                        }
                        p += used, n -= used, left -= used;
                }
        }
        return 0;
}
