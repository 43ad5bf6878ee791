/* tests/queue/test_queue.c — the spool: commit, recovery, IDs, updates, corrupt envelopes. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileio.h"
#include "queue/msgfile.h"
#include "queue/queue.h"
#include "spool_fixture.h"

static void setup(void)
{
        spool_fixture_open("queue-test");
}

static void teardown(void)
{
        spool_fixture_close();
}

TestSuite(queue, .init = setup, .fini = teardown);

static struct envelope *sample_envelope(void)
{
        struct envelope *env = envelope_new();
        cr_assert_not_null(env);
        free(env->sender);
        env->sender = strdup("app@example.com");
        env->uid = 1000;
        env->user = strdup("app");
        cr_assert_not_null(envelope_add_rcpt(env, "alice@example.org"));
        struct envelope_rcpt *r = envelope_add_rcpt(env, "bob@example.net");
        cr_assert_not_null(r);
        r->notify = NOTIFY_FAILURE | NOTIFY_DELAY;
        return env;
}

static const char body[] = "Subject: hi\r\n\r\nhello\r\n";

static char *commit_sample_in(enum queue_dir dir)
{
        struct envelope *env = sample_envelope();
        cr_assert_eq(queue_enqueue(q, dir, env, body, strlen(body)), 0);
        char *id = strdup(env->id);
        envelope_free(env);
        return id;
}

static char *commit_sample(void)
{
        return commit_sample_in(QUEUE_INCOMING);
}

/* A symlink planted in incoming/ under a message's name is never followed
 * into active/: refused, and quarantined as the link itself. */
Test(queue, a_link_in_incoming_is_refused_and_never_followed)
{
        char *id = commit_sample();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_HOLD), 0);
        char target[512], link[512];
        snprintf(target, sizeof(target), "%s/hold/%s", spool, id);
        snprintf(link, sizeof(link), "%s/incoming/%s", spool, id);
        cr_assert_eq(symlink(target, link), 0);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), -EBADMSG);
        cr_assert_eq(count_entries("active"), 0);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_CORRUPT), 0);
        struct stat st;
        snprintf(link, sizeof(link), "%s/corrupt/%s", spool, id);
        cr_assert_eq(lstat(link, &st), 0);
        cr_assert(S_ISLNK(st.st_mode), "the link itself is kept aside");
        cr_assert_eq(count_entries("hold"), 1, "its target is untouched");
        free(id);
}

Test(queue, a_committed_message_is_whole_in_incoming)
{
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(q, &d), 0);
        cr_assert_eq(queue_draft_write(d, "Subject: x\r\n", 12), 0);
        cr_assert_eq(queue_draft_write(d, "\r\nbody\r\n", 8), 0);
        cr_assert_eq(queue_draft_size(d), 20);
        struct envelope *env = sample_envelope();
        int64_t before = now_realtime_us();
        cr_assert_eq(queue_draft_commit(d, env), 0);
        cr_assert(queue_id_valid(env->id));
        cr_assert_eq(env->size, 20);
        cr_assert_geq(env->arrival_us, before);

        struct envelope *back = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_INCOMING, env->id, &back, &why), 0, "%s", why);
        cr_assert_str_eq(back->sender, "app@example.com");
        cr_assert_eq(back->n_rcpt, 2);
        cr_assert_str_eq(back->rcpt[1].address, "bob@example.net");
        cr_assert_eq(back->rcpt[1].notify, NOTIFY_FAILURE | NOTIFY_DELAY);
        cr_assert_eq(back->arrival_us, env->arrival_us);
        cr_assert_eq(back->uid, 1000);

        /* one file, body first: the body as written, the envelope, the trailer */
        char path[512], buf[4096] = "";
        snprintf(path, sizeof(path), "%s/incoming/%s", spool, env->id);
        struct stat st;
        cr_assert_eq(lstat(path, &st), 0);
        cr_assert(S_ISREG(st.st_mode), "incoming/ID is one regular file");
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        cr_assert_eq(n, (size_t)st.st_size);
        cr_assert_eq(memcmp(buf, "Subject: x\r\n\r\nbody\r\n", 20), 0);
        cr_assert_eq(buf[20], '{', "the envelope's JSON follows");
        char head[64];
        snprintf(head, sizeof(head), MSGFILE_MAGIC "%s %020d %010d ", env->id, 20,
                 (int)(n - MSGFILE_TRAILER_LEN - 20));
        cr_assert_eq(memcmp(buf + n - MSGFILE_TRAILER_LEN, head, strlen(head)), 0, "%s",
                     buf + n - MSGFILE_TRAILER_LEN);
        int fd;
        uint64_t size = 0;
        cr_assert_eq(queue_open_body(q, QUEUE_INCOMING, env->id, &fd, &size), 0);
        cr_assert_eq(size, 20, "the body is the part before the envelope");
        char got[64] = "";
        cr_assert_eq(pread(fd, got, size, 0), 20);
        cr_assert_str_eq(got, "Subject: x\r\n\r\nbody\r\n", "the body's bytes, as written");
        close(fd);
        cr_assert_eq(count_entries("tmp"), 0);
        envelope_free(env);
        envelope_free(back);
}

Test(queue, recovery_removes_stale_files_left_in_tmp)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/tmp/leftover", spool);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/tmp/leftover/body", spool);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs("half a message", f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/tmp/stray-file", spool);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        fclose(f);
        cr_assert_eq(queue_recover_tmp(q), 2);
        cr_assert_eq(count_entries("tmp"), 0);
}

