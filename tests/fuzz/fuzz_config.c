/* tests/fuzz/fuzz_config.c — tarry.conf text.
 *
 * Input: a configuration file. It either loads, and then the effective
 * configuration prints and loads again to the same printout (what
 * `tarryd --check` shows is what tarryd runs), or it is refused with a
 * message that names the file.
 */
#include "fuzz.h"
#include "config/config.h"

#include <string.h>

static char *print(const struct tarry_config *cfg, size_t *len)
{
        char *buf = NULL;
        FILE *f = open_memstream(&buf, len);
        FUZZ_ASSERT(f);
        cfg_print(f, cfg);
        FUZZ_ASSERT(fclose(f) == 0);
        return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (memchr(data, '\0', size))
                return 0; /* a file with a NUL is read up to it; nothing new to see */
        char *text = fuzz_strndup(data, size);
        struct tarry_config *cfg = NULL;
        char err[512];
        err[0] = '\0';
        int r = cfg_load_string("fuzz.conf", text, &cfg, err, sizeof(err));
        if (r < 0) {
                FUZZ_ASSERT(cfg == NULL);
                FUZZ_ASSERT(strncmp(err, "fuzz.conf", 9) == 0);
        } else {
                size_t n1 = 0, n2 = 0;
                char *p1 = print(cfg, &n1);
                struct tarry_config *again = NULL;
                r = cfg_load_string("fuzz.conf", p1, &again, err, sizeof(err));
                if (r < 0)
                        fprintf(stderr, "printout does not load: %s\n---\n%s---\n", err, p1);
                FUZZ_ASSERT(r == 0);
                char *p2 = print(again, &n2);
                if (n1 != n2 || memcmp(p1, p2, n1) != 0)
                        fprintf(stderr, "printout changed on reload:\n%s---\n%s---\n", p1, p2);
                FUZZ_ASSERT(n1 == n2 && memcmp(p1, p2, n1) == 0);
                cfg_free(again);
                free(p1);
                free(p2);
        }
        cfg_free(cfg);
        free(text);
        return 0;
}
