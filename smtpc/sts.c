/* smtpc/sts.c — an MTA-STS policy over an attempt's MX targets; see sts.h. */
#include "smtpc/sts.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/fileio.h"
#include "mtasts/mtasts.h"

/* One lookup and one fetch each get this much; at most connect_timeout. */
#define STS_TIMEOUT_MS 10000L

static void log_line(const char *queue_id, const char *fmt, const char *a, const char *b)
{
        fprintf(stderr, "tarryd: %s: mta-sts: ", queue_id && queue_id[0] ? queue_id : "-");
        fprintf(stderr, fmt, a, b);
        fputc('\n', stderr);
}

/* Is host one of the names of a ", "-separated list (whole names only:
 * "a.test" is not in "mx.a.test")? */
static bool listed(const char *list, const char *host)
{
        size_t len = strlen(host);
        for (const char *p = list; (p = strstr(p, host)); p += len)
                if ((p == list || p[-1] == ' ') && (p[len] == ',' || p[len] == '\0'))
                        return true;
        return false;
}

int sts_filter(const struct tarry_config *cfg, const char *queue_id, const char *domain,
               struct smtpc_target *t, size_t *n, char *policy, char *text, size_t textlen)
{
        policy[0] = '\0';
        char state[4096], note[MTASTS_WHY_MAX + 128];
        snprintf(state, sizeof(state), "%s/state", cfg->spool_dir ? cfg->spool_dir : ".");
        long timeout = STS_TIMEOUT_MS;
        if (cfg->connect_timeout_s > 0 && cfg->connect_timeout_s * 1000 < timeout)
                timeout = (long)cfg->connect_timeout_s * 1000;
        struct mtasts_options o = {
            .state_dir = state,
            .dns_servers = cfg->dns_servers,
            .n_dns_servers = cfg->n_dns_servers,
            .port = cfg->mta_sts_port ? cfg->mta_sts_port : 443,
            .ca_file = cfg->tls_ca_file,
            .timeout_ms = timeout,
            .now_s = now_realtime_us() / 1000000,
        };
        struct mtasts_policy p;
        int r = mtasts_policy_get(&o, domain, &p, note, sizeof(note));
        if (note[0])
                log_line(queue_id, "%s%s", note, "");
        if (r <= 0 || p.mode == MTASTS_MODE_NONE)
                return 0; /* no policy (or no memory for one): deliver as before */
        snprintf(policy, STS_POLICY_NAME, "MTA-STS policy of %s (id %s, mode %s)", domain, p.id,
                 mtasts_mode_name(p.mode));
        size_t kept = 0;
        char refused[1024] = "";
        size_t rl = 0;
        for (size_t i = 0; i < *n; i++) {
                if (mtasts_mx_matches(&p, t[i].host)) {
                        t[i].sts_verify = p.mode == MTASTS_MODE_ENFORCE;
                        t[kept++] = t[i];
                        continue;
                }
                if (rl < sizeof(refused) && !listed(refused, t[i].host))
                        rl += (size_t)snprintf(refused + rl, sizeof(refused) - rl, "%s%s",
                                               rl ? ", " : "", t[i].host);
                if (p.mode == MTASTS_MODE_TESTING)
                        t[kept++] = t[i];
        }
        if (p.mode == MTASTS_MODE_TESTING) {
                if (refused[0])
                        log_line(queue_id, "%s: enforce would refuse MX %s", policy, refused);
                return 0;
        }
        *n = kept;
        if (kept > 0)
                return 0;
        snprintf(text, textlen, "451 4.7.5 %s lists none of the MX hosts of %s (%s)", policy,
                 domain, refused);
        return -EPERM;
}
