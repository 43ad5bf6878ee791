/* config/config.c — tarry.conf parsing and validation; see config.h.
 *
 * inih does the tokenising; this file owns the key table, the value parsers,
 * the defaults and the "file:line: what" messages. inih does not report line
 * numbers to handlers, so we feed it through a reader that counts lines.
 */
#include "config/config.h"
#include "common/address.h"
#include "common/cleanup.h"
#include "common/fileio.h"
#include "common/utf8.h"

#include <arpa/inet.h>
#include <fcntl.h>

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum key_type {
        KEY_STRING,   /* char *; empty value means NULL */
        KEY_LIST,     /* char ** + count, comma separated */
        KEY_BOOL,     /* bool: yes/no/true/false/on/off/1/0 */
        KEY_DURATION, /* int64_t seconds */
        KEY_SIZE,     /* uint64_t bytes */
        KEY_INT,      /* int, in its int_ranges row, else >= 0 */
        KEY_PORT,     /* uint16_t, 1..65535 */
        KEY_TLS,      /* enum cfg_tls */
        KEY_RELAY,    /* relayhost: route or empty */
};

struct key_def {
        const char *section;
        const char *name;
        enum key_type type;
        size_t offset;
        size_t count_offset; /* KEY_LIST: where the element count goes */
        const char *doc;     /* one line, printed by cfg_print */
};

#define OFF(f)  offsetof(struct tarry_config, f)
#define LIST(f) OFF(f), OFF(n_##f)

/* Every key tarry.conf accepts outside [transport] and [retry.*]. */
static const struct key_def keys[] = {
    {"main", "spool_dir", KEY_STRING, OFF(spool_dir), 0, "where queued mail lives"},
    {"main", "myhostname", KEY_STRING, OFF(myhostname), 0, "EHLO name; default: host name"},
    {"main", "myorigin", KEY_STRING, OFF(myorigin), 0, "domain for bare local senders"},
    {"main", "source_address", KEY_LIST, LIST(source_addresses), "address(es) to send from"},
    {"main", "relayhost", KEY_RELAY, OFF(relayhost), 0, "[host]:port for all mail; empty: MX"},
    {"main", "status_listen", KEY_LIST, LIST(status_listen),
     "unix:PATH, mailq:PATH (users' own mail) and/or HOST:PORT"},
    {"main", "status_allow_remote", KEY_BOOL, OFF(status_allow_remote), 0,
     "allow a non-loopback status address"},
    {"main", "status_group", KEY_STRING, OFF(status_group), 0, "group of the status socket"},
    {"main", "message_size_limit", KEY_SIZE, OFF(message_size_limit), 0,
     "largest message sendmail accepts"},
    {"main", "queue_lifetime", KEY_DURATION, OFF(queue_lifetime_s), 0,
     "give up and bounce after this (RFC 5321 4.5.4.1)"},
    {"main", "delay_dsn_after_retries", KEY_INT, OFF(delay_dsn_after_retries), 0,
     "send one delay DSN after this many failed retries; 0: never"},
    {"main", "delay_dsn_min_age", KEY_DURATION, OFF(delay_dsn_min_age_s), 0,
     "and only once the message is this old; 0: the retry count alone"},
    {"main", "user", KEY_STRING, OFF(user), 0, "tarryd drops to this user when started as root"},
    {"main", "allow_sender_override", KEY_LIST, LIST(allow_sender_override),
     "who may set the envelope sender (sendmail -f): yes, no, or user names"},
    {"main", "shutdown_timeout", KEY_DURATION, OFF(shutdown_timeout_s), 0,
     "grace for in-flight attempts on SIGTERM"},
    {"main", "snapshot_interval", KEY_DURATION, OFF(snapshot_every_s), 0,
     "how often tarryd writes state/index.snap while running; 0: at a clean stop only"},
    {"main", "classifier_rules", KEY_STRING, OFF(classifier_rules), 0,
     "operator reply-classification rules, tried first"},
    {"main", "policy_file", KEY_STRING, OFF(policy_file), 0,
     "the shipped policy file; empty: DATADIR/tarry/tarry-policy.json"},
    {"main", "greylist_memory", KEY_DURATION, OFF(greylist_memory_s), 0,
     "forget learned greylist delays after this"},
    {"main", "maildrop_message_limit", KEY_INT, OFF(maildrop_message_limit), 0,
     "messages one unprivileged sendmail may submit (one drop file); 0: no limit"},
    {"main", "postmaster", KEY_STRING, OFF(postmaster), 0,
     "told when a DSN cannot be delivered; default postmaster@myorigin; empty: hold it"},
    {"main", "adminaddr", KEY_LIST, LIST(adminaddr),
     "mail to local names (no domain, myhostname, localhost) goes here; empty: off"},
    {"main", "hopcount_limit", KEY_INT, OFF(hopcount_limit), 0,
     "bounce (5.4.6) a message with this many Received: headers; 1 or more"},
    {"smtp", "port", KEY_PORT, OFF(smtp_port), 0, "port for MX delivery"},
    {"smtp", "tls", KEY_TLS, OFF(smtp_tls), 0, "none | may | encrypt | verify"},
    {"smtp", "relay_auth_file", KEY_STRING, OFF(relay_auth_file), 0,
     "user:password file for the relayhost"},
    {"smtp", "relay_auth_cleartext", KEY_BOOL, OFF(relay_auth_cleartext), 0,
     "allow AUTH to the relayhost without TLS"},
    {"smtp", "connect_timeout", KEY_DURATION, OFF(connect_timeout_s), 0,
     "connect, greeting, STARTTLS"},
    {"smtp", "command_timeout", KEY_DURATION, OFF(command_timeout_s), 0, "each SMTP reply"},
    {"smtp", "data_timeout", KEY_DURATION, OFF(data_timeout_s), 0, "the whole DATA phase"},
    {"smtp", "max_connections", KEY_INT, OFF(max_connections), 0, "all destinations"},
    {"smtp", "destination_concurrency", KEY_INT, OFF(destination_concurrency), 0,
     "per destination"},
    {"smtp", "max_deliveries_per_connection", KEY_INT, OFF(max_deliveries_per_connection), 0,
     "messages per connection"},
    {"smtp", "dns_servers", KEY_LIST, LIST(dns_servers), "IP[:port]; empty: resolv.conf"},
    {"smtp", "mx_cache_min_ttl", KEY_DURATION, OFF(mx_cache_min_ttl_s), 0,
     "an MX set is kept for its DNS TTL but at least this long (1s to 1d)"},
    {"smtp", "own_addresses", KEY_LIST, LIST(own_addresses),
     "this host's addresses besides its interfaces' (NAT): an MX there loops back"},
    {"smtp", "mta_sts", KEY_BOOL, OFF(mta_sts), 0,
     "MX delivery honours the recipient domain's MTA-STS policy (RFC 8461)"},
    {"smtp", "mta_sts_port", KEY_PORT, OFF(mta_sts_port), 0,
     "HTTPS port of mta-sts.DOMAIN: 443 (the RFC's); for tests only"},
    {"smtp", "tls_ca_file", KEY_STRING, OFF(tls_ca_file), 0,
     "CA certificates for verified TLS and MTA-STS fetches; empty: the system's"},
    {"diagnose", "greylist_no_window", KEY_DURATION, OFF(diagnose_greylist_no_window_s), 0,
     "greylist deferrals with no window known raise greylist_not_clearing after this"},
    {"diagnose", "reputation", KEY_DURATION, OFF(diagnose_reputation_s), 0,
     "reputation/rate_limit deferrals raise reputation_persistent after this"},
    {"diagnose", "unreachable", KEY_DURATION, OFF(diagnose_unreachable_s), 0,
     "no MX reached raises destination_unreachable after this"},
    {"cluster", "redis", KEY_STRING, OFF(cluster_redis), 0,
     "HOST:PORT or unix:PATH of the fleet's Redis; empty: no fleet (docs/fleet.md)"},
    {"cluster", "node", KEY_STRING, OFF(cluster_node), 0,
     "this node's name in the fleet; default: myhostname"},
    {"cluster", "prefix", KEY_STRING, OFF(cluster_prefix), 0,
     "namespace of every Redis key and channel; empty: tarry:"},
};

