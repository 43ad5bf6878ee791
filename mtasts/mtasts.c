/* mtasts/mtasts.c — MTA-STS policies: parsing, matching, lookup, cache (see mtasts.h). */
#include "mtasts/mtasts.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/ares_wait.h"
#include "common/cleanup.h"
#include "common/fileio.h"

#define CACHE_DIR       "mta-sts"
#define CACHE_FILE_MAX  (MTASTS_FETCH_MAX * 2 + 4096)
#define POLICY_LINE_MAX 1000

static void say(char *why, size_t whylen, const char *fmt, ...)
{
        if (!why || whylen == 0)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
}

const char *mtasts_mode_name(enum mtasts_mode m)
{
        switch (m) {
        case MTASTS_MODE_ENFORCE:
                return "enforce";
        case MTASTS_MODE_TESTING:
                return "testing";
        case MTASTS_MODE_NONE:
                break;
        }
        return "none";
}

/* ---- the TXT record (RFC 8461 3.1) ---- */

static const char *skip_ws(const char *s)
{
        while (*s == ' ' || *s == '\t')
                s++;
        return s;
}

int mtasts_parse_txt(const char *txt, char id[MTASTS_ID_MAX], char *why, size_t whylen)
{
        id[0] = '\0';
        if (strncmp(txt, "v=STSv1", 7) != 0 || (txt[7] != ';' && txt[7] != '\0'))
                return -ENOENT;
        const char *s = txt + 7;
        while (*s) {
                s = skip_ws(*s == ';' ? s + 1 : s);
                if (!*s)
                        break;
                const char *eq = strchr(s, '=');
                const char *end = s + strcspn(s, ";");
                if (!eq || eq > end) {
                        say(why, whylen, "TXT field \"%.*s\" has no '='", (int)(end - s), s);
                        return -EINVAL;
                }
                const char *v = eq + 1, *vend = end;
                while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
                        vend--;
                if (eq - s == 2 && strncmp(s, "id", 2) == 0) {
                        size_t n = (size_t)(vend - v);
                        bool ok = n >= 1 && n < MTASTS_ID_MAX;
                        for (size_t i = 0; ok && i < n; i++)
                                ok = isalnum((unsigned char)v[i]) != 0;
                        if (!ok) {
                                say(why, whylen, "TXT id \"%.*s\" is not 1 to 32 letters or digits",
                                    (int)n, v);
                                return -EINVAL;
                        }
                        memcpy(id, v, n);
                        id[n] = '\0';
                }
                s = end;
        }
        if (!id[0]) {
                say(why, whylen, "TXT record has no id");
                return -EINVAL;
        }
        return 0;
}

/* ---- the policy file (RFC 8461 3.2) ---- */

static bool mx_pattern_ok(const char *p)
{
        if (strncmp(p, "*.", 2) == 0)
                p += 2;
        size_t n = strlen(p);
        if (n == 0 || n > 253 || p[0] == '.' || p[n - 1] == '.' || strstr(p, ".."))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(isalnum((unsigned char)p[i]) || p[i] == '-' || p[i] == '.' || p[i] == '_'))
                        return false;
        return true;
}

