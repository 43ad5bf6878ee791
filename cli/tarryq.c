/* cli/tarryq.c — the queue tool: listing (-p, -j) and `tarryq classify`.
 *
 * This build reads the spool directly (offline mode), as postqueue does when
 * it can; the printers in cli/qlist.c take records, so a live listing from
 * tarryd's status endpoint prints through the same code.
 * Exit codes: 0; 64 usage; 75 spool unreadable; 78 configuration.
 */
#include "cli/qlist.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#ifdef TARRYQ_HAVE_CLASSIFY
#include "cli/tarryq_classify.h"
#endif

static int usage(void)
{
        fprintf(stderr, "usage: tarryq [-C FILE] -p    list the queue (postqueue -p layout)\n"
                        "       tarryq [-C FILE] -j    list the queue as JSON lines\n"
                        "       tarryq classify ...    classify SMTP replies\n");
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

int main(int argc, char **argv)
{
        if (argc >= 2 && strcmp(argv[1], "classify") == 0)
                return classify(argc - 1, argv + 1);
        const char *config = NULL;
        int mode = 0, c;
        opterr = 0;
        while ((c = getopt(argc, argv, "+:C:pj")) != -1) {
                switch (c) {
                case 'C':
                        config = optarg;
                        break;
                case 'p':
                case 'j':
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
        if (!mode || optind < argc)
                return usage();
        return qlist_main("tarryq", config, mode == 'j');
}
