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

#define TMP_GRACE_S  3600 /* a .tmp- file this old lost its sendmail before it was locked */
#define COPY_BUF     65536
#define LINE_MAX_    998        /* RFC 5322 2.1.1; sendmail folds longer lines (cli/submit.c) */
#define ID_SLACK_US  60000000LL /* clock steps between sendmail and tarryd */
#define RESUME_MAX   128        /* bytes of a state/maildrop-NAME file */
#define RESUME_MAGIC "tarry-maildrop-resume 1"

static void envelope_free_p(struct envelope **env)
{
        envelope_free(*env);
}

struct take {
        struct queue *q;
        int fd;
        uint64_t size;
        uid_t uid;
        const struct maildrop_take_opts *o;
        struct maildrop_result *res;
        uint64_t ino;
        int64_t born_us; /* the file's creation time (statx), 0 when unknown */
        uint64_t start;  /* the first record not yet queued */
        uint64_t done;   /* end of the last record queued */
        uint64_t count;  /* records before done */
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
        memcpy(env->id, in->id, sizeof(env->id)); /* kept only if plausible (own_id) */
        env->arrival_us = in->arrival_us;
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

/* ---- the body, normalised as sendmail normalises its standard input ---- */

struct norm {
        struct queue_draft *d;
        size_t col;  /* bytes on the current output line */
        bool cr;     /* a CR was read and not yet written: CRLF, or data? */
        size_t used; /* in out */
        char out[2 * COPY_BUF + 8];
};

static int norm_flush(struct norm *n)
{
        int r = n->used ? queue_draft_write(n->d, n->out, n->used) : 0;
        n->used = 0;
        return r;
}

static void norm_text(struct norm *n, char c)
{
        if (n->col == LINE_MAX_) { /* fold as sendmail does: CRLF SPACE */
                memcpy(n->out + n->used, "\r\n ", 3);
                n->used += 3;
                n->col = 1;
        }
        n->out[n->used++] = c;
        n->col++;
}

static void norm_eol(struct norm *n)
{
        memcpy(n->out + n->used, "\r\n", 2);
        n->used += 2;
        n->col = 0;
}

/* LF and CRLF end a line (written CRLF); a bare CR is data. */
static int norm_feed(struct norm *n, const char *p, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                char c = p[i];
                if (n->cr) {
                        n->cr = false;
                        if (c == '\n') {
                                norm_eol(n);
                                continue;
                        }
                        norm_text(n, '\r');
                }
                if (c == '\r')
                        n->cr = true;
                else if (c == '\n')
                        norm_eol(n);
                else
                        norm_text(n, c);
                if (n->used >= sizeof(n->out) - 8) {
                        int r = norm_flush(n);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* End of the body: a trailing CR is data, and the last line gets its CRLF. */
static int norm_end(struct norm *n)
{
        if (n->cr)
                norm_text(n, '\r');
        if (n->col > 0)
                norm_eol(n);
        return norm_flush(n);
}

static int copy_body(struct take *t, struct queue_draft *d, uint64_t off, uint64_t len)
{
        _cleanup_free_ char *buf = malloc(COPY_BUF);
        _cleanup_free_ struct norm *n = malloc(sizeof(*n));
        if (!buf || !n)
                return -ENOMEM;
        *n = (struct norm){.d = d};
        while (len > 0) {
                size_t want = len < COPY_BUF ? (size_t)len : COPY_BUF;
                ssize_t got = pread(t->fd, buf, want, (off_t)off);
                if (got < 0)
                        return -errno;
                if (got == 0)
                        return refuse(t, -EBADMSG, "the file changed while it was read");
                int r = norm_feed(n, buf, (size_t)got);
                if (r < 0)
                        return r;
                off += (uint64_t)got;
                len -= (uint64_t)got;
        }
        return norm_end(n);
}

/* ---- the queue ID its sendmail gave the record ---- */

/* Is the record's ID one tarry may keep? Well formed, made at its arrival
 * time, and that time between the drop file's creation and now: a user
 * cannot take the ID of an older message, nor one from the future. */
static bool id_plausible(const struct take *t, const struct envelope *env)
{
        if (!queue_id_valid(env->id) || queue_id_time_us(env->id) != env->arrival_us)
                return false;
        if (env->arrival_us > now_realtime_us() + ID_SLACK_US)
                return false;
        return t->born_us == 0 || env->arrival_us >= t->born_us - ID_SLACK_US;
}

/* 1 when the message called env->id is this record, queued by an earlier
 * take that a crash cut short (same owner, arrival and sender); 0 when no
 * message has that ID; -EEXIST when another message has it. */
static int queued_before(struct take *t, const struct envelope *env)
{
        static const enum queue_dir dirs[] = {QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_HOLD};
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                _cleanup_(envelope_free_p) struct envelope *e = NULL;
                int r = queue_load(t->q, dirs[i], env->id, &e, NULL);
                if (r == -ENOENT)
                        continue;
                if (r < 0)
                        return r == -EBADMSG ? -EEXIST : r;
                return e->uid == env->uid && e->arrival_us == env->arrival_us &&
                               strcmp(e->sender, env->sender) == 0
                           ? 1
                           : -EEXIST;
        }
        return queue_id_in_use(t->q, env->id) ? -EEXIST : 0;
}

static void note_queued(struct take *t, const char *id)
{
        int i = t->res->queued++;
        if (i < (int)ELEMENTSOF(t->res->ids))
                memcpy(t->res->ids[i], id, QUEUE_ID_LEN + 1);
}

static int queue_record(struct take *t, uint64_t body_off, uint64_t body_len, struct envelope *env)
{
        bool own_id = id_plausible(t, env);
        if (own_id) {
                int r = queued_before(t, env);
                if (r == 1) {
                        t->res->already++;
                        return 0;
                }
                if (r < 0 && r != -EEXIST)
                        return r;
                own_id = r == 0;
        }
        struct queue_draft *d = NULL;
        int r = queue_draft_begin(t->q, &d);
        if (r < 0)
                return r;
        if ((r = copy_body(t, d, body_off, body_len)) < 0) {
                queue_draft_abort(d);
                return r;
        }
        r = own_id ? queue_draft_commit_as(d, env) : queue_draft_commit(d, env);
        if (r < 0)
                return r; /* -EEXIST: taken a moment ago; the retry gives a fresh ID */
        note_queued(t, env->id);
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
        if (body_len > t->o->body_max)
                return refuse(t, -EBADMSG, "a message is larger than message_size_limit");
        if (env_len == 0 || env_len > ENVELOPE_MAX_BYTES)
                return refuse(t, -EBADMSG, "a record's envelope is empty or larger than 16 MiB");
        if (body_len > left - MAILDROP_HEADER_LEN ||
            env_len > left - MAILDROP_HEADER_LEN - body_len)
                return refuse(t, -EBADMSG, "a record is longer than the file");
        if (t->o->max_messages > 0 && t->count >= t->o->max_messages)
                return refuse(t, -EBADMSG,
                              "more messages in one drop file than maildrop_message_limit");
        uint64_t body_off = off + MAILDROP_HEADER_LEN;
        _cleanup_(envelope_free_p) struct envelope *env = NULL;
        int r = read_envelope(t, body_off + body_len, env_len, &env);
        if (r < 0)
                return r;
        const char *why = "refused";
        if (t->o->check && (r = t->o->check(env, t->o->userdata, &why)) < 0)
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
        struct statx sx;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &sx) == 0 && (sx.stx_mask & STATX_BTIME))
                t->born_us = (int64_t)sx.stx_btime.tv_sec * 1000000 + sx.stx_btime.tv_nsec / 1000;
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

/* ---- the resume point, state/maildrop-NAME ---- */

static void resume_name(const char *name, char out[MAILDROP_NAME_LEN + 16])
{
        snprintf(out, MAILDROP_NAME_LEN + 16, "maildrop-%s", name);
}

/* The persisted point for this file (same inode), else {0}. Written only by
 * tarryd, but read as carefully as anything in the spool. */
static struct maildrop_resume resume_load(struct queue *q, const char *name, uint64_t ino)
{
        char sname[MAILDROP_NAME_LEN + 16];
        resume_name(name, sname);
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        struct maildrop_resume at = {0, 0, 0};
        unsigned long long i, o, c;
        if (queue_state_read(q, sname, RESUME_MAX, &text, &len) == 0 &&
            sscanf(text, RESUME_MAGIC " %llu %llu %llu", &i, &o, &c) == 3 && i == ino)
                at = (struct maildrop_resume){i, o, c};
        return at;
}

static int resume_save(struct queue *q, const char *name, const struct maildrop_resume *at)
{
        char sname[MAILDROP_NAME_LEN + 16], text[RESUME_MAX];
        resume_name(name, sname);
        int n = snprintf(text, sizeof(text), RESUME_MAGIC " %llu %llu %llu\n",
                         (unsigned long long)at->ino, (unsigned long long)at->offset,
                         (unsigned long long)at->count);
        return queue_state_write(q, sname, text, (size_t)n);
}

static void resume_forget(struct queue *q, const char *name)
{
        char sname[MAILDROP_NAME_LEN + 16];
        resume_name(name, sname);
        queue_state_remove(q, sname); /* -ENOENT mostly; a stale one is ignored (inode) */
}

/* Records from t->start: all of them, or o->batch. 0 at the end of the file,
 * -EINPROGRESS after a full batch, else an error. */
static int take_records(struct take *t)
{
        uint64_t off = t->start <= t->size ? t->start : 0;
        unsigned n = 0;
        int r;
        while ((r = take_record(t, off, &off)) > 0) {
                t->done = off;
                t->count++;
                if (t->o->batch > 0 && ++n == t->o->batch && off < t->size)
                        return -EINPROGRESS;
        }
        return r;
}

int queue_maildrop_take(struct queue *q, const char *name, uint64_t body_max,
                        maildrop_check_fn check, void *userdata, struct maildrop_result *res)
{
        struct maildrop_resume from = {0, 0, 0};
        return queue_maildrop_take_resume(q, name, &from, body_max, check, userdata, res);
}

int queue_maildrop_take_resume(struct queue *q, const char *name, struct maildrop_resume *resume,
                               uint64_t body_max, maildrop_check_fn check, void *userdata,
                               struct maildrop_result *res)
{
        struct maildrop_take_opts o = {.body_max = body_max, .check = check, .userdata = userdata};
        return queue_maildrop_take_step(q, name, resume, &o, res);
}

/* The file is done with (consumed or quarantined): its resume point too. */
static int finish(struct take *t, int mfd, const char *name, int r)
{
        if (r == 0 && unlinkat(mfd, name, 0) < 0)
                r = -errno;
        if (r == 0)
                r = dir_fsync(mfd);
        if (r == -EBADMSG || r == -EPERM)
                t->res->quarantine_error = quarantine(t->q, mfd, name);
        if (r == 0 || ((r == -EBADMSG || r == -EPERM) && !t->res->quarantine_error))
                resume_forget(t->q, name); /* after the unlink: a crash between re-takes nothing */
        return r;
}

int queue_maildrop_take_step(struct queue *q, const char *name, struct maildrop_resume *resume,
                             const struct maildrop_take_opts *o, struct maildrop_result *res)
{
        struct maildrop_resume from = *resume;
        *resume = (struct maildrop_resume){0, 0, 0};
        int mfd = queue_maildrop_fd(q);
        if (mfd < 0)
                return mfd;
        *res = (struct maildrop_result){0};
        if (strncmp(name, MAILDROP_TMP_PREFIX, strlen(MAILDROP_TMP_PREFIX)) == 0)
                return take_tmp(mfd, name);
        struct take t = {.q = q, .fd = -1, .o = o, .res = res};
        int r = name_is_drop(name) ? open_drop(&t, mfd, name)
                                   : refuse(&t, -EBADMSG, "not a drop file name");
        if (r == 0) {
                struct maildrop_resume saved = resume_load(q, name, t.ino);
                if (from.ino != t.ino || saved.offset > from.offset)
                        from = saved;
                if (from.ino == t.ino && from.offset > 0) {
                        t.start = t.done = from.offset;
                        t.count = from.count;
                }
                r = take_records(&t);
        }
        if (r < 0 && r != -EBADMSG && r != -EPERM && r != -EBUSY && r != -ENOENT) {
                /* part taken (a batch, or a full disk): say where it stopped, durably if we can */
                if (t.done > t.start || (t.ino != 0 && t.done > 0)) {
                        *resume = (struct maildrop_resume){t.ino, t.done, t.count};
                        int w = t.done > t.start ? resume_save(q, name, resume) : 0;
                        if (w < 0 && r == -EINPROGRESS)
                                r = w; /* not durable: the caller's copy must be kept */
                } else if (t.ino == 0) {
                        *resume = from; /* not even opened: nothing changed */
                }
        } else if (r == -EBUSY) {
                *resume = from;
        } else if (r == -ENOENT && name_is_drop(name)) {
                resume_forget(q, name); /* a crash came between unlink and forget */
        }
        if (r == 0 || r == -EBADMSG || r == -EPERM)
                r = finish(&t, mfd, name, r);
        if (t.fd >= 0)
                close(t.fd);
        return r;
}
