/* smtpc/ipc.c — framing and JSON of pool ↔ worker messages; see ipc.h. */
#include "smtpc/ipc.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "smtpc/dns.h"

#define FLAG_MORE 'M'
#define FLAG_END  'E'
#define KEEP_BUF  (64 << 10) /* a receive buffer up to this size is kept between messages */

/* Longest strings a worker may send (bytes after decoding), with the reason. */
#define TEXT_MAX   (SMTPC_REPLY_MAX + 256) /* a reply, or a reason quoting one */
#define HOST_MAX   255                     /* a DNS name */
#define IP_MAX     63                      /* an IPv6 literal with scope */
#define SOURCE_MAX 127                     /* a configured source address */
#define ENVID_MAX  100                     /* RFC 3461 4.4 */
#define ORCPT_MAX  500                     /* RFC 3461 4.2 */
#define PREFIX_MAX (1 << 20) /* tarryd's added header lines (Received:, DKIM-Signature:) */

/* A provider's messages_per_connection (scheduler/policy.c's range). */
#define PER_CONN_MAX 100000

size_t ipc_result_max(size_t n_rcpts)
{
        /* every byte may become a 6-byte \u escape */
        return (256 << 10) + n_rcpts * (size_t)(6 * TEXT_MAX + 512);
}

/* ---- framing ---- */

void ipc_in_init(struct ipc_in *in, size_t max, bool want_fd)
{
        memset(in, 0, sizeof(*in));
        in->max = max;
        in->want_fd = want_fd;
        in->fd = -1;
}

void ipc_in_reset(struct ipc_in *in)
{
        if (in->fd >= 0)
                close(in->fd);
        in->fd = -1;
        in->len = 0;
        in->partial = false;
        if (in->cap > KEEP_BUF) {
                free(in->buf);
                in->buf = NULL;
                in->cap = 0;
        }
}

static int reserve(struct ipc_in *in)
{
        size_t need = in->len + IPC_CHUNK + 1;
        if (need <= in->cap)
                return 0;
        size_t cap = in->cap ? in->cap * 2 : IPC_CHUNK + 1;
        while (cap < need)
                cap *= 2;
        char *b = realloc(in->buf, cap);
        if (!b)
                return -ENOMEM;
        in->buf = b;
        in->cap = cap;
        return 0;
}

/* Take fds passed with a packet: at most one, only with a message's first packet. */
static int take_fds(struct ipc_in *in, struct msghdr *mh, bool first)
{
        int bad = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < n; i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (first && in->want_fd && in->fd < 0)
                                in->fd = fd;
                        else {
                                close(fd);
                                bad = -EBADMSG;
                        }
                }
        }
        return bad;
}

int ipc_recv(int sock, struct ipc_in *in)
{
        for (;;) {
                if (reserve(in) < 0)
                        return -ENOMEM;
                char flag = 0;
                union {
                        char buf[CMSG_SPACE(sizeof(int) * 4)];
                        struct cmsghdr align;
                } cm;
                struct iovec iov[2] = {{&flag, 1}, {in->buf + in->len, IPC_CHUNK}};
                struct msghdr mh = {.msg_iov = iov,
                                    .msg_iovlen = 2,
                                    .msg_control = cm.buf,
                                    .msg_controllen = sizeof(cm.buf)};
                ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == ECONNRESET) /* closed with our packets unread */
                                return -EPIPE;
                        return errno == EAGAIN ? 0 : -errno;
                }
                if (n == 0)
                        return -EPIPE;
                bool first = !in->partial;
                in->partial = true;
                if (take_fds(in, &mh, first) < 0 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
                        return -EBADMSG;
                if (flag != FLAG_MORE && flag != FLAG_END)
                        return -EBADMSG;
                in->len += (size_t)n - 1;
                if (in->len > in->max)
                        return -EMSGSIZE;
                in->buf[in->len] = '\0';
                if (flag == FLAG_END)
                        return 1;
        }
}

