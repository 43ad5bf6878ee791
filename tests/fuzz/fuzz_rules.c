/* tests/fuzz/fuzz_rules.c — an operator rule file (classifier_rules), then a reply.
 *
 * Input: rule-file text, optionally followed by "\n%%\n" and a reply text.
 * A file that loads must leave a classifier that classifies anything; one
 * that does not must say why ("name:line: what") and add nothing.
 */
#include "fuzz.h"
#include "scheduler/scheduler.h"

#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > 8192)
                return 0; /* regcomp time grows with the pattern; rule files are small */
        char *rules, *reply;
        fuzz_split(data, size, "\n%%\n", &rules, &reply);
        struct sched_classifier *c = NULL;
        FUZZ_ASSERT(sched_classifier_new(&c) == 0);
        char err[256];
        err[0] = '\0';
        int r = sched_classifier_load_rules_string(c, "fuzz.rules", rules, err, sizeof(err));
        FUZZ_ASSERT(r >= 0 || r == -EINVAL || r == -ENOMEM);
        if (r < 0)
                FUZZ_ASSERT(strncmp(err, "fuzz.rules", 10) == 0);
        struct sched_verdict v;
        sched_classify_text(c, reply, &v);
        FUZZ_ASSERT(v.accepted || (v.rule != NULL && v.reason != NULL));
        FUZZ_ASSERT(v.accepted || v.cls < CLASS__MAX);
        sched_classifier_free(c);
        free(rules);
        free(reply);
        return 0;
}
