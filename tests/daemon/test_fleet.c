/* tests/daemon/test_fleet.c — two real tarryd nodes, each with its own spool
 * and the same source address, sharing destination pauses through a real
 * redis-server started here on a free loopback port (docs/fleet.md). What an
 * operator of a fleet checks: a 4.7.650 one node was given holds the other
 * node's mail for that destination; with Redis gone both nodes still
 * deliver, say so once, and share again once it is back. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "tests/fixture/dnsmasq.h"
#include "tests/fixture/fixture.h"

#define WAIT_MS   30000
#define SUSPEND_S 600 /* never waited out */
#define REPUTATION                                                                                 \
        "451 4.7.650 The mail server [127.0.0.2] has been temporarily rate limited due to IP "     \
        "reputation."

/* ---- a redis-server of the test's own ---- */

struct redis {
        pid_t pid;
        int port;
        char dir[64];
};

static int free_port(void)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        close(fd);
        return ntohs(a.sin_port);
}

static bool redis_pings(int port)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        char buf[16] = "";
        bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
                  write(fd, "PING\r\n", 6) == 6 && read(fd, buf, sizeof(buf) - 1) > 0 &&
                  strncmp(buf, "+PONG", 5) == 0;
        close(fd);
        return ok;
}

/* Calls of a Redis command so far (INFO commandstats), -1 if unknown. */
static long redis_calls(struct redis *r, const char *cmd)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)r->port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        char buf[16384] = "", want[64];
        size_t got = 0;
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
            write(fd, "INFO commandstats\r\n", 19) == 19) {
                for (ssize_t n; got < sizeof(buf) - 1 && !strstr(buf, "\r\n\r\n") &&
                                (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0;)
                        buf[got += (size_t)n] = '\0';
        }
        close(fd);
        snprintf(want, sizeof(want), "cmdstat_%s:calls=", cmd);
        const char *at = strstr(buf, want);
        return at ? strtol(at + strlen(want), NULL, 10) : -1;
}

/* One command in Redis's inline form (words without spaces); the reply's
 * first line, or "" when none came. */
static void redis_cmd(struct redis *r, const char *cmd, char *out, size_t outlen)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)r->port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        char line[512];
        int n = snprintf(line, sizeof(line), "%s\r\n", cmd);
        ssize_t got = 0;
        out[0] = '\0';
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && write(fd, line, (size_t)n) == n)
                got = read(fd, out, outlen - 1);
        close(fd);
        out[got > 0 ? got : 0] = '\0';
        out[strcspn(out, "\r\n")] = '\0';
}

/* Start (or restart, on the same port) redis-server, no persistence. */
static void redis_start(struct redis *r)
{
        if (!r->port) {
                r->port = free_port();
                snprintf(r->dir, sizeof(r->dir), "/tmp/tarry-redis-XXXXXX");
                cr_assert_not_null(mkdtemp(r->dir));
        }
        char port[16];
        snprintf(port, sizeof(port), "%d", r->port);
        r->pid = fork();
        cr_assert_geq(r->pid, 0);
        if (r->pid == 0) {
                int null = open("/dev/null", O_WRONLY);
                dup2(null, 1);
                dup2(null, 2);
                execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
                       "--save", "", "--appendonly", "no", "--dir", r->dir, (char *)NULL);
                _exit(127);
        }
        for (int i = 0; !redis_pings(r->port); i++) {
                int st;
                cr_assert_eq(waitpid(r->pid, &st, WNOHANG), 0,
                             "redis-server exited (is it installed? scripts/deps test)");
                cr_assert_lt(i, WAIT_MS / 10, "redis-server does not answer on port %d", r->port);
                harness_sleep_ms(10);
        }
}

static void redis_kill(struct redis *r)
{
        if (r->pid <= 0)
                return;
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
}

static void redis_cleanup(struct redis *r)
{
        redis_kill(r);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", r->dir);
        (void)system(cmd);
}

/* When transaction i reached the receiver (its final dot answered). */
static int64_t txn_time(struct fixture *f, size_t i)
{
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, i, &t), 0);
        int64_t when = t.time_us;
        fixture_txn_clear(&t);
        return when;
}

/* ---- nodes ---- */

static void init_node_with(struct harness *h, const char *node, struct fixture *f, struct redis *r,
                           const char *main_more, const char *more)
{
        char extra[2048];
        snprintf(extra, sizeof(extra),
                 "source_address = 127.0.0.2\n%s"
                 "[smtp]\nconnect_timeout = 2s\ncommand_timeout = 3s\ndata_timeout = 5s\n"
                 "[cluster]\nredis = 127.0.0.1:%d\nnode = %s\n"
                 "[retry.reputation]\ninitial = %ds\nmax = %ds\n"
                 "%s[transport]\nexample.test = [127.0.0.1]:%u\n",
                 main_more, r->port, node, SUSPEND_S, SUSPEND_S, more, fixture_port(f));
        harness_init(h, extra);
}

static void init_node(struct harness *h, const char *node, struct fixture *f, struct redis *r)
{
        init_node_with(h, node, f, r, "", "");
}

static bool wait_log_n(struct harness *h, const char *needle, size_t n)
{
        return harness_wait_log(h, needle, n, WAIT_MS);
}

static bool wait_log(struct harness *h, const char *needle)
{
        return wait_log_n(h, needle, 1);
}

