/* common/ares_wait.h — drive a c-ares channel in a blocking poll loop.
 *
 * For the few lookups made outside an event loop (tarryq check-sender, an
 * MTA-STS lookup inside one delivery worker's attempt). c-ares bounds the
 * wait itself (timeout × tries); a poll error cancels the queries.
 */
#ifndef TARRY_COMMON_ARES_WAIT_H
#define TARRY_COMMON_ARES_WAIT_H

#include <ares.h>
#include <stdbool.h>

/* Process ch until *done is set by the query's callback (ares_cancel's
 * callbacks set it too); *done is true on return. */
void ares_wait_done(ares_channel ch, bool *done);

/* One query's raw answer, copied out of c-ares' buffer (buf: malloc'd,
 * the caller frees it; NULL unless status is ARES_SUCCESS). */
struct ares_wait_answer {
        bool done;
        int status; /* ARES_SUCCESS, ARES_ENOTFOUND, ARES_ENODATA, ... */
        unsigned char *buf;
        int len;
};

/* ares_query(name, dnsclass, type) on ch, waited for as ares_wait_done. */
void ares_wait_query(ares_channel ch, const char *name, int dnsclass, int type,
                     struct ares_wait_answer *out);

#endif
