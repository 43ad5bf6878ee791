/* tests/daemon/test_sites.c — tarryd schedules MX mail by receiving site
 * (issue 15 section 1), with real DNS (dnsmasq) and the real binaries:
 * domains that share MX hosts share a suspension, a provider's connection
 * limit holds at the receiver, and the site of waiting mail is listed. */
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

#include "cli/status_client.h"
#include "config/config.h"
#include "harness.h"
#include "smtpc/smtpc.h"
#include "tests/fixture/dnsmasq.h"
#include "tests/fixture/fixture.h"

/* dnsmasq on 127.0.0.1:*port (0: a free one, written back), authoritative
 * for .test, with the extra arguments (--mx-host=…, --host-record=…), once
 * it answers. */
static pid_t dnsmasq_on(uint16_t *port, const char *const *extra)
{
        const char *opts[64] = {"--local=/test/"};
        size_t n = 1;
        for (size_t i = 0; extra[i] && n < 50; i++)
                opts[n++] = extra[i];
        char err[256];
        pid_t pid = dnsmasq_start(opts, n, port, err, sizeof(err));
        cr_assert_gt(pid, 0, "%s", err);
        return pid;
}

/* dnsmasq_on a free port; 0 when not installed. */
static pid_t start_dnsmasq(uint16_t *port, const char *const *extra)
{
        if (!dnsmasq_installed())
                return 0;
        *port = 0;
        return dnsmasq_on(port, extra);
}

static void stop_dnsmasq(pid_t pid)
{
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
}

/* MX delivery to the fixture's port through dnsmasq; extra: more INI text. */
static void site_config(struct harness *h, struct fixture *f, uint16_t dport, const char *extra)
{
        char conf[2048];
        snprintf(conf, sizeof(conf),
                 "%s[smtp]\nport = %u\nconnect_timeout = 2s\ncommand_timeout = 3s\n"
                 "data_timeout = 5s\ndns_servers = 127.0.0.1:%u\n",
                 extra ? extra : "", fixture_port(f), dport);
        harness_init(h, conf);
}

/* The case: a.test and b.test share an MX host, c.test has its own.
 * A 4.7.650 (Microsoft: IP reputation) for a.test suspends their site:
 * b.test waits with it, c.test is delivered. */