/* next_attempt_reason of address in tarryq -j, "" while it is not listed. */
static void reason_of(struct harness *h, const char *address, char *out, size_t outlen)
{
        char *text = NULL, *err = NULL;
        out[0] = '\0';
        cr_assert_eq(harness_tarryq(h, (const char *[]){"-j", NULL}, &text, &err), 0, "%s", err);
        for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
                json_t *m = json_loads(line, 0, NULL);
                size_t i;
                json_t *rc;
                json_array_foreach (json_object_get(m, "recipients"), i, rc) {
                        const char *a = json_string_value(json_object_get(rc, "address"));
                        const char *why =
                            json_string_value(json_object_get(rc, "next_attempt_reason"));
                        if (a && strcmp(a, address) == 0)
                                snprintf(out, outlen, "%s", why ? why : "?");
                }
                json_decref(m);
        }
        free(text);
        free(err);
}

/* Wait until address is listed at h with a reason; returns it in out. */
static void wait_reason(struct harness *h, const char *address, char *out, size_t outlen)
{
        for (int i = 0; i < WAIT_MS / 50; i++) {
                reason_of(h, address, out, outlen);
                if (out[0] && strcmp(out, "first_attempt") != 0)
                        return;
                harness_sleep_ms(50);
        }
}

static struct fixture *start_fixture(void)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        return f;
}

/* B's mail waits for the suspension A was given: listed as
 * destination_suspended, and the receiver hears nothing from B. */
static void assert_held_at(struct harness *b, struct fixture *f, const char *rcpt)
{
        size_t conns = fixture_connection_count(f);
        harness_send(b, "alice@sender.test", rcpt, "from b");
        char why[64];
        wait_reason(b, rcpt, why, sizeof(why));
        cr_assert_str_eq(why, "destination_suspended", "%s at node b", rcpt);
        harness_sleep_ms(500);
        cr_assert_eq(fixture_connection_count(f), conns,
                     "node b contacted the destination node a was suspended from");
        char *out = NULL, *err = NULL;
        cr_assert_eq(harness_tarryq(b, (const char *[]){"-s", NULL}, &out, &err), 0, "%s", err);
        cr_assert_not_null(strstr(out, ": suspended,"), "node b: %s", out);
        cr_assert_not_null(strstr(out, "after a reputation deferral"), "node b: %s", out);
        free(out);
        free(err);
}

Test(fleet, a_suspension_at_one_node_holds_the_other_nodes_mail_for_that_destination,
     .timeout = 180)
{
        struct redis r = {0};
        redis_start(&r);
        struct fixture *f = start_fixture();
        fixture_set(f, "rcpt", REPUTATION);
        struct harness a, b;
        init_node(&a, "a", f, &r);
        init_node(&b, "b", f, &r);
        harness_start(&a);
        harness_start(&b);
        cr_assert(wait_log(&a, "cluster: connected to redis"), "node a never connected");
        cr_assert(wait_log(&b, "cluster: connected to redis"), "node b never connected");

        harness_send(&a, "alice@sender.test", "one@example.test", "from a");
        cr_assert(wait_log(&a, "class=reputation"), "node a's attempt was not deferred");
        cr_assert(wait_log(&b, "cluster: node a suspended"), "node b never heard of it");
        fixture_set(f, "rcpt", "250 2.1.5 Ok"); /* b would deliver now, if it tried */
        assert_held_at(&b, f, "two@example.test");
        cr_assert_eq(fixture_txn_count(f), 0);

        /* a node that starts later reads it from Redis */
        struct harness c;
        init_node(&c, "c", f, &r);
        harness_start(&c);
        cr_assert(wait_log(&c, "cluster: node a suspended"), "node c never read it");
        assert_held_at(&c, f, "three@example.test");

        /* the fleet view: every node with its queue, from any node */
        char *out = NULL, *err = NULL;
        bool all = false;
        for (int i = 0; i < WAIT_MS / 100 && !all; i++) {
                free(out);
                free(err);
                cr_assert_eq(
                    harness_tarryq(&b, (const char *[]){"-s", "--fleet", NULL}, &out, &err), 0,
                    "%s", err);
                all = strstr(out, "fleet: 3 node(s), this one b; redis connected") &&
                      strstr(out, "  a: 1 queued, 1 deferred") && strstr(out, "  b: 1 queued") &&
                      strstr(out, "  c: 1 queued");
                if (!all)
                        harness_sleep_ms(100);
        }
        cr_assert(all, "tarryq -s --fleet at b:\n%s", out);
        cr_assert_not_null(strstr(out, "a: 1 queued, 1 deferred, 0 on hold, last seen "), "%s",
                           out);
        cr_assert_not_null(strstr(out, "; reputation 1"), "%s", out);
        free(out);
        free(err);
        char *plain = harness_http_get(&b, "/status");
        cr_assert_null(strstr(plain, "\"fleet\""), "fleet without ?fleet=1");
        free(plain);
        char *bad = harness_http_get(&b, "/status?fleet=2");
        cr_assert_not_null(strstr(bad, " 400 "), "%s", bad);
        free(bad);

        cr_assert_eq(harness_stop(&a, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&b, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&c, SIGTERM, 5000), 0);
        harness_cleanup(&a);
        harness_cleanup(&b);
        harness_cleanup(&c);
        fixture_free(f);
        redis_cleanup(&r);
}

/* The destination as the scheduler keys it: the [transport] next hop. */
static void dest_of(struct fixture *f, char *out, size_t outlen)
{
        snprintf(out, outlen, "[127.0.0.1]:%u", fixture_port(f));
}

/* tarryq resume at any node lifts a pause another node learned, at every
 * node: the mail held at the node that got the 4.7.650 leaves at once too,
 * and a node started later does not read the pause back from Redis. */
