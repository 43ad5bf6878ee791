/* queue/queue.c — the spool on disk: IDs, drafts, commit, recovery; see queue.h.
 *
 * Commit protocol for a submission (one message file, msgfile.h): the draft
 * is an unnamed file made with O_TMPFILE in incoming/ itself; write the
 * body, the envelope and the trailer, fsync the file, then linkat it to
 * incoming/ID and fsync incoming/: two fsyncs, one directory update. linkat
 * never replaces a name: EEXIST is the ID collision check (a fresh ID is
 * made again and the tail rewritten). Only the link makes the message
 * visible, and only the last fsync makes it durable; a crash before the link
 * leaves no name anywhere (the kernel frees the unnamed inode). Where the
 * filesystem refuses O_TMPFILE the draft is the message file tmp/NAME
 * (created as tmp/.new-NAME, locked, renamed), renameat2(RENAME_NOREPLACE)d
 * to incoming/ID. queue_enqueue into another folder than incoming/ writes
 * the folder form (tmp/NAME/ with body and envelope, each fsynced, the
 * folder fsynced, renamed, the target fsynced).
 *
 * Pickup (queue_move from incoming/ to active/ or hold/) is one rename, as
 * for a folder: active/ID is then the message file, read through its
 * trailer, until its first update (file_to_folder) makes it a folder with
 * the file as its body and a durable envelope file; only after that is the
 * trailer cut off (ftruncate), so at every moment one durable copy of the
 * envelope exists. A message delivered at its first attempt stays a file.
 *
 * A draft in tmp/ is flock()ed by its writer from before it gets its visible tmp/
 * name (it is created as tmp/.new-NAME, locked, then renamed) until the
 * commit or abort is done, so recovery removes exactly the entries whose
 * writer is gone.
 */
#include "queue/queue.h"
#include "common/cleanup.h"
#include "common/fileio.h"
#include "queue/msgfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define DRAFT_BUF       65536
#define NEW_PREFIX      ".new-"
#define NEW_GRACE_S     300 /* a .new- entry older than this lost its writer before locking */
#define ID_ATTEMPTS     16  /* fresh IDs to try when one is already taken */
#define STATE_NAME_MAX  64
#define SPOOL_DIR_MODE  0770
#define SPOOL_FILE_MODE 0660
#define UPDATE_PREFIX   "up-" /* tmp/up-D-ID: a message file becoming a folder */

static const char *const dir_names[QUEUE__DIR_MAX] = {
    [QUEUE_INCOMING] = "incoming",
    [QUEUE_ACTIVE] = "active",
    [QUEUE_HOLD] = "hold",
    [QUEUE_CORRUPT] = "corrupt",
};

struct queue {
        int root_fd;
        int maildrop_fd; /* tarryd: maildrop/ to read; sendmail: maildrop/ as O_PATH */
        /* A maildrop handle (queue_open_maildrop) has only these besides maildrop_fd: */
        int drop_fd;       /* this process's drop file, flock()ed, or -1 */
        uint64_t drop_end; /* bytes of whole records in it */
        bool drop_synced;  /* its directory entry is known durable */
        bool drop_broken;  /* a failed record could not be cut off: take no more */
        bool drop_busy;    /* a draft is open */
        int dir_fd[QUEUE__DIR_MAX];
        int tmp_fd;
        int state_fd;
        int lock_fd;        /* state/tarryd.lock, flock()ed by the one tarryd of this spool */
        bool batch_dirsync; /* moves/removals leave their folder fsync to queue_sync */
        bool submit_only;   /* QUEUE_OPEN_SUBMIT: incoming/, and tmp/ once a draft needs it */
        bool no_tmpfile;    /* O_TMPFILE refused here: drafts in tmp/ */
        bool anon_checked;  /* whether an unnamed file can be linked was looked at */
        bool no_empty_path; /* linkat(AT_EMPTY_PATH) refused: link through /proc/self/fd */
        bool dirty[QUEUE__DIR_MAX]; /* folders changed since the last queue_sync */
};

struct queue_draft {
        struct queue *q;
        bool drop;    /* a record of the maildrop file; body_fd is q->drop_fd */
        bool keep_id; /* queue_draft_commit_as: env->id and arrival_us as given */
        bool file;    /* a message file tmp/NAME (body_fd); else a folder tmp/NAME/ */
        bool tail;    /* the file's envelope and trailer are written (a new ID rewrites them) */
        bool anon;    /* the file is unnamed (O_TMPFILE in incoming/) until the commit links it */
        uint64_t drop_start;
        int dir_fd; /* tmp/NAME, flock()ed while the draft lives */
        int body_fd;
        char name[40];
        uint64_t size;
        int error; /* first write error; sticky */
        size_t used;
        char buf[DRAFT_BUF];
};

const char *queue_dir_name(enum queue_dir d)
{
        if ((unsigned)d >= QUEUE__DIR_MAX)
                return NULL;
        return dir_names[d];
}

int queue_dir_fd(const struct queue *q, enum queue_dir d)
{
        if ((unsigned)d >= QUEUE__DIR_MAX)
                return -EINVAL;
        return q->dir_fd[d];
}

/* ---- queue IDs ---- */

static unsigned random_bits(void)
{
        unsigned v = 0;
        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
                v = (unsigned)now_monotonic_us() ^ ((unsigned)getpid() << 12);
        return v;
}

static void id_from_time(int64_t us, char out[QUEUE_ID_LEN + 1])
{
        snprintf(out, QUEUE_ID_LEN + 1, "%08X%05X%03X", (unsigned)(us / 1000000),
                 (unsigned)(us % 1000000), random_bits() & 0xfff);
}

int queue_new_id(char out[QUEUE_ID_LEN + 1])
{
        id_from_time(now_realtime_us(), out);
        return 0;
}

int64_t queue_id_time_us(const char *id)
{
        char sec[9], usec[6];
        memcpy(sec, id, 8);
        sec[8] = '\0';
        memcpy(usec, id + 8, 5);
        usec[5] = '\0';
        return (int64_t)strtoll(sec, NULL, 16) * 1000000 + strtoll(usec, NULL, 16);
}

bool queue_id_valid(const char *id)
{
        /* one pass, no libc: called for every name of a million-message
         * readdir and every snapshot record (strlen, strspn and strtoul took
         * 7 % of such a start) */
        if (!id)
                return false;
        unsigned long usec = 0;
        for (size_t i = 0; i < QUEUE_ID_LEN; i++) {
                char c = id[i];
                unsigned v = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                             : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                                    : 16;
                if (v == 16)
                        return false;
                if (i >= 8 && i < 13)
                        usec = usec << 4 | v;
        }
        return id[QUEUE_ID_LEN] == '\0' && usec < 1000000;
}

/* ---- opening the spool ---- */

/* A folder inside the spool: never through a symbolic link (the spool's owner
 * could plant one to make root work on another folder), only a folder. */
