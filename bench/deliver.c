/* bench/deliver.c — messages per second from smtpc to a local SMTP sink.
 *
 * usage: bench-deliver --port N [--host 127.0.0.1] [--messages 2000]
 *                      [--concurrency 10] [--size 4096] [--source IP] [--pool]
 * Keeps `concurrency` attempts in flight on one sd-event loop, each
 * delivering one message of `size` bytes to one recipient, until `messages`
 * are done; prints one line with the rate. Run by bench/deliver.
 * Default: the in-process engine (smtpc_*). --pool: the worker pool
 * (smtpc_pool_*), with this program as the worker, exactly as tarryd runs
 * it: `bench-deliver --smtp-worker -C FILE` (socket on fd 3).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/fileio.h"
#include "config/config.h"
#include "smtpc/smtpc.h"

struct run {
        sd_event *e;
        struct smtpc *c;
        struct smtpc_pool *pool;
        int body_fd;
        uint64_t size;
        int total, started, finished, failed, concurrency;
        const char *source;
};

static int start_one(struct run *r);

static void on_done(const struct smtpc_result *res, void *userdata)
{
        struct run *r = userdata;
        r->finished++;
        if (res->status != SMTPC_ATTEMPT_DONE || res->rcpts[0].outcome != SMTPC_RCPT_DELIVERED) {
                if (r->failed++ < 3)
                        fprintf(stderr, "bench-deliver: failure: %s\n",
                                res->text ? res->text : res->rcpts[0].text);
        }
        if (r->started < r->total)
                start_one(r);
        else if (r->finished == r->total)
                sd_event_exit(r->e, 0);
}

static int start_one(struct run *r)
{
        static const char *const rcpt[] = {"sink@bench.test"};
        struct smtpc_request req = {
            .queue_id = "BENCH",
            .sender = "bench@example.org",
            .rcpts = rcpt,
            .n_rcpts = 1,
            .body_fd = r->body_fd,
            .body_size = r->size,
            .source_address = r->source,
            .done = on_done,
            .userdata = r,
        };
        r->started++;
        return r->pool ? smtpc_pool_attempt_start(r->pool, &req) : smtpc_attempt_start(r->c, &req);
}

static int make_body(uint64_t size)
{
        int fd = memfd_create("bench-body", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        char line[80];
        uint64_t n = 0;
        const char *hdr =
            "From: bench@example.org\r\nTo: sink@bench.test\r\nSubject: bench\r\n\r\n";
        if (fd_write_all(fd, hdr, strlen(hdr)) < 0)
                return -EIO;
        n = strlen(hdr);
        while (n < size) {
                int k = snprintf(line, sizeof(line), "%076llu\r\n", (unsigned long long)n);
                if (fd_write_all(fd, line, (size_t)k) < 0)
                        return -EIO;
                n += (uint64_t)k;
        }
        return fd;
}

/* The config, in a file the workers can read too. */
static int write_config(const char *host, unsigned port, int concurrency, char *path)
{
        char ini[512];
        int n = snprintf(ini, sizeof(ini),
                         "[main]\nspool_dir = /nonexistent\nmyhostname = bench.local\n"
                         "[smtp]\ntls = none\nmax_connections = %d\n"
                         "destination_concurrency = %d\n"
                         "[transport]\n* = [%s]:%u tls=none\n",
                         concurrency, concurrency, host, port);
        snprintf(path, PATH_MAX, "/tmp/bench-deliver-XXXXXX");
        int fd = mkstemp(path);
        if (fd < 0)
                return -errno;
        int r = fd_write_all(fd, ini, (size_t)n);
        close(fd);
        return r;
}

static int start_engine(struct run *r, const struct tarry_config *cfg, bool pool,
                        const char *cfg_path)
{
        if (!pool)
                return smtpc_new(r->e, cfg, &r->c);
        static char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
                return -errno;
        self[n] = '\0';
        const char *argv[] = {self, "--smtp-worker", NULL};
        struct smtpc_pool_options opt = {.worker_argv = argv, .config_path = cfg_path};
        return smtpc_pool_new(r->e, cfg, &opt, &r->pool);
}

int main(int argc, char **argv)
{
        if (argc == 4 && strcmp(argv[1], "--smtp-worker") == 0 && strcmp(argv[2], "-C") == 0)
                return smtpc_worker_main(SMTPC_WORKER_FD, argv[3]);
        static const struct option opts[] = {
            {"host", required_argument, NULL, 'H'},
            {"port", required_argument, NULL, 'p'},
            {"messages", required_argument, NULL, 'n'},
            {"concurrency", required_argument, NULL, 'c'},
            {"size", required_argument, NULL, 's'},
            {"source", required_argument, NULL, 'S'},
            {"pool", no_argument, NULL, 'P'},
            {0},
        };
        const char *host = "127.0.0.1";
        unsigned port = 0;
        struct run r = {.total = 2000, .concurrency = 10, .size = 4096};
        bool pool = false;
        int o;
        while ((o = getopt_long(argc, argv, "H:p:n:c:s:S:P", opts, NULL)) != -1) {
                switch (o) {
                case 'H':
                        host = optarg;
                        break;
                case 'p':
                        port = (unsigned)atoi(optarg);
                        break;
                case 'n':
                        r.total = atoi(optarg);
                        break;
                case 'c':
                        r.concurrency = atoi(optarg);
                        break;
                case 's':
                        r.size = strtoull(optarg, NULL, 10);
                        break;
                case 'S':
                        r.source = optarg;
                        break;
                case 'P':
                        pool = true;
                        break;
                default:
                        fprintf(stderr, "usage: see bench/deliver.c\n");
                        return 64;
                }
        }
        if (!port || r.concurrency < 1 || r.total < 1) {
                fprintf(stderr, "bench-deliver: --port is required\n");
                return 64;
        }
        char path[PATH_MAX], err[256];
        struct tarry_config *cfg;
        if (write_config(host, port, r.concurrency, path) < 0 ||
            cfg_load(path, &cfg, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench-deliver: cannot write or read the config %s\n", path);
                return 78;
        }
        r.body_fd = make_body(r.size);
        if (r.body_fd < 0 || sd_event_new(&r.e) < 0 || start_engine(&r, cfg, pool, path) < 0)
                return 71;
        off_t end = lseek(r.body_fd, 0, SEEK_END);
        r.size = (uint64_t)end;
        int64_t t0 = now_monotonic_us();
        for (int i = 0; i < r.concurrency && r.started < r.total; i++)
                start_one(&r);
        sd_event_loop(r.e);
        double secs = (double)(now_monotonic_us() - t0) / 1e6;
        printf("%s concurrency %d: %d messages of %llu bytes in %.2f s = %.0f msg/s (%d failed)\n",
               pool ? "pool      " : "in-process", r.concurrency, r.total,
               (unsigned long long)r.size, secs, r.total / secs, r.failed);
        if (r.c)
                smtpc_free(r.c);
        smtpc_pool_free(r.pool);
        unlink(path);
        sd_event_unref(r.e);
        cfg_free(cfg);
        close(r.body_fd);
        return r.failed ? 1 : 0;
}