Test(queue, abort_leaves_nothing_behind)
{
        struct queue_draft *d;
        cr_assert_eq(queue_draft_begin(q, &d), 0);
        cr_assert_eq(queue_draft_write(d, body, strlen(body)), 0);
        queue_draft_abort(d);
        cr_assert_eq(count_entries("tmp"), 0);
        cr_assert_eq(count_entries("incoming"), 0);
}

static int collect(const char *id, void *userdata)
{
        char ***ids = userdata;
        size_t n = 0;
        while ((*ids)[n])
                n++;
        *ids = realloc(*ids, (n + 2) * sizeof(char *));
        (*ids)[n] = strdup(id);
        (*ids)[n + 1] = NULL;
        return 0;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

Test(queue, ids_are_unique_and_sort_by_arrival_across_processes)
{
        enum { PROCS = 4, EACH = 40 };
        for (int p = 0; p < PROCS; p++) {
                if (fork() == 0) {
                        for (int i = 0; i < EACH; i++) {
                                struct envelope *env = sample_envelope();
                                if (queue_enqueue(q, QUEUE_INCOMING, env, body, strlen(body)) < 0)
                                        _exit(1);
                                envelope_free(env);
                        }
                        _exit(0);
                }
        }
        for (int p = 0; p < PROCS; p++) {
                int status;
                wait(&status);
                cr_assert_eq(WEXITSTATUS(status), 0);
        }
        char **ids = calloc(1, sizeof(char *));
        cr_assert_eq(queue_scan(q, QUEUE_INCOMING, collect, &ids), 0);
        size_t n = 0;
        while (ids[n])
                n++;
        cr_assert_eq(n, PROCS * EACH, "all %d messages are there under distinct IDs", PROCS * EACH);
        qsort(ids, n, sizeof(char *), cmp_str);
        int64_t last = 0;
        for (size_t i = 0; i < n; i++) {
                struct envelope *env = NULL;
                cr_assert_eq(queue_load(q, QUEUE_INCOMING, ids[i], &env, NULL), 0);
                cr_assert_geq(env->arrival_us, last, "ID order is arrival order");
                last = env->arrival_us;
                envelope_free(env);
        }
}

Test(queue, new_ids_are_valid_and_later_ones_sort_after)
{
        char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1];
        queue_new_id(a);
        usleep(2000);
        queue_new_id(b);
        cr_assert(queue_id_valid(a));
        cr_assert_lt(strcmp(a, b), 0);
        cr_assert_not(queue_id_valid("0123456789abcdef"), "lower case is not an ID");
        cr_assert_not(queue_id_valid("../../etc/passwd"));
        cr_assert_not(queue_id_valid("00000000FFFFF000"), "microseconds above 999999");
        cr_assert_not(queue_id_valid("00000000F4240000"), "microseconds 1000000");
        cr_assert(queue_id_valid("FFFFFFFFF423FFFF"), "microseconds 999999");
        cr_assert_not(queue_id_valid("0123456789ABCDE"), "15 digits");
        cr_assert_not(queue_id_valid("0123456789ABCDEF0"), "17 digits");
        cr_assert_not(queue_id_valid(""));
}

Test(queue, update_replaces_the_envelope_atomically)
{
        char *id = commit_sample_in(QUEUE_ACTIVE);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        env->rcpt[0].state = RCPT_DEFERRED;
        env->rcpt[0].attempts = 2;
        env->rcpt[0].reply_code = 451;
        env->rcpt[0].dsn_status = strdup("4.7.1");
        env->rcpt[0].last_reply = strdup("Greylisted, try again in 300 seconds");
        env->rcpt[0].reply_class = strdup("greylist");
        env->rcpt[0].next_attempt_us = env->arrival_us + 300000000;
        env->rcpt[1].state = RCPT_DELIVERED;
        cr_assert_eq(queue_update(q, QUEUE_ACTIVE, env), 0);

        /* a crash during the next update leaves its temporary file behind */
        char path[512];
        snprintf(path, sizeof(path), "%s/active/%s/.envelope.tmp", spool, id);
        FILE *f = fopen(path, "w");
        fputs("{\"version\": 1, \"id\": \"trunc", f);
        fclose(f);

        struct envelope *back = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &back, &why), 0, "%s", why);
        cr_assert_eq(back->rcpt[0].state, RCPT_DEFERRED);
        cr_assert_eq(back->rcpt[0].attempts, 2);
        cr_assert_str_eq(back->rcpt[0].dsn_status, "4.7.1");
        cr_assert_str_eq(back->rcpt[0].reply_class, "greylist");
        cr_assert_eq(back->rcpt[1].state, RCPT_DELIVERED);
        envelope_free(env);
        envelope_free(back);
        free(id);
}

Test(queue, update_refuses_an_envelope_it_could_not_read_back)
{
        char *id = commit_sample_in(QUEUE_ACTIVE);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        free(env->rcpt[0].address);
        env->rcpt[0].address = strdup("alice@example.org\r\nRCPT TO:<x@y>");
        cr_assert_eq(queue_update(q, QUEUE_ACTIVE, env), -EINVAL);
        envelope_free(env);
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        cr_assert_str_eq(env->rcpt[0].address, "alice@example.org");
        envelope_free(env);
        free(id);
}

