/* smtpc/pool.c — delivery attempts in worker processes, one attempt each; see smtpc.h.
 *
 * Life of a request: queued (FIFO) → given a worker (an idle one
 * that last served the same key, else a new one while fewer than
 * max_connections live, else the least recently used idle one) → the request
 * is sent → the result comes back (or the worker dies, lies or overstays and
 * the job gets a temporary failure) → done() → the worker is idle, retires
 * after idle_timeout or at once after a reload.
 */
#include "smtpc/smtpc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/address.h"
#include "common/cleanup.h"
#include "common/fileio.h"
#include "smtpc/ipc.h"
#include "smtpc/slots.h"

extern char **environ;

#define IDLE_DEFAULT_US  (10 * 1000000ULL)
#define DEADLINE_SLACK_S 60 /* DNS and scheduling on top of the protocol timeouts */
#define FREE_GRACE_US    (2 * 1000000LL)

#define TEXT_ABORTED "451 4.3.0 delivery aborted: shutting down"
#define TEXT_INVALID "451 4.3.0 delivery worker sent an invalid result"

struct worker;

struct job {
        struct smtpc_pool *p;
        struct job *next; /* in p->queue while waiting */
        struct worker *w; /* while running */
        char *queue_id, *sender, **rcpts, *source;
        size_t n_rcpts;
        enum smtpc_dsn_ret dsn_ret;
        char *envid;      /* or NULL */
        unsigned *notify; /* n_rcpts, or NULL */
        char **orcpt;     /* n_rcpts, entries may be NULL; or NULL */
        bool body_signed;
        int body_fd;
        uint64_t body_size;
        char *prefix; /* or NULL: header lines ahead of the body (the worker joins them) */
        smtpc_done_fn done;
        void *userdata;
        char destination[SMTPC_DEST_MAX];
        char key[SLOTS_KEY_MAX]; /* (source, site) when the request names a site */
        char *site;              /* or NULL */
        unsigned site_connections;
        /* the provider's messages_per_connection, 0: none */
        unsigned messages_per_connection;
        struct smtpc_mx *mx; /* the cached MX set, or NULL */
        size_t n_mx;
        struct smtpc_rcpt_result *rres; /* for results made here */
        int64_t t_start_us;
};

struct worker {
        struct smtpc_pool *p;
        struct worker *next;
        pid_t pid;
        int fd;    /* our end of the socket; -1 once closed */
        int pidfd; /* readable when the process has exited */
        sd_event_source *io, *exit_src, *timer;
        struct job *job;
        char key[SLOTS_KEY_MAX];    /* key of the last attempt ("" before the first) */
        char route[SMTPC_DEST_MAX]; /* route of the last attempt */
        bool limited;               /* the last attempt's site limits its connections */
        unsigned gen;               /* config generation it was started with */
        uint64_t last_used;
        bool reaped;
        struct ipc_in in;
        struct ipc_out out;
};

struct smtpc_pool {
        sd_event *e;
        const struct tarry_config *cfg;
        char **argv; /* worker command + "-C" + config path + NULL */
        size_t argc;
        unsigned gen;
        uint64_t idle_us, deadline_us, uses;
        struct job *queue;
        struct worker *workers;
        size_t busy; /* jobs on a worker */
        sd_event_source *pump_src;
};

static void pump_schedule(struct smtpc_pool *p);
static int on_worker_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static void worker_result(struct worker *w);

/* ---- jobs ---- */

static void job_free(struct job *j)
{
        for (size_t i = 0; j->rcpts && i < j->n_rcpts; i++)
                free(j->rcpts[i]);
        for (size_t i = 0; j->orcpt && i < j->n_rcpts; i++)
                free(j->orcpt[i]);
        free(j->rcpts);
        free(j->orcpt);
        free(j->notify);
        free(j->envid);
        free(j->queue_id);
        free(j->sender);
        free(j->source);
        free(j->site);
        free(j->mx);
        free(j->rres);
        free(j->prefix);
        if (j->body_fd >= 0)
                close(j->body_fd);
        free(j);
}

