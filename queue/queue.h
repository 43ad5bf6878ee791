/* queue/queue.h — the durable spool: queue IDs, messages, envelopes, recovery.
 *
 * A queued message is a directory named after its queue ID holding two files:
 *   body      the message bytes exactly as they will be sent (CRLF), immutable
 *   envelope  JSON (Jansson): sender, recipients and their state, DSN flags
 * Spool layout (all under spool_dir):
 *   tmp/       submissions being written where O_TMPFILE is refused (each
 *              locked by its writer); elsewhere a draft has no name
 *   incoming/  committed by sendmail, not yet picked up by tarryd
 *   active/    owned by tarryd: messages with recipients still to deliver
 *   hold/      put aside by an administrator
 *   corrupt/   quarantined: an unreadable envelope, never silently dropped
 *   state/     other durable state (learned.json of the scheduler)
 * A message exists once its directory is renamed out of tmp/ and the parent is
 * fsynced; it is then whole. Envelope updates replace the file atomically.
 * Knows nothing of SMTP or reply classes: those are opaque strings here.
 */
#ifndef TARRY_QUEUE_H
#define TARRY_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#define QUEUE_ID_LEN       16 /* 16 upper-case hex digits, sortable by arrival */
#define ENVELOPE_VERSION   1
#define ENVELOPE_MAX_BYTES (16u << 20) /* refuse to load larger envelope files */

enum queue_dir {
        QUEUE_INCOMING,
        QUEUE_ACTIVE,
        QUEUE_HOLD,
        QUEUE_CORRUPT,
        QUEUE__DIR_MAX,
};

enum rcpt_state {
        RCPT_PENDING,   /* never attempted */
        RCPT_DEFERRED,  /* attempted, temporary failure: will be retried */
        RCPT_DELIVERED, /* the receiver said 250 */
        RCPT_FAILED,    /* permanent failure or expired: a DSN may be due */
};

/* RFC 3461 NOTIFY bits; 0 means "not given" (default: FAILURE|DELAY). */
enum {
        NOTIFY_NEVER = 1 << 0,
        NOTIFY_SUCCESS = 1 << 1,
        NOTIFY_FAILURE = 1 << 2,
        NOTIFY_DELAY = 1 << 3,
};

enum dsn_ret {
        DSN_RET_DEFAULT, /* not given: tarry returns headers only */
        DSN_RET_HDRS,
        DSN_RET_FULL,
};

struct envelope_rcpt {
        char *address;
        char *orcpt;     /* RFC 3461 ORCPT ("rfc822;user@example.com"), or NULL */
        unsigned notify; /* NOTIFY_* bits */
        enum rcpt_state state;
        int attempts;
        int64_t first_attempt_us; /* 0: never */
        int64_t last_attempt_us;
        int64_t next_attempt_us; /* when deferred */
        int64_t first_deferral_us;
        int reply_code;    /* last basic code (0: none yet) */
        char *dsn_status;  /* last enhanced status "4.7.1", or NULL */
        char *last_reply;  /* last reply text, multi-line joined, or NULL */
        char *reply_class; /* class name assigned by the scheduler, or NULL */
        char *rule;        /* classifier rule that matched, or NULL */
        char *relay;       /* "host[ip]:port" of the last attempt, or NULL */
        bool failure_dsn_sent;
        int failed_retries; /* scheduled retries that failed (not flush, -i, release) */
        char *next_reason;  /* where next_attempt_us came from ("hint"...), or NULL */
        /* delivered with NOTIFY=SUCCESS to a server that does not offer DSN:
         * the "relayed" DSN (RFC 3461 section 4.1) is still to be queued */
        bool relayed_dsn_owed;
};

/* Whether tarryd signed the message with DKIM (dkim/dkim.h) as it took it
 * in. SIGNED: env->headers starts with the DKIM-Signature: lines, which
 * cover the body file byte for byte, so whoever sends it must not change the
 * body (no 8-bit to quoted-printable conversion: refuse, 5.6.3). Decided
 * once, just before the first attempt, and persisted with its outcome. */