Test(queue, a_multi_line_reply_with_8bit_text_is_stored_and_read_back)
{
        /* found by fuzz_reply/fuzz_submit: smtpc joins reply lines with '\n' and
         * keeps a server's Latin-1 bytes; the envelope could not be written
         * (json_string refuses non-UTF-8) or not read back (controls), so the
         * recipient's state was never persisted */
        char *id = commit_sample_in(QUEUE_ACTIVE);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        env->rcpt[0].state = RCPT_DEFERRED;
        env->rcpt[0].last_reply = strdup("451-4.7.1 Empf\xe4nger\tbusy\n451 4.7.1 try later");
        free(env->user);
        env->user = strdup("j\xf6rg");
        cr_assert_eq(queue_update(q, QUEUE_ACTIVE, env), 0);
        struct envelope *back = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &back, &why), 0, "%s", why);
        cr_assert_str_eq(back->rcpt[0].last_reply,
                         "451-4.7.1 Empf\xef\xbf\xbdnger busy 451 4.7.1 try later");
        cr_assert_str_eq(back->user, "j\xef\xbf\xbdrg");
        envelope_free(env);
        envelope_free(back);
        free(id);
}

Test(queue, a_reply_with_codes_outside_smtp_keeps_the_envelope_readable)
{
        /* found by fuzz_reply: "671 6.7.1 ..." gave reply_code 671 and dsn_status
         * 6.7.1, which the envelope parser refuses; the text keeps them */
        char *id = commit_sample_in(QUEUE_ACTIVE);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        env->rcpt[0].state = RCPT_DEFERRED;
        env->rcpt[0].reply_code = 671;
        env->rcpt[0].dsn_status = strdup("6.7.1");
        env->rcpt[0].last_reply = strdup("671 6.7.1 what");
        cr_assert_eq(queue_update(q, QUEUE_ACTIVE, env), 0);
        struct envelope *back = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &back, &why), 0, "%s", why);
        cr_assert_eq(back->rcpt[0].reply_code, 0);
        cr_assert_null(back->rcpt[0].dsn_status);
        cr_assert_str_eq(back->rcpt[0].last_reply, "671 6.7.1 what");
        envelope_free(env);
        envelope_free(back);
        free(id);
}

Test(queue, an_overlong_full_name_is_cut_on_a_character_boundary)
{
        struct envelope *env = sample_envelope();
        strcpy(env->id, "0000000100000ABC");
        char name[400];
        for (size_t i = 0; i + 2 < sizeof(name); i += 2)
                memcpy(name + i, "\xc3\xa9", 2); /* é */
        name[sizeof(name) - 2] = '\0';
        env->full_name = strdup(name);
        json_t *j = envelope_to_json(env);
        cr_assert_not_null(j);
        char *text = json_dumps(j, 0);
        struct envelope *back = NULL;
        const char *why = NULL;
        cr_assert_eq(envelope_from_json(text, strlen(text), &back, &why), 0, "%s", why);
        cr_assert_eq(strlen(back->full_name), 256);
        cr_assert_eq(strncmp(back->full_name, name, 256), 0);
        free(text);
        json_decref(j);
        envelope_free(env);
        envelope_free(back);
}

static void write_envelope(const char *id, const char *text)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/active/%s/envelope", spool, id);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
}

Test(queue, a_truncated_envelope_is_reported_as_corrupt_with_a_reason)
{
        char *id = commit_sample_in(QUEUE_ACTIVE);
        write_envelope(id, "{\"version\":1,\"id\":\"");
        struct envelope *env = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, &why), -EBADMSG);
        cr_assert_null(env);
        cr_assert_not_null(strstr(why, "not valid JSON"), "%s", why);
        cr_assert_eq(queue_move(q, id, QUEUE_ACTIVE, QUEUE_CORRUPT), 0);
        cr_assert_eq(count_entries("corrupt"), 1);
        cr_assert_eq(count_entries("active"), 0);
        free(id);
}

Test(queue, a_missing_envelope_or_body_is_corrupt)
{
        char *id = commit_sample_in(QUEUE_ACTIVE);
        char path[512];
        snprintf(path, sizeof(path), "%s/active/%s/body", spool, id);
        cr_assert_eq(truncate(path, 3), 0);
        struct envelope *env = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, &why), -EBADMSG);
        cr_assert_str_eq(why, "the body file's size differs from the envelope's");
        snprintf(path, sizeof(path), "%s/active/%s/envelope", spool, id);
        cr_assert_eq(unlink(path), 0);
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, &why), -EBADMSG);
        cr_assert_str_eq(why, "the envelope file is missing");
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, "0000000000000000", &env, &why), -ENOENT);
        free(id);
}

