/* tests/smtpc/test_ipc.c — the pool ↔ worker messages: round trips and the decoders' limits. */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtpc/ipc.h"

static struct smtpc_rcpt_result rr[2] = {
    {.address = "a@x.test",
     .outcome = SMTPC_RCPT_DELIVERED,
     .code = 250,
     .enhanced = "2.0.0",
     .text = "250 2.0.0 Ok: queued as 1",
     .phase = OUTCOME_PHASE_DOT},
    {.address = "b@x.test",
     .outcome = SMTPC_RCPT_DEFERRED,
     .code = 451,
     .enhanced = "4.7.1",
     .text = "451-4.7.1 Greylisted \xff\xfe\n451 4.7.1 try later \x01\t",
     .phase = OUTCOME_PHASE_RCPT},
};

static const struct smtpc_result sample = {
    .status = SMTPC_ATTEMPT_DONE,
    .failure = SMTPC_FAIL_NONE,
    .n_rcpts = 2,
    .rcpts = rr,
    .destination = "mx:example.com",
    .mx_host = "mx1.example.com",
    .mx_ip = "192.0.2.1",
    .port = 25,
    .source_address = "127.0.0.2",
    .tls = true,
    .transcript = "< 220 hi\n> EHLO c\n",
    .connect_us = 1234,
    .total_us = 5678,
};

Test(smtpc_ipc, results_round_trip_byte_exact_including_non_utf8_reply_bytes)
{
        char *buf;
        size_t len;
        cr_assert_eq(ipc_result_encode(&sample, &buf, &len), 0);
        struct ipc_result out;
        cr_assert_eq(ipc_result_decode(buf, len, 2, &out), 0);
        const struct smtpc_result *r = &out.res;
        cr_assert_eq(r->status, SMTPC_ATTEMPT_DONE);
        cr_assert_null(r->text);
        cr_assert_eq(r->n_rcpts, 2);
        cr_assert_str_eq(r->rcpts[1].text, rr[1].text);
        cr_assert_str_eq(r->rcpts[1].enhanced, "4.7.1");
        cr_assert_eq(r->rcpts[1].outcome, SMTPC_RCPT_DEFERRED);
        cr_assert_str_eq(r->mx_host, "mx1.example.com");
        cr_assert_str_eq(r->source_address, "127.0.0.2");
        cr_assert(r->tls);
        cr_assert_eq(r->port, 25);
        cr_assert_eq(r->connect_us, 1234);
        cr_assert_eq(r->total_us, 5678);
        cr_assert_str_eq(r->transcript, sample.transcript);
        ipc_result_clear(&out);
        free(buf);
}

static int decode_with(const char *key, const char *value);