enum envelope_dkim {
        ENVELOPE_DKIM_UNDECIDED, /* not taken in that far yet */
        ENVELOPE_DKIM_SIGNED,
        ENVELOPE_DKIM_UNSIGNED, /* no key for its From: domain (or no From:) */
};

struct envelope {
        int version;
        char id[QUEUE_ID_LEN + 1];
        char *sender;       /* "" for the null sender <> */
        char *full_name;    /* sendmail -F, or NULL */
        int64_t arrival_us; /* time of the commit */
        uint64_t size;      /* body bytes */
        uid_t uid;          /* submitting user */
        char *user;
        enum dsn_ret ret;
        char *envid;          /* RFC 3461 ENVID, or NULL */
        char *source_address; /* pinned at the first attempt, or NULL */
        bool delay_dsn_sent;
        bool is_dsn; /* a report tarry generated itself */
        /* is_dsn and addressed to the postmaster about a DSN that could not be
         * delivered: if this fails too, nobody else is told (it goes to hold/) */
        bool postmaster_notice;
        /* Header lines tarryd put before the body at pickup (Received:,
         * X-Original-To:), CRLF-terminated, sent ahead of the immutable body
         * file; NULL until the message was picked up (cleanup.h). */
        char *headers;
        enum envelope_dkim dkim;
        size_t n_rcpt;
        struct envelope_rcpt *rcpt;
};

/* ---- envelopes in memory ---- */

struct envelope *envelope_new(void);
void envelope_free(struct envelope *env);
/* Free one recipient's strings (the recipient itself is not freed). */
void envelope_rcpt_clear(struct envelope_rcpt *r);
/* Append a recipient (address is copied); returns it, or NULL on ENOMEM. */
struct envelope_rcpt *envelope_add_rcpt(struct envelope *env, const char *address);
/* Serialise / parse. Parsing validates every field (types, state names,
 * addresses) and fails with -EBADMSG and a reason in why (static string). */
json_t *envelope_to_json(const struct envelope *env);
int envelope_from_json(const char *text, size_t len, struct envelope **out, const char **why);
const char *rcpt_state_name(enum rcpt_state s);

/* ---- the spool ---- */

struct queue;

enum {
        QUEUE_OPEN_CREATE = 1 << 0, /* create spool_dir and its folders if missing */
        /* sendmail: open only incoming/ (and tmp/ when a draft needs it);
         * the handle can begin, write, commit and abort drafts, nothing else */
        QUEUE_OPEN_SUBMIT = 1 << 1,
};

int queue_open(const char *spool_dir, int flags, struct queue **out);
void queue_close(struct queue *q);
int queue_dir_fd(const struct queue *q, enum queue_dir d);
const char *queue_dir_name(enum queue_dir d);

/* A fresh queue ID: 8 hex digits of seconds, 5 of microseconds, 3 random. */
int queue_new_id(char out[QUEUE_ID_LEN + 1]);
bool queue_id_valid(const char *id);
/* The time a valid ID was made, in µs since the epoch (its first 13 digits). */
int64_t queue_id_time_us(const char *id);

/* Submission: write the body in pieces, then commit with its envelope.
 * Nothing is visible in incoming/ until commit returns 0. The draft is an
 * unnamed file (O_TMPFILE) in incoming/ that the commit links in under its
 * ID, so abort or a crash leaves no name anywhere; where the filesystem
 * refuses O_TMPFILE it is a locked tmp/ entry, which recovery removes. */
