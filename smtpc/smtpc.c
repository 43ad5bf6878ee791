/* smtpc/smtpc.c — delivery attempts with libcurl's multi socket API on sd-event; see smtpc.h. */
#include "smtpc/smtpc.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/address.h"
#include "common/cleanup.h"
#include "common/fileio.h"
#include "smtpc/dns.h"
#include "smtpc/sts.h"
#include "smtpc/self.h"
#include "smtpc/esmtp.h"
#include "smtpc/mime7.h"
#include "smtpc/reply.h"
#include "smtpc/slots.h"

/* Spelled with three Ls before curl 8.2. */
#if LIBCURL_VERSION_NUM >= 0x080200
#define OPT_RCPT_ALLOWFAILS CURLOPT_MAIL_RCPT_ALLOWFAILS
#else
#define OPT_RCPT_ALLOWFAILS CURLOPT_MAIL_RCPT_ALLLOWFAILS
#endif

#define IDLE_CONN_MAX_AGE_S 5          /* reuse an idle connection only this long (Postfix: 2 s) */
#define OUT_LOW_WATER       (32 << 10) /* refill the body below this many unsent bytes */
#define BODY_CHUNK          (16 << 10) /* body bytes read per refill */

/* What a reply answers; replies pair with commands in order (curl does not pipeline). */
enum cmd {
        CMD_GREETING,
        CMD_EHLO,
        CMD_STARTTLS,
        CMD_AUTH,
        CMD_MAIL,
        CMD_RCPT,
        CMD_DATA,
        CMD_DOT,
        CMD_QUIT,
        CMD_RSET,
        CMD_OTHER,
};

static const char *const cmd_stage[] = {
    [CMD_GREETING] = "receiving the initial server greeting",
    [CMD_EHLO] = "sending EHLO",
    [CMD_STARTTLS] = "sending STARTTLS",
    [CMD_AUTH] = "authenticating",
    [CMD_MAIL] = "sending MAIL FROM",
    [CMD_RCPT] = "sending RCPT TO",
    [CMD_DATA] = "sending DATA command",
    [CMD_DOT] = "sending end of data -- message may be sent more than once",
    [CMD_QUIT] = "sending QUIT",
    [CMD_RSET] = "sending RSET",
    [CMD_OTHER] = "talking to server",
};

struct reply {
        int code;
        char enh[SMTPC_ENH_MAX];
        char *text;
};

/* A connection past greeting, EHLO, STARTTLS and AUTH (libcurl's part, in
 * CONNECT_ONLY mode); tarry writes and reads the transactions on it. Owned by
 * the attempt using it, or parked in smtpc.idle between attempts. */
struct sess {
        struct smtpc *c;
        struct sess *next; /* in c->idle */
        CURL *easy;        /* in c->multi; removing it closes the connection */
        int fd;            /* dup of curl's socket, watched by io */
        sd_event_source *io, *idle_timer;
        struct attempt *a; /* NULL while idle */
        char key[SLOTS_KEY_MAX];
        enum cfg_tls tls_mode;
        bool auth;
        struct smtpc_target target;
        bool tls;
        struct esmtp_caps caps;
        unsigned deliveries; /* transactions ended with an answered final dot */
        /* RSET sent after a transaction that ended before its final dot; its
         * reply is read while idle (or by the next attempt, pipelined) */
        bool rset_pending;
        char rbuf[512];
        size_t rlen;
};

struct attempt {
        struct smtpc *c;
        struct attempt *next; /* in c->queue or c->running */
        /* the request, copied */
        char *queue_id, *sender, **rcpts;
        size_t n_rcpts;
        int dsn_ret;      /* enum smtpc_dsn_ret */
        char *envid;      /* or NULL */
        unsigned *notify; /* n_rcpts SMTPC_NOTIFY_* bits, or NULL */
        char **orcpt;     /* n_rcpts, entries may be NULL; or NULL */
        bool body_signed; /* DKIM-signed: never converted */
        /* the provider's messages_per_connection, 0: none */
        unsigned per_conn;
        struct smtpc_mx *mx; /* the MX set tarryd's site cache gave, or NULL */
        size_t n_mx;
        int body_fd;
        uint64_t body_size, body_off;
        char *source;
        smtpc_done_fn done;
        void *userdata;
        /* settings taken when the attempt starts */
        struct smtpc_route route;
        char slot_key[SLOTS_KEY_MAX];
        char *helo;
        int64_t connect_ms, command_ms, data_ms;
        char *auth_user, *auth_pass;
        /* progress */
        bool started; /* holds a slot */
        struct dns_job *job;
        struct smtpc_target targets[DNS_MAX_TARGETS];
        size_t n_targets, cur;
        bool no_starttls;                 /* retrying the current host without STARTTLS */
        char sts_policy[STS_POLICY_NAME]; /* the MTA-STS policy applied, "" if none */
        CURL *easy;
        struct curl_slist *rcpt_list, *connect_list;
        char errbuf[CURL_ERROR_SIZE];
        sd_event_source *data_timer, *abort_src;
        const char *abort_why; /* set: abort the transfer at the next chance */
        enum smtpc_failure abort_failure;
        const char *abort_enh; /* its enhanced status code; NULL: 4.4.2 */
        char abort_buf[128];   /* room for an abort_why made up on the spot */
        /* reply pairing for the current transfer */
        struct reply_acc acc;
        enum cmd *expect; /* replies due, oldest first: n_expect from expect_head */
        size_t n_expect, expect_head, expect_cap;
        enum cmd last_cmd;
        size_t rcpt_sent, rcpt_answered;
        bool any_reply, tls_used, hide_next, helo_sent;
        bool closing;           /* a 421 came: the server closes the channel (RFC 5321 3.8) */
        struct esmtp_caps caps; /* from the last EHLO reply (none after HELO) */
        bool eight_bit;         /* the body holds bytes >= 0x80 */
        /* the transaction, once libcurl handed the connection over */
        struct sess *sess;
        bool reused; /* sess came from the idle list */
        char *out;   /* bytes to send: out_off..out_len */
        size_t out_len, out_off, out_cap;
        bool body_sending; /* after 354, until the final dot is queued */
        char body_prev[2]; /* last two body bytes (dot-stuffing at line starts) */
        size_t rcpt_next;  /* next recipient to send, without PIPELINING */
        size_t *rcpt_idx;  /* the recipient each RCPT sent was for, in order */
        size_t rcpt_queued;
        size_t rcpt_ok;  /* recipients accepted at RCPT */
        bool txn_over;   /* the transaction ended (or cannot go on) */
        bool local_only; /* every recipient was settled here, nothing was sent */
        /* ASCII forms for a server without SMTPUTF8 (NULL: the address as it is) */
        char *wire_sender;
        char **wire_rcpt; /* n_rcpts */
        CURLcode txn_rc;  /* CURLE_OK, or why the connection failed */
        sd_event_source *cmd_timer;
        /* curl sent QUIT while a reply was still due: the session failed */
        bool quit_after_failure;
        /* the DATA phase (354 → reply to the final dot) must end by then */
        int64_t data_deadline_us;
        bool data_expired;
        struct reply greeting, conn_fail, mail, data, dot, auth, last;
        struct reply *rcpt_reply; /* n_rcpts */
        char **local_text;        /* n_rcpts: why an address was refused before sending */
        bool early;               /* settled before starting: only waits to be reported */
        /* transcript */
        char *transcript;
        size_t ts_len;
        /* outcome */
        struct smtpc_result res;
        struct smtpc_rcpt_result *rres;
        char *res_text;
        int64_t t_start_us, t_connect_us;
};

struct smtpc {
        sd_event *e;
        const struct tarry_config *cfg;
        CURLM *multi;
        sd_event_source *curl_timer, *pump_src;
        struct dns *dns;
        struct attempt *queue, *running;
        struct sess *idle; /* connections kept for the next message, newest first */
        size_t n_idle;
        struct slots slots;
};

static void attempt_finish(struct attempt *a);
static int transfer_start(struct attempt *a);
static void pump_schedule(struct smtpc *c);
static void sess_close(struct sess *s, bool quit);
static void on_resolved(void *arg, enum dns_status st, const struct smtpc_target *t, size_t n,
                        const char *why);
static bool sess_reuse(struct attempt *a);

/* ---- small helpers ---- */

static enum cmd expect_first(const struct attempt *a)
{
        return a->expect[a->expect_head];
}

static void reply_clear(struct reply *r)
{
        free(r->text);
        memset(r, 0, sizeof(*r));
}

static void reply_set(struct reply *r, int code, const char *text)
{
        reply_clear(r);
        r->code = code;
        r->text = strdup(text);
        reply_enhanced(text, code, r->enh);
}

static void ts_append(struct attempt *a, const char *prefix, const char *s, size_t n)
{
        if (!a->transcript) {
                a->transcript = malloc(SMTPC_TRANSCRIPT_MAX + 1);
                if (!a->transcript)
                        return;
                a->ts_len = 0;
        }
        size_t room = SMTPC_TRANSCRIPT_MAX - a->ts_len;
        size_t pl = strlen(prefix);
        if (pl + n + 1 > room)
                return; /* transcript full: keep what we have */
        memcpy(a->transcript + a->ts_len, prefix, pl);
        memcpy(a->transcript + a->ts_len + pl, s, n);
        a->ts_len += pl + n;
        a->transcript[a->ts_len++] = '\n';
        a->transcript[a->ts_len] = '\0';
}

static int64_t ms_of(int64_t s, int64_t fallback)
{
        return (s > 0 ? s : fallback) * 1000;
}

/* ---- completion ---- */

static void list_remove(struct attempt **head, struct attempt *a)
{
        for (struct attempt **pp = head; *pp; pp = &(*pp)->next)
                if (*pp == a) {
                        *pp = a->next;
                        return;
                }
}

static void transfer_cleanup(struct attempt *a)
{
        if (a->sess) { /* a session not parked by txn_end is not reusable */
                a->sess->a = NULL;
                sess_close(a->sess, false);
                a->sess = NULL;
        }
        a->cmd_timer = sd_event_source_disable_unref(a->cmd_timer);
        a->out_len = a->out_off = 0;
        a->body_sending = false;
        if (a->easy) {
                curl_multi_remove_handle(a->c->multi, a->easy);
                curl_easy_cleanup(a->easy);
                a->easy = NULL;
        }
        curl_slist_free_all(a->rcpt_list);
        a->rcpt_list = NULL;
        curl_slist_free_all(a->connect_list);
        a->connect_list = NULL;
        a->data_timer = sd_event_source_disable_unref(a->data_timer);
        a->abort_src = sd_event_source_disable_unref(a->abort_src);
}

static void replies_reset(struct attempt *a)
{
        reply_clear(&a->greeting);
        reply_clear(&a->mail);
        reply_clear(&a->data);
        reply_clear(&a->dot);
        reply_clear(&a->auth);
        reply_clear(&a->last);
        for (size_t i = 0; i < a->n_rcpts; i++)
                reply_clear(&a->rcpt_reply[i]);
        reply_acc_reset(&a->acc);
        a->n_expect = a->expect_head = 0;
        a->last_cmd = CMD_GREETING;
        a->rcpt_next = a->rcpt_ok = a->rcpt_queued = 0;
        a->txn_over = false;
        a->txn_rc = CURLE_OK;
        a->helo_sent = false;
        a->rcpt_sent = a->rcpt_answered = 0;
        a->any_reply = a->tls_used = a->hide_next = a->quit_after_failure = false;
        a->data_deadline_us = 0;
        a->data_expired = false;
        a->abort_why = NULL;
        a->abort_enh = NULL;
        a->body_off = 0;
}

