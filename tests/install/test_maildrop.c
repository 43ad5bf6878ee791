/* tests/install/test_maildrop.c — drop files as tarryd sees them: whole
 * records become messages owned by the file's owner; anything else is
 * refused into corrupt/ with a reason, never trusted and never lost. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <signal.h>
#include <time.h>

#include "harness.h"
#include "queue/queue.h"
#include "tests/fixture/fixture.h"

#define OTHER_UID 4242 /* the "submitter": drop files are chowned to it */

static char spool[256];
static struct queue *q;

static void setup(void)
{
        snprintf(spool, sizeof(spool), "/tmp/tarry-maildrop-XXXXXX");
        cr_assert_not_null(mkdtemp(spool));
        cr_assert_eq(queue_open(spool, QUEUE_OPEN_CREATE, &q), 0);
        cr_assert_geq(queue_maildrop_fd(q), 0);
}

static void teardown(void)
{
        queue_close(q);
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", spool);
        cr_assert_eq(system(cmd), 0);
}

TestSuite(maildrop, .init = setup, .fini = teardown);

static struct envelope *env_to(const char *sender, const char *rcpt)
{
        struct envelope *env = envelope_new();
        cr_assert_not_null(env);
        free(env->sender);
        env->sender = strdup(sender);
        cr_assert_not_null(envelope_add_rcpt(env, rcpt));
        return env;
}

/* Commit one message through a maildrop handle (as sendmail does). */
static void drop_message(struct queue *m, const char *sender, const char *rcpt, const char *body)
{
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(m, &d), 0);
        cr_assert_eq(queue_draft_write(d, body, strlen(body)), 0);
        struct envelope *env = env_to(sender, rcpt);
        cr_assert_eq(queue_draft_commit(d, env), 0);
        envelope_free(env);
}

/* The only drop file's name (fails the test unless there is exactly one). */
static void only_drop(char name[64])
{
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "ls -A %s/maildrop", spool);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        cr_assert_not_null(fgets(name, 64, p));
        name[strcspn(name, "\n")] = '\0';
        char extra[64];
        cr_assert_null(fgets(extra, sizeof(extra), p), "more than one drop file");
        pclose(p);
}

static int count_in(const char *sub)
{
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "ls -A %s/%s | wc -l", spool, sub);
        FILE *p = popen(cmd, "r");
        int n = -1;
        cr_assert_eq(fscanf(p, "%d", &n), 1);
        pclose(p);
        return n;
}

static void chown_drop(const char *name, uid_t uid)
{
        cr_assert_eq(fchownat(queue_maildrop_fd(q), name, uid, uid, AT_SYMLINK_NOFOLLOW), 0);
}

static int take(const char *name, uint64_t max, struct maildrop_result *res)
{
        return queue_maildrop_take(q, name, max, NULL, NULL, res);
}

static struct envelope *load_only_incoming(void)
{
        struct envelope *got = NULL;
        char cmd[400], id[64];
        snprintf(cmd, sizeof(cmd), "ls %s/incoming", spool);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(fgets(id, sizeof(id), p));
        pclose(p);
        id[strcspn(id, "\n")] = '\0';
        cr_assert_eq(queue_load(q, QUEUE_INCOMING, id, &got, NULL), 0);
        return got;
}

Test(maildrop, a_drop_file_becomes_a_message_owned_by_the_file_owner)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        cr_assert(queue_is_maildrop(m));
        drop_message(m, "alice@example.org", "bob@example.net", "Subject: x\r\n\r\nhello\r\n");
        queue_close(m);
        char name[64];
        only_drop(name);
        chown_drop(name, OTHER_UID);

        struct maildrop_result res;
        cr_assert_eq(take(name, 1 << 20, &res), 0);
        cr_assert_eq(res.queued, 1);
        cr_assert_eq(count_in("maildrop"), 0, "the drop file is removed once queued");
        struct envelope *env = load_only_incoming();
        cr_assert_eq(env->uid, OTHER_UID, "the submitter is the file's owner");
        cr_assert_str_eq(env->sender, "alice@example.org");
        cr_assert_str_eq(env->rcpt[0].address, "bob@example.net");
        cr_assert_eq(env->size, strlen("Subject: x\r\n\r\nhello\r\n"));
        cr_assert_str_eq(env->id, res.ids[0]);
        envelope_free(env);
}

