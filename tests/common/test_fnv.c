/* tests/common/test_fnv.c — FNV-1a 64 (common/fnv.h): the published test
 * vectors, chaining, case folding, and the short basis tarry's files use. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/fnv.h"

Test(fnv, matches_the_published_fnv1a_64_vectors)
{
        cr_assert_eq(fnv1a(FNV1A_BASIS, "", 0), 0xcbf29ce484222325ULL);
        cr_assert_eq(fnv1a(FNV1A_BASIS, "a", 1), 0xaf63dc4c8601ec8cULL);
        cr_assert_eq(fnv1a(FNV1A_BASIS, "foobar", 6), 0x85944171f73967e8ULL);
        cr_assert_eq(fnv1a_str(FNV1A_BASIS, "foobar"), 0x85944171f73967e8ULL);
}

Test(fnv, pieces_chain_into_the_hash_of_the_whole)
{
        cr_assert_eq(fnv1a(fnv1a(FNV1A_BASIS, "foo", 3), "bar", 3),
                     fnv1a(FNV1A_BASIS, "foobar", 6));
        cr_assert_eq(fnv1a_str(fnv1a_str(FNV1A_BASIS_SHORT, "mx:"), "example.com"),
                     fnv1a_str(FNV1A_BASIS_SHORT, "mx:example.com"));
}

Test(fnv, bytes_above_127_count_as_unsigned)
{
        const char s[] = "caf\xc3\xa9";
        uint64_t h = FNV1A_BASIS;
        for (size_t i = 0; i < strlen(s); i++)
                h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
        cr_assert_eq(fnv1a_str(FNV1A_BASIS, s), h);
}

Test(fnv, host_names_hash_the_same_in_any_case)
{
        cr_assert_eq(fnv1a_str_lower(FNV1A_BASIS_SHORT, "MX1.Example.COM"),
                     fnv1a_str(FNV1A_BASIS_SHORT, "mx1.example.com"));
        cr_assert_neq(fnv1a_str(FNV1A_BASIS_SHORT, "MX1.Example.COM"),
                      fnv1a_str(FNV1A_BASIS_SHORT, "mx1.example.com"));
}

/* The basis index.snap's checksums start from: the published one without
 * its last digit (a value older tarryds wrote files with). */
Test(fnv, the_short_basis_is_the_one_older_files_were_summed_with)
{
        cr_assert_eq(FNV1A_BASIS_SHORT, 1469598103934665603ULL);
        cr_assert_eq(FNV1A_BASIS, 14695981039346656037ULL);
        cr_assert_eq(FNV1A_PRIME, 1099511628211ULL);
}
