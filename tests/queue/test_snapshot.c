/* tests/queue/test_snapshot.c — state/index.snap: what is written is read back;
 * a file that is not whole, or another configuration's, is refused whole. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

#define FP 0x1234567890abcdefull

struct got {
        struct queue_snap_rec recs[4];
        size_t n;
};

static int collect(const struct queue_snap_rec *r, void *userdata)
{
        struct got *g = userdata;
        cr_assert_lt(g->n, 4);
        g->recs[g->n++] = *r;
        return 0;
}

static char *two_records(size_t *len)
{
        struct queue_snap_writer *w = NULL;
        cr_assert_eq(queue_snap_begin(FP, 2, &w), 0);
        struct queue_snap_rec r = {.id = "6B16AC12E0F9D6C8",
                                   .dir = QUEUE_ACTIVE,
                                   .reply_class = 2,
                                   .n_pending = 3,
                                   .size = 4096,
                                   .arrival_us = 1700000000000000,
                                   .next_attempt_us = 1700000300000000,
                                   .uid = 1000,
                                   .n_works = 2};
        r.works[0].due_us = 1700000300000000;
        strcpy(r.works[0].destination, "mx:example.com");
        strcpy(r.works[0].source, "192.0.2.1");
        r.works[1].due_us = 0;
        strcpy(r.works[1].destination, "[127.0.0.1]:2525");
        cr_assert_eq(queue_snap_add(w, &r), 0);
        struct queue_snap_rec h = {.id = "6B16AC12E0F9D6C9", .dir = QUEUE_HOLD, .reply_class = -1};
        cr_assert_eq(queue_snap_add(w, &h), 0);
        char *buf = NULL;
        cr_assert_eq(queue_snap_finish(w, &buf, len), 0);
        return buf;
}

Test(snapshot, records_are_read_back_as_written)
{
        size_t len;
        char *buf = two_records(&len);
        struct got g = {0};
        const char *why = NULL;
        cr_assert_eq(queue_snap_parse(buf, len, FP, collect, &g, &why), 0);
        cr_assert_eq(g.n, 2);
        cr_assert_str_eq(g.recs[0].id, "6B16AC12E0F9D6C8");
        cr_assert_eq(g.recs[0].n_pending, 3);
        cr_assert_eq(g.recs[0].uid, 1000, "the submitter is kept (an owner's mailq needs it)");
        cr_assert_eq(g.recs[1].uid, 0, "root is a user like any other");
        cr_assert_eq(g.recs[0].size, 4096);
        cr_assert_eq(g.recs[0].reply_class, 2);
        cr_assert_eq(g.recs[0].next_attempt_us, 1700000300000000);
        cr_assert_eq(g.recs[0].n_works, 2);
        cr_assert_str_eq(g.recs[0].works[0].destination, "mx:example.com");
        cr_assert_str_eq(g.recs[0].works[0].source, "192.0.2.1");
        cr_assert_str_eq(g.recs[0].works[1].destination, "[127.0.0.1]:2525");
        cr_assert_str_eq(g.recs[0].works[1].source, "");
        cr_assert_eq(g.recs[1].dir, QUEUE_HOLD);
        cr_assert_eq(g.recs[1].n_works, 0);
        free(buf);
}

/* tarryd goes through the records once before READY and applies them in
 * slices after it: a cursor reads them one at a time, a copy of it reads
 * the same records again, and the end is the end of the file. */