int ipc_send(int sock, struct ipc_out *out)
{
        while (out->off < out->len) {
                size_t n = out->len - out->off;
                if (n > IPC_CHUNK)
                        n = IPC_CHUNK;
                char flag = out->off + n == out->len ? FLAG_END : FLAG_MORE;
                struct iovec iov[2] = {{&flag, 1}, {out->buf + out->off, n}};
                union {
                        char buf[CMSG_SPACE(sizeof(int))];
                        struct cmsghdr align;
                } cm;
                struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
                if (out->fd >= 0) {
                        memset(&cm, 0, sizeof(cm));
                        mh.msg_control = cm.buf;
                        mh.msg_controllen = sizeof(cm.buf);
                        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int));
                        memcpy(CMSG_DATA(c), &out->fd, sizeof(int));
                }
                ssize_t r = sendmsg(sock, &mh, MSG_NOSIGNAL);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == ECONNRESET)
                                return -EPIPE;
                        return errno == EAGAIN ? 0 : -errno;
                }
                out->fd = -1;
                out->off += n;
        }
        return 1;
}

void ipc_out_clear(struct ipc_out *out)
{
        free(out->buf);
        memset(out, 0, sizeof(*out));
        out->fd = -1;
}

/* ---- byte strings in JSON ---- */

static json_t *bytes_json(const char *s)
{
        if (!s)
                return json_null();
        size_t n = strlen(s), high = 0;
        for (size_t i = 0; i < n; i++)
                high += (unsigned char)s[i] >= 0x80;
        if (!high)
                return json_stringn_nocheck(s, n);
        _cleanup_free_ char *u = malloc(n + high);
        if (!u)
                return NULL;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                unsigned char b = (unsigned char)s[i];
                if (b < 0x80) {
                        u[k++] = (char)b;
                } else {
                        u[k++] = (char)(0xc0 | (b >> 6));
                        u[k++] = (char)(0x80 | (b & 0x3f));
                }
        }
        return json_stringn_nocheck(u, k);
}

/* The byte string of JSON string v: at most max bytes, code points <= U+00FF. */
static int json_bytes(const json_t *v, size_t max, char **out)
{
        if (!json_is_string(v))
                return -EBADMSG;
        const unsigned char *s = (const unsigned char *)json_string_value(v);
        size_t n = json_string_length(v);
        if (strlen((const char *)s) != n) /* embedded NUL */
                return -EBADMSG;
        char *b = malloc(n + 1);
        if (!b)
                return -ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < 0x80) {
                        b[k++] = (char)s[i];
                } else if ((s[i] == 0xc2 || s[i] == 0xc3) && i + 1 < n) {
                        b[k++] = (char)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3f));
                        i++;
                } else {
                        free(b);
                        return -EBADMSG;
                }
                if (k > max) {
                        free(b);
                        return -EBADMSG;
                }
        }
        b[k] = '\0';
        *out = b;
        return 0;
}

/* A member that may be null (→ NULL). */
static int json_bytes_or_null(const json_t *o, const char *key, size_t max, char **out)
{
        const json_t *v = json_object_get(o, key);
        *out = NULL;
        if (!v)
                return -EBADMSG;
        if (json_is_null(v))
                return 0;
        return json_bytes(v, max, out);
}

static int json_bytes_member(const json_t *o, const char *key, size_t max, char **out)
{
        *out = NULL;
        return json_bytes(json_object_get(o, key), max, out);
}

static int json_int_member(const json_t *o, const char *key, json_int_t lo, json_int_t hi,
                           json_int_t *out)
{
        const json_t *v = json_object_get(o, key);
        if (!json_is_integer(v))
                return -EBADMSG;
        json_int_t x = json_integer_value(v);
        if (x < lo || x > hi)
                return -EBADMSG;
        *out = x;
        return 0;
}

