/* tests/dkim/test_dkim.c — DKIM signatures that an independent verifier accepts.
 *
 * Every signature made here is checked by verify.py: Debian's python3-dkim
 * (and python3-nacl for ed25519-sha256), which shares no code with
 * libopendkim, given the TXT record dkim_keygen printed for the key.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dkim/dkim.h"
#include "dkim/ed25519.h"

#define WHEN 1796644800 /* Mon, 07 Dec 2026 12:00:00 +0000 */

struct kit {
        char dir[64];
        char conf[4096];
        char records[4][2048]; /* "s._domainkey.d=v=DKIM1; ..." for verify.py */
        size_t n_records;
        struct tarry_config *cfg;
        struct dkim_signer *signer;
};

static void kit_dir(struct kit *k)
{
        snprintf(k->dir, sizeof k->dir, "/tmp/tarry-dkim-XXXXXX");
        cr_assert_not_null(mkdtemp(k->dir));
}

/* A new key for selector of domain, its record remembered; returns its path. */
static const char *kit_key(struct kit *k, const char *domain, const char *selector,
                           enum dkim_alg alg)
{
        static char path[256];
        char err[256] = "", *txt = NULL;
        snprintf(path, sizeof path, "%s/%s.%s.key", k->dir, selector, domain);
        cr_assert_eq(dkim_keygen(path, alg, (uid_t)-1, &txt, err, sizeof err), 0, "%s", err);
        snprintf(k->records[k->n_records++], sizeof k->records[0], "%s._domainkey.%s=%s", selector,
                 domain, txt);
        free(txt);
        return path;
}

static void kit_load(struct kit *k, const char *dkim_rows)
{
        char err[512] = "";
        snprintf(k->conf, sizeof k->conf, "[main]\nmyhostname = host.example.net\n[dkim]\n%s",
                 dkim_rows);
        cr_assert_eq(cfg_load_string("tarry.conf", k->conf, &k->cfg, err, sizeof err), 0, "%s",
                     err);
        cr_assert_eq(dkim_signer_load(k->cfg, geteuid(), &k->signer, err, sizeof err), 0, "%s",
                     err);
}

/* A kit with one key of alg for example.com, selector s1. */
static void kit_one(struct kit *k, enum dkim_alg alg)
{
        char row[512];
        kit_dir(k);
        snprintf(row, sizeof row, "example.com = s1:%s\n", kit_key(k, "example.com", "s1", alg));
        kit_load(k, row);
}

static void kit_free(struct kit *k)
{
        dkim_signer_free(k->signer);
        cfg_free(k->cfg);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", k->dir);
        (void)!system(cmd);
}

/* Run verify.py on sig + msg; its exit code, its output in out. */
static int verify(struct kit *k, const char *sig, const char *msg, size_t len, char *out,
                  size_t outlen)
{
        char path[128];
        snprintf(path, sizeof path, "%s/signed.eml", k->dir);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(sig ? sig : "", f);
        fwrite(msg, 1, len, f);
        fclose(f);
        char cmd[16384];
        int n = snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/dkim/verify.py' '%s'",
                         getenv("TARRY_SOURCE_DIR"), path);
        for (size_t i = 0; i < k->n_records; i++)
                n += snprintf(cmd + n, sizeof cmd - (size_t)n, " '%s'", k->records[i]);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        size_t got = fread(out, 1, outlen - 1, p);
        out[got] = '\0';
        int st = pclose(p);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *sign(struct kit *k, const char *msg, struct dkim_outcome *o)
{
        char *sig = NULL;
        cr_assert_eq(dkim_sign_mem(k->signer, "0123456789ABCDEF", msg, strlen(msg), WHEN, &sig, o),
                     0);
        return sig;
}

