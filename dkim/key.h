/* dkim/key.h — private to dkim/: reading a key file (permission checks,
 * PEM parsing) and the public half's TXT record. */
#ifndef TARRY_DKIM_KEY_H
#define TARRY_DKIM_KEY_H

#include <openssl/evp.h>
#include <stddef.h>
#include <sys/types.h>

#include "dkim/dkim.h"

struct dkim_key_file {
        char *pem; /* the file's text, as libopendkim takes it */
        EVP_PKEY *key;
        enum dkim_alg alg;
};

/* Open path (never through a symlink), check who may read and write it, parse
 * it. 0, or a negative errno with the problem in err (without the path). */
int dkim_key_read(const char *path, uid_t owner_uid, struct dkim_key_file *out, char *err,
                  size_t errlen);
int dkim_key_parse(const char *pem, size_t len, EVP_PKEY **key, enum dkim_alg *alg, char *err,
                   size_t errlen);
void dkim_key_file_clear(struct dkim_key_file *k);
/* "v=DKIM1; k=rsa|ed25519; p=BASE64" for key. */
int dkim_key_record(EVP_PKEY *key, enum dkim_alg alg, char **txt);

#endif
