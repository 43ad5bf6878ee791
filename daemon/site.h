/* daemon/site.h — which receiving site a recipient domain's mail goes to.
 *
 * A site is what the scheduler keys destinations by for MX routes: the
 * provider whose MX patterns match one of the domain's MX hosts
 * ("site:microsoft-365"), else the sorted set of MX host names
 * ("site:mx1.example.net,mx2.example.net"). The MX set is resolved with
 * c-ares (smtpc/dns.h) on tarryd's loop and cached: SITE_CACHE_MAX domains,
 * each for the smallest TTL of its MX answer, at least [smtp]
 * mx_cache_min_ttl and at most SITE_TTL_MAX_S, failures for SITE_FAIL_TTL_S.
 * Until it expires the set is also what the domain's attempts are sent to
 * (site_mx), so delivery goes where the site was chosen by. A domain whose lookup fails
 * (temporary failure, NXDOMAIN, null MX) is a site of its own, keyed by its
 * route ("mx:example.com"): its mail is attempted as before and smtpc's own
 * lookup defers (4.4.3) or bounces (5.4.4) it, so nothing waits on the cache.
 * relayhost and [transport] routes are not looked up: each is its own site.
 */
#ifndef TARRY_DAEMON_SITE_H
#define TARRY_DAEMON_SITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "config/config.h"
#include "scheduler/scheduler.h"
#include "smtpc/smtpc.h"

#define SITE_CACHE_MAX  100000 /* domains remembered; the oldest go first */
#define SITE_TTL_MAX_S  86400  /* an MX set is kept at most this long, whatever its TTL */
#define SITE_FAIL_TTL_S 60     /* a failed lookup is tried again after this */
#define SITE_KEY_MAX    SMTPC_DEST_MAX

struct site_cache;

/* Called from the loop when the lookup of domain has finished (the key is
 * then known to site_lookup). */
typedef void (*site_ready_fn)(void *userdata, const char *domain);

/* A cache on loop e, resolving through cfg's dns_servers. 0 or -errno. */
int site_cache_new(sd_event *e, const struct tarry_config *cfg, site_ready_fn ready, void *userdata,
                   struct site_cache **out);
/* Pending lookups are dropped without calling ready. NULL is fine. */
void site_cache_free(struct site_cache *c);

/* The site key for recipients routed by route. Not an MX route: the route's
 * own key, 1. MX route: 1 with the key when the domain's MX set is known
 * (provider looked up in cls); 0 while it is being looked up, the first time
 * or again once its TTL has passed (started now if needed: ready() follows),
 * with the route's key in key; -ENOMEM. */
int site_lookup(struct site_cache *c, const struct sched_classifier *cls,
                const struct smtpc_route *route, int64_t now_us, char *key, size_t keylen);

/* The MX set the domain of an MX route is cached with, while its TTL lasts:
 * the count put in out[] (at most max); 0 when not known, expired, or the
 * domain has no MX records (the attempt then looks them up itself). */
size_t site_mx(struct site_cache *c, const struct smtpc_route *route, int64_t now,
               struct smtpc_mx *out, size_t max);

/* A new [smtp] mx_cache_min_ttl (reload); applies to answers from now on. */
void site_cache_set_min_ttl(struct site_cache *c, int64_t min_ttl_s);

/* The provider of a site key ("site:NAME"), or NULL. */
const struct sched_provider *site_provider(const struct sched_classifier *cls, const char *key);

#endif
