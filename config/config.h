/* config/config.h — tarry.conf: reading, defaults, validation.
 *
 * Input: an INI file (parsed with inih). Output: an immutable struct
 * tarry_config holding every setting with its default filled in.
 * Errors name the file and line: "tarry.conf:12: unknown key 'fo' in [main]".
 * No global state: every binary loads its own copy and passes it down.
 */
#ifndef TARRY_CONFIG_H
#define TARRY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "common/reply_class.h"

#define CFG_DEFAULT_PATH "/etc/tarry/tarry.conf"

/* How hard to insist on STARTTLS for a route. */
enum cfg_tls {
        CFG_TLS_NONE,    /* never STARTTLS */
        CFG_TLS_MAY,     /* STARTTLS when offered, no certificate checks (opportunistic) */
        CFG_TLS_ENCRYPT, /* STARTTLS required, no certificate checks */
        CFG_TLS_VERIFY,  /* STARTTLS required, certificate and host name verified */
};

/* Where a retry policy applies: to one recipient, or to the whole destination. */
enum cfg_scope {
        CFG_SCOPE_RECIPIENT,
        CFG_SCOPE_DESTINATION,
};

/* A next hop, written "[host]:port" (no MX lookup) or "host:port" (MX lookup of
 * host), with optional "tls=may|encrypt|verify|none" after it. */
struct cfg_route {
        char *host;
        uint16_t port; /* 0: the [smtp] port (25 by default) */
        bool no_mx;    /* written in brackets: connect to host itself */
        enum cfg_tls tls;
};

/* A [transport] row: recipient domain → route. "example.com" matches that
 * domain only; ".example.com" matches its subdomains; "*" matches any. */
struct cfg_transport {
        char *domain;
        struct cfg_route route;
};

/* A [dkim] row: "example.net = rsa1:/etc/tarry/dkim/rsa.key,ed1:/etc/tarry/dkim/ed.key".
 * Mail whose From: domain is domain (or a subdomain without a row of its own)
 * is signed with every key of the row; the keys themselves are read by dkim/. */
struct cfg_dkim_key {
        char *selector;
        char *path; /* absolute */
};

struct cfg_dkim {
        char *domain; /* lower case */
        struct cfg_dkim_key *keys;
        size_t n_keys;
        int line; /* where the row is, for errors about its key files */
};

/* [retry.CLASS]: the next delay is initial * factor^(n-1), capped at max. */
struct cfg_retry {
        int64_t initial_s;
        double factor;
        int64_t max_s;
        bool use_hint; /* a delay stated in the reply overrides the schedule */
        enum cfg_scope scope;
        /* [retry.reputation] only: a message held by a reputation or rate-limit
         * suspension of (source address A, site) may leave from another
         * source address of the pool that is not suspended there. */
        bool move_source;
};

struct tarry_config {
        char *path; /* the file this was read from */

        /* [main] */
        char *spool_dir;
        char *myhostname;
        char *myorigin;
        char **source_addresses; /* NULL-terminated; empty: let the kernel choose */
        size_t n_source_addresses;
        bool has_relayhost;
        struct cfg_route relayhost;
        char **status_listen; /* NULL-terminated: "unix:/path" or "host:port" */
        size_t n_status_listen;
        bool status_allow_remote;
        char *status_group; /* group owning the unix socket, or NULL */
        uint64_t message_size_limit;
        int64_t queue_lifetime_s;
        int delay_dsn_after_retries;  /* 0: no delay DSNs */
        int64_t delay_dsn_min_age_s;  /* and not before the message is this old */
        char *user;                   /* tarryd switches to this user when started as root */
        char **allow_sender_override; /* "yes", "no", or user names allowed to use -f */
        size_t n_allow_sender_override;
        int64_t shutdown_timeout_s; /* grace for in-flight attempts on SIGTERM */
        char *classifier_rules;     /* operator policy file (overrides by name), or NULL */
        char *policy_file;          /* shipped policy file; NULL: sched_policy_default_path() */
        int64_t greylist_memory_s;  /* forget learned greylist delays after this */
        int64_t snapshot_every_s;   /* state/index.snap while running; 0: at a clean stop only */
        int maildrop_message_limit; /* messages one maildrop file (one sendmail) may hold; 0: any */
        char *postmaster;           /* told about undeliverable DSNs; NULL: nobody (hold/) */
        char **adminaddr;           /* local recipients go here instead; empty: off */
        size_t n_adminaddr;
        int hopcount_limit; /* bounce (5.4.6) a message with this many Received: headers */

