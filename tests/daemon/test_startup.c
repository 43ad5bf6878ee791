/* tests/daemon/test_startup.c — start-up from state/index.snap, whatever state it is in.
 *
 * A clean stop writes the snapshot; then, with tarryd stopped, the spool
 * changes under it: messages leave active/, one is held, others arrive in
 * active/ (no record) and incoming/. Started on that stale snapshot, on a
 * corrupt one and on none, tarryd must list exactly the messages on disk
 * (nothing lost, nothing skipped: a held one as held), deliver the new mail
 * once, and deliver nothing that is not due.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define DEFERRED 400 /* spool-gen's: due in an hour, to other destinations */
#define ADDED    30  /* written into active/ after the snapshot: no record */
#define GONE     40  /* removed from active/ after the snapshot */
#define NEW_MAIL 10  /* submitted before each start, due at once */

enum snap_case { SNAP_STALE, SNAP_MISSING, SNAP_CORRUPT, SNAP_TRUNCATED };

static void sh(const char *fmt, const char *a, const char *b)
{
        char cmd[2048];
        snprintf(cmd, sizeof(cmd), fmt, a, b);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void send_new_mail(struct harness *h, int from)
{
        for (int i = from; i < from + NEW_MAIL; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "u%d@example.test", i);
                harness_send(h, "alice@sender.test", rcpt, "new");
        }
}

static void wait_delivered(struct fixture *f, size_t n)
{
        for (int waited = 0; waited < 120000 && fixture_txn_count(f) < n; waited += 10)
                harness_sleep_ms(10);
        cr_assert_eq(fixture_txn_count(f), n, "%zu of %zu delivered", fixture_txn_count(f), n);
}

/* Wait until everything listed at start is read. */
static void wait_read(struct harness *h, size_t starts)
{
        for (int waited = 0; waited < 120000; waited += 10) {
                if (harness_log_count(h, "every queued message read") >= starts)
                        return;
                harness_sleep_ms(10);
        }
        cr_assert_fail("start-up never finished reading; see %s", h->log);
}

/* Queue IDs in spool/dir, as one string "ID ID …" sorted. */
static char *ids_in(struct harness *h, const char *dir)
{
        char cmd[600], *out = calloc(1, 1 << 16);
        snprintf(cmd, sizeof(cmd), "ls %s/%s | sort | tr '\\n' ' '", h->spool, dir);
        FILE *p = popen(cmd, "r");
        size_t n = fread(out, 1, (1 << 16) - 1, p);
        out[n] = '\0';
        pclose(p);
        return out;
}

/* The live listing's IDs of one queue (tarryq -j), sorted the same way. */
static char *listed(struct harness *h, const char *queue_name)
{
        char *out = NULL, *err = NULL;
        const char *args[] = {"-j", NULL};
        cr_assert_eq(harness_tarryq(h, args, &out, &err), 0, "tarryq -j: %s", err);
        char path[400];
        snprintf(path, sizeof(path), "%s/listing.json", h->dir);
        FILE *f = fopen(path, "w");
        fputs(out, f);
        fclose(f);
        free(out);
        free(err);
        char cmd[900];
        snprintf(cmd, sizeof(cmd),
                 "grep '\"queue_name\": *\"%s\"' %s | grep -o '\"queue_id\": *\"[0-9A-F]*\"' | "
                 "grep -o '[0-9A-F]\\{16\\}' | sort | tr '\\n' ' '",
                 queue_name, path);
        char *ids = calloc(1, 1 << 16);
        FILE *p = popen(cmd, "r");
        size_t n = fread(ids, 1, (1 << 16) - 1, p);
        ids[n] = '\0';
        pclose(p);
        return ids;
}