static void attempt_free(struct attempt *a)
{
        transfer_cleanup(a);
        dns_job_cancel(a->job);
        replies_reset(a);
        reply_clear(&a->conn_fail);
        free(a->rcpt_reply);
        for (size_t i = 0; i < a->n_rcpts; i++) {
                free(a->rcpts[i]);
                if (a->local_text)
                        free(a->local_text[i]);
        }
        free(a->local_text);
        for (size_t i = 0; a->orcpt && i < a->n_rcpts; i++)
                free(a->orcpt[i]);
        free(a->orcpt);
        free(a->notify);
        free(a->envid);
        free(a->mx);
        free(a->rcpts);
        free(a->queue_id);
        free(a->sender);
        free(a->source);
        free(a->helo);
        if (a->auth_pass)
                explicit_bzero(a->auth_pass, strlen(a->auth_pass));
        free(a->auth_user);
        free(a->auth_pass);
        free(a->transcript);
        free(a->rres);
        free(a->res_text);
        free(a->expect);
        free(a->rcpt_idx);
        free(a->out);
        free(a->wire_sender);
        for (size_t i = 0; a->wire_rcpt && i < a->n_rcpts; i++)
                free(a->wire_rcpt[i]);
        free(a->wire_rcpt);
        if (a->body_fd >= 0)
                close(a->body_fd);
        free(a);
}

enum outcome_origin smtpc_failure_origin(enum smtpc_failure f)
{
        return smtpc_failure_local(f) == OUTCOME_LOCAL_NONE ? OUTCOME_FROM_SERVER
                                                            : OUTCOME_FROM_TARRY;
}

enum outcome_local smtpc_failure_local(enum smtpc_failure f)
{
        switch (f) {
        case SMTPC_FAIL_NONE:
        case SMTPC_FAIL_REPLY:
        case SMTPC_FAIL_REFUSED:
        case SMTPC__FAIL_MAX:
                return OUTCOME_LOCAL_NONE;
        case SMTPC_FAIL_DNS:
        case SMTPC_FAIL_NULL_MX:
                return OUTCOME_LOCAL_DNS;
        case SMTPC_FAIL_CONNECT:
                return OUTCOME_LOCAL_CONNECT;
        case SMTPC_FAIL_TIMEOUT:
                return OUTCOME_LOCAL_TIMEOUT;
        case SMTPC_FAIL_DROPPED:
                return OUTCOME_LOCAL_DROPPED;
        case SMTPC_FAIL_TLS:
                return OUTCOME_LOCAL_TLS;
        case SMTPC_FAIL_POLICY:
                return OUTCOME_LOCAL_POLICY;
        case SMTPC_FAIL_PROTOCOL:
                return OUTCOME_LOCAL_PROTOCOL;
        case SMTPC_FAIL_LOCAL:
                return OUTCOME_LOCAL_RESOURCE;
        case SMTPC_FAIL_REFUSAL:
                return OUTCOME_LOCAL_REFUSAL;
        case SMTPC_FAIL_WORKER:
                return OUTCOME_LOCAL_WORKER;
        case SMTPC_FAIL_SHUTDOWN:
                return OUTCOME_LOCAL_SHUTDOWN;
        }
        return OUTCOME_LOCAL_NONE;
}

static enum outcome_phase phase_of_cmd(enum cmd k)
{
        switch (k) {
        case CMD_GREETING:
                return OUTCOME_PHASE_GREETING;
        case CMD_EHLO:
                return OUTCOME_PHASE_EHLO;
        case CMD_STARTTLS:
                return OUTCOME_PHASE_STARTTLS;
        case CMD_AUTH:
                return OUTCOME_PHASE_AUTH;
        case CMD_MAIL:
        case CMD_RSET: /* a kept connection's first command */
                return OUTCOME_PHASE_MAIL;
        case CMD_RCPT:
                return OUTCOME_PHASE_RCPT;
        case CMD_DATA:
                return OUTCOME_PHASE_DATA;
        case CMD_DOT:
        case CMD_QUIT:
                return OUTCOME_PHASE_DOT;
        case CMD_OTHER:
                break;
        }
        return OUTCOME_PHASE_NONE;
}

static bool tcp_connected(const struct attempt *a);
static enum cmd failed_cmd(const struct attempt *a);

/* How far the session has got: no target yet (routing, DNS), connecting,
 * waiting for the greeting, else the command whose reply is awaited. */
static enum outcome_phase phase_now(const struct attempt *a)
{
        if (!a->any_reply && a->n_targets == 0)
                return OUTCOME_PHASE_ROUTE;
        if (!a->any_reply)
                return tcp_connected(a) ? OUTCOME_PHASE_GREETING : OUTCOME_PHASE_CONNECT;
        return phase_of_cmd(failed_cmd(a));
}

/* Attempt-level outcome: every recipient not already settled gets it. */
static void set_attempt_failure(struct attempt *a, enum smtpc_status st, enum smtpc_failure f,
                                int code, const char *text)
{
        a->res.status = st;
        a->res.failure = f;
        a->res.origin = smtpc_failure_origin(f);
        a->res.local = smtpc_failure_local(f);
        a->res.phase = phase_now(a);
        a->res.code = code;
        free(a->res_text);
        a->res_text = strdup(text);
        reply_enhanced(text, code, a->res.enhanced);
        if (!a->res.enhanced[0] && strlen(text) > 4 && text[0] >= '2' && text[0] <= '5')
                snprintf(a->res.enhanced, sizeof(a->res.enhanced), "%c.0.0", text[0]);
}

/* A Postfix-like synthesized reason: "4.4.1 connect to host[ip]:port: why". */
static void synth_failure(struct attempt *a, enum smtpc_status st, enum smtpc_failure f,
                          const char *enh, const char *fmt, const char *detail)
{
        char text[1024];
        const struct smtpc_target *t = a->cur < a->n_targets ? &a->targets[a->cur] : NULL;
        int code = st == SMTPC_ATTEMPT_PERMFAIL ? 550 : 451;
        int n = snprintf(text, sizeof(text), "%d %s ", code, enh);
        if (t)
                snprintf(text + n, sizeof(text) - (size_t)n, fmt, t->host, t->ip, a->route.port,
                         detail);
        else
                snprintf(text + n, sizeof(text) - (size_t)n, "%s", detail);
        set_attempt_failure(a, st, f, code, text);
}

/* A recipient's outcome from the server's reply in phase ph. */
static void fill_rcpt(struct smtpc_rcpt_result *r, int code, const char *enh, const char *text,
                      enum outcome_phase ph)
{
        r->origin = OUTCOME_FROM_SERVER;
        r->local = OUTCOME_LOCAL_NONE;
        r->phase = ph;
        r->code = code;
        snprintf(r->enhanced, sizeof(r->enhanced), "%s", enh ? enh : "");
        r->text = text;
        r->outcome = code >= 200 && code < 300   ? SMTPC_RCPT_DELIVERED
                     : code >= 500 && code < 600 ? SMTPC_RCPT_FAILED
                                                 : SMTPC_RCPT_DEFERRED;
}

static void build_result(struct attempt *a)
{
        struct smtpc_result *r = &a->res;
        r->queue_id = a->queue_id;
        r->text = a->res_text;
        r->n_rcpts = a->n_rcpts;
        r->rcpts = a->rres;
        r->destination = a->route.destination;
        if (a->cur < a->n_targets) {
                r->mx_host = a->targets[a->cur].host;
                r->mx_ip = a->targets[a->cur].ip;
        }
        r->port = a->route.port;
        r->source_address = a->source;
        r->tls = a->tls_used;
        r->dsn_offered = (a->caps.ext & ESMTP_DSN) != 0;
        r->transcript = a->transcript ? a->transcript : "";
        r->connect_us = a->t_connect_us ? a->t_connect_us - a->t_start_us : 0;
        r->total_us = now_monotonic_us() - a->t_start_us;
        for (size_t i = 0; i < a->n_rcpts; i++) {
                struct smtpc_rcpt_result *rr = &a->rres[i];
                rr->address = a->rcpts[i];
                if (rr->text) /* settled locally (bad address) or by the transaction */
                        continue;
                fill_rcpt(rr, r->code, r->enhanced, r->text, r->phase);
                rr->origin = r->origin;
                rr->local = r->local;
                if (r->status == SMTPC_ATTEMPT_TEMPFAIL)
                        rr->outcome = SMTPC_RCPT_DEFERRED;
        }
}

static void attempt_finish(struct attempt *a)
{
        struct smtpc *c = a->c;
        transfer_cleanup(a);
        if (a->job) {
                dns_job_cancel(a->job);
                a->job = NULL;
        }
        if (a->started) {
                list_remove(&c->running, a);
                slots_release(&c->slots, a->slot_key);
        } else {
                list_remove(&c->queue, a);
        }
        build_result(a);
        a->done(&a->res, a->userdata);
        attempt_free(a);
        pump_schedule(c);
}

/* ---- interpreting a finished transfer ---- */

static bool is_connect_failure(CURLcode rc)
{
        return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
               rc == CURLE_INTERFACE_FAILED;
}

static bool is_tls_failure(CURLcode rc)
{
        return rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
               rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CIPHER ||
               rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_USE_SSL_FAILED;
}

/* Should the next host be tried (connect failure, timeout or 4xx/5xx greeting)? */
static bool try_next_host(struct attempt *a, CURLcode rc)
{
        if (a->cur + 1 >= a->n_targets)
                return false;
        if (rc == CURLE_INTERFACE_FAILED) /* the source address: every host alike */
                return false;
        if (is_connect_failure(rc))
                return true;
        if (rc == CURLE_OPERATION_TIMEDOUT && !a->greeting.code)
                return true;
        if (a->greeting.code && a->greeting.code >= 400)
                return true;
        return false;
}

/* The TCP connection was made (so a timeout came after it, not in connect()). */
static bool tcp_connected(const struct attempt *a)
{
        curl_off_t t = 0;
        return a->easy && curl_easy_getinfo(a->easy, CURLINFO_CONNECT_TIME_T, &t) == CURLE_OK &&
               t > 0;
}

static void record_connect_failure(struct attempt *a, CURLcode rc)
{
        long oserr = 0;
        char detail[256];
        if (rc == CURLE_OPERATION_TIMEDOUT && tcp_connected(a)) {
                synth_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_TIMEOUT, "4.4.2",
                              "conversation with %s[%s]:%u timed out while %s",
                              cmd_stage[CMD_GREETING]);
                return;
        }
        if (a->easy)
                curl_easy_getinfo(a->easy, CURLINFO_OS_ERRNO, &oserr);
        if (rc == CURLE_INTERFACE_FAILED) { /* our side: name the source, not only the host */
                const struct smtpc_target *t = &a->targets[a->cur];
                char text[1024];
                snprintf(text, sizeof(text),
                         "451 4.4.1 cannot bind source %s: %s (connecting to %s[%s]:%u)",
                         a->source ? a->source : "address",
                         oserr          ? strerror((int)oserr)
                         : a->errbuf[0] ? a->errbuf
                                        : "bind failed",
                         t->host, t->ip, a->route.port);
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_CONNECT, 451, text);
                return;
        }
        if (rc == CURLE_OPERATION_TIMEDOUT)
                snprintf(detail, sizeof(detail), "Connection timed out");
        else if (oserr)
                snprintf(detail, sizeof(detail), "%s", strerror((int)oserr));
        else
                snprintf(detail, sizeof(detail), "%s",
                         a->errbuf[0] ? a->errbuf : curl_easy_strerror(rc));
        bool timeout = rc == CURLE_OPERATION_TIMEDOUT;
        synth_failure(a, SMTPC_ATTEMPT_TEMPFAIL, timeout ? SMTPC_FAIL_TIMEOUT : SMTPC_FAIL_CONNECT,
                      timeout ? "4.4.2" : "4.4.1", "connect to %s[%s]:%u: %s", detail);
}

