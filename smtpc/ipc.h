/* smtpc/ipc.h — what the pool and its delivery workers say to each other (private).
 *
 * Transport: a SOCK_SEQPACKET socketpair. A message is one or more packets,
 * each one flag byte ('M': more follows, 'E': end) and up to IPC_CHUNK bytes
 * of payload, so messages of any size fit whatever the socket buffers. The
 * first packet of a request carries the body fd (SCM_RIGHTS).
 *
 * A payload is a JSON object, one NUL byte, then the message's one long
 * byte string as it is (no NUL; the request's prefix, the result's
 * transcript: escaping them for JSON and parsing them back was ~40 % of
 * decoding a result on tarryd's loop). Strings in the JSON are byte strings
 * (server replies need not be UTF-8): each byte >= 0x80 travels as the code
 * point U+0080..U+00FF, so any byte string without NUL round-trips exactly.
 *
 * Request: {"queue_id","sender","rcpts":[…],"source_address"|null,"body_size"}
 * NUL prefix. Result: every other smtpc_result field; recipients in request
 * order; NUL transcript. The decoders are the only parsers of these messages
 * and enforce the limits (a payload without its NUL, or whose tail is too
 * long or holds a NUL, is refused).
 */
#ifndef TARRY_SMTPC_IPC_H
#define TARRY_SMTPC_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtpc/smtpc.h"

#define IPC_CHUNK       (32 << 10)  /* payload bytes per packet */
#define IPC_SOCKBUF     (256 << 10) /* SO_SNDBUF / SO_RCVBUF asked for */
#define IPC_REQUEST_MAX (16 << 20)  /* a request (many recipients) */
#define IPC_RCPTS_MAX   100000      /* recipients in one request */

/* Bytes a result with n recipients may take (all limits, escaping included). */
size_t ipc_result_max(size_t n_rcpts);

struct ipc_in {
        char *buf; /* NUL-terminated payload of the message being received */
        size_t len, cap;
        size_t max;   /* payload limit: longer is -EMSGSIZE */
        bool want_fd; /* accept one fd with the first packet */
        bool partial; /* packets of an unfinished message received */
        int fd;       /* fd received with the message, or -1 (caller takes it) */
};

void ipc_in_init(struct ipc_in *in, size_t max, bool want_fd);
/* Forget the current message (closes an untaken fd, frees a large buffer). */
void ipc_in_reset(struct ipc_in *in);

/* Read packets without blocking. 1: a whole message is in in->buf (reset
 * before the next); 0: would block; -EPIPE: peer closed; -EBADMSG: bad
 * framing (flag, truncation, unexpected fd); -EMSGSIZE; other -errno. */
int ipc_recv(int sock, struct ipc_in *in);

struct ipc_out {
        char *buf; /* owned */
        size_t len, off;
        int fd; /* borrowed: sent with the first packet, then -1 */
};

/* Send what is left. 1: all sent; 0: would block (nonblocking socket: wait
 * for EPOLLOUT and call again); negative errno. */
int ipc_send(int sock, struct ipc_out *out);
void ipc_out_clear(struct ipc_out *out);

/* ---- request ---- */

struct ipc_request {
        char *queue_id, *sender, *source; /* source NULL: none */
        char **rcpts;
        size_t n_rcpts;
        uint64_t body_size;
        char *prefix; /* header lines ahead of the body, or NULL */
        /* RFC 3461 (smtpc_request's fields) */
        int dsn_ret;
        char *envid;      /* or NULL */
        unsigned *notify; /* n_rcpts, or NULL */
        char **orcpt;     /* n_rcpts, entries may be NULL; or NULL */
        bool body_signed;
        unsigned messages_per_connection; /* 0: none (absent in the JSON) */
        struct smtpc_mx *mx;              /* n_mx host names checked, or NULL */
        size_t n_mx;
};

int ipc_request_encode(const struct smtpc_request *req, char **out, size_t *len);
int ipc_request_decode(const char *buf, size_t len, struct ipc_request *out);
void ipc_request_clear(struct ipc_request *r);

/* ---- result ---- */

struct ipc_result {
        struct smtpc_result res; /* queue_id and rcpts[].address left NULL */
        struct smtpc_rcpt_result *rcpts;
        char **rcpt_text;
        char *text, *destination, *mx_host, *mx_ip, *source, *transcript;
};

int ipc_result_encode(const struct smtpc_result *res, char **out, size_t *len);
/* -EBADMSG for anything out of range, wrongly typed, too long, or a
 * recipient count other than n_rcpts. */
int ipc_result_decode(const char *buf, size_t len, size_t n_rcpts, struct ipc_result *out);
void ipc_result_clear(struct ipc_result *r);

#endif