Test(smtpc_ipc, whose_words_and_how_far_travel_typed_and_are_checked_on_arrival)
{
        struct smtpc_rcpt_result ours[1] = {{.address = "a@x.test",
                                             .outcome = SMTPC_RCPT_DEFERRED,
                                             .code = 451,
                                             .enhanced = "4.4.2",
                                             .text = "451 4.4.2 lost connection",
                                             .origin = OUTCOME_FROM_TARRY,
                                             .local = OUTCOME_LOCAL_DROPPED,
                                             .phase = OUTCOME_PHASE_DATA}};
        struct smtpc_result res = sample;
        res.status = SMTPC_ATTEMPT_TEMPFAIL;
        res.failure = SMTPC_FAIL_DROPPED;
        res.phase = OUTCOME_PHASE_DATA;
        res.n_rcpts = 1;
        res.rcpts = ours;
        char *buf;
        size_t len;
        cr_assert_eq(ipc_result_encode(&res, &buf, &len), 0);
        struct ipc_result out;
        cr_assert_eq(ipc_result_decode(buf, len, 1, &out), 0);
        cr_assert_eq(out.res.origin, OUTCOME_FROM_TARRY);
        cr_assert_eq(out.res.local, OUTCOME_LOCAL_DROPPED);
        cr_assert_eq(out.res.phase, OUTCOME_PHASE_DATA);
        cr_assert_eq(out.res.rcpts[0].origin, OUTCOME_FROM_TARRY);
        cr_assert_eq(out.res.rcpts[0].local, OUTCOME_LOCAL_DROPPED);
        cr_assert_eq(out.res.rcpts[0].phase, OUTCOME_PHASE_DATA);
        ipc_result_clear(&out);
        free(buf);

        cr_assert_eq(decode_with("phase", "\"lunch\""), -EBADMSG);
        cr_assert_eq(decode_with("phase", "3"), -EBADMSG);
        /* a server's words never carry a local reason, tarry's always do */
        cr_assert_eq(decode_with("rcpts", "[{\"outcome\":\"delivered\",\"code\":250,"
                                          "\"enhanced\":\"\",\"text\":\"250 ok\","
                                          "\"origin\":\"server\",\"local\":\"connect\","
                                          "\"phase\":\"dot\"},"
                                          "{\"outcome\":\"deferred\",\"code\":451,"
                                          "\"enhanced\":\"\",\"text\":\"451\","
                                          "\"origin\":\"tarry\",\"local\":\"none\","
                                          "\"phase\":\"rcpt\"}]"),
                     -EBADMSG);
        cr_assert_eq(decode_with("rcpts", "[{\"outcome\":\"delivered\",\"code\":250,"
                                          "\"enhanced\":\"\",\"text\":\"250 ok\","
                                          "\"origin\":\"server\",\"local\":\"none\","
                                          "\"phase\":\"dot\"},"
                                          "{\"outcome\":\"deferred\",\"code\":451,"
                                          "\"enhanced\":\"\",\"text\":\"451\","
                                          "\"origin\":\"tarry\",\"local\":\"timeout\","
                                          "\"phase\":\"rcpt\"}]"),
                     0);
}

Test(smtpc_ipc, result_with_another_recipient_count_is_rejected)
{
        char *buf;
        size_t len;
        cr_assert_eq(ipc_result_encode(&sample, &buf, &len), 0);
        struct ipc_result out;
        cr_assert_eq(ipc_result_decode(buf, len, 3, &out), -EBADMSG);
        cr_assert_eq(ipc_result_decode(buf, len, 1, &out), -EBADMSG);
        free(buf);
}

/* The sample with one member of its JSON replaced by value (JSON text),
 * its transcript after the NUL as encoded. */
static int decode_with(const char *key, const char *value)
{
        char *buf;
        size_t len;
        cr_assert_eq(ipc_result_encode(&sample, &buf, &len), 0);
        json_t *j = json_loads(buf, 0, NULL); /* the JSON text ends at the NUL */
        free(buf);
        json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
        cr_assert_not_null(v, "%s", value);
        json_object_set_new(j, key, v);
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        size_t n = strlen(text), tn = strlen(sample.transcript);
        buf = malloc(n + 1 + tn);
        memcpy(buf, text, n + 1);
        memcpy(buf + n + 1, sample.transcript, tn);
        free(text);
        struct ipc_result out;
        int r = ipc_result_decode(buf, n + 1 + tn, 2, &out);
        if (r == 0)
                ipc_result_clear(&out);
        free(buf);
        return r;
}

/* The transcript (a server's bytes, CR LF, quotes, bytes >= 0x80) travels
 * after the JSON as it is, and arrives byte for byte. */
Test(smtpc_ipc, the_transcript_travels_raw_after_the_json_and_arrives_byte_exact)
{
        struct smtpc_result res = sample;
        res.transcript = "< 220 \xff\xfe \"hi\"\r\n> MAIL FROM:<a@x.test>\r\n\x01\n";
        char *buf;
        size_t len;
        cr_assert_eq(ipc_result_encode(&res, &buf, &len), 0);
        size_t n = strlen(buf);
        cr_assert_lt(n, len, "a NUL ends the JSON text");
        cr_assert_null(strstr(buf, "transcript"), "not in the JSON: %s", buf);
        cr_assert_eq(len - n - 1, strlen(res.transcript));
        cr_assert_eq(memcmp(buf + n + 1, res.transcript, len - n - 1), 0);
        struct ipc_result out;
        cr_assert_eq(ipc_result_decode(buf, len, 2, &out), 0);
        cr_assert_str_eq(out.res.transcript, res.transcript);
        ipc_result_clear(&out);
        buf[len - 3] = '\0'; /* a NUL in the tail */
        cr_assert_eq(ipc_result_decode(buf, len, 2, &out), -EBADMSG);
        cr_assert_eq(ipc_result_decode(buf, n, 2, &out), -EBADMSG, "without its NUL and tail");
        free(buf);
}

