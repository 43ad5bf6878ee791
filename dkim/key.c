/* dkim/key.c — DKIM key files: reading them safely, making them, and the
 * DNS TXT record of their public half (see dkim.h). OpenSSL does the crypto. */
#include "dkim/key.h"
#include "dkim/dkim.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/cleanup.h"

static void say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        if (err && errlen)
                vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
}

/* Members of group gid other than root and user: may they read a 0640 key? */
static bool group_only_ours(gid_t gid, uid_t owner_uid)
{
        if (gid == 0)
                return true;
        struct passwd *pw = owner_uid == (uid_t)-1 ? NULL : getpwuid(owner_uid);
        if (!pw || pw->pw_gid != gid)
                return false;
        _cleanup_free_ char *name = strdup(pw->pw_name);
        struct group *gr = getgrgid(gid);
        if (!gr || !name)
                return false;
        for (char **m = gr->gr_mem; *m; m++)
                if (strcmp(*m, "root") != 0 && strcmp(*m, name) != 0)
                        return false;
        return true;
}

/* Who may do what with the key file behind fd; NULL: fine. */
static const char *permission_problem(const struct stat *st, uid_t owner_uid, char *buf,
                                      size_t size)
{
        unsigned mode = (unsigned)st->st_mode & 07777;
        if (!S_ISREG(st->st_mode))
                return "is not a regular file";
        if (st->st_uid != 0 && st->st_uid != owner_uid) {
                snprintf(buf, size, "belongs to uid %u, not root or tarry's user",
                         (unsigned)st->st_uid);
                return buf;
        }
        if (mode & 022) {
                snprintf(buf, size, "is group- or world-writable (mode %04o); chmod 0600 it", mode);
                return buf;
        }
        if ((mode & 004) || ((mode & 040) && !group_only_ours(st->st_gid, owner_uid))) {
                snprintf(buf, size, "is readable by others (mode %04o); chmod 0600 it", mode);
                return buf;
        }
        return NULL;
}

int dkim_key_read(const char *path, uid_t owner_uid, struct dkim_key_file *out, char *err,
                  size_t errlen)
{
        *out = (struct dkim_key_file){0};
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                int e = errno;
                if (e == ELOOP)
                        say(err, errlen, "is a symbolic link");
                else
                        say(err, errlen, "cannot be opened: %s", strerror(e));
                return -e;
        }
        struct stat st;
        char why[128];
        if (fstat(fd, &st) < 0) {
                int e = errno;
                say(err, errlen, "%s", strerror(e));
                return -e;
        }
        const char *bad = permission_problem(&st, owner_uid, why, sizeof why);
        if (bad) {
                say(err, errlen, "%s", bad);
                return -EPERM;
        }
        if (st.st_size <= 0 || (uint64_t)st.st_size > DKIM_KEY_FILE_MAX) {
                say(err, errlen, "is %s", st.st_size <= 0 ? "empty" : "too large for a key");
                return -EINVAL;
        }
        _cleanup_free_ char *pem = malloc((size_t)st.st_size + 1);
        size_t len = 0;
        if (!pem)
                return -ENOMEM;
        while (len < (size_t)st.st_size) {
                ssize_t n = read(fd, pem + len, (size_t)st.st_size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        say(err, errlen, "cannot read it: %s", n < 0 ? strerror(errno) : "short");
                        return -EIO;
                }
                len += (size_t)n;
        }
        pem[len] = '\0';
        EVP_PKEY *key = NULL;
        int r = dkim_key_parse(pem, len, &key, &out->alg, err, errlen);
        if (r < 0)
                return r;
        out->pem = TAKE_PTR(pem);
        out->key = key;
        return 0;
}

int dkim_key_parse(const char *pem, size_t len, EVP_PKEY **key, enum dkim_alg *alg, char *err,
                   size_t errlen)
{
        BIO *bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio)
                return -ENOMEM;
        EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"");
        BIO_free(bio);
        if (!k) {
                say(err, errlen, "is not a PEM private key (unencrypted PKCS#8 or PKCS#1)");
                return -EINVAL;
        }
        if (EVP_PKEY_base_id(k) == EVP_PKEY_ED25519) {
                *alg = DKIM_ALG_ED25519_SHA256;
        } else if (EVP_PKEY_base_id(k) == EVP_PKEY_RSA) {
                if (EVP_PKEY_get_bits(k) < DKIM_RSA_MIN_BITS) {
                        say(err, errlen, "is an RSA key of %d bits; at least %d are needed",
                            EVP_PKEY_get_bits(k), DKIM_RSA_MIN_BITS);
                        EVP_PKEY_free(k);
                        return -EINVAL;
                }
                *alg = DKIM_ALG_RSA_SHA256;
        } else {
                say(err, errlen, "is neither an RSA nor an Ed25519 key");
                EVP_PKEY_free(k);
                return -EINVAL;
        }
        *key = k;
        return 0;
}

void dkim_key_file_clear(struct dkim_key_file *k)
{
        if (k->pem)
                explicit_bzero(k->pem, strlen(k->pem));
        free(k->pem);
        EVP_PKEY_free(k->key);
        *k = (struct dkim_key_file){0};
}

/* The p= value: base64 of the DER public key (RSA) or of the raw 32 bytes
 * (Ed25519, RFC 8463 4.2). */