Test(maildrop, a_uid_written_inside_the_file_is_ignored)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(m, &d), 0);
        cr_assert_eq(queue_draft_write(d, "x\r\n", 3), 0);
        struct envelope *env = env_to("a@example.org", "b@example.net");
        env->uid = 0; /* claims to be root */
        env->user = strdup("root");
        env->is_dsn = true;
        cr_assert_eq(queue_draft_commit(d, env), 0);
        envelope_free(env);
        queue_close(m);
        char name[64];
        only_drop(name);
        chown_drop(name, OTHER_UID);
        struct maildrop_result res;
        cr_assert_eq(take(name, 1 << 20, &res), 0);
        struct envelope *got = load_only_incoming();
        cr_assert_eq(got->uid, OTHER_UID);
        cr_assert_null(got->user, "the name is tarryd's to fill in from the uid");
        cr_assert_not(got->is_dsn, "only tarryd makes DSNs");
        envelope_free(got);
}

Test(maildrop, a_session_with_several_messages_queues_them_all)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        drop_message(m, "a@example.org", "one@example.net", "1\r\n");
        drop_message(m, "a@example.org", "two@example.net", "22\r\n");
        drop_message(m, "", "three@example.net", "333\r\n");
        queue_close(m);
        char name[64];
        only_drop(name);
        struct maildrop_result res;
        cr_assert_eq(take(name, 1 << 20, &res), 0);
        cr_assert_eq(res.queued, 3);
        cr_assert_eq(count_in("incoming"), 3);
}

Test(maildrop, an_aborted_message_leaves_no_trace_and_later_ones_still_count)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(m, &d), 0);
        cr_assert_eq(queue_draft_write(d, "never sent\r\n", 12), 0);
        queue_draft_abort(d);
        drop_message(m, "a@example.org", "b@example.net", "kept\r\n");
        queue_close(m);
        char name[64];
        only_drop(name);
        struct maildrop_result res;
        cr_assert_eq(take(name, 1 << 20, &res), 0);
        cr_assert_eq(res.queued, 1);
        cr_assert_not(res.unfinished);
}

Test(maildrop, a_file_still_held_by_its_sendmail_is_left_alone)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        drop_message(m, "a@example.org", "b@example.net", "x\r\n");
        char name[64];
        only_drop(name);
        struct maildrop_result res;
        cr_assert_eq(take(name, 1 << 20, &res), -EBUSY);
        cr_assert_eq(count_in("incoming"), 0);
        queue_close(m);
        cr_assert_eq(take(name, 1 << 20, &res), 0);
        cr_assert_eq(count_in("incoming"), 1);
}

/* Write raw bytes as a drop file named like sendmail's. */
static void raw_drop(const char *name, const void *buf, size_t len)
{
        int fd = openat(queue_maildrop_fd(q), name, O_WRONLY | O_CREAT | O_EXCL, 0644);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, buf, len), (ssize_t)len);
        close(fd);
}

#define NAME1 "0123456789abcdef0123456789abcdef"

static bool in_corrupt(const char *name)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/corrupt/maildrop-%s", spool, name);
        return access(path, F_OK) == 0;
}

Test(maildrop, a_garbage_file_goes_to_corrupt_with_a_reason)
{
        raw_drop(NAME1, "MAIL FROM:<x>\r\nhello\r\n", 22);
        struct maildrop_result res;
        cr_assert_eq(take(NAME1, 1 << 20, &res), -EBADMSG);
        cr_assert_str_eq(res.why, "a record header is malformed");
        cr_assert(in_corrupt(NAME1));
        cr_assert_eq(count_in("maildrop"), 0);
        cr_assert_eq(count_in("incoming"), 0);
}

Test(maildrop, lengths_beyond_the_file_or_the_limits_are_refused)
{
        char buf[200];
        int n = snprintf(buf, sizeof(buf), MAILDROP_MAGIC " %020d %010d\n{}", 5, 2);
        raw_drop(NAME1, buf, (size_t)n);
        struct maildrop_result res;
        cr_assert_eq(take(NAME1, 1 << 20, &res), -EBADMSG);
        cr_assert_str_eq(res.why, "a record is longer than the file");

        n = snprintf(buf, sizeof(buf), MAILDROP_MAGIC " %020d %010d\n0123456789{}", 10, 2);
        raw_drop("fedcba9876543210fedcba9876543210", buf, (size_t)n);
        cr_assert_eq(take("fedcba9876543210fedcba9876543210", 5, &res), -EBADMSG);
        cr_assert_str_eq(res.why, "a message is larger than message_size_limit");
}