static void queue_remove(struct smtpc_pool *p, struct job *j)
{
        for (struct job **pp = &p->queue; *pp; pp = &(*pp)->next)
                if (*pp == j) {
                        *pp = j->next;
                        return;
                }
}

static void worker_idle(struct worker *w);

/* Take j out of the pool (worker, queue) so done() sees a consistent pool. */
static void job_detach(struct job *j)
{
        struct smtpc_pool *p = j->p;
        if (j->w) {
                struct worker *w = j->w;
                w->job = NULL;
                j->w = NULL;
                p->busy--;
                worker_idle(w);
        } else {
                queue_remove(p, j);
        }
}

static void job_complete(struct job *j, struct smtpc_result *res)
{
        struct smtpc_pool *p = j->p;
        job_detach(j);
        if (j->body_fd >= 0) { /* the worker has it (or never will): the caller's copy is the
                                * last here, so a message file it unlinks is freed where it
                                * closes that (tarryd's remover thread) */
                close(j->body_fd);
                j->body_fd = -1;
        }
        res->queue_id = j->queue_id;
        for (size_t i = 0; i < j->n_rcpts; i++)
                ((struct smtpc_rcpt_result *)res->rcpts)[i].address = j->rcpts[i];
        j->done(res, j->userdata);
        job_free(j);
        pump_schedule(p);
}

/* A temporary failure made here (f: SMTPC_FAIL_WORKER or _SHUTDOWN, tarry's
 * own): every recipient deferred with text. */
static void job_fail(struct job *j, enum smtpc_failure f, const char *text)
{
        struct smtpc_result res = {
            .status = SMTPC_ATTEMPT_TEMPFAIL,
            .failure = f,
            .origin = smtpc_failure_origin(f),
            .local = smtpc_failure_local(f),
            .phase = OUTCOME_PHASE_NONE,
            .code = 451,
            .text = text,
            .n_rcpts = j->n_rcpts,
            .rcpts = j->rres,
            .destination = j->destination,
            .source_address = j->source,
            .transcript = "",
            .total_us = now_monotonic_us() - j->t_start_us,
        };
        snprintf(res.enhanced, sizeof(res.enhanced), "4.3.0");
        for (size_t i = 0; i < j->n_rcpts; i++) {
                j->rres[i] = (struct smtpc_rcpt_result){.outcome = SMTPC_RCPT_DEFERRED,
                                                        .code = 451,
                                                        .text = text,
                                                        .origin = res.origin,
                                                        .local = res.local,
                                                        .phase = res.phase};
                snprintf(j->rres[i].enhanced, SMTPC_ENH_MAX, "4.3.0");
        }
        job_complete(j, &res);
}

/* ---- workers: process life ---- */

static void worker_close(struct worker *w)
{
        w->io = sd_event_source_disable_unref(w->io);
        w->timer = sd_event_source_disable_unref(w->timer);
        if (w->fd >= 0)
                close(w->fd);
        w->fd = -1;
        ipc_in_reset(&w->in);
        ipc_out_clear(&w->out);
}

static void worker_free(struct worker *w)
{
        worker_close(w);
        w->exit_src = sd_event_source_disable_unref(w->exit_src);
        if (w->pidfd >= 0)
                close(w->pidfd);
        free(w->in.buf);
        free(w);
}

static void worker_unlink(struct worker *w)
{
        for (struct worker **pp = &w->p->workers; *pp; pp = &(*pp)->next)
                if (*pp == w) {
                        *pp = w->next;
                        return;
                }
}

/* Kill the process now; its job (if any) fails with text at once. */
static void worker_kill(struct worker *w, enum smtpc_failure f, const char *text)
{
        struct job *j = w->job;
        if (!w->reaped)
                kill(w->pid, SIGKILL);
        worker_close(w);
        if (j)
                job_fail(j, f, text);
}

