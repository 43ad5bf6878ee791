/* daemon/site.c — recipient domain → receiving site, with a bounded cache of
 * MX host sets resolved on tarryd's loop (daemon/site.h).
 */
#include "daemon/site.h"
#include "common/cleanup.h"
#include "common/fnv.h"
#include "smtpc/dns.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define US 1000000LL

struct entry {
        struct entry *hnext;         /* hash chain */
        struct entry *older, *newer; /* insertion order, for eviction */
        struct site_cache *c;
        struct dns_job *job; /* lookup under way, or NULL */
        int64_t expires_us;  /* 0 until the first answer */
        bool stale;          /* kept past its TTL after a failed refresh */
        bool failed;         /* no MX set: the domain is a site of its own */
        char *hosts;         /* sorted MX host names, ',' separated (resolved) */
        char *mx;            /* "PREF HOST,PREF HOST…": what site_mx gives, or NULL */
        char domain[];
};

struct site_cache {
        sd_event *e;
        struct dns *dns;
        site_ready_fn ready;
        void *userdata;
        int64_t min_ttl_s; /* an MX set is kept at least this long */
        struct entry **buckets;
        size_t n_buckets, n, n_pending;
        struct entry *oldest, *newest;
};

static uint64_t hash_name(const char *s)
{
        return fnv1a_str_lower(FNV1A_BASIS_SHORT, s);
}

int site_cache_new(sd_event *e, const struct tarry_config *cfg, site_ready_fn ready, void *userdata,
                   struct site_cache **out)
{
        struct site_cache *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->n_buckets = 1024;
        c->buckets = calloc(c->n_buckets, sizeof(*c->buckets));
        int r = c->buckets ? dns_new(e, cfg->dns_servers, cfg->n_dns_servers, &c->dns) : -ENOMEM;
        if (r < 0) {
                free(c->buckets);
                free(c);
                return r;
        }
        c->e = e;
        c->min_ttl_s = cfg->mx_cache_min_ttl_s;
        c->ready = ready;
        c->userdata = userdata;
        *out = c;
        return 0;
}

static struct entry **slot_of(struct site_cache *c, const char *domain)
{
        struct entry **pp = &c->buckets[hash_name(domain) & (c->n_buckets - 1)];
        while (*pp && strcasecmp((*pp)->domain, domain) != 0)
                pp = &(*pp)->hnext;
        return pp;
}

static void entry_drop(struct site_cache *c, struct entry *en)
{
        struct entry **pp = slot_of(c, en->domain);
        if (*pp == en)
                *pp = en->hnext;
        if (en->older)
                en->older->newer = en->newer;
        else
                c->oldest = en->newer;
        if (en->newer)
                en->newer->older = en->older;
        else
                c->newest = en->older;
        if (en->job) {
                dns_job_cancel(en->job);
                c->n_pending--;
        }
        c->n--;
        free(en->hosts);
        free(en->mx);
        free(en);
}

void site_cache_free(struct site_cache *c)
{
        if (!c)
                return;
        while (c->oldest)
                entry_drop(c, c->oldest);
        dns_free(c->dns);
        free(c->buckets);
        free(c);
}

