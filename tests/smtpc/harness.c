/* tests/smtpc/harness.c — see harness.h. */
#include "tests/smtpc/harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileio.h"
#include "tests/fixture/dnsmasq.h"
#include "tests/fixture/fixture.h"

struct tarry_config *test_cfg(const char *fmt, ...)
{
        char text[4096], err[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        struct tarry_config *cfg = NULL;
        int r = cfg_load_string("test.conf", text, &cfg, err, sizeof(err));
        cr_assert_eq(r, 0, "config: %s\n%s", err, text);
        return cfg;
}

int test_body(const char *body, size_t len)
{
        int fd = memfd_create("body", MFD_CLOEXEC);
        cr_assert_geq(fd, 0);
        cr_assert_eq(fd_write_all(fd, body, len), 0);
        return fd;
}

static char *dup_or_null(const char *s)
{
        return s ? strdup(s) : NULL;
}

void outcome_capture(const struct smtpc_result *res, void *userdata)
{
        struct outcome *o = userdata;
        o->calls++;
        o->called = true;
        o->status = res->status;
        o->failure = res->failure;
        o->origin = res->origin;
        o->local = res->local;
        o->phase = res->phase;
        o->code = res->code;
        memcpy(o->enhanced, res->enhanced, sizeof(o->enhanced));
        o->text = dup_or_null(res->text);
        o->n = res->n_rcpts;
        for (size_t i = 0; i < res->n_rcpts && i < 8; i++) {
                o->r[i].address = dup_or_null(res->rcpts[i].address);
                o->r[i].outcome = res->rcpts[i].outcome;
                o->r[i].code = res->rcpts[i].code;
                memcpy(o->r[i].enhanced, res->rcpts[i].enhanced, SMTPC_ENH_MAX);
                o->r[i].text = dup_or_null(res->rcpts[i].text);
                o->r[i].origin = res->rcpts[i].origin;
                o->r[i].local = res->rcpts[i].local;
                o->r[i].phase = res->rcpts[i].phase;
        }
        o->transcript = dup_or_null(res->transcript);
        o->mx_host = dup_or_null(res->mx_host);
        o->mx_ip = dup_or_null(res->mx_ip);
        o->source = dup_or_null(res->source_address);
        o->destination = dup_or_null(res->destination);
        o->port = res->port;
        o->tls = res->tls;
        o->total_us = res->total_us;
}

void test_deliver(const struct tarry_config *cfg, const char *sender, const char *const *rcpts,
                  size_t n, const char *body, const char *source, struct outcome *out,
                  int timeout_s)
{
        struct smtpc_request req = {
            .queue_id = "TEST",
            .sender = sender,
            .rcpts = rcpts,
            .n_rcpts = n,
            .source_address = source,
        };
        test_deliver_req(cfg, &req, body, out, timeout_s);
}

void test_deliver_req(const struct tarry_config *cfg, const struct smtpc_request *tmpl,
                      const char *body, struct outcome *out, int timeout_s)
{
        sd_event *e;
        struct smtpc *c;
        memset(out, 0, sizeof(*out));
        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(smtpc_new(e, cfg, &c), 0);
        int fd = test_body(body, strlen(body));
        struct smtpc_request req = *tmpl;
        req.body_fd = fd;
        req.body_size = strlen(body);
        req.done = outcome_capture;
        req.userdata = out;
        cr_assert_eq(smtpc_attempt_start(c, &req), 0);
        close(fd);
        cr_assert(!out->called, "done() must not be called from inside smtpc_attempt_start");
        int64_t end = now_monotonic_us() + (int64_t)timeout_s * 1000000;
        while (!out->called && now_monotonic_us() < end)
                sd_event_run(e, 100000);
        cr_assert(out->called, "attempt did not finish within %d s", timeout_s);
        smtpc_free(c);
        sd_event_unref(e);
}

void outcome_clear(struct outcome *o)
{
        free(o->text);
        for (size_t i = 0; i < 8; i++) {
                free(o->r[i].address);
                free(o->r[i].text);
        }
        free(o->transcript);
        free(o->mx_host);
        free(o->mx_ip);
        free(o->source);
        free(o->destination);
        memset(o, 0, sizeof(*o));
}

/* dnsmasq on a free port (tests/fixture/dnsmasq.c waits until it answers);
 * 0 when it is not installed. */
int test_dnsmasq(const char *const *opts, size_t n, uint16_t *port)
{
        if (!dnsmasq_installed())
                return 0;
        char err[256];
        *port = 0;
        pid_t pid = dnsmasq_start(opts, n, port, err, sizeof(err));
        cr_assert_gt(pid, 0, "%s", err);
        return pid;
}

void test_dnsmasq_stop(int pid)
{
        dnsmasq_stop(pid);
}

struct fixture *test_fixture(const char *ip, const char *const *kv)
{
        struct fixture *f;
        cr_assert_eq(fixture_new(ip, &f), 0);
        for (; kv && kv[0]; kv += 2)
                cr_assert_eq(fixture_set(f, kv[0], kv[1]), 0, "fixture key %s", kv[0]);
        cr_assert_eq(fixture_start(f, 0), 0);
        return f;
}

void test_received(struct fixture *f, const char *data, size_t n, struct fixture_txn *t)
{
        cr_assert_eq(fixture_wait_txns(f, 1, 2000), 0);
        cr_assert_eq(fixture_txn_get(f, 0, t), 0);
        char want[65];
        fixture_sha256_hex(data, n, want);
        cr_assert_eq(t->size, n);
        cr_assert_str_eq(t->sha256, want);
}
