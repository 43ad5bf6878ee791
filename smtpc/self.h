/* smtpc/self.h — is the next hop this host itself? (private to smtpc/)
 *
 * Postfix refuses an MX that is one of its own addresses ("mail for x
 * loops back to myself"): delivering there hands the message back to this
 * host. This host's addresses: those of its network interfaces (loopback
 * excluded: tests and local relays listen there on other ports) and
 * [smtp] own_addresses (a NAT or load balancer in front of it).
 */
#ifndef TARRY_SMTPC_SELF_H
#define TARRY_SMTPC_SELF_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "smtpc/dns.h"

/* Drop, as Postfix does, every MX target whose preference is that of the
 * most preferred one of this host's own addresses or worse: t[] (sorted by
 * preference) is compacted in place; returns how many are left. *looped is
 * true when this host was among them. */
size_t self_drop_own_mx(const struct tarry_config *cfg, struct smtpc_target *t, size_t n,
                        bool *looped);

#endif
