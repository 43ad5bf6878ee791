/* queue/msgfile.c — the trailer of a message file; see msgfile.h. */
#include "queue/msgfile.h"
#include "common/cleanup.h"
#include "common/fnv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SUM_AT (MSGFILE_TRAILER_LEN - 17) /* offset of SUM in the trailer */

static uint64_t trailer_sum(const char *env, size_t env_len, const char *head)
{
        return fnv1a(fnv1a(FNV1A_BASIS, env, env_len), head, SUM_AT);
}

void msgfile_trailer(char out[MSGFILE_TRAILER_LEN + 1], const char *id, uint64_t body_len,
                     const char *env, size_t env_len)
{
        snprintf(out, MSGFILE_TRAILER_LEN + 1, MSGFILE_MAGIC "%s %020" PRIu64 " %010zu ", id,
                 body_len, env_len);
        snprintf(out + SUM_AT, MSGFILE_TRAILER_LEN + 1 - SUM_AT, "%016" PRIx64 "\n",
                 trailer_sum(env, env_len, out));
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -ENODATA; /* the file shrank under us */
                done += (size_t)n;
        }
        return 0;
}

/* A field of n decimal digits; false unless all are digits. */
static bool digits(const char *p, size_t n, uint64_t *out)
{
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) {
                if (p[i] < '0' || p[i] > '9' || v > (UINT64_MAX - 9) / 10)
                        return false;
                v = v * 10 + (uint64_t)(p[i] - '0');
        }
        *out = v;
        return true;
}

/* The tail read at once: an envelope of up to this many bytes less the
 * trailer comes with it, so a message file's trailer costs one pread. */
#define TAIL_READ 4096

int msgfile_read_trailer(int fd, uint64_t file_size, const char *id, uint64_t *body_len, char **env,
                         size_t *env_len, const char **why)
{
        const char *dummy;
        if (!why)
                why = &dummy;
        if (file_size < MSGFILE_TRAILER_LEN)
                return -ENODATA;
        char tail[TAIL_READ + 1];
        size_t got = file_size < TAIL_READ ? (size_t)file_size : TAIL_READ;
        int r = pread_all(fd, tail, got, file_size - got);
        if (r < 0)
                return r;
        char *t = tail + got - MSGFILE_TRAILER_LEN;
        t[MSGFILE_TRAILER_LEN] = '\0';
        const size_t m = strlen(MSGFILE_MAGIC);
        if (memcmp(t, MSGFILE_MAGIC, m) != 0 || memcmp(t + m, id, QUEUE_ID_LEN) != 0)
                return -ENODATA;
        const char *p = t + m + QUEUE_ID_LEN;
        uint64_t blen, elen;
        if (p[0] != ' ' || !digits(p + 1, 20, &blen) || p[21] != ' ' ||
            !digits(p + 22, 10, &elen) || p[32] != ' ' || t[MSGFILE_TRAILER_LEN - 1] != '\n')
                return *why = "the message file's trailer is not whole", -EBADMSG;
        if (elen > ENVELOPE_MAX_BYTES || blen > file_size ||
            blen + elen + MSGFILE_TRAILER_LEN != file_size)
                return *why = "the message file's size differs from its trailer's", -EBADMSG;
        _cleanup_free_ char *text = malloc(elen + 1);
        if (!text)
                return -ENOMEM;
        if (elen + MSGFILE_TRAILER_LEN <= got) /* the usual case: read with the trailer */
                memcpy(text, t - elen, elen);
        else if ((r = pread_all(fd, text, elen, blen)) < 0)
                return r == -ENODATA ? (*why = "the message file shrank", -EBADMSG) : r;
        text[elen] = '\0';
        char want[17];
        snprintf(want, sizeof(want), "%016" PRIx64, trailer_sum(text, elen, t));
        if (memcmp(t + SUM_AT, want, 16) != 0)
                return *why = "the message file's checksum does not match", -EBADMSG;
        *body_len = blen;
        if (env) {
                *env = TAKE_PTR(text);
                *env_len = elen;
        }
        return 0;
}
