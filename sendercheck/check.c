/* sendercheck/check.c — the sender checks; see sendercheck.h. */
#include "sendercheck/sendercheck.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <pwd.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "dkim/dkim.h"
#include "sendercheck/dns.h"
#include "sendercheck/spf.h"

static const char *const kind_names[SENDER_CHECK__MAX] = {
    [SENDER_CHECK_PTR] = "PTR",
    [SENDER_CHECK_PTR_FORWARD] = "PTR forward",
    [SENDER_CHECK_PTR_NAME] = "PTR name",
    [SENDER_CHECK_SPF] = "SPF",
    [SENDER_CHECK_DKIM_KEY] = "DKIM key",
    [SENDER_CHECK_DMARC] = "DMARC",
    [SENDER_CHECK_ALIGNMENT] = "DMARC alignment",
};

const char *sender_check_name(enum sender_check_kind kind)
{
        return kind < SENDER_CHECK__MAX ? kind_names[kind] : "?";
}

void sender_report_clear(struct sender_report *r)
{
        free(r->v);
        *r = (struct sender_report){0};
}

struct run {
        const struct tarry_config *cfg;
        struct sc_dns dns;
        struct sender_report *rep;
        uid_t key_owner; /* tarry's user: may own the key files */
        int err;
        struct sender_check spare; /* written to, never read, when out of memory */
};

static struct sender_check *add(struct run *run, enum sender_check_kind kind, bool pass,
                                const char *subject_fmt, ...) __attribute__((format(printf, 4, 5)));

static struct sender_check *add(struct run *run, enum sender_check_kind kind, bool pass,
                                const char *subject_fmt, ...)
{
        struct sender_report *r = run->rep;
        struct sender_check *v = realloc(r->v, (r->n + 1) * sizeof(*v));
        if (!v) {
                run->err = -ENOMEM;
                return &run->spare;
        }
        r->v = v;
        struct sender_check *c = &v[r->n++];
        *c = (struct sender_check){.kind = kind, .pass = pass};
        va_list ap;
        va_start(ap, subject_fmt);
        vsnprintf(c->subject, sizeof c->subject, subject_fmt, ap);
        va_end(ap);
        if (!pass)
                r->n_failed++;
        return c;
}

static const char *status_words(enum sc_dns_status s)
{
        switch (s) {
        case SC_DNS_OK:
                return "found";
        case SC_DNS_NXDOMAIN:
                return "no such name (NXDOMAIN)";
        case SC_DNS_NODATA:
                return "no record";
        case SC_DNS_TEMP:
                break;
        }
        return "no answer (timeout or SERVFAIL)";
}

static bool same_name(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);
        if (la && a[la - 1] == '.')
                la--;
        if (lb && b[lb - 1] == '.')
                lb--;
        return la == lb && strncasecmp(a, b, la) == 0;
}

/* ---- source addresses ---- */

static void check_forward(struct run *run, const char *addr, const char *name)
{
        bool v6 = strchr(addr, ':') != NULL;
        struct sc_dns_answer a;
        if (sc_dns_query(&run->dns, name, v6 ? ns_t_aaaa : ns_t_a, &a) < 0)
                run->err = -ENOMEM;
        unsigned char want[16];
        inet_pton(v6 ? AF_INET6 : AF_INET, addr, want);
        bool back = false;
        for (size_t i = 0; i < a.n; i++)
                back = back || memcmp(a.addr[i], want, v6 ? 16 : 4) == 0;
        struct sender_check *c =
            add(run, SENDER_CHECK_PTR_FORWARD, back, "%s → %s → %s", addr, name, addr);
        if (a.n)
                snprintf(c->found, sizeof c->found, "%s has %s%s", name, a.rr[0],
                         a.n > 1 ? " and more" : "");
        else
                snprintf(c->found, sizeof c->found, "%s: %s", name, status_words(a.status));
        if (!back)
                snprintf(c->publish, sizeof c->publish, "%s. IN %s %s", name, v6 ? "AAAA" : "A",
                         addr);
        sc_dns_answer_clear(&a);
}

static void check_address(struct run *run, const char *addr)
{
        char rev[128];
        const char *host = run->cfg->myhostname;
        if (!sc_dns_reverse_name(addr, rev, sizeof rev)) {
                struct sender_check *c = add(run, SENDER_CHECK_PTR, false, "%s", addr);
                snprintf(c->found, sizeof c->found, "not an IP address");
                snprintf(c->publish, sizeof c->publish, "set source_address to IP addresses");
                return;
        }
        struct sc_dns_answer a;
        if (sc_dns_query(&run->dns, rev, ns_t_ptr, &a) < 0)
                run->err = -ENOMEM;
        struct sender_check *c = add(run, SENDER_CHECK_PTR, a.n > 0, "%s", addr);
        if (a.n == 0) {
                snprintf(c->found, sizeof c->found, "%s: %s", rev, status_words(a.status));
                snprintf(c->publish, sizeof c->publish,
                         "%s. IN PTR %s. (in the reverse zone; ask whoever runs %s)", rev, host,
                         addr);
                sc_dns_answer_clear(&a);
                return;
        }
        snprintf(c->found, sizeof c->found, "%s", a.rr[0]);
        check_forward(run, addr, a.rr[0]);
        bool named = same_name(a.rr[0], host);
        c = add(run, SENDER_CHECK_PTR_NAME, named, "%s is myhostname %s", a.rr[0], host);
        snprintf(c->found, sizeof c->found, "PTR %s, EHLO %s", a.rr[0], host);
        if (!named)
                snprintf(c->publish, sizeof c->publish,
                         "%s. IN PTR %s. (or set myhostname = %s in [main])", rev, host, a.rr[0]);
        sc_dns_answer_clear(&a);
}