static int public_b64(EVP_PKEY *key, enum dkim_alg alg, char **out)
{
        unsigned char raw[64], *der = NULL;
        int n;
        if (alg == DKIM_ALG_ED25519_SHA256) {
                size_t rl = sizeof raw;
                if (EVP_PKEY_get_raw_public_key(key, raw, &rl) != 1)
                        return -EINVAL;
                n = (int)rl;
        } else {
                n = i2d_PUBKEY(key, &der);
                if (n <= 0)
                        return -EINVAL;
        }
        char *b64 = malloc((size_t)(4 * ((n + 2) / 3) + 1));
        if (b64)
                EVP_EncodeBlock((unsigned char *)b64, der ? der : raw, n);
        OPENSSL_free(der);
        if (!b64)
                return -ENOMEM;
        *out = b64;
        return 0;
}

int dkim_key_record(EVP_PKEY *key, enum dkim_alg alg, char **txt)
{
        _cleanup_free_ char *p = NULL;
        int r = public_b64(key, alg, &p);
        if (r < 0)
                return r;
        if (asprintf(txt, "v=DKIM1; k=%s; p=%s", alg == DKIM_ALG_ED25519_SHA256 ? "ed25519" : "rsa",
                     p) < 0)
                return -ENOMEM;
        return 0;
}

int dkim_public_record(const char *path, uid_t owner_uid, char **txt, char *err, size_t errlen)
{
        struct dkim_key_file k;
        int r = dkim_key_read(path, owner_uid, &k, err, errlen);
        if (r < 0)
                return r;
        r = dkim_key_record(k.key, k.alg, txt);
        dkim_key_file_clear(&k);
        return r;
}

/* The value of tag name in a DKIM key record, whitespace removed; NULL if absent. */
static char *record_tag(const char *rec, const char *name)
{
        size_t nl = strlen(name);
        for (const char *p = rec; p && *p;) {
                while (*p == ' ' || *p == '\t' || *p == ';')
                        p++;
                const char *end = strchr(p, ';');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                const char *eq = memchr(p, '=', len);
                if (eq) {
                        size_t kl = (size_t)(eq - p);
                        while (kl && (p[kl - 1] == ' ' || p[kl - 1] == '\t'))
                                kl--;
                        if (kl == nl && strncmp(p, name, nl) == 0) {
                                char *v = malloc(len + 1);
                                size_t o = 0;
                                for (const char *c = eq + 1; v && c < p + len; c++)
                                        if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n')
                                                v[o++] = *c;
                                if (v)
                                        v[o] = '\0';
                                return v;
                        }
                }
                p = end;
        }
        return NULL;
}

int dkim_record_matches(const char *path, uid_t owner_uid, const char *published, char *why,
                        size_t whylen)
{
        struct dkim_key_file k;
        char err[256];
        int r = dkim_key_read(path, owner_uid, &k, err, sizeof err);
        if (r < 0) {
                say(why, whylen, "key file %s %s", path, err);
                return r;
        }
        _cleanup_free_ char *ours = NULL;
        r = public_b64(k.key, k.alg, &ours);
        enum dkim_alg alg = k.alg;
        dkim_key_file_clear(&k);
        if (r < 0)
                return r;
        _cleanup_free_ char *p = record_tag(published, "p");
        _cleanup_free_ char *kt = record_tag(published, "k");
        const char *want_k = alg == DKIM_ALG_ED25519_SHA256 ? "ed25519" : "rsa";
        if (!p || !*p) {
                say(why, whylen, "the record has no public key (p=)");
                return 0;
        }
        if (strcmp(kt ? kt : "rsa", want_k) != 0) {
                say(why, whylen, "the record says k=%s, the key file is %s", kt ? kt : "rsa",
                    want_k);
                return 0;
        }
        if (strcmp(p, ours) != 0) {
                say(why, whylen, "the record's p= is not the public half of %s", path);
                return 0;
        }
        return 1;
}

static EVP_PKEY *generate(enum dkim_alg alg)
{
        EVP_PKEY *key = NULL;
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(
            alg == DKIM_ALG_ED25519_SHA256 ? EVP_PKEY_ED25519 : EVP_PKEY_RSA, NULL);
        if (ctx && EVP_PKEY_keygen_init(ctx) == 1 &&
            (alg == DKIM_ALG_ED25519_SHA256 ||
             EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, DKIM_RSA_KEYGEN_BITS) == 1))
                EVP_PKEY_keygen(ctx, &key);
        EVP_PKEY_CTX_free(ctx);
        return key;
}

int dkim_keygen(const char *path, enum dkim_alg alg, uid_t owner_uid, char **txt, char *err,
                size_t errlen)
{
        EVP_PKEY *key = generate(alg);
        if (!key) {
                say(err, errlen, "cannot generate a key");
                return -ENOMEM;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                int e = errno;
                say(err, errlen, "%s: %s", path,
                    e == EEXIST ? "already exists; keygen never overwrites a key" : strerror(e));
                EVP_PKEY_free(key);
                return -e;
        }
        FILE *f = fdopen(fd, "w");
        int r = f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1 ? 0 : -EIO;
        if (r == 0 && fflush(f) != 0)
                r = -errno;
        if (r == 0 && fsync(fileno(f)) < 0)
                r = -errno;
        if (r == 0 && owner_uid != (uid_t)-1 && geteuid() == 0 &&
            fchown(fileno(f), owner_uid, (gid_t)-1) < 0)
                r = -errno;
        if (f ? fclose(f) != 0 && r == 0 : close(fd) < 0)
                r = r ? r : -EIO;
        if (r == 0)
                r = dkim_key_record(key, alg, txt);
        EVP_PKEY_free(key);
        if (r < 0) {
                say(err, errlen, "%s: cannot write the key: %s", path, strerror(-r));
                unlink(path);
        }
        return r;
}