Test(fleet, a_resume_at_one_node_lifts_the_pause_another_node_learned_across_the_fleet,
     .timeout = 180)
{
        struct redis r = {0};
        redis_start(&r);
        struct fixture *f = start_fixture();
        fixture_set(f, "rcpt", REPUTATION);
        struct harness a, b;
        init_node(&a, "a", f, &r);
        init_node(&b, "b", f, &r);
        harness_start(&a);
        harness_start(&b);
        cr_assert(wait_log(&a, "cluster: connected to redis"), "node a never connected");
        cr_assert(wait_log(&b, "cluster: connected to redis"), "node b never connected");

        harness_send(&a, "alice@sender.test", "one@example.test", "from a");
        cr_assert(wait_log(&a, "class=reputation"), "node a's attempt was not deferred");
        cr_assert(wait_log(&b, "cluster: node a suspended"), "node b never heard of it");
        fixture_set(f, "rcpt", "250 2.1.5 Ok");
        /* (one@ keeps its own retry time, as after a resume at a alone) */
        assert_held_at(&a, f, "two@example.test");
        assert_held_at(&b, f, "three@example.test");
        cr_assert_eq(fixture_txn_count(f), 0);

        char dest[64], *out = NULL, *err = NULL;
        dest_of(f, dest, sizeof(dest));
        cr_assert_eq(harness_tarryq(&b, (const char *[]){"resume", dest, NULL}, &out, &err), 0,
                     "tarryq resume %s at b: %s%s", dest, out, err);
        free(out);
        free(err);
        cr_assert_eq(fixture_wait_txns(f, 2, WAIT_MS), 0,
                     "after the resume at b, %zu of 2 messages arrived (a kept its pause?)",
                     fixture_txn_count(f));
        cr_assert(wait_log(&a, "cluster: node b resumed"), "node a never heard of the resume");

        /* a node started now reads no pause from Redis */
        struct harness c;
        init_node(&c, "c", f, &r);
        harness_start(&c);
        cr_assert(wait_log(&c, "cluster: connected to redis"), "node c never connected");
        harness_send(&c, "alice@sender.test", "four@example.test", "from c");
        cr_assert_eq(fixture_wait_txns(f, 3, WAIT_MS), 0,
                     "node c's mail was held by the pause the resume cancelled");
        cr_assert_not(harness_log_contains(&c, "cluster: node a suspended"));
        cr_assert_not(harness_log_contains(&c, "ignored a record"), "the tombstone was refused");
        cr_assert_eq(fixture_txn_count(f), 3, "a message arrived twice");

        cr_assert_eq(harness_stop(&a, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&b, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&c, SIGTERM, 5000), 0);
        harness_cleanup(&a);
        harness_cleanup(&b);
        harness_cleanup(&c);
        fixture_free(f);
        redis_cleanup(&r);
}

Test(fleet, without_redis_both_nodes_deliver_and_share_again_once_it_is_back, .timeout = 240)
{
        struct redis r = {0};
        redis_start(&r);
        struct fixture *f = start_fixture();
        fixture_set(f, "rcpt:rep*", REPUTATION);
        struct harness a, b;
        init_node(&a, "a", f, &r);
        init_node(&b, "b", f, &r);
        harness_start(&a);
        harness_start(&b);
        cr_assert(wait_log(&a, "cluster: connected to redis"));
        cr_assert(wait_log(&b, "cluster: connected to redis"));

        redis_kill(&r);
        cr_assert(wait_log(&a, "until it is back"), "node a did not notice");
        cr_assert(wait_log(&b, "until it is back"), "node b did not notice");
        harness_send(&a, "alice@sender.test", "ok1@example.test", "a without redis");
        harness_send(&b, "alice@sender.test", "ok2@example.test", "b without redis");
        cr_assert_eq(fixture_wait_txns(f, 2, WAIT_MS), 0, "mail waited for Redis");
        /* a suspension while Redis is away stays at the node that got it */
        harness_send(&a, "alice@sender.test", "rep@example.test", "a, suspended");
        cr_assert(wait_log(&a, "class=reputation"));
        harness_sleep_ms(3000); /* several reconnection attempts */
        cr_assert_eq(harness_log_count(&a, "until it is back"), 1, "the loss is logged once");
        cr_assert_eq(harness_log_count(&b, "until it is back"), 1, "the loss is logged once");

        /* back (empty: it kept nothing): a tells it again, and b learns */
        redis_start(&r);
        cr_assert(wait_log(&a, "is back; resynchronising"), "node a did not reconnect");
        cr_assert(wait_log(&b, "is back; resynchronising"), "node b did not reconnect");
        cr_assert(wait_log(&b, "cluster: node a suspended"), "node b never heard of it");
        assert_held_at(&b, f, "ok3@example.test");
        cr_assert_eq(fixture_txn_count(f), 2);

        cr_assert_eq(harness_stop(&a, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&b, SIGTERM, 5000), 0);
        harness_cleanup(&a);
        harness_cleanup(&b);
        fixture_free(f);
        redis_cleanup(&r);
}

/* The bracket of "cluster: node a learned the greylist window of R: Us
 * (refused at Ls)" in h's log. */
static bool learned_bracket(struct harness *h, long long *upper, long long *lower)
{
        FILE *f = fopen(h->log, "r");
        cr_assert_not_null(f);
        char line[1024];
        bool found = false;
        while (!found && fgets(line, sizeof(line), f)) {
                const char *at = strstr(line, "learned the greylist window of ");
                const char *colon = at ? strstr(at, ": ") : NULL;
                found = colon && sscanf(colon, ": %llds (refused at %llds)", upper, lower) == 2;
        }
        fclose(f);
        return found;
}