/* Recipients answered at RCPT keep their own reply; accepted ones get the dot reply. */
static void settle_rcpts(struct attempt *a, const struct reply *final)
{
        for (size_t i = 0; i < a->n_rcpts; i++) {
                struct reply *rr = &a->rcpt_reply[i];
                if (a->rres[i].text || !rr->code)
                        continue;
                if (rr->code >= 200 && rr->code < 300 && final)
                        fill_rcpt(&a->rres[i], final->code, final->enh, final->text,
                                  final == &a->data ? OUTCOME_PHASE_DATA : OUTCOME_PHASE_DOT);
                else if (rr->code >= 300 || !final)
                        fill_rcpt(&a->rres[i], rr->code, rr->enh, rr->text, OUTCOME_PHASE_RCPT);
        }
}

static enum smtpc_status status_of(int code)
{
        return code >= 500 ? SMTPC_ATTEMPT_PERMFAIL : SMTPC_ATTEMPT_TEMPFAIL;
}

/* A 5xx greeting says nothing about this message: often a block of our IP
 * that is lifted later, or a broken server. Defer, as Postfix does
 * (smtp_skip_5xx_greeting): "host mx[ip] refused to talk to me: 554 …", with
 * the code and enhanced status made temporary so the scheduler classifies
 * the server's words (a blocklist, say) without bouncing. */
static void refused_to_talk(struct attempt *a)
{
        const struct smtpc_target *t = &a->targets[a->cur];
        char text[SMTPC_REPLY_MAX + 256], enh[SMTPC_ENH_MAX] = "";
        reply_enhanced(a->greeting.text, a->greeting.code, enh);
        snprintf(text, sizeof(text), "host %s[%s] refused to talk to me: %s", t->host, t->ip,
                 a->greeting.text);
        set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_REFUSED, a->greeting.code - 100,
                            text);
        a->res.phase = OUTCOME_PHASE_GREETING;
        if (enh[0] == '5')
                enh[0] = '4';
        snprintf(a->res.enhanced, sizeof(a->res.enhanced), "%s", enh[0] ? enh : "4.0.0");
}

/* The server said no to something before or at the end of the transaction. */
static bool server_refused(struct attempt *a)
{
        const struct reply *r = NULL;
        if (a->greeting.code >= 500) {
                refused_to_talk(a);
                return true;
        }
        if (a->greeting.code >= 400)
                r = &a->greeting;
        else if (a->auth.code >= 400) {
                char text[SMTPC_REPLY_MAX + 128];
                snprintf(text, sizeof(text),
                         "454 4.7.0 SASL authentication failed; server %s said: %s",
                         a->targets[a->cur].host, a->auth.text);
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_REPLY, 454, text);
                a->res.phase = OUTCOME_PHASE_AUTH;
                return true;
        } else if (a->mail.code >= 400)
                r = &a->mail;
        else if (a->data.code >= 400)
                r = &a->data;
        else if (a->dot.code >= 400)
                r = &a->dot;
        else if (a->last.code >= 400 && a->last.code != 421 && a->rcpt_sent == 0)
                r = &a->last; /* EHLO/HELO refused */
        if (!r)
                return false;
        set_attempt_failure(a, status_of(r->code), SMTPC_FAIL_REPLY, r->code, r->text);
        a->res.phase = r == &a->greeting ? OUTCOME_PHASE_GREETING
                       : r == &a->mail   ? OUTCOME_PHASE_MAIL
                       : r == &a->data   ? OUTCOME_PHASE_DATA
                       : r == &a->dot    ? OUTCOME_PHASE_DOT
                                         : OUTCOME_PHASE_EHLO;
        if (r == &a->dot || r == &a->data)
                settle_rcpts(a, r);
        return true;
}

static bool all_rcpts_refused(struct attempt *a)
{
        if (a->rcpt_answered == 0)
                return false;
        for (size_t i = 0; i < a->n_rcpts; i++)
                if (!a->rres[i].text && (!a->rcpt_reply[i].code || a->rcpt_reply[i].code < 400))
                        return false;
        return true;
}

/* The command whose reply never came (or came broken): the oldest one still
 * expected, else the last one sent. */
static enum cmd failed_cmd(const struct attempt *a)
{
        if (a->n_expect > 0 && expect_first(a) != CMD_QUIT)
                return expect_first(a);
        return a->last_cmd;
}

static void interpret_dropped(struct attempt *a, CURLcode rc)
{
        if (a->last.code == 421) {
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_REPLY, 421, a->last.text);
                return;
        }
        bool timeout = rc == CURLE_OPERATION_TIMEDOUT || a->data_expired;
        synth_failure(a, SMTPC_ATTEMPT_TEMPFAIL, timeout ? SMTPC_FAIL_TIMEOUT : SMTPC_FAIL_DROPPED,
                      "4.4.2",
                      timeout ? "conversation with %s[%s]:%u timed out while %s"
                              : "lost connection with %s[%s]:%u while %s",
                      cmd_stage[failed_cmd(a)]);
}

/* curl 7.88 gives up by itself on a reply line over 300 KB (before the debug
 * callback sees the line, so SMTPC_REPLY_ABORT cannot catch it). */
static bool reply_too_large(const struct attempt *a, CURLcode rc)
{
        return rc == CURLE_RECV_ERROR && strncmp(a->errbuf, "Too large response", 18) == 0;
}

/* The server said 220 to STARTTLS and the session died before the next command. */
static bool handshake_failed(const struct attempt *a, CURLcode rc)
{
        return rc != CURLE_OK && a->tls_used && a->last_cmd == CMD_STARTTLS;
}

/* Recipients the server refused at RCPT keep that reply whatever happens next. */
static void settle_refused(struct attempt *a)
{
        for (size_t i = 0; i < a->n_rcpts; i++) {
                struct reply *rr = &a->rcpt_reply[i];
                if (!a->rres[i].text && rr->code >= 400)
                        fill_rcpt(&a->rres[i], rr->code, rr->enh, rr->text, OUTCOME_PHASE_RCPT);
        }
}

static void interpret(struct attempt *a, CURLcode rc)
{
        if (a->local_only && rc == CURLE_OK) { /* each recipient has its own outcome */
                a->res.status = SMTPC_ATTEMPT_DONE;
                return;
        }
        /* The server took the message: whatever it did after its 2xx to the
         * final dot (a garbled or endless reply, a dropped connection) must
         * not make us send it again. */
        if (a->dot.code >= 200 && a->dot.code < 300) {
                a->res.status = SMTPC_ATTEMPT_DONE;
                settle_rcpts(a, &a->dot);
                return;
        }
        settle_refused(a);
        if (a->abort_why) {
                synth_failure(a, SMTPC_ATTEMPT_TEMPFAIL, a->abort_failure,
                              a->abort_enh ? a->abort_enh : "4.4.2", "%s[%s]:%u: %s", a->abort_why);
                return;
        }
        if (reply_too_large(a, rc)) {
                synth_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_PROTOCOL, "4.4.2",
                              "%s[%s]:%u: reply too long: %s", a->errbuf);
                return;
        }
        if (server_refused(a))
                return;
        if (all_rcpts_refused(a)) {
                a->res.status = SMTPC_ATTEMPT_DONE;
                settle_rcpts(a, NULL);
                return;
        }
        if (is_tls_failure(rc) || handshake_failed(a, rc)) {
                const char *err = a->errbuf[0] ? a->errbuf : curl_easy_strerror(rc);
                char why[CURL_ERROR_SIZE + STS_POLICY_NAME + 40];
                if (a->cur < a->n_targets && a->targets[a->cur].sts_verify)
                        snprintf(why, sizeof(why), "%s (the %s requires verified TLS)", err,
                                 a->sts_policy);
                else
                        snprintf(why, sizeof(why), "%s", err);
                synth_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_TLS, "4.7.5",
                              "TLS with %s[%s]:%u failed: %s", why);
                return;
        }
        if (!a->any_reply && (is_connect_failure(rc) || rc == CURLE_OPERATION_TIMEDOUT)) {
                record_connect_failure(a, rc);
                return;
        }
        interpret_dropped(a, rc);
}

/* STARTTLS was offered and accepted but the handshake failed: tls=may retries
 * in clear, except with relay credentials (relay_auth_cleartext = yes):
 * whoever broke the handshake would read the password. */
static bool retry_without_tls(struct attempt *a, CURLcode rc)
{
        bool sts = a->cur < a->n_targets && a->targets[a->cur].sts_verify;
        return a->route.tls == CFG_TLS_MAY && !a->route.auth && !a->no_starttls && !sts &&
               handshake_failed(a, rc) && a->abort_why == NULL;
}

static void transfer_done(struct attempt *a, CURLcode rc)
{
        if (!a->t_connect_us && a->greeting.code)
                a->t_connect_us = now_monotonic_us();
        if (a->reused && rc != CURLE_OK && !a->mail.code && !a->abort_why) {
                /* the kept connection died unseen: this message gets a new one */
                ts_append(a, "* ", "the kept connection was closed; connecting anew", 48);
                transfer_cleanup(a);
                a->reused = false;
                a->n_targets = a->cur = 0;
                /* 1: answered at once, on_resolved went on (or finished) */
                int r =
                    dns_resolve_mx(a->c->dns, &a->route, a->mx, a->n_mx, on_resolved, a, &a->job);
                if (r >= 0)
                        return;
        }
        if (retry_without_tls(a, rc)) {
                ts_append(a, "* ", "TLS handshake failed; retrying without STARTTLS", 47);
                a->no_starttls = true;
                transfer_cleanup(a);
                if (transfer_start(a) == 0)
                        return;
        } else if (!a->abort_why && try_next_host(a, rc)) {
                record_connect_failure(a, rc);
                reply_set(&a->conn_fail, a->res.code, a->res_text ? a->res_text : "");
                transfer_cleanup(a);
                a->cur++;
                a->no_starttls = false;
                if (transfer_start(a) == 0)
                        return;
        }
        interpret(a, rc);
        attempt_finish(a);
}

/* ---- reply capture from the debug callback ---- */

static void expect_push(struct attempt *a, enum cmd k)
{
        if (a->expect_head + a->n_expect >= a->expect_cap) {
                memmove(a->expect, a->expect + a->expect_head, a->n_expect * sizeof(*a->expect));
                a->expect_head = 0;
        }
        if (a->n_expect < a->expect_cap)
                a->expect[a->expect_head + a->n_expect++] = k;
}

static enum cmd expect_pop(struct attempt *a)
{
        if (a->n_expect == 0)
                return a->any_reply ? CMD_OTHER : CMD_GREETING;
        enum cmd k = a->expect[a->expect_head++];
        if (--a->n_expect == 0)
                a->expect_head = 0;
        return k;
}

static int on_data_timeout(sd_event_source *s, uint64_t usec, void *userdata);

/* The whole DATA phase (body + final reply) gets data_timeout, however slow
 * the peer (RFC 5321 4.5.3.2.6 asks for 10 minutes): one timer on the loop
 * from the 354 to the reply to the final dot; command_timeout is off meanwhile. */
static void arm_data_timer(struct attempt *a)
{
        if (a->data_timer)
                return;
        sd_event_add_time_relative(a->c->e, &a->data_timer, CLOCK_MONOTONIC,
                                   (uint64_t)a->data_ms * 1000, 10000, on_data_timeout, a);
        a->data_deadline_us = now_monotonic_us() + a->data_ms * 1000;
        a->cmd_timer = sd_event_source_disable_unref(a->cmd_timer);
}

static void txn_on_reply(struct attempt *a, enum cmd k, int code);
static void cmd_timer_arm(struct attempt *a);