Test(smtpc_ipc, result_fields_out_of_range_or_mistyped_are_rejected)
{
        cr_assert_eq(decode_with("status", "\"delivered-ish\""), -EBADMSG);
        cr_assert_eq(decode_with("failure", "7"), -EBADMSG);
        cr_assert_eq(decode_with("code", "1000"), -EBADMSG);
        cr_assert_eq(decode_with("code", "-1"), -EBADMSG);
        cr_assert_eq(decode_with("port", "70000"), -EBADMSG);
        cr_assert_eq(decode_with("tls", "1"), -EBADMSG);
        cr_assert_eq(decode_with("enhanced", "\"4.7.1.1.1.1.1.1.1\""), -EBADMSG);
        cr_assert_eq(decode_with("total_us", "-5"), -EBADMSG);
        cr_assert_eq(decode_with("mx_ip", "\"\\u0101\""), -EBADMSG); /* beyond U+00FF */
        cr_assert_eq(decode_with("rcpts", "[{\"outcome\":\"delivered\"},{}]"), -EBADMSG);
        cr_assert_eq(decode_with("text", "\"451 ok\""), 0);
        cr_assert_eq(decode_with("mx_host", "null"), 0);
}

Test(smtpc_ipc, oversized_strings_and_non_objects_are_rejected)
{
        char *big = malloc(SMTPC_TRANSCRIPT_MAX + 16);
        memset(big, 'a', SMTPC_TRANSCRIPT_MAX + 12);
        big[SMTPC_TRANSCRIPT_MAX + 1] = '\0';
        struct smtpc_result res = sample;
        res.transcript = big;
        char *buf;
        size_t len;
        cr_assert_eq(ipc_result_encode(&res, &buf, &len), 0);
        struct ipc_result out;
        cr_assert_eq(ipc_result_decode(buf, len, 2, &out), -EBADMSG, "a transcript too long");
        free(buf);
        free(big);
        cr_assert_eq(ipc_result_decode("[1,2]", 5, 0, &out), -EBADMSG);
        cr_assert_eq(ipc_result_decode("{\"status\":", 10, 0, &out), -EBADMSG);
}

Test(smtpc_ipc, requests_round_trip)
{
        const char *rcpts[] = {"a@x.test", "b\xe9@x.test"};
        struct smtpc_request req = {
            .queue_id = "Q1", .sender = "", .rcpts = rcpts, .n_rcpts = 2, .body_size = 4096};
        char *buf;
        size_t len;
        cr_assert_eq(ipc_request_encode(&req, &buf, &len), 0);
        struct ipc_request q;
        cr_assert_eq(ipc_request_decode(buf, len, &q), 0);
        cr_assert_str_eq(q.queue_id, "Q1");
        cr_assert_str_eq(q.sender, "");
        cr_assert_null(q.source);
        cr_assert_eq(q.n_rcpts, 2);
        cr_assert_str_eq(q.rcpts[1], rcpts[1]);
        cr_assert_eq(q.body_size, 4096);
        cr_assert_eq(q.dsn_ret, SMTPC_RET_NONE);
        cr_assert_null(q.envid);
        cr_assert_null(q.notify);
        cr_assert_null(q.orcpt);
        cr_assert_null(q.prefix);
        ipc_request_clear(&q);
        free(buf);
        /* the added header lines travel as bytes, 8-bit ones too */
        req.prefix = "Received: from h\r\nX-Original-To: b\xe9@x.test\r\n";
        cr_assert_eq(ipc_request_encode(&req, &buf, &len), 0);
        cr_assert_eq(ipc_request_decode(buf, len, &q), 0);
        cr_assert_str_eq(q.prefix, req.prefix);
        ipc_request_clear(&q);
        free(buf);
        cr_assert_eq(ipc_request_decode("{\"rcpts\":[]}", 12, &q), -EBADMSG);
}