static void assert_verifies(enum dkim_alg alg, const char *msg)
{
        struct kit k = {0};
        struct dkim_outcome o;
        char out[4096];
        kit_one(&k, alg);
        char *sig = sign(&k, msg, &o);
        cr_assert_eq(o.n_signed, 1, "not signed: %s", o.why);
        cr_assert_eq(verify(&k, sig, msg, strlen(msg), out, sizeof out), 0,
                     "verify.py: %s\nsignature:\n%s", out, sig);
        cr_assert(strstr(out, alg == DKIM_ALG_RSA_SHA256 ? "a=rsa-sha256" : "a=ed25519-sha256"),
                  "%s", out);
        free(sig);
        kit_free(&k);
}

static const char plain[] = "From: Alice <alice@example.com>\r\n"
                            "To: bob@example.org\r\n"
                            "Subject: hello\r\n"
                            "Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
                            "Message-ID: <1@example.com>\r\n"
                            "\r\n"
                            "Hello Bob.\r\n";

/* Folded headers (a long Subject and To on several lines), whitespace at the
 * ends of lines and inside them, and empty lines at the end of the body:
 * everything relaxed canonicalisation must get exactly right. */
static const char awkward[] = "From: \"Alice, the sender\" <alice@example.com>\r\n"
                              "To: bob@example.org,\r\n"
                              "\tcarol@example.org,   \r\n"
                              "   dave@example.org\r\n"
                              "Subject:   a subject   that is\r\n"
                              " folded \t over   lines  \r\n"
                              "Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
                              "MIME-Version: 1.0\r\n"
                              "Content-Type: text/plain;\r\n"
                              "\tcharset=utf-8\r\n"
                              "X-Not-Signed: anything\r\n"
                              "\r\n"
                              "Trailing spaces   \r\n"
                              "and\ttabs\t\t\r\n"
                              "  leading space stays\r\n"
                              "\r\n"
                              "\r\n"
                              "\r\n";

Test(dkim, rsa_sha256_signature_verifies_with_an_independent_verifier)
{
        assert_verifies(DKIM_ALG_RSA_SHA256, plain);
}

Test(dkim, ed25519_sha256_signature_verifies_with_an_independent_verifier)
{
        assert_verifies(DKIM_ALG_ED25519_SHA256, plain);
}

Test(dkim, rsa_signature_verifies_across_folding_trailing_whitespace_and_empty_end_lines)
{
        assert_verifies(DKIM_ALG_RSA_SHA256, awkward);
}

Test(dkim, ed25519_signature_verifies_across_folding_trailing_whitespace_and_empty_end_lines)
{
        assert_verifies(DKIM_ALG_ED25519_SHA256, awkward);
}

Test(dkim, a_message_without_a_body_verifies)
{
        assert_verifies(DKIM_ALG_ED25519_SHA256, "From: alice@example.com\r\nSubject: x\r\n\r\n");
}

Test(dkim, a_changed_body_no_longer_verifies)
{
        struct kit k = {0};
        struct dkim_outcome o;
        char out[4096];
        kit_one(&k, DKIM_ALG_RSA_SHA256);
        char *sig = sign(&k, plain, &o);
        char *changed = strdup(plain);
        changed[strlen(changed) - 3] = '!'; /* "Hello Bob!" */
        cr_assert_neq(verify(&k, sig, changed, strlen(changed), out, sizeof out), 0, "%s", out);
        cr_assert(strstr(out, "fail"), "%s", out);
        free(changed);
        free(sig);
        kit_free(&k);
}

Test(dkim, every_key_of_the_row_signs_and_each_verifies)
{
        struct kit k = {0};
        struct dkim_outcome o;
        char row[1024], out[4096];
        kit_dir(&k);
        int n = snprintf(row, sizeof row, "example.net = rsa1:%s",
                         kit_key(&k, "example.net", "rsa1", DKIM_ALG_RSA_SHA256));
        snprintf(row + n, sizeof row - (size_t)n, ",ed1:%s\n",
                 kit_key(&k, "example.net", "ed1", DKIM_ALG_ED25519_SHA256));
        kit_load(&k, row);
        const char *msg = "From: news@example.net\r\nSubject: two\r\n\r\nbody\r\n";
        char *sig = sign(&k, msg, &o);
        cr_assert_eq(o.n_signed, 2);
        cr_assert_eq(verify(&k, sig, msg, strlen(msg), out, sizeof out), 0, "%s", out);
        cr_assert(strstr(out, "pass d=example.net s=rsa1 a=rsa-sha256"), "%s", out);
        cr_assert(strstr(out, "pass d=example.net s=ed1 a=ed25519-sha256"), "%s", out);
        free(sig);
        kit_free(&k);
}