static void reply_complete(struct attempt *a)
{
        enum cmd k = expect_pop(a);
        int code = a->acc.code;
        const char *text = a->acc.text;
        if (a->acc.garbled || code < 200 || code > 599) {
                /* a broken server, not a busy one: X.5.0 (protocol), classed as
                 * unknown_temp, so it neither reads as a lost connection nor
                 * pauses the destination */
                snprintf(a->abort_buf, sizeof(a->abort_buf), "garbled reply while %s",
                         cmd_stage[k]);
                a->abort_why = a->abort_buf;
                a->abort_enh = "4.5.0";
                a->abort_failure = SMTPC_FAIL_PROTOCOL;
        }
        a->any_reply = true;
        a->closing |= code == 421;
        if (!a->t_connect_us)
                a->t_connect_us = now_monotonic_us();
        reply_set(&a->last, code, text);
        switch (k) {
        case CMD_GREETING:
                reply_set(&a->greeting, code, text);
                break;
        case CMD_EHLO:
                if (code == 250 && !a->helo_sent)
                        esmtp_parse_ehlo(text, &a->caps);
                else
                        memset(&a->caps, 0, sizeof(a->caps));
                break;
        case CMD_STARTTLS:
                a->tls_used = code == 220;
                break;
        case CMD_AUTH:
                if (code >= 400)
                        reply_set(&a->auth, code, text);
                a->hide_next = code == 334;
                if (code == 334)
                        expect_push(a, CMD_AUTH);
                break;
        case CMD_MAIL:
                reply_set(&a->mail, code, text);
                break;
        case CMD_RCPT:
                /* pipelined after a refused MAIL: "503 need MAIL" says nothing
                 * about the recipient, the MAIL reply applies to all */
                if (a->mail.code >= 400)
                        break;
                /* locally refused recipients were skipped: pair by what was sent */
                if (a->rcpt_answered < a->rcpt_queued)
                        reply_set(&a->rcpt_reply[a->rcpt_idx[a->rcpt_answered++]], code, text);
                break;
        case CMD_DATA:
                /* pipelined after every RCPT was refused: the recipients keep
                 * their own replies, DATA's says nothing new */
                if (a->sess && a->rcpt_ok == 0) {
                        if (code == 354)
                                expect_push(a, CMD_DOT);
                        break;
                }
                reply_set(&a->data, code, text);
                if (code == 354) {
                        expect_push(a, CMD_DOT);
                        arm_data_timer(a);
                }
                break;
        case CMD_DOT:
                if (!a->sess || a->rcpt_ok > 0)
                        reply_set(&a->dot, code, text);
                break;
        default:
                break;
        }
        ts_append(a, "< ", text, strlen(text));
        reply_acc_reset(&a->acc);
        if (a->sess && !a->abort_why)
                txn_on_reply(a, k, code);
}

static int on_abort(sd_event_source *s, void *userdata);

static void request_abort(struct attempt *a, const char *why, enum smtpc_failure f)
{
        if (a->abort_src)
                return;
        a->abort_why = why;
        a->abort_failure = f;
        sd_event_add_defer(a->c->e, &a->abort_src, on_abort, a);
}

/* The reply to the final dot began with 2xx and goes on past 64 KB: the
 * server has the message, so its 2xx stands (resending it on every retry
 * would deliver it again each time); the rest is cut off. */
static void accept_endless_dot(struct attempt *a)
{
        if (a->n_expect == 0 || expect_first(a) != CMD_DOT || a->dot.code || a->acc.garbled ||
            a->acc.code < 200 || a->acc.code > 299)
                return;
        reply_set(&a->dot, a->acc.code, a->acc.text);
        ts_append(a, "< ", a->acc.text, strlen(a->acc.text));
        static const char note[] = "reply to the final dot cut off after 64 KB; its 2xx stands";
        ts_append(a, "* ", note, sizeof(note) - 1);
}

static void feed_reply(struct attempt *a, const char *data, size_t size)
{
        while (size > 0) {
                bool complete;
                size_t used = reply_acc_feed(&a->acc, data, size, &complete);
                if (complete) {
                        reply_complete(a);
                } else if (a->acc.total > SMTPC_REPLY_ABORT) {
                        accept_endless_dot(a);
                        /* one endless line, or endless continuation lines */
                        request_abort(a,
                                      memchr(a->acc.text, '\n', a->acc.len)
                                          ? "reply exceeds 64 KB (too long or endless)"
                                          : "reply too long: one line exceeds 64 KB",
                                      SMTPC_FAIL_PROTOCOL);
                }
                data += used;
                size -= used;
        }
        if (a->abort_why && !a->abort_src)
                request_abort(a, a->abort_why, a->abort_failure);
}

static enum cmd cmd_kind(const char *s, size_t n)
{
        static const struct {
                const char *verb;
                enum cmd k;
        } verbs[] = {
            {"EHLO", CMD_EHLO}, {"HELO", CMD_EHLO}, {"STARTTLS", CMD_STARTTLS},
            {"AUTH", CMD_AUTH}, {"MAIL", CMD_MAIL}, {"RCPT", CMD_RCPT},
            {"DATA", CMD_DATA}, {"QUIT", CMD_QUIT}, {"RSET", CMD_RSET},
        };
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                size_t vl = strlen(verbs[i].verb);
                if (n >= vl && strncasecmp(s, verbs[i].verb, vl) == 0)
                        return verbs[i].k;
        }
        return CMD_OTHER;
}

static void on_command(struct attempt *a, const char *data, size_t size)
{
        while (size > 0 && (data[size - 1] == '\n' || data[size - 1] == '\r'))
                size--;
        if (a->hide_next) { /* SASL continuation: never log credentials */
                a->hide_next = false;
                ts_append(a, "> ", "(authentication data hidden)", 28);
                return;
        }
        enum cmd k = cmd_kind(data, size);
        /* curl closes a failed session with QUIT and waits up to the command
         * timeout for its answer: the failure stays the unanswered command's,
         * and on_progress cuts that wait short (Postfix sends no QUIT after
         * a timeout either). */
        if (k == CMD_QUIT && a->n_expect > 0)
                a->quit_after_failure = true;
        else
                a->last_cmd = k;
        if (k == CMD_RCPT)
                a->rcpt_sent++;
        if (k == CMD_EHLO)
                a->helo_sent = size >= 4 && strncasecmp(data, "HELO", 4) == 0;
        expect_push(a, k);
        if (k == CMD_AUTH && size > 10)
                ts_append(a, "> ", data, 10); /* "AUTH PLAIN" without the credentials */
        else
                ts_append(a, "> ", data, size > 512 ? 512 : size);
}

static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *userp)
{
        struct attempt *a = userp;
        (void)h;
        if (type == CURLINFO_HEADER_IN)
                feed_reply(a, data, size);
        else if (type == CURLINFO_HEADER_OUT)
                on_command(a, data, size);
        return 0;
}

static int on_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
        struct attempt *a = p;
        (void)dt, (void)dn, (void)ut, (void)un;
        if (a->data_deadline_us && !a->dot.code && now_monotonic_us() > a->data_deadline_us)
                a->data_expired = true;
        return a->abort_why || a->quit_after_failure || a->data_expired ? 1 : 0;
}

static void txn_end(struct attempt *a);

static int on_data_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct attempt *a = userdata;
        (void)s, (void)usec;
        if (a->sess) { /* "timed out while sending end of data", as any reply's timeout */
                a->data_expired = true;
                a->txn_rc = CURLE_OPERATION_TIMEDOUT;
                txn_end(a);
                return 0;
        }
        request_abort(a, "DATA phase timed out", SMTPC_FAIL_TIMEOUT);
        return 0;
}

static int on_abort(sd_event_source *s, void *userdata)
{
        struct attempt *a = userdata;
        (void)s;
        transfer_cleanup(a);
        interpret(a, CURLE_ABORTED_BY_CALLBACK);
        attempt_finish(a);
        return 0;
}

/* ---- the transaction: tarry writes and reads it on libcurl's connection ----
 *
 * libcurl (CONNECT_ONLY) connects from the bound source, reads the greeting,
 * sends EHLO, does STARTTLS and AUTH; its debug callback shows us the EHLO
 * reply (a->caps). Then tarry sends MAIL/RCPT/DATA itself with
 * curl_easy_send/curl_easy_recv (which go through curl's TLS layer) on a
 * non-blocking socket watched by this loop: parameters from the envelope,
 * PIPELINING when offered, the body dot-stuffed in chunks, and the reply to
 * the final dot read like any other (no blocking wait anywhere). */

static int on_sess_io(sd_event_source *src, int fd, uint32_t revents, void *userdata);
static void txn_end(struct attempt *a);

static void sess_close(struct sess *s, bool quit)
{
        if (!s)
                return;
        if (quit && s->easy) {
                size_t n = 0;
                curl_easy_send(s->easy, "QUIT\r\n", 6, &n); /* best effort, no wait */
        }
        s->io = sd_event_source_disable_unref(s->io);
        s->idle_timer = sd_event_source_disable_unref(s->idle_timer);
        if (s->fd >= 0)
                close(s->fd);
        if (s->easy) {
                curl_multi_remove_handle(s->c->multi, s->easy); /* closes the connection */
                curl_easy_cleanup(s->easy);
        }
        free(s);
}

static void idle_remove(struct smtpc *c, struct sess *s)
{
        for (struct sess **pp = &c->idle; *pp; pp = &(*pp)->next)
                if (*pp == s) {
                        *pp = s->next;
                        c->n_idle--;
                        return;
                }
}

static int on_idle_expired(sd_event_source *src, uint64_t usec, void *userdata)
{
        struct sess *s = userdata;
        (void)src, (void)usec;
        idle_remove(s->c, s);
        sess_close(s, true);
        return 0;
}

static void io_want_out(struct attempt *a, bool out)
{
        sd_event_source_set_io_events(a->sess->io, EPOLLIN | (out ? EPOLLOUT : 0));
}

static int out_reserve(struct attempt *a, size_t more)
{
        if (a->out_off > 0 && a->out_off == a->out_len)
                a->out_off = a->out_len = 0;
        if (a->out_len + more <= a->out_cap)
                return 0;
        if (a->out_off > 0) {
                memmove(a->out, a->out + a->out_off, a->out_len - a->out_off);
                a->out_len -= a->out_off;
                a->out_off = 0;
                if (a->out_len + more <= a->out_cap)
                        return 0;
        }
        size_t cap = a->out_cap ? a->out_cap : 4096;
        while (cap < a->out_len + more)
                cap *= 2;
        char *n = realloc(a->out, cap);
        if (!n)
                return -ENOMEM;
        a->out = n;
        a->out_cap = cap;
        return 0;
}

/* Queue one command (CRLF-terminated) and note which reply it waits for. */
static int send_cmd(struct attempt *a, const char *line)
{
        size_t n = strlen(line);
        if (out_reserve(a, n) < 0)
                return -ENOMEM;
        memcpy(a->out + a->out_len, line, n);
        a->out_len += n;
        on_command(a, line, n);
        return 0;
}

/* Copies n body bytes to out (room for 2n), doubling a '.' that starts a
 * line (follows CRLF); prev holds the two bytes before in and is updated.
 * Whole lines are copied at once (memchr for LF): a byte-at-a-time loop was
 * the delivery worker's largest cost. Returns the bytes written. */
