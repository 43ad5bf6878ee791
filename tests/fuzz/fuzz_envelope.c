/* tests/fuzz/fuzz_envelope.c — an envelope file from the spool.
 *
 * Input: envelope JSON (a file anyone with spool access could have edited or
 * truncated). It either loads, and then it serialises and loads back to the
 * same JSON and renders as a tarryq -j listing, or it is refused with a
 * reason (the daemon then quarantines it).
 */
#include "fuzz.h"
#include "common/address.h"
#include "queue/queue.h"

#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct envelope *env = NULL;
        const char *why = NULL;
        int r = envelope_from_json((const char *)data, size, &env, &why);
        if (r < 0) {
                FUZZ_ASSERT(r == -EBADMSG && why && *why);
                return 0;
        }
        FUZZ_ASSERT(env && env->sender);
        FUZZ_ASSERT(env->sender[0] == '\0' || addr_check(env->sender, &why) == 0);
        for (size_t i = 0; i < env->n_rcpt; i++)
                FUZZ_ASSERT(addr_check(env->rcpt[i].address, &why) == 0);

        json_t *j = envelope_to_json(env);
        FUZZ_ASSERT(j);
        char *s1 = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
        FUZZ_ASSERT(s1);
        struct envelope *back = NULL;
        r = envelope_from_json(s1, strlen(s1), &back, &why);
        if (r < 0)
                fprintf(stderr, "own output refused: %s\n%s\n", why, s1);
        FUZZ_ASSERT(r == 0);
        json_t *j2 = envelope_to_json(back);
        char *s2 = json_dumps(j2, JSON_SORT_KEYS | JSON_COMPACT);
        FUZZ_ASSERT(s2 && strcmp(s1, s2) == 0);

        json_t *listing = queue_listing_json("active", env);
        FUZZ_ASSERT(listing);
        char reason[512];
        for (size_t i = 0; i < env->n_rcpt; i++)
                (void)queue_delay_reason(&env->rcpt[i], reason, sizeof(reason));
        json_decref(listing);
        free(s1);
        free(s2);
        json_decref(j);
        json_decref(j2);
        envelope_free(back);
        envelope_free(env);
        return 0;
}
