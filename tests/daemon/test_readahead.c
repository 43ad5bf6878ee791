/* tests/daemon/test_readahead.c — a listing's envelopes read ahead on a thread.
 *
 * The thread reads only what it can read as queue_load would, without
 * writing and without following a symlink; for anything else it hands the
 * message back without an envelope and the loop calls queue_load. Messages
 * come out in the order they were handed over, whatever the thread managed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/readahead.h"

struct spool {
        char dir[64];
        struct queue *q;
};

static void spool_open(struct spool *s)
{
        snprintf(s->dir, sizeof(s->dir), "/tmp/tarry-ra-XXXXXX");
        cr_assert_not_null(mkdtemp(s->dir));
        cr_assert_eq(queue_open(s->dir, QUEUE_OPEN_CREATE, &s->q), 0);
}

static void spool_close(struct spool *s)
{
        queue_close(s->q);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", s->dir);
        cr_assert_eq(system(cmd), 0);
}

/* A message in active/ to two recipients; as a folder (updated once, as
 * every deferred message is) or as the message file submission leaves. */
static void add_message(struct spool *s, bool folder, char id[QUEUE_ID_LEN + 1])
{
        struct envelope *env = envelope_new();
        cr_assert_not_null(env);
        env->sender = strdup("alice@example.com");
        cr_assert_not_null(envelope_add_rcpt(env, "bob@example.org"));
        cr_assert_not_null(envelope_add_rcpt(env, "carol@example.net"));
        static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
        /* a message file, picked up as it is (one rename) */
        cr_assert_eq(queue_enqueue(s->q, QUEUE_INCOMING, env, body, sizeof(body) - 1), 0);
        cr_assert_eq(queue_move(s->q, env->id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        if (folder) {
                env->rcpt[0].state = RCPT_DEFERRED;
                env->rcpt[0].attempts = 1;
                cr_assert_eq(queue_update(s->q, QUEUE_ACTIVE, env), 0);
        }
        memcpy(id, env->id, QUEUE_ID_LEN + 1);
        envelope_free(env);
}

static void path_of(const struct spool *s, const char *id, const char *file, char *out, size_t len)
{
        snprintf(out, len, "%s/active/%s%s%s", s->dir, id, file ? "/" : "", file ? file : "");
}

Test(readahead, a_folder_s_envelope_is_read_as_queue_load_reads_it)
{
        struct spool s;
        spool_open(&s);
        char id[QUEUE_ID_LEN + 1];
        add_message(&s, true, id);
        char *buf = NULL;
        size_t cap = 0;
        struct envelope *ahead = NULL, *loaded = NULL;
        cr_assert_eq(readahead_load(s.q, QUEUE_ACTIVE, id, &buf, &cap, &ahead), 0);
        cr_assert_eq(queue_load(s.q, QUEUE_ACTIVE, id, &loaded, NULL), 0);
        json_t *a = envelope_to_json(ahead), *b = envelope_to_json(loaded);
        cr_assert(json_equal(a, b), "the envelope read ahead differs from queue_load's");
        cr_assert_eq(ahead->rcpt[0].state, RCPT_DEFERRED);
        json_decref(a);
        json_decref(b);
        envelope_free(ahead);
        envelope_free(loaded);
        free(buf);
        spool_close(&s);
}

Test(readahead, a_message_file_is_left_to_queue_load)
{
        struct spool s;
        spool_open(&s);
        char id[QUEUE_ID_LEN + 1];
        add_message(&s, false, id);
        char *buf = NULL;
        size_t cap = 0;
        struct envelope *env = NULL;
        cr_assert_lt(readahead_load(s.q, QUEUE_ACTIVE, id, &buf, &cap, &env), 0);
        cr_assert_null(env);
        free(buf);
        spool_close(&s);
}

Test(readahead, a_symlinked_envelope_is_not_followed)
{
        struct spool s;
        spool_open(&s);
        char id[QUEUE_ID_LEN + 1], env_path[256], copy[256];
        add_message(&s, true, id);
        path_of(&s, id, "envelope", env_path, sizeof(env_path));
        snprintf(copy, sizeof(copy), "%s/elsewhere", s.dir);
        cr_assert_eq(rename(env_path, copy), 0);
        cr_assert_eq(symlink(copy, env_path), 0);
        char *buf = NULL;
        size_t cap = 0;
        struct envelope *env = NULL;
        cr_assert_eq(readahead_load(s.q, QUEUE_ACTIVE, id, &buf, &cap, &env), -ELOOP);
        cr_assert_null(env);
        free(buf);
        spool_close(&s);
}

Test(readahead, a_body_that_still_has_its_trailer_is_left_to_queue_load)
{
        struct spool s;
        spool_open(&s);
        char id[QUEUE_ID_LEN + 1], body[256];
        add_message(&s, true, id);
        path_of(&s, id, "body", body, sizeof(body));
        struct stat before;
        cr_assert_eq(stat(body, &before), 0);
        int fd = open(body, O_WRONLY | O_APPEND);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "x", 1), 1); /* no longer the envelope's size */
        close(fd);
        char *buf = NULL;
        size_t cap = 0;
        struct envelope *env = NULL;
        cr_assert_lt(readahead_load(s.q, QUEUE_ACTIVE, id, &buf, &cap, &env), 0);
        cr_assert_null(env);
        struct stat after;
        cr_assert_eq(stat(body, &after), 0);
        cr_assert_eq(after.st_size, before.st_size + 1, "the thread wrote to the body");
        free(buf);
        spool_close(&s);
}

