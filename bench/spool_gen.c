/* bench/spool-gen — write N deferred messages straight into a spool's active/
 * folder, in the exact on-disk format tarryd reads (a folder per message with
 * `body` and `envelope`, the envelope serialised by envelope_to_json), for
 * bench/queue-scale. Going through sendmail would cost about an hour per
 * million messages; this writes the same files without fsync (a benchmark
 * fixture, not mail).
 *
 * Every message has one recipient, deferred once with a greylisting reply
 * and due again after --defer seconds, so a tarryd started on the spool has
 * nothing to send for that long. Recipients are spread over --domains
 * destinations. Queue IDs follow the arrival times, which are spaced 37 us
 * apart ending an hour ago, so they are unique and sortable as sendmail's are.
 *
 * Usage: spool-gen --spool DIR [--messages N] [--size BYTES] [--domains D]
 *                  [--defer SECONDS]
 * Prints the number of messages and bytes written, and the time taken.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileio.h"
#include "queue/queue.h"

#define S 1000000LL

struct options {
        const char *spool;
        unsigned long messages;
        unsigned long size;
        unsigned long domains;
        long defer_s;
        unsigned long other_uid, other_every, other_count; /* some messages another user's */
};

static int parse_options(int argc, char **argv, struct options *o)
{
        static const struct option longopts[] = {
            {"spool", required_argument, NULL, 's'},
            {"messages", required_argument, NULL, 'n'},
            {"size", required_argument, NULL, 'b'},
            {"domains", required_argument, NULL, 'd'},
            {"defer", required_argument, NULL, 't'},
            {"other-uid", required_argument, NULL, 'u'},
            {"other-every", required_argument, NULL, 'e'},
            {"other-count", required_argument, NULL, 'c'},
            {NULL, 0, NULL, 0},
        };
        *o = (struct options){.messages = 1000000, .size = 4096, .domains = 1000, .defer_s = 86400};
        int c;
        while ((c = getopt_long(argc, argv, "", longopts, NULL)) >= 0) {
                switch (c) {
                case 's':
                        o->spool = optarg;
                        break;
                case 'n':
                        o->messages = strtoul(optarg, NULL, 10);
                        break;
                case 'b':
                        o->size = strtoul(optarg, NULL, 10);
                        break;
                case 'd':
                        o->domains = strtoul(optarg, NULL, 10);
                        break;
                case 't':
                        o->defer_s = strtol(optarg, NULL, 10);
                        break;
                case 'u':
                        o->other_uid = strtoul(optarg, NULL, 10);
                        break;
                case 'e':
                        o->other_every = strtoul(optarg, NULL, 10);
                        break;
                case 'c':
                        o->other_count = strtoul(optarg, NULL, 10);
                        break;
                default:
                        return -EINVAL;
                }
        }
        if (!o->spool || o->domains == 0 || o->size < 256 || o->defer_s < 0)
                return -EINVAL;
        return 0;
}

/* A body of exactly size bytes, CRLF lines, headers first. */
static char *make_body(size_t size)
{
        static const char head[] = "From: bench@example.com\r\nTo: rcpt@example.test\r\n"
                                   "Subject: queue-scale\r\n"
                                   "Message-ID: <queue-scale@example.com>\r\n\r\n";
        static const char line[] =
            "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
        char *b = malloc(size);
        if (!b)
                return NULL;
        size_t n = strlen(head);
        memcpy(b, head, n);
        while (n + strlen(line) <= size - 2) {
                memcpy(b + n, line, strlen(line));
                n += strlen(line);
        }
        memset(b + n, 'x', size - 2 - n);
        memcpy(b + size - 2, "\r\n", 2);
        return b;
}

static int write_file(int dirfd, const char *name, const void *buf, size_t len)
{
        _cleanup_close_ int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
        if (fd < 0)
                return -errno;
        return fd_write_all(fd, buf, len);
}

