/* tests/daemon/test_mtasts.c — MTA-STS (RFC 8461) through the real tarryd:
 * dnsmasq serves the MX and _mta-sts TXT records, python3's http.server with
 * ssl serves the policy under a test CA made here with openssl, and the
 * fixture receives with STARTTLS. The policy port is [smtp] mta_sts_port
 * (443 in production) and the CA is [smtp] tls_ca_file. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/dnsmasq.h"
#include "tests/fixture/fixture.h"

struct sts_env {
        char dir[64]; /* CA, certificates, www/, the server script; readable by tarryd */
        pid_t dns, https;
        uint16_t dns_port, https_port;
        struct fixture *mx;
        struct harness h;
};

static void write_text(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f, "%s", path);
        fputs(text, f);
        fclose(f);
}

/* A CA, and certificates it signs for the policy host and the MX host. */
static void make_pki(struct sts_env *e)
{
        snprintf(e->dir, sizeof(e->dir), "/tmp/tarry-sts-XXXXXX");
        cr_assert_not_null(mkdtemp(e->dir));
        chmod(e->dir, 0755);
        char cmd[2048];
        snprintf(cmd, sizeof(cmd),
                 "cd '%s' && K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes' && "
                 "openssl req -x509 $K -keyout ca.key -out ca.pem -days 2 -subj /CN=tarry-test-ca "
                 "-addext basicConstraints=critical,CA:TRUE "
                 "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null && "
                 "for n in mta-sts.example.test mx.example.test; do "
                 "openssl req $K -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null && "
                 "echo subjectAltName=DNS:$n > $n.ext && "
                 "openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                 "-out $n.pem -days 2 -extfile $n.ext 2>/dev/null || exit 1; done && "
                 "chmod 644 *.key && mkdir -p www/.well-known",
                 e->dir);
        cr_assert_eq(system(cmd), 0, "making the test CA failed");
}

static void set_policy(struct sts_env *e, const char *mode, const char *mx)
{
        char path[128], text[512];
        snprintf(path, sizeof(path), "%s/www/.well-known/mta-sts.txt", e->dir);
        snprintf(text, sizeof(text), "version: STSv1\r\nmode: %s\r\nmx: %s\r\nmax_age: 86400\r\n",
                 mode, mx);
        write_text(path, text);
}

static const char server_py[] = "import http.server, ssl, sys, os\n"
                                "os.chdir(sys.argv[1])\n"
                                "log = open(sys.argv[4], 'a')\n"
                                "class H(http.server.SimpleHTTPRequestHandler):\n"
                                "    def log_message(self, fmt, *a):\n"
                                "        log.write(self.path + '\\n'); log.flush()\n"
                                "srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
                                "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
                                "ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n"
                                "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n"
                                "print(srv.server_address[1], flush=True)\n"
                                "srv.serve_forever()\n";

static void start_https(struct sts_env *e)
{
        char script[128], www[128], cert[128], key[128], log[128];
        snprintf(script, sizeof(script), "%s/server.py", e->dir);
        snprintf(www, sizeof(www), "%s/www", e->dir);
        snprintf(cert, sizeof(cert), "%s/mta-sts.example.test.pem", e->dir);
        snprintf(key, sizeof(key), "%s/mta-sts.example.test.key", e->dir);
        snprintf(log, sizeof(log), "%s/requests.log", e->dir);
        write_text(script, server_py);
        int p[2];
        cr_assert_eq(pipe(p), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                dup2(p[1], 1);
                close(p[0]);
                execlp("python3", "python3", script, www, cert, key, log, (char *)NULL);
                _exit(127);
        }
        close(p[1]);
        FILE *f = fdopen(p[0], "r");
        unsigned port = 0;
        cr_assert_eq(fscanf(f, "%u", &port), 1, "the HTTPS server did not start");
        fclose(f);
        e->https = pid;
        e->https_port = (uint16_t)port;
}

static void stop(pid_t *pid)
{
        if (*pid > 0) {
                kill(*pid, SIGTERM);
                waitpid(*pid, NULL, 0);
        }
        *pid = 0;
}

/* Policy requests the HTTPS server has answered. */
static size_t fetches(struct sts_env *e)
{
        char path[128], line[512];
        snprintf(path, sizeof(path), "%s/requests.log", e->dir);
        FILE *f = fopen(path, "r");
        size_t n = 0;
        while (f && fgets(line, sizeof(line), f))
                n += strstr(line, "/.well-known/mta-sts.txt") != NULL;
        if (f)
                fclose(f);
        return n;
}