static void exit_text(int status, char *buf, size_t len)
{
        if (status < 0)
                snprintf(buf, len, "451 4.3.0 delivery worker exited");
        else if (WIFSIGNALED(status))
                snprintf(buf, len, "451 4.3.0 delivery worker died: signal %d", WTERMSIG(status));
        else
                snprintf(buf, len, "451 4.3.0 delivery worker exited with status %d",
                         WEXITSTATUS(status));
}

static int on_worker_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct worker *w = userdata;
        struct smtpc_pool *p = w->p;
        (void)s, (void)fd, (void)revents;
        int status = -1;
        pid_t r;
        do
                r = waitpid(w->pid, &status, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == 0)
                return 0; /* not exited yet (cannot happen with a pidfd) */
        if (w->job && w->fd >= 0 && ipc_recv(w->fd, &w->in) > 0)
                worker_result(w); /* it answered before it went away */
        if (r < 0)
                status = -1; /* reaped elsewhere (SIGCHLD ignored): reason unknown */
        w->reaped = true;
        worker_unlink(w);
        if (w->job) {
                char text[128];
                exit_text(status, text, sizeof(text));
                worker_kill(w, SMTPC_FAIL_WORKER, text);
        }
        worker_free(w);
        pump_schedule(p);
        return 0;
}

static int on_idle_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct worker *w = userdata;
        (void)s, (void)usec;
        worker_close(w); /* EOF: the worker QUITs its connections and exits */
        return 0;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct worker *w = userdata;
        char text[128];
        (void)s, (void)usec;
        snprintf(text, sizeof(text),
                 "451 4.4.2 delivery worker killed after %llu s (hard deadline)",
                 (unsigned long long)(w->p->deadline_us / 1000000));
        worker_kill(w, SMTPC_FAIL_WORKER, text);
        return 0;
}

static void worker_idle(struct worker *w)
{
        struct smtpc_pool *p = w->p;
        w->timer = sd_event_source_disable_unref(w->timer);
        if (w->fd < 0)
                return;
        if (w->gen != p->gen) { /* started with an older config: retire */
                worker_close(w);
                return;
        }
        w->last_used = ++p->uses;
        if (sd_event_add_time_relative(p->e, &w->timer, CLOCK_MONOTONIC, p->idle_us, 100000,
                                       on_idle_timeout, w) < 0)
                worker_close(w);
}

static int spawn_process(struct smtpc_pool *p, int sock, pid_t *pid)
{
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t at;
        sigset_t none, all;
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&at);
        posix_spawn_file_actions_adddup2(&fa, sock, SMTPC_WORKER_FD);
        posix_spawn_file_actions_addclosefrom_np(&fa, SMTPC_WORKER_FD + 1);
        posix_spawnattr_setsigmask(&at, &none);
        posix_spawnattr_setsigdefault(&at, &all);
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        int r = posix_spawn(pid, p->argv[0], &fa, &at, p->argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
        return -r;
}

static void sockbufs(int fd)
{
        int size = IPC_SOCKBUF;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

/* The worker's end must not be SMTPC_WORKER_FD itself (dup2 onto itself keeps CLOEXEC). */
static int socket_pair(int sv[2])
{
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        if (sv[1] <= SMTPC_WORKER_FD) {
                int fd = fcntl(sv[1], F_DUPFD_CLOEXEC, SMTPC_WORKER_FD + 1);
                close(sv[1]);
                sv[1] = fd;
                if (fd < 0) {
                        close(sv[0]);
                        return -errno;
                }
        }
        sockbufs(sv[0]);
        sockbufs(sv[1]);
        if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
                close(sv[0]);
                close(sv[1]);
                return -errno;
        }
        return 0;
}

