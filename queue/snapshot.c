/* queue/snapshot.c — the index snapshot file (state/index.snap); see queue.h.
 *
 * Layout (host byte order: the file never leaves the machine that wrote it):
 *   header  "TARRYIX3", fingerprint u64, records u64, payload bytes u64,
 *           checksum of the three fields before and the payload (40 bytes)
 *   record  id[16], dir u8, reply_class i8, n_pending u32, size u64,
 *           arrival i64, next_attempt i64, uid u32, n_works u8, then per work:
 *           due i64, destination (u8 length + bytes), source (u8 + bytes)
 * TARRYIX2 records have no uid (read as QUEUE_SNAP_UID_UNKNOWN: the owner
 * of such a message is learnt when its envelope is read), TARRYIX1 is
 * TARRYIX2 with another checksum.
 * The reader is the one parser of this file: every length is checked
 * against the payload and the limits below before it is used.
 */
#include "queue/queue.h"
#include "common/fnv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC      "TARRYIX3"
#define MAGIC_V2   "TARRYIX2" /* no uid; still read */
#define MAGIC_V1   "TARRYIX1" /* no uid, FNV-1a a byte at a time; still read */
#define HEADER_LEN 40
#define REC_MIN_V2 (QUEUE_ID_LEN + 1 + 1 + 4 + 8 + 8 + 8 + 1) /* a record without works */
#define REC_MIN    (REC_MIN_V2 + 4)

struct queue_snap_writer {
        char *buf;
        size_t len, cap;
        uint64_t count;
        uint64_t fingerprint;
};

/* Checksums and fingerprints start from the basis older files were summed
 * with (common/fnv.h). */
#define FNV_START FNV1A_BASIS_SHORT

/* FNV-1a's step on 64-bit words, four lanes side by side: each step is a
 * bijection of the lane's state for a given word and of the word for a
 * given state, so any one changed word changes its lane and the result.
 * Byte-wise FNV-1a (TARRYIX1) waits on a multiply per byte: 0.09 s of a
 * 70 MB snapshot (a million messages), against about 0.01 s for this. */
static uint64_t words_more(uint64_t h, const unsigned char *p, size_t n)
{
        uint64_t lane[4] = {h, h ^ 1, h ^ 2, h ^ 3};
        size_t i = 0;
        for (; i + 32 <= n; i += 32)
                for (unsigned k = 0; k < 4; k++) {
                        uint64_t w;
                        memcpy(&w, p + i + 8 * k, 8);
                        lane[k] = fnv1a_step(lane[k], w);
                }
        for (unsigned k = 0; k < 4; k++)
                h = fnv1a_step(h, lane[k]);
        return fnv1a(h, p + i, n - i);
}

/* The checksum covers the header's fingerprint, count and length, then the
 * payload: a flipped count cannot make the reader use half a file. */
static uint64_t checksum(const char *file, size_t len, bool v1)
{
        uint64_t h = fnv1a(FNV_START, file + 8, 24);
        if (v1)
                return fnv1a(h, file + HEADER_LEN, len - HEADER_LEN);
        return words_more(h, (const unsigned char *)file + HEADER_LEN, len - HEADER_LEN);
}

uint64_t queue_snap_fingerprint(const void *data, size_t len)
{
        return fnv1a(FNV_START, data, len);
}

static int reserve(struct queue_snap_writer *w, size_t more)
{
        if (w->len + more <= w->cap)
                return 0;
        size_t cap = w->cap ? w->cap : 1 << 16;
        while (cap < w->len + more)
                cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b)
                return -ENOMEM;
        w->buf = b;
        w->cap = cap;
        return 0;
}

static void put(struct queue_snap_writer *w, const void *p, size_t n)
{
        memcpy(w->buf + w->len, p, n);
        w->len += n;
}

int queue_snap_begin(uint64_t fingerprint, size_t expected, struct queue_snap_writer **out)
{
        struct queue_snap_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->fingerprint = fingerprint;
        if (reserve(w, HEADER_LEN + expected * 64) < 0) {
                free(w);
                return -ENOMEM;
        }
        w->len = HEADER_LEN;
        *out = w;
        return 0;
}

int queue_snap_add(struct queue_snap_writer *w, const struct queue_snap_rec *r)
{
        if (!queue_id_valid(r->id) || r->n_works > QUEUE_SNAP_WORKS_MAX)
                return -EINVAL;
        size_t need = REC_MIN;
        for (unsigned i = 0; i < r->n_works; i++) {
                size_t dl = strlen(r->works[i].destination), sl = strlen(r->works[i].source);
                if (dl == 0 || dl > 255 || sl > 255)
                        return -EINVAL;
                need += 8 + 2 + dl + sl;
        }
        if (reserve(w, need) < 0)
                return -ENOMEM;
        uint8_t dir = (uint8_t)r->dir, n = r->n_works;
        put(w, r->id, QUEUE_ID_LEN);
        put(w, &dir, 1);
        put(w, &r->reply_class, 1);
        put(w, &r->n_pending, 4);
        put(w, &r->size, 8);
        put(w, &r->arrival_us, 8);
        put(w, &r->next_attempt_us, 8);
        put(w, &r->uid, 4);
        put(w, &n, 1);
        for (unsigned i = 0; i < n; i++) {
                uint8_t dl = (uint8_t)strlen(r->works[i].destination);
                uint8_t sl = (uint8_t)strlen(r->works[i].source);
                put(w, &r->works[i].due_us, 8);
                put(w, &dl, 1);
                put(w, r->works[i].destination, dl);
                put(w, &sl, 1);
                put(w, r->works[i].source, sl);
        }
        w->count++;
        return 0;
}