static size_t dot_stuff(const char *in, size_t n, char *out, char prev[2])
{
        size_t o = 0, i = 0;
        bool bol = prev[0] == '\r' && prev[1] == '\n';
        while (i < n) {
                if (bol && in[i] == '.')
                        out[o++] = '.';
                const char *lf = memchr(in + i, '\n', n - i);
                size_t end = lf ? (size_t)(lf - in) + 1 : n;
                memcpy(out + o, in + i, end - i);
                o += end - i;
                char before_lf = end >= 2 ? in[end - 2] : prev[1];
                bol = lf && before_lf == '\r';
                i = end;
        }
        if (n >= 2) {
                prev[0] = in[n - 2];
                prev[1] = in[n - 1];
        } else if (n == 1) {
                prev[0] = prev[1];
                prev[1] = in[0];
        }
        return o;
}

/* Body bytes into the output, dot-stuffed; the final ".\r\n" once all is in. */
static int body_fill(struct attempt *a)
{
        while (a->body_sending && a->out_len - a->out_off < OUT_LOW_WATER) {
                char chunk[BODY_CHUNK];
                size_t want = BODY_CHUNK;
                if (a->body_off >= a->body_size) {
                        bool crlf = a->body_size == 0 ||
                                    (a->body_prev[0] == '\r' && a->body_prev[1] == '\n');
                        if (out_reserve(a, 5) < 0)
                                return -ENOMEM;
                        const char *end = crlf ? ".\r\n" : "\r\n.\r\n";
                        memcpy(a->out + a->out_len, end, strlen(end));
                        a->out_len += strlen(end);
                        a->body_sending = false;
                        break;
                }
                if (want > a->body_size - a->body_off)
                        want = (size_t)(a->body_size - a->body_off);
                ssize_t n = pread(a->body_fd, chunk, want, (off_t)a->body_off);
                if (n <= 0)
                        return -EIO;
                a->body_off += (uint64_t)n;
                if (out_reserve(a, 2 * (size_t)n) < 0)
                        return -ENOMEM;
                a->out_len += dot_stuff(chunk, (size_t)n, a->out + a->out_len, a->body_prev);
        }
        return 0;
}

/* Send what is queued; -EAGAIN when the socket is full (EPOLLOUT armed). */
static int flush_out(struct attempt *a)
{
        for (;;) {
                if (body_fill(a) < 0)
                        return -EIO;
                if (a->out_off == a->out_len)
                        break;
                size_t n = 0;
                CURLcode rc =
                    curl_easy_send(a->sess->easy, a->out + a->out_off, a->out_len - a->out_off, &n);
                if (rc == CURLE_AGAIN) {
                        io_want_out(a, true);
                        return -EAGAIN;
                }
                if (rc != CURLE_OK) {
                        a->txn_rc = CURLE_SEND_ERROR;
                        return -EPIPE;
                }
                a->out_off += n;
        }
        io_want_out(a, false);
        return 0;
}

static void mail_params(const struct attempt *a, struct esmtp_mail *m)
{
        bool utf8 = esmtp_has_8bit(a->sender);
        for (size_t i = 0; i < a->n_rcpts && !utf8; i++)
                utf8 = !a->rres[i].text && esmtp_has_8bit(a->rcpts[i]);
        *m = (struct esmtp_mail){
            .size = a->body_size,
            .eight_bit = a->eight_bit,
            .smtputf8 = utf8,
            .ret = a->dsn_ret,
            .envid = a->envid,
        };
}

static const char *wire_rcpt(const struct attempt *a, size_t i)
{
        return a->wire_rcpt && a->wire_rcpt[i] ? a->wire_rcpt[i] : a->rcpts[i];
}

static int send_rcpt(struct attempt *a, size_t i)
{
        char line[1500];
        struct esmtp_rcpt p = {.notify = a->notify ? a->notify[i] : 0,
                               .orcpt = a->orcpt ? a->orcpt[i] : NULL};
        if (esmtp_rcpt_cmd(line, sizeof(line), wire_rcpt(a, i), &p, &a->caps) < 0) {
                /* an ORCPT that is not "type;xtext" is dropped, never sent raw */
                struct esmtp_rcpt plain = {.notify = p.notify};
                if (esmtp_rcpt_cmd(line, sizeof(line), wire_rcpt(a, i), &plain, &a->caps) < 0)
                        return -EINVAL;
        }
        if (a->rcpt_queued < a->n_rcpts)
                a->rcpt_idx[a->rcpt_queued++] = i;
        return send_cmd(a, line);
}

/* Next recipient still to send (locally refused ones are skipped), or n_rcpts. */
static size_t next_rcpt(const struct attempt *a, size_t from)
{
        while (from < a->n_rcpts && a->rres[from].text)
                from++;
        return from;
}

static void cmd_timer_arm(struct attempt *a);

static int txn_begin(struct attempt *a)
{
        char line[1200];
        struct esmtp_mail m;
        mail_params(a, &m);
        const char *sender = a->wire_sender ? a->wire_sender : a->sender;
        int r = esmtp_mail_cmd(line, sizeof(line), sender, &m, &a->caps);
        if (r == -EINVAL) { /* an ENVID that is not xtext is dropped, never sent raw */
                m.envid = NULL;
                r = esmtp_mail_cmd(line, sizeof(line), sender, &m, &a->caps);
        }
        if (r < 0 || send_cmd(a, line) < 0)
                return -ENOMEM;
        a->rcpt_next = next_rcpt(a, 0);
        if (a->caps.ext & ESMTP_PIPELINING) { /* RFC 2920: MAIL, RCPTs and DATA in one batch */
                for (size_t i = a->rcpt_next; i < a->n_rcpts; i = next_rcpt(a, i + 1))
                        if (send_rcpt(a, i) < 0)
                                return -ENOMEM;
                a->rcpt_next = a->n_rcpts;
                if (send_cmd(a, "DATA\r\n") < 0)
                        return -ENOMEM;
        }
        cmd_timer_arm(a);
        return 0;
}

/* What to send after a reply, when the server does not pipeline. */
static void txn_on_reply(struct attempt *a, enum cmd k, int code)
{
        bool pipelining = a->caps.ext & ESMTP_PIPELINING;
        int r = 0;
        switch (k) {
        case CMD_MAIL:
                if (code >= 400 && !pipelining)
                        a->txn_over = true;
                else if (!pipelining && a->rcpt_next < a->n_rcpts)
                        r = send_rcpt(a, a->rcpt_next);
                break;
        case CMD_RCPT:
                if (code >= 200 && code < 300)
                        a->rcpt_ok++;
                if (pipelining)
                        break;
                a->rcpt_next = next_rcpt(a, a->rcpt_next + 1);
                if (a->rcpt_next < a->n_rcpts)
                        r = send_rcpt(a, a->rcpt_next);
                else if (a->rcpt_ok > 0)
                        r = send_cmd(a, "DATA\r\n");
                else
                        a->txn_over = true; /* every recipient refused */
                break;
        case CMD_DATA:
                if (code != 354)
                        a->txn_over = true;
                else if (a->rcpt_ok == 0) { /* pipelined, nobody accepted: empty, then end */
                        if (out_reserve(a, 3) == 0) {
                                memcpy(a->out + a->out_len, ".\r\n", 3);
                                a->out_len += 3;
                        }
                } else {
                        a->body_sending = true;
                        a->body_prev[0] = '\r', a->body_prev[1] = '\n';
                }
                break;
        case CMD_DOT:
                a->txn_over = true;
                break;
        default:
                break;
        }
        if (r < 0)
                request_abort(a, "out of memory", SMTPC_FAIL_LOCAL);
        if (!a->txn_over)
                cmd_timer_arm(a);
}

static int on_cmd_timeout(sd_event_source *src, uint64_t usec, void *userdata)
{
        struct attempt *a = userdata;
        (void)src, (void)usec;
        a->cmd_timer = sd_event_source_disable_unref(a->cmd_timer);
        a->txn_rc = CURLE_OPERATION_TIMEDOUT;
        txn_end(a);
        return 0;
}

/* command_timeout for the oldest reply due, counted from now (a command was
 * just sent, or the previous reply just came); off during the DATA phase. */
static void cmd_timer_arm(struct attempt *a)
{
        if (a->data_timer || a->n_expect == 0) {
                a->cmd_timer = sd_event_source_disable_unref(a->cmd_timer);
                return;
        }
        uint64_t usec = (uint64_t)a->command_ms * 1000;
        if (a->cmd_timer) {
                uint64_t now;
                sd_event_now(a->c->e, CLOCK_MONOTONIC, &now);
                sd_event_source_set_time(a->cmd_timer, now + usec);
                sd_event_source_set_enabled(a->cmd_timer, SD_EVENT_ONESHOT);
                return;
        }
        sd_event_add_time_relative(a->c->e, &a->cmd_timer, CLOCK_MONOTONIC, usec, 10000,
                                   on_cmd_timeout, a);
}

/* Keep the connection for the next message to the same destination; after
 * a transaction that ended before its final dot, with RSET first. Not after
 * min([smtp] max_deliveries_per_connection, the provider's
 * messages_per_connection) messages: then it is closed and the next message
 * gets a new one. */
static bool sess_park(struct attempt *a, bool rset)
{
        struct smtpc *c = a->c;
        struct sess *s = a->sess;
        unsigned max = c->cfg->max_deliveries_per_connection > 0
                           ? (unsigned)c->cfg->max_deliveries_per_connection
                           : 100;
        if (a->per_conn > 0 && a->per_conn < max)
                max = a->per_conn;
        if (a->dot.code)
                s->deliveries++;
        if (s->deliveries >= max || (size_t)slots_max_global(c->cfg) <= c->n_idle)
                return false;
        if (rset) {
                size_t n = 0;
                if (curl_easy_send(s->easy, "RSET\r\n", 6, &n) != CURLE_OK || n != 6)
                        return false;
                ts_append(a, "> ", "RSET", 4);
                s->rset_pending = true;
                s->rlen = 0;
        }
        if (sd_event_add_time_relative(c->e, &s->idle_timer, CLOCK_MONOTONIC,
                                       IDLE_CONN_MAX_AGE_S * 1000000ULL, 100000, on_idle_expired,
                                       s) < 0)
                return false;
        sd_event_source_set_io_events(s->io, EPOLLIN);
        s->a = NULL;
        s->caps = a->caps;
        s->tls = a->tls_used;
        s->next = c->idle;
        c->idle = s;
        c->n_idle++;
        a->sess = NULL;
        return true;
}

/* Is an attempt queued for this (source, destination)? */
static bool attempt_waiting(const struct smtpc *c, const char *slot_key)
{
        for (const struct attempt *q = c->queue; q; q = q->next)
                if (!q->early && strcmp(q->slot_key, slot_key) == 0)
                        return true;
        return false;
}

/* The transaction is over (or the connection failed): report it. */
static void txn_end(struct attempt *a)
{
        CURLcode rc = a->txn_rc;
        bool in_step = rc == CURLE_OK && !a->abort_why && a->n_expect == 0 && !a->body_sending;
        /* after MAIL without an answered final dot the server may still hold
         * a transaction: RSET (RFC 5321 4.1.1.5) before the next one */
        bool rset = !a->dot.code && a->mail.code;
        /* ...but only for a message already waiting for that destination:
         * a retry (a greylisted RCPT, say) comes later on a fresh connection */
        if (rset && !attempt_waiting(a->c, a->slot_key))
                in_step = false;
        /* 421: the server is closing the channel (RFC 5321 3.8): neither keep
         * it nor send it anything more */
        bool closing = a->closing;
        if (closing)
                in_step = false;
        if (a->sess && !(in_step && sess_park(a, rset))) {
                /* QUIT after a refused transaction; none after a failure */
                a->sess->a = NULL;
                sess_close(a->sess, rc == CURLE_OK && !a->abort_why && !closing);
                a->sess = NULL;
        }
        transfer_done(a, rc);
}