static int worker_watch(struct worker *w)
{
        struct smtpc_pool *p = w->p;
        w->pidfd = (int)syscall(SYS_pidfd_open, w->pid, 0);
        if (w->pidfd < 0)
                return -errno;
        int r = sd_event_add_io(p->e, &w->exit_src, w->pidfd, EPOLLIN, on_worker_exit, w);
        if (r < 0)
                return r;
        return sd_event_add_io(p->e, &w->io, w->fd, EPOLLIN, on_worker_io, w);
}

static int worker_spawn(struct smtpc_pool *p, struct worker **out)
{
        int sv[2];
        int r = socket_pair(sv);
        if (r < 0)
                return r;
        struct worker *w = calloc(1, sizeof(*w));
        if (!w) {
                close(sv[0]);
                close(sv[1]);
                return -ENOMEM;
        }
        *w = (struct worker){.p = p, .fd = sv[0], .pidfd = -1, .gen = p->gen};
        ipc_in_init(&w->in, 0, false);
        ipc_out_clear(&w->out);
        r = spawn_process(p, sv[1], &w->pid);
        close(sv[1]);
        if (r < 0) {
                worker_free(w);
                return r;
        }
        w->next = p->workers;
        p->workers = w;
        r = worker_watch(w);
        if (r < 0) { /* cannot watch it: do not leave it running unreaped */
                kill(w->pid, SIGKILL);
                waitpid(w->pid, NULL, 0);
                worker_unlink(w);
                worker_free(w);
                return r;
        }
        *out = w;
        return 0;
}

/* ---- workers: talking ---- */

static void worker_update_events(struct worker *w)
{
        if (w->io)
                sd_event_source_set_io_events(w->io,
                                              EPOLLIN | (w->out.off < w->out.len ? EPOLLOUT : 0));
}

/* The process is going away: its job fails when it is reaped, with the reason. */
static void worker_lost(struct worker *w)
{
        if (w->job)
                kill(w->pid, SIGKILL);
        worker_close(w);
}

static void worker_send(struct worker *w)
{
        int r = ipc_send(w->fd, &w->out);
        if (r == -EPIPE) {
                worker_lost(w);
                return;
        }
        if (r < 0) {
                worker_kill(w, SMTPC_FAIL_WORKER, "451 4.3.0 delivery worker unreachable");
                return;
        }
        if (r > 0)
                ipc_out_clear(&w->out);
        worker_update_events(w);
}

static void worker_result(struct worker *w)
{
        struct job *j = w->job;
        struct ipc_result res;
        if (!j || ipc_result_decode(w->in.buf, w->in.len, j->n_rcpts, &res) < 0) {
                worker_kill(w, SMTPC_FAIL_WORKER, TEXT_INVALID);
                return;
        }
        ipc_in_reset(&w->in);
        job_complete(j, &res.res);
        ipc_result_clear(&res);
}

static int on_worker_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct worker *w = userdata;
        (void)s, (void)fd;
        if ((revents & EPOLLOUT) && w->out.len) {
                worker_send(w);
                if (w->fd < 0)
                        return 0;
        }
        int r = ipc_recv(w->fd, &w->in);
        if (r > 0) {
                worker_result(w);
        } else if (r == -EPIPE || (r == 0 && (revents & (EPOLLHUP | EPOLLERR)))) {
                worker_lost(w);
        } else if (r < 0) {
                worker_kill(w, SMTPC_FAIL_WORKER, TEXT_INVALID);
        }
        return 0;
}

static uint64_t deadline_for(const struct smtpc_pool *p, size_t n_rcpts)
{
        if (p->deadline_us)
                return p->deadline_us;
        const struct tarry_config *c = p->cfg;
        uint64_t conn = c->connect_timeout_s > 0 ? (uint64_t)c->connect_timeout_s : 30;
        uint64_t cmd = c->command_timeout_s > 0 ? (uint64_t)c->command_timeout_s : 300;
        uint64_t data = c->data_timeout_s > 0 ? (uint64_t)c->data_timeout_s : 600;
        /* two whole transfers (STARTTLS fallback) and three more hosts' connect + greeting */
        uint64_t s = 2 * (conn + data + cmd * (6 + n_rcpts)) + 3 * (conn + cmd) + DEADLINE_SLACK_S;
        return s * 1000000;
}