Test(dkim, from_is_oversigned_and_the_recommended_fields_are_signed)
{
        struct kit k = {0};
        struct dkim_outcome o;
        char out[4096];
        kit_one(&k, DKIM_ALG_ED25519_SHA256);
        const char *msg = "From: alice@example.com\r\n"
                          "To: bob@example.org\r\n"
                          "Subject: s\r\n"
                          "List-Unsubscribe: <https://example.com/u>\r\n"
                          "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                          "Received: from elsewhere\r\n"
                          "\r\nx\r\n";
        char *sig = sign(&k, msg, &o);
        cr_assert_eq(verify(&k, sig, msg, strlen(msg), out, sizeof out), 0, "%s", out);
        char *h = strstr(out, " h=");
        cr_assert_not_null(h, "%s", out);
        /* From once more than present: a second From: added later breaks it */
        int froms = 0;
        for (const char *p = h; (p = strcasestr(p, "from")) != NULL; p += 4)
                froms++;
        cr_assert_eq(froms, 2, "%s", out);
        cr_assert(strcasestr(h, "list-unsubscribe-post"), "%s", out);
        cr_assert(strcasestr(h, "subject") && strcasestr(h, "to"), "%s", out);
        cr_assert_null(strcasestr(h, "received"), "trace fields are not signed: %s", out);
        free(sig);
        kit_free(&k);
}

Test(dkim, a_subdomain_is_signed_by_its_nearest_parent_row)
{
        struct kit k = {0};
        struct dkim_outcome o;
        char out[4096];
        kit_one(&k, DKIM_ALG_RSA_SHA256);
        const char *msg = "From: cron@host1.mail.example.com\r\n\r\nx\r\n";
        char *sig = sign(&k, msg, &o);
        cr_assert_eq(o.n_signed, 1, "%s", o.why);
        cr_assert_str_eq(o.domain, "host1.mail.example.com");
        cr_assert_eq(verify(&k, sig, msg, strlen(msg), out, sizeof out), 0, "%s", out);
        cr_assert(strstr(out, "pass d=example.com s=s1"), "%s", out);
        free(sig);
        kit_free(&k);
}

Test(dkim, mail_from_another_domain_is_not_signed)
{
        struct kit k = {0};
        struct dkim_outcome o;
        kit_one(&k, DKIM_ALG_RSA_SHA256);
        char *sig = sign(&k, "From: a@notexample.com\r\n\r\nx\r\n", &o);
        cr_assert_null(sig);
        cr_assert_eq(o.n_signed, 0);
        cr_assert_str_eq(o.why, "no [dkim] row for notexample.com or a parent domain");
        sig = sign(&k, "Subject: no from\r\n\r\nx\r\n", &o);
        cr_assert_null(sig);
        cr_assert_str_eq(o.why, "no From: address with a domain");
        kit_free(&k);
}

Test(dkim, signing_again_gives_the_same_bytes)
{
        struct kit k = {0};
        struct dkim_outcome o;
        kit_one(&k, DKIM_ALG_RSA_SHA256);
        char *a = sign(&k, plain, &o), *b = sign(&k, plain, &o);
        cr_assert_str_eq(a, b);
        cr_assert(strstr(a, "t=1796644800"), "%s", a);
        free(a);
        free(b);
        kit_free(&k);
}

