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

static bool interface_has(const struct ip *want)
{
        struct ifaddrs *list = NULL;
        bool found = false;
        if (getifaddrs(&list) < 0)
                return false; /* cannot tell: deliver rather than defer for ever */
        for (struct ifaddrs *i = list; i && !found; i = i->ifa_next) {
                if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK))
                        continue;
                struct ip have = {.family = i->ifa_addr->sa_family};
                if (have.family == AF_INET)
                        memcpy(have.a, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
                else if (have.family == AF_INET6)
                        memcpy(have.a, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
                else
                        continue;
                found = same(&have, want);
        }
        freeifaddrs(list);
        return found;
}

bool self_is_own_address(const struct tarry_config *cfg, const char *ip)
{
        struct ip want, own;
        if (!parse_ip(ip, &want))
                return false;
        for (size_t i = 0; i < cfg->n_own_addresses; i++)
                if (parse_ip(cfg->own_addresses[i], &own) && same(&own, &want))
                        return true;
        return interface_has(&want);
}

size_t self_drop_own_mx(const struct tarry_config *cfg, struct smtpc_target *t, size_t n,
                        bool *looped)
{
        unsigned best = ~0u;
        *looped = false;
        for (size_t i = 0; i < n; i++)
                if (t[i].pref < best && self_is_own_address(cfg, t[i].ip)) {
                        best = t[i].pref;
                        *looped = true;
                }
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                if (t[i].pref < best)
                        t[k++] = t[i];
        return k;
}