static void txn_read(struct attempt *a)
{
        char buf[16384];
        for (;;) {
                size_t n = 0;
                CURLcode rc = curl_easy_recv(a->sess->easy, buf, sizeof(buf), &n);
                if (rc == CURLE_AGAIN)
                        return;
                if (rc != CURLE_OK || n == 0) {
                        a->txn_rc = CURLE_RECV_ERROR;
                        return;
                }
                if (!a->t_connect_us)
                        a->t_connect_us = now_monotonic_us();
                feed_reply(a, buf, n);
                if (a->txn_over || a->abort_why)
                        return;
        }
}

/* The reply to RSET on an idle connection: 0 waiting or done (250), -1 close. */
static int sess_read_rset(struct sess *s)
{
        size_t n = 0;
        CURLcode rc = curl_easy_recv(s->easy, s->rbuf + s->rlen, sizeof(s->rbuf) - s->rlen, &n);
        if (rc == CURLE_AGAIN)
                return 0;
        if (rc != CURLE_OK || n == 0)
                return -1;
        s->rlen += n;
        for (size_t start = 0;;) { /* the final line: "250 …" */
                const char *nl = memchr(s->rbuf + start, '\n', s->rlen - start);
                if (!nl)
                        return s->rlen < sizeof(s->rbuf) ? 0 : -1;
                size_t len = (size_t)(nl - s->rbuf) - start;
                if (len < 4 || s->rbuf[start + 3] != '-') {
                        bool ok = len >= 3 && memcmp(s->rbuf + start, "250", 3) == 0 &&
                                  (size_t)(nl - s->rbuf) + 1 == s->rlen;
                        s->rset_pending = false;
                        s->rlen = 0;
                        return ok ? 0 : -1;
                }
                start += len + 1;
        }
}

static int on_sess_io(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
        struct sess *s = userdata;
        struct attempt *a = s->a;
        (void)src, (void)fd;
        if (!a) { /* idle: only the reply to RSET may come */
                if (s->rset_pending && sess_read_rset(s) >= 0)
                        return 0;
                idle_remove(s->c, s);
                sess_close(s, false);
                return 0;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                txn_read(a);
        if (!a->txn_over && !a->abort_why && a->txn_rc == CURLE_OK) {
                int r = flush_out(a);
                if (r == -EIO)
                        request_abort(a, "body unreadable", SMTPC_FAIL_LOCAL);
        }
        if (a->abort_why)
                return 0; /* on_abort reports it */
        if (a->txn_over || a->txn_rc != CURLE_OK)
                txn_end(a);
        return 0;
}

/* Every recipient not settled yet fails with text (no transaction runs). */
static void settle_one(struct attempt *a, size_t i, int code, const char *enh, const char *text);

static void settle_all_locally(struct attempt *a, int code, const char *enh, const char *text)
{
        for (size_t i = 0; i < a->n_rcpts; i++)
                if (!a->rres[i].text)
                        settle_one(a, i, code, enh, text);
        a->local_only = true;
}

static void settle_one(struct attempt *a, size_t i, int code, const char *enh, const char *text)
{
        free(a->local_text[i]);
        a->local_text[i] = strdup(text);
        fill_rcpt(&a->rres[i], code, enh, a->local_text[i] ? a->local_text[i] : enh, phase_now(a));
        a->rres[i].origin = OUTCOME_FROM_TARRY; /* tarry's refusal, not the server's */
        a->rres[i].local = OUTCOME_LOCAL_REFUSAL;
}

/* RFC 6531 3.2: a server without SMTPUTF8 gets no UTF-8 address. An IDN
 * domain goes as its A-label; a UTF-8 local part has no ASCII form, so that
 * recipient fails with 553 5.6.7 (every recipient, when it is the sender's).
 * -EMEDIUMTYPE: nobody is left to send to. */
static int ascii_envelope(struct attempt *a)
{
        free(a->wire_sender);
        a->wire_sender = NULL;
        if (a->caps.ext & ESMTP_SMTPUTF8)
                return 0;
        const struct smtpc_target *t = &a->targets[a->cur];
        char buf[ADDR_MAX + 64], text[1024];
        if (esmtp_has_8bit(a->sender)) {
                int r = esmtp_ascii_address(a->sender, buf, sizeof(buf));
                if (r < 0) {
                        snprintf(text, sizeof(text),
                                 "553 5.6.7 the sender address <%s> %s, and %s[%s] does not offer "
                                 "SMTPUTF8",
                                 a->sender,
                                 r == -EILSEQ ? "has a non-ASCII local part"
                                              : "has a domain that is not a valid IDN",
                                 t->host, t->ip);
                        settle_all_locally(a, 553, "5.6.7", text);
                        return -EMEDIUMTYPE;
                }
                a->wire_sender = strdup(buf);
        }
        size_t left = 0;
        for (size_t i = 0; i < a->n_rcpts; i++) {
                if (a->rres[i].text)
                        continue;
                if (!esmtp_has_8bit(a->rcpts[i])) {
                        left++;
                        continue;
                }
                int r = esmtp_ascii_address(a->rcpts[i], buf, sizeof(buf));
                if (r < 0) {
                        snprintf(text, sizeof(text),
                                 "553 5.6.7 <%s>: %s, and %s[%s] does not offer SMTPUTF8 "
                                 "(RFC 6531): the address has no ASCII form",
                                 a->rcpts[i],
                                 r == -EILSEQ ? "the local part is not ASCII"
                                              : "the domain is not a valid IDN",
                                 t->host, t->ip);
                        settle_one(a, i, 553, "5.6.7", text);
                        continue;
                }
                if (!a->wire_rcpt && !(a->wire_rcpt = calloc(a->n_rcpts, sizeof(char *))))
                        return -ENOMEM;
                free(a->wire_rcpt[i]);
                a->wire_rcpt[i] = strdup(buf);
                left++;
        }
        if (left == 0) {
                a->local_only = true;
                return -EMEDIUMTYPE;
        }
        return 0;
}

/* RFC 6152 3: no 8-bit body to a server without 8BITMIME. It gets the
 * message converted to quoted-printable (smtpc/mime7.c); what cannot be
 * converted bounces with 5.6.3 and says why. -EMEDIUMTYPE: settled. */
static int downgrade_body(struct attempt *a)
{
        if (!a->eight_bit || (a->caps.ext & ESMTP_8BITMIME))
                return 0;
        if (a->body_signed) { /* a converted copy would fail its DKIM check */
                const struct smtpc_target *t = &a->targets[a->cur];
                char text[600];
                snprintf(text, sizeof(text),
                         "554 5.6.3 %s[%s] does not accept 8-bit mail (no 8BITMIME) and the "
                         "message cannot be converted to 7-bit: it is DKIM-signed, and converting "
                         "it would break the signature",
                         t->host, t->ip);
                settle_all_locally(a, 554, "5.6.3", text);
                return -EMEDIUMTYPE;
        }
        _cleanup_free_ char *in = malloc(a->body_size ? a->body_size : 1);
        if (!in)
                return -ENOMEM;
        for (uint64_t off = 0; off < a->body_size;) {
                ssize_t n = pread(a->body_fd, in + off, a->body_size - off, (off_t)off);
                if (n <= 0)
                        return -EIO;
                off += (uint64_t)n;
        }
        _cleanup_free_ char *out = NULL;
        size_t out_len = 0;
        const char *why = NULL;
        int r = mime7_convert(in, a->body_size, &out, &out_len, &why);
        if (r == -EMEDIUMTYPE) {
                const struct smtpc_target *t = &a->targets[a->cur];
                char text[600];
                snprintf(text, sizeof(text),
                         "554 5.6.3 %s[%s] does not accept 8-bit mail (no 8BITMIME) and the "
                         "message cannot be converted to 7-bit: %s",
                         t->host, t->ip, why);
                settle_all_locally(a, 554, "5.6.3", text);
                return r;
        }
        if (r < 0)
                return r;
        int fd = memfd_create("tarry-body7", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fd_write_all(fd, out, out_len) < 0) {
                close(fd);
                return -EIO;
        }
        close(a->body_fd);
        a->body_fd = fd;
        a->body_size = out_len;
        a->eight_bit = false;
        static const char note[] =
            "8-bit body sent as quoted-printable (the server has no 8BITMIME)";
        ts_append(a, "* ", note, sizeof(note) - 1);
        return 0;
}

/* Start the transaction on a (new or reused) session. */
static int txn_start(struct attempt *a)
{
        int d = ascii_envelope(a);
        if (d == 0)
                d = downgrade_body(a);
        if (d == -EMEDIUMTYPE) { /* nothing to send: the connection stays clean */
                a->txn_over = true;
                txn_end(a);
                return 0;
        }
        if (d < 0)
                return d;
        if (txn_begin(a) < 0)
                return -ENOMEM;
        int r = flush_out(a);
        if (r == -EPIPE) {
                txn_end(a);
                return 0;
        }
        return r == -EIO ? -EIO : 0;
}

/* libcurl finished the connect phase: the connection becomes tarry's. */
static int sess_take(struct attempt *a)
{
        struct smtpc *c = a->c;
        curl_socket_t fd = CURL_SOCKET_BAD;
        if (curl_easy_getinfo(a->easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK ||
            fd == CURL_SOCKET_BAD)
                return -EBADF;
        struct sess *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->c = c;
        s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3); /* curl may still watch its own fd */
        s->easy = a->easy;
        a->easy = NULL;
        /* nothing of the attempt may be reached from the handle any more */
        curl_easy_setopt(s->easy, CURLOPT_DEBUGFUNCTION, NULL);
        curl_easy_setopt(s->easy, CURLOPT_VERBOSE, 0L);
        curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(s->easy, CURLOPT_XFERINFOFUNCTION, NULL);
        curl_easy_setopt(s->easy, CURLOPT_NOPROGRESS, 1L);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, NULL);
        s->a = a;
        a->sess = s;
        snprintf(s->key, sizeof(s->key), "%s", a->slot_key);
        s->tls_mode = a->route.tls;
        s->auth = a->route.auth;
        s->target = a->targets[a->cur];
        s->tls = a->tls_used;
        if (s->fd < 0 || sd_event_add_io(c->e, &s->io, s->fd, EPOLLIN, on_sess_io, s) < 0)
                return -ENOMEM;
        return 0;
}

/* An idle connection for this attempt's (source, destination), still alive. */
static struct sess *sess_find_idle(struct attempt *a)
{
        struct smtpc *c = a->c;
        for (struct sess *s = c->idle; s; s = s->next) {
                if (strcmp(s->key, a->slot_key) != 0 || s->tls_mode != a->route.tls ||
                    s->auth != a->route.auth)
                        continue;
                /* the RSET reply may be read with the next replies only when pipelining */
                if (s->rset_pending && !(s->caps.ext & ESMTP_PIPELINING))
                        continue;
                idle_remove(c, s);
                if (s->rset_pending && sess_read_rset(s) < 0) {
                        sess_close(s, false);
                        return NULL;
                }
                struct pollfd p = {.fd = s->fd, .events = POLLIN};
                if (!s->rset_pending && poll(&p, 1, 0) != 0) { /* closed or talking out of turn */
                        sess_close(s, false);
                        return NULL;
                }
                s->idle_timer = sd_event_source_disable_unref(s->idle_timer);
                return s;
        }
        return NULL;
}