struct queue_draft;
int queue_draft_begin(struct queue *q, struct queue_draft **out);
int queue_draft_write(struct queue_draft *d, const void *buf, size_t len);
uint64_t queue_draft_size(const struct queue_draft *d);
/* Fills env->id, env->size and env->arrival_us, writes the envelope, fsyncs and
 * links (or renames) the message into incoming/, fsyncs incoming/. A name
 * already in incoming/ gets the message another ID. Frees the draft whatever
 * the outcome. */
int queue_draft_commit(struct queue_draft *d, struct envelope *env);
void queue_draft_abort(struct queue_draft *d);
/* queue_draft_commit, keeping env->id and env->arrival_us as given (tarryd,
 * for a maildrop record whose ID its sendmail already reported): -EEXIST when
 * a message in any folder has that ID, -EINVAL for a malformed one. */
int queue_draft_commit_as(struct queue_draft *d, struct envelope *env);
/* Does a message in any folder have this ID? */
bool queue_id_in_use(struct queue *q, const char *id);

/* Convenience for whole bodies in memory (DSNs, tests): begin+write+commit into dir. */
int queue_enqueue(struct queue *q, enum queue_dir dir, struct envelope *env, const void *body,
                  size_t len);

/* Call cb for each message ID in d (unsorted). A non-zero return from cb stops the walk
 * and is returned. */
int queue_scan(struct queue *q, enum queue_dir d, int (*cb)(const char *id, void *userdata),
               void *userdata);

/* Load an envelope. -ENOENT if the message is gone; -EBADMSG if it is unreadable
 * (why says how): the caller quarantines it with queue_move(…, QUEUE_CORRUPT). */
int queue_load(struct queue *q, enum queue_dir d, const char *id, struct envelope **out,
               const char **why);

/* queue_load and, for a message file, queue_open_body at once (*fd and
 * *size as there, the caller's on success): a message file is opened and its
 * trailer read once. For a message folder *fd is -1 (the body not opened:
 * queue_open_body when it is needed). */
int queue_load_body(struct queue *q, enum queue_dir d, const char *id, struct envelope **out,
                    int *fd, uint64_t *size, const char **why);

/* Atomically replace the envelope of a message in d (write, fsync, rename, fsync). */
int queue_update(struct queue *q, enum queue_dir d, const struct envelope *env);

/* Open the body read-only; *size gets its length. */
int queue_open_body(struct queue *q, enum queue_dir d, const char *id, int *fd, uint64_t *size);

/* Move a message between folders (rename + fsync of both). From incoming/
 * to anywhere but corrupt/, an entry that is neither a message file nor a
 * folder (a symlink, a FIFO: nothing sendmail makes) is refused with
 * -EBADMSG and left where it is. */
int queue_move(struct queue *q, const char *id, enum queue_dir from, enum queue_dir to);

/* Remove a message for good (when nothing is left to deliver, or on delete). */
int queue_remove(struct queue *q, enum queue_dir d, const char *id);

/* Removal in two steps, for tarryd, whose loop must not wait on the disk.
 * queue_discard takes a finished message out of d at once: one rename into
 * tmp/ as NAME ("del-ID-RND", RND three random hex digits). From then on it
 * is out of the queue: a crash of tarryd leaves it in tmp/, where recovery
 * removes it; it is never delivered again. queue_purge_discarded (on a
 * thread of tarryd's own: it changes nothing the loop's calls use) fsyncs d
 * and tmp/ once for the whole batch and only then deletes each NAME's files.
 * Returns 0 or the first error; whatever is left in tmp/ is recovery's. */
#define QUEUE_DISCARD_NAME_MAX 32
int queue_discard(struct queue *q, enum queue_dir d, const char *id,
                  char name[QUEUE_DISCARD_NAME_MAX]);