/* Hand-edited envelopes: each must fail with -EBADMSG and the given reason. */
static const struct {
        const char *json;
        const char *why;
} bad_envelopes[] = {
    {"[]", "the envelope is not a JSON object"},
    {"{\"version\":2}", "'version' is missing or not 1"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[{\"address\":\"a@b\",\"state\":\"pending\"}],\"colour\":\"red\"}",
     "the envelope has an unknown key"},
    {"{\"version\":1,\"id\":\"../etc\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[{\"address\":\"a@b\",\"state\":\"pending\"}]}",
     "'id' is not a queue ID"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"a\\r\\nb@c\",\"arrival_us\":1,"
     "\"size\":0,\"recipients\":[{\"address\":\"a@b\",\"state\":\"pending\"}]}",
     "'sender' is not \"\" or a valid address"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":\"soon\","
     "\"size\":0,\"recipients\":[{\"address\":\"a@b\",\"state\":\"pending\"}]}",
     "'arrival_us' is not a time in microseconds"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":-5,"
     "\"recipients\":[{\"address\":\"a@b\",\"state\":\"pending\"}]}",
     "'size' is not a byte count"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[]}",
     "'recipients' is not a list of 1 to 100000 recipients"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[{\"address\":\"a\\u0000@b\",\"state\":\"pending\"}]}",
     "the envelope is not valid JSON (truncated or edited?)"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[{\"address\":\"a b@c\",\"state\":\"pending\"}]}",
     "a recipient 'address' is missing or not a valid address"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[{\"address\":\"a@b\",\"state\":\"sent\"}]}",
     "a recipient 'state' is not pending/deferred/delivered/failed"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[{\"address\":\"a@b\",\"state\":\"pending\",\"notify\":[\"never\","
     "\"delay\"]}]}",
     "a recipient 'notify' is not a list of never or success/failure/delay"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[{\"address\":\"a@b\",\"state\":\"pending\",\"dsn_status\":\"4.7\"}]}",
     "a recipient 'dsn_status' is not an enhanced status code like 4.7.1"},
    {"{\"version\":1,\"id\":\"0000000100000ABC\",\"sender\":\"\",\"arrival_us\":1,\"size\":0,"
     "\"recipients\":[{\"address\":\"a@b\",\"state\":\"pending\",\"reply_code\":1000}]}",
     "a recipient 'reply_code' is not 0..599"},
    {"{\"version\":1,\"version\":1}", "the envelope is not valid JSON (truncated or edited?)"},
};

Test(queue, hand_edited_envelopes_are_refused_with_a_reason)
{
        for (size_t i = 0; i < sizeof(bad_envelopes) / sizeof(bad_envelopes[0]); i++) {
                struct envelope *env = NULL;
                const char *why = NULL;
                int r = envelope_from_json(bad_envelopes[i].json, strlen(bad_envelopes[i].json),
                                           &env, &why);
                cr_assert_eq(r, -EBADMSG, "accepted: %s", bad_envelopes[i].json);
                cr_assert_null(env);
                cr_assert_str_eq(why, bad_envelopes[i].why, "for %s", bad_envelopes[i].json);
        }
}

Test(queue, every_prefix_of_a_valid_envelope_is_refused_without_crashing)
{
        struct envelope *env = sample_envelope();
        strcpy(env->id, "0000000100000ABC");
        env->arrival_us = 1000000;
        json_t *j = envelope_to_json(env);
        char *text = json_dumps(j, JSON_COMPACT);
        size_t len = strlen(text);
        for (size_t n = 0; n < len; n++) {
                struct envelope *out = NULL;
                const char *why = NULL;
                cr_assert_eq(envelope_from_json(text, n, &out, &why), -EBADMSG);
                cr_assert_not_null(why);
        }
        struct envelope *out = NULL;
        cr_assert_eq(envelope_from_json(text, len, &out, NULL), 0);
        envelope_free(out);
        free(text);
        json_decref(j);
        envelope_free(env);
}

Test(queue, every_field_survives_a_round_trip)
{
        struct envelope *env = sample_envelope();
        strcpy(env->id, "0000000100000ABC");
        env->arrival_us = 1234567;
        env->size = 99;
        env->full_name = strdup("App Server");
        env->ret = DSN_RET_HDRS;
        env->envid = strdup("QQ314159");
        env->source_address = strdup("192.0.2.10");
        env->delay_dsn_sent = true;
        env->is_dsn = true;
        struct envelope_rcpt *r = &env->rcpt[0];
        r->orcpt = strdup("rfc822;alice@example.org");
        r->notify = NOTIFY_NEVER;
        r->state = RCPT_FAILED;
        r->attempts = 3;
        r->first_attempt_us = 10;
        r->last_attempt_us = 20;
        r->next_attempt_us = 30;
        r->first_deferral_us = 15;
        r->reply_code = 550;
        r->dsn_status = strdup("5.1.1");
        r->last_reply = strdup("no such user");
        r->reply_class = strdup("permanent");
        r->rule = strdup("5xx default");
        r->relay = strdup("mx.example.org[192.0.2.1]:25");
        r->failure_dsn_sent = true;
        json_t *j = envelope_to_json(env);
        char *text = json_dumps(j, 0);
        struct envelope *b = NULL;
        const char *why = NULL;
        cr_assert_eq(envelope_from_json(text, strlen(text), &b, &why), 0, "%s", why);
        cr_assert_str_eq(b->full_name, "App Server");
        cr_assert_eq(b->ret, DSN_RET_HDRS);
        cr_assert_str_eq(b->envid, "QQ314159");
        cr_assert_str_eq(b->source_address, "192.0.2.10");
        cr_assert(b->delay_dsn_sent && b->is_dsn);
        cr_assert_eq(b->size, 99);
        cr_assert_eq(b->uid, 1000);
        cr_assert_str_eq(b->user, "app");
        struct envelope_rcpt *br = &b->rcpt[0];
        cr_assert_str_eq(br->orcpt, "rfc822;alice@example.org");
        cr_assert_eq(br->notify, NOTIFY_NEVER);
        cr_assert_eq(br->state, RCPT_FAILED);
        cr_assert_eq(br->attempts, 3);
        cr_assert_eq(br->first_attempt_us, 10);
        cr_assert_eq(br->last_attempt_us, 20);
        cr_assert_eq(br->next_attempt_us, 30);
        cr_assert_eq(br->first_deferral_us, 15);
        cr_assert_eq(br->reply_code, 550);
        cr_assert_str_eq(br->dsn_status, "5.1.1");
        cr_assert_str_eq(br->last_reply, "no such user");
        cr_assert_str_eq(br->reply_class, "permanent");
        cr_assert_str_eq(br->rule, "5xx default");
        cr_assert_str_eq(br->relay, "mx.example.org[192.0.2.1]:25");
        cr_assert(br->failure_dsn_sent);
        cr_assert_eq(b->rcpt[1].notify, NOTIFY_FAILURE | NOTIFY_DELAY);
        free(text);
        json_decref(j);
        envelope_free(env);
        envelope_free(b);
}

Test(queue, messages_move_between_folders_and_are_removed)
{
        char *id = commit_sample();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        cr_assert_eq(queue_move(q, id, QUEUE_ACTIVE, QUEUE_HOLD), 0);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_HOLD, id, &env, NULL), 0);
        envelope_free(env);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), -ENOENT);
        cr_assert_eq(queue_move(q, id, QUEUE_HOLD, QUEUE_ACTIVE), 0);
        cr_assert_eq(queue_remove(q, QUEUE_ACTIVE, id), 0);
        cr_assert_eq(count_entries("active"), 0);
        cr_assert_eq(count_entries("hold"), 0);
        cr_assert_eq(count_entries("tmp"), 0);
        cr_assert_eq(queue_remove(q, QUEUE_ACTIVE, id), -ENOENT);
        free(id);
}

Test(queue, a_move_never_overwrites_another_message)
{
        char *id = commit_sample();
        char path[512];
        snprintf(path, sizeof(path), "%s/active/%s", spool, id);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/active/%s/envelope", spool, id);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fclose(f);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), -EEXIST);
        cr_assert_eq(count_entries("incoming"), 1);
        free(id);
}

Test(queue, enqueue_can_place_a_message_straight_into_active)
{
        struct envelope *env = sample_envelope();
        env->is_dsn = true;
        cr_assert_eq(queue_enqueue(q, QUEUE_ACTIVE, env, body, strlen(body)), 0);
        cr_assert_eq(count_entries("active"), 1);
        cr_assert_eq(count_entries("incoming"), 0);
        envelope_free(env);
}

Test(queue, state_files_are_written_durably_and_read_back)
{
        cr_assert_eq(queue_state_write(q, "learned.json", "{}", 2), 0);
        char *text = NULL;
        size_t len = 0;
        cr_assert_eq(queue_state_read(q, "learned.json", 1024, &text, &len), 0);
        cr_assert_str_eq(text, "{}");
        free(text);
        cr_assert_eq(queue_state_write(q, "../escape", "x", 1), -EINVAL);
        cr_assert_eq(queue_state_read(q, "missing.json", 1024, &text, &len), -ENOENT);
}

Test(queue, opening_a_missing_spool_fails_without_creating_it)
{
        struct queue *other = NULL;
        char path[512];
        snprintf(path, sizeof(path), "%s/nonexistent", spool);
        cr_assert_eq(queue_open(path, 0, &other), -ENOENT);
        cr_assert_eq(access(path, F_OK), -1);
}

/* A drop file with a small message, then one too large for the file size
 * limit (as a full disk would refuse it): the first take queues the small one
 * and says where it stopped; the retry from there queues only the large one. */
Test(queue, a_maildrop_take_that_fails_half_way_resumes_without_duplicates)
{
        struct queue *drop = NULL;
        cr_assert_eq(queue_open_maildrop(spool, &drop), 0);
        static char big[200000];
        memset(big, 'x', sizeof(big));
        const struct {
                const void *buf;
                size_t len;
        } msgs[] = {{body, strlen(body)}, {big, sizeof(big)}};
        for (size_t i = 0; i < 2; i++) {
                struct queue_draft *d = NULL;
                struct envelope *env = sample_envelope();
                cr_assert_eq(queue_draft_begin(drop, &d), 0);
                cr_assert_eq(queue_draft_write(d, msgs[i].buf, msgs[i].len), 0);
                cr_assert_eq(queue_draft_commit(d, env), 0);
                envelope_free(env);
        }
        queue_close(drop); /* unlocks it: the writer is gone */
        char name[MAILDROP_NAME_LEN + 8] = "", path[512];
        snprintf(path, sizeof(path), "%s/maildrop", spool);
        DIR *dir = opendir(path);
        cr_assert_not_null(dir);
        struct dirent *de;
        while ((de = readdir(dir)))
                if (strlen(de->d_name) == MAILDROP_NAME_LEN)
                        snprintf(name, sizeof(name), "%s", de->d_name);
        closedir(dir);
        cr_assert_str_neq(name, "");

        signal(SIGXFSZ, SIG_IGN);
        struct rlimit small = {65536, RLIM_INFINITY}, none = {RLIM_INFINITY, RLIM_INFINITY};
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
        struct maildrop_resume at = {0};
        struct maildrop_result res;
        int r = queue_maildrop_take_resume(q, name, &at, UINT64_MAX, NULL, NULL, &res);
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &none), 0);
        cr_assert_eq(r, -EFBIG, "take: %s", strerror(-r));
        cr_assert_eq(res.queued, 1);
        cr_assert_gt(at.offset, 0, "no resume point after a half-done take");
        cr_assert_eq(count_entries("incoming"), 1);
        cr_assert_eq(count_entries("tmp"), 0, "the failed record left a draft");

        r = queue_maildrop_take_resume(q, name, &at, UINT64_MAX, NULL, NULL, &res);
        cr_assert_eq(r, 0, "retake: %s", strerror(-r));
        cr_assert_eq(res.queued, 1, "the retry queued the first message again");
        cr_assert_eq(at.offset, 0);
        cr_assert_eq(count_entries("incoming"), 2);
        cr_assert_eq(count_entries("maildrop"), 0, "the drop file stayed");
}

/* ---- pickup of a message file (issue 19): zero-copy, every interrupted state recovered ---- */

static void spool_path(char *out, size_t n, const char *dir, const char *id, const char *file)
{
        snprintf(out, n, "%s/%s/%s%s%s", spool, dir, id, file ? "/" : "", file ? file : "");
}

static off_t file_size(const char *dir, const char *id, const char *file)
{
        char path[512];
        spool_path(path, sizeof(path), dir, id, file);
        struct stat st;
        return lstat(path, &st) == 0 ? st.st_size : -1;
}

/* The body as queue_open_body gives it: exactly the submitted bytes. */
static void assert_body_is_the_submission(enum queue_dir dir, const char *id)
{
        int fd = -1;
        uint64_t size = 0;
        cr_assert_eq(queue_open_body(q, dir, id, &fd, &size), 0);
        cr_assert_eq(size, strlen(body), "size %llu", (unsigned long long)size);
        char buf[256] = "";
        cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
        cr_assert_str_eq(buf, body);
        close(fd);
}

static void assert_loads(enum queue_dir dir, const char *id)
{
        struct envelope *env = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, dir, id, &env, &why), 0, "%s", why);
        cr_assert_str_eq(env->id, id);
        cr_assert_str_eq(env->sender, "app@example.com");
        cr_assert_eq(env->size, strlen(body));
        envelope_free(env);
}

Test(queue, a_pickup_moves_the_message_file_without_copying_it)
{
        char *id = commit_sample();
        char path[512];
        struct stat before, after;
        spool_path(path, sizeof(path), "incoming", id, NULL);
        cr_assert_eq(lstat(path, &before), 0);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        spool_path(path, sizeof(path), "active", id, NULL);
        cr_assert_eq(lstat(path, &after), 0);
        cr_assert(S_ISREG(after.st_mode), "no folder is made at pickup");
        cr_assert_eq(after.st_ino, before.st_ino, "the same file, renamed");
        cr_assert_eq(count_entries("incoming"), 0);
        assert_loads(QUEUE_ACTIVE, id);
        assert_body_is_the_submission(QUEUE_ACTIVE, id);
        free(id);
}

Test(queue, the_trailer_is_cut_only_once_the_envelope_file_is_durable)
{
        char *id = commit_sample();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        cr_assert_gt(file_size("active", id, NULL), (off_t)strlen(body), "trailer still there");
        cr_assert_eq(file_size("active", id, "envelope"), -1, "no envelope file yet");
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        env->rcpt[0].state = RCPT_DEFERRED;
        cr_assert_eq(queue_update(q, QUEUE_ACTIVE, env), 0);
        envelope_free(env);
        cr_assert_eq(file_size("active", id, "body"), (off_t)strlen(body), "now a folder: body");
        cr_assert_gt(file_size("active", id, "envelope"), 0);
        cr_assert_eq(count_entries("tmp"), 0);
        assert_loads(QUEUE_ACTIVE, id);
        assert_body_is_the_submission(QUEUE_ACTIVE, id);
        free(id);
}

/* tmp/up-D-ID, as a message file's first update leaves it when cut short:
 * the envelope written, and the body moved in or not. */
static void first_update_cut_short(const char *id, bool body_moved)
{
        char dir[512], path[600];
        snprintf(dir, sizeof(dir), "%s/tmp/up-%d-%s", spool, (int)QUEUE_ACTIVE, id);
        cr_assert_eq(mkdir(dir, 0770), 0);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        env->rcpt[0].state = RCPT_DEFERRED;
        json_t *j = envelope_to_json(env);
        char *text = json_dumps(j, JSON_COMPACT);
        snprintf(path, sizeof(path), "%s/envelope", dir);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
        free(text);
        json_decref(j);
        envelope_free(env);
        if (body_moved) {
                char from[512];
                spool_path(from, sizeof(from), "active", id, NULL);
                snprintf(path, sizeof(path), "%s/body", dir);
                cr_assert_eq(rename(from, path), 0);
        }
}

Test(queue, a_first_update_cut_short_before_the_body_moved_leaves_the_message_file)
{
        char *id = commit_sample();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        first_update_cut_short(id, false);
        cr_assert_eq(queue_recover_tmp(q), 1);
        cr_assert_eq(count_entries("tmp"), 0);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        cr_assert_eq(env->rcpt[0].state, RCPT_PENDING, "the update was lost, not the message");
        envelope_free(env);
        assert_body_is_the_submission(QUEUE_ACTIVE, id);
        free(id);
}

Test(queue, a_first_update_cut_short_after_the_body_moved_is_finished_by_recovery)
{
        char *id = commit_sample();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        first_update_cut_short(id, true);
        cr_assert_eq(count_entries("active"), 0, "the message is in tmp/ only");
        cr_assert_eq(queue_recover_tmp(q), 1);
        cr_assert_eq(count_entries("tmp"), 0);
        cr_assert_eq(count_entries("active"), 1);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        cr_assert_eq(env->rcpt[0].state, RCPT_DEFERRED, "the update was kept");
        envelope_free(env);
        cr_assert_eq(file_size("active", id, "body"), (off_t)strlen(body), "trailer cut");
        assert_body_is_the_submission(QUEUE_ACTIVE, id);
        free(id);
}

Test(queue, a_body_still_carrying_its_trailer_without_an_envelope_file_is_whole)
{
        /* crash state: renamed into active/ID/body, nothing written since
         * (built by hand: a folder and the message file as its body) */
        char *id = commit_sample();
        char from[512], to[512];
        spool_path(to, sizeof(to), "active", id, NULL);
        cr_assert_eq(mkdir(to, 0770), 0);
        spool_path(from, sizeof(from), "incoming", id, NULL);
        spool_path(to, sizeof(to), "active", id, "body");
        cr_assert_eq(rename(from, to), 0);
        cr_assert_eq(queue_recover_tmp(q), 0);
        assert_loads(QUEUE_ACTIVE, id);
        assert_body_is_the_submission(QUEUE_ACTIVE, id);
        free(id);
}

static char *read_file(const char *path, size_t *len)
{
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "%s", path);
        static char buf[8192];
        *len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        char *out = malloc(*len);
        memcpy(out, buf, *len);
        return out;
}

static void write_file(const char *path, const char *buf, size_t len)
{
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f, "%s", path);
        cr_assert_eq(fwrite(buf, 1, len, f), len);
        cr_assert_eq(fclose(f), 0);
}

Test(queue, a_trailer_left_after_a_durable_envelope_is_cut_at_the_next_load)
{
        /* crash state: the envelope file written (durably), the ftruncate lost */
        char *id = commit_sample();
        char path[512];
        size_t whole_len;
        spool_path(path, sizeof(path), "incoming", id, NULL);
        char *whole = read_file(path, &whole_len);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        struct envelope *env = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        env->rcpt[0].state = RCPT_DEFERRED;
        cr_assert_eq(queue_update(q, QUEUE_ACTIVE, env), 0);
        envelope_free(env);
        spool_path(path, sizeof(path), "active", id, "body");
        write_file(path, whole, whole_len);
        assert_body_is_the_submission(QUEUE_ACTIVE, id);
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, NULL), 0);
        cr_assert_eq(env->rcpt[0].state, RCPT_DEFERRED, "the envelope file, not the trailer's");
        envelope_free(env);
        cr_assert_eq(file_size("active", id, "body"), (off_t)strlen(body), "cut");
        assert_body_is_the_submission(QUEUE_ACTIVE, id);

        /* a tail that is not this message's trailer is never cut: corrupt */
        memset(whole + strlen(body), 'x', whole_len - strlen(body));
        write_file(path, whole, whole_len);
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_ACTIVE, id, &env, &why), -EBADMSG);
        cr_assert_str_eq(why, "the body file's size differs from the envelope's");
        cr_assert_eq(file_size("active", id, "body"), (off_t)whole_len);
        free(whole);
        free(id);
}