/* The message: j's text, a NUL, and tail's bytes as they are (ipc.h). */
static int dump(json_t *j, const char *tail, char **out, size_t *len)
{
        if (!j)
                return -ENOMEM;
        char *s = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!s)
                return -ENOMEM;
        size_t n = strlen(s), tn = tail ? strlen(tail) : 0;
        char *m = realloc(s, n + 1 + tn + 1);
        if (!m) {
                free(s);
                return -ENOMEM;
        }
        memcpy(m + n + 1, tail ? tail : "", tn + 1); /* m[n] is the JSON text's NUL */
        *out = m;
        *len = n + 1 + tn;
        return 0;
}

/* Split a message into its JSON object (parsed into *j) and its tail: at
 * most max bytes without NUL, copied into *tail. */
static int undump(const char *buf, size_t len, size_t max, json_t **j, char **tail)
{
        const char *nul = memchr(buf, '\0', len);
        if (!nul)
                return -EBADMSG;
        size_t tn = len - (size_t)(nul + 1 - buf);
        if (tn > max || memchr(nul + 1, '\0', tn))
                return -EBADMSG;
        *j = json_loadb(buf, (size_t)(nul - buf), JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(*j))
                return -EBADMSG;
        if (!(*tail = malloc(tn + 1)))
                return -ENOMEM;
        memcpy(*tail, nul + 1, tn);
        (*tail)[tn] = '\0';
        return 0;
}

/* ---- request ---- */

/* "mx": [{"host": "mx1.example", "pref": 10}, …] */
static int mx_encode(json_t *j, const struct smtpc_mx *mx, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < n && i < SMTPC_MX_MAX; i++)
                if (json_array_append_new(a, json_pack("{s:s,s:I}", "host", mx[i].host, "pref",
                                                       (json_int_t)mx[i].pref)) < 0) {
                        json_decref(a);
                        return -ENOMEM;
                }
        return a && json_object_set_new(j, "mx", a) == 0 ? 0 : -ENOMEM;
}

/* "mx", when present: 1..SMTPC_MX_MAX objects, each a host name (it goes
 * into libcurl's URL) and a preference 0..65535. */
static int mx_decode(const json_t *j, struct ipc_request *out)
{
        const json_t *a = json_object_get(j, "mx");
        if (!a)
                return 0;
        size_t n = json_array_size(a);
        if (!json_is_array(a) || n == 0 || n > SMTPC_MX_MAX ||
            !(out->mx = calloc(n, sizeof(*out->mx))))
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                const json_t *o = json_array_get(a, i), *h = json_object_get(o, "host");
                json_int_t pref;
                if (!json_is_string(h) || json_string_length(h) >= sizeof(out->mx[i].host) ||
                    strlen(json_string_value(h)) != json_string_length(h) ||
                    !dns_host_name_ok(json_string_value(h)) ||
                    json_int_member(o, "pref", 0, 65535, &pref) < 0 || json_object_size(o) != 2)
                        return -EBADMSG;
                memcpy(out->mx[i].host, json_string_value(h), json_string_length(h) + 1);
                out->mx[i].pref = (unsigned)pref;
        }
        out->n_mx = n;
        return 0;
}

int ipc_request_encode(const struct smtpc_request *req, char **out, size_t *len)
{
        json_t *rcpts = json_array();
        for (size_t i = 0; rcpts && i < req->n_rcpts; i++)
                if (json_array_append_new(rcpts, bytes_json(req->rcpts[i])) < 0) {
                        json_decref(rcpts);
                        return -ENOMEM;
                }
        json_t *notify = req->notify ? json_array() : json_null();
        json_t *orcpt = req->orcpt ? json_array() : json_null();
        for (size_t i = 0; req->notify && notify && i < req->n_rcpts; i++)
                json_array_append_new(notify, json_integer(req->notify[i]));
        for (size_t i = 0; req->orcpt && orcpt && i < req->n_rcpts; i++)
                json_array_append_new(orcpt, bytes_json(req->orcpt[i]));
        json_t *j =
            json_pack("{s:o,s:o,s:o,s:o,s:I,s:i,s:o,s:o,s:o,s:b}", "queue_id",
                      bytes_json(req->queue_id ? req->queue_id : ""), "sender",
                      bytes_json(req->sender ? req->sender : ""), "rcpts", rcpts, "source_address",
                      bytes_json(req->source_address), "body_size", (json_int_t)req->body_size,
                      "dsn_ret", (int)req->dsn_ret, "envid", bytes_json(req->envid), "notify",
                      notify, "orcpt", orcpt, "body_signed", req->body_signed);
        if (j && req->messages_per_connection > 0 &&
            json_object_set_new(j, "messages_per_connection",
                                json_integer(req->messages_per_connection)) < 0) {
                json_decref(j);
                return -ENOMEM;
        }
        if (j && req->n_mx > 0 && mx_encode(j, req->mx, req->n_mx) < 0) {
                json_decref(j);
                return -ENOMEM;
        }
        return dump(j, req->prefix, out, len);
}