Test(maildrop, a_forged_envelope_with_a_crlf_address_is_refused)
{
        const char *env = "{\"version\":1,\"id\":\"5F000000000000AB\",\"sender\":\"a@b.c\\r\\nRCPT "
                          "TO:<x@y.z>\",\"arrival_us\":1,\"size\":2,\"recipients\":[{\"address\":"
                          "\"b@example.net\",\"state\":\"pending\"}]}";
        char buf[600];
        int n =
            snprintf(buf, sizeof(buf), MAILDROP_MAGIC " %020d %010zu\nx\n%s", 2, strlen(env), env);
        raw_drop(NAME1, buf, (size_t)n);
        struct maildrop_result res;
        cr_assert_eq(take(NAME1, 1 << 20, &res), -EBADMSG);
        cr_assert(in_corrupt(NAME1));
        cr_assert_eq(count_in("incoming"), 0);
}

Test(maildrop, a_symlink_or_a_hard_link_is_not_a_drop_file)
{
        cr_assert_eq(symlinkat("/etc/passwd", queue_maildrop_fd(q), NAME1), 0);
        struct maildrop_result res;
        cr_assert_eq(take(NAME1, 1 << 20, &res), -EBADMSG);
        cr_assert_str_eq(res.why, "not a regular file");
        cr_assert(in_corrupt(NAME1));

        const char *other = "fedcba9876543210fedcba9876543210";
        raw_drop(other, "x", 1);
        char from[400], to[400];
        snprintf(from, sizeof(from), "%s/maildrop/%s", spool, other);
        snprintf(to, sizeof(to), "%s/elsewhere", spool);
        cr_assert_eq(link(from, to), 0);
        cr_assert_eq(take(other, 1 << 20, &res), -EBADMSG);
        cr_assert_str_eq(res.why, "the file has other hard links");
}

Test(maildrop, a_message_its_writer_never_finished_is_dropped_quietly)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        drop_message(m, "a@example.org", "b@example.net", "whole\r\n");
        queue_close(m);
        char name[64];
        only_drop(name);
        /* a writer that died mid-message leaves a record still marked tarry-open */
        int fd = openat(queue_maildrop_fd(q), name, O_WRONLY | O_APPEND);
        cr_assert_geq(fd, 0);
        char open_hdr[64];
        snprintf(open_hdr, sizeof(open_hdr), "%-44s\nhalf", MAILDROP_OPEN_MAGIC);
        cr_assert_eq(write(fd, open_hdr, strlen(open_hdr)), (ssize_t)strlen(open_hdr));
        close(fd);
        struct maildrop_result res;
        cr_assert_eq(take(name, 1 << 20, &res), 0);
        cr_assert_eq(res.queued, 1);
        cr_assert(res.unfinished);
        cr_assert_eq(count_in("maildrop"), 0);
}

static int refuse_all(struct envelope *env, void *userdata, const char **why)
{
        (void)env, (void)userdata;
        *why = "not this sender";
        return -EPERM;
}

Test(maildrop, a_record_the_check_refuses_sends_the_file_to_corrupt)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        drop_message(m, "someone@else.example", "b@example.net", "x\r\n");
        queue_close(m);
        char name[64];
        only_drop(name);
        struct maildrop_result res;
        cr_assert_eq(queue_maildrop_take(q, name, 1 << 20, refuse_all, NULL, &res), -EPERM);
        cr_assert_str_eq(res.why, "not this sender");
        cr_assert(in_corrupt(name));
        cr_assert_eq(count_in("incoming"), 0);
}

/* ---- issue 14: the body is normalised, the ID kept, the take bounded ---- */

