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

#include "queue/queue.h"

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
