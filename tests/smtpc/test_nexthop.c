/* tests/smtpc/test_nexthop.c — next-hop trouble: what the administrator must
 * fix is deferred and says where it was configured; what the recipient's
 * domain says is the recipient's; long or odd MX answers; relay credentials
 * never cross the wire in clear. Real DNS (dnsmasq on a loopback port) and
 * the scripted SMTP server. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/scheduler.h"
#include "smtpc/dns.h"
#include "tests/fixture/fixture.h"
#include "tests/smtpc/harness.h"

#define BODY "From: a@example.org\r\nTo: b@x.test\r\nSubject: t\r\n\r\nhello\r\n"

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

/* Delivery by MX lookup through the dnsmasq on dport, to the fixture's port. */
static struct tarry_config *mx_cfg(struct fixture *f, uint16_t dport)
{
        return test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                        "[smtp]\ntls = none\nport = %u\nconnect_timeout = 2\ncommand_timeout = 2\n"
                        "dns_servers = 127.0.0.1:%u\n",
                        fixture_port(f), dport);
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
        struct fixture *f = test_fixture("127.0.0.1", NULL);
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
        struct tarry_config *cfg = mx_cfg(f, dport);
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
        struct fixture *f = test_fixture("127.0.0.1", NULL);
        /* MX 10 "mx.weird.test/x?y#z" in wire format, with an A record of its own */
        const char *dns[] = {
            "--dns-rr=weird.test,15,000a026d780577656972640a746573742f783f79237a00",
            "--dns-rr=mx.weird.test/x?y#z,1,7f000001",
            "--mx-host=weird.test,mx2.weird.test,20",
            "--host-record=mx2.weird.test,127.0.0.1",
        };
        uint16_t dport;
        int pid = dnsmasq_or_skip(dns, 4, &dport);
        struct tarry_config *cfg = mx_cfg(f, dport);
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
        struct fixture *f = test_fixture("127.0.0.1", NULL);
        const char *dns[] = {
            "--dns-rr=weird.test,15,000a026d780577656972640a746573742f783f79237a00",
            "--dns-rr=mx.weird.test/x?y#z,1,7f000001",
            "--host-record=weird.test,127.0.0.1",
        };
        uint16_t dport;
        int pid = dnsmasq_or_skip(dns, 3, &dport);
        struct tarry_config *cfg = mx_cfg(f, dport);
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

/* ---- relay credentials never cross the wire in clear ---- */

struct relay {
        struct fixture *f;
        char auth[32];   /* relay_auth_file */
        char tlsdir[32]; /* the fixture's certificate, "" when none */
};

/* A relay that requires AUTH PLAIN relayuser:s3cret; with_tls: it offers
 * STARTTLS with a self-signed certificate; extra: more fixture keys. */
static void relay_start(struct relay *r, bool with_tls, const char *key, const char *value)
{
        memset(r, 0, sizeof(*r));
        cr_assert_eq(fixture_new("127.0.0.1", &r->f), 0);
        cr_assert_eq(fixture_set(r->f, "auth", "relayuser:s3cret"), 0);
        if (with_tls) {
                snprintf(r->tlsdir, sizeof(r->tlsdir), "/tmp/nexthop-tls-XXXXXX");
                cr_assert_not_null(mkdtemp(r->tlsdir));
                cr_assert_eq(fixture_tls_generate(r->f, r->tlsdir), 0, "openssl CLI needed");
        }
        if (key)
                cr_assert_eq(fixture_set(r->f, key, value), 0);
        cr_assert_eq(fixture_start(r->f, 0), 0);
        snprintf(r->auth, sizeof(r->auth), "/tmp/nexthop-auth-XXXXXX");
        int fd = mkstemp(r->auth);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "relayuser:s3cret\n", 17), 17);
        close(fd);
}

static struct tarry_config *relay_cfg(const struct relay *r, const char *tls, const char *smtp)
{
        return test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                        "relayhost = [127.0.0.1]:%u%s%s\n"
                        "[smtp]\nrelay_auth_file = %s\nconnect_timeout = 3\ncommand_timeout = 3\n"
                        "%s",
                        fixture_port(r->f), tls ? " tls=" : "", tls ? tls : "", r->auth,
                        smtp ? smtp : "");
}

