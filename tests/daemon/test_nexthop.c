/* tests/daemon/test_nexthop.c — tarryd end to end when the next hop or the
 * source address is the administrator's mistake: mail waits (never bounces),
 * the log names what to fix, and once it is fixed the mail leaves, once. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/dnsmasq.h"
#include "tests/fixture/fixture.h"

static struct fixture *start_fixture(void)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        return f;
}

/* Run tarryd with args; its exit code, stdout in out, stderr in err. */
static int run_tarryd(const char *const *args, char *out, size_t outlen, char *err, size_t errlen)
{
        char cmd[2048], errpath[] = "/tmp/tarry-nexthop-err-XXXXXX";
        int efd = mkstemp(errpath);
        cr_assert_geq(efd, 0);
        close(efd);
        size_t n = (size_t)snprintf(cmd, sizeof(cmd), "%s", harness_binary("daemon/tarryd"));
        for (size_t i = 0; args[i]; i++)
                n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, " '%s'", args[i]);
        snprintf(cmd + n, sizeof(cmd) - n, " 2>%s", errpath);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        size_t len = fread(out, 1, outlen - 1, p);
        out[len] = '\0';
        int st = pclose(p);
        FILE *e = fopen(errpath, "r");
        len = e ? fread(err, 1, errlen - 1, e) : 0;
        err[len] = '\0';
        if (e)
                fclose(e);
        unlink(errpath);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void flush(struct harness *h)
{
        const char *args[] = {"-f", NULL};
        char *out = NULL, *err = NULL;
        int r = harness_tarryq(h, args, &out, &err);
        cr_assert_eq(r, 0, "tarryq -f: %s%s", out ? out : "", err ? err : "");
        free(out);
        free(err);
}

/* ---- --check ---- */

Test(nexthop, check_warns_that_an_unbracketed_ip_relayhost_is_an_mx_lookup)
{
        struct harness h;
        harness_init(&h, "relayhost = 127.0.0.1:2600\n[transport]\nexample.test = 10.1.2.3\n");
        char out[16384], err[4096];
        const char *args[] = {"-C", h.conf, "--check", NULL};
        cr_assert_eq(run_tarryd(args, out, sizeof(out), err, sizeof(err)), 0, "%s", err);
        cr_assert_not_null(strstr(err, "tarryd: warning: "), "%s", err);
        cr_assert_not_null(strstr(err, "relayhost = 127.0.0.1:2600 looks up the MX records of a "
                                       "domain named \"127.0.0.1\"; to connect to that address, "
                                       "write relayhost = [127.0.0.1]:2600"),
                           "%s", err);
        cr_assert_not_null(strstr(err, "example.test = 10.1.2.3 looks up the MX records of a "
                                       "domain named \"10.1.2.3\"; to connect to that address, "
                                       "write example.test = [10.1.2.3]"),
                           "%s", err);
        cr_assert_not_null(strstr(err, "tarry.conf:"), "the warning names the file: %s", err);

        harness_write_config(&h, "[main]\nspool_dir = /x\nrelayhost = [127.0.0.1]:2600\n"
                                 "[transport]\nexample.test = relay.example.net:587\n");
        cr_assert_eq(run_tarryd(args, out, sizeof(out), err, sizeof(err)), 0, "%s", err);
        cr_assert_null(strstr(err, "warning"), "%s", err);
        harness_cleanup(&h);
}

/* dnsmasq on 127.0.0.1:*port, authoritative for .test; 0 when not installed. */
static pid_t start_dnsmasq(uint16_t *port)
{
        if (!dnsmasq_installed())
                return 0;
        static const char *const opts[] = {"--local=/test/",
                                           "--host-record=smtp.example.test,127.0.0.1"};
        char err[256];
        *port = 0;
        pid_t pid = dnsmasq_start(opts, 2, port, err, sizeof(err));
        cr_assert_gt(pid, 0, "%s", err);
        return pid;
}

/* A typo in relayhost used to bounce every message with 5.4.4 (and the
 * bounces went the same way). It is the administrator's to fix: the mail
 * waits, the log says which setting names which host; fixed and reloaded,
 * the mail leaves once, and no bounce was ever made. */