int queue_purge_discarded(struct queue *q, enum queue_dir d, const char *const *names, size_t n);
/* The same for a message file never rewritten since its pickup (the common
 * case: delivered at its first attempt), cheaper still: queue_discard_file
 * unlinks d/ID at once (no rename, nothing in tmp/); fd, open on that file,
 * stays the caller's, and while it is open the file's blocks are not freed.
 * A folder is refused with -EISDIR (use queue_discard). queue_purge_unlinked
 * (on the remover's thread) fsyncs d once for the batch and only then closes
 * the fds, the files' last references: the unlinks are durable before the
 * blocks are freed. A kill leaves nothing (the kernel closes the fds); a
 * machine crash before the fsync can bring the whole message back to d (at
 * least once), never a name without its file. Returns the fsync's error;
 * every fd is closed either way. */
int queue_discard_file(struct queue *q, enum queue_dir d, const char *id, int fd);
int queue_purge_unlinked(struct queue *q, enum queue_dir d, const int *fds, size_t n);

/* Batching for tarryd: with it on, queue_move and queue_remove leave the fsync
 * of the folders they changed to queue_sync(), which the daemon calls once per
 * loop iteration; a burst of pickups or removals then costs one fsync per
 * folder. Message contents and envelope updates are always synced at once,
 * and a crash before queue_sync can only undo a move (the message is whole in
 * its former folder), never lose a message. Off by default. */
void queue_set_batched_dirsync(struct queue *q, bool on);
/* 0, or the first error; a folder that failed stays due for the next call. */
int queue_sync(struct queue *q);

/* Root writing a spool owned by another user (sendmail or tarryq run by root
 * while tarryd runs as its user) gives every folder and file it creates to
 * the owner of spool_dir, before the rename that makes it visible: tarryd
 * must be able to move, read and remove it. */

/* ---- one tarryd per spool ----
 *
 * tarryd holds an flock on state/tarryd.lock (holding its pid) for its whole
 * life. 0 once held (until queue_close); -EBUSY with *holder = the pid the
 * file names (0 if unknown) when another process holds it; -EPERM when the
 * lock file is not a regular single-link file. */
#define QUEUE_LOCK_FILE "tarryd.lock"
int queue_lock(struct queue *q, pid_t *holder);

/* The spool's folders (and the lock file once held), as opened: for tarryd
 * started as root, which gives them to its user. name is relative to
 * spool_dir ("." for spool_dir itself). */
enum queue_folder_kind {
        QUEUE_FOLDER_PRIVATE,  /* the daemon's user and group */
        QUEUE_FOLDER_MAILDROP, /* the daemon's user, group tarrydrop */
};
struct queue_folder {
        const char *name;
        int fd;
        enum queue_folder_kind kind;
};
#define QUEUE_FOLDERS_MAX    (QUEUE__DIR_MAX + 5)
#define QUEUE_MAILDROP_GROUP "tarrydrop"
size_t queue_folders(const struct queue *q, struct queue_folder out[QUEUE_FOLDERS_MAX]);

/* Start-up recovery: remove abandoned tmp/ entries (whose writer is gone).
 * Returns the number removed. */
int queue_recover_tmp(struct queue *q);

/* ---- the maildrop: submissions by users who cannot write the spool ----
 *
 * maildrop/ (mode 1730, group tarrydrop: sticky, group-writable, not
 * readable) takes submissions from `sendmail` run set-group-ID tarrydrop by
 * any local user. Each sendmail process creates ONE drop file there under
 * an unguessable name (created as .tmp-NAME, flock()ed, made 0644, renamed
 * to NAME) and keeps it locked while it runs; each message it accepts is
 * appended as one record:
 *     "tarry-drop 1 " BODY_LEN (20 digits) " " ENV_LEN (10 digits) "\n"
 *     BODY_LEN bytes of body, ENV_LEN bytes of envelope JSON
 * While a record is written its header reads "tarry-open 1" (padded to the
 * same 45 bytes); the real header is written only after body and envelope
 * are fdatasync()ed, and fdatasync()ed in turn (the first record also runs
 * syncfs(), as maildrop/ cannot be opened by the submitter to be fsynced).
 * A failed record is cut off (ftruncate), so a drop file is a run of whole
 * records, then at most one unfinished one from a writer that died.
 *
 * tarryd takes a drop file once its writer is gone (the lock is free): it
 * treats it as untrusted input (queue_maildrop_take), copies every whole
 * record into incoming/ as a new message, then unlinks it. The submitter
 * is the file's owner (fstat), never anything written inside it.
 */
