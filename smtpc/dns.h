/* smtpc/dns.h — turning a route into the hosts to try, with c-ares on sd-event (private).
 *
 * MX route: the 10 most preferred MX records whose names are host names,
 * sorted by preference (equal ones shuffled), each host's A/AAAA; no MX → the domain's own A/AAAA;
 * null MX → DNS_NULL_MX. no_mx route: the host's A/AAAA, or the IP literal itself.
 * Each target carries the TTL of the answer it came from (the MX records'
 * read with glibc's libresolv, since c-ares 1.18's MX parser drops them).
 */
#ifndef TARRY_SMTPC_DNS_H
#define TARRY_SMTPC_DNS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "smtpc/smtpc.h"

#define DNS_MAX_TARGETS 16
#define DNS_TTL_UNKNOWN UINT_MAX /* smtpc_target.ttl: not from a DNS answer */

struct smtpc_target {
        char host[256];
        char ip[64];
        int family;
        unsigned pref;   /* MX preference (0: no MX record) */
        bool sts_verify; /* MTA-STS enforce: STARTTLS with a certificate verified for host */
        /* Seconds the answer may be kept: the smallest TTL of the MX answer's
         * records; without MX records, of the host's address records;
         * DNS_TTL_UNKNOWN for an IP literal or an MX set given by the caller */
        unsigned ttl;
};

enum dns_status {
        DNS_OK,
        DNS_TEMPFAIL, /* SERVFAIL, timeout, no server: try later */
        DNS_NOTFOUND, /* NXDOMAIN or no address at all for a domain that exists */
        DNS_NULL_MX,  /* RFC 7505 */
};

/* why: a Postfix-like reason ("Host or domain name not found. Name service
 * error for name=x type=MX: Host not found"). targets valid during the call. */
typedef void (*dns_done_fn)(void *arg, enum dns_status st, const struct smtpc_target *t, size_t n,
                            const char *why);

struct dns;
struct dns_job;

int dns_new(sd_event *e, char *const *servers, size_t n_servers, struct dns **out);
void dns_free(struct dns *d);

/* 1: done synchronously (cb already called, literal IP); 0: pending, *job set
 * (cb called later from the loop unless dns_job_cancel); negative errno. */
int dns_resolve(struct dns *d, const struct smtpc_route *route, dns_done_fn cb, void *arg,
                struct dns_job **job);
void dns_job_cancel(struct dns_job *job);

/* As dns_resolve, for an MX route whose MX set the caller already has (from
 * a cache kept within the records' TTL): only the addresses of those hosts
 * are looked up (names that are not host names are skipped). No mx, or not an
 * MX route: dns_resolve. */
int dns_resolve_mx(struct dns *d, const struct smtpc_route *route, const struct smtpc_mx *mx,
                   size_t n_mx, dns_done_fn cb, void *arg, struct dns_job **job);

/* Is name a host name (RFC 1123 labels: letters, digits, inner hyphens; '_'
 * tolerated), at most 253 bytes, an optional final dot? What goes into
 * libcurl's URL must be one: "mx.test/x?y#z" would become a path. */
bool dns_host_name_ok(const char *name);

#endif
