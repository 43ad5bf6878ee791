/* sendercheck/spf.h — private to sendercheck/: does a domain's SPF record
 * authorize an address (as MAIL FROM postmaster@domain)? libspf2 decides. */
#ifndef TARRY_SENDERCHECK_SPF_H
#define TARRY_SENDERCHECK_SPF_H

#include <stddef.h>

#include "sendercheck/dns.h"

enum sc_spf_result {
        SC_SPF_PASS,
        SC_SPF_NONE,  /* no SPF record */
        SC_SPF_FAIL,  /* fail, softfail, neutral: the address is not authorized */
        SC_SPF_ERROR, /* temperror, permerror (a broken record) */
};

/* text: libspf2's word for the result ("pass", "softfail", "permerror"…). */
enum sc_spf_result sc_spf_check(struct sc_dns *dns, const char *domain, const char *addr,
                                char *text, size_t textlen);

#endif