/* dnsmasq for .test: example.test's MX, the policy host, and the TXT with id;
 * started again on the same port when the test changes the id. */
static void start_dns(struct sts_env *e, const char *id)
{
        char txt[128], err[256];
        snprintf(txt, sizeof(txt), "--txt-record=_mta-sts.example.test,v=STSv1; id=%s", id);
        const char *const opts[] = {"--local=/test/", "--mx-host=example.test,mx.example.test,10",
                                    "--host-record=mx.example.test,127.0.0.1",
                                    "--host-record=mta-sts.example.test,127.0.0.1", txt};
        e->dns = dnsmasq_start(opts, 5, &e->dns_port, err, sizeof(err));
        cr_assert_gt(e->dns, 0, "%s", err);
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

/* Everything up: policy (mode, mx) behind TXT id 1; the MX's certificate is
 * the CA's for mx.example.test unless self_signed. */
static void sts_start(struct sts_env *e, const char *mode, const char *mx, bool self_signed)
{
        memset(e, 0, sizeof(*e));
        if (!dnsmasq_installed())
                cr_skip_test("dnsmasq is not installed (apt-get install dnsmasq-base)");
        make_pki(e);
        set_policy(e, mode, mx);
        start_https(e);
        start_dns(e, "1");
        cr_assert_eq(fixture_new("127.0.0.1", &e->mx), 0);
        if (self_signed) {
                cr_assert_eq(fixture_tls_generate(e->mx, e->dir), 0);
        } else {
                char cert[128], key[128];
                snprintf(cert, sizeof(cert), "%s/mx.example.test.pem", e->dir);
                snprintf(key, sizeof(key), "%s/mx.example.test.key", e->dir);
                fixture_set(e->mx, "tls_cert", cert);
                fixture_set(e->mx, "tls_key", key);
                fixture_set(e->mx, "tls", "yes");
        }
        cr_assert_eq(fixture_start(e->mx, 0), 0);
        char conf[1024];
        snprintf(conf, sizeof(conf),
                 "[smtp]\nport = %u\ndns_servers = 127.0.0.1:%u\nmta_sts_port = %u\n"
                 "tls_ca_file = %s/ca.pem\n"
                 "connect_timeout = 5s\ncommand_timeout = 5s\ndata_timeout = 10s\n",
                 fixture_port(e->mx), e->dns_port, e->https_port, e->dir);
        harness_init(&e->h, conf);
        harness_start(&e->h);
}

static void sts_stop(struct sts_env *e)
{
        cr_assert_eq(harness_stop(&e->h, SIGTERM, 5000), 0);
        harness_cleanup(&e->h);
        fixture_free(e->mx);
        stop(&e->https);
        stop(&e->dns);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
        system(cmd);
}

static bool policy_cached(struct sts_env *e)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/state/mta-sts/example.test", e->h.spool);
        return access(path, F_OK) == 0;
}

Test(mtasts, enforce_with_a_verified_certificate_delivers_over_tls, .timeout = 120)
{
        struct sts_env e;
        sts_start(&e, "enforce", "mx.example.test", false);
        harness_send(&e.h, "alice@sender.test", "bob@example.test", "sts enforce");
        cr_assert_eq(fixture_wait_txns(e.mx, 1, 60000), 0, "not delivered");
        struct fixture_txn t;
        cr_assert_eq(fixture_txn_get(e.mx, 0, &t), 0);
        cr_assert(t.tls, "delivered without TLS");
        cr_assert_str_eq(t.rcpts[0], "bob@example.test");
        fixture_txn_clear(&t);
        cr_assert_eq(fetches(&e), 1);
        cr_assert(policy_cached(&e), "the policy was not cached in state/mta-sts/");
        cr_assert(harness_wait_log(&e.h, "status=sent", 1, 10000));
        sts_stop(&e);
}

