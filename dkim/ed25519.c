/* dkim/ed25519.c — ed25519-sha256 over relaxed/relaxed; see ed25519.h. */
#include "dkim/ed25519.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#define MAX_FIELDS 1000 /* header fields looked at; a header block has far fewer */

/* ---- relaxed body canonicalization (RFC 6376 3.4.4), streaming ---- */

struct body_canon {
        EVP_MD_CTX *md;
        size_t empty_lines; /* held back: dropped if nothing follows */
        bool wsp;           /* whitespace seen, not yet written */
        bool content;       /* the current line has something besides whitespace */
        bool cr;            /* a CR seen, not yet known to end a line */
        char out[4096];
        size_t n;
};

static void put(struct body_canon *b, const char *s, size_t len)
{
        if (b->n + len > sizeof b->out) {
                EVP_DigestUpdate(b->md, b->out, b->n);
                b->n = 0;
        }
        memcpy(b->out + b->n, s, len);
        b->n += len;
}

static void put_char(struct body_canon *b, char c)
{
        if (!b->content) {
                for (; b->empty_lines > 0; b->empty_lines--)
                        put(b, "\r\n", 2);
                b->content = true;
        }
        if (b->wsp)
                put(b, " ", 1);
        b->wsp = false;
        put(b, &c, 1);
}

static void end_line(struct body_canon *b)
{
        if (b->content)
                put(b, "\r\n", 2); /* trailing whitespace dropped */
        else
                b->empty_lines++;
        b->content = b->wsp = false;
}

static void body_feed(struct body_canon *b, const char *buf, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                char c = buf[i];
                if (b->cr && c != '\n')
                        put_char(b, '\r'); /* a bare CR is data */
                b->cr = false;
                if (c == '\r')
                        b->cr = true;
                else if (c == '\n')
                        end_line(b);
                else if (c == ' ' || c == '\t')
                        b->wsp = true;
                else
                        put_char(b, c);
        }
}

static void body_finish(struct body_canon *b, unsigned char digest[32])
{
        if (b->cr)
                put_char(b, '\r');
        if (b->content)
                put(b, "\r\n", 2); /* a last line without its CRLF gets one */
        EVP_DigestUpdate(b->md, b->out, b->n);
        b->n = 0;
        unsigned int dl = 32;
        EVP_DigestFinal_ex(b->md, digest, &dl);
}

/* ---- relaxed header canonicalization (RFC 6376 3.4.2) ---- */

/* "Name : va  lue\r\n\tmore " → "name:va lue more" */
static void canon_field(const char *f, size_t len, char **out, size_t *outlen)
{
        char *o = malloc(len + 1);
        size_t n = 0, i = 0;
        if (!o) {
                *out = NULL;
                return;
        }
        const char *colon = memchr(f, ':', len);
        size_t name_end = colon ? (size_t)(colon - f) : len;
        size_t ne = name_end;
        while (ne > 0 && (f[ne - 1] == ' ' || f[ne - 1] == '\t'))
                ne--;
        for (; i < ne; i++)
                o[n++] = (char)tolower((unsigned char)f[i]);
        o[n++] = ':';
        bool wsp = false, started = false;
        for (i = name_end + 1; colon && i < len; i++) {
                char c = f[i];
                if (c == '\r' || c == '\n' || c == ' ' || c == '\t') {
                        wsp = true;
                        continue;
                }
                if (wsp && started)
                        o[n++] = ' ';
                wsp = false;
                started = true;
                o[n++] = c;
        }
        o[n] = '\0';
        *out = o;
        *outlen = n;
}

/* ---- the signer ---- */

struct field {
        size_t start, end; /* without the final CRLF */
        bool used;
};

struct ed_signer {
        EVP_PKEY *key;
        char *domain, *selector;
        int64_t when;
        const char *const *names;
        const char *const *oversigned;
        struct body_canon body;
        EVP_MD_CTX *hdr; /* SHA-256 of the signed header fields, then the signature's */
        char *h;         /* the h= value */
};

void ed_signer_free(struct ed_signer *s)
{
        if (!s)
                return;
        EVP_MD_CTX_free(s->body.md);
        EVP_MD_CTX_free(s->hdr);
        free(s->domain);
        free(s->selector);
        free(s->h);
        free(s);
}

int ed_sign_start(EVP_PKEY *key, const char *domain, const char *selector, int64_t when_s,
                  const char *const *names, const char *const *oversigned, struct ed_signer **out)
{
        struct ed_signer *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *s = (struct ed_signer){
            .key = key, .when = when_s, .names = names, .oversigned = oversigned};
        s->domain = strdup(domain);
        s->selector = strdup(selector);
        s->body.md = EVP_MD_CTX_new();
        s->hdr = EVP_MD_CTX_new();
        if (!s->domain || !s->selector || !s->body.md || !s->hdr ||
            EVP_DigestInit_ex(s->body.md, EVP_sha256(), NULL) != 1 ||
            EVP_DigestInit_ex(s->hdr, EVP_sha256(), NULL) != 1) {
                ed_signer_free(s);
                return -ENOMEM;
        }
        *out = s;
        return 0;
}

/* Split hdr into fields: where each starts and ends (without its CRLF). */
static size_t split_fields(const char *hdr, size_t len, struct field *v, size_t max)
{
        size_t n = 0, pos = 0;
        while (pos < len && n < max && hdr[pos] != '\r' && hdr[pos] != '\n') {
                size_t start = pos, end = len;
                for (;;) {
                        const char *nl = memchr(hdr + pos, '\n', len - pos);
                        if (!nl) {
                                pos = len;
                                break;
                        }
                        pos = (size_t)(nl - hdr) + 1;
                        if (pos < len && (hdr[pos] == ' ' || hdr[pos] == '\t'))
                                continue; /* folded */
                        end = (size_t)(nl - hdr);
                        if (end > start && hdr[end - 1] == '\r')
                                end--;
                        break;
                }
                v[n++] = (struct field){start, end, false};
        }
        return n;
}

