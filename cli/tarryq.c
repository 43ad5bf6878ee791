/* cli/tarryq.c — the queue tool: listing (-p, -j), control (-f -i -d -h -H),
 * status (-s), `tarryq resume DESTINATION`, `tarryq classify` and
 * `tarryq rules check`.
 *
 * Listings ask the running tarryd (live state: next attempt, class) and read
 * the spool directly when it does not answer, as postqueue does; both print
 * through the same code in cli/qlist.c and queue/listing.c.
 * Exit codes (sysexits): 0; 64 usage; 66 no such message; 69 tarryd needed
 * but not answering; 75 spool unreadable, or -i on a suspended destination
 * (--force tries anyway); 77 not allowed; 78 configuration.
 */
#include "cli/qlist.h"
#include "cli/tarryq_dkim.h"
#include "cli/tarryq_live.h"
#include "cli/tarryq_sender.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#ifdef TARRYQ_HAVE_CLASSIFY
#include "cli/tarryq_classify.h"
#endif

static const char usage_text[] =
    "usage: tarryq [-C FILE] -p            list the queue (postqueue -p layout)\n"
    "       tarryq [-C FILE] -j            list the queue as JSON lines\n"
    "       tarryq [-C FILE] -s [--fleet]  status summary of the running tarryd (--fleet:\n"
    "                                      and every node of its fleet)\n"
    "       tarryq [-C FILE] -f            flush: attempt every deferred message now\n"
    "       tarryq [-C FILE] -i ID [--force]  attempt one message now (--force: even\n"
    "                                      if its destination is suspended)\n"
    "       tarryq [-C FILE] -d ID|ALL     delete\n"
    "       tarryq [-C FILE] -h ID|ALL     put on hold\n"
    "       tarryq [-C FILE] -H ID|ALL     release from hold\n"
    "       tarryq [-C FILE] resume DESTINATION   lift a destination's suspension\n"
    "       tarryq [-C FILE] classify REPLY | --jsonl [FILE]   classify SMTP replies\n"
    "       tarryq rules check FILE        validate a policy file\n"
    "       tarryq [-C FILE] dkim-keygen DOMAIN SELECTOR [--ed25519]\n"
    "                                      make a DKIM key, print its DNS record\n"
    "       tarryq [-C FILE] check-sender  check PTR, SPF, DKIM and DMARC in DNS\n"
    "       tarryq --help\n";

static int usage(void)
{
        fputs(usage_text, stderr);
        return EX_USAGE;
}

static int classify(int argc, char **argv, const char *config)
{
#ifdef TARRYQ_HAVE_CLASSIFY
        return tarryq_classify_main(argc, argv, config);
#else
        (void)argc, (void)argv, (void)config;
        fprintf(stderr, "tarryq: classify is not part of this build\n");
        return EX_UNAVAILABLE;
#endif
}

static int rules(int argc, char **argv)
{
#ifdef TARRYQ_HAVE_CLASSIFY
        return tarryq_rules_main(argc, argv);
#else
        (void)argc, (void)argv;
        fprintf(stderr, "tarryq: rules is not part of this build\n");
        return EX_UNAVAILABLE;
#endif
}

/* "tarryq [-C FILE] SUBCOMMAND ...": -C may come before the subcommand. */
static int subcommand(int argc, char **argv, int *handled)
{
        const char *config = NULL;
        int i = 1;
        while (i + 1 < argc && strcmp(argv[i], "-C") == 0) {
                config = argv[i + 1];
                i += 2;
        }
        *handled = 1;
        if (i < argc && strcmp(argv[i], "classify") == 0)
                return classify(argc - i, argv + i, config);
        if (i < argc && strcmp(argv[i], "rules") == 0)
                return rules(argc - i, argv + i);
        if (i < argc && strcmp(argv[i], "dkim-keygen") == 0)
                return tarryq_dkim_keygen_main(config, argc - i, argv + i);
        if (i < argc && strcmp(argv[i], "check-sender") == 0)
                return tarryq_check_sender_main(config, argc - i, argv + i);
        if (i < argc && strcmp(argv[i], "resume") == 0) {
                if (argc - i != 2) {
                        fprintf(stderr, "tarryq: resume needs one DESTINATION (tarryq -s lists "
                                        "them)\n");
                        return usage();
                }
                return tarryq_resume(config, argv[i + 1]);
        }
        *handled = 0;
        return 0;
}

int main(int argc, char **argv)
{
        for (int i = 1; i < argc; i++)
                if (strcmp(argv[i], "--help") == 0) {
                        fputs(usage_text, stdout);
                        return fflush(stdout) == 0 ? 0 : EX_IOERR;
                }
        int handled = 0, ex = subcommand(argc, argv, &handled);
        if (handled)
                return ex;
        static const struct option opts[] = {
            {"force", no_argument, NULL, 'F'},
            {"fleet", no_argument, NULL, 'L'},
            {},
        };
        const char *config = NULL, *target = NULL;
        bool force = false, fleet = false;
        int mode = 0, c;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:C:pjsfi:d:h:H:", opts, NULL)) != -1) {
                switch (c) {
                case 'C':
                        config = optarg;
                        break;
                case 'L':
                        fleet = true;
                        break;
                case 'F':
                        force = true;
                        break;
                case 'i':
                case 'd':
                case 'h':
                case 'H':
                        target = optarg;
                        /* fall through */
                case 'p':
                case 'j':
                case 's':
                case 'f':
                        if (mode && mode != c)
                                return usage();
                        mode = c;
                        break;
                case ':':
                        fprintf(stderr, "tarryq: option -%c requires an argument\n", optopt);
                        return usage();
                default:
                        if (optopt)
                                fprintf(stderr, "tarryq: unknown option -%c\n", optopt);
                        else
                                fprintf(stderr, "tarryq: unknown option %s\n", argv[optind - 1]);
                        return usage();
                }
        }
        if (optind < argc) {
                fprintf(stderr, "tarryq: unexpected argument '%s'\n", argv[optind]);
                return usage();
        }
        if (!mode)
                return usage();
        if (fleet && mode != 's') {
                fprintf(stderr, "tarryq: --fleet goes with -s\n");
                return usage();
        }
        if (force && mode != 'i') {
                fprintf(stderr, "tarryq: --force goes with -i ID\n");
                return usage();
        }
        switch (mode) {
        case 'p':
        case 'j':
                return tarryq_list(config, mode == 'j');
        case 's':
                return tarryq_status(config, fleet);
        default:
                return tarryq_admin(config, (char)mode, target, force);
        }
}