Test(snapshot, a_cursor_reads_the_records_one_at_a_time_and_a_copy_reads_them_again)
{
        size_t len;
        char *buf = two_records(&len);
        struct queue_snap_cursor c, again;
        const char *why = NULL;
        cr_assert_eq(queue_snap_open(buf, len, FP + 1, &c, &why), -ESTALE);
        cr_assert_eq(queue_snap_open(buf, len - 1, FP, &c, &why), -EBADMSG);
        cr_assert_eq(queue_snap_open(buf, len, FP, &c, &why), 0);
        cr_assert_eq(c.left, 2);
        static struct queue_snap_rec r;
        again = c;
        cr_assert_eq(queue_snap_next(&c, &r, &why), 1);
        cr_assert_str_eq(r.id, "6B16AC12E0F9D6C8");
        cr_assert_eq(r.n_works, 2);
        cr_assert_str_eq(r.works[1].destination, "[127.0.0.1]:2525");
        struct queue_snap_cursor second = c;
        cr_assert_eq(queue_snap_next(&c, &r, &why), 1);
        cr_assert_str_eq(r.id, "6B16AC12E0F9D6C9");
        cr_assert_eq(r.dir, QUEUE_HOLD);
        cr_assert_eq(queue_snap_next(&c, &r, &why), 0, "two records, no third");
        cr_assert_eq(queue_snap_next(&c, &r, &why), 0);
        cr_assert_eq(queue_snap_next(&second, &r, &why), 1);
        cr_assert_str_eq(r.id, "6B16AC12E0F9D6C9", "a copy reads from where it was made");
        cr_assert_eq(queue_snap_next(&again, &r, &why), 1);
        cr_assert_str_eq(r.id, "6B16AC12E0F9D6C8");
        /* a cursor told to stop after one record (the start uses the records
         * before a bad one) finds bytes after it */
        again.left = 0;
        cr_assert_eq(queue_snap_next(&again, &r, &why), -EBADMSG);
        cr_assert_str_eq(why, "bytes after the last record");
        free(buf);
}

Test(snapshot, every_flipped_byte_or_cut_is_refused_before_any_record)
{
        size_t len;
        char *buf = two_records(&len);
        for (size_t i = 0; i < len; i++) {
                struct got g = {0};
                const char *why = NULL;
                buf[i] ^= 0x40;
                int r = queue_snap_parse(buf, len, FP, collect, &g, &why);
                buf[i] ^= 0x40;
                cr_assert(r == -EBADMSG || (i >= 8 && i < 16 && r == -ESTALE),
                          "byte %zu flipped: %d", i, r);
                cr_assert_eq(g.n, 0, "byte %zu flipped: %zu records used", i, g.n);
                cr_assert(why);
        }
        for (size_t cut = 0; cut < len; cut++) {
                struct got g = {0};
                const char *why = NULL;
                cr_assert_eq(queue_snap_parse(buf, cut, FP, collect, &g, &why), -EBADMSG,
                             "cut at %zu", cut);
                cr_assert_eq(g.n, 0);
        }
        free(buf);
}

Test(snapshot, another_configurations_snapshot_is_refused)
{
        size_t len;
        char *buf = two_records(&len);
        struct got g = {0};
        const char *why = NULL;
        cr_assert_eq(queue_snap_parse(buf, len, FP + 1, collect, &g, &why), -ESTALE);
        cr_assert_eq(g.n, 0);
        free(buf);
}

Test(snapshot, a_record_that_cannot_be_written_is_refused)
{
        struct queue_snap_writer *w = NULL;
        cr_assert_eq(queue_snap_begin(FP, 1, &w), 0);
        struct queue_snap_rec r = {.id = "not-an-id", .dir = QUEUE_ACTIVE};
        cr_assert_eq(queue_snap_add(w, &r), -EINVAL);
        struct queue_snap_rec many = {
            .id = "6B16AC12E0F9D6C8", .dir = QUEUE_ACTIVE, .n_works = QUEUE_SNAP_WORKS_MAX + 1};
        for (unsigned i = 0; i < many.n_works && i < QUEUE_SNAP_WORKS_MAX; i++)
                strcpy(many.works[i].destination, "mx:example.com");
        cr_assert_eq(queue_snap_add(w, &many), -EINVAL);
        struct queue_snap_rec nodest = {
            .id = "6B16AC12E0F9D6C8", .dir = QUEUE_ACTIVE, .n_works = 1};
        cr_assert_eq(queue_snap_add(w, &nodest), -EINVAL);
        queue_snap_abort(w);
}

/* byte-wise FNV-1a 64, as TARRYIX1 files were summed */
static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 1099511628211ull;
        return h;
}

Test(snapshot, the_header_count_is_a_hint_only_when_the_file_can_hold_it)
{
        size_t len;
        char *buf = two_records(&len);
        cr_assert_eq(queue_snap_count(buf, len), 2);
        cr_assert_eq(queue_snap_count(buf, 39), 0, "no whole header");
        uint64_t huge = 1ull << 40;
        memcpy(buf + 16, &huge, 8);
        cr_assert_eq(queue_snap_count(buf, len), 0, "more records than the file has bytes for");
        memcpy(buf, "NOTASNAP", 8);
        cr_assert_eq(queue_snap_count(buf, len), 0);
        free(buf);
}

