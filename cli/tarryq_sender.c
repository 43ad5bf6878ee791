/* cli/tarryq_sender.c — `tarryq check-sender`; see tarryq_sender.h. */
#include "cli/tarryq_sender.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "config/config.h"
#include "sendercheck/sendercheck.h"

int tarryq_check_sender_main(const char *config, int argc, char **argv)
{
        (void)argv;
        if (argc != 1) {
                fprintf(stderr, "usage: tarryq [-C FILE] check-sender\n");
                return EX_USAGE;
        }
        char err[512] = "";
        struct tarry_config *cfg = NULL;
        if (cfg_load(cfg_path(config), &cfg, err, sizeof err) < 0) {
                fprintf(stderr, "tarryq: %s\n", err);
                return EX_CONFIG;
        }
        struct sender_report rep;
        int r = sender_check_run(cfg, &rep);
        cfg_free(cfg);
        if (r < 0) {
                fprintf(stderr, "tarryq: check-sender: cannot ask DNS: %s\n", strerror(-r));
                return EX_UNAVAILABLE;
        }
        for (size_t i = 0; i < rep.n; i++) {
                const struct sender_check *c = &rep.v[i];
                printf("%s  %s %s: %s\n", c->pass ? "pass" : "FAIL", sender_check_name(c->kind),
                       c->subject, c->found);
                if (!c->pass && c->publish[0])
                        printf("      fix: %s\n", c->publish);
        }
        printf("%zu check%s, %zu failed\n", rep.n, rep.n == 1 ? "" : "s", rep.n_failed);
        int ex = rep.n_failed ? 1 : 0;
        sender_report_clear(&rep);
        return ex;
}