/* Send j to w. <0: not started (nothing changed); 0: started; 1: started but
 * the worker is gone (j has failed or fails when the worker is reaped). */
static int worker_dispatch(struct worker *w, struct job *j)
{
        struct smtpc_pool *p = w->p;
        struct smtpc_request req = {
            .queue_id = j->queue_id,
            .sender = j->sender,
            .rcpts = (const char *const *)j->rcpts,
            .n_rcpts = j->n_rcpts,
            .body_size = j->body_size,
            .prefix = j->prefix,
            .source_address = j->source,
            .dsn_ret = j->dsn_ret,
            .envid = j->envid,
            .notify = j->notify,
            .orcpt = (const char *const *)j->orcpt,
            .body_signed = j->body_signed,
            .messages_per_connection = j->messages_per_connection,
            .mx = j->mx,
            .n_mx = j->n_mx,
        };
        ipc_out_clear(&w->out);
        int r = ipc_request_encode(&req, &w->out.buf, &w->out.len);
        if (r < 0)
                return r;
        w->out.fd = j->body_fd;
        w->timer = sd_event_source_disable_unref(w->timer);
        r = sd_event_add_time_relative(p->e, &w->timer, CLOCK_MONOTONIC,
                                       deadline_for(p, j->n_rcpts), 1000000, on_deadline, w);
        if (r < 0)
                return r;
        ipc_in_reset(&w->in);
        w->in.max = ipc_result_max(j->n_rcpts);
        queue_remove(p, j);
        w->job = j;
        j->w = w;
        p->busy++; /* job_detach gives it back, also when worker_send fails it */
        snprintf(w->key, sizeof(w->key), "%s", j->key);
        snprintf(w->route, sizeof(w->route), "%s", j->destination);
        w->limited = j->site_connections > 0;
        worker_send(w);
        return w->fd < 0 ? 1 : 0;
}

/* ---- scheduling ---- */

static size_t live_workers(const struct smtpc_pool *p)
{
        size_t n = 0;
        for (const struct worker *w = p->workers; w; w = w->next)
                n += w->fd >= 0;
        return n;
}

/* Same key first (warm connection), then a new worker, then the least
 * recently used idle one. An idle worker whose last site limits its
 * connections is not given other work: it would keep that connection open
 * meanwhile; it is retired instead (-EAGAIN: try again when it is gone). */
static int worker_for_key(struct smtpc_pool *p, const char *key, struct worker **out)
{
        struct worker *lru = NULL, *lru_limited = NULL;
        for (struct worker *w = p->workers; w; w = w->next) {
                if (w->fd < 0 || w->job || w->gen != p->gen)
                        continue;
                if (strcmp(w->key, key) == 0 && !w->limited) {
                        *out = w;
                        return 0;
                }
                struct worker **best = w->limited ? &lru_limited : &lru;
                if (!*best || w->last_used < (*best)->last_used)
                        *best = w;
        }
        if (live_workers(p) < (size_t)slots_max_global(p->cfg))
                return worker_spawn(p, out);
        if (lru) {
                *out = lru;
                return 0;
        }
        if (lru_limited)
                worker_close(lru_limited);
        return -EAGAIN;
}

/* A job for a site with a connection limit (a provider's): connections open
 * to the site — busy workers (the scheduler keeps them within the limit),
 * idle ones still holding theirs, retired ones not yet gone — never exceed
 * it. An idle worker that last went to the same route (same MX hosts) is
 * reused; idle workers of the site that went elsewhere are retired first,
 * and the job waits until they have closed their connections. */