/* KEY_INT keys whose range is not 0..INT_MAX; the error states the range. */
static const struct {
        const char *name;
        long min, max;
} int_ranges[] = {
    /* no connection at all would queue mail for ever */
    {"max_connections", 1, INT_MAX},
    {"destination_concurrency", 1, INT_MAX},
    /* 0 would bounce every message, even one that has never been anywhere */
    {"hopcount_limit", 1, INT_MAX},
    /* 1: a new connection for every message */
    {"max_deliveries_per_connection", 1, 100000},
};

static const char *const retry_keys[] = {"initial",  "factor", "max",
                                         "use_hint", "scope",  "move_source"};

/* Starting point for each class; the reason for each value is in docs/scheduler.md. */
static const struct cfg_retry retry_defaults[CLASS__MAX] = {
    /* greylisters accept after 1-30 min; never wait long enough to be forgotten */
    [CLASS_GREYLIST] = {60, 2.0, 20 * 60, true, CFG_SCOPE_RECIPIENT, false},
    /* reputation blocks last tens of minutes to hours and hit the whole IP */
    [CLASS_REPUTATION] = {15 * 60, 2.0, 2 * 3600, true, CFG_SCOPE_DESTINATION, false},
    /* rate limits reset within minutes to an hour */
    [CLASS_RATE_LIMIT] = {5 * 60, 2.0, 3600, true, CFG_SCOPE_DESTINATION, false},
    /* overloaded servers recover in minutes; back off so we don't add load */
    [CLASS_OVERLOAD] = {2 * 60, 2.0, 30 * 60, true, CFG_SCOPE_DESTINATION, false},
    /* a full mailbox empties on a human schedule */
    [CLASS_MAILBOX_FULL] = {3600, 2.0, 6 * 3600, true, CFG_SCOPE_RECIPIENT, false},
    /* DNS and connection trouble: usually fixed within the hour */
    [CLASS_ROUTING] = {5 * 60, 2.0, 3600, true, CFG_SCOPE_DESTINATION, false},
    /* SPF/DKIM/TLS policy: needs a fix by a human, retry slowly */
    [CLASS_POLICY] = {15 * 60, 2.0, 2 * 3600, true, CFG_SCOPE_RECIPIENT, false},
    /* unknown: Postfix-like pace */
    [CLASS_UNKNOWN_TEMP] = {5 * 60, 2.0, 3600, true, CFG_SCOPE_RECIPIENT, false},
    /* permanent: never retried; values unused */
    [CLASS_PERMANENT] = {0, 1.0, 0, false, CFG_SCOPE_RECIPIENT, false},
};

struct seen {
        char *what; /* "section\nkey" */
        int line;
        struct seen *next;
};

struct parser {
        struct tarry_config *cfg;
        const char *name;
        const char *text, *pos;
        int line;
        int long_line; /* first line over the limit, 0: none */
        char *err;
        size_t errlen;
        bool failed;
        struct seen *seen;
};

static int fail(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct parser *p, const char *fmt, ...)
{
        if (p->failed)
                return 0;
        p->failed = true;
        int n = p->line > 0 ? snprintf(p->err, p->errlen, "%s:%d: ", p->name, p->line)
                            : snprintf(p->err, p->errlen, "%s: ", p->name);
        if (n < 0 || (size_t)n >= p->errlen)
                return 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
        return 0;
}

/* "key = value  # note": inih takes only ';' as an inline comment (Debian's
 * libinih 55 could be told '#' too, but only through a process-wide
 * variable); tarry.conf(5) promises both. Cut at a '#' that follows
 * whitespace, as inih does at a ';'. */
static void cut_hash_comment(char *line)
{
        for (char *h = strchr(line, '#'); h; h = strchr(h + 1, '#'))
                if (h > line && (h[-1] == ' ' || h[-1] == '\t')) {
                        h[0] = '\n';
                        h[1] = '\0';
                        return;
                }
}

/* inih reader over a memory buffer that counts lines and notices overlong ones. */
static char *read_line(char *str, int num, void *stream)
{
        struct parser *p = stream;
        if (*p->pos == '\0')
                return NULL;
        const char *nl = strchr(p->pos, '\n');
        size_t len = nl ? (size_t)(nl - p->pos) + 1 : strlen(p->pos);
        /* the same limit with or without the final newline, so that a last line
         * without one is not longer than any other line can be */
        if ((nl ? len : len + 1) >= (size_t)num) {
                p->line++;
                if (!p->long_line)
                        p->long_line = p->line;
                len = (size_t)num - 1;
                memcpy(str, p->pos, len);
                str[len] = '\0';
                p->pos = nl ? nl + 1 : p->pos + strlen(p->pos);
                /* make inih see a harmless comment; the error is reported below */
                str[0] = ';';
                return str;
        }
        memcpy(str, p->pos, len);
        str[len] = '\0';
        p->pos += len;
        p->line++;
        cut_hash_comment(str);
        return str;
}

int cfg_parse_duration(const char *s, int64_t *out_s)
{
        char *end;
        errno = 0;
        if (!isdigit((unsigned char)*s))
                return -EINVAL;
        long long v = strtoll(s, &end, 10);
        if (errno || v < 0)
                return -EINVAL;
        int64_t mult = 1;
        if (*end) {
                switch (*end) {
                case 's':
                        mult = 1;
                        break;
                case 'm':
                        mult = 60;
                        break;
                case 'h':
                        mult = 3600;
                        break;
                case 'd':
                        mult = 86400;
                        break;
                case 'w':
                        mult = 7 * 86400;
                        break;
                default:
                        return -EINVAL;
                }
                if (end[1])
                        return -EINVAL;
        }
        if (v > INT64_MAX / mult)
                return -ERANGE;
        *out_s = v * mult;
        return 0;
}

