/* dkim/sign.c — signing a message with libopendkim; see dkim.h.
 *
 * The header block is split into fields here only to hand each one to
 * libopendkim (dkim_header takes one field, folds included, without its final
 * CRLF); canonicalisation, hashing, choosing the fields present from
 * dkim_signed_headers and the signature itself are the library's, for
 * rsa-sha256. ed25519-sha256 goes through dkim/ed25519.c instead (Debian
 * 12's libopendkim loses the Ed25519 key's memory on every signature: see
 * ed25519.h). */
#include "dkim/dkim.h"
#include "dkim/ed25519.h"
#include "dkim/key.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <opendkim/dkim.h>

#include "common/cleanup.h"

#define BODY_CHUNK (64u * 1024u)

/* RFC 6376 5.4.1's list, as issue 18 names it; each row: why it is signed. */
const char *const dkim_signed_headers[] = {
    "from",                      /* the identity DMARC aligns; oversigned */
    "sender",                    /* who sent it on the author's behalf */
    "reply-to",                  /* where answers go: must not be redirected */
    "subject",                   /* what the reader sees first */
    "date",                      /* replay of an old message shows */
    "message-id",                /* names the message */
    "to",                        /* the visible recipients */
    "cc",                        /* the visible recipients */
    "in-reply-to",               /* threading */
    "references",                /* threading */
    "mime-version",              /* how the body is read */
    "content-type",              /* how the body is read */
    "content-transfer-encoding", /* how the body is read */
    "content-id",                /* MIME */
    "content-description",       /* MIME */
    "list-unsubscribe",          /* RFC 8058: the one-click link must be ours */
    "list-unsubscribe-post",     /* RFC 8058 requires it signed */
    NULL,
};

/* Added once more to h= than present: nobody can add a second From: */
static const char *const oversigned_headers[] = {"from", NULL};

struct signer_key {
        const char *domain; /* the row's, owned by struct signer_row */
        char *selector;
        struct dkim_key_file file;
};

struct signer_row {
        char *domain;
        size_t first, n; /* keys[first .. first+n) */
};

struct dkim_signer {
        DKIM_LIB *lib;
        struct signer_row *rows;
        size_t n_rows;
        struct signer_key *keys;
        size_t n_keys;
};

static int lib_new(DKIM_LIB **out)
{
        DKIM_LIB *lib = dkim_init(NULL, NULL);
        if (!lib)
                return -ENOMEM;
        if (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, (void *)dkim_signed_headers,
                         sizeof(char **)) != DKIM_STAT_OK ||
            dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, (void *)oversigned_headers,
                         sizeof(char **)) != DKIM_STAT_OK) {
                dkim_close(lib);
                return -EINVAL;
        }
        *out = lib;
        return 0;
}

void dkim_signer_free(struct dkim_signer *s)
{
        if (!s)
                return;
        for (size_t i = 0; i < s->n_keys; i++) {
                free(s->keys[i].selector);
                dkim_key_file_clear(&s->keys[i].file);
        }
        for (size_t i = 0; i < s->n_rows; i++)
                free(s->rows[i].domain);
        free(s->keys);
        free(s->rows);
        if (s->lib)
                dkim_close(s->lib);
        free(s);
}

size_t dkim_signer_count(const struct dkim_signer *s)
{
        return s ? s->n_keys : 0;
}

