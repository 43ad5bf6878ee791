/* tests/daemon/test_diskfull.c — the spool on a full filesystem (issue 8).
 *
 * The spool is a small tmpfs the test mounts in a mount namespace of its own
 * (as root, or as root of a user namespace where that is all there is), so a
 * test that dies cannot leave a mount behind. A filler file takes every free
 * byte; then deliveries, submissions, DSNs and learned.json all meet ENOSPC.
 * What a user would check: tarryd keeps running and says what failed, sendmail
 * refuses with 75 and leaves nothing, no message is lost or sent twice, and
 * once space is back every state write is retried and everything delivered. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

#define SPOOL_SIZE  "8m"
#define MESSAGES    20
#define RCPT_DELAY  "4000" /* ms the server sits on RCPT: time to fill the disk meanwhile */
#define ENOSPC_TEXT "No space left on device"
/* tarryd's spool retry interval (SPOOL_RETRY_US) is 5 s; allow for a loaded machine */
#define RETRY_WAIT_MS 15000

struct setup {
        struct fixture *f;
        struct harness h;
};

static struct setup S;

/* Every temporary class waits `retry` before the next attempt. */
static void start(const char *retry, const char *more)
{
        cr_assert_eq(fixture_new("127.0.0.1", &S.f), 0);
        cr_assert_eq(fixture_start(S.f, 0), 0);
        char extra[4096];
        int n = snprintf(extra, sizeof(extra),
                         "delay_dsn_after_retries = 0\n%s"
                         "[smtp]\nconnect_timeout = 5s\ncommand_timeout = 20s\n"
                         "[transport]\nexample.test = [127.0.0.1]:%u\n"
                         "sender.test = [127.0.0.1]:%u\n",
                         more ? more : "", fixture_port(S.f), fixture_port(S.f));
        const char *classes[] = {"greylist",     "reputation", "rate_limit", "overload",
                                 "mailbox_full", "routing",    "policy",     "unknown_temp"};
        for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
                n += snprintf(extra + n, sizeof(extra) - (size_t)n,
                              "[retry.%s]\ninitial = %s\nfactor = 1\nmax = %s\nuse_hint = no\n",
                              classes[i], retry, retry);
        harness_init(&S.h, extra);
        const char *how = NULL;
        int r = harness_spool_on_tmpfs(&S.h, SPOOL_SIZE, &how);
        if (r < 0) {
                harness_cleanup(&S.h);
                fixture_free(S.f);
                S.f = NULL;
                cr_skip_test("cannot put the spool on a small filesystem: %s: %s", how,
                             strerror(-r));
        }
        cr_log_info("spool on %s", how);
        harness_start(&S.h);
}

static void teardown(void)
{
        if (S.h.tarryd)
                harness_stop(&S.h, SIGTERM, 3000);
        harness_cleanup(&S.h); /* kills a tarryd that would not stop, unmounts */
        fixture_free(S.f);
        S.f = NULL;
}

/* tarryd leaves cleanly (under ASan: no leak, no error report either) */
static void stop_cleanly(void)
{
        int st = harness_stop(&S.h, SIGTERM, 10000);
        cr_assert_eq(st, 0, "tarryd exited with %d; see %s", st, S.h.log);
}

static size_t queued(const char *dir)
{
        return harness_count_queued(&S.h, dir);
}

/* Wait until pred() or ms pass; returns pred(). */
static bool wait_for(bool (*pred)(size_t), size_t arg, int ms)
{
        for (int waited = 0; waited < ms && !pred(arg); waited += 20)
                harness_sleep_ms(20);
        return pred(arg);
}

static bool log_lines_at_least(size_t n, const char *needle)
{
        return harness_log_count(&S.h, needle) >= n;
}

static const char *needle_for_wait;
static bool log_has(size_t n)
{
        return log_lines_at_least(n, needle_for_wait);
}

static bool wait_log(const char *needle, size_t n, int ms)
{
        needle_for_wait = needle;
        return wait_for(log_has, n, ms);
}

