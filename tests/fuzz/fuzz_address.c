/* tests/fuzz/fuzz_address.c — the one envelope address check.
 *
 * Input: an address as it may arrive on sendmail's command line, in MAIL
 * FROM/RCPT TO of -bs, or in an envelope file. addr_check must refuse
 * anything that could break out of an SMTP command; what it accepts, and
 * what cli_qualify builds from it, must hold no CR, LF, control or <>.
 */
#include "fuzz.h"
#include "cli/cli_util.h"
#include "common/address.h"

#include <errno.h>
#include <string.h>

static void check_safe(const char *a)
{
        size_t n = strlen(a);
        FUZZ_ASSERT(n > 0 && n <= ADDR_MAX);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)a[i];
                FUZZ_ASSERT(c >= 0x20 && c != 0x7f && c != '<' && c != '>');
        }
        const char *dom = addr_domain(a);
        FUZZ_ASSERT(dom == NULL || (*dom != '\0' && dom > a && dom <= a + n));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *a = fuzz_strndup(data, size);
        const char *why = NULL;
        int r = addr_check(a, &why);
        FUZZ_ASSERT(r == 0 || (r == -EINVAL && why && *why));
        if (r == 0)
                check_safe(a);
        (void)addr_domain(a);

        char *q = NULL;
        why = NULL;
        r = cli_qualify((const char *)data, size, "example.org", &q, &why);
        if (r == 0) {
                check_safe(q);
                FUZZ_ASSERT(addr_check(q, &why) == 0);
                FUZZ_ASSERT(addr_domain(q) != NULL);
                char *x = cli_xtext_encode(q);
                FUZZ_ASSERT(x && cli_xtext_valid(x));
                free(x);
        } else {
                FUZZ_ASSERT(why && *why && q == NULL);
        }
        free(q);
        (void)cli_xtext_valid(a);
        free(a);
        return 0;
}
