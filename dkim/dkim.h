/* dkim/dkim.h — DKIM signing (RFC 6376, RFC 8463) of the mail tarryd sends.
 *
 * Input: the [dkim] rows of tarry.conf (config.h: domain → selector:keyfile
 * list) and a message: its immutable body file (header block and body, CRLF).
 * Output: "DKIM-Signature:" header lines (CRLF, folded) to go on the wire
 * ahead of the message, one per key of the row whose domain is the From:
 * domain or its nearest parent. rsa-sha256 (1024 bits or more) and
 * ed25519-sha256, relaxed/relaxed, the header fields of dkim_signed_headers
 * (From oversigned). libopendkim canonicalises and signs rsa-sha256;
 * ed25519-sha256 is canonicalised in dkim/ed25519.c and signed with OpenSSL
 * (Debian 12's libopendkim leaks its Ed25519 key on every signature);
 * OpenSSL reads and makes keys. The signature time t= is given by the caller (tarryd: the
 * arrival time), and both algorithms are deterministic, so signing the same
 * message with the same key again gives the same bytes.
 * Key files are checked when loaded: a regular file, not a symlink, owned by
 * root or tarry's user, not group- or world-writable, not readable by others
 * than root and tarry's user; errors name the tarry.conf line of the row.
 * A signer holds no global state; one per loaded configuration.
 */
#ifndef TARRY_DKIM_H
#define TARRY_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"

/* Smallest RSA key accepted (RFC 8301 3.2); 2048 is what dkim_keygen makes. */
#define DKIM_RSA_MIN_BITS    1024
#define DKIM_RSA_KEYGEN_BITS 2048
/* Header block bytes read to find the fields to sign (as cleanup.h). */
#define DKIM_HEADER_MAX (1024u * 1024u)
/* Largest key file read. */
#define DKIM_KEY_FILE_MAX (64u * 1024u)

enum dkim_alg {
        DKIM_ALG_RSA_SHA256,
        DKIM_ALG_ED25519_SHA256,
};

struct dkim_signer;

/* The header fields signed when present (lower case, NULL-terminated); From
 * is always signed and oversigned. */
extern const char *const dkim_signed_headers[];

/* Read and check every key of cfg's [dkim] rows. owner_uid: tarry's user
 * (may own and read the keys besides root). Returns 0 with *out (which may
 * hold no keys when there are no rows), or a negative errno with a one-line
 * message in err: "tarry.conf:14: [dkim] example.com: key file
 * /etc/tarry/dkim/a.key (selector s1): is readable by others (mode 0644);
 * chmod 0600 it". */
int dkim_signer_load(const struct tarry_config *cfg, uid_t owner_uid, struct dkim_signer **out,
                     char *err, size_t errlen);
void dkim_signer_free(struct dkim_signer *s);
/* Keys loaded. */
size_t dkim_signer_count(const struct dkim_signer *s);

/* What signing a message did. */
struct dkim_outcome {
        char domain[256]; /* the From: domain (empty: none found) */
        size_t n_signed;  /* signatures made */
        char why[320];    /* not signed: why ("no From: header", "no [dkim] row for x") */
};

/* Sign the message in body_fd (body_size bytes from offset 0, CRLF lines)
 * with every key for its From: domain; signed at when_s (t=), id names the
 * message in errors. Returns 0 with *sig_lines (malloc'ed "DKIM-Signature:
 * …\r\n" lines, or NULL when out->n_signed is 0), or a negative errno
 * (-EIO reading, -ENOMEM, -EPROTO when libopendkim refused the message). */
int dkim_sign_message(const struct dkim_signer *s, const char *id, int body_fd, uint64_t body_size,
                      int64_t when_s, char **sig_lines, struct dkim_outcome *out);

/* Same for a message in memory (tests). */
int dkim_sign_mem(const struct dkim_signer *s, const char *id, const char *msg, size_t len,
                  int64_t when_s, char **sig_lines, struct dkim_outcome *out);

/* The From: header's domain in a message header block (lower case); false
 * when there is no From: field or no address with a domain in it. */
bool dkim_from_domain(const char *headers, size_t len, char *domain, size_t size);

/* Write a new private key to path (mode 0600, O_EXCL: never overwrites;
 * chowned to owner_uid when that is not -1) and return the TXT record to
 * publish at SELECTOR._domainkey.DOMAIN ("v=DKIM1; k=rsa; p=…"). 0 or a
 * negative errno with a message in err. */
int dkim_keygen(const char *path, enum dkim_alg alg, uid_t owner_uid, char **txt, char *err,
                size_t errlen);

/* The TXT record for the private key file path (read with the checks of
 * dkim_signer_load; owner_uid: tarry's user): 0 with *txt, or a negative
 * errno with a message. */
int dkim_public_record(const char *path, uid_t owner_uid, char **txt, char *err, size_t errlen);

/* Does a published TXT record carry the public key of the private key file
 * path? 1 yes, 0 no (*why says what differs), negative errno (*why too). */
int dkim_record_matches(const char *path, uid_t owner_uid, const char *published, char *why,
                        size_t whylen);

#endif
