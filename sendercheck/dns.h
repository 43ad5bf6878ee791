/* sendercheck/dns.h — private to sendercheck/: blocking DNS queries through
 * c-ares (the resolver tarry already uses), with tarry.conf's dns_servers. */
#ifndef TARRY_SENDERCHECK_DNS_H
#define TARRY_SENDERCHECK_DNS_H

#include <ares.h>
#include <stdbool.h>
#include <stddef.h>

#define SC_DNS_MAX_RR 32

enum sc_dns_status {
        SC_DNS_OK,
        SC_DNS_NXDOMAIN, /* the name does not exist */
        SC_DNS_NODATA,   /* it exists, without records of this type */
        SC_DNS_TEMP,     /* timeout, SERVFAIL, a bad answer */
};

struct sc_dns {
        ares_channel ch;
};

/* The records of one answer: TXT strings (chunks of one record joined), PTR
 * and MX names, A/AAAA addresses as text ("192.0.2.1"). */
struct sc_dns_answer {
        enum sc_dns_status status;
        char *rr[SC_DNS_MAX_RR];
        size_t n;
        /* A/AAAA also in binary, for libspf2 */
        unsigned char addr[SC_DNS_MAX_RR][16];
        int ttl;
};

int sc_dns_open(struct sc_dns *dns, char *const *servers, size_t n_servers);
void sc_dns_close(struct sc_dns *dns);
/* type: ns_t_txt, ns_t_ptr, ns_t_a, ns_t_aaaa, ns_t_mx. 0 or -ENOMEM (a DNS
 * failure is a status in *a, not an error). */
int sc_dns_query(struct sc_dns *dns, const char *name, int type, struct sc_dns_answer *a);
void sc_dns_answer_clear(struct sc_dns_answer *a);
/* "1.2.0.192.in-addr.arpa" / the ip6.arpa name of an address; false if not one. */
bool sc_dns_reverse_name(const char *addr, char *out, size_t size);

#endif
