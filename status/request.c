/* status/request.c — the route table and the parsers of request paths, query
 * arguments and `status_listen` entries. Pure functions, no allocation.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "status/request.h"

#define MAX_SEGMENTS 3

enum wildcard {
        SEG_LITERAL,
        SEG_ID,   /* a queue ID */
        SEG_NAME, /* a destination name */
};

struct route {
        const char *method;
        const char *segs[MAX_SEGMENTS]; /* "{id}" / "{name}" are wildcards */
        enum status_route route;
        bool admin;
        enum status_action action;
};

/* Every endpoint, one row each; admin rows change state and need a trusted peer. */
static const struct route routes[] = {
    /* summary of the whole daemon */
    {"GET", {"status"}, ROUTE_STATUS, false, 0},
    /* listing with filters and paging */
    {"GET", {"queue"}, ROUTE_QUEUE, false, 0},
    /* one message with its last transcript */
    {"GET", {"queue", "{id}"}, ROUTE_MESSAGE, false, 0},
    /* Prometheus scrape */
    {"GET", {"metrics"}, ROUTE_METRICS, false, 0},
    /* tarryq -i ID: attempt one message now */
    {"POST", {"queue", "{id}", "retry"}, ROUTE_ACTION, true, STATUS_ACTION_RETRY},
    /* tarryq -i ID --force: attempt now even if its destination is suspended */
    {"POST", {"queue", "{id}", "force"}, ROUTE_ACTION, true, STATUS_ACTION_FORCE},
    /* tarryq -h ID: put aside */
    {"POST", {"queue", "{id}", "hold"}, ROUTE_ACTION, true, STATUS_ACTION_HOLD},
    /* tarryq -H ID: take back from hold */
    {"POST", {"queue", "{id}", "release"}, ROUTE_ACTION, true, STATUS_ACTION_RELEASE},
    /* tarryq -d ID: remove without a bounce */
    {"DELETE", {"queue", "{id}"}, ROUTE_ACTION, true, STATUS_ACTION_DELETE},
    /* tarryq -f: every deferred message now */
    {"POST", {"flush"}, ROUTE_ACTION, true, STATUS_ACTION_FLUSH},
    /* lift a reputation / rate-limit suspension early */
    {"POST", {"destinations", "{name}", "resume"}, ROUTE_ACTION, true, STATUS_ACTION_RESUME},
};

bool status_id_valid(const char *id)
{
        if (!id || strlen(id) != 16)
                return false;
        for (size_t i = 0; i < 16; i++)
                if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F')))
                        return false;
        return true;
}

bool status_destination_valid(const char *s)
{
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > STATUS_MAX_DESTINATION)
                return false;
        return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]") ==
               n;
}

static enum wildcard seg_kind(const char *pattern)
{
        if (strcmp(pattern, "{id}") == 0)
                return SEG_ID;
        if (strcmp(pattern, "{name}") == 0)
                return SEG_NAME;
        return SEG_LITERAL;
}

/* "/queue/ID/retry" → {"queue","ID","retry"} in buf; -ENOENT for empty
 * segments, a missing leading slash, or too many segments. */
static int split_path(const char *path, char *buf, size_t bufsz, char *segs[MAX_SEGMENTS],
                      size_t *n)
{
        size_t len = strlen(path);
        if (path[0] != '/' || len >= bufsz)
                return -ENOENT;
        memcpy(buf, path + 1, len);
        *n = 0;
        char *p = buf;
        for (;;) {
                char *slash = strchr(p, '/');
                if (*n == MAX_SEGMENTS || (slash ? slash == p : *p == '\0'))
                        return -ENOENT;
                segs[(*n)++] = p;
                if (!slash)
                        return 0;
                *slash = '\0';
                p = slash + 1;
        }
}

static bool route_matches_path(const struct route *r, char *const segs[], size_t n)
{
        for (size_t i = 0; i < MAX_SEGMENTS; i++) {
                if (i == n || !r->segs[i])
                        return i == n && !r->segs[i];
                if (seg_kind(r->segs[i]) == SEG_LITERAL && strcmp(r->segs[i], segs[i]) != 0)
                        return false;
        }
        return true;
}

