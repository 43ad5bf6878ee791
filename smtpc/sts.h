/* smtpc/sts.h — MTA-STS (mtasts/) applied to one MX attempt's targets (private).
 *
 * enforce: targets the policy does not list are dropped, the others get
 * sts_verify (STARTTLS required, certificate verified for the MX name, no
 * retry in clear); none left defers with 4.7.5 naming the policy. testing:
 * targets unchanged, what enforce would refuse goes to stderr (the daemon's
 * log). Only MX routes: relayhost and [transport] next hops are the
 * administrator's and not subject to MTA-STS.
 */
#ifndef TARRY_SMTPC_STS_H
#define TARRY_SMTPC_STS_H

#include <stddef.h>

#include "config/config.h"
#include "smtpc/dns.h"

/* 0: go on with *n targets; -EPERM: deferred, text is the "451 4.7.5 …"
 * reply. policy (size STS_POLICY_NAME) names the policy that applied ("" if
 * none) for later reasons. */
#define STS_POLICY_NAME 320
int sts_filter(const struct tarry_config *cfg, const char *queue_id, const char *domain,
               struct smtpc_target *t, size_t *n, char *policy, char *text, size_t textlen);

#endif