Test(queue, a_message_file_that_is_not_whole_is_refused_with_a_reason)
{
        char *id = commit_sample();
        char path[512];
        size_t len;
        spool_path(path, sizeof(path), "incoming", id, NULL);
        char *whole = read_file(path, &len);
        static const struct {
                size_t at; /* from the end; 0: cut the file short by 10 bytes */
                char byte;
                const char *why;
        } cases[] = {
            {0, 0, "the message file has no trailer"},
            {30, 'x', "the message file's trailer is not whole"},
            {MSGFILE_TRAILER_LEN + 2, ' ', "the message file's checksum does not match"},
            {MSGFILE_TRAILER_LEN - 27 - 10, '9',
             "the message file's size differs from its trailer's"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *bad = malloc(len);
                memcpy(bad, whole, len);
                size_t n = len;
                if (cases[i].at == 0)
                        n -= 10;
                else
                        bad[len - cases[i].at] = cases[i].byte;
                write_file(path, bad, n);
                free(bad);
                struct envelope *env = NULL;
                const char *why = NULL;
                cr_assert_eq(queue_load(q, QUEUE_INCOMING, id, &env, &why), -EBADMSG, "case %zu",
                             i);
                cr_assert_str_eq(why, cases[i].why, "case %zu", i);
        }
        free(whole);
        free(id);
}

Test(queue, a_fifo_in_incoming_is_refused_without_blocking)
{
        const char *id = "5FBBB25500000001";
        char path[512];
        spool_path(path, sizeof(path), "incoming", id, NULL);
        cr_assert_eq(mkfifo(path, 0660), 0);
        struct envelope *env = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_INCOMING, id, &env, &why), -EBADMSG);
        cr_assert_str_eq(why, "neither a message file nor a message folder");
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), -EBADMSG);
        cr_assert_eq(count_entries("active"), 0);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_CORRUPT), 0, "kept aside as it is");
}