Test(dkim, signing_from_a_file_equals_signing_in_memory)
{
        struct kit k = {0};
        struct dkim_outcome o;
        char path[128];
        kit_one(&k, DKIM_ALG_ED25519_SHA256);
        /* a body longer than one read chunk */
        size_t len = 0;
        char *big = NULL;
        FILE *m = open_memstream(&big, &len);
        fputs("From: alice@example.com\r\nSubject: big\r\n\r\n", m);
        for (int i = 0; i < 20000; i++)
                fprintf(m, "line %d   \r\n", i);
        fclose(m);
        snprintf(path, sizeof path, "%s/body", k.dir);
        FILE *f = fopen(path, "w");
        fwrite(big, 1, len, f);
        fclose(f);
        int fd = open(path, O_RDONLY);
        char *from_file = NULL, out[4096];
        cr_assert_eq(dkim_sign_message(k.signer, "ID", fd, len, WHEN, &from_file, &o), 0);
        close(fd);
        char *in_mem = sign(&k, big, &o);
        cr_assert_str_eq(from_file, in_mem);
        cr_assert_eq(verify(&k, from_file, big, len, out, sizeof out), 0, "%s", out);
        free(from_file);
        free(in_mem);
        free(big);
        kit_free(&k);
}

/* ---- key files ---- */

static void expect_load_error(struct kit *k, const char *row, const char *want)
{
        char err[512] = "";
        struct tarry_config *cfg = NULL;
        struct dkim_signer *s = NULL;
        char text[1024];
        snprintf(text, sizeof text, "[main]\nmyhostname = h\n[dkim]\n%s", row);
        cr_assert_eq(cfg_load_string("tarry.conf", text, &cfg, err, sizeof err), 0, "%s", err);
        cr_assert_lt(dkim_signer_load(cfg, geteuid(), &s, err, sizeof err), 0);
        cr_assert_null(s);
        cr_assert(strstr(err, want), "error: %s\nwanted: %s", err, want);
        cfg_free(cfg);
        (void)k;
}

Test(dkim, a_world_readable_key_is_refused_naming_file_line_and_mode)
{
        struct kit k = {0};
        char row[512], want[512];
        kit_dir(&k);
        const char *path = kit_key(&k, "example.com", "s1", DKIM_ALG_RSA_SHA256);
        chmod(path, 0644);
        snprintf(row, sizeof row, "example.com = s1:%s\n", path);
        snprintf(want, sizeof want,
                 "tarry.conf:4: [dkim] example.com: key file %s (selector s1) is readable by "
                 "others (mode 0644); chmod 0600 it",
                 path);
        expect_load_error(&k, row, want);
        kit_free(&k);
}

Test(dkim, a_group_writable_key_is_refused)
{
        struct kit k = {0};
        char row[512];
        kit_dir(&k);
        const char *path = kit_key(&k, "example.com", "s1", DKIM_ALG_ED25519_SHA256);
        chmod(path, 0620);
        snprintf(row, sizeof row, "example.com = s1:%s\n", path);
        expect_load_error(&k, row, "is group- or world-writable (mode 0620)");
        kit_free(&k);
}

Test(dkim, a_key_that_does_not_parse_is_a_config_error_with_file_and_line)
{
        struct kit k = {0};
        char row[512], path[128], want[512];
        kit_dir(&k);
        snprintf(path, sizeof path, "%s/bad.key", k.dir);
        int fd = open(path, O_WRONLY | O_CREAT, 0600);
        cr_assert(write(fd, "not a key\n", 10) == 10);
        close(fd);
        snprintf(row, sizeof row, "example.org = x:/nonexistent\nexample.com = s1:%s\n", path);
        /* the first row's missing file is reported first, on its line */
        expect_load_error(&k, row,
                          "tarry.conf:4: [dkim] example.org: key file /nonexistent (selector x) "
                          "cannot be opened: No such file or directory");
        snprintf(row, sizeof row, "example.com = s1:%s\n", path);
        snprintf(want, sizeof want,
                 "tarry.conf:4: [dkim] example.com: key file %s (selector s1) is not a PEM "
                 "private key",
                 path);
        expect_load_error(&k, row, want);
        kit_free(&k);
}