#define QUEUE_MAILDROP_DIR  "maildrop"
#define MAILDROP_DIR_MODE   01730
#define MAILDROP_FILE_MODE  0644 /* readable by tarryd; hidden by the unreadable folder */
#define MAILDROP_NAME_LEN   32   /* hex digits: 128 random bits */
#define MAILDROP_TMP_PREFIX ".tmp-"
#define MAILDROP_MAGIC      "tarry-drop 1"
#define MAILDROP_OPEN_MAGIC "tarry-open 1"
#define MAILDROP_HEADER_LEN 45

/* sendmail, for a user who cannot write the spool: open spool_dir/maildrop
 * and create this process's drop file (needs the tarrydrop group for this
 * call only). Drafts on the returned handle (queue_draft_begin/write/commit,
 * one at a time) append records; commit returns 0 only once the record is
 * durable. Nothing else may be called on it but queue_close. */
int queue_open_maildrop(const char *spool_dir, struct queue **out);
bool queue_is_maildrop(const struct queue *q);

/* tarryd: the maildrop/ folder of a spool opened with queue_open (-ENOENT
 * when the spool has none). */
int queue_maildrop_fd(const struct queue *q);

/* Called for each record before it is queued: env holds what the record
 * says (sender, full_name, ret, envid, recipients with notify and orcpt;
 * addresses already re-checked with addr_check) and uid = the drop file's
 * owner; user is NULL for the callback to fill. Return 0 to queue it, or
 * -EPERM / -EBADMSG with *why set to refuse the whole file. */
typedef int (*maildrop_check_fn)(struct envelope *env, void *userdata, const char **why);

struct maildrop_result {
        int queued;                    /* records committed into incoming/ by this call */
        int already;                   /* records found queued before (a take cut short) */
        bool unfinished;               /* a record its writer never finished was dropped */
        const char *why;               /* -EBADMSG/-EPERM: why the file went to corrupt/ */
        int quarantine_error;          /* and 0, or why it could not be moved there */
        char ids[8][QUEUE_ID_LEN + 1]; /* the first queue IDs given, for logs */
};

/* Take maildrop/name (name as listed in the folder). Returns 0 with the file
 * consumed (every whole record queued into incoming/, then unlinked);
 * -EBUSY while its writer still holds it; -ENOENT when it is gone;
 * -EBADMSG or -EPERM when it is not a drop file tarry can trust (not a
 * regular single-link file, bad header, lengths over body_max or the
 * envelope limit, bad envelope, more records than max_messages, refused by
 * check): it is then moved to corrupt/maildrop-NAME (unless
 * res->quarantine_error) and res->why says why (records before the bad one
 * stay queued); other negative errnos for I/O trouble (file left in place).
 * Names starting with ".tmp-" are taken only once older than an hour (a
 * sendmail that died before locking); then they are just removed.
 *
 * Each record's body is normalised as sendmail normalises its standard
 * input (LF or CRLF end a line, stored as CRLF; a bare CR is data; lines
 * over 998 bytes folded; a last line gets its CRLF): the file is untrusted,
 * and a bare LF passed on would let it smuggle a second message past the
 * next hop. A record keeps the queue ID its sendmail gave it (and reported:
 * `-bs` "queued as") when the ID is well formed, its time lies between the
 * file's creation and now, and no message has it; else it gets a fresh one. */
int queue_maildrop_take(struct queue *q, const char *name, uint64_t body_max,
                        maildrop_check_fn check, void *userdata, struct maildrop_result *res);