static int worker_for_site(struct smtpc_pool *p, struct job *j, struct worker **out)
{
        bool closing = false, retired = false;
        for (struct worker *w = p->workers; w; w = w->next) {
                if (strcmp(w->key, j->key) != 0 || w->job)
                        continue;
                if (w->fd < 0) {
                        closing = !w->reaped;
                        continue;
                }
                if (w->gen == p->gen && strcmp(w->route, j->destination) == 0) {
                        *out = w;
                        return 0;
                }
        }
        for (struct worker *w = p->workers; w; w = w->next)
                if (w->fd >= 0 && !w->job && strcmp(w->key, j->key) == 0) {
                        worker_close(w); /* EOF: it QUITs and exits; reaped → pump */
                        retired = true;
                }
        if (closing || retired)
                return -EAGAIN;
        return worker_for_key(p, "", out);
}

static int worker_for(struct smtpc_pool *p, struct job *j, struct worker **out)
{
        if (j->site_connections > 0)
                return worker_for_site(p, j, out);
        return worker_for_key(p, j->key, out);
}

/* Start j on a worker. As worker_dispatch: <0 not started, 0 started, 1 failed (done() called). */
static int job_start(struct smtpc_pool *p, struct job *j)
{
        struct worker *w = NULL;
        int r = worker_for(p, j, &w);
        if (r < 0)
                return r;
        return worker_dispatch(w, j);
}

/* Start every waiting job that gets a worker, in arrival order. How many
 * attempts run is the caller's decision (tarryd: the scheduler's); the pool
 * bounds only its processes (max_connections). After any done() call the
 * queue may have changed: start over from its head. */
static int on_pump(sd_event_source *s, void *userdata)
{
        struct smtpc_pool *p = userdata;
        (void)s;
        p->pump_src = sd_event_source_disable_unref(p->pump_src);
restart:
        for (struct job *j = p->queue, *next; j; j = next) {
                next = j->next;
                int r = job_start(p, j);
                if (r == 0 || r == -EAGAIN) /* -EAGAIN: a worker is on its way out */
                        continue;
                if (r < 0) {
                        char text[160];
                        snprintf(text, sizeof(text), "451 4.3.0 cannot start a delivery worker: %s",
                                 strerror(-r));
                        job_fail(j, SMTPC_FAIL_WORKER, text);
                }
                goto restart;
        }
        return 0;
}

static void pump_schedule(struct smtpc_pool *p)
{
        if (p->pump_src || !p->queue)
                return;
        sd_event_add_defer(p->e, &p->pump_src, on_pump, p);
}

/* ---- requests ---- */

static int job_copy(struct job *j, const struct smtpc_request *req)
{
        j->queue_id = strdup(req->queue_id ? req->queue_id : "");
        j->sender = strdup(req->sender ? req->sender : "");
        j->source = req->source_address ? strdup(req->source_address) : NULL;
        j->rcpts = calloc(req->n_rcpts, sizeof(char *));
        j->rres = calloc(req->n_rcpts, sizeof(*j->rres));
        if (!j->queue_id || !j->sender || (req->source_address && !j->source) || !j->rcpts ||
            !j->rres)
                return -ENOMEM;
        for (size_t i = 0; i < req->n_rcpts; i++, j->n_rcpts++)
                if (!(j->rcpts[i] = strdup(req->rcpts[i] ? req->rcpts[i] : "")))
                        return -ENOMEM;
        j->dsn_ret = req->dsn_ret;
        if (req->envid && !(j->envid = strdup(req->envid)))
                return -ENOMEM;
        if (req->notify) {
                if (!(j->notify = calloc(req->n_rcpts, sizeof(*j->notify))))
                        return -ENOMEM;
                memcpy(j->notify, req->notify, req->n_rcpts * sizeof(*j->notify));
        }
        if (req->orcpt) {
                if (!(j->orcpt = calloc(req->n_rcpts, sizeof(char *))))
                        return -ENOMEM;
                for (size_t i = 0; i < req->n_rcpts; i++)
                        if (req->orcpt[i] && !(j->orcpt[i] = strdup(req->orcpt[i])))
                                return -ENOMEM;
        }
        j->body_fd = fcntl(req->body_fd, F_DUPFD_CLOEXEC, 3);
        if (j->body_fd < 0)
                return -EBADF;
        j->body_size = req->body_size;
        if (req->prefix && *req->prefix && !(j->prefix = strdup(req->prefix)))
                return -ENOMEM;
        j->body_signed = req->body_signed;
        if (req->site && !(j->site = strdup(req->site)))
                return -ENOMEM;
        j->site_connections = req->site ? req->site_connections : 0;
        j->messages_per_connection = req->messages_per_connection;
        if (req->n_mx > 0) {
                size_t n = req->n_mx < SMTPC_MX_MAX ? req->n_mx : SMTPC_MX_MAX;
                if (!(j->mx = calloc(n, sizeof(*j->mx))))
                        return -ENOMEM;
                memcpy(j->mx, req->mx, n * sizeof(*j->mx));
                j->n_mx = n;
        }
        j->done = req->done;
        j->userdata = req->userdata;
        return 0;
}