        /* [smtp] */
        uint16_t smtp_port; /* port for MX delivery (25) */
        enum cfg_tls smtp_tls;
        char *relay_auth_file; /* "user:password" for the relayhost, or NULL */
        /* AUTH to the relayhost without TLS allowed (the password crosses the
         * network readable). Off: with relay_auth_file the relay route needs
         * TLS, and tls=may there means verify. */
        bool relay_auth_cleartext;
        int64_t connect_timeout_s;
        int64_t command_timeout_s;
        int64_t data_timeout_s;
        int max_connections;
        int destination_concurrency;
        int max_deliveries_per_connection; /* messages on one connection before QUIT */
        char **dns_servers; /* NULL-terminated "ip" or "ip:port"; empty: /etc/resolv.conf */
        size_t n_dns_servers;
        /* an MX set is cached for its TTL, but at least this long (1 s..1 d) */
        int64_t mx_cache_min_ttl_s;
        char **own_addresses; /* more addresses that are this host (NAT): MX loop check */
        size_t n_own_addresses;
        bool mta_sts;          /* honour MX recipients' MTA-STS policies (RFC 8461) */
        uint16_t mta_sts_port; /* HTTPS port of policy hosts: 443; another only in tests */
        char *tls_ca_file;     /* CA bundle for verified TLS and policy fetches; NULL: system's */

        /* [diagnose] thresholds (scheduler/diagnose.h, docs/scheduler.md "Diagnoses") */
        int64_t diagnose_greylist_no_window_s;
        int64_t diagnose_reputation_s;
        int64_t diagnose_unreachable_s;

        /* [cluster] (docs/fleet.md) */
        char *cluster_redis;  /* "host:port" or "unix:/path"; NULL: no fleet */
        char *cluster_node;   /* NULL: myhostname */
        char *cluster_prefix; /* NULL: "tarry:" */

        /* [transport] */
        struct cfg_transport *transports;
        size_t n_transports;

        /* [retry.CLASS] */
        struct cfg_retry retry[CLASS__MAX];

        /* [dkim] */
        struct cfg_dkim *dkim;
        size_t n_dkim;

        /* Lines that load but probably mean something else than meant
         * ("file:line: relayhost = 127.0.0.1:2600 looks up ..."), NULL-terminated;
         * tarryd prints them with --check and logs them at start and reload. */
        char **warnings;
        size_t n_warnings;
};

/* The file to read: cli_path (-C) if given, else $TARRY_CONFIG, else the default. */
const char *cfg_path(const char *cli_path);

/* Load and validate path. On error returns a negative errno (-ENOENT, -EACCES
 * for an unreadable file, -EINVAL for bad content) and writes a one-line
 * message naming file and line into err. */
int cfg_load(const char *path, struct tarry_config **out, char *err, size_t errlen);

/* Same, from text in memory; name is used in messages. For tests and --check. */
int cfg_load_string(const char *name, const char *text, struct tarry_config **out, char *err,
                    size_t errlen);

void cfg_free(struct tarry_config *cfg);

/* Print the effective configuration (every key, defaults included) as INI. */
void cfg_print(FILE *f, const struct tarry_config *cfg);

/* The [transport] route for a recipient domain, or NULL if none matches. */
const struct cfg_route *cfg_transport_for(const struct tarry_config *cfg, const char *domain);

/* The [dkim] row for a From: domain: its own, else its nearest parent's; NULL if none. */
const struct cfg_dkim *cfg_dkim_for(const struct tarry_config *cfg, const char *domain);

/* allow_sender_override: may local user (uid, user) submit with envelope
 * sender (sendmail -f, or MAIL FROM in -bs)? Always for root and for
 * user@myorigin, the sender tarry would have chosen; else as configured. */
bool cfg_sender_allowed(const struct tarry_config *cfg, uid_t uid, const char *user,
                        const char *sender);

/* Is domain one whose mail is this host's own (myhostname or "localhost"),
 * so that adminaddr, when set, receives it instead? NULL (no domain): yes. */
bool cfg_domain_is_local(const struct tarry_config *cfg, const char *domain);

/* The domain a bare recipient name ("root") gets: myhostname when adminaddr
 * is set (so tarryd sends it to adminaddr), else myorigin. */
const char *cfg_rcpt_origin(const struct tarry_config *cfg);

/* Parsers shared with other modules' inputs (tarryq, rule files). */
int cfg_parse_duration(const char *s, int64_t *out_s); /* "90", "5m", "2h", "5d" */
int cfg_parse_size(const char *s, uint64_t *out);      /* "512", "10k", "10M", "1G" */
int cfg_parse_route(const char *s, struct cfg_route *out, const char **why);
const char *cfg_tls_name(enum cfg_tls t);

#endif