Test(queue, a_folder_of_the_previous_layout_in_incoming_is_picked_up)
{
        char *id = commit_sample_in(QUEUE_HOLD); /* the folder form: body and envelope */
        char from[512], to[512];
        spool_path(from, sizeof(from), "hold", id, NULL);
        spool_path(to, sizeof(to), "incoming", id, NULL);
        cr_assert_eq(rename(from, to), 0);
        assert_loads(QUEUE_INCOMING, id);
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        cr_assert_eq(count_entries("incoming"), 0);
        assert_loads(QUEUE_ACTIVE, id);
        assert_body_is_the_submission(QUEUE_ACTIVE, id);
        free(id);
}

Test(queue, a_message_file_is_held_and_removed_as_a_folder_is)
{
        char *id = commit_sample();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_HOLD), 0);
        cr_assert_eq(count_entries("incoming"), 0);
        assert_loads(QUEUE_HOLD, id);
        cr_assert_eq(queue_move(q, id, QUEUE_HOLD, QUEUE_ACTIVE), 0);
        assert_body_is_the_submission(QUEUE_ACTIVE, id);
        free(id);
        id = commit_sample();
        cr_assert_eq(queue_remove(q, QUEUE_INCOMING, id), 0);
        cr_assert_eq(count_entries("incoming"), 0);
        cr_assert_eq(count_entries("tmp"), 0);
        free(id);
}

