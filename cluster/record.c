/* cluster/record.c — the one record format nodes share, and its validation.
 *
 * Everything read from Redis is outside input: another node, an older
 * version, an operator's redis-cli or an attacker with access to Redis may
 * have written it. A record is accepted only when every field is what this
 * version writes, and a pause only when it ends within CLUSTER_PAUSE_MAX_S.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/reply_class.h"

#define US          1000000LL
#define SOURCE_MAX  64 /* an IPv6 address with scope is well below */
#define N_FIELDS    7
#define VERSION_TAG "1"

static const char *const state_names[] = {
    [CLUSTER_SUSPENDED] = "suspended",
    [CLUSTER_BACKOFF] = "backoff",
};

/* Printable ASCII without space: what a route or prefix may hold. */
static bool token_ok(const char *s, size_t max)
{
        size_t n = 0;
        for (; s[n]; n++)
                if (n >= max || s[n] <= ' ' || s[n] > '~')
                        return false;
        return n > 0;
}

/* An IP address as tarry pins it: hex digits, dots, colons, a scope. */
static bool source_ok(const char *s)
{
        if (strcmp(s, "-") == 0)
                return true;
        size_t n = strlen(s);
        if (n == 0 || n > SOURCE_MAX)
                return false;
        return strspn(s, "0123456789abcdefABCDEF.:%") == n;
}

bool cluster_node_name_ok(const char *name)
{
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > CLUSTER_NAME_MAX)
                return false;
        return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") ==
               n;
}

bool cluster_prefix_ok(const char *prefix)
{
        return prefix && token_ok(prefix, CLUSTER_NAME_MAX);
}

int cluster_record_format(const struct cluster_pause *p, char *out, size_t outlen)
{
        const char *source = p->source && p->source[0] ? p->source : "-";
        if ((unsigned)p->state > CLUSTER_BACKOFF || !source_ok(source) || !p->route ||
            !token_ok(p->route, CLUSTER_ROUTE_MAX) || !cluster_node_name_ok(p->node))
                return -EINVAL;
        const char *cls = p->cls >= 0 && p->cls < CLASS__MAX ? reply_class_name(p->cls) : "-";
        int n = snprintf(out, outlen, VERSION_TAG " %s %s %s %" PRId64 " %s %s", source, p->route,
                         state_names[p->state], p->until_us, cls, p->node);
        return n < 0 || (size_t)n >= outlen || (size_t)n > CLUSTER_RECORD_MAX ? -EINVAL : 0;
}

int cluster_window_format(const struct cluster_window *w, char *out, size_t outlen)
{
        if (!w->route || !token_ok(w->route, CLUSTER_ROUTE_MAX) || !cluster_node_name_ok(w->node) ||
            w->upper_s < 1 || w->upper_s > CLUSTER_WINDOW_MAX_S || w->lower_s < 0 ||
            w->lower_s >= w->upper_s || w->learned_at_us <= 0)
                return -EINVAL;
        int n = snprintf(out, outlen, "w" VERSION_TAG " %s %" PRId64 " %" PRId64 " %" PRId64 " %s",
                         w->route, w->upper_s, w->lower_s, w->learned_at_us, w->node);
        return n < 0 || (size_t)n >= outlen || (size_t)n > CLUSTER_RECORD_MAX ? -EINVAL : 0;
}

static int refuse(char *why, size_t whylen, const char *what)
{
        snprintf(why, whylen, "%s", what);
        return -EINVAL;
}

/* A decimal number without sign, in [min, max]. */
static bool number(const char *s, long long min, long long max, long long *out)
{
        char *end = NULL;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || s[0] == '+' || v < min || v > max)
                return false;
        *out = v;
        return true;
}

/* Split work in place into at most max + 1 space-separated fields. */
static size_t split(char *work, char **f, size_t max)
{
        size_t n = 0;
        for (char *save = NULL, *t = strtok_r(work, " ", &save); t && n <= max;
             t = strtok_r(NULL, " ", &save))
                f[n++] = t;
        return n;
}

static int copy_in(const char *buf, size_t len, char *work, size_t workcap, char *why,
                   size_t whylen)
{
        if (len > CLUSTER_RECORD_MAX || len + 1 > workcap)
                return refuse(why, whylen, "too long");
        if (memchr(buf, '\0', len))
                return refuse(why, whylen, "a NUL byte");
        memcpy(work, buf, len);
        work[len] = '\0';
        return 0;
}