Test(dkim, a_short_rsa_key_is_refused)
{
        struct kit k = {0};
        char row[512], cmd[512];
        kit_dir(&k);
        snprintf(cmd, sizeof cmd,
                 "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:512 -out %s/short.key "
                 "2>/dev/null && chmod 600 %s/short.key",
                 k.dir, k.dir);
        cr_assert_eq(system(cmd), 0);
        snprintf(row, sizeof row, "example.com = s1:%s/short.key\n", k.dir);
        expect_load_error(&k, row, "is an RSA key of 512 bits; at least 1024 are needed");
        kit_free(&k);
}

Test(dkim, a_key_behind_a_symlink_is_refused)
{
        struct kit k = {0};
        char row[512], link[128];
        kit_dir(&k);
        const char *path = kit_key(&k, "example.com", "s1", DKIM_ALG_RSA_SHA256);
        snprintf(link, sizeof link, "%s/link.key", k.dir);
        cr_assert_eq(symlink(path, link), 0);
        snprintf(row, sizeof row, "example.com = s1:%s\n", link);
        expect_load_error(&k, row, "is a symbolic link");
        kit_free(&k);
}

Test(dkim, keygen_never_overwrites_a_key)
{
        struct kit k = {0};
        char err[256] = "", *txt = NULL;
        kit_dir(&k);
        const char *path = kit_key(&k, "example.com", "s1", DKIM_ALG_RSA_SHA256);
        cr_assert_eq(dkim_keygen(path, DKIM_ALG_RSA_SHA256, (uid_t)-1, &txt, err, sizeof err),
                     -EEXIST);
        cr_assert(strstr(err, "already exists"), "%s", err);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600);
        kit_free(&k);
}

Test(dkim, the_public_record_matches_its_own_key_only)
{
        struct kit k = {0};
        char why[256] = "", *txt = NULL;
        kit_dir(&k);
        const char *p1 = strdup(kit_key(&k, "example.com", "a", DKIM_ALG_ED25519_SHA256));
        const char *p2 = kit_key(&k, "example.com", "b", DKIM_ALG_ED25519_SHA256);
        cr_assert_eq(dkim_public_record(p1, geteuid(), &txt, why, sizeof why), 0, "%s", why);
        cr_assert_eq(dkim_record_matches(p1, geteuid(), txt, why, sizeof why), 1, "%s", why);
        cr_assert_eq(dkim_record_matches(p2, geteuid(), txt, why, sizeof why), 0);
        cr_assert(strstr(why, "is not the public half"), "%s", why);
        free(txt);
        free((char *)p1);
        kit_free(&k);
}

/* ---- the [dkim] section ---- */

static void expect_config_error(const char *rows, const char *want)
{
        char text[1024], err[512] = "";
        struct tarry_config *cfg = NULL;
        snprintf(text, sizeof text, "[main]\nmyhostname = h\n[dkim]\n%s", rows);
        cr_assert_lt(cfg_load_string("tarry.conf", text, &cfg, err, sizeof err), 0);
        cr_assert_str_eq(err, want);
}

Test(config, dkim_rows_keep_every_selector_and_key_path)
{
        char err[512] = "";
        struct tarry_config *cfg = NULL;
        cr_assert_eq(
            cfg_load_string("tarry.conf",
                            "[dkim]\nExample.COM = sel2026:/etc/tarry/dkim/example.com.key\n"
                            "example.net = rsa1:/etc/tarry/dkim/rsa.key, "
                            "ed1:/etc/tarry/dkim/ed.key\n",
                            &cfg, err, sizeof err),
            0, "%s", err);
        cr_assert_eq(cfg->n_dkim, 2);
        cr_assert_str_eq(cfg->dkim[0].domain, "example.com");
        cr_assert_eq(cfg->dkim[0].line, 2);
        cr_assert_eq(cfg->dkim[1].n_keys, 2);
        cr_assert_str_eq(cfg->dkim[1].keys[1].selector, "ed1");
        cr_assert_str_eq(cfg->dkim[1].keys[1].path, "/etc/tarry/dkim/ed.key");
        cr_assert_eq(cfg_dkim_for(cfg, "a.b.example.net"), &cfg->dkim[1]);
        cr_assert_null(cfg_dkim_for(cfg, "example.org"));
        cfg_free(cfg);
}