int cfg_parse_size(const char *s, uint64_t *out)
{
        char *end;
        errno = 0;
        if (!isdigit((unsigned char)*s))
                return -EINVAL;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno)
                return -EINVAL;
        uint64_t mult = 1;
        if (*end) {
                switch (*end) {
                case 'k':
                case 'K':
                        mult = 1024;
                        break;
                case 'M':
                        mult = 1024 * 1024;
                        break;
                case 'G':
                        mult = 1024ull * 1024 * 1024;
                        break;
                default:
                        return -EINVAL;
                }
                if (end[1])
                        return -EINVAL;
        }
        if (v > UINT64_MAX / mult)
                return -ERANGE;
        *out = v * mult;
        return 0;
}

static int parse_bool(const char *s, bool *out)
{
        static const char *const yes[] = {"yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0)
                        return *out = true, 0;
                if (strcasecmp(s, no[i]) == 0)
                        return *out = false, 0;
        }
        return -EINVAL;
}

static int parse_tls(const char *s, enum cfg_tls *out)
{
        static const char *const names[] = {"none", "may", "encrypt", "verify"};
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(s, names[i]) == 0)
                        return *out = (enum cfg_tls)i, 0;
        return -EINVAL;
}

const char *cfg_tls_name(enum cfg_tls t)
{
        static const char *const names[] = {"none", "may", "encrypt", "verify"};
        return (unsigned)t < ELEMENTSOF(names) ? names[t] : "?";
}

static int parse_port(const char *s, uint16_t *out)
{
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || *end || end == s || v < 1 || v > 65535)
                return -EINVAL;
        *out = (uint16_t)v;
        return 0;
}

static bool host_ok(const char *h, size_t n)
{
        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)h[i];
                if (!isalnum(c) && c != '.' && c != '-' && c != ':' && c != '_')
                        return false;
        }
        return true;
}

static void route_clear(struct cfg_route *r)
{
        free(r->host);
        *r = (struct cfg_route){0};
}

/* "[host]:port tls=verify", "host:port", "[::1]:25", "host". */
int cfg_parse_route(const char *s, struct cfg_route *out, const char **why)
{
        struct cfg_route r = {.tls = CFG_TLS_MAY};
        const char *p = s, *host, *host_end;
        if (*p == '[') {
                host = ++p;
                host_end = strchr(p, ']');
                if (!host_end)
                        return *why = "missing ']'", -EINVAL;
                p = host_end + 1;
                r.no_mx = true;
        } else {
                host = p;
                host_end = p + strcspn(p, ": \t");
                p = host_end;
        }
        if (!host_ok(host, (size_t)(host_end - host)) ||
            (!r.no_mx && memchr(host, ':', (size_t)(host_end - host))))
                return *why = "bad host name", -EINVAL;
        if (*p == ':') {
                char port[8];
                size_t n = strcspn(++p, " \t");
                if (n == 0 || n >= sizeof(port))
                        return *why = "bad port", -EINVAL;
                memcpy(port, p, n);
                port[n] = '\0';
                if (parse_port(port, &r.port) < 0)
                        return *why = "bad port", -EINVAL;
                p += n;
        }
        while (*p == ' ' || *p == '\t')
                p++;
        if (*p) {
                if (strncmp(p, "tls=", 4) != 0 || parse_tls(p + 4, &r.tls) < 0)
                        return *why = "expected 'tls=none|may|encrypt|verify' after the address",
                               -EINVAL;
        }
        r.host = strndup(host, (size_t)(host_end - host));
        if (!r.host)
                return -ENOMEM;
        *out = r;
        return 0;
}

static void strv_free(char **v)
{
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

static char *trim(char *s)
{
        while (isspace((unsigned char)*s))
                s++;
        char *e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
                *--e = '\0';
        return s;
}

static int parse_list(const char *value, char ***out, size_t *count)
{
        _cleanup_free_ char *copy = strdup(value);
        if (!copy)
                return -ENOMEM;
        size_t n = 0;
        char **v = calloc(strlen(value) / 2 + 2, sizeof(char *));
        if (!v)
                return -ENOMEM;
        char *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                char *t = trim(tok);
                if (!*t)
                        continue;
                if (!(v[n++] = strdup(t))) {
                        strv_free(v);
                        return -ENOMEM;
                }
        }
        *out = v;
        *count = n;
        return 0;
}

/* Key names compare exactly; [transport] and [dkim] domains without case, as they match. */
static bool name_eq(const char *section, const char *a, const char *b)
{
        return strcmp(section, "transport") == 0 || strcmp(section, "dkim") == 0
                   ? strcasecmp(a, b) == 0
                   : strcmp(a, b) == 0;
}

static bool mark_seen(struct parser *p, const char *section, const char *name)
{
        size_t len = strlen(section) + strlen(name) + 2;
        for (struct seen *s = p->seen; s; s = s->next)
                if (strlen(s->what) + 1 == len && strncmp(s->what, section, strlen(section)) == 0 &&
                    name_eq(section, s->what + strlen(section) + 1, name)) {
                        fail(p, "duplicate key '%s' in [%s] (first set on line %d)", name, section,
                             s->line);
                        return false;
                }
        struct seen *s = malloc(sizeof(*s));
        char *what = malloc(len);
        if (!s || !what) {
                free(s);
                free(what);
                fail(p, "out of memory");
                return false;
        }
        snprintf(what, len, "%s\n%s", section, name);
        *s = (struct seen){what, p->line, p->seen};
        p->seen = s;
        return true;
}

/* A KEY_INT value within the key's range; range gets the words for it. */
static int parse_int(const char *value, const struct key_def *k, int *out, char *range,
                     size_t rangesz)
{
        long min = 0, max = INT_MAX;
        for (size_t i = 0; i < ELEMENTSOF(int_ranges); i++)
                if (strcmp(int_ranges[i].name, k->name) == 0) {
                        min = int_ranges[i].min;
                        max = int_ranges[i].max;
                }
        if (max == INT_MAX)
                snprintf(range, rangesz, "expected a whole number, at least %ld", min);
        else
                snprintf(range, rangesz, "expected a whole number from %ld to %ld", min, max);
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || *end || end == value || v < min || v > max)
                return -EINVAL;
        *out = (int)v;
        return 0;
}

/* Not an error, but probably not what was meant: "file:line: what", kept in
 * cfg->warnings for tarryd to print (--check) and log (start, reload). */