static int policy_field(struct mtasts_policy *p, const char *key, const char *val, unsigned line,
                        bool *seen_version, bool *seen_age, char *why, size_t whylen)
{
        if (!*seen_version && strcmp(key, "version") != 0) {
                say(why, whylen, "policy line %u: \"version: STSv1\" must come first", line);
                return -EINVAL;
        }
        if (strcmp(key, "version") == 0) {
                if (*seen_version || strcmp(val, "STSv1") != 0) {
                        say(why, whylen, "policy line %u: version \"%s\" is not STSv1", line, val);
                        return -EINVAL;
                }
                *seen_version = true;
        } else if (strcmp(key, "mode") == 0) {
                if (strcmp(val, "enforce") == 0)
                        p->mode = MTASTS_MODE_ENFORCE;
                else if (strcmp(val, "testing") == 0)
                        p->mode = MTASTS_MODE_TESTING;
                else if (strcmp(val, "none") == 0)
                        p->mode = MTASTS_MODE_NONE;
                else {
                        say(why, whylen,
                            "policy line %u: mode \"%s\" is not enforce, testing or none", line,
                            val);
                        return -EINVAL;
                }
        } else if (strcmp(key, "max_age") == 0) {
                char *end = NULL;
                errno = 0;
                long long v = strtoll(val, &end, 10);
                if (!isdigit((unsigned char)val[0]) || *end || errno || strlen(val) > 10 ||
                    v > MTASTS_MAX_AGE) {
                        say(why, whylen, "policy line %u: max_age \"%s\" is not 0 to %d seconds",
                            line, val, MTASTS_MAX_AGE);
                        return -EINVAL;
                }
                p->max_age_s = v;
                *seen_age = true;
        } else if (strcmp(key, "mx") == 0) {
                if (!mx_pattern_ok(val)) {
                        say(why, whylen, "policy line %u: mx \"%s\" is not a host name pattern",
                            line, val);
                        return -EINVAL;
                }
                if (p->n_mx >= MTASTS_MX_MAX) {
                        say(why, whylen, "policy line %u: more than %d mx lines", line,
                            MTASTS_MX_MAX);
                        return -EINVAL;
                }
                char *dst = p->mx[p->n_mx++];
                size_t i = 0;
                for (; val[i]; i++)
                        dst[i] = (char)tolower((unsigned char)val[i]);
                dst[i] = '\0';
        }
        return 0; /* other keys: RFC 8461 3.2 extensions, ignored */
}

int mtasts_parse_policy(const char *text, size_t len, struct mtasts_policy *p, char *why,
                        size_t whylen)
{
        memset(p, 0, sizeof(*p));
        if (len > MTASTS_FETCH_MAX) {
                say(why, whylen, "policy is larger than %d bytes", MTASTS_FETCH_MAX);
                return -EINVAL;
        }
        bool seen_version = false, seen_age = false, seen_mode = false;
        unsigned line = 0;
        size_t off = 0;
        while (off < len) {
                line++;
                const char *nl = memchr(text + off, '\n', len - off);
                size_t n = nl ? (size_t)(nl - (text + off)) : len - off;
                const char *s = text + off;
                off += n + (nl ? 1 : 0);
                if (n > 0 && s[n - 1] == '\r')
                        n--;
                if (n == 0)
                        continue;
                if (n > POLICY_LINE_MAX || memchr(s, '\0', n)) {
                        say(why, whylen, "policy line %u is not a text line of at most %d bytes",
                            line, POLICY_LINE_MAX);
                        return -EINVAL;
                }
                char buf[POLICY_LINE_MAX + 1];
                memcpy(buf, s, n);
                buf[n] = '\0';
                char *colon = strchr(buf, ':');
                if (!colon || colon == buf) {
                        say(why, whylen, "policy line %u: \"%.60s\" is not \"key: value\"", line,
                            buf);
                        return -EINVAL;
                }
                *colon = '\0';
                char *val = (char *)skip_ws(colon + 1);
                size_t vn = strlen(val);
                while (vn > 0 && (val[vn - 1] == ' ' || val[vn - 1] == '\t'))
                        val[--vn] = '\0';
                if (strcmp(buf, "mode") == 0)
                        seen_mode = true;
                int r = policy_field(p, buf, val, line, &seen_version, &seen_age, why, whylen);
                if (r < 0)
                        return r;
        }
        if (!seen_version || !seen_mode || !seen_age) {
                say(why, whylen, "policy lacks %s",
                    !seen_version ? "version"
                    : !seen_mode  ? "mode"
                                  : "max_age");
                return -EINVAL;
        }
        if (p->mode != MTASTS_MODE_NONE && p->n_mx == 0) {
                say(why, whylen, "policy in mode %s lists no mx", mtasts_mode_name(p->mode));
                return -EINVAL;
        }
        return 0;
}

bool mtasts_mx_matches(const struct mtasts_policy *p, const char *host)
{
        char h[256];
        size_t n = strlen(host);
        if (n > 0 && host[n - 1] == '.')
                n--;
        if (n == 0 || n >= sizeof(h))
                return false;
        for (size_t i = 0; i < n; i++)
                h[i] = (char)tolower((unsigned char)host[i]);
        h[n] = '\0';
        for (size_t i = 0; i < p->n_mx; i++) {
                const char *m = p->mx[i];
                if (strncmp(m, "*.", 2) != 0) {
                        if (strcmp(m, h) == 0)
                                return true;
                        continue;
                }
                /* one label, then exactly the rest: "*.example.com" ≠ "a.b.example.com" */
                const char *dot = strchr(h, '.');
                if (dot && dot > h && strcmp(dot + 1, m + 2) == 0)
                        return true;
        }
        return false;
}