void ipc_request_clear(struct ipc_request *r)
{
        free(r->queue_id);
        free(r->sender);
        free(r->source);
        free(r->prefix);
        for (size_t i = 0; i < r->n_rcpts && r->rcpts; i++)
                free(r->rcpts[i]);
        for (size_t i = 0; i < r->n_rcpts && r->orcpt; i++)
                free(r->orcpt[i]);
        free(r->rcpts);
        free(r->envid);
        free(r->notify);
        free(r->orcpt);
        free(r->mx);
        memset(r, 0, sizeof(*r));
}

/* "notify": null or n integers 0..15; "orcpt": null or n strings/nulls. */
static int dsn_fields(const json_t *j, struct ipc_request *out)
{
        json_int_t ret;
        const json_t *notify = json_object_get(j, "notify"), *orcpt = json_object_get(j, "orcpt");
        const json_t *sig = json_object_get(j, "body_signed");
        if (!json_is_boolean(sig))
                return -EBADMSG;
        out->body_signed = json_is_true(sig);
        if (json_int_member(j, "dsn_ret", 0, SMTPC_RET_HDRS, &ret) < 0 ||
            json_bytes_or_null(j, "envid", ENVID_MAX, &out->envid) < 0 || !notify || !orcpt)
                return -EBADMSG;
        out->dsn_ret = (int)ret;
        if (json_is_array(notify)) {
                if (json_array_size(notify) != out->n_rcpts ||
                    !(out->notify = calloc(out->n_rcpts, sizeof(*out->notify))))
                        return -EBADMSG;
                for (size_t i = 0; i < out->n_rcpts; i++) {
                        const json_t *v = json_array_get(notify, i);
                        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                            json_integer_value(v) > 15)
                                return -EBADMSG;
                        out->notify[i] = (unsigned)json_integer_value(v);
                }
        } else if (!json_is_null(notify)) {
                return -EBADMSG;
        }
        if (json_is_array(orcpt)) {
                if (json_array_size(orcpt) != out->n_rcpts ||
                    !(out->orcpt = calloc(out->n_rcpts, sizeof(char *))))
                        return -EBADMSG;
                for (size_t i = 0; i < out->n_rcpts; i++) {
                        const json_t *v = json_array_get(orcpt, i);
                        if (!json_is_null(v) && json_bytes(v, ORCPT_MAX, &out->orcpt[i]) < 0)
                                return -EBADMSG;
                }
        } else if (!json_is_null(orcpt)) {
                return -EBADMSG;
        }
        return 0;
}

