/* smtpc/route.c — which next hop and source address a recipient domain gets;
 * relay credentials. Pure functions of the config (see smtpc.h). */
#include "smtpc/smtpc.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "smtpc/esmtp.h"

static bool domain_ok(const char *d)
{
        size_t n = strlen(d);
        if (n == 0 || n > 255)
                return false;
        if (d[0] == '[')
                return n > 2 && d[n - 1] == ']' &&
                       strspn(d + 1, "0123456789abcdefABCDEF.:") == n - 2;
        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char)d[i];
                if (!(isalnum(ch) || ch == '.' || ch == '-' || ch == '_' || ch >= 0x80))
                        return false;
        }
        return true;
}

static void lower_copy(char *dst, size_t size, const char *src)
{
        size_t i = 0;
        for (; src[i] && i + 1 < size; i++)
                dst[i] = (char)tolower((unsigned char)src[i]);
        dst[i] = '\0';
}

static void route_from_cfg(const struct tarry_config *cfg, const struct cfg_route *r,
                           enum smtpc_route_kind kind, struct smtpc_route *out)
{
        out->kind = kind;
        lower_copy(out->host, sizeof(out->host), r->host);
        out->port = r->port ? r->port : cfg->smtp_port;
        out->no_mx = r->no_mx;
        out->tls = r->tls;
        if (out->no_mx)
                snprintf(out->destination, sizeof(out->destination), "[%s]:%u", out->host,
                         out->port);
        else
                snprintf(out->destination, sizeof(out->destination), "%s:%u", out->host, out->port);
}

int smtpc_route(const struct tarry_config *cfg, const char *rcpt_domain, struct smtpc_route *out)
{
        memset(out, 0, sizeof(*out));
        if (!rcpt_domain || !domain_ok(rcpt_domain))
                return -EINVAL;
        /* DNS and route keys always use the A-label of an IDN domain */
        char ace[256];
        if (esmtp_alabel(rcpt_domain, ace, sizeof(ace)) < 0)
                return -EINVAL;
        const struct cfg_route *t = cfg_transport_for(cfg, rcpt_domain);
        if (!t && strcmp(ace, rcpt_domain) != 0)
                t = cfg_transport_for(cfg, ace);
        if (t && t->host) {
                route_from_cfg(cfg, t, SMTPC_ROUTE_TRANSPORT, out);
                for (size_t i = 0; i < cfg->n_transports; i++)
                        if (&cfg->transports[i].route == t)
                                snprintf(out->configured, sizeof(out->configured),
                                         "[transport] %s =", cfg->transports[i].domain);
                return 0;
        }
        if (cfg->has_relayhost) {
                route_from_cfg(cfg, &cfg->relayhost, SMTPC_ROUTE_RELAYHOST, out);
                snprintf(out->configured, sizeof(out->configured), "relayhost");
                out->auth = cfg->relay_auth_file != NULL;
                /* a password never goes out where STARTTLS can be stripped or
                 * an unverified peer can read it (docs/security.md) */
                if (out->auth && !cfg->relay_auth_cleartext && out->tls == CFG_TLS_MAY)
                        out->tls = CFG_TLS_VERIFY;
                return 0;
        }
        out->kind = SMTPC_ROUTE_MX;
        out->port = cfg->smtp_port ? cfg->smtp_port : 25;
        out->tls = cfg->smtp_tls;
        size_t n = strlen(rcpt_domain);
        if (rcpt_domain[0] == '[') { /* address literal: that host, no MX */
                snprintf(out->host, sizeof(out->host), "%.*s", (int)(n - 2), rcpt_domain + 1);
                out->no_mx = true;
                snprintf(out->destination, sizeof(out->destination), "[%s]:%u", out->host,
                         out->port);
                return 0;
        }
        lower_copy(out->host, sizeof(out->host), ace);
        snprintf(out->destination, sizeof(out->destination), "mx:%s", out->host);
        return 0;
}

/* FNV-1a: stable across runs and machines, unlike anything seeded. */
static uint32_t fnv1a(const char *s)
{
        uint32_t h = 2166136261u;
        for (; *s; s++) {
                h ^= (unsigned char)*s;
                h *= 16777619u;
        }
        return h;
}

const char *smtpc_pick_source(const struct tarry_config *cfg, const char *destination)
{
        if (!cfg->source_addresses || cfg->n_source_addresses == 0)
                return NULL;
        return cfg
            ->source_addresses[fnv1a(destination ? destination : "") % cfg->n_source_addresses];
}

bool smtpc_source_configured(const struct tarry_config *cfg, const char *addr)
{
        if (!addr || !cfg->source_addresses)
                return false;
        for (size_t i = 0; i < cfg->n_source_addresses; i++)
                if (strcmp(cfg->source_addresses[i], addr) == 0)
                        return true;
        return false;
}

int smtpc_read_auth_file(const char *path, char **user, char **password, const char **why)
{
        *user = *password = NULL;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                *why = "cannot open relay_auth_file";
                return -errno;
        }
        struct stat st;
        if (fstat(fd, &st) < 0) {
                *why = "cannot stat relay_auth_file";
                return -errno;
        }
        if (st.st_mode & 077) {
                *why = "relay_auth_file is accessible by group or other (chmod 600 it)";
                return -EPERM;
        }
        char buf[1024];
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0) {
                *why = "cannot read relay_auth_file";
                return -errno;
        }
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        char *colon = strchr(buf, ':');
        if (!colon || colon == buf) {
                *why = "relay_auth_file must hold one line \"user:password\"";
                return -EINVAL;
        }
        *colon = '\0';
        *user = strdup(buf);
        *password = strdup(colon + 1);
        explicit_bzero(buf, sizeof(buf));
        if (!*user || !*password) {
                free(*user);
                free(*password);
                *user = *password = NULL;
                return -ENOMEM;
        }
        return 0;
}