/* Check the wildcard segments of a matched row and copy the target. */
static int take_target(const struct route *r, char *const segs[], size_t n,
                       struct status_request *out, const char **why)
{
        for (size_t i = 0; i < n; i++) {
                enum wildcard k = seg_kind(r->segs[i]);
                if (k == SEG_ID && !status_id_valid(segs[i])) {
                        *why = "a queue ID is 16 upper-case hexadecimal digits";
                        return -EINVAL;
                }
                if (k == SEG_NAME && !status_destination_valid(segs[i])) {
                        *why = "a destination name is 1-255 characters of [A-Za-z0-9.-_:[]]";
                        return -EINVAL;
                }
                if (k != SEG_LITERAL)
                        snprintf(out->target, sizeof(out->target), "%s", segs[i]);
        }
        return 0;
}

static const char *allow_for(char *const segs[], size_t n)
{
        bool get = false, post = false, del = false;
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                if (!route_matches_path(&routes[i], segs, n))
                        continue;
                get |= strcmp(routes[i].method, "GET") == 0;
                post |= strcmp(routes[i].method, "POST") == 0;
                del |= strcmp(routes[i].method, "DELETE") == 0;
        }
        if (get && del)
                return "GET, HEAD, DELETE";
        return get ? "GET, HEAD" : post ? "POST" : "DELETE";
}

int status_parse_request(const char *method, const char *path, struct status_request *out,
                         const char **allow, const char **why)
{
        char buf[STATUS_MAX_PATH];
        char *segs[MAX_SEGMENTS];
        size_t n;

        *allow = NULL;
        memset(out, 0, sizeof(*out));
        if (!method || !path || split_path(path, buf, sizeof(buf), segs, &n) < 0) {
                *why = "no such resource";
                return -ENOENT;
        }
        if (strcmp(method, "HEAD") == 0)
                method = "GET";
        bool path_known = false;
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                const struct route *r = &routes[i];
                if (!route_matches_path(r, segs, n))
                        continue;
                path_known = true;
                if (strcmp(r->method, method) != 0)
                        continue;
                out->route = r->route;
                out->admin = r->admin;
                out->action = r->action;
                return take_target(r, segs, n, out, why);
        }
        if (!path_known) {
                *why = "no such resource";
                return -ENOENT;
        }
        *allow = allow_for(segs, n);
        *why = "method not allowed on this resource";
        return -EOPNOTSUPP;
}

/* ---- GET /queue arguments ---- */

static const char *const qstate_names[] = {
    [STATUS_QSTATE_ANY] = "any",       [STATUS_QSTATE_INCOMING] = "incoming",
    [STATUS_QSTATE_ACTIVE] = "active", [STATUS_QSTATE_DEFERRED] = "deferred",
    [STATUS_QSTATE_HOLD] = "hold",     [STATUS_QSTATE_CORRUPT] = "corrupt",
};

const char *status_queue_state_name(enum status_queue_state s)
{
        return (unsigned)s < STATUS_QSTATE__MAX ? qstate_names[s] : NULL;
}

void status_queue_filter_init(struct status_queue_filter *f)
{
        memset(f, 0, sizeof(*f));
        f->state = STATUS_QSTATE_ANY;
        f->limit = STATUS_DEFAULT_LIMIT;
}

/* Decimal digits only, at most 9 of them (no sign, no spaces, no hex). */
static int parse_small_uint(const char *s, size_t *out)
{
        size_t n = strlen(s);
        if (n == 0 || n > 9 || strspn(s, "0123456789") != n)
                return -EINVAL;
        *out = strtoul(s, NULL, 10);
        return 0;
}

enum qarg {
        QARG_CLASS = 1 << 0,
        QARG_DESTINATION = 1 << 1,
        QARG_STATE = 1 << 2,
        QARG_OFFSET = 1 << 3,
        QARG_LIMIT = 1 << 4,
        QARG_AFTER = 1 << 5,
};

