/* queue/maildrop.c — tarryd's side of the maildrop: a drop file, read as
 * untrusted input, becomes messages in incoming/. The format and the
 * writer's side are described in queue.h (queue_open_maildrop). */
#include "common/address.h"
#include "common/cleanup.h"
#include "common/fileio.h"
#include "queue/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_GRACE_S 3600 /* a .tmp- file this old lost its sendmail before it was locked */
#define COPY_BUF    65536

static void envelope_free_p(struct envelope **env)
{
        envelope_free(*env);
}

struct take {
        struct queue *q;
        int fd;
        uint64_t size;
        uid_t uid;
        uint64_t body_max;
        maildrop_check_fn check;
        void *userdata;
        struct maildrop_result *res;
        uint64_t ino;
        uint64_t start; /* the first record not yet queued */
        uint64_t done;  /* end of the last record queued */
};

static int refuse(struct take *t, int r, const char *why)
{
        t->res->why = why;
        return r;
}

static bool digits(const char *p, size_t n)
{
        return strspn(p, "0123456789") >= n;
}

/* "tarry-drop 1 " 20 digits " " 10 digits "\n", exactly. */
static int parse_header(const char *h, uint64_t *body_len, size_t *env_len)
{
        static const size_t magic = sizeof(MAILDROP_MAGIC) - 1;
        if (memcmp(h, MAILDROP_MAGIC " ", magic + 1) != 0 || !digits(h + magic + 1, 20) ||
            h[magic + 21] != ' ' || !digits(h + magic + 22, 10) || h[magic + 32] != '\n')
                return -EBADMSG;
        *body_len = strtoull(h + magic + 1, NULL, 10);
        *env_len = (size_t)strtoull(h + magic + 22, NULL, 10);
        return 0;
}

static bool name_is_drop(const char *name)
{
        return strlen(name) == MAILDROP_NAME_LEN &&
               strspn(name, "0123456789abcdef") == MAILDROP_NAME_LEN;
}

/* The submitter's fields only; everything tarryd keeps about delivery starts fresh. */
static int fresh_envelope(struct take *t, const struct envelope *in, struct envelope **out)
{
        _cleanup_(envelope_free_p) struct envelope *env = envelope_new();
        if (!env)
                return -ENOMEM;
        const char *why = NULL;
        if (in->sender[0] && addr_check(in->sender, &why) < 0)
                return refuse(t, -EBADMSG, "the sender address is not valid");
        env->uid = t->uid;
        free(env->sender);
        if (!(env->sender = strdup(in->sender)))
                return -ENOMEM;
        if (in->full_name && !(env->full_name = strdup(in->full_name)))
                return -ENOMEM;
        if (in->envid && !(env->envid = strdup(in->envid)))
                return -ENOMEM;
        env->ret = in->ret;
        for (size_t i = 0; i < in->n_rcpt; i++) {
                const struct envelope_rcpt *a = &in->rcpt[i];
                if (addr_check(a->address, &why) < 0)
                        return refuse(t, -EBADMSG, "a recipient address is not valid");
                struct envelope_rcpt *b = envelope_add_rcpt(env, a->address);
                if (!b || (a->orcpt && !(b->orcpt = strdup(a->orcpt))))
                        return -ENOMEM;
                b->notify = a->notify;
        }
        *out = TAKE_PTR(env);
        return 0;
}

static int read_envelope(struct take *t, uint64_t off, size_t len, struct envelope **out)
{
        _cleanup_free_ char *text = malloc(len + 1);
        if (!text)
                return -ENOMEM;
        ssize_t n = pread(t->fd, text, len, (off_t)off);
        if (n < 0)
                return -errno;
        if ((size_t)n != len)
                return refuse(t, -EBADMSG, "the file changed while it was read");
        text[len] = '\0';
        _cleanup_(envelope_free_p) struct envelope *in = NULL;
        const char *why = NULL;
        int r = envelope_from_json(text, len, &in, &why);
        if (r < 0)
                return r == -EBADMSG ? refuse(t, r, why) : r;
        return fresh_envelope(t, in, out);
}

