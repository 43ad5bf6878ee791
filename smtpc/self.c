/* smtpc/self.c — this host's own addresses and the MX loop check; see self.h. */
#include "smtpc/self.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

struct ip {
        int family;
        unsigned char a[16];
};

static bool parse_ip(const char *s, struct ip *out)
{
        memset(out, 0, sizeof *out);
        if (inet_pton(AF_INET, s, out->a) == 1)
                return out->family = AF_INET, true;
        if (inet_pton(AF_INET6, s, out->a) == 1)
                return out->family = AF_INET6, true;
        return false;
}

static bool same(const struct ip *x, const struct ip *y)
{
        return x->family == y->family && memcmp(x->a, y->a, x->family == AF_INET ? 4 : 16) == 0;
}

/* Is want one of the (non-loopback) interface addresses in list? */
static bool interface_has(const struct ifaddrs *list, const struct ip *want)
{
        for (const struct ifaddrs *i = list; i; i = i->ifa_next) {
                if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK))
                        continue;
                struct ip have = {.family = i->ifa_addr->sa_family};
                if (have.family == AF_INET)
                        memcpy(have.a, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
                else if (have.family == AF_INET6)
                        memcpy(have.a, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
                else
                        continue;
                if (same(&have, want))
                        return true;
        }
        return false;
}

/* ifs: this host's interfaces (NULL when getifaddrs failed: cannot tell,
 * so deliver rather than defer for ever). */
static bool is_own(const struct tarry_config *cfg, const struct ifaddrs *ifs, const char *ip)
{
        struct ip want, own;
        if (!parse_ip(ip, &want))
                return false;
        for (size_t i = 0; i < cfg->n_own_addresses; i++)
                if (parse_ip(cfg->own_addresses[i], &own) && same(&own, &want))
                        return true;
        return interface_has(ifs, &want);
}

size_t self_drop_own_mx(const struct tarry_config *cfg, struct smtpc_target *t, size_t n,
                        bool *looped)
{
        unsigned best = ~0u;
        *looped = false;
        /* one interface list for all the targets, not one per target */
        struct ifaddrs *ifs = NULL;
        if (n > 0 && getifaddrs(&ifs) < 0)
                ifs = NULL;
        for (size_t i = 0; i < n; i++)
                if (t[i].pref < best && is_own(cfg, ifs, t[i].ip)) {
                        best = t[i].pref;
                        *looped = true;
                }
        if (ifs)
                freeifaddrs(ifs);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                if (t[i].pref < best)
                        t[k++] = t[i];
        return k;
}
