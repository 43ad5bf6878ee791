/* daemon/sitetally.h — per receiving site, the messages and recipient
 * domains waiting for it, kept as works are scheduled and dropped.
 *
 * deliver.c tells it each scheduler item a work gets (site_tally_add) and
 * loses (site_tally_drop); /status reads the rows (site_tally_foreach), so
 * its "sites" cost O(sites), not a walk of the queue. A domain is the
 * route's ("mx:example.com" → "example.com"; a relayhost or [transport]
 * route counts as one domain of its own key). Counts are exact as long as
 * every add that succeeded is matched by one drop with the same strings.
 */
#ifndef TARRY_DAEMON_SITETALLY_H
#define TARRY_DAEMON_SITETALLY_H

#include <stdbool.h>
#include <stddef.h>

struct site_tally;

int site_tally_new(struct site_tally **out);
void site_tally_free(struct site_tally *t);

/* One more work for route at site; first: the message has no other work at
 * this site (it counts once per site). 0 or -ENOMEM (nothing counted). */
int site_tally_add(struct site_tally *t, const char *site, const char *route, bool first);
/* One work fewer; last: the message has no other work left at this site. */
void site_tally_drop(struct site_tally *t, const char *site, const char *route, bool last);

/* Each site with something waiting, in no particular order: its name, how
 * many recipient domains and messages wait for it. Stops at cb's non-zero
 * (and returns that). */
int site_tally_foreach(const struct site_tally *t,
                       int (*cb)(const char *site, size_t domains, size_t messages, void *ud),
                       void *ud);
/* How many sites have something waiting. */
size_t site_tally_count(const struct site_tally *t);

#endif