static int apply_qarg(struct status_queue_filter *f, enum qarg k, const char *v, const char **why)
{
        switch (k) {
        case QARG_CLASS: {
                int c = reply_class_from_name(v);
                *why = "class must be a reply class name (greylist, reputation, ...)";
                if (c < 0)
                        return -EINVAL;
                f->has_class = true;
                f->class = c;
                return 0;
        }
        case QARG_DESTINATION:
                *why = "destination must be 1-255 characters of [A-Za-z0-9.-_:[]]";
                if (!status_destination_valid(v))
                        return -EINVAL;
                f->destination = v;
                return 0;
        case QARG_STATE:
                *why = "state must be incoming, active, deferred, hold or corrupt";
                for (size_t s = 0; s < STATUS_QSTATE__MAX; s++)
                        if (strcmp(qstate_names[s], v) == 0) {
                                f->state = s;
                                return 0;
                        }
                return -EINVAL;
        case QARG_OFFSET:
                *why = "offset must be a decimal number below 10^9";
                return parse_small_uint(v, &f->offset);
        case QARG_AFTER:
                *why = "after must be a queue ID (16 upper-case hex digits)";
                if (strlen(v) != 16 || strspn(v, "0123456789ABCDEF") != 16)
                        return -EINVAL;
                memcpy(f->after, v, 17);
                return 0;
        case QARG_LIMIT:
                *why = "limit must be a decimal number from 1 to 10000";
                if (parse_small_uint(v, &f->limit) < 0 || f->limit == 0 ||
                    f->limit > STATUS_MAX_LIMIT)
                        return -EINVAL;
                return 0;
        }
        return -EINVAL;
}

int status_parse_queue_arg(struct status_queue_filter *f, unsigned *seen, const char *key,
                           const char *value, const char **why)
{
        static const struct {
                const char *name;
                enum qarg arg;
        } keys[] = {
            {"class", QARG_CLASS}, {"destination", QARG_DESTINATION},
            {"state", QARG_STATE}, {"offset", QARG_OFFSET},
            {"limit", QARG_LIMIT}, {"after", QARG_AFTER},
        };
        for (size_t i = 0; key && i < ELEMENTSOF(keys); i++) {
                if (strcmp(keys[i].name, key) != 0)
                        continue;
                if (*seen & keys[i].arg) {
                        *why = "query parameter given twice";
                        return -EINVAL;
                }
                *seen |= keys[i].arg;
                if (!value || strlen(value) > STATUS_MAX_DESTINATION) {
                        *why = "query parameter without a value, or too long";
                        return -EINVAL;
                }
                return apply_qarg(f, keys[i].arg, value, why);
        }
        *why = "unknown query parameter (class, destination, state, offset, limit, after)";
        return -EINVAL;
}

/* ---- status_listen entries ---- */

static int parse_port(const char *s, uint16_t *out)
{
        size_t n = strlen(s), v;
        if (n == 0 || n > 5 || strspn(s, "0123456789") != n)
                return -EINVAL;
        v = strtoul(s, NULL, 10);
        if (v > 65535)
                return -EINVAL;
        *out = v;
        return 0;
}

/* ---- the request line and the Host header ---- */

int status_check_uri(const char *uri, const char **why)
{
        const char *q = uri ? strchr(uri, '?') : NULL;
        unsigned n = 0;
        for (const char *p = q; p && *p; p++)
                if (*p == '&' || *p == ';' || p == q)
                        n++;
        if (n > STATUS_MAX_QUERY_ARGS) {
                *why = "too many query arguments (at most 16)";
                return -E2BIG;
        }
        return 0;
}

/* "host", "host:port", "[v6]" or "[v6]:port" → host and port text. */
static bool split_host(const char *s, char *host, size_t hostsz, const char **port)
{
        const char *end;
        *port = NULL;
        if (s[0] == '[') {
                end = strchr(s, ']');
                if (!end || (end[1] && end[1] != ':'))
                        return false;
                s++;
                *port = end[1] ? end + 2 : NULL;
        } else {
                end = strchr(s, ':');
                if (end)
                        *port = end + 1;
                else
                        end = s + strlen(s);
        }
        if ((size_t)(end - s) >= hostsz || end == s)
                return false;
        memcpy(host, s, (size_t)(end - s));
        host[end - s] = '\0';
        return true;
}