static char *read_only_incoming_body(void)
{
        char cmd[400], id[64], path[600];
        snprintf(cmd, sizeof(cmd), "ls %s/incoming", spool);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(fgets(id, sizeof(id), p));
        pclose(p);
        id[strcspn(id, "\n")] = '\0';
        (void)path;
        struct queue *q;
        cr_assert_eq(queue_open(spool, 0, &q), 0);
        int fd = -1;
        uint64_t size = 0;
        cr_assert_eq(queue_open_body(q, QUEUE_INCOMING, id, &fd, &size), 0);
        queue_close(q);
        static char buf[8192];
        cr_assert_lt(size, sizeof(buf));
        cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
        buf[size] = '\0';
        close(fd);
        return buf;
}

/* A drop file is untrusted: a body written into it directly (not through
 * sendmail's normalisation) must not reach the next hop with a bare LF, where
 * "\n.\n" would end DATA and smuggle the rest as a second message. */
Test(maildrop, a_forged_body_is_normalised_as_sendmail_normalises_its_input)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        char body[2000];
        char longline[1001];
        memset(longline, 'x', 1000);
        longline[1000] = '\0';
        snprintf(body, sizeof(body),
                 "Subject: s\n\nhello\n.\nMAIL FROM:<ceo@example.com>\r\n"
                 "a\rb\r\n%s\nlast\r",
                 longline);
        drop_message(m, "a@example.org", "b@example.net", body);
        queue_close(m);
        char name[64];
        only_drop(name);
        struct maildrop_result res;
        cr_assert_eq(take(name, 1 << 20, &res), 0);
        char want[2100];
        snprintf(want, sizeof(want),
                 "Subject: s\r\n\r\nhello\r\n.\r\nMAIL FROM:<ceo@example.com>\r\n"
                 "a\rb\r\n%.998s\r\n xx\r\nlast\r\r\n",
                 longline);
        cr_assert_str_eq(read_only_incoming_body(), want);
        struct envelope *env = load_only_incoming();
        cr_assert_eq(env->size, strlen(want));
        envelope_free(env);
}

/* sendmail -bs answers "queued as ID" with the ID of the drop record: the
 * message must be queued under that ID. */
Test(maildrop, a_record_is_queued_under_the_id_its_sendmail_reported)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(m, &d), 0);
        cr_assert_eq(queue_draft_write(d, "x\r\n", 3), 0);
        struct envelope *env = env_to("a@example.org", "b@example.net");
        cr_assert_eq(queue_draft_commit(d, env), 0);
        char reported[QUEUE_ID_LEN + 1];
        memcpy(reported, env->id, sizeof(reported));
        envelope_free(env);
        queue_close(m);
        char name[64];
        only_drop(name);
        struct maildrop_result res;
        cr_assert_eq(take(name, 1 << 20, &res), 0);
        struct envelope *got = load_only_incoming();
        cr_assert_str_eq(got->id, reported);
        envelope_free(got);
}

/* A raw record with the envelope env (its id and arrival as given). */
static size_t raw_record(char *out, size_t cap, const char *body, const struct envelope *env)
{
        json_t *j = envelope_to_json(env);
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        int n = snprintf(out, cap, MAILDROP_MAGIC " %020zu %010zu\n%s%s", strlen(body),
                         strlen(text), body, text);
        free(text);
        cr_assert_lt((size_t)n, cap);
        return (size_t)n;
}

/* An ID another message has, or one from before the file existed, is not
 * the record's to keep: the record gets a fresh one, the other is untouched. */
Test(maildrop, a_record_cannot_take_the_id_of_another_message)
{
        struct envelope *first = env_to("a@example.org", "b@example.net");
        cr_assert_eq(queue_enqueue(q, QUEUE_ACTIVE, first, "mine\r\n", 6), 0);
        struct envelope *forged = env_to("evil@example.org", "c@example.net");
        memcpy(forged->id, first->id, sizeof(forged->id));
        forged->arrival_us = first->arrival_us;
        struct envelope *old = env_to("evil@example.org", "d@example.net");
        old->arrival_us = 1000000LL * 1000000000; /* 2001 */
        snprintf(old->id, sizeof(old->id), "%08X%05X%03X", 1000000000u, 0u, 0xabcu);
        char buf[4096];
        size_t n = raw_record(buf, sizeof(buf), "x\r\n", forged);
        n += raw_record(buf + n, sizeof(buf) - n, "y\r\n", old);
        raw_drop(NAME1, buf, n);
        struct maildrop_result res;
        cr_assert_eq(take(NAME1, 1 << 20, &res), 0);
        cr_assert_eq(res.queued, 2);
        cr_assert_str_neq(res.ids[0], first->id);
        cr_assert_str_neq(res.ids[1], old->id);
        struct envelope *still = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, first->id, &still, NULL), 0);
        cr_assert_str_eq(still->sender, "a@example.org");
        envelope_free(still);
        envelope_free(first);
        envelope_free(forged);
        envelope_free(old);
}