Test(nexthop, relayhost_typo_defers_mail_until_the_config_is_fixed_and_never_bounces, .timeout = 90)
{
        uint16_t dport = 0;
        pid_t dns = start_dnsmasq(&dport);
        if (dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        struct fixture *f = start_fixture();
        struct harness h;
        char conf[1024];
        snprintf(conf, sizeof(conf),
                 "relayhost = [smtp.exmaple.test]:%u tls=none\n"
                 "[smtp]\nconnect_timeout = 2s\ncommand_timeout = 3s\ndata_timeout = 5s\n"
                 "dns_servers = 127.0.0.1:%u\n",
                 fixture_port(f), dport);
        harness_init(&h, conf);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@example.org", "relay typo");
        cr_assert(harness_wait_log(&h, "status=deferred", 1, 10000), "no deferral logged");
        cr_assert(harness_log_contains(&h, "dsn=4.4.3"));
        cr_assert(harness_log_contains(&h, "relayhost smtp.exmaple.test: host not found"));
        cr_assert(harness_log_contains(&h, "class=routing"));
        cr_assert_not(harness_log_contains(&h, "status=bounced"));
        cr_assert_eq(harness_count_queued(&h, "active"), 1, "the message left the queue");

        /* the administrator fixes the line and reloads; flush, as they would */
        FILE *cf = fopen(h.conf, "r");
        char text[4096];
        size_t n = fread(text, 1, sizeof(text) - 1, cf);
        text[n] = '\0';
        fclose(cf);
        char *typo = strstr(text, "exmaple");
        cr_assert_not_null(typo);
        memcpy(typo, "example", 7);
        harness_write_config(&h, text);
        kill(h.tarryd, SIGHUP);
        cr_assert(harness_wait_log(&h, "configuration reloaded", 1, 5000));
        flush(&h);
        cr_assert_eq(fixture_wait_txns(f, 1, 10000), 0, "not delivered after the fix");
        for (int i = 0; i < 500 && harness_count_queued(&h, "active") > 0; i++)
                harness_sleep_ms(10);
        cr_assert_eq(harness_count_queued(&h, "active"), 0);
        cr_assert_eq(harness_count_queued(&h, "incoming"), 0, "a bounce was queued");
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 1, "delivered more than once");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
        kill(dns, SIGTERM);
        waitpid(dns, NULL, 0);
}

/* ---- a pinned source address that is no longer configured ---- */

static void config_with_source(struct harness *h, struct fixture *f, const char *source_line,
                               char *out, size_t len)
{
        snprintf(out, len,
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = root\n"
                 "status_listen = unix:%s/status.sock, 127.0.0.1:0\nshutdown_timeout = 2s\n"
                 "%s"
                 "[smtp]\nconnect_timeout = 2s\ncommand_timeout = 3s\ndata_timeout = 5s\n"
                 "[transport]\nexample.test = [127.0.0.1]:%u\n",
                 h->spool, h->dir, source_line, fixture_port(f));
}

/* 10.99.99.99 is no address of this machine: the first attempt cannot bind,
 * and says so naming the address. The message is pinned to it. */
static void send_from_missing_source(struct harness *h, struct fixture *f)
{
        char conf[2048];
        harness_init(h, NULL);
        config_with_source(h, f, "source_address = 10.99.99.99\n", conf, sizeof(conf));
        harness_write_config(h, conf);
        harness_start(h);
        harness_send(h, "alice@sender.test", "bob@example.test", "pinned");
        cr_assert(harness_wait_log(h, "status=deferred", 1, 10000), "no deferral logged");
        cr_assert(harness_log_contains(h, "cannot bind source 10.99.99.99: Cannot assign "
                                          "requested address"));
        cr_assert_eq(fixture_txn_count(f), 0);
}

Test(nexthop, message_pinned_to_a_removed_source_address_is_re_pinned_after_reload, .timeout = 60)
{
        struct fixture *f = start_fixture();
        struct harness h;
        send_from_missing_source(&h, f);
        char conf[2048];
        config_with_source(&h, f, "source_address = 127.0.0.3\n", conf, sizeof(conf));
        harness_write_config(&h, conf);
        kill(h.tarryd, SIGHUP);
        cr_assert(harness_wait_log(&h, "configuration reloaded", 1, 5000));
        flush(&h);
        cr_assert_eq(fixture_wait_txns(f, 1, 10000), 0, "still trying the old address");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.peer_ip, "127.0.0.3");
        fixture_txn_clear(&t);
        cr_assert_eq(harness_log_count(&h, "pinned source address 10.99.99.99 is no longer "
                                           "configured; re-pinned to 127.0.0.3"),
                     1);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 1);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

/* The line removed altogether, and a restart: the kernel chooses again. */
Test(nexthop, message_pinned_to_a_source_address_whose_line_was_removed_leaves_after_restart,
     .timeout = 60)
{
        struct fixture *f = start_fixture();
        struct harness h;
        send_from_missing_source(&h, f);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        char conf[2048];
        config_with_source(&h, f, "", conf, sizeof(conf));
        harness_write_config(&h, conf);
        harness_start(&h);
        flush(&h);
        cr_assert_eq(fixture_wait_txns(f, 1, 10000), 0, "still trying the old address");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.peer_ip, "127.0.0.1");
        fixture_txn_clear(&t);
        cr_assert_eq(harness_log_count(&h, "re-pinned to the kernel's choice"), 1);
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 1);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