static int open_dir_at(int at, const char *name)
{
        int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* Root writing a spool that another user owns (sendmail or tarryq run by
 * root, next to tarryd running as its user) gives what it creates to the
 * spool's owner, so that tarryd can move, read and remove it: *uid and *gid
 * are the owner of spool_dir itself, or -1 (leave them) when we are not root
 * or root owns the spool. */
static void owner_for_new_files(const struct queue *q, uid_t *uid, gid_t *gid)
{
        struct stat st;
        *uid = (uid_t)-1;
        *gid = (gid_t)-1;
        if (geteuid() != 0 || fstat(q->root_fd, &st) < 0 || st.st_uid == 0)
                return;
        *uid = st.st_uid;
        *gid = st.st_gid;
}

/* fchown fd to the spool's owner when root writes someone else's spool. */
static int give_to_owner(const struct queue *q, int fd)
{
        uid_t uid;
        gid_t gid;
        owner_for_new_files(q, &uid, &gid);
        if (uid == (uid_t)-1 || fchown(fd, uid, gid) == 0)
                return 0;
        return -errno;
}

static int ensure_dir_at(int at, const char *name, bool create)
{
        if (create && mkdirat(at, name, SPOOL_DIR_MODE) < 0 && errno != EEXIST)
                return -errno;
        return open_dir_at(at, name);
}

void queue_close(struct queue *q)
{
        if (!q)
                return;
        for (int i = 0; i < QUEUE__DIR_MAX; i++)
                closep(&q->dir_fd[i]);
        closep(&q->tmp_fd);
        closep(&q->lock_fd); /* releases the spool lock */
        closep(&q->state_fd);
        closep(&q->root_fd);
        closep(&q->maildrop_fd);
        if (q->drop_fd >= 0)
                flock(q->drop_fd, LOCK_UN); /* before the close that tarryd's inotify reports */
        closep(&q->drop_fd);
        free(q);
}

/* tmp/ (opened when first needed by a QUEUE_OPEN_SUBMIT handle), or -errno. */
static int tmp_dir(struct queue *q)
{
        if (q->tmp_fd >= 0)
                return q->tmp_fd;
        int fd = open_dir_at(q->root_fd, "tmp");
        if (fd >= 0)
                q->tmp_fd = fd;
        return fd;
}

static int open_subdirs(struct queue *q, bool create)
{
        int r;
        if (q->submit_only) { /* one folder where the whole layout took seven */
                r = q->dir_fd[QUEUE_INCOMING] = open_dir_at(q->root_fd, dir_names[QUEUE_INCOMING]);
                return r < 0 ? r : 0;
        }
        for (int i = 0; i < QUEUE__DIR_MAX; i++) {
                if ((r = ensure_dir_at(q->root_fd, dir_names[i], create)) < 0)
                        return r;
                q->dir_fd[i] = r;
        }
        if ((r = ensure_dir_at(q->root_fd, "tmp", create)) < 0)
                return r;
        q->tmp_fd = r;
        if ((r = ensure_dir_at(q->root_fd, "state", create)) < 0)
                return r;
        q->state_fd = r;
        /* Optional: a spool without maildrop/ takes submissions by its owner only. */
        if (create && mkdirat(q->root_fd, QUEUE_MAILDROP_DIR, 0700) == 0 &&
            fchmodat(q->root_fd, QUEUE_MAILDROP_DIR, MAILDROP_DIR_MODE, 0) < 0)
                return -errno;
        q->maildrop_fd = open_dir_at(q->root_fd, QUEUE_MAILDROP_DIR);
        if (q->maildrop_fd < 0 && q->maildrop_fd != -ENOENT)
                return q->maildrop_fd;
        return 0;
}

int queue_maildrop_fd(const struct queue *q)
{
        return q->maildrop_fd >= 0 ? q->maildrop_fd : -ENOENT;
}

int queue_open(const char *spool_dir, int flags, struct queue **out)
{
        bool create = flags & QUEUE_OPEN_CREATE;
        if (create) {
                int r = mkdir_p(spool_dir, 0755);
                if (r < 0)
                        return r;
        }
        struct queue *q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->tmp_fd = q->state_fd = q->lock_fd = q->maildrop_fd = q->drop_fd = -1;
        for (int i = 0; i < QUEUE__DIR_MAX; i++)
                q->dir_fd[i] = -1;
        q->submit_only = (flags & QUEUE_OPEN_SUBMIT) && !create;
        /* spool_dir itself is the administrator's choice and may be a link */
        int r = q->root_fd = openat(AT_FDCWD, spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (r < 0)
                r = -errno;
        if (r >= 0)
                r = open_subdirs(q, create);
        if (create && r >= 0)
                r = dir_fsync(q->root_fd);
        if (r < 0) {
                queue_close(q);
                return r;
        }
        *out = q;
        return 0;
}

/* ---- removing message directories ---- */

/* Unlink every entry of the directory fd (no recursion: message folders are flat). */
static int empty_dir(int fd)
{
        int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        DIR *dir = fdopendir(dfd);
        if (!dir) {
                close(dfd);
                return -errno;
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(dir))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (unlinkat(fd, de->d_name, 0) < 0 && errno != ENOENT && r == 0)
                        r = -errno;
        }
        closedir(dir);
        return r;
}

/* Remove tmp/name whose directory is open as fd (and locked by us). */
static int remove_tmp_entry(struct queue *q, const char *name, int fd)
{
        int r = empty_dir(fd);
        if (r < 0)
                return r;
        if (unlinkat(q->tmp_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

/* ---- drafts ---- */

static void draft_free(struct queue_draft *d)
{
        if (d->drop) {
                d->q->drop_busy = false;
                d->body_fd = -1; /* the queue's drop file, not ours */
        }
        closep(&d->body_fd);
        closep(&d->dir_fd);
        free(d);
}

/* Create tmp/NAME already locked: make .new-NAME, lock it, rename it to NAME. */
static int draft_mkdir(struct queue_draft *d)
{
        char hidden[64];
        snprintf(d->name, sizeof(d->name), "%08X%08X", random_bits(), random_bits());
        snprintf(hidden, sizeof(hidden), NEW_PREFIX "%s", d->name);
        if (mkdirat(d->q->tmp_fd, hidden, SPOOL_DIR_MODE) < 0)
                return -errno;
        int r = d->dir_fd = open_dir_at(d->q->tmp_fd, hidden);
        if (r >= 0 && flock(d->dir_fd, LOCK_EX | LOCK_NB) < 0)
                r = -errno;
        /* From the start: tarryd's recovery must be able to empty and remove
         * the draft of a root sendmail that was killed. Files in it are then
         * only ever created with O_EXCL (never through a name planted there). */
        if (r >= 0)
                r = give_to_owner(d->q, d->dir_fd);
        if (r >= 0 && renameat2(d->q->tmp_fd, hidden, d->q->tmp_fd, d->name, RENAME_NOREPLACE) < 0)
                r = -errno;
        if (r < 0)
                unlinkat(d->q->tmp_fd, hidden, AT_REMOVEDIR);
        return r < 0 ? r : 0;
}

/* Create the message file tmp/NAME already locked: .new-NAME, lock, rename. */
static int draft_create_file(struct queue_draft *d)
{
        char hidden[64];
        snprintf(d->name, sizeof(d->name), "%08X%08X", random_bits(), random_bits());
        snprintf(hidden, sizeof(hidden), NEW_PREFIX "%s", d->name);
        int fd = openat(d->q->tmp_fd, hidden, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        SPOOL_FILE_MODE);
        if (fd < 0)
                return -errno;
        int r = flock(fd, LOCK_EX | LOCK_NB) < 0 ? -errno : 0;
        /* given away before anything is written: tarryd's recovery can remove
         * the draft of a root sendmail that was killed, and pick it up */
        if (r == 0)
                r = give_to_owner(d->q, fd);
        if (r == 0 && renameat2(d->q->tmp_fd, hidden, d->q->tmp_fd, d->name, RENAME_NOREPLACE) < 0)
                r = -errno;
        if (r < 0) {
                unlinkat(d->q->tmp_fd, hidden, 0);
                close(fd);
                return r;
        }
        d->body_fd = fd;
        return 0;
}

/* ---- maildrop records (the drafts of a queue_open_maildrop handle) ---- */

static int draft_flush(struct queue_draft *d);
static int envelope_dump(const struct envelope *env, char **out, size_t *len);

static int drop_record_begin(struct queue_draft *d)
{
        struct queue *q = d->q;
        if (q->drop_broken)
                return -EIO;
        if (q->drop_busy)
                return -EBUSY;
        char hdr[MAILDROP_HEADER_LEN + 1];
        snprintf(hdr, sizeof(hdr), "%-*s\n", MAILDROP_HEADER_LEN - 1, MAILDROP_OPEN_MAGIC);
        if (lseek(q->drop_fd, (off_t)q->drop_end, SEEK_SET) < 0)
                return -errno;
        int r = fd_write_all(q->drop_fd, hdr, MAILDROP_HEADER_LEN);
        if (r < 0) {
                if (ftruncate(q->drop_fd, (off_t)q->drop_end) < 0)
                        q->drop_broken = true;
                return r;
        }
        d->drop = true;
        d->drop_start = q->drop_end;
        d->body_fd = q->drop_fd;
        q->drop_busy = true;
        return 0;
}

/* Cut a record that will not be committed off the end of the drop file. */
static void drop_record_cut(struct queue_draft *d)
{
        if (ftruncate(d->q->drop_fd, (off_t)d->drop_start) < 0)
                d->q->drop_broken = true; /* a "tarry-open" record would hide later ones */
}

/* Body, then envelope, fsync; only then the header that makes the record whole. */
static int drop_record_write(struct queue_draft *d, struct envelope *env)
{
        struct queue *q = d->q;
        int r = draft_flush(d);
        if (r < 0)
                return r;
        env->size = d->size;
        env->version = ENVELOPE_VERSION;
        env->arrival_us = now_realtime_us();
        /* the message's queue ID: tarryd keeps it when it is free and plausible
         * (queue/maildrop.c), so `sendmail -bs` can say "queued as" truly */
        id_from_time(env->arrival_us, env->id);
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        if ((r = envelope_dump(env, &text, &len)) < 0)
                return r;
        if (len > ENVELOPE_MAX_BYTES)
                return -E2BIG;
        if ((r = fd_write_all(q->drop_fd, text, len)) < 0)
                return r;
        if (fdatasync(q->drop_fd) < 0)
                return -errno;
        char hdr[MAILDROP_HEADER_LEN + 1];
        snprintf(hdr, sizeof(hdr), MAILDROP_MAGIC " %020llu %010zu\n", (unsigned long long)d->size,
                 len);
        if (pwrite(q->drop_fd, hdr, MAILDROP_HEADER_LEN, (off_t)d->drop_start) !=
            MAILDROP_HEADER_LEN)
                return errno ? -errno : -EIO;
        if (fdatasync(q->drop_fd) < 0)
                return -errno;
        /* maildrop/ is not readable by submitters, so it cannot be opened to be
         * fsynced: syncfs commits the file's directory entry instead. */
        if (!q->drop_synced && syncfs(q->drop_fd) < 0)
                return -errno;
        q->drop_synced = true;
        q->drop_end = d->drop_start + MAILDROP_HEADER_LEN + d->size + len;
        return 0;
}

/* draft_finish frees the draft, or aborts it (cutting the record off) on failure. */
static int drop_record_commit(struct queue_draft *d, struct envelope *env)
{
        errno = 0;
        return drop_record_write(d, env);
}

static int drop_random_name(char out[MAILDROP_NAME_LEN + 1])
{
        unsigned char rnd[MAILDROP_NAME_LEN / 2];
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
                return -EIO; /* the name is what keeps other users out: no weak fallback */
        for (size_t i = 0; i < sizeof(rnd); i++)
                snprintf(out + 2 * i, 3, "%02x", rnd[i]);
        return 0;
}

/* Create maildrop/NAME already locked and readable by tarryd: made as .tmp-NAME, renamed. */
static int drop_create(struct queue *q)
{
        char name[MAILDROP_NAME_LEN + 1], hidden[MAILDROP_NAME_LEN + 8];
        int r = drop_random_name(name);
        if (r < 0)
                return r;
        snprintf(hidden, sizeof(hidden), MAILDROP_TMP_PREFIX "%s", name);
        int fd = openat(q->maildrop_fd, hidden, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        0600);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX) < 0 || fchmod(fd, MAILDROP_FILE_MODE) < 0 ||
            renameat2(q->maildrop_fd, hidden, q->maildrop_fd, name, RENAME_NOREPLACE) < 0) {
                r = -errno;
                unlinkat(q->maildrop_fd, hidden, 0);
                close(fd);
                return r;
        }
        q->drop_fd = fd;
        return 0;
}

int queue_open_maildrop(const char *spool_dir, struct queue **out)
{
        struct queue *q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->root_fd = q->tmp_fd = q->state_fd = q->lock_fd = q->drop_fd = -1;
        for (int i = 0; i < QUEUE__DIR_MAX; i++)
                q->dir_fd[i] = -1;
        char path[PATH_MAX];
        int r = -ENAMETOOLONG;
        if ((size_t)snprintf(path, sizeof(path), "%s/" QUEUE_MAILDROP_DIR, spool_dir) <
            sizeof(path)) {
                /* O_PATH: searching and creating need no read permission on the folder;
                 * O_NOFOLLOW: not a link the spool's owner planted there */
                q->maildrop_fd =
                    openat(AT_FDCWD, path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                r = q->maildrop_fd < 0 ? -errno : drop_create(q);
        }
        if (r < 0) {
                queue_close(q);
                return r;
        }
        *out = q;
        return 0;
}

bool queue_is_maildrop(const struct queue *q)
{
        return q->drop_fd >= 0;
}

/* Can an unnamed file be linked in here? Root links it by its descriptor
 * (AT_EMPTY_PATH); anyone else may need /proc/self/fd, looked at once. */
static bool anon_linkable(struct queue *q)
{
        if (!q->anon_checked) {
                q->anon_checked = true;
                if (geteuid() != 0 && faccessat(AT_FDCWD, "/proc/self/fd", X_OK, 0) < 0)
                        q->no_tmpfile = true;
        }
        return !q->no_tmpfile;
}

/* A message file draft with no name yet: O_TMPFILE in incoming/, so the
 * commit's link is within one filesystem and folder. -EOPNOTSUPP, -EISDIR
 * or -EINVAL: the filesystem (or kernel) cannot. */
static int draft_open_anon(struct queue_draft *d)
{
        int fd = openat(d->q->dir_fd[QUEUE_INCOMING], ".", O_TMPFILE | O_RDWR | O_CLOEXEC,
                        SPOOL_FILE_MODE);
        if (fd < 0)
                return -errno;
        /* tarryd must be able to take it once linked, as for tmp/NAME */
        int r = give_to_owner(d->q, fd);
        if (r < 0) {
                close(fd);
                return r;
        }
        d->body_fd = fd;
        d->anon = true;
        return 0;
}

/* A message file draft tmp/NAME, under a fresh name. */
static int draft_begin_file(struct queue_draft *d)
{
        if (anon_linkable(d->q)) {
                int r = draft_open_anon(d);
                if (r != -EOPNOTSUPP && r != -EISDIR && r != -EINVAL)
                        return r;
                d->q->no_tmpfile = true; /* and for the rest of this handle's drafts */
        }
        int r = tmp_dir(d->q);
        if (r < 0)
                return r;
        r = -EEXIST;
        for (int i = 0; i < ID_ATTEMPTS && r == -EEXIST; i++)
                r = draft_create_file(d);
        return r;
}

/* A folder draft tmp/NAME/ under a fresh name, its body file open; on
 * failure nothing is left in tmp/. */
static int draft_begin_folder(struct queue_draft *d)
{
        int r = tmp_dir(d->q);
        if (r < 0)
                return r;
        r = -EEXIST;
        for (int i = 0; i < ID_ATTEMPTS; i++) {
                closep(&d->dir_fd);
                d->dir_fd = -1;
                if ((r = draft_mkdir(d)) != -EEXIST)
                        break;
        }
        if (r == 0) {
                d->body_fd = openat(d->dir_fd, "body", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                                    SPOOL_FILE_MODE);
                if (d->body_fd < 0)
                        r = -errno;
                else
                        r = give_to_owner(d->q, d->body_fd);
        }
        if (r < 0 && d->dir_fd >= 0)
                remove_tmp_entry(d->q, d->name, d->dir_fd);
        return r;
}

static int draft_begin(struct queue *q, bool folder, struct queue_draft **out)
{
        struct queue_draft *d = malloc(sizeof(*d));
        if (!d)
                return -ENOMEM;
        /* Everything but the 64 KB buffer: zeroing that too cost each
         * sendmail 16 page faults and a memset (docs/benchmarks.md). */
        memset(d, 0, offsetof(struct queue_draft, buf));
        d->q = q;
        d->dir_fd = d->body_fd = -1;
        d->file = !folder && q->drop_fd < 0;
        int r = q->drop_fd >= 0 ? drop_record_begin(d)
                : d->file       ? draft_begin_file(d)
                                : draft_begin_folder(d);
        if (r < 0) {
                draft_free(d);
                return r;
        }
        *out = d;
        return 0;
}

int queue_draft_begin(struct queue *q, struct queue_draft **out)
{
        return draft_begin(q, false, out);
}

static int draft_flush(struct queue_draft *d)
{
        if (d->error == 0 && d->used > 0)
                d->error = fd_write_all(d->body_fd, d->buf, d->used);
        d->used = 0;
        return d->error;
}

int queue_draft_write(struct queue_draft *d, const void *buf, size_t len)
{
        const char *p = buf;
        if (d->error)
                return d->error;
        d->size += len;
        if (len >= DRAFT_BUF) {
                if (draft_flush(d) < 0)
                        return d->error;
                return d->error = fd_write_all(d->body_fd, p, len);
        }
        if (d->used + len > DRAFT_BUF && draft_flush(d) < 0)
                return d->error;
        memcpy(d->buf + d->used, p, len);
        d->used += len;
        return 0;
}

uint64_t queue_draft_size(const struct queue_draft *d)
{
        return d->size;
}

void queue_draft_abort(struct queue_draft *d)
{
        if (!d)
                return;
        if (d->drop)
                drop_record_cut(d);
        else if (d->anon)
                ; /* never named: closing it frees it */
        else if (d->file)
                unlinkat(d->q->tmp_fd, d->name, 0); /* still ours: we hold its lock */
        else
                remove_tmp_entry(d->q, d->name, d->dir_fd);
        draft_free(d);
}

/* Serialise env, refusing anything envelope_from_json() would not read back. */
static int envelope_dump(const struct envelope *env, char **out, size_t *len)
{
        _cleanup_(json_decrefp) json_t *j = envelope_to_json(env);
        if (!j)
                return -ENOMEM;
        char *text = json_dumps(j, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        struct envelope *check = NULL;
        int r = envelope_from_json(text, strlen(text), &check, NULL);
        envelope_free(check);
        if (r < 0) {
                free(text);
                return r == -ENOMEM ? r : -EINVAL;
        }
        *len = strlen(text);
        *out = text;
        return 0;
}

/* A new file in a draft (written again, from scratch, when the ID changes):
 * O_EXCL, so that nothing planted under its name is ever written through. */
static int write_file_at(const struct queue *q, int dirfd, const char *name, const char *buf,
                         size_t len)
{
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
                return -errno;
        _cleanup_close_ int fd = openat(
            dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, SPOOL_FILE_MODE);
        if (fd < 0)
                return -errno;
        int r = give_to_owner(q, fd);
        if (r == 0)
                r = fd_write_all(fd, buf, len);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        return r;
}

/* Is id already used by a message in folder i? A submit-only handle has
 * not opened it: asked through the spool's root (a folder this user may not
 * search answers no, as an unopened one did before). */
static bool id_taken_in(struct queue *q, int i, const char *id)
{
        if (q->dir_fd[i] >= 0)
                return faccessat(q->dir_fd[i], id, F_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) == 0;
        char path[64];
        snprintf(path, sizeof(path), "%s/%s", dir_names[i], id);
        return faccessat(q->root_fd, path, F_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) == 0;
}

/* Is id already used by a message in any folder? */
static bool id_taken(struct queue *q, const char *id)
{
        for (int i = 0; i < QUEUE__DIR_MAX; i++)
                if (id_taken_in(q, i, id))
                        return true;
        return false;
}

/* Is a fresh id used by a message already past incoming/? The commit's
 * link into incoming/ refuses a name in use there (EEXIST), but pickup's
 * move to active/ would refuse one taken in active/ for ever: an ID is the
 * time it was made and 12 random bits, and a clock stepped back may make
 * one again. */
static bool id_taken_beyond_incoming(struct queue *q, const char *id)
{
        for (int i = 0; i < QUEUE__DIR_MAX; i++)
                if (i != QUEUE_INCOMING && id_taken_in(q, i, id))
                        return true;
        return false;
}

bool queue_id_in_use(struct queue *q, const char *id)
{
        return queue_id_valid(id) && id_taken(q, id);
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
        for (size_t done = 0; done < len;) {
                ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                done += (size_t)n;
        }
        return 0;
}

/* A message file's tail after its d->size bytes of body: envelope, trailer
 * (written again, from scratch, when the ID changes). */
static int draft_write_tail(struct queue_draft *d, const char *text, size_t len, const char *id)
{
        char t[MSGFILE_TRAILER_LEN + 1];
        msgfile_trailer(t, id, d->size, text, len);
        if (d->tail && ftruncate(d->body_fd, (off_t)d->size) < 0)
                return -errno;
        d->tail = true;
        int r = pwrite_all(d->body_fd, text, len, d->size);
        if (r == 0)
                r = pwrite_all(d->body_fd, t, MSGFILE_TRAILER_LEN, d->size + len);
        return r;
}

/* Give env a fresh ID and arrival time (unless d->keep_id), and write its
 * envelope into the draft (the envelope file, or a message file's tail).
 * A fresh ID is looked up in the folders past incoming/ only: the commit's
 * link or rename into the target folder refuses a name in use there
 * (EEXIST). A kept ID comes from elsewhere: every folder is asked. */
static int draft_write_envelope(struct queue_draft *d, struct envelope *env)
{
        if (d->keep_id && id_taken(d->q, env->id))
                return -EEXIST;
        for (int i = 0; !d->keep_id && i < ID_ATTEMPTS; i++) {
                env->arrival_us = now_realtime_us();
                id_from_time(env->arrival_us, env->id);
                if (!id_taken_beyond_incoming(d->q, env->id))
                        break;
                if (i == ID_ATTEMPTS - 1)
                        return -EEXIST;
        }
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = envelope_dump(env, &text, &len);
        if (r < 0)
                return r;
        if (d->file)
                return draft_write_tail(d, text, len, env->id);
        return write_file_at(d->q, d->dir_fd, "envelope", text, len);
}

/* Give the unnamed file of d the name id in the folder dfd: -EEXIST when
 * the name is taken (linkat never replaces, nor follows a link there). */
static int link_anon(struct queue_draft *d, int dfd, const char *id)
{
        struct queue *q = d->q;
        if (!q->no_empty_path) {
                if (linkat(d->body_fd, "", dfd, id, AT_EMPTY_PATH) == 0)
                        return 0;
                if (errno != ENOENT) /* ENOENT: not permitted without CAP_DAC_READ_SEARCH */
                        return -errno;
                q->no_empty_path = true;
        }
        char path[40];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", d->body_fd);
        return linkat(AT_FDCWD, path, dfd, id, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
}

/* Put the draft under the name id in the folder dfd (0, or -errno). */
static int draft_place(struct queue_draft *d, int dfd, const char *id)
{
        if (d->anon)
                return link_anon(d, dfd, id);
        return renameat2(d->q->tmp_fd, d->name, dfd, id, RENAME_NOREPLACE) < 0 ? -errno : 0;
}

/* Take a placed draft back (its folder's fsync failed), so the caller's failure is true. */
static void draft_unplace(struct queue_draft *d, int dfd, const char *id)
{
        if (d->anon)
                unlinkat(dfd, id, 0);
        else
                renameat2(dfd, id, d->q->tmp_fd, d->name, RENAME_NOREPLACE);
}

/* The draft is whole on disk: move it into dir under its ID, durably. */
static int draft_publish(struct queue_draft *d, struct envelope *env, enum queue_dir dir)
{
        int dfd = d->q->dir_fd[dir];
        for (int i = 0; i < ID_ATTEMPTS; i++) {
                int r = draft_place(d, dfd, env->id);
                if (r == 0) {
                        if ((r = dir_fsync(dfd)) == 0)
                                return 0;
                        /* Not known durable: take it back so the caller's failure is true. */
                        draft_unplace(d, dfd, env->id);
                        return r;
                }
                if (r != -EEXIST || d->keep_id)
                        return r;
                r = draft_write_envelope(d, env);
                if (r == 0 && (d->file ? fsync(d->body_fd) : dir_fsync(d->dir_fd)) < 0)
                        r = -errno;
                if (r < 0)
                        return r;
        }
        return -EEXIST;
}

static int draft_commit_into(struct queue_draft *d, struct envelope *env, enum queue_dir dir)
{
        if ((unsigned)dir >= QUEUE__DIR_MAX || (d->file && dir != QUEUE_INCOMING))
                return -EINVAL;
        int r = draft_flush(d);
        if (r < 0)
                return r;
        env->size = d->size;
        env->version = ENVELOPE_VERSION;
        r = draft_write_envelope(d, env); /* written before the body's fsync: one journal commit */
        if (r < 0)
                return r;
        if (fsync(d->body_fd) < 0 || (!d->file && dir_fsync(d->dir_fd) < 0))
                return -errno;
        return draft_publish(d, env, dir);
}

static int draft_finish(struct queue_draft *d, struct envelope *env, enum queue_dir dir)
{
        int r = d->drop ? drop_record_commit(d, env) : draft_commit_into(d, env, dir);
        if (r < 0) {
                queue_draft_abort(d);
                return r;
        }
        draft_free(d);
        return 0;
}

int queue_draft_commit(struct queue_draft *d, struct envelope *env)
{
        return draft_finish(d, env, QUEUE_INCOMING);
}

int queue_draft_commit_as(struct queue_draft *d, struct envelope *env)
{
        if (d->drop || !queue_id_valid(env->id)) {
                queue_draft_abort(d);
                return -EINVAL;
        }
        d->keep_id = true;
        return draft_finish(d, env, QUEUE_INCOMING);
}

int queue_enqueue(struct queue *q, enum queue_dir dir, struct envelope *env, const void *body,
                  size_t len)
{
        struct queue_draft *d;
        /* a message file for incoming/, else a folder (a maildrop handle: a record) */
        int r = draft_begin(q, dir != QUEUE_INCOMING, &d);
        if (r < 0)
                return r;
        r = queue_draft_write(d, body, len);
        if (r < 0) {
                queue_draft_abort(d);
                return r;
        }
        return draft_finish(d, env, dir);
}

/* ---- reading and changing queued messages ---- */

int queue_scan(struct queue *q, enum queue_dir d, int (*cb)(const char *id, void *userdata),
               void *userdata)
{
        if ((unsigned)d >= QUEUE__DIR_MAX)
                return -EINVAL;
        int fd = openat(q->dir_fd[d], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *dir = fdopendir(fd);
        if (!dir) {
                close(fd);
                return -errno;
        }
        int r = 0;
        struct dirent *de;
        while (r == 0 && (de = readdir(dir)))
                if (queue_id_valid(de->d_name))
                        r = cb(de->d_name, userdata);
        closedir(dir);
        return r;
}

static int open_message(struct queue *q, enum queue_dir d, const char *id)
{
        if ((unsigned)d >= QUEUE__DIR_MAX || !queue_id_valid(id))
                return -EINVAL;
        return open_dir_at(q->dir_fd[d], id);
}

/* Cut off the trailer a picked-up body still carries, now that the
 * message's envelope file is durable (every envelope file is written
 * durably): 1 if it was cut, 0 if there was none, -EBADMSG if the body's
 * size is neither the envelope's nor that plus a trailer of this message. */
static int cut_trailer(int mfd, const struct envelope *env, const struct stat *st)
{
        if ((uint64_t)st->st_size == env->size)
                return 0;
        if ((uint64_t)st->st_size < env->size)
                return -EBADMSG;
        _cleanup_close_ int fd = openat(mfd, "body", O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && (errno == EACCES || errno == EROFS)) /* a reader (tarryq): leave it */
                fd = openat(mfd, "body", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        uint64_t body_len;
        if (msgfile_read_trailer(fd, (uint64_t)st->st_size, env->id, &body_len, NULL, NULL, NULL) <
                0 ||
            body_len != env->size)
                return -EBADMSG;
        /* a failure is harmless: the trailer stays, and is cut next time */
        return ftruncate(fd, (off_t)body_len) == 0 ? 1 : 0;
}

static int check_body(int mfd, const struct envelope *env, const char **why)
{
        struct stat st;
        if (fstatat(mfd, "body", &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno != ENOENT)
                        return -errno;
                return *why = "the body file is missing", -EBADMSG;
        }
        if (!S_ISREG(st.st_mode) || cut_trailer(mfd, env, &st) == -EBADMSG)
                return *why = "the body file's size differs from the envelope's", -EBADMSG;
        return 0;
}

/* The envelope text (NUL-terminated) read back into *out, checked against id
 * and against the body's length. */
static int parse_envelope(const char *text, size_t len, const char *id, uint64_t body_len,
                          bool check_len, struct envelope **out, const char **why)
{
        struct envelope *env = NULL;
        int r = envelope_from_json(text, len, &env, why);
        if (r < 0)
                return r;
        if (strcmp(env->id, id) != 0) {
                *why = "the envelope's id differs from its directory name";
                r = -EBADMSG;
        } else if (check_len && env->size != body_len) {
                *why = "the body's length differs from the envelope's";
                r = -EBADMSG;
        }
        if (r < 0) {
                envelope_free(env);
                return r;
        }
        *out = env;
        return 0;
}

/* The envelope in the trailer of the regular file at/name (a message file in
 * incoming/, or the body of a message picked up whose envelope file is not
 * written yet). -ENODATA: a regular file without a trailer of id. */
static int load_trailer(int at, const char *name, const char *id, struct envelope **out,
                        const char **why)
{
        _cleanup_close_ int fd = openat(at, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (fd < 0 && errno != ELOOP)
                return -errno;
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return *why = "neither a message file nor a message folder", -EBADMSG;
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        uint64_t blen = 0;
        int r = msgfile_read_trailer(fd, (uint64_t)st.st_size, id, &blen, &text, &len, why);
        if (r < 0)
                return r;
        return parse_envelope(text, len, id, blen, true, out, why);
}

/* A folder without an envelope file: its body may still carry the message
 * file's trailer (a message file's first update cut short by a crash after
 * the body moved in is finished by recovery, but the trailer is read all
 * the same), else it is damaged. */
static int load_picked_up(int mfd, const char *id, struct envelope **out, const char **why)
{
        int r = load_trailer(mfd, "body", id, out, why);
        if (r == -ENOENT || r == -ENODATA)
                return *why = "the envelope file is missing", -EBADMSG;
        return r;
}

static int load_folder(int mfd, const char *id, struct envelope **out, const char **why);

int queue_load(struct queue *q, enum queue_dir d, const char *id, struct envelope **out,
               const char **why)
{
        const char *dummy;
        if (!why)
                why = &dummy;
        _cleanup_close_ int mfd = open_message(q, d, id);
        if (mfd == -ENOTDIR || mfd == -ELOOP) { /* a message file, or no message at all */
                int r = load_trailer(q->dir_fd[d], id, id, out, why);
                return r == -ENODATA ? (*why = "the message file has no trailer", -EBADMSG) : r;
        }
        if (mfd < 0)
                return mfd;
        return load_folder(mfd, id, out, why);
}

/* A message folder's envelope (mfd: the folder). */
static int load_folder(int mfd, const char *id, struct envelope **out, const char **why)
{
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = file_read_all_nofollow_at(mfd, "envelope", ENVELOPE_MAX_BYTES, &text, &len);
        if (r == -ENOENT)
                return load_picked_up(mfd, id, out, why);
        if (r == -EFBIG)
                return *why = "the envelope file is larger than 16 MiB", -EBADMSG;
        if (r < 0)
                return r;
        struct envelope *env = NULL;
        r = parse_envelope(text, len, id, 0, false, &env, why);
        if (r == 0)
                r = check_body(mfd, env, why);
        if (r < 0) {
                envelope_free(env);
                return r;
        }
        *out = env;
        return 0;
}

/* queue_load and queue_open_body in one, for tarryd's pickup and attempts: a
 * message file (every message delivered at its first attempt) is opened
 * once, its trailer read once, and that descriptor is the body's. A folder
 * is read as queue_load reads it, its body left closed. */
int queue_load_body(struct queue *q, enum queue_dir d, const char *id, struct envelope **out,
                    int *fd, uint64_t *size, const char **why)
{
        const char *dummy;
        if (!why)
                why = &dummy;
        if ((unsigned)d >= QUEUE__DIR_MAX || !queue_id_valid(id))
                return -EINVAL;
        /* O_NONBLOCK: a FIFO planted here must not hold the loop */
        _cleanup_close_ int mfd =
            openat(q->dir_fd[d], id, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (mfd < 0 && errno != ELOOP)
                return -errno;
        if (mfd >= 0 && fstat(mfd, &st) < 0)
                return -errno;
        if (mfd >= 0 && S_ISDIR(st.st_mode)) {
                /* the envelope only: most loads of a folder (a deferred
                 * message read at start) need no body; *fd -1 says to open
                 * it (queue_open_body) when it is needed */
                *fd = -1;
                *size = 0;
                return load_folder(mfd, id, out, why);
        }
        if (mfd < 0 || !S_ISREG(st.st_mode))
                return *why = "neither a message file nor a message folder", -EBADMSG;
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        uint64_t blen = 0;
        int r = msgfile_read_trailer(mfd, (uint64_t)st.st_size, id, &blen, &text, &len, why);
        if (r == -ENODATA)
                return *why = "the message file has no trailer", -EBADMSG;
        if (r == 0)
                r = parse_envelope(text, len, id, blen, true, out, why);
        if (r < 0)
                return r;
        *fd = TAKE_FD(mfd);
        *size = blen;
        return 0;
}

/* The first update of a message file d/ID (picked up, never rewritten): it
 * becomes the folder d/ID/ with the file as its body and text as its
 * envelope, by way of tmp/up-D-ID/ (locked): the envelope is written and
 * made durable there, the file moved in as body, the folder made durable
 * and renamed to d/ID. A crash before the body moved leaves the file as it
 * was (recovery removes the folder); after, recovery moves the folder to
 * d/ID. Only then is the trailer cut off the body. */
static int file_to_folder(struct queue *q, enum queue_dir d, const struct envelope *env,
                          const char *text, size_t len)
{
        char name[64];
        snprintf(name, sizeof(name), UPDATE_PREFIX "%d-%s", (int)d, env->id);
        if (mkdirat(q->tmp_fd, name, SPOOL_DIR_MODE) < 0)
                return -errno; /* EEXIST: a crash's, for recovery to finish */
        _cleanup_close_ int dfd = open_dir_at(q->tmp_fd, name);
        int r = dfd < 0 ? dfd : 0;
        if (r == 0 && flock(dfd, LOCK_EX | LOCK_NB) < 0)
                r = -errno;
        if (r == 0)
                r = give_to_owner(q, dfd);
        if (r == 0)
                r = write_file_at(q, dfd, "envelope", text, len);
        if (r == 0 && dir_fsync(dfd) < 0)
                r = -errno;
        if (r == 0 && renameat2(q->dir_fd[d], env->id, dfd, "body", RENAME_NOREPLACE) < 0)
                r = -errno;
        if (r < 0) {
                if (dfd >= 0)
                        remove_tmp_entry(q, name, dfd);
                else
                        unlinkat(q->tmp_fd, name, AT_REMOVEDIR);
                return r;
        }
        /* the message lives in tmp/ now: on to d/ID, or else back as it was */
        if (dir_fsync(dfd) < 0 ||
            renameat2(q->tmp_fd, name, q->dir_fd[d], env->id, RENAME_NOREPLACE) < 0) {
                r = -errno;
                if (renameat2(dfd, "body", q->dir_fd[d], env->id, RENAME_NOREPLACE) == 0)
                        remove_tmp_entry(q, name, dfd);
                return r; /* if even that failed, recovery moves it on to d/ID */
        }
        if (dir_fsync(q->dir_fd[d]) < 0 || dir_fsync(q->tmp_fd) < 0)
                return -errno;
        struct stat st;
        if (fstatat(dfd, "body", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                cut_trailer(dfd, env, &st); /* the envelope file is durable now */
        return 0;
}

int queue_update(struct queue *q, enum queue_dir d, const struct envelope *env)
{
        _cleanup_close_ int mfd = open_message(q, d, env->id);
        if (mfd < 0 && mfd != -ENOTDIR)
                return mfd;
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = envelope_dump(env, &text, &len);
        if (r < 0)
                return r;
        if (mfd == -ENOTDIR)
                return file_to_folder(q, d, env, text, len);
        uid_t uid;
        gid_t gid;
        owner_for_new_files(q, &uid, &gid);
        r = file_replace_durable_owned(mfd, "envelope", text, len, uid, gid);
        struct stat st;
        if (r == 0 && fstatat(mfd, "body", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                cut_trailer(mfd, env, &st); /* the envelope file is durable now */
        return r;
}

int queue_open_body(struct queue *q, enum queue_dir d, const char *id, int *fd, uint64_t *size)
{
        _cleanup_close_ int mfd = open_message(q, d, id);
        bool file = mfd == -ENOTDIR;
        if (mfd < 0 && !file)
                return mfd;
        _cleanup_close_ int bfd = file ? openat(q->dir_fd[d], id, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                                       : openat(mfd, "body", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (bfd < 0)
                return -errno;
        struct stat st;
        if (fstat(bfd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        /* A body picked up from a message file keeps its trailer until its
         * envelope file is written: the body is the part before it. */
        uint64_t len = (uint64_t)st.st_size, body_len = 0;
        int r = msgfile_read_trailer(bfd, len, id, &body_len, NULL, NULL, NULL);
        if (r == 0)
                len = body_len;
        else if (r != -ENODATA && (file || r != -EBADMSG))
                return r; /* a folder's body with a broken tail is sent as it is */
        if (size)
                *size = len;
        *fd = TAKE_FD(bfd);
        return 0;
}

/* A rename between folders is atomic; its fsync only decides how soon it is
 * durable. Batched, a crash may undo the latest moves: the message is then
 * whole in its former folder (picked up again, or delivered again: at least
 * once), never lost. */
static int sync_dirs(struct queue *q, enum queue_dir a, enum queue_dir b)
{
        if (q->batch_dirsync) {
                q->dirty[a] = q->dirty[b] = true;
                return 0;
        }
        int r = dir_fsync(q->dir_fd[a]);
        if (r == 0 && b != a)
                r = dir_fsync(q->dir_fd[b]);
        return r;
}

void queue_set_batched_dirsync(struct queue *q, bool on)
{
        q->batch_dirsync = on;
}

int queue_sync(struct queue *q)
{
        int err = 0;
        for (int i = 0; i < QUEUE__DIR_MAX; i++) {
                if (!q->dirty[i])
                        continue;
                /* a folder whose fsync failed stays due: the next call tries again */
                int r = dir_fsync(q->dir_fd[i]);
                q->dirty[i] = r < 0;
                if (r < 0 && err == 0)
                        err = r;
        }
        return err;
}

int queue_move(struct queue *q, const char *id, enum queue_dir from, enum queue_dir to)
{
        if ((unsigned)from >= QUEUE__DIR_MAX || (unsigned)to >= QUEUE__DIR_MAX ||
            !queue_id_valid(id))
                return -EINVAL;
        if (from == to)
                return 0;
        /* A message is a message file or (the previous layout) a folder: a
         * link or FIFO planted in incoming/ is refused (the caller quarantines
         * it as it is) instead of being renamed into active/, where every
         * load of it would fail. */
        struct stat st;
        if (from == QUEUE_INCOMING && to != QUEUE_CORRUPT &&
            fstatat(q->dir_fd[from], id, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode) &&
            !S_ISDIR(st.st_mode))
                return -EBADMSG;
        if (renameat2(q->dir_fd[from], id, q->dir_fd[to], id, RENAME_NOREPLACE) < 0)
                return -errno;
        return sync_dirs(q, from, to);
}

int queue_remove(struct queue *q, enum queue_dir d, const char *id)
{
        _cleanup_close_ int mfd = open_message(q, d, id);
        if (mfd == -ENOTDIR || mfd == -ELOOP) { /* a message file (or a link): one unlink */
                if (unlinkat(q->dir_fd[d], id, 0) < 0)
                        return -errno;
                return sync_dirs(q, d, d);
        }
        if (mfd < 0)
                return mfd;
        /* Locked and renamed into tmp/ first: a crash mid-way leaves no half message. */
        if (flock(mfd, LOCK_EX) < 0)
                return -errno;
        char name[64];
        snprintf(name, sizeof(name), "del-%s-%03X", id, random_bits() & 0xfff);
        if (renameat2(q->dir_fd[d], id, q->tmp_fd, name, RENAME_NOREPLACE) < 0)
                return -errno;
        int r = sync_dirs(q, d, d);
        int r2 = remove_tmp_entry(q, name, mfd);
        return r < 0 ? r : r2;
}

int queue_discard(struct queue *q, enum queue_dir d, const char *id,
                  char name[QUEUE_DISCARD_NAME_MAX])
{
        if ((unsigned)d >= QUEUE__DIR_MAX || !queue_id_valid(id))
                return -EINVAL;
        snprintf(name, QUEUE_DISCARD_NAME_MAX, "del-%s-%03X", id, random_bits() & 0xfff);
        if (renameat2(q->dir_fd[d], id, q->tmp_fd, name, RENAME_NOREPLACE) < 0)
                return -errno;
        return 0;
}

int queue_discard_file(struct queue *q, enum queue_dir d, const char *id, int fd)
{
        if ((unsigned)d >= QUEUE__DIR_MAX || !queue_id_valid(id) || fd < 0)
                return -EINVAL;
        /* a folder (the message was rewritten) is refused with EISDIR */
        return unlinkat(q->dir_fd[d], id, 0) < 0 ? -errno : 0;
}

int queue_purge_unlinked(struct queue *q, enum queue_dir d, const int *fds, size_t n)
{
        if ((unsigned)d >= QUEUE__DIR_MAX)
                return -EINVAL;
        /* The unlinks are durable before any file is freed: a crash (of the
         * machine) can bring a whole message back, never a name whose inode
         * was freed and maybe reused. */
        int r = dir_fsync(q->dir_fd[d]);
        for (size_t i = 0; i < n; i++)
                close(fds[i]); /* the last reference: the file's blocks are freed here */
        return r;
}

int queue_purge_discarded(struct queue *q, enum queue_dir d, const char *const *names, size_t n)
{
        if ((unsigned)d >= QUEUE__DIR_MAX)
                return -EINVAL;
        /* Nothing is deleted before the moves out of d are durable: until then a
         * crash (of the machine) can only bring a whole message back. */
        int r = dir_fsync(q->dir_fd[d]);
        if (r == 0)
                r = dir_fsync(q->tmp_fd);
        if (r < 0)
                return r; /* left in tmp/ for recovery */
        int err = 0;
        for (size_t i = 0; i < n; i++) {
                if (strncmp(names[i], "del-", 4) != 0 || strchr(names[i], '/'))
                        continue;
                _cleanup_close_ int fd = open_dir_at(q->tmp_fd, names[i]);
                if (fd == -ENOTDIR) { /* a message file, never rewritten */
                        if (unlinkat(q->tmp_fd, names[i], 0) < 0 && errno != ENOENT && err == 0)
                                err = -errno;
                        continue;
                }
                if (fd < 0) {
                        if (fd != -ENOENT && err == 0)
                                err = fd;
                        continue;
                }
                if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                        continue; /* recovery is at it */
                r = remove_tmp_entry(q, names[i], fd);
                if (r < 0 && err == 0)
                        err = r;
        }
        return err;
}

/* ---- recovery ---- */

static bool young_new_entry(int tmp_fd, const char *name)
{
        struct stat st;
        if (strncmp(name, NEW_PREFIX, strlen(NEW_PREFIX)) != 0)
                return false;
        if (fstatat(tmp_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return true;
        return st.st_mtime + NEW_GRACE_S > now_realtime_us() / 1000000;
}

/* tmp/up-D-ID (locked by us), a message file's first update cut short: with
 * its body, the message is moved on to D/ID (1); without, the file is still
 * in D/ and the folder is to be removed (0). */
static int finish_update(struct queue *q, const char *name, int fd)
{
        int d = -1, n = 0;
        char id[QUEUE_ID_LEN + 2] = "";
        if (sscanf(name + strlen(UPDATE_PREFIX), "%d-%17s%n", &d, id, &n) != 2 ||
            name[strlen(UPDATE_PREFIX) + (size_t)n] != '\0' || d < 0 || d >= QUEUE__DIR_MAX ||
            !queue_id_valid(id))
                return 0;
        if (faccessat(fd, "body", F_OK, AT_SYMLINK_NOFOLLOW) < 0)
                return 0;
        if (dir_fsync(fd) < 0 || renameat2(q->tmp_fd, name, q->dir_fd[d], id, RENAME_NOREPLACE) < 0)
                return -errno;
        return dir_fsync(q->dir_fd[d]) < 0 ? -errno : 1;
}

/* 1 if tmp/name was abandoned and is now removed (or, a message's update,
 * finished), 0 if its writer still holds it. */
static int recover_entry(struct queue *q, const char *name)
{
        if (young_new_entry(q->tmp_fd, name))
                return 0;
        /* a draft is a folder or a message file; anything else is removed unopened */
        struct stat a, b;
        if (fstatat(q->tmp_fd, name, &a, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(a.st_mode) && !S_ISREG(a.st_mode))
                return unlinkat(q->tmp_fd, name, 0) < 0 ? -errno : 1;
        _cleanup_close_ int fd =
            openat(q->tmp_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? 0 : -errno;
        /* The writer may have committed (renamed it away) between our open and lock. */
        if (fstat(fd, &a) < 0 || fstatat(q->tmp_fd, name, &b, AT_SYMLINK_NOFOLLOW) < 0 ||
            a.st_ino != b.st_ino || a.st_dev != b.st_dev)
                return 0;
        if (S_ISREG(a.st_mode)) /* ENOENT: the remover's thread was quicker */
                return unlinkat(q->tmp_fd, name, 0) < 0 ? (errno == ENOENT ? 0 : -errno) : 1;
        if (strncmp(name, UPDATE_PREFIX, strlen(UPDATE_PREFIX)) == 0) {
                int r = finish_update(q, name, fd);
                if (r != 0)
                        return r;
        }
        int r = remove_tmp_entry(q, name, fd);
        return r < 0 ? r : 1;
}

int queue_recover_tmp(struct queue *q)
{
        int fd = openat(q->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *dir = fdopendir(fd);
        if (!dir) {
                close(fd);
                return -errno;
        }
        int removed = 0, err = 0;
        struct dirent *de;
        while ((de = readdir(dir))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                int r = recover_entry(q, de->d_name);
                if (r > 0)
                        removed++;
                else if (r < 0 && err == 0)
                        err = r;
        }
        closedir(dir);
        if (removed > 0)
                dir_fsync(q->tmp_fd);
        return err < 0 && removed == 0 ? err : removed;
}

/* ---- small state files ---- */

static bool state_name_ok(const char *name)
{
        size_t n = strlen(name);
        return n > 0 && n <= STATE_NAME_MAX && name[0] != '.' &&
               strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
                   n;
}

int queue_state_write(struct queue *q, const char *name, const void *buf, size_t len)
{
        if (!state_name_ok(name))
                return -EINVAL;
        uid_t uid;
        gid_t gid;
        owner_for_new_files(q, &uid, &gid);
        return file_replace_durable_owned(q->state_fd, name, buf, len, uid, gid);
}

int queue_state_replace(struct queue *q, const char *name, const void *buf, size_t len)
{
        if (!state_name_ok(name))
                return -EINVAL;
        char tmp[STATE_NAME_MAX + 8];
        snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
        uid_t uid;
        gid_t gid;
        owner_for_new_files(q, &uid, &gid);
        _cleanup_close_ int fd =
            openat(q->state_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        int r = 0;
        if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) < 0)
                r = -errno;
        if (r == 0)
                r = fd_write_all(fd, buf, len);
        if (r == 0 && renameat(q->state_fd, tmp, q->state_fd, name) < 0)
                r = -errno;
        if (r < 0)
                unlinkat(q->state_fd, tmp, 0);
        return r;
}

int queue_state_read(struct queue *q, const char *name, size_t limit, char **out, size_t *len)
{
        if (!state_name_ok(name))
                return -EINVAL;
        return file_read_all_nofollow_at(q->state_fd, name, limit, out, len);
}

/* ---- one tarryd per spool ---- */

/* The pid written in a lock file, or 0 if it says nothing usable. */
static pid_t lock_holder(int fd)
{
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
                return 0;
        buf[n] = '\0';
        char *end;
        long pid = strtol(buf, &end, 10);
        return pid > 0 && pid <= INT_MAX && (*end == '\n' || *end == '\0') ? (pid_t)pid : 0;
}

int queue_lock(struct queue *q, pid_t *holder)
{
        *holder = 0;
        if (q->lock_fd >= 0)
                return 0;
        _cleanup_close_ int fd =
            openat(q->state_fd, QUEUE_LOCK_FILE, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
                return -EPERM; /* not a file tarry made: touch nothing */
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK)
                        return -errno;
                *holder = lock_holder(fd);
                return -EBUSY;
        }
        char pid[32];
        int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
        int r = give_to_owner(q, fd);
        if (r == 0 && (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n))
                r = -errno;
        if (r < 0)
                return r;
        q->lock_fd = TAKE_FD(fd);
        return 0;
}

/* ---- the spool's own folders, for the daemon's start as root ---- */

size_t queue_folders(const struct queue *q, struct queue_folder out[QUEUE_FOLDERS_MAX])
{
        size_t n = 0;
        out[n++] = (struct queue_folder){".", q->root_fd, QUEUE_FOLDER_PRIVATE};
        out[n++] = (struct queue_folder){"tmp", q->tmp_fd, QUEUE_FOLDER_PRIVATE};
        out[n++] = (struct queue_folder){"state", q->state_fd, QUEUE_FOLDER_PRIVATE};
        for (int i = 0; i < QUEUE__DIR_MAX; i++)
                out[n++] = (struct queue_folder){dir_names[i], q->dir_fd[i], QUEUE_FOLDER_PRIVATE};
        if (q->maildrop_fd >= 0)
                out[n++] = (struct queue_folder){QUEUE_MAILDROP_DIR, q->maildrop_fd,
                                                 QUEUE_FOLDER_MAILDROP};
        if (q->lock_fd >= 0)
                out[n++] = (struct queue_folder){"state/" QUEUE_LOCK_FILE, q->lock_fd,
                                                 QUEUE_FOLDER_PRIVATE};
        return n;
}

int queue_state_remove(struct queue *q, const char *name)
{
        if (!state_name_ok(name))
                return -EINVAL;
        if (unlinkat(q->state_fd, name, 0) < 0)
                return -errno;
        return dir_fsync(q->state_fd);
}