static void warn(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(struct parser *p, const char *fmt, ...)
{
        char msg[768], *line = NULL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        char **v = realloc(p->cfg->warnings, (p->cfg->n_warnings + 2) * sizeof(*v));
        if (!v || asprintf(&line, "%s:%d: %s", p->name, p->line, msg) < 0) {
                if (v)
                        p->cfg->warnings = v;
                return; /* a warning lost to ENOMEM is not worth failing the load */
        }
        p->cfg->warnings = v;
        v[p->cfg->n_warnings++] = line;
        v[p->cfg->n_warnings] = NULL;
}

static bool ip_literal(const char *s);

/* "relayhost = 127.0.0.1:2600" without brackets looks up the MX records of
 * a domain called "127.0.0.1", which never exists: say which form was meant. */
static void warn_unbracketed_ip(struct parser *p, const char *key, const struct cfg_route *r)
{
        if (r->no_mx || !ip_literal(r->host))
                return;
        char port[8] = "";
        if (r->port)
                snprintf(port, sizeof(port), ":%u", r->port);
        warn(p,
             "%s = %s%s looks up the MX records of a domain named \"%s\"; to connect to "
             "that address, write %s = [%s]%s",
             key, r->host, port, r->host, key, r->host, port);
}

static int set_key(struct parser *p, const struct key_def *k, const char *value)
{
        void *f = (char *)p->cfg + k->offset;
        const char *why = NULL;
        char range[80];
        int r = 0;
        switch (k->type) {
        case KEY_STRING:
                free(*(char **)f);
                *(char **)f = *value ? strdup(value) : NULL;
                break;
        case KEY_LIST:
                strv_free(*(char ***)f);
                *(char ***)f = NULL;
                r = parse_list(value, (char ***)f, (size_t *)((char *)p->cfg + k->count_offset));
                break;
        case KEY_BOOL:
                r = parse_bool(value, f);
                why = "expected yes or no";
                break;
        case KEY_DURATION:
                r = cfg_parse_duration(value, f);
                why = "expected a duration such as 90, 30s, 5m, 2h or 5d";
                break;
        case KEY_SIZE:
                r = cfg_parse_size(value, f);
                why = "expected a size such as 512, 64k, 10M or 1G";
                break;
        case KEY_INT:
                r = parse_int(value, k, f, range, sizeof(range));
                why = range;
                break;
        case KEY_PORT:
                r = parse_port(value, f);
                why = "expected a port number 1-65535";
                break;
        case KEY_TLS:
                r = parse_tls(value, f);
                why = "expected none, may, encrypt or verify";
                break;
        case KEY_RELAY:
                route_clear(&p->cfg->relayhost);
                p->cfg->has_relayhost = false;
                if (!*value)
                        break;
                r = cfg_parse_route(value, &p->cfg->relayhost, &why);
                p->cfg->has_relayhost = r == 0;
                if (r == 0)
                        warn_unbracketed_ip(p, "relayhost", &p->cfg->relayhost);
                break;
        }
        if (r == -ENOMEM)
                return fail(p, "out of memory");
        if (r < 0)
                return fail(p, "bad value '%s' for %s in [%s]: %s", value, k->name, k->section,
                            why ? why : "invalid");
        return 1;
}

/* The section a [transport] "domain" belongs in when it is really a key of
 * another section: keys appended at the end of a file whose last section is
 * [transport] silently became routes for domains called relayhost. */
static const char *misplaced_key(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (strcasecmp(keys[i].name, name) == 0)
                        return keys[i].section;
        for (size_t i = 0; i < ELEMENTSOF(retry_keys); i++)
                if (strcasecmp(retry_keys[i], name) == 0)
                        return "retry.CLASS";
        return NULL;
}

/* A [transport] key: "*", or a domain ("example.com", an IDN in UTF-8) or
 * ".parent.domain": dot-separated non-empty labels of letters, digits, '-'
 * and '_' or well-formed UTF-8. No spaces or control bytes: such a key can
 * match no recipient domain, and it would not print back as itself. */
static bool transport_domain_ok(const char *d)
{
        if (strcmp(d, "*") == 0)
                return true;
        const unsigned char *s = (const unsigned char *)(d[0] == '.' ? d + 1 : d);
        size_t n = strlen((const char *)s), label = 0;
        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i < n;) {
                if (s[i] == '.') {
                        if (label == 0)
                                return false;
                        label = 0;
                        i++;
                } else if (s[i] >= 0x80) {
                        size_t k = utf8_seq_len(s + i, n - i);
                        if (k == 0)
                                return false;
                        i += k, label += k;
                } else if (isalnum(s[i]) || s[i] == '-' || s[i] == '_') {
                        i++, label++;
                } else {
                        return false;
                }
        }
        return label > 0;
}

static int set_transport(struct parser *p, const char *domain, const char *value)
{
        const char *why = "invalid";
        struct cfg_route r;
        if (!*domain) /* "= host" would print as a continuation line and never match */
                return fail(p, "a route in [transport] needs a domain before '='");
        const char *home = misplaced_key(domain);
        if (home)
                return fail(p,
                            "'%s' in [transport] would be a route for a domain called %s: %s "
                            "belongs in [%s], above [transport]",
                            domain, domain, domain, home);
        if (!transport_domain_ok(domain))
                return fail(p,
                            "'%s' in [transport] is not a domain: expected example.com, "
                            ".example.com (its subdomains) or * (every other domain)",
                            domain);
        int ret = cfg_parse_route(value, &r, &why);
        if (ret < 0)
                return fail(p, "bad route '%s' for %s in [transport]: %s", value, domain, why);
        struct cfg_transport *t =
            realloc(p->cfg->transports, (p->cfg->n_transports + 1) * sizeof(*t));
        if (!t) {
                route_clear(&r);
                return fail(p, "out of memory");
        }
        p->cfg->transports = t;
        t[p->cfg->n_transports].domain = strdup(domain);
        for (char *c = t[p->cfg->n_transports].domain; c && *c; c++)
                *c = (char)tolower((unsigned char)*c);
        t[p->cfg->n_transports].route = r;
        p->cfg->n_transports++;
        warn_unbracketed_ip(p, domain, &r);
        return 1;
}

/* ---- [dkim] ---- */

/* A [dkim] domain or selector (RFC 6376 3.1: dot-separated labels; "_"
 * allowed, as some providers' selectors have it). */