static int by_name(const void *a, const void *b)
{
        return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

/* The MX host names of the answer, sorted, each once, ',' separated. */
static char *host_set(const struct smtpc_target *t, size_t n)
{
        const char *names[DNS_MAX_TARGETS];
        size_t k = 0, len = 1;
        for (size_t i = 0; i < n && i < DNS_MAX_TARGETS; i++)
                names[k++] = t[i].host;
        qsort(names, k, sizeof(*names), by_name);
        for (size_t i = 0; i < k; i++)
                len += strlen(names[i]) + 1;
        char *out = malloc(len), *p = out;
        if (!out)
                return NULL;
        for (size_t i = 0; i < k; i++) {
                if (i > 0 && strcasecmp(names[i], names[i - 1]) == 0)
                        continue;
                if (p != out)
                        *p++ = ',';
                for (const char *s = names[i]; *s; s++)
                        *p++ = (*s >= 'A' && *s <= 'Z') ? (char)(*s - 'A' + 'a') : *s;
        }
        if (p > out && p[-1] == '.')
                p--; /* a trailing root dot says nothing */
        *p = '\0';
        return out;
}

/* The MX hosts of the answer with their preferences, each once, for
 * site_mx: "10 mx1.example,20 mx2.example"; NULL when the domain has no MX
 * records (its own address was used) or for want of memory. */
static char *mx_set(const char *domain, const struct smtpc_target *t, size_t n)
{
        size_t len = 1;
        for (size_t i = 0; i < n; i++)
                len += strlen(t[i].host) + 8;
        char *out = malloc(len), *p = out;
        if (!out)
                return NULL;
        *p = '\0';
        for (size_t i = 0; i < n; i++) {
                /* no MX records: the domain's own address, preference 0 */
                bool seen = t[i].pref == 0 && strcasecmp(t[i].host, domain) == 0;
                for (size_t k = 0; k < i && !seen; k++)
                        seen = strcasecmp(t[k].host, t[i].host) == 0;
                if (!seen)
                        p += sprintf(p, "%s%u %s", p == out ? "" : ",", t[i].pref, t[i].host);
        }
        if (p == out) {
                free(out);
                return NULL;
        }
        return out;
}

/* How long an answer with this TTL is kept: the TTL, at least min_ttl_s (a
 * lookup per message for a zero TTL helps nobody), at most SITE_TTL_MAX_S. */
static int64_t keep_s(const struct site_cache *c, unsigned ttl)
{
        int64_t s = ttl == DNS_TTL_UNKNOWN ? c->min_ttl_s : (int64_t)ttl;
        if (s < c->min_ttl_s)
                s = c->min_ttl_s;
        return s > SITE_TTL_MAX_S ? SITE_TTL_MAX_S : s;
}

static void on_resolved(void *arg, enum dns_status st, const struct smtpc_target *t, size_t n,
                        const char *why)
{
        struct entry *en = arg;
        struct site_cache *c = en->c;
        (void)why;
        en->job = NULL;
        c->n_pending--;
        uint64_t now = 0;
        sd_event_now(c->e, CLOCK_REALTIME, &now);
        char *hosts = st == DNS_OK && n > 0 ? host_set(t, n) : NULL;
        if (!hosts && en->expires_us && !en->failed && st == DNS_TEMPFAIL) {
                /* a refresh that failed for now: keep the set we had a while
                 * longer for the site key (site_mx no longer gives it) */
                en->expires_us = (int64_t)now + SITE_FAIL_TTL_S * US;
                en->stale = true;
                if (c->ready)
                        c->ready(c->userdata, en->domain);
                return;
        }
        unsigned ttl = DNS_TTL_UNKNOWN;
        for (size_t i = 0; hosts && i < n; i++)
                if (t[i].ttl < ttl)
                        ttl = t[i].ttl;
        free(en->hosts);
        free(en->mx);
        en->hosts = hosts;
        en->mx = hosts ? mx_set(en->domain, t, n) : NULL;
        en->failed = !hosts;
        en->stale = false;
        en->expires_us = (int64_t)now + (en->failed ? SITE_FAIL_TTL_S : keep_s(c, ttl)) * US;
        if (c->ready)
                c->ready(c->userdata, en->domain);
}

/* Look en's domain up (again). 0 or -errno. */
static int resolve(struct site_cache *c, struct entry *en, const struct smtpc_route *route)
{
        c->n_pending++;
        int r = dns_resolve(c->dns, route, on_resolved, en, &en->job);
        if (r < 0) {
                en->job = NULL;
                c->n_pending--;
        }
        return r < 0 ? r : 0;
}

static struct entry *start_lookup(struct site_cache *c, const struct smtpc_route *route)
{
        while (c->n >= SITE_CACHE_MAX && c->oldest)
                entry_drop(c, c->oldest);
        size_t len = strlen(route->host) + 1;
        struct entry *en = calloc(1, sizeof(*en) + len);
        if (!en)
                return NULL;
        memcpy(en->domain, route->host, len);
        en->c = c;
        struct entry **pp = slot_of(c, en->domain);
        en->hnext = *pp;
        *pp = en;
        en->older = c->newest;
        if (c->newest)
                c->newest->newer = en;
        else
                c->oldest = en;
        c->newest = en;
        c->n++;
        if (resolve(c, en, route) < 0) {
                entry_drop(c, en);
                return NULL;
        }
        return en;
}

const struct sched_provider *site_provider(const struct sched_classifier *cls, const char *key)
{
        if (!cls || strncmp(key, "site:", 5) != 0)
                return NULL;
        const struct sched_provider *list = NULL;
        size_t n = sched_classifier_providers(cls, &list);
        for (size_t i = 0; i < n; i++)
                if (strcmp(list[i].name, key + 5) == 0)
                        return &list[i];
        return NULL;
}

/* "site:PROVIDER" when a host matches one, else "site:HOST,HOST…" (cut, with
 * a hash of the whole set, when it does not fit). */
static void key_of(const struct sched_classifier *cls, const char *hosts, char *key, size_t keylen)
{
        _cleanup_free_ char *copy = strdup(hosts);
        for (char *h = copy, *save = NULL; cls && h && (h = strtok_r(h, ",", &save)); h = NULL) {
                const struct sched_provider *p = sched_provider_for_mx(cls, h);
                if (p) {
                        snprintf(key, keylen, "site:%s", p->name);
                        return;
                }
        }
        if ((size_t)snprintf(key, keylen, "site:%s", hosts) < keylen)
                return;
        char tail[24];
        snprintf(tail, sizeof(tail), "~%016llx", (unsigned long long)hash_name(hosts));
        snprintf(key + keylen - 1 - strlen(tail), strlen(tail) + 1, "%s", tail);
}

int site_lookup(struct site_cache *c, const struct sched_classifier *cls,
                const struct smtpc_route *route, int64_t now, char *key, size_t keylen)
{
        snprintf(key, keylen, "%s", route->destination);
        if (route->kind != SMTPC_ROUTE_MX || route->no_mx)
                return 1;
        struct entry *en = *slot_of(c, route->host);
        if (en && !en->job && en->expires_us <= now)
                resolve(c, en, route); /* its TTL has passed: look it up again */
        if (!en && !(en = start_lookup(c, route)))
                return -ENOMEM;
        if (!en->expires_us || (en->job && en->expires_us <= now))
                return 0; /* never answered yet, or expired and being looked up again */
        if (!en->failed)
                key_of(cls, en->hosts, key, keylen);
        return 1;
}

void site_cache_set_min_ttl(struct site_cache *c, int64_t min_ttl_s)
{
        c->min_ttl_s = min_ttl_s;
}

/* "10 mx1.example,20 mx2.example" → out[]; the count. */
static size_t parse_mx(const char *s, struct smtpc_mx *out, size_t max)
{
        size_t n = 0;
        while (s && *s && n < max) {
                char *end;
                unsigned long pref = strtoul(s, &end, 10);
                const char *host = end + 1, *comma = strchr(host, ',');
                size_t len = comma ? (size_t)(comma - host) : strlen(host);
                if (*end != ' ' || len == 0 || len >= sizeof(out[n].host))
                        break;
                memcpy(out[n].host, host, len);
                out[n].host[len] = '\0';
                out[n++].pref = (unsigned)pref;
                s = comma ? comma + 1 : NULL;
        }
        return n;
}

size_t site_mx(struct site_cache *c, const struct smtpc_route *route, int64_t now,
               struct smtpc_mx *out, size_t max)
{
        if (!c || route->kind != SMTPC_ROUTE_MX || route->no_mx)
                return 0;
        const struct entry *en = *slot_of(c, route->host);
        if (!en || !en->mx || en->failed || en->stale || en->expires_us <= now)
                return 0;
        return parse_mx(en->mx, out, max);
}
