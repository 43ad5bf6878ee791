/* daemon/sitetally.c — per-site counts for /status; see sitetally.h.
 *
 * Two chained hash tables: sites by name (messages, domains), and (site,
 * domain) pairs with the number of works that take them; a pair's first
 * work adds a domain to its site, its last takes it away. A site row goes
 * when nothing waits for it any more. Both tables grow with the sites and
 * pairs, never with the messages.
 */
#include "daemon/sitetally.h"
#include "common/fnv.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct site_row {
        struct site_row *next;
        uint64_t hash;
        size_t messages, domains; /* domains: its pairs; none left, the row goes */
        char name[];
};

struct pair_row {
        struct pair_row *next;
        uint64_t hash;
        struct site_row *site;
        size_t works;
        char domain[];
};

struct table {
        void **buckets;
        size_t n, cap; /* cap: a power of two, or 0 */
};

struct site_tally {
        struct table sites, pairs;
};

/* The domain of an MX route; other routes count as their own key. */
static const char *route_domain(const char *route)
{
        return strncmp(route, "mx:", 3) == 0 ? route + 3 : route;
}

int site_tally_new(struct site_tally **out)
{
        *out = calloc(1, sizeof(**out));
        return *out ? 0 : -ENOMEM;
}

static void table_free(struct table *tb)
{
        for (size_t i = 0; i < tb->cap; i++)
                for (void *e = tb->buckets[i]; e;) {
                        void *next = *(void **)e; /* both rows start with next */
                        free(e);
                        e = next;
                }
        free(tb->buckets);
}

void site_tally_free(struct site_tally *t)
{
        if (!t)
                return;
        table_free(&t->sites);
        table_free(&t->pairs);
        free(t);
}

/* Room for one more row at two rows a bucket; hash_of reads a row's hash
 * (both row types start with next, then hash). 0 or -ENOMEM. */
static int table_room(struct table *tb)
{
        if (tb->n + 1 <= 2 * tb->cap)
                return 0;
        size_t cap = tb->cap ? tb->cap * 2 : 64;
        void **b = calloc(cap, sizeof(*b));
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < tb->cap; i++)
                for (void *e = tb->buckets[i]; e;) {
                        struct site_row *r = e; /* next and hash sit alike in both */
                        void *next = r->next;
                        size_t j = r->hash & (cap - 1);
                        r->next = b[j];
                        b[j] = r;
                        e = next;
                }
        free(tb->buckets);
        tb->buckets = b;
        tb->cap = cap;
        return 0;
}

static struct site_row **find_site(struct site_tally *t, const char *name, uint64_t h)
{
        if (!t->sites.cap)
                return NULL;
        struct site_row **p = (struct site_row **)&t->sites.buckets[h & (t->sites.cap - 1)];
        for (; *p; p = &(*p)->next)
                if ((*p)->hash == h && strcmp((*p)->name, name) == 0)
                        return p;
        return NULL;
}

static struct pair_row **find_pair(struct site_tally *t, const struct site_row *s,
                                   const char *domain, uint64_t h)
{
        if (!t->pairs.cap)
                return NULL;
        struct pair_row **p = (struct pair_row **)&t->pairs.buckets[h & (t->pairs.cap - 1)];
        for (; *p; p = &(*p)->next)
                if ((*p)->hash == h && (*p)->site == s && strcmp((*p)->domain, domain) == 0)
                        return p;
        return NULL;
}

static uint64_t pair_hash(const struct site_row *s, const char *domain)
{
        return fnv1a_str(s->hash * FNV1A_PRIME, domain);
}

int site_tally_add(struct site_tally *t, const char *site, const char *route, bool first)
{
        const char *domain = route_domain(route);
        uint64_t hs = fnv1a_str(FNV1A_BASIS, site);
        struct site_row **ps = find_site(t, site, hs);
        struct site_row *s = ps ? *ps : NULL;
        bool new_site = !s;
        if (new_site) {
                size_t len = strlen(site) + 1;
                if (table_room(&t->sites) < 0 || !(s = calloc(1, sizeof(*s) + len)))
                        return -ENOMEM;
                memcpy(s->name, site, len);
                s->hash = hs;
        }
        uint64_t hp = pair_hash(s, domain);
        struct pair_row **pp = find_pair(t, s, domain, hp);
        struct pair_row *p = pp ? *pp : NULL;
        if (!p) {
                size_t len = strlen(domain) + 1;
                if (table_room(&t->pairs) < 0 || !(p = calloc(1, sizeof(*p) + len))) {
                        if (new_site)
                                free(s);
                        return -ENOMEM;
                }
                memcpy(p->domain, domain, len);
                p->hash = hp;
                p->site = s;
                size_t j = hp & (t->pairs.cap - 1);
                p->next = t->pairs.buckets[j];
                t->pairs.buckets[j] = p;
                t->pairs.n++;
                s->domains++;
        }
        if (new_site) {
                size_t j = hs & (t->sites.cap - 1);
                s->next = t->sites.buckets[j];
                t->sites.buckets[j] = s;
                t->sites.n++;
        }
        p->works++;
        if (first)
                s->messages++;
        return 0;
}

void site_tally_drop(struct site_tally *t, const char *site, const char *route, bool last)
{
        const char *domain = route_domain(route);
        struct site_row **ps = find_site(t, site, fnv1a_str(FNV1A_BASIS, site));
        if (!ps)
                return; /* its add failed: never counted */
        struct site_row *s = *ps;
        struct pair_row **pp = find_pair(t, s, domain, pair_hash(s, domain));
        if (!pp)
                return;
        struct pair_row *p = *pp;
        if (--p->works == 0) {
                *pp = p->next;
                free(p);
                t->pairs.n--;
                s->domains--;
        }
        if (last && s->messages > 0)
                s->messages--;
        if (s->domains == 0) {
                *ps = s->next;
                free(s);
                t->sites.n--;
        }
}

int site_tally_foreach(const struct site_tally *t,
                       int (*cb)(const char *site, size_t domains, size_t messages, void *ud),
                       void *ud)
{
        for (size_t i = 0; i < t->sites.cap; i++)
                for (const struct site_row *s = t->sites.buckets[i]; s; s = s->next) {
                        int r = cb(s->name, s->domains, s->messages, ud);
                        if (r)
                                return r;
                }
        return 0;
}

size_t site_tally_count(const struct site_tally *t)
{
        return t->sites.n;
}