Test(queue, a_message_file_with_an_envelope_larger_than_one_tail_read_loads_whole)
{
        /* the envelope usually comes with the trailer in one read (4 KB); a
         * longer one is read on its own */
        struct envelope *env = sample_envelope();
        for (int i = 0; i < 200; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "recipient-number-%03d@example.org", i);
                cr_assert_not_null(envelope_add_rcpt(env, rcpt));
        }
        cr_assert_eq(queue_enqueue(q, QUEUE_INCOMING, env, body, strlen(body)), 0);
        cr_assert_gt(file_size("incoming", env->id, NULL), (off_t)(strlen(body) + 8192));
        struct envelope *back = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_INCOMING, env->id, &back, &why), 0, "%s", why);
        cr_assert_eq(back->n_rcpt, 202);
        cr_assert_str_eq(back->rcpt[201].address, "recipient-number-199@example.org");
        envelope_free(back);
        assert_body_is_the_submission(QUEUE_INCOMING, env->id);
        envelope_free(env);
}

/* A message folder whose envelope is a symbolic link (to a valid envelope
 * elsewhere: another message's, a file the spool's owner may read) is not
 * loaded through the link: every file operation on the spool refuses links. */
Test(queue, an_envelope_that_is_a_link_is_not_followed)
{
        char *id = commit_sample_in(QUEUE_HOLD); /* the folder form: body and envelope */
        char env_path[512], elsewhere[512];
        spool_path(env_path, sizeof(env_path), "hold", id, "envelope");
        snprintf(elsewhere, sizeof(elsewhere), "%s/state/planted-envelope", spool);
        cr_assert_eq(rename(env_path, elsewhere), 0);
        cr_assert_eq(symlink(elsewhere, env_path), 0);
        struct envelope *env = NULL;
        const char *why = NULL;
        cr_assert_eq(queue_load(q, QUEUE_HOLD, id, &env, &why), -ELOOP,
                     "the envelope was read through a symbolic link");
        cr_assert_null(env);
        free(id);
}

