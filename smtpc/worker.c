/* smtpc/worker.c — a delivery worker process: smtpc on a loop of its own; see smtpc.h.
 *
 * Serves one request at a time from the pool's socket: decode, run the
 * attempt with the in-process engine, send the result back. curl may block
 * this process at the end of DATA or at QUIT; only this attempt waits.
 * Exits when the pool closes the socket (cached connections get their QUIT)
 * or, through PR_SET_PDEATHSIG, when the pool's process dies; one whose pool
 * died before it set that exits before it reads anything.
 */
#include "smtpc/smtpc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "smtpc/ipc.h"

struct worker_ctx {
        sd_event *e;
        struct smtpc *c;
        int fd;
        struct ipc_in in;
        bool busy;
        int status; /* exit status once the loop ends */
};

static void quit(struct worker_ctx *w, int status)
{
        w->status = status;
        sd_event_exit(w->e, status);
}

static void on_done(const struct smtpc_result *res, void *userdata)
{
        struct worker_ctx *w = userdata;
        struct ipc_out out = {.fd = -1};
        w->busy = false;
        int r = ipc_result_encode(res, &out.buf, &out.len);
        if (r == 0)
                r = ipc_send(w->fd, &out); /* blocking socket: all or an error */
        ipc_out_clear(&out);
        if (r <= 0)
                quit(w, r == -EPIPE ? 0 : EX_SOFTWARE);
}

static int serve(struct worker_ctx *w)
{
        struct ipc_request q;
        if (w->busy || w->in.fd < 0 || ipc_request_decode(w->in.buf, w->in.len, &q) < 0)
                return -EBADMSG; /* the pool never does this: stop */
        struct smtpc_request req = {
            .queue_id = q.queue_id,
            .sender = q.sender,
            .rcpts = (const char *const *)q.rcpts,
            .n_rcpts = q.n_rcpts,
            .body_fd = w->in.fd,
            .body_size = q.body_size,
            .prefix = q.prefix,
            .source_address = q.source,
            .dsn_ret = (enum smtpc_dsn_ret)q.dsn_ret,
            .envid = q.envid,
            .notify = q.notify,
            .orcpt = (const char *const *)q.orcpt,
            .body_signed = q.body_signed,
            .messages_per_connection = q.messages_per_connection,
            .mx = q.mx,
            .n_mx = q.n_mx,
            .done = on_done,
            .userdata = w,
        };
        int r = smtpc_attempt_start(w->c, &req); /* copies everything, dups the fd */
        ipc_request_clear(&q);
        if (r == 0)
                w->busy = true;
        return r;
}

static int on_request(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct worker_ctx *w = userdata;
        (void)s, (void)revents;
        int r = ipc_recv(fd, &w->in);
        if (r == 0)
                return 0;
        if (r == -EPIPE) {
                quit(w, 0);
                return 0;
        }
        if (r > 0 && serve(w) == 0) {
                ipc_in_reset(&w->in);
                return 0;
        }
        quit(w, EX_SOFTWARE);
        return 0;
}

static int run(struct worker_ctx *w, const struct tarry_config *cfg)
{
        int r = sd_event_new(&w->e);
        if (r < 0)
                return EX_OSERR;
        r = smtpc_new(w->e, cfg, &w->c);
        if (r == 0)
                r = sd_event_add_io(w->e, NULL, w->fd, EPOLLIN, on_request, w);
        if (r == 0) {
                w->status = 0;
                sd_event_loop(w->e);
        } else {
                w->status = EX_OSERR;
        }
        smtpc_free(w->c); /* QUITs cached connections */
        ipc_in_reset(&w->in);
        free(w->in.buf);
        sd_event_unref(w->e);
        return w->status;
}

/* The pool's process made the socket pair (SO_PEERCRED names it) and spawned
 * us. Asked after PR_SET_PDEATHSIG: if it died before that took effect (a
 * kill -9 between posix_spawn and here), nothing would ever kill us, and a
 * request it had already sent would still be read and delivered, while its
 * successor delivers the same message again. */
static bool pool_alive(int fd, pid_t *pool)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        *pool = 0;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0)
                return false;
        *pool = cred.pid;
        return getppid() == cred.pid;
}

int smtpc_worker_main(int fd, const char *config_path)
{
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a worker never outlives the pool's process */
        pid_t pool;
        if (!pool_alive(fd, &pool)) {
                fprintf(stderr,
                        "tarry delivery worker %d: the pool's process (pid %d) is gone: "
                        "exiting without reading a request\n",
                        (int)getpid(), (int)pool);
                return EX_UNAVAILABLE;
        }
        signal(SIGPIPE, SIG_IGN);
        struct tarry_config *cfg = NULL;
        char err[512];
        if (!config_path || cfg_load(config_path, &cfg, err, sizeof(err)) < 0) {
                fprintf(stderr, "tarry delivery worker: %s\n",
                        config_path ? err : "no config file given");
                return EX_CONFIG;
        }
        struct worker_ctx w = {.fd = fd};
        ipc_in_init(&w.in, IPC_REQUEST_MAX, true);
        int status = run(&w, cfg);
        cfg_free(cfg);
        return status;
}
