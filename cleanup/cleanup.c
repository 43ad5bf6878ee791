/* cleanup/cleanup.c — adminaddr rewriting, Received: header, hop limit; see cleanup.h. */
#include "cleanup/cleanup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/address.h"
#include "common/cleanup.h"

#define READ_CHUNK (16u * 1024u)
#define ORCPT_MAX  500 /* RFC 3461 4.2, as the envelope allows */
#define HOST_MAX   255
#define RCPTS_MAX  100000 /* as the envelope parser allows */

/* ---- counting hops ---- */

/* Does the line at s (len bytes, no line end) start a Received: field? */
static bool is_received(const char *s, size_t len)
{
        static const char name[] = "received";
        size_t n = sizeof name - 1;
        if (len <= n || strncasecmp(s, name, n) != 0)
                return false;
        while (n < len && (s[n] == ' ' || s[n] == '\t')) /* RFC 5322 obs-optional */
                n++;
        return n < len && s[n] == ':';
}

/* Received: fields in the header block of s; *complete: the empty line was seen. */
static int count_in(const char *s, size_t len, bool *complete)
{
        int hops = 0;
        *complete = false;
        for (size_t pos = 0; pos < len;) {
                const char *nl = memchr(s + pos, '\n', len - pos);
                size_t end = nl ? (size_t)(nl - s) : len;
                size_t line = end - pos;
                if (line > 0 && s[end - 1] == '\r')
                        line--;
                if (line == 0 && nl) {
                        *complete = true;
                        break;
                }
                if (nl || end == len)
                        hops += is_received(s + pos, line);
                pos = end + 1;
        }
        return hops;
}

int cleanup_count_hops_mem(const char *data, size_t len, int *hops)
{
        bool complete;
        if (!data && len)
                return -EINVAL;
        *hops = count_in(data ? data : "",
                         len < CLEANUP_HEADER_SCAN_MAX ? len : CLEANUP_HEADER_SCAN_MAX, &complete);
        return 0;
}

int cleanup_count_hops(int fd, uint64_t size, int *hops)
{
        size_t limit = size < CLEANUP_HEADER_SCAN_MAX ? (size_t)size : CLEANUP_HEADER_SCAN_MAX;
        _cleanup_free_ char *buf = malloc(limit + 1);
        size_t len = 0;
        bool complete = false;
        if (!buf)
                return -ENOMEM;
        while (len < limit && !complete) {
                size_t want = limit - len < READ_CHUNK ? limit - len : READ_CHUNK;
                ssize_t n = pread(fd, buf + len, want, (off_t)len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                len += (size_t)n;
                count_in(buf, len, &complete);
        }
        *hops = count_in(buf, len, &complete);
        return 0;
}

/* ---- the header lines ---- */

/* myhostname as it may appear in a header: anything odd becomes '?'. */
static void put_host(FILE *f, const char *host)
{
        size_t n = 0;
        for (const char *c = host && *host ? host : "localhost"; *c && n < HOST_MAX; c++, n++)
                fputc(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]",
                             *c)
                          ? *c
                          : '?',
                      f);
}

static void put_date(FILE *f, int64_t us)
{
        time_t t = (time_t)(us / 1000000);
        struct tm tm;
        char date[64] = "Thu, 01 Jan 1970 00:00:00 +0000";
        if (localtime_r(&t, &tm))
                strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
        fputs(date, f);
}

/* As Postfix writes it for a local submission:
 *   Received: by myhostname (tarry, from userid 1000)
 *           id 0123456789ABCDEF
 *           for <user@example.com>; Mon, 07 Dec 2026 12:00:00 +0000
 * "for" only when the message has one recipient; tarryd's own DSNs have no
 * submitting user. */
static void put_received(FILE *f, const struct envelope *env, const char *host,
                         const char *for_rcpt, int64_t when_us)
{
        fputs("Received: by ", f);
        put_host(f, host);
        if (env->uid != (uid_t)-1 && !env->is_dsn)
                fprintf(f, " (tarry, from userid %u)\r\n", (unsigned)env->uid);
        else
                fputs(" (tarry)\r\n", f);
        fprintf(f, "\tid %s", env->id);
        if (for_rcpt)
                fprintf(f, "\r\n\tfor <%s>", for_rcpt);
        fputs("; ", f);
        put_date(f, when_us);
        fputs("\r\n", f);
}

/* ---- rewriting local recipients ---- */

static char *xtext_orcpt(const char *addr)
{
        static const char hex[] = "0123456789ABCDEF";
        char out[ORCPT_MAX + 1];
        size_t n = (size_t)snprintf(out, sizeof out, "rfc822;");
        for (const unsigned char *c = (const unsigned char *)addr; *c; c++) {
                if (n + 4 > ORCPT_MAX)
                        return NULL; /* too long for ORCPT: X-Original-To still says it */
                if (*c < 33 || *c > 126 || *c == '+' || *c == '=') {
                        out[n++] = '+';
                        out[n++] = hex[*c >> 4];
                        out[n++] = hex[*c & 15];
                } else {
                        out[n++] = (char)*c;
                }
        }
        out[n] = '\0';
        return strdup(out);
}

static bool is_local(const struct cleanup_policy *p, const struct envelope_rcpt *r)
{
        return r->state == RCPT_PENDING && cfg_domain_is_local(p->cfg, addr_domain(r->address));
}

struct rewrite {
        struct envelope_rcpt *v;
        size_t n;
};

