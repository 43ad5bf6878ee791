/* cleanup/cleanup.h — what tarryd does to a message as it takes it in
 * (Postfix's cleanup(8), the parts tarry needs).
 *
 * Input: the envelope of a message just picked up, the number of Received:
 * fields in its body (cleanup_count_hops) and a small policy (myhostname,
 * adminaddr, hopcount_limit). No clock: the result depends on these alone
 * (the Received: date is the message's arrival), so a caller may derive it
 * again instead of writing it at once.
 * Output: the same envelope, changed in memory only:
 *   - recipients whose domain is local (none, myhostname, "localhost") are
 *     replaced by the adminaddr list when one is set; the original address is
 *     kept as ORCPT and shown in an X-Original-To: header;
 *   - env->headers gets a Received: header (RFC 5321 4.4) as Postfix writes
 *     for a local submission, and those X-Original-To: lines; the body file
 *     stays as it was (immutable), the lines go on the wire ahead of it;
 *   - a message whose header block already holds hopcount_limit or more
 *     Received: fields is a mail loop: every recipient fails with 5.4.6.
 * env->headers != NULL means "done": running it twice changes nothing.
 */
#ifndef TARRY_CLEANUP_H
#define TARRY_CLEANUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "queue/queue.h"

/* Header bytes read from the body to count Received: fields; a header block
 * longer than this is counted up to here. */
#define CLEANUP_HEADER_SCAN_MAX (1024u * 1024u)
/* X-Original-To: lines written at most (one per local recipient). */
#define CLEANUP_ORIGINAL_TO_MAX 20

struct cleanup_policy {
        const struct tarry_config *cfg; /* myhostname, adminaddr, hopcount_limit */
};

struct cleanup_result {
        int hops;            /* Received: fields found in the body's header block */
        bool loop;           /* hops >= hopcount_limit: every recipient failed, 5.4.6 */
        size_t n_rewritten;  /* local recipients sent to adminaddr */
        char loop_text[128]; /* the reason recorded on the recipients */
};

/* Count the Received: header fields of the message in fd (pread from offset
 * 0; the header block ends at the first empty line). 0 or a negative errno. */
int cleanup_count_hops(int fd, uint64_t size, int *hops);

/* Same, for a message in memory (tests). */
int cleanup_count_hops_mem(const char *data, size_t len, int *hops);

/* Take a message in (see the top of this file). hops: from
 * cleanup_count_hops (0 when the hop limit was checked before). 0 (also when env->headers was
 * already set: nothing done, *res zeroed), -ENOMEM, -E2BIG (too many recipients after rewriting),
 * -EINVAL (bad arguments). Nothing is changed on failure. */
int cleanup_message(struct envelope *env, int hops, const struct cleanup_policy *p,
                    struct cleanup_result *res);

#endif
