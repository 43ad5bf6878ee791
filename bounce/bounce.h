/* bounce/bounce.h — delivery status notifications (RFC 3464, RFC 3461 NOTIFY/RET/ENVID/ORCPT).
 *
 * Input: an envelope with per-recipient outcomes (state, attempts, last reply,
 * class, relay), the original message (an fd or a buffer), a small policy
 * (myhostname, queue lifetime, delay threshold, RET=FULL size cap) and the clock.
 * Output: decisions (is the one "delayed" DSN due? which failures still need a
 * report?) and complete DSN messages (CRLF, multipart/report) with the envelope
 * to queue them under: null sender <>, is_dsn, one recipient = original sender.
 * Delivers nothing itself: dsn_commit() queues the report with queue_enqueue(),
 * then marks it on the original envelope (dsn_mark_sent) and persists that
 * (queue_update), which is what makes "one delayed DSN per message" hold
 * across restarts.
 * Loops: never a DSN about a message whose sender is <> or which is itself a DSN.
 * Everything taken from remote replies is sanitised before it reaches a header.
 */
#ifndef TARRY_BOUNCE_H
#define TARRY_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "queue/queue.h"

/* RET=FULL returns the whole original only up to this size (Postfix's
 * bounce_size_limit); larger originals come back as headers with a note. */
#define DSN_RETURN_FULL_LIMIT_DEFAULT (50u * 1000u)
/* The returned header block is cut (at a line end) beyond this. */
#define DSN_HEADERS_LIMIT (64u * 1024u)
/* Remote reply text is shortened to this many bytes before it is reported. */
#define DSN_DIAGNOSTIC_MAX 1000u

enum dsn_kind {
        DSN_DELAYED, /* Action: delayed — still being retried */
        DSN_FAILED,  /* Action: failed — 5xx or queue lifetime expired */
        DSN_RELAYED, /* Action: relayed — delivered with NOTIFY=SUCCESS to a server
                      * without DSN: no success notice will come from further on */
};

struct dsn_policy {
        const char *myhostname;      /* Reporting-MTA, From: MAILER-DAEMON@myhostname */
        const char *postmaster;      /* told about a DSN that cannot be delivered; NULL: none */
        int64_t queue_lifetime_s;    /* Will-Retry-Until = arrival + this */
        int delay_dsn_after_retries; /* N: delayed DSN after N failed scheduled retries; 0: never */
        int64_t delay_dsn_min_age_s; /* ...and once the message is this old; 0: count alone */
        uint64_t return_full_limit;  /* RET=FULL cap in bytes; 0 = DSN_RETURN_FULL_LIMIT_DEFAULT */
};

/* Fill p from the configuration (pointers into cfg: keep cfg alive). */
void dsn_policy_from_config(struct dsn_policy *p, const struct tarry_config *cfg);

/* ---- decisions (pure) ---- */

/* May any DSN be sent about this message? False for sender <>, for DSNs, and
 * for a sender that addr_check() refuses (it would become a RCPT TO). */
bool dsn_may_report(const struct envelope *env);

/* Does the recipient's NOTIFY allow a DSN of this kind? NOTIFY=NEVER: no;
 * NOTIFY not given (0): FAILURE and DELAY; otherwise the listed bits
 * (SUCCESS for DSN_RELAYED). */
bool dsn_rcpt_wants(const struct envelope_rcpt *r, enum dsn_kind kind);

/* Would r be listed in a delayed DSN (deferred and NOTIFY allows DELAY)? */
bool dsn_delay_lists_rcpt(const struct envelope *env, const struct envelope_rcpt *r);

/* Is the one delayed DSN due now? True when the message may be reported on,
 * N = p->delay_dsn_after_retries > 0, env->delay_dsn_sent is false, the
 * message is at least p->delay_dsn_min_age_s old at now_us, and some listable
 * recipient is still deferred after N failed *scheduled* retries
 * (rcpt->failed_retries >= N: a flush, tarryq -i or a release does not
 * count). The DSN then lists every listable deferred recipient. */
bool dsn_delay_due(const struct envelope *env, const struct dsn_policy *p, int64_t now_us);

/* Does r need a failure DSN (FAILED, !failure_dsn_sent, NOTIFY allows FAILURE,
 * and the message may be reported on)? */
bool dsn_failure_needed(const struct envelope *env, const struct envelope_rcpt *r);

/* Number of recipients a failure DSN built now would report (0: none due). */
size_t dsn_failures_pending(const struct envelope *env);

/* Double bounces (Postfix's 2bounce_notice_recipient). A DSN of tarry's own
 * (is_dsn) whose recipient failed (5xx or expiry) is reported once to the
 * postmaster, with the DSN attached; a postmaster notice that fails too, or
 * any undeliverable DSN when no postmaster is set, is for the caller to put
 * in hold/: never deleted. */