/* ---- domains ---- */

/* The first TXT record of name that starts with prefix (case-insensitive), malloc'd. */
static char *find_txt(struct run *run, const char *name, const char *prefix,
                      enum sc_dns_status *status)
{
        struct sc_dns_answer a;
        if (sc_dns_query(&run->dns, name, ns_t_txt, &a) < 0)
                run->err = -ENOMEM;
        *status = a.status;
        char *found = NULL;
        for (size_t i = 0; i < a.n && !found; i++)
                if (strncasecmp(a.rr[i], prefix, strlen(prefix)) == 0)
                        found = strdup(a.rr[i]);
        sc_dns_answer_clear(&a);
        return found;
}

/* "ip4:192.0.2.1 ip6:2001:db8::1" for every source address. */
static void mechanisms(const struct tarry_config *cfg, char *out, size_t size)
{
        size_t o = 0;
        out[0] = '\0';
        for (size_t i = 0; i < cfg->n_source_addresses && o < size; i++)
                o += (size_t)snprintf(out + o, size - o, "%sip%c:%s", i ? " " : "",
                                      strchr(cfg->source_addresses[i], ':') ? '6' : '4',
                                      cfg->source_addresses[i]);
}

/* SPF of domain for every source address; true when all pass. */
static bool check_spf(struct run *run, const char *domain)
{
        const struct tarry_config *cfg = run->cfg;
        enum sc_dns_status st;
        _cleanup_free_ char *record = find_txt(run, domain, "v=spf1", &st);
        char mech[600];
        mechanisms(cfg, mech, sizeof mech);
        bool all = cfg->n_source_addresses > 0;
        for (size_t i = 0; i < cfg->n_source_addresses; i++) {
                const char *addr = cfg->source_addresses[i];
                char word[64];
                enum sc_spf_result r = sc_spf_check(&run->dns, domain, addr, word, sizeof word);
                struct sender_check *c =
                    add(run, SENDER_CHECK_SPF, r == SC_SPF_PASS, "%s for %s", domain, addr);
                snprintf(c->found, sizeof c->found, "%s (%s)", word,
                         record ? record : "no SPF record");
                all = all && r == SC_SPF_PASS;
                if (r == SC_SPF_NONE || !record)
                        snprintf(c->publish, sizeof c->publish, "%s. IN TXT \"v=spf1 %s -all\"",
                                 domain, mech);
                else if (r == SC_SPF_FAIL)
                        snprintf(c->publish, sizeof c->publish,
                                 "%s. IN TXT with ip%c:%s added: \"%s\"", domain,
                                 strchr(addr, ':') ? '6' : '4', addr, record);
                else if (r == SC_SPF_ERROR)
                        snprintf(c->publish, sizeof c->publish,
                                 "a valid SPF record for %s, e.g. \"v=spf1 %s -all\"", domain,
                                 mech);
        }
        return all;
}

/* Every selector of row published as its key file says; true when all are. */
static bool check_keys(struct run *run, const struct cfg_dkim *row)
{
        bool all = true;
        for (size_t k = 0; k < row->n_keys; k++) {
                const struct cfg_dkim_key *key = &row->keys[k];
                char name[600], why[512] = "";
                snprintf(name, sizeof name, "%s._domainkey.%s", key->selector, row->domain);
                enum sc_dns_status st;
                _cleanup_free_ char *rec = find_txt(run, name, "v=DKIM1", &st);
                if (!rec)
                        rec = find_txt(run, name, "k=", &st); /* v= is optional */
                if (!rec)
                        rec = find_txt(run, name, "p=", &st);
                int m =
                    rec ? dkim_record_matches(key->path, run->key_owner, rec, why, sizeof why) : 0;
                struct sender_check *c = add(run, SENDER_CHECK_DKIM_KEY, m == 1, "%s", name);
                all = all && m == 1;
                if (!rec)
                        snprintf(c->found, sizeof c->found, "%s", status_words(st));
                else
                        snprintf(c->found, sizeof c->found, "%s", m == 1 ? "matches" : why);
                if (m == 1)
                        continue;
                _cleanup_free_ char *txt = NULL;
                char err[256] = "";
                if (dkim_public_record(key->path, run->key_owner, &txt, err, sizeof err) == 0)
                        snprintf(c->publish, sizeof c->publish, "%s. IN TXT \"%s\"", name, txt);
                else
                        snprintf(c->publish, sizeof c->publish, "a readable key: %s %s", key->path,
                                 err);
        }
        return all;
}