int cluster_window_parse(const char *buf, size_t len, int64_t now, char *work, size_t workcap,
                         struct cluster_window *out, char *why, size_t whylen)
{
        if (copy_in(buf, len, work, workcap, why, whylen) < 0)
                return -EINVAL;
        char *f[7];
        if (split(work, f, 6) != 6)
                return refuse(why, whylen, "not 6 fields");
        if (strcmp(f[0], "w" VERSION_TAG) != 0)
                return refuse(why, whylen, "unknown version");
        if (!token_ok(f[1], CLUSTER_ROUTE_MAX))
                return refuse(why, whylen, "route is not one");
        long long upper, lower, at;
        if (!number(f[2], 1, CLUSTER_WINDOW_MAX_S, &upper))
                return refuse(why, whylen, "upper bound is not 1 s to 12 h");
        if (!number(f[3], 0, upper - 1, &lower))
                return refuse(why, whylen, "lower bound is not below the upper");
        if (!number(f[4], 1, now + CLUSTER_SKEW_S * US, &at))
                return refuse(why, whylen, "learned time is not a number or in the future");
        if (!cluster_node_name_ok(f[5]))
                return refuse(why, whylen, "node name is not one");
        *out = (struct cluster_window){
            .route = f[1], .upper_s = upper, .lower_s = lower, .learned_at_us = at, .node = f[5]};
        return 0;
}

int cluster_resume_format(const struct cluster_resume *r, char *out, size_t outlen)
{
        const char *source = r->source && r->source[0] ? r->source : "-";
        if ((strcmp(source, "*") != 0 && !source_ok(source)) || !r->route ||
            !token_ok(r->route, CLUSTER_ROUTE_MAX) || !cluster_node_name_ok(r->node) ||
            r->at_us <= 0)
                return -EINVAL;
        int n = snprintf(out, outlen, "r" VERSION_TAG " %s %s %" PRId64 " %s", source, r->route,
                         r->at_us, r->node);
        return n < 0 || (size_t)n >= outlen || (size_t)n > CLUSTER_RECORD_MAX ? -EINVAL : 0;
}

int cluster_resume_parse(const char *buf, size_t len, int64_t now, char *work, size_t workcap,
                         struct cluster_resume *out, char *why, size_t whylen)
{
        if (copy_in(buf, len, work, workcap, why, whylen) < 0)
                return -EINVAL;
        char *f[6];
        if (split(work, f, 5) != 5)
                return refuse(why, whylen, "not 5 fields");
        if (strcmp(f[0], "r" VERSION_TAG) != 0)
                return refuse(why, whylen, "unknown version");
        if (strcmp(f[1], "*") != 0 && !source_ok(f[1]))
                return refuse(why, whylen, "source is not an address");
        if (!token_ok(f[2], CLUSTER_ROUTE_MAX))
                return refuse(why, whylen, "route is not one");
        long long at;
        if (!number(f[3], 1, now + CLUSTER_SKEW_S * US, &at))
                return refuse(why, whylen, "resume time is not a number or in the future");
        if (now - at > CLUSTER_PAUSE_MAX_S * US)
                return refuse(why, whylen, "resumed more than a day ago");
        if (!cluster_node_name_ok(f[4]))
                return refuse(why, whylen, "node name is not one");
        *out = (struct cluster_resume){
            .source = strcmp(f[1], "-") == 0 ? "" : f[1], .route = f[2], .at_us = at, .node = f[4]};
        return 0;
}

int cluster_record_parse(const char *buf, size_t len, int64_t now, char *work, size_t workcap,
                         struct cluster_pause *out, char *why, size_t whylen)
{
        if (copy_in(buf, len, work, workcap, why, whylen) < 0)
                return -EINVAL;
        char *f[N_FIELDS + 1];
        if (split(work, f, N_FIELDS) != N_FIELDS)
                return refuse(why, whylen, "not 7 fields");
        if (strcmp(f[0], VERSION_TAG) != 0)
                return refuse(why, whylen, "unknown version");
        if (!source_ok(f[1]))
                return refuse(why, whylen, "source is not an address");
        if (!token_ok(f[2], CLUSTER_ROUTE_MAX))
                return refuse(why, whylen, "route is not one");
        int state = -1;
        for (int i = 0; i <= CLUSTER_BACKOFF; i++)
                if (strcmp(f[3], state_names[i]) == 0)
                        state = i;
        if (state < 0)
                return refuse(why, whylen, "state is not suspended or backoff");
        char *end = NULL;
        errno = 0;
        long long until = strtoll(f[4], &end, 10);
        if (errno || end == f[4] || *end || f[4][0] == '-' || f[4][0] == '+')
                return refuse(why, whylen, "end time is not a number");
        if (until <= now)
                return refuse(why, whylen, "already over");
        if (until - now > CLUSTER_PAUSE_MAX_S * US)
                return refuse(why, whylen, "ends more than a day away");
        int cls = -1;
        if (strcmp(f[5], "-") != 0 &&
            ((cls = reply_class_from_name(f[5])) < 0 || cls == CLASS_PERMANENT))
                return refuse(why, whylen, "unknown class");
        if (!cluster_node_name_ok(f[6]))
                return refuse(why, whylen, "node name is not one");
        *out = (struct cluster_pause){.source = strcmp(f[1], "-") == 0 ? "" : f[1],
                                      .route = f[2],
                                      .state = (enum cluster_pause_state)state,
                                      .until_us = until,
                                      .cls = cls,
                                      .node = f[6]};
        return 0;
}