/* The receiver greylists for GREY_S. Node a's retries (an operator window
 * of GREY_WINDOW_S, then every GREY_STEP_S) are refused at ~9 s and
 * accepted at ~18 s: it learns the bracket (9, 18]. Node b's first retry
 * aims inside it, at 13.5 s, past GREY_S: two attempts. Without the shared
 * window b would retry at the window end (9 s, refused) and again at 18 s. */
#define GREY_S        "12"
#define GREY_WINDOW_S 8
#define GREY_STEP_S   9
Test(fleet, a_greylist_window_learned_at_one_node_makes_the_others_first_retry_land_after_it,
     .timeout = 240)
{
        struct redis r = {0};
        redis_start(&r);
        struct fixture *f = start_fixture();
        fixture_set(f, "greylist", GREY_S);
        char dir[] = "/tmp/tarry-fleet-XXXXXX", policy[64], main_more[128], retry[128];
        cr_assert_not_null(mkdtemp(dir));
        chmod(dir, 0755);
        snprintf(policy, sizeof(policy), "%s/policy.json", dir);
        FILE *pf = fopen(policy, "w");
        cr_assert_not_null(pf);
        fprintf(pf,
                "{\"tarry_policy\": 1, \"greylist_windows\": [{\"seconds\": %d, \"who\": "
                "\"the test's greylister\", \"source\": \"observed\"}]}\n",
                GREY_WINDOW_S);
        fclose(pf);
        chmod(policy, 0644);
        snprintf(main_more, sizeof(main_more), "classifier_rules = %s\n", policy);
        snprintf(retry, sizeof(retry), "[retry.greylist]\ninitial = %ds\nfactor = 1\n",
                 GREY_STEP_S);
        struct harness a, b;
        init_node_with(&a, "a", f, &r, main_more, retry);
        init_node_with(&b, "b", f, &r, main_more, retry);
        harness_start(&a);
        harness_start(&b);
        cr_assert(wait_log(&a, "cluster: connected to redis"));
        cr_assert(wait_log(&b, "cluster: connected to redis"));

        harness_send(&a, "alice@sender.test", "one@example.test", "from a");
        cr_assert_eq(fixture_wait_txns(f, 1, 60000), 0, "node a never got through");
        cr_assert_eq(harness_log_count(&a, "status=deferred"), 2,
                     "node a did not learn from two refusals (a loaded machine?)");
        cr_assert(wait_log(&b, "cluster: node a learned the greylist window"),
                  "node b never heard of it");
        /* the bracket around the receiver's delay, however late a's retries
         * came on a loaded machine: refused below it, accepted at or above */
        long long upper = 0, lower = 0;
        cr_assert(learned_bracket(&b, &upper, &lower), "no bracket in node b's log");
        cr_assert(lower >= GREY_WINDOW_S && lower < atoi(GREY_S) && upper >= atoi(GREY_S),
                  "not the bracket node a saw: (%llds, %llds]", lower, upper);

        harness_send(&b, "alice@sender.test", "two@example.test", "from b");
        cr_assert_eq(fixture_wait_txns(f, 2, 60000), 0, "node b never got through");
        cr_assert_eq(harness_log_count(&b, "status=deferred"), 1,
                     "node b's first retry did not land after the window");

        cr_assert_eq(harness_stop(&a, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&b, SIGTERM, 5000), 0);
        harness_cleanup(&a);
        harness_cleanup(&b);
        unlink(policy);
        rmdir(dir);
        fixture_free(f);
        redis_cleanup(&r);
}

/* An operator rule paces the destination to PACE_PER_MIN starts a minute
 * (max_per_minute) on each node that gets its reply; shared, the two nodes
 * together keep to it within 5 % (each alone would keep to it, and
 * together send twice as much). */
#define PACE_PER_MIN 120
#define PACE_EACH    12 /* messages per node */
Test(fleet, a_rule_paced_rate_holds_across_both_nodes, .timeout = 240)
{
        struct redis r = {0};
        redis_start(&r);
        struct fixture *f = start_fixture();
        fixture_set(f, "rcpt:trigger*", "451 4.7.0 SLOW-DOWN please");
        char dir[] = "/tmp/tarry-fleet-XXXXXX", policy[64], main_more[128];
        cr_assert_not_null(mkdtemp(dir));
        chmod(dir, 0755);
        snprintf(policy, sizeof(policy), "%s/policy.json", dir);
        FILE *pf = fopen(policy, "w");
        cr_assert_not_null(pf);
        fprintf(pf,
                "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"slow-down\", \"code\": \"4??\", "
                "\"enhanced\": \"*\", \"text\": \"SLOW-DOWN\", \"class\": \"unknown_temp\", "
                "\"reason\": \"the test's throttle\", \"source\": \"observed\", \"action\": "
                "{\"max_per_minute\": %d, \"for_seconds\": 600}}]}\n",
                PACE_PER_MIN);
        fclose(pf);
        chmod(policy, 0644);
        snprintf(main_more, sizeof(main_more), "classifier_rules = %s\n", policy);
        const char *retry = "[retry.unknown_temp]\ninitial = 600s\n";
        struct harness a, b;
        init_node_with(&a, "a", f, &r, main_more, retry);
        init_node_with(&b, "b", f, &r, main_more, retry);
        harness_start(&a);
        harness_start(&b);
        cr_assert(wait_log(&a, "cluster: connected to redis"));
        cr_assert(wait_log(&b, "cluster: connected to redis"));
        harness_send(&a, "alice@sender.test", "trigger-a@example.test", "pace a");
        harness_send(&b, "alice@sender.test", "trigger-b@example.test", "pace b");
        cr_assert(wait_log(&a, "class=unknown_temp"));
        cr_assert(wait_log(&b, "class=unknown_temp"));

        for (int i = 0; i < PACE_EACH; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "a%d@example.test", i);
                harness_send(&a, "alice@sender.test", rcpt, "paced");
                snprintf(rcpt, sizeof(rcpt), "b%d@example.test", i);
                harness_send(&b, "alice@sender.test", rcpt, "paced");
        }
        cr_assert_eq(fixture_wait_txns(f, 2 * PACE_EACH, 120000), 0, "not all delivered");
        /* each node's first start after the rule is its own (nothing
         * reserved yet): count from the third delivery */
        int64_t first = txn_time(f, 2), last = txn_time(f, 2 * PACE_EACH - 1);
        double per_min = (2.0 * PACE_EACH - 3) * 60e6 / (double)(last - first);
        cr_log_info("fleet-wide pace: %.1f starts a minute (rule: %d)", per_min, PACE_PER_MIN);
        cr_assert_leq(per_min, PACE_PER_MIN * 1.05, "%.1f starts a minute across the fleet",
                      per_min);
        cr_assert_geq(per_min, PACE_PER_MIN * 0.5, "%.1f starts a minute: far too slow", per_min);

        cr_assert_eq(harness_stop(&a, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&b, SIGTERM, 5000), 0);
        harness_cleanup(&a);
        harness_cleanup(&b);
        unlink(policy);
        rmdir(dir);
        fixture_free(f);
        redis_cleanup(&r);
}