static bool dkim_name_ok(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
                return false;
        return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

static void dkim_row_clear(struct cfg_dkim *row)
{
        for (size_t i = 0; i < row->n_keys; i++) {
                free(row->keys[i].selector);
                free(row->keys[i].path);
        }
        free(row->keys);
        free(row->domain);
        *row = (struct cfg_dkim){0};
}

/* "sel:/path" into row; 0, -ENOMEM, or -EINVAL with *why. */
static int dkim_add_key(struct cfg_dkim *row, char *item, const char **why)
{
        char *colon = strchr(item, ':');
        if (!colon) {
                *why = "expected SELECTOR:/path/to/key";
                return -EINVAL;
        }
        *colon = '\0';
        char *sel = trim(item), *path = trim(colon + 1);
        if (!dkim_name_ok(sel)) {
                *why = "the selector is not a DNS name";
                return -EINVAL;
        }
        if (path[0] != '/') {
                *why = "the key file must be an absolute path";
                return -EINVAL;
        }
        for (size_t i = 0; i < row->n_keys; i++)
                if (strcasecmp(row->keys[i].selector, sel) == 0) {
                        *why = "the same selector twice";
                        return -EINVAL;
                }
        struct cfg_dkim_key *k = realloc(row->keys, (row->n_keys + 1) * sizeof(*k));
        if (!k)
                return -ENOMEM;
        row->keys = k;
        k[row->n_keys] = (struct cfg_dkim_key){strdup(sel), strdup(path)};
        row->n_keys++;
        return k[row->n_keys - 1].selector && k[row->n_keys - 1].path ? 0 : -ENOMEM;
}

static int set_dkim(struct parser *p, const char *domain, const char *value)
{
        const char *home = misplaced_key(domain);
        if (home)
                return fail(p,
                            "'%s' in [dkim] would be a row for a domain called %s: %s belongs "
                            "in [%s], above [dkim]",
                            domain, domain, domain, home);
        if (!dkim_name_ok(domain))
                return fail(p, "'%s' in [dkim] is not a domain name", domain);
        struct cfg_dkim row = {.domain = strdup(domain), .line = p->line};
        _cleanup_free_ char *copy = strdup(value);
        const char *why = "invalid";
        int r = row.domain && copy ? 0 : -ENOMEM;
        char *save = NULL;
        for (char *tok = r == 0 ? strtok_r(copy, ",", &save) : NULL; tok && r == 0;
             tok = strtok_r(NULL, ",", &save))
                r = dkim_add_key(&row, tok, &why);
        if (r == 0 && row.n_keys == 0) {
                r = -EINVAL;
                why = "expected SELECTOR:/path/to/key[,SELECTOR:/path/to/key...]";
        }
        struct cfg_dkim *v =
            r == 0 ? realloc(p->cfg->dkim, (p->cfg->n_dkim + 1) * sizeof(*v)) : NULL;
        if (r == 0 && !v)
                r = -ENOMEM;
        if (r < 0) {
                dkim_row_clear(&row);
                return r == -ENOMEM
                           ? fail(p, "out of memory")
                           : fail(p, "bad value '%s' for %s in [dkim]: %s", value, domain, why);
        }
        for (char *c = row.domain; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        p->cfg->dkim = v;
        v[p->cfg->n_dkim++] = row;
        return 1;
}

const struct cfg_dkim *cfg_dkim_for(const struct tarry_config *cfg, const char *domain)
{
        for (const char *d = domain; d && *d;) {
                for (size_t i = 0; i < cfg->n_dkim; i++)
                        if (strcasecmp(cfg->dkim[i].domain, d) == 0)
                                return &cfg->dkim[i];
                d = strchr(d, '.');
                d = d ? d + 1 : NULL;
        }
        return NULL;
}

static int set_retry(struct parser *p, int cls, const char *name, const char *value)
{
        struct cfg_retry *rt = &p->cfg->retry[cls];
        int r;
        if (strcmp(name, "initial") == 0) {
                r = cfg_parse_duration(value, &rt->initial_s);
        } else if (strcmp(name, "max") == 0) {
                r = cfg_parse_duration(value, &rt->max_s);
        } else if (strcmp(name, "use_hint") == 0) {
                r = parse_bool(value, &rt->use_hint);
        } else if (strcmp(name, "move_source") == 0) {
                /* a greylister (or a silent one: unknown_temp) lets the same
                 * (address, sender, recipient) through, never another address */
                if (cls != CLASS_REPUTATION)
                        return fail(p,
                                    "move_source belongs in [retry.reputation] (it covers "
                                    "rate-limit suspensions too), not in [retry.%s]",
                                    reply_class_name(cls));
                r = parse_bool(value, &rt->move_source);
        } else if (strcmp(name, "factor") == 0) {
                char *end;
                double f = strtod(value, &end);
                r = (*end || end == value || !isfinite(f) || f < 1.0 || f > 100.0) ? -EINVAL : 0;
                if (r == 0)
                        rt->factor = f;
        } else {
                r = strcmp(value, "recipient") == 0     ? (rt->scope = CFG_SCOPE_RECIPIENT, 0)
                    : strcmp(value, "destination") == 0 ? (rt->scope = CFG_SCOPE_DESTINATION, 0)
                                                        : -EINVAL;
        }
        if (r < 0)
                return fail(p, "bad value '%s' for %s in [retry.%s]", value, name,
                            reply_class_name(cls));
        return 1;
}

static int handle(void *user, const char *section, const char *name, const char *value)
{
        struct parser *p = user;
        if (p->failed)
                return 1;
        if (!mark_seen(p, section, name))
                return 0;
        if (strcmp(section, "transport") == 0)
                return set_transport(p, name, value);
        if (strcmp(section, "dkim") == 0)
                return set_dkim(p, name, value);
        if (strncmp(section, "retry.", 6) == 0) {
                int cls = reply_class_from_name(section + 6);
                if (cls < 0 || cls == CLASS_PERMANENT)
                        return fail(p, "unknown section [%s]", section);
                for (size_t i = 0; i < ELEMENTSOF(retry_keys); i++)
                        if (strcmp(name, retry_keys[i]) == 0)
                                return set_retry(p, cls, name, value);
                return fail(p, "unknown key '%s' in [%s]", name, section);
        }
        bool known_section = false;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (strcmp(keys[i].section, section) != 0)
                        continue;
                known_section = true;
                if (strcmp(keys[i].name, name) == 0)
                        return set_key(p, &keys[i], value);
        }
        if (!known_section)
                return fail(p, "unknown section [%s]", section);
        return fail(p, "unknown key '%s' in [%s]", name, section);
}

static void host_name(char *buf, size_t size)
{
        if (gethostname(buf, size - 1) < 0)
                snprintf(buf, size, "localhost");
        buf[size - 1] = '\0';
}

static int set_defaults(struct tarry_config *c)
{
        char host[256];
        host_name(host, sizeof(host));
        c->spool_dir = strdup("/var/spool/tarry");
        c->myhostname = strdup(host);
        c->user = strdup("tarry");
        if (!c->spool_dir || !c->myhostname || !c->user)
                return -ENOMEM;
        if (parse_list("unix:/run/tarry/status.sock, mailq:/run/tarry/mailq.sock",
                       &c->status_listen, &c->n_status_listen) < 0)
                return -ENOMEM;
        if (parse_list("yes", &c->allow_sender_override, &c->n_allow_sender_override) < 0)
                return -ENOMEM;
        c->message_size_limit = 10 * 1024 * 1024;
        c->queue_lifetime_s = 5 * 86400;
        c->delay_dsn_after_retries = 2;
        c->delay_dsn_min_age_s = 30 * 60;
        c->shutdown_timeout_s = 30;
        c->snapshot_every_s = 300;
        c->greylist_memory_s = 30 * 86400;
        c->maildrop_message_limit = 1000;
        c->hopcount_limit = 50; /* Postfix's hopcount_limit */
        /* issue 21: a greylister with no stated window accepts within 30 min */
        c->diagnose_greylist_no_window_s = 3600;
        /* reputation blocks that last longer than a working day need a person */
        c->diagnose_reputation_s = 6 * 3600;
        /* routing trouble is usually fixed within the hour (retry.routing) */
        c->diagnose_unreachable_s = 3600;
        c->smtp_port = 25;
        c->smtp_tls = CFG_TLS_MAY;
        c->mta_sts = true;
        c->mta_sts_port = 443;
        c->connect_timeout_s = 30;
        c->command_timeout_s = 300;
        c->data_timeout_s = 600;
        c->max_connections = 100;
        c->destination_concurrency = 20;
        c->max_deliveries_per_connection = 100;
        /* a zero or tiny TTL would mean a lookup per message; KumoMTA and
         * unbound leave the floor unset, Squid's is 1 minute */
        c->mx_cache_min_ttl_s = 60;
        memcpy(c->retry, retry_defaults, sizeof(retry_defaults));
        return 0;
}

static bool is_yes_or_no(const char *s)
{
        return strcmp(s, "yes") == 0 || strcmp(s, "no") == 0;
}

/* allow_sender_override: "yes", "no", or user names (which are never yes/no). */
static int validate_sender_override(struct parser *p)
{
        const struct tarry_config *c = p->cfg;
        for (size_t i = 0; i < c->n_allow_sender_override; i++) {
                const char *u = c->allow_sender_override[i];
                if (is_yes_or_no(u) && c->n_allow_sender_override > 1)
                        return fail(p,
                                    "allow_sender_override: '%s' cannot be mixed with user "
                                    "names",
                                    u),
                               -EINVAL;
                if (!*u || strspn(u, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789._-$") != strlen(u))
                        return fail(p, "allow_sender_override: '%s' is not a user name", u),
                               -EINVAL;
        }
        return 0;
}

bool cfg_sender_allowed(const struct tarry_config *cfg, uid_t uid, const char *user,
                        const char *sender)
{
        if (uid == 0)
                return true;
        for (size_t i = 0; i < cfg->n_allow_sender_override; i++) {
                const char *u = cfg->allow_sender_override[i];
                if (strcmp(u, "yes") == 0 || (user && strcmp(u, user) == 0))
                        return true;
        }
        /* the sender sendmail would have chosen anyway: user@myorigin */
        size_t n = user ? strlen(user) : 0;
        return n > 0 && strncmp(sender, user, n) == 0 && sender[n] == '@' &&
               strcasecmp(sender + n + 1, cfg->myorigin) == 0;
}

/* The line that set section/name, 0 when the file did not set it. */
static int seen_line(const struct parser *p, const char *section, const char *name)
{
        size_t ls = strlen(section);
        for (const struct seen *s = p->seen; s; s = s->next)
                if (strncmp(s->what, section, ls) == 0 && s->what[ls] == '\n' &&
                    name_eq(section, s->what + ls + 1, name))
                        return s->line;
        return 0;
}

static int later(int a, int b)
{
        return a > b ? a : b;
}

static bool ip_literal(const char *s)
{
        unsigned char buf[sizeof(struct in6_addr)];
        return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* A DNS server as c-ares takes it: IPv4[:port], IPv6 or [IPv6]:port. */
static bool dns_server_ok(const char *s)
{
        char host[INET6_ADDRSTRLEN + 1];
        const char *port = NULL;
        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end || (size_t)(end - s - 1) >= sizeof(host) || (end[1] && end[1] != ':'))
                        return false;
                memcpy(host, s + 1, (size_t)(end - s - 1));
                host[end - s - 1] = '\0';
                port = end[1] ? end + 2 : NULL;
        } else if (strchr(s, ':') == strrchr(s, ':') && strchr(s, ':')) {
                const char *colon = strchr(s, ':');
                if ((size_t)(colon - s) >= sizeof(host))
                        return false;
                memcpy(host, s, (size_t)(colon - s));
                host[colon - s] = '\0';
                port = colon + 1;
        } else {
                return ip_literal(s);
        }
        if (port) {
                char *end;
                long v = strtol(port, &end, 10);
                if (!isdigit((unsigned char)*port) || *end || v < 1 || v > 65535)
                        return false;
        }
        return ip_literal(host);
}

/* Addresses tarry uses as they are: a typo is an error now, not at the first
 * delivery. */
static int validate_addresses(struct parser *p)
{
        const struct tarry_config *c = p->cfg;
        p->line = seen_line(p, "main", "source_address");
        for (size_t i = 0; i < c->n_source_addresses; i++)
                if (!ip_literal(c->source_addresses[i]))
                        return fail(p, "source_address: '%s' is not an IPv4 or IPv6 address",
                                    c->source_addresses[i]),
                               -EINVAL;
        p->line = seen_line(p, "smtp", "own_addresses");
        for (size_t i = 0; i < c->n_own_addresses; i++)
                if (!ip_literal(c->own_addresses[i]))
                        return fail(p, "own_addresses: '%s' is not an IPv4 or IPv6 address",
                                    c->own_addresses[i]),
                               -EINVAL;
        p->line = seen_line(p, "smtp", "dns_servers");
        for (size_t i = 0; i < c->n_dns_servers; i++)
                if (!dns_server_ok(c->dns_servers[i]))
                        return fail(p,
                                    "dns_servers: '%s' is not an IP address (IPv4[:port], "
                                    "IPv6 or [IPv6]:port)",
                                    c->dns_servers[i]),
                               -EINVAL;
        return 0;
}

/* RFC 1035 host name: dot-separated labels of letters, digits and hyphens
 * (not at either end), 1-63 bytes each, 253 in all; no trailing dot. */
static bool dns_name_ok(const char *s)
{
        size_t n = strlen(s), label = 0;
        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i <= n; i++) {
                if (i == n || s[i] == '.') {
                        if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-')
                                return false;
                        label = 0;
                } else if (isalnum((unsigned char)s[i]) || s[i] == '-') {
                        label++;
                } else {
                        return false;
                }
        }
        return true;
}

/* myhostname goes into EHLO and every Message-ID, myorigin into addresses:
 * a CR, a space or an '@' there would end up inside headers and commands.
 * An empty myhostname means the default, the host name. */
static int validate_names(struct parser *p)
{
        struct tarry_config *c = p->cfg;
        static const char rule[] =
            "not a DNS name (letters, digits, '-' and '.'; labels of 1-63, at most 253 in all)";
        p->line = seen_line(p, "main", "myhostname");
        bool defaulted = !p->line || !c->myhostname;
        if (!c->myhostname) {
                char host[256];
                host_name(host, sizeof(host));
                if (!(c->myhostname = strdup(host)))
                        return -ENOMEM;
        }
        if (!dns_name_ok(c->myhostname) && defaulted)
                return fail(p,
                            "myhostname defaults to the host name, '%s', which is %s: set "
                            "myhostname in [main]",
                            c->myhostname, rule),
                       -EINVAL;
        if (!dns_name_ok(c->myhostname))
                return fail(p, "myhostname: '%s' is %s", c->myhostname, rule), -EINVAL;
        p->line = seen_line(p, "main", "myorigin");
        if (c->myorigin && !dns_name_ok(c->myorigin))
                return fail(p, "myorigin: '%s' is %s", c->myorigin, rule), -EINVAL;
        if (!c->myorigin && !(c->myorigin = strdup(c->myhostname)))
                return -ENOMEM;
        return 0;
}

bool cfg_domain_is_local(const struct tarry_config *cfg, const char *domain)
{
        return !domain || strcasecmp(domain, "localhost") == 0 ||
               (cfg->myhostname && strcasecmp(domain, cfg->myhostname) == 0);
}

const char *cfg_rcpt_origin(const struct tarry_config *cfg)
{
        return cfg->n_adminaddr > 0 ? cfg->myhostname : cfg->myorigin;
}

/* An address that becomes a RCPT TO: checked, and with a domain. */
static int check_rcpt_address(struct parser *p, const char *key, const char *a)
{
        const char *why = "no domain";
        if (addr_check(a, &why) < 0 || !addr_domain(a))
                return fail(p, "%s: '%s' is not a mail address: %s", key, a, why), -EINVAL;
        return 0;
}

/* postmaster (default postmaster@myorigin, set but empty: none), adminaddr
 * (never a local name itself: it would be rewritten again). */
static int validate_local_delivery(struct parser *p)
{
        struct tarry_config *c = p->cfg;
        p->line = seen_line(p, "main", "postmaster");
        if (!p->line && asprintf(&c->postmaster, "postmaster@%s", c->myorigin) < 0) {
                c->postmaster = NULL;
                return fail(p, "out of memory"), -ENOMEM;
        }
        if (c->postmaster && check_rcpt_address(p, "postmaster", c->postmaster) < 0)
                return -EINVAL;
        p->line = seen_line(p, "main", "adminaddr");
        for (size_t i = 0; i < c->n_adminaddr; i++) {
                if (check_rcpt_address(p, "adminaddr", c->adminaddr[i]) < 0)
                        return -EINVAL;
                if (cfg_domain_is_local(c, addr_domain(c->adminaddr[i])))
                        return fail(p,
                                    "adminaddr: '%s' is itself a local name (its domain is "
                                    "myhostname or localhost)",
                                    c->adminaddr[i]),
                               -EINVAL;
        }
        return 0;
}

/* Cross-key checks that a single line cannot express: the error names the
 * line that set the value (the later one of two), or only the file when the
 * value is a default. */
static int validate(struct parser *p)
{
        struct tarry_config *c = p->cfg;
        p->line = seen_line(p, "main", "spool_dir");
        if (!c->spool_dir || c->spool_dir[0] != '/')
                return fail(p, "spool_dir must be an absolute path"), -EINVAL;
        if (validate_names(p) < 0)
                return -EINVAL;
        if (validate_local_delivery(p) < 0)
                return -EINVAL;
        for (int i = 0; i < CLASS__MAX; i++) {
                if (i == CLASS_PERMANENT || c->retry[i].max_s >= c->retry[i].initial_s)
                        continue;
                char section[64];
                snprintf(section, sizeof(section), "retry.%s", reply_class_name(i));
                p->line = later(seen_line(p, section, "max"), seen_line(p, section, "initial"));
                return fail(p, "[%s]: max is smaller than initial", section), -EINVAL;
        }
        if (validate_addresses(p) < 0)
                return -EINVAL;
        static const char *const diag_keys[] = {"greylist_no_window", "reputation", "unreachable"};
        const int64_t diag_vals[] = {c->diagnose_greylist_no_window_s, c->diagnose_reputation_s,
                                     c->diagnose_unreachable_s};
        for (size_t i = 0; i < 3; i++) {
                p->line = seen_line(p, "diagnose", diag_keys[i]);
                /* 0 would raise a diagnosis at the first deferral of its kind */
                if (diag_vals[i] < 1)
                        return fail(p, "[diagnose] %s must be at least 1s", diag_keys[i]), -EINVAL;
        }
        p->line = seen_line(p, "smtp", "mx_cache_min_ttl");
        if (c->mx_cache_min_ttl_s < 1 || c->mx_cache_min_ttl_s > 86400)
                return fail(p, "[smtp] mx_cache_min_ttl must be between 1s and 1d"), -EINVAL;
        p->line = later(seen_line(p, "main", "relayhost"), seen_line(p, "smtp", "relay_auth_file"));
        if (c->relay_auth_file && c->has_relayhost && c->relayhost.tls == CFG_TLS_NONE &&
            !c->relay_auth_cleartext)
                return fail(p, "relayhost has tls=none but relay_auth_file is set: the password "
                               "would cross the network in clear (use tls=verify or "
                               "tls=encrypt, or set relay_auth_cleartext = yes)"),
                       -EINVAL;
        p->line = seen_line(p, "main", "allow_sender_override");
        return validate_sender_override(p);
}

int cfg_load_string(const char *name, const char *text, struct tarry_config **out, char *err,
                    size_t errlen)
{
        struct tarry_config *cfg = calloc(1, sizeof(*cfg));
        if (!cfg || !(cfg->path = strdup(name))) {
                free(cfg);
                return -ENOMEM;
        }
        char dummy[1];
        struct parser p = {.cfg = cfg,
                           .name = name,
                           .text = text,
                           .pos = text,
                           .err = err ? err : dummy,
                           .errlen = err ? errlen : sizeof(dummy)};
        int r = set_defaults(cfg);
        if (r == 0) {
                int bad_line = ini_parse_stream(read_line, &p, handle, &p);
                if (p.long_line && !p.failed) {
                        p.line = p.long_line;
                        fail(&p, "a line is longer than %d characters", INI_MAX_LINE - 2);
                }
                if (bad_line > 0 && !p.failed) {
                        p.line = bad_line;
                        fail(&p, "syntax error: expected 'key = value' or '[section]'");
                }
                r = p.failed ? -EINVAL : validate(&p);
        }
        while (p.seen) {
                struct seen *n = p.seen->next;
                free(p.seen->what);
                free(p.seen);
                p.seen = n;
        }
        if (r < 0) {
                cfg_free(cfg);
                return r;
        }
        *out = cfg;
        return 0;
}

int cfg_load(const char *path, struct tarry_config **out, char *err, size_t errlen)
{
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = file_read_all_at(AT_FDCWD, path, 1 << 20, &text, &len);
        if (r < 0) {
                if (err)
                        snprintf(err, errlen, "%s: cannot read configuration: %s", path,
                                 strerror(-r));
                return r;
        }
        if (memchr(text, '\0', len)) {
                if (err)
                        snprintf(err, errlen, "%s: contains a NUL byte", path);
                return -EINVAL;
        }
        return cfg_load_string(path, text, out, err, errlen);
}

const char *cfg_path(const char *cli_path)
{
        if (cli_path && *cli_path)
                return cli_path;
        const char *env = getenv("TARRY_CONFIG");
        if (env && *env)
                return env;
        return CFG_DEFAULT_PATH;
}

void cfg_free(struct tarry_config *cfg)
{
        if (!cfg)
                return;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                void *f = (char *)cfg + keys[i].offset;
                if (keys[i].type == KEY_STRING)
                        free(*(char **)f);
                else if (keys[i].type == KEY_LIST)
                        strv_free(*(char ***)f);
        }
        route_clear(&cfg->relayhost);
        strv_free(cfg->warnings);
        for (size_t i = 0; i < cfg->n_transports; i++) {
                free(cfg->transports[i].domain);
                route_clear(&cfg->transports[i].route);
        }
        free(cfg->transports);
        for (size_t i = 0; i < cfg->n_dkim; i++)
                dkim_row_clear(&cfg->dkim[i]);
        free(cfg->dkim);
        free(cfg->path);
        free(cfg);
}