/* _dmarc of domain, else of its parents (the organizational domain's). */
static bool check_dmarc(struct run *run, const char *domain)
{
        enum sc_dns_status st = SC_DNS_NXDOMAIN;
        _cleanup_free_ char *rec = NULL;
        char name[600] = "";
        for (const char *d = domain; d && strchr(d, '.') && !rec;) {
                snprintf(name, sizeof name, "_dmarc.%s", d);
                rec = find_txt(run, name, "v=DMARC1", &st);
                d = strchr(d, '.') + 1;
        }
        struct sender_check *c = add(run, SENDER_CHECK_DMARC, rec != NULL, "%s", domain);
        snprintf(c->found, sizeof c->found, "%s", rec ? rec : "no DMARC record");
        if (!rec)
                snprintf(c->publish, sizeof c->publish,
                         "_dmarc.%s. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@%s\"", domain,
                         domain);
        return rec != NULL;
}

static void check_domain(struct run *run, const char *domain, const bool *row_ok)
{
        const struct tarry_config *cfg = run->cfg;
        bool spf = check_spf(run, domain);
        check_dmarc(run, domain);
        /* DKIM aligns when the row signing this From: domain verifies (relaxed
         * alignment: the row may be a parent); SPF aligns for myorigin, the
         * envelope sender's domain of tarry's own and local users' mail. */
        const struct cfg_dkim *row = cfg_dkim_for(cfg, domain);
        bool dkim = row && row_ok[row - cfg->dkim];
        bool spf_aligned = spf && same_name(domain, cfg->myorigin);
        struct sender_check *c =
            add(run, SENDER_CHECK_ALIGNMENT, dkim || spf_aligned, "%s", domain);
        char dk[320];
        if (!row)
                snprintf(dk, sizeof dk, "DKIM: no [dkim] row");
        else
                snprintf(dk, sizeof dk, "DKIM d=%s %s", row->domain,
                         dkim ? "aligned" : "not published as its key file says");
        snprintf(c->found, sizeof c->found, "%s; SPF %s", dk,
                 spf_aligned ? "aligned"
                 : !spf      ? "does not pass"
                             : "passes, but only myorigin is known to be the envelope sender");
        if (!c->pass)
                snprintf(c->publish, sizeof c->publish,
                         "DKIM keys for %s: tarryq dkim-keygen %s SELECTOR, the [dkim] row it "
                         "prints, its TXT record%s",
                         domain, domain,
                         same_name(domain, cfg->myorigin) ? "; or SPF for the source addresses"
                                                          : "");
}

static bool listed(char **v, size_t n, const char *s)
{
        for (size_t i = 0; i < n; i++)
                if (same_name(v[i], s))
                        return true;
        return false;
}

int sender_check_run(const struct tarry_config *cfg, struct sender_report *out)
{
        *out = (struct sender_report){0};
        struct passwd *pw = getpwnam(cfg->user);
        struct run run = {.cfg = cfg, .rep = out, .key_owner = pw ? pw->pw_uid : geteuid()};
        int r = sc_dns_open(&run.dns, cfg->dns_servers, cfg->n_dns_servers);
        if (r < 0)
                return r;
        if (cfg->n_source_addresses == 0) {
                struct sender_check *c = add(&run, SENDER_CHECK_PTR, false, "source addresses");
                snprintf(c->found, sizeof c->found, "no source_address set (the kernel picks one)");
                snprintf(c->publish, sizeof c->publish,
                         "source_address = the address(es) mail leaves from, in [main]");
        }
        for (size_t i = 0; i < cfg->n_source_addresses; i++)
                check_address(&run, cfg->source_addresses[i]);
        _cleanup_free_ bool *row_ok = calloc(cfg->n_dkim + 1, sizeof(bool));
        _cleanup_free_ char **domains = calloc(cfg->n_dkim + 1, sizeof(char *));
        size_t n = 0;
        if (!row_ok || !domains) {
                sc_dns_close(&run.dns);
                return -ENOMEM;
        }
        if (cfg->myorigin)
                domains[n++] = cfg->myorigin;
        for (size_t i = 0; i < cfg->n_dkim; i++) {
                row_ok[i] = check_keys(&run, &cfg->dkim[i]);
                if (!listed(domains, n, cfg->dkim[i].domain))
                        domains[n++] = cfg->dkim[i].domain;
        }
        for (size_t i = 0; i < n; i++)
                if (domains[i])
                        check_domain(&run, domains[i], row_ok);
        sc_dns_close(&run.dns);
        if (run.err < 0) {
                sender_report_clear(out);
                return run.err;
        }
        return 0;
}