static int request_fields(const json_t *j, struct ipc_request *out)
{
        const json_t *rcpts = json_object_get(j, "rcpts");
        json_int_t size;
        if (!json_is_array(rcpts) || json_array_size(rcpts) == 0 ||
            json_array_size(rcpts) > IPC_RCPTS_MAX)
                return -EBADMSG;
        if (json_bytes_member(j, "queue_id", 255, &out->queue_id) < 0 ||
            json_bytes_member(j, "sender", 1024, &out->sender) < 0 ||
            json_bytes_or_null(j, "source_address", SOURCE_MAX, &out->source) < 0 ||
            json_int_member(j, "body_size", 0, INT64_MAX, &size) < 0)
                return -EBADMSG;
        out->body_size = (uint64_t)size;
        if (json_object_get(j, "messages_per_connection")) {
                json_int_t mpc;
                if (json_int_member(j, "messages_per_connection", 1, PER_CONN_MAX, &mpc) < 0)
                        return -EBADMSG;
                out->messages_per_connection = (unsigned)mpc;
        }
        if (mx_decode(j, out) < 0)
                return -EBADMSG;
        out->rcpts = calloc(json_array_size(rcpts), sizeof(char *));
        if (!out->rcpts)
                return -ENOMEM;
        for (size_t i = 0; i < json_array_size(rcpts); i++) {
                int r = json_bytes(json_array_get(rcpts, i), 1024, &out->rcpts[i]);
                if (r < 0)
                        return r;
                out->n_rcpts = i + 1;
        }
        return dsn_fields(j, out);
}

int ipc_request_decode(const char *buf, size_t len, struct ipc_request *out)
{
        memset(out, 0, sizeof(*out));
        if (len > IPC_REQUEST_MAX)
                return -EBADMSG;
        _cleanup_(json_decrefp) json_t *j = NULL;
        int r = undump(buf, len, PREFIX_MAX, &j, &out->prefix);
        if (r == 0 && !*out->prefix) { /* none */
                free(out->prefix);
                out->prefix = NULL;
        }
        if (r == 0)
                r = request_fields(j, out);
        if (r < 0)
                ipc_request_clear(out);
        return r;
}

/* ---- result: enumerations by name (stable across builds) ---- */

static const char *const status_names[] = {
    [SMTPC_ATTEMPT_DONE] = "done",
    [SMTPC_ATTEMPT_TEMPFAIL] = "tempfail",
    [SMTPC_ATTEMPT_PERMFAIL] = "permfail",
};

static const char *const failure_names[] = {
    [SMTPC_FAIL_NONE] = "none",         [SMTPC_FAIL_DNS] = "dns",
    [SMTPC_FAIL_NULL_MX] = "null_mx",   [SMTPC_FAIL_CONNECT] = "connect",
    [SMTPC_FAIL_TIMEOUT] = "timeout",   [SMTPC_FAIL_DROPPED] = "dropped",
    [SMTPC_FAIL_TLS] = "tls",           [SMTPC_FAIL_PROTOCOL] = "protocol",
    [SMTPC_FAIL_REPLY] = "reply",       [SMTPC_FAIL_LOCAL] = "local",
    [SMTPC_FAIL_REFUSED] = "refused",   [SMTPC_FAIL_POLICY] = "policy",
    [SMTPC_FAIL_REFUSAL] = "refusal",   [SMTPC_FAIL_WORKER] = "worker",
    [SMTPC_FAIL_SHUTDOWN] = "shutdown",
};
_Static_assert(ELEMENTSOF(failure_names) == SMTPC__FAIL_MAX, "a name per failure");

static const char *const outcome_names[] = {
    [SMTPC_RCPT_DELIVERED] = "delivered",
    [SMTPC_RCPT_DEFERRED] = "deferred",
    [SMTPC_RCPT_FAILED] = "failed",
};

static const char *name_of(const char *const *names, size_t n, int v)
{
        return v >= 0 && (size_t)v < n ? names[v] : "";
}

static int value_of(const char *const *names, size_t n, const json_t *v)
{
        const char *s = json_string_value(v);
        for (size_t i = 0; s && i < n; i++)
                if (strcmp(s, names[i]) == 0)
                        return (int)i;
        return -EBADMSG;
}

static int enhanced_member(const json_t *o, char out[SMTPC_ENH_MAX])
{
        _cleanup_free_ char *s = NULL;
        if (json_bytes_member(o, "enhanced", SMTPC_ENH_MAX - 1, &s) < 0)
                return -EBADMSG;
        memcpy(out, s, strlen(s) + 1);
        return 0;
}

/* A typed name of common/outcome.h, "" when out of range (refused on arrival). */
static const char *or_empty(const char *name)
{
        return name ? name : "";
}