const struct cfg_route *cfg_transport_for(const struct tarry_config *cfg, const char *domain)
{
        const struct cfg_route *wildcard = NULL, *parent = NULL;
        size_t dlen = strlen(domain), best = 0;
        for (size_t i = 0; i < cfg->n_transports; i++) {
                const char *d = cfg->transports[i].domain;
                size_t n = strlen(d);
                if (strcmp(d, "*") == 0)
                        wildcard = &cfg->transports[i].route;
                else if (d[0] != '.' && strcasecmp(d, domain) == 0)
                        return &cfg->transports[i].route;
                else if (d[0] == '.' && dlen > n && strcasecmp(domain + dlen - n, d) == 0 &&
                         n > best) {
                        parent = &cfg->transports[i].route;
                        best = n;
                }
        }
        return parent ? parent : wildcard;
}

static void print_route(FILE *f, const struct cfg_route *r)
{
        fprintf(f, r->no_mx ? "[%s]" : "%s", r->host);
        if (r->port)
                fprintf(f, ":%u", r->port);
        if (r->tls != CFG_TLS_MAY)
                fprintf(f, " tls=%s", cfg_tls_name(r->tls));
}

static void print_value(FILE *f, const struct tarry_config *c, const struct key_def *k,
                        bool compact)
{
        const void *v = (const char *)c + k->offset;
        fprintf(f, compact ? "%s=" : "%s = ", k->name);
        switch (k->type) {
        case KEY_STRING:
                fputs(*(char *const *)v ? *(char *const *)v : "", f);
                break;
        case KEY_LIST:
                for (char *const *s = *(char **const *)v; s && *s; s++)
                        fprintf(f, "%s%s", s == *(char **const *)v ? "" : compact ? "," : ", ", *s);
                break;
        case KEY_BOOL:
                fputs(*(const bool *)v ? "yes" : "no", f);
                break;
        case KEY_DURATION:
                fprintf(f, "%llds", (long long)*(const int64_t *)v);
                break;
        case KEY_SIZE:
                fprintf(f, "%llu", (unsigned long long)*(const uint64_t *)v);
                break;
        case KEY_INT:
                fprintf(f, "%d", *(const int *)v);
                break;
        case KEY_PORT:
                fprintf(f, "%u", *(const uint16_t *)v);
                break;
        case KEY_TLS:
                fputs(cfg_tls_name(*(const enum cfg_tls *)v), f);
                break;
        case KEY_RELAY:
                if (c->has_relayhost)
                        print_route(f, &c->relayhost);
                break;
        }
}