Test(sites, a_reputation_deferral_holds_every_domain_of_the_site_and_no_other, .timeout = 90)
{
        uint16_t dport = 0;
        const char *records[] = {
            "--mx-host=a.test,mx.shared.test,10", "--mx-host=b.test,mx.shared.test,10",
            "--mx-host=c.test,mx.c.test,10",      "--host-record=mx.shared.test,127.0.0.1",
            "--host-record=mx.c.test,127.0.0.1",  NULL};
        pid_t dns = start_dnsmasq(&dport, records);
        if (dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_set(f, "rcpt:*@a.test",
                                 "451 4.7.650 The mail server [127.0.0.1] has been temporarily "
                                 "rate limited due to IP reputation."),
                     0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        site_config(&h, f, dport, NULL);
        harness_start(&h);

        harness_send(&h, "alice@sender.test", "bob@a.test", "to a");
        cr_assert(harness_wait_log(&h, "to=<bob@a.test>", 1, 20000), "a.test was not attempted");
        cr_assert(harness_log_contains(&h, "class=reputation"));
        harness_send(&h, "alice@sender.test", "carol@b.test", "to b");
        harness_send(&h, "alice@sender.test", "dave@c.test", "to c");

        cr_assert_eq(fixture_wait_txns(f, 1, 20000), 0, "c.test was not delivered");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_eq(t.n_rcpts, 1);
        cr_assert_str_eq(t.rcpts[0], "dave@c.test");
        fixture_txn_clear(&t);
        /* b.test was due at once; give it every chance to leave */
        cr_assert(harness_wait_log(&h, "removed", 1, 10000));
        harness_sleep_ms(1500);
        cr_assert_eq(fixture_txn_count(f), 1, "b.test was delivered past its site's suspension");
        cr_assert_not(harness_log_contains(&h, "to=<carol@b.test>"),
                      "b.test was attempted during its site's suspension");
        cr_assert_eq(harness_log_count(&h, "to=<bob@a.test>"), 1);
        cr_assert_eq(harness_count_queued(&h, "active"), 2);

        /* tarryq -s and /queue name the site of each waiting message */
        const char *args[] = {"-s", NULL};
        char *out = NULL, *err = NULL;
        cr_assert_eq(harness_tarryq(&h, args, &out, &err), 0, "%s", err ? err : "");
        cr_assert_not_null(strstr(out, "site site:mx.shared.test: 2 domain(s), 2 message(s)\n"),
                           "%s", out);
        cr_assert_not_null(strstr(out, "destination site:mx.shared.test: suspended"), "%s", out);
        free(out);
        free(err);
        /* tarryq -j (GET /queue on the unix socket): each waiting message's site */
        const char *jargs[] = {"-j", NULL};
        cr_assert_eq(harness_tarryq(&h, jargs, &out, &err), 0, "%s", err ? err : "");
        size_t in_site = 0;
        for (const char *p = out; (p = strstr(p, "\"sites\":[\"site:mx.shared.test\"]")); p++)
                in_site++;
        cr_assert_eq(in_site, 2, "%s", out);
        /* and b.test's recipient says why it waits: its site is suspended */
        const char *carol = strstr(out, "\"address\":\"carol@b.test\"");
        cr_assert_not_null(carol, "%s", out);
        const char *eol = strchr(carol, '\n');
        const char *why = strstr(carol, "\"next_attempt_reason\":\"destination_suspended\"");
        cr_assert(why && (!eol || why < eol), "%s", out);
        free(out);
        free(err);
        /* the TCP port (any local user): totals, no names */
        char *st = harness_http_get(&h, "/status");
        cr_assert_not_null(st);
        cr_assert_not_null(strstr(st, "\"site_totals\""), "%s", st);
        cr_assert_null(strstr(st, ".test"), "a name on the TCP status port: %s", st);
        free(st);

        /* the administrator resumes "b.test": that is its site, a.test's too */
        char sock[400];
        snprintf(sock, sizeof(sock), "unix:%s/status.sock", h.dir);
        const char *ul[] = {sock, NULL};
        struct status_client *c = NULL;
        cr_assert_eq(status_client_new(ul, &c), 0);
        long code = 0;
        char *body = NULL;
        size_t len = 0;
        cr_assert_eq(
            status_client_request(c, "POST", "/destinations/b.test/resume", &code, &body, &len), 0);
        cr_assert_eq(code / 100, 2, "resume b.test: %ld %s", code, body ? body : "");
        free(body);
        status_client_free(c);
        cr_assert_eq(fixture_wait_txns(f, 2, 20000), 0, "b.test not delivered after resume");
        cr_assert_eq(fixture_txn_get(f, 1, &t), 0);
        cr_assert_str_eq(t.rcpts[0], "carol@b.test");
        fixture_txn_clear(&t);

        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
        stop_dnsmasq(dns);
}

/* A provider entry with a 2-connection limit: six domains on its MX hosts,
 * each its own route, never see more than 2 connections at once at the
 * receiver — and all six are delivered, once. */
Test(sites, a_provider_connection_limit_holds_across_its_domains, .timeout = 120)
{
        uint16_t dport = 0;
        const char *records[] = {"--mx-host=d1.test,mx1.prov.test,10",
                                 "--mx-host=d2.test,mx1.prov.test,10",
                                 "--mx-host=d3.test,mx2.prov.test,10",
                                 "--mx-host=d4.test,mx2.prov.test,10",
                                 "--mx-host=d5.test,mx1.prov.test,10",
                                 "--mx-host=d6.test,mx2.prov.test,10",
                                 "--host-record=mx1.prov.test,127.0.0.1",
                                 "--host-record=mx2.prov.test,127.0.0.1",
                                 NULL};
        pid_t dns = start_dnsmasq(&dport, records);
        if (dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_set(f, "delay:dot", "700"), 0); /* attempts overlap */
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        site_config(&h, f, dport, NULL);
        char policy[300];
        snprintf(policy, sizeof(policy), "%s/local-policy.json", h.dir);
        FILE *pf = fopen(policy, "w");
        cr_assert_not_null(pf);
        fputs("{\"tarry_policy\": 1, \"providers\": [{\"name\": \"prov\", \"mx\": "
              "[\"*.prov.test\"], \"limits\": {\"connections\": {\"value\": 2, \"source\": "
              "\"observed\"}}, \"reason\": \"a test provider\"}]}\n",
              pf);
        fclose(pf);
        harness_give(&h, policy);
        FILE *cf = fopen(h.conf, "a");
        fprintf(cf, "[main]\nclassifier_rules = %s\n", policy);
        fclose(cf);

        harness_start(&h);
        for (int i = 1; i <= 6; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "user%d@d%d.test", i, i);
                harness_send(&h, "alice@sender.test", rcpt, "limited");
        }
        cr_assert_eq(fixture_wait_txns(f, 6, 60000), 0, "not every domain was delivered");
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 6, "delivered more than once");
        cr_assert_leq(fixture_max_open_connections(f), 2,
                      "%zu connections at once to the provider's MX hosts",
                      fixture_max_open_connections(f));
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
        stop_dnsmasq(dns);
}

