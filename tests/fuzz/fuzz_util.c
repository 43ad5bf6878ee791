/* tests/fuzz/fuzz_util.c — see fuzz.h. */
#include "fuzz.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

char *fuzz_strndup(const uint8_t *data, size_t size)
{
        char *s = malloc(size + 1);
        FUZZ_ASSERT(s);
        if (size > 0)
                memcpy(s, data, size);
        s[size] = '\0';
        return s;
}

int fuzz_memfd(const uint8_t *data, size_t size)
{
        int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
        if (fd < 0)
                return -1;
        size_t off = 0;
        while (off < size) {
                ssize_t n = write(fd, data + off, size - off);
                if (n <= 0) {
                        close(fd);
                        return -1;
                }
                off += (size_t)n;
        }
        if (lseek(fd, 0, SEEK_SET) != 0) {
                close(fd);
                return -1;
        }
        return fd;
}

void fuzz_split(const uint8_t *data, size_t size, const char *sep, char **a, char **b)
{
        size_t sl = strlen(sep);
        const uint8_t *at = size >= sl ? memmem(data, size, sep, sl) : NULL;
        if (!at) {
                *a = fuzz_strndup(data, size);
                *b = fuzz_strndup(data, 0);
                return;
        }
        size_t k = (size_t)(at - data);
        *a = fuzz_strndup(data, k);
        *b = fuzz_strndup(at + sl, size - k - sl);
}

static char spool[256];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        remove(path);
        return 0;
}

static void remove_spool(void)
{
        if (spool[0])
                nftw(spool, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_spool_dir(void)
{
        if (spool[0])
                return spool;
        const char *base = getenv("TMPDIR");
        if (!base || !*base)
                base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(spool, sizeof(spool), "%s/tarry-fuzz-XXXXXX", base);
        FUZZ_ASSERT(mkdtemp(spool));
        atexit(remove_spool);
        return spool;
}