Test(mtasts, enforce_defers_mail_for_an_mx_the_policy_does_not_list, .timeout = 120)
{
        struct sts_env e;
        sts_start(&e, "enforce", "mail.other.test", false);
        harness_send(&e.h, "alice@sender.test", "bob@example.test", "sts unlisted");
        cr_assert(harness_wait_log(&e.h, "status=deferred", 1, 60000), "no deferral logged");
        cr_assert(harness_log_contains(&e.h, "dsn=4.7.5"));
        cr_assert(harness_log_contains(&e.h, "MTA-STS policy of example.test (id 1, mode enforce) "
                                             "lists none of the MX hosts of example.test "
                                             "(mx.example.test)"));
        cr_assert_eq(fixture_connection_count(e.mx), 0, "connected to an MX the policy refuses");
        cr_assert_eq(harness_count_queued(&e.h, "active"), 1);
        sts_stop(&e);
}

Test(mtasts, enforce_defers_mail_when_the_mx_certificate_does_not_verify, .timeout = 120)
{
        struct sts_env e;
        sts_start(&e, "enforce", "mx.example.test", true);
        harness_send(&e.h, "alice@sender.test", "bob@example.test", "sts bad cert");
        cr_assert(harness_wait_log(&e.h, "status=deferred", 1, 60000), "no deferral logged");
        cr_assert(harness_log_contains(&e.h, "dsn=4.7.5"));
        cr_assert(harness_log_contains(&e.h, "the MTA-STS policy of example.test (id 1, mode "
                                             "enforce) requires verified TLS"));
        harness_sleep_ms(500);
        cr_assert_eq(fixture_txn_count(e.mx), 0, "delivered despite the policy (in clear?)");
        sts_stop(&e);
}

Test(mtasts, testing_delivers_as_before_and_logs_what_enforce_would_refuse, .timeout = 120)
{
        struct sts_env e;
        sts_start(&e, "testing", "mail.other.test", true);
        harness_send(&e.h, "alice@sender.test", "bob@example.test", "sts testing");
        cr_assert_eq(fixture_wait_txns(e.mx, 1, 60000), 0, "not delivered");
        cr_assert(harness_wait_log(&e.h, "status=sent", 1, 10000));
        cr_assert(harness_log_contains(&e.h, "mta-sts: MTA-STS policy of example.test (id 1, "
                                             "mode testing): enforce would refuse MX "
                                             "mx.example.test"));
        sts_stop(&e);
}

/* RFC 8461 5.1: a policy host that is gone does not undo a valid cached
 * policy, even when a new TXT id asks for a refetch. */
Test(mtasts, a_cached_policy_keeps_applying_when_the_policy_host_is_gone, .timeout = 180)
{
        struct sts_env e;
        sts_start(&e, "enforce", "mail.other.test", false);
        harness_send(&e.h, "alice@sender.test", "bob@example.test", "sts cache 1");
        cr_assert(harness_wait_log(&e.h, "status=deferred", 1, 60000), "no deferral logged");
        cr_assert(policy_cached(&e));
        stop(&e.https);
        stop(&e.dns);
        start_dns(&e, "2");
        flush(&e.h);
        cr_assert(harness_wait_log(&e.h, "status=deferred", 2, 60000),
                  "the retry was not deferred");
        cr_assert(harness_log_contains(&e.h, "the cached policy (id 1) applies"));
        cr_assert_eq(harness_log_count(&e.h, "lists none of the MX hosts"), 2);
        cr_assert_eq(fixture_connection_count(e.mx), 0);
        sts_stop(&e);
}

/* The same id: the cached policy, no fetch (a changed file is not seen).
 * A new id: fetched again, and the new policy applies. */
Test(mtasts, a_changed_txt_id_makes_tarry_fetch_the_policy_again, .timeout = 180)
{
        struct sts_env e;
        sts_start(&e, "enforce", "mail.other.test", false);
        harness_send(&e.h, "alice@sender.test", "bob@example.test", "sts refetch");
        cr_assert(harness_wait_log(&e.h, "status=deferred", 1, 60000), "no deferral logged");
        cr_assert_eq(fetches(&e), 1);

        set_policy(&e, "enforce", "mx.example.test");
        flush(&e.h);
        cr_assert(harness_wait_log(&e.h, "status=deferred", 2, 60000),
                  "the retry was not deferred");
        cr_assert_eq(fetches(&e), 1, "fetched again under the same id");
        cr_assert_eq(fixture_txn_count(e.mx), 0);

        stop(&e.dns);
        start_dns(&e, "2");
        flush(&e.h);
        cr_assert_eq(fixture_wait_txns(e.mx, 1, 60000), 0, "not delivered under the new policy");
        cr_assert_eq(fetches(&e), 2);
        sts_stop(&e);
}