/* ---- MX sets are kept for their DNS TTL ---- */

#define MX_OLD_IP "127.0.0.2"
#define MX_NEW_IP "127.0.0.3"

struct mx_change {
        pid_t dns;
        uint16_t dport;
        char ttl_arg[32];
        struct fixture *old_mx, *new_mx; /* on MX_OLD_IP / MX_NEW_IP, the same port */
        struct harness h;
};

/* t.test's MX is mx-old.test (MX_OLD_IP) with records of the given TTL;
 * tarryd keeps MX sets at least 1 s and sends one message per connection
 * (a kept connection would go to the old host whatever DNS says). The
 * first message reaches the old MX host, then dnsmasq is restarted on the
 * same port with mx-new.test (MX_NEW_IP) as t.test's MX. */
static void mx_change_start(struct mx_change *mc, unsigned ttl)
{
        snprintf(mc->ttl_arg, sizeof(mc->ttl_arg), "--local-ttl=%u", ttl);
        const char *before[] = {"--mx-host=t.test,mx-old.test,10",
                                "--host-record=mx-old.test," MX_OLD_IP,
                                "--host-record=mx-new.test," MX_NEW_IP, mc->ttl_arg, NULL};
        mc->dns = start_dnsmasq(&mc->dport, before);
        if (mc->dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        cr_assert_eq(fixture_new(MX_OLD_IP, &mc->old_mx), 0);
        cr_assert_eq(fixture_start(mc->old_mx, 0), 0);
        cr_assert_eq(fixture_new(MX_NEW_IP, &mc->new_mx), 0);
        cr_assert_eq(fixture_start(mc->new_mx, fixture_port(mc->old_mx)), 0,
                     "port %u is taken on " MX_NEW_IP, fixture_port(mc->old_mx));
        site_config(&mc->h, mc->old_mx, mc->dport, NULL);
        FILE *cf = fopen(mc->h.conf, "a");
        cr_assert_not_null(cf);
        fprintf(cf, "mx_cache_min_ttl = 1s\nmax_deliveries_per_connection = 1\n");
        fclose(cf);
        harness_start(&mc->h);

        harness_send(&mc->h, "alice@sender.test", "first@t.test", "before the change");
        cr_assert_eq(fixture_wait_txns(mc->old_mx, 1, 20000), 0, "not delivered to mx-old.test");
        cr_assert(harness_wait_log(&mc->h, "removed", 1, 20000));

        stop_dnsmasq(mc->dns);
        const char *after[] = {"--mx-host=t.test,mx-new.test,10",
                               "--host-record=mx-old.test," MX_OLD_IP,
                               "--host-record=mx-new.test," MX_NEW_IP, mc->ttl_arg, NULL};
        mc->dns = dnsmasq_on(&mc->dport, after); /* the same port */
}

static void mx_change_stop(struct mx_change *mc)
{
        cr_assert_eq(harness_stop(&mc->h, SIGTERM, 3000), 0);
        harness_cleanup(&mc->h);
        fixture_free(mc->old_mx);
        fixture_free(mc->new_mx);
        stop_dnsmasq(mc->dns);
}

/* Within the TTL of t.test's MX records (an hour) mail still goes to the MX
 * host tarryd has cached, although DNS now names another one. */
Test(sites, within_the_mx_ttl_mail_goes_to_the_cached_mx_host, .timeout = 120)
{
        struct mx_change mc;
        mx_change_start(&mc, 3600);
        harness_send(&mc.h, "alice@sender.test", "second@t.test", "within the TTL");
        cr_assert_eq(fixture_wait_txns(mc.old_mx, 2, 20000), 0,
                     "not delivered to the cached mx-old.test");
        cr_assert(harness_wait_log(&mc.h, "removed", 2, 20000));
        cr_assert_eq(fixture_txn_count(mc.new_mx), 0, "mx-new.test got mail within the TTL");
        cr_assert_eq(fixture_connection_count(mc.new_mx), 0);
        mx_change_stop(&mc);
}

/* Once the TTL (2 s) has passed, the new MX set is looked up: mail goes to
 * mx-new.test and the domain's site follows it (a message deferred there
 * waits for site:mx-new.test, as tarryq -s shows). */
Test(sites, after_the_mx_ttl_mail_and_the_site_follow_the_new_mx_host, .timeout = 120)
{
        struct mx_change mc;
        mx_change_start(&mc, 2);
        cr_assert_eq(fixture_set(mc.new_mx, "rcpt:third@t.test", "451 4.3.0 try again later"), 0);
        harness_sleep_ms(3000); /* the TTL passes */
        harness_send(&mc.h, "alice@sender.test", "second@t.test", "after the TTL");
        cr_assert_eq(fixture_wait_txns(mc.new_mx, 1, 20000), 0, "not delivered to mx-new.test");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(mc.new_mx, 0, &t), 0);
        cr_assert_str_eq(t.rcpts[0], "second@t.test");
        fixture_txn_clear(&t);
        cr_assert_eq(fixture_txn_count(mc.old_mx), 1, "mx-old.test got mail after the TTL");

        harness_send(&mc.h, "alice@sender.test", "third@t.test", "deferred at the new host");
        cr_assert(harness_wait_log(&mc.h, "to=<third@t.test>", 1, 20000), "not attempted");
        cr_assert(harness_log_contains(&mc.h, "host mx-new.test[" MX_NEW_IP "] said: 451"));
        const char *args[] = {"-s", NULL};
        char *out = NULL, *err = NULL;
        cr_assert_eq(harness_tarryq(&mc.h, args, &out, &err), 0, "%s", err ? err : "");
        cr_assert_not_null(strstr(out, "site site:mx-new.test: 1 domain(s), 1 message(s)\n"), "%s",
                           out);
        cr_assert_null(strstr(out, "mx-old.test"), "%s", out);
        free(out);
        free(err);
        mx_change_stop(&mc);
}