static bool sess_reuse(struct attempt *a)
{
        struct sess *s = sess_find_idle(a);
        if (!s)
                return false;
        replies_reset(a);
        s->a = a;
        a->sess = s;
        a->reused = true;
        a->targets[0] = s->target;
        a->n_targets = 1;
        a->cur = 0;
        a->caps = s->caps;
        a->tls_used = s->tls;
        a->any_reply = true;
        a->greeting.code = 220;
        a->t_connect_us = now_monotonic_us();
        ts_append(a, "* ", "reusing the connection of an earlier message", 44);
        if (s->rset_pending) { /* its reply comes first, ahead of MAIL's */
                expect_push(a, CMD_RSET);
                s->rset_pending = false;
                if (s->rlen > 0)
                        feed_reply(a, s->rbuf, s->rlen);
                s->rlen = 0;
        }
        if (txn_start(a) < 0) {
                request_abort(a, "out of memory", SMTPC_FAIL_LOCAL);
                return true;
        }
        return true;
}

/* ---- starting a transfer to the current target ---- */

static char *join_url(const struct attempt *a)
{
        const struct smtpc_target *t = &a->targets[a->cur];
        char *url = NULL;
        /* only a host name or an IP goes into the URL (dns.c filters MX names;
         * this is the last line of defence for any other source) */
        const char *host = dns_host_name_ok(t->host) ? t->host : t->ip;
        bool v6 = strchr(host, ':') != NULL;
        if (asprintf(&url, "smtp://%s%s%s:%u/%s", v6 ? "[" : "", host, v6 ? "]" : "", a->route.port,
                     a->helo) < 0)
                return NULL;
        return url;
}

static int set_tls(struct attempt *a, CURL *h)
{
        long use = CURLUSESSL_NONE;
        switch (a->route.tls) {
        case CFG_TLS_NONE:
                use = CURLUSESSL_NONE;
                break;
        case CFG_TLS_MAY:
                use = a->no_starttls ? CURLUSESSL_NONE : CURLUSESSL_TRY;
                break;
        case CFG_TLS_ENCRYPT:
        case CFG_TLS_VERIFY:
                use = CURLUSESSL_ALL;
                break;
        }
        long verify = a->route.tls == CFG_TLS_VERIFY;
        if (a->targets[a->cur].sts_verify) /* MTA-STS enforce: verified for the MX name */
                use = CURLUSESSL_ALL, verify = 1;
        if (a->c->cfg->tls_ca_file)
                curl_easy_setopt(h, CURLOPT_CAINFO, a->c->cfg->tls_ca_file);
        curl_easy_setopt(h, CURLOPT_USE_SSL, use);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, verify);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
        return 0;
}

static void set_endpoint(struct attempt *a, CURL *h)
{
        const struct smtpc_target *t = &a->targets[a->cur];
        char conn_to[400], iface[128];
        bool v6 = t->family == AF_INET6;
        snprintf(conn_to, sizeof(conn_to), "::%s%s%s:%u", v6 ? "[" : "", t->ip, v6 ? "]" : "",
                 a->route.port);
        struct curl_slist *ct = curl_slist_append(NULL, conn_to);
        curl_easy_setopt(h, CURLOPT_CONNECT_TO, ct);
        /* always explicit: an unset interface would reuse a connection bound elsewhere */
        snprintf(iface, sizeof(iface), "host!%s", a->source ? a->source : v6 ? "::" : "0.0.0.0");
        curl_easy_setopt(h, CURLOPT_INTERFACE, iface);
        a->connect_list = ct;
}

static void set_timeouts(struct attempt *a, CURL *h)
{
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)a->connect_ms);
        curl_easy_setopt(h, CURLOPT_SERVER_RESPONSE_TIMEOUT, (long)(a->command_ms / 1000));
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)(a->command_ms / 1000));
        /* libcurl's part only: greeting, EHLO, STARTTLS, EHLO, AUTH (two steps) */
        int64_t total = a->connect_ms + a->command_ms * 6;
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)total);
}

static int transfer_start(struct attempt *a)
{
        replies_reset(a);
        CURL *h = curl_easy_init();
        if (!h)
                return -ENOMEM;
        a->easy = h;
        _cleanup_free_ char *url = join_url(a);
        if (!url)
                return -ENOMEM;
        /* libcurl connects, greets, says EHLO, STARTTLS and AUTH, then stops */
        curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PRIVATE, a);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, a->errbuf);
        a->errbuf[0] = '\0';
        curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
        curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, on_debug);
        curl_easy_setopt(h, CURLOPT_DEBUGDATA, a);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, a);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp");
        set_endpoint(a, h);
        set_tls(a, h);
        set_timeouts(a, h);
        if (a->auth_user) {
                curl_easy_setopt(h, CURLOPT_USERNAME, a->auth_user);
                curl_easy_setopt(h, CURLOPT_PASSWORD, a->auth_pass);
        }
        if (curl_multi_add_handle(a->c->multi, h) != CURLM_OK)
                return -ENOMEM;
        return 0;
}

/* ---- libcurl multi on sd-event ---- */

static void check_done(struct smtpc *c)
{
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left))) {
                if (m->msg != CURLMSG_DONE)
                        continue;
                struct attempt *a = NULL;
                CURLcode rc = m->data.result;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&a);
                if (!a || a->easy != m->easy_handle)
                        continue; /* a session's handle: its transfer ended long ago */
                if (rc != CURLE_OK) {
                        transfer_done(a, rc);
                        continue;
                }
                int r = sess_take(a);
                if (r == 0)
                        r = txn_start(a);
                if (r < 0) {
                        snprintf(a->abort_buf, sizeof(a->abort_buf),
                                 "cannot start the transaction: %s", strerror(-r));
                        request_abort(a, a->abort_buf, SMTPC_FAIL_LOCAL);
                }
        }
}

static int on_curl_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct smtpc *c = userdata;
        int flags = 0, running;
        (void)s;
        if (revents & EPOLLIN)
                flags |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                flags |= CURL_CSELECT_ERR;
        curl_multi_socket_action(c->multi, fd, flags, &running);
        check_done(c);
        return 0;
}

static int on_curl_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct smtpc *c = userdata;
        int running;
        (void)s, (void)usec;
        curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(c);
        return 0;
}

static int curl_socket_cb(CURL *h, curl_socket_t fd, int what, void *userp, void *socketp)
{
        struct smtpc *c = userp;
        sd_event_source *src = socketp;
        (void)h;
        if (what == CURL_POLL_REMOVE) {
                sd_event_source_disable_unref(src);
                curl_multi_assign(c->multi, fd, NULL);
                return 0;
        }
        uint32_t ev = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
        if (src) {
                sd_event_source_set_io_events(src, ev);
                return 0;
        }
        if (sd_event_add_io(c->e, &src, fd, ev, on_curl_io, c) < 0)
                return -1;
        curl_multi_assign(c->multi, fd, src);
        return 0;
}

static int curl_timer_cb(CURLM *m, long timeout_ms, void *userp)
{
        struct smtpc *c = userp;
        (void)m;
        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->curl_timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        uint64_t now;
        sd_event_now(c->e, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(c->curl_timer, now + (uint64_t)timeout_ms * 1000);
        sd_event_source_set_enabled(c->curl_timer, SD_EVENT_ONESHOT);
        return 0;
}

/* ---- starting attempts ---- */

/* MTA-STS over an MX route's targets (smtpc/sts.c); true: deferred. */
static bool mx_sts_refused(struct attempt *a)
{
        if (a->route.kind != SMTPC_ROUTE_MX || a->route.no_mx || !a->c->cfg->mta_sts)
                return false;
        char text[1024];
        if (sts_filter(a->c->cfg, a->queue_id, a->route.host, a->targets, &a->n_targets,
                       a->sts_policy, text, sizeof(text)) == 0)
                return false;
        set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_POLICY, 451, text);
        a->res.phase = OUTCOME_PHASE_ROUTE;
        return true;
}

static void on_resolved(void *arg, enum dns_status st, const struct smtpc_target *t, size_t n,
                        const char *why)
{
        struct attempt *a = arg;
        a->job = NULL;
        bool looped = false;
        if (st == DNS_OK) {
                memcpy(a->targets, t, n * sizeof(*t));
                for (size_t i = 0; i < n; i++) /* set only by mx_sts_refused */
                        a->targets[i].sts_verify = false;
                a->n_targets =
                    a->route.no_mx ? n : self_drop_own_mx(a->c->cfg, a->targets, n, &looped);
        }
        if (st == DNS_OK && looped && a->n_targets == 0) {
                char text[600]; /* Postfix's words; deferred: the DNS or the config gets fixed */
                snprintf(text, sizeof(text), "451 4.4.6 mail for %s loops back to myself",
                         a->route.host);
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_DNS, 451, text);
        } else if (st == DNS_OK && mx_sts_refused(a)) {
                /* deferred 4.7.5: the policy lists none of the MX hosts */
        } else if (st == DNS_OK) {
                if (transfer_start(a) == 0)
                        return;
                synth_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_LOCAL, "4.3.0", "%s[%s]:%u: %s",
                              "cannot start transfer");
        } else if (a->route.kind != SMTPC_ROUTE_MX && st != DNS_TEMPFAIL) {
                /* the administrator's next hop, not the recipient's domain:
                 * defer until the configuration is fixed, never bounce */
                char text[900];
                snprintf(text, sizeof(text), "451 4.4.3 %s %s: %s", a->route.configured,
                         a->route.host,
                         st == DNS_NULL_MX ? "does not accept mail (null MX)" : "host not found");
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_DNS, 451, text);
        } else if (st == DNS_NULL_MX) {
                char text[600];
                snprintf(text, sizeof(text), "556 5.1.10 %s", why);
                set_attempt_failure(a, SMTPC_ATTEMPT_PERMFAIL, SMTPC_FAIL_NULL_MX, 556, text);
        } else {
                bool perm = st == DNS_NOTFOUND;
                char text[600];
                snprintf(text, sizeof(text), "%s %s", perm ? "550 5.4.4" : "451 4.4.3", why);
                set_attempt_failure(a, perm ? SMTPC_ATTEMPT_PERMFAIL : SMTPC_ATTEMPT_TEMPFAIL,
                                    SMTPC_FAIL_DNS, perm ? 550 : 451, text);
        }
        attempt_finish(a);
}

/* Whether the body holds a byte >= 0x80 (BODY=8BITMIME). */
static int body_is_8bit(int fd, uint64_t size, bool *out)
{
        char buf[BODY_CHUNK];
        *out = false;
        for (uint64_t off = 0; off < size;) {
                size_t want = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
                ssize_t n = pread(fd, buf, want, (off_t)off);
                if (n <= 0)
                        return -EIO;
                for (ssize_t i = 0; i < n; i++)
                        if ((unsigned char)buf[i] >= 0x80) {
                                *out = true;
                                return 0;
                        }
                off += (uint64_t)n;
        }
        return 0;
}

/* Take the config-dependent settings; a locally refused address is settled now. */
static int attempt_prepare(struct attempt *a)
{
        const struct tarry_config *cfg = a->c->cfg;
        a->helo = strdup(cfg->myhostname && cfg->myhostname[0] ? cfg->myhostname : "localhost");
        if (!a->helo)
                return -ENOMEM;
        a->connect_ms = ms_of(cfg->connect_timeout_s, 30);
        a->command_ms = ms_of(cfg->command_timeout_s, 300);
        a->data_ms = ms_of(cfg->data_timeout_s, 600);
        if (body_is_8bit(a->body_fd, a->body_size, &a->eight_bit) < 0) {
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_LOCAL, 451,
                                    "451 4.3.0 message body unreadable");
                return -EIO;
        }
        if (a->route.auth) {
                const char *why = NULL;
                int r =
                    smtpc_read_auth_file(cfg->relay_auth_file, &a->auth_user, &a->auth_pass, &why);
                if (r < 0) {
                        char text[512];
                        snprintf(text, sizeof(text), "451 4.3.0 %s: %s", cfg->relay_auth_file, why);
                        set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_LOCAL, 451, text);
                        return -EPERM;
                }
        }
        return 0;
}

