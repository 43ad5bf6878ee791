/* common/fnv.c — FNV-1a 64; see fnv.h. */
#include "common/fnv.h"

uint64_t fnv1a(uint64_t h, const void *buf, size_t len)
{
        const unsigned char *p = buf;
        for (size_t i = 0; i < len; i++)
                h = fnv1a_step(h, p[i]);
        return h;
}

uint64_t fnv1a_str(uint64_t h, const char *s)
{
        for (; *s; s++)
                h = fnv1a_step(h, (unsigned char)*s);
        return h;
}

uint64_t fnv1a_str_lower(uint64_t h, const char *s)
{
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;
                if (ch >= 'A' && ch <= 'Z')
                        ch = (unsigned char)(ch - 'A' + 'a');
                h = fnv1a_step(h, ch);
        }
        return h;
}