/* Recipients of an is_dsn envelope that failed and were not reported yet. */
size_t dsn_undeliverable(const struct envelope *env);

/* May the postmaster be told about env's failures (a postmaster is set and
 * env is a DSN but not itself a postmaster notice)? */
bool dsn_postmaster_may_report(const struct envelope *env, const struct dsn_policy *p);
/* Does r need a "relayed" DSN (DELIVERED, relayed_dsn_owed, NOTIFY has
 * SUCCESS, the message may be reported on)? The daemon sets relayed_dsn_owed
 * when the server that took r did not offer DSN. */
bool dsn_relayed_needed(const struct envelope *env, const struct envelope_rcpt *r);
size_t dsn_relayed_pending(const struct envelope *env);

/* Was r given up on because the queue lifetime ran out? True for FAILED with
 * no 5xx reply code and no 5.x.x dsn_status (a local permanent failure, e.g. a
 * bad address, should carry dsn_status "5.1.3" or similar). Expired recipients
 * are reported with Status: 4.4.7 and their last reply as Diagnostic-Code. */
bool dsn_rcpt_expired(const struct envelope_rcpt *r);

/* ---- building reports ---- */

/* The original message: read from fd with pread (offset 0, the fd's position
 * is not used or moved) when fd >= 0, else from data. size is its length in
 * bytes (queue_open_body gives both). Only the header block is read unless
 * RET=FULL and size <= the cap. The fd stays owned by the caller. A NULL
 * dsn_original (body unreadable) gives a report without the returned part. */
struct dsn_original {
        int fd;
        const void *data;
        uint64_t size;
        /* header lines sent ahead of the body (env->headers), or NULL: the
         * original is prefix + body, as it went on the wire */
        const char *prefix;
        size_t prefix_len;
};

struct dsn_report {
        enum dsn_kind kind;
        char *message;        /* the DSN, RFC 5322 with CRLF line ends, NUL-terminated;
                               * "Content-Transfer-Encoding: 8bit" at the top when the
                               * returned original has 8-bit bytes (send BODY=8BITMIME) */
        size_t len;           /* bytes in message, without the NUL */
        struct envelope *env; /* sender "", is_dsn, one recipient (NOTIFY=NEVER) */
        size_t n_reported;    /* recipients of the original the report covers … */
        size_t *reported;     /* … as indices into the original env->rcpt */
};

/* Build the delayed DSN if dsn_delay_due() says so. Returns 1 and *out on
 * success, 0 with *out = NULL when none is due, or a negative errno
 * (-ENOMEM, -EIO/-errno reading the original, -EINVAL on bad arguments). */
int dsn_build_delayed(const struct envelope *env, const struct dsn_original *orig,
                      const struct dsn_policy *p, int64_t now_us, struct dsn_report **out);

/* Build one failure DSN covering every recipient dsn_failure_needed() selects
 * (those failing in the same attempt share it). Same returns as above. */
int dsn_build_failed(const struct envelope *env, const struct dsn_original *orig,
                     const struct dsn_policy *p, int64_t now_us, struct dsn_report **out);

/* Build the postmaster's notice about an undeliverable DSN env (orig: the
 * DSN itself, attached whole as message/rfc822) when dsn_undeliverable() and
 * dsn_postmaster_may_report() say so: to p->postmaster, sender <>, is_dsn and
 * postmaster_notice set. Its kind is DSN_FAILED: dsn_mark_sent() marks the
 * reported recipients. Same returns as above. */
int dsn_build_postmaster(const struct envelope *env, const struct dsn_original *orig,
                         const struct dsn_policy *p, int64_t now_us, struct dsn_report **out);
/* Build one "relayed" DSN covering every recipient dsn_relayed_needed()
 * selects (Status 2.0.0, the server's reply, the original's headers only).
 * Same returns as above. */
int dsn_build_relayed(const struct envelope *env, const struct dsn_original *orig,
                      const struct dsn_policy *p, int64_t now_us, struct dsn_report **out);

void dsn_report_free(struct dsn_report *r);

/* Queue r into dir (normally QUEUE_INCOMING: picked up like any submission;
 * fills r->env->id), then dsn_mark_sent() and persist env, which lives in
 * env_dir, with queue_update(). Nothing is marked if queueing fails. If the
 * update fails after queueing, the mark stays in memory and the error is
 * returned: after a crash the worst case is a duplicate report, never a lost one. */
int dsn_commit(struct queue *q, enum queue_dir dir, struct dsn_report *r, struct envelope *env,
               enum queue_dir env_dir);

/* After the report was queued: record it on the ORIGINAL envelope (delayed:
 * env->delay_dsn_sent; failed: failure_dsn_sent on each reported recipient).
 * relayed: relayed_dsn_owed cleared on each reported recipient).
 * The caller then persists env with queue_update(). -EINVAL if r does not fit env. */
int dsn_mark_sent(struct envelope *env, const struct dsn_report *r);

#endif