static char *render_value(const struct tarry_config *c, const struct key_def *k, bool compact,
                          size_t *len)
{
        char *line = NULL;
        FILE *m = open_memstream(&line, len);
        if (!m)
                return NULL;
        print_value(m, c, k, compact);
        if (fclose(m) != 0) {
                free(line);
                return NULL;
        }
        return line;
}

/* "key = value<TAB>; doc", or the doc on a line of its own above a long value,
 * written "key=a,b" if it is longer still or holds a ';': the printout must load again
 * (inih refuses lines of INI_MAX_LINE or more). */
static void print_key(FILE *f, const struct tarry_config *c, const struct key_def *k)
{
        size_t len = 0;
        _cleanup_free_ char *line = render_value(c, k, false, &len);
        /* " ;" and " #" start a comment: "key=;x" and "a,;b" must stay tight */
        bool semicolon =
            line && len > strlen(k->name) + 3 &&
            (strchr(line + strlen(k->name) + 3, ';') || strchr(line + strlen(k->name) + 3, '#'));
        if (line && (len + 1 >= INI_MAX_LINE || semicolon)) {
                free(line);
                line = render_value(c, k, true, &len);
        }
        if (!line)
                return;
        if (len + 3 + strlen(k->doc) + 1 >= INI_MAX_LINE) /* + the newline */
                fprintf(f, "; %s\n%s\n", k->doc, line);
        else
                fprintf(f, "%s\t; %s\n", line, k->doc);
}