/* Where a take stopped: taking the same file again from here queues only the
 * rest, so nothing is queued twice. The drop file is identified by its inode. */
struct maildrop_resume {
        uint64_t ino;
        uint64_t offset; /* 0: from the start */
        uint64_t count;  /* records before offset */
};

struct maildrop_take_opts {
        uint64_t body_max;     /* largest record body */
        uint64_t max_messages; /* records one drop file may hold; 0: no limit */
        unsigned batch;        /* records per call; 0: all of them */
        maildrop_check_fn check;
        void *userdata;
};

/* One bounded step of a take, for an event loop: queues at most o->batch
 * records from where the last step stopped, then returns -EINPROGRESS (call
 * again to go on). The resume point is kept durably in state/maildrop-NAME,
 * written after the records it covers are committed; records past it that a
 * crash left queued are recognised by their queue ID and not queued again.
 * *resume (kept by the caller across calls) is a fallback for when that file
 * cannot be written (a full disk): it is set to where a failed or partial
 * step stopped, and zeroed when the file is done with. Other returns as
 * queue_maildrop_take. */
int queue_maildrop_take_step(struct queue *q, const char *name, struct maildrop_resume *resume,
                             const struct maildrop_take_opts *o, struct maildrop_result *res);

/* queue_maildrop_take_step with no batch bound and no message limit. */
int queue_maildrop_take_resume(struct queue *q, const char *name, struct maildrop_resume *resume,
                               uint64_t body_max, maildrop_check_fn check, void *userdata,
                               struct maildrop_result *res);

/* ---- listings (tarryq -p/-j, the status endpoint) ---- */

/* Is r still to be delivered (pending or deferred)? */
bool queue_rcpt_waiting(const struct envelope_rcpt *r);
/* The "(reason)" of a deferred recipient as postqueue shows it ("" when none). */
const char *queue_delay_reason(const struct envelope_rcpt *r, char *buf, size_t len);
/* ISO 8601 local time with zone ("2026-12-07T14:05:00+01:00") of a time in
 * microseconds; "" when it cannot be shown. buf: at least 26 bytes. */
const char *queue_iso_time(int64_t us, char *buf, size_t len);
/* Where a waiting recipient's next attempt comes from (next_attempt_reason):
 * its recorded reason, "first_attempt" when never tried, "manual_hold" in
 * hold (queue_name "hold"). Static string or r->next_reason. */
const char *queue_wait_reason(const struct envelope_rcpt *r, const char *queue_name);
/* The text of a waiting recipient's "(reason)" line: the delay reason, plus
 * the destination's suspension or back-off; "not tried yet" or the wait's
 * reason when there is no reply yet. Never "". */
const char *queue_wait_words(const struct envelope_rcpt *r, const char *queue_name, char *buf,
                             size_t len);
/* The sender as listings show it: MAILER-DAEMON for the null sender. */
const char *queue_sender_shown(const struct envelope *env);
/* The postqueue -j object of a message (queue_name, queue_id, arrival_time,
 * message_size, forced_expire, sender, recipients[{address, delay_reason,
 * class, next_attempt, next_attempt_time, next_attempt_reason, attempts}])
 * plus class, next_attempt, next_attempt_time, next_attempt_reason, attempts
 * (docs/status.md). */
json_t *queue_listing_json(const char *queue_name, const struct envelope *env);

/* ---- the index snapshot (state/index.snap) ----
 *
 * tarryd's summary of every queued message, so that a big queue is ready
 * without reading each envelope: ID, folder, class, pending count, size,
 * arrival, earliest next attempt, the submitter's uid, and its scheduler items (due time,
 * destination, source address). Built with queue_snap_begin/add/finish and
 * written with queue_state_write; read with queue_state_read and
 * queue_snap_parse. It is advice: a record may be stale (the envelope is
 * read before every attempt), but a message never needs it to be found. */
