/* tests/dkim/test_e2e.c — DKIM through the real tarryd: the bytes the
 * receiver (tests/fixture) saved verify with python3-dkim, for both key
 * types; a retry sends the signature of the first attempt; a bad key file
 * stops tarryd at start with the tarry.conf line. Keys come from the real
 * `tarryq dkim-keygen`. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/daemon/harness.h"
#include "tests/fixture/fixture.h"

#define WAIT_MS 20000

struct e2e {
        struct harness h;
        struct fixture *f;
        char saved[300];
        char conf[4096]; /* the [main] and [transport] part */
        char rows[1024]; /* [dkim] rows */
        char records[4][2048];
        size_t n_records;
};

static void e2e_init(struct e2e *s)
{
        cr_assert_eq(fixture_new("127.0.0.1", &s->f), 0);
        snprintf(s->saved, sizeof s->saved, "/tmp/tarry-dkim-e2e-XXXXXX");
        cr_assert_not_null(mkdtemp(s->saved));
        fixture_set(s->f, "save_dir", s->saved);
}

static void write_conf(struct e2e *s)
{
        char text[8192];
        snprintf(text, sizeof text,
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nuser = %s\n"
                 "status_listen = unix:%s/status.sock, 127.0.0.1:0\nshutdown_timeout = 2s\n"
                 "[transport]\n* = [127.0.0.1]:%u\n[dkim]\n%s",
                 s->h.spool, harness_can_switch_user() ? HARNESS_DAEMON_USER : "root", s->h.dir,
                 fixture_port(s->f), s->rows);
        harness_write_config(&s->h, text);
}

/* tarryq dkim-keygen DOMAIN SELECTOR [--ed25519]: the record, and the row added. */
static void keygen(struct e2e *s, const char *domain, const char *selector, bool ed)
{
        char *out = NULL, *err = NULL;
        const char *args[] = {"dkim-keygen", domain, selector, ed ? "--ed25519" : NULL, NULL};
        cr_assert_eq(harness_tarryq(&s->h, args, &out, &err), 0, "%s", err);
        /* the record: the quoted strings after IN TXT, joined */
        char txt[2048] = "";
        size_t o = 0;
        const char *p = strstr(out, " IN TXT ");
        cr_assert_not_null(p, "%s", out);
        for (p += 8; *p == '"' || *p == ' ';) {
                const char *e = *p == '"' ? strchr(p + 1, '"') : NULL;
                if (!e) {
                        p++;
                        continue;
                }
                o += (size_t)snprintf(txt + o, sizeof txt - o, "%.*s", (int)(e - p - 1), p + 1);
                p = e + 1;
        }
        snprintf(s->records[s->n_records++], sizeof s->records[0], "%s._domainkey.%s=%s", selector,
                 domain, txt);
        /* the [dkim] row keygen printed */
        char want[256];
        snprintf(want, sizeof want, "%s = %s:", domain, selector);
        const char *row = strstr(out, want);
        cr_assert_not_null(row, "%s", out);
        size_t len = strlen(s->rows);
        snprintf(s->rows + len, sizeof s->rows - len, "%.*s\n", (int)strcspn(row, "\n"), row);
        free(out);
        free(err);
}

static void e2e_stop(struct e2e *s)
{
        int st = s->h.tarryd ? harness_stop(&s->h, SIGTERM, 5000) : 0;
        if (st != 0) {
                char cmd[700];
                snprintf(cmd, sizeof cmd, "cat '%s' >&2", s->h.log);
                (void)!system(cmd);
        }
        cr_assert_eq(st, 0, "tarryd stopped with status %d (its log above)", st);
        harness_cleanup(&s->h);
        fixture_free(s->f);
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->saved);
        (void)!system(cmd);
}

