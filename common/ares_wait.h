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

#endif