static int copy_body(struct take *t, struct queue_draft *d, uint64_t off, uint64_t len)
{
        _cleanup_free_ char *buf = malloc(COPY_BUF);
        if (!buf)
                return -ENOMEM;
        while (len > 0) {
                size_t want = len < COPY_BUF ? (size_t)len : COPY_BUF;
                ssize_t n = pread(t->fd, buf, want, (off_t)off);
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return refuse(t, -EBADMSG, "the file changed while it was read");
                int r = queue_draft_write(d, buf, (size_t)n);
                if (r < 0)
                        return r;
                off += (uint64_t)n;
                len -= (uint64_t)n;
        }
        return 0;
}

static int queue_record(struct take *t, uint64_t body_off, uint64_t body_len, struct envelope *env)
{
        struct queue_draft *d = NULL;
        int r = queue_draft_begin(t->q, &d);
        if (r < 0)
                return r;
        if ((r = copy_body(t, d, body_off, body_len)) < 0) {
                queue_draft_abort(d);
                return r;
        }
        if ((r = queue_draft_commit(d, env)) < 0)
                return r;
        int i = t->res->queued++;
        if (i < (int)ELEMENTSOF(t->res->ids))
                memcpy(t->res->ids[i], env->id, QUEUE_ID_LEN + 1);
        return 0;
}

/* The record at off: 1 queued (*next after it), 0 no more records, <0 error. */
static int take_record(struct take *t, uint64_t off, uint64_t *next)
{
        char hdr[MAILDROP_HEADER_LEN];
        uint64_t left = t->size - off;
        if (left == 0)
                return 0;
        size_t want = left < MAILDROP_HEADER_LEN ? (size_t)left : MAILDROP_HEADER_LEN;
        ssize_t n = pread(t->fd, hdr, want, (off_t)off);
        if (n < 0)
                return -errno;
        if ((size_t)n != want)
                return refuse(t, -EBADMSG, "the file changed while it was read");
        size_t magic = sizeof(MAILDROP_OPEN_MAGIC) - 1;
        if (memcmp(hdr, MAILDROP_OPEN_MAGIC, want < magic ? want : magic) == 0) {
                t->res->unfinished = true; /* its writer died before committing it */
                return 0;
        }
        uint64_t body_len;
        size_t env_len;
        if (want != MAILDROP_HEADER_LEN || parse_header(hdr, &body_len, &env_len) < 0)
                return refuse(t, -EBADMSG, "a record header is malformed");
        if (body_len > t->body_max)
                return refuse(t, -EBADMSG, "a message is larger than message_size_limit");
        if (env_len == 0 || env_len > ENVELOPE_MAX_BYTES)
                return refuse(t, -EBADMSG, "a record's envelope is empty or larger than 16 MiB");
        if (body_len > left - MAILDROP_HEADER_LEN ||
            env_len > left - MAILDROP_HEADER_LEN - body_len)
                return refuse(t, -EBADMSG, "a record is longer than the file");
        uint64_t body_off = off + MAILDROP_HEADER_LEN;
        _cleanup_(envelope_free_p) struct envelope *env = NULL;
        int r = read_envelope(t, body_off + body_len, env_len, &env);
        if (r < 0)
                return r;
        const char *why = "refused";
        if (t->check && (r = t->check(env, t->userdata, &why)) < 0)
                return r == -ENOMEM ? r : refuse(t, r == -EPERM ? r : -EBADMSG, why);
        if ((r = queue_record(t, body_off, body_len, env)) < 0)
                return r;
        *next = body_off + body_len + env_len;
        return 1;
}

