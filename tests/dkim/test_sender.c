/* tests/dkim/test_sender.c — `tarryq check-sender` and tarryd's start-up
 * check against dnsmasq serving good and broken records (issue 18, "A
 * sender check"). The key is made with the real `tarryq dkim-keygen`. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/daemon/harness.h"
#include "tests/smtpc/harness.h"

struct dns_setup {
        struct harness h;
        int dnsmasq;
        uint16_t port;
        char key_txt[2048]; /* the record keygen printed, strings joined */
};

/* The TXT record from keygen's output: the quoted strings after "IN TXT". */
static void record_from(const char *out, char *txt, size_t size)
{
        const char *p = strstr(out, " IN TXT ");
        cr_assert_not_null(p, "%s", out);
        size_t o = 0;
        for (p += 8; *p && *p != '\n';) {
                const char *q = strchr(p, '"'), *e = q ? strchr(q + 1, '"') : NULL;
                if (!q || !e || q > strchr(p, '\n'))
                        break;
                o += (size_t)snprintf(txt + o, size - o, "%.*s", (int)(e - q - 1), q + 1);
                p = e + 1;
        }
}

/* tarry.conf for myorigin example.test from 192.0.2.1, a key made by keygen. */
static void setup_conf(struct dns_setup *s, const char *keygen_flag)
{
        harness_init(&s->h, NULL);
        char *out = NULL, *err = NULL;
        char conf[2048];
        snprintf(conf, sizeof conf,
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nmyorigin = example.test\n"
                 "user = %s\nsource_address = 192.0.2.1\n"
                 "status_listen = unix:%s/status.sock, 127.0.0.1:0\nshutdown_timeout = 2s\n",
                 s->h.spool, harness_can_switch_user() ? HARNESS_DAEMON_USER : "root", s->h.dir);
        harness_write_config(&s->h, conf);
        const char *args[] = {"dkim-keygen", "example.test", "s1", keygen_flag, NULL};
        cr_assert_eq(harness_tarryq(&s->h, args, &out, &err), 0, "%s", err);
        record_from(out, s->key_txt, sizeof s->key_txt);
        const char *row = strstr(out, "example.test = s1:");
        cr_assert_not_null(row, "%s", out);
        /* a template: start_dns fills in the port */
        char rest[2200];
        snprintf(rest, sizeof rest, "%s[smtp]\ndns_servers = 127.0.0.1:%%u\n[dkim]\n%.*s\n", conf,
                 (int)strcspn(row, "\n"), row);
        free(out);
        free(err);
        FILE *f = fopen(s->h.conf, "w");
        fputs(rest, f);
        fclose(f);
}

static void start_dns(struct dns_setup *s, const char *const *records, size_t n)
{
        const char *all[16] = {"--local=/test/", "--local=/192.in-addr.arpa/"};
        memcpy(all + 2, records, n * sizeof(*records));
        s->dnsmasq = test_dnsmasq(all, n + 2, &s->port);
        if (s->dnsmasq == 0)
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        char tmpl[2400], conf[2500];
        FILE *f = fopen(s->h.conf, "r");
        size_t len = fread(tmpl, 1, sizeof tmpl - 1, f);
        tmpl[len] = '\0';
        fclose(f);
        snprintf(conf, sizeof conf, tmpl, s->port);
        harness_write_config(&s->h, conf);
}

/* "--txt-record=NAME,chunk,chunk" for dnsmasq: strings of at most 250 bytes. */
static char *txt_option(const char *name, const char *txt)
{
        char *o = malloc(4096);
        size_t n = (size_t)snprintf(o, 4096, "--txt-record=%s", name);
        for (size_t off = 0; off < strlen(txt); off += 250)
                n += (size_t)snprintf(o + n, 4096 - n, ",%.250s", txt + off);
        return o;
}

static void stop_all(struct dns_setup *s)
{
        if (s->h.tarryd)
                harness_stop(&s->h, SIGTERM, 5000);
        test_dnsmasq_stop(s->dnsmasq);
        harness_cleanup(&s->h);
}

static int check_sender(struct dns_setup *s, char **out)
{
        char *err = NULL;
        const char *args[] = {"check-sender", NULL};
        int ex = harness_tarryq(&s->h, args, out, &err);
        free(err);
        return ex;
}

static void good_records(struct dns_setup *s, const char *flag)
{
        setup_conf(s, flag);
        char *dkim = txt_option("s1._domainkey.example.test", s->key_txt);
        const char *rec[] = {"--host-record=tarry.test,192.0.2.1",
                             "--txt-record=example.test,v=spf1 ip4:192.0.2.1 -all",
                             "--txt-record=_dmarc.example.test,v=DMARC1; p=reject", dkim};
        start_dns(s, rec, 4);
        free(dkim);
}

