/* common/fnv.h — FNV-1a, 64 bits: the one copy of the hash tarry uses for its
 * in-memory tables and for the checksums of its own files.
 *
 * Input: bytes (or a NUL-terminated string) and the hash so far, so that
 * several pieces chain into one hash. Output: the 64-bit hash. No state.
 *
 * Two starting values are in use. FNV1A_BASIS is the published offset basis.
 * FNV1A_BASIS_SHORT is what several of tarry's hashes began with: the
 * published basis without its last digit. It stays where a file's checksum
 * depends on it (state/index.snap: TARRYIX1, TARRYIX2 and the configuration's
 * fingerprint) and, unchanged, where tables used it; a hash from it is as
 * good a hash, it is just not the published one.
 */
#ifndef TARRY_COMMON_FNV_H
#define TARRY_COMMON_FNV_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A_BASIS       0xcbf29ce484222325ULL /* 14695981039346656037 */
#define FNV1A_BASIS_SHORT 1469598103934665603ULL
#define FNV1A_PRIME       0x100000001b3ULL /* 1099511628211 */

/* One step: x (a byte, or a 64-bit word for word-wise variants) into h. */
static inline uint64_t fnv1a_step(uint64_t h, uint64_t x)
{
        return (h ^ x) * FNV1A_PRIME;
}

/* h extended by len bytes of buf. */
uint64_t fnv1a(uint64_t h, const void *buf, size_t len);
/* h extended by the bytes of s (without its NUL). */
uint64_t fnv1a_str(uint64_t h, const char *s);
/* The same with ASCII letters folded to lower case (host names). */
uint64_t fnv1a_str_lower(uint64_t h, const char *s);

#endif
