/* smtpc/dns.c — MX and address lookups with c-ares, driven by sd-event; see dns.h. */
#include "smtpc/dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define MAX_MX_HOSTS  SMTPC_MX_MAX
#define MAX_ADDR_HOST 4

struct dns_sock {
        ares_socket_t fd;
        sd_event_source *src;
};

struct dns {
        sd_event *e;
        ares_channel ch;
        struct dns_sock *socks;
        size_t n_socks;
        sd_event_source *timer;
        uint64_t rnd;
};

struct dns_job;

struct mx_host {
        struct dns_job *job;
        char name[256];
        unsigned short pref;
        struct smtpc_target addrs[MAX_ADDR_HOST];
        size_t n_addrs;
        unsigned ttl; /* the smallest TTL of its address records */
        int status;   /* ares status of its address lookup */
};

struct dns_job {
        struct dns *d;
        struct smtpc_route route;
        dns_done_fn cb;
        void *arg;
        bool canceled;
        int outstanding;     /* references: c-ares callbacks still due, + dns_resolve's own */
        size_t pending_addr; /* address lookups not answered yet */
        struct mx_host hosts[MAX_MX_HOSTS];
        size_t n_hosts;
        bool implicit; /* no MX: the domain itself */
        unsigned ttl;  /* the MX answer's smallest TTL; DNS_TTL_UNKNOWN: not asked */
};

/* ---- sd-event glue ---- */