static int fill_envelope(struct envelope *env, const struct options *o, unsigned long i,
                         int64_t arrival_us, int64_t now_us)
{
        char address[128];
        snprintf(address, sizeof(address), "user%lu@d%lu.example.test", i, i % o->domains);
        snprintf(env->id, sizeof(env->id), "%08X%05X%03X", (unsigned)(arrival_us / S),
                 (unsigned)(arrival_us % S), (unsigned)(i & 0xfff));
        free(env->sender);
        env->sender = strdup("bench@example.com");
        /* root's, but for other_count messages (one in other_every from the
         * first) submitted by other_uid: an ordinary user's mailq */
        bool other =
            o->other_every && i % o->other_every == 0 && i / o->other_every < o->other_count;
        env->user = strdup(other ? "other" : "root");
        env->arrival_us = arrival_us;
        env->size = o->size;
        env->uid = other ? (uid_t)o->other_uid : 0;
        struct envelope_rcpt *r = envelope_add_rcpt(env, address);
        if (!env->sender || !env->user || !r)
                return -ENOMEM;
        r->state = RCPT_DEFERRED;
        r->attempts = 1;
        r->first_attempt_us = r->last_attempt_us = r->first_deferral_us = arrival_us + S;
        r->next_attempt_us = now_us + o->defer_s * S;
        r->reply_code = 451;
        r->dsn_status = strdup("4.7.1");
        r->last_reply = strdup("451 4.7.1 Greylisted, please try again later");
        r->reply_class = strdup("greylist");
        r->relay = strdup("mx.example.net[192.0.2.25]:25");
        if (!r->dsn_status || !r->last_reply || !r->reply_class || !r->relay)
                return -ENOMEM;
        return 0;
}

static int write_message(int active_fd, const struct envelope *env, const char *body, size_t size)
{
        if (mkdirat(active_fd, env->id, 0770) < 0)
                return -errno;
        _cleanup_close_ int mfd = openat(active_fd, env->id, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mfd < 0)
                return -errno;
        _cleanup_(json_decrefp) json_t *j = envelope_to_json(env);
        if (!j)
                return -ENOMEM;
        _cleanup_free_ char *text = json_dumps(j, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        int r = write_file(mfd, "body", body, size);
        if (r < 0)
                return r;
        return write_file(mfd, "envelope", text, strlen(text));
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
        struct options o;
        if (parse_options(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: spool-gen --spool DIR [--messages N] [--size BYTES] "
                                "[--domains D] [--defer SECONDS]\n"
                                "       [--other-uid UID --other-every N --other-count K]\n");
                return 64;
        }
        struct queue *q = NULL;
        int r = queue_open(o.spool, QUEUE_OPEN_CREATE, &q);
        if (r < 0) {
                fprintf(stderr, "spool-gen: %s: %s\n", o.spool, strerror(-r));
                return 73;
        }
        _cleanup_free_ char *body = make_body(o.size);
        if (!body)
                return 71;
        int active_fd = queue_dir_fd(q, QUEUE_ACTIVE);
        int64_t now_us = now_realtime_us();
        int64_t first_us = now_us - 3600 * S - (int64_t)o.messages * 37;
        double t0 = now_s();
        for (unsigned long i = 0; i < o.messages && r >= 0; i++) {
                struct envelope *env = envelope_new();
                r = env ? fill_envelope(env, &o, i, first_us + (int64_t)i * 37, now_us) : -ENOMEM;
                if (r >= 0)
                        r = write_message(active_fd, env, body, o.size);
                if (r < 0)
                        fprintf(stderr, "spool-gen: message %lu (%s): %s\n", i, env ? env->id : "",
                                strerror(-r));
                envelope_free(env);
        }
        if (r >= 0)
                r = dir_fsync(active_fd);
        queue_close(q);
        if (r < 0)
                return 74;
        double t = now_s() - t0;
        printf("wrote %lu messages of %lu bytes into %s/active in %.1f s (%.0f messages/s)\n",
               o.messages, o.size, o.spool, t, (double)o.messages / t);
        return 0;
}