/* "domain = route", or "domain=route" when that is needed to stay within the line limit. */
static void print_transport(FILE *f, const struct cfg_transport *t)
{
        char *route = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&route, &len);
        if (!m)
                return;
        print_route(m, &t->route);
        if (fclose(m) != 0) {
                free(route);
                return;
        }
        bool tight = strlen(t->domain) + 3 + len + 1 >= INI_MAX_LINE;
        fprintf(f, "%s%s%s\n", t->domain, tight ? "=" : " = ", route);
        free(route);
}

void cfg_print(FILE *f, const struct tarry_config *c)
{
        fprintf(f, "; effective configuration read from %s\n", c->path);
        const char *section = NULL;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (!section || strcmp(section, keys[i].section) != 0) {
                        section = keys[i].section;
                        fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
                }
                print_key(f, c, &keys[i]);
        }
        fprintf(f, "\n[transport]\n");
        for (size_t i = 0; i < c->n_transports; i++)
                print_transport(f, &c->transports[i]);
        fprintf(f, "\n[dkim]\n");
        for (size_t i = 0; i < c->n_dkim; i++) {
                fprintf(f, "%s = ", c->dkim[i].domain);
                for (size_t k = 0; k < c->dkim[i].n_keys; k++)
                        fprintf(f, "%s%s:%s", k ? "," : "", c->dkim[i].keys[k].selector,
                                c->dkim[i].keys[k].path);
                fputc('\n', f);
        }
        for (int i = 0; i < CLASS__MAX; i++) {
                if (i == CLASS_PERMANENT)
                        continue;
                const struct cfg_retry *r = &c->retry[i];
                fprintf(f,
                        "\n[retry.%s]\ninitial = %llds\nfactor = %g\nmax = %llds\n"
                        "use_hint = %s\nscope = %s\n",
                        reply_class_name(i), (long long)r->initial_s, r->factor,
                        (long long)r->max_s, r->use_hint ? "yes" : "no",
                        r->scope == CFG_SCOPE_DESTINATION ? "destination" : "recipient");
                if (i == CLASS_REPUTATION)
                        fprintf(f, "move_source = %s\n", r->move_source ? "yes" : "no");
        }
}