/* sendmail -N success,delay -R hdrs -V envid reaches the worker intact */
Test(smtpc_ipc, dsn_parameters_round_trip)
{
        const char *rcpts[] = {"a@x.test", "b@x.test"};
        const unsigned notify[] = {SMTPC_NOTIFY_SUCCESS | SMTPC_NOTIFY_DELAY, SMTPC_NOTIFY_NEVER};
        const char *orcpt[] = {NULL, "rfc822;b+2B@x.test"};
        struct smtpc_request req = {.queue_id = "Q1",
                                    .sender = "s@x.test",
                                    .rcpts = rcpts,
                                    .n_rcpts = 2,
                                    .dsn_ret = SMTPC_RET_HDRS,
                                    .envid = "env+2B1",
                                    .notify = notify,
                                    .orcpt = orcpt};
        char *buf;
        size_t len;
        cr_assert_eq(ipc_request_encode(&req, &buf, &len), 0);
        struct ipc_request q;
        cr_assert_eq(ipc_request_decode(buf, len, &q), 0);
        cr_assert_eq(q.dsn_ret, SMTPC_RET_HDRS);
        cr_assert_str_eq(q.envid, "env+2B1");
        cr_assert_eq(q.notify[0], SMTPC_NOTIFY_SUCCESS | SMTPC_NOTIFY_DELAY);
        cr_assert_eq(q.notify[1], SMTPC_NOTIFY_NEVER);
        cr_assert_null(q.orcpt[0]);
        cr_assert_str_eq(q.orcpt[1], "rfc822;b+2B@x.test");
        ipc_request_clear(&q);
        free(buf);
        /* a NOTIFY list of the wrong length is refused */
        const char *bad = "{\"queue_id\":\"Q\",\"sender\":\"\",\"rcpts\":[\"a@x\"],"
                          "\"source_address\":null,\"body_size\":1,\"dsn_ret\":0,"
                          "\"envid\":null,\"notify\":[1,2],\"orcpt\":null}";
        cr_assert_eq(ipc_request_decode(bad, strlen(bad), &q), -EBADMSG);
}

/* A provider's messages_per_connection reaches the worker; none stays none,
 * and a value out of range (or of the wrong type) is refused. */
Test(smtpc_ipc, the_providers_messages_per_connection_round_trips)
{
        const char *rcpts[] = {"a@x.test"};
        struct smtpc_request req = {.queue_id = "Q1",
                                    .sender = "",
                                    .rcpts = rcpts,
                                    .n_rcpts = 1,
                                    .messages_per_connection = 2};
        char *buf;
        size_t len;
        struct ipc_request q;
        cr_assert_eq(ipc_request_encode(&req, &buf, &len), 0);
        cr_assert_eq(ipc_request_decode(buf, len, &q), 0);
        cr_assert_eq(q.messages_per_connection, 2);
        ipc_request_clear(&q);
        free(buf);
        req.messages_per_connection = 0;
        cr_assert_eq(ipc_request_encode(&req, &buf, &len), 0);
        cr_assert_eq(ipc_request_decode(buf, len, &q), 0);
        cr_assert_eq(q.messages_per_connection, 0);
        ipc_request_clear(&q);
        free(buf);
        const char *bad[] = {"0", "100001", "\"2\"", "-1"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
                char j[400];
                snprintf(j, sizeof(j),
                         "{\"queue_id\":\"Q\",\"sender\":\"\",\"rcpts\":[\"a@x\"],"
                         "\"source_address\":null,\"body_size\":1,\"dsn_ret\":0,"
                         "\"envid\":null,\"notify\":null,\"orcpt\":null,\"body_signed\":false,"
                         "\"messages_per_connection\":%s}",
                         bad[i]);
                cr_assert_eq(ipc_request_decode(j, strlen(j), &q), -EBADMSG, "%s", bad[i]);
        }
}