static void drop_n(int n)
{
        struct queue *m;
        cr_assert_eq(queue_open_maildrop(spool, &m), 0);
        for (int i = 0; i < n; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "u%d@example.net", i);
                drop_message(m, "a@example.org", rcpt, "x\r\n");
        }
        queue_close(m);
}

static bool state_exists(const char *name)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/state/maildrop-%s", spool, name);
        return access(path, F_OK) == 0;
}

struct rcpt_count {
        struct queue *q;
        enum queue_dir dir;
        int n;
        int *seen; /* envelopes naming u<i>@example.net */
};

static int count_rcpts_cb(const char *id, void *userdata)
{
        struct rcpt_count *c = userdata;
        struct envelope *env = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(c->q, c->dir, id, &env, &why), 0, "%s: %s", id, why);
        for (size_t i = 0; i < env->n_rcpt; i++) {
                int u = -1;
                if (sscanf(env->rcpt[i].address, "u%d@example.net", &u) == 1 && u >= 0 && u < c->n)
                        c->seen[u]++;
        }
        envelope_free(env);
        return 0;
}

/* How many of u0..u(n-1) the envelopes in dir of spool_dir name exactly once
 * (*once) and more than once (*twice), read as tarryd reads them. */
static void count_rcpts(const char *spool_dir, enum queue_dir dir, int n, int *once, int *twice)
{
        struct rcpt_count c = {.dir = dir, .n = n, .seen = calloc((size_t)n, sizeof(int))};
        cr_assert_eq(queue_open(spool_dir, 0, &c.q), 0);
        cr_assert_eq(queue_scan(c.q, dir, count_rcpts_cb, &c), 0);
        queue_close(c.q);
        *once = *twice = 0;
        for (int i = 0; i < n; i++) {
                *once += c.seen[i] == 1;
                *twice += c.seen[i] > 1;
        }
        free(c.seen);
}

/* Every recipient u0..u(n-1) is queued exactly once in incoming/. */
static void expect_each_once(int n)
{
        int once, twice;
        count_rcpts(spool, QUEUE_INCOMING, n, &once, &twice);
        cr_assert_eq(twice, 0, "a recipient was queued twice");
        cr_assert_eq(once, n);
        cr_assert_eq(count_in("incoming"), n);
}

Test(maildrop, a_take_in_batches_queues_every_record_once_and_cleans_up)
{
        drop_n(10);
        char name[64];
        only_drop(name);
        struct maildrop_take_opts o = {.body_max = 1 << 20, .batch = 3};
        struct maildrop_resume at = {0};
        struct maildrop_result res;
        int steps = 0, r;
        while ((r = queue_maildrop_take_step(q, name, &at, &o, &res)) == -EINPROGRESS) {
                cr_assert_eq(res.queued, 3);
                cr_assert(state_exists(name), "the resume point is on disk between steps");
                at = (struct maildrop_resume){0}; /* a restart forgets memory */
                steps++;
        }
        cr_assert_eq(r, 0, "%s", strerror(-r));
        cr_assert_eq(steps, 3);
        cr_assert_eq(res.queued, 1);
        cr_assert_not(state_exists(name));
        cr_assert_eq(count_in("maildrop"), 0);
        expect_each_once(10);
}

/* A crash after records were committed but before the resume point moved
 * past them: the next take recognises them by their queue ID. */
