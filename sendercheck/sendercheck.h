/* sendercheck/sendercheck.h — is this host's mail what receivers trust?
 *
 * Input: the configuration (source addresses, myhostname, myorigin, the
 * [dkim] rows and their key files, dns_servers) and DNS.
 * Output: one result per check, pass or fail, and for a failure the record to
 * publish (or the setting to change):
 *   - each source address: a PTR exists, its name resolves back to the
 *     address, and it is myhostname (the EHLO name);
 *   - myorigin and each [dkim] domain: SPF (evaluated by libspf2, whose DNS
 *     goes through c-ares and dns_servers here) authorizes every source
 *     address; each selector's TXT record is the public half of its key
 *     file; a DMARC record exists and SPF or DKIM aligns with the domain.
 * Changes nothing. Blocking (c-ares driven to completion, 1.5 s per try);
 * tarryd runs it on a thread of its own at start. No global state.
 */
#ifndef TARRY_SENDERCHECK_H
#define TARRY_SENDERCHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

enum sender_check_kind {
        SENDER_CHECK_PTR,         /* the address has a PTR record */
        SENDER_CHECK_PTR_FORWARD, /* the PTR name resolves back to the address */
        SENDER_CHECK_PTR_NAME,    /* the PTR name is myhostname */
        SENDER_CHECK_SPF,         /* SPF of a domain authorizes the address */
        SENDER_CHECK_DKIM_KEY,    /* a selector's TXT record matches its key file */
        SENDER_CHECK_DMARC,       /* the domain has a DMARC record */
        SENDER_CHECK_ALIGNMENT,   /* SPF or DKIM aligns with the domain (DMARC passes) */
        SENDER_CHECK__MAX,
};

struct sender_check {
        enum sender_check_kind kind;
        bool pass;
        char subject[320];  /* what was checked: "192.0.2.1", "example.com for 192.0.2.1" */
        char found[640];    /* what DNS said */
        char publish[1400]; /* on failure: the record to publish or what to change */
};

struct sender_report {
        struct sender_check *v;
        size_t n;
        size_t n_failed;
};

/* Run every check. 0 (whatever passed or failed), or a negative errno when
 * DNS could not be set up (-EINVAL: a dns_servers entry c-ares refuses). */
int sender_check_run(const struct tarry_config *cfg, struct sender_report *out);
void sender_report_clear(struct sender_report *r);

/* "PTR", "PTR forward", "PTR name", "SPF", "DKIM key", "DMARC", "DMARC alignment". */
const char *sender_check_name(enum sender_check_kind kind);

#endif