static json_t *rcpt_json(const struct smtpc_rcpt_result *r)
{
        return json_pack("{s:s,s:i,s:o,s:o,s:s,s:s,s:s}", "outcome",
                         name_of(outcome_names, ELEMENTSOF(outcome_names), r->outcome), "code",
                         r->code, "enhanced", bytes_json(r->enhanced), "text",
                         bytes_json(r->text ? r->text : ""), "origin",
                         or_empty(outcome_origin_name(r->origin)), "local",
                         or_empty(outcome_local_name(r->local)), "phase",
                         or_empty(outcome_phase_name(r->phase)));
}

int ipc_result_encode(const struct smtpc_result *res, char **out, size_t *len)
{
        json_t *rcpts = json_array();
        for (size_t i = 0; rcpts && i < res->n_rcpts; i++)
                if (json_array_append_new(rcpts, rcpt_json(&res->rcpts[i])) < 0) {
                        json_decref(rcpts);
                        return -ENOMEM;
                }
        json_t *j =
            json_pack("{s:s,s:s,s:s,s:i,s:o,s:o,s:o*,s:o,s:o,s:o,s:i,s:o,s:b,s:b,s:I,s:I}",
                      "status", name_of(status_names, ELEMENTSOF(status_names), res->status),
                      "failure", name_of(failure_names, ELEMENTSOF(failure_names), res->failure),
                      "phase", or_empty(outcome_phase_name(res->phase)), "code", res->code,
                      "enhanced", bytes_json(res->enhanced), "text", bytes_json(res->text), "rcpts",
                      rcpts, "destination", bytes_json(res->destination ? res->destination : ""),
                      "mx_host", bytes_json(res->mx_host), "mx_ip", bytes_json(res->mx_ip), "port",
                      (int)res->port, "source_address", bytes_json(res->source_address), "tls",
                      res->tls, "dsn_offered", res->dsn_offered, "connect_us",
                      (json_int_t)res->connect_us, "total_us", (json_int_t)res->total_us);
        return dump(j, res->transcript, out, len);
}

void ipc_result_clear(struct ipc_result *r)
{
        for (size_t i = 0; r->rcpt_text && i < r->res.n_rcpts; i++)
                free(r->rcpt_text[i]);
        free(r->rcpt_text);
        free(r->rcpts);
        free(r->text);
        free(r->destination);
        free(r->mx_host);
        free(r->mx_ip);
        free(r->source);
        free(r->transcript);
        memset(r, 0, sizeof(*r));
}

/* Whose words and how far: a server's reply has no local reason, tarry's
 * own failure always has one. */
static int origin_fields(const json_t *o, struct smtpc_rcpt_result *rr)
{
        int origin = outcome_origin_from_name(json_string_value(json_object_get(o, "origin")));
        int local = outcome_local_from_name(json_string_value(json_object_get(o, "local")));
        int phase = outcome_phase_from_name(json_string_value(json_object_get(o, "phase")));
        if (origin < 0 || local < 0 || phase < 0 ||
            (origin == OUTCOME_FROM_SERVER) != (local == OUTCOME_LOCAL_NONE))
                return -EBADMSG;
        rr->origin = (enum outcome_origin)origin;
        rr->local = (enum outcome_local)local;
        rr->phase = (enum outcome_phase)phase;
        return 0;
}

static int rcpt_fields(const json_t *o, struct smtpc_rcpt_result *rr, char **text)
{
        json_int_t code;
        int oc = value_of(outcome_names, ELEMENTSOF(outcome_names), json_object_get(o, "outcome"));
        if (!json_is_object(o) || oc < 0 || json_int_member(o, "code", 0, 999, &code) < 0 ||
            enhanced_member(o, rr->enhanced) < 0 || origin_fields(o, rr) < 0 ||
            json_bytes_member(o, "text", TEXT_MAX, text) < 0)
                return -EBADMSG;
        rr->outcome = (enum smtpc_rcpt_outcome)oc;
        rr->code = (int)code;
        rr->text = *text;
        return 0;
}