static void relay_stop(struct relay *r)
{
        fixture_free(r->f);
        unlink(r->auth);
        if (r->tlsdir[0]) {
                char cmd[64];
                snprintf(cmd, sizeof(cmd), "rm -rf %s", r->tlsdir);
                cr_assert_eq(system(cmd), 0);
        }
}

static void assert_tls_deferral_without_auth(const struct relay *r, const struct outcome *o)
{
        cr_assert_eq(o->status, SMTPC_ATTEMPT_TEMPFAIL, "%s / %s", o->text, o->transcript);
        cr_assert_eq(o->failure, SMTPC_FAIL_TLS, "%s", o->text);
        cr_assert_str_eq(o->enhanced, "4.7.5");
        cr_assert_eq(o->r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_eq(fixture_cleartext_auth_count(r->f), 0, "AUTH reached the relay in clear");
        cr_assert_eq(fixture_txn_count(r->f), 0);
        cr_assert_null(strstr(o->transcript, "> AUTH"), "%s", o->transcript);
}

/* With the default tls=may, a relay (or whoever sits in the path and strips
 * STARTTLS from its EHLO) used to receive AUTH PLAIN in clear. */
Test(nexthop, relay_that_offers_no_starttls_never_receives_the_password)
{
        struct relay r;
        relay_start(&r, false, NULL, NULL);
        struct tarry_config *cfg = relay_cfg(&r, NULL, NULL);
        const char *rcpts[] = {"user@far.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        assert_tls_deferral_without_auth(&r, &o);
        cr_assert_eq(fixture_connection_count(r.f), 1);
        outcome_clear(&o);
        cfg_free(cfg);
        relay_stop(&r);
}

/* A broken handshake used to be retried without STARTTLS, AUTH included. */
Test(nexthop, relay_whose_tls_handshake_breaks_is_deferred_not_retried_in_clear)
{
        struct relay r;
        relay_start(&r, true, "tls_garbage", "yes");
        struct tarry_config *cfg = relay_cfg(&r, NULL, NULL);
        const char *rcpts[] = {"user@far.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        assert_tls_deferral_without_auth(&r, &o);
        cr_assert_eq(fixture_connection_count(r.f), 1, "reconnected (in clear)");
        outcome_clear(&o);
        cfg_free(cfg);
        relay_stop(&r);
}

/* Even an operator who allows cleartext AUTH (a relay without STARTTLS) gets
 * no silent downgrade from a relay that does offer it. */
Test(nexthop, relay_auth_cleartext_still_never_falls_back_after_a_broken_handshake)
{
        struct relay r;
        relay_start(&r, true, "tls_garbage", "yes");
        struct tarry_config *cfg = relay_cfg(&r, "may", "relay_auth_cleartext = yes\n");
        const char *rcpts[] = {"user@far.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        assert_tls_deferral_without_auth(&r, &o);
        cr_assert_eq(fixture_connection_count(r.f), 1, "reconnected (in clear)");
        outcome_clear(&o);
        cfg_free(cfg);
        relay_stop(&r);
}

/* With credentials, the default is tls=verify: a certificate that does not
 * verify (here self-signed; or a man in the middle's) gets no password.
 * tls=encrypt, written out, accepts it. */
Test(nexthop, relay_credentials_need_a_verified_certificate_unless_tls_encrypt_is_written)
{
        struct relay r;
        relay_start(&r, true, NULL, NULL);
        struct tarry_config *cfg = relay_cfg(&r, NULL, NULL);
        const char *rcpts[] = {"user@far.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        assert_tls_deferral_without_auth(&r, &o);
        cr_assert(strstr(o.text, "certificate"), "%s", o.text);
        outcome_clear(&o);
        cfg_free(cfg);

        cfg = relay_cfg(&r, "encrypt", NULL);
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 15);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s / %s", o.text, o.transcript);
        cr_assert_eq(fixture_wait_txns(r.f, 1, 2000), 0);
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(r.f, 0, &t), 0);
        cr_assert_str_eq(t.auth_user, "relayuser");
        cr_assert(t.tls);
        fixture_txn_clear(&t);
        cr_assert_eq(fixture_cleartext_auth_count(r.f), 0);
        outcome_clear(&o);
        cfg_free(cfg);
        relay_stop(&r);
}

Test(nexthop, relay_credentials_with_tls_none_are_a_config_error_unless_allowed)
{
        struct tarry_config *cfg = NULL;
        char err[512];
        const char *text = "[main]\nrelayhost = [smtp.example.net]:587 tls=none\n"
                           "[smtp]\nrelay_auth_file = /etc/tarry/auth\n";
        cr_assert_eq(cfg_load_string("t.conf", text, &cfg, err, sizeof(err)), -EINVAL);
        cr_assert(strstr(err, "t.conf:4: relayhost has tls=none but relay_auth_file is set"), "%s",
                  err);
        cr_assert(strstr(err, "relay_auth_cleartext = yes"), "%s", err);
        char allowed[512];
        snprintf(allowed, sizeof(allowed), "%srelay_auth_cleartext = yes\n", text);
        cr_assert_eq(cfg_load_string("t.conf", allowed, &cfg, err, sizeof(err)), 0, "%s", err);
        cfg_free(cfg);
}

/* ---- replies the scripted fixture cannot send (NUL bytes) ---- */

/* A one-connection SMTP server answering each command (and the end of the
 * data) with the next of its replies, sent byte for byte. */
struct raw_server {
        int lfd;
        uint16_t port;
        pthread_t th;
        const char *const *replies; /* greeting, EHLO, MAIL, RCPT, DATA, dot, QUIT */
        const size_t *lens;
        size_t n;
        size_t answered;
};

static void *raw_serve(void *arg)
{
        struct raw_server *s = arg;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
                return NULL;
        char buf[8192];
        size_t have = 0;
        bool data = false;
        if (s->n > 0 && write(fd, s->replies[0], s->lens[0]) < 0)
                goto out;
        s->answered = 1;
        for (;;) {
                ssize_t k = read(fd, buf + have, sizeof(buf) - have - 1);
                if (k <= 0)
                        break;
                have += (size_t)k;
                buf[have] = '\0';
                for (;;) {
                        char *end = data ? strstr(buf, "\r\n.\r\n") : strstr(buf, "\r\n");
                        if (!end)
                                break;
                        size_t used = (size_t)(end - buf) + (data ? 5 : 2);
                        bool was_data_cmd = !data && strncasecmp(buf, "DATA", 4) == 0;
                        memmove(buf, buf + used, have - used + 1);
                        have -= used;
                        data = was_data_cmd;
                        if (s->answered < s->n &&
                            write(fd, s->replies[s->answered], s->lens[s->answered]) < 0)
                                goto out;
                        s->answered++;
                }
                if (have >= sizeof(buf) - 1)
                        have = 0;
        }
out:
        close(fd);
        return NULL;
}

static void raw_start(struct raw_server *s, const char *const *replies, const size_t *lens,
                      size_t n)
{
        memset(s, 0, sizeof(*s));
        s->replies = replies;
        s->lens = lens;
        s->n = n;
        s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
        socklen_t sl = sizeof(sa);
        cr_assert_eq(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        cr_assert_eq(listen(s->lfd, 4), 0);
        getsockname(s->lfd, (struct sockaddr *)&sa, &sl);
        s->port = ntohs(sa.sin_port);
        cr_assert_eq(pthread_create(&s->th, NULL, raw_serve, s), 0);
}

static void raw_stop(struct raw_server *s)
{
        shutdown(s->lfd, SHUT_RDWR);
        pthread_join(s->th, NULL);
        close(s->lfd);
}

#define R(s) s, sizeof(s) - 1

static void deliver_to_raw(const char *nul_reply, size_t nul_len, int nul_at, struct outcome *o,
                           struct raw_server *s)
{
        static const char *const std[] = {
            "220 raw.test ESMTP\r\n", "250-raw.test\r\n250 8BITMIME\r\n",
            "250 2.1.0 Ok\r\n",       "250 2.1.5 Ok\r\n",
            "354 go ahead\r\n",       "250 2.0.0 Ok: queued\r\n",
            "221 2.0.0 Bye\r\n"};
        static const char *replies[7];
        static size_t lens[7];
        for (int i = 0; i < 7; i++) {
                replies[i] = i == nul_at ? nul_reply : std[i];
                lens[i] = i == nul_at ? nul_len : strlen(std[i]);
        }
        raw_start(s, replies, lens, 7);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\nconnect_timeout = 3\ncommand_timeout = 3\ndata_timeout = 4\n"
                     "[transport]\n* = [127.0.0.1]:%u tls=none\n",
                     s->port);
        const char *rcpts[] = {"user@x.test"};
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, o, 20);
        cfg_free(cfg);
}

static enum reply_class class_of(const char *text)
{
        struct sched_classifier *c = NULL;
        cr_assert_eq(sched_classifier_new(&c), 0);
        struct sched_verdict v;
        sched_classify_text(c, text, &v);
        sched_classifier_free(c);
        return v.cls;
}

/* "250\0" to MAIL FROM: libcurl never sees the reply end and waited for the
 * command timeout; tarry then logged "timed out while sending QUIT", classed
 * overload, which pauses the whole destination. It is a garbled reply: said
 * at once, naming the command, a protocol status (4.5.0) that the scheduler
 * classes unknown_temp (the recipient's own retry, no pause of the site). */
Test(nexthop, nul_byte_after_a_reply_code_is_a_garbled_reply_at_once_not_a_lost_connection)
{
        struct raw_server s;
        struct outcome o;
        deliver_to_raw(R("250\0\r\n"), 2, &o, &s);
        raw_stop(&s);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_TEMPFAIL, "%s", o.text);
        cr_assert_eq(o.failure, SMTPC_FAIL_PROTOCOL, "%s", o.text);
        cr_assert_str_eq(o.enhanced, "4.5.0");
        cr_assert(strstr(o.text, "garbled reply while sending MAIL FROM"), "%s", o.text);
        cr_assert_null(strstr(o.text, "timed out"), "%s", o.text);
        cr_assert_null(strstr(o.text, "lost connection"), "%s", o.text);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_lt(o.total_us, 2000000, "waited %lld us for the rest of the reply",
                     (long long)o.total_us);
        cr_assert_eq(class_of(o.text), CLASS_UNKNOWN_TEMP, "%s", o.text);
        outcome_clear(&o);
}

/* "250\0" to the final dot: the code says the server took the message (as
 * Postfix reads it); resending would deliver it twice. */
Test(nexthop, nul_byte_after_250_to_the_final_dot_still_counts_as_delivered)
{
        struct raw_server s;
        struct outcome o;
        deliver_to_raw(R("250\0\r\n"), 5, &o, &s);
        raw_stop(&s);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE, "%s", o.text);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[0].text);
        cr_assert_eq(o.r[0].code, 250);
        cr_assert_str_eq(o.r[0].text, "250?", "the NUL is shown, not a terminator");
        outcome_clear(&o);
}