Test(readahead, an_envelope_over_queue_load_s_limit_is_left_to_queue_load)
{
        struct spool s;
        spool_open(&s);
        char id[QUEUE_ID_LEN + 1], env_path[256];
        add_message(&s, true, id);
        path_of(&s, id, "envelope", env_path, sizeof(env_path));
        /* still valid JSON (trailing blanks), but bigger than queue_load reads */
        int fd = open(env_path, O_WRONLY | O_APPEND);
        cr_assert_geq(fd, 0);
        static char blanks[1 << 20];
        memset(blanks, ' ', sizeof(blanks));
        for (size_t n = 0; n <= ENVELOPE_MAX_BYTES; n += sizeof(blanks))
                cr_assert_eq(write(fd, blanks, sizeof(blanks)), (ssize_t)sizeof(blanks));
        close(fd);
        struct envelope *loaded = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(s.q, QUEUE_ACTIVE, id, &loaded, &why), -EBADMSG);
        char *buf = NULL;
        size_t cap = 0;
        struct envelope *env = NULL;
        cr_assert_eq(readahead_load(s.q, QUEUE_ACTIVE, id, &buf, &cap, &env), -EFBIG,
                     "the thread read what queue_load refuses");
        cr_assert_null(env);
        free(buf);
        spool_close(&s);
}

Test(readahead, messages_come_back_in_the_order_given_with_what_could_be_read)
{
        enum { N = 3 * READAHEAD_SLOTS };
        struct spool s;
        spool_open(&s);
        static char ids[N][QUEUE_ID_LEN + 1];
        for (int i = 0; i < N; i++)
                add_message(&s, i % 3 != 1, ids[i]); /* every third a message file */
        char gone[QUEUE_ID_LEN + 1];
        memcpy(gone, ids[N - 1], sizeof(gone));
        cr_assert_eq(queue_remove(s.q, QUEUE_ACTIVE, gone), 0);

        struct readahead *ra = NULL;
        cr_assert_eq(readahead_new(s.q, &ra), 0);
        int given = 0, taken = 0;
        while (taken < N) {
                while (given < N && readahead_has_room(ra))
                        cr_assert_eq(readahead_add(ra, ids[given++], QUEUE_ACTIVE), 0);
                if (given < N)
                        cr_assert_eq(readahead_add(ra, ids[given], QUEUE_ACTIVE), -ENOSPC);
                char id[QUEUE_ID_LEN + 1];
                enum queue_dir d;
                struct envelope *env = NULL;
                cr_assert_eq(readahead_take(ra, id, &d, &env), 1);
                cr_assert_str_eq(id, ids[taken], "message %d out of order", taken);
                cr_assert_eq(d, QUEUE_ACTIVE);
                if (env)
                        cr_assert_str_eq(env->id, id);
                if (taken % 3 == 1 || taken == N - 1)
                        cr_assert_null(env, "message %d: read ahead, yet not a folder", taken);
                envelope_free(env);
                taken++;
        }
        char id[QUEUE_ID_LEN + 1];
        enum queue_dir d;
        struct envelope *env = NULL;
        cr_assert_eq(readahead_take(ra, id, &d, &env), 0);
        readahead_free(ra);
        spool_close(&s);
}

Test(readahead, stopped_with_envelopes_still_unread_or_untaken)
{
        struct spool s;
        spool_open(&s);
        char id[QUEUE_ID_LEN + 1];
        add_message(&s, true, id);
        struct readahead *ra = NULL;
        cr_assert_eq(readahead_new(s.q, &ra), 0);
        for (int i = 0; i < READAHEAD_SLOTS; i++)
                cr_assert_eq(readahead_add(ra, id, QUEUE_ACTIVE), 0);
        readahead_free(ra); /* under ASan: nothing leaks */
        spool_close(&s);
}