/* Open name as a drop file tarry may read: regular, one link, no symlink; locked. */
static int open_drop(struct take *t, int mfd, const char *name)
{
        struct stat a, b;
        if (fstatat(mfd, name, &a, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISREG(a.st_mode))
                return refuse(t, -EBADMSG, "not a regular file");
        int fd = openat(mfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
                return errno == EACCES ? refuse(t, -EBADMSG, "not readable by tarryd") : -errno;
        t->fd = fd;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : -errno;
        /* after the lock: the size is final, and the name must still be this file */
        if (fstat(fd, &a) < 0 || fstatat(mfd, name, &b, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (a.st_ino != b.st_ino || a.st_dev != b.st_dev)
                return -EBUSY;
        if (!S_ISREG(a.st_mode))
                return refuse(t, -EBADMSG, "not a regular file");
        if (a.st_nlink != 1)
                return refuse(t, -EBADMSG, "the file has other hard links");
        t->uid = a.st_uid;
        t->size = (uint64_t)a.st_size;
        t->ino = (uint64_t)a.st_ino;
        return 0;
}

static int quarantine(struct queue *q, int mfd, const char *name)
{
        int cfd = queue_dir_fd(q, QUEUE_CORRUPT);
        char to[300];
        snprintf(to, sizeof(to), "maildrop-%.255s", name);
        if (renameat2(mfd, name, cfd, to, RENAME_NOREPLACE) < 0)
                return -errno;
        int r = dir_fsync(cfd);
        return r < 0 ? r : dir_fsync(mfd);
}

/* A .tmp- file: removed once old enough to have lost its writer. */
static int take_tmp(int mfd, const char *name)
{
        struct stat st;
        if (fstatat(mfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (st.st_mtime + TMP_GRACE_S > now_realtime_us() / 1000000)
                return -EBUSY;
        if (unlinkat(mfd, name, 0) < 0)
                return -errno;
        return -ENOENT;
}

static int take_records(struct take *t)
{
        uint64_t off = t->start <= t->size ? t->start : 0;
        int r;
        while ((r = take_record(t, off, &off)) > 0)
                t->done = off;
        return r;
}

int queue_maildrop_take(struct queue *q, const char *name, uint64_t body_max,
                        maildrop_check_fn check, void *userdata, struct maildrop_result *res)
{
        struct maildrop_resume from = {0, 0};
        return queue_maildrop_take_resume(q, name, &from, body_max, check, userdata, res);
}

int queue_maildrop_take_resume(struct queue *q, const char *name, struct maildrop_resume *resume,
                               uint64_t body_max, maildrop_check_fn check, void *userdata,
                               struct maildrop_result *res)
{
        struct maildrop_resume from = *resume;
        *resume = (struct maildrop_resume){0, 0};
        int mfd = queue_maildrop_fd(q);
        if (mfd < 0)
                return mfd;
        *res = (struct maildrop_result){0};
        if (strncmp(name, MAILDROP_TMP_PREFIX, strlen(MAILDROP_TMP_PREFIX)) == 0)
                return take_tmp(mfd, name);
        struct take t = {.q = q,
                         .fd = -1,
                         .body_max = body_max,
                         .check = check,
                         .userdata = userdata,
                         .res = res};
        int r = name_is_drop(name) ? open_drop(&t, mfd, name)
                                   : refuse(&t, -EBADMSG, "not a drop file name");
        if (r == 0 && from.offset > 0 && from.ino == t.ino)
                t.start = t.done = from.offset;
        if (r == 0)
                r = take_records(&t);
        if (r == 0 && unlinkat(mfd, name, 0) < 0)
                r = -errno;
        if (r < 0 && r != -EBADMSG && r != -EPERM) {
                if (t.done > 0)
                        *resume = (struct maildrop_resume){t.ino, t.done};
                else if (t.ino == 0)
                        *resume = from; /* not even opened: nothing changed */
        }
        if (r == 0)
                r = dir_fsync(mfd);
        if (r == -EBADMSG || r == -EPERM)
                res->quarantine_error = quarantine(q, mfd, name);
        if (t.fd >= 0)
                close(t.fd);
        return r;
}