/* "250-…" to the final dot, then continuation lines past 64 KB: the transfer
 * is cut off there, but the 2xx stands. It used to defer, and each retry
 * delivered the message once more. */
Test(nexthop, endless_continuation_after_250_to_the_final_dot_is_delivered_once)
{
        struct fixture *f;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_set(f, "endless", "dot"), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        struct tarry_config *cfg =
            test_cfg("[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"
                     "[smtp]\nconnect_timeout = 2\ncommand_timeout = 2\ndata_timeout = 3\n"
                     "[transport]\n* = [127.0.0.1]:%u tls=none\n",
                     fixture_port(f));
        const char *rcpts[] = {"user@x.test"};
        struct outcome o;
        test_deliver(cfg, "a@example.org", rcpts, 1, BODY, NULL, &o, 20);
        cr_assert_eq(o.status, SMTPC_ATTEMPT_DONE, "%s / %s", o.text, o.transcript);
        cr_assert_eq(o.r[0].outcome, SMTPC_RCPT_DELIVERED, "%s", o.r[0].text);
        cr_assert_eq(o.r[0].code, 250);
        cr_assert_leq(strlen(o.r[0].text), SMTPC_REPLY_MAX);
        cr_assert(strstr(o.transcript, "its 2xx stands"), "%s", o.transcript);
        cr_assert_eq(fixture_txn_count(f), 1);
        outcome_clear(&o);
        cfg_free(cfg);
        fixture_free(f);
}