Test(sender, every_check_passes_when_dns_publishes_what_it_should)
{
        struct dns_setup s = {0};
        good_records(&s, NULL);
        char *out = NULL;
        int ex = check_sender(&s, &out);
        cr_assert_eq(ex, 0, "exit %d:\n%s", ex, out);
        cr_assert(strstr(out, "pass  PTR 192.0.2.1: tarry.test\n"), "%s", out);
        cr_assert(strstr(out, "pass  PTR forward 192.0.2.1"), "%s", out);
        cr_assert(strstr(out, "pass  PTR name tarry.test is myhostname tarry.test"), "%s", out);
        cr_assert(strstr(out, "pass  SPF example.test for 192.0.2.1: pass"), "%s", out);
        cr_assert(strstr(out, "pass  DKIM key s1._domainkey.example.test: matches"), "%s", out);
        cr_assert(strstr(out, "pass  DMARC example.test: v=DMARC1; p=reject"), "%s", out);
        cr_assert(strstr(out, "pass  DMARC alignment example.test: DKIM d=example.test aligned"),
                  "%s", out);
        cr_assert(strstr(out, "7 checks, 0 failed"), "%s", out);
        cr_assert_null(strstr(out, "FAIL"), "%s", out);
        free(out);
        stop_all(&s);
}

Test(sender, an_ed25519_selector_record_is_checked_against_its_key)
{
        struct dns_setup s = {0};
        good_records(&s, "--ed25519");
        char *out = NULL;
        cr_assert_eq(check_sender(&s, &out), 0, "%s", out);
        cr_assert(strstr(out, "pass  DKIM key s1._domainkey.example.test: matches"), "%s", out);
        free(out);
        stop_all(&s);
}

/* PTR to another name that does not resolve back, an SPF record that does not
 * list the address, the record of another key, no DMARC: each fails with the
 * record to publish. */
static void broken_records(struct dns_setup *s)
{
        setup_conf(s, NULL);
        const char *rec[] = {"--ptr-record=1.2.0.192.in-addr.arpa,other.test",
                             "--txt-record=example.test,v=spf1 ip4:192.0.2.99 -all",
                             "--txt-record=s1._domainkey.example.test,v=DKIM1; k=ed25519; "
                             "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="};
        start_dns(s, rec, 3);
}

Test(sender, each_broken_record_fails_with_the_record_to_publish)
{
        struct dns_setup s = {0};
        broken_records(&s);
        char *out = NULL;
        int ex = check_sender(&s, &out);
        cr_assert_eq(ex, 1, "exit %d:\n%s", ex, out);
        cr_assert(strstr(out, "pass  PTR 192.0.2.1: other.test\n"), "%s", out);
        cr_assert(strstr(out, "FAIL  PTR forward 192.0.2.1 → other.test → 192.0.2.1"), "%s", out);
        cr_assert(strstr(out, "      fix: other.test. IN A 192.0.2.1\n"), "%s", out);
        cr_assert(strstr(out, "FAIL  PTR name other.test is myhostname tarry.test"), "%s", out);
        cr_assert(strstr(out, "      fix: 1.2.0.192.in-addr.arpa. IN PTR tarry.test. (or set "
                              "myhostname = other.test in [main])"),
                  "%s", out);
        cr_assert(strstr(out, "FAIL  SPF example.test for 192.0.2.1: fail (v=spf1 ip4:192.0.2.99 "
                              "-all)"),
                  "%s", out);
        cr_assert(strstr(out, "      fix: example.test. IN TXT with ip4:192.0.2.1 added"), "%s",
                  out);
        cr_assert(strstr(out, "FAIL  DKIM key s1._domainkey.example.test: the record says "
                              "k=ed25519, the key file is rsa"),
                  "%s", out);
        char want[2200];
        snprintf(want, sizeof want, "      fix: s1._domainkey.example.test. IN TXT \"%s\"",
                 s.key_txt);
        cr_assert(strstr(out, want), "no '%s' in\n%s", want, out);
        cr_assert(strstr(out, "FAIL  DMARC example.test: no DMARC record"), "%s", out);
        cr_assert(strstr(out, "      fix: _dmarc.example.test. IN TXT \"v=DMARC1; p=none; "
                              "rua=mailto:postmaster@example.test\""),
                  "%s", out);
        cr_assert(strstr(out, "FAIL  DMARC alignment example.test"), "%s", out);
        cr_assert(strstr(out, "7 checks, 6 failed"), "%s", out);
        free(out);
        stop_all(&s);
}

Test(sender, tarryd_logs_a_warning_per_failed_check_at_start_and_runs_on)
{
        struct dns_setup s = {0};
        broken_records(&s);
        harness_start(&s.h);
        for (int i = 0; i < 1500 && !harness_log_contains(&s.h, "sender check: "); i++)
                harness_sleep_ms(20);
        cr_assert(harness_log_contains(&s.h, "sender check: 1 of 7 checks passed"),
                  "no summary of the sender check in the log");
        cr_assert_eq(harness_log_count(&s.h, "sender check failed: "), 6);
        cr_assert(harness_log_contains(&s.h, "sender check failed: SPF example.test for "
                                             "192.0.2.1: fail (v=spf1 ip4:192.0.2.99 -all); fix: "
                                             "example.test. IN TXT with ip4:192.0.2.1 added"));
        cr_assert(harness_running(&s.h), "tarryd must never refuse to run over DNS records");
        stop_all(&s);
}

Test(sender, tarryd_logs_no_warning_when_everything_passes)
{
        struct dns_setup s = {0};
        good_records(&s, NULL);
        harness_start(&s.h);
        for (int i = 0; i < 1500 && !harness_log_contains(&s.h, "sender check: "); i++)
                harness_sleep_ms(20);
        cr_assert(harness_log_contains(&s.h, "sender check: 7 of 7 checks passed"));
        cr_assert_eq(harness_log_count(&s.h, "sender check failed"), 0);
        stop_all(&s);
}