/* The worker key, as smtpc computes its slot key (an unroutable domain gets its own key;
 * the worker reports the failure). */
static void job_key(struct job *j, const struct tarry_config *cfg)
{
        struct smtpc_route route;
        const char *dom = addr_domain(j->rcpts[0]);
        if (smtpc_route(cfg, dom ? dom : "", &route) == 0)
                snprintf(j->destination, sizeof(j->destination), "%s", route.destination);
        else
                snprintf(j->destination, sizeof(j->destination), "unroutable");
        slots_key(j->key, j->source, j->site ? j->site : j->destination);
}

int smtpc_pool_attempt_start(struct smtpc_pool *p, const struct smtpc_request *req)
{
        if (!req || !req->done || req->n_rcpts == 0 || !req->rcpts || req->n_rcpts > IPC_RCPTS_MAX)
                return -EINVAL;
        struct job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->p = p;
        j->body_fd = -1;
        int r = job_copy(j, req);
        if (r < 0) {
                job_free(j);
                return r;
        }
        job_key(j, p->cfg);
        j->t_start_us = now_monotonic_us();
        struct job **tail = &p->queue;
        while (*tail)
                tail = &(*tail)->next;
        *tail = j;
        pump_schedule(p);
        return 0;
}

/* ---- lifecycle ---- */

static void argv_free(struct smtpc_pool *p)
{
        for (size_t i = 0; p->argv && i < p->argc; i++)
                free(p->argv[i]);
        free(p->argv);
        p->argv = NULL;
        p->argc = 0;
}

/* worker_argv + "-C" + config_path. */
static int argv_build(struct smtpc_pool *p, const char *const *prefix, const char *config_path)
{
        size_t n = 0;
        while (prefix[n])
                n++;
        char **v = calloc(n + 3, sizeof(char *));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                v[i] = strdup(prefix[i]);
        v[n] = strdup("-C");
        v[n + 1] = strdup(config_path);
        for (size_t i = 0; i < n + 2; i++)
                if (!v[i]) {
                        for (size_t k = 0; k < n + 2; k++)
                                free(v[k]);
                        free(v);
                        return -ENOMEM;
                }
        argv_free(p);
        p->argv = v;
        p->argc = n + 2;
        return 0;
}

int smtpc_pool_new(sd_event *e, const struct tarry_config *cfg,
                   const struct smtpc_pool_options *opt, struct smtpc_pool **out)
{
        const char *path = opt && opt->config_path ? opt->config_path : cfg ? cfg->path : NULL;
        if (!e || !cfg || !opt || !opt->worker_argv || !opt->worker_argv[0] || !path)
                return -EINVAL;
        struct smtpc_pool *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        if (argv_build(p, opt->worker_argv, path) < 0) {
                free(p);
                return -ENOMEM;
        }
        p->e = sd_event_ref(e);
        p->cfg = cfg;
        p->idle_us = opt->idle_timeout_us ? opt->idle_timeout_us : IDLE_DEFAULT_US;
        p->deadline_us = opt->deadline_us;
        *out = p;
        return 0;
}