/* verify.py on the n-th saved message; its exit code, output in out. */
static int verify_saved(struct e2e *s, int n, char *out, size_t outlen)
{
        char cmd[16384];
        int len =
            snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/dkim/verify.py' '%s/%d.eml'",
                     getenv("TARRY_SOURCE_DIR"), s->saved, n);
        for (size_t i = 0; i < s->n_records; i++)
                len += snprintf(cmd + len, sizeof cmd - (size_t)len, " '%s'", s->records[i]);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        size_t got = fread(out, 1, outlen - 1, p);
        out[got] = '\0';
        int st = pclose(p);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *saved_message(struct e2e *s, int n)
{
        char path[400];
        snprintf(path, sizeof path, "%s/%d.eml", s->saved, n);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "no saved message %s", path);
        char *buf = calloc(1, 1 << 20);
        size_t len = fread(buf, 1, (1 << 20) - 1, f);
        buf[len] = '\0';
        fclose(f);
        return buf;
}

/* Folded headers, trailing whitespace, empty lines at the end: as an
 * application would hand them to sendmail (LF line ends). */
static const char awkward[] = "From: \"Alice\" <alice@example.test>\n"
                              "To: bob@example.org,\n"
                              "\tcarol@example.org\n"
                              "Subject:  folded   \n"
                              "   subject\t\n"
                              "MIME-Version: 1.0\n"
                              "Content-Type: text/plain; charset=utf-8\n"
                              "\n"
                              "Hello   \n"
                              "\n"
                              "\n";

Test(dkim_e2e, mail_signed_by_tarryd_verifies_at_the_receiver_with_both_key_types)
{
        struct e2e s = {0};
        e2e_init(&s);
        cr_assert_eq(fixture_start(s.f, 0), 0);
        harness_init(&s.h, NULL);
        keygen(&s, "example.test", "rsa1", false);
        /* both selectors in one row: one row per domain */
        char *rsa_row = strdup(s.rows);
        s.rows[0] = '\0';
        keygen(&s, "example.test", "ed1", true);
        const char *ed_path = strchr(s.rows, ':') + 1;
        char row[1024];
        snprintf(row, sizeof row, "%.*s,ed1:%.*s\n", (int)strcspn(rsa_row, "\n"), rsa_row,
                 (int)strcspn(ed_path, "\n"), ed_path);
        snprintf(s.rows, sizeof s.rows, "%s", row);
        free(rsa_row);
        write_conf(&s);
        harness_start(&s.h);
        const char *args[] = {"-f", "alice@example.test", "bob@example.org", NULL};
        cr_assert_eq(harness_sendmail(&s.h, awkward, args), 0);
        cr_assert_eq(fixture_wait_txns(s.f, 1, WAIT_MS), 0, "nothing delivered");
        char out[4096];
        int ex = verify_saved(&s, 1, out, sizeof out);
        char *m = saved_message(&s, 1);
        cr_assert_eq(ex, 0, "verify.py: %s\non the wire:\n%s", out, m);
        cr_assert(strstr(out, "pass d=example.test s=rsa1 a=rsa-sha256"), "%s", out);
        cr_assert(strstr(out, "pass d=example.test s=ed1 a=ed25519-sha256"), "%s", out);
        /* the signatures first, then tarryd's Received:, then the message */
        cr_assert_eq(strncmp(m, "DKIM-Signature: v=1; a=rsa-sha256;", 34), 0, "%s", m);
        char *second = strstr(m + 1, "\r\nDKIM-Signature: v=1; a=ed25519-sha256;");
        char *received = strstr(m, "\r\nReceived: by tarry.test");
        cr_assert(second && received && second < received, "%s", m);
        cr_assert(harness_log_contains(&s.h, "DKIM-signed for example.test (2 signatures)"));
        free(m);
        e2e_stop(&s);
}

Test(dkim_e2e, mail_from_a_domain_without_a_row_goes_out_unsigned)
{
        struct e2e s = {0};
        e2e_init(&s);
        cr_assert_eq(fixture_start(s.f, 0), 0);
        harness_init(&s.h, NULL);
        keygen(&s, "example.test", "s1", true);
        write_conf(&s);
        harness_start(&s.h);
        const char *args[] = {"-f", "x@other.test", "bob@example.org", NULL};
        cr_assert_eq(harness_sendmail(&s.h, "From: x@other.test\nSubject: s\n\nhi\n", args), 0);
        cr_assert_eq(fixture_wait_txns(s.f, 1, WAIT_MS), 0, "nothing delivered");
        char *m = saved_message(&s, 1);
        cr_assert_null(strstr(m, "DKIM-Signature"), "%s", m);
        cr_assert_eq(strncmp(m, "Received: by tarry.test", 23), 0, "%s", m);
        free(m);
        e2e_stop(&s);
}