Test(maildrop, records_queued_just_before_a_crash_are_not_queued_again)
{
        drop_n(10);
        char name[64];
        only_drop(name);
        struct maildrop_take_opts o = {.body_max = 1 << 20, .batch = 3};
        struct maildrop_resume at = {0};
        struct maildrop_result res;
        cr_assert_eq(queue_maildrop_take_step(q, name, &at, &o, &res), -EINPROGRESS);
        char *saved = NULL;
        size_t len = 0;
        char sname[80];
        snprintf(sname, sizeof(sname), "maildrop-%s", name);
        cr_assert_eq(queue_state_read(q, sname, 1024, &saved, &len), 0);
        cr_assert_eq(queue_maildrop_take_step(q, name, &at, &o, &res), -EINPROGRESS);
        /* the crash: the second step's records are queued, its resume point lost */
        cr_assert_eq(queue_state_write(q, sname, saved, len), 0);
        free(saved);
        at = (struct maildrop_resume){0};
        o.batch = 0;
        cr_assert_eq(queue_maildrop_take_step(q, name, &at, &o, &res), 0);
        cr_assert_eq(res.already, 3);
        cr_assert_eq(res.queued, 4);
        expect_each_once(10);
}

Test(maildrop, a_file_with_more_messages_than_the_limit_queues_the_limit_and_goes_to_corrupt)
{
        drop_n(5);
        char name[64];
        only_drop(name);
        struct maildrop_take_opts o = {.body_max = 1 << 20, .max_messages = 3, .batch = 2};
        struct maildrop_resume at = {0};
        struct maildrop_result res;
        int queued = 0, r;
        while ((r = queue_maildrop_take_step(q, name, &at, &o, &res)) == -EINPROGRESS)
                queued += res.queued;
        queued += res.queued;
        cr_assert_eq(r, -EBADMSG);
        cr_assert_str_eq(res.why, "more messages in one drop file than maildrop_message_limit");
        cr_assert_eq(queued, 3);
        cr_assert_eq(count_in("incoming"), 3);
        cr_assert(in_corrupt(name), "the rest is kept for the administrator");
        cr_assert_not(state_exists(name));
}

/* ---- tarryd taking a big drop file (issue 14.5) ---- */

/* Write a drop file of n tiny records, to u0..u(n-1)@example.test, owned by
 * OTHER_UID, and move it into h's maildrop/ (tarryd sees it arrive). */
static void big_drop(struct harness *h, int n)
{
        char part[400], dest[400];
        snprintf(part, sizeof(part), "%s/big-drop.part", h->spool);
        snprintf(dest, sizeof(dest), "%s/maildrop/%s", h->spool, NAME1);
        FILE *f = fopen(part, "w");
        cr_assert_not_null(f);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t t0 = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
        for (int i = 0; i < n; i++) {
                char rcpt[64], body[64];
                snprintf(rcpt, sizeof(rcpt), "u%d@example.test", i);
                snprintf(body, sizeof(body), "Subject: %d\r\n\r\nmessage %d\r\n", i, i);
                struct envelope *env = env_to("app@example.org", rcpt);
                env->arrival_us = t0 + i;
                snprintf(env->id, sizeof(env->id), "%08X%05X%03X",
                         (unsigned)(env->arrival_us / 1000000),
                         (unsigned)(env->arrival_us % 1000000), (unsigned)i & 0xfff);
                char rec[2048];
                size_t len = raw_record(rec, sizeof(rec), body, env);
                cr_assert_eq(fwrite(rec, 1, len, f), len);
                envelope_free(env);
        }
        cr_assert_eq(fflush(f), 0);
        cr_assert_eq(fsync(fileno(f)), 0);
        cr_assert_eq(fchown(fileno(f), OTHER_UID, OTHER_UID), 0);
        fclose(f);
        cr_assert_eq(rename(part, dest), 0);
}

static bool drop_left(struct harness *h)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/maildrop/%s", h->spool, NAME1);
        return access(path, F_OK) == 0;
}

/* Once tarryd has picked everything up from incoming/: fails unless every one
 * of u0..u(n-1) is named by exactly one envelope in active/. */
static void expect_each_queued_once(struct harness *h, int n)
{
        for (int waited = 0; waited < 300000 && harness_count_queued(h, "incoming") > 0;
             waited += 20)
                harness_sleep_ms(20);
        cr_assert_eq(harness_count_queued(h, "incoming"), 0, "incoming/ was not picked up");
        /* count the envelopes' recipient addresses, not every mention: the
         * Received: header saved with a first attempt names the recipient too;
         * read as tarryd reads them (a message not yet tried has its envelope
         * in its body's trailer) */
        int once = -1, twice = -1;
        count_rcpts(h->spool, QUEUE_ACTIVE, n, &once, &twice);
        cr_assert_eq(twice, 0, "%d recipient(s) queued more than once", twice);
        cr_assert_eq(once, n, "%d of %d recipients queued", once, n);
}

