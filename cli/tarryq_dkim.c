/* cli/tarryq_dkim.c — `tarryq dkim-keygen`; see tarryq_dkim.h. */
#include "cli/tarryq_dkim.h"

#include <errno.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "config/config.h"
#include "dkim/dkim.h"

static int usage(void)
{
        fprintf(stderr, "usage: tarryq [-C FILE] dkim-keygen DOMAIN SELECTOR [--ed25519]\n");
        return EX_USAGE;
}

static bool name_ok(const char *s)
{
        size_t n = strlen(s);
        return n > 0 && n < 200 && s[0] != '.' && s[0] != '-' && !strstr(s, "..") &&
               strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

/* DIR/dkim next to the config file; made 0750 root:tarry's group when
 * missing, so that tarryd (as its user) can reach the keys in it. */
static int key_dir(const char *config_path, const struct passwd *pw, char *out, size_t size)
{
        _cleanup_free_ char *copy = strdup(config_path);
        if (!copy)
                return -ENOMEM;
        snprintf(out, size, "%s/dkim", dirname(copy));
        if (mkdir(out, 0750) < 0)
                return errno == EEXIST ? 0 : -errno;
        if (pw && geteuid() == 0 && chown(out, 0, pw->pw_gid) < 0)
                return -errno;
        return 0;
}

/* A TXT record as a zone file needs it: strings of at most 255 bytes. */
static void print_txt(const char *txt)
{
        for (size_t off = 0, len = strlen(txt); off < len; off += 250)
                printf("%s\"%.250s\"", off ? " " : "", txt + off);
}

int tarryq_dkim_keygen_main(const char *config, int argc, char **argv)
{
        bool ed = false;
        const char *pos[2] = {NULL, NULL};
        size_t n = 0;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--ed25519") == 0)
                        ed = true;
                else if (argv[i][0] == '-' || n == 2)
                        return usage();
                else
                        pos[n++] = argv[i];
        }
        if (n != 2)
                return usage();
        if (!name_ok(pos[0]) || !name_ok(pos[1])) {
                fprintf(stderr, "tarryq: dkim-keygen: '%s' is not a DNS name\n",
                        name_ok(pos[0]) ? pos[1] : pos[0]);
                return EX_USAGE;
        }
        char err[512] = "";
        struct tarry_config *cfg = NULL;
        const char *path = cfg_path(config);
        if (cfg_load(path, &cfg, err, sizeof err) < 0) {
                fprintf(stderr, "tarryq: %s\n", err);
                return EX_CONFIG;
        }
        struct passwd *pw = getpwnam(cfg->user);
        uid_t owner = pw && geteuid() == 0 ? pw->pw_uid : (uid_t)-1;
        char dir[4096], key[4200];
        int r = key_dir(path, pw, dir, sizeof dir);
        if (r < 0) {
                fprintf(stderr, "tarryq: dkim-keygen: cannot make %s: %s\n", dir, strerror(-r));
                cfg_free(cfg);
                return EX_CANTCREAT;
        }
        snprintf(key, sizeof key, "%s/%s.%s.key", dir, pos[1], pos[0]);
        _cleanup_free_ char *txt = NULL;
        r = dkim_keygen(key, ed ? DKIM_ALG_ED25519_SHA256 : DKIM_ALG_RSA_SHA256, owner, &txt, err,
                        sizeof err);
        const struct cfg_dkim *row = cfg_dkim_for(cfg, pos[0]);
        bool has_row = row && strcasecmp(row->domain, pos[0]) == 0;
        cfg_free(cfg);
        if (r < 0) {
                fprintf(stderr, "tarryq: dkim-keygen: %s\n", err);
                return EX_CANTCREAT;
        }
        printf("key written to %s (%s)\n", key, ed ? "ed25519" : "rsa 2048 bits");
        printf("\n1. publish this TXT record in DNS:\n\n%s._domainkey.%s. IN TXT ", pos[1], pos[0]);
        print_txt(txt);
        printf("\n");
        printf("\n2. %s [dkim] in %s:\n\n%s = %s:%s\n", has_row ? "change the row of" : "add to",
               path, pos[0], pos[1], key);
        printf("\n3. reload tarryd (systemctl reload tarry), then check with: tarryq "
               "check-sender\n");
        return 0;
}
