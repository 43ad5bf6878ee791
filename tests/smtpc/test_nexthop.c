/* tests/smtpc/test_nexthop.c — next-hop trouble: what the administrator must
 * fix is deferred and says where it was configured; what the recipient's
 * domain says is the recipient's; long or odd MX answers; relay credentials
 * never cross the wire in clear. Real DNS (dnsmasq on a loopback port) and
 * the scripted SMTP server. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "smtpc/dns.h"
#include "tests/fixture/fixture.h"
#include "tests/smtpc/harness.h"

#define BODY "From: a@example.org\r\nTo: b@x.test\r\nSubject: t\r\n\r\nhello\r\n"

static struct fixture *fixture_with(const char *const *kv)
{
        struct fixture *f;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        for (; kv && kv[0]; kv += 2)
                cr_assert_eq(fixture_set(f, kv[0], kv[1]), 0, "fixture key %s", kv[0]);
        cr_assert_eq(fixture_start(f, 0), 0);
        return f;
}

/* dnsmasq authoritative for .test (NXDOMAIN for names it does not know) */
static int dnsmasq_or_skip(const char *const *opts, size_t n, uint16_t *port)
{
        const char *all[32] = {"--local=/test/"};
        cr_assert_lt(n, 31);
        memcpy(all + 1, opts, n * sizeof(*opts));
        int pid = test_dnsmasq(all, n + 1, port);
        if (pid == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        return pid;
}

/* ---- the next hop the administrator configured does not resolve ---- */

Test(nexthop, relayhost_that_does_not_resolve_is_deferred_naming_the_relayhost)
{
        const char *dns[] = {"--host-record=smtp.example.test,127.0.0.1"};
        uint16_t dport;
        int pid = dnsmasq_or_skip(dns, 1, &dport);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "relayhost = [smtp.exmaple.test]:587\n"
                     "[smtp]\ndns_servers = 127.0.0.1:%u\n",
                     dport);
        const char *rcpts[] = {"user@example.org"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_DNS);
        cr_assert_eq(o.code, 451);
        cr_assert_str_eq(o.enhanced, "4.4.3");
        cr_assert_str_eq(o.text, "451 4.4.3 relayhost smtp.exmaple.test: host not found");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        outcome_clear(&o);
        cfg_free(cfg);
}

Test(nexthop, relayhost_written_for_an_mx_lookup_that_does_not_resolve_is_deferred)
{
        const char *dns[] = {"--host-record=smtp.example.test,127.0.0.1"};
        uint16_t dport;
        int pid = dnsmasq_or_skip(dns, 1, &dport);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "relayhost = smtp.exmaple.test\n"
                     "[smtp]\ndns_servers = 127.0.0.1:%u\n",
                     dport);
        const char *rcpts[] = {"user@example.org"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_str_eq(o.text, "451 4.4.3 relayhost smtp.exmaple.test: host not found");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        outcome_clear(&o);
        cfg_free(cfg);
}

Test(nexthop, transport_host_that_does_not_resolve_is_deferred_naming_its_row)
{
        uint16_t dport;
        const char *dns[] = {"--host-record=other.test,127.0.0.1"};
        int pid = dnsmasq_or_skip(dns, 1, &dport);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\ndns_servers = 127.0.0.1:%u\n"
                     "[transport]\nexample.org = [mail.exmaple.test]:2525\n",
                     dport);
        const char *rcpts[] = {"user@example.org"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_str_eq(o.enhanced, "4.4.3");
        cr_assert_str_eq(o.text,
                         "451 4.4.3 [transport] example.org = mail.exmaple.test: host not found");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        outcome_clear(&o);
        cfg_free(cfg);
}

Test(nexthop, recipient_domain_without_mx_or_address_records_still_bounces)
{
        uint16_t dport;
        const char *dns[] = {"--host-record=other.test,127.0.0.1"};
        int pid = dnsmasq_or_skip(dns, 1, &dport);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\ndns_servers = 127.0.0.1:%u\n",
                     dport);
        const char *rcpts[] = {"user@nowhere.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_PERMFAIL, "%s", o.text);
        cr_assert_str_eq(o.enhanced, "5.4.4");
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_FAILED);
        outcome_clear(&o);
        cfg_free(cfg);
}

/* ---- what the recipient domain's DNS says ---- */

/* dnsmasq answers MX records in the reverse of the order given: the most
 * preferred host (listed first) comes last of twelve. */
