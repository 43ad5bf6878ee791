/* tests/fuzz/fuzz_headers.c — header field names and RFC 5322 address lists.
 *
 * Input: one header field as sendmail -t reads it ("To: a, B <b@c>"), folding
 * included. Every address the list parser hands out must lie inside the
 * input, and is then qualified as -t does before it becomes a recipient.
 */
#include "fuzz.h"
#include "cli/cli_util.h"
#include "cli/headers.h"

#include <errno.h>
#include <string.h>

struct ctx {
        const char *base;
        size_t len;
        unsigned n;
};

static int take(const char *addr, size_t alen, void *userdata)
{
        struct ctx *c = userdata;
        FUZZ_ASSERT(alen > 0);
        /* the parser copies into its own buffer: read every byte (ASan checks) */
        volatile unsigned sum = 0;
        for (size_t i = 0; i < alen; i++)
                sum += (unsigned char)addr[i];
        (void)sum;
        char *q = NULL;
        const char *why = NULL;
        if (cli_qualify(addr, alen, "example.org", &q, &why) == 0)
                FUZZ_ASSERT(q && strchr(q, '\n') == NULL && strchr(q, '\r') == NULL);
        free(q);
        return ++c->n > 100000 ? -E2BIG : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *s = (const char *)data;
        size_t name = hdr_field_name_len(s, size);
        FUZZ_ASSERT(name <= HDR_NAME_MAX && (name == 0 || name < size));
        if (name > 0)
                FUZZ_ASSERT(s[name] == ':');
        bool is_to = hdr_is(s, size, "To");
        FUZZ_ASSERT(!is_to || name == 2);
        const char *value = name > 0 ? s + name + 1 : s;
        size_t vlen = name > 0 ? size - name - 1 : size;
        struct ctx c = {.base = s, .len = size};
        const char *why = NULL;
        int r = hdr_parse_addresses(value, vlen, take, &c, &why);
        FUZZ_ASSERT(r == 0 || r == -E2BIG || (r == -EBADMSG && why && *why));
        return 0;
}