static bool listed(const struct rewrite *w, const char *addr)
{
        for (size_t i = 0; i < w->n; i++)
                if (strcmp(w->v[i].address, addr) == 0)
                        return true;
        return false;
}

/* Append a copy of the address (with orcpt and notify) unless already there. */
static int add(struct rewrite *w, const char *addr, const char *orcpt, unsigned notify)
{
        if (listed(w, addr))
                return 0;
        if (w->n >= RCPTS_MAX)
                return -E2BIG;
        struct envelope_rcpt *r = &w->v[w->n];
        *r = (struct envelope_rcpt){.state = RCPT_PENDING, .notify = notify};
        r->address = strdup(addr);
        r->orcpt = orcpt ? strdup(orcpt) : NULL;
        w->n++;
        return r->address && (!orcpt || r->orcpt) ? 0 : -ENOMEM;
}

/* The new recipient list: local ones replaced by every adminaddr. */
static int rewrite_rcpts(const struct envelope *env, const struct cleanup_policy *p,
                         struct rewrite *w, size_t *n_local)
{
        const struct tarry_config *cfg = p->cfg;
        size_t cap = env->n_rcpt * (cfg->n_adminaddr ? cfg->n_adminaddr : 1);
        w->v = calloc(cap ? cap : 1, sizeof(*w->v));
        if (!w->v)
                return -ENOMEM;
        for (size_t i = 0; i < env->n_rcpt; i++) {
                const struct envelope_rcpt *r = &env->rcpt[i];
                int e = 0;
                if (!is_local(p, r)) {
                        e = add(w, r->address, r->orcpt, r->notify);
                } else {
                        _cleanup_free_ char *orcpt = r->orcpt ? NULL : xtext_orcpt(r->address);
                        (*n_local)++;
                        for (size_t k = 0; e == 0 && k < cfg->n_adminaddr; k++)
                                e = add(w, cfg->adminaddr[k], r->orcpt ? r->orcpt : orcpt,
                                        r->notify);
                }
                if (e < 0)
                        return e;
        }
        return 0;
}

static void rewrite_free(struct rewrite *w)
{
        for (size_t i = 0; w->v && i < w->n; i++)
                envelope_rcpt_clear(&w->v[i]);
        free(w->v);
        *w = (struct rewrite){0};
}

/* "X-Original-To: root@host" for each local recipient (the first few). */
static void put_original_to(FILE *f, const struct envelope *env, const struct cleanup_policy *p)
{
        size_t n = 0;
        for (size_t i = 0; i < env->n_rcpt && n < CLEANUP_ORIGINAL_TO_MAX; i++)
                if (is_local(p, &env->rcpt[i])) {
                        fprintf(f, "X-Original-To: %s\r\n", env->rcpt[i].address);
                        n++;
                }
}

static int build_headers(const struct envelope *env, const struct cleanup_policy *p, bool rewriting,
                         char **out)
{
        size_t len = 0;
        char *text = NULL;
        FILE *f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        const char *for_rcpt = env->n_rcpt == 1 ? env->rcpt[0].address : NULL;
        put_received(f, env, p->cfg->myhostname, for_rcpt, env->arrival_us);
        if (rewriting)
                put_original_to(f, env, p);
        if (fclose(f) != 0) {
                free(text);
                return -ENOMEM;
        }
        *out = text;
        return 0;
}

static void fail_all(struct envelope *env, const char *why, int64_t when_us)
{
        for (size_t i = 0; i < env->n_rcpt; i++) {
                struct envelope_rcpt *r = &env->rcpt[i];
                if (r->state != RCPT_PENDING && r->state != RCPT_DEFERRED)
                        continue;
                r->state = RCPT_FAILED;
                r->reply_code = 0; /* tarry's own words, not a server's */
                free(r->dsn_status);
                free(r->last_reply);
                r->dsn_status = strdup("5.4.6");
                r->last_reply = strdup(why);
                r->last_attempt_us = when_us;
        }
}

int cleanup_message(struct envelope *env, int hops, const struct cleanup_policy *p,
                    struct cleanup_result *res)
{
        if (!env || !p || !p->cfg || !res)
                return -EINVAL;
        *res = (struct cleanup_result){.hops = hops};
        if (env->headers)
                return 0;
        size_t n_local = 0;
        struct rewrite w = {0};
        bool rewriting = p->cfg->n_adminaddr > 0;
        int r = rewriting ? rewrite_rcpts(env, p, &w, &n_local) : 0;
        char *headers = NULL;
        if (r == 0)
                r = build_headers(env, p, rewriting && n_local > 0, &headers);
        if (r < 0) {
                rewrite_free(&w);
                return r;
        }
        if (rewriting && n_local > 0) {
                for (size_t i = 0; i < env->n_rcpt; i++)
                        envelope_rcpt_clear(&env->rcpt[i]);
                free(env->rcpt);
                env->rcpt = w.v;
                env->n_rcpt = w.n;
                res->n_rewritten = n_local;
        } else {
                rewrite_free(&w);
        }
        env->headers = headers;
        if (hops >= p->cfg->hopcount_limit) {
                snprintf(res->loop_text, sizeof res->loop_text,
                         "message has %d Received: headers, hopcount_limit is %d: mail "
                         "forwarding loop",
                         hops, p->cfg->hopcount_limit);
                fail_all(env, res->loop_text, env->arrival_us);
                res->loop = true;
        }
        return 0;
}