/* ---- DNS (blocking c-ares, bounded by the channel's timeout and tries) ---- */

/* One address lookup, waited for (ares_wait_done). */
struct host_lookup {
        bool done;
        int status;
        char addr[INET6_ADDRSTRLEN];
};

static void on_host(void *arg, int status, int timeouts, struct hostent *he)
{
        struct host_lookup *p = arg;
        (void)timeouts;
        p->done = true;
        p->status = status;
        if (status == ARES_SUCCESS && he && he->h_addr_list[0])
                inet_ntop(he->h_addrtype, he->h_addr_list[0], p->addr, sizeof(p->addr));
        else if (status == ARES_SUCCESS)
                p->status = ARES_ENODATA;
}

static void channel_free(ares_channel *ch)
{
        if (*ch)
                ares_destroy(*ch);
}

static int channel_open(const struct mtasts_options *o, ares_channel *ch)
{
        int tries = 2;
        struct ares_options ao = {.timeout = (int)(o->timeout_ms / tries), .tries = tries};
        if (ao.timeout < 100)
                ao.timeout = 100;
        if (ares_init_options(ch, &ao, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS)
                return -ENOMEM;
        if (o->n_dns_servers > 0) {
                char csv[2048] = "";
                size_t len = 0;
                for (size_t i = 0; i < o->n_dns_servers && len < sizeof(csv); i++)
                        len += (size_t)snprintf(csv + len, sizeof(csv) - len, "%s%s", i ? "," : "",
                                                o->dns_servers[i]);
                if (len >= sizeof(csv) || ares_set_servers_ports_csv(*ch, csv) != ARES_SUCCESS)
                        return -EINVAL;
        }
        return 0;
}

enum txt_result { TXT_FOUND, TXT_NONE, TXT_FAILED };

/* The id of domain's one STS record (RFC 8461 3.1: several → none). */
static enum txt_result lookup_txt(ares_channel ch, const char *domain, char id[MTASTS_ID_MAX],
                                  char *why, size_t whylen)
{
        char name[300];
        snprintf(name, sizeof(name), "_mta-sts.%s", domain);
        struct ares_wait_answer p;
        ares_wait_query(ch, name, ns_c_in, ns_t_txt, &p);
        _cleanup_free_ unsigned char *buf = p.buf;
        if (p.status == ARES_ENOTFOUND || p.status == ARES_ENODATA)
                return TXT_NONE;
        if (p.status != ARES_SUCCESS || !buf) {
                say(why, whylen, "TXT lookup of %s failed: %s", name, ares_strerror(p.status));
                return TXT_FAILED;
        }
        struct ares_txt_ext *txt = NULL;
        if (ares_parse_txt_reply_ext(buf, p.len, &txt) != ARES_SUCCESS) {
                say(why, whylen, "TXT answer for %s does not parse", name);
                return TXT_FAILED;
        }
        /* join each record's strings, then look at the records */
        char rec[1024];
        size_t used = 0, n_sts = 0;
        enum txt_result res = TXT_NONE;
        for (struct ares_txt_ext *t = txt; t; t = t->next) {
                if (t->record_start)
                        used = 0;
                size_t n = t->length < sizeof(rec) - 1 - used ? t->length : sizeof(rec) - 1 - used;
                memcpy(rec + used, t->txt, n);
                used += n;
                rec[used] = '\0';
                bool last = !t->next || t->next->record_start;
                if (!last)
                        continue;
                char one[MTASTS_ID_MAX];
                int r = mtasts_parse_txt(rec, one, why, whylen);
                if (r == -ENOENT)
                        continue;
                n_sts++;
                if (r == 0) {
                        memcpy(id, one, sizeof(one));
                        res = TXT_FOUND;
                } else {
                        res = TXT_NONE;
                }
        }
        ares_free_data(txt);
        if (n_sts > 1) {
                say(why, whylen, "%s has %zu STS records", name, n_sts);
                return TXT_NONE;
        }
        return res;
}

static int lookup_addr(ares_channel ch, const char *host, char *addr, size_t size)
{
        int families[] = {AF_INET, AF_INET6};
        for (size_t i = 0; i < 2; i++) {
                struct host_lookup p = {0};
                ares_gethostbyname(ch, host, families[i], on_host, &p);
                ares_wait_done(ch, &p.done);
                if (p.status == ARES_SUCCESS) {
                        snprintf(addr, size, "%s", p.addr);
                        return 0;
                }
        }
        return -ENOENT;
}

/* ---- fetch over HTTPS (RFC 8461 3.3) ---- */

struct body {
        char *buf;
        size_t len;
        bool too_big;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct body *b = userdata;
        size_t n = size * nmemb;
        if (b->len + n > MTASTS_FETCH_MAX) {
                b->too_big = true;
                return 0;
        }
        char *nb = realloc(b->buf, b->len + n + 1);
        if (!nb)
                return 0;
        memcpy(nb + b->len, ptr, n);
        b->buf = nb;
        b->len += n;
        b->buf[b->len] = '\0';
        return n;
}

static void curl_cleanup(CURL **h)
{
        if (*h)
                curl_easy_cleanup(*h);
}

static void slist_cleanup(struct curl_slist **l)
{
        curl_slist_free_all(*l);
}

static int fetch_policy(const struct mtasts_options *o, ares_channel ch, const char *domain,
                        char **text, size_t *len, char *why, size_t whylen)
{
        char host[300], addr[INET6_ADDRSTRLEN], url[400], resolve[400];
        snprintf(host, sizeof(host), "mta-sts.%s", domain);
        /* resolved like every other name tarry looks up (dns_servers), never by libc */
        if (lookup_addr(ch, host, addr, sizeof(addr)) < 0) {
                say(why, whylen, "%s has no address", host);
                return -EHOSTUNREACH;
        }
        snprintf(url, sizeof(url), "https://%s:%u/.well-known/mta-sts.txt", host, o->port);
        bool v6 = strchr(addr, ':') != NULL;
        snprintf(resolve, sizeof(resolve), "%s:%u:%s%s%s", host, o->port, v6 ? "[" : "", addr,
                 v6 ? "]" : "");
        _cleanup_(curl_cleanup) CURL *h = curl_easy_init();
        _cleanup_(slist_cleanup) struct curl_slist *rl = curl_slist_append(NULL, resolve);
        if (!h || !rl)
                return -ENOMEM;
        struct body b = {0};
        char err[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_RESOLVE, rl);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* RFC 8461 3.3: no redirects */
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (o->ca_file)
                curl_easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, o->timeout_ms);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE, (long)MTASTS_FETCH_MAX);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "tarry");
        CURLcode rc = curl_easy_perform(h);
        _cleanup_free_ char *buf = b.buf;
        long code = 0;
        char *ctype = NULL;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype);
        if (rc != CURLE_OK) {
                say(why, whylen, "fetching %s failed: %s", url,
                    b.too_big ? "policy too large"
                    : err[0]  ? err
                              : curl_easy_strerror(rc));
                return -EIO;
        }
        if (code != 200) {
                say(why, whylen, "fetching %s failed: HTTP status %ld", url, code);
                return -EIO;
        }
        if (!ctype || strncasecmp(ctype, "text/plain", 10) != 0) {
                say(why, whylen, "fetching %s: media type %s is not text/plain", url,
                    ctype ? ctype : "(none)");
                return -EIO;
        }
        *len = b.len;
        *text = buf ? TAKE_PTR(buf) : strdup("");
        return *text ? 0 : -ENOMEM;
}

