/* tests/fuzz/fuzz_mtasts.c — an MTA-STS policy file and a TXT record as a
 * domain's web server and DNS send them (mtasts/ parses both).
 *
 * The whole input is a policy file; its first line, NUL-terminated, is also
 * a TXT record. A policy that parses keeps its promises: a known mode, at
 * most MTASTS_MX_MAX patterns, max_age in range, an mx unless mode none; a
 * TXT id is 1 to 32 letters or digits. Matching never reads past a pattern.
 */
#include "fuzz.h"
#include "mtasts/mtasts.h"

#include <ctype.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct mtasts_policy p;
        char why[MTASTS_WHY_MAX];
        if (mtasts_parse_policy((const char *)data, size, &p, why, sizeof(why)) == 0) {
                FUZZ_ASSERT(p.mode <= MTASTS_MODE_ENFORCE);
                FUZZ_ASSERT(p.n_mx <= MTASTS_MX_MAX);
                FUZZ_ASSERT(p.max_age_s >= 0 && p.max_age_s <= MTASTS_MAX_AGE);
                FUZZ_ASSERT(p.mode == MTASTS_MODE_NONE || p.n_mx > 0);
                for (size_t i = 0; i < p.n_mx; i++) {
                        const char *m = p.mx[i][0] == '*' ? p.mx[i] + 2 : p.mx[i];
                        char host[300];
                        snprintf(host, sizeof(host), "a.%s", m);
                        FUZZ_ASSERT(mtasts_mx_matches(&p, p.mx[i][0] == '*' ? host : m));
                }
        }
        char *s = fuzz_strndup(data, size);
        s[strcspn(s, "\r\n")] = '\0';
        char id[MTASTS_ID_MAX];
        if (mtasts_parse_txt(s, id, why, sizeof(why)) == 0) {
                size_t n = strlen(id);
                FUZZ_ASSERT(n >= 1 && n < MTASTS_ID_MAX);
                for (size_t i = 0; i < n; i++)
                        FUZZ_ASSERT(isalnum((unsigned char)id[i]));
        }
        free(s);
        return 0;
}
