/* tests/fuzz/fuzz_classify.c — the reply classifier with its default rules.
 *
 * Input: a reply text as tarryq classify or smtpc hands it over. It is
 * classified as one string (code and enhanced code parsed from the text),
 * and again with the first line taken as "CODE ENHANCED" given separately,
 * the way smtpc reports a reply it already split.
 */
#include "fuzz.h"
#include "scheduler/scheduler.h"

#include <stdlib.h>
#include <string.h>

static struct sched_classifier *cls;

static void check(const struct sched_verdict *v)
{
        FUZZ_ASSERT(v->accepted || (v->rule != NULL && v->reason != NULL));
        FUZZ_ASSERT(v->accepted || v->cls < CLASS__MAX); /* 2xx: class is meaningless */
        FUZZ_ASSERT(v->hint_s >= -1 && v->hint_s <= SCHED_HINT_MAX_S);
        FUZZ_ASSERT(v->code >= 0 && v->code <= 999);
        FUZZ_ASSERT(memchr(v->enhanced, '\0', sizeof(v->enhanced)) != NULL);
        if (v->accepted)
                FUZZ_ASSERT(v->code >= 200 && v->code <= 299);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (!cls)
                FUZZ_ASSERT(sched_classifier_new(&cls) == 0);
        char *text = fuzz_strndup(data, size);
        struct sched_verdict v;
        sched_classify_text(cls, text, &v);
        check(&v);

        char *head, *rest;
        fuzz_split(data, size, "\n", &head, &rest);
        char *sp = strchr(head, ' ');
        const char *enh = sp ? sp + 1 : "";
        struct sched_reply r = {.code = atoi(head), .enhanced = enh, .text = rest};
        if (r.code >= 0 && r.code <= 999) {
                sched_classify(cls, &r, &v);
                check(&v);
        }
        free(head);
        free(rest);
        free(text);
        return 0;
}