/* ---- connection leases: a provider's MX hosts through dnsmasq ---- */

/* dnsmasq (tests/fixture/dnsmasq.h): LEASE_DOMAINS domains d1.test…
 * whose MX hosts match the provider's pattern *.prov.test, all at
 * 127.0.0.1. 0 when dnsmasq is not installed. */
#define LEASE_DOMAINS 6
static pid_t start_dns(uint16_t *port)
{
        if (!dnsmasq_installed())
                return 0;
        char mx[LEASE_DOMAINS][64], err[256];
        const char *opts[8 + LEASE_DOMAINS] = {"--local=/test/",
                                               "--host-record=mx1.prov.test,127.0.0.1",
                                               "--host-record=mx2.prov.test,127.0.0.1"};
        size_t n = 3;
        for (int i = 0; i < LEASE_DOMAINS; i++) {
                snprintf(mx[i], sizeof(mx[i]), "--mx-host=d%d.test,mx%d.prov.test,10", i + 1,
                         i % 2 + 1);
                opts[n++] = mx[i];
        }
        *port = 0;
        pid_t pid = dnsmasq_start(opts, n, port, err, sizeof(err));
        cr_assert_gt(pid, 0, "%s", err);
        return pid;
}

/* A node delivering by MX through dnsmasq, with a provider of 2 connections. */
static void init_lease_node(struct harness *h, const char *node, struct fixture *f, struct redis *r,
                            uint16_t dport, const char *policy)
{
        char extra[2048];
        snprintf(extra, sizeof(extra),
                 "source_address = 127.0.0.2\nclassifier_rules = %s\n"
                 "[smtp]\nport = %u\nconnect_timeout = 2s\ncommand_timeout = 3s\n"
                 "data_timeout = 5s\ndns_servers = 127.0.0.1:%u\n"
                 "[cluster]\nredis = 127.0.0.1:%d\nnode = %s\n",
                 policy, fixture_port(f), dport, r->port, node);
        harness_init(h, extra);
}

static void send_to_domains(struct harness *h, const char *tag, int n)
{
        for (int i = 0; i < n; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "%s%d@d%d.test", tag, i, i % LEASE_DOMAINS + 1);
                harness_send(h, "alice@sender.test", rcpt, "leased");
        }
}

static bool wait_open_connections(struct fixture *f, size_t n)
{
        for (int i = 0; i < WAIT_MS / 10; i++) {
                if (fixture_open_connection_count(f) == n)
                        return true;
                harness_sleep_ms(10);
        }
        return false;
}

/* Two nodes, a provider of 2 connections, a slow receiver, Redis. */
struct lease_case {
        pid_t dns;
        uint16_t dport;
        struct redis r;
        struct fixture *f;
        char dir[32], policy[64];
        struct harness a, b;
};