/* ---- the cache: state/mta-sts/DOMAIN ---- */

static int cache_dir_open(const struct mtasts_options *o, bool create)
{
        _cleanup_close_ int sfd =
            open(o->state_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0)
                return -errno;
        if (create && mkdirat(sfd, CACHE_DIR, 0700) < 0 && errno != EEXIST)
                return -errno;
        int fd = openat(sfd, CACHE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

static int cache_read(const struct mtasts_options *o, const char *domain, struct mtasts_policy *p)
{
        _cleanup_close_ int dfd = cache_dir_open(o, false);
        if (dfd < 0)
                return dfd;
        _cleanup_close_ int fd = openat(dfd, domain, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        char buf[CACHE_FILE_MAX + 1];
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 || n > CACHE_FILE_MAX)
                return -EINVAL;
        _cleanup_(json_decrefp) json_t *j = json_loadb(buf, (size_t)n, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *text = json_string_value(json_object_get(j, "policy"));
        json_t *exp = json_object_get(j, "expires");
        if (!id || !text || !json_is_integer(exp))
                return -EINVAL;
        char why[MTASTS_WHY_MAX];
        if (mtasts_parse_policy(text, strlen(text), p, why, sizeof(why)) < 0 ||
            strlen(id) >= MTASTS_ID_MAX)
                return -EINVAL;
        snprintf(p->id, sizeof(p->id), "%s", id);
        p->expires_s = json_integer_value(exp);
        p->cached = true;
        return 0;
}

static int cache_write(const struct mtasts_options *o, const char *domain, const char *id,
                       const char *text, int64_t expires)
{
        _cleanup_close_ int dfd = cache_dir_open(o, true);
        if (dfd < 0)
                return dfd;
        _cleanup_(json_decrefp) json_t *j =
            json_pack("{s:s, s:s, s:I, s:I, s:s}", "domain", domain, "id", id, "fetched",
                      (json_int_t)o->now_s, "expires", (json_int_t)expires, "policy", text);
        if (!j)
                return -ENOMEM;
        _cleanup_free_ char *s = json_dumps(j, JSON_COMPACT);
        if (!s)
                return -ENOMEM;
        return file_replace_durable(dfd, domain, s, strlen(s));
}

/* A domain is used as a file name: a host name only, never "..", never "/". */
static bool domain_ok(const char *d)
{
        size_t n = strlen(d);
        if (n == 0 || n > 253 || d[0] == '.' || strstr(d, ".."))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(isalnum((unsigned char)d[i]) || d[i] == '-' || d[i] == '.' || d[i] == '_'))
                        return false;
        return true;
}

int mtasts_policy_get(const struct mtasts_options *o, const char *domain, struct mtasts_policy *p,
                      char *note, size_t notelen)
{
        say(note, notelen, "%s", "");
        if (!domain_ok(domain))
                return 0;
        struct mtasts_policy cached;
        bool have_cache = cache_read(o, domain, &cached) == 0 && cached.expires_s > o->now_s;

        _cleanup_(channel_free) ares_channel ch = NULL;
        int r = channel_open(o, &ch);
        if (r < 0)
                return r;
        char id[MTASTS_ID_MAX], why[MTASTS_WHY_MAX] = "";
        enum txt_result t = lookup_txt(ch, domain, id, why, sizeof(why));
        if (t != TXT_FOUND) {
                /* RFC 8461 5.1: no record now, a valid cached policy still applies */
                if (have_cache) {
                        *p = cached;
                        if (why[0])
                                say(note, notelen, "%s; the cached policy (id %s) applies", why,
                                    cached.id);
                        return 1;
                }
                if (why[0])
                        say(note, notelen, "%s", why);
                return 0;
        }
        if (have_cache && strcmp(cached.id, id) == 0) {
                *p = cached;
                return 1;
        }
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        r = fetch_policy(o, ch, domain, &text, &len, why, sizeof(why));
        if (r == -ENOMEM)
                return r;
        if (r == 0 && mtasts_parse_policy(text, len, p, why, sizeof(why)) == 0) {
                snprintf(p->id, sizeof(p->id), "%s", id);
                p->expires_s = o->now_s + p->max_age_s;
                p->cached = false;
                if (cache_write(o, domain, id, text, p->expires_s) < 0)
                        say(note, notelen, "cannot cache the policy of %s in %s/%s", domain,
                            o->state_dir, CACHE_DIR);
                return 1;
        }
        if (have_cache) { /* RFC 8461 10.2: a failed refresh keeps the valid policy */
                *p = cached;
                say(note, notelen, "%s; the cached policy (id %s) applies", why, cached.id);
                return 1;
        }
        say(note, notelen, "%s", why);
        return 0;
}