/* Numeric equality, so "::1" and "0::1" are the same address. */
static bool same_address(const char *a, const char *b)
{
        unsigned char x[16] = {0}, y[16] = {0};
        for (int af = AF_INET; af != -1; af = af == AF_INET ? AF_INET6 : -1)
                if (inet_pton(af, a, x) == 1)
                        return inet_pton(af, b, y) == 1 && memcmp(x, y, sizeof(x)) == 0;
        return false;
}

static bool is_ip_literal(const char *s)
{
        unsigned char x[16];
        return inet_pton(AF_INET, s, x) == 1 || inet_pton(AF_INET6, s, x) == 1;
}

bool status_host_allowed(const char *value, const struct status_listen_addr *a, int port)
{
        char host[64];
        const char *p;
        uint16_t n;
        if (!value)
                return true; /* HTTP/1.0 without Host: not a browser (libmicrohttpd
                                refuses HTTP/1.1 without one) */
        if (!split_host(value, host, sizeof(host), &p))
                return false;
        if (p && (parse_port(p, &n) < 0 || n != port))
                return false;
        if (strcasecmp(host, "localhost") == 0)
                return true;
        if (same_address(a->host, "0.0.0.0") || same_address(a->host, "::"))
                return is_ip_literal(host);
        return same_address(host, a->host);
}

static int parse_unix(const char *path, struct status_listen_addr *out, const char **why)
{
        if (path[0] != '/' || strlen(path) >= sizeof(out->path)) {
                *why = "a unix socket needs an absolute path shorter than 108 bytes";
                return -EINVAL;
        }
        out->is_unix = true;
        snprintf(out->path, sizeof(out->path), "%s", path);
        return 0;
}

int status_parse_listen(const char *s, struct status_listen_addr *out, const char **why)
{
        memset(out, 0, sizeof(*out));
        if (!s || strlen(s) > 256) {
                *why = "missing or too long";
                return -EINVAL;
        }
        if (strncmp(s, "unix:", 5) == 0)
                return parse_unix(s + 5, out, why);
        if (strncmp(s, "mailq:", 6) == 0) {
                int r = parse_unix(s + 6, out, why);
                out->owner_view = r == 0;
                return r;
        }

        const char *colon = strrchr(s, ':');
        const char *host = s, *host_end = colon;
        *why = "expected unix:/path, mailq:/path, ip:port, [ipv6]:port or localhost:port";
        if (!colon)
                return -EINVAL;
        if (s[0] == '[') {
                host = s + 1;
                if (colon == s || colon[-1] != ']')
                        return -EINVAL;
                host_end = colon - 1;
        }
        size_t hlen = host_end - host;
        if (hlen == 0 || hlen >= sizeof(out->host))
                return -EINVAL;
        memcpy(out->host, host, hlen);
        out->host[hlen] = '\0';
        if (strcmp(out->host, "localhost") == 0)
                snprintf(out->host, sizeof(out->host), "127.0.0.1");

        unsigned char a[16];
        bool v6 = s[0] == '[';
        if (inet_pton(v6 ? AF_INET6 : AF_INET, out->host, a) != 1) {
                *why = v6 ? "not a numeric IPv6 address" : "not a numeric IPv4 address";
                return -EINVAL;
        }
        if (parse_port(colon + 1, &out->port) < 0) {
                *why = "port must be a number from 0 to 65535";
                return -EINVAL;
        }
        return 0;
}

bool status_addr_is_loopback(const char *host)
{
        struct in_addr a4;
        struct in6_addr a6;
        if (inet_pton(AF_INET, host, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        if (inet_pton(AF_INET6, host, &a6) != 1)
                return false;
        if (IN6_IS_ADDR_LOOPBACK(&a6))
                return true;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
}
