/* smtpc/smtpc.h — one SMTP delivery attempt, on the caller's sd-event loop.
 *
 * Input: a request (sender, recipients of ONE route, body fd, pinned source
 * address) and the config. Output: exactly one smtpc_result per request,
 * delivered through the request's done() callback from the event loop.
 * Never decides when to retry (that is scheduler/), never touches the spool.
 *
 * How: routing ([transport] override, else relayhost, else MX of the
 * recipient domain via c-ares). libcurl's multi socket-action API, in
 * CONNECT_ONLY mode, connects from the bound source address, reads the
 * greeting, sends EHLO (HELO if refused), does STARTTLS with its certificate
 * checks and AUTH; tarry reads the server's EHLO keywords from that
 * exchange. Then tarry writes and reads the transaction itself with
 * curl_easy_send/curl_easy_recv (curl's TLS layer) on the non-blocking
 * socket, watched by the sd-event loop: no threads, no blocking call.
 *   MAIL FROM:<s> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8] [RET=…] [ENVID=…]
 *   RCPT TO:<r> [NOTIFY=…] [ORCPT=…]
 * SIZE when offered; BODY=8BITMIME when the body holds a byte >= 0x80 and
 * 8BITMIME is offered; SMTPUTF8 when an address holds UTF-8 and SMTPUTF8 is
 * offered; the RFC 3461 parameters only when DSN is offered (an ENVID or
 * ORCPT that is not valid xtext is left out, never sent). With PIPELINING
 * (RFC 2920) MAIL, every RCPT and DATA leave in one write; without it each
 * command waits for the previous reply. The body is dot-stuffed in chunks as
 * the socket takes it.
 *
 * Connections: after a transaction that ended in step (the final dot
 * answered), the connection is kept for the next attempt to the same
 * (source address, route key) for up to 5 seconds of idleness and at most
 * [smtp] max_deliveries_per_connection messages (fewer when the request's
 * messages_per_connection says so), then closed with QUIT.
 * After a transaction that ended before its final dot (refused MAIL/RCPTs)
 * the connection goes on with RSET only when another attempt for the same
 * destination is already queued; otherwise QUIT (a retry gets a fresh one). A
 * kept connection that the server closed meanwhile is noticed before use
 * (or at the first command: the message then gets a new connection).
 *
 * Replies: libcurl's part is recovered from its debug callback, tarry's part
 * is read directly; each command is paired with its reply in order (also
 * when pipelined). A reply's text is the reply exactly as sent, code prefix of
 * every line included, lines joined with "\n" (CRLF removed), e.g.
 *   "451-4.7.1 Greylisted\n451 4.7.1 try again in 300 seconds".
 * Each reply text is capped at SMTPC_REPLY_MAX bytes and the transcript at
 * SMTPC_TRANSCRIPT_MAX; a server that exceeds SMTPC_REPLY_ABORT for one
 * reply (endless multi-line reply, or one endless line: "reply too long"), or
 * sends libcurl a line longer than its own 300 KB limit during the connect
 * phase, has its transfer aborted and the attempt reported
 * as a temporary failure (4.4.2, SMTPC_FAIL_PROTOCOL) — except a reply to the
 * final dot that began with 2xx: the server has the message, so that 2xx
 * stands (delivered), the rest is cut off. A garbled reply (no 3-digit code
 * followed by ' ' or '-', or a NUL byte, shown as '?') ends the session at
 * once: 4.5.0, SMTPC_FAIL_PROTOCOL, "garbled reply while sending MAIL FROM";
 * a garbled 2xx to the final dot still counts as delivered.
 *
 * Timeouts: connect_timeout covers TCP connect, the greeting and a STARTTLS
 * handshake (libcurl's connect phase); command_timeout each reply up to DATA,
 * counted from its command (or from the previous reply when pipelined)
 * however slowly the bytes trickle in; data_timeout the DATA phase from the
 * 354 to the reply to the final dot. A failed session is dropped without
 * QUIT. A connection is kept for the next message only after its final dot
 * was answered.
 *
 * Concurrency: requests beyond max_connections (global) or
 * destination_concurrency (per route key + source address) are queued
 * inside smtpc in arrival order and started when a slot frees up;
 * smtpc_attempt_start() never returns -EBUSY. That bound is for callers
 * that drive this engine directly (bench/deliver, tests); in tarryd the
 * scheduler owns concurrency and each worker runs one attempt at a time.
 *
 * MTA-STS (cfg->mta_sts, MX routes only): between DNS and the first
 * connection the recipient domain's policy is looked up, and fetched when
 * its TXT id changed, by mtasts/ in blocking calls (10 s or connect_timeout
 * each): run in a worker, that blocks only this attempt (smtpc/sts.h).
 *
 * A server without 8BITMIME gets an 8-bit body converted to quoted-printable
 * (smtpc/mime7.h, as Postfix); a message that cannot be converted (an 8-bit
 * header, message/global, a binary part) or must not be (DKIM-signed,
 * body_signed) is not sent: every recipient fails with "554 5.6.3 … cannot
 * be converted to 7-bit: <why>", nothing on the wire.
 *
 * A server without SMTPUTF8 gets no UTF-8 address (RFC 6531 3.2): an IDN
 * domain goes as its A-label (libidn2, IDNA2008); a UTF-8 local part has no
 * ASCII form, so that recipient fails "553 5.6.7 … does not offer SMTPUTF8"
 * (every recipient when it is the sender's). Routing and DNS always use the
 * A-label (smtpc_route: "mx:xn--bcher-kva.example").
 */