static bool txns_at_least(size_t n)
{
        return fixture_txn_count(S.f) >= n;
}

static bool spool_empty(size_t unused)
{
        (void)unused;
        return queued("active") + queued("incoming") == 0;
}

static void send_numbered(int i, const char *local)
{
        char rcpt[64], subject[32];
        snprintf(rcpt, sizeof(rcpt), "%s%d@example.test", local, i);
        snprintf(subject, sizeof(subject), "diskfull %d", i);
        harness_send(&S.h, "alice@sender.test", rcpt, subject);
}

/* The envelope of active/ID as tarryd last wrote it (static buffer, "" if none). */
static const char *envelope_on_disk(const char *id)
{
        static char buf[65536];
        char path[600];
        buf[0] = '\0';
        if (snprintf(path, sizeof(path), "%s/active/%s/envelope", S.h.spool, id) >=
            (int)sizeof(path))
                return buf; /* a spool path this long is not ours */
        struct stat st;
        path[strlen(path) - strlen("/envelope")] = '\0';
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode)) /* else the message file itself: */
                strcat(path, "/envelope");                /* body, envelope, trailer */
        FILE *f = fopen(path, "r");
        if (f) {
                size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                buf[n] = '\0';
                fclose(f);
        }
        return buf;
}

/* Queue IDs in active/ (up to max). */
static size_t active_ids(char ids[][17], size_t max)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/active", S.h.spool);
        DIR *d = opendir(path);
        cr_assert_not_null(d);
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)) && n < max)
                if (strlen(e->d_name) == 16)
                        snprintf(ids[n++], 17, "%s", e->d_name);
        closedir(d);
        return n;
}

/* How many times the fixture accepted each rcptN@example.test; fails on strangers. */
static void count_deliveries(const char *local, int *seen, int n)
{
        memset(seen, 0, sizeof(int) * (size_t)n);
        size_t len = strlen(local);
        for (size_t i = 0; i < fixture_txn_count(S.f); i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(S.f, i, &t), 0);
                for (size_t r = 0; r < t.n_rcpts; r++) {
                        if (strncmp(t.rcpts[r], local, len) != 0)
                                continue;
                        int idx = atoi(t.rcpts[r] + len);
                        cr_assert(idx >= 0 && idx < n, "unexpected recipient %s", t.rcpts[r]);
                        seen[idx]++;
                }
                fixture_txn_clear(&t);
        }
}

static size_t tmp_entries(void)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/tmp", S.h.spool);
        DIR *d = opendir(path);
        cr_assert_not_null(d);
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
                n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
        closedir(d);
        return n;
}

static void assert_tarryq_lists(size_t n)
{
        char *out = NULL, *err = NULL;
        const char *args[] = {"-p", NULL};
        int r = harness_tarryq(&S.h, args, &out, &err);
        cr_assert_eq(r, 0, "tarryq -p exited %d: %s", r, err);
        char want[64];
        snprintf(want, sizeof(want), "in %zu Request", n);
        cr_assert(strstr(out, want), "tarryq -p does not list %zu messages:\n%s", n, out);
        free(out);
        free(err);
}

/* tarry_spool_errors_total{kind="KIND"} from the metrics endpoint (0 if absent). */
static long spool_errors(const char *kind)
{
        char series[128];
        snprintf(series, sizeof(series), "tarry_spool_errors_total{kind=\"%s\"}", kind);
        return harness_metric(&S.h, series);
}

static void flush(void)
{
        char *out = NULL, *err = NULL;
        const char *args[] = {"-f", NULL};
        int r = harness_tarryq(&S.h, args, &out, &err);
        cr_assert_eq(r, 0, "tarryq -f exited %d: %s", r, err);
        free(out);
        free(err);
}

TestSuite(diskfull, .fini = teardown, .timeout = 90);

/* Without root, mounting the tmpfs needs a user namespace, which the kernel
 * grants only to a single-threaded process: enter it here, before Criterion
 * starts any thread; the tests (and tarryd, sendmail, tarryq) run inside. */