static void start_on(enum snap_case c)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        char extra[256];
        snprintf(extra, sizeof(extra), "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 fixture_port(f));
        harness_init(&h, extra);
        harness_spool_deferred(&h, DEFERRED);
        send_new_mail(&h, 0);
        harness_start(&h);
        wait_delivered(f, NEW_MAIL);
        wait_read(&h, 1);
        cr_assert_eq(harness_stop(&h, SIGTERM, 30000), 0, "tarryd did not stop cleanly; see %s",
                     h.log);

        /* tarryd stopped: the spool moves on without it */
        char snap[400], other[400], gen[700];
        snprintf(snap, sizeof(snap), "%s/state/index.snap", h.spool);
        snprintf(other, sizeof(other), "%s/other", h.dir);
        sh("test -s %s && test -d %s/active", snap, h.spool);
        sh("cd %s/active && ls | head -n 40 | xargs rm -rf; ls | sed -n 5p | "
           "xargs -I{} mv {} ../hold/{}%s",
           h.spool, "");
        snprintf(gen, sizeof(gen), "%s --spool %s --messages %d --defer 3600 >/dev/null",
                 harness_binary("bench/spool-gen"), other, ADDED);
        sh("mkdir -p %s%s", other, "");
        cr_assert_eq(system(gen), 0, "%s", gen);
        sh("mv %s/active/* %s/active/", other, h.spool);
        send_new_mail(&h, NEW_MAIL);
        switch (c) {
        case SNAP_STALE:
                break;
        case SNAP_MISSING:
                sh("rm %s%s", snap, "");
                break;
        case SNAP_CORRUPT: /* one byte flipped in the middle */
                /* XOR, not a fixed byte: a byte that already held it would change nothing */
                sh("python3 -c 'import os, sys; f = open(sys.argv[1], \"r+b\"); "
                   "n = os.path.getsize(sys.argv[1]) // 2; f.seek(n); b = f.read(1); f.seek(n); "
                   "f.write(bytes([b[0] ^ 0xff]))' %s%s",
                   snap, "");
                break;
        case SNAP_TRUNCATED: /* a torn write */
                sh("f=%s; truncate -s $(($(stat -c %%s $f) - 7)) $f%s", snap, "");
                break;
        }
        harness_give_spool(&h);
        harness_start(&h);
        wait_delivered(f, 2 * NEW_MAIL);
        wait_read(&h, 2);
        /* the receiver counts a message at its final dot; tarryd takes it out
         * of active/ a moment later: wait for that before comparing */
        for (int waited = 0;
             waited < 30000 && harness_count_queued(&h, "active") != DEFERRED - GONE - 1 + ADDED;
             waited += 10)
                harness_sleep_ms(10);

        /* exactly what is on disk, in the right queue */
        char *active = ids_in(&h, "active"), *hold = ids_in(&h, "hold");
        char *live_active = listed(&h, "active"), *live_hold = listed(&h, "hold");
        char *live_deferred = listed(&h, "deferred");
        /* the listing calls a message waiting for its retry "deferred" */
        char merged[1 << 17];
        snprintf(merged, sizeof(merged), "%s%s", live_active, live_deferred);
        size_t on_disk = 0, in_list = 0;
        for (char *p = active; *p; p++)
                on_disk += *p == ' ';
        for (char *p = merged; *p; p++)
                in_list += *p == ' ';
        cr_assert_eq(in_list, on_disk, "listed %zu of the %zu messages in active/", in_list,
                     on_disk);
        for (char *id = strtok(active, " "); id; id = strtok(NULL, " "))
                cr_assert(strstr(merged, id), "%s is in active/ but not listed", id);
        cr_assert_str_eq(live_hold, hold, "hold/ and the listing differ");
        cr_assert_eq(on_disk, DEFERRED - GONE - 1 + ADDED, "spool: %zu in active/", on_disk);

        /* the new mail went out once each; nothing that was not due */
        bool seen[2 * NEW_MAIL] = {false};
        for (size_t i = 0; i < fixture_txn_count(f); i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                int idx = atoi(t.rcpts[0] + 1);
                cr_assert(idx >= 0 && idx < 2 * NEW_MAIL && !seen[idx], "unexpected: %s",
                          t.rcpts[0]);
                seen[idx] = true;
                fixture_txn_clear(&t);
        }
        if (c == SNAP_STALE)
                cr_assert(harness_log_contains(
                              &h, "read: 359 from state/index.snap, 31 from their envelopes, "
                                  "10 picked up from incoming/; 41 record(s) dropped"),
                          "the records were not used; see %s", h.log);
        if (c == SNAP_CORRUPT)
                cr_assert(harness_log_contains(&h, "unusable (its checksum does not match)"),
                          "see %s", h.log);
        if (c == SNAP_TRUNCATED)
                cr_assert(harness_log_contains(&h, "unusable (its length differs"), "see %s",
                          h.log);
        if (c == SNAP_MISSING)
                cr_assert(harness_log_contains(&h, "no index snapshot"), "see %s", h.log);
        free(active);
        free(hold);
        free(live_active);
        free(live_hold);
        free(live_deferred);
        cr_assert_eq(harness_stop(&h, SIGTERM, 30000), 0, "tarryd did not stop cleanly; see %s",
                     h.log);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(startup, a_stale_snapshot_loses_nothing_and_skips_nothing, .timeout = 240)
{
        start_on(SNAP_STALE);
}

Test(startup, without_a_snapshot_every_envelope_is_read, .timeout = 240)
{
        start_on(SNAP_MISSING);
}

Test(startup, a_corrupt_snapshot_is_refused_and_every_envelope_read, .timeout = 240)
{
        start_on(SNAP_CORRUPT);
}

Test(startup, a_torn_snapshot_is_refused_and_every_envelope_read, .timeout = 240)
{
        start_on(SNAP_TRUNCATED);
}

/* Time passes while tarryd is stopped: every work in state/index.snap is
 * made due at once (µs 1; the checksum written again, TARRYIX3: FNV-1a
 * steps on 64-bit words, four lanes), and so is every recipient in the
 * envelopes of the spool's folders. */
static const char due_now_py[] = "import struct, sys\n"
                                 "P, M = 1099511628211, (1 << 64) - 1\n"
                                 "def fnv(h, b):\n"
                                 "    for c in b:\n"
                                 "        h = ((h ^ c) * P) & M\n"
                                 "    return h\n"
                                 "def words(h, b):\n"
                                 "    lane = [h, h ^ 1, h ^ 2, h ^ 3]\n"
                                 "    n = len(b) // 32 * 32\n"
                                 "    for i in range(0, n, 32):\n"
                                 "        for k in range(4):\n"
                                 "            w = struct.unpack_from('<Q', b, i + 8 * k)[0]\n"
                                 "            lane[k] = ((lane[k] ^ w) * P) & M\n"
                                 "    for k in range(4):\n"
                                 "        h = ((h ^ lane[k]) * P) & M\n"
                                 "    return fnv(h, b[n:])\n"
                                 "f = bytearray(open(sys.argv[1], 'rb').read())\n"
                                 "assert f[:8] == b'TARRYIX3'\n"
                                 "count = struct.unpack_from('<Q', f, 16)[0]\n"
                                 "p = 40\n"
                                 "for _ in range(count):\n"
                                 "    p += 16 + 1 + 1 + 4 + 8 + 8 + 8 + 4\n"
                                 "    n = f[p]; p += 1\n"
                                 "    for _ in range(n):\n"
                                 "        struct.pack_into('<q', f, p, 1); p += 8\n"
                                 "        p += 1 + f[p]\n"
                                 "        p += 1 + f[p]\n"
                                 "assert p == len(f)\n"
                                 "h = words(fnv(1469598103934665603, f[8:32]), f[40:])\n"
                                 "struct.pack_into('<Q', f, 32, h)\n"
                                 "open(sys.argv[1], 'wb').write(f)\n"
                                 "import glob, json, os\n"
                                 "for e in glob.glob(sys.argv[2] + '/*/*/envelope'):\n"
                                 "    st = os.stat(e)\n"
                                 "    env = json.load(open(e))\n"
                                 "    for r in env['recipients']:\n"
                                 "        r['next_attempt_us'] = 1\n"
                                 "    json.dump(env, open(e, 'w'))\n"
                                 "    os.chown(e, st.st_uid, st.st_gid)\n";

/* The records are applied before the folders' listing is matched against
 * them (the two are read side by side): a record whose folder is gone, or
 * whose message was held since, is dropped before anything runs, even
 * when it is due at once; every other due record is attempted at once
 * from the snapshot, each exactly once; the held message stays held. */
Test(startup, due_records_go_out_at_once_and_dropped_ones_never, .timeout = 240)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        char extra[256];
        snprintf(extra, sizeof(extra),
                 "[transport]\nexample.test = [127.0.0.1]:%u\n.example.test = [127.0.0.1]:%u\n",
                 fixture_port(f), fixture_port(f));
        harness_init(&h, extra);
        harness_spool_deferred(&h, DEFERRED);
        harness_start(&h);
        wait_read(&h, 1);
        cr_assert_eq(harness_stop(&h, SIGTERM, 30000), 0, "tarryd did not stop cleanly; see %s",
                     h.log);
        cr_assert_eq(fixture_txn_count(f), 0, "nothing was due in the first run");

        char snap[400], py[400];
        snprintf(snap, sizeof(snap), "%s/state/index.snap", h.spool);
        snprintf(py, sizeof(py), "%s/due_now.py", h.dir);
        FILE *s = fopen(py, "w");
        cr_assert(s);
        fputs(due_now_py, s);
        fclose(s);
        /* 40 gone, one held: all of them due at once in the snapshot */
        sh("cd %s/active && ls | head -n 40 | xargs rm -rf; ls | sed -n 5p | "
           "xargs -I{} mv {} ../hold/{}%s",
           h.spool, "");
        char cmd[1400];
        snprintf(cmd, sizeof(cmd), "python3 %s %s %s", py, snap, h.spool);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        char *held = ids_in(&h, "hold");
        harness_give_spool(&h);
        harness_start(&h);
        /* applied before READY: indexed and counted, not among those /status
         * and tarryq call unread (the held message is) */
        cr_assert(harness_log_contains(&h, "; 359 from state/index.snap (due soon), 1 listed to "
                                           "read or apply after READY"),
                  "see %s", h.log);
        size_t want = DEFERRED - GONE - 1;
        wait_delivered(f, want);
        wait_read(&h, 2);
        cr_assert(harness_log_contains(&h,
                                       "read: 359 from state/index.snap, 1 from their envelopes, "
                                       "0 picked up from incoming/; 41 record(s) dropped"),
                  "the records were not used; see %s", h.log);
        /* each once */
        for (size_t i = 0; i < fixture_txn_count(f); i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                for (size_t j = 0; j < i; j++) {
                        struct fixture_txn u;
                        cr_assert_eq(fixture_txn_get(f, j, &u), 0);
                        cr_assert_str_neq(t.rcpts[0], u.rcpts[0], "%s delivered twice", t.rcpts[0]);
                        fixture_txn_clear(&u);
                }
                fixture_txn_clear(&t);
        }
        harness_sleep_ms(500); /* nothing more arrives */
        cr_assert_eq(fixture_txn_count(f), want, "%zu delivered", fixture_txn_count(f));
        char *hold = ids_in(&h, "hold"), *live_hold = listed(&h, "hold");
        cr_assert_str_eq(hold, held, "the held message left hold/");
        cr_assert_str_eq(live_hold, hold, "hold/ and the listing differ");
        free(held);
        free(hold);
        free(live_hold);
        cr_assert_eq(harness_stop(&h, SIGTERM, 30000), 0, "tarryd did not stop cleanly; see %s",
                     h.log);
        harness_cleanup(&h);
        fixture_free(f);
}
