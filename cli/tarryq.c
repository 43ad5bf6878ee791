/* cli/tarryq.c — the queue tool: listing (-p, -j), control (-f -i -d -h -H),
 * status (-s), `tarryq classify` and `tarryq rules check`.
 *
 * Listings ask the running tarryd (live state: next attempt, class) and read
 * the spool directly when it does not answer, as postqueue does; both print
 * through the same code in cli/qlist.c and queue/listing.c.
 * Exit codes (sysexits): 0; 64 usage; 66 no such message; 69 tarryd needed
 * but not answering; 75 spool unreadable; 77 not allowed; 78 configuration.
 */
#include "cli/qlist.h"
#include "cli/tarryq_dkim.h"
#include "cli/tarryq_live.h"
#include "cli/tarryq_sender.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#ifdef TARRYQ_HAVE_CLASSIFY
#include "cli/tarryq_classify.h"
#endif

static int usage(void)
{
        fprintf(stderr,
                "usage: tarryq [-C FILE] -p        list the queue (postqueue -p layout)\n"
                "       tarryq [-C FILE] -j        list the queue as JSON lines\n"
                "       tarryq [-C FILE] -s        status summary of the running tarryd\n"
                "       tarryq [-C FILE] -f        flush: attempt every deferred message now\n"
                "       tarryq [-C FILE] -i ID     attempt one message now\n"
                "       tarryq [-C FILE] -d ID|ALL delete\n"
                "       tarryq [-C FILE] -h ID|ALL put on hold\n"
                "       tarryq [-C FILE] -H ID|ALL release from hold\n"
                "       tarryq classify ...        classify SMTP replies\n"
                "       tarryq rules check FILE    validate a policy file\n"
                "       tarryq [-C FILE] dkim-keygen DOMAIN SELECTOR [--ed25519]\n"
                "                                  make a DKIM key, print its DNS record\n"
                "       tarryq [-C FILE] check-sender  check PTR, SPF, DKIM and DMARC in DNS\n");
        return EX_USAGE;
}

static int classify(int argc, char **argv)
{
#ifdef TARRYQ_HAVE_CLASSIFY
        return tarryq_classify_main(argc, argv);
#else
        (void)argc, (void)argv;
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

int main(int argc, char **argv)
{
        if (argc >= 2 && strcmp(argv[1], "classify") == 0)
                return classify(argc - 1, argv + 1);
        if (argc >= 2 && strcmp(argv[1], "rules") == 0)
                return rules(argc - 1, argv + 1);
        const char *config = NULL, *target = NULL;
        int mode = 0, c;
        opterr = 0;
        while ((c = getopt(argc, argv, "+:C:pjsfi:d:h:H:")) != -1) {
                switch (c) {
                case 'C':
                        config = optarg;
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
                        fprintf(stderr, "tarryq: unknown option -%c\n", optopt);
                        return usage();
                }
        }
        if (!mode && optind < argc && strcmp(argv[optind], "dkim-keygen") == 0)
                return tarryq_dkim_keygen_main(config, argc - optind, argv + optind);
        if (!mode && optind < argc && strcmp(argv[optind], "check-sender") == 0)
                return tarryq_check_sender_main(config, argc - optind, argv + optind);
        if (!mode || optind < argc)
                return usage();
        switch (mode) {
        case 'p':
        case 'j':
                return tarryq_list(config, mode == 'j');
        case 's':
                return tarryq_status(config);
        default:
                return tarryq_admin(config, (char)mode, target);
        }
}