Test(nexthop, most_preferred_of_twelve_mx_hosts_is_tried_first_whatever_the_answer_order)
{
        struct fixture *f = fixture_with(NULL);
        char opts[16][80];
        const char *dns[16];
        size_t n = 0;
        snprintf(opts[n++], sizeof(opts[0]), "--mx-host=many.test,best.many.test,5");
        for (int i = 2; i <= 12; i++)
                snprintf(opts[n++], sizeof(opts[0]), "--mx-host=many.test,mx%d.many.test,%d", i,
                         10 + i);
        snprintf(opts[n++], sizeof(opts[0]), "--host-record=best.many.test,127.0.0.1");
        for (size_t i = 0; i < n; i++)
                dns[i] = opts[i];
        uint16_t dport;
        int pid = dnsmasq_or_skip(dns, n, &dport);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\ntls = none\nport = %u\nconnect_timeout = 2\ncommand_timeout = 2\n"
                     "dns_servers = 127.0.0.1:%u\n",
                     fixture_port(f), dport);
        const char *rcpts[] = {"user@many.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 20);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert_str_eq(o.mx_host, "best.many.test");
        cr_assert_eq(fixture_txn_count(f), 1);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

/* An MX name with URL syntax in it ("mx.weird.test/x?y#z") once became
 * libcurl's URL path: tarry said "EHLO x". Such a name is no host name: it
 * is skipped, the next MX gets the mail, with our own EHLO name. */
Test(nexthop, mx_name_that_is_not_a_host_name_is_skipped_and_never_reaches_the_url)
{
        struct fixture *f = fixture_with(NULL);
        /* MX 10 "mx.weird.test/x?y#z" in wire format, with an A record of its own */
        const char *dns[] = {
            "--dns-rr=weird.test,15,000a026d780577656972640a746573742f783f79237a00",
            "--dns-rr=mx.weird.test/x?y#z,1,7f000001",
            "--mx-host=weird.test,mx2.weird.test,20",
            "--host-record=mx2.weird.test,127.0.0.1",
        };
        uint16_t dport;
        int pid = dnsmasq_or_skip(dns, 4, &dport);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\ntls = none\nport = %u\nconnect_timeout = 2\ncommand_timeout = 2\n"
                     "dns_servers = 127.0.0.1:%u\n",
                     fixture_port(f), dport);
        const char *rcpts[] = {"user@weird.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 20);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert_str_eq(o.mx_host, "mx2.weird.test");
        cr_assert_eq(fixture_wait_txns(f, 1, 2000), 0);
        cr_assert_eq(fixture_txn_count(f), 1);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(f, 0, &t), 0);
        cr_assert_str_eq(t.helo, "client.test");
        fixture_txn_clear(&t);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

/* Only odd MX names, no usable one: MX records exist, so the domain's own
 * address is not a fallback (RFC 5321 5.1); a DNS error, deferred. */
Test(nexthop, mx_answer_with_only_names_that_are_not_host_names_is_deferred)
{
        struct fixture *f = fixture_with(NULL);
        const char *dns[] = {
            "--dns-rr=weird.test,15,000a026d780577656972640a746573742f783f79237a00",
            "--dns-rr=mx.weird.test/x?y#z,1,7f000001",
            "--host-record=weird.test,127.0.0.1",
        };
        uint16_t dport;
        int pid = dnsmasq_or_skip(dns, 3, &dport);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\ntls = none\nport = %u\nconnect_timeout = 2\ncommand_timeout = 2\n"
                     "dns_servers = 127.0.0.1:%u\n",
                     fixture_port(f), dport);
        const char *rcpts[] = {"user@weird.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 20);
        test_dnsmasq_stop(pid);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s / %s", o.text, o.transcript);
        cr_assert_eq(o.failure, SMTPC_FAIL_DNS);
        cr_assert_str_eq(o.enhanced, "4.4.3");
        cr_assert(strstr(o.text, "malformed host name in MX record"), "%s", o.text);
        cr_assert_eq(fixture_connection_count(f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}

Test(nexthop, only_host_names_pass_as_names_for_the_url)
{
        cr_assert(dns_host_name_ok("mx1.example.com"));
        cr_assert(dns_host_name_ok("mx1.example.com."));
        cr_assert(dns_host_name_ok("_spf-1.x9.example"));
        cr_assert(dns_host_name_ok("127.0.0.1"));
        cr_assert_not(dns_host_name_ok("mx.weird.test/x?y#z"));
        cr_assert_not(dns_host_name_ok("mx.weird.test:25"));
        cr_assert_not(dns_host_name_ok("mx\\032x.test"));
        cr_assert_not(dns_host_name_ok("a..b"));
        cr_assert_not(dns_host_name_ok(".a"));
        cr_assert_not(dns_host_name_ok("-a.b"));
        cr_assert_not(dns_host_name_ok("a-.b"));
        cr_assert_not(dns_host_name_ok("m\xc3\xa4x.test"));
        cr_assert_not(dns_host_name_ok(""));
        char label[70];
        memset(label, 'a', 64);
        label[64] = '\0';
        cr_assert_not(dns_host_name_ok(label));
        label[63] = '\0';
        cr_assert(dns_host_name_ok(label));
}