/* ---- a provider's messages_per_connection ---- */

/* Five messages to p.test (MX mx1.prov.test) are queued before tarryd starts,
 * one connection at a time; with a provider entry for *.prov.test limiting
 * messages_per_connection to per_conn (0: no provider file), they are
 * delivered; returns the fixture for the caller to look at. */
static struct fixture *send_five_on_kept_connections(unsigned per_conn)
{
        uint16_t dport = 0;
        const char *records[] = {"--mx-host=p.test,mx1.prov.test,10",
                                 "--host-record=mx1.prov.test,127.0.0.1", NULL};
        pid_t dns = start_dnsmasq(&dport, records);
        if (dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        site_config(&h, f, dport, NULL);
        FILE *cf = fopen(h.conf, "a");
        cr_assert_not_null(cf);
        /* one connection at a time, so the messages line up on kept ones */
        fprintf(cf, "max_connections = 1\ndestination_concurrency = 1\n");
        if (per_conn > 0) {
                char policy[300];
                snprintf(policy, sizeof(policy), "%s/local-policy.json", h.dir);
                FILE *pf = fopen(policy, "w");
                cr_assert_not_null(pf);
                fprintf(pf,
                        "{\"tarry_policy\": 1, \"providers\": [{\"name\": \"prov\", \"mx\": "
                        "[\"*.prov.test\"], \"limits\": {\"messages_per_connection\": "
                        "{\"value\": %u, \"source\": \"observed\"}}, \"reason\": \"a test "
                        "provider\"}]}\n",
                        per_conn);
                fclose(pf);
                harness_give(&h, policy);
                fprintf(cf, "[main]\nclassifier_rules = %s\n", policy);
        }
        fclose(cf);
        harness_layout_spool(&h);
        for (int i = 1; i <= 5; i++) {
                char rcpt[64];
                snprintf(rcpt, sizeof(rcpt), "user%d@p.test", i);
                harness_send(&h, "alice@sender.test", rcpt, "kept");
        }
        harness_start(&h);
        cr_assert_eq(fixture_wait_txns(f, 5, 60000), 0, "not every message was delivered");
        cr_assert(harness_wait_log(&h, "removed", 5, 20000));
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(f), 5, "delivered more than once");
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        stop_dnsmasq(dns);
        return f;
}

/* How many transactions came on connection number conn (1, 2, …). */
static size_t txns_on_connection(struct fixture *f, size_t conn)
{
        size_t n = 0;
        for (size_t i = 0; i < fixture_txn_count(f); i++) {
                struct fixture_txn t;
                cr_assert_eq(fixture_txn_get(f, i, &t), 0);
                n += t.conn == conn;
                fixture_txn_clear(&t);
        }
        return n;
}

