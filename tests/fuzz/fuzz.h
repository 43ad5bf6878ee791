/* tests/fuzz/fuzz.h — small helpers shared by the libFuzzer targets.
 *
 * Each target is one fuzz_<name>.c with LLVMFuzzerTestOneInput; what it needs
 * beyond the raw bytes (a NUL-terminated copy, an fd to read from, a scratch
 * spool) comes from here. Targets assert the invariants their parser promises
 * with FUZZ_ASSERT, which aborts so libFuzzer reports a crash.
 */
#ifndef TARRY_FUZZ_H
#define TARRY_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_ASSERT(cond)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__,       \
                                #cond);                                                            \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* data[0..size) as a malloc'ed NUL-terminated string (embedded NULs stay). */
char *fuzz_strndup(const uint8_t *data, size_t size);

/* An fd (memfd) holding data[0..size), positioned at 0, or -1. */
int fuzz_memfd(const uint8_t *data, size_t size);

/* Split data at the first occurrence of sep: the part before into *a, after
 * into *b (both malloc'ed, NUL-terminated). Without sep, all of it is *a and
 * *b is "". */
void fuzz_split(const uint8_t *data, size_t size, const char *sep, char **a, char **b);

/* A scratch spool directory, created once per process (under $TMPDIR, or
 * /dev/shm when it exists so the spool's fsyncs stay cheap) and removed at
 * exit. Aborts when it cannot be created. */
const char *fuzz_spool_dir(void);

#endif