int main(int argc, char *argv[])
{
        int r = geteuid() != 0 ? harness_enter_user_namespace() : 0;
        if (r < 0)
                fprintf(stderr,
                        "test_diskfull: no user namespace (%s): the tests will skip unless "
                        "mounting works anyway\n",
                        strerror(-r));
        struct criterion_test_set *tests = criterion_initialize();
        int result = 0;
        if (criterion_handle_args(argc, argv, true))
                result = !criterion_run_all_tests(tests);
        criterion_finalize(tests);
        return result;
}

/* Scenario A: deferrals come back while the disk is full, so tarryd cannot
 * write the envelopes. It keeps the state in memory, says so, keeps running,
 * writes each envelope within one retry interval of the space coming back,
 * and delivers every message exactly once. */
Test(diskfull, envelope_writes_that_fail_are_retried_and_nothing_is_lost)
{
        start("60s", NULL); /* no second attempt on its own: only the retry timer writes */
        fixture_set(S.f, "rcpt", "451 4.3.0 Temporary system problem, try later");
        fixture_set(S.f, "delay:rcpt", RCPT_DELAY);
        /* queued while tarryd is down, so every attempt starts at once at its start */
        cr_assert_eq(harness_stop(&S.h, SIGTERM, 5000), 0);
        for (int i = 0; i < MESSAGES; i++)
                send_numbered(i, "u");
        harness_start(&S.h);
        cr_assert(wait_log("(queue active)", MESSAGES, 5000), "not all messages picked up");
        long long filled = harness_fill_spool(&S.h);
        int64_t t_full = harness_now_us();

        /* the deferrals arrive on a full disk */
        cr_assert(wait_log("status=deferred", MESSAGES, 20000), "not all attempts deferred");
        cr_assert(wait_log("cannot write the envelope: " ENOSPC_TEXT, MESSAGES, 5000),
                  "tarryd did not log an ENOSPC envelope write for every message");
        char ids[MESSAGES + 4][17];
        cr_assert_eq(active_ids(ids, MESSAGES + 4), MESSAGES, "a message left active/");
        for (int i = 0; i < MESSAGES; i++) {
                char line[512];
                snprintf(line, sizeof(line), "%s: cannot write the envelope: " ENOSPC_TEXT, ids[i]);
                cr_assert(harness_log_contains(&S.h, line), "no error naming %s", ids[i]);
                cr_assert(strstr(envelope_on_disk(ids[i]), "\"attempts\":0"),
                          "%s: the envelope on disk changed although the disk is full", ids[i]);
        }
        /* a whole retry interval on a full disk: still running, still answering */
        harness_sleep_ms(6000);
        cr_assert(harness_running(&S.h), "tarryd died on a full disk");
        assert_tarryq_lists(MESSAGES);
        /* each message's first failure, then a retry of each (at most 5 s later) */
        long counted = spool_errors("write");
        for (int waited = 0; counted < 2 * MESSAGES && waited < RETRY_WAIT_MS; waited += 200) {
                harness_sleep_ms(200);
                counted = spool_errors("write");
        }
        cr_assert_geq(counted, 2 * MESSAGES,
                      "tarry_spool_errors_total{kind=\"write\"} is %ld: not every failure (and "
                      "retry) was counted",
                      counted);
        cr_assert_eq(queued("active"), MESSAGES);
        cr_assert_eq(harness_log_count(&S.h, "cannot write the envelope"), MESSAGES,
                     "the error should be logged once per message, not every retry");

        /* space comes back: each envelope is written by the retry, not by a new attempt */
        harness_unfill_spool(&S.h);
        int64_t t_free = harness_now_us();
        cr_assert(wait_log("envelope written after", MESSAGES, RETRY_WAIT_MS),
                  "the envelope writes were not retried after space came back");
        int64_t t_written = harness_now_us();
        for (int i = 0; i < MESSAGES; i++) {
                const char *env = envelope_on_disk(ids[i]);
                cr_assert(strstr(env, "\"state\":\"deferred\"") && strstr(env, "\"attempts\":1"),
                          "%s: the deferral is not on disk after the retry: %s", ids[i], env);
        }
        size_t failures = 0;
        for (int i = 0; i < MESSAGES; i++) {
                char line[512];
                snprintf(line, sizeof(line), "%s: envelope written after ", ids[i]);
                FILE *f = fopen(S.h.log, "r");
                char buf[8192];
                while (f && fgets(buf, sizeof(buf), f)) {
                        char *p = strstr(buf, line);
                        if (p)
                                failures += strtoul(p + strlen(line), NULL, 10);
                }
                if (f)
                        fclose(f);
        }
        cr_assert_geq(failures, MESSAGES, "every message failed at least one write");

        /* the receiver now accepts: everything arrives exactly once */
        size_t before = fixture_txn_count(S.f);
        fixture_set(S.f, "delay:rcpt", "0");
        fixture_set(S.f, "rcpt", "250 2.1.5 Ok");
        flush();
        cr_assert(wait_for(spool_empty, 0, 20000), "mail left in the spool");
        int seen[MESSAGES];
        count_deliveries("u", seen, MESSAGES);
        size_t lost = 0, dups = 0;
        for (int i = 0; i < MESSAGES; i++) {
                lost += seen[i] == 0;
                dups += seen[i] > 1 ? (size_t)seen[i] - 1 : 0;
        }
        fprintf(stderr,
                "diskfull A: %d messages, filler %lld bytes, %zu failed envelope writes, "
                "(metric %ld while full), full for %.1f s, state written %.1f s after space came "
                "back, %zu delivered (%zu transactions), %zu lost, %zu duplicated\n",
                MESSAGES, filled, failures, counted, (double)(t_free - t_full) / 1e6,
                (double)(t_written - t_free) / 1e6, (size_t)MESSAGES - lost,
                fixture_txn_count(S.f) - before, lost, dups);
        cr_assert_eq(lost, 0, "%zu messages lost", lost);
        cr_assert_eq(dups, 0, "%zu messages delivered twice", dups);
        cr_assert_eq(tmp_entries(), 0, "leftovers in tmp/");
        cr_assert(harness_running(&S.h));
        stop_cleanly();
}