static void update_timer(struct dns *d)
{
        struct timeval tv;
        if (!ares_timeout(d->ch, NULL, &tv)) {
                sd_event_source_set_enabled(d->timer, SD_EVENT_OFF);
                return;
        }
        uint64_t now;
        sd_event_now(d->e, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(d->timer,
                                 now + (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec);
        sd_event_source_set_enabled(d->timer, SD_EVENT_ONESHOT);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct dns *d = userdata;
        (void)s;
        ares_process_fd(d->ch, revents & (EPOLLIN | EPOLLERR | EPOLLHUP) ? fd : ARES_SOCKET_BAD,
                        revents & EPOLLOUT ? fd : ARES_SOCKET_BAD);
        update_timer(d);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct dns *d = userdata;
        (void)s;
        (void)usec;
        ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        update_timer(d);
        return 0;
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
        struct dns *d = data;
        size_t i = 0;
        while (i < d->n_socks && d->socks[i].fd != fd)
                i++;
        if (!readable && !writable) {
                if (i < d->n_socks) {
                        sd_event_source_disable_unref(d->socks[i].src);
                        d->socks[i] = d->socks[--d->n_socks];
                }
                return;
        }
        uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
        if (i < d->n_socks) {
                sd_event_source_set_io_events(d->socks[i].src, ev);
                return;
        }
        struct dns_sock *p = realloc(d->socks, (d->n_socks + 1) * sizeof(*p));
        if (!p)
                return;
        d->socks = p;
        if (sd_event_add_io(d->e, &p[d->n_socks].src, fd, ev, on_io, d) < 0)
                return;
        p[d->n_socks++].fd = fd;
}

int dns_new(sd_event *e, char *const *servers, size_t n_servers, struct dns **out)
{
        struct dns *d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->e = sd_event_ref(e);
        if (getrandom(&d->rnd, sizeof(d->rnd), GRND_NONBLOCK) != sizeof(d->rnd))
                d->rnd = (uint64_t)time(NULL) * 2654435761u;
        d->rnd |= 1;
        struct ares_options o = {
            .sock_state_cb = sock_state,
            .sock_state_cb_data = d,
            .timeout = 1500,
            .tries = 2,
        };
        int r = ares_init_options(&d->ch, &o,
                                  ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
        if (r != ARES_SUCCESS) {
                sd_event_unref(d->e);
                free(d);
                return r == ARES_ENOMEM ? -ENOMEM : -EIO;
        }
        if (n_servers > 0) {
                char csv[2048] = "";
                size_t len = 0;
                for (size_t i = 0; i < n_servers && servers[i]; i++)
                        len += (size_t)snprintf(csv + len, sizeof(csv) - len, "%s%s", i ? "," : "",
                                                servers[i]);
                if (len >= sizeof(csv) || ares_set_servers_ports_csv(d->ch, csv) != ARES_SUCCESS) {
                        dns_free(d);
                        return -EINVAL;
                }
        }
        r = sd_event_add_time(e, &d->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, d);
        if (r < 0) {
                dns_free(d);
                return r;
        }
        sd_event_source_set_enabled(d->timer, SD_EVENT_OFF);
        *out = d;
        return 0;
}

void dns_free(struct dns *d)
{
        if (!d)
                return;
        ares_destroy(d->ch); /* calls pending callbacks with ARES_EDESTRUCTION */
        for (size_t i = 0; i < d->n_socks; i++)
                sd_event_source_disable_unref(d->socks[i].src);
        free(d->socks);
        sd_event_source_disable_unref(d->timer);
        sd_event_unref(d->e);
        free(d);
}

/* ---- the job ---- */

static uint64_t next_rand(struct dns *d)
{
        d->rnd ^= d->rnd << 13;
        d->rnd ^= d->rnd >> 7;
        d->rnd ^= d->rnd << 17;
        return d->rnd;
}

static void job_release(struct dns_job *j)
{
        if (--j->outstanding == 0)
                free(j);
}

static void finish(struct dns_job *j, enum dns_status st, const struct smtpc_target *t, size_t n,
                   const char *why)
{
        if (!j->canceled) {
                j->canceled = true; /* from now on the job only waits to be freed */
                j->cb(j->arg, st, t, n, why);
        }
}

static void finish_addresses(struct dns_job *j)
{
        struct smtpc_target t[DNS_MAX_TARGETS];
        size_t n = 0;
        bool temp = false;
        for (size_t h = 0; h < j->n_hosts; h++) {
                for (size_t a = 0; a < j->hosts[h].n_addrs && n < DNS_MAX_TARGETS; a++) {
                        t[n] = j->hosts[h].addrs[a];
                        t[n++].ttl = j->implicit ? j->hosts[h].ttl : j->ttl;
                }
                int s = j->hosts[h].status;
                if (s != ARES_SUCCESS && s != ARES_ENOTFOUND && s != ARES_ENODATA)
                        temp = true;
        }
        char why[512];
        if (n > 0) {
                finish(j, DNS_OK, t, n, NULL);
        } else if (temp) {
                snprintf(why, sizeof(why),
                         "Host or domain name lookup failed: name=%s: temporary DNS failure",
                         j->hosts[0].name);
                finish(j, DNS_TEMPFAIL, NULL, 0, why);
        } else {
                snprintf(why, sizeof(why),
                         "Host or domain name not found. Name service error for name=%s type=%s: "
                         "Host not found",
                         j->hosts[0].name, j->implicit || j->route.no_mx ? "A" : "MX");
                finish(j, DNS_NOTFOUND, NULL, 0, why);
        }
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
        struct mx_host *h = arg;
        (void)timeouts;
        struct dns_job *j = h->job;
        h->status = status;
        h->ttl = DNS_TTL_UNKNOWN;
        for (struct ares_addrinfo_node *n = res ? res->nodes : NULL; n; n = n->ai_next)
                if (n->ai_ttl >= 0 && (unsigned)n->ai_ttl < h->ttl)
                        h->ttl = (unsigned)n->ai_ttl;
        for (struct ares_addrinfo_node *n = res ? res->nodes : NULL;
             n && h->n_addrs < MAX_ADDR_HOST; n = n->ai_next) {
                struct smtpc_target *t = &h->addrs[h->n_addrs];
                snprintf(t->host, sizeof(t->host), "%s", h->name);
                t->family = n->ai_family;
                t->pref = h->pref;
                const void *a = n->ai_family == AF_INET
                                    ? (const void *)&((struct sockaddr_in *)n->ai_addr)->sin_addr
                                    : (const void *)&((struct sockaddr_in6 *)n->ai_addr)->sin6_addr;
                if (inet_ntop(n->ai_family, a, t->ip, sizeof(t->ip)))
                        h->n_addrs++;
        }
        if (res)
                ares_freeaddrinfo(res);
        if (--j->pending_addr == 0 && !j->canceled)
                finish_addresses(j);
        job_release(j);
}

static void lookup_addresses(struct dns_job *j)
{
        struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_flags = ARES_AI_NOSORT};
        j->outstanding += (int)j->n_hosts; /* held until every lookup answered */
        j->pending_addr = j->n_hosts;
        for (size_t i = 0; i < j->n_hosts; i++) {
                j->hosts[i].job = j;
                ares_getaddrinfo(j->d->ch, j->hosts[i].name, NULL, &hints, on_addrinfo,
                                 &j->hosts[i]);
        }
}

static int by_pref(const void *a, const void *b)
{
        const struct mx_host *x = a, *y = b;
        return (int)x->pref - (int)y->pref;
}

/* Shuffle each run of equal preferences of the sorted hosts[]. */
static void shuffle_equal(struct dns_job *j)
{
        if (j->n_hosts > MAX_MX_HOSTS) /* never: the lookup stops at MAX_MX_HOSTS */
                j->n_hosts = MAX_MX_HOSTS;
        for (size_t s = 0; s < j->n_hosts;) {
                size_t e = s;
                while (e < j->n_hosts && j->hosts[e].pref == j->hosts[s].pref)
                        e++;
                for (size_t i = e - 1; i > s && i < MAX_MX_HOSTS; i--) {
                        size_t k = s + next_rand(j->d) % (i - s + 1);
                        struct mx_host tmp = j->hosts[i];
                        j->hosts[i] = j->hosts[k];
                        j->hosts[k] = tmp;
                }
                s = e;
        }
}

static void use_domain_itself(struct dns_job *j)
{
        j->implicit = true;
        j->n_hosts = 1;
        snprintf(j->hosts[0].name, sizeof(j->hosts[0].name), "%s", j->route.host);
}

bool dns_host_name_ok(const char *name)
{
        size_t n = strlen(name), label = 0;
        if (n > 0 && name[n - 1] == '.')
                n--; /* the root label */
        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)name[i];
                if (c == '.') {
                        if (label == 0 || name[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!(isalnum(c) || c == '_' || (c == '-' && label > 0)) || ++label > 63)
                        return false;
        }
        return name[n - 1] != '-';
}

/* The index of the least preferred host in hosts[] (the last one of them). */
static size_t worst_host(const struct dns_job *j)
{
        size_t w = 0;
        for (size_t i = 1; i < j->n_hosts; i++)
                if (j->hosts[i].pref >= j->hosts[w].pref)
                        w = i;
        return w;
}

/* Fill hosts[] with the MAX_MX_HOSTS most preferred MX records (answer order
 * says nothing: a long list must not lose its best host), sorted by
 * preference. Names that are not host names (RFC 1123: "mx/x?y#z", escapes
 * of odd bytes) are skipped: they must never reach libcurl's URL.
 * Returns 1 for a null MX, 0 otherwise; *bad counts the skipped names. */
static int take_mx(struct dns_job *j, struct ares_mx_reply *mx, size_t *bad)
{
        size_t total = 0, empty = 0;
        *bad = 0;
        for (struct ares_mx_reply *m = mx; m; m = m->next) {
                total++;
                if (m->host[0] == '\0' || strcmp(m->host, ".") == 0) {
                        empty++;
                        continue;
                }
                if (!dns_host_name_ok(m->host) || strlen(m->host) >= sizeof(j->hosts[0].name)) {
                        (*bad)++;
                        continue;
                }
                struct mx_host *h;
                if (j->n_hosts < MAX_MX_HOSTS) {
                        h = &j->hosts[j->n_hosts++];
                } else {
                        h = &j->hosts[worst_host(j)];
                        if (m->priority >= h->pref)
                                continue;
                }
                snprintf(h->name, sizeof(h->name), "%s", m->host);
                h->pref = m->priority;
        }
        qsort(j->hosts, j->n_hosts, sizeof(j->hosts[0]), by_pref);
        shuffle_equal(j);
        return total > 0 && empty == total ? 1 : 0;
}

/* The smallest TTL of the answer section's records (the MX records and a
 * CNAME leading to them), read with libresolv's parser (c-ares 1.18's
 * ares_parse_mx_reply drops TTLs); DNS_TTL_UNKNOWN if it cannot be read. */
static unsigned answer_ttl(const unsigned char *abuf, int alen)
{
        ns_msg msg;
        unsigned ttl = DNS_TTL_UNKNOWN;
        if (!abuf || alen <= 0 || ns_initparse(abuf, alen, &msg) < 0)
                return ttl;
        for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
                ns_rr rr;
                if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
                        return DNS_TTL_UNKNOWN;
                if (ns_rr_ttl(rr) < ttl)
                        ttl = ns_rr_ttl(rr);
        }
        return ttl;
}

static void on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
        struct dns_job *j = arg;
        (void)timeouts;
        if (j->canceled || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
                job_release(j);
                return;
        }
        char why[512];
        struct ares_mx_reply *mx = NULL;
        size_t bad = 0;
        bool malformed = false;
        if (status == ARES_SUCCESS) {
                int pr = ares_parse_mx_reply(abuf, alen, &mx);
                if (pr == ARES_ENODATA) /* no MX in the answer (a CNAME only, say) */
                        status = ARES_ENODATA;
                else if (pr != ARES_SUCCESS) /* c-ares refuses odd names in the answer */
                        malformed = true;
                j->ttl = answer_ttl(abuf, alen);
        }
        if (malformed) {
                snprintf(why, sizeof(why),
                         "Host or domain name lookup failed: name=%s type=MX: malformed MX "
                         "answer: %s",
                         j->route.host, ares_strerror(ARES_EBADRESP));
                finish(j, DNS_TEMPFAIL, NULL, 0, why);
        } else if (status == ARES_SUCCESS && take_mx(j, mx, &bad) == 1) {
                snprintf(why, sizeof(why), "Domain %s does not accept mail (nullMX)",
                         j->route.host);
                finish(j, DNS_NULL_MX, NULL, 0, why);
        } else if (status == ARES_ENOTFOUND) {
                snprintf(why, sizeof(why),
                         "Host or domain name not found. Name service error for name=%s "
                         "type=MX: Host not found",
                         j->route.host);
                finish(j, DNS_NOTFOUND, NULL, 0, why);
        } else if (status != ARES_SUCCESS && status != ARES_ENODATA) {
                snprintf(why, sizeof(why), "Host or domain name lookup failed: name=%s type=MX: %s",
                         j->route.host, ares_strerror(status));
                finish(j, DNS_TEMPFAIL, NULL, 0, why);
        } else if (j->n_hosts == 0 && bad > 0) {
                /* MX records exist, so no fallback to the domain's own address
                 * (RFC 5321 5.1); a DNS error, as Postfix calls it */
                snprintf(why, sizeof(why),
                         "Host or domain name lookup failed: name=%s type=MX: malformed host "
                         "name in MX record",
                         j->route.host);
                finish(j, DNS_TEMPFAIL, NULL, 0, why);
        } else {
                if (j->n_hosts == 0)
                        use_domain_itself(j);
                lookup_addresses(j);
        }
        if (mx)
                ares_free_data(mx);
        job_release(j);
}