#ifndef TARRY_SMTPC_H
#define TARRY_SMTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "common/outcome.h"
#include "config/config.h"

#define SMTPC_REPLY_MAX      4096       /* bytes of one reply's text kept */
#define SMTPC_REPLY_ABORT    (64 << 10) /* bytes of one reply before aborting */
#define SMTPC_TRANSCRIPT_MAX (16 << 10) /* bytes of transcript kept */
#define SMTPC_DEST_MAX       300        /* route key length, NUL included */
#define SMTPC_ENH_MAX        16         /* "x.yyy.zzz" + NUL */

struct smtpc;

/* ---- routing (pure functions of the config) ---- */

enum smtpc_route_kind {
        SMTPC_ROUTE_TRANSPORT, /* a [transport] row matched the domain */
        SMTPC_ROUTE_RELAYHOST, /* relayhost is set */
        SMTPC_ROUTE_MX,        /* MX lookup of the recipient domain */
};

struct smtpc_route {
        enum smtpc_route_kind kind;
        char host[256]; /* next-hop host (name or IP); the domain for MX */
        uint16_t port;  /* resolved: smtp_port when the config said 0 */
        bool no_mx;     /* connect to host itself (A/AAAA), no MX lookup */
        enum cfg_tls tls;
        bool auth; /* relayhost with relay_auth_file */
        /* Where the administrator configured this next hop, for reasons:
         * "relayhost", "[transport] example.com ="; "" for MX routes. */
        char configured[SMTPC_DEST_MAX];
        /* Stable route key: "[127.0.0.1]:2525", "mx:example.com",
         * "relay.example.net:587" (MX of host). Scheduler destinations are
         * (source address, destination). */
        char destination[SMTPC_DEST_MAX];
};

/* Which route applies to recipients of rcpt_domain. 0 or -EINVAL (bad domain). */
int smtpc_route(const struct tarry_config *cfg, const char *rcpt_domain, struct smtpc_route *out);

/* The source address for a destination by stable hashing over
 * cfg->source_addresses (same answer for the same pool and destination),
 * or NULL when no source address is configured. Points into cfg. */
const char *smtpc_pick_source(const struct tarry_config *cfg, const char *destination);

/* Whether addr is (still) one of cfg->source_addresses. */
bool smtpc_source_configured(const struct tarry_config *cfg, const char *addr);

/* ---- attempts ---- */

enum smtpc_status {
        SMTPC_ATTEMPT_DONE,     /* the transaction ran: see each recipient's outcome */
        SMTPC_ATTEMPT_TEMPFAIL, /* attempt-level temporary failure: all recipients deferred */
        SMTPC_ATTEMPT_PERMFAIL, /* attempt-level permanent failure: all recipients failed */
};