/* Scenario B: sendmail on a full spool exits 75 (EX_TEMPFAIL), says why, and
 * leaves nothing behind; tarryd does not notice; with space back, mail flows. */
Test(diskfull, sendmail_on_a_full_spool_exits_75_and_leaves_nothing)
{
        start("1s", NULL);
        harness_fill_spool(&S.h);
        static char body[200000]; /* larger than a page, smaller than the spool */
        memset(body, 'x', sizeof(body) - 1);
        memcpy(body, "Subject: full\n\n", 15);
        for (size_t i = 78; i < sizeof(body) - 1; i += 79)
                body[i] = '\n';
        const char *args[] = {"-f", "alice@sender.test", "bob@example.test", NULL};
        for (int i = 0; i < 3; i++) {
                char *err = NULL;
                int r =
                    harness_sendmail_err(&S.h, i == 0 ? "Subject: tiny\n\nhi\n" : body, args, &err);
                cr_assert_eq(r, 75, "sendmail exited %d on a full spool: %s", r, err);
                cr_assert(strstr(err, ENOSPC_TEXT), "sendmail does not say why: %s", err);
                free(err);
        }
        cr_assert_eq(tmp_entries(), 0, "sendmail left a draft in tmp/");
        cr_assert_eq(queued("incoming") + queued("active"), 0, "a refused message is queued");
        harness_sleep_ms(300);
        cr_assert(harness_running(&S.h));
        cr_assert_eq(fixture_txn_count(S.f), 0, "a refused message was delivered");

        harness_unfill_spool(&S.h);
        harness_send(&S.h, "alice@sender.test", "bob@example.test", "after");
        cr_assert_eq(fixture_wait_txns(S.f, 1, 10000), 0, "mail after the space came back");
        cr_assert(wait_for(spool_empty, 0, 5000));
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(S.f), 1);
        stop_cleanly();
}