/* messages_per_connection = 2: five messages take three connections, 2 + 2 + 1. */
Test(sites, a_provider_messages_per_connection_limit_replaces_the_connection, .timeout = 120)
{
        struct fixture *f = send_five_on_kept_connections(2);
        cr_assert_eq(fixture_connection_count(f), 3, "%zu connections for 5 messages",
                     fixture_connection_count(f));
        cr_assert_eq(txns_on_connection(f, 1), 2);
        cr_assert_eq(txns_on_connection(f, 2), 2);
        cr_assert_eq(txns_on_connection(f, 3), 1);
        cr_assert_geq(fixture_quit_count(f), 2, "a full connection was not closed with QUIT");
        fixture_free(f);
}

/* The same five messages without the provider entry share one connection
 * ([smtp] max_deliveries_per_connection is 100). */
Test(sites, without_a_provider_limit_the_messages_share_one_connection, .timeout = 120)
{
        struct fixture *f = send_five_on_kept_connections(0);
        cr_assert_eq(fixture_connection_count(f), 1, "%zu connections for 5 messages",
                     fixture_connection_count(f));
        cr_assert_eq(txns_on_connection(f, 1), 5);
        fixture_free(f);
}

/* ---- [retry.reputation] move_source ---- */

#define POOL_A "127.0.0.2"
#define POOL_B "127.0.0.3"

struct pool_case {
        pid_t dns;
        struct fixture *f;
        struct harness h;
        const char *first;  /* the address tarryd picks for mx:a.test */
        const char *second; /* the other one */
};

/* a.test on one MX host; tarryd sends from a pool of two loopback addresses;
 * the receiver refuses every recipient from the address tarryd picks first
 * for a.test with Microsoft's 4.7.650 (that address's IP reputation). */
static void pool_start(struct pool_case *pc, bool move_source, const char *grey_rcpt)
{
        uint16_t dport = 0;
        const char *records[] = {"--mx-host=a.test,mx.shared.test,10",
                                 "--host-record=mx.shared.test,127.0.0.1", NULL};
        pc->dns = start_dnsmasq(&dport, records);
        if (pc->dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        cr_assert_eq(fixture_new("127.0.0.1", &pc->f), 0);
        cr_assert_eq(fixture_start(pc->f, 0), 0);
        char extra[512];
        snprintf(extra, sizeof(extra), "source_address = %s, %s\n", POOL_A, POOL_B);
        site_config(&pc->h, pc->f, dport, extra);
        FILE *cf = fopen(pc->h.conf, "a");
        cr_assert_not_null(cf);
        fprintf(cf, "[retry.reputation]\nmove_source = %s\n", move_source ? "yes" : "no");
        fclose(cf);
        struct tarry_config *cfg = NULL;
        char err[512];
        cr_assert_eq(cfg_load(pc->h.conf, &cfg, err, sizeof(err)), 0, "%s", err);
        bool a_first = strcmp(smtpc_pick_source(cfg, "mx:a.test"), POOL_A) == 0;
        pc->first = a_first ? POOL_A : POOL_B;
        pc->second = a_first ? POOL_B : POOL_A;
        cfg_free(cfg);
        char key[64];
        if (grey_rcpt) /* greylisted from any address, first */
                cr_assert_eq(
                    fixture_set(pc->f, grey_rcpt, "451 4.7.1 Greylisted, try again in 2 seconds"),
                    0);
        snprintf(key, sizeof(key), "rcpt_from:%s", pc->first);
        cr_assert_eq(fixture_set(pc->f, key,
                                 "451 4.7.650 The mail server has been temporarily rate limited "
                                 "due to IP reputation."),
                     0);
        harness_start(&pc->h);
}

static void pool_stop(struct pool_case *pc)
{
        cr_assert_eq(harness_stop(&pc->h, SIGTERM, 3000), 0);
        harness_cleanup(&pc->h);
        fixture_free(pc->f);
        stop_dnsmasq(pc->dns);
}

Test(sites, move_source_sends_a_message_held_by_a_reputation_suspension_from_another_address,
     .timeout = 90)
{
        struct pool_case pc;
        pool_start(&pc, true, NULL);
        harness_send(&pc.h, "alice@sender.test", "bob@a.test", "moves");
        cr_assert_eq(fixture_wait_txns(pc.f, 1, 20000), 0, "not delivered from the other address");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(pc.f, 0, &t), 0);
        cr_assert_str_eq(t.peer_ip, pc.second);
        fixture_txn_clear(&t);
        char moved[200];
        snprintf(moved, sizeof(moved), "moved from source address %s to %s: site:mx.shared.test",
                 pc.first, pc.second);
        cr_assert(harness_wait_log(&pc.h, moved, 1, 5000), "the move is not logged");
        cr_assert_eq(harness_log_count(&pc.h, "class=reputation"), 1);
        cr_assert(harness_wait_log(&pc.h, "removed", 1, 5000));
        harness_sleep_ms(300);
        cr_assert_eq(fixture_txn_count(pc.f), 1, "delivered more than once");
        pool_stop(&pc);
}