/* limits: the provider's "limits" object. */
static void lease_start_with(struct lease_case *lc, const char *limits)
{
        *lc = (struct lease_case){0};
        lc->dns = start_dns(&lc->dport);
        if (lc->dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        redis_start(&lc->r);
        lc->f = start_fixture();
        fixture_set(lc->f, "delay:dot", "1500"); /* attempts overlap */
        snprintf(lc->dir, sizeof(lc->dir), "/tmp/tarry-fleet-XXXXXX");
        cr_assert_not_null(mkdtemp(lc->dir));
        chmod(lc->dir, 0755);
        snprintf(lc->policy, sizeof(lc->policy), "%s/policy.json", lc->dir);
        FILE *pf = fopen(lc->policy, "w");
        cr_assert_not_null(pf);
        fprintf(pf,
                "{\"tarry_policy\": 1, \"providers\": [{\"name\": \"prov\", \"mx\": "
                "[\"*.prov.test\"], \"limits\": %s, \"reason\": \"a test provider\"}]}\n",
                limits);
        fclose(pf);
        chmod(lc->policy, 0644);
        init_lease_node(&lc->a, "a", lc->f, &lc->r, lc->dport, lc->policy);
        init_lease_node(&lc->b, "b", lc->f, &lc->r, lc->dport, lc->policy);
        harness_start(&lc->a);
        harness_start(&lc->b);
        cr_assert(wait_log(&lc->a, "cluster: connected to redis"), "node a never connected");
        cr_assert(wait_log(&lc->b, "cluster: connected to redis"), "node b never connected");
}

static void lease_start(struct lease_case *lc)
{
        lease_start_with(lc, "{\"connections\": {\"value\": 2, \"source\": \"observed\"}}");
}

static void lease_finish(struct lease_case *lc)
{
        if (lc->a.tarryd)
                cr_assert_eq(harness_stop(&lc->a, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&lc->b, SIGTERM, 5000), 0);
        harness_cleanup(&lc->a);
        harness_cleanup(&lc->b);
        unlink(lc->policy);
        rmdir(lc->dir);
        fixture_free(lc->f);
        redis_cleanup(&lc->r);
        dnsmasq_stop(lc->dns);
}

/* A provider allows 2 connections per source address; two nodes sending
 * from the same address to its MX hosts, with a slow receiver, never have
 * more than 2 open there together (each alone keeps to 2, so without the
 * fleet's leases up to 4). A node killed with SIGKILL while it holds both
 * leases gives them back by expiry, and the other node then uses both. */
Test(fleet, a_provider_connection_limit_holds_across_the_fleet_and_a_dead_nodes_leases_expire,
     .timeout = 240)
{
        struct lease_case lc;
        lease_start(&lc);
        struct harness *a = &lc.a, *b = &lc.b;
        struct fixture *f = lc.f;

        send_to_domains(a, "a", LEASE_DOMAINS);
        send_to_domains(b, "b", LEASE_DOMAINS);
        cr_assert_eq(fixture_wait_txns(f, 2 * LEASE_DOMAINS, 120000), 0,
                     "%zu of %d messages arrived", fixture_txn_count(f), 2 * LEASE_DOMAINS);
        cr_assert_leq(fixture_max_open_connections(f), 2,
                      "%zu connections at once from both nodes to a provider allowing 2",
                      fixture_max_open_connections(f));
        cr_log_info("redis: %ld EVAL (leases, renewals, summaries), %ld ZREM for %d messages",
                    redis_calls(&lc.r, "eval"), redis_calls(&lc.r, "zrem"), 2 * LEASE_DOMAINS);

        /* a takes both leases (its connections hang at MAIL), and dies */
        cr_assert(wait_open_connections(f, 0), "the first round's connections never closed");
        fixture_set(f, "hang", "mail");
        send_to_domains(a, "dead", 2);
        cr_assert(wait_open_connections(f, 2), "node a never opened its 2 connections");
        harness_kill9(a);
        cr_assert(wait_open_connections(f, 0), "node a's connections outlived it");
        fixture_set(f, "hang", "none");
        size_t before = fixture_txn_count(f);
        int64_t killed_us = harness_now_us();
        send_to_domains(b, "after", 4);
        cr_assert(wait_open_connections(f, 2), "node b never used both connections");
        int64_t waited_ms = (harness_now_us() - killed_us) / 1000;
        cr_log_info("node b had both connections %lld ms after node a died", (long long)waited_ms);
        /* a's leases last 15 s from their latest renewal (every 5 s, later on a
         * loaded machine); a free lease would have been b's within 2 s (back-off) */
        cr_assert_geq(waited_ms, 5000, "node b did not wait for node a's leases to expire");
        cr_assert_eq(fixture_wait_txns(f, before + 4, 60000), 0, "node b's mail did not arrive");
        cr_assert_leq(fixture_max_open_connections(f), 2);

        lease_finish(&lc);
}

/* Redis stalled (SIGSTOP: connections are accepted, nothing answers):
 * lease requests go unanswered, the connection is dropped after 2 s, and
 * each node delivers within its own limit; no mail waits for Redis. */
Test(fleet, with_redis_stalled_a_provider_limit_is_each_nodes_own_and_mail_flows, .timeout = 180)
{
        struct lease_case lc;
        lease_start(&lc);
        kill(lc.r.pid, SIGSTOP);
        send_to_domains(&lc.a, "a", LEASE_DOMAINS);
        send_to_domains(&lc.b, "b", LEASE_DOMAINS);
        cr_assert_eq(fixture_wait_txns(lc.f, 2 * LEASE_DOMAINS, 120000), 0,
                     "%zu of %d messages arrived with redis stalled", fixture_txn_count(lc.f),
                     2 * LEASE_DOMAINS);
        cr_assert(wait_log(&lc.a, "until it is back"), "node a did not notice");
        cr_assert(wait_log(&lc.b, "until it is back"), "node b did not notice");
        cr_assert_leq(fixture_max_open_connections(lc.f), 4, "more than each node's own 2");
        kill(lc.r.pid, SIGCONT);
        lease_finish(&lc);
}

/* Replace the first occurrence of from with to in h's tarry.conf. */
static void edit_config(struct harness *h, const char *from, const char *to)
{
        FILE *f = fopen(h->conf, "r");
        cr_assert_not_null(f);
        char text[8192];
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        char *at = strstr(text, from);
        cr_assert_not_null(at, "%s not in %s", from, h->conf);
        char out[8192];
        snprintf(out, sizeof(out), "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        harness_write_config(h, out);
}

/* A SIGHUP with another [cluster] redis and node takes effect: node b
 * leaves its Redis and joins node a's under its new name, and then hears
 * a's suspension. A [cluster] that cannot work is refused by the reload,
 * named, and the node stays where it is. */
Test(fleet, a_reload_with_another_cluster_redis_and_node_joins_that_fleet, .timeout = 180)
{
        struct redis r1 = {0}, r2 = {0};
        redis_start(&r1);
        redis_start(&r2);
        struct fixture *f = start_fixture();
        fixture_set(f, "rcpt", REPUTATION);
        struct harness a, b;
        init_node(&a, "a", f, &r2);
        init_node(&b, "b", f, &r1);
        harness_start(&a);
        harness_start(&b);
        cr_assert(wait_log(&a, "cluster: connected to redis"), "node a never connected");
        cr_assert(wait_log(&b, "cluster: connected to redis"), "node b never connected");

        char from[64], to[64], want[128];
        snprintf(from, sizeof(from), "redis = 127.0.0.1:%d\nnode = b\n", r1.port);
        snprintf(to, sizeof(to), "redis = 127.0.0.1:%d\nnode = b2\n", r2.port);
        edit_config(&b, from, "redis = no-such-host:1\nnode = b\n");
        kill(b.tarryd, SIGHUP);
        cr_assert(wait_log(&b, "reload failed, keeping the running configuration: [cluster] "
                               "redis: 'no-such-host:1': the host must be an IP address"),
                  "a bad [cluster] was not refused by name");
        edit_config(&b, "redis = no-such-host:1\nnode = b\n", to);
        kill(b.tarryd, SIGHUP);
        snprintf(want, sizeof(want), "cluster: connected to redis 127.0.0.1:%d as node b2",
                 r2.port);
        cr_assert(wait_log(&b, want), "node b did not join the new redis as b2");
        cr_assert(harness_log_contains(&b, "reload: [cluster] redis, node changed"));

        harness_send(&a, "alice@sender.test", "one@example.test", "from a");
        cr_assert(wait_log(&a, "class=reputation"), "node a's attempt was not deferred");
        cr_assert(wait_log(&b, "cluster: node a suspended"), "node b never heard of it");
        fixture_set(f, "rcpt", "250 2.1.5 Ok");
        assert_held_at(&b, f, "two@example.test");

        /* the fleet view from a lists b under its new name */
        char *out = NULL, *err = NULL;
        bool listed = false;
        for (int i = 0; i < WAIT_MS / 100 && !listed; i++) {
                free(out);
                free(err);
                cr_assert_eq(
                    harness_tarryq(&a, (const char *[]){"-s", "--fleet", NULL}, &out, &err), 0,
                    "%s", err);
                listed = strstr(out, "  b2: ") != NULL;
                if (!listed)
                        harness_sleep_ms(100);
        }
        cr_assert(listed, "tarryq -s --fleet at a:\n%s", out);
        free(out);
        free(err);

        cr_assert_eq(harness_stop(&a, SIGTERM, 5000), 0);
        cr_assert_eq(harness_stop(&b, SIGTERM, 5000), 0);
        harness_cleanup(&a);
        harness_cleanup(&b);
        fixture_free(f);
        redis_cleanup(&r1);
        redis_cleanup(&r2);
}

/* tarryd --check names a [cluster] setting that cannot work, exit 78, and
 * never connects to find out. */
Test(fleet, tarryd_check_names_a_cluster_setting_that_cannot_work)
{
        static const struct {
                const char *lines, *message;
        } bad[] = {
            {"redis = redis.example:6379\n",
             "[cluster] redis: 'redis.example:6379': the host must be an IP address"},
            {"redis = 127.0.0.1\n", "[cluster] redis: '127.0.0.1' is not HOST:PORT or unix:PATH"},
            {"redis = unix:redis.sock\n",
             "[cluster] redis: 'unix:redis.sock': unix: needs an absolute path"},
            {"redis = 127.0.0.1:6379\nnode = mx 1\n", "[cluster] node: 'mx 1' is not a node name"},
            {"redis = 127.0.0.1:6379\nprefix = a b\n", "[cluster] prefix: 'a b' has white space"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char conf[] = "/tmp/tarry-fleet-conf-XXXXXX", out[] = "/tmp/tarry-fleet-out-XXXXXX";
                int fd = mkstemp(conf), ofd = mkstemp(out);
                cr_assert(fd >= 0 && ofd >= 0);
                dprintf(fd, "[main]\nspool_dir = /nonexistent\n[cluster]\n%s", bad[i].lines);
                close(fd);
                close(ofd);
                char cmd[1024];
                snprintf(cmd, sizeof(cmd), "'%s' -C '%s' --check >/dev/null 2>'%s'",
                         harness_binary("daemon/tarryd"), conf, out);
                int st = system(cmd);
                char err[512] = "";
                FILE *f = fopen(out, "r");
                cr_assert_not_null(f);
                size_t n = fread(err, 1, sizeof(err) - 1, f);
                err[n] = '\0';
                fclose(f);
                unlink(conf);
                unlink(out);
                cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 78, "%s: exit %d", bad[i].lines,
                          WEXITSTATUS(st));
                cr_expect_not_null(strstr(err, bad[i].message), "%s", err);
        }
}

/* ---- the leases behind the scheduler's gate ---- */

#define LEASE_KEY "tarry:conn:127.0.0.2/site:prov"

/* Another node (the test) holds n of the provider's leases, for a minute. */
static void hold_leases(struct redis *r, int n)
{
        for (int i = 0; i < n; i++) {
                char cmd[256], reply[64];
                snprintf(cmd, sizeof(cmd), "ZADD %s %lld other:1:%d", LEASE_KEY,
                         (long long)(harness_now_us() / 1000 + 60000), i);
                redis_cmd(r, cmd, reply, sizeof(reply));
                cr_assert_str_eq(reply, ":1", "ZADD: %s", reply);
        }
}

static void release_leases(struct redis *r)
{
        char reply[64];
        redis_cmd(r, "DEL " LEASE_KEY, reply, sizeof(reply));
        cr_assert_str_eq(reply, ":1", "DEL: %s", reply);
}

/* Lease requests so far: only the lease script calls ZCARD. */
static long lease_asks(struct redis *r)
{
        long n = redis_calls(r, "zcard");
        return n < 0 ? 0 : n;
}

/* While the fleet's leases are all taken elsewhere, a node with 4 messages
 * for the site asks Redis once, then again after a back-off (250 ms
 * doubling to 2 s): over 8 s about 6 requests, where asking every 250 ms
 * (per item or per site) makes 16 to 32. Once a lease is given back the
 * mail goes out, within the limit. */
Test(fleet, a_node_waiting_for_a_lease_asks_redis_with_a_back_off_not_every_250ms, .timeout = 180)
{
        struct lease_case lc;
        lease_start(&lc);
        struct harness *b = &lc.b;
        hold_leases(&lc.r, 2);
        long before = lease_asks(&lc.r);
        send_to_domains(b, "w", 4);
        for (int i = 0; lease_asks(&lc.r) == before; i++) {
                cr_assert_lt(i, WAIT_MS / 10, "node b never asked for a lease");
                harness_sleep_ms(10);
        }
        long first = lease_asks(&lc.r);
        harness_sleep_ms(8000);
        long asked = lease_asks(&lc.r) - first;
        cr_log_info("node b asked for a lease %ld times in 8 s while 4 messages waited", asked);
        cr_assert_eq(fixture_txn_count(lc.f), 0, "mail went out without a lease");
        cr_assert_eq(fixture_max_open_connections(lc.f), 0);
        cr_assert_leq(asked, 10, "%ld lease requests in 8 s: polled, not backed off", asked);
        cr_assert_geq(asked, 3, "%ld lease requests in 8 s: a refusal is asked again", asked);

        release_leases(&lc.r);
        cr_assert_eq(fixture_wait_txns(lc.f, 4, 60000), 0, "%zu of 4 messages arrived",
                     fixture_txn_count(lc.f));
        cr_assert_leq(fixture_max_open_connections(lc.f), 2);
        lease_finish(&lc);
}

/* A site with both a connection limit and a rate (4 a minute: 15 s apart),
 * its one lease held elsewhere for a while: the waiting uses up no pace
 * slot, so the first message goes out within moments of the lease coming
 * back, and the next one 15 s after it (the rule's pace, neither less nor
 * more). When a wait took a pace slot, the first one went out up to 15 s
 * late. */
Test(fleet, an_item_waiting_for_a_lease_uses_no_pace_slot, .timeout = 180)
{
        struct lease_case lc;
        lease_start_with(&lc, "{\"connections\": {\"value\": 1, \"source\": \"observed\"}, "
                              "\"messages_per_minute\": {\"value\": 4, \"source\": \"observed\"}}");
        struct harness *b = &lc.b;
        hold_leases(&lc.r, 1);
        long before = lease_asks(&lc.r);
        send_to_domains(b, "p", 2);
        for (int i = 0; lease_asks(&lc.r) == before; i++) {
                cr_assert_lt(i, WAIT_MS / 10, "node b never asked for a lease");
                harness_sleep_ms(10);
        }
        harness_sleep_ms(3000);
        cr_assert_eq(fixture_txn_count(lc.f), 0, "mail went out without a lease");
        int64_t released = harness_now_us();
        release_leases(&lc.r);
        cr_assert_eq(fixture_wait_txns(lc.f, 1, 60000), 0, "nothing arrived after the release");
        int64_t first_ms = (txn_time(lc.f, 0) - released) / 1000;
        cr_assert_eq(fixture_wait_txns(lc.f, 2, 60000), 0, "the second message did not arrive");
        int64_t gap_ms = (txn_time(lc.f, 1) - txn_time(lc.f, 0)) / 1000;
        cr_log_info("first message %lld ms after the lease came back, the second %lld ms later",
                    (long long)first_ms, (long long)gap_ms);
        /* the back-off is at most 2 s; the rest is a slow machine's margin */
        cr_assert_leq(first_ms, 7000,
                      "the first message waited %lld ms after the lease came "
                      "back: the wait used up a pace slot",
                      (long long)first_ms);
        cr_assert_geq(gap_ms, 14000, "4 a minute: the second came %lld ms after the first",
                      (long long)gap_ms);
        lease_finish(&lc);
}

/* Messages waiting for a lease held elsewhere, and a reload that leaves the
 * fleet: they are asked about again at once and go out on the local limit
 * (the cluster that was to wake them is gone). */
Test(fleet, a_reload_leaving_the_fleet_lets_the_mail_waiting_for_a_lease_go, .timeout = 180)
{
        struct lease_case lc;
        lease_start(&lc);
        struct harness *b = &lc.b;
        hold_leases(&lc.r, 2);
        long before = lease_asks(&lc.r);
        send_to_domains(b, "r", 2);
        for (int i = 0; lease_asks(&lc.r) == before; i++) {
                cr_assert_lt(i, WAIT_MS / 10, "node b never asked for a lease");
                harness_sleep_ms(10);
        }
        harness_sleep_ms(500);
        cr_assert_eq(fixture_txn_count(lc.f), 0, "mail went out without a lease");
        char line[64];
        snprintf(line, sizeof(line), "redis = 127.0.0.1:%d\n", lc.r.port);
        edit_config(b, line, "");
        kill(b->tarryd, SIGHUP);
        cr_assert(wait_log(b, "this node leaves the fleet"), "the reload did not leave the fleet");
        cr_assert_eq(fixture_wait_txns(lc.f, 2, 20000), 0,
                     "%zu of 2 messages arrived after leaving the fleet", fixture_txn_count(lc.f));
        lease_finish(&lc);
}