/* Scenario C: a recipient fails for good while the disk is full, so the
 * failure DSN cannot be queued. The original stays until the DSN is; then the
 * DSN goes out once and the original leaves the spool. */
Test(diskfull, a_bounce_that_cannot_be_queued_keeps_the_original)
{
        start("1s", NULL);
        fixture_set(S.f, "rcpt:bad*@example.test", "550 5.1.1 No such user here");
        fixture_set(S.f, "delay:rcpt", RCPT_DELAY);
        harness_send(&S.h, "alice@sender.test", "bad0@example.test", "will bounce");
        cr_assert(wait_log("(queue active)", 1, 5000));
        char ids[4][17];
        cr_assert_eq(active_ids(ids, 4), 1);
        harness_fill_spool(&S.h);

        cr_assert(wait_log("status=bounced", 1, 20000), "the recipient did not fail");
        cr_assert(wait_log("cannot queue a failure DSN: " ENOSPC_TEXT, 1, 5000),
                  "no error for the DSN that could not be queued");
        char line[512];
        snprintf(line, sizeof(line), "%s: cannot queue a failure DSN", ids[0]);
        cr_assert(harness_log_contains(&S.h, line), "the error does not name %s", ids[0]);
        fixture_set(S.f, "delay:rcpt", "0");
        harness_sleep_ms(6000); /* at least one retry on the full disk */
        cr_assert(harness_running(&S.h));
        cr_assert_eq(active_ids(ids, 4), 1, "the original left the spool without its DSN");
        snprintf(line, sizeof(line), "%s: removed", ids[0]);
        cr_assert_not(harness_log_contains(&S.h, line));
        cr_assert_eq(queued("incoming"), 0);
        cr_assert_eq(fixture_txn_count(S.f), 0);

        /* a restart on the full disk: start-up copes, and the bounce is still owed */
        stop_cleanly();
        harness_start(&S.h);
        cr_assert(wait_log("status=bounced", 2, 10000), "the restart did not retry");
        harness_sleep_ms(500);
        cr_assert(harness_running(&S.h), "tarryd died starting on a full disk");
        cr_assert_eq(active_ids(ids, 4), 1, "the original left the spool without its DSN");
        cr_assert_not(harness_log_contains(&S.h, line));

        harness_unfill_spool(&S.h);
        int64_t t_free = harness_now_us();
        cr_assert(wait_for(txns_at_least, 1, RETRY_WAIT_MS + 5000), "no DSN after space came back");
        int64_t t_dsn = harness_now_us();
        cr_assert(wait_for(spool_empty, 0, 5000), "mail left in the spool");
        cr_assert(harness_log_contains(&S.h, line), "the original was not removed");
        harness_sleep_ms(1000);
        cr_assert_eq(fixture_txn_count(S.f), 1, "one DSN, and nothing else");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(S.f, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "");
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "alice@sender.test");
        fixture_txn_clear(&t);
        fprintf(stderr, "diskfull C: failure DSN delivered %.1f s after space came back\n",
                (double)(t_dsn - t_free) / 1e6);
        stop_cleanly();
}

/* Scenario C, nearly full: one free page takes the updated envelope (the
 * recipient failed) but not the DSN (a message file of more than a page: the
 * message is sent with -R full and an 8 KB body, which the DSN returns). A
 * restart then finds a message with nothing to deliver and a DSN owed, on a
 * disk that still refuses it: tarryd keeps it, retries, and sends the DSN
 * once space is back. */