Test(sites, without_move_source_a_message_waits_for_its_own_address, .timeout = 90)
{
        struct pool_case pc;
        pool_start(&pc, false, NULL);
        harness_send(&pc.h, "alice@sender.test", "bob@a.test", "stays");
        cr_assert(harness_wait_log(&pc.h, "class=reputation", 1, 20000), "no reputation deferral");
        harness_sleep_ms(3000);
        cr_assert_eq(fixture_txn_count(pc.f), 0, "left from another address");
        cr_assert_eq(harness_log_count(&pc.h, "to=<bob@a.test>"), 1);
        cr_assert_not(harness_log_contains(&pc.h, "moved from source address"));
        cr_assert_eq(harness_count_queued(&pc.h, "active"), 1);
        pool_stop(&pc);
}

/* A greylister lets the same (address, sender, recipient) through, never
 * another address: a greylisted message stays with its address even when a
 * reputation suspension of that address moves other mail away. */
Test(sites, move_source_never_moves_a_greylisted_message, .timeout = 90)
{
        struct pool_case pc;
        pool_start(&pc, true, "rcpt:grey@a.test");
        harness_send(&pc.h, "alice@sender.test", "grey@a.test", "greylisted");
        cr_assert(harness_wait_log(&pc.h, "class=greylist", 1, 20000), "not greylisted");
        harness_send(&pc.h, "alice@sender.test", "rep@a.test", "reputation");
        cr_assert_eq(fixture_wait_txns(pc.f, 1, 20000), 0, "rep@a.test did not move");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(pc.f, 0, &t), 0);
        cr_assert_str_eq(t.rcpts[0], "rep@a.test");
        cr_assert_str_eq(t.peer_ip, pc.second);
        fixture_txn_clear(&t);
        /* grey@a.test's retry (2 s + 5 s) falls due while its address is suspended */
        harness_sleep_ms(9000);
        cr_assert_eq(harness_log_count(&pc.h, "to=<grey@a.test>"), 1,
                     "the greylisted message was tried from another address");
        cr_assert_eq(fixture_txn_count(pc.f), 1);
        pool_stop(&pc);
}

/* A domain whose MX set cannot be had is a site of its own and goes the way
 * it always went: NXDOMAIN bounces (5.4.4), a resolver that does not answer
 * defers (4.4.3, routing) — the site lookup neither strands nor bounces. */
Test(sites, a_failed_site_lookup_bounces_nxdomain_and_defers_a_dns_outage, .timeout = 90)
{
        uint16_t dport = 0;
        const char *records[] = {"--host-record=mx.c.test,127.0.0.1", NULL};
        pid_t dns = start_dnsmasq(&dport, records);
        if (dns == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct harness h;
        site_config(&h, f, dport, NULL);
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@nowhere.test", "nxdomain");
        cr_assert(harness_wait_log(&h, "status=bounced", 1, 20000), "NXDOMAIN did not bounce");
        cr_assert(harness_log_contains(&h, "dsn=5.4.4"));
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);

        /* the resolver goes away: mail waits */
        stop_dnsmasq(dns);
        site_config(&h, f, dport, NULL); /* nothing answers on dport now */
        harness_start(&h);
        harness_send(&h, "alice@sender.test", "bob@c.test", "dns down");
        cr_assert(harness_wait_log(&h, "status=deferred", 1, 60000), "no deferral");
        cr_assert(harness_log_contains(&h, "dsn=4.4.3"));
        cr_assert(harness_log_contains(&h, "class=routing"));
        cr_assert_not(harness_log_contains(&h, "status=bounced"));
        cr_assert_eq(harness_count_queued(&h, "active"), 1);
        cr_assert_eq(harness_stop(&h, SIGTERM, 3000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}