static void attempt_begin(struct attempt *a)
{
        struct smtpc *c = a->c;
        if (slots_take(&c->slots, a->slot_key) < 0) {
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_LOCAL, 451,
                                    "451 4.3.0 out of memory");
                attempt_finish(a);
                return;
        }
        list_remove(&c->queue, a);
        a->next = c->running;
        c->running = a;
        a->started = true;
        if (attempt_prepare(a) < 0) {
                if (!a->res_text)
                        set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_LOCAL, 451,
                                            "451 4.3.0 out of memory");
                attempt_finish(a);
                return;
        }
        a->t_start_us = now_monotonic_us();
        if (sess_reuse(a))
                return;
        int r = dns_resolve_mx(c->dns, &a->route, a->mx, a->n_mx, on_resolved, a, &a->job);
        if (r < 0) {
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_LOCAL, 451,
                                    "451 4.3.0 cannot start DNS lookup");
                attempt_finish(a);
        }
}

static int on_pump(sd_event_source *s, void *userdata)
{
        struct smtpc *c = userdata;
        (void)s;
        c->pump_src = sd_event_source_disable_unref(c->pump_src);
        struct attempt *a = c->queue;
        while (a) {
                struct attempt *next = a->next;
                if (!a->early && slots_free(&c->slots, c->cfg, a->slot_key))
                        attempt_begin(a);
                a = next;
        }
        return 0;
}

static void pump_schedule(struct smtpc *c)
{
        if (c->pump_src || !c->queue)
                return;
        sd_event_add_defer(c->e, &c->pump_src, on_pump, c);
}

/* The message as sent: req's body file, or with a prefix a memory file
 * holding the prefix and then the body. *fd is the caller's. */
static int wire_body(const struct smtpc_request *req, int *fd, uint64_t *size)
{
        size_t pre_len = req->prefix ? strlen(req->prefix) : 0;
        if (pre_len == 0) {
                *fd = fcntl(req->body_fd, F_DUPFD_CLOEXEC, 3);
                *size = req->body_size;
                return *fd < 0 ? -EBADF : 0;
        }
        _cleanup_close_ int out = memfd_create("tarry-message", MFD_CLOEXEC);
        if (out < 0)
                return -errno;
        int r = fd_write_all(out, req->prefix, pre_len);
        if (r < 0)
                return r;
        for (uint64_t done = 0; done < req->body_size;) {
                off_t off = (off_t)done;
                ssize_t n = sendfile(out, req->body_fd, &off, (size_t)(req->body_size - done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO; /* the body file shrank: never */
                done += (uint64_t)n;
        }
        *fd = TAKE_FD(out);
        *size = pre_len + req->body_size;
        return 0;
}

static int attempt_copy(struct attempt *a, const struct smtpc_request *req)
{
        a->queue_id = strdup(req->queue_id ? req->queue_id : "");
        a->sender = strdup(req->sender ? req->sender : "");
        a->source = req->source_address ? strdup(req->source_address) : NULL;
        a->rcpts = calloc(req->n_rcpts, sizeof(char *));
        a->rcpt_reply = calloc(req->n_rcpts, sizeof(struct reply));
        a->rres = calloc(req->n_rcpts, sizeof(struct smtpc_rcpt_result));
        a->local_text = calloc(req->n_rcpts, sizeof(char *));
        a->expect_cap = req->n_rcpts + 16; /* MAIL, every RCPT, DATA, dot, and the connect phase */
        a->expect = calloc(a->expect_cap, sizeof(*a->expect));
        a->rcpt_idx = calloc(req->n_rcpts, sizeof(*a->rcpt_idx));
        if (!a->expect || !a->rcpt_idx)
                return -ENOMEM;
        if (!a->local_text || !a->queue_id || !a->sender || (req->source_address && !a->source) ||
            !a->rcpts || !a->rcpt_reply || !a->rres)
                return -ENOMEM;
        a->n_rcpts = req->n_rcpts;
        for (size_t i = 0; i < req->n_rcpts; i++)
                if (!(a->rcpts[i] = strdup(req->rcpts[i] ? req->rcpts[i] : "")))
                        return -ENOMEM;
        a->dsn_ret = req->dsn_ret;
        a->body_signed = req->body_signed;
        a->per_conn = req->messages_per_connection;
        if (req->n_mx > 0) {
                a->n_mx = req->n_mx < SMTPC_MX_MAX ? req->n_mx : SMTPC_MX_MAX;
                if (!(a->mx = calloc(a->n_mx, sizeof(*a->mx))))
                        return -ENOMEM;
                memcpy(a->mx, req->mx, a->n_mx * sizeof(*a->mx));
        }
        if (req->envid && !(a->envid = strdup(req->envid)))
                return -ENOMEM;
        if (req->notify) {
                if (!(a->notify = calloc(req->n_rcpts, sizeof(*a->notify))))
                        return -ENOMEM;
                memcpy(a->notify, req->notify, req->n_rcpts * sizeof(*a->notify));
        }
        if (req->orcpt) {
                if (!(a->orcpt = calloc(req->n_rcpts, sizeof(char *))))
                        return -ENOMEM;
                for (size_t i = 0; i < req->n_rcpts; i++)
                        if (req->orcpt[i] && !(a->orcpt[i] = strdup(req->orcpt[i])))
                                return -ENOMEM;
        }
        int r = wire_body(req, &a->body_fd, &a->body_size);
        if (r < 0)
                return r;
        a->done = req->done;
        a->userdata = req->userdata;
        return 0;
}

/* Every address passes addr_check before curl sees it (curl does not filter CR/LF). */
static int check_addresses(struct attempt *a)
{
        const char *why = NULL;
        char text[256];
        if (a->sender[0] && addr_check(a->sender, &why) < 0) {
                snprintf(text, sizeof(text), "553 5.1.7 bad sender address: %s", why);
                set_attempt_failure(a, SMTPC_ATTEMPT_PERMFAIL, SMTPC_FAIL_REFUSAL, 553, text);
                return -EINVAL;
        }
        size_t bad = 0;
        for (size_t i = 0; i < a->n_rcpts; i++) {
                if (addr_check(a->rcpts[i], &why) == 0)
                        continue;
                snprintf(text, sizeof(text), "553 5.1.3 bad recipient address: %s", why);
                a->local_text[i] = strdup(text);
                a->rres[i].text =
                    a->local_text[i] ? a->local_text[i] : "553 5.1.3 bad recipient address";
                a->rres[i].code = 553;
                snprintf(a->rres[i].enhanced, SMTPC_ENH_MAX, "5.1.3");
                a->rres[i].outcome = SMTPC_RCPT_FAILED;
                a->rres[i].origin = OUTCOME_FROM_TARRY;
                a->rres[i].local = OUTCOME_LOCAL_REFUSAL;
                a->rres[i].phase = OUTCOME_PHASE_ROUTE;
                bad++;
        }
        if (bad == a->n_rcpts) {
                set_attempt_failure(a, SMTPC_ATTEMPT_DONE, SMTPC_FAIL_REFUSAL, 553,
                                    "553 5.1.3 no valid recipient");
                return -EINVAL;
        }
        return 0;
}

static int route_of(struct attempt *a)
{
        const char *dom = addr_domain(a->rcpts[0]);
        if (smtpc_route(a->c->cfg, dom ? dom : "", &a->route) < 0) {
                set_attempt_failure(a, SMTPC_ATTEMPT_PERMFAIL, SMTPC_FAIL_DNS, 550,
                                    "550 5.1.2 bad recipient domain");
                return -EINVAL;
        }
        slots_key(a->slot_key, a->source, a->route.destination);
        return 0;
}

static int on_early_finish(sd_event_source *s, void *userdata)
{
        struct attempt *a = userdata;
        (void)s;
        attempt_finish(a);
        return 0;
}

int smtpc_attempt_start(struct smtpc *c, const struct smtpc_request *req)
{
        if (!req || !req->done || req->n_rcpts == 0 || !req->rcpts)
                return -EINVAL;
        struct attempt *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->c = c;
        a->body_fd = -1;
        int r = attempt_copy(a, req);
        if (r < 0) {
                attempt_free(a);
                return r;
        }
        a->t_start_us = now_monotonic_us();
        a->next = NULL;
        struct attempt **tail = &c->queue;
        while (*tail)
                tail = &(*tail)->next;
        *tail = a;
        if (check_addresses(a) < 0 || route_of(a) < 0) {
                /* report from the loop, never from inside this call */
                a->early = true;
                if (sd_event_add_defer(c->e, &a->abort_src, on_early_finish, a) < 0) {
                        list_remove(&c->queue, a);
                        attempt_free(a);
                        return -ENOMEM;
                }
                return 0;
        }
        pump_schedule(c);
        return 0;
}

/* ---- lifecycle ---- */

int smtpc_new(sd_event *e, const struct tarry_config *cfg, struct smtpc **out)
{
        /* reference-counted and thread-safe since curl 7.84 */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return -EIO;
        struct smtpc *c = calloc(1, sizeof(*c));
        if (!c) {
                curl_global_cleanup();
                return -ENOMEM;
        }
        c->e = sd_event_ref(e);
        c->cfg = cfg;
        int r = dns_new(e, cfg->dns_servers, cfg->n_dns_servers, &c->dns);
        if (r < 0)
                goto fail;
        r = sd_event_add_time(e, &c->curl_timer, CLOCK_MONOTONIC, 0, 1, on_curl_timer, c);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(c->curl_timer, SD_EVENT_OFF);
        c->multi = curl_multi_init();
        if (!c->multi) {
                r = -ENOMEM;
                goto fail;
        }
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
        curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
        smtpc_set_config(c, cfg);
        *out = c;
        return 0;
fail:
        smtpc_free(c);
        return r;
}

int smtpc_set_config(struct smtpc *c, const struct tarry_config *cfg)
{
        if (!cfg)
                return -EINVAL;
        c->cfg = cfg;
        /* the slots own concurrency; curl's cache holds the sessions (connect-only
         * connections, never reused by curl) and must not close them */
        long max = slots_max_global(cfg);
        curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 2 * max + 16);
        pump_schedule(c);
        return 0;
}

size_t smtpc_pending(const struct smtpc *c)
{
        size_t n = c->slots.active;
        for (const struct attempt *a = c->queue; a; a = a->next)
                n++;
        return n;
}

static void abort_list(struct attempt **head)
{
        while (*head) {
                struct attempt *a = *head;
                settle_refused(a);
                set_attempt_failure(a, SMTPC_ATTEMPT_TEMPFAIL, SMTPC_FAIL_SHUTDOWN, 451,
                                    "451 4.3.0 delivery aborted: shutting down");
                attempt_finish(a);
        }
}

void smtpc_abort_all(struct smtpc *c)
{
        abort_list(&c->running);
        abort_list(&c->queue);
        c->pump_src = sd_event_source_disable_unref(c->pump_src);
}

static void free_list(struct attempt *a)
{
        while (a) {
                struct attempt *next = a->next;
                attempt_free(a);
                a = next;
        }
}

void smtpc_free(struct smtpc *c)
{
        if (!c)
                return;
        for (struct attempt *a = c->running; a; a = a->next)
                transfer_cleanup(a);
        free_list(c->running);
        free_list(c->queue);
        while (c->idle) {
                struct sess *s = c->idle;
                idle_remove(c, s);
                sess_close(s, true);
        }
        if (c->multi)
                curl_multi_cleanup(c->multi); /* closes cached connections */
        dns_free(c->dns);
        slots_clear(&c->slots);
        sd_event_source_disable_unref(c->curl_timer);
        sd_event_source_disable_unref(c->pump_src);
        sd_event_unref(c->e);
        free(c);
        curl_global_cleanup();
}
