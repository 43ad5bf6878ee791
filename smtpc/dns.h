/* smtpc/dns.h — turning a route into the hosts to try, with c-ares on sd-event (private).
 *
 * MX route: the 10 most preferred MX records whose names are host names,
 * sorted by preference (equal ones shuffled), each host's A/AAAA; no MX → the domain's own A/AAAA;
 * null MX → DNS_NULL_MX. no_mx route: the host's A/AAAA, or the IP literal itself.
 */
#ifndef TARRY_SMTPC_DNS_H
#define TARRY_SMTPC_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "smtpc/smtpc.h"

#define DNS_MAX_TARGETS 16

struct smtpc_target {
        char host[256];
        char ip[64];
        int family;
        unsigned pref;   /* MX preference (0: no MX record) */
        bool sts_verify; /* MTA-STS enforce: STARTTLS with a certificate verified for host */
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

/* Is name a host name (RFC 1123 labels: letters, digits, inner hyphens; '_'
 * tolerated), at most 253 bytes, an optional final dot? What goes into
 * libcurl's URL must be one: "mx.test/x?y#z" would become a path. */
bool dns_host_name_ok(const char *name);

#endif