/* two_records() as tarryd wrote it before FNV-1a moved to common/fnv.h
 * (TARRYIX2, checksum at offset 32: 6cccaa74fc7fac6a). */
static const char golden_ix2[] =
    "5441525259495832efcdab9078563412020000000000000099000000000000006cccaa74fc7fac6a"
    "36423136414331324530463944364338010203000000001000000000000000401e18240a060000e3"
    "ff29240a06000200e3ff29240a06000e6d783a6578616d706c652e636f6d093139322e302e322e31"
    "0000000000000000105b3132372e302e302e315d3a323532350036423136414331324530463944"
    "364339"
    "02ff0000000000000000000000000000000000000000000000000000000000";

static size_t unhex(const char *hex, char *out)
{
        size_t n = strlen(hex) / 2;
        for (size_t i = 0; i < n; i++) {
                unsigned v;
                cr_assert_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
                out[i] = (char)v;
        }
        return n;
}

/* The checksum and the fingerprint keep their values: a snapshot an older
 * tarryd wrote (TARRYIX2, no uid) is read, its owners unknown until their
 * envelopes are read; the fingerprint of a configuration is unchanged. */
Test(snapshot, a_file_an_older_tarryd_wrote_is_read_with_its_owners_unknown)
{
        char old[sizeof(golden_ix2) / 2];
        size_t old_len = unhex(golden_ix2, old);
        struct got g = {0};
        const char *why = NULL;
        cr_assert_eq(queue_snap_parse(old, old_len, FP, collect, &g, &why), 0, "%s", why);
        cr_assert_eq(g.n, 2);
        cr_assert_str_eq(g.recs[0].works[0].destination, "mx:example.com");
        cr_assert_eq(g.recs[0].uid, QUEUE_SNAP_UID_UNKNOWN);
        cr_assert_eq(g.recs[1].uid, QUEUE_SNAP_UID_UNKNOWN);
        cr_assert_eq(queue_snap_count(old, old_len), 2);
        size_t len;
        char *buf = two_records(&len);
        cr_assert_eq(memcmp(buf, "TARRYIX3", 8), 0, "written in the current format");
        cr_assert_eq(len, old_len + 2 * 4, "a uid (4 bytes) more per record");
        free(buf);
        const char conf[] = "[main]\nspool_dir = /var/spool/tarry\n";
        cr_assert_eq(queue_snap_fingerprint(conf, strlen(conf)), 0xfb2220829dfc9a1dULL,
                     "the configuration's fingerprint changed: every snapshot would be refused");
}

/* A snapshot written before the word-wise checksum (TARRYIX1) is still used
 * after an upgrade: the first start of the new tarryd needs no envelope. */
Test(snapshot, a_snapshot_of_the_first_format_is_still_read)
{
        char buf[sizeof(golden_ix2) / 2];
        size_t len = unhex(golden_ix2, buf);
        memcpy(buf, "TARRYIX1", 8);
        uint64_t h = fnv1a(1469598103934665603ull, (const unsigned char *)buf + 8, 24);
        h = fnv1a(h, (const unsigned char *)buf + 40, len - 40);
        memcpy(buf + 32, &h, 8);
        struct got g = {0};
        const char *why = NULL;
        cr_assert_eq(queue_snap_parse(buf, len, FP, collect, &g, &why), 0, "%s", why);
        cr_assert_eq(g.n, 2);
        cr_assert_str_eq(g.recs[0].id, "6B16AC12E0F9D6C8");
        cr_assert_str_eq(g.recs[0].works[0].destination, "mx:example.com");
        cr_assert_eq(g.recs[0].uid, QUEUE_SNAP_UID_UNKNOWN);
        cr_assert_eq(g.recs[1].dir, QUEUE_HOLD);
        /* and its checksum still refuses a flipped byte */
        buf[len - 3] ^= 0x40;
        g.n = 0;
        cr_assert_eq(queue_snap_parse(buf, len, FP, collect, &g, &why), -EBADMSG);
        cr_assert_eq(g.n, 0);
}