int smtpc_pool_set_config(struct smtpc_pool *p, const struct tarry_config *cfg,
                          const char *config_path)
{
        if (cfg && !config_path)
                config_path = cfg->path;
        if (!cfg || !config_path)
                return -EINVAL;
        size_t n = p->argc - 2; /* keep the worker command, replace the path */
        _cleanup_free_ const char **prefix = calloc(n + 1, sizeof(char *));
        if (!prefix)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                prefix[i] = p->argv[i];
        _cleanup_free_ char *path = strdup(config_path);
        if (!path)
                return -ENOMEM;
        /* argv_build frees the old strings only after copying them */
        char **old = p->argv;
        size_t old_n = p->argc;
        p->argv = NULL;
        p->argc = 0;
        int r = argv_build(p, prefix, path);
        if (r < 0) {
                p->argv = old;
                p->argc = old_n;
                return r;
        }
        for (size_t i = 0; i < old_n; i++)
                free(old[i]);
        free(old);
        p->cfg = cfg;
        p->gen++;
        for (struct worker *w = p->workers; w; w = w->next)
                if (!w->job)
                        worker_close(w); /* busy ones retire when their job ends */
        pump_schedule(p);
        return 0;
}

size_t smtpc_pool_pending(const struct smtpc_pool *p)
{
        size_t n = p->busy;
        for (const struct job *j = p->queue; j; j = j->next)
                n++;
        return n;
}

size_t smtpc_pool_workers(const struct smtpc_pool *p)
{
        size_t n = 0;
        for (const struct worker *w = p->workers; w; w = w->next)
                n++;
        return n;
}

static struct worker *busy_worker(struct smtpc_pool *p)
{
        for (struct worker *w = p->workers; w; w = w->next)
                if (w->job)
                        return w;
        return NULL;
}

void smtpc_pool_abort_all(struct smtpc_pool *p)
{
        struct worker *w;
        while ((w = busy_worker(p)))
                worker_kill(w, SMTPC_FAIL_SHUTDOWN, TEXT_ABORTED);
        while (p->queue)
                job_fail(p->queue, SMTPC_FAIL_SHUTDOWN, TEXT_ABORTED);
        p->pump_src = sd_event_source_disable_unref(p->pump_src);
}

/* Wait for every worker to exit: up to FREE_GRACE_US, then kill what is left. */
static void reap_all(struct smtpc_pool *p)
{
        int64_t end = now_monotonic_us() + FREE_GRACE_US;
        for (struct worker *w = p->workers; w; w = w->next) {
                while (!w->reaped) {
                        pid_t r = waitpid(w->pid, NULL, WNOHANG);
                        if (r == w->pid || (r < 0 && errno != EINTR)) {
                                w->reaped = true;
                        } else if (now_monotonic_us() >= end) {
                                kill(w->pid, SIGKILL);
                                while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
                                        ;
                                w->reaped = true;
                        } else {
                                usleep(2000);
                        }
                }
        }
}

void smtpc_pool_free(struct smtpc_pool *p)
{
        if (!p)
                return;
        for (struct worker *w = p->workers; w; w = w->next) {
                if (w->job)
                        kill(w->pid, SIGKILL);
                worker_close(w);
        }
        reap_all(p);
        while (p->workers) {
                struct worker *w = p->workers;
                p->workers = w->next;
                if (w->job) {
                        w->job->w = NULL;
                        job_free(w->job);
                }
                worker_free(w);
        }
        while (p->queue) {
                struct job *j = p->queue;
                p->queue = j->next;
                job_free(j);
        }
        p->busy = 0;
        sd_event_source_disable_unref(p->pump_src);
        argv_free(p);
        sd_event_unref(p->e);
        free(p);
}