/* Why an attempt failed as a whole (lets the scheduler pick a class). */
enum smtpc_failure {
        SMTPC_FAIL_NONE,
        SMTPC_FAIL_DNS,      /* 4.4.3 temporary DNS failure, 5.4.4 no such domain */
        SMTPC_FAIL_NULL_MX,  /* 5.1.10 RFC 7505 null MX */
        SMTPC_FAIL_CONNECT,  /* 4.4.1 every host refused / unreachable */
        SMTPC_FAIL_TIMEOUT,  /* 4.4.2 connect, command or DATA timeout */
        SMTPC_FAIL_DROPPED,  /* 4.4.2 connection lost mid-session */
        SMTPC_FAIL_TLS,      /* 4.7.5 STARTTLS required but failed */
        SMTPC_FAIL_PROTOCOL, /* 4.4.2 oversized reply, 4.5.0 garbled reply */
        SMTPC_FAIL_REPLY,    /* the server's own reply (greeting, EHLO, MAIL, end of DATA) */
        SMTPC_FAIL_LOCAL,    /* 4.3.0 local problem (body unreadable, auth file, memory) */
        SMTPC_FAIL_REFUSED,  /* 5xx greeting from the last host: deferred, as Postfix's
                              * smtp_skip_5xx_greeting (4.x.x, "refused to talk to me") */
        SMTPC_FAIL_POLICY,   /* 4.7.5 MTA-STS enforce: no MX host the policy allows */
        SMTPC_FAIL_REFUSAL,  /* tarry would not send it: bad address (5.1.x), 8-bit to a
                              * 7-bit server (5.6.3), UTF-8 address without SMTPUTF8 (5.6.7) */
        SMTPC_FAIL_WORKER,   /* 4.3.0 the delivery worker died, lied or overstayed (pool) */
        SMTPC_FAIL_SHUTDOWN, /* 4.3.0 aborted: the caller is shutting down */
        SMTPC__FAIL_MAX,
};

/* Whose words a failure is, and tarry's reason when they are its own:
 * SMTPC_FAIL_NONE, _REPLY and _REFUSED are the server's (OUTCOME_LOCAL_NONE),
 * every other failure is tarry's. */
enum outcome_origin smtpc_failure_origin(enum smtpc_failure f);
enum outcome_local smtpc_failure_local(enum smtpc_failure f);

enum smtpc_rcpt_outcome {
        SMTPC_RCPT_DELIVERED, /* 2xx after the final dot */
        SMTPC_RCPT_DEFERRED,  /* 4xx (own or attempt-level) */
        SMTPC_RCPT_FAILED,    /* 5xx (own or attempt-level), or address refused locally */
};

/* Every recipient's outcome says whose words it is: the server's reply
 * (origin OUTCOME_FROM_SERVER, local OUTCOME_LOCAL_NONE) or tarry's own
 * failure (OUTCOME_FROM_TARRY and its reason; code, enhanced code and text
 * are then synthesized for logs and DSNs and mean nothing more), and how far
 * the session got (phase). Nobody needs to read the text again to know. */
struct smtpc_rcpt_result {
        const char *address;
        enum smtpc_rcpt_outcome outcome;
        int code;                     /* basic reply code (synthesized when no reply) */
        char enhanced[SMTPC_ENH_MAX]; /* "4.7.1", "" if none */
        const char *text;             /* full reply text, see the top of this file */
        enum outcome_origin origin;
        enum outcome_local local; /* OUTCOME_LOCAL_NONE when origin is the server */
        enum outcome_phase phase;
};

struct smtpc_result {
        const char *queue_id;
        enum smtpc_status status;
        enum smtpc_failure failure;
        /* Attempt-level failure (status != DONE): reply or synthesized reason,
         * e.g. "4.4.1 connect to mx1.example.com[192.0.2.1]:25: Connection refused". */
        int code;
        char enhanced[SMTPC_ENH_MAX];
        const char *text;
        /* Of that attempt-level reply (status != DONE), as per recipient:
         * origin and local follow from failure (smtpc_failure_origin/_local). */
        enum outcome_origin origin;
        enum outcome_local local;
        enum outcome_phase phase;

        size_t n_rcpts; /* same order as the request */
        const struct smtpc_rcpt_result *rcpts;

        const char *destination; /* route key */
        const char *mx_host;     /* host last tried, or NULL */
        const char *mx_ip;       /* its IP, or NULL */
        uint16_t port;
        const char *source_address; /* bound source, or NULL (kernel's choice) */
        bool tls;                   /* STARTTLS was used on the last connection */
        /* The server offered DSN (RFC 3461), so it received the NOTIFY/ORCPT/
         * RET/ENVID of this transaction and now answers for success notices;
         * false: a NOTIFY=SUCCESS recipient delivered here needs a "relayed"
         * DSN from us. */
        bool dsn_offered;
        const char *transcript; /* "> CMD\n< reply\n..." (AUTH hidden), capped */
        int64_t connect_us;     /* attempt start → first greeting line (0: none) */
        int64_t total_us;       /* attempt start → completion */
};

typedef void (*smtpc_done_fn)(const struct smtpc_result *res, void *userdata);

#define SMTPC_MX_MAX 10 /* MX hosts tried (the most preferred) */

struct smtpc_mx {
        char host[256]; /* a host name (dns_host_name_ok) */
        unsigned pref;  /* 0..65535 */
};