/* The MX set tarryd's site cache holds reaches the worker; what the worker
 * would put into a URL is checked on arrival: host names only. */
Test(smtpc_ipc, the_cached_mx_set_round_trips_and_odd_hosts_are_refused)
{
        const char *rcpts[] = {"a@x.test"};
        struct smtpc_mx mx[2] = {{"mx1.x.test", 10}, {"mx2.x.test", 20}};
        struct smtpc_request req = {
            .queue_id = "Q1", .sender = "", .rcpts = rcpts, .n_rcpts = 1, .mx = mx, .n_mx = 2};
        char *buf;
        size_t len;
        struct ipc_request q;
        cr_assert_eq(ipc_request_encode(&req, &buf, &len), 0);
        cr_assert_eq(ipc_request_decode(buf, len, &q), 0);
        cr_assert_eq(q.n_mx, 2);
        cr_assert_str_eq(q.mx[0].host, "mx1.x.test");
        cr_assert_eq(q.mx[0].pref, 10);
        cr_assert_str_eq(q.mx[1].host, "mx2.x.test");
        cr_assert_eq(q.mx[1].pref, 20);
        ipc_request_clear(&q);
        free(buf);
        const char *bad[] = {"[]",
                             "[{\"host\":\"mx.test/x?y#z\",\"pref\":1}]",
                             "[{\"host\":\"mx.test\",\"pref\":65536}]",
                             "[{\"host\":\"mx\\u0000.test\",\"pref\":1}]",
                             "[{\"host\":\"mx.test\"}]",
                             "[{\"host\":\"mx.test\",\"pref\":1,\"x\":1}]",
                             "{\"host\":\"mx.test\",\"pref\":1}"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
                char j[600];
                snprintf(j, sizeof(j),
                         "{\"queue_id\":\"Q\",\"sender\":\"\",\"rcpts\":[\"a@x\"],"
                         "\"source_address\":null,\"body_size\":1,\"dsn_ret\":0,"
                         "\"envid\":null,\"notify\":null,\"orcpt\":null,\"body_signed\":false,"
                         "\"mx\":%s}",
                         bad[i]);
                cr_assert_eq(ipc_request_decode(j, strlen(j), &q), -EBADMSG, "%s", bad[i]);
        }
}

Test(smtpc_ipc, messages_larger_than_a_packet_arrive_whole_with_their_fd)
{
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
        size_t n = 3 * IPC_CHUNK + 17;
        struct ipc_out out = {.buf = malloc(n), .len = n, .fd = sv[0]};
        for (size_t i = 0; i < n; i++)
                out.buf[i] = (char)('a' + i % 26);
        cr_assert_eq(ipc_send(sv[0], &out), 1);
        struct ipc_in in;
        ipc_in_init(&in, n, true);
        cr_assert_eq(ipc_recv(sv[1], &in), 1);
        cr_assert_eq(in.len, n);
        cr_assert_eq(memcmp(in.buf, out.buf, n), 0);
        cr_assert_geq(in.fd, 0, "the fd came with the first packet");
        ipc_in_reset(&in);
        cr_assert_eq(ipc_recv(sv[1], &in), 0, "nothing more");
        /* the same message is too big for a receiver allowing n - 1 bytes */
        out.off = 0;
        out.fd = -1;
        cr_assert_eq(ipc_send(sv[0], &out), 1);
        in.max = n - 1;
        cr_assert_eq(ipc_recv(sv[1], &in), -EMSGSIZE);
        ipc_out_clear(&out);
        ipc_in_reset(&in);
        close(sv[0]);
        cr_assert_eq(ipc_recv(sv[1], &in), -EPIPE);
        free(in.buf);
        close(sv[1]);
}