Test(diskfull, a_bounce_still_owed_at_restart_is_sent_once_there_is_space)
{
        start("1s", NULL);
        fixture_set(S.f, "rcpt:bad*@example.test", "550 5.1.1 No such user here");
        fixture_set(S.f, "delay:rcpt", RCPT_DELAY);
        static char big[9000];
        int n = snprintf(big, sizeof(big), "Subject: will bounce\nTo: <bad1@example.test>\n\n");
        static const char line[] = "a line of the body that the failure DSN returns whole\n";
        for (; n + sizeof(line) < 8300; n += (int)strlen(line))
                memcpy(big + n, line, strlen(line));
        big[n] = '\0';
        const char *args[] = {"-R", "full", "-f", "alice@sender.test", "bad1@example.test", NULL};
        cr_assert_eq(harness_sendmail(&S.h, big, args), 0);
        cr_assert(wait_log("(queue active)", 1, 5000));
        char ids[4][17];
        cr_assert_eq(active_ids(ids, 4), 1);
        harness_fill_spool_but(&S.h, 4096);
        cr_assert(wait_log("cannot queue a failure DSN: " ENOSPC_TEXT, 1, 20000),
                  "the DSN was queued on a nearly full disk?");
        /* the envelope is written just after the DSN failed */
        const char *env = envelope_on_disk(ids[0]);
        for (int waited = 0; !strstr(env, "\"state\":\"failed\"") && waited < 5000; waited += 50) {
                harness_sleep_ms(50);
                env = envelope_on_disk(ids[0]);
        }
        cr_assert(strstr(env, "\"state\":\"failed\""),
                  "the failed recipient is not on disk (one page was free): %s", env);
        cr_assert(strstr(env, "\"failure_dsn_sent\":false"), "the DSN is marked sent: %s", env);

        stop_cleanly();
        harness_start(&S.h);
        harness_sleep_ms(7000); /* past a retry of the owed DSN */
        cr_assert(harness_running(&S.h), "tarryd died retrying an owed DSN after a restart");
        cr_assert_eq(active_ids(ids, 4), 1, "the original left the spool without its DSN");
        cr_assert_eq(fixture_txn_count(S.f), 0);

        harness_unfill_spool(&S.h);
        cr_assert(wait_for(txns_at_least, 1, RETRY_WAIT_MS + 5000), "no DSN after space came back");
        cr_assert(wait_for(spool_empty, 0, 5000), "mail left in the spool");
        harness_sleep_ms(1000);
        cr_assert_eq(fixture_txn_count(S.f), 1, "one DSN, and nothing else");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(S.f, 0, &t), 0);
        cr_assert_str_eq(t.mail_from, "");
        cr_assert_str_eq(t.rcpts[0], "alice@sender.test");
        fixture_txn_clear(&t);
        stop_cleanly();
}

/* Scenario C, state files: a greylisted message is accepted while the disk is
 * full, so what tarryd learned cannot be saved to state/learned.json. It says
 * so, keeps running, and saves it once space is back. */
Test(diskfull, learned_state_that_cannot_be_saved_is_saved_later)
{
        start("3s", NULL);
        fixture_set(S.f, "greylist", "1");
        harness_send(&S.h, "alice@sender.test", "grey@example.test", "greylisted");
        cr_assert(wait_log("status=deferred", 1, 5000), "not greylisted");
        harness_fill_spool(&S.h);
        cr_assert_eq(fixture_wait_txns(S.f, 1, 10000), 0, "not accepted after the greylist");
        cr_assert(wait_log("cannot write state/learned.json: " ENOSPC_TEXT, 1, 5000),
                  "no error for learned.json");
        cr_assert(wait_for(spool_empty, 0, 5000), "the delivered message stayed queued");
        char path[400];
        struct stat st;
        snprintf(path, sizeof(path), "%s/state/learned.json", S.h.spool);
        cr_assert_neq(stat(path, &st), 0, "learned.json written on a full disk?");
        cr_assert(harness_running(&S.h));

        harness_unfill_spool(&S.h);
        cr_assert(wait_log("state/learned.json written", 1, RETRY_WAIT_MS),
                  "learned.json was not saved after space came back");
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "no learned.json");
        char buf[4096];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        cr_assert(strstr(buf, "greylist_s"), "learned.json holds nothing: %s", buf);
        cr_assert_eq(fixture_txn_count(S.f), 1);
        stop_cleanly();
}