enum smtpc_dsn_ret {
        SMTPC_RET_NONE, /* no RET parameter */
        SMTPC_RET_FULL,
        SMTPC_RET_HDRS,
};

enum smtpc_notify {
        SMTPC_NOTIFY_SUCCESS = 1,
        SMTPC_NOTIFY_FAILURE = 2,
        SMTPC_NOTIFY_DELAY = 4,
        SMTPC_NOTIFY_NEVER = 8,
};

struct smtpc_request {
        const char *queue_id;
        const char *sender;       /* "" = null sender <> */
        const char *const *rcpts; /* all of one route */
        size_t n_rcpts;
        int body_fd; /* dup()ed by smtpc; read with pread from offset 0 */
        uint64_t body_size;
        /* Header lines sent ahead of the body file's content (tarryd's
         * Received:, DKIM-Signature:, each CRLF-terminated), or NULL. smtpc
         * joins them and the body into one memory file in the process that
         * runs the attempt (a delivery worker), not on tarryd's loop; the
         * message on the wire is prefix + body, and SIZE= counts both. */
        const char *prefix;
        const char *source_address; /* pinned source, or NULL (none configured) */
        /* Pool only: the receiving site the attempt goes to (tarryd's
         * scheduler key, daemon/site.h), or NULL (its route). Warm
         * workers are per (source address, site); with
         * site_connections > 0 (a provider's limit) the pool keeps at most
         * that many connections open to the site, idle ones included. */
        const char *site;
        unsigned site_connections;
        /* The provider's messages_per_connection for the site (0: none): a
         * connection carries at most min(this, [smtp]
         * max_deliveries_per_connection) messages, then is closed with QUIT. */
        unsigned messages_per_connection;
        /* MX routes: the domain's MX set as tarryd's site cache holds it
         * (daemon/site.h, kept for the records' TTL), so the attempt goes to
         * the hosts its site was chosen by; only their addresses are looked
         * up. n_mx 0: the MX records are looked up for the attempt. */
        const struct smtpc_mx *mx;
        size_t n_mx;
        /* RFC 3461, sent only to a server that offers DSN: */
        enum smtpc_dsn_ret dsn_ret;
        /* ENVID and ORCPT xtext-encoded as the envelope keeps them; a value
         * that is not valid xtext is left out of the command, never sent */
        const char *envid;        /* ENVID, or NULL */
        const unsigned *notify;   /* n_rcpts SMTPC_NOTIFY_* sets (0: none), or NULL */
        const char *const *orcpt; /* n_rcpts "rfc822;xtext" (entries may be NULL), or NULL */
        /* DKIM-signed (queue.h ENVELOPE_DKIM_SIGNED): the body goes byte for
         * byte or not at all; a server without 8BITMIME gets no converted
         * copy of an 8-bit one (5.6.3: the signature would fail) */
        bool body_signed;
        smtpc_done_fn done; /* called exactly once, from the loop */
        void *userdata;
};

/* A client on loop e. cfg must outlive the client (or be replaced with
 * smtpc_set_config). 0 or negative errno. */
int smtpc_new(sd_event *e, const struct tarry_config *cfg, struct smtpc **out);

/* New config for attempts started from now on (reload). Running attempts
 * keep the settings they started with. 0 or -ENOMEM/-EINVAL. */
int smtpc_set_config(struct smtpc *c, const struct tarry_config *cfg);

/* Start (or queue) one attempt. All strings and the fd are copied; the request
 * may be freed on return. 0, or -EINVAL (no recipients, NULL done), -ENOMEM,
 * -EBADF. done() is never called from inside this function. */
int smtpc_attempt_start(struct smtpc *c, const struct smtpc_request *req);

/* Attempts running or queued (for shutdown). */
size_t smtpc_pending(const struct smtpc *c);

/* Abort every running and queued attempt: each done() is called (from this
 * call) with a temporary failure "4.3.0 delivery aborted: shutting down". */
void smtpc_abort_all(struct smtpc *c);

/* Free the client. Attempts still pending are dropped without callback. */
void smtpc_free(struct smtpc *c);

/* Reading relay_auth_file: "user:password" on the first line. -EPERM when
 * the file is readable or writable by group/other (why names it). */
int smtpc_read_auth_file(const char *path, char **user, char **password, const char **why);