#define QUEUE_SNAP_FILE        "index.snap"
#define QUEUE_SNAP_WORKS_MAX   16
#define QUEUE_SNAP_UID_UNKNOWN UINT32_MAX /* (uid_t)-1, never a user: not known yet */
struct queue_snap_rec {
        char id[QUEUE_ID_LEN + 1];
        enum queue_dir dir; /* QUEUE_ACTIVE or QUEUE_HOLD */
        int8_t reply_class; /* -1: none */
        uint32_t n_pending;
        uint64_t size;
        int64_t arrival_us;
        int64_t next_attempt_us;
        uint32_t uid; /* the envelope's uid; QUEUE_SNAP_UID_UNKNOWN (a TARRYIX1/2 file) */
        unsigned n_works;
        struct {
                int64_t due_us;
                char destination[256];
                char source[256]; /* "" when none */
        } works[QUEUE_SNAP_WORKS_MAX];
};
struct queue_snap_writer;
/* The fingerprint of what the records depend on (the configuration's text):
 * a snapshot written under another one is refused (-ESTALE). */
uint64_t queue_snap_fingerprint(const void *data, size_t len);
int queue_snap_begin(uint64_t fingerprint, size_t expected, struct queue_snap_writer **out);
/* -EINVAL for a record that cannot be written (more works than the limit,
 * a destination over 255 bytes): leave it out, it is read from its envelope. */
int queue_snap_add(struct queue_snap_writer *w, const struct queue_snap_rec *r);
/* The file's bytes (malloc'd, *buf); frees the writer. */
int queue_snap_finish(struct queue_snap_writer *w, char **buf, size_t *len);
void queue_snap_abort(struct queue_snap_writer *w);
/* The record count a snapshot's header claims (0 without a header): a
 * hint to reserve room before queue_snap_parse has checked anything. */
size_t queue_snap_count(const char *buf, size_t len);
/* A snapshot read a record at a time (tarryd applies the records in slices
 * after READY): the file's bytes stay the caller's, the cursor points into
 * them. A copy of a cursor reads the same records again. */
struct queue_snap_cursor {
        const unsigned char *p, *end;
        uint64_t left; /* records not yet read */
        bool has_uid;  /* TARRYIX3 */
};
/* Check the header, the checksum and the fingerprint, and set c before the
 * first record: -EBADMSG (why says how) for a file that is not whole,
 * -ESTALE for another configuration's. */
int queue_snap_open(const char *buf, size_t len, uint64_t fingerprint, struct queue_snap_cursor *c,
                    const char **why);
/* The record at c into *r and c past it: 1; 0 after the last one (the file
 * used to its end); -EBADMSG (why) for a record that does not hold (then
 * the ones before it were good: the checksum held). */
int queue_snap_next(struct queue_snap_cursor *c, struct queue_snap_rec *r, const char **why);
/* Check the header, the checksum and the fingerprint, then call cb for each
 * record (a non-zero return stops and is returned). -EBADMSG (why says how)
 * for a file that is not whole, -ESTALE for another configuration's. */
int queue_snap_parse(const char *buf, size_t len, uint64_t fingerprint,
                     int (*cb)(const struct queue_snap_rec *r, void *userdata), void *userdata,
                     const char **why);

/* Durable small state files under state/ (e.g. the scheduler's learned.json). */
int queue_state_write(struct queue *q, const char *name, const void *buf, size_t len);
int queue_state_read(struct queue *q, const char *name, size_t limit, char **out, size_t *len);
/* Replace a state file atomically without waiting for the disk: for advice
 * that a reader checks anyway (index.snap carries a checksum), where a crash
 * may leave the old file, or none, but never half of the new one in its place
 * unnoticed. */
int queue_state_replace(struct queue *q, const char *name, const void *buf, size_t len);
/* Remove one durably (-ENOENT when there is none). */
int queue_state_remove(struct queue *q, const char *name);

#endif