static int literal(const struct smtpc_route *r, struct smtpc_target *t)
{
        unsigned char buf[16];
        if (inet_pton(AF_INET, r->host, buf) == 1)
                t->family = AF_INET;
        else if (inet_pton(AF_INET6, r->host, buf) == 1)
                t->family = AF_INET6;
        else
                return 0;
        snprintf(t->host, sizeof(t->host), "%s", r->host);
        inet_ntop(t->family, buf, t->ip, sizeof(t->ip));
        return 1;
}

static struct dns_job *job_new(struct dns *d, const struct smtpc_route *route, dns_done_fn cb,
                               void *arg)
{
        struct dns_job *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->d = d;
        j->route = *route;
        j->cb = cb;
        j->arg = arg;
        j->ttl = DNS_TTL_UNKNOWN;
        j->outstanding = 1; /* our own reference until the first lookup is sent */
        return j;
}

/* The lookups of j have been sent: 1 when it has already been answered
 * (e.g. /etc/hosts), else 0 with *job set. */
static int job_started(struct dns_job *j, struct dns_job **job)
{
        *job = j;
        update_timer(j->d);
        bool done = j->canceled; /* answered at once (e.g. /etc/hosts): already reported */
        if (done)
                *job = NULL;
        job_release(j);
        return done ? 1 : 0;
}