/* queue_load_body (tarryd's pickup and attempts): the envelope and the body
 * through one open of a message file; a folder's envelope alone (most of
 * its loads, a deferred message read at start, need no body), its body
 * then opened by queue_open_body. */
static void assert_loads_with_body(enum queue_dir dir, const char *id, bool folder)
{
        struct envelope *env = NULL;
        const char *why = NULL;
        int fd = -1;
        uint64_t size = 0;
        cr_assert_eq(queue_load_body(q, dir, id, &env, &fd, &size, &why), 0, "%s", why);
        if (folder) {
                cr_assert_eq(fd, -1, "a folder's body was opened with its envelope");
                cr_assert_eq(queue_open_body(q, dir, id, &fd, &size), 0);
        }
        cr_assert_str_eq(env->id, id);
        cr_assert_str_eq(env->sender, "app@example.com");
        cr_assert_eq(size, strlen(body), "the body ends before the trailer");
        char buf[256] = "";
        cr_assert_eq(pread(fd, buf, sizeof(buf) - 1, 0) >= (ssize_t)size, true);
        buf[size] = '\0';
        cr_assert_str_eq(buf, body);
        close(fd);
        envelope_free(env);
}

Test(queue, load_with_body_gives_the_envelope_and_the_exact_body_of_either_form)
{
        char *id = commit_sample();
        cr_assert_eq(queue_move(q, id, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        assert_loads_with_body(QUEUE_ACTIVE, id, false); /* a message file */
        free(id);
        id = commit_sample_in(QUEUE_ACTIVE); /* the folder form: body and envelope */
        assert_loads_with_body(QUEUE_ACTIVE, id, true);
        free(id);
}

/* What queue_load refuses, queue_load_body refuses with the same reason,
 * and hands back no descriptor. */
Test(queue, load_with_body_refuses_what_load_refuses_for_the_same_reason)
{
        const char *fifo = "5FBBB25500000001", *link = "5FBBB25500000002";
        char path[512];
        spool_path(path, sizeof(path), "active", fifo, NULL);
        cr_assert_eq(mkfifo(path, 0660), 0);
        spool_path(path, sizeof(path), "active", link, NULL);
        cr_assert_eq(symlink("/etc/passwd", path), 0);
        char *torn = commit_sample();
        cr_assert_eq(queue_move(q, torn, QUEUE_INCOMING, QUEUE_ACTIVE), 0);
        spool_path(path, sizeof(path), "active", torn, NULL);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(truncate(path, st.st_size - 1), 0);
        const char *missing = "5FBBB25500000003";
        const char *ids[] = {fifo, link, torn, missing};
        for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
                struct envelope *env = NULL, *env2 = NULL;
                const char *why = NULL, *why2 = NULL;
                int fd = -1;
                uint64_t size = 0;
                int r = queue_load(q, QUEUE_ACTIVE, ids[i], &env, &why);
                int r2 = queue_load_body(q, QUEUE_ACTIVE, ids[i], &env2, &fd, &size, &why2);
                cr_assert_lt(r, 0, "case %zu", i);
                cr_assert_eq(r2, r, "case %zu: %d against %d", i, r2, r);
                cr_assert_eq(fd, -1, "case %zu", i);
                cr_assert_null(env2, "case %zu", i);
                if (why)
                        cr_assert_str_eq(why2, why, "case %zu", i);
        }
        free(torn);
}
