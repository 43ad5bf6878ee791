/* dkim/ed25519.h — private to dkim/: ed25519-sha256 signatures (RFC 8463)
 * made with OpenSSL over relaxed/relaxed canonicalization (RFC 6376 3.4.2,
 * 3.4.4) done here.
 *
 * Why not libopendkim, which tarry uses for rsa-sha256: Debian 12's
 * libopendkim 2.11.0~beta2 signs ed25519 correctly but never frees the key
 * it loads for it (dkim_free releases only RSA key data): ~500 bytes lost
 * per signature, found by ASan, which a daemon signing every message cannot
 * afford. The canonicalization here is checked against libopendkim's (the
 * same body hash for the same bodies) and against python3-dkim in
 * tests/dkim.
 */
#ifndef TARRY_DKIM_ED25519_H
#define TARRY_DKIM_ED25519_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

struct ed_signer;

/* A signature by key (Ed25519) for d=domain, s=selector, t=when_s over the
 * header fields named in names (lower case, NULL-terminated; oversigned:
 * listed once more than present). 0 or -ENOMEM. */
int ed_sign_start(EVP_PKEY *key, const char *domain, const char *selector, int64_t when_s,
                  const char *const *names, const char *const *oversigned, struct ed_signer **out);
/* The header block (fields with their folds, CRLF line ends; no empty line). */
int ed_sign_headers(struct ed_signer *s, const char *hdr, size_t len);
/* The body, in pieces of any size. */
int ed_sign_body(struct ed_signer *s, const char *buf, size_t len);
/* "DKIM-Signature: …\r\n" (folded), malloc'd. 0, -ENOMEM, -EPROTO. */
int ed_sign_finish(struct ed_signer *s, char **line);
void ed_signer_free(struct ed_signer *s);

/* The relaxed body hash (base64 of SHA-256) of a body in memory (tests). */
int ed_body_hash(const char *body, size_t len, char out[64]);

#endif