int queue_snap_finish(struct queue_snap_writer *w, char **buf, size_t *len)
{
        uint64_t payload = w->len - HEADER_LEN;
        memcpy(w->buf, MAGIC, 8);
        memcpy(w->buf + 8, &w->fingerprint, 8);
        memcpy(w->buf + 16, &w->count, 8);
        memcpy(w->buf + 24, &payload, 8);
        uint64_t sum = checksum(w->buf, w->len, false);
        memcpy(w->buf + 32, &sum, 8);
        *buf = w->buf;
        *len = w->len;
        free(w);
        return 0;
}

void queue_snap_abort(struct queue_snap_writer *w)
{
        if (!w)
                return;
        free(w->buf);
        free(w);
}

/* Take n bytes at *p if the payload has them. */
static bool take(const unsigned char **p, const unsigned char *end, void *out, size_t n)
{
        if ((size_t)(end - *p) < n)
                return false;
        memcpy(out, *p, n);
        *p += n;
        return true;
}

static bool take_str(const unsigned char **p, const unsigned char *end, char *out, bool empty_ok)
{
        uint8_t n;
        if (!take(p, end, &n, 1) || (n == 0 && !empty_ok) || !take(p, end, out, n))
                return false;
        out[n] = '\0';
        return memchr(out, '\0', n) == NULL;
}

size_t queue_snap_count(const char *buf, size_t len)
{
        uint64_t count;
        if (len < HEADER_LEN)
                return 0;
        bool v3 = memcmp(buf, MAGIC, 8) == 0;
        if (!v3 && memcmp(buf, MAGIC_V2, 8) != 0 && memcmp(buf, MAGIC_V1, 8) != 0)
                return 0;
        memcpy(&count, buf + 16, 8);
        /* a record without works takes 51 bytes (47 before TARRYIX3): no more can be in the file */
        return count <= (len - HEADER_LEN) / (v3 ? REC_MIN : REC_MIN_V2) ? (size_t)count : 0;
}

int queue_snap_open(const char *buf, size_t len, uint64_t fingerprint, struct queue_snap_cursor *c,
                    const char **why)
{
        uint64_t fp, count, payload, sum;
        bool v1 = len >= HEADER_LEN && memcmp(buf, MAGIC_V1, 8) == 0;
        bool v2 = len >= HEADER_LEN && memcmp(buf, MAGIC_V2, 8) == 0;
        if (len < HEADER_LEN || (!v1 && !v2 && memcmp(buf, MAGIC, 8) != 0))
                return *why = "not an index snapshot (bad header)", -EBADMSG;
        memcpy(&fp, buf + 8, 8);
        memcpy(&count, buf + 16, 8);
        memcpy(&payload, buf + 24, 8);
        memcpy(&sum, buf + 32, 8);
        if (payload != len - HEADER_LEN)
                return *why = "its length differs from its header's", -EBADMSG;
        if (checksum(buf, len, v1) != sum)
                return *why = "its checksum does not match", -EBADMSG;
        if (fp != fingerprint)
                return *why = "written under another configuration", -ESTALE;
        c->p = (const unsigned char *)buf + HEADER_LEN;
        c->end = c->p + payload;
        c->left = count;
        c->has_uid = !v1 && !v2; /* TARRYIX3 */
        return 0;
}

int queue_snap_next(struct queue_snap_cursor *c, struct queue_snap_rec *r, const char **why)
{
        if (c->left == 0) {
                if (c->p != c->end)
                        return *why = "bytes after the last record", -EBADMSG;
                return 0;
        }
        const unsigned char *p = c->p, *end = c->end;
        uint8_t dir, n;
        r->uid = QUEUE_SNAP_UID_UNKNOWN; /* an older record's: learnt from its envelope */
        /* every field a reader may use is taken below: no memset of the
         * 8 KB of works per record (3 % of a start) */
        if (!take(&p, end, r->id, QUEUE_ID_LEN) || !take(&p, end, &dir, 1) ||
            !take(&p, end, &r->reply_class, 1) || !take(&p, end, &r->n_pending, 4) ||
            !take(&p, end, &r->size, 8) || !take(&p, end, &r->arrival_us, 8) ||
            !take(&p, end, &r->next_attempt_us, 8) || (c->has_uid && !take(&p, end, &r->uid, 4)) ||
            !take(&p, end, &n, 1))
                return *why = "a record is cut short", -EBADMSG;
        r->id[QUEUE_ID_LEN] = '\0';
        if (!queue_id_valid(r->id) || (dir != QUEUE_ACTIVE && dir != QUEUE_HOLD) ||
            n > QUEUE_SNAP_WORKS_MAX)
                return *why = "a record is invalid", -EBADMSG;
        r->dir = (enum queue_dir)dir;
        r->n_works = n;
        for (unsigned j = 0; j < n; j++)
                if (!take(&p, end, &r->works[j].due_us, 8) ||
                    !take_str(&p, end, r->works[j].destination, false) ||
                    !take_str(&p, end, r->works[j].source, true))
                        return *why = "a record's destination is invalid", -EBADMSG;
        c->p = p;
        c->left--;
        return 1;
}

int queue_snap_parse(const char *buf, size_t len, uint64_t fingerprint,
                     int (*cb)(const struct queue_snap_rec *r, void *userdata), void *userdata,
                     const char **why)
{
        struct queue_snap_cursor c;
        int r = queue_snap_open(buf, len, fingerprint, &c, why);
        if (r < 0)
                return r;
        struct queue_snap_rec rec;
        while ((r = queue_snap_next(&c, &rec, why)) > 0) {
                int k = cb(&rec, userdata);
                if (k)
                        return k;
        }
        return r;
}