static int result_strings(const json_t *j, struct ipc_result *out)
{
        if (json_bytes_or_null(j, "text", TEXT_MAX, &out->text) < 0 ||
            json_bytes_member(j, "destination", SMTPC_DEST_MAX - 1, &out->destination) < 0 ||
            json_bytes_or_null(j, "mx_host", HOST_MAX, &out->mx_host) < 0 ||
            json_bytes_or_null(j, "mx_ip", IP_MAX, &out->mx_ip) < 0 ||
            json_bytes_or_null(j, "source_address", SOURCE_MAX, &out->source) < 0)
                return -EBADMSG;
        struct smtpc_result *r = &out->res;
        r->text = out->text;
        r->destination = out->destination;
        r->mx_host = out->mx_host;
        r->mx_ip = out->mx_ip;
        r->source_address = out->source;
        r->transcript = out->transcript;
        return 0;
}

static int result_fields(const json_t *j, size_t n_rcpts, struct ipc_result *out)
{
        struct smtpc_result *r = &out->res;
        json_int_t code, port, connect_us, total_us;
        int st = value_of(status_names, ELEMENTSOF(status_names), json_object_get(j, "status"));
        int f = value_of(failure_names, ELEMENTSOF(failure_names), json_object_get(j, "failure"));
        int ph = outcome_phase_from_name(json_string_value(json_object_get(j, "phase")));
        const json_t *tls = json_object_get(j, "tls");
        const json_t *dsn = json_object_get(j, "dsn_offered");
        if (st < 0 || f < 0 || ph < 0 || !json_is_boolean(tls) || !json_is_boolean(dsn) ||
            json_int_member(j, "code", 0, 999, &code) < 0 ||
            json_int_member(j, "port", 0, 65535, &port) < 0 ||
            json_int_member(j, "connect_us", 0, INT64_MAX, &connect_us) < 0 ||
            json_int_member(j, "total_us", 0, INT64_MAX, &total_us) < 0 ||
            enhanced_member(j, r->enhanced) < 0 || result_strings(j, out) < 0)
                return -EBADMSG;
        r->status = (enum smtpc_status)st;
        r->failure = (enum smtpc_failure)f;
        r->origin = smtpc_failure_origin(r->failure); /* one source of truth: the failure */
        r->local = smtpc_failure_local(r->failure);
        r->phase = (enum outcome_phase)ph;
        r->code = (int)code;
        r->port = (uint16_t)port;
        r->tls = json_is_true(tls);
        r->dsn_offered = json_is_true(dsn);
        r->connect_us = connect_us;
        r->total_us = total_us;
        const json_t *rcpts = json_object_get(j, "rcpts");
        if (!json_is_array(rcpts) || json_array_size(rcpts) != n_rcpts)
                return -EBADMSG;
        out->rcpts = calloc(n_rcpts ? n_rcpts : 1, sizeof(*out->rcpts));
        out->rcpt_text = calloc(n_rcpts ? n_rcpts : 1, sizeof(char *));
        if (!out->rcpts || !out->rcpt_text)
                return -ENOMEM;
        r->rcpts = out->rcpts;
        r->n_rcpts = n_rcpts;
        for (size_t i = 0; i < n_rcpts; i++)
                if (rcpt_fields(json_array_get(rcpts, i), &out->rcpts[i], &out->rcpt_text[i]) < 0)
                        return -EBADMSG;
        return 0;
}

int ipc_result_decode(const char *buf, size_t len, size_t n_rcpts, struct ipc_result *out)
{
        memset(out, 0, sizeof(*out));
        if (len > ipc_result_max(n_rcpts))
                return -EBADMSG;
        _cleanup_(json_decrefp) json_t *j = NULL;
        int r = undump(buf, len, SMTPC_TRANSCRIPT_MAX, &j, &out->transcript);
        if (r == 0)
                r = result_fields(j, n_rcpts, out);
        if (r < 0)
                ipc_result_clear(out);
        return r;
}
