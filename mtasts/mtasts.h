/* mtasts/mtasts.h — MTA-STS (RFC 8461): which MX hosts of a domain may get
 * its mail, and whether they must show a verified certificate.
 *
 * Input: a recipient domain, tarry.conf's DNS servers, the spool's state/.
 * Output: the domain's policy (mode, mx patterns, max_age), or none.
 * How: `_mta-sts.DOMAIN` TXT through c-ares; when its id differs from the
 * cached policy's (or nothing is cached), the policy is fetched from
 * https://mta-sts.DOMAIN/.well-known/mta-sts.txt with libcurl (certificate
 * verified, no redirects, MTASTS_FETCH_MAX bytes, a time bound) and cached
 * in state/mta-sts/DOMAIN until max_age (atomic replace, symlinks refused).
 * A cached policy that has not expired keeps applying when the TXT lookup
 * or the fetch fails (RFC 8461 5.1, 10.2).
 * Every call blocks (bounded by the timeout given): it runs in a delivery
 * worker process, one attempt at a time.
 */
#ifndef TARRY_MTASTS_H
#define TARRY_MTASTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MTASTS_MX_MAX    32         /* mx: lines kept; more is a policy error */
#define MTASTS_ID_MAX    33         /* 1*32 alphanumerics + NUL */
#define MTASTS_FETCH_MAX (64 << 10) /* bytes of a policy file */
#define MTASTS_MAX_AGE   31557600   /* RFC 8461 3.2: at most one year */
#define MTASTS_WHY_MAX   512

enum mtasts_mode {
        MTASTS_MODE_NONE,    /* published, but asks nothing */
        MTASTS_MODE_TESTING, /* deliver as before; report what enforce would refuse */
        MTASTS_MODE_ENFORCE, /* only listed MX hosts, verified TLS */
};

struct mtasts_policy {
        enum mtasts_mode mode;
        char mx[MTASTS_MX_MAX][256]; /* "mx.example.com" or "*.example.net", lower case */
        size_t n_mx;
        int64_t max_age_s;
        char id[MTASTS_ID_MAX]; /* the TXT id it was fetched under */
        int64_t expires_s;      /* CLOCK_REALTIME seconds */
        bool cached;            /* served from state/ without a fetch */
};

/* The value of a `_mta-sts` TXT record: "v=STSv1; id=20260101T000000;".
 * 0 and id set, -ENOENT (not an STS record: ignore it), -EINVAL (an STS
 * record that is malformed; why says how). */
int mtasts_parse_txt(const char *txt, char id[MTASTS_ID_MAX], char *why, size_t whylen);

/* A policy file (RFC 8461 3.2), strict: version STSv1 first, mode, max_age,
 * mx (one or more unless mode is none), CRLF or LF lines, unknown keys
 * ignored. 0, or -EINVAL with why naming the line. */
int mtasts_parse_policy(const char *text, size_t len, struct mtasts_policy *p, char *why,
                        size_t whylen);

/* Does host (an MX name, any case, optional final dot) match one of the
 * policy's mx patterns? "*.example.com" matches exactly one more label. */
bool mtasts_mx_matches(const struct mtasts_policy *p, const char *host);

const char *mtasts_mode_name(enum mtasts_mode m);

struct mtasts_options {
        const char *state_dir;    /* the spool's state/ folder; policies go to mta-sts/ */
        char *const *dns_servers; /* tarry.conf dns_servers; none: resolv.conf */
        size_t n_dns_servers;
        uint16_t port;       /* 443 (RFC 8461 3.3); another port only for tests */
        const char *ca_file; /* CA bundle for the HTTPS fetch; NULL: the system's */
        long timeout_ms;     /* for the TXT lookup and for the fetch, each */
        int64_t now_s;       /* CLOCK_REALTIME seconds */
};

/* The policy that applies to mail for domain now. 1: *p set; 0: none applies
 * (no record, or nothing fetched and nothing cached: deliver as before);
 * negative errno on a local failure (memory). note (may be NULL) says what
 * happened when it is worth a log line: a failed fetch, a policy kept from
 * the cache, a policy that did not parse. */
int mtasts_policy_get(const struct mtasts_options *o, const char *domain, struct mtasts_policy *p,
                      char *note, size_t notelen);

#endif