/* A relay that never answers: the messages stay queued, to be counted. */
static struct fixture *silent_relay(struct harness *h, const char *extra)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_set(f, "hang", "greeting"), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        char conf[512];
        snprintf(conf, sizeof(conf),
                 "relayhost = [127.0.0.1]:%u\n%s[smtp]\nmax_connections = 1\n"
                 "destination_concurrency = 1\n",
                 (unsigned)fixture_port(f), extra);
        harness_init(h, conf);
        /* fsyncs on a tmpfs cost nothing, so the test measures how the take
         * shares the loop, not how fast the shared test machine's disk is */
        const char *how = NULL;
        if (harness_spool_on_tmpfs(h, "1g", &how) < 0)
                cr_log_warn("spool on disk (no tmpfs: %s): slower", how);
        return f;
}

static int env_int(const char *name, int def)
{
        const char *v = getenv(name);
        return v && atoi(v) > 0 ? atoi(v) : def;
}

/* The 20,000 messages: taken a batch per loop iteration, a drop
 * file holds a status request up for one batch, not for the whole file
 * (TARRY_MAILDROP_RECORDS=N for another count). */
Test(maildrop_daemon, status_answers_while_a_big_drop_file_is_taken, .timeout = 600)
{
        int n = env_int("TARRY_MAILDROP_RECORDS", 20000);
        struct harness h;
        struct fixture *f = silent_relay(&h, "maildrop_message_limit = 0\n");
        harness_start(&h);
        big_drop(&h, n);
        int64_t start = harness_now_us(), worst = 0;
        int samples = 0;
        while (drop_left(&h) && harness_now_us() - start < 500 * 1000000LL) {
                int64_t t = harness_now_us();
                char *resp = harness_http_get(&h, "/status"); /* asked during the take */
                int64_t took = harness_now_us() - t;
                cr_assert(strstr(resp, " 200 "), "no answer after %.1f s: %.200s",
                          (double)took / 1e6, resp);
                free(resp);
                samples++;
                worst = took > worst ? took : worst;
                harness_sleep_ms(20);
        }
        int64_t total = harness_now_us() - start;
        cr_assert_not(drop_left(&h), "the drop file was not taken within 500 s");
        cr_log_info("%d records taken in %.1f s; %d status requests meanwhile, slowest %.3f s", n,
                    (double)total / 1e6, samples, (double)worst / 1e6);
        cr_assert_lt(worst * 4, total, "a status request waited %.1f s of a %.1f s take",
                     (double)worst / 1e6, (double)total / 1e6);
        cr_assert_geq(samples, 3, "the take was too quick to probe (%.1f s)", (double)total / 1e6);
        expect_each_queued_once(&h, n);
        harness_stop(&h, SIGTERM, 10000);
        harness_cleanup(&h);
        fixture_free(f);
}

/* kill -9 in the middle of a take, three times: the resume point on disk and
 * the records' queue IDs make every message queued exactly once. */
Test(maildrop_daemon, kill_9_during_a_take_queues_each_message_exactly_once, .timeout = 600)
{
        int n = env_int("TARRY_MAILDROP_KILL_RECORDS", 3000);
        struct harness h;
        struct fixture *f = silent_relay(&h, "maildrop_message_limit = 0\n");
        harness_start(&h);
        big_drop(&h, n);
        for (int kill = 0; kill < 3 && drop_left(&h); kill++) {
                size_t before =
                    harness_count_queued(&h, "incoming") + harness_count_queued(&h, "active");
                size_t want = before + (size_t)n / 5;
                for (int waited = 0;
                     waited < 300000 && drop_left(&h) &&
                     harness_count_queued(&h, "incoming") + harness_count_queued(&h, "active") <
                         want;
                     waited += 5)
                        harness_sleep_ms(5);
                harness_kill9(&h);
                harness_start(&h);
        }
        for (int waited = 0; waited < 300000 && drop_left(&h); waited += 20)
                harness_sleep_ms(20);
        cr_assert_not(drop_left(&h), "the drop file was not taken");
        expect_each_queued_once(&h, n);
        harness_stop(&h, SIGTERM, 10000);
        harness_cleanup(&h);
        fixture_free(f);
}