int dns_resolve(struct dns *d, const struct smtpc_route *route, dns_done_fn cb, void *arg,
                struct dns_job **job)
{
        struct smtpc_target t;
        *job = NULL;
        if (route->no_mx && literal(route, &t)) {
                t.ttl = DNS_TTL_UNKNOWN;
                cb(arg, DNS_OK, &t, 1, NULL);
                return 1;
        }
        struct dns_job *j = job_new(d, route, cb, arg);
        if (!j)
                return -ENOMEM;
        if (route->no_mx) {
                use_domain_itself(j);
                lookup_addresses(j);
        } else {
                j->outstanding++;
                ares_query(d->ch, route->host, ns_c_in, ns_t_mx, on_mx, j);
        }
        return job_started(j, job);
}

int dns_resolve_mx(struct dns *d, const struct smtpc_route *route, const struct smtpc_mx *mx,
                   size_t n_mx, dns_done_fn cb, void *arg, struct dns_job **job)
{
        *job = NULL;
        if (n_mx == 0 || route->no_mx || route->kind != SMTPC_ROUTE_MX)
                return dns_resolve(d, route, cb, arg, job);
        struct dns_job *j = job_new(d, route, cb, arg);
        if (!j)
                return -ENOMEM;
        for (size_t i = 0; i < n_mx && j->n_hosts < MAX_MX_HOSTS; i++) {
                /* checked at the IPC boundary; checked again: it goes into a URL */
                if (strnlen(mx[i].host, sizeof(mx[i].host)) == sizeof(mx[i].host) ||
                    !dns_host_name_ok(mx[i].host) || mx[i].pref > 65535)
                        continue;
                struct mx_host *h = &j->hosts[j->n_hosts++];
                snprintf(h->name, sizeof(h->name), "%s", mx[i].host);
                h->pref = (unsigned short)mx[i].pref;
        }
        if (j->n_hosts == 0) {
                free(j);
                return dns_resolve(d, route, cb, arg, job);
        }
        qsort(j->hosts, j->n_hosts, sizeof(j->hosts[0]), by_pref);
        shuffle_equal(j);
        lookup_addresses(j);
        return job_started(j, job);
}

void dns_job_cancel(struct dns_job *job)
{
        if (job)
                job->canceled = true;
}
