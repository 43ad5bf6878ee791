/* tests/smtpc/test_route.c — routing, source address choice, relay credentials. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "tests/smtpc/harness.h"

#define MAIN "[main]\nspool_dir = /nonexistent\nmyhostname = client.test\n"

Test(route, transport_row_overrides_relayhost_and_mx)
{
        struct tarry_config *cfg = test_cfg(MAIN "relayhost = [10.0.0.1]:587\n"
                                                 "[transport]\nexample.com = [127.0.0.1]:2525\n");
        struct smtpc_route r;
        cr_assert_eq(smtpc_route(cfg, "example.com", &r), 0);
        cr_assert_eq(r.kind, SMTPC_ROUTE_TRANSPORT);
        cr_assert_str_eq(r.destination, "[127.0.0.1]:2525");
        cr_assert(r.no_mx);
        cr_assert_eq(smtpc_route(cfg, "other.org", &r), 0);
        cr_assert_eq(r.kind, SMTPC_ROUTE_RELAYHOST);
        cr_assert_str_eq(r.destination, "[10.0.0.1]:587");
        cfg_free(cfg);
}

Test(route, without_relayhost_the_domain_mx_is_the_destination)
{
        struct tarry_config *cfg = test_cfg(MAIN);
        struct smtpc_route r;
        cr_assert_eq(smtpc_route(cfg, "Example.COM", &r), 0);
        cr_assert_eq(r.kind, SMTPC_ROUTE_MX);
        cr_assert_str_eq(r.destination, "mx:example.com");
        cr_assert_eq(r.port, 25);
        cr_assert_eq(r.tls, CFG_TLS_MAY);
        cr_assert_eq(smtpc_route(cfg, "bad domain", &r), -EINVAL);
        cr_assert_eq(smtpc_route(cfg, "x\r\n.com", &r), -EINVAL);
        cfg_free(cfg);
}

Test(route, source_address_pick_is_stable_per_destination)
{
        struct tarry_config *cfg =
            test_cfg(MAIN "source_address = 127.0.0.2, 127.0.0.3, 127.0.0.4\n");
        const char *a = smtpc_pick_source(cfg, "mx:example.com");
        cr_assert_not_null(a);
        for (int i = 0; i < 10; i++)
                cr_assert_str_eq(smtpc_pick_source(cfg, "mx:example.com"), a);
        cr_assert(smtpc_source_configured(cfg, a));
        cr_assert_not(smtpc_source_configured(cfg, "127.0.0.9"));
        /* several destinations spread over the pool */
        int seen[3] = {0};
        char d[64];
        for (int i = 0; i < 60; i++) {
                snprintf(d, sizeof(d), "mx:d%d.example", i);
                const char *s = smtpc_pick_source(cfg, d);
                seen[s[8] - '2']++;
        }
        cr_assert(seen[0] && seen[1] && seen[2]);
        cfg_free(cfg);
}

Test(route, no_source_address_configured_means_none)
{
        struct tarry_config *cfg = test_cfg(MAIN);
        cr_assert_null(smtpc_pick_source(cfg, "mx:example.com"));
        cr_assert_not(smtpc_source_configured(cfg, "127.0.0.2"));
        cfg_free(cfg);
}

Test(route, relay_auth_file_readable_by_others_is_refused)
{
        char path[] = "/tmp/smtpc-cred-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_eq(fd_write_all(fd, "u:p:w\n", 6), 0);
        close(fd);
        char *u, *p;
        const char *why = NULL;
        cr_assert_eq(smtpc_read_auth_file(path, &u, &p, &why), 0);
        cr_assert_str_eq(u, "u");
        cr_assert_str_eq(p, "p:w");
        free(u);
        free(p);
        chmod(path, 0640);
        cr_assert_eq(smtpc_read_auth_file(path, &u, &p, &why), -EPERM);
        cr_assert(strstr(why, "group or other"));
        unlink(path);
}