/* ---- delivery worker processes (Postfix's smtp(8) model) ----
 *
 * libcurl 7.88 blocks inside its DONE phase (reply to the final ".") and at
 * QUIT, bounded only by the command timeout. A daemon that must never block
 * its loop uses the pool: the same requests and results as smtpc_*, but each
 * attempt runs in a worker process (the in-process engine above on the
 * worker's own loop), ONE attempt per worker at a time, so curl's blocking
 * wait only ever blocks an attempt that has nothing else to do.
 *
 * IPC: one SOCK_SEQPACKET socketpair per worker, fd SMTPC_WORKER_FD in the
 * worker. A request is a JSON object with the body fd passed by SCM_RIGHTS;
 * the result is a JSON object with every smtpc_result field, validated with
 * size limits in the parent (the worker's output is untrusted input).
 *
 * Scheduling: how many attempts run, in all and per destination, is the
 * caller's decision (tarryd: the scheduler's, scheduler.h "concurrency: one
 * owner"); the pool starts every request it is given on a worker. It bounds
 * only its processes: at most max_connections workers, a request beyond
 * that waits for one in arrival order (and for a provider's site with
 * site_connections, until idle workers holding a connection there have
 * closed it). An idle worker whose last attempt had the same (source,
 * destination) is preferred (curl keeps its connection warm); idle workers
 * exit after idle_timeout; workers are spawned lazily.
 *
 * Failures: a worker that dies, sends garbage or passes its hard deadline is
 * killed and reaped (pidfd on the caller's loop; SIGCHLD is not used, so the
 * caller must not set SIGCHLD to SIG_IGN nor reap with waitpid(-1)); its
 * attempt gets a temporary failure "451 4.3.0 delivery worker ...". Every
 * request gets exactly one done(), from the loop; done() may start attempts,
 * abort or reload, but must not free the pool. Workers set PR_SET_PDEATHSIG,
 * so none outlives the pool's process; then each checks that its parent is
 * the process that made its socket pair (SO_PEERCRED), so one whose pool was
 * killed before the signal was set exits without reading a request.
 */
#define SMTPC_WORKER_FD 3 /* the worker's end of its socket */

struct smtpc_pool;

struct smtpc_pool_options {
        /* Worker command, NULL-terminated: the executable's absolute path
         * and leading arguments, e.g. {"/usr/sbin/tarryd", "--smtp-worker",
         * NULL}. The pool appends "-C" and the config path; the program must
         * call smtpc_worker_main(SMTPC_WORKER_FD, that path). */
        const char *const *worker_argv;
        const char *config_path;  /* the file workers read; NULL: cfg->path */
        uint64_t idle_timeout_us; /* idle workers exit after this; 0: 10 s */
        uint64_t deadline_us;     /* hard limit per attempt; 0: from the config's timeouts */
};

/* A pool on loop e. cfg (limits and routing for the slot keys) must outlive
 * the pool or be replaced with smtpc_pool_set_config; opt is copied.
 * 0 or negative errno (-EINVAL: no worker_argv, or no config path). */
int smtpc_pool_new(sd_event *e, const struct tarry_config *cfg,
                   const struct smtpc_pool_options *opt, struct smtpc_pool **out);

/* Reload: limits from cfg apply now; idle workers are retired, new workers
 * read config_path (NULL: cfg->path); busy workers finish their attempt,
 * then exit.
 * 0 or -EINVAL/-ENOMEM. */
int smtpc_pool_set_config(struct smtpc_pool *p, const struct tarry_config *cfg,
                          const char *config_path);

/* Start (or queue) one attempt, as smtpc_attempt_start: strings and the fd
 * are copied, done() is called exactly once from the loop, never from inside
 * this call. 0, or -EINVAL, -ENOMEM, -EBADF. */
int smtpc_pool_attempt_start(struct smtpc_pool *p, const struct smtpc_request *req);

/* Attempts running or queued. */
size_t smtpc_pool_pending(const struct smtpc_pool *p);

/* Worker processes alive (busy, idle or exiting but not yet reaped). */
size_t smtpc_pool_workers(const struct smtpc_pool *p);

/* Kill every busy worker and answer every running and queued attempt (from
 * this call) with "451 4.3.0 delivery aborted: shutting down". */
void smtpc_pool_abort_all(struct smtpc_pool *p);

/* Terminate every worker (idle ones get EOF and QUIT their connections,
 * busy ones are killed; anything left after 2 s is killed) and reap them.
 * Attempts still pending are dropped without callback. NULL is fine. */
void smtpc_pool_free(struct smtpc_pool *p);

/* The worker's side: load config_path, run smtpc on a loop of its own and
 * serve requests from fd until the pool closes it. Returns an exit status
 * for main(): 0, 78 (config unreadable; the reason goes to stderr), 70/71. */
int smtpc_worker_main(int fd, const char *config_path);

#endif
