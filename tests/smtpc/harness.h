/* tests/smtpc/harness.h — running one smtpc attempt to completion in a test. */
#ifndef TARRY_TESTS_SMTPC_HARNESS_H
#define TARRY_TESTS_SMTPC_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "smtpc/smtpc.h"

/* A deep copy of what a test checks in a result. */
struct outcome {
        enum smtpc_status status;
        enum smtpc_failure failure;
        enum outcome_origin origin;
        enum outcome_local local;
        enum outcome_phase phase;
        int code;
        char enhanced[SMTPC_ENH_MAX];
        char *text;
        size_t n;
        struct {
                char *address;
                enum smtpc_rcpt_outcome outcome;
                int code;
                char enhanced[SMTPC_ENH_MAX];
                char *text;
                enum outcome_origin origin;
                enum outcome_local local;
                enum outcome_phase phase;
        } r[8];
        char *transcript;
        char *mx_host, *mx_ip, *source, *destination;
        uint16_t port;
        bool tls;
        int64_t total_us;
        bool called;
        int calls;
};

struct tarry_config *test_cfg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A memfd holding body. */
int test_body(const char *body, size_t len);

/* Run one attempt on a fresh loop+client until done() (at most timeout_s). */
void test_deliver(const struct tarry_config *cfg, const char *sender, const char *const *rcpts,
                  size_t n, const char *body, const char *source, struct outcome *out,
                  int timeout_s);

/* The same with a whole request (DSN parameters...): its body_fd, body_size,
 * done and userdata are filled in from body. */
void test_deliver_req(const struct tarry_config *cfg, const struct smtpc_request *tmpl,
                      const char *body, struct outcome *out, int timeout_s);

void outcome_clear(struct outcome *o);

struct fixture;

/* A started scripted server on ip (NULL: the default) with the given
 * key/value pairs set (NULL-terminated); fails the test on any error. */
struct fixture *test_fixture(const char *ip, const char *const *kv);

struct fixture_txn;

/* Waits for the server's first transaction, puts it in *t (the caller clears
 * it) and checks that the server got exactly data: n bytes, same SHA-256. */
void test_received(struct fixture *f, const char *data, size_t n, struct fixture_txn *t);

/* A done() callback filling the struct outcome userdata points to. */
void outcome_capture(const struct smtpc_result *res, void *userdata);

/* dnsmasq on 127.0.0.1:port with extra options, once it answers queries;
 * returns its pid (0: not installed). Fails the test if it never answers. */
int test_dnsmasq(const char *const *opts, size_t n, uint16_t *port);
void test_dnsmasq_stop(int pid);

#endif