Test(config, bad_dkim_rows_are_errors_with_file_and_line)
{
        expect_config_error("example.com = /etc/k.key\n",
                            "tarry.conf:4: bad value '/etc/k.key' for example.com in [dkim]: "
                            "expected SELECTOR:/path/to/key");
        expect_config_error("example.com = s1:k.key\n",
                            "tarry.conf:4: bad value 's1:k.key' for example.com in [dkim]: the "
                            "key file must be an absolute path");
        expect_config_error("example.com = s 1:/k\n",
                            "tarry.conf:4: bad value 's 1:/k' for example.com in [dkim]: the "
                            "selector is not a DNS name");
        expect_config_error("example.com = s1:/a,s1:/b\n",
                            "tarry.conf:4: bad value 's1:/a,s1:/b' for example.com in [dkim]: "
                            "the same selector twice");
        expect_config_error("relayhost = [127.0.0.1]\n",
                            "tarry.conf:4: 'relayhost' in [dkim] would be a row for a domain "
                            "called relayhost: relayhost belongs in [main], above [dkim]");
        expect_config_error("example.com = s1:/a\nEXAMPLE.com = s2:/b\n",
                            "tarry.conf:5: duplicate key 'EXAMPLE.com' in [dkim] (first set on "
                            "line 4)");
}

/* ---- the ed25519 path's own canonicalization against libopendkim's ---- */

/* (Bodies as sendmail queues them: CRLF line ends, the last line ended.
 * libopendkim refuses a body whose last line has no CRLF, and verifiers
 * disagree about a bare CR.) */
/* The bh= libopendkim computes (rsa-sha256, relaxed body) for body. */
static void libopendkim_bh(struct kit *k, const char *body, char *bh, size_t size)
{
        char *msg = NULL, *sig = NULL;
        struct dkim_outcome o;
        cr_assert(asprintf(&msg, "From: alice@example.com\r\n\r\n%s", body) > 0);
        int r = dkim_sign_mem(k->signer, "ID", msg, strlen(msg), WHEN, &sig, &o);
        cr_assert_eq(r, 0, "libopendkim on \"%s\": %d", body, r);
        const char *p = strstr(sig, "bh=");
        cr_assert_not_null(p, "%s", sig);
        snprintf(bh, size, "%.*s", (int)strcspn(p + 3, ";"), p + 3);
        free(msg);
        free(sig);
}

Test(dkim, the_ed25519_body_hash_equals_libopendkims_for_awkward_bodies)
{
        static const char *const bodies[] = {
            "",
            "\r\n",
            "\r\n\r\n\r\n",
            "trailing   \r\n\r\n\r\n",
            "  leading\t\ttabs  and   runs \t\r\n",
            "x\r\n \r\n\t\r\ny\r\n \t \r\n\r\n",
            "unicode caf\xc3\xa9  \r\n\r\n",
        };
        struct kit k = {0};
        kit_one(&k, DKIM_ALG_RSA_SHA256);
        for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
                char want[64], got[64];
                libopendkim_bh(&k, bodies[i], want, sizeof want);
                cr_assert_eq(ed_body_hash(bodies[i], strlen(bodies[i]), got), 0);
                cr_assert_str_eq(got, want, "body %zu: \"%s\"", i, bodies[i]);
        }
        kit_free(&k);
}