/* The first attempt is greylisted; meanwhile the key is rotated (a new
 * selector, reload). The retry carries the signature made for the first
 * attempt — the old selector — and it still verifies. */
Test(dkim_e2e, a_retry_sends_the_signature_of_the_first_attempt_even_after_a_key_rotation)
{
        struct e2e s = {0};
        e2e_init(&s);
        fixture_set(s.f, "greylist", "3");
        fixture_set(s.f, "greylist_reply", "451 4.7.1 Greylisted, try again in 3 seconds");
        cr_assert_eq(fixture_start(s.f, 0), 0);
        harness_init(&s.h, NULL);
        keygen(&s, "example.test", "old", false);
        write_conf(&s);
        harness_start(&s.h);
        const char *args[] = {"-f", "alice@example.test", "bob@example.org", NULL};
        cr_assert_eq(harness_sendmail(&s.h, "From: alice@example.test\nSubject: r\n\nbody\n", args),
                     0);
        for (int i = 0; i < WAIT_MS / 20 && !harness_log_contains(&s.h, "class=greylist"); i++)
                harness_sleep_ms(20);
        cr_assert(harness_log_contains(&s.h, "class=greylist"),
                  "the first attempt was not deferred");
        s.rows[0] = '\0';
        keygen(&s, "example.test", "new", false);
        write_conf(&s);
        kill(s.h.tarryd, SIGHUP);
        for (int i = 0; i < WAIT_MS / 20 && !harness_log_contains(&s.h, "configuration reloaded");
             i++)
                harness_sleep_ms(20);
        cr_assert(harness_log_contains(&s.h, "configuration reloaded"));
        cr_assert_eq(fixture_wait_txns(s.f, 1, WAIT_MS), 0, "the retry never delivered");
        char out[4096];
        cr_assert_eq(verify_saved(&s, 1, out, sizeof out), 0, "%s", out);
        cr_assert(strstr(out, "pass d=example.test s=old"), "%s", out);
        cr_assert_null(strstr(out, "s=new"), "re-signed on retry: %s", out);
        cr_assert_eq(harness_log_count(&s.h, "DKIM-signed for example.test"), 1);
        e2e_stop(&s);
}

Test(dkim_e2e, a_readable_key_file_stops_tarryd_at_start_naming_the_config_line)
{
        struct e2e s = {0};
        e2e_init(&s);
        cr_assert_eq(fixture_start(s.f, 0), 0);
        harness_init(&s.h, NULL);
        keygen(&s, "example.test", "s1", false);
        write_conf(&s);
        const char *path = strchr(s.rows, ':') + 1;
        char key[512];
        snprintf(key, sizeof key, "%.*s", (int)strcspn(path, "\n"), path);
        cr_assert_eq(chmod(key, 0644), 0);
        harness_layout_spool(&s.h);
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "'%s' -C '%s' --check >/dev/null 2>'%s/check.err'",
                 harness_binary("daemon/tarryd"), s.h.conf, s.h.dir);
        int st = system(cmd);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 78, "tarryd --check: status %d", st);
        char errpath[400], err[1024] = "";
        snprintf(errpath, sizeof errpath, "%s/check.err", s.h.dir);
        FILE *f = fopen(errpath, "r");
        cr_assert_not_null(f);
        err[fread(err, 1, sizeof err - 1, f)] = '\0';
        fclose(f);
        char want[800];
        snprintf(want, sizeof want,
                 "tarry.conf:10: [dkim] example.test: key file %s (selector s1) is readable by "
                 "others (mode 0644); chmod 0600 it",
                 key);
        cr_assert(strstr(err, want), "got: %s\nwanted: %s", err, want);
        e2e_stop(&s);
}