int dkim_signer_load(const struct tarry_config *cfg, uid_t owner_uid, struct dkim_signer **out,
                     char *err, size_t errlen)
{
        struct dkim_signer *s = calloc(1, sizeof(*s));
        size_t total = 0;
        for (size_t i = 0; i < cfg->n_dkim; i++)
                total += cfg->dkim[i].n_keys;
        if (!s || !(s->rows = calloc(cfg->n_dkim + 1, sizeof(*s->rows))) ||
            !(s->keys = calloc(total + 1, sizeof(*s->keys)))) {
                dkim_signer_free(s);
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        int r = lib_new(&s->lib);
        for (size_t i = 0; r == 0 && i < cfg->n_dkim; i++) {
                const struct cfg_dkim *row = &cfg->dkim[i];
                struct signer_row *sr = &s->rows[s->n_rows++];
                sr->domain = strdup(row->domain);
                sr->first = s->n_keys;
                if (!sr->domain)
                        r = -ENOMEM;
                for (size_t k = 0; r == 0 && k < row->n_keys; k++) {
                        struct signer_key *key = &s->keys[s->n_keys];
                        char why[256];
                        r = dkim_key_read(row->keys[k].path, owner_uid, &key->file, why,
                                          sizeof why);
                        if (r < 0) {
                                snprintf(err, errlen,
                                         "%s:%d: [dkim] %s: key file %s (selector %s) %s",
                                         cfg->path, row->line, row->domain, row->keys[k].path,
                                         row->keys[k].selector, why);
                                break;
                        }
                        key->domain = sr->domain;
                        key->selector = strdup(row->keys[k].selector);
                        s->n_keys++;
                        sr->n++;
                        if (!key->selector)
                                r = -ENOMEM;
                }
        }
        if (r < 0) {
                if (r == -ENOMEM)
                        snprintf(err, errlen, "out of memory");
                else if (r == -EINVAL && !s->lib)
                        snprintf(err, errlen, "libopendkim refused its options");
                dkim_signer_free(s);
                return r;
        }
        *out = s;
        return 0;
}

/* ---- the From: domain ---- */

/* The address part of a From: value: comments and quoted strings dropped,
 * the first <…> if any, else the first mailbox. */
static void strip_value(const char *v, size_t len, char *out, size_t size)
{
        size_t o = 0;
        int depth = 0;
        bool quoted = false;
        for (size_t i = 0; i < len && o + 1 < size; i++) {
                char c = v[i];
                if (quoted) {
                        if (c == '\\')
                                i++;
                        else if (c == '"')
                                quoted = false;
                } else if (depth > 0) {
                        if (c == '\\')
                                i++;
                        else if (c == '(')
                                depth++;
                        else if (c == ')')
                                depth--;
                } else if (c == '"') {
                        quoted = true;
                } else if (c == '(') {
                        depth++;
                } else {
                        out[o++] = c;
                }
        }
        out[o] = '\0';
}

static bool domain_of(char *value, char *domain, size_t size)
{
        char *lt = strchr(value, '<');
        char *a = value;
        if (lt) {
                a = lt + 1;
                char *gt = strchr(a, '>');
                if (gt)
                        *gt = '\0';
        } else {
                char *comma = strchr(value, ',');
                if (comma)
                        *comma = '\0';
        }
        char *at = strrchr(a, '@');
        if (!at)
                return false;
        char *d = at + 1;
        while (*d == ' ' || *d == '\t' || *d == '\r' || *d == '\n')
                d++;
        size_t n = strcspn(d, " \t\r\n>;,");
        if (n == 0 || n >= size ||
            strspn(d, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") < n)
                return false;
        for (size_t i = 0; i < n; i++)
                domain[i] = (char)tolower((unsigned char)d[i]);
        domain[n] = '\0';
        return true;
}

/* Next header field of hdr[pos..len): [*start, *end) without its final CRLF;
 * returns the position after it, or 0 at the end of the header block. */
static size_t next_field(const char *hdr, size_t len, size_t pos, size_t *start, size_t *end)
{
        if (pos >= len || hdr[pos] == '\r' || hdr[pos] == '\n')
                return 0;
        *start = pos;
        for (;;) {
                const char *nl = memchr(hdr + pos, '\n', len - pos);
                if (!nl) {
                        *end = len;
                        return len;
                }
                size_t after = (size_t)(nl - hdr) + 1;
                if (after < len && (hdr[after] == ' ' || hdr[after] == '\t')) {
                        pos = after; /* a folded continuation */
                        continue;
                }
                *end = (size_t)(nl - hdr);
                if (*end > *start && hdr[*end - 1] == '\r')
                        (*end)--;
                return after;
        }
}

bool dkim_from_domain(const char *headers, size_t len, char *domain, size_t size)
{
        size_t pos = 0, start, end;
        while ((pos = next_field(headers, len, pos, &start, &end)) != 0) {
                const char *f = headers + start;
                size_t n = end - start;
                if (n < 5 || strncasecmp(f, "from", 4) != 0)
                        continue;
                size_t c = 4;
                while (c < n && (f[c] == ' ' || f[c] == '\t'))
                        c++;
                if (c >= n || f[c] != ':')
                        continue;
                char value[1024];
                strip_value(f + c + 1, n - c - 1, value, sizeof value);
                return domain_of(value, domain, size);
        }
        return false;
}

/* ---- signing ---- */

/* Where the header block ends in msg (the offset of the body, after the empty
 * line), or len when there is no empty line within it. */
static size_t header_end(const char *msg, size_t len)
{
        if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
                return 2;
        for (size_t i = 0; i + 3 < len; i++)
                if (msg[i] == '\r' && msg[i + 1] == '\n' && msg[i + 2] == '\r' &&
                    msg[i + 3] == '\n')
                        return i + 4;
        return len;
}

static const struct signer_row *row_for(const struct dkim_signer *s, const char *domain)
{
        for (const char *d = domain; d && *d;) {
                for (size_t i = 0; i < s->n_rows; i++)
                        if (strcasecmp(s->rows[i].domain, d) == 0)
                                return &s->rows[i];
                d = strchr(d, '.');
                d = d ? d + 1 : NULL;
        }
        return NULL;
}

/* The signature header libopendkim made ("v=1; a=…", folded), as a CRLF
 * header line appended to f: every line end made CRLF, whichever the library
 * wrote (its fold is CRLF, or LF in some builds). */
static void put_signature(FILE *f, const unsigned char *sig)
{
        fputs("DKIM-Signature: ", f);
        for (const unsigned char *c = sig; *c; c++) {
                if (*c == '\r')
                        continue;
                if (*c == '\n')
                        fputc('\r', f);
                fputc(*c, f);
        }
        fputs("\r\n", f);
}

struct job {
        const struct dkim_signer *s;
        const struct signer_row *row;
        DKIM **h;              /* one libopendkim handle per RSA key of row */
        struct ed_signer **ed; /* one per Ed25519 key */
};

static void job_free(struct job *j)
{
        for (size_t i = 0; j->h && i < j->row->n; i++)
                if (j->h[i])
                        dkim_free(j->h[i]);
        for (size_t i = 0; j->ed && i < j->row->n; i++)
                ed_signer_free(j->ed[i]);
        free(j->h);
        free(j->ed);
}

static int job_start(struct job *j, const char *id, int64_t when_s)
{
        uint64_t t = when_s > 0 ? (uint64_t)when_s : 0;
        if (dkim_options(j->s->lib, DKIM_OP_SETOPT, DKIM_OPTS_FIXEDTIME, &t, sizeof t) !=
            DKIM_STAT_OK)
                return -EPROTO;
        j->h = calloc(j->row->n, sizeof(*j->h));
        j->ed = calloc(j->row->n, sizeof(*j->ed));
        if (!j->h || !j->ed)
                return -ENOMEM;
        for (size_t i = 0; i < j->row->n; i++) {
                const struct signer_key *k = &j->s->keys[j->row->first + i];
                DKIM_STAT st;
                if (k->file.alg == DKIM_ALG_ED25519_SHA256) {
                        int r = ed_sign_start(k->file.key, k->domain, k->selector, when_s,
                                              dkim_signed_headers, oversigned_headers, &j->ed[i]);
                        if (r < 0)
                                return r;
                        continue;
                }
                j->h[i] = dkim_sign(j->s->lib, (const unsigned char *)id, NULL,
                                    (dkim_sigkey_t)k->file.pem, (const unsigned char *)k->selector,
                                    (const unsigned char *)k->domain, DKIM_CANON_RELAXED,
                                    DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &st);
                if (!j->h[i])
                        return st == DKIM_STAT_NORESOURCE ? -ENOMEM : -EPROTO;
        }
        return 0;
}

static int job_headers(struct job *j, const char *hdr, size_t len)
{
        size_t pos = 0, start, end;
        for (size_t i = 0; i < j->row->n; i++)
                if (j->ed[i] && ed_sign_headers(j->ed[i], hdr, len) < 0)
                        return -ENOMEM;
        while ((pos = next_field(hdr, len, pos, &start, &end)) != 0)
                for (size_t i = 0; i < j->row->n; i++)
                        if (j->h[i] && dkim_header(j->h[i], (u_char *)hdr + start, end - start) !=
                                           DKIM_STAT_OK)
                                return -EPROTO;
        for (size_t i = 0; i < j->row->n; i++)
                if (j->h[i] && dkim_eoh(j->h[i]) != DKIM_STAT_OK)
                        return -EPROTO;
        return 0;
}

static int job_body(struct job *j, const char *buf, size_t len)
{
        for (size_t i = 0; len && i < j->row->n; i++) {
                if (j->ed[i]) {
                        ed_sign_body(j->ed[i], buf, len);
                        continue;
                }
                DKIM_STAT st = dkim_body(j->h[i], (u_char *)buf, len);
                if (st != DKIM_STAT_OK && st != DKIM_STAT_NORESOURCE)
                        return -EPROTO;
                if (st == DKIM_STAT_NORESOURCE)
                        return -ENOMEM;
        }
        return 0;
}

static int key_finish(struct job *j, size_t i, FILE *f)
{
        if (j->ed[i]) {
                char *line = NULL;
                int r = ed_sign_finish(j->ed[i], &line);
                if (r == 0)
                        fputs(line, f);
                free(line);
                return r;
        }
        u_char *sig = NULL;
        size_t siglen = 0;
        if (dkim_eom(j->h[i], NULL) != DKIM_STAT_OK ||
            dkim_getsighdr_d(j->h[i], strlen("DKIM-Signature: "), &sig, &siglen) != DKIM_STAT_OK)
                return -EPROTO;
        put_signature(f, sig);
        return 0;
}

static int job_finish(struct job *j, char **lines)
{
        size_t len = 0;
        char *text = NULL;
        FILE *f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        int r = 0;
        for (size_t i = 0; r == 0 && i < j->row->n; i++)
                r = key_finish(j, i, f);
        if (fclose(f) != 0 && r == 0)
                r = -ENOMEM;
        if (r < 0) {
                free(text);
                return r;
        }
        *lines = text;
        return 0;
}

/* Decide which row signs, from the header block; 1: sign, 0: not (why in out). */
static int choose(const struct dkim_signer *s, const char *hdr, size_t len, struct job *j,
                  struct dkim_outcome *out)
{
        *out = (struct dkim_outcome){0};
        *j = (struct job){.s = s};
        if (!s || s->n_rows == 0) {
                snprintf(out->why, sizeof out->why, "no [dkim] keys");
                return 0;
        }
        if (!dkim_from_domain(hdr, len, out->domain, sizeof out->domain)) {
                snprintf(out->why, sizeof out->why, "no From: address with a domain");
                return 0;
        }
        j->row = row_for(s, out->domain);
        if (!j->row || j->row->n == 0) {
                snprintf(out->why, sizeof out->why, "no [dkim] row for %s or a parent domain",
                         out->domain);
                return 0;
        }
        return 1;
}

int dkim_sign_mem(const struct dkim_signer *s, const char *id, const char *msg, size_t len,
                  int64_t when_s, char **sig_lines, struct dkim_outcome *out)
{
        *sig_lines = NULL;
        size_t hend = header_end(msg, len < DKIM_HEADER_MAX ? len : DKIM_HEADER_MAX);
        struct job j;
        int r = choose(s, msg, hend, &j, out);
        if (r <= 0)
                return r;
        r = job_start(&j, id, when_s);
        if (r == 0)
                r = job_headers(&j, msg, hend);
        if (r == 0)
                r = job_body(&j, msg + hend, len - hend);
        if (r == 0)
                r = job_finish(&j, sig_lines);
        if (r == 0)
                out->n_signed = j.row->n;
        job_free(&j);
        return r;
}

static int read_at(int fd, char *buf, size_t want, uint64_t off, size_t *got)
{
        *got = 0;
        while (*got < want) {
                ssize_t n = pread(fd, buf + *got, want - *got, (off_t)(off + *got));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -EIO;
                if (n == 0)
                        break;
                *got += (size_t)n;
        }
        return 0;
}

int dkim_sign_message(const struct dkim_signer *s, const char *id, int body_fd, uint64_t body_size,
                      int64_t when_s, char **sig_lines, struct dkim_outcome *out)
{
        *sig_lines = NULL;
        size_t want = body_size < DKIM_HEADER_MAX ? (size_t)body_size : DKIM_HEADER_MAX;
        _cleanup_free_ char *head = malloc(want + 1);
        size_t got;
        if (!head)
                return -ENOMEM;
        int r = read_at(body_fd, head, want, 0, &got);
        if (r < 0)
                return r;
        size_t hend = header_end(head, got);
        struct job j;
        r = choose(s, head, hend, &j, out);
        if (r <= 0)
                return r;
        r = job_start(&j, id, when_s);
        if (r == 0)
                r = job_headers(&j, head, hend);
        _cleanup_free_ char *chunk = r == 0 ? malloc(BODY_CHUNK) : NULL;
        if (r == 0 && !chunk)
                r = -ENOMEM;
        for (uint64_t off = hend; r == 0 && off < body_size; off += got) {
                size_t n = body_size - off < BODY_CHUNK ? (size_t)(body_size - off) : BODY_CHUNK;
                r = read_at(body_fd, chunk, n, off, &got);
                if (r == 0 && got == 0)
                        r = -EIO; /* the file is shorter than the envelope says */
                if (r == 0)
                        r = job_body(&j, chunk, got);
        }
        if (r == 0)
                r = job_finish(&j, sig_lines);
        if (r == 0)
                out->n_signed = j.row->n;
        job_free(&j);
        return r;
}