static bool named(const char *hdr, const struct field *f, const char *name)
{
        size_t nl = strlen(name), len = f->end - f->start;
        const char *s = hdr + f->start;
        if (len < nl || strncasecmp(s, name, nl) != 0)
                return false;
        size_t i = nl;
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
                i++;
        return i < len && s[i] == ':';
}

static bool listed(const char *const *v, const char *name)
{
        for (; v && *v; v++)
                if (strcasecmp(*v, name) == 0)
                        return true;
        return false;
}

/* Hash one field: the last not yet used of that name (RFC 6376 5.4.2). */
static int hash_field(struct ed_signer *s, const char *hdr, struct field *v, size_t n,
                      const char *name)
{
        for (size_t i = n; i-- > 0;) {
                if (v[i].used || !named(hdr, &v[i], name))
                        continue;
                v[i].used = true;
                char *c = NULL;
                size_t cl = 0;
                canon_field(hdr + v[i].start, v[i].end - v[i].start, &c, &cl);
                if (!c)
                        return -ENOMEM;
                EVP_DigestUpdate(s->hdr, c, cl);
                EVP_DigestUpdate(s->hdr, "\r\n", 2);
                free(c);
                return 1;
        }
        return 0; /* an oversigned name: nothing */
}

int ed_sign_headers(struct ed_signer *s, const char *hdr, size_t len)
{
        struct field *v = calloc(MAX_FIELDS, sizeof(*v));
        size_t hl = 0;
        FILE *h = open_memstream(&s->h, &hl);
        if (!v || !h) {
                free(v);
                if (h)
                        fclose(h);
                return -ENOMEM;
        }
        size_t n = split_fields(hdr, len, v, MAX_FIELDS);
        int r = 0;
        bool first = true;
        for (const char *const *name = s->names; *name && r >= 0; name++) {
                size_t present = 0;
                for (size_t i = 0; i < n; i++)
                        present += named(hdr, &v[i], *name);
                size_t times = present + (present && listed(s->oversigned, *name) ? 1 : 0);
                for (size_t k = 0; k < times && r >= 0; k++) {
                        fprintf(h, "%s%s", first ? "" : ":", *name);
                        first = false;
                        r = hash_field(s, hdr, v, n, *name);
                }
        }
        free(v);
        if (fclose(h) != 0)
                return -ENOMEM;
        return r < 0 ? r : 0;
}

int ed_sign_body(struct ed_signer *s, const char *buf, size_t len)
{
        body_feed(&s->body, buf, len);
        return 0;
}

static char *b64(const unsigned char *in, size_t len)
{
        char *o = malloc(4 * ((len + 2) / 3) + 1);
        if (o)
                EVP_EncodeBlock((unsigned char *)o, in, (int)len);
        return o;
}

int ed_sign_finish(struct ed_signer *s, char **line)
{
        unsigned char bh[32], digest[32], sig[64];
        body_finish(&s->body, bh);
        char *bh64 = b64(bh, 32), *value = NULL;
        if (!bh64 || asprintf(&value,
                              "v=1; a=ed25519-sha256; c=relaxed/relaxed; d=%s; s=%s;\r\n"
                              "\tt=%lld; bh=%s;\r\n\th=%s;\r\n\tb=",
                              s->domain, s->selector, (long long)s->when, bh64, s->h) < 0) {
                free(bh64);
                return -ENOMEM;
        }
        free(bh64);
        /* the signature's own field, b= empty, relaxed, without its CRLF */
        char *field = NULL, *c = NULL;
        size_t cl = 0;
        if (asprintf(&field, "DKIM-Signature: %s", value) < 0) {
                free(value);
                return -ENOMEM;
        }
        canon_field(field, strlen(field), &c, &cl);
        free(field);
        unsigned int dl = 32;
        int r = c ? 0 : -ENOMEM;
        if (r == 0) {
                EVP_DigestUpdate(s->hdr, c, cl);
                EVP_DigestFinal_ex(s->hdr, digest, &dl);
        }
        free(c);
        /* RFC 8463 3: Ed25519 (pure) over the SHA-256 of the canonical fields */
        EVP_MD_CTX *sc = r == 0 ? EVP_MD_CTX_new() : NULL;
        size_t sl = sizeof sig;
        if (r == 0 && (!sc || EVP_DigestSignInit(sc, NULL, NULL, NULL, s->key) != 1 ||
                       EVP_DigestSign(sc, sig, &sl, digest, sizeof digest) != 1))
                r = -EPROTO;
        EVP_MD_CTX_free(sc);
        char *sig64 = r == 0 ? b64(sig, sl) : NULL;
        if (r == 0 && (!sig64 || asprintf(line, "DKIM-Signature: %s%s\r\n", value, sig64) < 0))
                r = -ENOMEM;
        free(sig64);
        free(value);
        return r;
}

int ed_body_hash(const char *body, size_t len, char out[64])
{
        struct body_canon b = {.md = EVP_MD_CTX_new()};
        unsigned char d[32];
        if (!b.md || EVP_DigestInit_ex(b.md, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(b.md);
                return -ENOMEM;
        }
        body_feed(&b, body, len);
        body_finish(&b, d);
        EVP_MD_CTX_free(b.md);
        EVP_EncodeBlock((unsigned char *)out, d, 32);
        return 0;
}
